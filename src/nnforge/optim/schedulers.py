"""Learning-rate schedules: they set `optimizer.lr`; state dicts are plain JSON-able dicts."""

from __future__ import annotations

import math
from typing import Any

from ..errors import ConfigError, StateDictError
from .optimizer import Optimizer, check_float


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"expected an integer {name} >= {low}, found {value!r}")
    return value


class LRScheduler:
    """Base of the closed-form schedules: lr = lr_at(number of step() calls so far).

    As in PyTorch, building one sets the optimizer's lr to lr_at(0); call step() once per
    epoch (or per batch, for warmup) after optimizer.step(). Unlike PyTorch's chainable
    schedulers, each step sets the lr outright, so two schedules on one optimizer do not
    compound (the last to step wins, a ReduceLROnPlateau cut included): chain a warmup and
    a schedule with LinearWarmup(after=...).
    """

    def __init__(self, optimizer: Optimizer) -> None:
        if not isinstance(optimizer, Optimizer):
            raise ConfigError(f"expected an nnforge Optimizer, found {type(optimizer).__name__}")
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.last_epoch = 0
        optimizer.lr = self.lr_at(0)

    def lr_at(self, t: int) -> float:  # pragma: no cover - abstract
        """Learning rate after t calls to step()."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:  # pragma: no cover - abstract
        """Constructor arguments (without the optimizer), JSON-serialisable."""
        raise NotImplementedError

    def step(self) -> None:
        """Advance the schedule by one and set the optimizer's lr."""
        self.last_epoch += 1
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def get_last_lr(self) -> float:
        """The learning rate the schedule last set."""
        return self.lr_at(self.last_epoch)

    def state_dict(self) -> dict[str, Any]:
        """Position and settings, JSON-serialisable."""
        return {"name": type(self).__name__, "config": self.get_config(),
                "base_lr": self.base_lr, "last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the position saved by state_dict() and set the optimizer's lr to match."""
        _check_state(self, state, ("base_lr", "last_epoch"))
        if state["config"] != self.get_config():
            raise StateDictError(f"{type(self).__name__} state has settings {state['config']}, "
                                 f"this scheduler has {self.get_config()}")
        try:
            base_lr = check_float("base_lr", state["base_lr"], 0.0)
            last_epoch = _check_int("last_epoch", state["last_epoch"], 0)
        except ConfigError as exc:
            raise StateDictError(f"bad {type(self).__name__} state: {exc}") from None
        self._load_nested(state)
        self.base_lr, self.last_epoch = base_lr, last_epoch
        self.optimizer.lr = self.lr_at(self.last_epoch)

    def _load_nested(self, state: dict[str, Any]) -> None:
        """Restore schedules this one wraps (after this one's state has been checked)."""


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (t // step_size)."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = _check_int("step_size", step_size, 1)
        self.gamma = check_float("gamma", gamma, 0.0)
        super().__init__(optimizer)

    def lr_at(self, t: int) -> float:
        """Learning rate after t steps."""
        return self.base_lr * self.gamma ** (t // self.step_size)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {"step_size": self.step_size, "gamma": self.gamma}


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2, PyTorch's closed form."""

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:  # noqa: N803
        self.T_max = _check_int("T_max", T_max, 1)
        self.eta_min = check_float("eta_min", eta_min, 0.0)
        super().__init__(optimizer)

    def lr_at(self, t: int) -> float:
        """Learning rate after t steps."""
        cos = (1.0 + math.cos(math.pi * t / self.T_max)) / 2.0
        return self.eta_min + (self.base_lr - self.eta_min) * cos

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {"T_max": self.T_max, "eta_min": self.eta_min}


class LinearWarmup(LRScheduler):
    """lr rises linearly from start_factor * target to target over warmup_steps steps.

    `after`, another schedule built on the same optimizer, takes over once the warmup is done
    (its own step 0 starts then) and also sets the target; drive only the LinearWarmup.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, start_factor: float = 0.1,
                 after: LRScheduler | None = None) -> None:
        self.warmup_steps = _check_int("warmup_steps", warmup_steps, 1)
        self.start_factor = check_float("start_factor", start_factor, 0.0, 1.0)
        if after is not None and (not isinstance(after, LRScheduler)
                                  or after.optimizer is not optimizer):
            raise ConfigError("expected `after` to be a schedule (StepLR, CosineAnnealingLR, ...) "
                              f"built on the same optimizer, found {type(after).__name__}")
        self.after = after
        super().__init__(optimizer)

    def lr_at(self, t: int) -> float:
        """Learning rate after t steps."""
        if self.after is not None:
            if t >= self.warmup_steps:
                return self.after.lr_at(t - self.warmup_steps)
            target = self.after.lr_at(0)
        else:
            target = self.base_lr
        frac = min(t, self.warmup_steps) / self.warmup_steps
        return target * (self.start_factor + (1.0 - self.start_factor) * frac)

    def step(self) -> None:
        """Advance the warmup (or the schedule after it) by one."""
        super().step()
        if self.after is not None:
            self.after.last_epoch = max(0, self.last_epoch - self.warmup_steps)

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (the schedule after, by name and settings)."""
        after = None if self.after is None else {"name": type(self.after).__name__,
                                                 "config": self.after.get_config()}
        return {"warmup_steps": self.warmup_steps, "start_factor": self.start_factor,
                "after": after}

    def state_dict(self) -> dict[str, Any]:
        """Position and settings, with the following schedule's state nested."""
        sd = super().state_dict()
        sd["after_state"] = None if self.after is None else self.after.state_dict()
        return sd

    def _load_nested(self, state: dict[str, Any]) -> None:
        if self.after is not None:
            if not isinstance(state.get("after_state"), dict):
                raise StateDictError("LinearWarmup state lacks the state of its `after` schedule")
            self.after.load_state_dict(state["after_state"])


class ReduceLROnPlateau:
    """Multiply lr by factor when the metric has not improved for more than `patience` steps.

    Same rules as torch.optim.lr_scheduler.ReduceLROnPlateau: improvement is relative
    (`threshold_mode="rel"`) or absolute; after a reduction, `cooldown` steps are not counted.
    """

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float = 0.0, eps: float = 1e-8) -> None:
        if not isinstance(optimizer, Optimizer):
            raise ConfigError(f"expected an nnforge Optimizer, found {type(optimizer).__name__}")
        if mode not in ("min", "max"):
            raise ConfigError(f"expected mode 'min' or 'max', found {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ConfigError(f"expected threshold_mode 'rel' or 'abs', found {threshold_mode!r}")
        self.optimizer = optimizer
        self.mode, self.threshold_mode = mode, threshold_mode
        self.factor = check_float("factor", factor, 0.0, 1.0, high_open=True)
        self.patience = _check_int("patience", patience, 0)
        self.threshold = check_float("threshold", threshold, 0.0)
        self.cooldown = _check_int("cooldown", cooldown, 0)
        self.min_lr = check_float("min_lr", min_lr, 0.0)
        self.eps = check_float("eps", eps, 0.0)
        self.best: float | None = None  # None: nothing seen yet
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    def is_better(self, value: float) -> bool:
        """True when value improves on the best value so far by more than the threshold."""
        if self.mode == "min":
            best = math.inf if self.best is None else self.best
            bound = (best * (1.0 - self.threshold) if self.threshold_mode == "rel"
                     else best - self.threshold)
            return value < bound
        best = -math.inf if self.best is None else self.best
        bound = (best * (1.0 + self.threshold) if self.threshold_mode == "rel"
                 else best + self.threshold)
        return value > bound

    def step(self, metric: float) -> None:
        """Record this step's metric (e.g. validation loss) and reduce lr if it has plateaued."""
        value = float(metric)
        self.last_epoch += 1
        if self.is_better(value):
            self.best = value
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old = self.optimizer.lr
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                self.optimizer.lr = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def get_last_lr(self) -> float:
        """The optimizer's current learning rate."""
        return self.optimizer.lr

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments (without the optimizer)."""
        return {"mode": self.mode, "factor": self.factor, "patience": self.patience,
                "threshold": self.threshold, "threshold_mode": self.threshold_mode,
                "cooldown": self.cooldown, "min_lr": self.min_lr, "eps": self.eps}

    def state_dict(self) -> dict[str, Any]:
        """Counters and best value, JSON-serialisable (best is None before the first step)."""
        return {"name": type(self).__name__, "config": self.get_config(), "best": self.best,
                "num_bad_epochs": self.num_bad_epochs,
                "cooldown_counter": self.cooldown_counter, "last_epoch": self.last_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore counters and settings saved by state_dict()."""
        _check_state(self, state, ("best", "num_bad_epochs", "cooldown_counter", "last_epoch"))
        try:
            fresh = ReduceLROnPlateau(self.optimizer, **state["config"])
            best = None if state["best"] is None else check_float("best", state["best"])
            counters = [_check_int(k, state[k], 0)
                        for k in ("num_bad_epochs", "cooldown_counter", "last_epoch")]
        except (TypeError, ConfigError) as exc:
            raise StateDictError(f"bad ReduceLROnPlateau state: {exc}") from None
        for key in self.get_config():
            setattr(self, key, getattr(fresh, key))
        self.best = best
        self.num_bad_epochs, self.cooldown_counter, self.last_epoch = counters


def _check_state(obj: Any, state: Any, keys: tuple[str, ...]) -> None:
    name = type(obj).__name__
    if not isinstance(state, dict) or state.get("name") != name:
        found = state.get("name") if isinstance(state, dict) else type(state).__name__
        raise StateDictError(f"expected the state of a {name}, found {found!r}")
    missing = [k for k in ("config",) + keys if k not in state]
    if missing:
        raise StateDictError(f"{name} state lacks {missing}")
