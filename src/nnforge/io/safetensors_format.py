"""A small reader and writer of the safetensors layout, so the core needs NumPy alone.

Layout: an 8-byte little-endian header length N, N bytes of UTF-8 JSON
``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}}``,
then the tensors' raw little-endian bytes, back to back, offsets counted from the end of the
header. Reading checks every claim the header makes before touching the data.
"""

from __future__ import annotations

import json
import math
import struct
from typing import Any, BinaryIO, Mapping

import numpy as np

from .. import backend
from ..autograd.tensor import Tensor
from ..errors import ConfigError, DTypeError, ModelFileError

#: safetensors dtype names and the little-endian NumPy dtypes they hold.
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAME_OF = {(dt.kind, dt.itemsize): name for name, dt in DTYPES.items()}
#: the reference implementation refuses larger headers too
MAX_HEADER_BYTES = 100_000_000


def _prepare(tensors: Mapping[str, Any]) -> list[tuple[str, str, np.ndarray]]:
    """(name, safetensors dtype, C-contiguous little-endian array), in file order."""
    out = []
    for name, value in tensors.items():
        if not isinstance(name, str) or name == "__metadata__":
            raise ConfigError(f"tensor names must be strings other than '__metadata__', "
                              f"found {name!r}")
        arr = backend.to_numpy(value.data if isinstance(value, Tensor) else value)
        key = (arr.dtype.kind, arr.dtype.itemsize)
        if key not in _NAME_OF:
            raise DTypeError(f"safetensors cannot store tensor {name!r}: expected one of "
                             f"{sorted(DTYPES)}, found dtype {arr.dtype}")
        arr = arr.astype(arr.dtype.newbyteorder("<"), order="C", copy=False)
        out.append((name, _NAME_OF[key], arr))
    # widest items first, then by name (as the reference writer does): every tensor then
    # starts at a multiple of its item size, so mapped arrays stay aligned
    out.sort(key=lambda t: (-t[2].dtype.itemsize, t[0]))
    return out


def encode(tensors: Mapping[str, Any],
           metadata: Mapping[str, str] | None = None) -> tuple[bytes, list[memoryview]]:
    """The header (length prefix included) and the byte views of the tensors, in file order."""
    prepared = _prepare(tensors)
    header: dict[str, Any] = {}
    if metadata:
        bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
        if bad:
            raise ConfigError(f"safetensors metadata maps strings to strings, found "
                              f"{bad[0]!r}: {metadata[bad[0]]!r}")
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, dname, arr in prepared:
        header[name] = {"dtype": dname, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + arr.nbytes]}
        offset += arr.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # pad with spaces so the data starts 8-byte aligned
    views = [memoryview(arr.reshape(-1).view(np.uint8)) for _, _, arr in prepared if arr.size]
    return struct.pack("<Q", len(raw)) + raw, views


def serialize(tensors: Mapping[str, Any], metadata: Mapping[str, str] | None = None) -> bytes:
    """The safetensors bytes of a {name: array} mapping."""
    header, views = encode(tensors, metadata)
    return b"".join([header, *views])


def write(fileobj: BinaryIO, tensors: Mapping[str, Any],
          metadata: Mapping[str, str] | None = None) -> int:
    """Stream the safetensors bytes into a binary file object; return the byte count."""
    header, views = encode(tensors, metadata)
    fileobj.write(header)
    for v in views:
        fileobj.write(v)
    return len(header) + sum(v.nbytes for v in views)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _is_count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def _read_header(view: memoryview, source: str) -> tuple[dict[str, Any], int]:
    """The parsed JSON header and the offset at which the tensor data starts."""
    if len(view) < 8:
        raise ModelFileError(f"{source}: expected at least 8 bytes of safetensors header length, "
                             f"found {len(view)} bytes")
    (n,) = struct.unpack("<Q", view[:8])
    if n > len(view) - 8 or n > MAX_HEADER_BYTES:
        raise ModelFileError(f"{source}: safetensors header claims {n:,} bytes but the data "
                             f"holds {len(view) - 8:,} after the length field")
    try:
        header = json.loads(str(view[8:8 + n], "utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise ModelFileError(f"{source}: safetensors header is not valid UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise ModelFileError(f"{source}: safetensors header is not valid JSON ({exc})") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{source}: safetensors header must be a JSON object, found "
                             f"{type(header).__name__}")
    return header, 8 + n


#: largest dim a stored tensor may have (NumPy's own limit is the platform's intp)
MAX_DIM = 2**31 - 1


def _check_entry(name: str, spec: Any, source: str) -> tuple[np.dtype, str, tuple[int, ...],
                                                              int, int]:
    if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
        raise ModelFileError(f"{source}: tensor {name!r} must be described by exactly dtype, "
                             f"shape and data_offsets, found {spec!r:.120}")
    dname, shape, offsets = spec["dtype"], spec["shape"], spec["data_offsets"]
    if not isinstance(dname, str) or (dname not in DTYPES and dname != "BF16"):
        raise ModelFileError(f"{source}: tensor {name!r} has unsupported dtype {dname!r:.40}; "
                             f"expected one of {sorted(DTYPES) + ['BF16']}")
    if not isinstance(shape, list) or not all(_is_count(d) for d in shape):
        raise ModelFileError(f"{source}: tensor {name!r} has shape {shape!r:.80}, expected a "
                             f"list of non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_count, offsets))
            or offsets[0] > offsets[1]):
        raise ModelFileError(f"{source}: tensor {name!r} has data_offsets {offsets!r:.80}, "
                             f"expected [begin, end] with 0 <= begin <= end")
    dtype = np.dtype("<u2") if dname == "BF16" else DTYPES[dname]
    # an empty tensor passes the byte count whatever its other dims; NumPy cannot make one
    # past these (np.zeros((0, 10**30)) raises a bare ValueError)
    nonzero = math.prod(d for d in shape if d)
    if any(d > MAX_DIM for d in shape) or nonzero > np.iinfo(np.intp).max // dtype.itemsize:
        raise ModelFileError(f"{source}: tensor {name!r} has shape {tuple(shape)!r:.80}; "
                             f"expected dims of at most {MAX_DIM} and fewer than "
                             f"{np.iinfo(np.intp).max // dtype.itemsize} elements")
    expected = math.prod(shape) * dtype.itemsize
    if offsets[1] - offsets[0] != expected:
        raise ModelFileError(f"{source}: tensor {name!r} of dtype {dname} and shape "
                             f"{tuple(shape)} needs {expected:,} bytes, its data_offsets span "
                             f"{offsets[1] - offsets[0]:,}")
    return dtype, dname, tuple(shape), offsets[0], offsets[1]


def deserialize(buf: Any, source: str = "safetensors data"
                ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse and validate safetensors bytes into ({name: array}, metadata).

    The arrays are views into ``buf`` (no copy; read-only when ``buf`` is), except BF16
    tensors, which are widened to float32. ``source`` names the data in error messages.
    """
    view = memoryview(buf)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    header, start = _read_header(view, source)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ModelFileError(f"{source}: safetensors __metadata__ must map strings to strings")
    entries = sorted((_check_entry(k, v, source) + (k,) for k, v in header.items()),
                     key=lambda e: (e[3], e[4]))
    data_len, pos = len(view) - start, 0
    for _, _, _, begin, end, name in entries:
        if begin != pos:
            what = "overlaps the previous tensor" if begin < pos else "leaves a gap before it"
            raise ModelFileError(f"{source}: tensor {name!r} starts at byte {begin:,}, expected "
                                 f"{pos:,} (it {what}); tensors must be contiguous")
        pos = end
    if pos > data_len:
        raise ModelFileError(f"{source}: safetensors header claims {pos:,} bytes of tensor data "
                             f"but the file holds {data_len:,}")
    if pos < data_len:
        raise ModelFileError(f"{source}: {data_len - pos:,} bytes follow the last tensor; "
                             f"expected the data to end there")
    tensors: dict[str, np.ndarray] = {}
    for dtype, dname, shape, begin, _, name in entries:
        count = math.prod(shape)
        if count == 0:
            arr = np.zeros(shape, dtype)
        else:
            arr = np.frombuffer(view, dtype, count, start + begin).reshape(shape)
        if dname == "BF16":  # bfloat16 is the top half of a float32
            arr = (arr.astype("<u4") << 16).view("<f4")
        tensors[name] = arr
    return {k: tensors[k] for k in header}, dict(metadata)
