"""Op-level tracing: run a module's own `forward` on tracing tensors and record each op.

Every op passes through `Function.apply`, which hands it to the active `OpRecorder`; each op
class lowers itself to IR nodes (`Function.lower`). Child modules that have a layer lowering
(Linear, Conv2d, BatchNorm, Sequential of them, ...) are lowered as layers, so the graph
passes (BatchNorm folding, Gemm + activation fusion) still see them; their real output is
computed too, so later ops see real values.

Like torch.jit.trace, Python control flow runs once, at trace time: an `if` on a flag, a
shape or a value takes the branch it took then, and the graph keeps that branch only. The
forward runs twice, at two batch sizes on two random inputs; a value recorded from the batch
size (a Reshape target `x.shape[0]`, an Expand shape) is rewritten to ONNX's batch-free form
(0 = copy the dim, -1 = infer it, Expand's 1 = keep it); an Expand that grows a size-1 dim to
the batch (a class token: `token.expand(x.shape[0], -1)`) gets its shape computed from
Shape(x) instead, as ONNX exporters write it. Anything else that differs between the two runs
(constants built from input values, data-dependent branches) is a ConfigError. The traced
graph is then checked against the eager outputs of both runs.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Sequence

import numpy as np

from .. import backend
from ..autograd import function as _function
from ..autograd.grad_mode import no_grad
from ..autograd.tensor import Tensor
from ..errors import ConfigError
from ..nn.module import Module
from .ir import Graph, Node, Shape
from .ops import get_op
from .ops_onnx import ONNX_DTYPES
from .reference import evaluate_graph

#: the two batch sizes the forward is traced at (different, and unlikely feature sizes)
BATCHES = (3, 5)
_LOCK = threading.Lock()  # Module.__call__ is patched for the duration of one trace


class OpRecorder:
    """Turns the ops and child-module calls of one forward run into IR nodes (the builder
    that `Function.lower` receives)."""

    def __init__(self, tracer: Any, model: Module, lowerable: Callable[[Module], bool]) -> None:
        self.t = tracer
        self.lowerable = lowerable
        self.values: dict[int, str] = {}  # id(tensor or array) -> IR value
        self.keep: list[Any] = []  # keeps traced objects alive so their ids stay unique
        self.params = {id(p): n for n, p in model.named_parameters()}
        self.paths = {id(m): n for n, m in model.named_modules()}
        self.path = ""
        self.paused = 0
        self.count = 0
        self.thread = threading.get_ident()
        self._op = ""
        self.used: set[str] = set()

    # -- the builder API of Function.lower --------------------------------------------------
    def _name(self, base: str) -> str:
        name, k = base, 0
        while name in self.t.shapes or name in self.t.graph.initializers or name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)  # a several-output node's own name is no value
        return name

    def node(self, op: str, inputs: Sequence[str], n_out: int = 1, **attrs: Any) -> Any:
        """Append one node; return its output value (a list of them when n_out > 1)."""
        name = self._name(f"{self.path}/{op}" if self.path else op)
        outs = [name] if n_out == 1 else [f"{name}:{k}" for k in range(n_out)]
        ins = list(inputs)
        while ins and not ins[-1]:
            ins.pop()
        node = Node(op, ins, outs, attrs, name)
        shapes = get_op(node).infer(node, [self.t.shapes.get(i) for i in ins],
                                    self.t.graph.initializers)
        self.t.graph.nodes.append(node)
        for k, out in enumerate(outs):
            self.t.shapes[out] = shapes[k] if k < len(shapes) else None
        return outs[0] if n_out == 1 else outs

    def ints(self, values: Sequence[int]) -> str:
        """An int64 1-D initializer."""
        return self.const(np.asarray(list(values), np.int64).reshape(-1))

    def const(self, value: Any) -> str:
        """An initializer; floats (Python numbers included) in the model's dtype."""
        arr = np.array(backend.to_numpy(value), copy=True)
        if arr.dtype.kind == "f" or isinstance(value, float):
            arr = arr.astype(self.t.dtype)
        self.count += 1
        name = self._name(f"{self.path}/const{self.count}" if self.path else f"const{self.count}")
        self.t.graph.initializers[name] = arr
        self.t.shapes[name] = arr.shape
        return name

    def shape(self, value: str) -> Shape:
        """The (concrete, during tracing) shape of a value."""
        return self.t.shapes[value]

    def array(self, arr: Any) -> str | None:
        """The IR value a traced tensor holds as this very array (a mask's), if any."""
        return self.values.get(id(arr))

    def onnx_dtype(self, dtype: Any) -> int:
        """The ONNX type enum of a NumPy dtype."""
        found = [k for k, v in ONNX_DTYPES.items() if v == np.dtype(dtype)]
        if not found:
            raise self.refuse(f"a cast to {dtype}")
        return found[0]

    def refuse(self, what: str) -> ConfigError:
        """The error for something this trace cannot express in the graph."""
        where = self.path or "<root>"
        return ConfigError(f"cannot trace {self._op or 'an op'} in module {where}: {what}")

    def unsupported(self, fn: Any) -> ConfigError:
        """The error for an op with no IR lowering."""
        return ConfigError(f"cannot trace op {type(fn).__name__} in module "
                           f"{self.path or '<root>'}: it has no IR lowering; expected ops with "
                           f"one (arithmetic, activations, reductions, shape ops, indexing, "
                           f"convolution, pooling, normalisation)")

    # -- recording --------------------------------------------------------------------------
    def bind(self, obj: Any, value: str) -> None:
        """Remember that obj (a tensor or a boolean array) holds the IR value."""
        self.values[id(obj)] = value
        self.keep.append(obj)
        if isinstance(obj, Tensor):  # a tensor's array used as an index stays traced
            self.values[id(obj.data)] = value
            self.keep.append(obj.data)

    def value_of(self, x: Any) -> str:
        """The IR value of an op input: traced, a parameter, or a new constant."""
        found = self.values.get(id(x))
        if found is not None:
            return found
        pid = self.params.get(id(x))
        if pid is not None:
            if pid not in self.t.graph.initializers:
                self.t.weight(pid, x.data)
            return pid
        return self.const(x.data if isinstance(x, Tensor) else x)

    def active(self) -> bool:
        """True for ops of the tracing thread outside a layer being lowered as a whole."""
        return not self.paused and threading.get_ident() == self.thread

    def record(self, fn: Any, inputs: tuple, result: Any) -> None:
        """Called by Function.apply after each op: lower it when it reads a traced value."""
        if not self.active() or not (any(id(t) in self.values for t in inputs)
                                     or getattr(fn, "ir_name", None) == "Expand"):
            return  # constant work (on parameters, say): its result becomes an initializer
        # ... except an Expand, whose size may be the batch's (a class token grown to
        # x.shape[0] rows): merge_batches can only see that in an Expand node
        self._op = f"op {type(fn).__name__}"
        out = fn.lower(self, [self.value_of(t) for t in inputs])
        results = result if isinstance(result, tuple) else (result,)
        outs = out if isinstance(out, list) else [out]
        for r, v in zip(results, outs):
            self.bind(r, v)
        self._op = ""

    def call_module(self, module: Module, call: Callable, args: tuple, kwargs: dict) -> Any:
        """Lower a child with a layer lowering as a layer; run any other module's forward."""
        path = self.paths.get(id(module), type(module).__name__.lower())
        if (self.lowerable(module) and len(args) == 1 and not kwargs
                and id(args[0]) in self.values):
            self.paused += 1
            try:
                out = call(module, *args)
            finally:
                self.paused -= 1
            self.bind(out, self.t.lower(module, self._name(path or "model"),
                                        self.values[id(args[0])]))
            return out
        outer, self.path = self.path, path
        try:
            if type(module).__name__ == "Sequential" and len(args) == 1 and not kwargs:
                x = args[0]  # child by child: Sequential's own forward runs fused eager ops
                for child in module._modules.values():
                    x = child(x)
                return x
            return call(module, *args, **kwargs)
        finally:
            self.path = outer


def record_forward(model: Module, tracer: Any, shapes: Sequence[tuple[int, ...]], seed: int,
                   lowerable: Callable[[Module], bool]
                   ) -> tuple[list[str], list[np.ndarray], list[np.ndarray]]:
    """Run model's forward once on random inputs of these shapes (one per graph input and
    forward argument); return (output values, eager outputs, the inputs). The tracer's graph
    receives the nodes."""
    rec = OpRecorder(tracer, model, lowerable)
    rng = np.random.default_rng(seed)
    xs = [Tensor(rng.standard_normal(shape).astype(tracer.dtype), _keep=True)
          for shape in shapes]
    for x, v in zip(xs, tracer.graph.inputs):
        rec.bind(x, v.name)
    original = Module.__call__

    def traced_call(self: Module, *args: Any, **kwargs: Any) -> Any:
        if not rec.active():
            return original(self, *args, **kwargs)
        return rec.call_module(self, original, args, kwargs)

    modes = {id(m): m.training for m in model.modules()}
    with _LOCK:
        Module.__call__ = traced_call  # type: ignore[method-assign]
        _function.RECORDER = rec
        try:
            model.eval()
            with no_grad(), np.errstate(all="ignore"):
                out = model(*xs)
        finally:
            _function.RECORDER = None
            Module.__call__ = original  # type: ignore[method-assign]
            for m in model.modules():
                object.__setattr__(m, "training", modes[id(m)])
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    values = []
    for k, o in enumerate(outs):
        if not isinstance(o, Tensor) or id(o) not in rec.values:
            raise ConfigError(f"cannot trace {type(model).__name__}: expected forward to return "
                              f"tensors computed from its input, found output {k} "
                              f"{type(o).__name__} that does not depend on it")
        values.append(rec.values[id(o)])
    return values, [backend.to_numpy(o.data) for o in outs], [x.data for x in xs]


def merge_batches(g1: Graph, g2: Graph, in1: dict[str, Shape], in2: dict[str, Shape]) -> None:
    """Make g1 batch-size free using g2, the same forward traced at another batch size:
    rewrite batch-sized Reshape/Expand entries, refuse any other difference (in place)."""
    if [(n.op, n.inputs, n.outputs) for n in g1.nodes] != \
            [(n.op, n.inputs, n.outputs) for n in g2.nodes]:
        raise ConfigError(f"cannot trace {g1.name}: forward ran different ops at batch sizes "
                          f"{BATCHES[0]} and {BATCHES[1]} on random inputs; expected the same "
                          f"ops every call (data-dependent Python control flow cannot be "
                          f"traced)")
    users = {i: n for n in g1.nodes for i in n.inputs}
    for n1, n2 in zip(g1.nodes, g2.nodes):
        if n1.attrs != n2.attrs:
            raise ConfigError(f"cannot trace node {n1.name}: its attributes {n1.attrs} and "
                              f"{n2.attrs} change with the batch size or the input values; "
                              f"expected them fixed")
    for name, a in list(g1.initializers.items()):
        b = g2.initializers[name]
        if a.shape == b.shape and np.array_equal(a, b, equal_nan=True):
            continue
        node = users.get(name)
        fixed = None
        if node is not None and node.inputs[1:2] == [name] and node.op in ("Reshape", "Expand"):
            fixed = _batch_free(node.op, a, b, in1[node.inputs[0]], in2[node.inputs[0]])
        if fixed is None:
            where = f"used by node {node.name}" if node is not None else "unused"
            raise ConfigError(f"cannot trace {g1.name}: constant {name!r} ({where}) changes with "
                              f"the batch size or the input values (shape {a.shape} vs "
                              f"{b.shape}); expected constants fixed, with the batch size "
                              f"only in reshape targets (as -1 or x.shape[0]) and expands")
        if node.op == "Expand" and BATCH in fixed:
            _batch_sized_expand(g1, node, fixed)
        else:
            g1.initializers[name] = fixed


#: an Expand shape entry that _batch_free found to be the batch size (no valid size is < 0)
BATCH = -2


def _batch_sized_expand(g: Graph, node: Node, target: np.ndarray) -> None:
    """Compute an Expand's shape at run time, as ONNX exporters do: its batch-sized entries
    from Shape(first input)[0], the rest constant: Concat(Gather(Shape(x), [0]), [sizes...]).

    Shape inference (graph/shapes.py) follows these small vectors, so the Expand's output
    shape is known wherever the input's is: symbolic ("N", ...) in the graph, concrete in
    a compiled plan. Gather (not Shape's start/end) keeps the file valid at opset 13.
    """
    at = g.nodes.index(node)
    base = node.name or "expand"
    dims = g.unique_name(f"{base}/input_shape")
    index = g.unique_name(f"{base}/batch_axis")
    g.initializers[index] = np.zeros(1, np.int64)
    batch = g.unique_name(f"{base}/batch")
    new = [Node("Shape", [g.inputs[0].name], [dims], {}, dims),
           Node("Gather", [dims, index], [batch], {"axis": 0}, batch)]
    pieces: list[str] = []
    run: list[int] = []  # constant sizes since the last batch entry
    for v in [*target.tolist(), None]:
        if v != BATCH and v is not None:
            run.append(int(v))
            continue
        if run:
            pieces.append(g.unique_name(f"{base}/sizes"))
            g.initializers[pieces[-1]] = np.asarray(run, np.int64)
            run = []
        if v == BATCH:
            pieces.append(batch)
    shape = node.inputs[1]  # the Concat computes the value the constant held
    del g.initializers[shape]
    new.append(Node("Concat", pieces, [shape], {"axis": 0}, shape))
    g.nodes[at:at] = new


def _batch_free(op: str, t1: np.ndarray, t2: np.ndarray, s1: Shape, s2: Shape
                ) -> np.ndarray | None:
    """A Reshape/Expand shape with its batch-sized entries rewritten, or None when it cannot."""
    if t1.shape != t2.shape or t1.ndim != 1:
        return None
    out = t1.copy()
    diff = [i for i in range(len(t1)) if t1[i] != t2[i]]
    left = []
    lead = len(t1) - len(s1)  # Expand aligns the input's dims to the end of the shape
    for i in diff:
        j = i if op == "Reshape" else i - lead
        if 0 <= j < len(s1) and (t1[i], t2[i]) == (s1[j], s2[j]):
            out[i] = 0 if op == "Reshape" else 1  # copy (Reshape) / keep (Expand) that dim
        elif op == "Expand" and (t1[i], t2[i]) == BATCHES:
            out[i] = BATCH  # a size-1 (or new) dim grown to the batch: computed at run time
        else:
            left.append(i)
    if op == "Reshape" and len(left) == 1 and -1 not in out:
        out[left[0]] = -1
        left = []
    return None if left else out


def check_against_eager(graph: Graph, xs: Sequence[np.ndarray], expected: list[np.ndarray]
                        ) -> None:
    """ConfigError unless the traced graph gives the eager outputs on the traced inputs."""
    with np.errstate(all="ignore"):
        got = evaluate_graph(graph, {v.name: x for v, x in zip(graph.inputs, xs)})
    for v, a, e in zip(graph.outputs, got, expected):
        a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
        tol = 1e-4 * max(1.0, float(np.nanmax(np.abs(e))) if e.size else 1.0)
        if a.shape != e.shape or not np.allclose(a, e, rtol=1e-4, atol=tol, equal_nan=True):
            raise ConfigError(f"cannot trace {graph.name}: the traced graph's output {v.name!r} "
                              f"differs from the eager forward (shape {a.shape} vs {e.shape}); "
                              f"expected forward to use only nnforge ops on its input")
