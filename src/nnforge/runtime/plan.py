"""Compiling a graph, for one concrete input shape, into a plan: kernels over reused buffers.

Memory planning: every value a kernel writes lives in a slice of a flat "storage" array. A
storage is handed to a later value once its last reader has run, so values whose lifetimes do
not overlap share memory; elementwise ops write over their input when it dies there
(in place); Flatten/Reshape/Identity/Dropout are views and cost nothing. Graph outputs get
storage of their own, and `Plan.run` returns copies, so a caller may keep results while the
plan is reused. One plan serves one call at a time: the session keeps a pool of them.

Dtypes: every value has its own, from shape inference (an int64 Cast is held in int64, a
comparison in bool, a DOUBLE branch in float64), and a storage holds one dtype: values share
memory only with values of the same dtype. Storages per dtype rather than raw bytes viewed as
any dtype: a float32 plan's storages are exactly what they were, and a byte storage would
need its views realigned per dtype for nothing (int values are few and small: indices, shapes,
masks). `check_dtypes` refuses, at compile time, a kernel that does not compute in a value's
dtype (a Conv on int8), so nothing is silently computed in another type.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..errors import ConfigError, ResourceError, out_of_memory
from ..graph.ir import Graph
from ..graph.shapes import check_output_sizes, compute_shapes
from . import conv as _conv  # noqa: F401 - registers the Conv kernels
from .conv import TAIL
from .kernels import IN_PLACE, KERNELS, READS_FEEDS, VIEWS, Ctx, Feed, check_dtypes
from .parallel import SERIAL_BLAS


class _Storage:
    __slots__ = ("size", "end", "dtype", "array")

    def __init__(self, size: int, end: int, dtype: np.dtype) -> None:
        self.size, self.end, self.dtype, self.array = size, end, dtype, None


class Plan:
    """A compiled graph for fixed input shapes: call run(feeds) from one thread at a time."""

    def __init__(self, steps: list[Any], outputs: list[Any], nbytes: int,
                 probed: frozenset[int] = frozenset(), parallel: bool = False,
                 labels: Sequence[str] = ()) -> None:
        self.steps = tuple(steps)
        #: what each step computes ("Gemm 'fc1'"), for error messages
        self.labels = {id(step): label for step, label in zip(self.steps, labels)}
        self.outputs = outputs
        #: bytes of buffers and scratch this plan holds
        self.nbytes = nbytes
        #: indices of the graph inputs whose NaN/Inf check the kernels do as they run
        self.probed = probed
        #: BLAS runs on one thread while this plan runs (its kernels split their own work)
        self.parallel = parallel
        first = outputs[0] if outputs else None
        if isinstance(first, np.ndarray) and not parallel:  # the hot path: nothing to look up
            run_steps, copy = self.steps, first.copy

            def run_one(feeds: Sequence[np.ndarray]) -> np.ndarray:
                try:  # free when nothing is raised; `step` names the failing kernel
                    for step in run_steps:
                        step(feeds)
                except MemoryError as exc:
                    raise self._out_of_memory(step, exc) from None
                return copy()
            self.run_one = run_one  # type: ignore[method-assign]

    def run(self, feeds: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Run every kernel; return fresh copies of the outputs."""
        if self.parallel:
            SERIAL_BLAS.enter()
        step = None
        try:
            for step in self.steps:
                step(feeds)
        except MemoryError as exc:
            raise self._out_of_memory(step, exc) from None
        finally:
            if self.parallel:
                SERIAL_BLAS.exit()
        return [o(feeds).copy() if callable(o) else o.copy() for o in self.outputs]

    def run_one(self, feeds: Sequence[np.ndarray]) -> np.ndarray:
        """run() for a graph with one output: that output."""
        return self.run(feeds)[0]

    def _out_of_memory(self, step: Any, exc: MemoryError) -> ResourceError:
        """The nnforge error for a kernel that ran out of memory."""
        return out_of_memory(f"running {self.labels.get(id(step), 'a kernel')}", exc)


def compile_plan(graph: Graph, input_shapes: Sequence[tuple[int, ...]],
                 check_finite: bool = False, threads: int = 1,
                 allow_nan: frozenset[int] = frozenset()) -> Plan:
    """Build a Plan for the given concrete shapes of the graph inputs.

    With check_finite, kernels that see a whole input (a Gemm reading it) check it for
    NaN/Inf as a side effect; `Plan.probed` lists the inputs they cover, never those in
    allow_nan (inputs the graph fills NaN in: the caller checks them for Inf). `threads` > 1 lets
    kernels split their work (the convolutions' batch chunks) over that many threads.
    """
    infos = compute_shapes(graph, {v.name: tuple(s) for v, s in zip(graph.inputs, input_shapes)})
    # sizes that the batch does not explain (a huge Pad or Expand) fail here, not in np.zeros
    rows = input_shapes[0][0] if input_shapes and len(input_shapes[0]) else 1
    check_output_sizes(graph, infos, max(1, rows))
    dtype = plan_dtype(graph)
    ctx = _CountingCtx(dtype, check_finite, threads, allow_nan)

    def dtype_of(name: str) -> np.dtype:
        info = infos.get(name)
        return np.dtype(info.dtype) if info is not None and info.dtype else dtype
    nodes = graph.nodes
    outputs = set(graph.output_names)
    last: dict[str, int] = {}
    for i, node in enumerate(nodes):
        for name in node.inputs:
            last[name] = i
    for name in outputs:
        last[name] = len(nodes) + 1  # outputs stay alive (and unshared) to the end

    def shape(name: str) -> tuple[int, ...]:
        s = infos[name].shape
        if s is None or not all(isinstance(d, int) for d in s):
            raise ConfigError(f"cannot compile: the shape of {name!r} is unknown ({s})")
        return tuple(s)

    # phase 1: decide where every value lives (storage + shape) without allocating
    env: dict[str, Any] = {v.name: Feed(k, shape(v.name)) for k, v in enumerate(graph.inputs)}
    env.update(graph.initializers)
    where: dict[str, tuple[_Storage, tuple[int, ...]]] = {}
    storages: list[_Storage] = []

    def allocate(name: str, i: int, dedicated: bool = False) -> None:
        size, kind = int(np.prod(shape(name))), dtype_of(name)
        end = last.get(name, i)
        free = [s for s in storages if s.end < i and s.dtype == kind] if not dedicated else []
        fits = [s for s in free if s.size >= size]
        st = min(fits, key=lambda s: s.size) if fits else (
            max(free, key=lambda s: s.size) if free else None)
        if st is None:
            st = _Storage(size, end, kind)
            storages.append(st)
        st.size, st.end = max(st.size, size), end
        where[name] = (st, shape(name))

    # ("copy", feed value, buffer value) or ("node", index, input names)
    program: list[tuple[str, Any, Any]] = []

    def materialize(name: str, i: int, buf: str, dedicated: bool = False) -> str:
        """Copy a graph input (or a view of it) into a buffer before node i."""
        infos[buf] = infos[name]
        last.setdefault(buf, i)
        allocate(buf, i, dedicated)
        program.append(("copy", name, buf))
        return buf

    for i, node in enumerate(nodes):
        if node.op not in KERNELS and node.op not in VIEWS:
            raise ConfigError(f"the NumPy runtime has no kernel for op {node.op!r}")
        check_dtypes(node, [dtype_of(n) if n else None for n in node.inputs],
                     [dtype_of(n) if n else None for n in node.outputs])
        src = node.inputs[0] if node.inputs else ""
        if node.op in VIEWS and (node.op != "Dropout" or not any(node.outputs[1:])):
            out = node.outputs[0]
            if src in where:
                st, _ = where[src]
                st.end = max(st.end, last.get(out, i))
                where[out] = (st, shape(out))
            elif isinstance(env.get(src), Feed):
                env[out] = env[src].view(shape(out))
                if out in outputs:  # an output must not alias the caller's input
                    materialize(out, i, out, dedicated=True)
            else:
                env[out] = np.asarray(env[src]).reshape(shape(out))
            continue
        ins = list(node.inputs)
        for k, name in enumerate(ins):
            if isinstance(env.get(name), Feed) and (k > 0 or node.op not in READS_FEEDS):
                ins[k] = materialize(name, i, f"{name}@{i}.{k}")
        program.append(("node", i, ins))
        for k, out in enumerate(node.outputs):
            if not out:
                continue
            if (k == 0 and node.op in IN_PLACE and ins[0] in where and out not in outputs
                    and where[ins[0]][0].end == i and shape(ins[0]) == shape(out)
                    and dtype_of(ins[0]) == dtype_of(out)):
                st, _ = where[ins[0]]
                st.end = last.get(out, i)
                where[out] = (st, shape(out))
            else:
                allocate(out, i, dedicated=out in outputs)

    # phase 2: allocate storages (with a tail so wide conv views may read past the end)
    try:
        for st in storages:
            st.array = np.zeros(st.size + TAIL, st.dtype)
            ctx.buffers.add(id(st.array))
    except MemoryError:  # the total says more than the one storage that failed
        total = sum((st.size + TAIL) * st.dtype.itemsize for st in storages)
        raise out_of_memory(f"allocating the buffers of a plan for inputs "
                            f"{[tuple(s) for s in input_shapes]}", nbytes=total) from None

    def value(name: str) -> Any:
        if not name:
            return None
        if name in where:
            st, shp = where[name]
            return st.array[:int(np.prod(shp))].reshape(shp)
        return env[name]

    # phase 3: build the kernels over the final arrays
    steps: list[Any] = []
    labels: list[str] = []
    for kind, a, b in program:
        if kind == "copy":
            steps.append(_copy_step(env[a], value(b)))
            labels.append(f"the copy of input {a!r}")
        else:
            node = nodes[a]
            outs = [value(o) for o in node.outputs]
            labels.append(f"{node.op} {node.name!r}")
            # scratch and constants in the node's own dtype (its output's: float64 math in
            # float64, an int Div's scratch in its int type)
            ctx.dtype = dtype_of(node.outputs[0]) if node.outputs and node.outputs[0] else dtype
            try:
                steps.append(KERNELS[node.op](node, [value(n) for n in b], outs, ctx))
            except MemoryError as exc:  # a kernel's scratch or prepared weights
                raise out_of_memory(f"compiling {labels[-1]}", exc) from None
    ctx.dtype = dtype
    out_values = [value(v.name) for v in graph.outputs]
    out_values = [o.getter() if isinstance(o, Feed) else o for o in out_values]
    for k, v in enumerate(graph.outputs):  # a declared type that inference did not give
        have = dtype_of(v.name)
        if v.dtype and np.dtype(v.dtype) != have:
            out_values[k] = _cast(out_values[k], np.dtype(v.dtype))
    nbytes = sum(st.array.nbytes for st in storages) + ctx.nbytes
    return Plan(steps, out_values, nbytes, frozenset(ctx.probed), ctx.serial_blas, labels)


def plan_dtype(graph: Graph) -> np.dtype:
    """The float dtype of values whose dtype is not known (an input declared without one):
    the first float input's, else that of most float weight elements, else the first float
    output's (float32 when nothing is float).

    Not simply input 0's: an embedding model's first input holds int64 ids.
    """
    for v in graph.inputs:
        if v.dtype and np.dtype(v.dtype).kind == "f":
            return np.dtype(v.dtype)
    sizes: dict[np.dtype, int] = {}
    for a in graph.initializers.values():
        if a.dtype.kind == "f":
            sizes[a.dtype] = sizes.get(a.dtype, 0) + a.size
    if sizes:
        return max(sizes, key=lambda d: sizes[d])
    for v in graph.outputs:
        if v.dtype and np.dtype(v.dtype).kind == "f":
            return np.dtype(v.dtype)
    return np.dtype(np.float32)


def _cast(out: Any, dtype: np.dtype) -> Any:
    """An output getter that returns a fresh array of the output's declared dtype."""
    if callable(out):
        return lambda feeds: out(feeds).astype(dtype)
    return lambda feeds: out.astype(dtype)


def _copy_step(feed: Feed, buf: np.ndarray) -> Any:
    get = feed.getter()
    # the buffer has the input's declared dtype (the session coerces feeds to it): "same_kind"
    # makes a float array fed for int ids fail loudly rather than truncate
    return lambda feeds: np.copyto(buf, get(feeds).reshape(buf.shape))


class _CountingCtx(Ctx):
    """Ctx that remembers how many bytes of scratch and constants it handed out."""

    def __init__(self, dtype: Any, check_finite: bool, threads: int,
                 allow_nan: frozenset[int] = frozenset()) -> None:
        super().__init__(dtype, check_finite, threads, allow_nan)
        self.nbytes = 0

    def scratch(self, shape: Any, fill: float | None = None) -> np.ndarray:
        arr = super().scratch(shape, fill)
        self.nbytes += arr.nbytes
        return arr
