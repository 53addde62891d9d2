"""Inference speed on imported ONNX models: nnforge's NumPy runtime vs ONNX Runtime, same file.

The ONNX files are written by torch.onnx.export (the classic exporter by default; --exporters
classic,dynamo adds the torch.export-based one) from:
* MLP 784-256-128-10 with ReLU;
* LeNet-5 on 1x28x28: conv 6@5x5 (pad 2), ReLU, 2x2 max pool, conv 16@5x5, ReLU, 2x2 max
  pool, then dense 400-120-84-10 with ReLU.
Implementations: `nnforge` (InferenceSession("model.onnx"): import, optimize, NumPy plans),
`nnforge+ort` (the same session with backend="onnxruntime": the wrapper's overhead),
`nnforge+ort unchecked` (the same with check_finite=False: the wrapper without its one pass
over the input for NaN/Inf, which ONNX Runtime does not make) and `onnxruntime` on the file
itself. Threads are pinned to 2 for everything (OpenBLAS through threadpoolctl, ORT
intra_op_num_threads, nnforge `threads=`). Implementations are timed in alternating rounds,
each round in a rotated order and each implementation after SETTLE_SECONDS idle: the one timed
before leaves threads spinning (OpenBLAS's after nnforge, measured up to ~0.1 s; ONNX
Runtime's, ~0.03 s), and `nnforge+ort` always came right after `nnforge`, so part of its
window ran beside OpenBLAS's spinning thread on the 2 cores. Batch 1: latency p50/p99 in
microseconds; other batches: samples/s (median of rounds) and the ratio to ONNX Runtime.
Targets: MLP b=1 p50 at most 1.2x ORT, throughput at least 0.95x; LeNet-5 throughput at
least 0.5x.
Run: .venv/bin/python benchmarks/onnx_infer_speed.py [--rounds 5] [--models mlp,lenet]
"""

from __future__ import annotations

import argparse
import functools
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import THREADS, latencies_us, pin_threads, print_ratio_table, throughput  # noqa: E402

import nnforge as nf  # noqa: E402

#: idle seconds before each implementation is timed, so that no thread of the one before
#: still spins on the cores it needs
SETTLE_SECONDS = 0.2


def torch_models() -> dict[str, tuple[torch.nn.Module, tuple[int, ...]]]:
    """The benchmark models (fixed seed) and their per-sample input shapes."""
    tnn = torch.nn
    torch.manual_seed(0)
    mlp = tnn.Sequential(tnn.Linear(784, 256), tnn.ReLU(), tnn.Linear(256, 128), tnn.ReLU(),
                         tnn.Linear(128, 10))
    lenet = tnn.Sequential(tnn.Conv2d(1, 6, 5, padding=2), tnn.ReLU(), tnn.MaxPool2d(2),
                           tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
                           tnn.Linear(400, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(),
                           tnn.Linear(84, 10))
    return {"mlp": (mlp.eval(), (784,)), "lenet": (lenet.eval(), (1, 28, 28))}


def export(model: torch.nn.Module, shape: tuple[int, ...], path: Path, exporter: str) -> None:
    """Write model as ONNX with a dynamic batch dim."""
    x = torch.zeros(2, *shape)
    opts: dict = {"dynamo": exporter == "dynamo", "input_names": ["input"],
                  "output_names": ["output"]}
    if exporter == "dynamo":
        opts["dynamic_shapes"] = ({0: torch.export.Dim("batch")},)
    else:
        opts["dynamic_axes"] = {"input": {0: "batch"}, "output": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), **opts)


def bench_file(name: str, path: Path, shape: tuple[int, ...], batches: list[int], rounds: int,
               seconds: float) -> list[list[str]]:
    """Time every implementation on one ONNX file; return table rows."""
    rng = np.random.default_rng(1)
    session = nf.InferenceSession(path, threads=THREADS)
    wrapped = nf.InferenceSession(path, backend="onnxruntime", threads=THREADS)
    unchecked = nf.InferenceSession(path, backend="onnxruntime", threads=THREADS,
                                    check_finite=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
    oracle = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    impls: dict[str, Callable[[np.ndarray], object]] = {
        "nnforge": session.run, "nnforge+ort": wrapped.run,
        "nnforge+ort unchecked": unchecked.run,
        "onnxruntime": lambda x: oracle.run(None, {"input": x})[0]}
    check = rng.standard_normal((8, *shape)).astype(np.float32)
    ref = impls["onnxruntime"](check)
    for k, f in impls.items():
        err = float(np.abs(np.asarray(f(check)) - ref).max())
        assert err < 1e-4, f"{name}: {k} differs from onnxruntime by {err}"
    results: dict[str, dict[str, list[float]]] = {k: {} for k in impls}
    for batch in batches:
        x = rng.standard_normal((batch, *shape)).astype(np.float32)
        for r in range(rounds):
            for k in rotated(list(impls), r):
                call = functools.partial(impls[k], x)
                time.sleep(SETTLE_SECONDS)
                if batch == 1:
                    call()
                    results[k].setdefault("lat", []).extend(latencies_us(call, 2000))
                else:
                    results[k].setdefault(str(batch), []).append(
                        throughput(call, batch, seconds))
    rows = []
    base = results["onnxruntime"]
    for k, r in results.items():
        row = [name, k]
        if "lat" in r:
            p50, p99 = np.percentile(r["lat"], [50, 99])
            row += [f"{p50:.1f}", f"{p99:.1f}", f"{p50 / np.percentile(base['lat'], 50):.2f}x"]
        for batch in batches:
            if batch != 1:
                sps = float(np.median(r[str(batch)]))
                row.append(f"{sps / 1000:.1f}k ({sps / float(np.median(base[str(batch)])):.2f}x)")
        rows.append(row)
    return rows


def rotated(names: list[str], r: int) -> list[str]:
    """names starting at position r (mod their count): each is timed after each in turn."""
    k = r % len(names)
    return names[k:] + names[:k]


def main() -> None:
    """Parse flags, export the models, run, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=0.3, help="per throughput measurement")
    ap.add_argument("--models", default="mlp,lenet")
    ap.add_argument("--batches", default="1,32,256,4096")
    ap.add_argument("--exporters", default="classic", help="classic and/or dynamo")
    args = ap.parse_args()
    pinned = pin_threads()
    batches = [int(b) for b in args.batches.split(",")]
    models = torch_models()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            if name not in models:
                ap.error(f"unknown model {name!r}; expected mlp or lenet")
            model, shape = models[name]
            for exporter in args.exporters.split(","):
                path = Path(tmp) / f"{name}_{exporter}.onnx"
                export(model, shape, path, exporter)
                label = f"{'MLP' if name == 'mlp' else 'LeNet-5'} ({exporter})"
                rows += bench_file(label, path, shape, batches, args.rounds, args.seconds)
    print_ratio_table("model (exporter)", batches, rows,
                      f"threads pinned: {pinned}, nnforge threads={THREADS}; ratios: latency = "
                      f"x/ORT (lower is better), throughput = x/ORT (higher is better)")

if __name__ == "__main__":
    main()
