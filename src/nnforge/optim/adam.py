"""Adam and AdamW, following PyTorch's algorithms (bias correction, eps outside the sqrt)."""

from __future__ import annotations

import math
from typing import Any, Iterable

import numpy as np

from ..errors import ConfigError
from .optimizer import Optimizer, check_float

_mul, _add = np.multiply, np.add


class Adam(Optimizer):
    """Adam (Kingma & Ba) with L2 weight decay added to the gradient, as torch.optim.Adam.

    The state is kept as undivided sums so that one step needs 10 ufunc passes instead of 12:
    `grad_sum` = exp_avg / (1 - beta1), `sq_grad_sum` = exp_avg_sq / (1 - beta2) (and
    `max_sq_grad_sum` for amsgrad); the trajectory is PyTorch's to rounding. Changing betas
    between steps rescales the sums (Optimizer._sync_sums), as PyTorch keeps the averages.
    """

    name = "adam"
    _decoupled = False

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *,
                 threads: int | None = None) -> None:
        super().__init__(params, threads, lr=lr, betas=betas, eps=eps,
                         weight_decay=weight_decay, amsgrad=amsgrad)

    def _configure(self, lr: float, betas: Any, eps: float, weight_decay: float,
                   amsgrad: bool) -> None:
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ConfigError(f"expected betas as a pair (beta1, beta2), found {betas!r}")
        b1 = check_float("beta1", betas[0], 0.0, 1.0, high_open=True)
        b2 = check_float("beta2", betas[1], 0.0, 1.0, high_open=True)
        eps = check_float("eps", eps, 0.0)
        wd = check_float("weight_decay", weight_decay, 0.0)
        if not isinstance(amsgrad, (bool, np.bool_)):
            raise ConfigError(f"expected amsgrad True or False, found {amsgrad!r}")
        self.lr = lr
        self.betas, self.eps, self.weight_decay, self.amsgrad = (b1, b2), eps, wd, bool(amsgrad)

    def hyperparameters(self) -> dict[str, Any]:
        """Constructor arguments, JSON-serialisable."""
        return {"lr": self.lr, "betas": list(self.betas), "eps": self.eps,
                "weight_decay": self.weight_decay, "amsgrad": self.amsgrad}

    def _state_names(self) -> tuple[str, ...]:
        names = ("grad_sum", "sq_grad_sum")
        return names + ("max_sq_grad_sum",) if self.amsgrad else names

    def _num_tmp(self) -> int:
        return 2 if self.weight_decay and not self._decoupled else 1

    def _sum_divisors(self) -> dict[str, float]:
        b1, b2 = self.betas
        return {"grad_sum": 1.0 - b1, "sq_grad_sum": 1.0 - b2, "max_sq_grad_sum": 1.0 - b2}

    def _flush(self, f: Any, p: Any, states: tuple) -> None:
        # update = c * M / (sqrt(V) + eps*r) with c <= lr / sqrt(1-b2) and r >= 1 (_scalars)
        m, v = states[0], states[1]
        if f.absorbed_by(self.eps):  # a subnormal V (or max) vanishes beside eps*r
            for s in states[1:]:
                f.zero(s)
        vd = states[-1] if self.amsgrad else v
        eps = self.eps

        def den(out: Any) -> None:  # sqrt(V) + eps <= the true denominator: a safe bound
            np.sqrt(vd, out)
            _add(out, out.dtype.type(eps), out)

        coef = self.lr / math.sqrt(1.0 - self.betas[1])
        if self._decoupled:  # the update lands on p * (1 - lr*wd): compare with that
            decay = 1.0 - self.lr * self.weight_decay
            if decay <= 0:
                return
            coef /= decay
        f.zero_below_ulp(m, p, coef, den)

    def _scalars(self, step: int) -> tuple:
        b1, b2 = self.betas
        # PyTorch: p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps) with m = (1-b1) M, v = (1-b2) V;
        # pulling r = sqrt(bc2 / (1-b2)) out leaves p -= c * M / (sqrt(V) + eps*r)
        bc1, bc2 = 1.0 - b1 ** step, 1.0 - b2 ** step
        r = math.sqrt(bc2 / (1.0 - b2))
        c = self.lr * (1.0 - b1) / bc1 * r
        decay = 1.0 - self.lr * self.weight_decay if self._decoupled else 1.0
        return self._cast(b1, b2, -c, self.eps * r, self.weight_decay, decay)

    def _kernel(self, p: Any, g: Any, states: tuple, tmps: tuple, sc: tuple) -> None:
        b1, b2, neg_c, e, wd, decay = sc
        m, v = states[0], states[1]
        t = tmps[0]
        # positional out= arguments and 0-d scalars: each call is ~0.5 us cheaper
        if self._decoupled:
            if decay != 1:
                _mul(p, decay, p)
        elif wd:
            _mul(p, wd, tmps[1])
            _add(tmps[1], g, tmps[1])
            g = tmps[1]
        _mul(m, b1, m)
        _add(m, g, m)
        _mul(g, g, t)
        _mul(v, b2, v)
        _add(v, t, v)
        if self.amsgrad:
            np.maximum(states[2], v, out=states[2])
            v = states[2]
        np.sqrt(v, t)
        _add(t, e, t)
        np.divide(m, t, t)
        _mul(t, neg_c, t)
        _add(p, t, p)


class AdamW(Adam):
    """Adam with decoupled weight decay (p *= 1 - lr*weight_decay first), as torch.optim.AdamW."""

    name = "adamw"
    _decoupled = True

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 threads: int | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, threads=threads)
