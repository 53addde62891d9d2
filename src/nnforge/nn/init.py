"""Weight initializers drawing from nnforge's seeded generator."""

from __future__ import annotations

import contextlib
import contextvars
import math
from typing import Any, Iterator

import numpy as np

from .. import backend
from ..errors import ConfigError
from ..random import get_rng


def _fans(shape: tuple[int, ...]) -> tuple[int, int]:
    """fan_in and fan_out for (out, in) or (out, in, kh, kw) weights."""
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def he_uniform(shape: tuple[int, ...], rng: Any = None, dtype: Any = None) -> np.ndarray:
    """He (Kaiming) uniform for ReLU networks: U(-b, b), b = sqrt(6 / fan_in)."""
    fan_in, _ = _fans(shape)
    bound = math.sqrt(6.0 / fan_in)
    return _uniform(shape, bound, rng, dtype)


def glorot_uniform(shape: tuple[int, ...], rng: Any = None, dtype: Any = None) -> np.ndarray:
    """Glorot (Xavier) uniform: U(-b, b), b = sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = _fans(shape)
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return _uniform(shape, bound, rng, dtype)


def lecun_uniform(shape: tuple[int, ...], rng: Any = None, dtype: Any = None) -> np.ndarray:
    """PyTorch's default for Linear/Conv weights and biases: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    fan_in, _ = _fans(shape) if len(shape) > 1 else (shape[0], shape[0])
    return _uniform(shape, 1.0 / math.sqrt(fan_in), rng, dtype)


#: set while a model file rebuilds its layers: every array is overwritten by the file's weights
#: afterwards, so drawing (and touching) initial values would only cost time and, for a damaged
#: architecture declaring huge layers, gigabytes of memory before the weights' shapes are checked
_SKIP = contextvars.ContextVar("nnforge_skip_init", default=False)


@contextlib.contextmanager
def skip_init() -> Iterator[None]:
    """Within this context (this thread only), initializers return uninitialized arrays."""
    token = _SKIP.set(True)
    try:
        yield
    finally:
        _SKIP.reset(token)


def skipping() -> bool:
    """Whether initializers are skipped here (see skip_init)."""
    return _SKIP.get()


def zeros(shape: tuple[int, ...], rng: Any = None, dtype: Any = None) -> np.ndarray:
    """All zeros."""
    return np.zeros(shape, dtype=dtype or backend.DEFAULT_DTYPE)


def ones(shape: tuple[int, ...], rng: Any = None, dtype: Any = None) -> np.ndarray:
    """All ones."""
    if _SKIP.get():
        return np.empty(shape, dtype=dtype or backend.DEFAULT_DTYPE)
    return np.ones(shape, dtype=dtype or backend.DEFAULT_DTYPE)


def _uniform(shape: tuple[int, ...], bound: float, rng: Any, dtype: Any) -> np.ndarray:
    if _SKIP.get():  # untouched pages cost no memory until the real weights arrive
        return np.empty(shape, dtype=dtype or backend.DEFAULT_DTYPE)
    rng = rng if rng is not None else get_rng()
    # draw in float64 then cast once, so the stream does not depend on the target dtype
    return rng.uniform(-bound, bound, size=shape).astype(dtype or backend.DEFAULT_DTYPE)


INITIALIZERS = {"he": he_uniform, "he_uniform": he_uniform, "glorot": glorot_uniform,
                "glorot_uniform": glorot_uniform, "xavier": glorot_uniform,
                "lecun": lecun_uniform, "zeros": zeros, "ones": ones}


def get_initializer(name: str) -> Any:
    """Look up an initializer by name."""
    try:
        return INITIALIZERS[name]
    except KeyError:
        raise ConfigError(f"unknown initializer {name!r}; expected one of "
                          f"{sorted(INITIALIZERS)}") from None
