"""Metrics against scikit-learn on random labels, and the metric registry."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm

from nnforge.errors import ConfigError, DataError, ShapeError
from nnforge.train import metrics as M

SEEDS = [0, 1, 2, 3]


def _labels(seed: int, n_classes: int, n: int = 300, pred_classes: int | None = None):
    """Random y_true over n_classes; predictions may use fewer classes (absent from y_pred)."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, n_classes, n)
    y_pred = rng.integers(0, pred_classes or n_classes, n)
    # Make predictions better than chance so the metrics are not all near one value.
    keep = rng.random(n) < 0.4
    y_pred[keep] = y_true[keep]
    if pred_classes is not None:
        y_pred = np.minimum(y_pred, pred_classes - 1)
    return y_true, y_pred


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_classes,pred_classes", [(2, None), (5, None), (5, 3), (2, 1)])
@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_precision_recall_f1_match_sklearn(seed, n_classes, pred_classes, average):
    t, p = _labels(seed, n_classes, pred_classes=pred_classes)
    kw = {"average": average, "zero_division": 0}
    assert M.precision(t, p, average) == pytest.approx(skm.precision_score(t, p, **kw), abs=1e-9)
    assert M.recall(t, p, average) == pytest.approx(skm.recall_score(t, p, **kw), abs=1e-9)
    assert M.f1(t, p, average) == pytest.approx(skm.f1_score(t, p, **kw), abs=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("pred_classes", [None, 1])
def test_binary_metrics_match_sklearn(seed, pred_classes):
    t, p = _labels(seed, 2, pred_classes=pred_classes)
    kw = {"zero_division": 0}
    assert M.precision(t, p) == pytest.approx(skm.precision_score(t, p, **kw), abs=1e-9)
    assert M.recall(t, p) == pytest.approx(skm.recall_score(t, p, **kw), abs=1e-9)
    assert M.f1(t, p) == pytest.approx(skm.f1_score(t, p, **kw), abs=1e-9)
    # pos_label=0 flips which class counts as positive.
    assert M.f1(t, p, pos_label=0) == pytest.approx(
        skm.f1_score(t, p, pos_label=0, **kw), abs=1e-9)


def test_binary_string_labels_and_zero_division():
    t = np.array(["spam", "ham", "spam", "ham"])
    p = np.array(["ham", "ham", "spam", "ham"])
    assert M.precision(t, p, pos_label="spam") == 1.0
    assert M.recall(t, p, pos_label="spam") == 0.5
    # Nothing predicted positive and nothing positive: 0, like zero_division=0.
    zeros = np.zeros(6, dtype=np.int64)
    assert M.precision(zeros, zeros) == 0.0 and M.f1(zeros, zeros) == 0.0
    assert skm.f1_score(zeros, zeros, zero_division=0) == 0.0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("n_classes", [2, 5])
def test_accuracy_and_confusion_matrix_match_sklearn(seed, n_classes):
    t, p = _labels(seed, n_classes, pred_classes=max(1, n_classes - 2))
    assert M.accuracy(t, p) == pytest.approx(skm.accuracy_score(t, p), abs=1e-9)
    cm = M.confusion_matrix(t, p, num_classes=n_classes)
    np.testing.assert_array_equal(cm, skm.confusion_matrix(t, p, labels=range(n_classes)))
    assert cm.dtype == np.int64 and cm.sum() == len(t)
    assert M.confusion_matrix(t, p).shape == (n_classes, n_classes)  # inferred from max label


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [1, 2, 3, 5])
def test_top_k_accuracy_matches_sklearn(seed, k):
    rng = np.random.default_rng(seed)
    scores = rng.random((200, 6))
    t = rng.integers(0, 6, 200)
    expected = skm.top_k_accuracy_score(t, scores, k=k, labels=range(6))
    assert M.top_k_accuracy(t, scores, k) == pytest.approx(expected, abs=1e-9)
    if k == 1:
        assert M.top_k_accuracy(t, scores, 1) == M.accuracy(t, scores.argmax(axis=1))


def test_top_k_ties_rank_the_higher_index_first_as_sklearn():
    scores = np.zeros((4, 3))  # a constant model: no free credit for ties
    t = np.array([0, 1, 2, 2])
    assert M.top_k_accuracy(t, scores, 1) == 0.5 == skm.top_k_accuracy_score(
        t, scores, k=1, labels=range(3))  # class 2 ranks first
    assert M.top_k_accuracy(t, scores, 2) == 0.75 == skm.top_k_accuracy_score(
        t, scores, k=2, labels=range(3))
    with pytest.warns(UserWarning, match="counts every sample as a hit"):
        assert M.top_k_accuracy(t, scores, 3) == 1.0


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("shape", [(50,), (50, 3)])
def test_regression_metrics_match_sklearn(seed, shape):
    rng = np.random.default_rng(seed)
    t = rng.standard_normal(shape) * 3 + 1
    p = t + rng.standard_normal(shape)
    assert M.mse(t, p) == pytest.approx(skm.mean_squared_error(t, p), abs=1e-9)
    assert M.mae(t, p) == pytest.approx(skm.mean_absolute_error(t, p), abs=1e-9)
    assert M.rmse(t, p) == pytest.approx(skm.root_mean_squared_error(t, p), abs=1e-9)
    assert M.r2(t, p) == pytest.approx(skm.r2_score(t, p), abs=1e-9)


def test_regression_edge_cases():
    t = np.arange(5, dtype=np.float32)
    col = (t + 0.5).reshape(-1, 1)  # a model's (n, 1) output against (n,) targets
    assert M.mse(t, col) == pytest.approx(0.25)
    const = np.full(4, 2.0)
    assert M.r2(const, const) == 1.0 == skm.r2_score(const, const)
    assert M.r2(const, const + 1) == 0.0 == skm.r2_score(const, const + 1)
    with pytest.warns(skm._regression.UndefinedMetricWarning):  # one sample: R² undefined
        assert np.isnan(skm.r2_score([1.0], [2.0]))
    assert np.isnan(M.r2([1.0], [2.0])) and np.isnan(M.r2([1.0], [1.0]))
    with pytest.raises(ShapeError, match="expected y_pred of shape"):
        M.mse(np.zeros(4), np.zeros(5))
    with pytest.raises(DataError, match="at least one sample"):
        M.mae([], [])


def test_classification_errors():
    with pytest.raises(DataError, match="at most 2 classes"):
        M.f1([0, 1, 2], [0, 1, 1])
    with pytest.raises(DataError, match="pos_label"):
        M.precision([0, 2, 2], [0, 2, 0])
    with pytest.raises(ConfigError, match="expected average in"):
        M.recall([0, 1], [0, 1], average="sample")
    with pytest.raises(ShapeError, match="multilabel rows .* for average='samples'"):
        M.recall([0, 1], [0, 1], average="samples")  # as scikit-learn: multilabel only
    with pytest.raises(ShapeError):
        M.accuracy([0, 1, 1], [0, 1])
    with pytest.raises(DataError, match=r"expected class indices in \[0, 2\]"):
        M.confusion_matrix([0, 1, 3], [0, 1, 2], num_classes=3)
    with pytest.raises(DataError, match="class labels in y_true, found non-integer values"):
        M.confusion_matrix([0.5, 1.0], [0, 1])
    with pytest.raises(ShapeError, match="scores of shape"):
        M.top_k_accuracy([0, 1], np.zeros(2))
    with pytest.raises(DataError, match=r"\[0, 2\]"):
        M.top_k_accuracy([0, 3], np.zeros((2, 3)))


def test_registry():
    t, p = _labels(0, 5)
    assert M.get_metric("f1_macro")(t, p) == M.f1(t, p, "macro")
    assert M.get_metric("precision_macro").kind == "class"
    assert M.get_metric("f1_weighted")(t, p) == pytest.approx(
        skm.f1_score(t, p, average="weighted"), abs=1e-9)
    assert M.get_metric("f1_micro")(t, p) == pytest.approx(M.accuracy(t, p), abs=1e-12)
    bt, bp = _labels(0, 2)
    assert M.get_metric("f1")(bt, bp) == M.f1(bt, bp)
    for name in ("mse", "mae", "rmse"):
        assert M.get_metric(name).kind == "regression"
        assert not M.get_metric(name).higher_is_better
    assert M.get_metric("r2").higher_is_better
    scores = np.random.default_rng(0).random((30, 8))
    yt = np.arange(30) % 8
    for name, k in (("top5_accuracy", 5), ("top_k_accuracy", 5), ("top3_accuracy", 3)):
        m = M.get_metric(name)
        assert m.kind == "score" and m(yt, scores) == M.top_k_accuracy(yt, scores, k)
    assert M.get_metric(M.METRICS["mse"]) is M.METRICS["mse"]
    with pytest.raises(ConfigError, match="'f2_macro'") as e:
        M.get_metric("f2_macro")
    assert "f1_macro" in str(e.value) and "accuracy" in str(e.value)


def test_results_are_plain_floats():
    t, p = _labels(1, 3)
    values = {n: M.get_metric(n)(t, p) for n in ("accuracy", "f1_macro", "recall_weighted")}
    assert all(type(v) is float for v in values.values())
    json.dumps(values)


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.UndefinedMetricWarning")
@pytest.mark.parametrize("t,p", [([0, 0, 0], [0, 0, 0]), ([0, 1, 1], [0, 0, 0]),
                                 ([0, 0, 0], [0, 1, 1]), ([0, 0, 1, 1], [0, 2, 1, 2]),
                                 (["a", "b", "a", "c"], ["a", "a", "a", "c"])])
@pytest.mark.parametrize("average", ["macro", "micro", "weighted", "binary"])
def test_undefined_scores_are_sklearn_default_zero_without_warning(t, p, average):
    # sklearn's default zero_division="warn" scores 0 and warns; ours scores 0 silently
    if average == "binary" and len(set(t) | set(p)) > 2:
        return
    kw = {"pos_label": "a" if isinstance(t[0], str) else 1} if average == "binary" else {}
    for ours, theirs in ((M.precision, skm.precision_score), (M.recall, skm.recall_score),
                         (M.f1, skm.f1_score)):
        want = theirs(t, p, average=average, **kw)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert ours(t, p, average, **kw) == pytest.approx(want, abs=1e-9)


def test_top_k_with_k_at_least_the_classes_and_no_samples():
    scores = np.random.default_rng(0).random((5, 3))
    t = np.array([0, 1, 2, 2, 1])
    with pytest.warns(skm._ranking.UndefinedMetricWarning):
        assert skm.top_k_accuracy_score(t, scores, k=3, labels=range(3)) == 1.0
    with pytest.warns(UserWarning, match="counts every sample as a hit"):
        assert M.top_k_accuracy(t, scores, 3) == M.top_k_accuracy(t, scores, 9) == 1.0
    with pytest.raises(DataError, match="at least one sample"):
        M.top_k_accuracy(np.zeros(0, np.int64), np.zeros((0, 3)), 2)


def test_classification_metrics_take_argmax_of_one_hot_or_probability_rows():
    t, p = _labels(0, 4)
    onehot, probs = np.eye(4)[t], np.eye(4)[p] * 0.7 + 0.075
    assert M.accuracy(onehot, p) == M.accuracy(t, probs) == M.accuracy(onehot, probs) \
        == M.accuracy(t, p)
    for fn in (M.precision, M.recall, M.f1):
        assert fn(onehot, p, "macro") == fn(t, probs, "macro") == fn(t, p, "macro")
    np.testing.assert_array_equal(M.confusion_matrix(onehot, p), M.confusion_matrix(t, p))
    assert M.top_k_accuracy(onehot, probs, k=2) == M.top_k_accuracy(t, probs, k=2)
    assert M.accuracy(t[:, None], p) == M.accuracy(t, p)  # a column of labels
    multilabel = np.array([[1, 0, 1], [0, 1, 1]])  # equal 0/1 rows stay exact-match
    assert M.accuracy(multilabel, np.array([[1, 0, 1], [0, 1, 0]])) == 0.5


def test_metric_shape_errors_name_both_arguments():
    rows = np.array([[1, 0, 1], [0, 1, 1]])  # multilabel: per-label scores, not a matrix
    with pytest.raises(ShapeError, match=r"y_true and y_pred of shape \(2, 3\)"):
        M.confusion_matrix(rows, rows)
    with pytest.raises(ShapeError, match=r"1-D labels for average='binary', found multilabel "
                                         r"rows of shape \(2, 3\)"):
        M.f1(rows, rows)
    with pytest.raises(ShapeError, match=r"expected y_pred of shape \(3,\) like y_true"):
        M.accuracy(np.arange(3), np.arange(4))


def _multilabel(seed: int, n: int = 200, labels: int = 4):
    """Random 0/1 rows of varied density: some rows and some label columns empty."""
    rng = np.random.default_rng(seed)
    t = rng.random((n, labels)) < rng.random(labels) * 0.6
    p = np.where(rng.random((n, labels)) < 0.6, t, rng.random((n, labels)) < 0.3)
    t[:, -1] = False  # a label absent from y_true (still one of the columns sklearn scores)
    p[:5] = False  # samples with no predicted label
    return t.astype(np.float32), p.astype(np.int64)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("average", ["macro", "micro", "weighted", "samples"])
def test_multilabel_precision_recall_f1_match_sklearn(seed, average):
    t, p = _multilabel(seed)
    kw = {"average": average, "zero_division": 0}
    for ours, theirs in ((M.precision, skm.precision_score), (M.recall, skm.recall_score),
                         (M.f1, skm.f1_score)):
        assert ours(t, p, average) == pytest.approx(theirs(t, p, **kw), abs=1e-9)
        assert M.get_metric(f"{ours.__name__}_{average}")(t, p) == ours(t, p, average)
    assert M.accuracy(t, p) == pytest.approx(skm.accuracy_score(t, p), abs=1e-12)  # subset


def test_multilabel_edge_cases_match_sklearn():
    empty = np.zeros((2, 2), np.int64)  # nothing true, nothing predicted
    same = np.array([[0, 0], [1, 0]])
    for t, p in ((empty, empty), (same, same), (same, empty), (empty, same)):
        for average in ("macro", "micro", "weighted", "samples"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # sklearn's UndefinedMetricWarning
                want = skm.f1_score(t, p, average=average)
            assert M.f1(t, p, average) == pytest.approx(want, abs=1e-12)
    with pytest.raises(DataError, match=r"0/1 label indicators in multilabel y_pred, found "
                                        r"values such as 2"):
        M.f1(same, np.array([[2, 0], [0, 1]]), "macro")


def test_multilabel_rows_against_scores_are_refused_not_argmaxed():
    multi_hot = np.array([[1, 0, 1], [0, 1, 0]])
    probs = np.array([[0.9, 0.2, 0.8], [0.1, 0.7, 0.3]])
    for score in (lambda: M.accuracy(multi_hot, probs), lambda: M.f1(multi_hot, probs, "macro")):
        with pytest.raises(DataError, match=r"expected 0/1 rows in y_pred like the multilabel "
                                            r"rows of y_true, found scores"):
            score()
    assert M.accuracy(np.eye(3)[[0, 1]], probs) == 1.0  # one-hot rows still take the argmax


@pytest.mark.parametrize("typo, suggestion", [("acuracy", "'accuracy'"),
                                              ("f1_macr", "'f1_macro'"),
                                              ("precison", "'precision'")])
def test_unknown_metric_suggests_the_close_name(typo, suggestion):
    with pytest.raises(ConfigError, match=rf"unknown metric '{typo}' \(did you mean "
                                          rf"{suggestion}.*Metric\(name, fn, kind\)"):
        M.get_metric(typo)


def test_metric_names_ignore_case_and_take_dashes():
    assert M.get_metric("F1_macro") is M.METRICS["f1_macro"]
    assert M.get_metric("f1-macro") is M.METRICS["f1_macro"]
    assert M.get_metric("Top-3_Accuracy").name == "top3_accuracy"


def test_a_callable_is_a_metric_named_by_its_name():
    def balanced(y_true, y_pred):
        return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))

    m = M.get_metric(balanced, "multiclass")
    assert (m.name, m.kind) == ("balanced", "class")
    assert M.get_metric(balanced, "regression").kind == "regression"
    with pytest.raises(ConfigError, match="callable"):
        M.get_metric(3)


def test_top_k_with_k_at_least_the_classes_warns():
    scores = np.random.default_rng(0).random((6, 3))
    with pytest.warns(UserWarning, match="k=3 and only 3 classes"):
        assert M.top_k_accuracy(np.arange(6) % 3, scores, k=3) == 1.0
