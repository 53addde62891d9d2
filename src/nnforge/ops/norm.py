"""Batch normalisation (ONNX BatchNormalization) over the channel axis 1 of (N, C, ...) arrays."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd.function import Function
from ..autograd.tensor import Tensor
from ..errors import ShapeError


def _channel_view(a: Any) -> Any:
    """(N, C, rest) view of a (N, C, ...) array, so reductions run over axes 0 and 2."""
    return a.reshape(a.shape[0], a.shape[1], -1)


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
    count = x.size // x.shape[1]
    if count < 2:
        raise ShapeError(f"batch normalisation in training mode expected more than one value per "
                         f"channel, found input of shape {x.shape}")
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

    def forward(self, x: Any, weight: Any, bias: Any, mean: Any, var: Any) -> Any:
        c = x.shape[1] if x.ndim >= 2 else None
        for name, v in (("weight", weight), ("bias", bias), ("mean", mean), ("var", var)):
            if c is None or v.shape != (c,):
                raise ShapeError(f"BatchNorm expected input of shape (batch, C, ...) and a {name} "
                                 f"of shape (C,), found input {x.shape} and {name} {v.shape}")
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
