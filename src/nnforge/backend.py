"""The array module nnforge computes with: NumPy today, CuPy where one is asked for."""

from __future__ import annotations

from typing import Any

import numpy as np

#: The array module used for new arrays. Kept as a module attribute so a GPU build can swap it.
xp: Any = np

#: Default floating dtype for parameters and inputs.
DEFAULT_DTYPE = np.float32


def get_array_module(*arrays: Any) -> Any:
    """Return the array module (numpy or cupy) that owns the given arrays."""
    for a in arrays:
        mod = type(a).__module__
        if mod.startswith("cupy"):
            import cupy  # noqa: PLC0415 - optional dependency, only when a CuPy array is seen

            return cupy
    return np


def to_numpy(a: Any) -> np.ndarray:
    """Return a NumPy copy/view of an array from any backend."""
    if hasattr(a, "get") and not isinstance(a, np.ndarray):
        return a.get()
    return np.asarray(a)


def usable_cpus() -> int:
    """CPUs this process may run on (respects taskset/cgroups affinity, unlike os.cpu_count)."""
    import os  # noqa: PLC0415

    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def is_float_dtype(dtype: Any) -> bool:
    """True when dtype is a floating point dtype."""
    return np.issubdtype(np.dtype(dtype), np.floating)
