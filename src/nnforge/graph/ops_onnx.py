"""IR ops that imported ONNX models use beyond what tracing emits: shape inference + reference.

Semantics and attribute names are ONNX opset 20's (the IR's `OPSET`): `axes` of Squeeze,
Unsqueeze and the reductions, `pads` of Pad, `min`/`max` of Clip are inputs, not attributes.
The ONNX importer rewrites older forms into these. Imported by `graph/ops.py`.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..backend import xp_of
from ..errors import ConfigError, DataError, ShapeError
from ..ops.activation import erf_array
from .ir import Dim, Node, Shape
from .ops import OPS, OpDef, _broadcast, _global_pool_shape, _op, _unary

#: ONNX TensorProto data type enum -> NumPy dtype (the types a NumPy runtime can hold)
ONNX_DTYPES: dict[int, np.dtype] = {
    1: np.dtype(np.float32), 2: np.dtype(np.uint8), 3: np.dtype(np.int8),
    4: np.dtype(np.uint16), 5: np.dtype(np.int16), 6: np.dtype(np.int32),
    7: np.dtype(np.int64), 9: np.dtype(np.bool_), 10: np.dtype(np.float16),
    11: np.dtype(np.float64), 12: np.dtype(np.uint32), 13: np.dtype(np.uint64)}

Shapes = list[Shape | None]


def const_input(node: Node, consts: dict[str, np.ndarray], k: int, what: str) -> Any:
    """The constant array feeding input k (None when the optional input is left out)."""
    if k >= len(node.inputs) or not node.inputs[k]:
        return None
    value = consts.get(node.inputs[k])
    if value is None:
        raise ConfigError(f"{node.op} {node.name}: expected constant {what}, found the computed "
                          f"value {node.inputs[k]!r}")
    return value


def _axes(values: Any, rank: int, node: Node) -> list[int]:
    out = []
    for a in np.asarray(values, np.int64).reshape(-1).tolist():
        if not -rank <= a < rank:
            raise ShapeError(f"{node.op} {node.name}: expected axes in [{-rank}, {rank - 1}], "
                             f"found {a}")
        out.append(a % rank)
    return out


def _arr_axes(node: Node, x: Any, axes: Any, rank: int | None = None) -> list[int]:
    return _axes(axes, x.ndim if rank is None else rank, node)


# -- elementwise ----------------------------------------------------------------------------
_UNARY = {"Erf": erf_array, "Neg": np.negative, "Abs": np.abs, "Sqrt": np.sqrt, "Exp": np.exp,
          "Log": np.log, "Reciprocal": np.reciprocal}
for _name, _fn in _UNARY.items():
    OPS[_name] = OpDef(_name, _unary, lambda node, x, f=_fn: f(x).astype(x.dtype, copy=False))
OPS["Pow"] = OpDef("Pow", _broadcast, lambda node, a, b: np.power(a, b.astype(a.dtype)))


#: ONNX Selu's default constants (float32 values, as the spec writes them)
SELU_ALPHA, SELU_GAMMA = 1.67326319217681884765625, 1.05070102214813232421875


def hard_sigmoid_array(x: Any, alpha: float, beta: float) -> Any:
    """max(0, min(1, alpha * x + beta)) in x's dtype."""
    t = x.dtype.type
    return np.clip(x * t(alpha) + t(beta), t(0), t(1))


@_op("HardSigmoid", _unary)
def hard_sigmoid(node: Node, x: Any) -> Any:
    """max(0, min(1, alpha x + beta)), alpha 0.2 and beta 0.5 by default."""
    return hard_sigmoid_array(x, node.attrs.get("alpha", 0.2), node.attrs.get("beta", 0.5))


@_op("HardSwish", _unary)
def hard_swish(node: Node, x: Any) -> Any:
    """x * max(0, min(1, x / 6 + 1/2))."""
    return x * hard_sigmoid_array(x, 1.0 / 6.0, 0.5)


@_op("Selu", _unary)
def selu(node: Node, x: Any) -> Any:
    """gamma * (x for x > 0, alpha * (exp(x) - 1) otherwise)."""
    t = x.dtype.type
    alpha, gamma = node.attrs.get("alpha", SELU_ALPHA), node.attrs.get("gamma", SELU_GAMMA)
    neg = np.expm1(np.minimum(x, t(0))) * t(alpha)
    return (np.where(x > 0, x, neg) * t(gamma)).astype(x.dtype, copy=False)


def _prelu_shape(node: Node, shapes: Shapes, consts: dict) -> Shapes:
    return [shapes[0] if shapes[1] is None else _broadcast(node, shapes, consts)[0]]


@_op("PRelu", _prelu_shape)
def prelu(node: Node, x: Any, slope: Any) -> Any:
    """x where x >= 0, slope * x elsewhere (slope broadcast against x)."""
    return np.where(x < 0, x * slope.astype(x.dtype, copy=False), x)


@_op("GlobalMaxPool", _global_pool_shape)
def global_max_pool(node: Node, x: Any) -> Any:
    """Max over all spatial positions, keeping them as size-1 dims."""
    return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)


@_op("Clip", _unary)
def clip(node: Node, x: Any, lo: Any = None, hi: Any = None) -> Any:
    """Limit x to [min, max]; a missing bound is no bound."""
    y = x if lo is None else np.maximum(x, lo.astype(x.dtype))
    return y if hi is None else np.minimum(y, hi.astype(x.dtype))


@_op("Cast", _unary)
def cast(node: Node, x: Any) -> Any:
    """Convert to the dtype named by the ONNX enum `to` (float to int truncates)."""
    to = node.attrs.get("to")
    if to not in ONNX_DTYPES:
        raise ConfigError(f"Cast {node.name}: expected a target type among ONNX types "
                          f"{sorted(ONNX_DTYPES)}, found {to!r}")
    return xp_of(x).asarray(x).astype(ONNX_DTYPES[to])


# -- shape ops ------------------------------------------------------------------------------
def _squeeze_shape(node: Node, shapes: Shapes, consts: dict) -> Shapes:
    s = shapes[0]
    axes = const_input(node, consts, 1, "axes")
    if s is None:
        return [None]
    if axes is None:
        if any(not isinstance(d, int) for d in s):
            return [None]
        return [tuple(d for d in s if d != 1)]
    drop = set(_axes(axes, len(s), node))
    for a in drop:
        if isinstance(s[a], int) and s[a] != 1:
            raise ShapeError(f"Squeeze {node.name}: expected dim {a} of {s} to be 1, "
                             f"found {s[a]}")
    return [tuple(d for i, d in enumerate(s) if i not in drop)]


@_op("Squeeze", _squeeze_shape)
def squeeze(node: Node, x: Any, axes: Any = None) -> Any:
    """Remove the given size-1 axes (all of them without axes)."""
    return np.squeeze(x, axis=None if axes is None else tuple(_arr_axes(node, x, axes)))


def unsqueeze_shape(s: Shape, axes: Any, node: Node) -> Shape:
    """The shape after inserting size-1 dims at axes (axes index the output)."""
    rank = len(s) + len(np.asarray(axes).reshape(-1))
    out: list[Dim] = list(s)
    for a in sorted(_axes(axes, rank, node)):
        out.insert(a, 1)
    return tuple(out)


def _unsqueeze_shape(node: Node, shapes: Shapes, consts: dict) -> Shapes:
    axes = const_input(node, consts, 1, "axes")
    if axes is None:
        raise ConfigError(f"Unsqueeze {node.name}: expected an axes input, found none")
    return [None if shapes[0] is None else unsqueeze_shape(shapes[0], axes, node)]


@_op("Unsqueeze", _unsqueeze_shape)
def unsqueeze(node: Node, x: Any, axes: Any) -> Any:
    """Insert size-1 axes."""
    return x.reshape(unsqueeze_shape(x.shape, axes, node))


def _concat_shape(node: Node, shapes: Shapes, consts: dict) -> Shapes:
    if any(s is None for s in shapes):
        return [None]
    rank = len(shapes[0])
    if any(len(s) != rank for s in shapes):
        raise ShapeError(f"Concat {node.name}: expected inputs of one rank, found {shapes}")
    axis = _axes(node.attrs.get("axis", 0), rank, node)[0]
    total: Dim = 0
    for s in shapes:
        total = total + s[axis] if isinstance(total, int) and isinstance(s[axis], int) else None
    return [tuple(total if i == axis else shapes[0][i] for i in range(rank))]


@_op("Concat", _concat_shape)
def concat(node: Node, *xs: Any) -> Any:
    """Join along axis."""
    return np.concatenate(xs, axis=node.attrs.get("axis", 0))


def _pad_amounts(node: Node, pads: Any, rank: int, axes: Any) -> list[tuple[int, int]]:
    p = np.asarray(pads, np.int64).reshape(-1).tolist()
    ax = list(range(rank)) if axes is None else _axes(axes, rank, node)
    if len(p) != 2 * len(ax):
        raise ShapeError(f"Pad {node.name}: expected {2 * len(ax)} pads, found {len(p)}")
    amounts = [(0, 0)] * rank
    for i, a in enumerate(ax):
        amounts[a] = (p[i], p[i + len(ax)])
    return amounts


def _pad_shape(node: Node, shapes: Shapes, consts: dict) -> Shapes:
    s = shapes[0]
    pads = const_input(node, consts, 1, "pads")
    if s is None:
        return [None]
    amounts = _pad_amounts(node, pads, len(s), const_input(node, consts, 3, "axes"))
    return [tuple(d + a + b if isinstance(d, int) else d for d, (a, b) in zip(s, amounts))]


def pad_array(node: Node, x: Any, pads: Any, value: Any = None, axes: Any = None) -> Any:
    """ONNX Pad: negative pads crop; mode constant, reflect, edge or wrap."""
    amounts = _pad_amounts(node, pads, x.ndim, axes)
    crop = tuple(slice(-min(a, 0), x.shape[i] + min(b, 0)) for i, (a, b) in enumerate(amounts))
    x = x[crop]
    widths = [(max(a, 0), max(b, 0)) for a, b in amounts]
    mode = node.attrs.get("mode", "constant")
    if mode == "constant":
        v = 0 if value is None or np.asarray(value).size == 0 else np.asarray(value).item()
        return np.pad(x, widths, mode="constant", constant_values=x.dtype.type(v))
    if mode not in ("reflect", "edge", "wrap"):
        raise ConfigError(f"Pad {node.name}: expected mode constant, reflect, edge or wrap, "
                          f"found {mode!r}")
    return np.pad(x, widths, mode=mode)


OPS["Pad"] = OpDef("Pad", _pad_shape, pad_array)


def shape_slice(node: Node, rank: int) -> slice:
    """The [start:end] range of dims a Shape node returns."""
    start, end = node.attrs.get("start", 0), node.attrs.get("end", rank)
    return slice(max(-rank, min(start, rank)), max(-rank, min(end, rank)))


def _shape_shape(node: Node, shapes: Shapes, consts: dict) -> Shapes:
    s = shapes[0]
    return [None if s is None else (len(range(len(s))[shape_slice(node, len(s))]),)]


@_op("Shape", _shape_shape)
def shape(node: Node, x: Any) -> Any:
    """The dims of x as int64."""
    return np.asarray(x.shape[shape_slice(node, x.ndim)], np.int64)


def _gather_shape(node: Node, shapes: Shapes, consts: dict) -> Shapes:
    s, idx = shapes[0], shapes[1]
    if s is None or idx is None:
        return [None]
    axis = _axes(node.attrs.get("axis", 0), len(s), node)[0]
    _check_gather_indices(node, consts.get(node.inputs[1]), s[axis])
    return [tuple(s[:axis]) + tuple(idx) + tuple(s[axis + 1:])]


def _check_gather_indices(node: Node, indices: Any, n: Any) -> None:
    """ShapeError when constant indices fall outside a known axis size (kernels index raw)."""
    if indices is None or not isinstance(n, int):
        return
    idx = np.asarray(indices)
    if idx.size and idx.dtype.kind in "iu" and (idx.min() < -n or idx.max() >= n):
        raise ShapeError(f"Gather {node.name}: expected indices in [{-n}, {n - 1}], found "
                         f"[{idx.min()}, {idx.max()}]")


@_op("Gather", _gather_shape)
def gather(node: Node, x: Any, indices: Any) -> Any:
    """Take entries along axis (negative indices count from the end)."""
    axis = _arr_axes(node, x, node.attrs.get("axis", 0))[0]
    idx = np.asarray(indices, np.int64)
    n = x.shape[axis]
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise ShapeError(f"Gather {node.name}: expected indices in [{-n}, {n - 1}], found "
                         f"[{idx.min()}, {idx.max()}]")
    return np.take(x, np.where(idx < 0, idx + n, idx), axis=axis)


_INT32_MAX, _INT64_MAX = 2**31 - 1, 2**63 - 1


def slice_index(node: Node, shape: Shape, starts: Any, ends: Any, axes: Any, steps: Any
                ) -> tuple[slice, ...]:
    """The NumPy index of an ONNX Slice on a value of this shape (sliced dims must be known)."""
    rank = len(shape)
    starts = np.asarray(starts, np.int64).reshape(-1).tolist()
    ends = np.asarray(ends, np.int64).reshape(-1).tolist()
    ax = list(range(len(starts))) if axes is None else _axes(axes, rank, node)
    st = [1] * len(ax) if steps is None else np.asarray(steps, np.int64).reshape(-1).tolist()
    if not len(starts) == len(ends) == len(ax) == len(st) or 0 in st:
        raise ShapeError(f"Slice {node.name}: expected starts, ends, axes and nonzero steps "
                         f"of one length, found {starts}, {ends}, {ax}, {st}")
    index = [slice(None)] * rank
    big = 2 ** 62  # ONNX writes "to the end" as INT64_MAX; Python slices clamp it
    for a, s, e, k in zip(ax, starts, ends, st):
        d = shape[a]
        if k < 0 and isinstance(d, int) and s < -d:
            s = 0  # ONNX clamps a start before the first element to it; Python gives nothing
        stop: int | None = max(-big, min(e, big))
        if k < 0 and e in (_INT32_MAX, _INT64_MAX):
            # ONNX Runtime reads an INT_MAX end as numpy's None whatever the step's sign:
            # backwards, to the first element (the spec's clamping would give nothing)
            stop = None
        index[a] = slice(max(-big, min(s, big)), stop, k)
    return tuple(index)


def _slice_shape(node: Node, shapes: Shapes, consts: dict) -> Shapes:
    s = shapes[0]
    args = [const_input(node, consts, k, w) for k, w in
            ((1, "starts"), (2, "ends"), (3, "axes"), (4, "steps"))]
    if s is None:
        return [None]
    out: list[Dim] = list(s)
    for a, sl in enumerate(slice_index(node, s, *args)):
        if sl != slice(None):
            out[a] = len(range(s[a])[sl]) if isinstance(s[a], int) else None
    return [tuple(out)]


@_op("Slice", _slice_shape)
def slice_(node: Node, x: Any, starts: Any, ends: Any, axes: Any = None,
           steps: Any = None) -> Any:
    """Strided slice along the given axes."""
    return x[slice_index(node, x.shape, starts, ends, axes, steps)]


# -- reductions -----------------------------------------------------------------------------
def reduce_axes(node: Node, rank: int, axes: Any) -> tuple[int, ...] | None:
    """Axes a reduction runs over; None means 'no reduction' (noop_with_empty_axes)."""
    if axes is None or np.asarray(axes).size == 0:
        return None if node.attrs.get("noop_with_empty_axes", 0) else tuple(range(rank))
    return tuple(sorted(set(_axes(axes, rank, node))))


def _reduce_shape(node: Node, shapes: Shapes, consts: dict) -> Shapes:
    s = shapes[0]
    axes = const_input(node, consts, 1, "axes")
    if s is None:
        return [None]
    red = reduce_axes(node, len(s), axes)
    if red is None:
        return [s]
    keep = node.attrs.get("keepdims", 1)
    return [tuple(1 if i in red else d for i, d in enumerate(s) if keep or i not in red)]


#: Integer ReduceProd/ReduceSum wrap on overflow, as NumPy and C do. ONNX leaves integer
#: overflow unspecified; ONNX Runtime 1.x multiplies int64 in floating point, so it saturates
#: (2**62 * 4 gives INT64_MAX) and even rounds exact products past 2**53 (2**53 + 1 gives
#: 2**53). That is a quirk, not the spec: nnforge stays exact below overflow and wraps past it.
_REDUCERS = {"ReduceMean": np.mean, "ReduceSum": np.sum, "ReduceMax": np.max,
             "ReduceMin": np.min, "ReduceProd": np.prod}


def _reduce(node: Node, x: Any, axes: Any = None) -> Any:
    red = reduce_axes(node, x.ndim, axes)
    if red is None:
        return x
    keep = bool(node.attrs.get("keepdims", 1))
    # asarray: NumPy gives a scalar for a full reduction without keepdims
    out = _REDUCERS[node.op](x, axis=red, keepdims=keep)
    return xp_of(x).asarray(out).astype(x.dtype, copy=False)


for _name in _REDUCERS:
    OPS[_name] = OpDef(_name, _reduce_shape, _reduce)


# -- constants ------------------------------------------------------------------------------
def constant_value(node: Node) -> np.ndarray:
    """The array a Constant node holds (value, value_float(s) or value_int(s))."""
    a = node.attrs
    if "value" in a:
        return np.asarray(a["value"])
    for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                       ("value_int", np.int64), ("value_ints", np.int64)):
        if key in a:
            return np.asarray(a[key], dtype)
    raise ConfigError(f"Constant {node.name}: expected a value, value_float(s) or value_int(s) "
                      f"attribute, found {sorted(a)}")


OPS["Constant"] = OpDef("Constant", lambda node, shapes, consts: [constant_value(node).shape],
                        lambda node: constant_value(node))


def _constant_of_shape_args(node: Node, shape: Any) -> tuple[list[int], np.ndarray]:
    value = node.attrs.get("value")
    fill = np.zeros(1, np.float32) if value is None else np.asarray(value).reshape(-1)
    dims = np.asarray(shape, np.int64).reshape(-1).tolist()
    if any(d < 0 for d in dims) or fill.size != 1:
        raise ShapeError(f"ConstantOfShape {node.name}: expected a shape of non-negative dims "
                         f"and a one-element value, found {dims} and {fill.size} elements")
    return dims, fill


def constant_of_shape(node: Node, shape: Any) -> np.ndarray:
    """ConstantOfShape: an array of the given shape filled with `value` (default float 0)."""
    dims, fill = _constant_of_shape_args(node, shape)
    return np.full(dims, fill[0], fill.dtype)


def _constant_of_shape_shape(node: Node, shapes: Shapes, consts: dict) -> Shapes:
    # torch's classic exporter builds F.pad's pads from one: the importer folds it away.
    # Only the dims: inferring a shape must not allocate the (possibly huge) array.
    return [tuple(_constant_of_shape_args(node, const_input(node, consts, 0, "shape"))[0])]


OPS["ConstantOfShape"] = OpDef("ConstantOfShape", _constant_of_shape_shape, constant_of_shape)


# -- ops that op-level tracing emits (graph/trace_ops.py) ------------------------------------
#: ops whose output type is fixed whatever their inputs' (see shapes.compute_shapes)
OUT_DTYPES = {"ArgMax": "int64", "ArgMin": "int64", "Greater": "bool", "GreaterOrEqual": "bool",
              "Less": "bool", "LessOrEqual": "bool", "Equal": "bool", "IsNaN": "bool"}


def _broadcast_all(node: Node, shapes: Shapes, consts: dict) -> Shapes:
    out: Shape | None = shapes[0]
    for s in shapes[1:]:
        out = _broadcast(node, [out, s], consts)[0]
    return [out]


_ELEMENTWISE = {"Max": np.maximum, "Min": np.minimum}
for _name, _fn in _ELEMENTWISE.items():
    # pairwise, not f.reduce over a stacked list: that would copy device arrays to the host
    OPS[_name] = OpDef(_name, _broadcast_all,
                       lambda node, *xs, f=_fn: functools.reduce(f, xs))

OPS["Sum"] = OpDef("Sum", _broadcast_all, lambda node, *xs: functools.reduce(np.add, xs))
OPS["Mean"] = OpDef("Mean", _broadcast_all, lambda node, *xs: (functools.reduce(
    np.add, xs) / xs[0].dtype.type(len(xs))).astype(xs[0].dtype, copy=False))

COMPARISONS = {"Greater": np.greater, "GreaterOrEqual": np.greater_equal, "Less": np.less,
               "LessOrEqual": np.less_equal, "Equal": np.equal}
for _name, _fn in COMPARISONS.items():
    OPS[_name] = OpDef(_name, _broadcast, lambda node, a, b, f=_fn: f(a, b))


# an exported model's Imputer step: Where(IsNaN(x), fill, x)
OPS["IsNaN"] = OpDef("IsNaN", _unary, lambda node, x: xp_of(x).isnan(x))


@_op("Where", _broadcast_all)
def where(node: Node, cond: Any, a: Any, b: Any) -> Any:
    """cond ? a : b with broadcasting (a non-bool condition counts nonzero as true)."""
    xp = xp_of(cond)
    return xp.where(xp.asarray(cond).astype(bool), a, b)


def _arg_shape(node: Node, shapes: Shapes, consts: dict) -> Shapes:
    s = shapes[0]
    if s is None:
        return [None]
    axis = _axes(node.attrs.get("axis", 0), len(s), node)[0]
    keep = node.attrs.get("keepdims", 1)
    return [tuple(1 if i == axis else d for i, d in enumerate(s) if keep or i != axis)]


def arg_extreme(node: Node, x: Any) -> Any:
    """ArgMax/ArgMin along axis as int64 (the first index on ties unless select_last_index)."""
    axis = _arr_axes(node, x, node.attrs.get("axis", 0))[0]
    pick = np.argmax if node.op == "ArgMax" else np.argmin
    keep = bool(node.attrs.get("keepdims", 1))
    if node.attrs.get("select_last_index", 0):
        flipped = pick(np.flip(x, axis), axis=axis, keepdims=keep)
        return (x.shape[axis] - 1 - flipped).astype(np.int64)
    return xp_of(x).asarray(pick(x, axis=axis, keepdims=keep)).astype(np.int64)


OPS["ArgMax"] = OpDef("ArgMax", _arg_shape, arg_extreme)
OPS["ArgMin"] = OpDef("ArgMin", _arg_shape, arg_extreme)


def split_sizes(node: Node, dim: Dim, split: Any) -> list[Dim]:
    """The piece sizes of a Split node along its axis (equal pieces without a split input)."""
    n = len(node.outputs)
    if split is not None:
        sizes = np.asarray(split, np.int64).reshape(-1).tolist()
        if len(sizes) != n or (isinstance(dim, int) and sum(sizes) != dim):
            raise ShapeError(f"Split {node.name}: expected {n} sizes adding up to {dim}, found "
                             f"{sizes}")
        return sizes
    if not isinstance(dim, int):
        return [None] * n
    step = -(-dim // n)  # ONNX: the last piece is smaller when the dim does not divide
    return [min(step, dim - k * step) for k in range(n)]


def _split_shape(node: Node, shapes: Shapes, consts: dict) -> Shapes:
    s = shapes[0]
    split = const_input(node, consts, 1, "split")
    if s is None:
        return [None] * len(node.outputs)
    axis = _axes(node.attrs.get("axis", 0), len(s), node)[0]
    return [tuple(d if i == axis else e for i, e in enumerate(s))
            for d in split_sizes(node, s[axis], split)]


@_op("Split", _split_shape)
def split(node: Node, x: Any, split: Any = None) -> tuple:
    """Consecutive pieces along axis."""
    axis = _arr_axes(node, x, node.attrs.get("axis", 0))[0]
    cuts = np.cumsum(split_sizes(node, x.shape[axis], split))[:-1].tolist()
    return tuple(np.split(x, cuts, axis=axis))


def _expand_shape(node: Node, shapes: Shapes, consts: dict) -> Shapes:
    target = consts.get(node.inputs[1])
    if shapes[0] is None:
        return [None]
    if target is None:  # computed at run time (graph/shapes.py follows a traced one's)
        if shapes[1] is None or len(shapes[1]) != 1 or not isinstance(shapes[1][0], int):
            return [None]
        target = [None] * shapes[1][0]  # its length alone gives the output's rank
    # dims of a computed shape: ints, or symbols such as the batch "N"
    dims = tuple(d if d is None or isinstance(d, str) else int(d)
                 for d in np.asarray(target, dtype=object).reshape(-1))
    return _broadcast(node, [shapes[0], dims], consts)


@_op("Expand", _expand_shape)
def expand(node: Node, x: Any, shape: Any) -> Any:
    """Broadcast x against shape (ONNX's two-way broadcasting: a 1 keeps x's dim)."""
    target = np.broadcast_shapes(x.shape, tuple(int(d) for d in np.asarray(shape).reshape(-1)))
    return np.broadcast_to(x, target).copy()


# -- ops PyTorch CNN exports use (Resize, ConvTranspose, InstanceNormalization, ...) ----------
# Kernels: runtime/kernels_extra.py; the geometry helpers below are shared with them.
def _refuse(node: Node, attr: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{node.op} {node.name!r}: {attr}={value!r} is not supported; "
                       f"expected {expected}")


#: Resize's coordinate_transformation_mode values nnforge computes (not tf_crop_and_resize)
RESIZE_COORDS = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners",
                 "asymmetric")
RESIZE_NEAREST = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")


def check_resize(node: Node) -> None:
    """ConfigError naming the first attribute of a Resize node that nnforge does not compute."""
    a = node.attrs
    mode = a.get("mode", "nearest")
    if mode not in ("nearest", "linear"):
        raise _refuse(node, "mode", mode, "'nearest' or 'linear'")
    ctm = a.get("coordinate_transformation_mode", "half_pixel")
    if ctm not in RESIZE_COORDS:
        raise _refuse(node, "coordinate_transformation_mode", ctm, f"one of {RESIZE_COORDS}")
    if mode == "nearest" and ctm == "half_pixel_symmetric":
        # its source coordinates land on exact .5 ties, which ONNX Runtime's float rounding
        # settles either way: nnforge would pick another pixel there
        raise _refuse(node, "coordinate_transformation_mode", ctm, "another mode with "
                      "mode='nearest' (half_pixel_symmetric is supported with 'linear')")
    if mode == "nearest" and a.get("nearest_mode", "round_prefer_floor") not in RESIZE_NEAREST:
        raise _refuse(node, "nearest_mode", a["nearest_mode"], f"one of {RESIZE_NEAREST}")
    for key, neutral in (("antialias", 0), ("exclude_outside", 0),
                         ("keep_aspect_ratio_policy", "stretch")):
        if a.get(key, neutral) != neutral:
            raise _refuse(node, key, a[key], f"{neutral!r} (the default)")


def _given(v: Any) -> bool:
    """Whether an optional input is there (opset 13 exporters pass empty tensors for none)."""
    return v is not None and np.asarray(v).size > 0


def resize_geometry(node: Node, in_shape: Shape, scales: Any, sizes: Any
                    ) -> tuple[tuple[Dim, ...], list[np.float32]]:
    """Output shape and per-axis float32 scales of a Resize (scale out/in where sizes given).

    Dims may be symbols: one a scale of 1 keeps, others become None (unknown)."""
    check_resize(node)
    rank = len(in_shape)
    axes = _axes(node.attrs.get("axes", list(range(rank))), rank, node)
    given = sizes if _given(sizes) else scales
    if _given(sizes) == _given(scales):
        raise ShapeError(f"Resize {node.name!r}: expected one of scales and sizes, found "
                         f"{'both' if _given(sizes) else 'neither'}")
    vals = np.asarray(given).reshape(-1)
    if len(vals) != len(axes):
        raise ShapeError(f"Resize {node.name!r}: expected {len(axes)} "
                         f"{'sizes' if _given(sizes) else 'scales'}, found {len(vals)}")
    out, f32 = list(in_shape), np.float32
    scale = [f32(1.0)] * rank
    for a, v in zip(axes, vals.tolist()):
        d = in_shape[a]
        if _given(sizes):
            out[a] = int(v)
            scale[a] = f32(v) / f32(d) if isinstance(d, int) else f32(1.0)
            continue
        if not np.isfinite(v) or v <= 0:  # int(floor(nan)) is a raw ValueError
            raise ShapeError(f"Resize {node.name!r}: expected finite positive scales, found "
                             f"{vals.tolist()}")
        scale[a] = f32(v)
        if isinstance(d, int):  # float32 product, then floor: what ONNX Runtime computes
            out[a] = int(np.floor(f32(d) * f32(v)))
        elif scale[a] != 1:
            out[a] = None
    if any(isinstance(d, int) and d <= 0 for d in out):
        raise ShapeError(f"Resize {node.name!r}: the output shape {tuple(out)} has an empty dim")
    return tuple(out), scale


def _resize_shape(node: Node, shapes: Shapes, consts: dict) -> Shapes:
    check_resize(node)
    s = shapes[0]
    scales = consts.get(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2] else None
    sizes = consts.get(node.inputs[3]) if len(node.inputs) > 3 and node.inputs[3] else None
    if s is None:
        return [None]
    if not _given(scales) and not _given(sizes):  # computed at run time (torch's size=)
        return [tuple(None for _ in s)]
    return [resize_geometry(node, s, scales, sizes)[0]]


def _source_coords(ctm: str, n_out: int, n_in: int, s: np.float32) -> np.ndarray:
    """Input coordinate of each output position, in float32 as ONNX Runtime computes it."""
    f = np.float32
    x = np.arange(n_out, dtype=f)
    if ctm == "asymmetric":
        return x / s
    if ctm == "align_corners":
        return np.zeros(n_out, f) if n_out == 1 else x * f(n_in - 1) / f(n_out - 1)
    if ctm == "half_pixel_symmetric":  # ONNX Runtime's order of operations, for its rounding
        offset = f(n_in) / f(2) * (f(1) - f(n_out) / (s * f(n_in)))  # float32, then double
        return (np.float64(offset) + (x + 0.5) / np.float64(s) - 0.5).astype(f)
    c = (x + f(0.5)) / s - f(0.5)
    if ctm == "pytorch_half_pixel":
        return c if n_out > 1 else np.zeros(n_out, f)
    return c


#: one Resize axis: (axis, first index, second index or None, weight of the second or None)
ResizeStep = tuple[int, np.ndarray, np.ndarray | None, np.ndarray | None]


def resize_steps(node: Node, in_shape: tuple[int, ...], out_shape: tuple[int, ...],
                 scales: list[np.float32]) -> list[ResizeStep]:
    """Per axis that changes: nearest's gather indices, or linear's two indices and weight."""
    ctm = node.attrs.get("coordinate_transformation_mode", "half_pixel")
    linear = node.attrs.get("mode", "nearest") == "linear"
    rule = node.attrs.get("nearest_mode", "round_prefer_floor")
    steps: list[ResizeStep] = []
    if tuple(in_shape) == tuple(out_shape):
        return steps  # ONNX Runtime copies the input then, whatever the scales (1.1 on 5)
    for a, (n_in, n_out) in enumerate(zip(in_shape, out_shape)):
        c = _source_coords(ctm, n_out, n_in, scales[a]).astype(np.float64)
        if linear:
            c = np.clip(c, 0, n_in - 1)
            i0 = np.minimum(np.floor(c), n_in - 1).astype(np.intp)
            i1 = np.minimum(i0 + 1, n_in - 1)
            w = (c - i0).astype(np.float32)
            if n_in != n_out or w.any() or (i0 != np.arange(n_in)).any():
                steps.append((a, i0, i1, w))
            continue
        # x.5 goes down (prefer_floor) or up (prefer_ceil); exact in float64
        r = {"floor": np.floor(c), "ceil": np.ceil(c), "round_prefer_ceil": np.floor(c + 0.5),
             "round_prefer_floor": np.ceil(c - 0.5)}[rule]
        idx = np.clip(r, 0, n_in - 1).astype(np.intp)
        if n_in != n_out or (idx != np.arange(n_in)).any():
            steps.append((a, idx, None, None))
    return steps


def resize_array(node: Node, x: Any, roi: Any = None, scales: Any = None, sizes: Any = None
                 ) -> Any:
    """ONNX Resize, modes nearest and linear (separable: one axis after another)."""
    out, scale = resize_geometry(node, x.shape, scales, sizes)
    xp = xp_of(x)
    y = x
    for a, i0, i1, w in resize_steps(node, x.shape, out, scale):  # type: ignore[arg-type]
        first = xp.take(y, xp.asarray(i0), axis=a)
        if i1 is None:
            y = first
            continue
        wb = xp.asarray(w.astype(x.dtype)).reshape((-1,) + (1,) * (x.ndim - 1 - a))
        y = first + (xp.take(y, xp.asarray(i1), axis=a) - first) * wb
    return y.astype(x.dtype, copy=y is x)


OPS["Resize"] = OpDef("Resize", _resize_shape, resize_array)


def conv_transpose_geometry(node: Node, nd: int, w_shape: Shape) -> dict[str, list[int]]:
    """Kernel, strides, pads, dilations and output_padding of a 1-D or 2-D ConvTranspose."""
    a = node.attrs
    if a.get("auto_pad", "NOTSET") != "NOTSET":
        raise _refuse(node, "auto_pad", a["auto_pad"], "'NOTSET' with explicit pads")
    if "output_shape" in a:
        raise _refuse(node, "output_shape", a["output_shape"], "pads and output_padding")
    if nd not in (1, 2):
        raise ConfigError(f"ConvTranspose {node.name!r}: a {nd}-D kernel is not supported; "
                          f"expected 1-D or 2-D")
    g = {"kernel": list(a.get("kernel_shape", w_shape[2:])),
         "strides": list(a.get("strides", [1] * nd)), "pads": list(a.get("pads", [0] * (2 * nd))),
         "dilations": list(a.get("dilations", [1] * nd)),
         "output_padding": list(a.get("output_padding", [0] * nd))}
    _check_conv_transpose(node, nd, w_shape, g)
    return g


def _bad_attr(node: Node, attr: str, value: Any, expected: str) -> ShapeError:
    return ShapeError(f"{node.op} {node.name!r}: expected {attr} {expected}, found {value!r}")


def _check_conv_transpose(node: Node, nd: int, w_shape: Shape, g: dict[str, list]) -> None:
    """ShapeError naming the first attribute ONNX Runtime refuses at load: without the check
    they fail at run time inside NumPy, or give a silently wrong (or huge) output."""
    lengths = {"kernel": nd, "strides": nd, "pads": 2 * nd, "dilations": nd,
               "output_padding": nd}
    lowest = {"kernel": 1, "strides": 1, "pads": 0, "dilations": 1, "output_padding": 0}
    for key, n in lengths.items():
        attr = "kernel_shape" if key == "kernel" else key
        v = g[key]
        if len(v) != n or not all(isinstance(k, int) for k in v):
            raise _bad_attr(node, attr, v, f"{n} integers")
        if min(v) < lowest[key]:
            raise _bad_attr(node, attr, v, f"values >= {lowest[key]}")
    spatial = list(w_shape[2:])
    if all(isinstance(d, int) for d in spatial) and g["kernel"] != spatial:
        raise _bad_attr(node, "kernel_shape", g["kernel"],
                        f"equal to the weight's kernel {spatial}")
    for i, p in enumerate(g["output_padding"]):
        if p >= max(g["strides"][i], g["dilations"][i]):
            raise _bad_attr(node, "output_padding", g["output_padding"],
                            f"values below max(stride, dilation) on each axis; axis {i} "
                            f"allows < {max(g['strides'][i], g['dilations'][i])}")


def conv_transpose_dims(node: Node, spatial: Shape, w_shape: Shape) -> tuple[Dim, ...]:
    """Output spatial dims: stride (in - 1) + output_padding + dilated kernel - pads."""
    nd = len(spatial)
    g = conv_transpose_geometry(node, nd, w_shape)
    out: list[Dim] = []
    for i, d in enumerate(spatial):
        if not isinstance(d, int):
            out.append(None)
            continue
        out.append(g["strides"][i] * (d - 1) + g["output_padding"][i]
                   + (g["kernel"][i] - 1) * g["dilations"][i] + 1 - g["pads"][i]
                   - g["pads"][i + nd])
        if out[-1] <= 0:
            raise ShapeError(f"ConvTranspose {node.name!r}: pads {g['pads']} leave no output "
                             f"for input size {tuple(spatial)}")
    return tuple(out)


def _conv_transpose_shape(node: Node, shapes: Shapes, consts: dict) -> Shapes:
    x, w = shapes[0], shapes[1]
    if x is None or w is None:
        return [None]
    group = _conv_transpose_group(node, x, w)
    cout = w[1] * group if isinstance(w[1], int) else None
    return [(x[0], cout) + conv_transpose_dims(node, tuple(x[2:]), w)]


def _conv_transpose_group(node: Node, x: Shape, w: Shape) -> int:
    """The group attribute, checked against the input's and the weight's channels."""
    group = node.attrs.get("group", 1)
    if not isinstance(group, int) or group < 1:
        raise _bad_attr(node, "group", group, "an integer >= 1")
    if len(w) != len(x):
        raise ShapeError(f"ConvTranspose {node.name!r}: expected a weight of rank {len(x)} "
                         f"(C, M / group, kernel...), found shape {tuple(w)}")
    if isinstance(x[1], int) and isinstance(w[0], int) and x[1] != w[0]:
        raise ShapeError(f"ConvTranspose {node.name!r}: expected {w[0]} input channels, "
                         f"found {x[1]}")
    c = x[1] if isinstance(x[1], int) else w[0]
    if isinstance(c, int) and c % group:
        raise _bad_attr(node, "group", group, f"a divisor of the {c} input channels")
    return group


def conv_transpose_2d(node: Node, x: Any, w: Any) -> tuple[Any, dict[str, list[int]]]:
    """x, w and geometry of a ConvTranspose as 2-D (a 1-D one gets H = 1)."""
    g = conv_transpose_geometry(node, x.ndim - 2, w.shape)
    if x.ndim == 4:
        return (x, w), g
    lifted = {k: ([1, *v] if k != "pads" else [0, v[0], 0, v[1]]) for k, v in g.items()}
    return (x[:, :, None], w[:, :, None]), lifted


def conv_transpose(node: Node, x: Any, w: Any, b: Any = None) -> Any:
    """Transposed convolution (NCHW or NCL): per-tap products scattered into the output."""
    (x4, w4), g = conv_transpose_2d(node, x, w)
    xp, groups = xp_of(x), node.attrs.get("group", 1)
    n, cin, h, wd = x4.shape
    cout_g, kh, kw = w4.shape[1:]
    (sh, sw), (dh, dw) = g["strides"], g["dilations"]
    wt = w4.reshape(groups, cin // groups, -1).transpose(0, 2, 1)
    cols = xp.matmul(wt, x4.reshape(n, groups, cin // groups, h * wd))
    cols = cols.reshape(n, groups * cout_g, kh, kw, h, wd)
    full = xp.zeros((n, groups * cout_g, sh * (h - 1) + dh * (kh - 1) + 1 + g["output_padding"][0],
                     sw * (wd - 1) + dw * (kw - 1) + 1 + g["output_padding"][1]), x.dtype)
    for i in range(kh):  # a loop over kernel taps; each adds a whole strided plane
        for j in range(kw):
            full[:, :, i * dh:i * dh + sh * (h - 1) + 1:sh,
                 j * dw:j * dw + sw * (wd - 1) + 1:sw] += cols[:, :, i, j]
    (ph0, pw0, ph1, pw1), (fh, fw) = g["pads"], full.shape[2:]
    y = full[:, :, ph0:fh - ph1, pw0:fw - pw1]
    if b is not None:
        y = y + b.reshape(1, -1, 1, 1).astype(x.dtype, copy=False)
    return (y if x.ndim == 4 else y[:, :, 0]).astype(x.dtype, copy=False)


OPS["ConvTranspose"] = OpDef("ConvTranspose", _conv_transpose_shape, conv_transpose)


def _instance_norm_shape(node: Node, shapes: Shapes, consts: dict) -> Shapes:
    x = shapes[0]
    if x is not None and len(x) < 3:
        raise ShapeError(f"InstanceNormalization {node.name!r}: expected an input of rank 3 "
                         f"or more (N, C, ...), found {x}")
    c = x[1] if x is not None else None
    for k, what in ((1, "scale"), (2, "bias")):
        s = shapes[k] if k < len(shapes) else None
        # the kernel broadcasts them per channel: another length is a raw NumPy error there
        if s is not None and (len(s) != 1 or (isinstance(c, int) and s[0] != c)):
            raise ShapeError(f"InstanceNormalization {node.name!r}: expected {what} of shape "
                             f"({c if isinstance(c, int) else 'C'},), found {tuple(s)}")
    return [x]


@_op("InstanceNormalization", _instance_norm_shape)
def instance_norm(node: Node, x: Any, scale: Any, bias: Any) -> Any:
    """(x - mean) / sqrt(var + epsilon) * scale + bias, statistics per sample and channel."""
    axes = tuple(range(2, x.ndim))
    t = x.dtype.type
    xc = x - x.mean(axis=axes, keepdims=True, dtype=np.float64).astype(x.dtype)
    var = (xc * xc).mean(axis=axes, keepdims=True)
    per_c = (-1,) + (1,) * (x.ndim - 2)
    y = xc / xp_of(x).sqrt(var + t(node.attrs.get("epsilon", 1e-5)))
    return (y * scale.reshape(per_c) + bias.reshape(per_c)).astype(x.dtype, copy=False)


def _tile_shape(node: Node, shapes: Shapes, consts: dict) -> Shapes:
    s, reps = shapes[0], const_input(node, consts, 1, "repeats")
    if s is None:
        return [None]
    r = np.asarray(reps, np.int64).reshape(-1).tolist()
    if len(r) != len(s) or any(k < 0 for k in r):
        raise ShapeError(f"Tile {node.name!r}: expected {len(s)} non-negative repeats, "
                         f"found {r}")
    return [tuple(d * k if isinstance(d, int) else (d if k == 1 else None)
                  for d, k in zip(s, r))]


@_op("Tile", _tile_shape)
def tile(node: Node, x: Any, repeats: Any) -> Any:
    """x repeated along each axis."""
    return xp_of(x).tile(x, tuple(int(k) for k in np.asarray(repeats).reshape(-1)))


def range_length(start: Any, limit: Any, delta: Any, node: Node | None = None) -> int:
    """max(ceil((limit - start) / delta), 0): exact in Python ints for integer inputs (their
    difference passes int64 near its limits), in the inputs' float type otherwise, as ONNX
    Runtime computes. ShapeError for a zero delta or a NaN/Inf bound."""
    s, lim, d = (np.asarray(v).reshape(()) for v in (start, limit, delta))
    where = "Range" if node is None else f"Range {node.name!r}"
    if d == 0:
        raise ShapeError(f"{where}: expected a nonzero delta, found 0")
    if s.dtype.kind in "iu":
        return max(-((int(s) - int(lim)) // int(d)), 0)
    if not (np.isfinite(s) and np.isfinite(lim) and np.isfinite(d)):  # int(ceil(nan)) raises
        raise ShapeError(f"{where}: expected finite start, limit and delta, found "
                         f"{s.item()}, {lim.item()}, {d.item()}")
    with np.errstate(over="ignore"):  # an overflow gives inf, refused below
        n = np.ceil((lim - s) / d)
    if not np.isfinite(n):  # finite bounds whose difference overflows the float type
        raise ShapeError(f"{where}: the length (limit - start) / delta of {s.item()}, "
                         f"{lim.item()}, {d.item()} overflows {s.dtype}")
    return max(int(n), 0)


def _range_shape(node: Node, shapes: Shapes, consts: dict) -> Shapes:
    vals = [consts.get(i) for i in node.inputs]
    if any(v is None for v in vals):
        return [(None,)]
    return [(range_length(*vals, node=node),)]


@_op("Range", _range_shape)
def range_(node: Node, start: Any, limit: Any, delta: Any) -> Any:
    """start, start + delta, ... up to (not including) limit, in start's type."""
    s, d = np.asarray(start).reshape(()), np.asarray(delta).reshape(())
    n = range_length(s, limit, d, node)
    return (s + np.arange(n, dtype=s.dtype) * d).astype(s.dtype)


def cumsum_axis(node: Node, axis: Any, rank: int, error: type[Exception] = ShapeError) -> int:
    """CumSum's axis in [0, rank): an error of class `error` naming the node for one outside
    [-rank, rank - 1] (a modulo would silently pick another axis), or a rank-0 input."""
    if rank < 1:
        raise ShapeError(f"CumSum {node.name!r}: expected an input of rank 1 or more, found "
                         f"rank 0")
    vals = np.asarray(axis).reshape(-1)
    # a plan may hold a computed axis in a float buffer: an integral float is an axis too
    if vals.size != 1 or not (vals.dtype.kind in "iu" or (
            vals.dtype.kind == "f" and float(vals[0]).is_integer())):
        raise error(f"CumSum {node.name!r}: expected one integer axis, found {vals.tolist()}")
    a = int(vals[0])
    if not -rank <= a < rank:
        raise error(f"CumSum {node.name!r}: expected axis in [{-rank}, {rank - 1}], found {a}")
    return a % rank


def _cumsum_shape(node: Node, shapes: Shapes, consts: dict) -> Shapes:
    x = shapes[0]
    axis = consts.get(node.inputs[1]) if len(node.inputs) > 1 else None
    if x is not None:
        cumsum_axis(node, 0 if axis is None else axis, len(x))  # a computed axis: at run time
    return [x]


@_op("CumSum", _cumsum_shape)
def cumsum(node: Node, x: Any, axis: Any) -> Any:
    """Running sum along axis (exclusive: shifted by one; reverse: from the end)."""
    a = cumsum_axis(node, axis, x.ndim, DataError)
    xp = xp_of(x)
    src = xp.flip(x, a) if node.attrs.get("reverse", 0) else x
    y = xp.cumsum(src, axis=a, dtype=x.dtype)
    if node.attrs.get("exclusive", 0):
        first = xp.zeros_like(xp.take(y, xp.arange(1), axis=a))
        y = xp.concatenate([first, xp.take(y, xp.arange(y.shape[a] - 1), axis=a)], axis=a)
    return xp.flip(y, a) if node.attrs.get("reverse", 0) else y


def celu_array(x: Any, alpha: float) -> Any:
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1))."""
    t = x.dtype.type
    neg = np.expm1(np.minimum(x, t(0)) / t(alpha)) * t(alpha)
    return (np.maximum(x, t(0)) + neg).astype(x.dtype, copy=False)


def mish_array(x: Any) -> Any:
    """x * tanh(softplus(x)), softplus as log(1 + exp(x)) without overflow."""
    return (x * np.tanh(np.logaddexp(x.dtype.type(0), x))).astype(x.dtype, copy=False)


OPS["Sin"] = OpDef("Sin", _unary, lambda node, x: np.sin(x))
OPS["Cos"] = OpDef("Cos", _unary, lambda node, x: np.cos(x))
OPS["Celu"] = OpDef("Celu", _unary, lambda node, x: celu_array(x, node.attrs.get("alpha", 1.0)))
OPS["Mish"] = OpDef("Mish", _unary, lambda node, x: mish_array(x))


@_op("ReduceL2", _reduce_shape)
def reduce_l2(node: Node, x: Any, axes: Any = None) -> Any:
    """sqrt(sum(x^2)) over axes (F.normalize's norm)."""
    red = reduce_axes(node, x.ndim, axes)
    if red is None:  # noop_with_empty_axes: each element's own L2 norm, |x|
        return xp_of(x).abs(x)
    out = np.sqrt((x * x).sum(axis=red, keepdims=bool(node.attrs.get("keepdims", 1))))
    return xp_of(x).asarray(out).astype(x.dtype, copy=False)


def depth_to_space_dims(node: Node, shape: Shape) -> tuple[int, tuple[int, ...]]:
    """(blocksize, transpose order) of a DepthToSpace node, checked against the shape."""
    b, mode = int(node.attrs.get("blocksize", 0)), node.attrs.get("mode", "DCR")
    if mode not in ("DCR", "CRD"):
        raise _refuse(node, "mode", mode, "'DCR' or 'CRD'")
    if len(shape) != 4 or b < 1 or (isinstance(shape[1], int) and shape[1] % (b * b)):
        raise ShapeError(f"DepthToSpace {node.name!r}: expected a 4-D input whose channels "
                         f"divide by blocksize^2 = {b * b}, found {shape}")
    # DCR: channels split (b, b, C'); CRD: (C', b, b). Either way the result is (N, C', H, b, W, b)
    return b, ((0, 3, 4, 1, 5, 2) if mode == "DCR" else (0, 1, 4, 2, 5, 3))


def _depth_to_space_shape(node: Node, shapes: Shapes, consts: dict) -> Shapes:
    s = shapes[0]
    if s is None:
        return [None]
    b, _ = depth_to_space_dims(node, s)
    return [(s[0],) + tuple(d // (b * b) if i == 0 else d * b if isinstance(d, int) else None
                            for i, d in enumerate(s[1:]))]


def depth_to_space_view(node: Node, x: Any) -> Any:
    """x as the 6-D transposed view whose C-order reshape is DepthToSpace's result."""
    b, order = depth_to_space_dims(node, x.shape)
    n, c, h, w = x.shape
    split = (n, b, b, c // (b * b), h, w) if order[1] == 3 else (n, c // (b * b), b, b, h, w)
    return x.reshape(split).transpose(order)


@_op("DepthToSpace", _depth_to_space_shape)
def depth_to_space(node: Node, x: Any) -> Any:
    """Move channel blocks into b x b spatial blocks (nn.PixelShuffle is mode CRD)."""
    n, c, h, w = x.shape
    b = int(node.attrs["blocksize"])
    return depth_to_space_view(node, x).reshape(n, c // (b * b), h * b, w * b)
