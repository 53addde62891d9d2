"""Layer normalisation (PyTorch's nn.LayerNorm): statistics over each sample's last dims."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import backend
from ..autograd.function import Function
from ..autograd.tensor import Tensor
from ..errors import ConfigError, ShapeError, check_float
from ..ops import norm as N
from ..ops.norm import layer_norm
from .init import ones
from .module import Module, Parameter, check_bool, register_layer


def _normalized_shape(value: Any) -> tuple[int, ...]:
    """An int or a non-empty sequence of positive ints, as a tuple."""
    dims = [value] if isinstance(value, (int, np.integer)) else value
    ok = isinstance(dims, (list, tuple)) and len(dims) > 0 and all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d > 0 for d in dims)
    if not ok:
        raise ConfigError(f"LayerNorm: normalized_shape must be a positive integer or a "
                          f"non-empty list of them, found {value!r:.60}")
    return tuple(int(d) for d in dims)


@register_layer
class LayerNorm(Module):
    """Normalise over the last len(normalized_shape) dims of each sample, then scale and shift
    elementwise (weight, bias of shape normalized_shape), as torch.nn.LayerNorm does; the same
    in training and in eval mode."""

    def __init__(self, normalized_shape: int | list[int] | tuple[int, ...], eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True) -> None:
        super().__init__()
        self.normalized_shape = _normalized_shape(normalized_shape)
        self.eps = check_float("LayerNorm eps", eps, 0.0)
        if self.eps == 0.0:
            raise ConfigError(f"LayerNorm: expected a positive eps, found {eps!r}")
        self.elementwise_affine = check_bool(self, "elementwise_affine", elementwise_affine)
        bias = check_bool(self, "bias", bias)
        shape = self.normalized_shape
        affine = self.elementwise_affine
        self.weight = Parameter(ones(shape)) if affine else None
        self.bias = Parameter(np.zeros(shape, backend.DEFAULT_DTYPE)) if affine and bias \
            else None

    def forward(self, x: Tensor) -> Tensor:
        k = len(self.normalized_shape)
        if x.ndim <= k - 1 or tuple(x.shape[x.ndim - k:]) != self.normalized_shape:
            raise ShapeError(f"LayerNorm expected input of shape (..., "
                             f"{', '.join(map(str, self.normalized_shape))}), found "
                             f"{tuple(x.shape)}")
        return layer_norm(x, k, self.weight, self.bias, self.eps)

    def traced_op(self) -> tuple[Function, dict[str, Any]]:
        """The op this layer applies and its weights by name (tracing lowers it as the op)."""
        shape = self.normalized_shape
        op = N.LayerNorm(len(shape), self.eps, shape)
        return op, {"weight": self.weight, "bias": self.bias}

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"normalized_shape": list(self.normalized_shape),
                                  "eps": self.eps, "elementwise_affine": self.elementwise_affine}
        if self.elementwise_affine and self.bias is None:  # only when set, as torch's bias=False
            config["bias"] = False
        return config
