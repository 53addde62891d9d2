"""Graph IR -> ONNX: `export(model_or_path, out_path)` and `graph_to_model(graph, opset)`.

The IR is ONNX already (opset 20 semantics), so export is mostly a copy: internal fused ops
are split back into standard ones, and forms that changed between opsets are written the way
the target opset wants them (Gelu is spelled out with Erf before opset 20, reductions take
`axes` as an attribute before opset 18). The batch dim is the symbolic `N`. The opset runs
from 13 to the newest that the installed onnx can check and the installed onnxruntime (if
any) can load (`opset_range`), so a written file always opens in the runtime beside it.
"""

from __future__ import annotations

import functools
import json
import math
import os
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import helper

from .. import __version__
from ..errors import ConfigError
from ..graph.ir import Graph, Node
from ..graph.ops import fused_pool_node
from ..graph.ops_onnx import split_sizes
from ..graph.shapes import infer_shapes
from ..io.atomic import atomic_file
from .proto import array_to_tensor, make_attribute, value_info_to_proto

MIN_OPSET = 13
DEFAULT_OPSET = 17
#: attribute values that mean "nothing": dropped when the target opset lacks the attribute
_NEUTRAL = {"training_mode": 0, "saturate": 1, "start": 0, "allowzero": 0,
            "noop_with_empty_axes": 0}


def max_opset() -> int:
    """The newest opset the installed onnx package knows."""
    return int(onnx.defs.onnx_opset_version())


@functools.lru_cache(maxsize=1)
def ort_max_opset() -> tuple[str, int] | None:
    """(version, newest opset it loads) of the installed onnxruntime; None when there is none.

    Found by loading a one-node model per opset, stamped the way `graph_to_model` stamps (its
    IR version included): newer onnx packages know opsets an older ONNX Runtime refuses.
    """
    try:
        import onnxruntime as ort  # noqa: PLC0415 - optional, and slow to import
    except ImportError:
        return None
    opts = ort.SessionOptions()
    opts.log_severity_level = 4  # the refusals are expected: nothing on stderr
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [x], [y])
    for opset in range(max_opset(), MIN_OPSET - 1, -1):
        ids = [helper.make_opsetid("", opset)]
        model = helper.make_model(graph, opset_imports=ids,
                                  ir_version=helper.find_min_ir_version_for(ids))
        try:
            ort.InferenceSession(model.SerializeToString(), opts,
                                 providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001, S112 - ORT's errors share no base class to name
            continue
        return ort.__version__, opset
    return ort.__version__, MIN_OPSET - 1


def opset_range() -> tuple[int, int, str]:
    """(lowest, highest, why that highest) of the opsets export writes on this machine.

    The highest is the newest the installed onnx package can check, and no newer than the
    installed ONNX Runtime can load: a file nnforge's own ORT backend (and an ORT server beside
    it) cannot open is refused at export rather than found broken at deployment.
    """
    high = max_opset()
    why = f"onnx {onnx.__version__} knows opsets up to {high}"
    ort_info = ort_max_opset()
    if ort_info is not None and ort_info[1] < high:
        high = ort_info[1]
        why = (f"the installed onnxruntime {ort_info[0]} loads opsets up to {high}, although "
               f"{why}; upgrade onnxruntime to export a newer opset")
    return MIN_OPSET, high, why


def check_opset(opset: Any) -> int:
    """The opset as an int, or ConfigError naming the range export supports here and why."""
    if isinstance(opset, np.integer):  # e.g. an opset read from a NumPy array or a config
        opset = int(opset)
    low, high, why = opset_range()
    if high < low:
        raise ConfigError(f"cannot export ONNX: expected opset {low} or later, and {why}")
    if not isinstance(opset, int) or isinstance(opset, bool) or not low <= opset <= high:
        reason = f" ({why})" if isinstance(opset, int) and opset > high else ""
        raise ConfigError(f"expected an opset from {low} to {high}, found {opset!r}{reason}")
    return opset


def export(model_or_path: Any, out_path: str | os.PathLike, opset: int = DEFAULT_OPSET,
           include_preprocessing: bool = False,
           input_shape: Sequence[Any] | None = None) -> onnx.ModelProto:
    """Write a Module, a `.nnf` file (or an IR Graph) as an ONNX model file; return the model.

    The task, labels and preprocessing go into metadata_props as JSON strings; with
    include_preprocessing the preprocessing runs inside the graph instead (Where(IsNaN(x),
    fill, x) for missing values, Sub and Div for standardization, at the input), so the file
    is self-contained.
    """
    _check_out_path(out_path)  # before tracing: a bad path should not cost a whole export
    opset = check_opset(opset)
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


#: op -> the inputs that hold a trained layer's parameters (weights, biases, statistics,
#: embedding tables): where NaN/Inf means training diverged
_PARAMETER_INPUTS = {"Gemm": (1, 2), "FusedGemm": (1, 2), "MatMul": (0, 1), "Conv": (1, 2),
                     "FusedConv": (1, 2), "ConvTranspose": (1, 2),
                     "BatchNormalization": (1, 2, 3, 4), "LayerNormalization": (1, 2),
                     "InstanceNormalization": (1, 2), "PRelu": (1,), "Gather": (0,)}


def _parameter_names(graph: Graph) -> set[str]:
    """Initializers that are trained parameters: the _PARAMETER_INPUTS of their ops, and the
    bias an Add puts on a MatMul (a Linear traced or exported as MatMul + Add)."""
    names = {n.inputs[k] for n in graph.nodes for k in _PARAMETER_INPUTS.get(n.op, ())
             if k < len(n.inputs)}
    producers = graph.producers()
    for n in graph.nodes:
        if n.op == "Add" and any(getattr(producers.get(i), "op", None) == "MatMul"
                                 for i in n.inputs):
            names.update(n.inputs)
    return {k for k in names if k in graph.initializers}


def _check_finite_weights(graph: Graph) -> None:
    """ConfigError for NaN anywhere in the weights, or +-inf in a layer's parameters: a shared
    model file with them answers NaN for every row.

    Infinities outside the parameters (see _parameter_names) are let through: a graph
    constant may hold -inf on purpose, as the fill value of a causal attention mask
    (Where(mask, -inf, a), or an additive 0/-inf mask), a ConstantOfShape value or a Clip
    bound, and such a model exports as it imported. NaN has no such use, so it is refused in
    every constant (a learnable scale or positional embedding used through Mul or Add)."""
    params = _parameter_names(graph)
    for name in sorted(graph.initializers):
        a = np.asarray(graph.initializers[name])
        if a.dtype.kind != "f":
            continue
        bad = int(a.size - np.count_nonzero(np.isfinite(a))) if name in params else \
            int(np.count_nonzero(np.isnan(a)))
        if bad:
            raise ConfigError(f"cannot export a model with non-finite weights: {name!r} has "
                              f"{bad} NaN/Inf value(s); expected finite weights (did training "
                              f"diverge?)")


def source_graph(model_or_path: Any, input_shape: Sequence[Any] | None = None
                 ) -> tuple[Graph, dict[str, Any]]:
    """The unoptimized graph of a Module, `.nnf`/`.onnx` path or Graph, and its manifest.

    input_shape: one sample's shape, or a list of them for a forward with several arguments.
    """
    from ..graph.trace import is_shape_list, trace  # noqa: PLC0415
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
    specs = manifest.get("inputs") or [{}]
    out_name = (manifest.get("outputs") or [{}])[0].get("name", "output")
    own = getattr(obj, "input_shape", None)
    # as InferenceSession traces (runtime/session.py): one shape per forward argument, from
    # input_shape, the manifest's input specs (a saved multi-input model) or the Module
    if input_shape is None and len(specs) > 1:
        shapes, names = [s.get("shape") for s in specs], [s.get("name") for s in specs]
    elif is_shape_list(input_shape) or (input_shape is None and is_shape_list(own)):
        shapes = [(None, *s) for s in (input_shape if input_shape is not None else own)]
        names = [s.get("name") for s in specs] if len(specs) == len(shapes) else None
    else:
        shape = specs[0].get("shape") if input_shape is None else (None, *input_shape)
        if shape is None and own is not None:
            shape = (None, *own)
        # an imported graph's input keeps its own dtype (int64 ids) in the trace itself
        return trace(obj, shape, input_name=specs[0].get("name", "input"),
                     output_name=out_name), manifest
    if names is not None and not all(names):
        names = None  # traced defaults: input_0, input_1, ...
    return trace(obj, shapes, input_name=names, output_name=out_name), manifest


def prepend_preprocessing(graph: Graph, config: Any) -> Graph:
    """Run the preprocessing (impute / standardize / min-max steps) as graph nodes before the
    model."""
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
        if kind == "impute":  # Where(IsNaN(x), fill, x): each missing value its feature's fill
            fill = g.unique_name(f"preprocessing.{i}.fill")
            g.initializers[fill] = np.asarray(step.statistics, dtype)
            isnan, out = g.unique_name(f"preprocessing.{i}/IsNaN"), \
                g.unique_name(f"preprocessing.{i}/Where")
            nodes += [Node("IsNaN", [cur], [isnan], {}, isnan),
                      Node("Where", [isnan, fill, cur], [out], {}, out)]
            cur = out
            continue
        if kind == "standardize":
            ops = (("Sub", step.mean), ("Div", step.scale))
        elif kind == "minmax":
            ops = (("Mul", step._scale), ("Add", step._offset))
        else:
            raise ConfigError(f"cannot put preprocessing step {kind!r} into the ONNX graph; "
                              f"expected impute, standardize or minmax steps")
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
    opset = check_opset(opset)
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
            if op == "Gelu" and opset < 20 and attrs.get("approximate", "none") == "tanh":
                dt = np.dtype(info[ins[0]].dtype if ins[0] in info else "float32").type
                _tanh_gelu(ins[0], outs[0], name, dt, emit, const, fresh)
                continue
            if op == "Gelu" and opset < 20:  # spelled out as 0.5 * x * (1 + erf(x / sqrt 2))
                dt = np.dtype(info[ins[0]].dtype if ins[0] in info else "float32").type
                d, e, a, m = (fresh(f"{name}/{s}") for s in ("div", "erf", "add", "mul"))
                emit("Div", [ins[0], const(f"{name}.sqrt2", dt(math.sqrt(2.0)))], [d], {}, d)
                emit("Erf", [d], [e], {}, e)
                emit("Add", [e, const(f"{name}.one", dt(1.0))], [a], {}, a)
                emit("Mul", [ins[0], a], [m], {}, m)
                emit("Mul", [m, const(f"{name}.half", dt(0.5))], outs, {}, name)
                continue
            if op == "LayerNormalization" and opset < 17:  # ONNX has it since opset 17
                dt = np.dtype(info[ins[0]].dtype if ins[0] in info else "float32").type
                x_info = info.get(ins[0])
                rank = None if x_info is None or x_info.shape is None else len(x_info.shape)
                _layer_norm_nodes(ins, outs[0], name, attrs, rank, dt, emit, const, fresh)
                continue
            if op == "HardSwish" and opset < 14:  # x * HardSigmoid(x; 1/6, 1/2), as defined
                gate = fresh(f"{name}/gate")
                emit("HardSigmoid", ins, [gate], {"alpha": 1.0 / 6.0, "beta": 0.5}, gate)
                emit("Mul", [ins[0], gate], outs, {}, name)
                continue
            if op in ("MaxPool", "AveragePool") and attrs.get("ceil_mode"):
                attrs, pre_pads = _explicit_ceil(op, attrs, info.get(ins[0]), info.get(outs[0]),
                                                 name)
                if pre_pads is not None:  # the padding the divisor counts, as real zeros
                    p = fresh(f"{name}/pad")
                    emit("Pad", [ins[0], const(f"{name}.pads", np.asarray(pre_pads, np.int64))],
                         [p], {}, p)
                    ins = [p]
            if op == "Split" and opset < 18 and "num_outputs" in attrs:
                attrs, ins = _split_sizes_input(attrs, ins, outs, info, name, const)
            if op == "Slice" and len(ins) > 4 and ins[2] in inits and ins[4] in inits:
                ends = _backward_slice_ends(inits[ins[2]], inits[ins[4]])
                if ends is not None:
                    ins = [*ins[:2], const(f"{name}.ends", ends), *ins[3:]]
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


def _split_sizes_input(attrs: dict[str, Any], ins: list[str], outs: list[str],
                       info: dict[str, Any], name: str, const: Any
                       ) -> tuple[dict[str, Any], list[str]]:
    """Split(num_outputs=k) (opset 18) before opset 18: the piece sizes as the `split` input
    (opset 13's form), from the input's size along the axis."""
    x = info.get(ins[0])
    shape = None if x is None else x.shape
    axis = int(attrs.get("axis", 0))
    dim = shape[axis] if shape is not None and -len(shape) <= axis < len(shape) else None
    if not isinstance(dim, int):
        raise ConfigError(f"Split {name!r}: num_outputs={attrs['num_outputs']} needs opset 18 "
                          f"when the size along axis {axis} is known only at run time (found "
                          f"input shape {shape}); expected opset=18 (--opset 18)")
    node = Node("Split", ins, outs, attrs, name)
    sizes = split_sizes(node, dim, None)
    attrs = {k: v for k, v in attrs.items() if k != "num_outputs"}
    return attrs, [ins[0], const(f"{name}.split", np.asarray(sizes, np.int64))]


def _tanh_gelu(x: str, out: str, name: str, dt: Any, emit: Any, const: Any, fresh: Any
               ) -> None:
    """Gelu(approximate='tanh') before opset 20, spelled out as PyTorch computes it:
    0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))."""
    sq, cube, poly, inner, th, cdf, half = (fresh(f"{name}/{s}") for s in (
        "sq", "cube", "poly", "inner", "tanh", "cdf", "half_x"))
    emit("Mul", [x, x], [sq], {}, sq)
    emit("Mul", [sq, x], [cube], {}, cube)
    emit("Mul", [cube, const(f"{name}.c", dt(0.044715))], [poly], {}, poly)
    emit("Add", [x, poly], [inner], {}, inner)
    scaled = fresh(f"{name}/scaled")
    emit("Mul", [inner, const(f"{name}.k", dt(math.sqrt(2.0 / math.pi)))], [scaled], {}, scaled)
    emit("Tanh", [scaled], [th], {}, th)
    emit("Add", [th, const(f"{name}.one", dt(1.0))], [cdf], {}, cdf)
    emit("Mul", [x, const(f"{name}.half", dt(0.5))], [half], {}, half)
    emit("Mul", [half, cdf], [out], {}, name)


def _layer_norm_nodes(ins: list[str], out: str, name: str, attrs: dict[str, Any],
                      rank: int | None, dt: Any, emit: Any, const: Any, fresh: Any) -> None:
    """LayerNormalization before opset 17, spelled out as torch's exporter writes it:
    (x - mean) / sqrt(mean((x - mean)^2) + eps) * scale + bias, means over axis.. (attribute
    axes, as ReduceMean takes them before opset 18)."""
    axis = int(attrs.get("axis", -1))
    if axis >= 0 and rank is not None:  # counted from the end: ReduceMean takes those too
        axis -= rank
    if axis >= 0:
        raise ConfigError(f"LayerNormalization {name!r}: axis {axis} of an input of unknown "
                          f"rank cannot be written before opset 17; expected opset 17 or later")
    red = {"axes": list(range(axis, 0)), "keepdims": 1}
    mean, xc, sq, var, shifted, std, y = (fresh(f"{name}/{s}") for s in (
        "mean", "sub", "sq", "var", "add_eps", "sqrt", "div"))
    emit("ReduceMean", [ins[0]], [mean], red, mean)
    emit("Sub", [ins[0], mean], [xc], {}, xc)
    emit("Mul", [xc, xc], [sq], {}, sq)
    emit("ReduceMean", [sq], [var], red, var)
    emit("Add", [var, const(f"{name}.eps", dt(attrs.get("epsilon", 1e-5)))], [shifted], {},
         shifted)
    emit("Sqrt", [shifted], [std], {}, std)
    emit("Div", [xc, std], [y], {}, y)
    has_bias = len(ins) > 2 and ins[2]
    scaled = fresh(f"{name}/scaled") if has_bias else out
    emit("Mul", [y, ins[1]], [scaled], {}, scaled if has_bias else name)
    if has_bias:
        emit("Add", [scaled, ins[2]], [out], {}, name)


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


def _explicit_ceil(op: str, attrs: dict[str, Any], x: Any, y: Any, name: str = ""
                   ) -> tuple[dict[str, Any], list[int] | None]:
    """A ceil_mode pool written as floor mode with longer end pads, where that is the same,
    and the (N, C, H, W) pads of a Pad node to put before it (None: no Pad node).

    ONNX's shape inference keeps a last window that starts beyond the input and the leading
    padding, which PyTorch, ONNX Runtime and nnforge drop; and readers have disagreed on the
    divisor of a window hanging over the end with count_include_pad (ONNX Runtime before 1.16
    divided by the whole kernel, onnxruntime#16203; PyTorch and nnforge count the input and
    the explicit padding only). With explicit pads every reader agrees: padding counts
    for nothing in MaxPool and in AveragePool without count_include_pad, and with it the
    explicit padding becomes real zeros (a Pad node) that an AveragePool without
    count_include_pad counts while ignoring the overhang. Where no window hangs over,
    ceil_mode changes nothing and goes; when the shapes are not known it stays. ONNX Runtime
    refuses pads as long as the (undilated) kernel, which a dilated window's overhang can
    need: ceil_mode stays then, unless ONNX's reading would keep a window nnforge drops.
    """
    original = attrs
    in_hw = None if x is None or x.shape is None else x.shape[2:]
    out_hw = None if y is None or y.shape is None else y.shape[2:]
    if in_hw is None or out_hw is None or not all(isinstance(d, int) for d in (*in_hw, *out_hw)):
        return attrs, None
    kernel, nd = list(attrs["kernel_shape"]), len(in_hw)
    strides = list(attrs.get("strides", [1] * nd))
    dilations = list(attrs.get("dilations", [1] * nd))
    pads = list(attrs.get("pads", [0] * (2 * nd)))
    spans = [in_hw[i] + pads[i] + pads[nd + i] - dilations[i] * (kernel[i] - 1) - 1
             for i in range(nd)]
    floor = [spans[i] // strides[i] + 1 for i in range(nd)]
    if floor == list(out_hw):  # no window hangs over: ceil_mode changes nothing here
        return {**attrs, "ceil_mode": 0}, None
    pre = None
    if op == "AveragePool" and attrs.get("count_include_pad", 0):
        if any(pads):
            pre = [0, 0, *pads[:nd], 0, 0, *pads[nd:]]
        in_hw = [in_hw[i] + pads[i] + pads[nd + i] for i in range(nd)]
        pads = [0] * (2 * nd)
        attrs = {**attrs, "count_include_pad": 0}
    for i in range(nd):
        reach = (out_hw[i] - 1) * strides[i] + dilations[i] * (kernel[i] - 1) + 1
        pads[nd + i] = max(pads[nd + i], reach - in_hw[i] - pads[i])
    if any(pads[nd + i] >= kernel[i] for i in range(nd)):
        if [-(-spans[i] // strides[i]) + 1 for i in range(nd)] == list(out_hw):
            return original, None  # every window ONNX counts is one nnforge keeps
        raise ConfigError(f"{op} {name!r}: ceil_mode with dilations {dilations} on input "
                          f"{tuple(x.shape[2:])} needs end pads {pads[nd:]}, not shorter than "
                          f"the kernel {kernel}, which ONNX Runtime refuses, and ceil_mode "
                          f"itself would keep a window nnforge drops; expected ceil_mode=0 or "
                          f"no dilation")
    return {**attrs, "pads": pads, "ceil_mode": 0}, pre


def _backward_slice_ends(ends: np.ndarray, steps: np.ndarray) -> np.ndarray | None:
    """Slice ends with INT_MAX under a negative step written as INT64_MIN (None: none there).

    nnforge reads such an end as ONNX Runtime does, "to the first element"; the ONNX spec
    and its shape inference clamp it to the last one (an empty slice). INT64_MIN means the
    first element to every reader.
    """
    e = np.asarray(ends, np.int64).reshape(-1)
    k = np.asarray(steps, np.int64).reshape(-1)
    if e.shape != k.shape:
        return None
    hit = (k < 0) & ((e == 2**31 - 1) | (e == 2**63 - 1))
    return np.where(hit, np.int64(-2**63), e) if hit.any() else None


def _adapt(op: str, attrs: dict[str, Any], opset: int, name: str, ins: list[str],
           inits: dict[str, np.ndarray]) -> dict[str, Any]:
    """Attributes of one node rewritten for the target opset (may edit ins in place)."""
    schema = onnx.defs.get_schema(op, opset, "")
    if op in ("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2") and opset < 18 \
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
    """Write the model atomically (temp file + rename, see io/atomic.py), weights inline."""
    with atomic_file(path, "wb") as f:
        f.write(model.SerializeToString())
