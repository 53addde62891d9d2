"""Intra-op parallelism: run independent parts of one kernel on a shared pool of threads.

NumPy releases the GIL inside copies, ufunc loops and BLAS calls, so kernels that split
their work into independent parts (a convolution's batch chunks, a Gemm's row blocks) run
them on several cores with plain Python threads. While a plan with such kernels runs, BLAS
is switched to one thread (through threadpoolctl, when it is installed): BLAS's own worker
threads would otherwise compete with ours for the same cores (and OpenBLAS's spin while
they wait for work), which on a busy machine costs more than it brings.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

from ..backend import SERIAL_BLAS  # noqa: F401 - the kernels import it from here

Part = Callable[[Any], None]

_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_size = 0


def _executor(workers: int) -> ThreadPoolExecutor:
    """The shared pool, grown to at least `workers` threads."""
    global _pool, _size
    with _lock:
        if _pool is None or _size < workers:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="nnforge")
            _size = workers
        return _pool


def run_parts(parts: Sequence[Part]) -> Part:
    """A closure running parts(feeds) concurrently (the first in the calling thread)."""
    if len(parts) == 1:
        return parts[0]
    first, rest = parts[0], list(parts[1:])
    pool = _executor(len(rest))

    def run(feeds: Any) -> None:
        futures = [pool.submit(p, feeds) for p in rest]
        try:
            first(feeds)
        finally:
            # a part no pool thread has started yet (the pool is busy with other callers'
            # parts) runs here instead of waiting in the queue
            for f, part in zip(futures, rest):
                if f.cancel():
                    part(feeds)
                else:
                    f.result()
    return run



#: OpenBLAS threads a GEMM from M*N*K >= 2 * 65536 * GEMM_MULTITHREAD_THRESHOLD (4) on
BLAS_THREADED_MNK = 2 * 65536 * 4
