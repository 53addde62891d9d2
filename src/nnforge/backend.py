"""The array module nnforge computes with: NumPy today, CuPy where one is asked for."""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

import numpy as np

#: The array module used for new arrays. Kept as a module attribute so a GPU build can swap it.
xp: Any = np

#: Default floating dtype for parameters and inputs.
DEFAULT_DTYPE = np.float32


def get_array_module(*arrays: Any) -> Any:
    """Return the array module (numpy or cupy) that owns the given arrays."""
    for a in arrays:
        mod = type(a).__module__
        if mod.startswith("cupy"):
            import cupy  # noqa: PLC0415 - optional dependency, only when a CuPy array is seen

            return cupy
    return np


def to_numpy(a: Any) -> np.ndarray:
    """Return a NumPy copy/view of an array from any backend."""
    if hasattr(a, "get") and not isinstance(a, np.ndarray):
        return a.get()
    return np.asarray(a)


def usable_cpus() -> int:
    """CPUs this process may run on (respects taskset/cgroups affinity, unlike os.cpu_count)."""
    import os  # noqa: PLC0415

    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def is_float_dtype(dtype: Any) -> bool:
    """True when dtype is a floating point dtype."""
    # the kind letter, not np.issubdtype: this runs for every op's output (3 us -> 0.1 us)
    return np.dtype(dtype).kind == "f"


# -- BLAS threads ----------------------------------------------------------------------------
# nnforge splits some work over its own threads (the convolutions' batch chunks, the compiled
# plans' kernels). While it does, BLAS must run on one thread: OpenBLAS's workers spin for a
# while after each threaded call and would compete with ours for the same cores (measured on
# LeNet-5 training with 2 cores: 1.65 s per epoch with BLAS on one thread against 1.85-2.3 s).
class _SerialBlas:
    """Reference-counted switch of the BLAS libraries to one thread (process-wide)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.saved: list[int] = []
        self.libs: list[Any] | None = None

    def _controllers(self) -> list[Any]:
        if self.libs is None:
            try:
                from threadpoolctl import ThreadpoolController  # noqa: PLC0415 - optional
            except ImportError:  # without it BLAS keeps its threads; results are the same
                self.libs = []
            else:
                self.libs = [c for c in ThreadpoolController().lib_controllers
                             if c.user_api == "blas"]
        return self.libs

    def available(self) -> bool:
        """True when the BLAS thread count can be switched (threadpoolctl found a BLAS)."""
        return bool(self._controllers())

    def enter(self) -> None:
        """First caller in: remember the BLAS thread counts and set them to 1."""
        with self.lock:
            if self.depth == 0:
                libs = self._controllers()
                self.saved = [c.get_num_threads() for c in libs]
                for c in libs:
                    c.set_num_threads(1)
            self.depth += 1

    def exit(self) -> None:
        """Last caller out: restore the BLAS thread counts."""
        with self.lock:
            self.depth -= 1
            if self.depth == 0:
                for c, n in zip(self.libs or [], self.saved):
                    c.set_num_threads(n)

    @contextlib.contextmanager
    def serial(self, active: bool = True) -> Iterator[None]:
        """enter() ... exit() around a block (a no-op when not `active`)."""
        if not active:
            yield
            return
        self.enter()
        try:
            yield
        finally:
            self.exit()


SERIAL_BLAS = _SerialBlas()

#: OpenBLAS cores whose sgemm/dgemm take an unpacked "small matrix" path when M*N*K <= 100**3
#: (OpenBLAS's gemm_small_kernel_permit for these cores; every other core's permit says no)
_SMALL_GEMM_CORES = frozenset({"skylakex", "cooperlake", "sapphirerapids"})
_SMALL_GEMM_MNK = 100 ** 3


def blas_small_gemm_mnk() -> int:
    """Largest M*N*K that BLAS multiplies on its small-matrix path; 0 when it has none.

    On those cores a skinny product such as a convolution's 6x26 weights times a few samples'
    columns runs 1.3-5x faster on that path than on the packed one just above the limit
    (measured: 6x26x3584 at 34 GFLOP/s against 6x26x7168 at 6 GFLOP/s), so kernels that
    choose their own product sizes keep below it.
    """
    try:  # NumPy's own BLAS must be OpenBLAS (other libraries' controllers are listed too)
        numpy_blas = str(np.__config__.CONFIG["Build Dependencies"]["blas"]["name"])
    except (AttributeError, KeyError, TypeError):
        return 0
    cores = {str(getattr(c, "architecture", "")).lower() for c in SERIAL_BLAS._controllers()
             if c.internal_api == "openblas"}
    small = "openblas" in numpy_blas.lower() and cores and cores <= _SMALL_GEMM_CORES
    return _SMALL_GEMM_MNK if small else 0
