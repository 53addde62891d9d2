"""The IDX format MNIST ships in: 2 zero bytes, a dtype code, ndim, big-endian dims, data."""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import DataError, DTypeError

#: IDX dtype code -> big-endian NumPy dtype.
IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_DIMS = 32  # NumPy's limit before 2.0 (64 since): a file with more cannot be an array


def _open(path: str | Path) -> BinaryIO:
    if not isinstance(path, (str, os.PathLike)):  # open() takes an int as a file descriptor
        raise DataError(f"expected the path of an IDX file, found {type(path).__name__} "
                        f"{path!r:.40}")
    try:
        return open(path, "rb")
    except FileNotFoundError as e:
        raise DataError(f"expected an IDX file at {str(path)!r}, found no such file") from e
    except (IsADirectoryError, PermissionError) as e:
        raise DataError(f"expected a readable IDX file at {str(path)!r}, found: {e}") from e


def _read(fh: BinaryIO, n: int, path: str | Path) -> bytearray:
    """Up to n bytes, in chunks: read(n) would allocate all n up front, whatever the file holds."""
    out = bytearray()
    try:
        while len(out) < n:
            chunk = fh.read(min(n - len(out), 1 << 24))
            if not chunk:
                break
            out += chunk
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        raise DataError(f"{path}: expected a complete gzip stream, found: {e}") from None
    return out


def read_idx(path: str | Path) -> np.ndarray:
    """Read an IDX file (raw or gzip, detected by its magic bytes) into a native-endian array."""
    with _open(path) as raw:
        fh: BinaryIO = raw
        if raw.peek(2)[:2] == _GZIP_MAGIC:  # type: ignore[attr-defined]
            fh = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[assignment]
        magic = _read(fh, 4, path)
        if len(magic) < 4:
            raise DataError(f"{path}: expected a 4-byte IDX magic number, found {len(magic)} "
                            f"bytes")
        zero, code, ndim = magic[:2], magic[2], magic[3]
        if zero != b"\0\0" or code not in IDX_DTYPES:
            raise DataError(f"{path}: expected an IDX magic number 00 00 <dtype code in "
                            f"{[hex(c) for c in IDX_DTYPES]}> <ndim>, found {magic.hex(' ')}")
        if ndim == 0:
            raise DataError(f"{path}: expected at least 1 dimension, found 0")
        if ndim > _MAX_DIMS:
            raise DataError(f"{path}: expected 1 to {_MAX_DIMS} dimensions, found {ndim}")
        header = 4 + 4 * ndim
        raw_dims = _read(fh, 4 * ndim, path)
        if len(raw_dims) < 4 * ndim:
            raise DataError(f"{path}: expected {header} header bytes for {ndim} dimensions, "
                            f"found {4 + len(raw_dims)} (truncated file)")
        dims = struct.unpack(f">{ndim}I", raw_dims)
        dtype = IDX_DTYPES[code]
        nbytes = math.prod(dims) * dtype.itemsize  # Python ints: no overflow for huge dims
        # one byte past the declared size, never more: a gzip bomb stops here
        body = _read(fh, nbytes + 1, path)
        # a plain file's size is known; a gzip stream is not decompressed past one extra byte
        size = os.fstat(raw.fileno()).st_size if fh is raw else None
    if len(body) != nbytes:
        what = "truncated file" if len(body) < nbytes else "trailing bytes"
        found = header + len(body) if len(body) <= nbytes else size or "more"
        raise DataError(f"{path}: expected {header + nbytes} bytes for shape {dims} of "
                        f"{dtype.name}, found {found} ({what})")
    data = np.frombuffer(body, dtype=dtype).reshape(dims)
    return data.astype(dtype.newbyteorder("="))  # a writable, native-endian copy


def write_idx(path: str | Path, array: np.ndarray, compress: bool | None = None) -> None:
    """Write an array as IDX; gzip-compressed when compress is True (default: path ends .gz)."""
    a = np.asarray(array)
    codes = {dt.newbyteorder("=").str: c for c, dt in IDX_DTYPES.items()}
    native = a.dtype.newbyteorder("=").str
    if native not in codes:
        raise DTypeError(f"expected an array of uint8, int8, int16, int32, float32 or float64, "
                         f"found {a.dtype}")
    if not 1 <= a.ndim <= _MAX_DIMS:  # the format allows 255, read_idx (and NumPy) fewer
        raise DataError(f"expected 1 to {_MAX_DIMS} dimensions, found {a.ndim}")
    if any(d >= 2**32 for d in a.shape):  # each dimension is a big-endian uint32
        raise DataError(f"expected dimensions below 2**32, found shape {a.shape}")
    code = codes[native]
    body = np.ascontiguousarray(a, dtype=IDX_DTYPES[code]).tobytes()
    payload = bytes([0, 0, code, a.ndim]) + struct.pack(f">{a.ndim}I", *a.shape) + body
    if compress is None:
        compress = os.fspath(path).endswith(".gz")
    try:
        with open(path, "wb") as fh:
            fh.write(gzip.compress(payload) if compress else payload)
    except OSError as e:
        raise DataError(f"cannot write IDX file {str(path)!r}: {e.strerror or e}") from None
