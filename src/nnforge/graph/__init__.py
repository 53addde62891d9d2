"""The inference graph: IR, tracing from a Module, optimization passes, reference evaluation."""

from .ir import INTERNAL_DOMAIN, OPSET, Graph, Node, ValueInfo
from .ops import OPS, evaluate_node
from .passes import LEVELS, PASSES, optimize
from .reference import evaluate_graph
from .shapes import compute_shapes, infer_shapes
from .trace import LOWERINGS, guess_input_shape, trace

__all__ = ["INTERNAL_DOMAIN", "LEVELS", "LOWERINGS", "OPS", "OPSET", "PASSES", "Graph", "Node",
           "ValueInfo", "compute_shapes", "evaluate_graph", "evaluate_node", "guess_input_shape",
           "infer_shapes", "optimize", "trace"]
