"""`Optimizer`: the PyTorch-shaped base (step, zero_grad, lr, state_dict) over flat buffers."""

from __future__ import annotations

from typing import Any, Callable, Iterable

import numpy as np

from .. import backend
from ..autograd.grad_mode import enable_grad
from ..autograd.tensor import Tensor
from ..errors import ConfigError, ShapeError, StateDictError, check_float  # noqa: F401 - re-exported
from . import groups as groups_lib
from ._flat import FlatParams

#: Version of the state_dict layout, stored in its config.
STATE_FORMAT = 1


class Optimizer:
    """Base class: subclasses define `_configure`, `hyperparameters`, `_scalars` and `_kernel`.

    Every parameter's `.data` becomes a view into one flat buffer owned by the optimizer;
    replacing `p.data` later is allowed (the new values are copied in on the next step).
    A parameter whose `.grad` is None is skipped, and each parameter counts its own steps,
    as in PyTorch. `threads`: None times one and two threads now and then and keeps the
    faster (the results are bit-identical either way), or 1, or 2. Every 64 steps, float32
    and float64 state values too small to be normal numbers are set to zero where that
    cannot change an update (`FlatParams.flush_subnormals`, each optimizer's `_flush`).
    Hyperparameters may change between steps (param_groups, attributes, load_state_dict);
    state kept in a scaled form follows, as PyTorch's would (`_sync_state`). `params` may
    also be PyTorch-style param groups, [{"params": [...], "lr": ...}, ...]: see groups.py
    and `param_groups`.
    """

    #: Name used by build_optimizer() and stored in configs.
    name = ""
    #: {state name: divisor} the stored sums were last scaled by (see _sum_divisors); None in
    #: optimizers pickled before it existed, whose sums match their hyperparameters
    _divisors: dict[str, float] | None = None

    def __init__(self, params: Iterable[Any], threads: int | None = None,
                 **hyperparameters: Any) -> None:
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int)
                                    or threads < 1):
            raise ConfigError(f"expected threads None (automatic), 1 or 2, found {threads!r}")
        #: one member optimizer per param group, or None (the usual case: one group, self)
        self._members: list[Optimizer] | None = None
        self._configure(**hyperparameters)
        params, groups = groups_lib.split_groups(params)
        if groups is not None:
            self._members, self._scales = groups_lib.build_members(self, groups, threads,
                                                                   _param_list)
            return
        self._flat = FlatParams(_param_list(params), self._state_names(), self._num_tmp(),
                                threads)
        self._divisors = self._sum_divisors()
        self._new_states(self._flat.state_names)

    # -- hyperparameters -----------------------------------------------------------------------
    @property
    def lr(self) -> float:
        """The learning rate; assign to change it (schedulers do)."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = check_float("lr", value, low=0.0)
        if getattr(self, "_members", None):  # param groups keep their proportion (groups.py)
            for m, scale in zip(self._members, self._scales):
                m.lr = self._lr * scale

    @property
    def param_groups(self) -> list[groups_lib.GroupView]:
        """The groups as dicts ("params" and the hyperparameters); set an entry to change it."""
        return [groups_lib.GroupView(self, i) for i in range(len(self._members or [self]))]

    def _configure(self, **hyperparameters: Any) -> None:  # pragma: no cover - abstract
        """Validate and store the hyperparameters (raises ConfigError)."""
        raise NotImplementedError

    def hyperparameters(self) -> dict[str, Any]:  # pragma: no cover - abstract
        """The constructor's keyword arguments, JSON-serialisable."""
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        """{"name": ..., **hyperparameters}: what optimizer_from_config() rebuilds from."""
        if self._members:
            return groups_lib.get_config(self)
        return {"name": self.name, **self.hyperparameters()}

    def _state_names(self) -> tuple[str, ...]:
        """Per-element state buffers this configuration needs."""
        return ()

    def _num_tmp(self) -> int:
        """Scratch buffers the kernel needs."""
        return 1

    def _sum_divisors(self) -> dict[str, float]:
        """{state name: d} for state kept as PyTorch's value / d, d set by hyperparameters."""
        return {}

    def _new_states(self, names: tuple[str, ...]) -> None:
        """Called when state buffers `names` are created (zeros)."""

    def _flush(self, f: Any, p: Any, states: tuple) -> None:
        """Flush rule for one chunk (FlatParams.flush_subnormals): by default every state."""
        for s in states:
            f.zero(s)

    def _sync_sums(self) -> None:
        """Rescale stored sums whose hyperparameter (a beta, alpha) changed since the last
        step, so that they hold what PyTorch holds: PyTorch keeps the averages themselves and
        a new beta applies from the next step on."""
        new, old = self._sum_divisors(), self._divisors
        if old is not None and new != old and self._members is None:
            flat = self._flat
            for name, d in new.items():
                if name in flat.states and old.get(name, d) != d:
                    arr = flat.states[name]
                    arr *= arr.dtype.type(old[name] / d)  # d = 1 - beta > 0: beta < 1 is checked
        self._divisors = new

    def _scalars(self, step: int) -> tuple:  # pragma: no cover - abstract
        """Scalars for one step number, computed once in Python floats."""
        raise NotImplementedError

    def _kernel(self, p: Any, g: Any, states: tuple, tmps: tuple,
                sc: tuple) -> None:  # pragma: no cover - abstract
        """Update one chunk in place with a few ufunc calls (never write into g)."""
        raise NotImplementedError

    def _cast(self, *values: float) -> tuple:
        """Scalars as 0-d arrays of the buffer dtype: they never upcast float32 arrays, and a
        ufunc call takes a 0-d array in about half the time of a Python or NumPy scalar."""
        xp, dtype = self._flat.xp, self._flat.dtype
        if xp is not np:  # on a GPU, NumPy scalars: kernel arguments, and `if wd:` in a kernel
            return tuple(dtype.type(v) for v in values)  # stays a test on the host
        return tuple(xp.asarray(v, dtype=dtype) for v in values)

    # -- the PyTorch surface -------------------------------------------------------------------
    @property
    def params(self) -> list[Any]:
        """The parameters, in the order given."""
        if self._members:
            return [p for m in self._members for p in m.params]
        return list(self._flat.params)

    @property
    def steps(self) -> list[int]:
        """How many updates each parameter has received."""
        if self._members:
            return [s for m in self._members for s in m.steps]
        return list(self._flat.steps)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; returns closure()'s loss if given."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for member in self._members or (self,):
            member._update()
        return loss

    def _update(self) -> None:
        """Apply this optimizer's kernel to its own flat buffers."""
        flat = self._flat
        flat.sync()
        self._sync_state()
        self._apply(flat)

    def _sync_state(self) -> None:
        """Bring the state up to date with the hyperparameters: rescaled sums, and buffers for
        what was switched on (momentum, amsgrad) since the last step."""
        flat = self._flat
        self._sync_sums()
        names, ntmp = self._state_names(), self._num_tmp()
        if names != flat.state_names or ntmp != flat.num_tmp:
            old = flat.state_names
            flat.reset_states(names, ntmp)
            self._new_states(tuple(n for n in names if n not in old))

    def _apply(self, flat: FlatParams) -> None:
        """Run the kernel over the parameters that have gradients."""
        flat.apply(self._kernel, self._scalars, self._flush)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget the gradients (or set them to new zero arrays)."""
        for p in self.params:
            p.grad = None if set_to_none or p.grad is None else np.zeros_like(p.grad)

    def state_view(self, name: str, index: int) -> Any:
        """Parameter `index`'s slice of a state buffer (a view: read, don't keep)."""
        if self._members:
            if not 0 <= index < len(self.params):
                raise ConfigError(f"expected a parameter index in [0, {len(self.params)}), "
                                  f"found {index}")
            for m in self._members:
                if index < len(m.params):
                    return m.state_view(name, index)
                index -= len(m.params)
        if not _is_int(index) or not 0 <= index < len(self._flat.params):
            raise ConfigError(f"expected a parameter index in [0, {len(self._flat.params)}), "
                              f"found {index!r}")
        self._sync_state()
        if name not in self._flat.states:
            raise ConfigError(f"expected a state name in {list(self._flat.states)}, found {name!r}")
        return self._flat.state_view(name, index)

    # -- saving and restoring ------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """{"config": JSON-serialisable dict, "arrays": {"state.<i>.<name>": ndarray}}
        (with param groups, each group's arrays under "group.<g>.")."""
        if self._members:
            return groups_lib.state_dict(self)
        flat = self._flat
        self._sync_state()  # the arrays as the saved hyperparameters expect them
        config = {"format": STATE_FORMAT, "name": self.name,
                  "hyperparameters": self.hyperparameters(), "steps": list(flat.steps),
                  "param_shapes": [list(s) for s in flat.shapes], "dtype": str(flat.dtype),
                  **self._extra_state()}
        arrays = {f"state.{i}.{name}": backend.to_numpy(flat.state_view(name, i)).copy()
                  for i in range(len(flat.params)) for name in flat.state_names}
        return {"config": config, "arrays": arrays}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore hyperparameters, step counts and state arrays saved by state_dict()."""
        config, arrays = _split_state(state)
        if config.get("format", STATE_FORMAT) != STATE_FORMAT:
            raise StateDictError(f"expected optimizer state format {STATE_FORMAT}, found "
                                 f"{config.get('format')!r} (saved by another nnforge version)")
        if config.get("name") != self.name:
            raise StateDictError(f"expected the state of a {self.name!r} optimizer, found "
                                 f"{config.get('name')!r}")
        if self._members:
            groups_lib.load_state_dict(self, config, arrays)
            return
        if "groups" in config:
            saved = config["groups"]
            raise StateDictError(f"this optimizer has one param group, the state has "
                                 f"{len(saved) if isinstance(saved, list) else 'several'}")
        flat = self._flat
        shapes = config.get("param_shapes")
        steps = config.get("steps")
        if not isinstance(shapes, list) or not isinstance(steps, list) \
                or len(steps) != len(shapes) or not all(
                    isinstance(s, (list, tuple)) and all(_is_int(d) for d in s) for s in shapes):
            raise StateDictError("optimizer state config needs lists 'param_shapes' (of integer "
                                 "lists) and 'steps' of equal length")
        if len(shapes) != len(flat.params):
            raise StateDictError(f"optimizer state is for {len(shapes)} parameters, this "
                                 f"optimizer has {len(flat.params)}")
        for i, (saved, own) in enumerate(zip(shapes, flat.shapes)):
            if tuple(saved) != own:
                raise ShapeError(f"optimizer state for parameter {i} has shape {tuple(saved)}, "
                                 f"the parameter has shape {own}")
        if not all(_is_int(s) and s >= 0 for s in steps):
            raise StateDictError(f"expected non-negative integer step counts, found {steps}")
        old = self.hyperparameters()
        try:
            self._configure(**config.get("hyperparameters", {}))
        except (TypeError, ConfigError) as exc:
            self._configure(**old)
            raise StateDictError(f"bad hyperparameters in optimizer state: {exc}") from None
        try:
            names = self._state_names()
            _check_arrays(arrays, names, flat.shapes)
            self._check_extra_state(config)
        except (StateDictError, ShapeError):
            self._configure(**old)
            raise
        if names != flat.state_names or self._num_tmp() != flat.num_tmp:
            flat.reset_states(names, self._num_tmp())
        for i in range(len(flat.params)):
            for name in names:
                view = flat.state_view(name, i)
                view[...] = backend.same_device_as(arrays[f"state.{i}.{name}"], view)
        flat.steps[:] = [int(s) for s in steps]
        self._divisors = self._sum_divisors()  # saved sums match the saved hyperparameters
        self._load_extra_state(config)

    def _extra_state(self) -> dict[str, Any]:
        """Optimizer-specific entries of the state_dict config (JSON-serialisable)."""
        return {}

    def _load_extra_state(self, config: dict[str, Any]) -> None:
        """Restore what _extra_state saved (config checked by _check_extra_state first)."""

    def _check_extra_state(self, config: dict[str, Any]) -> None:
        """Raise StateDictError if config's optimizer-specific entries are malformed."""

    def __copy__(self) -> Optimizer:
        """Refused: see the comment (copy.deepcopy and pickle work)."""
        # A shallow copy shares the flat buffers (parameter values and state) and, with param
        # groups, the member optimizers: a step or an lr change on either one silently acts on
        # both. An "independent" shallow copy has no sound meaning either: it would be a
        # second optimizer over the same parameters, each rebinding their `.data` into its own
        # buffer, whether the user wanted a snapshot (deepcopy) or a fresh optimizer. So ask.
        raise ConfigError(f"copy.copy() of a {type(self).__name__} would share its parameter "
                          f"and state buffers with the original; expected copy.deepcopy "
                          f"(of the model and optimizer together: copy.deepcopy((model, opt))), "
                          f"or a new optimizer given load_state_dict(opt.state_dict())")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters().items())
        groups = f", {len(self._members)} param groups" if self._members else ""
        return f"{type(self).__name__}({args}{groups})"


# -- helpers shared by the optimizers ----------------------------------------------------------
def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _param_list(params: Iterable[Any]) -> list[Any]:
    if isinstance(params, Tensor):
        params = [params]
    elif hasattr(params, "parameters") and callable(params.parameters):
        params = params.parameters()  # a Module
    try:
        plist = list(params)
    except TypeError:
        raise ConfigError(f"expected an iterable of parameters, found "
                          f"{type(params).__name__}") from None
    out, seen = [], set()
    for p in plist:
        if not isinstance(p, Tensor):
            raise ConfigError(f"expected Parameter/Tensor objects, found {type(p).__name__}")
        if id(p) not in seen:  # a parameter listed twice is updated once
            seen.add(id(p))
            out.append(p)
    if not out:
        raise ConfigError("expected at least one parameter, found an empty list")
    return out


def _split_state(state: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict) \
            or not isinstance(state.get("arrays"), dict):
        raise StateDictError("expected an optimizer state {'config': {...}, 'arrays': {...}}, "
                             f"found {type(state).__name__}")
    return state["config"], state["arrays"]


def _check_arrays(arrays: dict[str, Any], names: tuple[str, ...],
                  shapes: list[tuple[int, ...]]) -> None:
    expected = {f"state.{i}.{n}": s for i, s in enumerate(shapes) for n in names}
    missing = sorted(set(expected) - set(arrays))
    unexpected = sorted(set(arrays) - set(expected))
    if missing or unexpected:
        raise StateDictError(f"optimizer state arrays do not match: missing {missing[:5]}, "
                             f"unexpected {unexpected[:5]}")
    for key, shape in expected.items():
        found = tuple(np.shape(arrays[key]))
        if found != shape:
            raise ShapeError(f"optimizer state {key!r} has shape {found}, expected {shape}")
        # state is floating point; bool, int or object arrays would be cast silently on copy
        dtype = getattr(arrays[key], "dtype", None)
        dtype = np.asarray(arrays[key]).dtype if dtype is None else np.dtype(dtype)
        if dtype.kind != "f":
            raise StateDictError(f"optimizer state {key!r} has dtype {dtype}, expected a "
                                 f"floating point array")
