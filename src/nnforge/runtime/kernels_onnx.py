"""NumPy kernels for the ops of `graph/ops_onnx.py` (imported ONNX models). Imported by kernels.py.

Every value of a plan has its own dtype (runtime/plan.py): Shape writes int64, comparisons
bool, ArgMax int64 indices, Cast the target type, so these kernels compute in the values'
types; `kernels.check_dtypes` refuses at compile time the ones that do not take a type.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from ..graph.ir import Node
from ..graph.ops_onnx import (
    COMPARISONS,
    ONNX_DTYPES,
    _pad_amounts,
    arg_extreme,
    constant_of_shape,
    constant_value,
    pad_array,
    reduce_axes,
    shape_slice,
    slice_index,
    split_sizes,
)
from ..ops.activation import erf_array
from .kernels import IN_PLACE, READS_FEEDS, VIEWS, Ctx, Step, kernel

# Squeeze/Unsqueeze only reshape; Shape reads nothing but its input's dims
VIEWS.update({"Squeeze", "Unsqueeze"})
READS_FEEDS.add("Shape")
IN_PLACE.update({"Erf", "Neg", "Abs", "Sqrt", "Exp", "Log", "Reciprocal", "Pow", "Clip",
                 "Cast"})

_UFUNCS = {"Neg": np.negative, "Abs": np.abs, "Sqrt": np.sqrt, "Exp": np.exp, "Log": np.log,
           "Reciprocal": np.reciprocal}


@kernel(*_UFUNCS)
def _ufunc(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    fn, x, y = _UFUNCS[node.op], ins[0], outs[0]
    return lambda feeds: fn(x, out=y)


@kernel("Erf")
def _erf(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    return lambda feeds: np.copyto(y, erf_array(x))


@kernel("Pow")
def _pow(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, e, y = ins[0], ins[1], outs[0]
    if e.dtype != y.dtype:  # an integer exponent initializer: convert once
        e = ctx.const(e)
    return lambda feeds: np.power(x, e, out=y)


@kernel("Clip")
def _clip(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    lo = ins[1] if len(ins) > 1 else None
    hi = ins[2] if len(ins) > 2 else None
    lo = None if lo is None else lo.astype(y.dtype, copy=False)
    hi = None if hi is None else hi.astype(y.dtype, copy=False)

    def step(feeds: Any) -> None:
        src = x
        if lo is not None:
            np.maximum(src, lo, out=y)
            src = y
        if hi is not None:
            np.minimum(src, hi, out=y)
        elif lo is None:
            np.copyto(y, x)
    return step


@kernel("Cast")
def _cast(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    to = ONNX_DTYPES.get(node.attrs.get("to"))
    if to != y.dtype:
        raise ConfigError(f"Cast {node.name!r}: the NumPy runtime casts to "
                          f"{sorted(str(d) for d in set(ONNX_DTYPES.values()))}; found type "
                          f"{node.attrs.get('to')!r} (use backend='onnxruntime')")
    if x.dtype == y.dtype:
        return lambda feeds: np.copyto(y, x)
    if x.dtype.kind != "f" or y.dtype.kind == "f":
        return lambda feeds: np.copyto(y, x, casting="unsafe")  # C's conversions: int wraps

    def step(feeds: Any) -> None:  # float to int truncates toward zero, as in C
        with np.errstate(invalid="ignore"):  # NaN or out of range: undefined in C too
            np.copyto(y, x, casting="unsafe")
    return step


@kernel("Concat")
def _concat(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    xs, y, axis = tuple(ins), outs[0], node.attrs.get("axis", 0)
    return lambda feeds: np.concatenate(xs, axis=axis, out=y)


@kernel("Pad")
def _pad(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    value, axes = (ins[2] if len(ins) > 2 else None), (ins[3] if len(ins) > 3 else None)
    if node.attrs.get("mode", "constant") != "constant":
        return lambda feeds: np.copyto(y, pad_array(node, x, ins[1], value, axes))
    amounts = _pad_amounts(node, ins[1], x.ndim, axes)
    crop = tuple(slice(-min(a, 0), x.shape[i] + min(b, 0)) for i, (a, b) in enumerate(amounts))
    src = x[crop]
    inner = y[tuple(slice(max(a, 0), max(a, 0) + n) for (a, _), n in zip(amounts, src.shape))]
    fill = y.dtype.type(0 if value is None or value.size == 0 else value.item())

    def step(feeds: Any) -> None:
        y.fill(fill)  # the buffer may hold another value between calls: refill the border
        np.copyto(inner, src)
    return step


@kernel("Shape")
def _shape(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    shp, y = tuple(ins[0].shape), outs[0]
    dims = ctx.const(np.asarray(shp[shape_slice(node, len(shp))]))
    return lambda feeds: np.copyto(y, dims)


@kernel("Gather")
def _gather(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, idx, y = ins[0], ins[1], outs[0]
    axis = node.attrs.get("axis", 0) % x.ndim
    n = x.shape[axis]
    if idx.dtype.kind not in "iu":
        # ONNX takes int32/int64 indices only (ONNX Runtime refuses others); imported graphs,
        # .nnf files among them, feed ids in their own integer type
        raise ConfigError(f"{node.op} {node.name!r}: expected int32 or int64 indices, found "
                          f"{idx.dtype}")
    if ctx.is_const(idx):
        fixed = np.where(idx < 0, idx + n, idx).astype(np.intp)
        return lambda feeds: np.take(x, fixed, axis=axis, out=y)
    # indices fed or computed at run time (an embedding's ids), in their own int type: np.take
    # takes negative ones as ONNX does and checks bounds itself, so a good batch pays nothing
    def step(feeds: Any) -> Any:
        try:
            return np.take(x, idx, axis=axis, out=y)
        except IndexError:
            raise _bad_indices(node, idx, n) from None
    return step


def _bad_indices(node: Node, idx: np.ndarray, n: int) -> DataError:
    """The DataError for run-time Gather indices outside [-n, n-1] (ids past a table's rows)."""
    bad = (idx < -n) | (idx >= n)
    first = idx.reshape(-1)[int(np.argmax(bad.reshape(-1)))]
    return DataError(f"{node.op} {node.name!r}: expected indices in [{-n}, {n - 1}], found "
                     f"{first} ({int(bad.sum())} of {idx.size} out of range)")


_REDUCERS = {"ReduceMean": np.mean, "ReduceSum": np.sum, "ReduceMax": np.max,
             "ReduceMin": np.min, "ReduceProd": np.prod}


@kernel(*_REDUCERS)
def _reduce(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    red = reduce_axes(node, x.ndim, ins[1] if len(ins) > 1 else None)
    if red is None:
        return lambda feeds: np.copyto(y, x)
    fn, keep = _REDUCERS[node.op], bool(node.attrs.get("keepdims", 1))
    return lambda feeds: fn(x, axis=red, keepdims=keep, out=y)


@kernel("Slice")
def _slice(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    args = [ins[k] if len(ins) > k else None for k in range(1, 5)]
    view = x[slice_index(node, x.shape, *args)]
    return lambda feeds: np.copyto(y, view)


@kernel("Constant")
def _constant(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    value, y = ctx.const(constant_value(node)), outs[0]
    return lambda feeds: np.copyto(y, value)


@kernel("ConstantOfShape")
def _constant_of_shape(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    value, y = ctx.const(constant_of_shape(node, ins[0])), outs[0]
    return lambda feeds: np.copyto(y, value)


# -- ops that op-level tracing emits (graph/trace_ops.py) ------------------------------------
@kernel("Max", "Min")
def _max_min(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    fn, xs, y = (np.maximum if node.op == "Max" else np.minimum), tuple(ins), outs[0]
    if len(xs) == 1:
        return lambda feeds: np.copyto(y, xs[0])

    def step(feeds: Any) -> None:
        fn(xs[0], xs[1], out=y)
        for x in xs[2:]:
            fn(y, x, out=y)
    return step


@kernel(*COMPARISONS)
def _compare(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    fn, a, b, y = COMPARISONS[node.op], ins[0], ins[1], outs[0]
    return lambda feeds: fn(a, b, out=y)


@kernel("IsNaN")
def _isnan(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    return lambda feeds: np.isnan(x, out=y)


@kernel("Where")
def _where(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    c, a, b, y = ins[0], ins[1], ins[2], outs[0]
    if c.dtype != np.bool_:
        raise ConfigError(f"Where {node.name!r}: expected a bool condition, found {c.dtype}")
    return lambda feeds: np.copyto(y, np.where(c, a, b))


@kernel("ArgMax", "ArgMin")
def _arg(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    return lambda feeds: np.copyto(y, arg_extreme(node, x))  # y is int64


@kernel("Split")
def _split(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x = ins[0]
    axis = node.attrs.get("axis", 0) % x.ndim
    sizes = split_sizes(node, x.shape[axis], ins[1] if len(ins) > 1 else None)
    cuts = np.cumsum(sizes)[:-1].tolist()
    pieces = [(p, y) for p, y in zip(np.split(x, cuts, axis=axis), outs) if y is not None]

    def step(feeds: Any) -> None:
        for p, y in pieces:
            np.copyto(y, p)
    return step


@kernel("Expand")
def _expand(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    return lambda feeds: np.copyto(y, np.broadcast_to(x, y.shape))
