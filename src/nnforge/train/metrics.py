"""Evaluation metrics in plain NumPy (GPU arrays are copied to the host first), and the registry
the Trainer looks metric names up in."""

from __future__ import annotations

import difflib
import math
import numbers
import re
import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import numpy as np

from ..backend import is_device_array, to_numpy
from ..errors import ConfigError, DataError, ShapeError

_AVERAGES = ("binary", "macro", "micro", "weighted", "samples")


def _host(a: Any, dtype: Any = None) -> np.ndarray:
    """a as a NumPy array; GPU (CuPy) arrays are copied to the host first."""
    return np.asarray(to_numpy(a) if is_device_array(a) else a, dtype=dtype)


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = _host(y_true), _host(y_pred)
    if t.shape != p.shape:
        raise ShapeError(f"expected y_pred of shape {t.shape} like y_true, found {p.shape}")
    if t.ndim == 0 or t.shape[0] == 0:
        raise DataError(f"expected at least one sample, found shape {t.shape}")
    if t.size == 0:  # (n, 0): NumPy's mean would be nan with a RuntimeWarning
        raise DataError(f"expected at least one value per sample, found shape {t.shape}")
    return t, p


def _is_scores(a: np.ndarray) -> bool:
    """Probabilities or scores rather than 0/1 indicators (floats other than 0 and 1)."""
    return a.dtype.kind == "f" and not np.isin(a, (0.0, 1.0)).all()


def _argmax(a: np.ndarray) -> np.ndarray:
    """The class of each (n, k) row: the first of tied maxima, as np.argmax and Keras."""
    if a.shape[1] == 0:
        raise DataError(f"expected at least one class column, found rows of shape {a.shape}")
    if a.dtype.kind == "f" and not np.isfinite(a).all():  # argmax would pick the NaN
        raise DataError("expected finite scores or probabilities, found NaN or infinite values")
    return a.argmax(axis=1)


def _as_classes(a: np.ndarray) -> np.ndarray:
    """(n, k) one-hot or probability rows -> their argmax; an (n, 1) column -> (n,)."""
    if a.ndim != 2:
        return a
    return a.reshape(len(a)) if a.shape[1] == 1 else _argmax(a)


def _check_labels(t: np.ndarray, p: np.ndarray) -> None:
    """DataError for what scikit-learn refuses as labels: fractional or NaN values
    (probabilities, say) and names on one side against numbers on the other."""
    for name, a in (("y_true", t), ("y_pred", p)):
        bad = a.dtype.kind == "f" and ~(np.isfinite(a) & (a == np.round(a)))
        if np.any(bad):
            raise DataError(f"expected class labels in {name}, found non-integer values such "
                            f"as {a[bad].reshape(-1)[0].item()!r}: threshold probabilities "
                            f"first, e.g. (probabilities >= 0.5).astype(int)")
    if (t.dtype.kind in "US") != (p.dtype.kind in "US"):  # '1' would count as 1
        raise DataError(f"expected labels of one kind in y_true and y_pred, found {t.dtype} "
                        f"and {p.dtype}")


def _classes(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both sides as comparable classes, as Keras's categorical accuracy takes them: one-hot or
    probability rows against 1-D labels (either way round) become their argmax, and so do
    both sides when either holds probabilities; equal-shaped 0/1 rows stay (multilabel)."""
    t, p = _host(y_true), _host(y_pred)
    if t.shape != p.shape and {t.ndim, p.ndim} <= {1, 2} and len(t) == len(p):
        t, p = _as_classes(t), _as_classes(p)
    elif t.ndim == p.ndim == 2 and t.shape == p.shape and (_is_scores(t) or _is_scores(p)):
        for rows, other, names in ((t, p, ("y_true", "y_pred")), (p, t, ("y_pred", "y_true"))):
            # argmax would keep one label of each multi-hot row and score the wrong thing
            if not _is_scores(rows) and _is_scores(other) and (rows.sum(axis=1) != 1).any():
                raise DataError(f"expected 0/1 rows in {names[1]} like the multilabel rows of "
                                f"{names[0]}, found scores: threshold them first, e.g. "
                                f"(probabilities >= 0.5).astype(int)")
        t, p = _argmax(t), _argmax(p)
    t, p = _pair(t, p)
    _check_labels(t, p)
    return t, p


def _labels_1d(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = _classes(y_true, y_pred)
    if t.ndim == 2 and t.shape[1] == 1:  # one column of labels is not multilabel
        t, p = t.reshape(len(t)), p.reshape(len(p))
    if t.ndim != 1:
        raise ShapeError(f"expected 1-D class labels (or one-hot/probability rows), found "
                         f"y_true and y_pred of shape {t.shape}")
    return t, p


def _divide(num: np.ndarray, den: np.ndarray, zero_division: float = 0.0) -> np.ndarray:
    """num / den with zero_division where den is 0 (scikit-learn's rule for undefined scores)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.full_like(num, zero_division), where=den != 0)


def _sample_weight(sample_weight: Any, n: int) -> np.ndarray | None:
    """sample_weight checked against n samples: None, or a 1-D numeric (n,) array.

    One finite number per sample, booleans counting as 0/1 (as in scikit-learn; NaN is
    refused everywhere, though scikit-learn's top_k_accuracy_score returns nan). Negative
    weights are accepted: scikit-learn accepts them without a word in every metric here, and
    the weighted sums stay well defined. A total of zero is a DataError in every metric:
    scikit-learn refuses all-zero weights (ValueError) and raises ZeroDivisionError from
    np.average where positive and negative weights cancel, except in confusion_matrix and
    precision/recall/F1, where it returns counts or scores that the cancelling weights made
    meaningless; one clear error is kinder than that.
    """
    if sample_weight is None:
        return None
    w = _host(sample_weight)
    if w.ndim != 1 or w.shape[0] != n:
        raise ShapeError(f"expected sample_weight of shape ({n},), one weight per sample, "
                         f"found shape {w.shape}")
    if w.dtype.kind not in "biuf":
        raise DataError(f"expected numeric sample_weight, found {w.dtype} values")
    if w.dtype.kind == "b":  # bincount and np.average take numbers; True weighs 1
        w = w.astype(np.int64)
    if w.dtype.kind == "f" and not np.isfinite(w).all():
        bad = w[~np.isfinite(w)][0].item()
        raise DataError(f"expected finite sample_weight, found {bad!r}")
    if w.sum() == 0:
        found = "all weights zero" if not w.any() else "positive and negative weights that cancel"
        raise DataError(f"expected sample_weight with a non-zero sum, found {found}: no "
                        f"weighted average exists")
    return w


def _tally(codes: np.ndarray, size: int, w: np.ndarray | None) -> np.ndarray:
    """How often each code in [0, size) occurs, each occurrence counting its weight: int64
    for no or integer weights (summed exactly), float64 for float weights, as scikit-learn."""
    if w is None:
        return np.bincount(codes, minlength=size)
    if w.dtype.kind in "iu":  # bincount would sum in float64 and round large integers
        out = np.zeros(size, np.int64)
        np.add.at(out, codes, w.astype(np.int64))
        return out
    return np.bincount(codes, weights=w.astype(np.float64), minlength=size)


def _weighted_count(mask: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """How many rows of mask (along axis 0) are True, each row counting its weight."""
    if w is None:
        return mask.sum(axis=0)
    return np.sum(mask * w.reshape((-1,) + (1,) * (mask.ndim - 1)), axis=0)


class UndefinedMetricWarning(UserWarning):
    """A precision, recall or F1 was undefined (0/0) and zero_division="warn" set it to 0."""


_ZERO_DIVISION = "0, 0.0, 1, 1.0, float('nan') or 'warn'"


def _zero_division(value: Any) -> float | str:
    """zero_division checked: 0.0, 1.0, nan or "warn"; ConfigError for anything else."""
    if isinstance(value, str) and value == "warn":
        return "warn"
    # bool is refused though True == 1: it reads as a switch, not as the score to give
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_)):
        v = float(value)
        if v in (0.0, 1.0) or math.isnan(v):
            return v
    raise ConfigError(f"expected zero_division in {_ZERO_DIVISION}, found {value!r}")


def _nan_average(values: np.ndarray, weights: np.ndarray | None) -> float:
    """The average of per-class (or per-sample) scores as scikit-learn 1.x takes it: scores
    left undefined by zero_division=nan are left out, all of them undefined is nan, and
    weights of the rest that sum to 0 fall back to the plain mean."""
    keep = ~np.isnan(values)
    if not keep.any():
        return float("nan")
    if weights is not None:
        w = np.asarray(weights, dtype=np.float64)[keep]
        if w.sum() != 0:
            return float(np.average(values[keep], weights=w))
    return float(np.mean(values[keep]))


# -- classification --------------------------------------------------------------------------

def accuracy(y_true: Any, y_pred: Any, *, sample_weight: Any = None) -> float:
    """Fraction of samples predicted exactly; for multilabel 0/1 rows, every label of the
    sample right (scikit-learn's subset accuracy).

    One-hot or probability rows (targets or predictions) count by their argmax, the first of
    tied maxima (np.argmax, as Keras; scikit-learn takes labels only). Fractional 1-D values
    (probabilities) are refused, as there: threshold them first. With sample_weight, the
    weighted fraction (each sample counts its weight).
    """
    t, p = _classes(y_true, y_pred)
    w = _sample_weight(sample_weight, len(t))
    hit = t == p
    if hit.ndim > 1:
        hit = hit.reshape(hit.shape[0], -1).all(axis=1)
    return float(np.mean(hit) if w is None else np.average(hit, weights=w))


def _indices(a: np.ndarray, name: str, k: int) -> np.ndarray:
    """a as int64 class indices in [0, k); integral floats (2.0) count, as in scikit-learn."""
    if a.dtype.kind == "f" and np.isfinite(a).all() and (a == np.round(a)).all():
        a = a.astype(np.int64)
    if a.dtype.kind not in "biu":
        bad = a[~(np.isfinite(a) & (a == np.round(a)))] if a.dtype.kind == "f" else a
        raise DataError(f"expected integer class indices in {name}, found {a.dtype} values "
                        f"such as {bad.reshape(-1)[0].item()!r}")
    if a.min() < 0 or a.max() >= k:
        raise DataError(f"expected class indices in [0, {k - 1}] in {name}, found range "
                        f"[{a.min()}, {a.max()}]")
    return a.astype(np.int64)


def _top_k_targets(t: np.ndarray, s: np.ndarray) -> np.ndarray:
    """top_k_accuracy's y_true as (n,): a column of labels, or one-hot or probability rows
    by their argmax (not multi-hot rows: one label of each would silently count)."""
    if t.ndim == 2 and t.shape[1] == 1 and s.ndim == 2:
        return t.reshape(len(t))
    if t.ndim == 2 and t.shape == s.shape and len(t):
        if np.isin(t, (0, 1)).all() and (t.sum(axis=1) != 1).any():
            raise DataError("expected one true class per sample in y_true (labels, one-hot or "
                            "probability rows), found multilabel rows")
        return _argmax(t)
    return t


def _top_k_inputs(y_true: Any, scores: Any) -> tuple[np.ndarray, np.ndarray]:
    """(class indices (n,), finite scores (n, classes)), checked."""
    s = _host(scores)
    t = _top_k_targets(_host(y_true), s)
    if s.ndim == 2 and t.shape == (0,) == s.shape[:1]:
        raise DataError(f"expected at least one sample, found scores of shape {s.shape}")
    if s.ndim != 2 or t.shape != (s.shape[0],) or s.shape[0] == 0:
        raise ShapeError(f"expected scores of shape (n, classes) and y_true of shape (n,), "
                         f"found {s.shape} and {t.shape}")
    if s.shape[1] == 0:
        raise DataError(f"expected at least one class column in scores, found {s.shape}")
    if s.dtype.kind not in "biuf" or (s.dtype.kind == "f" and not np.isfinite(s).all()):
        # as scikit-learn: a NaN score would otherwise rank first and count as a hit
        raise DataError(f"expected finite numeric scores, found {s.dtype} values with NaN, "
                        f"infinite or non-numeric entries")
    return _indices(t, "y_true", s.shape[1]), s


def top_k_accuracy(y_true: Any, scores: Any, k: int = 5, *, sample_weight: Any = None
                   ) -> float:
    """Fraction of samples whose true class is among the k highest scores.

    Ties rank as in scikit-learn's top_k_accuracy_score: the higher class index first (its
    reversed stable sort), and with two classes the true class must score strictly above the
    other to be predicted as class 1 (its binary rule, scores[:, 1] > 0.5 for probability
    rows), so a tie is class 0. Hence with ties k=1 may differ from accuracy of the argmax,
    which takes the first maximum. k at or above the number of classes scores 1.0 with a
    UserWarning, as there. With sample_weight, the weighted fraction.
    """
    t, s = _top_k_inputs(y_true, scores)
    if int(k) != k or k < 1:
        raise ConfigError(f"expected k >= 1, found {k!r}")
    w = _sample_weight(sample_weight, len(t))
    if k >= s.shape[1]:  # as scikit-learn: a score that cannot miss deserves a word
        warnings.warn(f"top_k_accuracy with k={k} and only {s.shape[1]} classes counts every "
                      f"sample as a hit, so it is 1.0: use a k below the number of classes",
                      UserWarning, stacklevel=2)
    true_score = s[np.arange(s.shape[0]), t][:, None]
    classes = np.arange(s.shape[1])
    tied_first = classes < t[:, None] if s.shape[1] == 2 else classes > t[:, None]
    rank = (s > true_score).sum(axis=1) + ((s == true_score) & tied_first).sum(axis=1)
    return float(np.mean(rank < k) if w is None else np.average(rank < k, weights=w))


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int | None = None, *,
                     sample_weight: Any = None) -> np.ndarray:
    """int64 (classes, classes) counts; row = true class, column = predicted.

    The classes are, as in scikit-learn, the sorted labels seen in y_true or y_pred (any
    labels: names, negative or sparse numbers). With num_classes they are the class indices
    0..num_classes-1 (scikit-learn's labels=range(num_classes)), so a class absent from the
    data keeps its row; a label outside that range is a DataError there rather than dropped.

    With sample_weight each cell sums the weights of its samples: int64 for integer (or
    boolean) weights, float64 for float weights, as in scikit-learn.
    """
    t, p = _labels_1d(y_true, y_pred)
    w = _sample_weight(sample_weight, len(t))
    if num_classes is None:
        labels, codes = np.unique(np.concatenate([t, p]), return_inverse=True)
        k, codes = len(labels), codes.reshape(-1).astype(np.int64)
        t, p = codes[:len(t)], codes[len(t):]
    else:
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
            raise ConfigError(f"expected num_classes >= 1, found {num_classes!r}")
        k = int(num_classes)
        t, p = _indices(t, "y_true", k), _indices(p, "y_pred", k)
    return _tally(t * k + p, k * k, w).reshape(k, k)


def _counts(t: np.ndarray, p: np.ndarray, w: np.ndarray | None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per class (every label seen in either array): true positives, predicted, actual (each
    sample counting its weight), and the class labels."""
    labels, codes = np.unique(np.concatenate([t, p]), return_inverse=True)
    k, n, codes = len(labels), len(t), codes.reshape(-1)
    cm = _tally(codes[:n] * k + codes[n:], k * k, w).reshape(k, k)
    return np.diag(cm), cm.sum(axis=0), cm.sum(axis=1), labels


def is_multilabel(y: Any) -> bool:
    """Whether y is a multilabel indicator matrix: 2-D, more than one column (as scikit-learn's
    type_of_target has it; the 0/1 values are checked where the counts are taken)."""
    return np.ndim(y) == 2 and np.shape(y)[1] > 1


def _indicators(a: np.ndarray, name: str) -> np.ndarray:
    """0/1 multilabel rows as booleans; DataError for any other value."""
    bad = ~np.isin(a, (0, 1))
    if bad.any():
        raise DataError(f"expected 0/1 label indicators in multilabel {name}, found values "
                        f"such as {a[bad].reshape(-1)[0].item()!r}")
    return a.astype(bool)


def _multilabel_counts(t: np.ndarray, p: np.ndarray, average: str, w: np.ndarray | None
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per label (column; per sample, row, for average='samples'): true positives, predicted,
    actual, and the column (row) indices. Every column counts, present in the data or not, as
    in scikit-learn; a row counts its weight in each label's counts."""
    if average == "binary":
        raise ShapeError(f"expected 1-D labels for average='binary', found multilabel rows of "
                         f"shape {t.shape} (use average='micro', 'macro', 'weighted' or "
                         f"'samples')")
    t, p = _indicators(t, "y_true"), _indicators(p, "y_pred")
    if average != "samples":
        return (_weighted_count(t & p, w), _weighted_count(p, w), _weighted_count(t, w),
                np.arange(t.shape[1]))
    counts = [(t & p).sum(axis=1), p.sum(axis=1), t.sum(axis=1)]
    if w is not None:
        # as scikit-learn: a row's counts scaled by its weight, so that a zero weight leaves
        # its scores undefined (zero_division) while the average weighs them by 0 anyway
        counts = [c * w for c in counts]
    return counts[0], counts[1], counts[2], np.arange(t.shape[0])


def _binary_counts(t: np.ndarray, p: np.ndarray, pos_label: Any, w: np.ndarray | None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    labels = np.unique(np.concatenate([t, p]))
    if len(labels) > 2:
        raise DataError(f"expected at most 2 classes for average='binary', found {len(labels)} "
                        f"(use average='macro', 'micro' or 'weighted')")
    if len(labels) == 2 and pos_label not in labels.tolist():
        raise DataError(f"expected pos_label in {labels.tolist()}, found {pos_label!r}")
    pos_t, pos_p = t == pos_label, p == pos_label
    return (np.array([_weighted_count(pos_t & pos_p, w)]), np.array([_weighted_count(pos_p, w)]),
            np.array([_weighted_count(pos_t, w)]), np.array([pos_label], dtype=object))


#: per score: its name in messages and what an undefined one lacks
_UNDEFINED = {"precision": ("precision", "predicted"), "recall": ("recall", "true"),
              "f1": ("F1", "true nor predicted")}


def _warn_undefined(score: str, kind: str, names: np.ndarray, undefined: np.ndarray) -> None:
    """The one UndefinedMetricWarning of zero_division="warn", naming the classes (labels,
    samples: kind) whose score was undefined and set to 0."""
    what, lacking = _UNDEFINED[score]
    if kind == "micro":
        where = f"all classes together, which have no {lacking} samples"
    else:
        some = names[undefined].tolist()
        listed = ", ".join(map(repr, some[:10])) + (f", ... ({len(some)} in all)"
                                                    if len(some) > 10 else "")
        items = "labels" if kind == "samples (rows)" else "samples"
        where = f"{kind} [{listed}] with no {lacking} {items}"
    # stacklevel 4: precision() -> _score() -> here -> warnings.warn points at the caller
    warnings.warn(f"{what} is ill-defined and set to 0.0 for {where}; pass zero_division=0 to "
                  f"silence this, or 1 or float('nan') to choose the value",
                  UndefinedMetricWarning, stacklevel=4)


def _score(y_true: Any, y_pred: Any, average: str, pos_label: Any, sample_weight: Any,
           zero_division: Any, score: str) -> float:
    """precision, recall or f1 (score) from the (weighted) counts, averaged as asked."""
    if average not in _AVERAGES:
        raise ConfigError(f"expected average in {list(_AVERAGES)}, found {average!r}")
    zd = _zero_division(zero_division)
    t, p = _classes(y_true, y_pred)
    w = _sample_weight(sample_weight, len(t))
    kind = "classes"
    if is_multilabel(t):
        tp, pred, true, names = _multilabel_counts(t, p, average, w)
        kind = "samples (rows)" if average == "samples" else "labels (columns)"
    elif average == "samples":
        raise ShapeError(f"expected multilabel rows (samples, labels) for average='samples', "
                         f"found y_true and y_pred of shape {t.shape}")
    elif average == "binary":
        tp, pred, true, names = _binary_counts(*_labels_1d(t, p), pos_label, w)
        kind = "the positive class"
    else:
        tp, pred, true, names = _counts(*_labels_1d(t, p), w)
    if average == "micro":
        tp, pred, true = tp.sum(keepdims=True), pred.sum(keepdims=True), true.sum(keepdims=True)
        kind = "micro"
    # F1 as 2tp / (2tp + fp + fn) = 2tp / (predicted + actual), as scikit-learn: undefined
    # only when that is 0, not whenever precision or recall is
    num, den = {"precision": (tp, pred), "recall": (tp, true), "f1": (2 * tp, pred + true)}[score]
    value = 0.0 if zd == "warn" else float(zd)
    per_class = _divide(num, den, value)
    if zd == "warn" and (den == 0).any():
        _warn_undefined(score, kind, names, den == 0)
    weights = true if average == "weighted" else w if average == "samples" else None
    return _nan_average(per_class, weights)


def precision(y_true: Any, y_pred: Any, average: str = "binary", pos_label: Any = 1, *,
              sample_weight: Any = None, zero_division: Any = 0.0) -> float:
    """Of the samples predicted as a class, the fraction that are that class.

    A class never predicted (or, for recall, never present; for F1, neither) scores
    zero_division. Classes are those seen in y_true or y_pred (any labels, as there).

    Multilabel indicator rows (2-D 0/1, one column per label) score per label (every column,
    even one with no positives), or per sample with average="samples"; average="binary" is
    refused there, as in scikit-learn.

    zero_division is the score of a class (sample, for average="samples") where it is 0/0:
    0, 1 or float("nan"), as scikit-learn; nan scores are left out of the macro, weighted
    and samples averages (all nan gives nan), as scikit-learn 1.x does. "warn" gives 0 with
    one UndefinedMetricWarning (a UserWarning) naming the classes, scikit-learn's default.
    Our default, 0.0, gives 0 without a warning: the Trainer scores every epoch, and early
    epochs that predict one class would repeat the warning each time.

    sample_weight weighs each sample (row) in the counts; average="weighted" then weighs
    classes by their weighted support, and "samples" averages the per-sample scores with
    the weights, as scikit-learn.
    """
    return _score(y_true, y_pred, average, pos_label, sample_weight, zero_division,
                  "precision")


def recall(y_true: Any, y_pred: Any, average: str = "binary", pos_label: Any = 1, *,
           sample_weight: Any = None, zero_division: Any = 0.0) -> float:
    """Of the samples of a class, the fraction predicted as that class (options: precision)."""
    return _score(y_true, y_pred, average, pos_label, sample_weight, zero_division, "recall")


def f1(y_true: Any, y_pred: Any, average: str = "binary", pos_label: Any = 1, *,
       sample_weight: Any = None, zero_division: Any = 0.0) -> float:
    """Harmonic mean of precision and recall (options: precision)."""
    return _score(y_true, y_pred, average, pos_label, sample_weight, zero_division, "f1")


# -- regression -----------------------------------------------------------------------------

def _values(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    # NaN is let through (scikit-learn raises): a NaN score says the model diverged, and the
    # Trainer's history records it rather than losing the run to an exception
    t = _host(y_true, np.float64)
    p = _host(y_pred, np.float64)
    # A model's (n, 1) output against (n,) targets is the usual case, not a mistake.
    if t.shape != p.shape and t.size == p.size and max(t.ndim, p.ndim) <= 2 and \
            t.shape[:1] == p.shape[:1]:
        t, p = t.reshape(-1), p.reshape(-1)
    return _pair(t, p)


def _over_samples(x: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    """The (weighted) mean of x over its samples (axis 0): one value per output."""
    return np.mean(x, axis=0) if w is None else np.average(x, axis=0, weights=w)


def _per_sample(w: np.ndarray, like: np.ndarray) -> np.ndarray:
    """w (n,) shaped to broadcast against the (n, outputs...) array like."""
    return w.reshape((-1,) + (1,) * (like.ndim - 1))


def mse(y_true: Any, y_pred: Any, *, sample_weight: Any = None) -> float:
    """Mean squared error (per output over the samples, weighted, then averaged over outputs)."""
    t, p = _values(y_true, y_pred)
    w = _sample_weight(sample_weight, len(t))
    if w is None:
        return float(np.mean((t - p) ** 2))
    return float(np.mean(_over_samples((t - p) ** 2, w)))


def mae(y_true: Any, y_pred: Any, *, sample_weight: Any = None) -> float:
    """Mean absolute error (per output over the samples, weighted, then averaged)."""
    t, p = _values(y_true, y_pred)
    w = _sample_weight(sample_weight, len(t))
    if w is None:
        return float(np.mean(np.abs(t - p)))
    return float(np.mean(_over_samples(np.abs(t - p), w)))


def rmse(y_true: Any, y_pred: Any, *, sample_weight: Any = None) -> float:
    """Root mean squared error (per output, then averaged, like scikit-learn)."""
    t, p = _values(y_true, y_pred)
    w = _sample_weight(sample_weight, len(t))
    return float(np.mean(np.sqrt(_over_samples((t - p) ** 2, w))))


def r2(y_true: Any, y_pred: Any, *, sample_weight: Any = None) -> float:
    """Coefficient of determination, per output then averaged (scikit-learn's defaults).

    A constant target scores 1 if matched exactly, else 0 (scikit-learn's force_finite=True);
    NaN for a single sample, as there: R² is not defined there. With sample_weight the
    residual and total sums weigh each sample, the total around the weighted mean.
    """
    t, p = _values(y_true, y_pred)
    w = _sample_weight(sample_weight, len(t))
    if t.shape[0] < 2:
        return float("nan")
    ww = 1.0 if w is None else _per_sample(w, t)
    residual = np.sum(ww * (t - p) ** 2, axis=0)
    total = np.sum(ww * (t - _over_samples(t, w)) ** 2, axis=0)
    score = np.where(total != 0, 1.0 - _divide(residual, total), np.where(residual == 0, 1.0, 0.0))
    return float(np.mean(score))


# -- registry -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    """A named metric and what it must be fed.

    kind: "class" (predicted labels), "score" (per-class scores or probabilities, (n, classes))
    or "regression" (raw values). average: the precision/recall/F1 average it takes, which
    decides the targets it can score ("binary": one positive class, not multilabel rows;
    "samples": only multilabel rows).
    """

    name: str
    fn: Callable[[Any, Any], float]
    kind: str = "class"
    higher_is_better: bool = True
    average: str | None = None

    def __call__(self, y_true: Any, y_pred: Any) -> float:
        return self.fn(y_true, y_pred)


def _entries() -> dict[str, Metric]:
    m: list[Metric] = [
        Metric("accuracy", accuracy),
        Metric("top_k_accuracy", partial(top_k_accuracy, k=5), "score"),
    ]
    for avg in ("binary", "macro", "micro", "weighted", "samples"):
        suffix = "" if avg == "binary" else f"_{avg}"
        m += [Metric(f"{fn.__name__}{suffix}", partial(fn, average=avg), average=avg)
              for fn in (precision, recall, f1)]
    m += [Metric("mse", mse, "regression", False), Metric("mae", mae, "regression", False),
          Metric("rmse", rmse, "regression", False), Metric("r2", r2, "regression", True)]
    return {x.name: x for x in m}


#: Metric names the Trainer accepts; "top<k>_accuracy" (e.g. "top5_accuracy") works for any k.
METRICS: dict[str, Metric] = _entries()


def _callable_name(fn: Callable[..., Any]) -> str:
    """A callable's name for the history: its __name__ (a partial's function's)."""
    inner = fn.func if isinstance(fn, partial) else fn
    return str(getattr(inner, "__name__", type(inner).__name__))


def get_metric(name: str | Metric | Callable[[Any, Any], float],
               loss_kind: str | None = None) -> Metric:
    """The Metric for a name (case-insensitive, '-' for '_'), a Metric itself, or a callable
    (y_true, y_pred) -> float named by its __name__; ConfigError naming the choices.

    A callable is fed what the Trainer predicts for the loss_kind: raw values for a
    regression loss, else predicted classes (indices; 0/1 for a binary loss), as a
    scikit-learn score function takes them (e.g. sklearn.metrics.balanced_accuracy_score).
    For probabilities, wrap it in Metric(name, fn, kind="score").
    """
    if isinstance(name, Metric):
        return name
    if isinstance(name, str):
        key = name.strip().lower().replace("-", "_")
        if key in METRICS:
            return METRICS[key]
        match = re.fullmatch(r"top_?([1-9][0-9]*)_accuracy", key)
        if match:
            return Metric(f"top{match.group(1)}_accuracy",
                          partial(top_k_accuracy, k=int(match.group(1))), "score")
        close = difflib.get_close_matches(key, [*METRICS, "top5_accuracy"], n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(map(repr, close))}?)" if close else ""
        raise ConfigError(f"unknown metric {name!r}{hint}; expected a name in "
                          f"{sorted(METRICS) + ['top<k>_accuracy']}, a Metric(name, fn, kind) "
                          f"or a callable (y_true, y_pred) -> float")
    if callable(name) and not isinstance(name, type):
        kind = "regression" if loss_kind == "regression" else "class"
        return Metric(_callable_name(name), name, kind)
    raise ConfigError(f"expected a metric name in {sorted(METRICS) + ['top<k>_accuracy']}, a "
                      f"Metric(name, fn, kind) or a callable (y_true, y_pred) -> float, found "
                      f"{getattr(name, '__name__', type(name).__name__)}")
