"""Intra-op parallelism: run independent parts of one kernel on a shared pool of threads.

NumPy releases the GIL inside copies, ufunc loops and BLAS calls, so kernels that split
their work into independent parts (the convolution's batch chunks) run them on several
cores with plain Python threads.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

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


def run_parts(parts: Sequence[Callable[[], Any]]) -> Callable[[], None]:
    """A closure running the parts concurrently (the first in the calling thread)."""
    if len(parts) == 1:
        return parts[0]
    first, rest = parts[0], list(parts[1:])
    pool = _executor(len(rest))

    def run() -> None:
        futures = [pool.submit(p) for p in rest]
        try:
            first()
        finally:
            # a part no pool thread has started yet (the pool is busy with other callers'
            # parts) runs here instead of waiting in the queue
            for f, part in zip(futures, rest):
                if f.cancel():
                    part()
                else:
                    f.result()
    return run
