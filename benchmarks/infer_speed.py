"""Inference speed: nnforge InferenceSession vs ONNX Runtime, PyTorch and naive NumPy.

Models (same weights everywhere, fixed seed):
* MLP 784-256-128-10 with ReLU;
* LeNet-5 on 1x28x28: conv 6@5x5 (pad 2), ReLU, 2x2 max pool, conv 16@5x5, ReLU, 2x2 max
  pool, then dense 400-120-84-10 with ReLU (the ReLU / max-pool variant).

Peers: ONNX Runtime (model built with onnx.helper from the same arrays), PyTorch in
inference_mode, and a naive NumPy forward as blog posts write it (`x @ W.T + b`; convolution by
sliding_window_view + tensordot, pooling by reshape + max). Threads are pinned to 2 for
everything: OpenBLAS through threadpoolctl, torch.set_num_threads, ORT intra_op_num_threads,
nnforge `threads=`. Implementations are timed in many short alternating rounds so machine
noise hits all alike, with a short pause between implementations so that one's idle worker
threads (OpenBLAS's spin a while after each call) do not slow the next. Batch 1: latency
p50/p99 in microseconds; other batches: samples/s (median of rounds).
Run: .venv/bin/python benchmarks/infer_speed.py [--rounds 15] [--models mlp,lenet]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch
from numpy.lib.stride_tricks import sliding_window_view
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).parent))
from _common import THREADS, latencies_us, pin_threads, print_ratio_table, throughput  # noqa: E402

import nnforge as nf  # noqa: E402
from nnforge import nn  # noqa: E402

Weights = list[tuple[str, np.ndarray, np.ndarray]]  # (kind, weight, bias) per layer
SETTLE_SECONDS = 0.15


# -- models -----------------------------------------------------------------------------------
def mlp_weights(rng: np.random.Generator) -> Weights:
    """784-256-128-10, He-scaled."""
    sizes = [784, 256, 128, 10]
    return [("dense", (rng.standard_normal((o, i)) * np.sqrt(2 / i)).astype(np.float32),
             (rng.standard_normal(o) * 0.1).astype(np.float32))
            for i, o in zip(sizes, sizes[1:])]


def lenet_weights(rng: np.random.Generator) -> Weights:
    """conv 1->6 5x5, conv 6->16 5x5, dense 400-120-84-10."""
    def w(*shape: int) -> np.ndarray:
        fan_in = int(np.prod(shape[1:]))
        return (rng.standard_normal(shape) * np.sqrt(2 / fan_in)).astype(np.float32)

    def b(n: int) -> np.ndarray:
        return (rng.standard_normal(n) * 0.1).astype(np.float32)
    return [("conv", w(6, 1, 5, 5), b(6)), ("conv", w(16, 6, 5, 5), b(16)),
            ("dense", w(120, 400), b(120)), ("dense", w(84, 120), b(84)),
            ("dense", w(10, 84), b(10))]


def nnforge_model(weights: Weights) -> nn.Sequential:
    """The nnforge Module with these weights."""
    layers: list[nn.Module] = []
    for i, (kind, w, b) in enumerate(weights):
        if kind == "conv":
            conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], padding=2 if i == 0 else 0)
            conv.weight.data[...], conv.bias.data[...] = w, b
            layers += [conv, nn.ReLU(), nn.MaxPool2d(2)]
        else:
            if layers and isinstance(layers[-1], nn.MaxPool2d):
                layers.append(nn.Flatten())
            lin = nn.Linear(w.shape[1], w.shape[0])
            lin.weight.data[...], lin.bias.data[...] = w, b
            layers.append(lin)
            if i < len(weights) - 1:
                layers.append(nn.ReLU())
    return nn.Sequential(*layers).eval()


def torch_model(weights: Weights) -> torch.nn.Module:
    """The same network in PyTorch."""
    layers: list[torch.nn.Module] = []
    for i, (kind, w, b) in enumerate(weights):
        if kind == "conv":
            conv = torch.nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], padding=2 if i == 0 else 0)
            layers += [conv, torch.nn.ReLU(), torch.nn.MaxPool2d(2)]
        else:
            if layers and isinstance(layers[-1], torch.nn.MaxPool2d):
                layers.append(torch.nn.Flatten())
            conv = torch.nn.Linear(w.shape[1], w.shape[0])
            layers.append(conv)
            if i < len(weights) - 1:
                layers.append(torch.nn.ReLU())
        with torch.no_grad():
            conv.weight.copy_(torch.from_numpy(w))
            conv.bias.copy_(torch.from_numpy(b))
    return torch.nn.Sequential(*layers).eval()


def onnx_session(weights: Weights, input_shape: tuple[int, ...]) -> ort.InferenceSession:
    """ONNX Runtime session of a model built node by node with onnx.helper."""
    nodes, inits, x = [], [], "x"
    for i, (kind, w, b) in enumerate(weights):
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        if kind == "conv":
            nodes += [helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"],
                                       kernel_shape=[5, 5], pads=[2 if i == 0 else 0] * 4),
                      helper.make_node("Relu", [f"c{i}"], [f"r{i}"]),
                      helper.make_node("MaxPool", [f"r{i}"], [f"p{i}"], kernel_shape=[2, 2],
                                       strides=[2, 2])]
            x = f"p{i}"
        else:
            if x.startswith("p"):
                nodes.append(helper.make_node("Flatten", [x], ["flat"], axis=1))
                x = "flat"
            last = i == len(weights) - 1
            nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"],
                                          ["y" if last else f"g{i}"], transB=1))
            x = f"g{i}"
            if not last:
                nodes.append(helper.make_node("Relu", [x], [f"r{i}"]))
                x = f"r{i}"
    graph = helper.make_graph(
        nodes, "net", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                     ["N", *input_shape])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # onnxruntime may lag behind the onnx package's newest IR version
    onnx.checker.check_model(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = THREADS, 1
    return ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])


def naive_numpy(weights: Weights) -> Callable[[np.ndarray], np.ndarray]:
    """The forward pass as tutorials write it."""
    def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray, pad: int) -> np.ndarray:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
        win = sliding_window_view(x, w.shape[2:], axis=(2, 3))  # N, C, OH, OW, kh, kw
        return np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2) \
            + b[None, :, None, None]

    def maxpool(x: np.ndarray) -> np.ndarray:
        n, c, h, w = x.shape
        return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))

    def forward(x: np.ndarray) -> np.ndarray:
        for i, (kind, w, b) in enumerate(weights):
            if kind == "conv":
                x = maxpool(np.maximum(0, conv2d(x, w, b, 2 if i == 0 else 0)))
            else:
                x = x.reshape(len(x), -1) @ w.T + b
                if i < len(weights) - 1:
                    x = np.maximum(0, x)
        return x
    return forward


# -- timing -----------------------------------------------------------------------------------
def bench_model(name: str, weights: Weights, input_shape: tuple[int, ...],
                batches: list[int], rounds: int, seconds: float) -> list[list[str]]:
    """Time every implementation on one model; return table rows."""
    rng = np.random.default_rng(1)
    session = nf.InferenceSession(nnforge_model(weights), threads=THREADS,
                                  input_shape=input_shape)
    ort_session = onnx_session(weights, input_shape)
    tmodel, naive = torch_model(weights), naive_numpy(weights)

    def torch_run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return tmodel(torch.from_numpy(x)).numpy()

    impls: dict[str, Callable[[np.ndarray], object]] = {
        "nnforge": session.run, "onnxruntime": lambda x: ort_session.run(None, {"x": x})[0],
        "pytorch": torch_run, "naive numpy": naive}
    check = rng.standard_normal((8, *input_shape)).astype(np.float32)
    ref = impls["onnxruntime"](check)
    for k, f in impls.items():
        err = float(np.abs(np.asarray(f(check)) - ref).max())
        assert err < 1e-4, f"{name}: {k} differs from onnxruntime by {err}"
    results: dict[str, dict[str, list[float]]] = {k: {} for k in impls}
    for batch in batches:
        x = rng.standard_normal((batch, *input_shape)).astype(np.float32)
        for _ in range(rounds):
            for k, f in impls.items():
                # let the previous implementation's worker threads go idle first: OpenBLAS's
                # spin for ~0.1 s after each threaded call and would tax whoever runs next
                time.sleep(SETTLE_SECONDS)
                call = functools.partial(f, x)
                if batch == 1:
                    call()
                    results[k].setdefault("lat", []).extend(latencies_us(call, 400))
                else:
                    results[k].setdefault(str(batch), []).append(throughput(call, batch,
                                                                            seconds))
    rows = []
    ort_res = results["onnxruntime"]
    for k, r in results.items():
        row = [name, k]
        if "lat" in r:
            p50, p99 = np.percentile(r["lat"], [50, 99])
            ratio = p50 / np.percentile(ort_res["lat"], 50)
            row += [f"{p50:.1f}", f"{p99:.1f}", f"{ratio:.2f}x"]
        for batch in batches:
            if batch != 1:
                sps = float(np.median(r[str(batch)]))
                ratio = sps / float(np.median(ort_res[str(batch)]))
                row.append(f"{sps / 1000:.1f}k ({ratio:.2f}x)")
        rows.append(row)
    return rows


def main() -> None:
    """Parse flags, run, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=15,
                    help="alternating rounds (many short ones spread machine noise evenly)")
    ap.add_argument("--seconds", type=float, default=0.05, help="per throughput measurement")
    ap.add_argument("--models", default="mlp,lenet")
    ap.add_argument("--batches", default="1,32,256,4096")
    args = ap.parse_args()
    pinned = pin_threads()
    torch.set_num_threads(THREADS)
    pinned["torch"] = torch.get_num_threads()
    batches = [int(b) for b in args.batches.split(",")]
    rng = np.random.default_rng(0)
    rows = []
    for name in args.models.split(","):
        if name == "mlp":
            rows += bench_model("MLP", mlp_weights(rng), (784,), batches, args.rounds,
                                args.seconds)
        elif name == "lenet":
            rows += bench_model("LeNet-5", lenet_weights(rng), (1, 28, 28), batches,
                                args.rounds, args.seconds)
        else:
            ap.error(f"unknown model {name!r}; expected mlp or lenet")
    print_ratio_table("model", batches, rows,
                      f"threads pinned: {pinned}, nnforge threads={THREADS}; ratios: latency = "
                      f"nnforge/ORT (lower is better), throughput = x/ORT (higher is better)")

if __name__ == "__main__":
    main()
