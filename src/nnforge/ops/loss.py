"""Losses, each fused into one op with a closed-form gradient (targets get no gradient)."""

from __future__ import annotations

import numbers
from math import inf
from typing import Any

import numpy as np

from .. import backend
from ..autograd.function import Function
from ..autograd.tensor import Tensor
from ..errors import ConfigError, DataError, DTypeError, ShapeError, check_float
from .activation import log_softmax_array, sigmoid_array

REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str, owner: str = "") -> None:
    """ConfigError unless reduction is one of REDUCTIONS; owner (e.g. 'MSELoss') prefixes it."""
    if type(reduction) is not str or reduction not in REDUCTIONS:
        where = f"{owner}: " if owner else ""
        raise ConfigError(f"{where}reduction must be one of {REDUCTIONS}, found "
                          f"{reduction!r:.60}")


def check_delta(delta: Any, owner: str = "huber_loss") -> float:
    """Huber's delta as a float > 0 and finite, else ConfigError."""
    # check_float's ranges are closed at the low end: 0 (which torch refuses too) is tested here
    if isinstance(delta, numbers.Real) and not isinstance(delta, bool) and not 0 < delta < inf:
        raise ConfigError(f"expected {owner} delta in (0, inf), found {delta!r}")
    return check_float(f"{owner} delta", delta)


def check_label_smoothing(label_smoothing: Any, owner: str = "cross_entropy") -> float:
    """label_smoothing as a float in [0, 1], else ConfigError."""
    if type(label_smoothing) is float and 0.0 <= label_smoothing <= 1.0:  # the per-call path
        return label_smoothing
    return check_float(f"{owner} label_smoothing", label_smoothing, 0.0, 1.0)


def check_ignore_index(ignore_index: Any, owner: str = "cross_entropy") -> int:
    """ignore_index as an int, else ConfigError (int() would truncate 1.5 and accept True)."""
    if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index,
                                                                     (int, np.integer)):
        raise ConfigError(f"{owner}: ignore_index must be an integer, found "
                          f"{ignore_index!r:.60}")
    return int(ignore_index)


def check_weights(weight: Any, name: str, owner: str, ndim: int | None = None) -> Any:
    """weight (None, a number, list, NumPy or GPU array, a Tensor's data) if it holds finite
    numbers, as given (a repr shows what was passed); DTypeError for other values, ConfigError
    for NaN or inf, ShapeError for another ndim than ndim."""
    if weight is None:
        return None
    if isinstance(weight, Tensor):
        weight = weight.data
    try:
        arr = _host_or_device(weight)
    except (TypeError, ValueError):  # a ragged list, say
        arr = None
    if arr is None or arr.dtype.kind not in "biuf":
        found = f"dtype {arr.dtype}" if arr is not None else f"{weight!r:.60}"
        raise DTypeError(f"{owner}: {name} must be an array of numbers, found {found}")
    if ndim is not None and arr.ndim != ndim:
        raise ShapeError(f"{owner}: {name} must be a {ndim}-D array (one weight per class), "
                         f"found shape {tuple(arr.shape)}")
    if not bool(np.isfinite(backend.to_numpy(arr)).all()):  # once, at construction
        raise ConfigError(f"{owner}: {name} must be finite, found NaN or inf in "
                          f"{backend.to_numpy(arr)!r:.80}")
    return weight


def _reduce(per_elem: Any, reduction: str, denom: float | None = None) -> Any:
    if reduction == "none":
        return per_elem
    total = per_elem.sum(dtype=np.float64)
    if type(total) is not np.float64:  # a GPU array: a 0-d array there, no trip to the host
        if reduction == "mean":
            total = total / (per_elem.size if denom is None else denom)
        return total.astype(per_elem.dtype)
    if reduction == "sum":
        return np.asarray(total, dtype=per_elem.dtype)
    n = per_elem.size if denom is None else denom
    return np.asarray(total / n, dtype=per_elem.dtype)


def _grad_scale(gy: Any, reduction: str, n: float, dtype: Any) -> Any:
    """Factor that turns d(loss)/d(element) into the reduced loss's gradient."""
    if reduction == "none":
        return gy
    if type(gy) is not np.ndarray and backend.is_device_array(gy):  # 0-d, on the GPU: stays
        return (gy / n if reduction == "mean" else gy).astype(dtype)
    return dtype.type(gy / n) if reduction == "mean" else dtype.type(gy)


def _like(a: Any, ref: Any) -> Any:
    """a as an array on ref's device: targets and class weights follow the predictions."""
    if type(a) is np.ndarray and type(ref) is np.ndarray:
        return a
    return backend.same_device_as(a, ref)


def _column_pair(a: tuple[int, ...], b: tuple[int, ...]) -> bool:
    """Whether shapes a and b are (N,) and (N, 1), in either order: a single-output model's
    column against a flat vector of targets, the one reshape the losses make."""
    flat, col = (a, b) if len(a) == 1 else (b, a)
    return len(flat) == 1 and len(col) == 2 and col == (flat[0], 1)


def _same_shape(pred: Any, target: Any, name: str) -> Any:
    """target in pred's shape and dtype; ShapeError for any other shape than pred's own, the
    (N,) <-> (N, 1) pair or a single value (a reshape of another same-size shape would pair
    wrong elements)."""
    target = _like(target, pred)
    if target.shape != pred.shape and target.ndim:  # a 0-d target broadcasts, as in torch
        # shapes of one element each ((1,) against (), (1, 1)...) pair their only elements
        if not (_column_pair(pred.shape, target.shape) or target.size == pred.size == 1):
            raise ShapeError(f"{name}: expected a target of the prediction's shape "
                             f"{tuple(pred.shape)} (or (N,) for an (N, 1) one, and the "
                             f"reverse, or a single number), found target shape "
                             f"{tuple(target.shape)}")
        target = target.reshape(pred.shape)
    return target.astype(pred.dtype, copy=False)


class Loss(Function):
    """Base of the loss ops: they belong to training, so tracing refuses them."""

    def lower(self, b: Any, xs: list[str]) -> Any:
        """Refused: an inference graph computes the model's output, never a loss."""
        raise b.refuse("a loss belongs to training, not to an inference graph; expected "
                       "forward to return the model's output, with the loss computed outside "
                       "it (Trainer(loss=...), or a separate call on forward's output)")


class MSE(Loss):
    """Mean squared error."""

    def __init__(self, reduction: str = "mean") -> None:
        _check_reduction(reduction)
        self.reduction = reduction

    def forward(self, pred: Any, target: Any) -> Any:
        self.diff = pred - _same_shape(pred, target, "mse_loss")
        return _reduce(self.diff * self.diff, self.reduction)

    def backward(self, gy: Any) -> tuple[Any, None]:
        d = self.diff
        return 2 * d * _grad_scale(gy, self.reduction, d.size, d.dtype), None


class L1(Loss):
    """Mean absolute error (gradient 0 where prediction equals target)."""

    def __init__(self, reduction: str = "mean") -> None:
        _check_reduction(reduction)
        self.reduction = reduction

    def forward(self, pred: Any, target: Any) -> Any:
        self.diff = pred - _same_shape(pred, target, "l1_loss")
        return _reduce(np.abs(self.diff), self.reduction)

    def backward(self, gy: Any) -> tuple[Any, None]:
        d = self.diff
        return np.sign(d) * _grad_scale(gy, self.reduction, d.size, d.dtype), None


class Huber(Loss):
    """Huber loss: quadratic within delta, linear outside (PyTorch's HuberLoss)."""

    def __init__(self, delta: float = 1.0, reduction: str = "mean") -> None:
        _check_reduction(reduction)
        self.delta, self.reduction = check_delta(delta), reduction

    def forward(self, pred: Any, target: Any) -> Any:
        d = pred - _same_shape(pred, target, "huber_loss")
        self.diff = d
        a, delta = np.abs(d), d.dtype.type(self.delta)
        half = d.dtype.type(0.5)
        per = np.where(a <= delta, half * d * d, delta * (a - half * delta))
        return _reduce(per, self.reduction)

    def backward(self, gy: Any) -> tuple[Any, None]:
        d = self.diff
        g = np.clip(d, -self.delta, self.delta).astype(d.dtype, copy=False)
        return g * _grad_scale(gy, self.reduction, d.size, d.dtype), None


class CrossEntropy(Loss):
    """Softmax cross-entropy on logits (N, C), fused with log-softmax; (N, C, d1, ...) logits
    are computed as (N * d1 * ..., C) rows with C moved last.

    Targets are class indices (N,) or probabilities (N, C) ((N, d1, ...) or the logits' shape).
    Class weights follow PyTorch: the mean divides by the summed weight of the targets. Label
    smoothing mixes the one-hot target with the uniform distribution. Rows whose class index
    is ignore_index add neither loss nor gradient, nor weight to the mean's divisor.
    """

    #: the logits' shape when they are (N, C, d1, ...): backward moves C back to axis 1
    nd_shape: tuple[int, ...] | None = None
    #: 1 for the rows that count, 0 for ignored ones; None when no row is ignored
    keep: Any = None

    def __init__(self, weight: Any = None, label_smoothing: float = 0.0,
                 reduction: str = "mean", ignore_index: int = -100) -> None:
        _check_reduction(reduction)
        self.weight = None if weight is None else _host_or_device(weight)
        self.smoothing, self.reduction = check_label_smoothing(label_smoothing), reduction
        self.ignore_index = check_ignore_index(ignore_index)

    def forward(self, logits: Any, target: Any) -> Any:
        if logits.ndim != 2:  # the one check the 2-D fast path pays
            return self._forward_nd(logits, target)
        return self._forward_2d(logits, target)

    def _forward_nd(self, logits: Any, target: Any) -> Any:
        """(N, C, d1, ...) logits as (N * d1 * ..., C) rows, the output back in (N, d1, ...)."""
        if logits.ndim < 2:
            raise ShapeError(f"cross_entropy expects logits of shape (batch, classes) or "
                             f"(batch, classes, d1, ...), found {tuple(logits.shape)}")
        xp = np if type(logits) is np.ndarray else backend.xp_of(logits)
        n, c, rest = logits.shape[0], logits.shape[1], tuple(logits.shape[2:])
        target = _like(target, logits)
        if target.shape == logits.shape:  # probabilities, classes along axis 1 too
            target = xp.moveaxis(target, 1, -1).reshape(-1, c)
        elif target.shape == (n, *rest):
            target = target.reshape(-1)
        else:
            raise ShapeError(f"cross_entropy with logits of shape {tuple(logits.shape)} "
                             f"expects class indices of shape {(n, *rest)} or probabilities of "
                             f"shape {tuple(logits.shape)}, found target shape "
                             f"{tuple(target.shape)}")
        self.nd_shape = tuple(logits.shape)
        out = self._forward_2d(xp.moveaxis(logits, 1, -1).reshape(-1, c), target)
        return out.reshape(n, *rest) if self.reduction == "none" else out

    def _forward_2d(self, logits: Any, target: Any) -> Any:
        n, c = logits.shape
        dt = logits.dtype
        xp = np if type(logits) is np.ndarray else backend.xp_of(logits)
        if self.weight is not None and self.weight.shape != (c,):
            raise ShapeError(f"cross_entropy class weights must have shape ({c},), "
                             f"found {self.weight.shape}")
        weight = None if self.weight is None else _like(self.weight, logits)
        target = _like(target, logits)
        if target.ndim == 2:
            if target.shape != logits.shape:
                raise ShapeError(f"cross_entropy probability targets must have shape "
                                 f"{logits.shape}, found {target.shape}")
            q = target.astype(dt, copy=True)
            row_w = xp.ones(n, dt)
        else:
            target = self._class_indices(target, n, c)
            keep = self._ignored(target, c)
            if keep is not None:  # a class that exists for the one-hot; the row is masked
                target = xp.where(keep, target, 0)
            elif self.weight is None and not self.smoothing:  # the common case, no one-hot
                logp = log_softmax_array(logits, axis=1)
                self.logp, self.target, self.denom = logp, target, float(n)
                return _reduce(-logp[xp.arange(n), target], self.reduction, self.denom)
            q = xp.zeros((n, c), dt)
            q[xp.arange(n), target] = 1
            row_w = weight[target].astype(dt) if weight is not None else xp.ones(n, dt)
            if keep is not None:
                row_w = row_w * keep.astype(dt)
        if self.smoothing:
            q *= dt.type(1 - self.smoothing)
            q += dt.type(self.smoothing / c)
        if self.keep is not None:
            q *= self.keep.astype(dt)[:, None]
        # per-class weights scale each term of the sum; the mean divides by the target weights
        wq = q * weight.astype(dt) if weight is not None else q
        logp = log_softmax_array(logits, axis=1)
        self.logp, self.wq = logp, wq
        per_sample = -(wq * logp).sum(axis=1)
        if self.keep is not None:  # 0 * log p is NaN for non-finite logits: torch's +0.0 there
            per_sample[~self.keep] = 0
        self.denom = (float(row_w.sum()) if weight is not None or self.keep is not None
                      else float(n))
        if self.reduction == "mean" and self.denom == 0:  # every row ignored: nan, as torch
            return xp.asarray(xp.nan, dtype=dt)
        return _reduce(per_sample, self.reduction, self.denom)

    def _class_indices(self, target: Any, n: int, c: int) -> Any:
        """target as n integer class indices in [0, c) or ignore_index, else an error."""
        target = target.reshape(-1)
        if target.shape != (n,):
            raise ShapeError(f"cross_entropy expects {n} class indices, found shape "
                             f"{target.shape}")
        if target.dtype.kind not in "iu":
            if target.dtype.kind == "f" and np.all(np.mod(target, 1) == 0):
                target = target.astype(np.int64)
            else:
                raise DTypeError(f"cross_entropy expects integer class indices, found "
                                 f"{target.dtype}")
        return target

    def _ignored(self, target: Any, c: int) -> Any:
        """The keep mask (None when no row has ignore_index); ShapeError for other indices
        outside [0, c). The default ignore_index (-100) costs nothing on valid targets."""
        if not len(target):
            return None
        lo, hi = target.min(), target.max()
        if lo >= 0 and hi < c and not 0 <= self.ignore_index < c:
            return None
        keep = target != self.ignore_index
        bad = keep & ((target < 0) | (target >= c))
        if bad.any():
            raise ShapeError(f"cross_entropy class indices must be in [0, {c}) (or "
                             f"ignore_index={self.ignore_index}), found values from "
                             f"{target[keep].min()} to {target[keep].max()}")
        if keep.all():
            return None
        self.keep = keep
        return keep

    def backward(self, gy: Any) -> tuple[Any, None]:
        shape = self.nd_shape
        if shape is None:
            return self._backward_2d(gy), None
        if self.reduction == "none":
            gy = gy.reshape(-1)
        g = self._backward_2d(gy)
        xp = np if type(g) is np.ndarray else backend.xp_of(g)
        g = g.reshape(shape[0], *shape[2:], shape[1])
        return xp.ascontiguousarray(xp.moveaxis(g, -1, 1)), None

    def _backward_2d(self, gy: Any) -> Any:
        p = np.exp(self.logp)
        target = getattr(self, "target", None)
        if target is not None:  # one-hot targets: softmax minus one at the target
            g = p
            xp = np if type(g) is np.ndarray else backend.xp_of(g)
            g[xp.arange(len(g)), target] -= 1
        else:
            wsum = self.wq.sum(axis=1, keepdims=True)
            g = p * wsum - self.wq  # d/dz of -sum_c wq_c log softmax(z)_c
        if self.reduction == "none":
            g = g * gy[:, None]
        else:  # every row ignored: denom 0, g zero, and so is its gradient, not 0 * inf
            g = g * _grad_scale(gy, self.reduction, self.denom or 1.0, g.dtype)
        if self.keep is not None:  # an ignored row's gradient is 0, even where its logits or
            g[~self.keep] = 0  # its incoming gradient are inf or NaN (0 * inf is NaN)
        return g


def _check_unit_targets(y: Any, name: str) -> None:
    """DataError for binary targets outside [0, 1]: -1/1 labels or class indices 0..k would
    otherwise train on a loss that goes negative. Soft targets in [0, 1] are fine."""
    if not y.size:
        return
    lo, hi = float(y.min()), float(y.max())  # two plain reductions; NaN passes (Trainer says)
    if lo < 0 or hi > 1:
        raise DataError(f"{name} expected targets in [0, 1] (0/1 labels or probabilities), "
                        f"found values from {lo:g} to {hi:g}: map -1/1 labels to 0/1, e.g. "
                        f"(y + 1) / 2, or for class indices use loss='cross_entropy'")


def _check_pos_weight(pos_weight: Any, shape: tuple[int, ...]) -> Any:
    """pos_weight, if it broadcasts to the logits' shape without growing it (torch: one weight
    per output, i.e. per class along the last axis, or a single one); else ShapeError."""
    if pos_weight.dtype.kind not in "biuf":
        raise DTypeError(f"binary_cross_entropy_with_logits pos_weight must hold numbers, "
                         f"found dtype {pos_weight.dtype}")
    try:
        ok = np.broadcast_shapes(pos_weight.shape, shape) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        want = f"({shape[-1]},)" if shape else "()"
        raise ShapeError(f"binary_cross_entropy_with_logits pos_weight must broadcast to the "
                         f"logits' shape {tuple(shape)} (one weight per output, shape {want}, "
                         f"or a single number), found shape {tuple(pos_weight.shape)}")
    return pos_weight


class BCEWithLogits(Loss):
    """Binary cross-entropy on logits, computed stably; pos_weight scales the positive term."""

    def __init__(self, pos_weight: Any = None, reduction: str = "mean") -> None:
        _check_reduction(reduction)
        self.pos_weight = None if pos_weight is None else _host_or_device(pos_weight)
        self.reduction = reduction

    def forward(self, x: Any, target: Any) -> Any:
        y = _same_shape(x, target, "binary_cross_entropy_with_logits")
        _check_unit_targets(y, "binary_cross_entropy_with_logits")
        self.x, self.y = x, y
        dt = x.dtype
        softplus_neg = np.logaddexp(0, -x).astype(dt)  # log(1 + exp(-x))
        if self.pos_weight is None:
            per = (1 - y) * x + softplus_neg
        else:
            self.pos_weight = _like(_check_pos_weight(self.pos_weight, x.shape), x)
            lw = 1 + (self.pos_weight.astype(dt) - 1) * y
            per = (1 - y) * x + lw * softplus_neg
        return _reduce(per.astype(dt, copy=False), self.reduction)

    def backward(self, gy: Any) -> tuple[Any, None]:
        x, y = self.x, self.y
        s = sigmoid_array(x)
        if self.pos_weight is None:
            g = s - y
        else:
            lw = 1 + (self.pos_weight.astype(x.dtype) - 1) * y
            g = (1 - y) - lw * (1 - s)
        return g * _grad_scale(gy, self.reduction, x.size, x.dtype), None


class BCE(Loss):
    """Binary cross-entropy on probabilities (a model ending in Sigmoid); logs clamped at -100."""

    def __init__(self, reduction: str = "mean") -> None:
        _check_reduction(reduction)
        self.reduction = reduction

    def forward(self, p: Any, target: Any) -> Any:
        y = _same_shape(p, target, "binary_cross_entropy")
        if p.size:  # two plain reductions, no temporaries; NaN passes (the Trainer names it)
            lo, hi = float(p.min()), float(p.max())
            if lo < 0 or hi > 1:
                raise DataError(f"binary_cross_entropy expected probabilities in [0, 1] (the "
                                f"output of a Sigmoid), found values from {lo:g} to {hi:g}: "
                                f"for logits use BCEWithLogitsLoss (loss='bce_with_logits')")
        _check_unit_targets(y, "binary_cross_entropy")
        self.p, self.y = p, y
        with np.errstate(divide="ignore"):  # p of exactly 0 or 1 gives -inf, clamped like PyTorch
            log_p = np.maximum(np.log(p), -100)
            log_1mp = np.maximum(np.log1p(-p), -100)
        return _reduce(-(y * log_p + (1 - y) * log_1mp), self.reduction)

    def backward(self, gy: Any) -> tuple[Any, None]:
        p, y = self.p, self.y
        eps = p.dtype.type(1e-12)
        g = (p - y) / np.maximum(p * (1 - p), eps)
        return g * _grad_scale(gy, self.reduction, p.size, p.dtype), None


def _host_or_device(a: Any) -> Any:
    """An array kept where it is (NumPy or GPU); lists and numbers become NumPy arrays."""
    return a if backend.is_device_array(a) else np.asarray(a)


def _non_number(arr: np.ndarray) -> str | None:
    """repr of an element of an object array that is not a number (None, a string), if any,
    else None: astype(float) would turn None into NaN and '1.5' into 1.5."""
    for kind in set(map(type, arr.flat)):  # the distinct types: one C-speed pass
        if not issubclass(kind, (numbers.Number, np.bool_)):
            return f"{next(v for v in arr.flat if type(v) is kind)!r:.40}"
    return None


def _target(t: Any, name: str) -> Tensor:
    """The target as a Tensor without gradient; DTypeError for None, strings, objects and the
    like (NumPy's own "could not convert string to float" would not name the loss)."""
    if t is None:  # np.asarray(None) casts to NaN: a loss of NaN, not an error, otherwise
        raise DTypeError(f"{name} expected numeric targets (an array of floats, ints or bools), "
                         f"found None")
    arr = t.data if isinstance(t, Tensor) else t if type(t) is np.ndarray else _host_or_device(t)
    if arr.dtype.kind not in "biuf":
        held = ""
        if arr.dtype.kind == "O":  # e.g. a pandas object column of numbers: as the Trainer does
            bad = _non_number(arr)
            if bad is None:
                try:
                    return Tensor(arr.astype(np.float64), _keep=True)
                except (TypeError, ValueError):  # complex numbers, say
                    pass
            else:
                held = f" holding {bad}"
        raise DTypeError(f"{name} expected numeric targets (floats, ints or bools), found an "
                         f"array of dtype {arr.dtype} and shape {arr.shape}{held}")
    return Tensor(arr, _keep=True)


def mse_loss(pred: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Mean squared error."""
    return MSE.apply(pred, _target(target, "mse_loss"), reduction=reduction)


def l1_loss(pred: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Mean absolute error."""
    return L1.apply(pred, _target(target, "l1_loss"), reduction=reduction)


def huber_loss(pred: Tensor, target: Any, delta: float = 1.0, reduction: str = "mean") -> Tensor:
    """Huber loss."""
    return Huber.apply(pred, _target(target, "huber_loss"), delta=delta, reduction=reduction)


def cross_entropy(logits: Tensor, target: Any, weight: Any = None, label_smoothing: float = 0.0,
                  reduction: str = "mean", ignore_index: int = -100) -> Tensor:
    """Softmax cross-entropy on logits (N, C) or (N, C, d1, ...)."""
    return CrossEntropy.apply(logits, _target(target, "cross_entropy"), weight=weight,
                              label_smoothing=label_smoothing, reduction=reduction,
                              ignore_index=ignore_index)


def binary_cross_entropy_with_logits(logits: Tensor, target: Any, pos_weight: Any = None,
                                     reduction: str = "mean") -> Tensor:
    """Binary cross-entropy on logits."""
    return BCEWithLogits.apply(logits, _target(target, "binary_cross_entropy_with_logits"),
                               pos_weight=pos_weight, reduction=reduction)


def binary_cross_entropy(probs: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy on probabilities."""
    return BCE.apply(probs, _target(target, "binary_cross_entropy"), reduction=reduction)
