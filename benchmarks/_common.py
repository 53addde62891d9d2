"""Helpers shared by the benchmark scripts: thread pinning and peak memory."""

from __future__ import annotations

import os
import resource
import sys

THREADS = int(os.environ.get("NNFORGE_BENCH_THREADS", "2"))


def pin_threads(threads: int = THREADS) -> dict[str, int]:
    """Pin OpenBLAS (threadpoolctl) and torch to `threads` threads; return what was set."""
    from threadpoolctl import threadpool_limits  # noqa: PLC0415

    threadpool_limits(threads)
    pinned = {"numpy/openblas": threads}
    if "torch" in sys.modules:
        import torch  # noqa: PLC0415

        torch.set_num_threads(threads)
        pinned["torch"] = torch.get_num_threads()
    return pinned


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
