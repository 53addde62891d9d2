"""The fused affine op y = x @ W.T + b (ONNX Gemm with transB=1)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd.function import Function
from ..autograd.tensor import Tensor
from ..errors import ShapeError
from .activation import relu_backward, relu_floor


class Linear(Function):
    """y = x @ W.T + b for x of shape (N, in) or (N, ..., in) (applied to the last axis, as
    torch and Keras do), W of shape (out, in), b of shape (out,)."""

    ir_name = "Gemm"
    in_shape: tuple[int, ...] | None = None  # set for input other than 2-D (see forward)

    def lower(self, b: Any, xs: list[str]) -> Any:
        """Gemm(x, W, b, transB=1); for input other than 2-D, MatMul(x, W.T) then Add(b)."""
        shape = b.shape(xs[0])
        if shape is None or len(shape) == 2:  # Gemm: what BN folding and Gemm fusion look for
            return b.node("Gemm", xs, transB=1)
        # ONNX Gemm is 2-D only; MatMul broadcasts over the leading dims (the Transpose of the
        # constant weight is folded away at optimization level basic)
        y = b.node("MatMul", [xs[0], b.node("Transpose", [xs[1]], perm=[1, 0])])
        return b.node("Add", [y, xs[2]]) if len(xs) == 3 else y

    def forward(self, x: Any, w: Any, b: Any = None) -> Any:
        if x.ndim != 2 or x.shape[1] != w.shape[1]:  # the 2-D hot path skips all of this
            if x.ndim == 0 or x.shape[-1] != w.shape[1]:
                raise ShapeError(f"Linear expected input of shape (batch, {w.shape[1]}) or "
                                 f"(batch, ..., {w.shape[1]}), found {x.shape}")
            self.in_shape = x.shape
            x = x.reshape(-1, w.shape[1])
        self.x, self.w = x, w
        y = x @ w.T
        if b is not None:
            y += b
        if self.in_shape is not None:
            y = y.reshape(self.in_shape[:-1] + (w.shape[0],))
        return y

    def backward(self, gy: Any) -> tuple[Any, ...]:
        need_x, need_w = self.needs_input_grad[:2]
        if self.in_shape is not None:  # the product ran on the input flattened to 2-D
            gy = gy.reshape(-1, gy.shape[-1])
        gx = gy @ self.w if need_x else None
        if gx is not None and self.in_shape is not None:
            gx = gx.reshape(self.in_shape)
        # (x.T @ gy).T: the weight's own column-major layout (see nn.Linear), no transposing copy
        gw = (self.x.T @ gy).T if need_w else None
        if len(self.needs_input_grad) == 3:
            gb = gy.sum(axis=0) if self.needs_input_grad[2] else None
            return gx, gw, gb
        return gx, gw


class LinearRelu(Linear):
    """max(x @ W.T + b, 0) as one op: what nn.Sequential runs for a Linear followed by a ReLU.

    The same numbers as the two ops, gradients included, with one graph node and one output
    array instead of two each: the activation is applied in place on the fresh product, and
    its mask is taken from the output it keeps anyway. On an MLP's small batches such
    per-op bookkeeping adds up to about a tenth of a training step.
    """

    ir_name = None  # not an ONNX op: tracing lowers the Linear and ReLU modules themselves

    def lower(self, b: Any, xs: list[str]) -> Any:
        """Gemm then Relu (the optimizer fuses them back)."""
        return b.node("Relu", [super().lower(b, xs)])

    def forward(self, x: Any, w: Any, b: Any = None) -> Any:
        y = super().forward(x, w, b)
        np.maximum(y, relu_floor(y), out=y)
        self.y = y
        return y

    def backward(self, gy: Any) -> tuple[Any, ...]:
        return super().backward(relu_backward(gy, self.y))


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None, relu: bool = False) -> Tensor:
    """Affine transform x @ weight.T + bias (followed by ReLU when `relu`)."""
    fn = LinearRelu if relu else Linear
    if bias is None:
        return fn.apply(x, weight)
    return fn.apply(x, weight, bias)


__all__ = ["Linear", "LinearRelu", "linear", "np"]
