"""NumPy kernels: each builder turns one IR node into a closure that writes preallocated buffers.

A builder gets the node, its input arrays (weights, or buffers that the plan reuses across
calls, or `Feed` for a graph input that changes every call), its output buffers and a `Ctx`
for private scratch space; it returns `step(feeds) -> None`. Work that depends only on the
weights (transposes, BatchNorm scale/shift) happens once, here, not per call.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError
from ..graph.ir import Node
from ..graph.ops import batchnorm_scale_shift, conv_geometry
from ..ops.activation import erf_array

Step = Callable[[Any], None]
Builder = Callable[..., Step]

KERNELS: dict[str, Builder] = {}
#: ops whose input 0 may be a Feed (read straight from the caller's array, no copy)
READS_FEEDS = {"Gemm", "FusedGemm", "Conv", "FusedConv"}
#: elementwise ops that may write their output over input 0 when it dies there
IN_PLACE = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Gelu", "Softmax", "LogSoftmax",
            "BatchNormalization", "Add", "Sub", "Mul", "Div"}
#: ops whose output is a reshaped view of input 0 (no kernel)
VIEWS = {"Flatten", "Reshape", "Identity", "Dropout"}

mm, add, mul, maximum = np.matmul, np.add, np.multiply, np.maximum


class Feed:
    """A graph input (seen through reshapes): `feeds[index].reshape(shape)` at call time."""

    __slots__ = ("index", "shape", "reshape")

    def __init__(self, index: int, shape: tuple[int, ...], reshape: bool = False) -> None:
        self.index, self.shape, self.reshape = index, tuple(shape), reshape

    def view(self, shape: tuple[int, ...]) -> Feed:
        """The same input reshaped."""
        return Feed(self.index, shape, self.reshape or tuple(shape) != self.shape)

    def getter(self) -> Callable[[Any], np.ndarray]:
        """feeds -> the array."""
        i, shape = self.index, self.shape
        if self.reshape:
            return lambda feeds: feeds[i].reshape(shape)
        return lambda feeds: feeds[i]


class Ctx:
    """Per-plan services for builders: scratch arrays and the float dtype."""

    def __init__(self, dtype: Any) -> None:
        self.dtype = np.dtype(dtype)

    def scratch(self, shape: Any, fill: float | None = None) -> np.ndarray:
        """A private array for one kernel of this plan (never shared with other calls)."""
        if fill is None:
            return np.empty(shape, self.dtype)
        return np.full(shape, fill, self.dtype)

    def const(self, value: Any) -> np.ndarray:
        """A weight-derived constant in the plan's dtype, C-contiguous."""
        return np.ascontiguousarray(value, dtype=self.dtype)


def kernel(*ops: str) -> Callable[[Builder], Builder]:
    """Register a builder for ops."""
    def deco(fn: Builder) -> Builder:
        for op in ops:
            KERNELS[op] = fn
        return fn
    return deco


# -- activations (in place on a buffer) -------------------------------------------------------
def activation_step(kind: str | None, y: np.ndarray, ctx: Ctx, alpha: float = 0.01
                    ) -> Callable[[], None] | None:
    """A closure applying an activation to y in place, or None for no activation."""
    t = y.dtype.type
    if kind is None:
        return None
    if kind == "Relu":
        zero = t(0)
        return lambda: maximum(y, zero, out=y)
    if kind == "LeakyRelu":
        a, tmp = t(alpha), ctx.scratch(y.shape)
        if 0 <= alpha <= 1:  # max(y, a*y) is leaky relu exactly when 0 <= a <= 1
            return lambda: maximum(y, mul(y, a, out=tmp), out=y)
        zero = t(0)
        return lambda: np.copyto(y, mul(y, a, out=tmp), where=np.less(y, zero))
    if kind == "Sigmoid":
        lim, one = t(80), t(1)  # exp(80) is finite in float32: no overflow warning

        def sigmoid() -> None:
            np.negative(y, out=y)
            np.minimum(y, lim, out=y)
            np.exp(y, out=y)
            add(y, one, out=y)
            np.reciprocal(y, out=y)
        return sigmoid
    if kind == "Tanh":
        return lambda: np.tanh(y, out=y)
    if kind == "Gelu":
        s2 = t(math.sqrt(2.0))
        half = t(0.5)

        def gelu() -> None:  # same arithmetic as the eager op, so results match it exactly
            cdf = (half * (1.0 + erf_array(y / s2))).astype(y.dtype)
            mul(y, cdf, out=y)
        return gelu
    raise ConfigError(f"unknown activation {kind!r}")


@kernel("Relu", "LeakyRelu", "Sigmoid", "Tanh", "Gelu")
def _activation(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    act = activation_step(node.op, y, ctx, node.attrs.get("alpha", 0.01))
    if x is y:
        return lambda feeds: act()

    def step(feeds: Any) -> None:
        np.copyto(y, x)
        act()
    return step


@kernel("Softmax", "LogSoftmax")
def _softmax(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    axis = node.attrs.get("axis", -1) % x.ndim
    red = ctx.scratch(tuple(1 if i == axis else d for i, d in enumerate(x.shape)))
    amax, asum, sub, exp, log = np.max, np.sum, np.subtract, np.exp, np.log
    if node.op == "Softmax":
        def step(feeds: Any) -> None:
            amax(x, axis=axis, keepdims=True, out=red)
            sub(x, red, out=y)
            exp(y, out=y)
            asum(y, axis=axis, keepdims=True, out=red)
            np.divide(y, red, out=y)
        return step
    tmp = ctx.scratch(x.shape)

    def log_step(feeds: Any) -> None:
        amax(x, axis=axis, keepdims=True, out=red)
        sub(x, red, out=y)
        asum(exp(y, out=tmp), axis=axis, keepdims=True, out=red)
        sub(y, log(red, out=red), out=y)
    return log_step


# -- dense ------------------------------------------------------------------------------------
@kernel("Gemm", "FusedGemm")
def _gemm(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    a, b = ins[0], ins[1]
    c = ins[2] if len(ins) > 2 else None
    y = outs[0]
    at = node.attrs
    alpha, beta = at.get("alpha", 1.0), at.get("beta", 1.0)
    if isinstance(b, Feed) or isinstance(c, Feed):
        raise ConfigError(f"Gemm {node.name}: expected constant B and C, found a graph input")
    # weights pre-transposed once to (K, N) C-contiguous: BLAS then streams them in order
    bt = ctx.const((b.T if at.get("transB", 0) else b) * alpha if alpha != 1.0 else
                   (b.T if at.get("transB", 0) else b))
    bias = None
    if c is not None:
        cb = c * c.dtype.type(beta) if beta != 1.0 else c
        if cb.ndim == 2 and cb.shape[0] != 1:  # a full (M, N) matrix: rare, kept as is
            bias = ctx.const(np.broadcast_to(cb, y.shape))
        else:  # a row broadcast: stored as a 1-D (N,) vector
            bias = ctx.const(np.broadcast_to(cb.reshape(-1) if cb.ndim else cb, y.shape[-1:]))
    act = activation_step(at.get("activation"), y, ctx, at.get("activation_alpha", 0.01))
    trans_a = bool(at.get("transA", 0))
    get = a.getter() if isinstance(a, Feed) else None
    relu = at.get("activation") == "Relu"
    zero = y.dtype.type(0)
    if get is None and not trans_a:
        if bias is not None and relu:  # the common hidden layer: three calls, nothing else
            def step(feeds: Any) -> None:
                mm(a, bt, out=y)
                add(y, bias, out=y)
                maximum(y, zero, out=y)
            return step
        if bias is not None and act is None:
            def step_bias(feeds: Any) -> None:
                mm(a, bt, out=y)
                add(y, bias, out=y)
            return step_bias

    def step_any(feeds: Any) -> None:
        src = get(feeds) if get is not None else a
        mm(src.T if trans_a else src, bt, out=y)
        if bias is not None:
            add(y, bias, out=y)
        if act is not None:
            act()
    return step_any


@kernel("MatMul")
def _matmul(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    a, b, y = ins[0], ins[1], outs[0]
    return lambda feeds: mm(a, b, out=y)


def _binary(fn: Any) -> Builder:
    def build(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
        a, b, y = ins[0], ins[1], outs[0]
        return lambda feeds: fn(a, b, out=y)
    return build


for _op, _fn in (("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply),
                 ("Div", np.divide)):
    KERNELS[_op] = _binary(_fn)


@kernel("Transpose")
def _transpose(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    view = x.transpose(node.attrs.get("perm"))
    return lambda feeds: np.copyto(y, view)


@kernel("BatchNormalization")
def _batchnorm(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    eps = node.attrs.get("epsilon", 1e-5)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    k, _ = batchnorm_scale_shift(eps, *ins[1:5])
    k = ctx.const(k.reshape(shape))
    mean, bias = ctx.const(ins[3].reshape(shape)), ctx.const(ins[2].reshape(shape))

    def step(feeds: Any) -> None:  # (x - mean) * k + bias, as the reference computes it
        np.subtract(x, mean, out=y)
        mul(y, k, out=y)
        add(y, bias, out=y)
    return step


# -- pooling ----------------------------------------------------------------------------------
def pool_windows(x: np.ndarray, node: Node, ctx: Ctx, pad_value: float
                 ) -> tuple[Callable[[], None], list[np.ndarray]]:
    """(refresh, views): one strided view of the padded input per kernel offset."""
    g = conv_geometry(node)
    (kh, kw), (sh, sw), (dh, dw) = node.attrs["kernel_shape"], g["strides"], g["dilations"]
    ph0, pw0, ph1, pw1 = g["pads"]
    n, c, h, w = x.shape
    oh = (h + ph0 + ph1 - dh * (kh - 1) - 1) // sh + 1
    ow = (w + pw0 + pw1 - dw * (kw - 1) - 1) // sw + 1
    if node.attrs.get("ceil_mode", 0):
        raise ConfigError(f"{node.op} {node.name}: ceil_mode=1 is not supported by the NumPy "
                          f"runtime; expected ceil_mode=0")
    refresh: Callable[[], None] = lambda: None  # noqa: E731
    src = x
    if ph0 or pw0 or ph1 or pw1:
        src = ctx.scratch((n, c, h + ph0 + ph1, w + pw0 + pw1), fill=pad_value)
        inner = src[:, :, ph0:ph0 + h, pw0:pw0 + w]
        refresh = lambda: np.copyto(inner, x)  # noqa: E731 - the border keeps pad_value
    views = [src[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
             for i in range(kh) for j in range(kw)]
    return refresh, views


@kernel("MaxPool")
def _max_pool(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    refresh, views = pool_windows(x, node, ctx, -np.inf)
    first, rest = views[0], views[1:]

    def step(feeds: Any) -> None:
        refresh()
        maximum(first, rest[0], out=y) if rest else np.copyto(y, first)
        for v in rest[1:]:
            maximum(y, v, out=y)
    return step


@kernel("AveragePool")
def _average_pool(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    refresh, views = pool_windows(x, node, ctx, 0.0)
    kh, kw = node.attrs["kernel_shape"]
    if node.attrs.get("count_include_pad", 0) or not any(conv_geometry(node)["pads"]):
        scale = ctx.const(np.full((1, 1, 1, 1), 1.0 / (kh * kw)))
    else:  # divide each window by how many real (unpadded) inputs it covers
        ones = np.ones((1, 1) + x.shape[2:], ctx.dtype)
        r, vs = pool_windows(ones, node, Ctx(ctx.dtype), 0.0)
        r()
        scale = ctx.const(1.0 / np.sum(np.stack([v for v in vs]), axis=0))
    first, rest = views[0], views[1:]

    def step(feeds: Any) -> None:
        refresh()
        add(first, rest[0], out=y) if rest else np.copyto(y, first)
        for v in rest[1:]:
            add(y, v, out=y)
        mul(y, scale, out=y)
    return step


@kernel("GlobalAveragePool")
def _global_average_pool(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    axes = tuple(range(2, x.ndim))
    return lambda feeds: np.mean(x, axis=axes, keepdims=True, out=y)
