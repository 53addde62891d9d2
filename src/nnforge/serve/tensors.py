"""Tensors on the wire: V2 datatypes, and turning client data into checked rows for the model."""

from __future__ import annotations

import itertools
import math
import struct
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ..errors import DataError
from ..runtime.feeds import as_input_dtype
from ..runtime.kernels import all_finite
from .errors import InvalidInputError

#: V2 datatype name -> little-endian NumPy dtype (BYTES is handled apart: length-prefixed)
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype("?"), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
#: most dimensions a request's tensor may declare: NumPy 1 arrays hold at most 32 (NumPy 2: 64),
#: and a reshape beyond that fails with an error of its own, not the client's 400
MAX_DIMS = 32
#: largest single dimension, and largest product of the non-zero dimensions, a request's
#: tensor may declare. No request body (2 GiB at most) holds more elements; and an empty
#: tensor of shape [0, 2**31, 2**31, ...] would still make NumPy's reshape fail with "array
#: is too big" (its size check multiplies the other dimensions), an internal error, not a 400
MAX_DIM = 2**31 - 1
MAX_SHAPE_ELEMENTS = 2**31
#: the datatypes a model input may be sent as (BOOL as 0 and 1; BYTES never: models take
#: numbers). Every datatype error names this list, so the lists agree.
NUMERIC_TO_MODEL = ("FP32", "FP64", "FP16", "INT8", "INT16", "INT32", "INT64", "UINT8",
                    "UINT16", "UINT32", "UINT64", "BOOL")
_KIND_NAMES = {"b": "booleans", "U": "strings", "S": "bytes", "O": "mixed or null values",
               "f": "floats", "i": "integers", "u": "integers", "c": "complex numbers"}


def check_shape(shape: list[int], what: str) -> list[int]:
    """The shape, or a 400 when it has too many, negative or too large dimensions."""
    if len(shape) > MAX_DIMS or any(d < 0 or d > MAX_DIM for d in shape):
        raise InvalidInputError(f"{what}: shape must be at most {MAX_DIMS} non-negative "
                                f"sizes, each at most {MAX_DIM}, found {shape!r:.80}")
    if math.prod(d for d in shape if d) > MAX_SHAPE_ELEMENTS:
        raise InvalidInputError(f"{what}: shape {shape!r:.80} declares more than "
                                f"{MAX_SHAPE_ELEMENTS} elements (counting its non-zero sizes)")
    return shape


def datatype_of(dtype: Any) -> str:
    """The V2 datatype name of a NumPy dtype (BYTES for strings and objects)."""
    dtype = np.dtype(dtype)
    if dtype.kind in "USO":
        return "BYTES"
    for name, dt in DATATYPES.items():
        if dt == dtype.newbyteorder("<"):
            return name
    raise InvalidInputError(f"expected a dtype with a V2 datatype, found {dtype}")


@dataclass(frozen=True)
class TensorSpec:
    """A named tensor of the model: datatype and per-sample shape (no batch dimension, -1 for a
    dimension of any size)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    #: NaN (JSON null) is a missing value the model fills in (an input whose model has an
    #: Imputer): accepted where a model without one refuses it
    missing: bool = False

    @property
    def size(self) -> int:
        """Values per sample."""
        return math.prod(self.shape)

    def metadata(self) -> dict[str, Any]:
        """The V2 metadata entry: the batch dimension is -1."""
        return {"name": self.name, "datatype": self.datatype, "shape": [-1, *self.shape]}


def _fits(shape: Sequence[int], expected: Sequence[int]) -> bool:
    """Whether shape matches expected, where -1 in expected matches any size."""
    return len(shape) == len(expected) and all(e < 0 or e == s for e, s in zip(expected, shape))


def _shape_text(shape: Sequence[int]) -> str:
    return "[" + ", ".join(str(d) for d in shape) + "]"


def _floats(data: list[Any]) -> np.ndarray | None:
    """float32 rows from a flat list or a list of equal-length flat lists, by the fast route.

    struct packs a list of Python numbers three to four times faster than array.array (which
    parses every item through PyArg_Parse) or np.array (which first scans the list for a
    dtype). It rounds exactly as they do (a C cast to float) and refuses strings, nulls,
    nested lists and values beyond the float32 range by itself. None when the data is anything
    else: the general route then finds what is wrong (and turns out-of-range values into inf,
    which the caller refuses with a message).
    """
    try:
        if type(data[0]) is not list:
            return np.frombuffer(struct.pack(f"<{len(data)}f", *data), np.float32)
        width = len(data[0])
        if all(type(row) is list and len(row) == width for row in data):
            flat = struct.pack(f"<{len(data) * width}f", *itertools.chain.from_iterable(data))
            return np.frombuffer(flat, np.float32).reshape(len(data), width)
    except (struct.error, TypeError, OverflowError, IndexError):
        pass
    return None


def _first_bool(data: list[Any]) -> list[int] | None:
    """The index of the first JSON boolean in nested lists, or None."""
    for i, v in enumerate(data):
        if v is True or v is False:
            return [i]
        if type(v) is list:
            inner = _first_bool(v)
            if inner is not None:
                return [i, *inner]
    return None


def _nulls_to_nan(data: Any) -> Any:
    """Nested lists with every JSON null as NaN (a missing value)."""
    if data is None:
        return math.nan
    if type(data) is list:
        return [_nulls_to_nan(v) for v in data]
    return data


def array_from_json(data: Any, what: str, float32: bool = False, booleans: bool = False,
                    maybe_bools: bool = True, nulls: bool = False) -> np.ndarray:
    """A rectangular array of numbers from (nested) JSON lists, or a 400 naming the problem.

    With float32, flat and two-level lists come back as float32 straight away (values beyond
    the float32 range become inf, which the caller refuses). JSON booleans are refused (with
    their position) unless `booleans` (datatype BOOL): Python counts them as 0 and 1, so they
    would pass for numbers. `maybe_bools=False` says the body holds no 'true' nor 'false'
    (one search of the raw bytes), which spares the walk over every value. With `nulls`
    (a model that fills missing values in), JSON null reads as NaN.
    """
    if not isinstance(data, list):
        raise InvalidInputError(f"{what} must be a list of numbers (or of lists of numbers), "
                                f"found {type(data).__name__ if data is not None else 'null'}")
    if maybe_bools and not booleans:
        at = _first_bool(data)
        if at is not None:
            raise InvalidInputError(f"{what} must hold numbers, found a boolean at index "
                                    f"{_shape_text(at)} (send 0 and 1, or datatype BOOL)")
    if float32 and data:
        arr = _floats(data)
        if arr is not None:
            return arr
    try:
        arr = np.array(data)
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidInputError(f"{what} must be nested lists of numbers with a rectangular "
                                f"shape ({str(exc).split(';')[0]})") from None
    if nulls and arr.dtype.kind == "O":  # the slow route only: the fast one has no nulls
        arr = np.array(_nulls_to_nan(data))
    if arr.dtype.kind not in "fiub":
        raise InvalidInputError(f"{what} must hold numbers, found "
                                f"{_KIND_NAMES.get(arr.dtype.kind, str(arr.dtype))}")
    return arr


def exact_integers(data: list[Any], arr: np.ndarray, datatype: str, what: str) -> np.ndarray:
    """arr as exact integers where NumPy read JSON integers as floats, or arr unchanged.

    NumPy does that when some lie beyond int64 and others not ([2**64 - 1, 1], valid UINT64
    data); check_kind would then refuse them as floats. When a value is a float after all,
    arr comes back as it was and check_kind refuses it.
    """
    exact = np.array(data, dtype=object)
    values = exact.ravel().tolist()
    if exact.shape != arr.shape or not all(type(v) is int for v in values):
        return arr
    target = DATATYPES[datatype]
    info, low, high = np.iinfo(target), min(values), max(values)
    if low < info.min or high > info.max:
        raise InvalidInputError(f"{what}: values must lie in [{info.min}, {info.max}] for "
                                f"{datatype}, found [{low}, {high}]")
    return exact.astype(target)


def check_kind(arr: np.ndarray, datatype: str, what: str) -> np.ndarray:
    """Cast JSON-parsed values to the declared V2 datatype, refusing lossy or mixed kinds."""
    target = DATATYPES.get(datatype)
    if target is None:
        raise InvalidInputError(f"{what}: expected a datatype among {sorted(DATATYPES)}, found "
                                f"{datatype!r}")
    kind = arr.dtype.kind
    ok = {"b": "b", "u": "iu", "i": "iu", "f": "iuf"}[target.kind]
    if kind not in ok and arr.size:
        raise InvalidInputError(f"{what}: datatype {datatype} expects "
                                f"{_KIND_NAMES[target.kind]}, found {_KIND_NAMES.get(kind, kind)}")
    if target.kind in "iu" and arr.size:
        info = np.iinfo(target)
        if arr.min() < info.min or arr.max() > info.max:
            raise InvalidInputError(f"{what}: values must lie in [{info.min}, {info.max}] for "
                                    f"{datatype}, found [{arr.min()}, {arr.max()}]")
    if target.kind == "f" and kind in "iuf" and arr.dtype.itemsize > target.itemsize:
        with np.errstate(over="ignore"):
            out = arr.astype(target)
        # a finite value beyond the narrower type's range turns into inf: name that range
        # (the model's own check would blame the model's datatype instead); NaN may be there
        # too, a missing value
        if not np.isfinite(out).all() and (np.isinf(out) & np.isfinite(arr)).any():
            info, finite = np.finfo(target), arr[np.isfinite(arr)]
            raise InvalidInputError(f"{what}: values must lie within [{info.min:g}, {info.max:g}] "
                                    f"for {datatype}, found [{finite.min()}, {finite.max()}]")
        return out
    return arr.astype(target, copy=False)


def to_model_rows(arr: np.ndarray, spec: TensorSpec, what: str,
                  allow_single: bool = True) -> np.ndarray:
    """Rows (n, *spec.shape) of the model's float input from one sample or a batch of them.

    Accepted: exactly the sample shape (one sample), the batch shape (n, *shape), and, for a
    sample of several dimensions, its values flattened (n, size) or (size,).
    """
    shape = spec.shape
    if arr.shape[1:] == shape and arr.ndim == len(shape) + 1:  # the common cases first
        rows = arr
    elif allow_single and arr.shape == shape:
        rows = arr[None]
    else:
        rows = _reshape(arr, spec, what, allow_single)
    if not len(rows):
        raise InvalidInputError(f"{what}: expected at least one sample, found none")
    target = DATATYPES[spec.datatype]
    sent = rows
    if rows.dtype != target:
        if rows.dtype.kind not in "fiub":
            raise InvalidInputError(f"{what} must hold numbers for input {spec.name!r} "
                                    f"({spec.datatype}), found "
                                    f"{_KIND_NAMES.get(rows.dtype.kind, str(rows.dtype))}")
        if target.kind in "iu":  # ids: 1.5 must not become the id 1, nor 2**70 wrap
            try:
                rows = as_input_dtype(rows, target, f"{what} ({spec.name!r})")
            except DataError as exc:
                raise InvalidInputError(str(exc)) from None
        else:
            with np.errstate(over="ignore", invalid="ignore"):  # overflow: inf, refused below
                rows = rows.astype(target)
    # one BLAS dot product tells that all values are finite (see all_finite); a model that
    # fills missing values in takes NaN, never Inf
    if target.kind == "f" and not all_finite(rows) and (
            not spec.missing or np.isinf(rows).any()):
        bad = np.argwhere(np.isinf(rows) if spec.missing else ~np.isfinite(rows))[0]
        value = sent[tuple(bad)]
        # a value sent as inf or NaN (say in FP16) is not one that overflowed the model's type
        where = (f"found {value} at index {_shape_text(bad.tolist())}" if sent is rows or
                 np.isfinite(value) else f"found {value} (sent as {datatype_of(sent.dtype)}) "
                 f"at index {_shape_text(bad.tolist())}")
        within = f" within the range of {spec.datatype}" if np.isfinite(value) or sent is rows \
            else ""
        raise InvalidInputError(f"{what}: expected finite numbers{within}, {where}")
    return rows


def _reshape(arr: np.ndarray, spec: TensorSpec, what: str, allow_single: bool) -> np.ndarray:
    """The less common layouts: free dimensions, flattened multi-dimensional samples."""
    shape = spec.shape
    flat = len(shape) > 1 and min(shape) > 0  # a fixed multi-dimensional sample may come flat
    if arr.ndim == len(shape) + 1 and _fits(arr.shape[1:], shape):
        return arr
    if allow_single and _fits(arr.shape, shape):
        return arr[None]
    if flat and arr.ndim == 2 and arr.shape[1] == spec.size:
        return arr.reshape(len(arr), *shape)
    if flat and allow_single and arr.ndim == 1 and arr.size == spec.size:
        return arr.reshape(1, *shape)
    one = f"{_shape_text(shape)} (one sample) or " if allow_single else ""
    raise InvalidInputError(f"{what}: expected shape {one}[n, {_shape_text(shape)[1:-1]}] "
                            f"for input {spec.name!r}, found {_shape_text(arr.shape)}")


def bytes_tensor(values: np.ndarray) -> bytes:
    """BYTES elements in the V2 binary form: each as 4-byte little-endian length + bytes."""
    parts = []
    for v in values.ravel().tolist():
        b = v if isinstance(v, bytes) else str(v).encode()
        parts.append(len(b).to_bytes(4, "little"))
        parts.append(b)
    return b"".join(parts)
