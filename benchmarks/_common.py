"""Helpers shared by the benchmark scripts: thread pinning and peak memory."""

from __future__ import annotations

import os
import resource
import sys
import time
from typing import Callable

import numpy as np

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


def latencies_us(fn: Callable[[], object], calls: int) -> np.ndarray:
    """Per-call wall time in microseconds."""
    out = np.empty(calls)
    clock = time.perf_counter_ns
    for i in range(calls):
        t0 = clock()
        fn()
        out[i] = clock() - t0
    return out / 1000


#: untimed back-to-back calls before a throughput window, every implementation alike
WARMUP_SECONDS = 0.05


def throughput(fn: Callable[[], object], batch: int, min_seconds: float) -> float:
    """Steady-state samples per second: after WARMUP_SECONDS (at least one call) of untimed
    calls, the rate over at least min_seconds (and 3 calls) of back-to-back calls.

    The warm-up matters after the pauses between implementations: for the first few calls
    after an idle spell the OS may run both of a runtime's threads on one CPU (measured: with
    nnforge's two threads, four 13 ms calls at batch 256 before steady 8 ms ones, while
    ONNX Runtime's spinning threads lose one or two calls), which is wake-up latency, not
    throughput.
    """
    t0 = time.perf_counter()
    fn()
    while time.perf_counter() - t0 < WARMUP_SECONDS:
        fn()
    calls, t0 = 0, time.perf_counter()
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds and calls >= 3:
            return batch * calls / elapsed


def print_ratio_table(first: str, batches: list[int], rows: list[list[str]], note: str) -> None:
    """Print the latency/throughput table shared by the inference benchmarks."""
    head = [first, "implementation"]
    if 1 in batches:
        head += ["b=1 p50 us", "b=1 p99 us", "p50 vs ORT"]
    head += [f"b={b} samples/s (vs ORT)" for b in batches if b != 1]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    print(note)
    for r in [head, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)))
