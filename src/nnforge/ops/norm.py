"""Batch normalisation (ONNX BatchNormalization) over the channel axis 1 of (N, C, ...) arrays,
and layer normalisation (ONNX LayerNormalization) over the last dims."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..autograd.function import Function
from ..autograd.tensor import Tensor
from ..errors import ShapeError
from .activation import require_float


def _channel_view(a: Any) -> Any:
    """(N, C, rest) view of a (N, C, ...) array, so reductions run over axes 0 and 2."""
    # explicit sizes: -1 is ambiguous for an empty batch (N = 0)
    return a.reshape(a.shape[0], a.shape[1], math.prod(a.shape[2:]))


def channel_sum(a: Any) -> Any:
    """Sum over every axis except 1 (first over the batch: contiguous rows add fastest)."""
    return _channel_view(a).sum(axis=0).sum(axis=1)


def _per_channel(v: Any, ndim: int) -> Any:
    """Shape a (C,) vector to broadcast against (N, C, ...)."""
    return v.reshape((-1,) + (1,) * (ndim - 2))


def batch_statistics(x: Any) -> tuple[Any, Any]:
    """Per-channel mean and biased variance of x (N, C, ...), in x's dtype."""
    if x.ndim < 2:
        raise ShapeError(f"batch normalisation expected input of shape (batch, channels, ...), "
                         f"found {x.shape}")
    require_float(x, "batch normalisation")
    count = x.size // x.shape[1]
    if count < 2:
        # one sample of (N, C) input has no spread to normalise by; say how to avoid it
        raise ShapeError(f"batch normalisation in training mode expected more than one value per "
                         f"channel, found input of shape {x.shape}: train on batches of 2 or "
                         f"more samples (e.g. DataLoader(..., drop_last=True), or a batch_size "
                         f"that leaves no single sample over)")
    inv = x.dtype.type(1.0 / count)
    mean = channel_sum(x) * inv
    # two passes (subtract the mean first): E[x^2] - E[x]^2 cancels badly in float32
    xc = x - _per_channel(mean, x.ndim)
    np.multiply(xc, xc, out=xc)
    return mean, channel_sum(xc) * inv


class BatchNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, per channel (axis 1).

    Inputs are x, weight, bias, mean, var as in ONNX. With training=True, mean and var must be
    the batch statistics of x (`batch_statistics(x)`) and the backward differentiates through
    them; with training=False they are constants (the running statistics).
    """

    ir_name = "BatchNormalization"

    def __init__(self, eps: float = 1e-5, training: bool = False) -> None:
        self.eps = float(eps)
        self.training = bool(training)

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX BatchNormalization on the running statistics; batch statistics are refused."""
        if self.training:
            raise b.refuse("batch normalisation on the statistics of the batch it is given "
                           "(training=True) would make one sample's prediction depend on the "
                           "others served with it; expected training=False with running "
                           "statistics (a BatchNorm layer in eval mode)")
        return b.node("BatchNormalization", xs, epsilon=self.eps)

    def forward(self, x: Any, weight: Any, bias: Any, mean: Any, var: Any) -> Any:
        c = x.shape[1] if x.ndim >= 2 else None
        for name, v in (("weight", weight), ("bias", bias), ("mean", mean), ("var", var)):
            if c is None or v.shape != (c,):
                raise ShapeError(f"BatchNorm expected input of shape (batch, C, ...) and a {name} "
                                 f"of shape (C,), found input {x.shape} and {name} {v.shape}")
        require_float(x, "batch normalisation")
        inv_std = 1.0 / np.sqrt(var + var.dtype.type(self.eps))
        scale = (weight * inv_std).astype(x.dtype, copy=False)
        shift = (bias - mean * scale).astype(x.dtype, copy=False)
        y = x * _per_channel(scale, x.ndim)
        y += _per_channel(shift, x.ndim)
        if any(self.needs_input_grad[:3]):
            self.x, self.mean, self.inv_std, self.scale = x, mean, inv_std, scale
        return y

    def backward(self, gy: Any) -> tuple[Any, ...]:
        x, mean, inv_std, scale = self.x, self.mean, self.inv_std, self.scale
        nd = x.ndim
        xc = x - _per_channel(mean.astype(x.dtype, copy=False), nd)
        g_bias = channel_sum(gy)
        g_weight = channel_sum(gy * xc) * inv_std  # sum(gy * xhat)
        gx = None
        if self.needs_input_grad[0]:
            gx = gy * _per_channel(scale, nd)
            if self.training:
                # gx = scale * (gy - mean(gy) - xhat * mean(gy * xhat)), per channel:
                # gy * scale + xc * a + b
                m = x.dtype.type(x.size // x.shape[1])
                a = (-scale * inv_std * g_weight / m).astype(x.dtype, copy=False)
                b = (-scale * g_bias / m).astype(x.dtype, copy=False)
                np.multiply(xc, _per_channel(a, nd), out=xc)
                gx += xc
                gx += _per_channel(b, nd)
        need = self.needs_input_grad
        return (gx, g_weight if need[1] else None, g_bias if need[2] else None, None, None)


def batch_norm(x: Tensor, weight: Tensor, bias: Tensor, mean: Any, var: Any,
               training: bool, eps: float = 1e-5) -> Tensor:
    """Batch normalisation; in training mode mean/var must be batch_statistics(x.data)."""
    return BatchNorm.apply(x, weight, bias, mean, var, eps=eps, training=training)


def layer_statistics(x: Any, ndim: int) -> tuple[Any, Any]:
    """(x - mean, biased variance) over the last ndim axes (size-1 dims kept), in x's dtype;
    two passes: E[x^2] - E[x]^2 cancels badly in float32. The mean is summed in float64 (as
    the runtime kernel and ONNX Runtime do): exact for a constant row, which then normalises
    to exactly 0 rather than to (1 ulp of the mean) / sqrt(eps)."""
    axes = tuple(range(x.ndim - ndim, x.ndim))
    xc = x - x.mean(axis=axes, keepdims=True, dtype=np.float64).astype(x.dtype, copy=False)
    return xc, (xc * xc).mean(axis=axes, keepdims=True, dtype=x.dtype)


class LayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, statistics over the last `ndim` axes.

    Inputs are x and optionally weight, then bias, each of shape x.shape[-ndim:].
    """

    ir_name = "LayerNormalization"

    def __init__(self, ndim: int = 1, eps: float = 1e-5,
                 normalized: tuple[int, ...] | None = None) -> None:
        self.ndim, self.eps = int(ndim), float(eps)
        #: the normalised dims (forward sets them; a layer lowered without running it gives them)
        self.normalized = normalized

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX LayerNormalization (opset 17) over the last ndim axes; a unit Scale stands in
        for a missing weight (ONNX requires one)."""
        ins = list(xs)
        if len(ins) == 1:
            ins.append(b.const(np.ones(self.normalized, np.float64)))
        return b.node("LayerNormalization", ins, axis=-self.ndim, epsilon=self.eps)

    def forward(self, x: Any, weight: Any = None, bias: Any = None) -> Any:
        require_float(x, "layer normalisation")
        k = self.ndim
        self.normalized = tuple(x.shape[x.ndim - k:])
        for name, v in (("weight", weight), ("bias", bias)):
            if x.ndim < k or (v is not None and tuple(v.shape) != self.normalized):
                raise ShapeError(f"LayerNorm expected input whose last {k} dims equal the "
                                 f"{name} shape, found input {x.shape} and {name} "
                                 f"{None if v is None else v.shape}")
        xc, var = layer_statistics(x, k)
        inv = (1.0 / np.sqrt(var + var.dtype.type(self.eps))).astype(x.dtype, copy=False)
        xhat = xc * inv
        self.xhat, self.inv, self.weight = xhat, inv, weight
        y = xhat if weight is None else xhat * weight
        return y if bias is None else y + bias

    def backward(self, gy: Any) -> tuple[Any, ...]:
        xhat, inv, weight, k = self.xhat, self.inv, self.weight, self.ndim
        lead = tuple(range(gy.ndim - k))
        axes = tuple(range(gy.ndim - k, gy.ndim))
        grads: list[Any] = [None]
        if self.needs_input_grad[0]:
            g = gy if weight is None else gy * weight
            # d xhat: (g - mean(g) - xhat * mean(g * xhat)) / std, means over the normalised axes
            gx = g - g.mean(axis=axes, keepdims=True)
            gx -= xhat * (g * xhat).mean(axis=axes, keepdims=True)
            grads[0] = gx * inv
        if weight is not None:
            grads.append((gy * xhat).sum(axis=lead) if self.needs_input_grad[1] else None)
        if len(self.needs_input_grad) > 2:
            grads.append(gy.sum(axis=lead) if self.needs_input_grad[2] else None)
        return tuple(grads)


def layer_norm(x: Tensor, ndim: int, weight: Tensor | None = None, bias: Tensor | None = None,
               eps: float = 1e-5) -> Tensor:
    """Layer normalisation over the last ndim axes (weight, then bias, optional)."""
    ins = [t for t in (weight, bias) if t is not None]
    if bias is not None and weight is None:
        raise ShapeError("layer_norm expects a weight whenever it has a bias, found a bias "
                         "alone")
    return LayerNorm.apply(x, *ins, ndim=ndim, eps=eps)
