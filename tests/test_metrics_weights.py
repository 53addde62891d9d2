"""sample_weight and zero_division in the metrics, against scikit-learn: every function and
average, binary with pos_label, multiclass, multilabel rows, multi-output regression, and the
errors for weights or options that cannot be used."""

from __future__ import annotations

import math
import warnings
from functools import partial

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning as SkUndefined

from nnforge.errors import ConfigError, DataError, ShapeError
from nnforge.train import metrics as M

SEEDS = [0, 1]
WEIGHTS = ["float", "int", "some zero", "negative"]
PRF = ((M.precision, skm.precision_score), (M.recall, skm.recall_score), (M.f1, skm.f1_score))
ZERO_DIVISIONS = [0, 0.0, 1, 1.0, float("nan")]


def _weights(kind: str, n: int, seed: int) -> np.ndarray:
    """Random weights of one kind: positive floats, positive integers, floats with about a
    third zero, or floats with a few negatives (scikit-learn accepts them)."""
    rng = np.random.default_rng(seed + 100)
    if kind == "int":
        return rng.integers(1, 6, n)
    w = rng.random(n) + 0.1
    if kind == "some zero":
        w[rng.random(n) < 0.3] = 0.0
    elif kind == "negative":
        w[rng.random(n) < 0.15] *= -0.5  # a few, so the total stays well above 0
    return w


def _labels(seed: int, classes: int, n: int = 120, pred_classes: int | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """Random labels and predictions better than chance; pred_classes < classes leaves some
    classes never predicted (precision undefined there)."""
    rng = np.random.default_rng(seed)
    t = rng.integers(0, classes, n)
    p = rng.integers(0, pred_classes or classes, n)
    keep = rng.random(n) < 0.4
    p[keep] = np.minimum(t[keep], (pred_classes or classes) - 1)
    return t, p


def _multilabel(seed: int, n: int = 60, labels: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """0/1 rows with empty rows on both sides, a label never true and one never predicted."""
    rng = np.random.default_rng(seed)
    t = (rng.random((n, labels)) < 0.4).astype(np.int64)
    p = np.where(rng.random((n, labels)) < 0.7, t, 1 - t)
    t[:, 0], p[:, 1] = 0, 0
    t[::7], p[3::9] = 0, 0
    return t, p


def _sk_quiet(fn, *args, **kwargs):
    """scikit-learn's value with its warnings hushed (zero_division='warn', a single label)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _close(ours: float, want: float) -> bool:
    """Equal to 1e-9, nan counting as equal to nan (zero_division=nan)."""
    if math.isnan(want):
        return math.isnan(ours)
    return ours == pytest.approx(want, abs=1e-9)


# -- accuracy, top-k and the confusion matrix ---------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", WEIGHTS)
def test_accuracy_with_weights_matches_sklearn(seed, kind):
    for t, p in (_labels(seed, 4), _labels(seed, 2), _multilabel(seed)):
        w = _weights(kind, len(t), seed)
        want = skm.accuracy_score(t, p, sample_weight=w)
        assert M.accuracy(t, p, sample_weight=w) == pytest.approx(want, abs=1e-9)
        assert M.accuracy(t, p, sample_weight=list(w)) == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", WEIGHTS)
@pytest.mark.parametrize("classes,k", [(3, 1), (3, 2), (5, 3)])
def test_top_k_accuracy_with_weights_matches_sklearn(seed, kind, classes, k):
    rng = np.random.default_rng(seed)
    t = rng.integers(0, classes, 150)
    scores = np.round(rng.random((150, classes)), 1)  # ties, ranked as scikit-learn does
    w = _weights(kind, 150, seed)
    want = skm.top_k_accuracy_score(t, scores, k=k, labels=range(classes), sample_weight=w)
    assert M.top_k_accuracy(t, scores, k, sample_weight=w) == pytest.approx(want, abs=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", WEIGHTS)
def test_confusion_matrix_sums_weights_as_sklearn(seed, kind):
    t, p = _labels(seed, 4, pred_classes=3)
    w = _weights(kind, len(t), seed)
    cm = M.confusion_matrix(t, p, sample_weight=w)
    want = skm.confusion_matrix(t, p, sample_weight=w)
    np.testing.assert_allclose(cm, want, rtol=0, atol=1e-9)
    assert cm.dtype == want.dtype == (np.int64 if kind == "int" else np.float64)
    cm5 = M.confusion_matrix(t, p, num_classes=5, sample_weight=w)  # an absent class kept
    np.testing.assert_allclose(cm5, skm.confusion_matrix(t, p, labels=range(5), sample_weight=w),
                               rtol=0, atol=1e-9)


def test_confusion_matrix_dtype_follows_the_weights_as_sklearn():
    t, p = np.array([0, 1, 2, 1, 0]), np.array([0, 2, 2, 1, 1])
    cases = {"none": None, "int": [1, 2, 3, 1, 2], "uint8": np.array([1, 2, 3, 1, 2], np.uint8),
             "bool": [True, False, True, True, False], "float": [1.0, 2.0, 3.0, 1.0, 2.0],
             "float32": np.array([0.5, 2, 3, 1, 2], np.float32)}
    for name, w in cases.items():
        cm = M.confusion_matrix(t, p, sample_weight=w)
        want = skm.confusion_matrix(t, p, sample_weight=w)
        assert cm.dtype == want.dtype, name
        np.testing.assert_array_equal(cm, want)
    big = np.array([2**62, 1, 1, 1, 1])  # integer weights are summed exactly, as there
    assert M.confusion_matrix(t, p, sample_weight=big)[0, 0] == 2**62


# -- precision, recall, F1 with weights ---------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", WEIGHTS)
@pytest.mark.parametrize("average", ["macro", "micro", "weighted"])
def test_multiclass_prf_with_weights_matches_sklearn(seed, kind, average):
    for t, p in (_labels(seed, 5), _labels(seed, 5, pred_classes=3)):
        w = _weights(kind, len(t), seed)
        for ours, theirs in PRF:
            want = theirs(t, p, average=average, sample_weight=w, zero_division=0)
            got = ours(t, p, average, sample_weight=w)
            assert got == pytest.approx(want, abs=1e-9), ours.__name__


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", WEIGHTS)
@pytest.mark.parametrize("pos_label", [0, 1])
def test_binary_prf_with_weights_and_pos_label_matches_sklearn(seed, kind, pos_label):
    t, p = _labels(seed, 2)
    w = _weights(kind, len(t), seed)
    for ours, theirs in PRF:
        want = theirs(t, p, pos_label=pos_label, sample_weight=w)
        got = ours(t, p, pos_label=pos_label, sample_weight=w)
        assert got == pytest.approx(want, abs=1e-9), ours.__name__
    names_t, names_p = np.where(t == 1, "spam", "ham"), np.where(p == 1, "spam", "ham")
    want = skm.f1_score(names_t, names_p, pos_label="spam", sample_weight=w)
    assert M.f1(names_t, names_p, pos_label="spam", sample_weight=w) == pytest.approx(
        want, abs=1e-9)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", WEIGHTS)
@pytest.mark.parametrize("average", ["micro", "macro", "weighted", "samples"])
def test_multilabel_prf_with_weights_matches_sklearn(seed, kind, average):
    t, p = _multilabel(seed)
    w = _weights(kind, len(t), seed)
    for ours, theirs in PRF:
        want = _sk_quiet(theirs, t, p, average=average, sample_weight=w, zero_division=0)
        got = ours(t, p, average, sample_weight=w)
        assert got == pytest.approx(want, abs=1e-9), ours.__name__


# -- regression with weights --------------------------------------------------------------

REGRESSION = ((M.mse, skm.mean_squared_error), (M.mae, skm.mean_absolute_error),
              (M.rmse, skm.root_mean_squared_error), (M.r2, skm.r2_score))


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", WEIGHTS)
@pytest.mark.parametrize("outputs", [None, 1, 3])
def test_regression_with_weights_matches_sklearn(seed, kind, outputs):
    rng = np.random.default_rng(seed)
    shape = (80,) if outputs is None else (80, outputs)
    t = rng.standard_normal(shape) * (np.array([1.0, 10.0, 0.1])[:outputs] if outputs else 1)
    p = t + rng.standard_normal(shape)
    w = _weights(kind, 80, seed)
    for ours, theirs in REGRESSION:
        want = theirs(t, p, sample_weight=w)
        assert ours(t, p, sample_weight=w) == pytest.approx(want, abs=1e-9), ours.__name__
    # a model's (n, 1) column against (n,) targets, as without weights
    if outputs == 1:
        assert M.mse(t.reshape(-1), p, sample_weight=w) == pytest.approx(
            skm.mean_squared_error(t, p, sample_weight=w), abs=1e-9)


def test_weighted_r2_keeps_force_finite_and_single_sample_nan():
    x = np.linspace(0, 1, 6)
    c = np.full(6, 2.5)
    w = np.array([1.0, 0.0, 2.0, 3.0, 0.5, 1.0])
    t = np.stack([c, x], 1)  # a constant output (total 0) beside an ordinary one
    for pred in (np.stack([c, x + 0.1], 1), np.stack([c + 1, x + 0.1], 1)):
        want = skm.r2_score(t, pred, sample_weight=w)
        assert M.r2(t, pred, sample_weight=w) == pytest.approx(want, abs=1e-12)
    # the weighted mean: all weight on two equal targets makes that output constant
    t1, p1 = np.array([1.0, 1.0, 5.0]), np.array([1.0, 1.0, 0.0])
    assert M.r2(t1, p1, sample_weight=[1, 1, 0]) == skm.r2_score(t1, p1, sample_weight=[1, 1, 0])
    assert M.r2(t1, p1, sample_weight=[1, 1, 0]) == 1.0
    assert math.isnan(M.r2([1.0], [2.0], sample_weight=[3.0]))
    assert math.isnan(M.mse([1.0, np.nan], [1.0, 2.0], sample_weight=[1.0, 2.0]))  # NaN passes


# -- zero_division ------------------------------------------------------------------------

def _undefined_cases(seed: int) -> dict[str, tuple[np.ndarray, np.ndarray, list[str]]]:
    """Data where some scores are 0/0, with the averages that take it."""
    t, p = _labels(seed, 5, n=60, pred_classes=3)
    t[t == 4] = 0  # class 4 neither true nor predicted: 4 is kept out of the labels anyway
    p[:3] = 4  # ... now predicted but never true: recall undefined there
    mt, mp = _multilabel(seed)
    bt = np.zeros(20, np.int64)
    bp = (np.random.default_rng(seed).random(20) < 0.3).astype(np.int64)
    return {"multiclass": (t, p, ["macro", "micro", "weighted"]),
            "multilabel": (mt, mp, ["macro", "micro", "weighted", "samples"]),
            "multilabel, nothing true": (np.zeros_like(mt), mp, ["macro", "weighted", "samples"]),
            "binary, no positives": (bt, bp, ["binary"]),
            "binary, nothing predicted": (bp, bt, ["binary"]),
            "binary, all negative": (bt, bt, ["binary", "macro"])}


# 0 and 1 are 0.0 and 1.0: one seed each is enough for those
@pytest.mark.parametrize("seed,zero_division",
                         [(0, 0), (0, 1), *((s, z) for s in (0, 1) for z in (0.0, 1.0, math.nan))])
@pytest.mark.parametrize("weighted", [False, True])
def test_zero_division_matches_sklearn_for_every_average(seed, zero_division, weighted):
    for case, (t, p, averages) in _undefined_cases(seed).items():
        w = _weights("some zero", len(t), seed) if weighted else None
        for average in averages:
            for ours, theirs in PRF:
                want = _sk_quiet(theirs, t, p, average=average, sample_weight=w,
                                 zero_division=zero_division)
                got = ours(t, p, average, sample_weight=w, zero_division=zero_division)
                assert _close(got, want), (case, average, ours.__name__, got, want)


def test_zero_division_nan_is_left_out_of_averages_as_sklearn():
    # class 2 is never predicted: its precision is nan and the average takes classes 0 and 1
    t, p = np.array([0, 1, 2, 2, 1, 0]), np.array([0, 1, 0, 1, 1, 0])
    for average in ("macro", "weighted"):
        want = skm.precision_score(t, p, average=average, zero_division=np.nan)
        got = M.precision(t, p, average, zero_division=float("nan"))
        assert not math.isnan(got) and got == pytest.approx(want, abs=1e-12)
    assert M.precision(t, p, "macro", zero_division=np.nan) == pytest.approx((2 / 3 + 2 / 3) / 2)
    # every score undefined: nan
    nothing = np.zeros((4, 3), np.int64)
    for average in ("macro", "weighted", "samples", "micro"):
        assert math.isnan(M.precision(np.eye(4, 3, dtype=np.int64), nothing, average,
                                      zero_division=np.nan))
    assert math.isnan(M.recall([0, 0], [0, 0], zero_division=np.nan))


def test_f1_is_undefined_only_with_no_true_nor_predicted_samples():
    # precision is 0/0 here but recall is 0: F1 = 2tp / (2tp + fp + fn) = 0, not zero_division
    t, p = [1, 1, 0], [0, 0, 0]
    for zd in (1, float("nan")):
        assert _close(M.precision(t, p, zero_division=zd),
                      skm.precision_score(t, p, zero_division=zd))
        assert M.f1(t, p, zero_division=zd) == skm.f1_score(t, p, zero_division=zd) == 0.0
    assert M.f1([0, 0], [0, 0], zero_division=1) == skm.f1_score([0, 0], [0, 0],
                                                                  zero_division=1) == 1.0


@pytest.mark.parametrize("score,lacking", [("precision", "no predicted samples"),
                                           ("recall", "no true samples"),
                                           ("f1", "no true nor predicted samples")])
def test_zero_division_warn_gives_zero_with_one_warning_naming_the_classes(score, lacking):
    ours = getattr(M, score)
    theirs = dict(zip(("precision", "recall", "f1"), (fn for _, fn in PRF)))[score]
    # class 3 never predicted nor true beside class 2 that has one side only
    t = np.array([0, 1, 2, 0, 1, 2, 0])
    p = np.array([0, 1, 1, 0, 3, 1, 0])
    if score == "f1":  # F1 needs a label with neither: a multilabel column
        t, p = np.array([[1, 0, 1], [0, 0, 1]]), np.array([[1, 0, 0], [1, 0, 1]])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got = ours(t, p, "macro", zero_division="warn")
    assert len(caught) == 1 and issubclass(caught[0].category, UserWarning)
    assert issubclass(caught[0].category, M.UndefinedMetricWarning)
    message = str(caught[0].message)
    assert score.lower() in message.lower() and lacking in message
    named = {"precision": "[2]", "recall": "[3]", "f1": "[1]"}[score]
    assert named in message, message
    assert caught[0].filename == __file__  # points at the call, not into nnforge
    with pytest.warns(SkUndefined):
        want = theirs(t, p, average="macro", zero_division="warn")
    assert got == pytest.approx(want, abs=1e-12)
    # the default: the same number, without a word
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ours(t, p, "macro") == got
        assert ours(t, p, "macro", zero_division=0) == got


def test_zero_division_warn_names_samples_and_stays_quiet_when_defined():
    t, p = np.array([[1, 0], [0, 0], [0, 1]]), np.array([[1, 0], [0, 0], [0, 0]])
    with pytest.warns(M.UndefinedMetricWarning, match=r"samples \(rows\) \[1, 2\]"):
        assert M.precision(t, p, "samples", zero_division="warn") == pytest.approx(
            _sk_quiet(skm.precision_score, t, p, average="samples", zero_division="warn"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # every score defined: no warning
        M.f1([0, 1, 1], [0, 1, 0], "macro", zero_division="warn")


@pytest.mark.parametrize("bad", [0.5, 2, -1, "nan", "Warn", None, True, [0], float("inf")])
def test_bad_zero_division_is_a_config_error(bad):
    for ours, _ in PRF:
        with pytest.raises(ConfigError, match=r"expected zero_division in .*found"):
            ours([0, 1], [0, 1], zero_division=bad)


def test_numpy_scalars_are_taken_as_their_value():
    # scikit-learn reads np.int64(1) as nan (it checks for Python int only): ours means 1
    t, p = [0, 1, 2], [0, 0, 0]
    assert M.precision(t, p, "macro", zero_division=np.int64(1)) == skm.precision_score(
        t, p, average="macro", zero_division=1)
    assert M.precision(t, p, "macro", zero_division=np.float64(1.0)) == pytest.approx(
        (1 / 3 + 1 + 1) / 3)


# -- registry -----------------------------------------------------------------------------

def test_registry_entries_and_partials_with_the_new_options():
    t, p = _labels(0, 4, pred_classes=3)
    w = _weights("float", len(t), 0)
    assert M.get_metric("f1_macro")(t, p) == M.f1(t, p, "macro", zero_division=0.0)
    fn = partial(M.f1, average="macro", zero_division=1.0, sample_weight=w)
    metric = M.get_metric(fn)
    assert metric.name == "f1"
    want = skm.f1_score(t, p, average="macro", zero_division=1.0, sample_weight=w)
    assert metric(t, p) == pytest.approx(want, abs=1e-12)
    r2 = M.get_metric(partial(M.r2, sample_weight=w), "regression")
    assert r2(t.astype(float), p.astype(float)) == pytest.approx(
        skm.r2_score(t, p, sample_weight=w), abs=1e-12)


# -- sample_weight errors -----------------------------------------------------------------

CALLS = {
    "accuracy": lambda w: M.accuracy([0, 1, 1, 0], [0, 1, 0, 0], sample_weight=w),
    "top_k_accuracy": lambda w: M.top_k_accuracy([0, 1, 2, 0], np.eye(4, 3), 1, sample_weight=w),
    "confusion_matrix": lambda w: M.confusion_matrix([0, 1, 1, 0], [0, 1, 0, 0],
                                                     sample_weight=w),
    "precision": lambda w: M.precision([0, 1, 1, 0], [0, 1, 0, 0], sample_weight=w),
    "recall_macro": lambda w: M.recall([0, 1, 2, 0], [0, 1, 0, 0], "macro", sample_weight=w),
    "f1_samples": lambda w: M.f1(np.eye(4, 3), np.eye(4, 3), "samples", sample_weight=w),
    "mse": lambda w: M.mse([0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 2.0], sample_weight=w),
    "mae": lambda w: M.mae(np.ones((4, 2)), np.zeros((4, 2)), sample_weight=w),
    "rmse": lambda w: M.rmse([0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 2.0], sample_weight=w),
    "r2": lambda w: M.r2([0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 2.0], sample_weight=w),
}

BAD_WEIGHTS = {
    "wrong length": ([1.0, 1.0, 1.0], ShapeError, r"shape \(4,\).*found shape \(3,\)"),
    "2-D": (np.ones((4, 1)), ShapeError, r"shape \(4,\).*found shape \(4, 1\)"),
    "scalar": (2.0, ShapeError, r"shape \(4,\).*found shape \(\)"),
    "NaN": ([1.0, np.nan, 1.0, 1.0], DataError, "finite sample_weight, found nan"),
    "infinite": ([1.0, np.inf, 1.0, 1.0], DataError, "finite sample_weight, found inf"),
    "strings": (["a", "b", "c", "d"], DataError, "numeric sample_weight"),
    "all zero": ([0, 0, 0, 0], DataError, "non-zero sum, found all weights zero"),
    "cancelling": ([1.0, -1.0, 0.5, -0.5], DataError, "non-zero sum, found positive and"),
}


@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("bad", BAD_WEIGHTS)
def test_bad_sample_weight_is_refused(call, bad):
    w, error, match = BAD_WEIGHTS[bad]
    with pytest.raises(error, match=match):
        CALLS[call](w)


@pytest.mark.parametrize("call", CALLS)
def test_negative_weights_are_accepted_as_sklearn(call):
    # scikit-learn takes negative weights without a word in every one of these metrics
    w = [2.0, -0.5, 1.0, 1.5]
    assert np.all(np.isfinite(CALLS[call](w)))
    t, p = [0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 2.0, 2.0]
    assert M.r2(t, p, sample_weight=w) == pytest.approx(skm.r2_score(t, p, sample_weight=w))
