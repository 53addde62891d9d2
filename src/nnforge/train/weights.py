"""fit()'s sample_weight and class_weight, checked and turned into one weight per sample."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import backend
from ..errors import ConfigError, DataError, ShapeError


def sample_weight_arg(weights: Any, n: int, what: str = "sample_weight") -> np.ndarray | None:
    """weights as a float64 array of n finite weights >= 0 ((n, 1) read as (n,)); None stays."""
    if weights is None:
        return None
    arr = backend.to_numpy(weights) if backend.is_device_array(weights) else np.asarray(weights)
    if arr.dtype.kind not in "biuf":
        raise DataError(f"{what} must hold numbers, found dtype {arr.dtype}")
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr.reshape(len(arr))
    if arr.ndim != 1:
        raise ShapeError(f"{what} must be 1-D, one weight per sample ({n},), found shape "
                         f"{arr.shape}")
    if len(arr) != n:
        raise ShapeError(f"X has {n} samples but {what} has {len(arr)}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise DataError(f"{what} must be finite, found NaN or infinite weights")
    if (arr < 0).any():
        raise DataError(f"{what} must be >= 0, found {arr.min():g}")
    return arr


def class_weight_arg(class_weight: Any, loss: Any) -> dict[int, float] | None:
    """class_weight as {class index: weight}, or a ConfigError: regression losses have no
    classes, and a loss with its own class weights (weight=, pos_weight=) would weigh twice."""
    if class_weight is None:
        return None
    if not isinstance(class_weight, Mapping):
        raise ConfigError(f"class_weight must be a dict of class index -> weight, found "
                          f"{type(class_weight).__name__}")
    if loss.kind == "regression":
        raise ConfigError(f"class_weight needs a classification loss, found {loss!r}, which "
                          f"regresses: use sample_weight to weigh samples")
    own = next((a for a in ("weight", "pos_weight") if getattr(loss, a, None) is not None), None)
    if own is not None:
        raise ConfigError(f"class_weight with {type(loss).__name__}({own}=...) would weigh the "
                          f"classes twice: pass one of them")
    out: dict[int, float] = {}
    for key, value in class_weight.items():
        if isinstance(key, (bool, np.bool_)) or not isinstance(key, numbers.Integral) \
                or key < 0:
            raise ConfigError(f"class_weight keys must be class indices (integers >= 0), found "
                              f"{key!r:.40}")
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) \
                or not math.isfinite(value) or value < 0:
            raise ConfigError(f"class_weight values must be finite numbers >= 0, found "
                              f"{value!r:.40} for class {key}")
        out[int(key)] = float(value)
    return out


def class_weights_per_sample(class_weight: dict[int, float], kind: str,
                             y: np.ndarray) -> np.ndarray:
    """Each sample's class weight (1.0 for a class the dict leaves out); class indices are
    y's labels, the argmax of one-hot (probability) rows, or binary 0/1 targets. A key naming
    no class of y is refused: a weight that weighs nothing is most likely an off-by-one."""
    if kind == "binary":
        if y.ndim == 2 and y.shape[1] != 1:
            raise ConfigError(f"class_weight needs one binary label per sample, found "
                              f"multilabel targets of shape {y.shape}: use sample_weight")
        labels = y.reshape(len(y))
        if not np.isin(labels, (0, 1)).all():
            raise DataError("class_weight needs 0/1 binary targets, found soft (fractional) "
                            "targets: use sample_weight")
        labels, classes = labels.astype(np.int64), 2
    elif y.ndim == 2:
        labels, classes = y.argmax(axis=1), y.shape[1]
    else:
        labels = y.astype(np.int64)
        classes = int(labels.max()) + 1 if len(labels) else 0
    unknown = sorted(k for k in class_weight
                     if k >= classes or (kind == "multiclass" and y.ndim == 1
                                         and not (labels == k).any()))
    if unknown:
        raise ConfigError(f"class_weight names class {unknown[0]}, which the targets do not "
                          f"hold (classes 0 to {classes - 1}, {np.unique(labels).size} of "
                          f"them in y)")
    table = np.ones(max(classes, 1), np.float64)
    for k, v in class_weight.items():
        table[k] = v
    return table[labels]
