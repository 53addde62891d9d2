"""Evaluation metrics in plain NumPy (GPU arrays are copied to the host first), and the registry
the Trainer looks metric names up in."""

from __future__ import annotations

import difflib
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


def _divide(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den is 0 (scikit-learn's zero_division=0)."""
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


# -- classification --------------------------------------------------------------------------

def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of samples predicted exactly; for multilabel 0/1 rows, every label of the
    sample right (scikit-learn's subset accuracy).

    One-hot or probability rows (targets or predictions) count by their argmax, the first of
    tied maxima (np.argmax, as Keras; scikit-learn takes labels only). Fractional 1-D values
    (probabilities) are refused, as there: threshold them first.
    """
    t, p = _classes(y_true, y_pred)
    hit = t == p
    if hit.ndim > 1:
        hit = hit.reshape(hit.shape[0], -1).all(axis=1)
    return float(np.mean(hit))


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


def top_k_accuracy(y_true: Any, scores: Any, k: int = 5) -> float:
    """Fraction of samples whose true class is among the k highest scores.

    Ties rank as in scikit-learn's top_k_accuracy_score: the higher class index first (its
    reversed stable sort), and with two classes the true class must score strictly above the
    other to be predicted as class 1 (its binary rule, scores[:, 1] > 0.5 for probability
    rows), so a tie is class 0. Hence with ties k=1 may differ from accuracy of the argmax,
    which takes the first maximum. k at or above the number of classes scores 1.0 with a
    UserWarning, as there.
    """
    t, s = _top_k_inputs(y_true, scores)
    if int(k) != k or k < 1:
        raise ConfigError(f"expected k >= 1, found {k!r}")
    if k >= s.shape[1]:  # as scikit-learn: a score that cannot miss deserves a word
        warnings.warn(f"top_k_accuracy with k={k} and only {s.shape[1]} classes counts every "
                      f"sample as a hit, so it is 1.0: use a k below the number of classes",
                      UserWarning, stacklevel=2)
    true_score = s[np.arange(s.shape[0]), t][:, None]
    classes = np.arange(s.shape[1])
    tied_first = classes < t[:, None] if s.shape[1] == 2 else classes > t[:, None]
    rank = (s > true_score).sum(axis=1) + ((s == true_score) & tied_first).sum(axis=1)
    return float(np.mean(rank < k))


def confusion_matrix(y_true: Any, y_pred: Any, num_classes: int | None = None) -> np.ndarray:
    """int64 (classes, classes) counts; row = true class, column = predicted.

    The classes are, as in scikit-learn, the sorted labels seen in y_true or y_pred (any
    labels: names, negative or sparse numbers). With num_classes they are the class indices
    0..num_classes-1 (scikit-learn's labels=range(num_classes)), so a class absent from the
    data keeps its row; a label outside that range is a DataError there rather than dropped.
    """
    t, p = _labels_1d(y_true, y_pred)
    if num_classes is None:
        labels, codes = np.unique(np.concatenate([t, p]), return_inverse=True)
        k, codes = len(labels), codes.reshape(-1).astype(np.int64)
        t, p = codes[:len(t)], codes[len(t):]
    else:
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 1:
            raise ConfigError(f"expected num_classes >= 1, found {num_classes!r}")
        k = int(num_classes)
        t, p = _indices(t, "y_true", k), _indices(p, "y_pred", k)
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k)


def _counts(t: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per class (every label seen in either array): true positives, predicted, actual."""
    labels, codes = np.unique(np.concatenate([t, p]), return_inverse=True)
    k, n = len(labels), len(t)
    cm = np.bincount(codes[:n] * k + codes[n:], minlength=k * k).reshape(k, k)
    return np.diag(cm), cm.sum(axis=0), cm.sum(axis=1)


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


def _multilabel_counts(t: np.ndarray, p: np.ndarray, average: str
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per label (column; per sample, row, for average='samples'): true positives, predicted,
    actual. Every column counts, present in the data or not, as in scikit-learn."""
    if average == "binary":
        raise ShapeError(f"expected 1-D labels for average='binary', found multilabel rows of "
                         f"shape {t.shape} (use average='micro', 'macro', 'weighted' or "
                         f"'samples')")
    t, p = _indicators(t, "y_true"), _indicators(p, "y_pred")
    axis = 1 if average == "samples" else 0
    return (t & p).sum(axis=axis), p.sum(axis=axis), t.sum(axis=axis)


def _binary_counts(t: np.ndarray, p: np.ndarray, pos_label: Any
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = np.unique(np.concatenate([t, p]))
    if len(labels) > 2:
        raise DataError(f"expected at most 2 classes for average='binary', found {len(labels)} "
                        f"(use average='macro', 'micro' or 'weighted')")
    if len(labels) == 2 and pos_label not in labels.tolist():
        raise DataError(f"expected pos_label in {labels.tolist()}, found {pos_label!r}")
    tp = np.sum((t == pos_label) & (p == pos_label))
    return np.array([tp]), np.array([np.sum(p == pos_label)]), np.array([np.sum(t == pos_label)])


def _precision_recall_f1(y_true: Any, y_pred: Any, average: str, pos_label: Any
                         ) -> tuple[float, float, float]:
    if average not in _AVERAGES:
        raise ConfigError(f"expected average in {list(_AVERAGES)}, found {average!r}")
    t, p = _classes(y_true, y_pred)
    if is_multilabel(t):
        tp, pred, true = _multilabel_counts(t, p, average)
    elif average == "samples":
        raise ShapeError(f"expected multilabel rows (samples, labels) for average='samples', "
                         f"found y_true and y_pred of shape {t.shape}")
    elif average == "binary":
        tp, pred, true = _binary_counts(*_labels_1d(t, p), pos_label)
    else:
        tp, pred, true = _counts(*_labels_1d(t, p))
    if average == "micro":
        tp, pred, true = tp.sum(keepdims=True), pred.sum(keepdims=True), true.sum(keepdims=True)
    per_class = (_divide(tp, pred), _divide(tp, true), _divide(2 * tp, pred + true))
    if average == "weighted":
        if true.sum() == 0:
            return 0.0, 0.0, 0.0
        pr, rc, f = (float(np.average(v, weights=true)) for v in per_class)
    else:
        pr, rc, f = (float(v.mean()) for v in per_class)
    return pr, rc, f


def precision(y_true: Any, y_pred: Any, average: str = "binary", pos_label: Any = 1) -> float:
    """Of the samples predicted as a class, the fraction that are that class.

    A class never predicted (or, for recall, never present; for F1, neither) scores 0, the
    value of scikit-learn's default zero_division="warn", but without its warning: the
    Trainer scores every epoch, and early epochs that predict one class would repeat it.
    Classes are those seen in y_true or y_pred (any labels, as there).

    Multilabel indicator rows (2-D 0/1, one column per label) score per label (every column,
    even one with no positives), or per sample with average="samples"; average="binary" is
    refused there, as in scikit-learn.
    """
    return _precision_recall_f1(y_true, y_pred, average, pos_label)[0]


def recall(y_true: Any, y_pred: Any, average: str = "binary", pos_label: Any = 1) -> float:
    """Of the samples of a class, the fraction predicted as that class."""
    return _precision_recall_f1(y_true, y_pred, average, pos_label)[1]


def f1(y_true: Any, y_pred: Any, average: str = "binary", pos_label: Any = 1) -> float:
    """Harmonic mean of precision and recall."""
    return _precision_recall_f1(y_true, y_pred, average, pos_label)[2]


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


def mse(y_true: Any, y_pred: Any) -> float:
    """Mean squared error (averaged over outputs too)."""
    t, p = _values(y_true, y_pred)
    return float(np.mean((t - p) ** 2))


def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error."""
    t, p = _values(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


def rmse(y_true: Any, y_pred: Any) -> float:
    """Root mean squared error (per output, then averaged, like scikit-learn)."""
    t, p = _values(y_true, y_pred)
    return float(np.mean(np.sqrt(np.mean((t - p) ** 2, axis=0))))


def r2(y_true: Any, y_pred: Any) -> float:
    """Coefficient of determination, per output then averaged (scikit-learn's defaults).

    A constant target scores 1 if matched exactly, else 0 (scikit-learn's force_finite=True);
    NaN for a single sample, as there: R² is not defined there.
    """
    t, p = _values(y_true, y_pred)
    if t.shape[0] < 2:
        return float("nan")
    residual = np.sum((t - p) ** 2, axis=0)
    total = np.sum((t - t.mean(axis=0)) ** 2, axis=0)
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
