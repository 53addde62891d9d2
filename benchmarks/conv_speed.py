"""Forward+backward time of LeNet-5's conv and pooling layers, nnforge vs PyTorch, batch 64.

Both run in this process with threads pinned to 2 (OpenBLAS via threadpoolctl,
torch.set_num_threads, nnforge's convolution threads; NNFORGE_BENCH_THREADS=1 pins all to 1);
the two are measured in alternating rounds so machine noise hits both
alike. Prints milliseconds per call (median and best) and the ratio nnforge / torch.
Run: .venv/bin/python benchmarks/conv_speed.py [--rounds 7] [--calls 20] [--batch 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from _common import THREADS, pin_threads  # noqa: E402

import nnforge as nf  # noqa: E402
from nnforge import nn  # noqa: E402
from nnforge.backend import SERIAL_BLAS  # noqa: E402
from nnforge.ops import conv as nf_conv  # noqa: E402


def _time(fn: Callable[[], object], calls: int) -> float:
    """Seconds per call of fn, averaged over `calls` calls."""
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    return (time.perf_counter() - t0) / calls


def _nnforge_step(model: nn.Module, x: np.ndarray, gy: np.ndarray | None,
                  labels: np.ndarray | None) -> Callable[[], None]:
    xt = nf.Tensor(x, requires_grad=gy is not None and x.shape[1] != 1)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        model.zero_grad()
        xt.grad = None
        out = model(xt)
        if labels is not None:
            loss_fn(out, labels).backward()
        else:
            out.backward(gy)
    return step


def _torch_step(model: torch.nn.Module, x: np.ndarray, gy: np.ndarray | None,
                labels: np.ndarray | None) -> Callable[[], None]:
    xt = torch.from_numpy(x).requires_grad_(gy is not None and x.shape[1] != 1)
    gyt = torch.from_numpy(gy) if gy is not None else None
    yt = torch.from_numpy(labels) if labels is not None else None
    loss_fn = torch.nn.CrossEntropyLoss()

    def step() -> None:
        model.zero_grad(set_to_none=True)
        xt.grad = None
        out = model(xt)
        if yt is not None:
            loss_fn(out, yt).backward()
        else:
            out.backward(gyt)
    return step


def cases(batch: int) -> list[tuple[str, nn.Module, torch.nn.Module, tuple[int, ...]]]:
    """(name, nnforge layer, torch layer, input shape) for each LeNet-5 stage, then the model."""
    tnn = torch.nn

    def lenet_nf() -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                             nn.Linear(84, 10))

    def lenet_torch() -> torch.nn.Module:
        return tnn.Sequential(tnn.Conv2d(1, 6, 5), tnn.ReLU(), tnn.MaxPool2d(2),
                              tnn.Conv2d(6, 16, 5), tnn.ReLU(), tnn.MaxPool2d(2), tnn.Flatten(),
                              tnn.Linear(256, 120), tnn.ReLU(), tnn.Linear(120, 84), tnn.ReLU(),
                              tnn.Linear(84, 10))

    return [
        ("conv1 1->6 5x5 on 28x28 (no input grad)", nn.Conv2d(1, 6, 5), tnn.Conv2d(1, 6, 5),
         (batch, 1, 28, 28)),
        ("maxpool 2 on 6x24x24", nn.MaxPool2d(2), tnn.MaxPool2d(2), (batch, 6, 24, 24)),
        ("conv2 6->16 5x5 on 12x12", nn.Conv2d(6, 16, 5), tnn.Conv2d(6, 16, 5),
         (batch, 6, 12, 12)),
        ("maxpool 2 on 16x8x8", nn.MaxPool2d(2), tnn.MaxPool2d(2), (batch, 16, 8, 8)),
        ("avgpool 2 on 6x24x24", nn.AvgPool2d(2), tnn.AvgPool2d(2), (batch, 6, 24, 24)),
        ("batchnorm2d 6x24x24 (train)", nn.BatchNorm2d(6), tnn.BatchNorm2d(6),
         (batch, 6, 24, 24)),
        ("LeNet-5 forward+loss+backward", lenet_nf(), lenet_torch(), (batch, 1, 28, 28)),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--calls", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    pin_threads()
    nf_conv.THREADS = min(nf_conv.THREADS, THREADS)  # the same thread budget as the peers
    rng = np.random.default_rng(0)
    print(f"batch {args.batch}, threads {THREADS}; ms per forward+backward call, median (best) of "
          f"{args.rounds} rounds x {args.calls} calls")
    print(f"{'layer':42} {'nnforge ms':>16} {'torch ms':>16} {'ratio':>7}")
    total = {"nnforge": 0.0, "torch": 0.0}
    for name, layer, tlayer, shape in cases(args.batch):
        x = rng.standard_normal(shape, dtype=np.float32)
        is_model = name.startswith("LeNet")
        labels = rng.integers(0, 10, shape[0]) if is_model else None
        out_shape = None if is_model else tuple(tlayer(torch.from_numpy(x)).shape)
        gy = None if is_model else rng.standard_normal(out_shape, dtype=np.float32)
        steps = {"nnforge": _nnforge_step(layer, x, gy, labels),
                 "torch": _torch_step(tlayer, x, gy, labels)}
        times: dict[str, list[float]] = {k: [] for k in steps}
        for _ in range(args.rounds + 1):  # the first round warms up
            for k, fn in steps.items():
                # nnforge's Trainer runs conv models with BLAS on one thread (its convolutions
                # split the batch over their own threads); time them the same way
                with SERIAL_BLAS.serial(k == "nnforge"):
                    times[k].append(_time(fn, args.calls) * 1e3)
        times = {k: v[1:] for k, v in times.items()}
        med = {k: float(np.median(v)) for k, v in times.items()}
        best = {k: min(v) for k, v in times.items()}
        if not is_model and not name.startswith(("avgpool", "batchnorm")):
            for k in total:
                total[k] += med[k]
        print(f"{name:42} {med['nnforge']:>8.3f} ({best['nnforge']:.3f}) "
              f"{med['torch']:>8.3f} ({best['torch']:.3f}) "
              f"{med['nnforge'] / med['torch']:>6.2f}x")
    print(f"{'sum of the LeNet-5 conv and pool rows':42} {total['nnforge']:>8.3f}{'':8} "
          f"{total['torch']:>8.3f}{'':8} {total['nnforge'] / total['torch']:>6.2f}x")


if __name__ == "__main__":
    main()
