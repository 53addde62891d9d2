"""NumPy kernels: each builder turns one IR node into a closure that writes preallocated buffers.

A builder gets the node, its input arrays (weights, or buffers that the plan reuses across
calls, or `Feed` for a graph input that changes every call), its output buffers and a `Ctx`
for private scratch space; it returns `step(feeds) -> None`. Work that depends only on the
weights (transposes, BatchNorm scale/shift) happens once, here, not per call.
"""

from __future__ import annotations

import math
from math import isfinite
from typing import Any, Callable

import numpy as np

from ..errors import ConfigError, DataError
from ..graph.ir import Node
from ..graph.ops import average_pool_divisor, conv_geometry, lift_1d_node
from ..graph.ops_onnx import SELU_ALPHA, SELU_GAMMA
from ..ops.activation import all_finite, erf_array, gelu_cdf, relu_floor
from .parallel import BLAS_THREADED_MNK, SERIAL_BLAS, run_parts

Step = Callable[[Any], None]
Builder = Callable[..., Step]

KERNELS: dict[str, Builder] = {}
#: ops whose input 0 may be a Feed (read straight from the caller's array, no copy)
READS_FEEDS = {"Gemm", "FusedGemm", "Conv", "FusedConv"}
#: elementwise ops that may write their output over input 0 when it dies there
IN_PLACE = {"Relu", "LeakyRelu", "Sigmoid", "Tanh", "Gelu", "Softmax", "LogSoftmax",
            "BatchNormalization", "Add", "Sub", "Mul", "Div", "Elu", "Selu", "Softplus",
            "HardSigmoid", "HardSwish", "PRelu", "LayerNormalization"}
#: ops whose output is a reshaped view of input 0 (no kernel)
VIEWS = {"Flatten", "Reshape", "Identity", "Dropout"}

#: ops whose kernels compute in any dtype their values have, bool included: they move data,
#: compare, or select (every other kernel is checked by `check_dtypes`)
ANY_DTYPE = {"Flatten", "Reshape", "Identity", "Dropout", "Squeeze", "Unsqueeze", "Concat",
             "Transpose", "Slice", "Gather", "Expand", "Split", "Pad", "Tile", "DepthToSpace",
             "Shape", "Constant", "ConstantOfShape", "Cast", "Where", "Equal", "Greater",
             "GreaterOrEqual", "Less", "LessOrEqual", "ArgMax", "ArgMin", "ReduceMax",
             "ReduceMin"}
#: ops whose kernels compute ONNX's integer arithmetic as well as float (NumPy's ufuncs
#: writing into an int buffer wrap around as C does; int Div truncates: see `int_divide`)
NUMERIC = {"Add", "Sub", "Mul", "Div", "Neg", "Abs", "Max", "Min", "Sum", "Clip", "MatMul",
           "ReduceSum", "ReduceProd", "Range", "CumSum"}
#: ops that read a float input 0 and write another type
FLOAT_INPUT = {"IsNaN"}

mm, dot, add, mul, maximum = np.matmul, np.dot, np.add, np.multiply, np.maximum


def check_dtypes(node: Node, ins: list[np.dtype | None], outs: list[np.dtype | None]) -> None:
    """ConfigError for a node whose kernel does not compute in its values' dtypes (a float
    kernel on int or bool values, an add on bools, a float op mixing float types)."""
    if node.op in ANY_DTYPE:
        return
    first, out = (ins[0] if ins else None), (outs[0] if outs else None)
    if node.op in FLOAT_INPUT:
        bad = first if first is not None and first.kind != "f" else None
    elif node.op in NUMERIC:
        bad = out if out is not None and out.kind not in "iuf" else None
    elif out is not None and out.kind != "f":
        bad = out
    else:  # a float kernel computes in its output's type: input 0 must have it
        bad = first if first is not None and out is not None and first != out else None
    if bad is not None:
        kinds = "numeric (int or float)" if node.op in NUMERIC else "float"
        raise ConfigError(f"{node.op} {node.name!r}: the NumPy runtime computes this op on "
                          f"{kinds} values of one type only; found {bad} (use "
                          f"backend='onnxruntime')")


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
    """Per-plan services for builders: scratch arrays, the float dtype, input checks."""

    def __init__(self, dtype: Any, check_finite: bool = False, threads: int = 1,
                 allow_nan: frozenset[int] = frozenset()) -> None:
        self.dtype = np.dtype(dtype)
        self.check_finite = check_finite
        #: graph inputs that may hold NaN (the graph fills them in): the session checks those
        self.allow_nan = allow_nan
        #: threads a kernel may split its work over
        self.threads = max(1, int(threads))
        #: graph inputs whose NaN/Inf check a kernel took over
        self.probed: set[int] = set()
        #: ids of the plan's own buffer arrays (the planner fills this in)
        self.buffers: set[int] = set()
        #: BLAS must run on one thread during the plan (see `split` and `blas`)
        self.serial_blas = False

    def split(self, parts: int) -> None:
        """A kernel runs `parts` parts on threads of its own: BLAS goes serial meanwhile."""
        self.serial_blas |= parts > 1

    def blas(self, mnk: int) -> None:
        """A kernel calls BLAS on a product of mnk multiply-adds: with threads=1, keep BLAS from
        threading it (its workers would compete with the plan's thread)."""
        self.serial_blas |= self.threads == 1 and mnk >= BLAS_THREADED_MNK

    def finite_probe(self, feed: Feed) -> Callable[[Any], None] | None:
        """For a kernel that sees every element of a graph input: the full check to run when
        its output hints at a non-finite input (None when checks are off)."""
        if not self.check_finite or feed.index in self.allow_nan:
            return None
        self.probed.add(feed.index)
        i = feed.index
        return lambda feeds: check_finite(feeds[i])

    def scratch(self, shape: Any, fill: float | None = None) -> np.ndarray:
        """A private array for one kernel of this plan (never shared with other calls)."""
        if fill is None:
            return np.empty(shape, self.dtype)
        return np.full(shape, fill, self.dtype)

    def is_const(self, a: np.ndarray) -> bool:
        """Whether a is a weight (not a view of one of the plan's buffers, rewritten per call)."""
        while isinstance(a.base, np.ndarray):  # a weight may sit on bytes (np.frombuffer)
            a = a.base
        return id(a) not in self.buffers

    def const(self, value: Any) -> np.ndarray:
        """A weight-derived constant in the plan's dtype, C-contiguous."""
        return np.ascontiguousarray(value, dtype=self.dtype)


def check_finite(x: np.ndarray, offset: int = 0, allow_nan: bool = False) -> None:
    """DataError naming the first NaN/Inf entry (row, position), if x has one (with allow_nan
    only Inf counts: the input of a graph that fills NaN in itself)."""
    if all_finite(x):
        return
    bad = np.isinf(x) if allow_nan else ~np.isfinite(x)
    if bad.any():
        pos = np.unravel_index(int(np.argmax(bad)), x.shape)
        row, rest = int(pos[0]) + offset, tuple(int(p) for p in pos[1:])
        where = f", position {rest if len(rest) > 1 else rest[0]}" if rest else ""
        raise DataError(f"expected finite input values, found {x[pos]} at row {row}{where}")


def kernel(*ops: str) -> Callable[[Builder], Builder]:
    """Register a builder for ops."""
    def deco(fn: Builder) -> Builder:
        for op in ops:
            KERNELS[op] = fn
        return fn
    return deco


# -- activations ----------------------------------------------------------------------------
#: activations that never decrease: they commute with max pooling
MONOTONE = {"Relu", "Sigmoid", "Tanh"}


def activation_step(kind: str | None, y: np.ndarray, ctx: Ctx, alpha: float = 0.01,
                    src: np.ndarray | None = None) -> Callable[[], None] | None:
    """A closure computing y = activation(src) (src defaults to y: in place).

    None when there is nothing to do (no activation, in place).
    """
    x = y if src is None else src
    t = y.dtype.type
    if not kind:
        return None if x is y else (lambda: np.copyto(y, x))
    if kind == "Relu":
        zeros = relu_floor(y)  # of y's shape and layout: see relu_floor
        return lambda: maximum(x, zeros, out=y)
    if kind == "LeakyRelu":
        return _leaky_relu_step(x, y, ctx, alpha)
    if kind == "Sigmoid":
        one = t(1)

        def sigmoid() -> None:
            np.negative(x, out=y)
            # exp(-x) overflows to inf for x < -88.7 (float32), and 1 / (1 + inf) is the 0
            # that ONNX Runtime gives there (no clamp: a clamp at -80 left 1.8e-35)
            with np.errstate(over="ignore"):
                np.exp(y, out=y)
            add(y, one, out=y)
            np.reciprocal(y, out=y)
        return sigmoid
    if kind == "Tanh":
        return lambda: np.tanh(x, out=y)
    if kind == "Gelu":
        s2, half = t(math.sqrt(2.0)), t(0.5)

        def gelu() -> None:  # same arithmetic as the eager op, so results match it exactly
            cdf = (half * (1.0 + erf_array(x / s2))).astype(y.dtype)
            mul(x, cdf, out=y)
        return gelu
    raise ConfigError(f"unknown activation {kind!r}")


def _leaky_relu_step(x: np.ndarray, y: np.ndarray, ctx: Ctx, alpha: float) -> Callable[[], None]:
    """y = x if x >= 0 else alpha * x, ONNX Runtime's formula, +-inf and NaN included.

    Branch-free forms per range of alpha (np.copyto(where=) on a mask of random signs ran
    20-30x slower, measured on (256, 256) float32).
    """
    a, zero = y.dtype.type(alpha), y.dtype.type(0)
    if alpha > 0:  # max(x, a*x), or min(x, a*x) above 1: two passes
        tmp, pick = ctx.scratch(x.shape), maximum if alpha <= 1 else np.minimum
        return lambda: pick(x, mul(x, a, out=tmp), out=y)
    if alpha == 0:  # max(x, 0*x) would turn +inf into NaN (0 * inf): x * (x >= 0) keeps it
        keep = np.empty(x.shape, bool)  # and gives ORT's NaN for -inf (-inf * 0)

        def leaky0() -> None:
            np.greater_equal(x, zero, out=keep)
            mul(x, keep, out=y)
        return leaky0
    tmp = ctx.scratch(x.shape)

    def leaky_neg() -> None:  # max(x, 0) + a * min(x, 0): one term is 0, so it is exact
        np.minimum(x, zero, out=tmp)  # y may be x (in place): x's negatives are saved first
        mul(tmp, a, out=tmp)
        maximum(x, zero, out=y)
        add(y, tmp, out=y)
    return leaky_neg


@kernel("Relu", "LeakyRelu", "Sigmoid", "Tanh", "Gelu")
def _activation(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    if node.op == "Gelu" and node.attrs.get("approximate", "none") != "none":
        x, y, approximate = ins[0], outs[0], node.attrs["approximate"]
        if approximate != "tanh":
            raise ConfigError(f"Gelu {node.name}: expected approximate='none' or 'tanh', "
                              f"found {approximate!r}")

        def gelu() -> None:  # the eager op's arithmetic, so results match it exactly
            mul(x, gelu_cdf(x, approximate), out=y)
        return lambda feeds: gelu()
    act = activation_step(node.op, outs[0], ctx, node.attrs.get("alpha", 0.01), src=ins[0])
    return lambda feeds: act()


@kernel("Elu", "Selu")
def _elu(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    t = y.dtype.type
    selu = node.op == "Selu"
    alpha = t(node.attrs.get("alpha", SELU_ALPHA if selu else 1.0))
    gamma = t(node.attrs.get("gamma", SELU_GAMMA)) if selu else None
    neg, zero = ctx.scratch(x.shape), t(0)

    def step(feeds: Any) -> None:  # y may be x (in place): neg is computed first
        np.minimum(x, zero, out=neg)  # expm1 of positives could overflow, and is discarded
        np.expm1(neg, out=neg)
        mul(neg, alpha, out=neg)
        np.copyto(neg, x, where=np.greater(x, zero))
        if gamma is None:
            np.copyto(y, neg)
        else:
            mul(neg, gamma, out=y)
    return step


@kernel("Softplus")
def _softplus(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    zero = y.dtype.type(0)
    return lambda feeds: np.logaddexp(zero, x, out=y)


@kernel("HardSigmoid", "HardSwish")
def _hard_sigmoid(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    t = y.dtype.type
    swish = node.op == "HardSwish"
    alpha = t(1.0 / 6.0 if swish else node.attrs.get("alpha", 0.2))
    beta = t(0.5 if swish else node.attrs.get("beta", 0.5))
    gate = ctx.scratch(x.shape) if swish else y
    zero, one = t(0), t(1)

    def step(feeds: Any) -> None:
        mul(x, alpha, out=gate)
        add(gate, beta, out=gate)
        np.clip(gate, zero, one, out=gate)
        if swish:
            mul(x, gate, out=y)
    return step


@kernel("PRelu")
def _prelu(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, slope, y = ins[0], ins[1], outs[0]
    slope = slope.astype(y.dtype, copy=False)
    neg, zero = ctx.scratch(y.shape), y.dtype.type(0)

    def step(feeds: Any) -> None:
        mul(x, slope, out=neg)
        np.copyto(neg, x, where=np.greater_equal(x, zero))
        np.copyto(y, neg)
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
    a, b, y = ins[0], ins[1], outs[0]
    c = ins[2] if len(ins) > 2 else None
    at = node.attrs
    alpha, beta = at.get("alpha", 1.0), at.get("beta", 1.0)
    if isinstance(b, Feed) or isinstance(c, Feed):
        raise ConfigError(f"Gemm {node.name}: expected constant B and C, found a graph input")
    w = b.T if at.get("transB", 0) else b  # (K, N)
    w = w * w.dtype.type(alpha) if alpha != 1.0 else w
    bias = None
    if c is not None:
        cb = c * c.dtype.type(beta) if beta != 1.0 else c
        if cb.ndim == 2 and cb.shape[0] != 1:  # a full (M, N) matrix: rare, kept as is
            bias = ctx.const(np.broadcast_to(cb, y.shape))
        else:  # a row broadcast: stored as a 1-D (N,) vector
            bias = ctx.const(np.broadcast_to(cb.reshape(-1) if cb.ndim else cb, y.shape[-1:]))
    kind = at.get("activation")
    trans_a = bool(at.get("transA", 0))
    get = a.getter() if isinstance(a, Feed) else None
    # Every y[r, 0] sums over a whole input row, so a NaN/Inf anywhere in the caller's input
    # shows up in column 0 of the product: checking it replaces a pass over the input.
    probe = ctx.finite_probe(a) if get is not None else None
    relu = kind == "Relu"
    if y.shape[0] == 1 and (bias is None or bias.ndim == 1):
        # one row: y[0] = W @ x[0], BLAS gemv over the (N, K) row-major weights; 1-D
        # operands also skip NumPy's broadcasting machinery, which matters at ~1 us per call
        w_rows, y1 = ctx.const(w.T), y[0]
        a1 = None if get is not None else (a.T if trans_a else a)[0]
        zeros = relu_floor(y1)
        act = None if relu else activation_step(kind, y, ctx, at.get("activation_alpha", 0.01))
        aug = None if a1 is None or bias is None else _spare_after(a1, ctx)
        if aug is not None:  # the bias becomes one more weight column, times a constant 1
            w_rows, bias = ctx.const(np.concatenate([w_rows, bias[:, None]], axis=1)), None
            a1, one, k = aug, aug.dtype.type(1), aug.size - 1

        def step_row(feeds: Any) -> None:
            if aug is not None:
                aug[k] = one
            dot(w_rows, (get(feeds).T if trans_a else get(feeds))[0] if a1 is None else a1,
                out=y1)
            if probe is not None and not isfinite(y1.item(0)):
                probe(feeds)
            if bias is not None:
                add(y1, bias, out=y1)
            if relu:
                maximum(y1, zeros, out=y1)
            elif act is not None:
                act()
        return step_row
    # weights pre-transposed once to (K, N) C-contiguous: BLAS then streams them in order
    wt = ctx.const(w)
    rows, k_dim = y.shape[0], w.shape[0]
    parts = 1
    if (not trans_a and ctx.threads > 1 and rows * k_dim * y.shape[1] >= PARALLEL_MNK
            and SERIAL_BLAS.available()):  # else BLAS's own threads split the product
        parts = min(ctx.threads, rows)  # row blocks, one per thread
    bounds = [rows * i // parts for i in range(parts + 1)]
    runners = [_gemm_rows(a, get, trans_a, wt, bias, y, r0, r1, kind, probe, ctx,
                          at.get("activation_alpha", 0.01))
               for r0, r1 in zip(bounds, bounds[1:])]
    ctx.split(parts)
    ctx.blas(rows * k_dim * y.shape[1] // parts)
    return run_parts(runners)


#: a Gemm with at least this many multiply-adds is split into row blocks over the plan's threads.
#: Off: measured on the 2-core machines (benchmarks/infer_speed.py's MLP, threads=2), OpenBLAS
#: threading one product itself gave 189k samples/s at batch 256 against 81k for row blocks on
#: our threads with BLAS serial (the switch and the thread hand-offs cost more than they save).
PARALLEL_MNK = 1 << 62


def _gemm_rows(a: Any, get: Any, trans_a: bool, wt: np.ndarray, bias: np.ndarray | None,
               y: np.ndarray, r0: int, r1: int, kind: str | None, probe: Any,
               ctx: Ctx, alpha: float) -> Step:
    """Gemm (+ bias, + activation) of output rows r0:r1."""
    yr = y[r0:r1]
    full = r0 == 0 and r1 == len(y)
    act = activation_step(kind, yr, ctx, alpha)
    col0 = yr[:, 0]
    ar = None if get is not None else (a.T if trans_a else a)[r0:r1]
    b = None if bias is None else (bias if bias.ndim == 1 else bias[r0:r1])

    def step(feeds: Any) -> None:
        if ar is not None:
            src = ar
        else:
            src = get(feeds).T if trans_a else get(feeds)
            src = src if full else src[r0:r1]
        dot(src, wt, out=yr)
        if probe is not None and not isfinite(add.reduce(col0)):
            probe(feeds)
        if b is not None:
            add(yr, b, out=yr)
        if act is not None:
            act()
    return step


def _spare_after(v: np.ndarray, ctx: Ctx) -> np.ndarray | None:
    """v extended by one element, when v is a contiguous 1-D start of a larger plan buffer.

    The plan allocates spare elements after every buffer and one buffer holds one live value
    at a time, so the element just past v is free for the kernel reading v to use. Never
    for weights or callers' arrays: only buffers the plan owns (`ctx.buffers`).
    """
    base = v
    while base.base is not None:
        base = base.base
    if (id(base) not in ctx.buffers or v.ndim != 1 or not v.flags.c_contiguous
            or base.ndim != 1 or base.dtype != v.dtype
            or not base.flags.c_contiguous or base.size <= v.size
            or base.ctypes.data != v.ctypes.data):
        return None
    return base[:v.size + 1]


@kernel("Dropout")
def _dropout(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    """Inference Dropout whose mask output is wanted: the identity, and a mask of ones."""
    x, y = ins[0], outs[0]
    mask = outs[1] if len(outs) > 1 else None
    one = y.dtype.type(1)

    def step(feeds: Any) -> None:  # the mask's buffer may be shared: refilled every call
        if y is not x:
            np.copyto(y, x)
        if mask is not None:
            mask.fill(one)
    return step


@kernel("MatMul")
def _matmul(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    a, b, y = ins[0], ins[1], outs[0]
    return lambda feeds: mm(a, b, out=y)


def _binary(fn: Any) -> Builder:
    def build(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
        a, b, y = ins[0], ins[1], outs[0]
        if fn is np.divide and y.dtype.kind in "iu":
            return int_divide(a, b, y, ctx, f"{node.op} {node.name!r}")
        return lambda feeds: fn(a, b, out=y)
    return build


def int_divide(a: np.ndarray, b: np.ndarray, y: np.ndarray, ctx: Ctx, label: str) -> Step:
    """y = a / b truncated toward zero, C's (and ONNX Runtime's) integer division; a zero
    divisor is an error (C leaves it undefined, NumPy would answer 0 silently)."""
    if ctx.is_const(b):
        if b.size and not b.all():
            raise ConfigError(f"{label}: expected integer divisors other than 0, found a 0 "
                              f"among the constant divisors")
        checked = True
    else:
        checked = False

    def nonzero() -> None:
        if not checked and not b.all():
            raise DataError(f"{label}: expected integer divisors other than 0, found a 0 "
                            f"(integer division by zero)")

    if y.dtype.kind == "u":  # no negatives: floor is truncation
        def unsigned(feeds: Any) -> None:
            nonzero()
            np.floor_divide(a, b, out=y)
        return unsigned
    rem = ctx.scratch(y.shape)

    def step(feeds: Any) -> None:  # y may be a (in place): a is read before y is written
        nonzero()
        # a - fmod(a, b) is an exact multiple of b, no larger than a: its floor division is
        # exact, so the quotient truncates (INT_MIN / -1 wraps, as two's complement does)
        with np.errstate(divide="ignore", over="ignore"):
            np.fmod(a, b, out=rem)
            np.subtract(a, rem, out=rem)
            np.floor_divide(rem, b, out=y)
    return step


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
    weight, bias, mean, var = ins[1:5]
    # x * scale + shift with scale and shift rounded as the eager layer rounds them
    inv_std = 1.0 / np.sqrt(var + var.dtype.type(eps))
    scale = (weight * inv_std).astype(x.dtype)
    k, c = ctx.const(scale.reshape(shape)), ctx.const((bias - mean * scale).reshape(shape))

    def step(feeds: Any) -> None:
        mul(x, k, out=y)
        add(y, c, out=y)
    return step


@kernel("LayerNormalization")
def _layer_norm(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    scale, bias = ins[1], (ins[2] if len(ins) > 2 else None)
    scale = scale.astype(y.dtype, copy=False)  # a weight held in another float type
    bias = None if bias is None else bias.astype(y.dtype, copy=False)
    axis = node.attrs.get("axis", -1) % x.ndim
    axes = tuple(range(axis, x.ndim))
    red = ctx.scratch(tuple(x.shape[:axis]) + (1,) * (x.ndim - axis))
    sq = ctx.scratch(x.shape)
    eps = y.dtype.type(node.attrs.get("epsilon", 1e-5))
    mean = np.mean
    # the mean is summed in float64 (as ONNX Runtime does): exact for a constant row, whose
    # output is then exactly 0 (a float32 mean 1 ulp off, divided by sqrt(eps), gave 4e-5)
    red64 = np.empty(red.shape, np.float64)

    def step(feeds: Any) -> None:  # y may be x (in place): x is read only by the first mean
        mean(x, axis=axes, keepdims=True, dtype=np.float64, out=red64)
        np.copyto(red, red64, casting="same_kind")
        np.subtract(x, red, out=y)
        mul(y, y, out=sq)
        mean(sq, axis=axes, keepdims=True, out=red)
        add(red, eps, out=red)
        np.sqrt(red, out=red)
        np.divide(y, red, out=y)
        mul(y, scale, out=y)
        if bias is not None:
            add(y, bias, out=y)
    return step


# -- pooling ----------------------------------------------------------------------------------
def pool_reducer(x: np.ndarray, y: np.ndarray, node: Node, ctx: Ctx, pad_value: float,
                 fn: Any) -> Callable[[], None]:
    """A closure writing y = fn-reduction of x over each pooling window, separably.

    The kernel rows are reduced first, on whole contiguous rows, then the kernel columns:
    kh + kw - 2 calls instead of kh * kw - 1, and the first pass is the fast one.
    """
    g = conv_geometry(node)
    (kh, kw), (sh, sw), (dh, dw) = node.attrs["kernel_shape"], g["strides"], g["dilations"]
    ph0, pw0, ph1, pw1 = g["pads"]
    n, c, h, w = x.shape
    oh, ow = y.shape[2], y.shape[3]
    # ceil_mode's last window may reach past the end padding: pad a little more there
    ph1 = max(ph1, (oh - 1) * sh + dh * (kh - 1) + 1 - h - ph0)
    pw1 = max(pw1, (ow - 1) * sw + dw * (kw - 1) + 1 - w - pw0)
    src, inner = x, None
    if ph0 or pw0 or ph1 or pw1:
        src = ctx.scratch((n, c, h + ph0 + ph1, w + pw0 + pw1), fill=pad_value)
        inner = src[:, :, ph0:ph0 + h, pw0:pw0 + w]  # the border keeps pad_value
    rows = [src[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, :] for i in range(kh)]
    mid = ctx.scratch(rows[0].shape) if kh > 1 else rows[0]
    cols = [mid[:, :, :, j * dw:j * dw + sw * (ow - 1) + 1:sw] for j in range(kw)]
    copyto = np.copyto

    def run() -> None:
        if inner is not None:
            copyto(inner, x)
        if kh > 1:
            fn(rows[0], rows[1], out=mid)
            for r in rows[2:]:
                fn(mid, r, out=mid)
        if kw > 1:
            fn(cols[0], cols[1], out=y)
            for v in cols[2:]:
                fn(y, v, out=y)
        else:
            copyto(y, cols[0])
    return run


def lowest_value(dtype: Any) -> Any:
    """The most negative finite value of dtype (C++'s numeric_limits<T>::lowest())."""
    dtype = np.dtype(dtype)
    return (np.finfo if dtype.kind == "f" else np.iinfo)(dtype).min


def unit_height(a: Any) -> Any:
    """(N, C, L) as the (N, C, 1, L) view a 2-D kernel takes (a Feed is reshaped when read)."""
    if isinstance(a, Feed):
        n, c, length = a.shape
        return a.view((n, c, 1, length))
    return a[:, :, None]


@kernel("MaxPool")
def _max_pool(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    if len(outs) > 1 and outs[1] is not None:
        raise ConfigError(f"MaxPool {node.name}: the Indices output is not supported; expected "
                          f"one output")
    x, y = ins[0], outs[0]
    if len(x.shape) == 3:  # 1-D: the 2-D pool on H = 1, through views of the same buffers
        node, x, y = lift_1d_node(node), unit_height(x), unit_height(y)
    # ONNX Runtime starts each window's maximum at the lowest finite value: a window lying
    # wholly in the padding gives that, not -inf (which turns into inf/NaN downstream)
    run = pool_reducer(x, y, node, ctx, lowest_value(y.dtype), maximum)
    return lambda feeds: run()


@kernel("AveragePool")
def _average_pool(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    if len(x.shape) == 3:
        node, x, y = lift_1d_node(node), unit_height(x), unit_height(y)
    run = pool_reducer(x, y, node, ctx, 0.0, add)
    # each window's divisor: its taps on the input (and on the padding, with
    # count_include_pad), one number when all windows have the same
    count = average_pool_divisor(node, x.shape[2:], y.shape[2:], np.float64)
    count = count[:, :, :1, :1] if (count == count.flat[0]).all() else count
    scale = ctx.const(1.0 / count)

    def step(feeds: Any) -> None:
        run()
        mul(y, scale, out=y)
    return step


@kernel("GlobalAveragePool")
def _global_average_pool(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    axes = tuple(range(2, x.ndim))
    return lambda feeds: np.mean(x, axis=axes, keepdims=True, out=y)


@kernel("GlobalMaxPool")
def _global_max_pool(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    axes = tuple(range(2, x.ndim))
    lowest = np.full(y.shape, lowest_value(y.dtype), y.dtype)  # see relu_floor: no scalar

    def step(feeds: Any) -> None:
        np.max(x, axis=axes, keepdims=True, out=y)
        # ONNX Runtime's running maximum starts at the lowest finite value, so a channel of
        # -inf gives that value (the output is small: one number per channel)
        maximum(y, lowest, out=y)
    return step


@kernel("Sum", "Mean")
def _sum_mean(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    """Variadic Sum/Mean with broadcasting; never in place (an input may appear twice)."""
    xs, y = tuple(ins), outs[0]
    inv = y.dtype.type(1.0 / len(xs)) if node.op == "Mean" else None

    def step(feeds: Any) -> None:
        if len(xs) == 1:
            np.copyto(y, xs[0])
        else:
            add(xs[0], xs[1], out=y)
        for x in xs[2:]:
            add(y, x, out=y)
        if inv is not None:
            mul(y, inv, out=y)
    return step


from . import kernels_extra as _kernels_extra  # noqa: E402,F401 - Resize, ConvTranspose, ...
from . import kernels_onnx as _kernels_onnx  # noqa: E402,F401 - kernels of the ONNX-only ops
