"""Checkpoints: a `.nnf` model file plus the optimizer state and the trainer's position.

Extra entries: ``optimizer.json`` (the optimizer's JSON config), ``optimizer.safetensors``
(its arrays, in their own dtypes so training resumes exactly), ``trainer.json`` (epoch,
step, RNG states, history, ...) and ``trainer.safetensors`` (NumPy arrays found in the trainer
state, such as EarlyStopping's best weights; ``{"__array__": name}`` marks their places in
``trainer.json``). A checkpoint is a valid model file: ``load()`` reads it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, ModelFileError
from ..nn import Module
from . import safetensors_format as st
from .archive import to_json, write_archive
from .model_file import PathLike, build_entries, open_model, read_json_entry, read_tensors

OPTIMIZER_CONFIG, OPTIMIZER_ARRAYS, TRAINER = ("optimizer.json", "optimizer.safetensors",
                                               "trainer.json")
TRAINER_ARRAYS = "trainer.safetensors"


@dataclass
class Checkpoint:
    """What load_checkpoint returns; optimizer_state is {"config": ..., "arrays": {name: array}}."""

    model: Module
    manifest: dict[str, Any]
    optimizer_state: dict[str, Any] | None
    trainer_state: dict[str, Any] | None


def _optimizer_entries(optimizer: Any) -> list[tuple[str, list[Any]]]:
    has_method = callable(getattr(optimizer, "state_dict", None))
    state = optimizer.state_dict() if has_method else optimizer
    if (not isinstance(state, dict) or not isinstance(state.get("config"), dict)
            or not isinstance(state.get("arrays"), dict)):
        raise ConfigError(f"the optimizer state must be {{'config': dict, 'arrays': dict}} (from "
                          f"optimizer.state_dict()), found {type(state).__name__}")
    header, views = st.encode(state["arrays"])
    # allow_nan: these entries are read back by nnforge only, and must round-trip exactly
    return [(OPTIMIZER_CONFIG, [to_json(state["config"], "the optimizer config", True)]),
            (OPTIMIZER_ARRAYS, [header, *views])]


def _pull_arrays(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    """obj with each NumPy array moved to `arrays` and replaced by {"__array__": name}."""
    if isinstance(obj, np.ndarray):
        name = str(len(arrays))
        arrays[name] = obj
        return {"__array__": name}
    if isinstance(obj, dict):
        return {k: _pull_arrays(v, arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_pull_arrays(v, arrays) for v in obj]
    return obj


def _put_arrays(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    """_pull_arrays undone: each {"__array__": name} marker replaced by a copy of its array."""
    if isinstance(obj, dict):
        if len(obj) == 1 and isinstance(obj.get("__array__"), str):
            if obj["__array__"] not in arrays:
                raise ModelFileError(f"{TRAINER} names an array {obj['__array__']!r} that "
                                     f"{TRAINER_ARRAYS} lacks")
            return np.array(arrays[obj["__array__"]])  # a writable copy, off the memory map
        return {k: _put_arrays(v, arrays) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_put_arrays(v, arrays) for v in obj]
    return obj


def save_checkpoint(path: PathLike, model: Module, optimizer: Any = None,
                    trainer_state: dict[str, Any] | None = None, **save_kwargs: Any) -> None:
    """Write a resumable checkpoint (model file + optimizer + trainer state), atomically.

    ``optimizer`` is an object with ``state_dict()`` or that dict itself; ``save_kwargs`` are
    save()'s metadata arguments (task, labels, preprocessing, metrics, input_shape, extra).
    """
    more = _optimizer_entries(optimizer) if optimizer is not None else []
    if trainer_state is not None:
        arrays: dict[str, np.ndarray] = {}
        trainer_state = _pull_arrays(trainer_state, arrays)
        more.append((TRAINER, [to_json(trainer_state, "the trainer state", True)]))
        if arrays:
            header, views = st.encode(arrays)
            more.append((TRAINER_ARRAYS, [header, *views]))
    entries, now = build_entries(model, "checkpoint", more=more, **save_kwargs)
    write_archive(path, entries, now.timetuple()[:6])


def load_checkpoint(path: PathLike) -> Checkpoint:
    """Read a checkpoint (or a plain model file: optimizer and trainer state are then None)."""
    model, manifest, ar = open_model(path)
    try:
        optimizer_state = None
        if OPTIMIZER_CONFIG in ar or OPTIMIZER_ARRAYS in ar:
            config = read_json_entry(ar, manifest, OPTIMIZER_CONFIG)
            if not isinstance(config, dict):
                raise ModelFileError(f"{OPTIMIZER_CONFIG} of '{ar.path}' must be a JSON object, "
                                     f"found {type(config).__name__}")
            # copies: the optimizer updates its state in place, the mapped views are read-only
            arrays = {k: np.array(v) for k, v in read_tensors(ar, manifest,
                                                               OPTIMIZER_ARRAYS).items()}
            optimizer_state = {"config": config, "arrays": arrays}
        trainer_state = read_json_entry(ar, manifest, TRAINER) if TRAINER in ar else None
        if TRAINER in ar and not isinstance(trainer_state, dict):
            raise ModelFileError(f"{TRAINER} of '{ar.path}' must be a JSON object, found "
                                 f"{type(trainer_state).__name__}")
        if trainer_state is not None:
            arrays = read_tensors(ar, manifest, TRAINER_ARRAYS) if TRAINER_ARRAYS in ar else {}
            try:
                trainer_state = _put_arrays(trainer_state, arrays)
            except RecursionError:  # JSON nests deeper than Python recurses: not ours
                raise ModelFileError(f"{TRAINER} of '{ar.path}' nests too deeply; it is "
                                     f"damaged") from None
    finally:
        ar.close()
    return Checkpoint(model, manifest, optimizer_state, trainer_state)
