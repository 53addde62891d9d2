"""ONNX -> graph IR: read and check a model file, list what is unsupported, normalize the graph.

The IR follows ONNX opset 20; models from opset 13 on are rewritten into that form (the
reductions' `axes` attribute becomes an input). The model's metadata_props (`task`, `labels`,
`preprocessing`, JSON-encoded, as `nnforge.onnx.export` writes them) become `graph.manifest`,
which `InferenceSession` reads like a `.nnf` manifest.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any

import numpy as np
import onnx
from google.protobuf.message import DecodeError

from ..errors import ConfigError, ModelFileError, NNForgeError, ShapeError
from ..graph.ir import OPSET, Graph, Node, ValueInfo
from ..graph.ops import OPS
from ..graph.ops_onnx import ONNX_DTYPES, constant_value
from ..graph.passes import eliminate_dead_code
from ..graph.shapes import compute_shapes, infer_shapes
from .batch import fixed_batch, free_batch, reexport_hint
from .fold import normalize
from .proto import (
    attribute_value,
    check_external_files,
    tensor_to_array,
    value_info_from_proto,
)

MIN_OPSET = 13
#: the newest opset the installed onnx package defines: ops of a later one have no schema to
#: check them against, and an opset no release defines (999) is a damaged or forged file
MAX_OPSET = onnx.defs.onnx_opset_version()
_DOMAINS = ("", "ai.onnx")
#: reductions whose axes moved from an attribute to an input at opset 18
_AXES_INPUT_SINCE_18 = {"ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2"}
#: attributes the IR has no use for (they would not exist at every export opset)
_IGNORED_ATTRS = {"BatchNormalization": ("momentum", "training_mode", "spatial"),
                  "Cast": ("saturate",), "Dropout": ("seed",), "MaxPool": ("storage_order",),
                  # the precision of the statistics: nnforge keeps them in the input's type
                  "LayerNormalization": ("stash_type",)}


def load(path: str | os.PathLike) -> Graph:
    """Read an .onnx file into the graph IR (manifest from its metadata on `graph.manifest`)."""
    path = os.fspath(path)
    model = read_model(path)
    return graph_from_model(model, os.path.dirname(os.path.abspath(path)), path)


def read_model(path: str) -> onnx.ModelProto:
    """Parse and check the protobuf (external data is not loaded here), or ModelFileError."""
    if not os.path.isfile(path):
        raise ModelFileError(f"cannot open '{path}': expected an ONNX model file, found no file")
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] == b"PK\x03\x04":  # the protobuf parser would only say "wire format corrupt"
        raise ModelFileError(f"'{path}' is an nnforge model file (a zip archive), not an ONNX "
                             f"model: load it with nnforge.load or nnforge.InferenceSession, or "
                             f"use it with 'nnforge info|predict|serve' as it is; 'nnforge "
                             f"import' takes .onnx files")
    try:
        model = onnx.ModelProto.FromString(data)
    except DecodeError as exc:
        raise ModelFileError(f"'{path}' is not a readable ONNX model (truncated or damaged: "
                             f"{exc})") from None
    if not model.HasField("graph") or not model.opset_import:
        raise ModelFileError(f"'{path}' is not an ONNX model: expected a graph and an opset "
                             f"import, found none (truncated or not ONNX)")
    check_external_files(model, os.path.dirname(os.path.abspath(path)))
    try:  # given the path, the checker finds external data beside the model
        onnx.checker.check_model(path)
    except (onnx.checker.ValidationError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelFileError(f"'{path}' is not a valid ONNX model (truncated or damaged?): "
                             f"{first}") from None
    return model


def graph_from_model(model: onnx.ModelProto, base_dir: str = ".", source: str = "<model>"
                     ) -> Graph:
    """Convert a ModelProto (external data read from base_dir) into a normalized IR Graph."""
    opset = next((o.version for o in model.opset_import if o.domain in _DOMAINS), None)
    if opset is None or opset < MIN_OPSET:
        raise ConfigError(f"'{source}' uses ONNX opset {opset}; expected opset {MIN_OPSET} or "
                          f"later (re-export it with opset_version={MIN_OPSET} or higher)")
    if opset > MAX_OPSET:
        raise ConfigError(f"'{source}' uses ONNX opset {opset}; expected opset {MAX_OPSET} or "
                          f"earlier (the newest the installed onnx {onnx.__version__} knows: "
                          f"re-export with a lower opset_version, or upgrade onnx)")
    gp = model.graph
    used = {i for n in gp.node for i in n.input} | {v.name for v in gp.output}
    unsupported = [_unsupported(n, opset, i, used) for i, n in enumerate(gp.node)]
    missing = [u for u in unsupported if u]
    if missing:
        raise ConfigError(f"'{source}' uses {len(missing)} operator(s) nnforge does not support: "
                          f"{'; '.join(missing)}")
    inits = {t.name: tensor_to_array(t, base_dir) for t in gp.initializer}
    inputs = [value_info_from_proto(v) for v in gp.input if v.name not in inits]
    outputs = [value_info_from_proto(v) for v in gp.output]
    nodes: list[Node] = []
    names: set[str] = set()
    for i, proto in enumerate(gp.node):
        name = proto.name if proto.name and proto.name not in names else f"{proto.op_type}_{i}"
        names.add(name)
        attrs = {a.name: attribute_value(a, base_dir, name) for a in proto.attribute}
        node = Node(proto.op_type, list(proto.input), list(proto.output), attrs, name)
        if node.op == "Constant":
            inits[node.outputs[0]] = np.asarray(constant_value(node))
            continue
        nodes.append(_upgrade(node, opset, inits))
    graph = Graph(nodes, _batch_dim(inputs, outputs), outputs, inits, name=gp.name or "main",
                  opset=OPSET)
    declared = {v.name: v.shape for v in outputs}
    size, why = fixed_batch(graph), ""
    try:
        graph.validate()
        freed = None
        if size is not None:
            freed, why = free_batch(graph, size, _normalized)
        graph = freed if freed is not None else _normalized(graph, None)
    except ShapeError as exc:
        shapes = ", ".join(str(v) for v in graph.inputs)
        raise ShapeError(f"'{source}': the graph inputs ({shapes}) do not fit the graph: "
                         f"{exc}") from None
    except ConfigError as exc:
        raise ConfigError(f"'{source}': {exc}") from None
    for v in graph.outputs:  # what inference cannot tell (e.g. Squeeze of all 1s), the file can
        v.shape = _merge_shape(v.shape, declared.get(v.name))
    check_compilable(graph, source)
    graph.manifest = _manifest(model, graph, source, opset)  # type: ignore[attr-defined]
    if size is not None:
        # "note" ends the error of a run with another batch size (runtime/session.py)
        graph.manifest["onnx"]["fixed_batch"] = {
            "size": size, "freed": not why,
            "note": f"{reexport_hint(size)} (nnforge cannot free it: {why})" if why else ""}
        if not why:
            # once per file (Python shows a warning once per message and place)
            warnings.warn(f"'{source}' fixes the batch size at {size}; nnforge runs it on "
                          f"any number of rows (its graph keeps the rows independent)",
                          UserWarning, stacklevel=3)
    return graph


def _merge_shape(inferred: Any, declared: Any) -> Any:
    """The inferred shape, its unknown dims (None) taken from the file's declared sizes (an
    exporter's names for them, "Reshapeout_dim_2", say nothing)."""
    if inferred is None or declared is None or len(inferred) != len(declared):
        return inferred if inferred is not None else declared
    return tuple(e if d is None and isinstance(e, int) else d for d, e in zip(inferred, declared))


#: the size every free input dim gets when check_compilable probes a graph: divisible by
#: 1..16, so that reshapes into heads or patches of a dynamic axis come out whole
_PROBE_DIM = 720720


def check_compilable(graph: Graph, source: str) -> None:
    """ConfigError, at import, when some value's shape stays unknown for concrete input sizes:
    compiling a plan (runtime/plan.py) needs every shape, and a file that imports must not
    fail on its first run. Sizes the graph refuses (a ShapeError) are left to run time."""
    if any(v.shape is None for v in graph.inputs):
        return
    probe = {v.name: tuple(d if isinstance(d, int) else _PROBE_DIM for d in v.shape)
             for v in graph.inputs}
    try:
        infos = compute_shapes(graph, probe)
    except (NNForgeError, ValueError, IndexError, TypeError):
        return
    for node in graph.nodes:
        for out in node.outputs:
            shape = infos[out].shape if out in infos else None
            if out and (shape is None or not all(isinstance(d, int) for d in shape)):
                raise ConfigError(
                    f"'{source}': the shape of {out!r} ({node.op} node {node.name!r}) cannot be "
                    f"inferred from the input sizes, found {shape}; expected shapes that follow "
                    f"from the inputs' (nnforge compiles every shape before a run: export the "
                    f"model with static shapes for that part, or run it with "
                    f"backend='onnxruntime')")


def _normalized(graph: Graph, fixed: int | None) -> Graph:
    """Every import pass (see fold.normalize), then the fusions that need the whole graph."""
    return infer_shapes(eliminate_dead_code(fuse_tanh_gelu(normalize(graph, fixed))))


def _unsupported(node: onnx.NodeProto, opset: int, index: int, used: set[str]) -> str:
    """Why a node cannot be imported ('' when it can); unnamed nodes go by op and index.

    used: the values some node or graph output reads (an output nobody reads is dropped)."""
    name = node.name or f"{node.op_type}_{index}"
    where = f"{node.op_type} (node {name!r})"
    if node.domain not in _DOMAINS:
        return f"{node.domain}.{node.op_type} (node {name!r})"
    d = OPS.get(node.op_type)
    if d is None or d.domain:
        return where
    attrs = {a.name: a for a in node.attribute}

    def ints(key: str) -> list[int]:
        return list(attrs[key].ints) if key in attrs else []

    op = node.op_type
    if op in ("Conv", "MaxPool", "AveragePool") and "kernel_shape" in attrs and \
            len(ints("kernel_shape")) not in (1, 2):  # 1-D runs as 2-D (fold.lift_1d)
        return f"{where} with a {len(ints('kernel_shape'))}-D kernel (1-D and 2-D only)"
    mode = attrs["auto_pad"].s.decode() if "auto_pad" in attrs else "NOTSET"
    if op in ("Conv", "MaxPool", "AveragePool") and mode.startswith("SAME") and \
            any(d != 1 for d in ints("dilations")):
        # the spec dilates the kernel before sizing the pads; ONNX Runtime refuses this in
        # Conv and sizes pooling pads from the undilated kernel, so the model means two things
        return (f"{where} with auto_pad={mode} and dilations {ints('dilations')} (ONNX Runtime "
                f"computes other pads than the ONNX spec; expected explicit pads)")
    if op == "MaxPool" and len(node.output) > 1 and node.output[1] in used:
        return f"{where} with an Indices output"
    if op == "BatchNormalization" and ("training_mode" in attrs and attrs["training_mode"].i):
        return f"{where} in training mode"
    if op == "LayerNormalization" and any(o and o in used for o in node.output[1:]):
        return f"{where} with Mean/InvStdDev outputs (training only; expected output Y alone)"
    if op == "Gelu" and "approximate" in attrs and attrs["approximate"].s not in (b"none",
                                                                                  b"tanh"):
        return f"{where} with approximate={attrs['approximate'].s.decode()!r}"
    if op == "Cast" and attrs["to"].i not in ONNX_DTYPES:
        to = attrs["to"].i
        kind = onnx.TensorProto.DataType.Name(to) if to in onnx.TensorProto.DataType.values() \
            else "an unknown type"
        return f"{where} to {kind} (ONNX type {to}; nnforge holds {_CAST_TARGETS})"
    if op == "Constant" and not {"value", "value_float", "value_floats", "value_int",
                                 "value_ints"} & set(attrs):
        return f"{where} holding {sorted(attrs)}"
    return ""


_CAST_TARGETS = ", ".join(onnx.TensorProto.DataType.Name(t) for t in sorted(ONNX_DTYPES))


def _upgrade(node: Node, opset: int, inits: dict[str, np.ndarray]) -> Node:
    """Rewrite an older opset's form of the node into the IR's (opset 20) form."""
    for key in _IGNORED_ATTRS.get(node.op, ()):
        node.attrs.pop(key, None)
    if node.op in _AXES_INPUT_SINCE_18 and opset < 18 and "axes" in node.attrs:
        name = f"{node.name}.axes"
        while name in inits:
            name += "_"
        inits[name] = np.asarray(node.attrs.pop("axes"), np.int64)
        node.inputs = [node.inputs[0], name]
    return node


def _batch_dim(inputs: list[ValueInfo], outputs: list[ValueInfo]) -> list[ValueInfo]:
    """Name the inputs' leading dynamic dim "N" (and the same dim param in the outputs)."""
    if not inputs or not inputs[0].shape or isinstance(inputs[0].shape[0], int):
        return inputs
    old = inputs[0].shape[0]
    for v in (*inputs, *outputs):
        if v.shape and (v.shape[0] == old or v.shape[0] is None):
            v.shape = ("N", *v.shape[1:])
    return inputs


def _json_prop(props: dict[str, str], key: str, source: str) -> Any:
    if key not in props:
        return None
    try:
        return json.loads(props[key])
    except ValueError:
        if key == "task":  # a plain string written by another tool
            return props[key]
        raise ModelFileError(f"'{source}': metadata {key!r} must be JSON, found "
                             f"{props[key]!r:.60}") from None


def _manifest(model: onnx.ModelProto, graph: Graph, source: str, opset: int) -> dict[str, Any]:
    """The `.nnf`-style manifest of an imported model, from its metadata_props."""
    from ..io.model_file import TASKS  # noqa: PLC0415 - io is not needed for the graph itself

    props = {p.key: p.value for p in model.metadata_props}
    task = _json_prop(props, "task", source)
    if task is not None and task not in TASKS:
        raise ModelFileError(f"'{source}': metadata 'task' must be one of {list(TASKS)}, found "
                             f"{task!r}")
    labels = _json_prop(props, "labels", source)
    if labels is not None and not isinstance(labels, list):
        raise ModelFileError(f"'{source}': metadata 'labels' must be a JSON list, found "
                             f"{labels!r:.60}")

    def spec(v: ValueInfo) -> dict[str, Any]:
        shape = None if v.shape is None else [d if isinstance(d, int) else None for d in v.shape]
        return {"name": v.name, "shape": shape, "dtype": v.dtype}

    return {"format": "onnx", "task": task, "labels": labels,
            "preprocessing": _json_prop(props, "preprocessing", source),
            "metrics": _json_prop(props, "metrics", source),
            "inputs": [spec(v) for v in graph.inputs], "outputs": [spec(v) for v in graph.outputs],
            "onnx": {"path": source, "opset": opset, "ir_version": model.ir_version,
                     "producer": f"{model.producer_name} {model.producer_version}".strip(),
                     "metadata": props}}


# -- tanh GELU ----------------------------------------------------------------------------------
#: elementwise ops a spelled-out tanh GELU is built from (besides its one Tanh)
_GELU_ARITH = {"Mul": np.multiply, "Add": np.add, "Sub": np.subtract, "Div": np.divide,
               "Pow": np.power}
_GELU_PROBE = np.linspace(-6.0, 6.0, 97)


def fuse_tanh_gelu(graph: Graph) -> Graph:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), spelled out in Mul/Add/Pow/Tanh nodes
    in any order (PyTorch's exporter before opset 20, nnforge's, or an opset-20 Gelu that
    the import passes expanded) -> one Gelu(approximate='tanh'), which runs in one kernel.

    A candidate is the nodes around one Tanh whose intermediate values nobody else reads,
    with one outside input x; it is fused when it computes the formula on probe values."""
    g = graph.copy()
    producers, consumers = g.producers(), g.consumers()
    outputs = set(g.output_names)

    def scalar(v: str) -> bool:
        a = g.initializers.get(v)
        return a is not None and a.size == 1 and a.dtype.kind == "f"

    def private(v: str) -> Node | None:
        """The elementwise producer of v when v is read once and is no graph output."""
        p = producers.get(v)
        if (p is None or p.op not in _GELU_ARITH or v in outputs or len(p.outputs) != 1
                or len(consumers.get(v, [])) != 1):
            return None
        return p

    def walk(v: str, region: dict[int, Node], leaves: set[str]) -> None:
        if scalar(v):
            return
        p = private(v)
        if p is None:
            leaves.add(v)
            return
        region[id(p)] = p
        for i in p.inputs:
            walk(i, region, leaves)

    dead: set[int] = set()
    replace: dict[int, Node] = {}
    for tanh in [n for n in g.nodes if n.op == "Tanh"]:
        region: dict[int, Node] = {id(tanh): tanh}
        leaves: set[str] = set()
        walk(tanh.inputs[0], region, leaves)
        if len(leaves) != 1 or id(tanh) in dead:
            continue
        x, cur = next(iter(leaves)), tanh
        for _ in range(4):  # 1 + t, then the products with x and 0.5 in some order
            users = consumers.get(cur.outputs[0], [])
            if cur.outputs[0] in outputs or len(users) != 1 or users[0].op not in _GELU_ARITH:
                break
            cur = users[0]
            region[id(cur)] = cur
            for i in cur.inputs:
                if i != x and (i not in {o for n in region.values() for o in n.outputs}):
                    walk(i, region, leaves)
            if leaves != {x}:
                break
            if _computes_tanh_gelu(g, region, x, cur.outputs[0]):
                dead.update(region)
                replace[id(cur)] = Node("Gelu", [x], list(cur.outputs), {"approximate": "tanh"},
                                        cur.name or tanh.name or "gelu")
                break
    g.nodes = [replace.get(id(n), n) for n in g.nodes if id(n) not in dead or id(n) in replace]
    return g


def _computes_tanh_gelu(g: Graph, region: dict[int, Node], x: str, out: str) -> bool:
    """Whether the region's nodes, evaluated in graph order on probe values of x, give the
    tanh GELU of them at `out`."""
    vals: dict[str, Any] = {x: _GELU_PROBE}
    with np.errstate(all="ignore"):
        for n in (n for n in g.nodes if id(n) in region):
            args = [vals[i] if i in vals else g.initializers[i].astype(np.float64).reshape(())
                    for i in n.inputs if i]
            if any(a is None for a in args) or len(args) != (1 if n.op == "Tanh" else 2):
                return False
            vals[n.outputs[0]] = np.tanh(args[0]) if n.op == "Tanh" else _GELU_ARITH[n.op](*args)
    got, p = vals.get(out), _GELU_PROBE
    want = 0.5 * p * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (p + 0.044715 * p ** 3)))
    return got is not None and np.shape(got) == p.shape and bool(
        np.allclose(got, want, rtol=1e-5, atol=1e-6))
