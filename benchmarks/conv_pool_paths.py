"""The runtime's two paths for Conv + ReLU + 2x2/2 MaxPool: plain im2col vs space-to-depth.

For conv shapes (input channels C, output channels M, kernel k, square input, "same"
padding) it compiles the fused node both ways and times them alternately, in one process,
batch 64, nnforge threads=2 (BLAS serial inside, as in a session). It prints each time, the
ratio, and the path the runtime picks (S2D_MAX_DEPTH on 4*C*(k//2+1)^2, the depth of the
space-to-depth product). Run: .venv/bin/python benchmarks/conv_pool_paths.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import nnforge.runtime.conv as runtime_conv
from nnforge.graph import Graph, Node, ValueInfo
from nnforge.runtime import compile_plan
from nnforge.runtime.parallel import SERIAL_BLAS

SHAPES = [  # (C, M, k, input height = width)
    (1, 6, 5, 28), (1, 32, 5, 28), (1, 32, 3, 28), (3, 16, 3, 32), (3, 32, 3, 32),
    (4, 32, 3, 32), (2, 16, 5, 28), (5, 16, 3, 32), (6, 16, 3, 32), (6, 16, 5, 14),
    (8, 16, 3, 16), (16, 32, 3, 16),
]


def fused_plan(shape: tuple[int, int, int, int], batch: int, depth_limit: int,
               rng: np.random.Generator) -> object:
    """A compiled one-node plan: FusedConv (ReLU, 2x2/2 max pool) with the given limit."""
    c, m, k, hw = shape
    runtime_conv.S2D_MAX_DEPTH = depth_limit
    attrs = {"kernel_shape": [k, k], "pads": [k // 2] * 4, "activation": "Relu",
             "pool": "MaxPool", "pool_kernel_shape": [2, 2], "pool_strides": [2, 2]}
    g = Graph([Node("FusedConv", ["x", "w", "b"], ["y"], attrs, "conv", domain="nnforge")],
              [ValueInfo("x", ("N", c, hw, hw))], [ValueInfo("y")],
              {"w": rng.standard_normal((m, c, k, k)).astype(np.float32),
               "b": rng.standard_normal(m).astype(np.float32)})
    return compile_plan(g, [(batch, c, hw, hw)], threads=2)


def time_us(plan: object, x: np.ndarray, calls: int) -> float:
    """Mean microseconds per run over `calls` back-to-back runs (after a warm-up)."""
    SERIAL_BLAS.enter()
    try:
        for _ in range(3):
            plan.run((x,))
        t0 = time.perf_counter()
        for _ in range(calls):
            plan.run((x,))
        return (time.perf_counter() - t0) / calls * 1e6
    finally:
        SERIAL_BLAS.exit()


def main() -> None:
    """Time both paths per shape; print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    limit = runtime_conv.S2D_MAX_DEPTH
    print(f"batch {args.batch}, nnforge threads=2 (BLAS serial inside); median of "
          f"{args.rounds} alternating rounds; S2D_MAX_DEPTH={limit}")
    print(f"{'C':>3} {'M':>3} {'k':>2} {'HxW':>6} {'depth':>6} {'plain us':>9} {'s2d us':>8} "
          f"{'s2d/plain':>9}  picked")
    for shape in SHAPES:
        c, m, k, hw = shape
        x = rng.standard_normal((args.batch, c, hw, hw)).astype(np.float32)
        plain, s2d = fused_plan(shape, args.batch, 0, rng), fused_plan(shape, args.batch, 1 << 30,
                                                                        rng)
        calls = max(5, int(2e5 // (args.batch * m * hw * hw // 64 + 1)))
        a, b = [], []
        for _ in range(args.rounds):
            a.append(time_us(plain, x, calls))
            b.append(time_us(s2d, x, calls))
        ta, tb = float(np.median(a)), float(np.median(b))
        depth = 4 * c * (k // 2 + 1) ** 2
        picked = "s2d" if depth <= limit else "plain"
        print(f"{c:>3} {m:>3} {k:>2} {hw:>3}x{hw:<2} {depth:>6} {ta:>9.0f} {tb:>8.0f} "
              f"{tb / ta:>9.2f}  {picked}")
    runtime_conv.S2D_MAX_DEPTH = limit


if __name__ == "__main__":
    main()
