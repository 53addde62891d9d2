"""Losses, each fused into one op with a closed-form gradient (targets get no gradient)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import backend
from ..autograd.function import Function
from ..autograd.tensor import Tensor
from ..errors import ConfigError, DataError, DTypeError, ShapeError
from .activation import log_softmax_array, sigmoid_array

REDUCTIONS = ("mean", "sum", "none")


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be one of {REDUCTIONS}, found {reduction!r}")


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


def _same_shape(pred: Any, target: Any, name: str) -> Any:
    target = _like(target, pred)
    if target.shape != pred.shape:
        if target.size == pred.size:
            target = target.reshape(pred.shape)  # (N,) targets for an (N, 1) output
        else:
            raise ShapeError(f"{name}: target shape {target.shape} does not match prediction "
                             f"shape {pred.shape}")
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
        self.diff = pred - _same_shape(pred, target, "mse")
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
        self.diff = pred - _same_shape(pred, target, "l1")
        return _reduce(np.abs(self.diff), self.reduction)

    def backward(self, gy: Any) -> tuple[Any, None]:
        d = self.diff
        return np.sign(d) * _grad_scale(gy, self.reduction, d.size, d.dtype), None


class Huber(Loss):
    """Huber loss: quadratic within delta, linear outside (PyTorch's HuberLoss)."""

    def __init__(self, delta: float = 1.0, reduction: str = "mean") -> None:
        _check_reduction(reduction)
        if delta <= 0:
            raise ConfigError(f"huber delta must be positive, found {delta}")
        self.delta, self.reduction = float(delta), reduction

    def forward(self, pred: Any, target: Any) -> Any:
        d = pred - _same_shape(pred, target, "huber")
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
    """Softmax cross-entropy on logits (N, C), fused with log-softmax.

    Targets are class indices (N,) or probabilities (N, C). Class weights follow PyTorch: the mean
    divides by the summed weight of the targets. Label smoothing mixes the one-hot target with the
    uniform distribution.
    """

    def __init__(self, weight: Any = None, label_smoothing: float = 0.0,
                 reduction: str = "mean") -> None:
        _check_reduction(reduction)
        if not 0.0 <= label_smoothing <= 1.0:
            raise ConfigError(f"label_smoothing must be in [0, 1], found {label_smoothing}")
        self.weight = None if weight is None else _host_or_device(weight)
        self.smoothing, self.reduction = float(label_smoothing), reduction

    def forward(self, logits: Any, target: Any) -> Any:
        if logits.ndim != 2:
            raise ShapeError(f"cross_entropy expects logits of shape (batch, classes), "
                             f"found {logits.shape}")
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
            if n and (target.min() < 0 or target.max() >= c):
                raise ShapeError(f"cross_entropy class indices must be in [0, {c}), found "
                                 f"values from {target.min()} to {target.max()}")
            if self.weight is None and not self.smoothing:  # the common case, no one-hot
                logp = log_softmax_array(logits, axis=1)
                self.logp, self.target, self.denom = logp, target, float(n)
                return _reduce(-logp[xp.arange(n), target], self.reduction, self.denom)
            q = xp.zeros((n, c), dt)
            q[xp.arange(n), target] = 1
            row_w = weight[target].astype(dt) if weight is not None else xp.ones(n, dt)
        if self.smoothing:
            q *= dt.type(1 - self.smoothing)
            q += dt.type(self.smoothing / c)
        # per-class weights scale each term of the sum; the mean divides by the target weights
        wq = q * weight.astype(dt) if weight is not None else q
        logp = log_softmax_array(logits, axis=1)
        self.logp, self.wq = logp, wq
        per_sample = -(wq * logp).sum(axis=1)
        self.denom = float(row_w.sum()) if weight is not None else float(n)
        return _reduce(per_sample, self.reduction, self.denom)

    def backward(self, gy: Any) -> tuple[Any, None]:
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
            return g * gy[:, None], None
        return g * _grad_scale(gy, self.reduction, self.denom, g.dtype), None


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


class BCEWithLogits(Loss):
    """Binary cross-entropy on logits, computed stably; pos_weight scales the positive term."""

    def __init__(self, pos_weight: Any = None, reduction: str = "mean") -> None:
        _check_reduction(reduction)
        self.pos_weight = None if pos_weight is None else _host_or_device(pos_weight)
        self.reduction = reduction

    def forward(self, x: Any, target: Any) -> Any:
        y = _same_shape(x, target, "binary_cross_entropy")
        _check_unit_targets(y, "binary_cross_entropy_with_logits")
        self.x, self.y = x, y
        dt = x.dtype
        softplus_neg = np.logaddexp(0, -x).astype(dt)  # log(1 + exp(-x))
        if self.pos_weight is None:
            per = (1 - y) * x + softplus_neg
        else:
            self.pos_weight = _like(self.pos_weight, x)
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
        y = _same_shape(p, target, "bce")
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


def _target(t: Any) -> Any:
    if isinstance(t, Tensor):
        return t.data
    return t if type(t) is np.ndarray else _host_or_device(t)


def mse_loss(pred: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Mean squared error."""
    return MSE.apply(pred, Tensor(_target(target), _keep=True), reduction=reduction)


def l1_loss(pred: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Mean absolute error."""
    return L1.apply(pred, Tensor(_target(target), _keep=True), reduction=reduction)


def huber_loss(pred: Tensor, target: Any, delta: float = 1.0, reduction: str = "mean") -> Tensor:
    """Huber loss."""
    return Huber.apply(pred, Tensor(_target(target), _keep=True), delta=delta, reduction=reduction)


def cross_entropy(logits: Tensor, target: Any, weight: Any = None, label_smoothing: float = 0.0,
                  reduction: str = "mean") -> Tensor:
    """Softmax cross-entropy on logits."""
    return CrossEntropy.apply(logits, Tensor(_target(target), _keep=True), weight=weight,
                              label_smoothing=label_smoothing, reduction=reduction)


def binary_cross_entropy_with_logits(logits: Tensor, target: Any, pos_weight: Any = None,
                                     reduction: str = "mean") -> Tensor:
    """Binary cross-entropy on logits."""
    return BCEWithLogits.apply(logits, Tensor(_target(target), _keep=True), pos_weight=pos_weight,
                               reduction=reduction)


def binary_cross_entropy(probs: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy on probabilities."""
    return BCE.apply(probs, Tensor(_target(target), _keep=True), reduction=reduction)
