"""Shape inference: the shape and dtype of every value, symbolic batch dimension included."""

from __future__ import annotations

import numpy as np

from .ir import Graph, Node, Shape, ValueInfo
from .ops import get_op
from .ops_onnx import ONNX_DTYPES, OUT_DTYPES, constant_value


def compute_shapes(graph: Graph, input_shapes: dict[str, Shape] | None = None
                   ) -> dict[str, ValueInfo]:
    """ValueInfo for every value, from the graph inputs' shapes (or the given overrides)."""
    infos: dict[str, ValueInfo] = {}
    for v in graph.inputs:
        shape = (input_shapes or {}).get(v.name, v.shape)
        infos[v.name] = ValueInfo(v.name, None if shape is None else tuple(shape), v.dtype)
    for name, arr in graph.initializers.items():
        infos[name] = ValueInfo(name, tuple(arr.shape), str(arr.dtype))
    for node in graph.nodes:
        ins = [infos.get(i) for i in node.inputs]
        shapes = [None if v is None else v.shape for v in ins]
        first = ins[1] if node.op == "Where" else (ins[0] if ins else None)  # Where: a's type
        dtype = first.dtype if first is not None else "float32"
        out_shapes = get_op(node).infer(node, shapes, graph.initializers)
        for k, out in enumerate(node.outputs):
            if out:
                shape = out_shapes[k] if k < len(out_shapes) else None
                infos[out] = ValueInfo(out, shape, _out_dtype(node, k, dtype))
    return infos


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
    g.value_info = {k: v for k, v in infos.items() if k not in g.initializers}
    for v in g.outputs:
        if v.name in infos:
            v.shape, v.dtype = infos[v.name].shape, infos[v.name].dtype
    return g
