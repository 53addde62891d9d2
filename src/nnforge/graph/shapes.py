"""Shape inference: the shape and dtype of every value, symbolic batch dimension included."""

from __future__ import annotations

import math

import numpy as np

from ..errors import ModelFileError, ShapeError
from .ir import Graph, Node, Shape, ValueInfo
from .ops import dim_prod, get_op
from .ops_onnx import ONNX_DTYPES, OUT_DTYPES, constant_value, shape_slice, slice_index

#: Most elements one output of a SIZED_BY_CONSTANTS node may have where its size is known
#: without the batch: a few bytes of ConstantOfShape, Expand or Pad can otherwise ask for
#: terabytes per run
MAX_ELEMENTS = 1 << 28
#: ops whose output size comes from constants (a shape, pads, strides), not from the data
#: they read (ConvTranspose: a 2x2 input with strides 20000 is a 20001x20001 output); a
#: convolution of a 4K image may legitimately pass MAX_ELEMENTS, so others are not capped
SIZED_BY_CONSTANTS = frozenset({"ConstantOfShape", "Expand", "Pad", "Tile", "Range",
                                "Resize", "Upsample", "ConvTranspose"})


def check_output_sizes(graph: Graph, infos: dict[str, ValueInfo], rows: int = 1) -> None:
    """ModelFileError naming the first SIZED_BY_CONSTANTS node whose output passes
    MAX_ELEMENTS per row of a batch of `rows` (symbolic dims, the batch, count as 1: the check
    is on what the file fixes, not on the caller's batch size)."""
    for node in graph.nodes:
        if node.op not in SIZED_BY_CONSTANTS:
            continue
        for out in node.outputs:
            info = infos.get(out) if out else None
            if info is None or info.shape is None:
                continue
            size = math.prod(d for d in info.shape if isinstance(d, int))
            if size > MAX_ELEMENTS * rows:
                raise ModelFileError(
                    f"{node.op} {node.name!r}: output {out!r} of shape {tuple(info.shape)} has "
                    f"{size} elements; expected at most {MAX_ELEMENTS} per sample")


def compute_shapes(graph: Graph, input_shapes: dict[str, Shape] | None = None
                   ) -> dict[str, ValueInfo]:
    """ValueInfo for every value, from the graph inputs' shapes (or the given overrides)."""
    infos: dict[str, ValueInfo] = {}
    for v in graph.inputs:
        shape = (input_shapes or {}).get(v.name, v.shape)
        infos[v.name] = ValueInfo(v.name, None if shape is None else tuple(shape), v.dtype)
    for name, arr in graph.initializers.items():
        infos[name] = ValueInfo(name, tuple(arr.shape), str(arr.dtype))
    dims: dict[str, np.ndarray] = {}  # values computed from shapes (see _dims_value)
    for node in graph.nodes:
        ins = [infos.get(i) for i in node.inputs]
        shapes = [None if v is None else v.shape for v in ins]
        first = ins[1] if node.op == "Where" else (ins[0] if ins else None)  # Where: a's type
        dtype = first.dtype if first is not None else "float32"
        _check_same_types(node, ins)
        out_shapes = follow_node(node, shapes, graph.initializers, dims)
        for k, out in enumerate(node.outputs):
            if out:
                shape = out_shapes[k] if k < len(out_shapes) else None
                infos[out] = ValueInfo(out, shape, _out_dtype(node, k, dtype))
    return infos


#: ops whose first n inputs share one type parameter T: a file that mixes them is one ONNX
#: Runtime refuses to load, and nnforge would silently compute in the first input's type
SAME_TYPE_INPUTS = {"InstanceNormalization": 3}


def _check_same_types(node: Node, ins: list[ValueInfo | None]) -> None:
    """ShapeError naming the node and the input whose dtype differs from the first input's."""
    n = SAME_TYPE_INPUTS.get(node.op, 0)
    known = [(name, v) for name, v in zip(node.inputs[:n], ins[:n]) if v is not None]
    if not known:
        return
    first = known[0][1].dtype
    for name, v in known[1:]:
        if v.dtype != first:
            raise ShapeError(f"{node.op} {node.name!r}: expected input {name!r} of the first "
                             f"input's type {first}, found {v.dtype}")


def follow_node(node: Node, shapes: list[Shape | None], consts: dict[str, np.ndarray],
                dims: dict[str, np.ndarray]) -> list[Shape | None]:
    """The node's output shapes, shapes computed from Shape (see _dims_value) followed: dims
    holds those values so far, and gets the node's own."""
    known = {i: dims[i] for i in node.inputs
             if i in dims and (node.op in _SYMBOLIC_TARGETS or dims[i].dtype != object)}
    out_shapes = infer_node(node, shapes, {**consts, **known} if known else consts)
    value = _dims_value(node, shapes, dims, consts)
    if value is not None:
        dims[node.outputs[0]] = value
    return out_shapes


#: ops that take a shape computed from the inputs' dims, symbols (the batch "N") included
_SYMBOLIC_TARGETS = ("Expand", "Reshape")


def infer_node(node: Node, shapes: list[Shape | None], consts: dict[str, np.ndarray]
               ) -> list[Shape | None]:
    """The op's output shapes; a Reshape target may hold dim names (an object array)."""
    target = consts.get(node.inputs[1]) if node.op == "Reshape" and len(node.inputs) > 1 \
        else None
    if target is not None and target.dtype == object:
        return [None if shapes[0] is None else symbolic_reshape(shapes[0], target.tolist())]
    return get_op(node).infer(node, shapes, consts)


def symbolic_reshape(in_shape: Shape, target: list) -> Shape:
    """ONNX Reshape's output shape for a target of ints and dim names (0 copies the input's
    dim, -1 is what the rest leaves, None where that is not known)."""
    out: list = [in_shape[i] if isinstance(t, int) and t == 0 else t
                 for i, t in enumerate(target)]
    if -1 not in out:
        return tuple(out)
    num, den = list(in_shape), []
    for d in (d for d in out if d != -1):  # cancel dims found on both sides
        if d in num:
            num.remove(d)
        else:
            den.append(d)
    p, q = math.prod(d for d in num if isinstance(d, int)), dim_prod(den)
    syms = [d for d in num if not isinstance(d, int)]
    value = dim_prod([*syms, p // q]) if isinstance(q, int) and q and p % q == 0 else None
    out[out.index(-1)] = value
    return tuple(out)


def _dims_value(node: Node, shapes: list[Shape | None], dims: dict[str, np.ndarray],
                consts: dict[str, np.ndarray]) -> np.ndarray | None:
    """The value of Shape(x), and of Gather/Concat over it, where x's shape is known.

    A traced Expand to (x.shape[0], ...) gets its shape this way (graph/trace_ops.py), so its
    output shape is known: ("N", ...) on the graph, concrete where the input's shape is (a
    compiled plan). Dims are ints, or an object array holding symbols (the batch "N");
    only Expand and Reshape are handed a symbolic one (fold.py writes such targets as
    Shape -> Gather -> Concat over the graph inputs).
    """
    if node.op == "Shape":
        s = shapes[0]
        if s is None:
            return None
        out = np.empty(len(s), object)
        out[:] = s
        return _ints_if_known(out[shape_slice(node, len(s))])
    if node.op not in ("Gather", "Concat", "Slice") or not any(i in dims for i in node.inputs):
        return None
    args = [dims.get(i, consts.get(i)) for i in node.inputs]
    scalar = node.op == "Gather" and len(args) > 1 and np.ndim(args[1]) == 0
    if scalar:  # torch's x.size(0): a 0-d index (Range's bounds are 0-d)
        args[1] = np.reshape(args[1], 1)
    if any(a is None or a.ndim != 1 or a.dtype.kind not in "iuO" for a in args):
        return None
    if node.attrs.get("axis", 0) not in (0, -1):
        return None
    if node.op == "Gather":
        index = np.asarray(args[1], np.int64)
        n = len(args[0])
        if not ((index >= -n) & (index < n)).all():
            return None
        return args[0][index].reshape(()) if scalar else args[0][index]
    if node.op == "Slice":  # torch's F.interpolate(size=) sizes: Shape(x)[0:2] + (H, W)
        return args[0][slice_index(node, (len(args[0]),), *args[1:], *[None] * (5 - len(args)))]
    return _ints_if_known(np.concatenate([a.astype(object) for a in args]))


def _ints_if_known(dims: np.ndarray) -> np.ndarray:
    """int64 when every dim is a number, else the object array (symbols kept)."""
    if all(isinstance(d, (int, np.integer)) for d in dims):
        return dims.astype(np.int64)
    return dims


def _out_dtype(node: Node, k: int, in_dtype: str) -> str:
    """Dtype of output k: the first input's, except for ops that make a type of their own."""
    if node.op == "Dropout" and k > 0:
        return "bool"
    if node.op == "Shape":
        return "int64"
    if node.op in OUT_DTYPES:
        return OUT_DTYPES[node.op]
    if node.op == "Cast" and node.attrs.get("to") in ONNX_DTYPES:
        return str(ONNX_DTYPES[node.attrs["to"]])
    if node.op == "Constant":
        return str(constant_value(node).dtype)
    if node.op == "ConstantOfShape":  # the fill value's type, float32 when none is given
        value = node.attrs.get("value")
        return "float32" if value is None else str(np.asarray(value).dtype)
    return in_dtype


def infer_shapes(graph: Graph) -> Graph:
    """Pass: a copy of the graph with value_info (and output shapes) filled in."""
    g = graph.copy()
    infos = compute_shapes(g)
    check_output_sizes(g, infos)
    g.value_info = {k: v for k, v in infos.items() if k not in g.initializers}
    for v in g.outputs:
        if v.name in infos:
            v.shape, v.dtype = infos[v.name].shape, infos[v.name].dtype
    return g
