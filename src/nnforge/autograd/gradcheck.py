"""The one shared numerical gradient checker every op and layer test goes through."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from .grad_mode import enable_grad
from .tensor import Tensor


def numerical_grad(f: Callable[[], float], x: np.ndarray, eps: float) -> np.ndarray:
    """Central-difference gradient of scalar f() with respect to array x (modified in place)."""
    g = np.zeros_like(x)  # same memory order as x
    # views in memory order (column-major parameters too): writes must reach x itself
    flat, gflat = x.reshape(-1, order="A"), g.reshape(-1, order="A")
    if not np.shares_memory(flat, x):
        raise ValueError("numerical_grad needs a C- or Fortran-contiguous array to perturb")
    for i in range(flat.size):
        orig = flat[i]
        flat[i] = orig + eps
        fp = f()
        flat[i] = orig - eps
        fm = f()
        flat[i] = orig
        gflat[i] = (fp - fm) / (2 * eps)
    return g


def check_gradients(fn: Callable[..., Tensor], inputs: Sequence[Any], params: Sequence[Tensor] = (),
                    eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-7,
                    seed: int = 0) -> None:
    """Compare autograd gradients of fn(*inputs) against central differences, in float64.

    The output is reduced with fixed random weights so every output element matters.
    `params` are extra leaf tensors (a layer's parameters) that are checked too.
    Raises AssertionError naming the tensor and the worst element when they disagree.
    """
    leaves = [x if isinstance(x, Tensor) else Tensor(np.asarray(x, dtype=np.float64),
                                                       requires_grad=True) for x in inputs]
    for t in list(leaves) + list(params):
        if t.dtype != np.float64:
            raise AssertionError(f"gradient checks run in float64, found {t.dtype}")
    with enable_grad():
        out = fn(*leaves)
    weights = np.random.default_rng(seed).standard_normal(out.shape)

    def scalar() -> float:
        with enable_grad():
            return float((fn(*leaves).data * weights).sum())

    targets = [t for t in list(leaves) + list(params) if t.requires_grad]
    for t in targets:
        t.grad = None
    with enable_grad():
        out = fn(*leaves)
    out.backward(weights.astype(out.dtype))
    for k, t in enumerate(targets):
        analytic = t.grad if t.grad is not None else np.zeros_like(t.data)
        numeric = numerical_grad(scalar, t.data, eps)
        err = np.abs(analytic - numeric) - (atol + rtol * np.abs(numeric))
        # NaN counts as a mismatch: `err > 0` alone is False for NaN and would let it pass
        err = np.where(np.isnan(err), np.inf, err)
        if (err > 0).any():
            i = tuple(int(j) for j in np.unravel_index(int(np.argmax(err)), err.shape))
            raise AssertionError(f"gradient mismatch for input {k} (shape {t.shape}) at {i}: "
                                 f"autograd {analytic[i]!r}, numerical {numeric[i]!r}")
