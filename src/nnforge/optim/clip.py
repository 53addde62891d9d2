"""Gradient clipping: grads are replaced by new arrays, never scaled in place (may be shared)."""

from __future__ import annotations

import math
import numbers
from typing import Any, Iterable

import numpy as np

from .. import backend
from ..autograd.tensor import Tensor
from ..errors import ConfigError, NNForgeError
from .optimizer import check_float


def _with_grads(params: Iterable[Any] | Tensor) -> list[Any]:
    if isinstance(params, Tensor):
        params = [params]
    elif hasattr(params, "parameters") and callable(params.parameters):
        params = params.parameters()
    try:
        plist = list(params)
    except TypeError:
        raise ConfigError(f"expected Parameters/Tensors (a module, a tensor or an iterable of "
                          f"them), found {type(params).__name__}") from None
    for i, p in enumerate(plist):
        if not isinstance(p, Tensor):
            raise ConfigError(f"expected Parameters/Tensors, found {type(p).__name__} at "
                              f"position {i}")
    return [p for p in plist if p.grad is not None]


def _norm_type(value: Any) -> float:
    # what torch accepts: numbers and what float() reads, such as "inf"
    try:
        if isinstance(value, bool):
            raise TypeError
        norm_type = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"expected norm_type as a number > 0, inf or -inf (or 'inf'), found "
                          f"{value!r}") from None
    if not (norm_type > 0 or math.isinf(norm_type)):
        raise ConfigError(f"expected norm_type > 0, inf or -inf, found {value!r}")
    return norm_type


def clip_grad_norm_(params: Iterable[Any] | Tensor, max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False) -> float:
    """Scale all grads together so their joint norm is at most max_norm; return the norm before.

    As torch.nn.utils.clip_grad_norm_: coefficient max_norm / (total_norm + 1e-6), applied only
    when it is below 1. max_norm=inf only measures the norm (grads untouched, even when the
    norm is inf too, where torch would make them NaN).
    """
    if isinstance(max_norm, numbers.Real) and not isinstance(max_norm, bool) \
            and max_norm == math.inf:
        max_norm = math.inf  # measuring the norm without clipping, as torch allows
    else:
        max_norm = check_float("max_norm", max_norm, 0.0)
    norm_type = _norm_type(norm_type)
    ps = _with_grads(params)
    if not ps:
        return 0.0
    if math.isinf(norm_type):
        # np.max/np.min, not max()/min(): they propagate NaN whatever its position;
        # -inf is the smallest magnitude, as in PyTorch
        pick = np.max if norm_type > 0 else np.min
        total = float(pick([float(pick(np.abs(p.grad))) if p.grad.size else (
            0.0 if norm_type > 0 else math.inf) for p in ps]))
    elif norm_type == 2.0 and backend.is_device_array(ps[0].grad):
        # on a GPU: one sum there and one trip to the host, in float64 (no overflow to redo)
        xp = backend.xp_of(ps[0].grad)
        g64 = [p.grad.astype(np.float64).ravel() for p in ps]
        total = math.sqrt(float(xp.sum(xp.stack([xp.dot(g, g) for g in g64]))))
    elif norm_type == 2.0:
        acc = 0.0
        with np.errstate(over="ignore"):  # an overflow is handled below
            for p in ps:
                g = p.grad.ravel(order="K")  # memory order: no copy for column-major grads
                acc += float(np.dot(g, g))  # BLAS dot: one pass, no temporary
            if math.isinf(acc):
                # float32 squares overflow above a norm of ~1.8e19 though every grad is finite:
                # redo in float64 (the rare exploding case) rather than report inf, zero them
                acc = sum(float(np.dot(g, g)) for g in
                          (p.grad.astype(np.float64).ravel(order="K") for p in ps))
        total = math.sqrt(acc)
    else:
        acc = sum(float(np.sum(np.abs(p.grad.astype(np.float64)) ** norm_type)) for p in ps)
        total = acc ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise NNForgeError(f"expected a finite total gradient norm, found {total}; pass "
                           f"error_if_nonfinite=False to clip anyway")
    coef = max_norm / (total + 1e-6)
    if max_norm != math.inf and (coef < 1.0 or math.isnan(coef)):
        for p in ps:
            p.grad = p.grad * p.grad.dtype.type(coef)
    return total


def clip_grad_value_(params: Iterable[Any] | Tensor, clip_value: float) -> None:
    """Clamp every gradient element into [-clip_value, clip_value] (new arrays)."""
    v = check_float("clip_value", clip_value, 0.0)
    for p in _with_grads(params):
        t = p.grad.dtype.type(v)
        p.grad = np.clip(p.grad, -t, t)
