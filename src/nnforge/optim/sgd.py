"""Stochastic gradient descent with momentum, Nesterov and weight decay, as torch.optim.SGD."""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from ..errors import ConfigError, StateDictError
from .optimizer import Optimizer, check_float

_mul, _add = np.multiply, np.add


class SGD(Optimizer):
    """p -= lr * d, d = g + wd*p, with momentum buf = momentum*buf + (1-dampening)*d.

    As in PyTorch the momentum buffer starts as a copy of the first gradient (no dampening on
    that step), also when momentum is switched on mid-run, and Nesterov uses d + momentum*buf.
    """

    name = "sgd"
    #: indices of parameters whose momentum buffer has not been written yet ("fresh": the
    #: next step copies d in); None in optimizers pickled before it existed
    _fresh: set[int] | None = None
    _first = False  # the kernel's "copy d into the buffer" switch, for the current pass

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
                          self.weight_decay) + (self._first,)

    def _new_states(self, names: tuple[str, ...]) -> None:
        if "momentum_buffer" in names:
            self._fresh = set(range(len(self._flat.params)))

    def _fresh_set(self) -> set[int]:
        if self._fresh is None:  # an older pickle: buffers were fresh until a parameter's step 1
            self._fresh = {i for i, s in enumerate(self._flat.steps) if s == 0}
        return self._fresh

    def _apply(self, flat: Any) -> None:
        fresh = self._fresh_set() if flat.state_names else None
        params = flat.params
        now = {i for i in fresh if params[i].grad is not None} if fresh else None
        if not now:  # the usual step
            flat.apply(self._kernel, self._scalars, self._flush)
            return
        grads = [p.grad for p in params]
        rest = {i for i, g in enumerate(grads) if g is not None} - now
        # the kernel's copy switch is per call: fresh buffers and the others in separate
        # passes, each with the other's gradients hidden (a parameter without one is skipped)
        try:
            for first, keep in ((True, now), (False, rest)):
                if keep:
                    for i, p in enumerate(params):
                        p.grad = grads[i] if i in keep else None
                    self._first = first
                    flat.apply(self._kernel, self._scalars, self._flush)
        finally:
            self._first = False
            for p, g in zip(params, grads):
                p.grad = g
        fresh -= now

    def _flush(self, f: Any, p: Any, states: tuple) -> None:
        # the update is lr * buf, or lr * (g + momentum * (momentum * buf + g)) with Nesterov
        if states:
            f.zero_below_ulp(states[0], p, self.lr * max(1.0, self.momentum) ** 2)

    def _extra_state(self) -> dict[str, Any]:
        return {"fresh": sorted(self._fresh_set())}

    def _check_extra_state(self, config: dict[str, Any]) -> None:
        fresh, n = config.get("fresh", []), len(self._flat.params)
        if not isinstance(fresh, list) or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n for i in fresh):
            raise StateDictError(f"expected 'fresh' as a list of parameter indices in [0, {n}), "
                                 f"found {fresh!r:.80}")

    def _load_extra_state(self, config: dict[str, Any]) -> None:
        if "fresh" in config:
            self._fresh = set(config["fresh"])
        else:  # saved before 'fresh' existed: buffers were fresh until a parameter's step 1
            self._fresh = {i for i, s in enumerate(self._flat.steps) if s == 0}

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
