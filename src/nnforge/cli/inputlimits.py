"""Size checks on array files the commands read whole (.npz members, IDX), made from their
headers before a byte of data is read.

A .npz member or a gzip IDX file is compressed: 3 MB on disk may inflate to gigabytes of
zeros, and its header may also claim far more data than the file holds. CSV and .npy inputs
are read in --batch-size chunks (a .npy file is memory-mapped) and need no such check.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import DataError

#: the most bytes an input read whole may take in memory (its data as float32, the dtype the
#: model runs in); None: half this machine's memory, at least 2 GiB. An honest file that big
#: could not be read anyway; a compressed one that claims more is a decompression bomb
MAX_WHOLE_INPUT_BYTES: int | None = None
#: what predict can do instead (it streams .npy and CSV); train and evaluate read data whole
STREAM_HINT = "; save it as .npy or CSV, which predict reads in --batch-size chunks"
#: deflate expands at most ~1032:1; a member claiming more than this per stored byte is damaged
_MAX_DEFLATE_RATIO = 1100
_IDX_ITEMSIZE = {0x08: 1, 0x09: 1, 0x0B: 2, 0x0C: 4, 0x0D: 4, 0x0E: 8}


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**28 else f"{n} bytes"


def whole_input_budget() -> int:
    """MAX_WHOLE_INPUT_BYTES, or half the physical memory (at least 2 GiB) when it is None."""
    if MAX_WHOLE_INPUT_BYTES is not None:
        return MAX_WHOLE_INPUT_BYTES
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        memory = 0
    return max(2 * 2**30, memory // 2)


def _refuse_if_too_big(path: str | Path, what: str, shape: tuple[int, ...], hint: str) -> None:
    need, budget = math.prod(shape) * 4, whole_input_budget()
    if need > budget:
        raise DataError(f"{path}: {what} declares shape {shape}, {_gib(need)} as float32, more "
                        f"than the {_gib(budget)} (half this machine's memory) an .npz or IDX "
                        f"input may take, as it is read whole{hint}")


def check_npz(path: str | Path, keys: tuple[str, ...] = ("X", "x", "y"), hint: str = "") -> None:
    """Refuse an .npz whose members (of these names) declare more data than the file can hold
    or than MAX_WHOLE_INPUT_BYTES; a file that is no zip is left to the reader's own errors."""
    try:
        archive = zipfile.ZipFile(path)
    except (OSError, zipfile.BadZipFile, ValueError, EOFError):
        return
    with archive:
        for info in archive.infolist():
            key = info.filename.removesuffix(".npy")
            if key not in keys:
                continue
            try:
                with archive.open(info) as fh:
                    fmt = np.lib.format
                    read = (fmt.read_array_header_1_0 if fmt.read_magic(fh) == (1, 0)
                            else fmt.read_array_header_2_0)
                    shape, _, dtype = read(fh)
                    offset = fh.tell()
            except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error,
                    NotImplementedError, RuntimeError, TypeError, struct.error):
                continue  # a damaged member: read_npz names the problem
            need = math.prod(shape) * dtype.itemsize
            stored = info.file_size - offset
            packed_max = (info.compress_size * _MAX_DEFLATE_RATIO
                          if info.compress_type != zipfile.ZIP_STORED else info.compress_size)
            if need > stored or need > packed_max + offset:
                raise DataError(f"{path}: member {key!r} declares shape {shape} of {dtype} "
                                f"({_gib(need)}), more data than the file holds (truncated "
                                f"or damaged file)")
            _refuse_if_too_big(path, f"member {key!r}", shape, hint)


def check_idx(path: str | Path, hint: str = "") -> None:
    """Refuse an IDX file whose header declares more than MAX_WHOLE_INPUT_BYTES, or (plain
    files) more data than the file holds; read_idx reports every other problem."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below, with the gzip reader
    except OSError:
        return
    with raw:
        try:
            gz = raw.peek(2)[:2] == b"\x1f\x8b"
            fh = gzip.GzipFile(fileobj=raw, mode="rb") if gz else raw
            head = fh.read(4)
            if len(head) < 4 or head[:2] != b"\0\0" or head[2] not in _IDX_ITEMSIZE:
                return
            dims_raw = fh.read(4 * head[3])
            if len(dims_raw) < 4 * head[3] or head[3] == 0:
                return
            shape = struct.unpack(f">{head[3]}I", dims_raw)
            size = None if gz else Path(path).stat().st_size
        except (OSError, EOFError, zlib.error):
            return
    need = math.prod(shape) * _IDX_ITEMSIZE[head[2]]
    if size is not None and need > size - 4 - len(dims_raw):
        return  # read_idx says "truncated file" without reading more than there is
    _refuse_if_too_big(path, "the IDX header", shape, hint)
