"""Training speed: nnforge vs PyTorch vs a naive NumPy loop, seconds per epoch and peak memory.

Each implementation runs in its own subprocess (so peak RSS is its own), threads pinned to 2
(OpenBLAS through threadpoolctl, torch.set_num_threads). Run: .venv/bin/python
benchmarks/train_speed.py [--rounds 3] [--epochs 4]. PyTorch must be installed
(pip install torch==2.13.0); it is not an nnforge dependency.

Two ratios are printed: over all epochs, and over the steady state (every epoch after each
run's first). They differ because PyTorch's first epochs here are slowed by page faults: its
allocator hands freed tensors back to the OS and touches new pages again (measured: 338,000
minor faults and 0.74 s of system time in a 1.97 s first epoch, against 1,200 faults and
0.01 s in a 1.44 s later one). A two-epoch run sees only that phase; the "sys s" column shows
it. The `numpy-floor` row (MLP only) is a lower bound for any NumPy engine: the forward and
backward passes written by hand with in-place ops, softmax cross-entropy folded into one
gradient, and plain SGD (two passes per parameter) instead of Adam (ten).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from _common import THREADS, peak_rss_mib, pin_threads  # noqa: E402


def synthetic(n: int, shape: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Random float32 inputs and 10-class labels."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, *shape), dtype=np.float32), rng.integers(0, 10, n)


# -- nnforge ---------------------------------------------------------------------------------
def run_nnforge(model_name: str, X: np.ndarray, y: np.ndarray, epochs: int, batch: int) -> list:
    import nnforge as nf  # noqa: PLC0415
    from nnforge import nn, optim  # noqa: PLC0415

    nf.manual_seed(0)
    if model_name == "mlp":
        model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                              nn.Linear(128, 10))
    else:
        model = nn.Sequential(nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
                              nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                              nn.Linear(256, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                              nn.Linear(84, 10))
    sys_times: list[float] = []

    class SysTime(nf.train.Callback):
        """System CPU time of each epoch, as the other implementations record it."""

        def on_epoch_begin(self, epoch: int) -> None:
            self.start = _sys_seconds()

        def on_epoch_end(self, epoch: int, logs: dict) -> None:
            sys_times.append(_sys_seconds() - self.start)

    trainer = nf.Trainer(model, optimizer=optim.Adam(model.parameters(), lr=1e-3), seed=0,
                         verbose=0)
    # the Trainer times each epoch itself (shuffle, batches, forward, backward, optimizer);
    # fit()'s one-off input checks are outside, as data loading is for the peers
    history = trainer.fit(X, y, epochs=epochs, batch_size=batch, callbacks=[SysTime()])
    return list(zip(history["time"], sys_times))


# -- PyTorch ---------------------------------------------------------------------------------
def run_torch(model_name: str, X: np.ndarray, y: np.ndarray, epochs: int, batch: int) -> list:
    import torch  # noqa: PLC0415

    pin_threads()
    torch.manual_seed(0)
    nnt = torch.nn
    if model_name == "mlp":
        model = nnt.Sequential(nnt.Linear(784, 256), nnt.ReLU(), nnt.Linear(256, 128),
                               nnt.ReLU(), nnt.Linear(128, 10))
    else:
        model = nnt.Sequential(nnt.Conv2d(1, 6, 5), nnt.ReLU(), nnt.MaxPool2d(2),
                               nnt.Conv2d(6, 16, 5), nnt.ReLU(), nnt.MaxPool2d(2), nnt.Flatten(),
                               nnt.Linear(256, 120), nnt.ReLU(), nnt.Linear(120, 84), nnt.ReLU(),
                               nnt.Linear(84, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    loss_fn = nnt.CrossEntropyLoss()
    times = []
    for _ in range(epochs):
        t0, s0 = time.perf_counter(), _sys_seconds()
        perm = torch.randperm(len(Xt))
        for i in range(0, len(Xt), batch):
            idx = perm[i:i + batch]
            opt.zero_grad()
            loss = loss_fn(model(Xt[idx]), yt[idx])
            loss.backward()
            opt.step()
        times.append((time.perf_counter() - t0, _sys_seconds() - s0))
    return times


# -- naive NumPy, as the blog posts write it ------------------------------------------------
def run_naive(model_name: str, X: np.ndarray, y: np.ndarray, epochs: int, batch: int) -> list:
    if model_name != "mlp":
        raise SystemExit("naive NumPy is only written for the MLP")
    rng = np.random.default_rng(0)
    sizes = [784, 256, 128, 10]
    W = [(rng.standard_normal((a, b)) * np.sqrt(2 / a)).astype(np.float32)
         for a, b in zip(sizes, sizes[1:])]
    B = [np.zeros(b, np.float32) for b in sizes[1:]]
    params = W + B
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    lr, b1, b2, eps, t = 1e-3, 0.9, 0.999, 1e-8, 0
    times = []
    for _ in range(epochs):
        t0, s0 = time.perf_counter(), _sys_seconds()
        perm = rng.permutation(len(X))
        for i in range(0, len(X), batch):
            idx = perm[i:i + batch]
            xb, yb = X[idx], y[idx]
            h1 = np.maximum(xb @ W[0] + B[0], 0)
            h2 = np.maximum(h1 @ W[1] + B[1], 0)
            z = h2 @ W[2] + B[2]
            z = z - z.max(1, keepdims=True)
            p = np.exp(z)
            p /= p.sum(1, keepdims=True)
            g = p
            g[np.arange(len(yb)), yb] -= 1
            g /= len(yb)
            gW2, gB2 = h2.T @ g, g.sum(0)
            g = (g @ W[2].T) * (h2 > 0)
            gW1, gB1 = h1.T @ g, g.sum(0)
            g = (g @ W[1].T) * (h1 > 0)
            gW0, gB0 = xb.T @ g, g.sum(0)
            grads = [gW0, gW1, gW2, gB0, gB1, gB2]
            t += 1
            for k, (pk, gk) in enumerate(zip(params, grads)):
                m[k] = b1 * m[k] + (1 - b1) * gk
                v[k] = b2 * v[k] + (1 - b2) * gk * gk
                mhat = m[k] / (1 - b1 ** t)
                vhat = v[k] / (1 - b2 ** t)
                pk -= lr * mhat / (np.sqrt(vhat) + eps)
        times.append((time.perf_counter() - t0, _sys_seconds() - s0))
    return times


# -- a lower bound for NumPy engines: hand-written passes, plain SGD -------------------------
def run_floor(model_name: str, X: np.ndarray, y: np.ndarray, epochs: int, batch: int) -> list:
    if model_name != "mlp":
        raise SystemExit("the NumPy floor is only written for the MLP")
    rng = np.random.default_rng(0)
    sizes = [784, 256, 128, 10]
    # (out, in) stored column-major, the layout nnforge's Linear uses (the faster products)
    W = [np.asfortranarray((rng.standard_normal((b, a)) * np.sqrt(2 / a)).astype(np.float32))
         for a, b in zip(sizes, sizes[1:])]
    B = [np.zeros(b, np.float32) for b in sizes[1:]]
    lr = np.float32(-1e-3)
    times = []
    for _ in range(epochs):
        t0, s0 = time.perf_counter(), _sys_seconds()
        perm = rng.permutation(len(X))
        for i in range(0, len(X), batch):
            idx = perm[i:i + batch]
            xb, yb = X.take(idx, axis=0), y.take(idx)
            acts, h = [xb], xb
            for k in range(3):
                h = h @ W[k].T
                h += B[k]
                if k < 2:
                    np.maximum(h, 0, out=h)
                acts.append(h)
            h -= h.max(1, keepdims=True)  # softmax cross-entropy, its gradient in place
            np.exp(h, out=h)
            h /= h.sum(1, keepdims=True)
            h[np.arange(len(yb)), yb] -= 1
            h /= len(yb)
            g = h
            for k in (2, 1, 0):
                gw, gb = (acts[k].T @ g).T, g.sum(0)
                if k:
                    g = (g @ W[k]) * (acts[k] > 0)
                gw *= lr
                W[k] += gw
                gb *= lr
                B[k] += gb
        times.append((time.perf_counter() - t0, _sys_seconds() - s0))
    return times


def _sys_seconds() -> float:
    """System CPU time of this process so far (page faults, thread wake-ups)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_stime


IMPLS = {"nnforge": run_nnforge, "pytorch": run_torch, "naive-numpy": run_naive,
         "numpy-floor": run_floor}


def child(impl: str, model: str, epochs: int, samples: int, batch: int) -> None:
    """Run one implementation and print a JSON line with its epoch times, system CPU time per
    epoch and peak memory."""
    if impl == "pytorch":
        import torch  # noqa: F401, PLC0415 - imported first so pin_threads sees it
    pinned = pin_threads()
    shape = (784,) if model == "mlp" else (1, 28, 28)
    X, y = synthetic(samples, shape)
    epochs_done = IMPLS[impl](model, X, y, epochs, batch)  # (seconds, system seconds) each
    print(json.dumps({"epochs": epochs_done, "rss": peak_rss_mib(), "threads": pinned}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=4,
                    help="epochs per run (at least 2: the steady state leaves out the first)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating rounds: every implementation runs once per round, so "
                         "slow phases of a shared machine hit all of them alike")
    ap.add_argument("--models", default="mlp,lenet5", help="comma-separated: mlp, lenet5")
    ap.add_argument("--mlp-samples", type=int, default=60000)
    ap.add_argument("--lenet-samples", type=int, default=10000)
    ap.add_argument("--child", nargs=5, metavar=("IMPL", "MODEL", "EPOCHS", "SAMPLES", "BATCH"))
    args = ap.parse_args()
    if args.child:
        impl, model, epochs, samples, batch = args.child
        child(impl, model, int(epochs), int(samples), int(batch))
        return
    if args.epochs < 2:
        ap.error("--epochs must be at least 2 (the steady state leaves out each run's first)")
    jobs = [("mlp", args.mlp_samples, 128, ["nnforge", "pytorch", "naive-numpy",
                                            "numpy-floor"]),
            ("lenet5", args.lenet_samples, 64, ["nnforge", "pytorch"])]
    jobs = [job for job in jobs if job[0] in args.models.split(",")]
    print(f"threads pinned to {THREADS} (OpenBLAS via threadpoolctl, torch.set_num_threads); "
          f"{args.rounds} alternating rounds of {args.epochs} epochs, each implementation in "
          f"its own process; synthetic float32 data; batch 128 (MLP), 64 (LeNet-5); Adam "
          f"(numpy-floor: plain SGD). all = every epoch, steady = every epoch after each run's "
          f"first; s/epoch = median; ratio = median of the per-round ratios of medians; "
          f"sys = system CPU seconds per epoch, first epoch / later ones (median)")
    print(f"{'model':8} {'implementation':14} {'samples':>7} {'s/epoch':>8} {'steady':>7} "
          f"{'best':>6} {'vs torch':>9} {'steady':>7} {'steady rounds':>16} "
          f"{'sys first/later':>16} {'peak RSS MiB':>13}")
    for model, samples, batch, impls in jobs:
        runs: dict[str, list[list[tuple[float, float]]]] = {impl: [] for impl in impls}
        rss: dict[str, float] = {}
        for _ in range(args.rounds):
            for impl in impls:
                out = subprocess.run([sys.executable, __file__, "--child", impl, model,
                                      str(args.epochs), str(samples), str(batch)],
                                     capture_output=True, text=True, check=False)
                if out.returncode:
                    print(f"{model:8} {impl:14} failed: {out.stderr.strip().splitlines()[-1:]}")
                    runs[impl].append([])
                    continue
                result = json.loads(out.stdout.strip().splitlines()[-1])
                runs[impl].append([tuple(e) for e in result["epochs"]])
                rss[impl] = max(rss.get(impl, 0.0), result["rss"])
        for impl in impls:
            _report(model, impl, samples, runs[impl], runs.get("pytorch", []), rss.get(impl))


def _round_ratios(runs: list, base: list, skip: int) -> list[float]:
    """Per round: this implementation's median epoch time over torch's, from epoch `skip` on."""
    return [float(np.median([t for t, _ in r[skip:]]) / np.median([t for t, _ in b[skip:]]))
            for r, b in zip(runs, base) if r[skip:] and b[skip:]]


def _report(model: str, impl: str, samples: int, runs: list, base: list,
            rss: float | None) -> None:
    """One table row: all epochs and the steady state, ratios to torch, system time."""
    done = [r for r in runs if r]
    if not done:
        return
    every = [t for r in done for t, _ in r]
    steady = [t for r in done for t, _ in r[1:]]
    ratio_all, ratio_steady = _round_ratios(runs, base, 0), _round_ratios(runs, base, 1)

    def fmt(ratios: list[float], width: int) -> str:
        return f"{np.median(ratios):>{width - 1}.2f}x" if ratios else f"{'n/a':>{width}}"

    sys_first = np.median([r[0][1] for r in done])
    sys_later = np.median([s for r in done for _, s in r[1:]])
    spread = " ".join(f"{r:.2f}" for r in ratio_steady)
    print(f"{model:8} {impl:14} {samples:>7} {np.median(every):>8.3f} {np.median(steady):>7.3f} "
          f"{min(every):>6.3f} {fmt(ratio_all, 9)} {fmt(ratio_steady, 7)} {spread:>16} "
          f"{f'{sys_first:.2f}/{sys_later:.2f}':>16} {rss or 0:>13.0f}")

if __name__ == "__main__":
    main()
