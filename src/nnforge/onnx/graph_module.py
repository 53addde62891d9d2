"""`GraphModule`: an imported inference graph as a layer, so it saves, loads and serves as `.nnf`.

An ONNX model is not a stack of nnforge layers, so it is kept as what it is: the graph IR.
The layer's config is the IR as JSON (nodes with ONNX names and attributes, input and output
specs, and the name, shape and dtype of every weight); the weights themselves are the layer's
arrays, so they go to `weights.safetensors` like any layer's. Float weights are Parameters
that do not require gradients (they count in `num_parameters`), the rest are buffers.

Tracing inlines the graph (a lowering registered on first use), so `InferenceSession` on a
`.nnf` holding a GraphModule runs exactly the imported graph, optimized like a native one.
Calling the layer runs the graph through a cached `InferenceSession`; it has no training mode.
`to("cuda")` moves the weights to the GPU like any layer's, and then both calling the layer
and `InferenceSession(layer)` run the graph there (backend "cupy"). Needs no `onnx` package:
only the IR.
"""

from __future__ import annotations

import math
import re
from typing import Any

import numpy as np

from .. import backend
from ..autograd.tensor import Tensor
from ..errors import ConfigError
from ..nn.module import Module, Parameter, register_layer

#: dtypes a weight may have in a GraphModule config
_DTYPES = ("float32", "float64", "float16", "int64", "int32", "int16", "int8", "uint8", "bool")
_MAX_WEIGHT_BYTES = 64 * 2**30  # a config asking for more is damaged, not a model


@register_layer
class GraphModule(Module):
    """A graph IR (e.g. an imported ONNX model) run as one inference-only layer."""

    def __init__(self, graph: Any) -> None:
        super().__init__()
        from ..graph.ir import Graph  # noqa: PLC0415 - keeps `import nnforge.nn` light

        if isinstance(graph, Graph):
            spec, arrays = graph_to_spec(graph), graph.initializers
        else:
            spec, arrays = check_spec(graph), None
        object.__setattr__(self, "_spec", spec)
        object.__setattr__(self, "_cache", None)
        for w in spec["weights"]:
            arr = (np.array(arrays[w["name"]], dtype=w["dtype"]) if arrays is not None
                   else np.zeros(w["shape"], w["dtype"]))  # filled by load_state_dict
            if arr.dtype.kind == "f":
                setattr(self, w["key"], Parameter(arr, requires_grad=False))
            else:
                self.register_buffer(w["key"], arr)
        # the graph's own tensor names, so a saved .nnf keeps the names clients send and read
        object.__setattr__(self, "input_name", spec["inputs"][0]["name"])
        object.__setattr__(self, "output_names", [v["name"] for v in spec["outputs"]])
        shape = spec["inputs"][0]["shape"]
        if shape and all(isinstance(d, int) for d in shape[1:]):
            object.__setattr__(self, "input_shape", tuple(shape[1:]))
        _register_lowering()
        self.eval()

    def get_config(self) -> dict[str, Any]:
        return {"graph": self._spec}

    @property
    def input_dtype(self) -> str:
        """The graph input's own dtype (int64 for an embedding's ids): what a saved `.nnf`
        records and what tracing gives the input (see _lower), not the weights' float dtype."""
        return self._spec["inputs"][0]["dtype"]

    def extra_repr(self) -> str:
        ops = sorted({n["op"] for n in self._spec["nodes"]})
        return f"{len(self._spec['nodes'])} nodes: {', '.join(ops)}"

    def to_graph(self) -> Any:
        """The IR Graph with the layer's current weights (NumPy arrays, wherever they live)."""
        from ..graph.ir import Graph, Node, ValueInfo  # noqa: PLC0415

        s = self._spec

        def info(v: dict[str, Any]) -> ValueInfo:
            shape = None if v["shape"] is None else tuple(v["shape"])
            return ValueInfo(v["name"], shape, v["dtype"])

        weights = {w["name"]: backend.to_numpy(self._array(w["key"])) for w in s["weights"]}
        nodes = [Node(n["op"], list(n["inputs"]), list(n["outputs"]), dict(n["attrs"]),
                      n["name"]) for n in s["nodes"]]
        return Graph(nodes, [info(v) for v in s["inputs"]], [info(v) for v in s["outputs"]],
                     weights, name=s["name"], opset=s["opset"])

    def _array(self, key: str) -> np.ndarray:
        value = getattr(self, key)
        return value.data if isinstance(value, Parameter) else value

    def forward(self, x: Any) -> Any:
        if self.training:
            raise ConfigError("GraphModule runs an imported inference graph and cannot be "
                              "trained; expected eval mode (call model.eval())")
        data = x.data if isinstance(x, Tensor) else x
        if not backend.is_device_array(data):
            data = np.asarray(data)
        ids = np.dtype(self.input_dtype)
        if ids.kind in "biu" and data.dtype.kind == "f":
            # float values from layers in front convert as the traced graph's Cast does
            # (_typed_input); the session itself refuses fractional ids fed to it directly
            data = data.astype(ids)
        device = backend.device_of(self)
        key = tuple(id(self._array(w["key"])) for w in self._spec["weights"])
        if self._cache is None or self._cache[0] != key:
            from ..runtime.session import InferenceSession  # noqa: PLC0415
            with backend.device_scope(device):  # the cupy plan runs on the current GPU
                session = InferenceSession(self.to_graph(), check_finite=False,
                                           backend="numpy" if device == "cpu" else "cupy")
            object.__setattr__(self, "_cache", (key, session))
        out = self._cache[1].run(data)
        # outputs come back on the host; a layer on a GPU answers there, as other layers do
        if isinstance(out, dict):
            return tuple(Tensor(backend.to_device(v, device)) for v in out.values())
        return Tensor(backend.to_device(out, device))

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> dict[str, list[str]]:
        object.__setattr__(self, "_cache", None)  # new weights: the cached plans are stale
        return super().load_state_dict(state, strict)

    def to(self, *args: Any, device: Any = None, dtype: Any = None) -> Module:
        """Move the weights to a device ('cpu', 'cuda', 'cuda:N') and/or cast the float ones
        (and the graph's float inputs and outputs) to a float dtype, as `Module.to` does."""
        super().to(*args, device=device, dtype=dtype)
        object.__setattr__(self, "_cache", None)  # plans hold the old weights
        cast = dtype if dtype is not None else next(
            (a for a in args if not backend.is_device_name(a)), None)
        if cast is not None and np.dtype(cast).kind == "f":
            name = np.dtype(cast).name

            def retype(v: dict[str, Any]) -> dict[str, Any]:
                floating = v["dtype"] in ("float16", "float32", "float64")
                return {**v, "dtype": name} if floating else v

            spec = dict(self._spec)
            for part in ("inputs", "outputs", "weights"):
                spec[part] = [retype(v) for v in spec[part]]
            object.__setattr__(self, "_spec", spec)
        return self


# -- the JSON form of the IR ------------------------------------------------------------------
def _key(name: str, taken: set[str]) -> str:
    base = "w_" + (re.sub(r"\W", "_", name) or "weight")
    key, i = base, 1
    while key in taken:
        key, i = f"{base}_{i}", i + 1
    taken.add(key)
    return key


def _jsonable(v: Any) -> Any:
    if isinstance(v, np.ndarray):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def graph_to_spec(graph: Any) -> dict[str, Any]:
    """The JSON-ready description of a Graph (weights by name, shape and dtype only)."""
    def info(v: Any) -> dict[str, Any]:
        shape = None if v.shape is None else [d if isinstance(d, (int, str)) else None
                                               for d in v.shape]
        return {"name": v.name, "shape": shape, "dtype": v.dtype}

    if any(n.domain for n in graph.nodes):
        raise ConfigError("a GraphModule holds standard ONNX ops only; expected an unoptimized "
                          "graph, found fused ops")
    taken: set[str] = set()
    return check_spec({
        "name": graph.name, "opset": graph.opset,
        "inputs": [info(v) for v in graph.inputs], "outputs": [info(v) for v in graph.outputs],
        "nodes": [{"op": n.op, "inputs": list(n.inputs), "outputs": list(n.outputs),
                   "attrs": {k: _jsonable(v) for k, v in n.attrs.items()}, "name": n.name}
                  for n in graph.nodes],
        "weights": [{"name": k, "key": _key(k, taken), "shape": list(a.shape),
                     "dtype": str(a.dtype)} for k, a in graph.initializers.items()]})


def _fail(what: str, found: Any) -> ConfigError:
    return ConfigError(f"GraphModule config: expected {what}, found {found!r:.80}")


def _names(v: Any, what: str, empty: bool = False) -> list[str]:
    if not isinstance(v, list) or not all(isinstance(s, str) and (empty or s) for s in v):
        raise _fail(what, v)
    return v


def _attr_ok(v: Any) -> bool:
    if isinstance(v, (bool, int, float, str)):
        return True
    return isinstance(v, list) and all(_attr_ok(x) for x in v)


def _value_spec(v: Any) -> dict[str, Any]:
    if not isinstance(v, dict) or not isinstance(v.get("name"), str) or v.get("dtype") not in \
            _DTYPES:
        raise _fail("a value {name, shape, dtype} of a supported dtype", v)
    shape = v.get("shape")
    if shape is not None and not (isinstance(shape, list) and all(
            d is None or isinstance(d, str) or (isinstance(d, int) and d >= 0) for d in shape)):
        raise _fail("a shape of ints, dim names or nulls", shape)
    return {"name": v["name"], "shape": shape, "dtype": v["dtype"]}


def check_spec(spec: Any) -> dict[str, Any]:
    """Validate a GraphModule config read from a file (never trusted): ConfigError if bad."""
    from ..graph.ops import OPS  # noqa: PLC0415

    if not isinstance(spec, dict):
        raise _fail("a graph object", spec)
    inputs = [_value_spec(v) for v in spec.get("inputs") or [None]]
    outputs = [_value_spec(v) for v in spec.get("outputs") or [None]]
    nodes = spec.get("nodes")
    if not isinstance(nodes, list):
        raise _fail("a list of nodes", nodes)
    for n in nodes:
        if not isinstance(n, dict) or OPS.get(n.get("op")) is None or OPS[n["op"]].domain:
            raise _fail("nodes with a standard ONNX op that nnforge supports", n)
        _names(n.get("inputs"), "node input names", empty=True)
        _names(n.get("outputs"), "node output names", empty=True)
        attrs = n.get("attrs")
        if not isinstance(n.get("name"), str) or not isinstance(attrs, dict) or not all(
                isinstance(k, str) and _attr_ok(v) for k, v in attrs.items()):
            raise _fail("node attributes of numbers, strings and lists", n)
    weights = spec.get("weights")
    if not isinstance(weights, list):
        raise _fail("a list of weights", weights)
    total, keys = 0, set()
    for w in weights:
        if not isinstance(w, dict) or not isinstance(w.get("name"), str) or w.get("dtype") not in \
                _DTYPES or not isinstance(w.get("key"), str) or not w["key"].startswith("w_") \
                or not w["key"].isidentifier() or w["key"] in keys:
            raise _fail("weights {name, key 'w_...', shape, dtype}", w)
        keys.add(w["key"])
        shape = w.get("shape")
        if not isinstance(shape, list) or not all(
                isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
            raise _fail("a weight shape of non-negative ints", shape)
        total += math.prod(shape) * np.dtype(w["dtype"]).itemsize
    if total > _MAX_WEIGHT_BYTES:
        raise _fail(f"weights of at most {_MAX_WEIGHT_BYTES} bytes", total)
    if not isinstance(spec.get("name"), str) or not isinstance(spec.get("opset"), int):
        raise _fail("a graph name and an integer opset", spec.get("name"))
    out = {"name": spec["name"], "opset": spec["opset"], "inputs": inputs, "outputs": outputs,
           "nodes": nodes, "weights": weights}
    _graph_of(out).validate()
    return out


def _graph_of(spec: dict[str, Any]) -> Any:
    """A weightless Graph of a spec, for validation (initializers as empty placeholders)."""
    from ..graph.ir import Graph, Node, ValueInfo  # noqa: PLC0415

    empty = np.zeros(0)
    return Graph([Node(n["op"], n["inputs"], n["outputs"], n["attrs"], n["name"])
                  for n in spec["nodes"]],
                 [ValueInfo(v["name"]) for v in spec["inputs"]],
                 [ValueInfo(v["name"]) for v in spec["outputs"]],
                 {w["name"]: empty for w in spec["weights"]})


# -- tracing ----------------------------------------------------------------------------------
def _register_lowering() -> None:
    from ..graph.trace import LOWERINGS  # noqa: PLC0415 - graph imports nn: not at import

    LOWERINGS.setdefault("GraphModule", _lower)


def _lower(layer: GraphModule, t: Any, path: str, x: str) -> str:
    """Inline the layer's graph into the tracer's, names prefixed with the layer's path."""
    from ..graph.ir import Node  # noqa: PLC0415
    from ..graph.shapes import follow_node  # noqa: PLC0415

    g = layer.to_graph()
    if len(g.inputs) != 1 or len(g.outputs) != 1:
        raise ConfigError(f"cannot trace GraphModule {path}: expected one input and one output, "
                          f"found {len(g.inputs)} and {len(g.outputs)}")
    prefix = f"{path}/"
    env = {g.inputs[0].name: _typed_input(t, x, g, prefix)}
    dims: dict[str, Any] = {}  # Reshape/Expand targets computed from Shape (fold.py writes them)
    for name, arr in g.initializers.items():
        env[name] = t.weight(prefix + name, arr)
    for n in g.nodes:
        outs = [prefix + o if o else "" for o in n.outputs]
        node = Node(n.op, [env[i] if i else "" for i in n.inputs], outs, dict(n.attrs),
                    prefix + (n.name or n.op))
        shapes = follow_node(node, [t.shapes.get(i) for i in node.inputs],
                             t.graph.initializers, dims)
        for k, (o, new) in enumerate(zip(n.outputs, outs)):
            if o:
                env[o] = new
                t.shapes[new] = shapes[k] if k < len(shapes) else None
        t.graph.nodes.append(node)
    return env[g.outputs[0].name]


def _typed_input(t: Any, x: str, g: Any, prefix: str) -> str:
    """x in the dtype the graph takes. The tracer gives a model's input the weights' float
    dtype; when x is that input, it takes the graph's own dtype instead, so that int64 ids
    stay integers end to end (float32 holds them exactly only up to 2**24). A value that
    other layers computed, or an input of an op-by-op trace (which types its inputs itself
    afterwards), is cast to an integer or bool dtype, as calling the layer converts its
    argument: Gather never sees float indices."""
    from ..autograd import function  # noqa: PLC0415
    from ..graph.ops_onnx import ONNX_DTYPES  # noqa: PLC0415

    dtype = g.inputs[0].dtype
    own = next((v for v in t.graph.inputs if v.name == x), None)
    if own is not None and function.RECORDER is None:
        own.dtype = dtype
        return x
    if np.dtype(dtype).kind == "f":
        return x  # float values from layers in front, in their dtype as before
    taken = {o for n in g.nodes for o in n.outputs} | set(g.initializers)
    name = f"{g.inputs[0].name}_cast"
    while name in taken:  # the graph's own values get the same prefix
        name += "_"
    to = next(k for k, v in ONNX_DTYPES.items() if v == np.dtype(dtype))
    return t.node("Cast", [x], prefix + name, to=to)
