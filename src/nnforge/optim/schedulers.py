"""Learning-rate schedules: they set each param group's lr; their states are JSON-able dicts."""

from __future__ import annotations

import math
import numbers
from typing import Any

from ..errors import ConfigError, StateDictError
from . import groups as groups_lib
from .optimizer import Optimizer, check_float


def _check_int(name: str, value: Any, low: int) -> int:
    # numbers.Integral admits NumPy's integers (T_max=np.int64(epochs)); a bool is never a count
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(f"expected an integer {name} >= {low}, found {value!r}")
    return int(value)


def _check_optimizer(optimizer: Any) -> None:
    if not isinstance(optimizer, Optimizer):
        raise ConfigError(f"expected an nnforge Optimizer, found {type(optimizer).__name__}")


class LRScheduler:
    """Base of the closed-form schedules: each group's lr follows lr_at(step() calls so far).

    As in PyTorch, building one sets every param group's lr to its value at step 0, reckoned
    from the lrs the groups had then (`base_lrs`); call step() once per epoch (or per batch,
    for warmup) after optimizer.step(). Schedules compound as PyTorch's chainable ones do:
    step() applies this schedule's change (its ratio; for a cosine, its ratio above eta_min) to
    whatever lr a group has now, so a ReduceLROnPlateau cut, a second schedule stepped beside
    this one (PyTorch's ChainedScheduler) or a hand-set lr is kept and scaled, not overwritten.
    Overwriting silently undid those; refusing a second schedule would forbid warmup plus
    ReduceLROnPlateau, a common pairing. A group whose lr nothing else changed gets the closed
    form itself, so a schedule alone has no rounding drift. The change is the schedule's own
    step rule (`_change`: StepLR's gamma, the cosine's ratio above eta_min or its rise from the
    valley, the warmup's ratio), as in PyTorch's recursive forms, so it also moves an lr whose
    base sat at the floor (a base lr of 0, or of eta_min). With param groups the optimizer's
    own lr (`optimizer.lr`) is scheduled too, as one more group.
    """

    def __init__(self, optimizer: Optimizer) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        self._groups = len(optimizer.param_groups)
        self._bases = groups_lib.scheduled_lrs(optimizer)  # with groups, optimizer.lr's last
        self.last_epoch = 0
        self._driver: LRScheduler | None = None  # the LinearWarmup this one follows, if any
        self._set(self._at(0))

    @property
    def base_lrs(self) -> list[float]:
        """Each param group's lr when this schedule was built."""
        return self._bases[:self._groups]

    def _at(self, t: int) -> list[float]:  # pragma: no cover - abstract
        """Every scheduled lr (groups', then the optimizer's own) after t steps, closed form."""
        raise NotImplementedError

    def _change(self, t: int) -> tuple[float, float, list[float] | None]:
        """Step t's own change, for an lr something else has moved: (floor, ratio, adds), the
        new lr being floor + (lr - floor) * ratio + adds[i] (adds None: all 0). As PyTorch's
        recursive forms, it depends on t alone, not on ratios of base lrs (which froze an lr
        whose base sat at the floor)."""
        return 0.0, 1.0, None

    def get_config(self) -> dict[str, Any]:  # pragma: no cover - abstract
        """Constructor arguments (without the optimizer), JSON-serialisable."""
        raise NotImplementedError

    def lr_at(self, t: int) -> list[float]:
        """Each param group's lr after t calls to step(), were this schedule alone."""
        return self._at(_check_int("t", t, 0))[:self._groups]

    def step(self, epoch: Any = None) -> None:
        """Advance the schedule by one and apply its change to every param group's lr."""
        if epoch is not None:
            raise ConfigError(f"{type(self).__name__}.step() takes no epoch argument (PyTorch's "
                              f"is deprecated): call step() once per epoch, found {epoch!r}")
        if self._driver is not None:
            raise ConfigError(f"this {type(self).__name__} is the `after` schedule of a "
                              f"{type(self._driver).__name__}, which steps it: step only that one")
        self.last_epoch += 1
        t = self.last_epoch
        prev, new = self._at(t - 1), self._at(t)
        floor, ratio, adds = self._change(t)
        lrs = []
        for i, (cur, p, n) in enumerate(zip(groups_lib.scheduled_lrs(self.optimizer), prev, new)):
            if cur == p:  # nothing else moved this lr: the closed form, free of drift
                lrs.append(n)
            else:  # never below 0 (nnforge refuses lr < 0)
                add = adds[i] if adds is not None else 0.0
                lrs.append(max(0.0, floor + (cur - floor) * ratio + add))
        self._set(lrs)

    def _set(self, lrs: list[float]) -> None:
        groups_lib.set_scheduled_lrs(self.optimizer, lrs)
        self._last = list(lrs)

    def get_last_lr(self) -> list[float]:
        """Each param group's lr as this schedule last set it (a list, as in PyTorch)."""
        return self._last[:self._groups]

    def state_dict(self) -> dict[str, Any]:
        """Position, settings and lrs, JSON-serialisable (lists: groups', then optimizer.lr)."""
        return {"name": type(self).__name__, "config": self.get_config(),
                "base_lrs": list(self._bases), "last_epoch": self.last_epoch,
                "last_lrs": list(self._last)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the position saved by state_dict().

        The saved lrs are put back only if the optimizer's lrs are still the ones this schedule
        last set; otherwise they came from somewhere fuller, such as the optimizer's own state
        (which also holds other schedules' changes), and stand.
        """
        untouched = groups_lib.scheduled_lrs(self.optimizer) == self._last
        self._restore(state)
        if untouched:
            self._set(self._last)

    def _restore(self, state: dict[str, Any]) -> None:
        """Check state and take its position, leaving the optimizer alone."""
        name = type(self).__name__
        _check_state(self, state, ("base_lrs", "last_epoch", "last_lrs"))
        if state["config"] != self.get_config():
            raise StateDictError(f"{name} state has settings {state['config']}, "
                                 f"this scheduler has {self.get_config()}")
        try:
            last_epoch = _check_int("last_epoch", state["last_epoch"], 0)
            bases, last = (_check_lrs(key, state[key], len(self._bases))
                           for key in ("base_lrs", "last_lrs"))
        except ConfigError as exc:
            raise StateDictError(f"bad {name} state: {exc}") from None
        self._restore_nested(state)
        self._bases, self.last_epoch, self._last = bases, last_epoch, last

    def _restore_nested(self, state: dict[str, Any]) -> None:
        """Restore schedules this one wraps (after this one's state has been checked)."""


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (t // step_size), for each param group."""

    def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1) -> None:
        self.step_size = _check_int("step_size", step_size, 1)
        self.gamma = check_float("gamma", gamma, 0.0)
        super().__init__(optimizer)

    def _at(self, t: int) -> list[float]:
        return [b * self.gamma ** (t // self.step_size) for b in self._bases]

    def _change(self, t: int) -> tuple[float, float, list[float] | None]:
        return 0.0, (self.gamma if t % self.step_size == 0 else 1.0), None

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {"step_size": self.step_size, "gamma": self.gamma}


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2, for each param group.

    Past T_max the lr rises again along the same cosine (period 2 * T_max), as PyTorch's does
    in both its closed and its recursive form: a resumed or ported run follows the same
    curve. To stay at eta_min, make T_max the number of steps you will take.
    """

    def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0) -> None:  # noqa: N803
        self.T_max = _check_int("T_max", T_max, 1)
        self.eta_min = check_float("eta_min", eta_min, 0.0)
        super().__init__(optimizer)

    def _at(self, t: int) -> list[float]:
        cos = (1.0 + math.cos(math.pi * t / self.T_max)) / 2.0
        return [self.eta_min + (b - self.eta_min) * cos for b in self._bases]

    def _change(self, t: int) -> tuple[float, float, list[float] | None]:
        T = self.T_max  # noqa: N806
        if (t - 1 - T) % (2 * T) == 0:  # from the valley (no ratio above eta_min): add the rise
            rise = (1.0 - math.cos(math.pi / T)) / 2.0
            return self.eta_min, 1.0, [(b - self.eta_min) * rise for b in self._bases]
        ratio = (1.0 + math.cos(math.pi * t / T)) / (1.0 + math.cos(math.pi * (t - 1) / T))
        return self.eta_min, ratio, None

    def get_config(self) -> dict[str, Any]:
        """Constructor arguments."""
        return {"T_max": self.T_max, "eta_min": self.eta_min}


class LinearWarmup(LRScheduler):
    """lr rises linearly from start_factor * target to target over warmup_steps steps.

    `after`, another schedule built on the same optimizer, takes over once the warmup is done
    (its own step 0 starts then) and also sets the target, like PyTorch's
    SequentialLR([LinearLR(start_factor, total_iters=warmup_steps), after], [warmup_steps]);
    drive only the LinearWarmup. warmup_steps=0 means no warmup. Unlike SequentialLR, the
    switch compounds too: it does not undo another schedule's change made during the warmup.
    """

    def __init__(self, optimizer: Optimizer, warmup_steps: int, start_factor: float = 0.1,
                 after: LRScheduler | None = None) -> None:
        self.warmup_steps = _check_int("warmup_steps", warmup_steps, 0)
        self.start_factor = check_float("start_factor", start_factor, 0.0, 1.0)
        if after is not None and (not isinstance(after, LRScheduler)
                                  or after.optimizer is not optimizer):
            raise ConfigError("expected `after` to be a schedule (StepLR, CosineAnnealingLR, ...) "
                              f"built on the same optimizer, found {type(after).__name__}")
        if after is not None and after._driver is not None:
            raise ConfigError(f"this {type(after).__name__} already follows another "
                              f"{type(after._driver).__name__}: build one schedule per use")
        self.after = after
        super().__init__(optimizer)
        if after is not None:
            after._driver = self

    def _at(self, t: int) -> list[float]:
        w = self.warmup_steps
        if self.after is not None:
            if t >= w:
                return self.after._at(t - w)
            target = self.after._at(0)
        else:
            target = self._bases
        frac = 1.0 if t >= w else self.start_factor + (1.0 - self.start_factor) * t / w
        return [lr * frac for lr in target]

    def _change(self, t: int) -> tuple[float, float, list[float] | None]:
        w = self.warmup_steps
        if t > w:  # the schedule after (the step into its step 0 is still a warmup step)
            return (0.0, 1.0, None) if self.after is None else self.after._change(t - w)
        before, now = (self.start_factor + (1.0 - self.start_factor) * k / w for k in (t - 1, t))
        if before > 0:
            return 0.0, now / before, None
        # from start_factor 0 there is no ratio: add the closed form's rise
        return 0.0, 1.0, [n - p for p, n in zip(self._at(t - 1), self._at(t))]

    def step(self, epoch: Any = None) -> None:
        """Advance the warmup (or the schedule after it) by one."""
        super().step(epoch)
        if self.after is not None:
            self.after.last_epoch = max(0, self.last_epoch - self.warmup_steps)
            self.after._last = list(self._last)

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

    def _restore_nested(self, state: dict[str, Any]) -> None:
        if self.after is not None:
            if not isinstance(state.get("after_state"), dict):
                raise StateDictError("LinearWarmup state lacks the state of its `after` schedule")
            self.after._restore(state["after_state"])


class ReduceLROnPlateau:
    """Multiply each group's lr by factor when the metric has not improved for `patience` steps.

    Same rules as torch.optim.lr_scheduler.ReduceLROnPlateau: improvement is relative
    (`threshold_mode="rel"`) or absolute; after a reduction, `cooldown` steps are not counted;
    each group's lr is cut on its own, to no lower than min_lr (one number, or one per param
    group), and not at all when the cut would be eps or less. With param groups the
    optimizer's own lr is cut too, down to the smallest min_lr. The lr lives in the
    optimizer: restore the optimizer's state together with this one's.
    """

    def __init__(self, optimizer: Optimizer, mode: str = "min", factor: float = 0.1,
                 patience: int = 10, threshold: float = 1e-4, threshold_mode: str = "rel",
                 cooldown: int = 0, min_lr: float | list[float] = 0.0, eps: float = 1e-8) -> None:
        _check_optimizer(optimizer)
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
        groups = len(optimizer.param_groups)
        self.min_lr: float | list[float]
        if isinstance(min_lr, (list, tuple)):
            if len(min_lr) != groups:
                raise ConfigError(f"expected min_lr as one number or a list of {groups} (one per "
                                  f"param group), found a list of {len(min_lr)}")
            self.min_lr = [check_float(f"min_lr[{i}]", v, 0.0) for i, v in enumerate(min_lr)]
            self.min_lrs = list(self.min_lr)
        else:
            self.min_lr = check_float("min_lr", min_lr, 0.0)
            self.min_lrs = [self.min_lr] * groups
        self.eps = check_float("eps", eps, 0.0)
        self.last_epoch = 0
        self.reset()

    def reset(self) -> None:
        """Forget the best value, the bad-epoch count and any cooldown; the lrs stay."""
        self.best: float | None = None  # None: nothing seen yet
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

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
        """Record this step's metric (e.g. validation loss) and reduce lrs if it has plateaued."""
        try:
            value = float(metric)
        except (TypeError, ValueError):
            raise ConfigError(f"expected a number for the metric, found {metric!r:.80}") from None
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
            self._reduce()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

    def _reduce(self) -> None:
        old = groups_lib.scheduled_lrs(self.optimizer)
        lows = self.min_lrs + [min(self.min_lrs)] * (len(old) - len(self.min_lrs))
        new = [max(lr * self.factor, low) for lr, low in zip(old, lows)]
        groups_lib.set_scheduled_lrs(self.optimizer, [n if o - n > self.eps else o
                                                      for o, n in zip(old, new)])

    def get_last_lr(self) -> list[float]:
        """Each param group's current lr (a list, as in PyTorch)."""
        return groups_lib.scheduled_lrs(self.optimizer)[:len(self.min_lrs)]

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
        """Restore counters and settings saved by state_dict() (not the lrs: see the class)."""
        _check_state(self, state, ("best", "num_bad_epochs", "cooldown_counter", "last_epoch"))
        try:
            fresh = ReduceLROnPlateau(self.optimizer, **state["config"])
            best = None if state["best"] is None else _check_best(state["best"])
            counters = [_check_int(k, state[k], 0)
                        for k in ("num_bad_epochs", "cooldown_counter", "last_epoch")]
        except (TypeError, ConfigError) as exc:
            raise StateDictError(f"bad ReduceLROnPlateau state: {exc}") from None
        for key in [*self.get_config(), "min_lrs"]:
            setattr(self, key, getattr(fresh, key))
        self.best = best
        self.num_bad_epochs, self.cooldown_counter, self.last_epoch = counters


def _check_best(value: Any) -> float:
    # a metric of +-inf is a value a run can see (and PyTorch starts best at +-inf); NaN never
    # improves on anything, so it cannot be the best
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise ConfigError(f"expected best as a number (+-inf allowed, not NaN), found {value!r}")
    return float(value)


def _check_lrs(name: str, value: Any, count: int) -> list[float]:
    if not isinstance(value, list) or len(value) != count:
        raise ConfigError(f"expected {name} as a list of {count} lrs (one per param group, then "
                          f"the optimizer's own with groups), found {value!r:.80}")
    return [check_float(name, v, 0.0) for v in value]


def _check_state(obj: Any, state: Any, keys: tuple[str, ...]) -> None:
    name = type(obj).__name__
    if not isinstance(state, dict) or state.get("name") != name:
        found = state.get("name") if isinstance(state, dict) else type(state).__name__
        raise StateDictError(f"expected the state of a {name}, found {found!r}")
    missing = [k for k in ("config",) + keys if k not in state]
    if missing:
        raise StateDictError(f"{name} state lacks {missing}")
