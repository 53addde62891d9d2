"""Tracing: turn an `nn.Module` into the graph IR with inference (eval-mode) semantics.

Each layer type is lowered to ONNX ops in exactly one place: the `LOWERINGS` table below, or,
for a layer that applies one op (SiLU, LayerNorm, Conv1d, the pools), that op's own `lower`,
which the layer names with `traced_op()`. Containers (`Sequential`) are walked. A module
with no lowering (a user's `Module` subclass with its own `forward`, or a Sequential holding
one) is traced op by op instead: its forward runs on tracing tensors and every op it applies
is recorded, while children that have a lowering are still lowered as layers (see
`graph/trace_ops.py`). As with torch.jit.trace, Python control flow in such a forward is
evaluated once, at trace time: the graph keeps the branch taken then. Weights are copied, so
training the model afterwards does not change a traced graph.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Sequence

import numpy as np

from .. import backend
from ..errors import ConfigError, ShapeError
from ..nn.module import Module
from ..ops.shape import flatten_range
from .ir import Graph, Node, Shape, ValueInfo
from .ops import get_op

Lowering = Callable[[Module, "Tracer", str, str], str]

#: layer class name -> function(layer, tracer, path, input value) -> output value; a layer
#: not in it that says which op it applies (`traced_op`) is lowered as that op (see _via_op)
LOWERINGS: dict[str, Lowering] = {}


def lowers(*names: str) -> Callable[[Lowering], Lowering]:
    """Decorator: register the lowering of the named nnforge layer classes."""
    def deco(fn: Lowering) -> Lowering:
        for n in names:
            LOWERINGS[n] = fn
        return fn
    return deco


class Tracer:
    """Builds a Graph node by node, tracking value shapes as it goes."""

    def __init__(self, input_name: str, input_shape: Shape, dtype: str) -> None:
        self.graph = Graph(inputs=[ValueInfo(input_name, input_shape, dtype)])
        self.shapes: dict[str, Shape | None] = {input_name: input_shape}
        self.dtype = dtype

    def weight(self, name: str, array: Any) -> str:
        """Add a copy of array as an initializer (in the model's float dtype) named name; a GPU
        model's arrays are copied to the host (the compiled plans run on NumPy)."""
        arr = np.array(backend.to_numpy(array), copy=True)
        if arr.dtype.kind == "f":
            arr = arr.astype(self.dtype, copy=False)
        self.graph.initializers[name] = arr
        self.shapes[name] = arr.shape
        return name

    def const_ints(self, name: str, values: Sequence[int]) -> str:
        """Add an int64 initializer (e.g. a Reshape target)."""
        self.graph.initializers[name] = np.asarray(values, np.int64)
        self.shapes[name] = (len(values),)
        return name

    def node(self, op: str, inputs: list[str], name: str, **attrs: Any) -> str:
        """Append a node with one output named after the node; return the output name."""
        node = Node(op, list(inputs), [name], attrs, name)
        shape = get_op(node).infer(node, [self.shapes.get(i) for i in inputs],
                                   self.graph.initializers)[0]
        self.graph.nodes.append(node)
        self.shapes[name] = shape
        return name

    def rank(self, value: str, what: str) -> int:
        """The rank of a value, or ConfigError when it is unknown."""
        shape = self.shapes.get(value)
        if shape is None:
            raise ConfigError(f"{what}: expected a known input rank, found an unknown shape; "
                              f"pass input_shape=, the shape of one sample")
        return len(shape)

    def lower(self, layer: Module, path: str, x: str) -> str:
        """Lower one layer (recursively for containers); return its output value."""
        name = type(layer).__name__
        fn = layer_lowering(layer)
        if fn is None:
            raise ConfigError(f"cannot trace layer {path or '<root>'} of type {name}: expected "
                              f"one of {lowered_layers()}")
        if not path and name != "Sequential":
            path = name.lower()  # a bare layer traced on its own
        return fn(layer, self, path, x)


def trace(model: Module, input_shape: Sequence[Any] | None = None,
          input_name: str | Sequence[str] | None = None, output_name: str = "output") -> Graph:
    """Trace a model into a Graph (dropout off, batch norm on running statistics).

    For a forward with several arguments, input_shape is a list of shapes (one per argument,
    batch dimension first) and input_name a list of names (default input_0, input_1, ...).
    """
    if not isinstance(model, Module):
        raise ConfigError(f"expected an nnforge Module to trace, found {type(model).__name__}")
    arity = forward_arity(model)
    if is_shape_list(input_shape):
        shapes = [_normalize_shape(s) for s in input_shape]  # type: ignore[union-attr]
        if len(shapes) != arity and not (arity == 1 and len(shapes) == 1):
            raise ConfigError(f"{type(model).__name__}.forward takes {arity} input"
                              f"{'s' * (arity > 1)}; expected input_shape=[...] with one shape "
                              f"per argument, found {len(shapes)} shapes")
        names = _input_names(input_name, len(shapes))
        if len(shapes) > 1:
            return _trace_forward(model, shapes, names, output_name)
        shape, input_name = shapes[0], names[0]
    elif arity > 1:
        found = "no input_shape" if input_shape is None else "a single shape"
        raise ConfigError(f"{type(model).__name__}.forward takes {arity} inputs; expected "
                          f"input_shape=[...] with one shape per argument, found {found}")
    else:
        shape = guess_input_shape(model) if input_shape is None else _normalize_shape(input_shape)
        input_name = _input_names(input_name, 1)[0]
    if not lowerable(model):
        return _trace_forward(model, [shape], [input_name], output_name)
    t = Tracer(input_name, shape, str(model.dtype))
    try:
        out = t.lower(model, "", input_name)
    except (ConfigError, ShapeError) as exc:
        hinted = batch_axis_hint(exc, shape)
        if hinted is not None:
            raise hinted from None
        if isinstance(exc, ShapeError):
            raise
        raise with_shape_hint(exc, shape) from None
    if out == input_name:  # an empty model: keep one node so input and output differ
        out = t.node("Identity", [input_name], "identity")
    for node in t.graph.nodes:  # name the final value as the graph output
        node.outputs = [output_name if o == out else o for o in node.outputs]
        node.inputs = [output_name if i == out else i for i in node.inputs]
    t.graph.outputs = [ValueInfo(output_name, t.shapes[out], t.dtype)]
    t.graph.name = type(model).__name__
    return t.graph


def with_shape_hint(exc: ConfigError, shape: Shape) -> ConfigError:
    """exc, told how to fix it when the traced input shape had unknown dims (guessed from a
    first Conv2d, say): every error that an unknown size causes while tracing passes here."""
    if all(isinstance(d, int) for d in shape[1:]) or "input_shape=" in str(exc):
        return exc
    letters = iter({4: "HWD", 3: "L"}.get(len(shape), "ABCDEFG"))
    sample = ", ".join(str(d) if isinstance(d, int) else next(letters, "?") for d in shape[1:])
    return type(exc)(f"{exc}; the input shape {tuple(shape)} has unknown sizes: pass "
                     f"input_shape=({sample}{',' * (len(shape) == 2)}), the shape of one "
                     f"sample, to InferenceSession, nnforge.onnx.export or nf.save")


def layer_lowering(layer: Module) -> Lowering | None:
    """The lowering of an nnforge layer: its LOWERINGS entry, or its op's (see _via_op)."""
    cls = type(layer)
    if not cls.__module__.startswith("nnforge."):
        return None
    return LOWERINGS.get(cls.__name__) or (_via_op if hasattr(cls, "traced_op") else None)


def lowered_layers() -> list[str]:
    """The names of the nnforge layer classes tracing lowers as layers."""
    from ..nn.module import LAYER_REGISTRY  # noqa: PLC0415

    return sorted({*LOWERINGS, *(n for n, c in LAYER_REGISTRY.items()
                                 if c.__module__.startswith("nnforge.") and
                                 hasattr(c, "traced_op"))})


def lowerable(layer: Module) -> bool:
    """True when the layer (and, for a Sequential, every child) has a layer lowering."""
    if layer_lowering(layer) is None:
        return False
    return type(layer).__name__ != "Sequential" or all(map(lowerable, layer._modules.values()))


def forward_arity(model: Module) -> int:
    """How many positional arguments model.forward requires (1 when it cannot tell)."""
    try:
        params = inspect.signature(model.forward).parameters.values()
    except (TypeError, ValueError):
        return 1
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return max(1, sum(p.kind in kinds and p.default is p.empty for p in params))


def is_shape_list(shape: Any) -> bool:
    """True for a list of shapes ([(4,), (3,)]) rather than one shape ((None, 4))."""
    return (isinstance(shape, (list, tuple)) and len(shape) > 0
            and all(isinstance(s, (list, tuple)) for s in shape))


def _input_names(names: str | Sequence[str] | None, n: int) -> list[str]:
    if names is None:
        return ["input"] if n == 1 else [f"input_{k}" for k in range(n)]
    out = [names] if isinstance(names, str) else list(names)
    if len(out) != n or len(set(out)) != n or not all(isinstance(x, str) and x for x in out):
        raise ConfigError(f"expected {n} distinct input name(s), found {names!r}")
    return out


def _trace_forward(model: Module, shapes: list[Shape], input_names: list[str],
                   output_name: str) -> Graph:
    """Op-level trace of a module with its own forward (see graph/trace_ops.py)."""
    from .trace_ops import BATCHES, check_against_eager, merge_batches, record_forward  # noqa: PLC0415

    for shape in shapes:
        if any(not isinstance(d, int) for d in shape[1:]):
            exc = ConfigError(f"cannot trace {type(model).__name__}'s forward with input shape "
                              f"{shape}: expected every dim but the batch known; pass "
                              f"input_shape=(features...) (one sample's shape)")
            raise batch_axis_hint(exc, shape) or exc
    dtype = str(model.dtype)
    runs = []
    for seed, n in enumerate(BATCHES):
        concrete = [(n, *s[1:]) for s in shapes]
        t = Tracer(input_names[0], concrete[0], dtype)
        for name, s in zip(input_names[1:], concrete[1:]):
            t.graph.inputs.append(ValueInfo(name, s, dtype))
            t.shapes[name] = s
        t.graph.name = type(model).__name__
        outs, eager, xs = record_forward(model, t, concrete, seed, lowerable)
        runs.append((t, outs, eager, xs))
    (t, outs, _, _), (t2, _, _, _) = runs
    merge_batches(t.graph, t2.graph, t.shapes, t2.shapes)
    g = t.graph
    g.inputs = [ValueInfo(name, s, dtype) for name, s in zip(input_names, shapes)]
    names = [output_name] + [f"{output_name}_{k}" for k in range(1, len(outs))]
    for k, (out, name) in enumerate(zip(outs, names)):
        if out in input_names or out in g.initializers or out in outs[:k]:
            g.nodes.append(Node("Identity", [out], [name], {}, name))
            continue
        for node in g.nodes:
            node.outputs = [name if o == out else o for o in node.outputs]
            node.inputs = [name if i == out else i for i in node.inputs]
    from .shapes import compute_shapes  # noqa: PLC0415

    infos = compute_shapes(g)
    g.outputs = [ValueInfo(n, infos[n].shape, infos[n].dtype) for n in names]
    for _, _, eager, xs in runs:
        check_against_eager(g, xs, eager)
    return g


def _normalize_shape(shape: Sequence[Any]) -> Shape:
    dims = tuple("N" if i == 0 and d in (None, -1, "N") else
                 (None if d in (None, -1) else d) for i, d in enumerate(shape))
    if any(not (d is None or isinstance(d, str) or (isinstance(d, int) and d > 0)) for d in dims):
        raise ConfigError(f"expected an input shape of positive ints or None, found {shape}")
    return dims


def guess_input_shape(model: Module) -> Shape:
    """The input shape implied by the first layer (batch dimension symbolic), or ConfigError."""
    for m in model.modules():
        name = type(m).__name__
        if name == "Linear":
            return ("N", int(m.weight.shape[1]))
        if name in ("Conv1d", "Conv2d"):
            return ("N", int(m.weight.shape[1]) * int(getattr(m, "groups", 1))) + \
                (None,) * (int(m.weight.ndim) - 2)
        if name in ("BatchNorm1d", "BatchNorm2d"):
            return ("N", int(m.num_features)) + ((None, None) if name[-2] == "2" else ())
        # a user's module is looked through: its first child (in definition order) is a guess
        # the trace checks, since its forward runs on input of that shape
        if name not in ("Sequential", "Dropout", "Identity") and \
                type(m).__module__.startswith("nnforge."):
            break
    first = next((type(m).__name__ for m in model.modules()
                  if type(m).__name__ not in ("Sequential", "Dropout", "Identity")), "")
    sample = "(C, H, W)" if first.endswith("2d") else "(C, L)" if first.endswith("1d") else \
        "(features,) (or (C, H, W) for images)"
    raise ConfigError(f"cannot tell the input shape of a {type(model).__name__} from its first "
                      f"layer{f' ({first})' if first else ''}; expected input_shape={sample}, "
                      f"the shape of one sample without the batch axis (e.g. to "
                      f"InferenceSession, nnforge.onnx.export or nf.save)")


def batch_axis_hint(exc: Exception, shape: Shape) -> Exception | None:
    """exc told that input_shape is one sample's shape, when the traced shape (batch first)
    has a free dim right after the batch: a leading None the user meant as the batch axis
    (the APIs add the batch axis themselves); None when that does not apply."""
    if len(shape) < 3 or shape[1] is not None or "without the batch axis" in str(exc):
        return None
    given, meant = tuple(shape[1:]), tuple(shape[2:])
    return type(exc)(f"{exc}; input_shape is the shape of one sample, without the batch "
                     f"axis: if the leading None of {given} was the batch, pass "
                     f"input_shape={meant}")


# -- the lowering table ---------------------------------------------------------------------
@lowers("Sequential")
def _sequential(layer: Module, t: Tracer, path: str, x: str) -> str:
    for name, child in layer._modules.items():
        x = t.lower(child, f"{path}.{name}" if path else name, x)
    return x


@lowers("Linear")
def _linear(layer: Module, t: Tracer, path: str, x: str) -> str:
    w = t.weight(f"{path}.weight", layer.weight.data)
    b = t.weight(f"{path}.bias", layer.bias.data) if layer.bias is not None else None
    shape = t.shapes.get(x)
    if shape is None or len(shape) == 2:  # Gemm: what BatchNorm folding and fusion look for
        return t.node("Gemm", [x, w] + ([b] if b else []), path, transB=1)
    # (batch, ..., in) as eager Linear takes it: ONNX Gemm is 2-D only, MatMul broadcasts
    # (the Transpose of the weight is folded into a constant at optimization level basic)
    wt = t.node("Transpose", [w], f"{path}/weight_t", perm=[1, 0])
    y = t.node("MatMul", [x, wt], path if b is None else f"{path}/matmul")
    return y if b is None else t.node("Add", [y, b], path)


_SIMPLE = {"ReLU": "Relu", "Sigmoid": "Sigmoid", "Tanh": "Tanh", "Identity": "Identity",
           "Dropout": "Dropout"}


@lowers(*_SIMPLE)
def _simple(layer: Module, t: Tracer, path: str, x: str) -> str:
    return t.node(_SIMPLE[type(layer).__name__], [x], path)


@lowers("LeakyReLU")
def _leaky_relu(layer: Module, t: Tracer, path: str, x: str) -> str:
    return t.node("LeakyRelu", [x], path, alpha=float(layer.negative_slope))


@lowers("GELU")
def _gelu(layer: Module, t: Tracer, path: str, x: str) -> str:
    return t.node("Gelu", [x], path, approximate=str(layer.approximate))


@lowers("Softmax", "LogSoftmax")
def _softmax(layer: Module, t: Tracer, path: str, x: str) -> str:
    return t.node(type(layer).__name__, [x], path, axis=int(layer.axis))


@lowers("Flatten")
def _flatten(layer: Module, t: Tracer, path: str, x: str) -> str:
    rank = t.rank(x, f"Flatten {path}")
    start, end = flatten_range(tuple(range(rank)), int(layer.start_dim), int(layer.end_dim))
    if start == 1 and end == rank - 1:  # ONNX Flatten always returns 2-D: start_dim=1 only
        return t.node("Flatten", [x], path, axis=1)
    # 0s copy the leading dims (the batch among them), trailing dims keep their sizes
    trailing = list(t.shapes[x][end + 1:])
    if not all(isinstance(d, int) for d in trailing):
        raise ConfigError(f"Flatten {path} with end_dim={layer.end_dim}: expected known sizes "
                          f"for the dims after end_dim, found input shape {t.shapes[x]}")
    target = t.const_ints(f"{path}.shape", [0] * start + [-1] + trailing)
    return t.node("Reshape", [x, target], path)


def _pair(v: Any) -> list[int]:
    return [int(v), int(v)] if isinstance(v, (int, np.integer)) else [int(a) for a in v]


@lowers("Conv2d")
def _conv2d(layer: Module, t: Tracer, path: str, x: str) -> str:
    w = layer.weight.data
    inputs = [x, t.weight(f"{path}.weight", w)]
    if getattr(layer, "bias", None) is not None:
        inputs.append(t.weight(f"{path}.bias", layer.bias.data))
    return t.node("Conv", inputs, path, kernel_shape=list(w.shape[2:]),
                  strides=_pair(layer.stride), pads=list(layer.pads),
                  dilations=_pair(getattr(layer, "dilation", 1)),
                  group=int(getattr(layer, "groups", 1)))


@lowers("GlobalAvgPool2d")
def _global_avg_pool(layer: Module, t: Tracer, path: str, x: str) -> str:
    if getattr(layer, "keepdims", False):
        return t.node("GlobalAveragePool", [x], path)
    y = t.node("GlobalAveragePool", [x], f"{path}/pool")
    return t.node("Flatten", [y], path, axis=1)


@lowers("AdaptiveAvgPool2d")
def _adaptive_avg_pool(layer: Module, t: Tracer, path: str, x: str) -> str:
    shape = t.shapes.get(x)
    if shape is None or len(shape) != 4 or not all(isinstance(d, int) for d in shape[2:]):
        raise ConfigError(f"{path}: AdaptiveAvgPool2d needs an input of shape (N, C, H, W) "
                          f"with known H and W to be traced, found {shape}")
    h, w = shape[2:]
    oh, ow = layer.target(h, w)
    if (oh, ow) == (1, 1):
        return t.node("GlobalAveragePool", [x], path)
    if h % oh or w % ow:
        return _adaptive_matmuls(t, path, x, [(w, ow), (h, oh)])
    k = [h // oh, w // ow]
    return t.node("AveragePool", [x], path, kernel_shape=k, strides=k, pads=[0, 0, 0, 0])


def _adaptive_matmuls(t: Tracer, path: str, x: str, axes: list[tuple[int, int]]) -> str:
    """Adaptive average pooling whose windows differ in size (ONNX pooling has one kernel),
    lowered exactly as the linear map it is: for each (size, out) of the last axis, then of
    the one before it, a MatMul by the (size, out) averaging matrix of PyTorch's windows
    [floor(i*size/out), ceil((i+1)*size/out)), with a Transpose to bring the next axis last;
    the batch and channel axes broadcast, as in a Linear on (N, C, ..., in) input."""
    from ..nn.conv_layers import averaging_matrix  # noqa: PLC0415

    swap = [0, 1, 3, 2]  # only the 2-D case has a second axis to bring last
    if len(axes) > 1 and axes[1][0] == axes[1][1]:
        axes = axes[:1]  # the height is kept whole (output_size None): nothing to transpose
    steps: list[tuple[str, str | None]] = []  # (op, its constant matrix)
    for k, (size, out) in enumerate(axes):
        if k:
            steps.append(("Transpose", None))
        if size != out:  # an axis kept whole (output_size None) needs no product
            matrix = averaging_matrix(size, out, np.float64).T
            steps.append(("MatMul", t.weight(f"{path}.pool{len(steps)}", matrix)))
    if len(axes) > 1:
        steps.append(("Transpose", None))
    for i, (op, matrix) in enumerate(steps):
        name = path if i == len(steps) - 1 else f"{path}/{op.lower()}{i}"
        attrs = {"perm": swap} if op == "Transpose" else {}
        x = t.node(op, [x] + ([matrix] if matrix else []), name, **attrs)
    return x


@lowers("AdaptiveAvgPool1d")
def _adaptive_avg_pool1d(layer: Module, t: Tracer, path: str, x: str) -> str:
    shape, out = t.shapes.get(x), layer.output_size
    if out == 1:  # any length, known or not
        return t.node("GlobalAveragePool", [x], path)
    if shape is None or len(shape) != 3 or not isinstance(shape[2], int):
        raise ConfigError(f"{path}: AdaptiveAvgPool1d({out}) needs an input of shape (N, C, L) "
                          f"with known L to be traced, found {shape}")
    if shape[2] % out:
        return _adaptive_matmuls(t, path, x, [(shape[2], out)])
    k = shape[2] // out
    return t.node("AveragePool", [x], path, kernel_shape=[k], strides=[k], pads=[0, 0])


@lowers("BatchNorm1d", "BatchNorm2d")
def _batch_norm(layer: Module, t: Tracer, path: str, x: str) -> str:
    if not getattr(layer, "track_running_stats", True):
        raise ConfigError(
            f"cannot trace {path}: {type(layer).__name__}(track_running_stats=False) normalizes "
            f"with the statistics of the batch it is given, also in eval mode, so one sample's "
            f"prediction would depend on the others served with it (and on how predict chunks "
            f"the batch); expected a layer with running statistics: build it with "
            f"track_running_stats=True (the default) and train it")
    mean = backend.to_numpy(layer.running_mean)
    weight = layer.weight.data if getattr(layer, "weight", None) is not None else np.ones_like(mean)
    bias = layer.bias.data if getattr(layer, "bias", None) is not None else np.zeros_like(mean)
    inputs = [x, t.weight(f"{path}.weight", weight), t.weight(f"{path}.bias", bias),
              t.weight(f"{path}.running_mean", mean),
              t.weight(f"{path}.running_var", layer.running_var)]
    return t.node("BatchNormalization", inputs, path, epsilon=float(layer.eps))


# -- layers lowered by their op's own `lower` (a layer's `traced_op` says which) -------------
class _OpBuilder:
    """The op-level builder API (`node`, `const`, `shape`) over a Tracer, so a layer lowers
    exactly as its op does in an op-level trace."""

    def __init__(self, t: Tracer, path: str) -> None:
        self.t, self.path, self.count = t, path, 0

    def _fresh(self, sep: str, base: str) -> str:
        self.count += 1
        return f"{self.path}{sep}{base}{self.count}"

    def node(self, op: str, inputs: list[str], **attrs: Any) -> str:
        """Append one node; return its output value."""
        return self.t.node(op, inputs, self._fresh("/", op.lower()), **attrs)

    def const(self, value: Any) -> str:
        """A constant initializer (floats in the model's dtype)."""
        return self.t.weight(self._fresh(".", "const"), np.asarray(value))

    def shape(self, value: str) -> Shape:
        """The shape of a value."""
        return self.t.shapes[value]


def _via_op(layer: Module, t: Tracer, path: str, x: str) -> str:
    """Lower a layer as the op it applies (`layer.traced_op()`: the op and its weights)."""
    op, weights = layer.traced_op()  # type: ignore[operator]
    xs = [x] + [t.weight(f"{path}.{k}", w.data) for k, w in weights.items() if w is not None]
    out = op.lower(_OpBuilder(t, path), xs)
    last = t.graph.nodes[-1] if t.graph.nodes else None
    if last is not None and last.outputs == [out] and path not in t.shapes:
        # the output is named after the layer, as every table lowering names it
        last.name = last.outputs[0] = path
        t.shapes[path] = t.shapes.pop(out)
        return path
    return out
