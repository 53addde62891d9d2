"""Graph IR -> ONNX: `export(model_or_path, out_path)` and `graph_to_model(graph, opset)`.

The IR is ONNX already (opset 20 semantics), so export is mostly a copy: internal fused ops
are split back into standard ones, and forms that changed between opsets are written the way
the target opset wants them (Gelu is spelled out with Erf before opset 20, reductions take
`axes` as an attribute before opset 18). The batch dim is the symbolic `N`.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import helper

from .. import __version__
from ..errors import ConfigError
from ..graph.ir import Graph, Node
from ..graph.ops import fused_pool_node
from ..graph.shapes import infer_shapes
from .proto import array_to_tensor, make_attribute, value_info_to_proto

MIN_OPSET = 13
DEFAULT_OPSET = 17
#: attribute values that mean "nothing": dropped when the target opset lacks the attribute
_NEUTRAL = {"training_mode": 0, "saturate": 1, "start": 0, "allowzero": 0,
            "noop_with_empty_axes": 0}


def max_opset() -> int:
    """The newest opset the installed onnx package knows."""
    return int(onnx.defs.onnx_opset_version())


def export(model_or_path: Any, out_path: str | os.PathLike, opset: int = DEFAULT_OPSET,
           include_preprocessing: bool = False,
           input_shape: Sequence[int | None] | None = None) -> onnx.ModelProto:
    """Write a Module, a `.nnf` file (or an IR Graph) as an ONNX model file; return the model.

    The task, labels and preprocessing go into metadata_props as JSON strings; with
    include_preprocessing the standardization runs inside the graph instead (Sub, Div at the
    input), so the file is self-contained.
    """
    _check_out_path(out_path)  # before tracing: a bad path should not cost a whole export
    graph, manifest = source_graph(model_or_path, input_shape)
    _check_finite_weights(graph)
    pre = manifest.get("preprocessing")
    if include_preprocessing and pre:
        graph = prepend_preprocessing(graph, pre)
    meta = {k: manifest.get(k) for k in ("task", "labels", "metrics")
            if manifest.get(k) is not None}
    if pre:
        meta["preprocessing_in_graph" if include_preprocessing else "preprocessing"] = pre
    model = graph_to_model(graph, opset, meta)
    save_model(model, out_path)
    return model


def _check_out_path(out_path: str | os.PathLike) -> None:
    """ConfigError for an out_path that names a directory (os.replace would fail after tracing)."""
    path = os.fspath(out_path)
    if os.path.isdir(path) or path.endswith((os.sep, "/")):
        raise ConfigError(f"cannot write the ONNX model to '{path}': it is a directory; expected "
                          f"a file path such as '{os.path.join(path, 'model.onnx')}'")


def _check_finite_weights(graph: Graph) -> None:
    """ConfigError for NaN/Inf weights: a shared model file with them answers NaN for every row."""
    for name, arr in graph.initializers.items():
        a = np.asarray(arr)
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            bad = int(a.size - np.count_nonzero(np.isfinite(a)))
            raise ConfigError(f"cannot export a model with non-finite weights: {name!r} has "
                              f"{bad} NaN/Inf value(s); expected finite weights (did training "
                              f"diverge?)")


def source_graph(model_or_path: Any, input_shape: Sequence[int | None] | None = None
                 ) -> tuple[Graph, dict[str, Any]]:
    """The unoptimized graph of a Module, `.nnf`/`.onnx` path or Graph, and its manifest."""
    from ..graph.trace import trace  # noqa: PLC0415
    from ..nn.module import Module  # noqa: PLC0415

    obj = model_or_path
    if isinstance(obj, (str, os.PathLike)):
        path = os.fspath(obj)
        if path.lower().endswith(".onnx"):
            from .importer import load  # noqa: PLC0415
            obj = load(path)
        else:
            from ..io import load as load_nnf  # noqa: PLC0415
            obj = load_nnf(path)
    manifest = dict(getattr(obj, "manifest", None) or {})
    if isinstance(obj, Graph):
        return obj, manifest
    if not isinstance(obj, Module):
        raise ConfigError(f"expected an nnforge Module, a .nnf/.onnx path or a Graph to export, "
                          f"found {type(obj).__name__}")
    spec = (manifest.get("inputs") or [{}])[0]
    out_spec = (manifest.get("outputs") or [{}])[0]
    shape = spec.get("shape") if input_shape is None else (None, *input_shape)
    if shape is None and getattr(obj, "input_shape", None) is not None:
        shape = (None, *obj.input_shape)
    graph = trace(obj, shape, input_name=spec.get("name", "input"),
                  output_name=out_spec.get("name", "output"))
    return graph, manifest


def prepend_preprocessing(graph: Graph, config: Any) -> Graph:
    """Run the preprocessing (standardize / min-max steps) as graph nodes before the model."""
    from ..data.preprocessing import Pipeline, preprocessing_from_config  # noqa: PLC0415

    pre = preprocessing_from_config(config)
    steps = list(pre) if isinstance(pre, Pipeline) else [pre]
    g = graph.copy()
    x = g.inputs[0].name
    dtype = np.dtype(g.inputs[0].dtype or "float32")  # Sub/Div need both operands of one type
    nodes: list[Node] = []
    cur = x
    for i, step in enumerate(steps):
        kind = getattr(step, "type_name", type(step).__name__)
        if kind == "standardize":
            ops = (("Sub", step.mean), ("Div", step.scale))
        elif kind == "minmax":
            ops = (("Mul", step._scale), ("Add", step._offset))
        else:
            raise ConfigError(f"cannot put preprocessing step {kind!r} into the ONNX graph; "
                              f"expected standardize or minmax steps")
        for op, arr in ops:
            const = g.unique_name(f"preprocessing.{i}.{op.lower()}")
            g.initializers[const] = np.asarray(arr, dtype)
            out = g.unique_name(f"preprocessing.{i}/{op}")
            nodes.append(Node(op, [cur, const], [out], {}, out))
            cur = out
    g.rename_value(x, cur)  # the model now reads the preprocessed input
    g.nodes = nodes + g.nodes
    return g


def graph_to_model(graph: Graph, opset: int = DEFAULT_OPSET,
                   metadata: dict[str, Any] | None = None) -> onnx.ModelProto:
    """An ONNX ModelProto of the graph at the given opset; checked with full_check."""
    if isinstance(opset, np.integer):  # e.g. an opset read from a NumPy array or a config
        opset = int(opset)
    if not isinstance(opset, int) or isinstance(opset, bool) or \
            not MIN_OPSET <= opset <= max_opset():
        raise ConfigError(f"expected an opset from {MIN_OPSET} to {max_opset()}, found {opset!r}")
    g = infer_shapes(graph)
    info = g.value_info
    inits = dict(g.initializers)
    nodes: list[onnx.NodeProto] = []
    taken = set(inits) | set(g.value_info) | {o for n in g.nodes for o in n.outputs}

    def fresh(base: str) -> str:
        name, i = base, 0
        while name in taken:
            i += 1
            name = f"{base}_{i}"
        taken.add(name)
        return name

    def const(base: str, arr: Any) -> str:
        name = fresh(base)
        inits[name] = np.asarray(arr)
        return name

    node_names: set[str] = set()

    def emit(op: str, ins: list[str], outs: list[str], attrs: dict[str, Any], name: str) -> None:
        attributes = [make_attribute(op, opset, k, v) for k, v in sorted(attrs.items())]
        unique, i = name or op, 0
        while unique in node_names:
            i += 1
            unique = f"{name or op}_{i}"
        node_names.add(unique)
        node = helper.make_node(op, ins, outs, name=unique)
        node.attribute.extend(attributes)
        nodes.append(node)

    for n in g.nodes:
        for op, ins, outs, attrs, name in _standard_nodes(n, fresh):
            if op == "Gelu" and opset < 20:  # spelled out as 0.5 * x * (1 + erf(x / sqrt 2))
                dt = np.dtype(info[ins[0]].dtype if ins[0] in info else "float32").type
                d, e, a, m = (fresh(f"{name}/{s}") for s in ("div", "erf", "add", "mul"))
                emit("Div", [ins[0], const(f"{name}.sqrt2", dt(math.sqrt(2.0)))], [d], {}, d)
                emit("Erf", [d], [e], {}, e)
                emit("Add", [e, const(f"{name}.one", dt(1.0))], [a], {}, a)
                emit("Mul", [ins[0], a], [m], {}, m)
                emit("Mul", [m, const(f"{name}.half", dt(0.5))], outs, {}, name)
                continue
            if op in ("MaxPool", "AveragePool") and attrs.get("ceil_mode"):
                attrs = _explicit_ceil(op, attrs, info.get(ins[0]), info.get(outs[0]))
            emit(op, ins, outs, _adapt(op, attrs, opset, name, ins, inits), name)
    inputs = [value_info_to_proto(v.name, v.shape, v.dtype) for v in g.inputs]
    outputs = []
    for v in graph.outputs:  # the inferred shape, else the one the graph declares
        found = info.get(v.name)
        shape = found.shape if found is not None and found.shape is not None else v.shape
        outputs.append(value_info_to_proto(v.name, shape, found.dtype if found else v.dtype))
    used = {i for n in nodes for i in n.input}
    tensors = [array_to_tensor(k, a) for k, a in inits.items() if k in used]
    gp = helper.make_graph(nodes, g.name or "main", inputs, outputs, tensors)
    opset_id = helper.make_opsetid("", opset)
    model = helper.make_model(gp, opset_imports=[opset_id], producer_name="nnforge",
                              producer_version=__version__,
                              ir_version=helper.find_min_ir_version_for([opset_id]))
    if metadata:
        helper.set_model_props(model, {k: json.dumps(v) for k, v in metadata.items()})
    try:
        if any(not o.type.tensor_type.HasField("shape") for o in model.graph.output):
            _fill_output_types(model)
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ConfigError(f"the exported ONNX model does not pass onnx.checker: "
                          f"{str(exc).strip().splitlines()[0]}") from None
    return model


def _fill_output_types(model: onnx.ModelProto) -> None:
    """Outputs whose shape the IR could not tell get the one ONNX's shape inference finds."""
    inferred = onnx.shape_inference.infer_shapes(model).graph.output
    for out, found in zip(model.graph.output, inferred):
        if not out.type.tensor_type.HasField("shape"):
            if not found.type.tensor_type.HasField("shape"):
                raise ConfigError(f"cannot tell the rank of graph output {out.name!r}; expected "
                                  f"a graph whose output shapes can be inferred")
            out.type.CopyFrom(found.type)


_Std = tuple[str, list[str], list[str], dict[str, Any], str]


def _standard_nodes(n: Node, fresh: Any) -> list[_Std]:
    """Standard ONNX (op, inputs, outputs, attrs, name) for one IR node (fused ops split)."""
    if not n.domain:
        return [(n.op, list(n.inputs), list(n.outputs), dict(n.attrs), n.name)]
    if n.op not in ("FusedGemm", "FusedConv"):
        raise ConfigError(f"cannot export internal op {n.domain}.{n.op} (node {n.name!r})")
    drop = ("activation", "activation_alpha", "pool", "pool_kernel_shape", "pool_strides")
    attrs = {k: v for k, v in n.attrs.items() if k not in drop}
    out: list[_Std] = []
    y = fresh(f"{n.name}/{n.op[5:].lower()}")
    out.append((n.op[5:], list(n.inputs), [y], attrs, n.name))
    act = n.attrs.get("activation")
    pool = fused_pool_node(n)
    if act:
        z = fresh(f"{n.name}/{act.lower()}") if pool is not None else n.outputs[0]
        act_attrs = {"alpha": n.attrs.get("activation_alpha", 0.01)} if act == "LeakyRelu" else {}
        out.append((act, [y], [z], act_attrs, f"{n.name}/{act}"))
        y = z
    if pool is not None:
        out.append(("MaxPool", [y], [n.outputs[0]], dict(pool.attrs), pool.name))
    elif not act:
        out[-1] = (out[-1][0], out[-1][1], [n.outputs[0]], attrs, n.name)
    return out


def _explicit_ceil(op: str, attrs: dict[str, Any], x: Any, y: Any) -> dict[str, Any]:
    """A ceil_mode pool written as floor mode with longer end pads, where that is the same.

    ONNX's shape inference keeps a last window that starts beyond the input and the leading
    padding, which PyTorch, ONNX Runtime and nnforge drop; with explicit pads every reader
    agrees. Padding counts for nothing in MaxPool and in AveragePool without
    count_include_pad; where no window hangs over, ceil_mode changes nothing and goes;
    otherwise (or when the shapes are not known) it stays.
    """
    in_hw = None if x is None or x.shape is None else x.shape[2:]
    out_hw = None if y is None or y.shape is None else y.shape[2:]
    if in_hw is None or out_hw is None or not all(isinstance(d, int) for d in (*in_hw, *out_hw)):
        return attrs
    kernel, nd = list(attrs["kernel_shape"]), len(in_hw)
    strides = list(attrs.get("strides", [1] * nd))
    dilations = list(attrs.get("dilations", [1] * nd))
    pads = list(attrs.get("pads", [0] * (2 * nd)))
    floor = [(in_hw[i] + pads[i] + pads[nd + i] - dilations[i] * (kernel[i] - 1) - 1)
             // strides[i] + 1 for i in range(nd)]
    if floor == list(out_hw):  # no window hangs over: ceil_mode changes nothing here
        return {**attrs, "ceil_mode": 0}
    if op == "AveragePool" and attrs.get("count_include_pad", 0):
        return attrs
    for i in range(nd):
        reach = (out_hw[i] - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1
        pads[nd + i] = max(pads[nd + i], reach - in_hw[i] - pads[i])
    return {**attrs, "pads": pads, "ceil_mode": 0}


def _adapt(op: str, attrs: dict[str, Any], opset: int, name: str, ins: list[str],
           inits: dict[str, np.ndarray]) -> dict[str, Any]:
    """Attributes of one node rewritten for the target opset (may edit ins in place)."""
    schema = onnx.defs.get_schema(op, opset, "")
    if op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd") and opset < 18 \
            and len(ins) > 1 and ins[1]:
        axes = inits.get(ins[1])
        if axes is None:
            raise ConfigError(f"{op} {name!r}: opset {opset} needs constant axes")
        attrs["axes"] = [int(a) for a in np.asarray(axes).reshape(-1)]
        del ins[1:]
    if op == "Pad" and opset < 18 and len(ins) > 3 and ins[3]:
        raise ConfigError(f"Pad {name!r}: an axes input needs opset 18 or later, found {opset}")
    for key in list(attrs):
        if key not in schema.attributes:
            v = attrs.pop(key)
            if key == "dilations" and all(d == 1 for d in v) or _NEUTRAL.get(key, object()) == v:
                continue
            raise ConfigError(f"{op} {name!r}: attribute {key}={v!r} cannot be written at opset "
                              f"{opset}; expected a newer opset")
    return attrs


def save_model(model: onnx.ModelProto, path: str | os.PathLike) -> None:
    """Write the model atomically (temp file + rename), weights inline."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".nnforge-", suffix=".onnx.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(model.SerializeToString())
        # mkstemp makes the file owner-only; an exported model is meant to be shared
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise

