"""Shape inference: the shape and dtype of every value, symbolic batch dimension included."""

from __future__ import annotations

from .ir import Graph, Shape, ValueInfo
from .ops import get_op


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
        dtype = ins[0].dtype if ins and ins[0] is not None else "float32"
        out_shapes = get_op(node).infer(node, shapes, graph.initializers)
        for k, out in enumerate(node.outputs):
            if out:
                shape = out_shapes[k] if k < len(out_shapes) else None
                infos[out] = ValueInfo(out, shape, "bool" if k > 0 and node.op == "Dropout"
                                       else dtype)
    return infos


def infer_shapes(graph: Graph) -> Graph:
    """Pass: a copy of the graph with value_info (and output shapes) filled in."""
    g = graph.copy()
    infos = compute_shapes(g)
    g.value_info = {k: v for k, v in infos.items() if k not in g.initializers}
    for v in g.outputs:
        if v.name in infos:
            v.shape, v.dtype = infos[v.name].shape, infos[v.name].dtype
    return g
