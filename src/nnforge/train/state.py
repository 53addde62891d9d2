"""Checks of a trainer state read back from a checkpoint, before any of it is used."""

from __future__ import annotations

import math
import numbers
from typing import Any, Callable

import numpy as np

from ..errors import StateDictError
from . import callbacks as callbacks_module

#: counters are int64 in spirit: a larger one is damage, not a long run
MAX_COUNT = 2**63 - 1
#: the step a checkpoint may resume from: a resumed run keeps 2**62 steps of headroom below
#: MAX_COUNT (no real run comes near), so its own checkpoints stay loadable
MAX_RESUME_STEP = 2**62 - 1


#: nnforge's own callbacks (by the type name a state records): of them only EarlyStopping
#: keeps arrays, its best weights; a user's callback may keep arrays anywhere in its state
_OWN_CALLBACKS = frozenset(
    name for name, obj in vars(callbacks_module).items() if isinstance(obj, type)
    and issubclass(obj, callbacks_module.Callback) and obj.__module__ == callbacks_module.__name__)
_JSON_TYPES = (dict, list, str, int, float, bool, type(None))


def _bad(detail: str) -> StateDictError:
    return StateDictError(f"expected a trainer state as Trainer.state_dict() gives: {detail}")


def _count(state: dict[str, Any], key: str, limit: int = MAX_COUNT) -> int:
    value = state.get(key)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) \
            or not 0 <= value <= limit:
        bound = "2**63 - 1" if limit == MAX_COUNT else f"2**{limit.bit_length()} - 1"
        raise _bad(f"'{key}' must be an integer in [0, {bound}], found {value!r:.60}")
    return int(value)


def _history(value: Any, epochs: int) -> dict[str, list[float]]:
    """{name: one number per epoch}; NaN marks an epoch without that entry."""
    if not isinstance(value, dict):
        raise _bad(f"'history' must be an object of name -> list, found {type(value).__name__}")
    history: dict[str, list[float]] = {}
    for name, values in value.items():
        if not isinstance(name, str) or not isinstance(values, list) or not all(
                isinstance(x, (numbers.Real, np.floating)) and not isinstance(x, bool)
                for x in values):
            raise _bad(f"'history' must map names to lists of numbers, found {name!r:.40}: "
                       f"{values!r:.60}")
        # every list holds one entry per whole epoch (a user may have emptied the history)
        if len(values) != epochs:
            raise _bad(f"history {name!r} must have one entry per epoch done ({epochs}), "
                       f"found {len(values)}")
        history[name] = [float(x) for x in values]
    return history


def check_rng_state(value: Any, kind: type, what: str) -> Any:
    """value, if it is a state of a `kind` bit generator (numpy.random.PCG64), else a
    StateDictError naming `what`. NumPy raises OverflowError for numbers outside the state's
    range (an edited file), as well as TypeError, ValueError and KeyError."""
    try:  # on a spare bit generator of the same kind: the live one stays as it is
        kind().state = value
    except (TypeError, ValueError, KeyError, IndexError, AttributeError, OverflowError) as exc:
        raise _bad(f"{what} must be a {kind.__name__} generator state, found {value!r:.60} "
                   f"({type(exc).__name__}: {exc})") from None
    return value


def _find(value: Any, where: str, bad: Callable[[Any], bool]) -> tuple[str, Any] | None:
    """A value in a JSON-like tree that `bad` picks, with its path (run.data[0]), or None.
    A loop, not recursion: a hostile file may nest deeper than Python recurses."""
    stack = [(value, where)]
    while stack:
        item, path = stack.pop()
        if bad(item):
            return path, item
        if isinstance(item, dict):
            stack.extend((v, f"{path}.{k}") for k, v in item.items())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, f"{path}[{i}]") for i, v in enumerate(item))
    return None


def _without_array_slots(key: str, value: Any) -> Any:
    """A top-level field less the places where a state legitimately holds arrays: a
    part-epoch's outputs and targets, EarlyStopping's best weights, a user callback's state
    (its own load_state_dict checks it; the Trainer turns its refusal into a StateDictError)."""
    if key == "partial" and isinstance(value, dict):
        return {k: v for k, v in value.items() if k not in ("outputs", "targets")}
    if key != "callbacks" or not isinstance(value, list):
        return value
    entries = []
    for entry in value:
        if isinstance(entry, dict) and isinstance(entry.get("state"), dict):
            kind, state = entry.get("type"), entry["state"]
            if kind not in _OWN_CALLBACKS:
                state = None
            elif kind == "EarlyStopping":
                state = {k: v for k, v in state.items() if k != "best_weights"}
            entry = {**entry, "state": state}
        entries.append(entry)
    return entries


def _refuse_stray_arrays(state: dict[str, Any]) -> None:
    """An array anywhere else (an edited file's {"__array__": ...} marker) would reach code
    that expects JSON and fail there with a raw NumPy error: refused here, by its path."""
    for key, value in state.items():
        found = _find(_without_array_slots(key, value), str(key),
                      lambda v: isinstance(v, np.ndarray))
        if found is not None:
            raise _bad(f"{found[0]} must not be an array (arrays belong only in 'partial' "
                       f"'outputs' and 'targets' and in callbacks' states), found one")


def _not_json(value: Any) -> bool:
    return not isinstance(value, _JSON_TYPES) or (
        isinstance(value, dict) and not all(isinstance(k, str) for k in value))


def _run(run: Any) -> None:
    """The run's settings, compared with the resumed fit()'s as plain JSON: nothing else."""
    if run is None:
        return
    found = _find(run, "run", _not_json)
    if found is not None:
        raise _bad(f"{found[0]} must be plain JSON (objects, lists, strings, numbers), found "
                   f"a {type(found[1]).__name__}")
    frozen = run.get("frozen", [])
    if not isinstance(frozen, list) or not all(isinstance(name, str) for name in frozen):
        raise _bad(f"'run' 'frozen' must be a list of parameter names, found {frozen!r:.60}")


def _rng(state: dict[str, Any], key: str, generator: np.random.Generator) -> dict[str, Any]:
    return check_rng_state(state.get(key), type(generator.bit_generator), f"'{key}'")


def _partial(partial: dict[str, Any], shuffle_kind: type) -> None:
    """A part-epoch's progress (a checkpoint saved mid-epoch): counters, sums, lr. What needs
    the resumed fit()'s data (batch sizes, the model's outputs) is checked by the Trainer."""
    for key in ("batches", "seen"):
        _count(partial, key)
    for key in ("total", "lr"):
        value = partial.get(key)
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _bad(f"'partial' needs {key!r} a number, found {value!r:.40}")
    if not math.isfinite(partial["total"]):  # it would be logged as the epoch's loss
        raise _bad(f"'partial' needs 'total' (the epoch's loss sum so far) a finite number, "
                   f"found {partial['total']!r}")
    if partial.get("kind") not in ("arrays", "loader"):
        raise _bad(f"'partial' needs 'kind' 'arrays' or 'loader', found "
                   f"{partial.get('kind')!r:.40}")
    if partial.get("order_rng") is not None:
        check_rng_state(partial["order_rng"], shuffle_kind, "'partial' 'order_rng'")
    for key in ("outputs", "targets"):
        if partial.get(key) is not None and not isinstance(partial[key], np.ndarray):
            raise _bad(f"'partial' needs {key!r} an array or null, found "
                       f"{type(partial[key]).__name__}")
    if (partial.get("outputs") is None) != (partial.get("targets") is None):
        raise _bad("'partial' needs 'outputs' and 'targets' both arrays or both null (the "
                   "metrics pair them), found one of each")


def check_trainer_state(state: Any, shuffle_rng: np.random.Generator,
                        global_rng: np.random.Generator) -> dict[str, Any]:
    """The state's fields, checked for type, range and agreement with each other."""
    if not isinstance(state, dict):
        raise _bad(f"an object, found {type(state).__name__}")
    _refuse_stray_arrays(state)  # first: the checks below read these fields as JSON
    for key in ("epochs_done", "step", "history", "shuffle_rng", "global_rng"):
        if key not in state:
            raise _bad(f"a '{key}' field, found fields {sorted(map(str, state))}")
    epochs, step = _count(state, "epochs_done"), _count(state, "step", MAX_RESUME_STEP)
    if step < epochs:  # every epoch trains on at least one batch
        raise _bad(f"'step' ({step}) must be at least 'epochs_done' ({epochs})")
    stopped = state.get("stop_training", False)
    if not isinstance(stopped, bool) or (stopped and epochs == 0):
        raise _bad(f"'stop_training' must be true or false (true only after an epoch), "
                   f"found {stopped!r:.40} after {epochs} epochs")
    callbacks = state.get("callbacks", [])
    if not isinstance(callbacks, list) or not all(
            isinstance(c, dict) and isinstance(c.get("type"), str)
            and isinstance(c.get("key", ""), str)
            and isinstance(c.get("state"), dict) for c in callbacks):
        raise _bad(f"'callbacks' must be a list of {{type: name, key: name, state: object}}, "
                   f"found {callbacks!r:.80}")
    for key in ("run", "partial"):  # older checkpoints lack them
        if state.get(key) is not None and not isinstance(state[key], dict):
            raise _bad(f"'{key}' must be an object or null, found {state[key]!r:.60}")
    _run(state.get("run"))
    partial = state.get("partial")
    if partial is not None:
        if state.get("run") is None:  # written together: the part-epoch is of that run
            raise _bad("'partial' (a part of an epoch) needs the 'run' settings it was "
                       "trained with, found 'run' null or missing")
        _partial(partial, type(shuffle_rng.bit_generator))
    loader = state.get("loader")
    if loader is not None and not isinstance(loader, dict):
        raise _bad(f"'loader' must be a DataLoader state object or null, found {loader!r:.60}")
    if loader is not None and "rng_state" in loader:  # DataLoader lets OverflowError out
        check_rng_state(loader["rng_state"], np.random.PCG64, "'loader' 'rng_state'")
    split_seed = state.get("split_seed")
    if split_seed is not None and (isinstance(split_seed, bool) or not isinstance(
            split_seed, numbers.Integral) or not 0 <= split_seed < 2**64):
        raise _bad(f"'split_seed' must be an integer in [0, 2**64) or null, found "
                   f"{split_seed!r:.40}")
    history = _history(state["history"], epochs)
    saved = [{"type": c["type"], "key": c.get("key"), "state": c["state"]} for c in callbacks]
    return {"run": state.get("run"), "partial": partial, "epochs_done": epochs, "step": step,
            "stop_training": stopped, "history": history,
            "shuffle_rng": _rng(state, "shuffle_rng", shuffle_rng),
            "global_rng": _rng(state, "global_rng", global_rng), "callbacks": saved,
            "loader": loader, "split_seed": None if split_seed is None else int(split_seed)}


class History(dict):
    """`fit()`'s result: a dict of name -> one number per epoch, with Keras's `.history`
    (the dict itself) and `.epoch` (the epoch indices), so `h.history["loss"]` works too."""

    @property
    def history(self) -> History:
        """The dict itself, for code written against Keras's History object."""
        return self

    @property
    def epoch(self) -> list[int]:
        """0-based index of every epoch recorded (every list holds one entry per epoch)."""
        return list(range(max((len(v) for v in self.values()), default=0)))
