"""RMSprop, following torch.optim.RMSprop (eps outside the sqrt, optional centering/momentum)."""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from ..errors import ConfigError
from .optimizer import Optimizer, check_float

_mul, _add = np.multiply, np.add


class RMSprop(Optimizer):
    """p -= lr * g / (sqrt(square_avg [- grad_avg**2]) + eps), with optional momentum.

    State is kept as undivided sums to save passes: `sq_grad_sum` = square_avg / (1 - alpha),
    `grad_sum` = grad_avg / (1 - alpha); `momentum_buffer` is PyTorch's. alpha must be < 1;
    changing it between steps rescales the sums (Optimizer._sync_sums), as PyTorch keeps the
    averages.
    """

    name = "rmsprop"

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, *, threads: int | None = None) -> None:
        super().__init__(params, threads, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                         momentum=momentum, centered=centered)

    def _configure(self, lr: float, alpha: float, eps: float, weight_decay: float,
                   momentum: float, centered: bool) -> None:
        alpha = check_float("alpha", alpha, 0.0, 1.0, high_open=True)
        eps = check_float("eps", eps, 0.0)
        wd = check_float("weight_decay", weight_decay, 0.0)
        mom = check_float("momentum", momentum, 0.0)
        if not isinstance(centered, (bool, np.bool_)):
            raise ConfigError(f"expected centered True or False, found {centered!r}")
        self.lr = lr
        self.alpha, self.eps, self.weight_decay, self.momentum = alpha, eps, wd, mom
        self.centered = bool(centered)

    def hyperparameters(self) -> dict[str, Any]:
        """Constructor arguments, JSON-serialisable."""
        return {"lr": self.lr, "alpha": self.alpha, "eps": self.eps,
                "weight_decay": self.weight_decay, "momentum": self.momentum,
                "centered": self.centered}

    def _state_names(self) -> tuple[str, ...]:
        return (("sq_grad_sum",) + (("grad_sum",) if self.centered else ())
                + (("momentum_buffer",) if self.momentum else ()))

    def _num_tmp(self) -> int:
        return 2

    def _sum_divisors(self) -> dict[str, float]:
        return {"sq_grad_sum": 1.0 - self.alpha, "grad_sum": 1.0 - self.alpha}

    def _flush(self, f: Any, p: Any, states: tuple) -> None:
        if self.centered:
            # a subnormal grad_sum squares to exactly 0, as the kernel computes it
            f.zero(states[1])
        if f.absorbed_by(self.eps):  # sqrt of a subnormal vanishes beside eps / sqrt(1-alpha)
            # centered: where grad_sum is not 0, sq_grad_sum - (1-alpha) grad_sum**2 could
            # turn negative without it
            f.zero(states[0], states[1] if self.centered else None)
        if self.momentum:  # the update is -lr * momentum_buffer
            f.zero_below_ulp(states[-1], p, self.lr)

    def _scalars(self, step: int) -> tuple:
        # avg = sqrt((1-a) X) + eps = sqrt(1-a) * (sqrt(X) + eps / sqrt(1-a))
        k = 1.0 / math.sqrt(1.0 - self.alpha)
        return self._cast(self.alpha, 1.0 - self.alpha, self.eps * k, k, -self.lr,
                          -self.lr * k, self.momentum, self.weight_decay)

    def _kernel(self, p: Any, g: Any, states: tuple, tmps: tuple, sc: tuple) -> None:
        alpha, one_minus, e, k, neg_lr, neg_lr_k, mom, wd = sc
        t, t2 = tmps
        if wd:
            _mul(p, wd, t2)
            _add(t2, g, t2)
            g = t2
        s = states[0]
        _mul(s, alpha, s)
        _mul(g, g, t)
        _add(s, t, s)
        if self.centered:
            a = states[1]
            _mul(a, alpha, a)
            _add(a, g, a)
            _mul(a, a, t)
            _mul(t, one_minus, t)
            np.subtract(s, t, t)
            np.sqrt(t, t)
        else:
            np.sqrt(s, t)
        _add(t, e, t)
        np.divide(g, t, t)
        if self.momentum:
            buf = states[-1]
            _mul(buf, mom, buf)
            _mul(t, k, t)
            _add(buf, t, buf)
            _mul(buf, neg_lr, t)
        else:
            _mul(t, neg_lr_k, t)
        _add(p, t, p)
