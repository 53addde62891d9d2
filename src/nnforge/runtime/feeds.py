"""Casting fed values to a model input's dtype, shared by `InferenceSession` and the CLI.

An integer input (an embedding's ids) takes whole numbers in its dtype's range only: a plain
cast would make 1.9 the id 1, NaN some huge id and 2**70 a wrapped one, silently.
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError


def as_input_dtype(x: np.ndarray, dtype: np.dtype | type, what: str = "input",
                   offset: int = 0) -> np.ndarray:
    """x as a C-contiguous array of dtype, or a DataError naming `what` and the first value an
    integer dtype cannot hold exactly; offset numbers x's first sample (for chunked files)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "iu" and x.size and not np.can_cast(x.dtype, dtype):
        _check_whole(x, dtype, what, offset)
    return np.ascontiguousarray(x, dtype=dtype)


def _check_whole(x: np.ndarray, dtype: np.dtype, what: str, offset: int) -> None:
    info = np.iinfo(dtype)
    if x.dtype.kind == "f":
        # bounds as exact floats (powers of two): float(info.max) rounds up to 2**63 for int64
        lo, hi = float(info.min), float(info.max + 1)
        bad = ~((x >= lo) & (x < hi) & (x == np.trunc(x)))  # NaN fails every comparison
    else:  # a wider or signed/unsigned-mismatched integer type (bool always fits)
        bad = (x < info.min) | (x > info.max)
    if not bad.any():
        return
    first = int(np.argmax(bad.reshape(-1)))
    value = x.reshape(-1)[first]  # a NumPy scalar: float32 1.9 prints as 1.9
    sample = offset + (first // (x.size // len(x)) if x.ndim else 0)
    whole = x.dtype.kind != "f" or (np.isfinite(value) and value == np.trunc(value))
    expected = f"values in [{info.min}, {info.max}]" if whole else "whole numbers"
    raise DataError(f"{what}: sample {sample}: expected {expected} for the model's {dtype} "
                    f"input, found {value!s}")
