"""One contiguous buffer for all parameters and optimizer state, updated chunk by chunk.

Why: a NumPy optimizer step is a dozen ufunc passes. Run per parameter over whole arrays, each
pass streams every array through the cache again and small parameters pay the call overhead
for nothing. Here every parameter's `.data` is a view into one flat buffer (state arrays share
the layout), the update runs on cache-sized chunks so all passes after the first hit L2, small
parameters are packed into one shared chunk, and the chunks can be split over two threads
(ufuncs release the GIL) when timing shows that pays.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from .. import backend
from ..backend import usable_cpus
from ..errors import DTypeError, ShapeError

#: Elements per chunk: 5 float32 arrays of 32k elements (640 KiB) stay in a 1-2 MiB L2 cache.
CHUNK = 32768
#: Parameters smaller than this are packed together into shared chunks.
SMALL = CHUNK // 4
#: Below this many elements a second thread costs more than it saves.
THREAD_MIN = 4 * CHUNK
#: Every this many steps, subnormal values in the optimizer state are set to zero.
FLUSH_EVERY = 64

Kernel = Callable[[Any, Any, tuple, tuple, tuple], None]
FlushRule = Callable[["Flush", Any, tuple], None]


class Flush:
    """What an optimizer's flush rule gets per chunk: scratch arrays and two ways to flush."""

    __slots__ = ("xp", "tiny", "quarter", "t", "t2", "mask", "mask2")

    def __init__(self, xp: Any, dtype: Any, t: Any, t2: Any, mask: Any, mask2: Any) -> None:
        info = np.finfo(dtype)
        self.xp, self.t, self.t2, self.mask, self.mask2 = xp, t, t2, mask, mask2
        self.tiny = dtype.type(info.tiny)
        # below a quarter ulp of w, with a factor 2 to spare for the rounding of the test itself
        self.quarter = float(2.0 ** -(info.nmant + 4))

    def absorbed_by(self, eps: float) -> bool:
        """True when sqrt of any subnormal, added to eps or more, rounds away (is absorbed)."""
        return eps > 0 and math.sqrt(float(self.tiny)) <= eps * self.quarter

    def zero(self, s: Any, unless: Any = None) -> None:
        """Flush every subnormal of s (but none where the array `unless` is not 0)."""
        xp, t, mask = self.xp, self.t, self.mask
        xp.abs(s, out=t)
        xp.less(t, self.tiny, out=mask)
        if not mask.any():  # the usual case (no subnormals) costs two passes and a test
            return
        if unless is not None:
            xp.equal(unless, 0, out=self.mask2)
            xp.logical_and(mask, self.mask2, out=mask)
        xp.copyto(s, 0, where=mask)

    def zero_below_ulp(self, s: Any, p: Any, coef: float,
                       den: Callable[[Any], None] | None = None) -> None:
        """Flush subnormals x of s where |coef * x / den| is under a quarter ulp of p: the
        weight's update from x rounds away. den(out) writes a lower bound of the update's
        denominator into out (only called when s holds a subnormal); None means 1."""
        xp, t, t2, mask, mask2 = self.xp, self.t, self.t2, self.mask, self.mask2
        xp.abs(s, out=t)
        xp.less(t, self.tiny, out=mask)
        if not mask.any():
            return
        with np.errstate(all="ignore"):  # overflow to inf and 0/0 are answers here
            xp.multiply(t, t.dtype.type(coef), out=t)
            if den is not None:
                den(t2)
                xp.divide(t, t2, out=t)  # den 0: inf or NaN, which the test never flushes
            xp.abs(p, out=t2)
            xp.multiply(t2, t2.dtype.type(self.quarter), out=t2)
            xp.less_equal(t, t2, out=mask2)
        xp.logical_and(mask, mask2, out=mask)
        xp.copyto(s, 0, where=mask)


class _Unit:
    """One chunk of work: views into the flat buffers plus where its gradient comes from."""

    __slots__ = ("p", "states", "tmps", "pieces", "gbuf")

    def __init__(self, p: Any, states: tuple, tmps: tuple, pieces: tuple, gbuf: Any) -> None:
        self.p, self.states, self.tmps, self.pieces, self.gbuf = p, states, tmps, pieces, gbuf


class FlatParams:
    """Owns the flat parameter and state buffers of one optimizer and runs its update kernel."""

    def __init__(self, params: Sequence[Any], state_names: Sequence[str], num_tmp: int,
                 threads: int | None = None) -> None:
        self.params = list(params)
        self.shapes = [tuple(p.data.shape) for p in self.params]
        # column-major parameters (nn.Linear's weights) keep their layout inside the buffer
        self.orders = ["F" if p.data.ndim > 1 and p.data.flags.f_contiguous
                       and not p.data.flags.c_contiguous else "C" for p in self.params]
        self.sizes = [int(np.prod(s, dtype=np.int64)) for s in self.shapes]
        self.state_names = tuple(state_names)
        self.num_tmp = num_tmp
        self.numel = sum(self.sizes)
        self.requested = threads
        self.threads = (2 if usable_cpus() >= 2 else 1) if threads is None else max(1, threads)
        # big parameters first, the small ones packed together at the end
        order = sorted(range(len(self.params)), key=lambda i: self.sizes[i] < SMALL)
        self.offsets = [0] * len(self.params)
        off = 0
        for i in order:
            self.offsets[i] = off
            off += self.sizes[i]
        self.order = order
        self.steps = [0] * len(self.params)
        self._mask: Any = None  # flush_subnormals' scratch: two float and two bool arrays
        self.flush_every = FLUSH_EVERY  # 0: never (benchmarks compare)
        self._allocate(_common_dtype(self.params), None)

    # -- buffers -------------------------------------------------------------------------------
    def _allocate(self, dtype: Any, old_states: dict[str, Any] | None) -> None:
        """(Re)build the flat buffers in dtype, moving parameter values (and state) into them;
        on the device of the parameters (NumPy, or CuPy on their GPU)."""
        first = self.params[0].data if self.params else None
        xp = backend.get_array_module(first) if self.params else np
        self.xp = xp
        self.device = backend.device_of(first) if self.params else "cpu"
        with first.device if xp is not np else contextlib.nullcontext():
            self._fill(dtype, old_states)

    def _fill(self, dtype: Any, old_states: dict[str, Any] | None) -> None:
        xp = self.xp
        self.dtype = np.dtype(dtype)
        self._mask = None  # flush scratch in the old dtype
        self.flat = xp.empty(self.numel, self.dtype)
        self.views = []
        for i, (p, off, n) in enumerate(zip(self.params, self.offsets, self.sizes)):
            view = self._shaped(self.flat[off:off + n], i)
            view[...] = p.data
            p.data = view
            self.views.append(view)
        self.states = {}
        for name in self.state_names:
            arr = xp.zeros(self.numel, self.dtype)
            if old_states is not None:
                arr[...] = old_states[name]
            self.states[name] = arr
        self._build_units()

    def reset_states(self, names: Sequence[str], num_tmp: int) -> None:
        """Switch to another set of state buffers (kept where the name stays, else zeros)."""
        self.sync()
        old = self.states
        self.state_names = tuple(names)
        self.num_tmp = num_tmp
        self._allocate(self.dtype, None)
        for name in self.state_names:
            if name in old:
                self.states[name][...] = old[name]

    def _build_units(self) -> None:
        """Split the flat range into chunks and deal them out to the workers."""
        plans: list[list[tuple[int, int, int]]] = []  # each: pieces (param, start, stop)
        packed: list[tuple[int, int, int]] = []
        packed_n = 0
        # on a GPU cache-sized chunks buy nothing and cost kernel launches: one unit holds all
        chunk = CHUNK if self.xp is np else max(self.numel, 1)
        for i in self.order:
            n = self.sizes[i]
            if n == 0:
                continue
            if n >= SMALL and self.xp is np:
                parts = -(-n // CHUNK)
                bounds = [n * k // parts for k in range(parts + 1)]
                plans.extend([[(i, a, b)] for a, b in zip(bounds, bounds[1:])])
                continue
            if packed_n + n > chunk:
                plans.append(packed)
                packed, packed_n = [], 0
            packed.append((i, 0, n))
            packed_n += n
        if packed:
            plans.append(packed)
        self.plans: dict[int, list[list[_Unit]]] = {}
        width = max((sum(b - a for _, a, b in plan) for plan in plans), default=1)
        eligible = self.numel >= THREAD_MIN and self.xp is np and self.threads > 1
        scratch = [([self.xp.empty(width, self.dtype) for _ in range(self.num_tmp)],
                    self.xp.empty(width, self.dtype)) for _ in range(2 if eligible else 1)]
        self.scratch = scratch
        for nworkers in (1, 2) if eligible else (1,):
            groups = _split(plans, nworkers)
            self.plans[nworkers] = [[self._unit(plan, *scratch[w]) for plan in group]
                                    for w, group in enumerate(groups)]
        # None: time both now and then and use the faster; else the fixed count asked for
        self.chooser = _Chooser() if eligible and self.requested is None else None

    def _unit(self, plan: list[tuple[int, int, int]], tmps: list, gbuf: Any) -> _Unit:
        """Views for one chunk; packed chunks are contiguous because small params are adjacent."""
        i0, a0, _ = plan[0]
        start = self.offsets[i0] + a0
        n = sum(b - a for _, a, b in plan)
        stop = start + n
        return _Unit(self.flat[start:stop], tuple(self.states[s][start:stop]
                                                  for s in self.state_names),
                     tuple(t[:n] for t in tmps), tuple(plan), gbuf[:n] if len(plan) > 1 else None)

    def _shaped(self, flat: Any, i: int) -> Any:
        """A 1-D slice of a buffer as parameter i: its shape, in its memory order."""
        if self.orders[i] == "F":
            return flat.reshape(self.shapes[i][::-1]).T
        return flat.reshape(self.shapes[i])

    def state_view(self, name: str, i: int) -> Any:
        """Parameter i's slice of a state buffer, in the parameter's shape."""
        off, n = self.offsets[i], self.sizes[i]
        return self._shaped(self.states[name][off:off + n], i)

    # -- copying and pickling ------------------------------------------------------------------
    #: what a copy keeps as it is; buffers, views, chunks and the array module are rebuilt
    _KEPT = ("params", "shapes", "orders", "sizes", "state_names", "num_tmp", "numel",
             "requested", "offsets", "order", "steps", "flush_every")

    def __getstate__(self) -> dict[str, Any]:
        """The layout, step counts and state values; the backend by name, not as a module
        (modules do not pickle), so that deepcopy and pickle work (Trainer, multiprocessing)."""
        state = {k: self.__dict__[k] for k in self._KEPT}
        state["backend"] = "numpy" if self.xp is np else "cupy"
        state["states"] = dict(self.states)  # whole flat buffers: one array per state name
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Rebuild the flat buffers around the (copied) parameters, as _rehome moves them."""
        state = dict(state)
        name, old = state.pop("backend"), state.pop("states")
        if name == "cupy":  # a DeviceError that names the fix when this process has no GPU
            backend.cupy_module(_common_device(state["params"]))
        self.__dict__.update(state)
        self.threads = (2 if usable_cpus() >= 2 else 1) if self.requested is None \
            else max(1, self.requested)  # this process's CPUs, not the pickling one's
        self._mask = None
        # the parameters' values come from their own (copied) arrays; p.data may have been
        # replaced (model.double()) since the last step, so the state follows it as a step would
        dtype, device = _common_dtype(self.params), _common_device(self.params)
        self._allocate(dtype, {k: backend.to_device(v.astype(dtype), device)
                               for k, v in old.items()})

    # -- keeping parameters inside the buffer ---------------------------------------------------
    def sync(self) -> None:
        """Move parameters whose `.data` was replaced by the user back into the buffer."""
        for i, (p, view) in enumerate(zip(self.params, self.views)):
            if p.data is not view and self._rehome(i):
                return

    def _rehome(self, i: int) -> bool:
        """Copy parameter i's new array into its slot; True when everything was reallocated."""
        p = self.params[i]
        data = p.data
        if tuple(data.shape) != self.shapes[i]:
            raise ShapeError(f"parameter {i} was replaced by an array of shape "
                             f"{tuple(data.shape)}; the optimizer holds state for shape "
                             f"{self.shapes[i]}: create a new optimizer after resizing")
        if data.dtype != self.dtype or backend.device_of(data) != self.device:
            # e.g. model.double() or model.to("cuda"): move everything (the state too) once the
            # whole model has the new dtype and device
            new = _common_dtype(self.params)
            device = _common_device(self.params)
            old = {k: backend.to_device(v.astype(new), device) for k, v in self.states.items()}
            self._allocate(new, old)
            return True
        self.views[i][...] = data
        p.data = self.views[i]
        return False

    # -- the update ----------------------------------------------------------------------------
    def apply(self, kernel: Kernel, scalars: Callable[[int], tuple],
              flush: FlushRule | None = None) -> None:
        """Run kernel(p, g, states, tmps, scalars) over every chunk whose parameters have grads;
        every flush_every steps, flush_subnormals(flush)."""
        params, steps = self.params, self.steps
        grads: list[Any] = [None] * len(params)
        complete = True
        for i, p in enumerate(params):
            g = p.grad
            if g is None:
                complete = False
                continue
            if getattr(g, "shape", None) != self.shapes[i]:
                _bad_grad(i, g, self.shapes[i])
            if g.dtype != self.dtype:
                g = g.astype(self.dtype)
            grads[i] = np.ravel(g, order=self.orders[i])  # the buffer's element order
        first = steps[0] if steps else 0
        if complete and all(s == first for s in steps):
            steps[:] = [first + 1] * len(steps)
            sc = scalars(first + 1)
            chooser = self.chooser
            workers = self.plans[chooser.pick() if chooser else len(self.plans)]
            if len(workers) == 1:
                _run(workers[0], grads, kernel, sc)
            else:
                _pool().run(lambda: _run(workers[1], grads, kernel, sc),
                            lambda: _run(workers[0], grads, kernel, sc))
            if chooser:
                chooser.record(len(workers), time.perf_counter())
            if self.flush_every and (first + 1) % self.flush_every == 0:
                self.flush_subnormals(flush)
            return
        self._apply_piecewise(kernel, scalars, grads)
        every = self.flush_every
        if every and any(steps[i] % every == 0 for i, g in enumerate(grads) if g is not None):
            self.flush_subnormals()

    def flush_subnormals(self, rule: FlushRule | None = None) -> None:
        """Set optimizer state values smaller than the dtype's smallest normal number to zero,
        where `rule` (the optimizer's, see Flush) shows that this cannot change an update.

        Why: the momentum of a weight whose gradient stays exactly zero (a dead ReLU unit, an
        input that is always 0) shrinks by beta every step. After some 800 Adam steps it is
        subnormal, and there it stays: 0.9 times a few units of the last place rounds back to
        the same value. x86 CPUs take a slow microcode path for every vector that holds a
        subnormal, so 10 dead units of 256 in an MLP's first layer made every later Adam step
        19-28% slower (benchmarks/optim_speed.py, "dead units"). The weights must not notice:
        a value is flushed only where its whole contribution to the update (at the current lr)
        lies below a quarter of the last place of the weight, so the weight rounds to the same
        value with or without it, or where it cannot reach the update at all: a subnormal
        second moment beside an eps so large that sqrt(tiny) vanishes next to it. With eps 0
        or tiny, a subnormal second moment is a real denominator and stays; a weight of 0
        keeps its subnormal momentum (the tests check bit-identical weights). Runs on step
        numbers, so a resumed run flushes exactly where an uninterrupted one does. float16
        state is left alone: its smallest normal number (6e-5) is not negligible.
        """
        if not self.state_names or self.dtype.itemsize < 4:
            return
        xp = self.xp
        width = max(len(u.p) for u in self.plans[1][0])
        if self._mask is None or len(self._mask[0]) < width:
            self._mask = (xp.empty(width, self.dtype), xp.empty(width, self.dtype),
                          xp.empty(width, bool), xp.empty(width, bool))
        for u in self.plans[1][0]:
            n = len(u.p)
            f = Flush(xp, self.dtype, *(a[:n] for a in self._mask))
            if rule is None:
                for s in u.states:
                    f.zero(s)
            else:
                rule(f, u.p, u.states)

    def _apply_piecewise(self, kernel: Kernel, scalars: Callable[[int], tuple],
                         grads: list[Any]) -> None:
        """Some grads missing or step counts differ (frozen layers): chunk by chunk, one thread."""
        steps = self.steps
        for i, g in enumerate(grads):
            if g is not None:
                steps[i] += 1
        cache: dict[int, tuple] = {}

        def sc(step: int) -> tuple:
            if step not in cache:
                cache[step] = scalars(step)
            return cache[step]

        tmps, _ = self.scratch[0]
        for u in self.plans[1][0]:
            idx = [i for i, _, _ in u.pieces]
            if all(grads[i] is not None for i in idx) and len({steps[i] for i in idx}) == 1:
                _run([u], grads, kernel, sc(steps[idx[0]]))
                continue
            for i, a, b in u.pieces:  # a packed chunk whose parameters disagree
                if grads[i] is None:
                    continue
                s, e = self.offsets[i] + a, self.offsets[i] + b
                kernel(self.flat[s:e], grads[i][a:b],
                       tuple(self.states[n][s:e] for n in self.state_names),
                       tuple(t[:e - s] for t in tmps), sc(steps[i]))


def _bad_grad(i: int, g: Any, shape: tuple) -> None:
    """Raise the error that names what is wrong with parameter i's gradient."""
    if not hasattr(g, "shape") or not hasattr(g, "dtype"):
        # a list or a number: converting it silently would hide a mistake elsewhere
        raise DTypeError(f"gradient of parameter {i} is a {type(g).__name__}, expected an "
                         f"array of shape {shape}")
    raise ShapeError(f"gradient of parameter {i} has shape {tuple(g.shape)}, expected {shape}")


def _run(units: list[_Unit], grads: list[Any], kernel: Kernel, sc: tuple) -> None:
    for u in units:
        if u.gbuf is None:
            i, a, b = u.pieces[0]
            g = grads[i][a:b]
        else:
            g = u.gbuf
            n = 0
            for i, a, b in u.pieces:
                g[n:n + b - a] = grads[i][a:b]
                n += b - a
        kernel(u.p, g, u.states, u.tmps, sc)


def _split(plans: list, nworkers: int) -> list[list]:
    """Deal chunks out contiguously, about the same number of elements per worker."""
    sizes = [sum(b - a for _, a, b in plan) for plan in plans]
    total = sum(sizes)
    groups: list[list] = [[] for _ in range(nworkers)]
    done, w = 0, 0
    for plan, n in zip(plans, sizes):
        if w < nworkers - 1 and done >= total * (w + 1) / nworkers:
            w += 1
        groups[w].append(plan)
        done += n
    return [g for g in groups if g]


class _Chooser:
    """Picks one or two workers by timing training iterations with each, every PERIOD steps.

    A second thread halves the update on an idle machine but can lose overall when the other
    core is busy (another process, or OpenBLAS's threads, which spin after a matmul and are
    then late for the next one). So what is timed is the whole period from one step() to the
    next, in blocks of PROBE steps per count; the results are bit-identical either way.
    """

    PROBE = 6  # steps per worker count in a probe round (the first of each block is not timed)
    PERIOD = 500  # steps from one probe round to the next
    MARGIN = 0.95  # two workers must be at least 5% faster to be kept

    def __init__(self) -> None:
        self.n = 0
        self.mode = 1
        self.last: float | None = None
        self.times: dict[int, list[float]] = {1: [], 2: []}

    def pick(self) -> int:
        """Worker count for this step."""
        k = self.n % self.PERIOD
        if k < 2 * self.PROBE:
            return 1 if k < self.PROBE else 2
        return self.mode

    def record(self, mode: int, now: float) -> None:
        """Note the time at the end of this step."""
        k = self.n % self.PERIOD
        self.n += 1
        prev, self.last = self.last, now
        if k >= 2 * self.PROBE:
            return
        if k % self.PROBE and prev is not None:
            self.times[mode].append(now - prev)
        if k == 2 * self.PROBE - 1:
            one, two = (sorted(t)[len(t) // 2] if t else float("inf")
                        for t in (self.times[1], self.times[2]))
            self.mode = 2 if two < self.MARGIN * one else 1
            self.times = {1: [], 2: []}


def _common_device(params: Sequence[Any]) -> str:
    devices = {backend.device_of(p.data) for p in params}
    if len(devices) > 1:
        raise backend.DeviceError(f"expected all parameters of one optimizer on one device, "
                                  f"found {sorted(devices)}: move the whole model with "
                                  f"model.to(device)")
    return devices.pop() if devices else "cpu"


def _common_dtype(params: Sequence[Any]) -> Any:
    dtypes = {p.data.dtype for p in params}
    if len(dtypes) > 1:
        # name the odd ones out: a stray float64 nn.Parameter(np.ones(n)) in a float32 model
        # is the usual cause, and the list of dtypes alone does not say where it is
        counts = {d: sum(p.data.dtype == d for p in params) for d in dtypes}
        common = max(counts, key=lambda d: counts[d])
        odd = [f"parameter {i} {tuple(p.data.shape)} is {p.data.dtype}"
               for i, p in enumerate(params) if p.data.dtype != common][:3]
        raise DTypeError(f"expected all parameters of one optimizer to share a dtype ({common}, "
                         f"that of most), found {'; '.join(odd)}: convert with "
                         f"model.to({str(common)!r}) or create them as {common}")
    dtype = dtypes.pop() if dtypes else np.dtype(backend.DEFAULT_DTYPE)
    if not backend.is_float_dtype(dtype):
        raise DTypeError(f"expected floating point parameters, found {dtype}")
    return dtype


class _Pool:
    """One helper thread: run(a, b) runs a there and b here, then waits (two locks, no queue)."""

    def __init__(self) -> None:
        self._start = threading.Lock()
        self._done = threading.Lock()
        self._busy = threading.Lock()
        self._start.acquire()
        self._done.acquire()
        self._job: Callable[[], None] | None = None
        self._error: BaseException | None = None
        self.pid = os.getpid()
        threading.Thread(target=self._loop, name="nnforge-optim", daemon=True).start()

    def _loop(self) -> None:
        while True:
            self._start.acquire()
            try:
                self._job()  # type: ignore[misc]
            except BaseException as exc:  # handed back to the caller
                self._error = exc
            self._done.release()

    def run(self, there: Callable[[], None], here: Callable[[], None]) -> None:
        """Run both callables concurrently; re-raise the first error."""
        if not self._busy.acquire(blocking=False):  # another thread's optimizer holds the helper
            here()
            there()
            return
        try:
            self._run(there, here)
        finally:
            self._busy.release()

    def _run(self, there: Callable[[], None], here: Callable[[], None]) -> None:
        self._job, self._error = there, None
        self._start.release()
        try:
            here()
        finally:
            self._done.acquire()
        if self._error is not None:
            raise self._error


_POOL: _Pool | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> _Pool:
    global _POOL
    if _POOL is None or _POOL.pid != os.getpid():  # a forked child has no helper thread
        with _POOL_LOCK:
            if _POOL is None or _POOL.pid != os.getpid():
                _POOL = _Pool()
    return _POOL
