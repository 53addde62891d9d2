"""The fused affine op y = x @ W.T + b (ONNX Gemm with transB=1)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd.function import Function
from ..autograd.tensor import Tensor
from ..errors import ShapeError


class Linear(Function):
    """y = x @ W.T + b for x of shape (N, in), W of shape (out, in), b of shape (out,)."""

    ir_name = "Gemm"

    def forward(self, x: Any, w: Any, b: Any = None) -> Any:
        if x.ndim != 2 or x.shape[1] != w.shape[1]:
            raise ShapeError(f"Linear expected input of shape (batch, {w.shape[1]}), "
                             f"found {x.shape}")
        self.x, self.w = x, w
        y = x @ w.T
        if b is not None:
            y += b
        return y

    def backward(self, gy: Any) -> tuple[Any, ...]:
        need_x, need_w = self.needs_input_grad[:2]
        gx = gy @ self.w if need_x else None
        # (x.T @ gy).T: the weight's own column-major layout (see nn.Linear), no transposing copy
        gw = (self.x.T @ gy).T if need_w else None
        if len(self.needs_input_grad) == 3:
            gb = gy.sum(axis=0) if self.needs_input_grad[2] else None
            return gx, gw, gb
        return gx, gw


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """Affine transform x @ weight.T + bias."""
    if bias is None:
        return Linear.apply(x, weight)
    return Linear.apply(x, weight, bias)


__all__ = ["Linear", "linear", "np"]
