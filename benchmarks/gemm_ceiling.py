"""How close to ONNX Runtime an MLP can get through NumPy's matrix multiply: the ceiling.

For the MLP 784-256-128-10 at each batch size, in one run with threads pinned to 2, this
times (many short alternating rounds, medians):
* NumPy `matmul` (OpenBLAS) on each layer's product alone, into a preallocated output;
* ONNX Runtime on a one-node MatMul model of the same shape (its MLAS kernel);
* ONNX Runtime on the whole MLP (Gemm + Relu layers), and nnforge's InferenceSession.

An nnforge plan runs exactly those three NumPy products plus cheap elementwise passes, so
`ORT whole model / sum of NumPy products` bounds the throughput ratio nnforge can reach
against ORT while its products go through NumPy. Run: .venv/bin/python
benchmarks/gemm_ceiling.py [--rounds 15] [--batches 256,4096]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
from _common import THREADS, pin_threads  # noqa: E402
from infer_speed import mlp_weights, nnforge_model, onnx_session  # noqa: E402

import nnforge as nf  # noqa: E402


def matmul_session(w: np.ndarray) -> ort.InferenceSession:
    """ORT session computing x @ w for x of shape (N, w.shape[0])."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", w.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", w.shape[1]])],
        [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def median_us(fn: object, seconds: float) -> float:
    """Median wall time of back-to-back calls over `seconds`, after a warm-up."""
    for _ in range(3):
        fn()
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e6


def callables(batch: int, rng: np.random.Generator, mats: list[np.ndarray],
              ort_mm: list[ort.InferenceSession], ort_mlp: ort.InferenceSession,
              session: nf.InferenceSession) -> dict[str, object]:
    """The calls to time at one batch size, by name."""
    x = rng.standard_normal((batch, 784)).astype(np.float32)
    ins = [x] + [np.maximum(rng.standard_normal((batch, m.shape[0])), 0).astype(np.float32)
                 for m in mats[1:]]
    outs = [np.empty((batch, m.shape[1]), np.float32) for m in mats]
    timed: dict[str, object] = {
        f"numpy {i}": (lambda i=i: np.matmul(ins[i], mats[i], out=outs[i])) for i in range(3)}
    timed.update({f"ort {i}": (lambda i=i: ort_mm[i].run(None, {"x": ins[i]}))
                  for i in range(3)})
    timed["ort mlp"] = lambda: ort_mlp.run(None, {"x": x})
    timed["nnforge mlp"] = lambda: session.run(x)
    return timed


def main() -> None:
    """Time, then print one table per batch size."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--seconds", type=float, default=0.05, help="per measurement")
    ap.add_argument("--batches", default="256,4096")
    args = ap.parse_args()
    pinned = pin_threads()
    weights = mlp_weights(np.random.default_rng(0))
    mats = [np.ascontiguousarray(w.T) for _, w, _ in weights]  # (in, out): x @ m
    ort_mm = [matmul_session(m) for m in mats]
    ort_mlp = onnx_session(weights, (784,))
    session = nf.InferenceSession(nnforge_model(weights), threads=THREADS, input_shape=(784,))
    print(f"threads pinned: {pinned}, ORT intra_op={THREADS}, nnforge threads={THREADS}")
    rng = np.random.default_rng(1)
    for batch in [int(b) for b in args.batches.split(",")]:
        timed = callables(batch, rng, mats, ort_mm, ort_mlp, session)
        res: dict[str, list[float]] = {k: [] for k in timed}
        for _ in range(args.rounds):
            for k, fn in timed.items():
                time.sleep(0.02)  # let the previous one's spinning worker threads go idle
                res[k].append(median_us(fn, args.seconds))
        med = {k: float(np.median(v)) for k, v in res.items()}
        print(f"\nbatch {batch}: median us per call")
        print(f"{'layer':<22}{'numpy':>10}{'ORT MatMul':>12}{'numpy/ORT':>11}")
        for i, m in enumerate(mats):
            name = f"{batch}x{m.shape[0]}x{m.shape[1]}"
            a, b = med[f"numpy {i}"], med[f"ort {i}"]
            print(f"{name:<22}{a:>10.1f}{b:>12.1f}{a / b:>10.2f}x")
        floor = sum(med[f"numpy {i}"] for i in range(3))
        print(f"sum of NumPy products {floor:.1f} us; ORT whole MLP {med['ort mlp']:.1f} us; "
              f"nnforge whole MLP {med['nnforge mlp']:.1f} us")
        print(f"ceiling on nnforge/ORT throughput through NumPy's matmul: "
              f"{med['ort mlp'] / floor:.2f}x (nnforge reached "
              f"{med['ort mlp'] / med['nnforge mlp']:.2f}x)")


if __name__ == "__main__":
    main()
