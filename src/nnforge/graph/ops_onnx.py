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
from ..errors import ConfigError, ShapeError
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
