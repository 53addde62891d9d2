"""Checkpoints: a `.nnf` model file plus the optimizer state and the trainer's position.

Extra entries: ``optimizer.json`` (the optimizer's JSON config), ``optimizer.safetensors``
(its arrays, in their own dtypes so training resumes exactly) and ``trainer.json`` (epoch,
step, RNG states, history, ...). A checkpoint is a valid model file: ``load()`` reads it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..nn import Module
from . import safetensors_format as st
from .archive import to_json, write_archive
from .model_file import PathLike, build_entries, open_model, read_json_entry, read_tensors

OPTIMIZER_CONFIG, OPTIMIZER_ARRAYS, TRAINER = ("optimizer.json", "optimizer.safetensors",
                                               "trainer.json")


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


def save_checkpoint(path: PathLike, model: Module, optimizer: Any = None,
                    trainer_state: dict[str, Any] | None = None, **save_kwargs: Any) -> None:
    """Write a resumable checkpoint (model file + optimizer + trainer state), atomically.

    ``optimizer`` is an object with ``state_dict()`` or that dict itself; ``save_kwargs`` are
    save()'s metadata arguments (task, labels, preprocessing, metrics, input_shape, extra).
    """
    more = _optimizer_entries(optimizer) if optimizer is not None else []
    if trainer_state is not None:
        more.append((TRAINER, [to_json(trainer_state, "the trainer state", True)]))
    entries, now = build_entries(model, "checkpoint", more=more, **save_kwargs)
    write_archive(path, entries, now.timetuple()[:6])


def load_checkpoint(path: PathLike) -> Checkpoint:
    """Read a checkpoint (or a plain model file: optimizer and trainer state are then None)."""
    model, manifest, ar = open_model(path)
    try:
        optimizer_state = None
        if OPTIMIZER_CONFIG in ar or OPTIMIZER_ARRAYS in ar:
            config = read_json_entry(ar, manifest, OPTIMIZER_CONFIG)
            # copies: the optimizer updates its state in place, the mapped views are read-only
            arrays = {k: np.array(v) for k, v in read_tensors(ar, manifest,
                                                               OPTIMIZER_ARRAYS).items()}
            optimizer_state = {"config": config, "arrays": arrays}
        trainer_state = read_json_entry(ar, manifest, TRAINER) if TRAINER in ar else None
    finally:
        ar.close()
    return Checkpoint(model, manifest, optimizer_state, trainer_state)
