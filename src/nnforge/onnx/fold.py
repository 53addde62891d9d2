"""Import-time passes that turn an ONNX graph into one the NumPy runtime can compile.

* `fold_shapes`: exporters compute Reshape targets at run time from `Shape` (Shape -> Gather ->
  Unsqueeze -> Concat -> Reshape). Every dim but the batch is static, so the chain is evaluated
  here on symbolic values (ints, a dim name such as "N", or None for unknown), and the Reshape
  gets a constant target where a batch dim becomes 0 (copy the input's dim) or -1. Nodes whose
  inputs are all constant are folded into initializers on the way, and `auto_pad` SAME becomes
  explicit pads.
* `fuse_gelu`: the erf formula exporters build for GELU (Div, Erf, Add, Mul, Mul) -> one Gelu.
* `expand_tanh_gelu`: Gelu(approximate='tanh') (opset 20+) -> its formula in Mul, Add, Tanh.
* `decompose_gemm`: a Gemm whose B or C is computed at run time -> MatMul, Mul, Add (the Gemm
  kernel prepares B and C once, at compile time).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..graph.ir import Graph, Node, Shape
from ..graph.ops import evaluate_node, lift_1d_node
from ..graph.passes import _fold_too_big, eliminate_dead_code, fold_budget, fold_output_size
from ..graph.shapes import infer_node, infer_shapes

#: ops evaluated symbolically on small integer vectors (shape arithmetic)
_SYMBOLIC = {"Shape", "Gather", "Unsqueeze", "Squeeze", "Concat", "Cast", "Identity", "Slice",
             "Add", "Sub", "Mul", "Div", "ReduceProd", "Reshape", "Equal", "Where"}
_MAX_SYMBOLIC = 64  # longer integer vectors are data, not shapes


def normalize(graph: Graph, fixed_batch: int | None = None) -> Graph:
    """All import-time passes, then dead-code elimination and shape inference.

    fixed_batch: the batch size a file fixed and the importer freed (its inputs' leading dim
    is "N" now); Reshape targets that copy it (torch writes [5, -1] for x.view(x.size(0), -1))
    then copy the batch dim instead."""
    g = drop_unused_outputs(graph)
    g = lift_1d(g)
    g = expand_tanh_gelu(g)  # first, so that a constant input folds like any other
    g = fold_shapes(g, fixed_batch)
    _drop_allowzero(g)
    g = fuse_gelu(g)
    g = decompose_gemm(g)
    g = eliminate_dead_code(g)
    require_constant_weights(g)
    return infer_shapes(g)


#: ops whose results depend on how many outputs they have: Split's count sets the piece
#: sizes (`a, _ = x.chunk(2)` reads one half); the other multi-output ops of the op table
#: (Dropout's mask, MaxPool's indices, BatchNormalization's and LayerNormalization's training
#: statistics) compute their first output alone, whatever follows it
OUTPUT_COUNT_MATTERS = frozenset({"Split"})


def drop_unused_outputs(graph: Graph) -> Graph:
    """Forget optional outputs nobody reads (Dropout's mask, MaxPool's indices, ...)."""
    g = graph.copy()
    used = {i for n in g.nodes for i in n.inputs} | set(g.output_names)
    for n in g.nodes:
        if n.op in OUTPUT_COUNT_MATTERS:
            continue  # unused pieces keep a name: the plan gives them a short-lived buffer
        while len(n.outputs) > 1 and (not n.outputs[-1] or n.outputs[-1] not in used):
            n.outputs.pop()
    return g


def _is_1d(n: Node, g: Graph) -> bool:
    kernel = n.attrs.get("kernel_shape")
    if kernel is not None:
        return len(kernel) == 1
    w = g.initializers.get(n.inputs[1]) if n.op == "Conv" and len(n.inputs) > 1 else None
    return w is not None and w.ndim == 3


def lift_1d(graph: Graph) -> Graph:
    """1-D Conv/MaxPool/AveragePool (torch's Conv1d, MaxPool1d) -> the 2-D op on H = 1:
    Unsqueeze the input (and a Conv's weight, folded later) at axis 2, Squeeze it after."""
    g = graph.copy()
    nodes: list[Node] = []
    for n in list(g.nodes):  # new names are reserved in g.nodes as they are made
        if n.op not in ("Conv", "MaxPool", "AveragePool") or not _is_1d(n, g):
            nodes.append(n)
            continue
        base = n.name or n.op.lower()
        axes = g.unique_name(f"{base}/axis2")
        g.initializers[axes] = np.asarray([2], np.int64)
        ins = list(n.inputs)
        for k in (0, 1) if n.op == "Conv" else (0,):
            name = g.unique_name(f"{base}/{'x' if k == 0 else 'w'}2d")
            nodes.append(Node("Unsqueeze", [ins[k], axes], [name], {}, name))
            g.nodes.append(nodes[-1])
            ins[k] = name
        y2d = g.unique_name(f"{base}/y2d")
        lifted = lift_1d_node(n)  # the per-axis attributes get the H = 1 axis
        lifted.inputs, lifted.outputs = ins, [y2d, *n.outputs[1:]]
        nodes.append(lifted)
        nodes.append(Node("Squeeze", [y2d, axes], [n.outputs[0]], {}, f"{base}/squeeze"))
        g.nodes.append(Node("Identity", [], [y2d], {}, y2d))  # reserve the name
    g.nodes = nodes
    return g


# -- symbolic shape folding -------------------------------------------------------------------
def _sym_of(name: str, g: Graph, sym: dict[str, np.ndarray]) -> np.ndarray | None:
    if name in sym:
        return sym[name]
    arr = g.initializers.get(name)
    if arr is not None and arr.dtype.kind in "biu" and arr.size <= _MAX_SYMBOLIC:
        return np.asarray(arr).astype(object)
    return None


def _objects(values: list[Any]) -> np.ndarray:
    """A 1-D object array of these Python values (ints, dim names, None)."""
    arr = np.empty(len(values), dtype=object)
    arr[:] = values
    return arr


def _arith(op: str, a: Any, b: Any) -> Any:
    if not (isinstance(a, int) and isinstance(b, int)):
        return None
    if op == "Add":
        return a + b
    if op == "Sub":
        return a - b
    if op == "Mul":
        return a * b
    return None if b == 0 else int(a / b)  # ONNX integer Div truncates toward zero


def _equal(a: Any, b: Any) -> bool | None:
    """a == b for dims: ints, dim names (never negative) or None (unknown)."""
    if a is None or b is None:
        return None
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    if a == b:  # the same dim name
        return True
    if (isinstance(a, int) and a < 0) or (isinstance(b, int) and b < 0):
        return False  # torch's expand(n, -1, -1) compares the dims with -1
    return None


def _elementwise(op: str, args: list[np.ndarray | None]) -> np.ndarray | None:
    """Equal, Where or arithmetic over symbolic dims (None where the answer is unknown)."""
    if any(a is None for a in args):
        return None
    arrays = np.broadcast_arrays(*args)
    if op == "Equal":
        values = [_equal(a, b) for a, b in zip(arrays[0].ravel(), arrays[1].ravel())]
    elif op == "Where":
        values = [None if c is None else (a if c else b)
                  for c, a, b in zip(*(x.ravel() for x in arrays))]
    else:
        values = [_arith(op, a, b) for a, b in zip(arrays[0].ravel(), arrays[1].ravel())]
    return _objects(values).reshape(arrays[0].shape)


def _symbolic(node: Node, g: Graph, sym: dict[str, np.ndarray], shapes: dict[str, Any]
              ) -> np.ndarray | None:
    """The node's output as an object array of ints / dim names / None, or None if not known."""
    op = node.op
    if op not in _SYMBOLIC or len(node.outputs) != 1:
        return None
    if op == "Shape":
        s = shapes.get(node.inputs[0])
        if s is None:
            return None
        from ..graph.ops_onnx import shape_slice  # noqa: PLC0415 - keeps import order simple
        return _objects(list(s)[shape_slice(node, len(s))])
    args = [_sym_of(i, g, sym) if i else None for i in node.inputs]
    data = args[0]
    if data is None:
        return None
    if op in ("Identity", "Cast"):
        return data
    if op in ("Add", "Sub", "Mul", "Div", "Equal", "Where"):
        return _elementwise(op, args)
    if op == "ReduceProd":
        if len(node.inputs) > 1 or data.ndim != 1:
            return None
        return np.array(math.prod(data) if all(isinstance(d, int) for d in data) else None,
                        dtype=object)
    consts = [None if a is None else np.asarray(a.tolist()) for a in args]
    try:
        return np.asarray(evaluate_node(node, data, *consts[1:])[0], dtype=object)
    except (TypeError, ValueError, ConfigError):
        return None


def _reshape_target(node: Node, target: np.ndarray, in_shape: Shape | None
                    ) -> list[Any]:
    """An ONNX Reshape target for a symbolic one: ints (0 copies the input's dim, -1 is
    inferred), and dim names left where the target needs a size known only at run time."""
    values = target.tolist()
    # allowzero=1 (dynamo writes it) differs from 0 only where the target holds a literal 0
    literal_zero = any(isinstance(v, int) and v == 0 for v in values)
    copy_ok = not (node.attrs.get("allowzero", 0) and literal_zero)
    out: list[Any] = []
    for i, v in enumerate(values):
        if (isinstance(v, str) and copy_ok and in_shape is not None and i < len(in_shape)
                and in_shape[i] == v):
            out.append(0)  # "copy this dim from the input": the batch dim stays dynamic
        else:
            out.append(v)
    if 0 in out and not literal_zero:
        node.attrs.pop("allowzero", None)
    unknown = [i for i, v in enumerate(out) if not isinstance(v, int)]
    nones = [i for i, v in enumerate(out) if v is None]
    if len(unknown) == 1 and -1 not in out:
        out[unknown[0]] = -1
    elif len(nones) == 1 and -1 not in out:
        out[nones[0]] = -1  # the dim names left are read from the graph inputs at run time
    elif nones:
        raise ConfigError(f"Reshape {node.name}: its target shape {values} depends on sizes "
                          f"known only at run time; expected every such dim to be a dim of a "
                          f"graph input, or at most one other")
    return out


def _input_dims(g: Graph) -> dict[str, tuple[str, int]]:
    """Each dim name of the graph inputs -> (an input of that dim, its axis)."""
    found: dict[str, tuple[str, int]] = {}
    for v in g.inputs:
        for axis, d in enumerate(v.shape or ()):
            if isinstance(d, str):
                found.setdefault(d, (v.name, axis))
    return found


def _runtime_dims(g: Graph, node: Node, dims: list[Any], kept: list[Node]) -> str | None:
    """A Shape -> Gather -> Concat chain (appended to kept) computing dims at run time from the
    graph inputs' dims, the form shape inference follows (graph/shapes.py); None when a dim
    is neither an int nor a dim name of a graph input."""
    sources = _input_dims(g)
    if not all(isinstance(d, int) or d in sources for d in dims):
        return None
    base = node.name or node.op.lower()
    shape_of: dict[str, str] = {}

    def emit(op: str, inputs: list[str], suffix: str, **attrs: Any) -> str:
        name = g.unique_name(f"{base}/{suffix}")
        kept.append(Node(op, inputs, [name], attrs, name))
        g.nodes.append(Node("Identity", [], [name], {}, name))  # reserve the name
        return name

    def const(values: list[int]) -> str:
        name = g.unique_name(f"{base}/dims")
        g.initializers[name] = np.asarray(values, np.int64)
        return name

    pieces: list[str] = []
    for d in dims:
        if isinstance(d, int):
            pieces.append(const([d]))
            continue
        src, axis = sources[d]
        if src not in shape_of:
            shape_of[src] = emit("Shape", [src], f"shape_{src}")
        pieces.append(emit("Gather", [shape_of[src], const([axis])], f"dim_{d}", axis=0))
    return emit("Concat", pieces, "target", axis=0)


def _explicit_pads(node: Node, in_shape: Shape | None, w_shape: Shape | None) -> None:
    """Replace auto_pad SAME_UPPER/SAME_LOWER/VALID by explicit pads (static sizes needed)."""
    mode = node.attrs.pop("auto_pad", "NOTSET")
    if mode in ("NOTSET", "VALID"):
        if mode == "VALID":
            node.attrs.pop("pads", None)
        return
    kernel = node.attrs.get("kernel_shape") or (list(w_shape[2:]) if w_shape else None)
    spatial = None if in_shape is None else in_shape[2:]
    if kernel is None or spatial is None or not all(isinstance(d, int) for d in spatial):
        raise ConfigError(f"{node.op} {node.name}: auto_pad={mode} needs static spatial sizes, "
                          f"found input shape {in_shape}")
    nd = len(kernel)
    strides = node.attrs.get("strides", [1] * nd)
    dil = node.attrs.get("dilations", [1] * nd)
    begin, end = [], []
    for d, k, s, r in zip(spatial, kernel, strides, dil):
        total = (-(-d // s) - 1) * s + (k - 1) * r + 1 - d
        if total <= -2:
            # a stride beyond the kernel leaves the last inputs unread: TensorFlow and nnforge
            # pad nothing then; ONNX Runtime 1.31 pads the start by about half the negative
            # amount, shifting every window (from -2, -3 or -4 on, by op and mode; its
            # MaxPool refuses any): the file means different things to different readers
            raise ConfigError(f"{node.op} {node.name}: auto_pad={mode} with kernel {kernel}, "
                              f"strides {strides} on input {tuple(spatial)} asks for negative "
                              f"padding ({total}), which ONNX Runtime reads as shifted windows "
                              f"and nnforge as no padding; expected explicit pads")
        total = max(0, total)
        small = total // 2
        begin.append(small if mode == "SAME_UPPER" else total - small)
        end.append(total - begin[-1])
    node.attrs["pads"] = begin + end


def _free_batch_target(g: Graph, node: Node, in_shape: Shape | None, batch: int) -> None:
    """Reshape (N, ...) to [batch, ...] -> [0, ...]: at the file's batch size the two agree,
    and the leading target dim is then the input's rows whatever their number."""
    target = g.initializers[node.inputs[1]]
    if (in_shape and in_shape[0] == "N" and target.ndim == 1 and target.size
            and int(target[0]) == batch and 0 not in target):
        node.attrs.pop("allowzero", None)  # the same as 0 without a literal 0 (torch writes 1)
        name = g.unique_name(f"{node.name or 'reshape'}.shape")
        g.initializers[name] = np.concatenate([[0], target[1:]]).astype(np.int64)
        node.inputs = [node.inputs[0], name]


def _constant_expand_target(g: Graph, node: Node, target: np.ndarray | None,
                            in_shape: Shape | None, kept: list[Node],
                            sym: dict[str, np.ndarray]) -> None:
    """Expand to a shape computed from Shape (torch's dynamo exporter writes x.expand_as(y)
    as Expand(x, Concat(Shape(y)[:1], [1]))): a symbolic dim equal to the input's own dim
    at that place becomes 1 (broadcasting keeps the input's dim), so the target is constant
    when every symbolic dim is of that kind. Otherwise (a class token expanded to the batch
    size, through Equal and Where) the target is computed from the graph inputs' dims."""
    if target is None or target.ndim != 1 or in_shape is None or len(target) < len(in_shape):
        return
    offset = len(target) - len(in_shape)  # broadcasting aligns the trailing dims
    out = []
    for i, d in enumerate(target.tolist()):
        if isinstance(d, int):
            out.append(d)
        elif d is not None and i >= offset and in_shape[i - offset] == d:
            out.append(1)
        else:  # a true broadcast to a run-time size: shapes.py follows the chain
            dims = _runtime_dims(g, node, target.tolist(), kept)
            if dims is not None:
                node.inputs = [node.inputs[0], dims]
                sym[dims] = target
            return
    name = g.unique_name(f"{node.name or 'expand'}.shape")
    g.initializers[name] = np.asarray(out, np.int64)
    node.inputs = [node.inputs[0], name]


def _set_reshape_target(g: Graph, node: Node, target: np.ndarray, in_shape: Shape | None,
                        kept: list[Node], sym: dict[str, np.ndarray]) -> None:
    """Give a Reshape a constant target, or one computed from the graph inputs' dims."""
    out = _reshape_target(node, target, in_shape)
    if all(isinstance(v, int) for v in out):
        name = g.unique_name(f"{node.name or 'reshape'}.shape")
        g.initializers[name] = np.asarray(out, np.int64)
    else:
        name = _runtime_dims(g, node, out, kept)  # type: ignore[assignment]
        if name is None:
            raise ConfigError(f"Reshape {node.name}: its target shape {target.tolist()} depends "
                              f"on sizes known only at run time; expected each such dim to be "
                              f"a dim of a graph input")
        sym[name] = _objects(out)
    node.inputs = [node.inputs[0], name]


def fold_shapes(graph: Graph, fixed_batch: int | None = None) -> Graph:
    """Fold constant subgraphs and symbolic shape chains; give Reshapes constant targets."""
    g = graph.copy()
    shapes: dict[str, Any] = {v.name: v.shape for v in g.inputs}
    shapes.update({k: tuple(a.shape) for k, a in g.initializers.items()})
    sym: dict[str, np.ndarray] = {}
    outputs = set(g.output_names)
    kept: list[Node] = []
    budget = fold_budget(g)  # the file's own size bounds what folding may add
    for node in list(g.nodes):  # _runtime_dims reserves names in g.nodes
        ins = [i for i in node.inputs if i]
        foldable = node.op != "Dropout" and not any(o in outputs for o in node.outputs)
        # the output's size comes from shape inference first: a few bytes of ConstantOfShape
        # or Concat must not become gigabytes here (too big: it stays a run-time node)
        if (foldable and all(i in g.initializers for i in ins)
                and not _fold_too_big(g, node, budget)):
            budget -= fold_output_size(g, node) or 0
            values = evaluate_node(node, *(g.initializers.get(i) if i else None
                                           for i in node.inputs))
            for name, value in zip(node.outputs, values):
                if name:
                    g.initializers[name] = np.asarray(value)
                    shapes[name] = tuple(np.shape(value))
            continue
        value = _symbolic(node, g, sym, shapes) if foldable else None
        if value is not None:
            if all(isinstance(v, int) for v in value.ravel()):  # bools are ints too
                kind = bool if all(isinstance(v, bool) for v in value.ravel()) else np.int64
                g.initializers[node.outputs[0]] = np.asarray(value.tolist(), kind)
                shapes[node.outputs[0]] = tuple(value.shape)
                continue
            sym[node.outputs[0]] = value
        if node.op == "Reshape" and node.inputs[1] not in g.initializers:
            target = _sym_of(node.inputs[1], g, sym)
            if target is not None:
                _set_reshape_target(g, node, target, shapes.get(node.inputs[0]), kept, sym)
        if node.op == "Expand" and node.inputs[1] not in g.initializers:
            _constant_expand_target(g, node, _sym_of(node.inputs[1], g, sym),
                                    shapes.get(node.inputs[0]), kept, sym)
        if node.op == "Reshape" and fixed_batch and node.inputs[1] in g.initializers:
            _free_batch_target(g, node, shapes.get(node.inputs[0]), fixed_batch)
        if node.op in ("Conv", "MaxPool", "AveragePool") and "auto_pad" in node.attrs:
            _explicit_pads(node, shapes.get(node.inputs[0]),
                           shapes.get(node.inputs[1]) if node.op == "Conv" else None)
        consts = g.initializers
        if node.op in ("Reshape", "Expand") and node.inputs[1] in sym:
            consts = {**consts, node.inputs[1]: sym[node.inputs[1]]}
        out = infer_node(node, [shapes.get(i) for i in node.inputs], consts)
        for k, name in enumerate(node.outputs):
            if name:
                shapes[name] = out[k] if k < len(out) else None
        kept.append(node)
    g.nodes = kept
    return g


def _drop_allowzero(g: Graph) -> None:
    """Reshape allowzero=1 means the same as 0 unless the target holds a literal 0."""
    for n in g.nodes:
        if n.op == "Reshape" and n.attrs.pop("allowzero", 0):
            target = g.initializers.get(n.inputs[1])
            if target is not None and 0 in target:
                raise ConfigError(f"Reshape {n.name}: allowzero=1 with a 0 in the target shape "
                                  f"{target.tolist()} is not supported; expected no zero dims")


# -- GELU -----------------------------------------------------------------------------------
def _scalar(g: Graph, name: str) -> float | None:
    arr = g.initializers.get(name)
    return float(arr.reshape(-1)[0]) if arr is not None and arr.size == 1 else None


def _other(node: Node, name: str) -> str | None:
    rest = [i for i in node.inputs if i != name]
    return rest[0] if len(rest) == 1 and len(node.inputs) == 2 else None


def _near(v: float | None, target: float) -> bool:
    return v is not None and abs(v - target) <= 1e-6 * abs(target)


def fuse_gelu(graph: Graph) -> Graph:
    """x * 0.5 * (1 + erf(x / sqrt 2)), in any order of its two products -> Gelu(x)."""
    g = graph.copy()
    producers, consumers = g.producers(), g.consumers()
    outputs = set(g.output_names)

    def sole(value: str, op: str) -> Node | None:
        users = consumers.get(value, [])
        if len(users) != 1 or value in outputs or users[0].op != op:
            return None
        return users[0]

    dead: set[int] = set()
    for erf in [n for n in g.nodes if n.op == "Erf"]:
        scale = producers.get(erf.inputs[0])
        if scale is None or sole(scale.outputs[0], "Erf") is None or len(scale.inputs) != 2:
            continue
        if scale.op == "Div" and _near(_scalar(g, scale.inputs[1]), math.sqrt(2)):
            x = scale.inputs[0]
        elif scale.op == "Mul" and _near(_scalar(g, scale.inputs[1]), math.sqrt(0.5)):
            x = scale.inputs[0]
        elif scale.op == "Mul" and _near(_scalar(g, scale.inputs[0]), math.sqrt(0.5)):
            x = scale.inputs[1]
        else:
            continue
        add = sole(erf.outputs[0], "Add")
        if add is None or not _near(_scalar(g, _other(add, erf.outputs[0]) or ""), 1.0):
            continue
        m1 = sole(add.outputs[0], "Mul")
        partner = None if m1 is None else _other(m1, add.outputs[0])
        if m1 is None or partner is None:
            continue
        half = producers.get(partner)
        if (half is not None and half.op == "Mul" and partner not in outputs
                and len(consumers.get(partner, [])) == 1
                and _near(_scalar(g, _other(half, x) or ""), 0.5)):
            chain, final = [half, scale, erf, add], m1  # (x * 0.5) * (1 + erf)
        else:
            m2 = sole(m1.outputs[0], "Mul")
            last = None if m2 is None else _other(m2, m1.outputs[0])
            if m2 is None or last is None or not (
                    (partner == x and _near(_scalar(g, last), 0.5))
                    or (last == x and _near(_scalar(g, partner), 0.5))):
                continue
            chain, final = [scale, erf, add, m1], m2
        gelu = Node("Gelu", [x], list(final.outputs), {"approximate": "none"},
                    final.name or erf.name or "gelu")
        dead.update(id(n) for n in chain)
        g.nodes = [gelu if n is final else n for n in g.nodes]
    g.nodes = [n for n in g.nodes if id(n) not in dead]
    return g


def expand_tanh_gelu(graph: Graph) -> Graph:
    """Gelu(approximate='tanh') -> 0.5 x (1 + tanh(sqrt(2/pi) x (1 + 0.044715 x^2)))."""
    g = graph.copy()
    nodes: list[Node] = []
    for n in list(g.nodes):  # `emit` appends to g.nodes to reserve names
        if n.op != "Gelu" or n.attrs.get("approximate", "none") != "tanh":
            nodes.append(n)
            continue
        emit, const = _builders(g, n.name or "gelu", nodes)
        x, one = n.inputs[0], const("one", 1.0)
        inner = emit("Mul", [x, emit("Add", [emit("Mul", [emit("Mul", [x, x], "sq"),
                                                          const("c", 0.044715)], "cube"),
                                             one], "poly")], "inner")
        t = emit("Tanh", [emit("Mul", [inner, const("k", math.sqrt(2 / math.pi))], "scaled")],
                 "tanh")
        emit("Mul", [emit("Mul", [x, const("half", 0.5)], "half_x"),
                     emit("Add", [t, one], "cdf")], "gelu")
        nodes[-1].outputs = list(n.outputs)
    g.nodes = nodes
    return g


def _builders(g: Graph, base: str, out: list[Node]) -> tuple[Any, Any]:
    """emit(op, inputs, suffix, **attrs) -> output name, const(suffix, v) -> scalar name."""
    def emit(op: str, inputs: list[str], suffix: str, **attrs: Any) -> str:
        name = g.unique_name(f"{base}/{suffix}")
        out.append(Node(op, inputs, [name], attrs, name))
        g.nodes.append(out[-1])  # reserve the name
        return name

    def const(suffix: str, v: float) -> str:
        name = g.unique_name(f"{base}/{suffix}")
        g.initializers[name] = np.asarray(v, np.float32)
        return name
    return emit, const


# -- Gemm with a computed B or C ----------------------------------------------------------------
def decompose_gemm(graph: Graph) -> Graph:
    """Gemm whose B or C is not an initializer -> [Transpose] MatMul [Mul] [Add]."""
    g = graph.copy()
    nodes: list[Node] = []
    for n in list(g.nodes):  # _gemm_nodes appends to g.nodes to reserve names
        if n.op == "Gemm" and not all(i in g.initializers for i in n.inputs[1:] if i):
            nodes.extend(_gemm_nodes(g, n))
        else:
            nodes.append(n)
    g.nodes = nodes
    return g


def _gemm_nodes(g: Graph, n: Node) -> list[Node]:
    out: list[Node] = []
    emit, const = _builders(g, n.name or "gemm", out)
    a, b = n.inputs[0], n.inputs[1]
    c = n.inputs[2] if len(n.inputs) > 2 and n.inputs[2] else None
    alpha, beta = n.attrs.get("alpha", 1.0), n.attrs.get("beta", 1.0)
    if n.attrs.get("transA", 0):
        a = emit("Transpose", [a], "a_t", perm=[1, 0])
    if n.attrs.get("transB", 0):
        b = emit("Transpose", [b], "b_t", perm=[1, 0])
    y = emit("MatMul", [a, b], "matmul")
    if alpha != 1.0:
        y = emit("Mul", [y, const("alpha", alpha)], "alpha")
    if c is not None:
        if beta != 1.0:
            c = emit("Mul", [c, const("beta", beta)], "beta")
        emit("Add", [y, c], "add")
    out[-1].outputs = list(n.outputs)
    return out


#: op -> inputs the NumPy kernels read once, at compile time
_CONSTANT_INPUTS = {"Conv": (1, 2), "BatchNormalization": (1, 2, 3, 4), "Pad": (1, 2, 3)}


def require_constant_weights(g: Graph) -> None:
    """ConfigError when a weight that kernels prepare at compile time is computed at run time."""
    bad = [f"{n.op} {n.name!r} input {n.inputs[k]!r}" for n in g.nodes
           for k in _CONSTANT_INPUTS.get(n.op, ()) if k < len(n.inputs) and n.inputs[k]
           and n.inputs[k] not in g.initializers]
    if bad:
        raise ConfigError(f"expected constant weights, found values computed at run time: "
                          f"{', '.join(bad)}")
