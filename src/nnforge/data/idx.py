"""The IDX format MNIST ships in: 2 zero bytes, a dtype code, ndim, big-endian dims, data."""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError, DTypeError

#: IDX dtype code -> big-endian NumPy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: str | Path) -> bytes:
    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except FileNotFoundError as e:
        raise DataError(f"expected an IDX file at {str(path)!r}, found no such file") from e
    except (IsADirectoryError, PermissionError) as e:
        raise DataError(f"expected a readable IDX file at {str(path)!r}, found: {e}") from e
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DataError(f"{path}: expected a complete gzip stream, found: {e}") from None


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or gzip, detected by its magic bytes) into a native-endian array."""
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: expected a 4-byte IDX magic number, found {len(raw)} bytes")
    zero, code, ndim = raw[:2], raw[2], raw[3]
    if zero != b"\0\0" or code not in IDX_DTYPES:
        raise DataError(f"{path}: expected an IDX magic number 00 00 <dtype code in "
                        f"{[hex(c) for c in IDX_DTYPES]}> <ndim>, found {raw[:4].hex(' ')}")
    if ndim == 0:
        raise DataError(f"{path}: expected at least 1 dimension, found 0")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path}: expected {header} header bytes for {ndim} dimensions, "
                        f"found {len(raw)} (truncated file)")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = IDX_DTYPES[code]
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        what = "truncated file" if len(raw) < expected else "trailing bytes"
        raise DataError(f"{path}: expected {expected} bytes for shape {dims} of {dtype.name}, "
                        f"found {len(raw)} ({what})")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims)
    return data.astype(dtype.newbyteorder("="))  # a writable, native-endian copy


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write an array as IDX; gzip-compressed when compress is True (default: path ends .gz)."""
    a = np.asarray(array)
    codes = {dt.newbyteorder("=").str: c for c, dt in IDX_DTYPES.items()}
    native = a.dtype.newbyteorder("=").str
    if native not in codes:
        raise DTypeError(f"expected an array of uint8, int8, int16, int32, float32 or float64, "
                         f"found {a.dtype}")
    if not 1 <= a.ndim <= 255:
        raise DataError(f"expected 1 to 255 dimensions, found {a.ndim}")
    code = codes[native]
    body = np.ascontiguousarray(a, dtype=IDX_DTYPES[code]).tobytes()
    payload = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + body
    if compress is None:
        compress = os.fspath(path).endswith(".gz")
    with open(path, "wb") as fh:
        fh.write(gzip.compress(payload) if compress else payload)
