"""Optimizer step cost: nnforge vs plain NumPy vs torch.optim, on MLP 784-256-128-10 shapes.

469 steps = one epoch of MNIST at batch 128. Variants run round-robin and the minimum and
median over the repeats are reported, so a noisy machine affects all of them alike. The
"training loop" section adds the matrix products of one forward/backward pass per step, to
show how the optimizer's threads get along with OpenBLAS's. The "dead units" section zeroes
the gradients of 10 of the first layer's 256 rows after 10 steps and times steps 1000 onward:
their momentum is subnormal by then unless the optimizer flushes it.

    .venv/bin/python benchmarks/optim_speed.py [--repeats 7] [--steps 469]
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from nnforge import optim
from nnforge.nn import Parameter

SHAPES = [(256, 784), (256,), (128, 256), (128,), (10, 128), (10,)]
LR, B1, B2, EPS = 1e-3, 0.9, 0.999, 1e-8


def grads_for(seed: int = 0) -> list[np.ndarray]:
    """Fixed float32 gradients shaped like the MLP's parameters."""
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(s) * 1e-2).astype(np.float32) for s in SHAPES]


def naive_adam(grads: list[np.ndarray]) -> Callable[[], None]:
    """The textbook NumPy Adam: a temporary array per operation, per parameter."""
    ps = [np.zeros(s, np.float32) for s in SHAPES]
    ms = [np.zeros_like(p) for p in ps]
    vs = [np.zeros_like(p) for p in ps]
    t = [0]

    def step() -> None:
        t[0] += 1
        bc1, bc2 = 1 - B1 ** t[0], 1 - B2 ** t[0]
        for i, g in enumerate(grads):
            ms[i] = B1 * ms[i] + (1 - B1) * g
            vs[i] = B2 * vs[i] + (1 - B2) * g * g
            ps[i] -= LR * (ms[i] / bc1) / (np.sqrt(vs[i] / bc2) + EPS)
    return step


def inplace_adam(grads: list[np.ndarray]) -> Callable[[], None]:
    """PyTorch's formulas with out= ufuncs, one parameter at a time."""
    ps = [np.zeros(s, np.float32) for s in SHAPES]
    ms = [np.zeros_like(p) for p in ps]
    vs = [np.zeros_like(p) for p in ps]
    ts = [np.empty_like(p) for p in ps]
    t = [0]

    def step() -> None:
        t[0] += 1
        bc1, bc2 = 1 - B1 ** t[0], 1 - B2 ** t[0]
        for p, g, m, v, tmp in zip(ps, grads, ms, vs, ts):
            m *= B1
            np.multiply(g, 1 - B1, out=tmp)
            m += tmp
            v *= B2
            np.multiply(g, g, out=tmp)
            tmp *= 1 - B2
            v += tmp
            np.sqrt(v, out=tmp)
            tmp /= np.sqrt(bc2)
            tmp += EPS
            np.divide(m, tmp, out=tmp)
            tmp *= -LR / bc1
            p += tmp
    return step


#: nnforge optimizers left to choose their thread count, to report what they chose
AUTO: dict[str, optim.Optimizer] = {}


def nnforge_opt(grads: list[np.ndarray], cls: type, label: str = "",
                **kwargs) -> Callable[[], None]:
    """An nnforge optimizer over Parameters holding the fixed gradients."""
    ps = [Parameter(np.zeros(s, np.float32)) for s in SHAPES]
    opt = cls(ps, **kwargs)
    for p, g in zip(ps, grads):
        p.grad = g
    if label:
        AUTO[label] = opt
    return opt.step


def torch_opt(grads: list[np.ndarray], name: str, **kwargs) -> Callable[[], None]:
    """A torch.optim optimizer over tensors holding the same gradients."""
    import torch  # noqa: PLC0415 - optional peer

    ps = [torch.zeros(s, requires_grad=True) for s in SHAPES]
    opt = getattr(torch.optim, name)(ps, **kwargs)
    for p, g in zip(ps, grads):
        p.grad = torch.from_numpy(g)
    return opt.step


def with_dead_units(make: Callable[[list[np.ndarray]], Callable[[], None]],
                    grads: list[np.ndarray], warmup: int = 1000) -> Callable[[], None]:
    """A step function whose first 10 rows of the first weight got zero gradients from step 10
    on, after `warmup` steps (the grads arrays are changed in place under the optimizer)."""
    mine = [g.copy() for g in grads]
    step = make(mine)
    for t in range(warmup):
        if t == 10:
            mine[0][:10] = 0
            mine[1][:10] = 0
        step()
    return step


def without_flush(opt_step: Callable[[], None]) -> Callable[[], None]:
    """The same nnforge step with the subnormal flush switched off."""
    opt_step.__self__._flat.flush_every = 0  # type: ignore[attr-defined]
    return opt_step


def with_matmuls(step: Callable[[], None], seed: int = 0) -> Callable[[], None]:
    """step() preceded by the 9 matrix products of an MLP forward+backward at batch 128."""
    rng = np.random.default_rng(seed)
    ws = [rng.standard_normal(s).astype(np.float32) for s in SHAPES[::2]]
    x = rng.standard_normal((128, 784)).astype(np.float32)

    def train_step() -> None:
        acts = [x]
        for w in ws:
            acts.append(acts[-1] @ w.T)
        gy = acts[-1]
        for w, a in zip(ws[::-1], acts[-2::-1]):
            _ = gy.T @ a  # weight gradient
            gy = gy @ w   # input gradient
        step()
    return train_step


def measure(variants: dict[str, Callable[[], None]], steps: int,
            repeats: int) -> dict[str, list[float]]:
    """Seconds per `steps` steps for each variant, round-robin `repeats` times."""
    times: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():  # warm-up: allocations, thread start, first-touch
        for _ in range(5):
            fn()
    for _ in range(repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                fn()
            times[name].append(time.perf_counter() - t0)
    return times


def report(title: str, times: dict[str, list[float]], steps: int, ref: str | None) -> None:
    """Print one table: s/epoch (min, median), us/step, ratio to the reference row."""
    print(f"\n{title}")
    print(f"| {'variant':44s} | s/epoch min | median | us/step | vs {ref or '-'} |")
    print(f"|{'-' * 46}|-------------|--------|---------|{'-' * (len(ref or '-') + 5)}|")
    base = min(times[ref]) if ref in times else None
    for name, ts in times.items():
        best = min(ts)
        ratio = f"{best / base:.2f}x" if base else "-"
        print(f"| {name:44s} | {best:11.3f} | {np.median(ts):6.3f} | {best / steps * 1e6:7.0f} "
              f"| {ratio:>{len(ref or '-') + 3}s} |")


def main() -> None:
    """Run the three tables."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=469)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch peers")
    args = ap.parse_args()
    if not args.no_torch:
        import torch  # noqa: PLC0415

        torch.set_num_threads(2)
    g = grads_for()
    adam: dict[str, Callable[[], None]] = {
        "naive NumPy Adam (temporaries)": naive_adam(g),
        "NumPy Adam in place, per parameter": inplace_adam(g),
        "nnforge Adam, 1 thread": nnforge_opt(g, optim.Adam, lr=LR, threads=1),
        "nnforge Adam, 2 threads": nnforge_opt(g, optim.Adam, lr=LR, threads=2),
        "nnforge Adam, threads=None (timed choice)": nnforge_opt(g, optim.Adam, "alone",
                                                                 lr=LR),
    }
    if not args.no_torch:
        adam["torch Adam (default, foreach)"] = torch_opt(g, "Adam", lr=LR)
        adam["torch Adam (fused=True)"] = torch_opt(g, "Adam", lr=LR, fused=True)
    ref = None if args.no_torch else "torch Adam (fused=True)"
    with threadpool_limits(2):
        report(f"Adam step, {args.steps} steps, 235,146 float32 parameters in 6 arrays",
               measure(adam, args.steps, args.repeats), args.steps, ref)

        others: dict[str, Callable[[], None]] = {
            "nnforge SGD momentum=0.9": nnforge_opt(g, optim.SGD, lr=0.01, momentum=0.9),
            "nnforge AdamW": nnforge_opt(g, optim.AdamW, lr=LR),
            "nnforge RMSprop": nnforge_opt(g, optim.RMSprop, lr=LR),
        }
        if not args.no_torch:
            others["torch SGD momentum=0.9 (foreach)"] = torch_opt(g, "SGD", lr=0.01,
                                                                   momentum=0.9)
            others["torch AdamW (fused=True)"] = torch_opt(g, "AdamW", lr=LR, fused=True)
            others["torch RMSprop (foreach)"] = torch_opt(g, "RMSprop", lr=LR)
        report("Other optimizers", measure(others, args.steps, args.repeats), args.steps, None)

        loop = {
            "matmuls only (no optimizer)": with_matmuls(lambda: None),
            "matmuls + nnforge Adam, 1 thread": with_matmuls(
                nnforge_opt(g, optim.Adam, lr=LR, threads=1)),
            "matmuls + nnforge Adam, 2 threads": with_matmuls(
                nnforge_opt(g, optim.Adam, lr=LR, threads=2)),
            "matmuls + nnforge Adam, threads=None": with_matmuls(
                nnforge_opt(g, optim.Adam, "in the training loop", lr=LR)),
            "matmuls + NumPy Adam in place": with_matmuls(inplace_adam(g)),
        }
        report("Training loop: the MLP's 9 matmuls per step (OpenBLAS, 2 threads) + the step",
               measure(loop, args.steps, args.repeats), args.steps,
               "matmuls only (no optimizer)")
        dead = {
            "nnforge Adam, 1 thread (flushes subnormals)": with_dead_units(
                lambda gs: nnforge_opt(gs, optim.Adam, lr=LR, threads=1), g),
            "nnforge Adam, 1 thread, flush off": with_dead_units(
                lambda gs: without_flush(nnforge_opt(gs, optim.Adam, lr=LR, threads=1)), g),
            "NumPy Adam in place, per parameter": with_dead_units(inplace_adam, g),
        }
        if not args.no_torch:
            dead["torch Adam (default, foreach)"] = with_dead_units(
                lambda gs: torch_opt(gs, "Adam", lr=LR), g)
        report("Adam after 1000 steps with 10 dead units in the first layer (zero gradients)",
               measure(dead, args.steps, args.repeats), args.steps,
               "nnforge Adam, 1 thread (flushes subnormals)")
    chosen = ", ".join(f"{k}: {o._flat.chooser.mode}" for k, o in AUTO.items()
                       if o._flat.chooser is not None)
    print(f"\nthreads=None settled on (worker count at the end): {chosen}")


if __name__ == "__main__":
    main()
