"""`nnforge bench`: latency percentiles and throughput of a model's InferenceSession."""

from __future__ import annotations

import argparse
import contextlib
import time
from typing import Any, Iterator

import numpy as np

from .common import (
    UsageError,
    int_list,
    new_command,
    nonnegative_int,
    positive_int,
    print_json,
    print_table,
    sample_shape,
)

EXAMPLES = """\
  nnforge bench models/digits/1/model.nnf
  nnforge bench models/digits/1/model.nnf --batch-sizes 1,32,256,4096 --iterations 500
  nnforge bench model.nnf --threads 2 --optimization none --json

Each batch size runs --warmup untimed calls, then --iterations timed calls of session.run on
random inputs (seeded); latency is per call, throughput is samples per second."""


def add_parser(sub: Any) -> None:
    """Register `bench`."""
    p = new_command(sub, "bench", "measure inference latency and throughput",
                    "Time a model's InferenceSession on random inputs for several batch "
                    "sizes: latency p50/p99 per call and samples per second.", EXAMPLES)
    p.add_argument("model", metavar="MODEL", help="the .nnf model file (or an .onnx file)")
    p.add_argument("--batch-sizes", type=int_list, default=[1, 32, 256], metavar="N,N,...",
                   help="batch sizes to time (default: 1,32,256)")
    p.add_argument("--iterations", type=positive_int, default=200, metavar="N",
                   help="timed calls per batch size (default: 200)")
    p.add_argument("--warmup", type=nonnegative_int, default=20, metavar="N",
                   help="untimed calls before timing (default: 20)")
    p.add_argument("--threads", type=positive_int, metavar="N",
                   help="threads one call may use, the session's and the BLAS library's "
                        "(default: every CPU; needs threadpoolctl)")
    p.add_argument("--optimization", choices=("none", "basic", "all"), default="all",
                   help="graph optimization level (default: all)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(run=run)


@contextlib.contextmanager
def _thread_limit(threads: int | None) -> Iterator[None]:
    if threads is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 - optional
    except ImportError:
        raise UsageError("--threads needs threadpoolctl, which is not installed "
                         "(pip install threadpoolctl)", 1) from None
    with threadpool_limits(limits=threads):
        yield


def time_session(session: Any, x: np.ndarray, iterations: int, warmup: int) -> dict[str, float]:
    """p50/p99/mean latency in ms and samples/s of session.run(x)."""
    for _ in range(warmup):
        session.run(x)
    times = np.empty(iterations, dtype=np.float64)
    clock = time.perf_counter_ns
    for i in range(iterations):
        t0 = clock()
        session.run(x)
        times[i] = clock() - t0
    times /= 1e6  # ms
    mean = float(times.mean())
    return {"batch_size": len(x), "p50_ms": float(np.percentile(times, 50)),
            "p99_ms": float(np.percentile(times, 99)), "mean_ms": mean,
            "samples_per_s": len(x) / (mean / 1e3)}


def run(args: argparse.Namespace) -> int:
    """Benchmark the model."""
    from ..runtime import InferenceSession  # noqa: PLC0415

    session = InferenceSession(args.model, optimization=args.optimization, threads=args.threads)
    shape = sample_shape(session)
    rng = np.random.default_rng(0)
    results = []
    with _thread_limit(args.threads):
        for bs in args.batch_sizes:
            x = rng.standard_normal((bs, *shape), dtype=np.float32)
            results.append(time_session(session, x, args.iterations, args.warmup))
    if args.json:
        print_json({"model": args.model, "optimization": args.optimization,
                    "iterations": args.iterations, "warmup": args.warmup,
                    "threads": args.threads, "results": results})
        return 0
    rows = [(f"{r['batch_size']:,}", f"{r['p50_ms']:.3f}", f"{r['p99_ms']:.3f}",
             f"{r['mean_ms']:.3f}", f"{r['samples_per_s']:,.0f}") for r in results]
    title = (f"{args.model}: input {shape}, optimization {args.optimization}, "
             f"{args.iterations} timed calls per batch size")
    print_table(["batch", "p50 ms", "p99 ms", "mean ms", "samples/s"], rows, title)
    return 0
