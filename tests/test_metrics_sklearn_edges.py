"""Metrics against scikit-learn in the hard cases: ties, absent or odd labels, zero division,
constant targets, probabilities where labels belong, and empty inputs."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

from nnforge.errors import ConfigError, DataError
from nnforge.train import metrics as M

SEEDS = [0, 1, 2]
PRF = ((M.precision, skm.precision_score), (M.recall, skm.recall_score), (M.f1, skm.f1_score))


def _quantized_scores(seed: int, n: int, classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probability rows rounded to 0.1, so that many rows hold tied scores."""
    rng = np.random.default_rng(seed)
    p = rng.random((n, classes))
    return rng.integers(0, classes, n), np.round(p / p.sum(axis=1, keepdims=True), 1)


def _sk_quiet(fn, *args, **kwargs) -> float:
    """scikit-learn's value with its UndefinedMetricWarning (zero_division='warn') hushed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return fn(*args, **kwargs)


# -- top-k accuracy and argmax ties --------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("classes", [3, 5, 10])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_with_tied_scores_matches_sklearn(seed, classes, k):
    t, s = _quantized_scores(seed, 400, classes)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # k=3 of 3 classes, both warn
        want = skm.top_k_accuracy_score(t, s, k=k, labels=range(classes))
        assert M.top_k_accuracy(t, s, k) == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("classes", [3, 4])
def test_top_k_with_all_equal_rows_matches_sklearn(classes):
    t = np.minimum(np.arange(12) // 2, classes - 1)  # unbalanced: which class wins matters
    for scores in (np.zeros((12, classes)), np.full((12, classes), 1 / classes)):
        for k in range(1, classes):
            want = skm.top_k_accuracy_score(t, scores, k=k, labels=range(classes))
            assert M.top_k_accuracy(t, scores, k) == pytest.approx(want, abs=1e-12)
    # the constant model "predicts" the highest index first, as scikit-learn ranks it
    assert M.top_k_accuracy(t, np.zeros((12, classes)), 1) == np.mean(t == classes - 1)


@pytest.mark.parametrize("seed", SEEDS)
def test_top_k_of_two_classes_matches_sklearns_binary_rule(seed):
    # scikit-learn takes the positive class's probability and predicts 1 only above 0.5
    rng = np.random.default_rng(seed)
    p1 = np.round(rng.random(300), 1)  # 0.5 is a tie with the other column
    t = rng.integers(0, 2, 300)
    scores = np.stack([1 - p1, p1], axis=1)
    assert (scores[:, 0] == scores[:, 1]).any()
    want = skm.top_k_accuracy_score(t, p1, k=1)
    assert M.top_k_accuracy(t, scores, 1) == pytest.approx(want, abs=1e-12)


def test_argmax_accuracy_takes_the_first_tied_maximum():
    # scikit-learn scores labels only; ours reads probability rows as np.argmax does
    t, s = _quantized_scores(0, 400, 4)
    assert M.accuracy(t, s) == pytest.approx(skm.accuracy_score(t, s.argmax(axis=1)), abs=1e-12)
    ties = np.array([[0.4, 0.4, 0.2], [0.3, 0.3, 0.4]])
    assert M.accuracy([0, 2], ties) == 1.0
    # top-1 ranks ties as scikit-learn does, so it may differ from the argmax there
    assert M.top_k_accuracy([0, 2], ties, 1) == 0.5


def test_top_k_takes_labels_as_sklearn_does():
    s = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    want = skm.top_k_accuracy_score([1.0, 1.0, 2.0], s, k=1, labels=range(3))
    assert M.top_k_accuracy(np.array([1.0, 1.0, 2.0]), s, 1) == want == 2 / 3
    assert M.top_k_accuracy(np.array([[1], [1], [2]]), s, 1) == want  # a column of labels


def test_top_k_refuses_what_would_be_scored_wrong():
    s = np.array([[0.1, 0.7, 0.2], [0.5, 0.3, 0.2]])
    with pytest.raises(DataError, match="finite numeric scores"):  # NaN ranked as a hit
        M.top_k_accuracy([0, 0], np.array([[np.nan, 0.7, 0.2], [0.5, 0.3, 0.2]]), 1)
    with pytest.raises(DataError, match="found multilabel rows"):  # argmax keeps one label
        M.top_k_accuracy(np.array([[0, 1, 1], [1, 0, 0]]), s, 1)
    with pytest.raises(DataError, match="non-integer|integer class indices"):
        M.top_k_accuracy(np.array([0.5, 1.0]), s, 1)
    with pytest.raises(DataError, match="at least one class column"):
        M.top_k_accuracy([0, 0], np.zeros((2, 0)), 1)


# -- labels: absent, single, sparse, names, negatives -------------------------------------

LABEL_CASES = {
    "class absent from y_pred": ([0, 1, 2, 2, 1, 0], [0, 0, 1, 1, 0, 0]),
    "class absent from y_true": ([0, 0, 1, 1, 0], [0, 2, 1, 2, 0]),
    "single class": ([3, 3, 3], [3, 3, 3]),
    "sparse labels": ([10, 20, 10, 30, 30], [10, 10, 30, 30, 20]),
    "negative labels": ([-1, 1, -1, 1], [1, 1, -1, -1]),
    "names": (["cat", "dog", "eel", "cat"], ["cat", "eel", "eel", "dog"]),
    "integral floats": ([0.0, 1.0, 2.0, 1.0], [0.0, 2.0, 2.0, 1.0]),
    "booleans": ([True, False, True, True], [True, True, False, True]),
}


@pytest.mark.parametrize("case", LABEL_CASES)
@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_label_cases_match_sklearn(case, average):
    t, p = (np.array(v) for v in LABEL_CASES[case])
    assert M.accuracy(t, p) == pytest.approx(skm.accuracy_score(t, p), abs=1e-12)
    for ours, theirs in PRF:
        want = _sk_quiet(theirs, t, p, average=average)
        assert ours(t, p, average) == pytest.approx(want, abs=1e-12), ours.__name__


@pytest.mark.parametrize("case", LABEL_CASES)
def test_confusion_matrix_takes_the_labels_seen_as_sklearn(case):
    t, p = (np.array(v) for v in LABEL_CASES[case])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # sklearn: "A single label was found"
        want = skm.confusion_matrix(t, p)
    np.testing.assert_array_equal(M.confusion_matrix(t, p), want)


def test_confusion_matrix_with_num_classes_keeps_absent_classes():
    t, p = np.array([1, 1, 3]), np.array([1, 3, 3])
    np.testing.assert_array_equal(M.confusion_matrix(t, p, num_classes=5),
                                  skm.confusion_matrix(t, p, labels=range(5)))
    np.testing.assert_array_equal(M.confusion_matrix(t.astype(float), p, 4),
                                  skm.confusion_matrix(t, p, labels=range(4)))
    with pytest.raises(DataError, match=r"\[0, 2\] in y_pred"):  # scikit-learn drops them
        M.confusion_matrix(t - 1, p, num_classes=3)
    with pytest.raises(ConfigError, match="num_classes >= 1"):
        M.confusion_matrix(t, p, num_classes=0)


@pytest.mark.parametrize("t,p", [([1, 2, 1], [1, 1, 1]), ([1, 1], [1, 1]), ([0, 0], [0, 0]),
                                 ([2, 2], [2, 2])])
def test_binary_with_one_or_two_labels_matches_sklearn(t, p):
    # pos_label=1 need not be present when a single label is
    for ours, theirs in PRF:
        assert ours(t, p) == pytest.approx(_sk_quiet(theirs, t, p), abs=1e-12)


def test_names_against_numbers_are_refused():
    # scikit-learn refuses the mix; NumPy would compare '1' with 1 as strings
    with pytest.raises(DataError, match="labels of one kind"):
        M.precision([0, 1, 1], np.array(["0", "1", "1"]), "macro")
    with pytest.raises(DataError, match="labels of one kind"):
        M.accuracy(["a", "b"], [0, 1])


# -- zero division ------------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("average", ["macro", "weighted", "binary"])
def test_zero_division_gives_sklearns_default_numbers_without_its_warning(seed, average):
    rng = np.random.default_rng(seed)
    classes = 2 if average == "binary" else 5
    t = rng.integers(0, classes, 40)
    p = np.zeros(40, np.int64)  # only class 0 predicted: precision undefined for the rest
    for ours, theirs in PRF[:1]:
        with pytest.warns(UndefinedMetricWarning):
            want = theirs(t, p, average=average)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert ours(t, p, average) == pytest.approx(want, abs=1e-12)
    for ours, theirs in PRF[1:]:
        want = _sk_quiet(theirs, t, p, average=average)
        assert ours(t, p, average) == pytest.approx(want, abs=1e-12)


# -- regression ---------------------------------------------------------------------------

def test_r2_of_constant_targets_matches_sklearns_force_finite_default():
    c = np.full(6, 2.5)
    assert M.r2(c, c) == skm.r2_score(c, c) == 1.0
    assert M.r2(c, c + 1e-3) == skm.r2_score(c, c + 1e-3) == 0.0
    x = np.linspace(0, 1, 6)
    for pred in (np.stack([c, x + 0.1], 1), np.stack([c + 1, x + 0.1], 1)):
        t = np.stack([c, x], 1)  # one constant output among two, averaged uniformly
        assert M.r2(t, pred) == pytest.approx(skm.r2_score(t, pred), abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_multioutput_regression_averages_outputs_uniformly_as_sklearn(seed):
    rng = np.random.default_rng(seed)
    t = rng.standard_normal((40, 3)) * [1.0, 10.0, 0.1]  # outputs of very different scale
    p = t + rng.standard_normal((40, 3))
    for ours, theirs in ((M.mse, skm.mean_squared_error), (M.mae, skm.mean_absolute_error),
                         (M.rmse, skm.root_mean_squared_error), (M.r2, skm.r2_score)):
        assert ours(t, p) == pytest.approx(theirs(t, p), abs=1e-9), ours.__name__


# -- probabilities where labels belong ----------------------------------------------------

def test_binary_metrics_refuse_probabilities_as_sklearn():
    t, probs = [0, 1, 1, 0], np.array([0.2, 0.7, 0.4, 0.1])
    for score in (M.accuracy, M.precision, M.recall, M.f1):
        with pytest.raises(DataError, match="non-integer values such as 0.2: threshold"):
            score(t, probs)
        with pytest.raises(DataError, match="threshold"):
            score(t, probs[:, None])  # the (n, 1) column a sigmoid model gives
    labels = (probs >= 0.5).astype(int)
    assert M.f1(t, labels) == skm.f1_score(t, labels)


@pytest.mark.parametrize("seed", SEEDS)
def test_binary_metrics_of_probability_rows_score_their_argmax(seed):
    rng = np.random.default_rng(seed)
    t, p1 = rng.integers(0, 2, 100), rng.random(100)
    rows = np.stack([1 - p1, p1], axis=1)
    labels = rows.argmax(axis=1)
    for ours, theirs in PRF:
        assert ours(t, rows) == pytest.approx(theirs(t, labels), abs=1e-12)


def test_probability_rows_with_nan_are_refused():
    rows = np.array([[0.2, np.nan], [0.9, 0.1]])
    with pytest.raises(DataError, match="finite scores or probabilities"):
        M.accuracy([1, 0], rows)


# -- multilabel ---------------------------------------------------------------------------

@pytest.mark.parametrize("average", ["samples", "micro", "macro", "weighted"])
def test_multilabel_rows_empty_on_either_side_match_sklearn(average):
    t = np.array([[0, 0, 1], [0, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 1]])
    p = np.array([[0, 0, 1], [0, 0, 0], [0, 0, 0], [1, 0, 0], [1, 1, 1]])
    for ours, theirs in PRF:
        want = _sk_quiet(theirs, t, p, average=average)
        assert ours(t, p, average) == pytest.approx(want, abs=1e-12), ours.__name__
    assert M.accuracy(t, p) == skm.accuracy_score(t, p)


# -- empty inputs -------------------------------------------------------------------------

EMPTY_CALLS = {
    "accuracy": lambda: M.accuracy([], []),
    "accuracy of (n, 0) rows": lambda: M.accuracy([0, 0, 0], np.zeros((3, 0))),
    "f1_macro": lambda: M.f1([], [], "macro"),
    "multilabel f1": lambda: M.f1(np.zeros((0, 3)), np.zeros((0, 3)), "samples"),
    "confusion_matrix": lambda: M.confusion_matrix([], []),
    "top_k_accuracy": lambda: M.top_k_accuracy(np.zeros(0, np.int64), np.zeros((0, 3)), 1),
    "top_k of (n, 0) scores": lambda: M.top_k_accuracy([0], np.zeros((1, 0)), 1),
    "mse": lambda: M.mse([], []),
    "mse of (n, 0)": lambda: M.mse(np.zeros((5, 0)), np.zeros((5, 0))),
    "rmse of (n, 0)": lambda: M.rmse(np.zeros((5, 0)), np.zeros((5, 0))),
    "r2": lambda: M.r2(np.zeros((0, 2)), np.zeros((0, 2))),
}


@pytest.mark.parametrize("name", EMPTY_CALLS)
def test_empty_inputs_raise_a_data_error(name):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy "mean of empty slice" on the way
        with pytest.raises(DataError, match="at least one"):
            EMPTY_CALLS[name]()
