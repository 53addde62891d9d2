"""The IR's op set: for each ONNX op, its shape inference and a plain NumPy reference.

The reference implementations are written for clarity, not speed: constant folding,
`evaluate_graph` (the pass tests' oracle) and the CuPy executor (`runtime/cupy_plan.py`) use
them; the fast NumPy kernels live in `nnforge.runtime.kernels`. They take NumPy or CuPy arrays
alike: ufuncs and most NumPy functions dispatch to CuPy by themselves, and where they would
not (array creation, matmul) the array module comes from the input (`xp_of`). Attribute names
and defaults are ONNX's (opset 20).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from ..backend import xp_of
from ..errors import ConfigError, ShapeError
from ..ops.activation import (
    elu_array,
    erf_array,
    log_softmax_array,
    sigmoid_array,
    softmax_array,
    softplus_array,
)
from ..ops.pool import pool_window_counts, pooled_size
from .ir import INTERNAL_DOMAIN, Dim, Node, Shape

ShapeFn = Callable[[Node, list[Shape | None], dict[str, np.ndarray]], list[Shape | None]]
ComputeFn = Callable[..., Any]


@dataclass(frozen=True)
class OpDef:
    """Shape inference and reference evaluation of one op type."""

    name: str
    infer: ShapeFn
    compute: ComputeFn
    domain: str = ""


OPS: dict[str, OpDef] = {}

#: Activations a fused Gemm/Conv may carry, with the ONNX attributes they take.
FUSABLE_ACTIVATIONS = ("Relu", "LeakyRelu", "Sigmoid", "Tanh")


def _op(name: str, infer: ShapeFn, domain: str = "") -> Callable[[ComputeFn], ComputeFn]:
    def deco(fn: ComputeFn) -> ComputeFn:
        OPS[name] = OpDef(name, infer, fn, domain)
        return fn
    return deco


def get_op(node: Node) -> OpDef:
    """The OpDef of a node, or ConfigError naming the op when it is not supported."""
    d = OPS.get(node.op)
    if d is None:
        raise ConfigError(f"unsupported op {node.op!r} in node {node.name or '?'}; "
                          f"expected one of {sorted(OPS)}")
    return d


# -- dimension arithmetic (ints, symbols such as "N", or None) ------------------------------
def dim_prod(dims: Any) -> Dim:
    """Product of dims: an int, the one symbolic dim when the rest multiply to 1, or None."""
    syms = [d for d in dims if not isinstance(d, int)]
    known = math.prod(d for d in dims if isinstance(d, int))
    if not syms:
        return known
    if len(syms) == 1 and known == 1 and syms[0] is not None:
        return syms[0]
    return None


def _unary(node: Node, shapes: list[Shape | None], consts: dict) -> list[Shape | None]:
    return [shapes[0]] * max(1, len(node.outputs))


def _broadcast(node: Node, shapes: list[Shape | None], consts: dict) -> list[Shape | None]:
    if any(s is None for s in shapes):
        return [None]
    a, b = shapes
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    out: list[Dim] = []
    for da, db in zip(a, b):
        if da == 1:
            out.append(db)
        elif db == 1 or da == db:
            out.append(da)
        elif isinstance(da, int) and isinstance(db, int):
            raise ShapeError(f"{node.op} {node.name}: cannot broadcast {shapes[0]} with "
                             f"{shapes[1]}; expected equal dims or 1")
        else:
            out.append(da if isinstance(db, int) else db if isinstance(da, int) else None)
    return [tuple(out)]


def _check_dim(node: Node, what: str, expected: Dim, found: Dim) -> None:
    if isinstance(expected, int) and isinstance(found, int) and expected != found:
        raise ShapeError(f"{node.op} {node.name}: expected {what} {expected}, found {found}")


# -- dense ------------------------------------------------------------------------------------
def _gemm_shape(node: Node, shapes: list[Shape | None], consts: dict) -> list[Shape | None]:
    a, b = shapes[0], shapes[1]
    if a is None or b is None:
        return [None]
    if len(a) != 2 or len(b) != 2:
        raise ShapeError(f"{node.op} {node.name}: expected 2-D inputs, found {a} and {b}")
    m, k = (a[1], a[0]) if node.attrs.get("transA", 0) else (a[0], a[1])
    k2, n = (b[1], b[0]) if node.attrs.get("transB", 0) else (b[0], b[1])
    _check_dim(node, "inner dimension", k2, k)
    return [(m, n)]


def _gemm(node: Node, a: Any, b: Any, c: Any = None) -> Any:
    at = a.T if node.attrs.get("transA", 0) else a
    bt = b.T if node.attrs.get("transB", 0) else b
    alpha, beta = node.attrs.get("alpha", 1.0), node.attrs.get("beta", 1.0)
    y = at @ bt
    if alpha != 1.0:
        y = y * y.dtype.type(alpha)
    if c is not None:
        y = y + (c * c.dtype.type(beta) if beta != 1.0 else c)
    return y


@_op("Gemm", _gemm_shape)
def gemm(node: Node, a: Any, b: Any, c: Any = None) -> Any:
    """alpha * A' @ B' + beta * C."""
    return _gemm(node, a, b, c)


def _matmul_shape(node: Node, shapes: list[Shape | None], consts: dict) -> list[Shape | None]:
    a, b = shapes
    if a is None or b is None:
        return [None]
    if len(a) < 1 or len(b) < 1:
        raise ShapeError(f"MatMul {node.name}: expected inputs of rank >= 1, found {a}, {b}")
    if len(b) == 1:
        _check_dim(node, "inner dimension", a[-1], b[0])
        return [tuple(a[:-1])]
    if len(a) == 1:
        _check_dim(node, "inner dimension", b[-2], a[0])
        return [tuple(b[:-2]) + (b[-1],)]
    _check_dim(node, "inner dimension", b[-2], a[-1])
    batch = _broadcast(node, [tuple(a[:-2]), tuple(b[:-2])], consts)[0]
    return [tuple(batch) + (a[-2], b[-1])]


@_op("MatMul", _matmul_shape)
def matmul(node: Node, a: Any, b: Any) -> Any:
    """NumPy matmul semantics."""
    return xp_of(a).matmul(a, b)


for _name, _fn in (("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply),
                   ("Div", np.divide)):
    OPS[_name] = OpDef(_name, _broadcast, lambda node, a, b, f=_fn: f(a, b).astype(
        np.result_type(a, b), copy=False))


# -- activations ----------------------------------------------------------------------------
def activation_ref(kind: str, x: Any, alpha: float = 0.01) -> Any:
    """Reference of a fusable activation by ONNX name."""
    if kind == "Relu":
        return np.maximum(x, x.dtype.type(0))
    if kind == "LeakyRelu":
        return np.where(x > 0, x, x * x.dtype.type(alpha))
    if kind == "Sigmoid":
        return sigmoid_array(x)
    if kind == "Tanh":
        return np.tanh(x)
    raise ConfigError(f"unknown fused activation {kind!r}; expected one of {FUSABLE_ACTIVATIONS}")


OPS["Relu"] = OpDef("Relu", _unary, lambda node, x: activation_ref("Relu", x))
OPS["LeakyRelu"] = OpDef("LeakyRelu", _unary, lambda node, x: activation_ref(
    "LeakyRelu", x, node.attrs.get("alpha", 0.01)))
OPS["Sigmoid"] = OpDef("Sigmoid", _unary, lambda node, x: sigmoid_array(x))
OPS["Tanh"] = OpDef("Tanh", _unary, lambda node, x: np.tanh(x))
OPS["Softmax"] = OpDef("Softmax", _unary, lambda node, x: softmax_array(
    x.copy(), node.attrs.get("axis", -1)))
OPS["LogSoftmax"] = OpDef("LogSoftmax", _unary, lambda node, x: log_softmax_array(
    x, node.attrs.get("axis", -1)))
OPS["Identity"] = OpDef("Identity", _unary, lambda node, x: x)
# Dropout at inference is the identity; an optional second output (mask) is all ones.
OPS["Dropout"] = OpDef("Dropout", _unary, lambda node, x, *rest: (
    (x, xp_of(x).ones(x.shape, bool)) if len(node.outputs) > 1 else x))


@_op("Gelu", _unary)
def gelu(node: Node, x: Any) -> Any:
    """x * Phi(x) (approximate='none'), or x * 0.5 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
    (approximate='tanh'), the arithmetic of ops.activation.gelu_cdf."""
    approximate = node.attrs.get("approximate", "none")
    if approximate == "tanh":
        t, k = x.dtype.type, math.sqrt(2.0 / math.pi)
        return x * (t(0.5) * (t(1.0) + np.tanh(x * (t(k) + t(k * 0.044715) * (x * x)))))
    if approximate != "none":
        raise ConfigError(f"Gelu {node.name}: expected approximate='none' or 'tanh', found "
                          f"{approximate!r}")
    cdf = (0.5 * (1.0 + erf_array(x / x.dtype.type(math.sqrt(2.0))))).astype(x.dtype)
    return x * cdf


OPS["Elu"] = OpDef("Elu", _unary, lambda node, x: elu_array(x, node.attrs.get("alpha", 1.0)))
OPS["Softplus"] = OpDef("Softplus", _unary, lambda node, x: softplus_array(x))


# -- shape ops ------------------------------------------------------------------------------
def _flatten_shape(node: Node, shapes: list[Shape | None], consts: dict) -> list[Shape | None]:
    s = shapes[0]
    if s is None:
        return [None]
    axis = node.attrs.get("axis", 1)
    axis = axis + len(s) if axis < 0 else axis
    return [(dim_prod(s[:axis]), dim_prod(s[axis:]))]


@_op("Flatten", _flatten_shape)
def flatten(node: Node, x: Any) -> Any:
    """Reshape to 2-D: (prod(shape[:axis]), prod(shape[axis:]))."""
    axis = node.attrs.get("axis", 1)
    axis = axis + x.ndim if axis < 0 else axis
    return x.reshape(math.prod(x.shape[:axis]), -1)


def reshape_target(in_shape: Shape, target: Any) -> Shape:
    """Output shape of ONNX Reshape (0 copies the input dim, -1 is inferred)."""
    out: list[Dim] = []
    for i, t in enumerate(int(v) for v in target):
        out.append(in_shape[i] if t == 0 else t)
    if -1 in out:
        rest = [d for d in out if d != -1]
        num = list(in_shape)
        den = []
        for d in rest:  # cancel dims (symbols included) that appear on both sides
            if d in num:
                num.remove(d)
            else:
                den.append(d)
        # divide the known parts separately so (N, 4) -> (-1, 2, 2) still gives N
        p_syms = [d for d in num if not isinstance(d, int)]
        p, q = math.prod(d for d in num if isinstance(d, int)), dim_prod(den)
        val: Dim = None
        if isinstance(q, int) and q and p % q == 0:
            val = dim_prod([*p_syms, p // q])
        out[out.index(-1)] = val
    return tuple(out)


def _reshape_shape(node: Node, shapes: list[Shape | None], consts: dict) -> list[Shape | None]:
    target = consts.get(node.inputs[1])
    if target is None:
        raise ConfigError(f"Reshape {node.name}: expected a constant target shape, found a "
                          f"computed value {node.inputs[1]!r}")
    if shapes[0] is None:
        return [None]
    return [reshape_target(shapes[0], target)]


@_op("Reshape", _reshape_shape)
def reshape(node: Node, x: Any, shape: Any) -> Any:
    """ONNX Reshape with allowzero=0."""
    return x.reshape([x.shape[i] if int(t) == 0 else int(t) for i, t in enumerate(shape)])


def _transpose_shape(node: Node, shapes: list[Shape | None], consts: dict) -> list[Shape | None]:
    s = shapes[0]
    if s is None:
        return [None]
    perm = node.attrs.get("perm", list(reversed(range(len(s)))))
    return [tuple(s[p] for p in perm)]


@_op("Transpose", _transpose_shape)
def transpose(node: Node, x: Any) -> Any:
    """Permute axes (reverse them by default)."""
    return np.transpose(x, node.attrs.get("perm"))


# -- convolution, pooling, normalization ------------------------------------------------------
def conv_geometry(node: Node, spatial: tuple[int, ...] | None = None) -> dict[str, list[int]]:
    """Kernel, strides, pads (begin..., end...) and dilations of a 2-D Conv/pool node."""
    a = node.attrs
    k = list(a["kernel_shape"]) if "kernel_shape" in a else None
    if a.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        raise ConfigError(f"{node.op} {node.name}: auto_pad={a['auto_pad']!r} is not "
                          f"supported; expected explicit pads")
    nd = len(k) if k else 2
    return {"kernel": k or [], "strides": list(a.get("strides", [1] * nd)),
            "pads": list(a.get("pads", [0] * (2 * nd))),
            "dilations": list(a.get("dilations", [1] * nd))}


#: attributes of a Conv/pool node (and a FusedConv's pool) that have one entry per spatial axis
_PER_AXIS = ("kernel_shape", "strides", "dilations", "pool_kernel_shape", "pool_strides")


def lift_1d_node(node: Node) -> Node:
    """A 1-D Conv/MaxPool/AveragePool/FusedConv node as the same op on (N, C, 1, L): each
    per-axis attribute gets a leading 1, pads [begin, end] become [0, begin, 0, end]."""
    a = {k: [1, *v] if k in _PER_AXIS else v for k, v in node.attrs.items()}
    if "pads" in a:
        a["pads"] = [0, a["pads"][0], 0, a["pads"][1]]
    return Node(node.op, list(node.inputs), list(node.outputs), a, node.name, node.domain)


def _length_as_width(fn: ComputeFn) -> ComputeFn:
    """Run a 2-D reference on (N, C, L) input (and a Conv's (O, C, k) weight) as H = 1."""
    def run(node: Node, x: Any, *rest: Any) -> Any:
        if x.ndim != 3:
            return fn(node, x, *rest)
        if node.op in ("Conv", "FusedConv"):
            rest = (rest[0][:, :, None], *rest[1:])
        return fn(lift_1d_node(node), x[:, :, None], *rest)[:, :, 0]
    run.__doc__ = fn.__doc__
    return run


def _out_dim(d: Dim, k: int, s: int, p0: int, p1: int, dil: int, ceil: bool = False) -> Dim:
    if not isinstance(d, int):
        return None
    return pooled_size(d, k, s, p0, p1, dil, ceil) or -1


def average_pool_divisor(node: Node, in_hw: tuple[int, int], out_hw: tuple[int, int],
                         dtype: Any) -> np.ndarray:
    """(1, 1, OH, OW) divisors of an AveragePool node (count_include_pad and ceil_mode)."""
    g = conv_geometry(node)
    kernel, nd = list(node.attrs["kernel_shape"]), 2
    include = bool(node.attrs.get("count_include_pad", 0))
    h, w = (pool_window_counts(in_hw[i], out_hw[i], kernel[i], g["strides"][i], g["pads"][i],
                               g["pads"][i + nd], g["dilations"][i], include) for i in range(2))
    return np.outer(h, w).astype(dtype).reshape(1, 1, *out_hw)


def _spatial_out(node: Node, x: Shape, kernel: list[int]) -> tuple[Dim, ...]:
    g = conv_geometry(node)
    nd = len(kernel)
    if len(x) != nd + 2:
        raise ShapeError(f"{node.op} {node.name}: expected a {nd + 2}-D input (N, C, H, W), "
                         f"found shape {x}")
    ceil = bool(node.attrs.get("ceil_mode", 0))
    dims = tuple(_out_dim(x[2 + i], kernel[i], g["strides"][i], g["pads"][i],
                          g["pads"][i + nd], g["dilations"][i], ceil) for i in range(nd))
    if any(isinstance(d, int) and d <= 0 for d in dims):
        raise ShapeError(f"{node.op} {node.name}: input spatial size {x[2:]} is too small for "
                         f"kernel {kernel}; expected at least one output position")
    return dims


def _conv_shape(node: Node, shapes: list[Shape | None], consts: dict) -> list[Shape | None]:
    x, w = shapes[0], shapes[1]
    if x is None or w is None:
        return [None]
    kernel = list(node.attrs.get("kernel_shape", w[2:]))
    _check_dim(node, "input channels", w[1] * node.attrs.get("group", 1), x[1])
    return [(x[0], w[0]) + _spatial_out(node, x, kernel)]


def _taps(node: Node, x: Any, kernel: list[int], pad_value: float) -> list[Any]:
    """Per kernel offset (row-major), the (N, C, OH, OW) strided view of the padded input
    that the offset reads; plain slicing, so NumPy and CuPy arrays take the same path."""
    g = conv_geometry(node)
    (ph0, pw0, ph1, pw1), (sh, sw), (dh, dw) = g["pads"], g["strides"], g["dilations"]
    ceil = bool(node.attrs.get("ceil_mode", 0))
    n, c, h, w = x.shape
    oh = _out_dim(h, kernel[0], sh, ph0, ph1, dh, ceil)
    ow = _out_dim(w, kernel[1], sw, pw0, pw1, dw, ceil)
    # ceil_mode may need extra padding at the end so the last window exists
    eh = max(0, (oh - 1) * sh + dh * (kernel[0] - 1) + 1 - (h + ph0 + ph1))
    ew = max(0, (ow - 1) * sw + dw * (kernel[1] - 1) + 1 - (w + pw0 + pw1))
    padded = x
    if ph0 or ph1 or pw0 or pw1 or eh or ew:
        padded = xp_of(x).full((n, c, h + ph0 + ph1 + eh, w + pw0 + pw1 + ew), pad_value,
                               x.dtype)
        padded[:, :, ph0:ph0 + h, pw0:pw0 + w] = x
    return [padded[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
            for i in range(kernel[0]) for j in range(kernel[1])]


@_op("Conv", _conv_shape)
@_length_as_width
def conv(node: Node, x: Any, w: Any, b: Any = None) -> Any:
    """2-D grouped convolution (cross-correlation), NCHW: im2col, then one matrix product."""
    if x.ndim != 4:
        raise ShapeError(f"Conv {node.name}: expected a 4-D input (N, C, H, W), found {x.shape}")
    xp, groups = xp_of(x), node.attrs.get("group", 1)
    taps = _taps(node, x, list(w.shape[2:]), 0.0)
    n, c, oh, ow = taps[0].shape
    m = w.shape[0]
    # (N, C, kh*kw, OH, OW): a group's rows run (channel, kh, kw), as the weights' do
    cols = xp.stack(taps, axis=2).reshape(n, groups, -1, oh * ow)
    y = xp.matmul(w.reshape(groups, m // groups, -1), cols).reshape(n, m, oh, ow)
    if b is not None:
        y = y + b.reshape(1, m, 1, 1)
    return y.astype(x.dtype, copy=False)


def _pool_shape(node: Node, shapes: list[Shape | None], consts: dict) -> list[Shape | None]:
    x = shapes[0]
    if x is None:
        return [None]
    out = (x[0], x[1]) + _spatial_out(node, x, list(node.attrs["kernel_shape"]))
    return [out] * len(node.outputs)


def _reduce_taps(taps: list[Any], ufunc: Any) -> Any:
    """ufunc (maximum, add) over the taps, accumulated in one fresh array."""
    out = taps[0].copy()
    for t in taps[1:]:
        ufunc(out, t, out=out)
    return out


@_op("MaxPool", _pool_shape)
@_length_as_width
def max_pool(node: Node, x: Any) -> Any:
    """Max over each window; padding never wins, and a window all in the padding gives the
    dtype's lowest finite value, as ONNX Runtime (and the compiled kernel)."""
    kind = np.dtype(x.dtype)
    lowest = np.finfo(kind).min if kind.kind == "f" else np.iinfo(kind).min
    return _reduce_taps(_taps(node, x, list(node.attrs["kernel_shape"]), lowest), np.maximum)


@_op("AveragePool", _pool_shape)
@_length_as_width
def average_pool(node: Node, x: Any) -> Any:
    """Mean over each window; count_include_pad says whether pads count."""
    kernel = list(node.attrs["kernel_shape"])
    total = _reduce_taps(_taps(node, x, kernel, 0.0), np.add)
    count = average_pool_divisor(node, x.shape[2:], total.shape[2:], x.dtype)
    return (total / xp_of(total).asarray(count)).astype(x.dtype)


def _global_pool_shape(node: Node, shapes: list[Shape | None], consts: dict) -> list:
    x = shapes[0]
    return [None if x is None else tuple(x[:2]) + (1,) * (len(x) - 2)]


@_op("GlobalAveragePool", _global_pool_shape)
def global_average_pool(node: Node, x: Any) -> Any:
    """Mean over all spatial positions, keeping them as size-1 dims."""
    return x.mean(axis=tuple(range(2, x.ndim)), keepdims=True, dtype=x.dtype)


def batchnorm_scale_shift(eps: float, scale: Any, bias: Any, mean: Any, var: Any) -> tuple:
    """Per-channel (k, c) with BN(x) = x * k + c, computed in float64 then cast back."""
    k = np.asarray(scale, np.float64) / np.sqrt(np.asarray(var, np.float64) + eps)
    c = np.asarray(bias, np.float64) - np.asarray(mean, np.float64) * k
    return k.astype(scale.dtype), c.astype(scale.dtype)


def _bn_shape(node: Node, shapes: list[Shape | None], consts: dict) -> list[Shape | None]:
    x = shapes[0]
    if x is not None and shapes[1] is not None:
        if len(x) < 2:
            raise ShapeError(f"BatchNormalization {node.name}: expected input (N, C, ...), "
                             f"found {x}")
        _check_dim(node, "channels", shapes[1][0], x[1])
    return [x]


@_op("BatchNormalization", _bn_shape)
def batch_normalization(node: Node, x: Any, scale: Any, bias: Any, mean: Any, var: Any) -> Any:
    """Inference-mode batch norm: (x - mean) / sqrt(var + eps) * scale + bias, channel axis 1."""
    eps = node.attrs.get("epsilon", 1e-5)
    shape = (1, -1) + (1,) * (x.ndim - 2)
    inv = (1.0 / np.sqrt(var.astype(np.float64) + eps)).astype(x.dtype)
    return ((x - mean.reshape(shape)) * (inv * scale).reshape(shape)
            + bias.reshape(shape)).astype(x.dtype)


def _layer_norm_shape(node: Node, shapes: list[Shape | None], consts: dict) -> list:
    x = shapes[0]
    if x is not None:
        axis = node.attrs.get("axis", -1)
        if not -len(x) <= axis < len(x):
            raise ShapeError(f"LayerNormalization {node.name}: expected axis in "
                             f"[{-len(x)}, {len(x) - 1}] for input {x}, found {axis}")
    return [x]


@_op("LayerNormalization", _layer_norm_shape)
def layer_normalization(node: Node, x: Any, scale: Any, bias: Any = None) -> Any:
    """(x - mean) / sqrt(var + epsilon) * scale + bias, statistics over axes axis..rank-1."""
    axis = node.attrs.get("axis", -1) % x.ndim
    axes = tuple(range(axis, x.ndim))
    xc = x - x.mean(axis=axes, keepdims=True, dtype=x.dtype)
    var = (xc * xc).mean(axis=axes, keepdims=True, dtype=x.dtype)
    y = xc / np.sqrt(var + x.dtype.type(node.attrs.get("epsilon", 1e-5))) * scale
    return (y if bias is None else y + bias).astype(x.dtype, copy=False)


# -- nnforge-internal fused ops (produced by passes; see graph/passes.py) --------------------
def fused_activation(node: Node, y: Any) -> Any:
    """Apply a fused node's `activation` attribute (if any) to y."""
    if not node.attrs.get("activation"):
        return y
    return activation_ref(node.attrs["activation"], y, node.attrs.get("activation_alpha", 0.01))


def fused_pool_node(node: Node) -> Node | None:
    """The MaxPool folded into a FusedConv (its `pool_*` attributes), as a node of its own."""
    if node.attrs.get("pool") != "MaxPool":
        return None
    attrs = {"kernel_shape": list(node.attrs["pool_kernel_shape"]),
             "strides": list(node.attrs["pool_strides"])}
    return Node("MaxPool", [], node.outputs[:1], attrs, f"{node.name}/pool")


def _fused_conv_shape(node: Node, shapes: list[Shape | None], consts: dict) -> list:
    out = _conv_shape(node, shapes, consts)
    pool = fused_pool_node(node)
    return out if pool is None else _pool_shape(pool, out, consts)


def _fused_conv(node: Node, *xs: Any) -> Any:
    """Conv, then the activation, then the optional max pool (nnforge-internal)."""
    y = fused_activation(node, conv(node, *xs))
    pool = fused_pool_node(node)
    return y if pool is None else max_pool(pool, y)


OPS["FusedGemm"] = OpDef("FusedGemm", _gemm_shape, lambda node, *xs: fused_activation(
    node, _gemm(node, *xs)), INTERNAL_DOMAIN)
OPS["FusedConv"] = OpDef("FusedConv", _fused_conv_shape, _fused_conv, INTERNAL_DOMAIN)


def evaluate_node(node: Node, *arrays: Any) -> list[Any]:
    """Run a node's reference implementation; always returns a list of outputs."""
    out = get_op(node).compute(node, *(a for a in arrays))
    return list(out) if isinstance(out, tuple) else [out]


from . import ops_onnx as _ops_onnx  # noqa: E402,F401 - registers the ONNX-only ops
