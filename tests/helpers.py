"""Small helpers shared by several test files (import: `from helpers import ...`)."""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np

import nnforge as nf
from nnforge import nn


def eager(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """The model's eval-mode forward on x, as a plain array."""
    model.eval()
    with nf.no_grad():
        return model(x).data


def stats_bn(cls: type, c: int, rng: np.random.Generator) -> nn.Module:
    """A batch-norm layer with non-trivial running statistics and affine parameters."""
    bn = cls(c, eps=1e-3)
    bn.weight.data[...] = rng.random(c) + 0.5
    bn.bias.data[...] = rng.standard_normal(c)
    bn.running_mean = rng.standard_normal(c).astype(np.float32)
    bn.running_var = (rng.random(c) + 0.5).astype(np.float32)
    return bn


def run_in_threads(target: Callable[[int], None], n: int) -> None:
    """Run target(0) .. target(n - 1) on n threads at once and wait for them all."""
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class GatedPair(nn.Module):
    """forward(a, b): features of two widths, one gating the other."""

    def __init__(self) -> None:
        super().__init__()
        self.fa, self.fb = nn.Linear(4, 3), nn.Linear(2, 3)

    def forward(self, a: nf.Tensor, b: nf.Tensor) -> nf.Tensor:
        return self.fa(a) * self.fb(b).sigmoid()

    def get_config(self) -> dict[str, Any]:
        return {}
