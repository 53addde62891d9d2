"""A plain node-by-node interpreter of the IR: the oracle the pass tests compare against."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError
from .ir import Graph
from .ops import evaluate_node


def evaluate_graph(graph: Graph, feeds: dict[str, Any] | Any) -> list[np.ndarray]:
    """Run the graph on input arrays (a dict by input name, or one array); return outputs."""
    if not isinstance(feeds, dict):
        if len(graph.inputs) != 1:
            raise ConfigError(f"expected a dict of {len(graph.inputs)} inputs, found one array")
        feeds = {graph.inputs[0].name: feeds}
    env: dict[str, Any] = dict(graph.initializers)
    env.update({k: np.asarray(v) for k, v in feeds.items()})
    for node in graph.nodes:
        outs = evaluate_node(node, *(env[i] if i else None for i in node.inputs))
        for name, value in zip(node.outputs, outs):
            if name:
                env[name] = value
    return [env[v.name] for v in graph.outputs]
