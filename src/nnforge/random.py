"""The seeded random generator behind initializers, dropout and shuffling."""

from __future__ import annotations

from typing import Any

import numpy as np

_rng = np.random.default_rng(0)


def manual_seed(seed: int) -> None:
    """Reseed nnforge's global generator, for reproducible initialization and dropout."""
    global _rng
    _rng = np.random.default_rng(seed)


def get_rng() -> np.random.Generator:
    """The global generator."""
    return _rng


def get_rng_state() -> dict[str, Any]:
    """A JSON-serialisable snapshot of the global generator (for checkpoints)."""
    return _rng.bit_generator.state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the global generator from get_rng_state()."""
    _rng.bit_generator.state = state
