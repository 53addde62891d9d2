"""torch's tensor factories: tensor, zeros, ones, full, rand, randn, arange (and *_like).

Random ones draw from nnforge's seeded generator, so nf.manual_seed makes them reproducible.
Floats default to float32 (backend.DEFAULT_DTYPE), as torch's default dtype.
"""

from __future__ import annotations

import operator
from typing import Any

import numpy as np

from .. import backend
from ..errors import DTypeError, ShapeError
from ..random import get_rng
from .tensor import Tensor


def tensor(data: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """A new tensor holding a copy of data (torch.tensor): floats become float32, ints int64."""
    arr = data.data if isinstance(data, Tensor) else data
    if isinstance(arr, np.ndarray) or backend.is_device_array(arr):
        arr = arr.copy()  # torch.tensor copies; Tensor(array) shares the caller's memory
    return Tensor(arr, requires_grad=requires_grad, dtype=_dtype(dtype))


def zeros(*size: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """A tensor of zeros: zeros(2, 3) or zeros((2, 3))."""
    return _filled(size, 0, dtype, requires_grad, "zeros")


def ones(*size: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """A tensor of ones: ones(2, 3) or ones((2, 3))."""
    return _filled(size, 1, dtype, requires_grad, "ones")


def full(size: Any, fill_value: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """A tensor of fill_value, its dtype by default the value's: bool, int64 or float32."""
    if dtype is None:
        dtype = _dtype_of_number(fill_value)
    return _filled((size,), fill_value, dtype, requires_grad, "full")


def zeros_like(t: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """Zeros of t's shape and dtype (or dtype)."""
    return zeros(np.shape(_data(t)), dtype=_data(t).dtype if dtype is None else dtype,
                 requires_grad=requires_grad)


def ones_like(t: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """Ones of t's shape and dtype (or dtype)."""
    return ones(np.shape(_data(t)), dtype=_data(t).dtype if dtype is None else dtype,
                requires_grad=requires_grad)


def randn(*size: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """Standard normal samples from nnforge's seeded generator (nf.manual_seed)."""
    shape, dt = _shape(size, "randn"), _float_dtype(dtype, "randn")
    data = get_rng().standard_normal(shape, dtype=_draw_dtype(dt)).astype(dt, copy=False)
    return Tensor(data, requires_grad=requires_grad, _keep=True)


def rand(*size: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """Uniform samples in [0, 1) from nnforge's seeded generator (nf.manual_seed)."""
    shape, dt = _shape(size, "rand"), _float_dtype(dtype, "rand")
    data = get_rng().random(shape, dtype=_draw_dtype(dt)).astype(dt, copy=False)
    return Tensor(data, requires_grad=requires_grad, _keep=True)


def randn_like(t: Any, dtype: Any = None, requires_grad: bool = False) -> Tensor:
    """Standard normal samples of t's shape (and float dtype, or dtype)."""
    return randn(np.shape(_data(t)), dtype=_data(t).dtype if dtype is None else dtype,
                 requires_grad=requires_grad)


def arange(start: Any, end: Any = None, step: Any = 1, dtype: Any = None,
           requires_grad: bool = False) -> Tensor:
    """Values from start (0 when only one bound is given) up to end, excluded, by step:
    int64 when every bound is an int, float32 otherwise, as torch.arange."""
    if end is None:
        start, end = 0, start
    bounds = (start, end, step)
    if any(isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))
           for v in bounds):
        raise DTypeError(f"arange expects numbers for start, end and step, found {bounds!r}")
    if step == 0:
        raise ShapeError("arange expects a nonzero step, found 0")
    if dtype is None:
        ints = all(isinstance(v, (int, np.integer)) for v in bounds)
        dtype = np.int64 if ints else backend.DEFAULT_DTYPE
    # computed in float64 (or int64), then cast: float32 steps would drift
    wide = np.int64 if np.dtype(dtype).kind in "iu" else np.float64
    data = np.arange(start, end, step, dtype=wide).astype(_dtype(dtype), copy=False)
    return Tensor(data, requires_grad=requires_grad, _keep=True)


def _data(t: Any) -> Any:
    return t.data if isinstance(t, Tensor) else np.asarray(t)


def _filled(size: tuple, value: Any, dtype: Any, requires_grad: bool, what: str) -> Tensor:
    """A tensor of `value` in the shape size (ints, or one tuple or list of them)."""
    dt = _dtype(dtype) or backend.DEFAULT_DTYPE
    data = np.full(_shape(size, what), value, dtype=dt)
    return Tensor(data, requires_grad=requires_grad, _keep=True)


def _shape(size: tuple, what: str) -> tuple[int, ...]:
    """The shape of a factory call: f(2, 3), f((2, 3)), f([2, 3]) or f() for a 0-d tensor."""
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    try:
        shape = tuple(operator.index(d) for d in size)
    except TypeError:
        raise ShapeError(f"{what} expects the shape as ints or one tuple of ints, found "
                         f"{size!r}") from None
    if any(d < 0 for d in shape):
        raise ShapeError(f"{what} expects sizes >= 0, found {shape}")
    return shape


def _dtype(dtype: Any) -> Any:
    """dtype as a NumPy dtype (None stays None), or DTypeError naming it."""
    if dtype is None:
        return None
    try:
        return np.dtype(dtype)
    except TypeError:
        raise DTypeError(f"expected a NumPy dtype (np.float32, 'int64', ...), found "
                         f"{dtype!r}") from None


def _float_dtype(dtype: Any, what: str) -> np.dtype:
    """A random factory's dtype: a float one (float32 by default), as torch's."""
    dt = _dtype(dtype) or np.dtype(backend.DEFAULT_DTYPE)
    if dt.kind != "f":
        raise DTypeError(f"{what} expects a floating point dtype, found {dt}")
    return dt


def _draw_dtype(dt: np.dtype) -> Any:
    """The dtype NumPy's generator draws in: float32 or float64 (float16 is drawn as 32)."""
    return np.float64 if dt == np.float64 else np.float32


def _dtype_of_number(value: Any) -> Any:
    """torch.full's dtype for a fill value: bool, int64 or the default float."""
    if isinstance(value, (bool, np.bool_)):
        return np.bool_
    if isinstance(value, (int, np.integer)):
        return np.int64
    if isinstance(value, (float, np.floating)):
        return backend.DEFAULT_DTYPE
    raise DTypeError(f"full expects a number or a bool as fill_value, found {value!r}")
