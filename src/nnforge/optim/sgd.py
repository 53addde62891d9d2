"""Stochastic gradient descent with momentum, Nesterov and weight decay, as torch.optim.SGD."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..errors import ConfigError
from .optimizer import Optimizer, check_float

_mul, _add = np.multiply, np.add


class SGD(Optimizer):
    """p -= lr * d, d = g + wd*p, with momentum buf = momentum*buf + (1-dampening)*d.

    As in PyTorch the momentum buffer starts as a copy of the first gradient (no dampening on
    that step), and Nesterov uses d + momentum*buf.
    """

    name = "sgd"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False, *,
                 threads: int | None = None) -> None:
        super().__init__(params, threads, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov)

    def _configure(self, lr: float, momentum: float, dampening: float, weight_decay: float,
                   nesterov: bool) -> None:
        mom = check_float("momentum", momentum, 0.0)
        damp = check_float("dampening", dampening)
        wd = check_float("weight_decay", weight_decay, 0.0)
        if not isinstance(nesterov, (bool, np.bool_)):
            raise ConfigError(f"expected nesterov True or False, found {nesterov!r}")
        if nesterov and (mom <= 0 or damp != 0):
            raise ConfigError(f"Nesterov momentum expects momentum > 0 and dampening 0, found "
                              f"momentum={mom:g}, dampening={damp:g}")
        self.lr = lr
        self.momentum, self.dampening, self.weight_decay = mom, damp, wd
        self.nesterov = bool(nesterov)

    def hyperparameters(self) -> dict[str, Any]:
        """Constructor arguments, JSON-serialisable."""
        return {"lr": self.lr, "momentum": self.momentum, "dampening": self.dampening,
                "weight_decay": self.weight_decay, "nesterov": self.nesterov}

    def _state_names(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum else ()

    def _num_tmp(self) -> int:
        return 2

    def _scalars(self, step: int) -> tuple:
        return self._cast(-self.lr, self.momentum, 1.0 - self.dampening,
                          self.weight_decay) + (step == 1,)

    def _kernel(self, p: Any, g: Any, states: tuple, tmps: tuple, sc: tuple) -> None:
        neg_lr, mom, undamp, wd, first = sc
        t1, t2 = tmps
        if wd:
            _mul(p, wd, t1)
            _add(t1, g, t1)
            g = t1
        d = g
        if states:
            buf = states[0]
            if first:
                np.copyto(buf, g)
            else:
                _mul(buf, mom, buf)
                if undamp != 1:
                    _mul(g, undamp, t2)
                    _add(buf, t2, buf)
                else:
                    _add(buf, g, buf)
            if self.nesterov:
                _mul(buf, mom, t2)
                _add(t2, g, t2)
                d = t2
            else:
                d = buf
        _mul(d, neg_lr, t2)
        _add(p, t2, p)
