"""The zip container of a model file: atomic writing and a validating, memory-mapped reader.

Entries are stored (never compressed) and their data is aligned to 64 bytes, so weights can
be used straight from a memory map. The reader never extracts anything to disk, refuses
unsafe or duplicated entry names, compressed or encrypted entries and sizes the file cannot
hold, and turns every low-level failure into one ModelFileError that names the problem.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import re
import stat
import struct
import zipfile
import zlib
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ..errors import ConfigError, ModelFileError
from .atomic import atomic_file

ALIGNMENT = 64
MAX_ENTRIES = 256
_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")  # the zip local file header, 30 bytes
_ALIGN_EXTRA_ID = 0xD935  # the extra-field id zipalign uses for padding
_Chunk = bytes | memoryview


def sha256_of(chunks: Iterable[_Chunk]) -> str:
    """'sha256:<hex>' of the concatenated chunks."""
    h = hashlib.sha256()
    for c in chunks:
        h.update(c)
    return "sha256:" + h.hexdigest()


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"a {type(o).__name__} is not JSON-serialisable")


def to_json(obj: Any, what: str, allow_nan: bool = False) -> bytes:
    """UTF-8 JSON of obj (NumPy scalars and arrays become numbers and lists)."""
    try:
        return json.dumps(obj, default=_json_default, allow_nan=allow_nan, indent=1,
                          ensure_ascii=False).encode("utf-8")
    except (TypeError, ValueError, RecursionError) as exc:
        raise ConfigError(f"{what} must be JSON-serialisable: {exc}") from None


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:  # two parsers could disagree on which one wins: refuse
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def from_json(data: _Chunk, what: str) -> Any:
    """Parse UTF-8 JSON, raising ModelFileError naming `what`."""
    try:
        return json.loads(str(data, "utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise ModelFileError(f"{what} is not valid UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise ModelFileError(f"{what} is not valid JSON ({exc})") from None


def _align_extra(offset: int, name: bytes, zip64: bool) -> bytes:
    """A padding extra field that makes the entry's data start on an ALIGNMENT boundary."""
    fixed = offset + _LOCAL_HEADER.size + len(name) + 4 + (20 if zip64 else 0)
    pad = -fixed % ALIGNMENT
    return struct.pack("<HH", _ALIGN_EXTRA_ID, pad) + b"\0" * pad


def write_archive(path: str | os.PathLike, entries: Sequence[tuple[str, Sequence[_Chunk]]],
                  date_time: tuple[int, int, int, int, int, int]) -> None:
    """Write a zip of stored entries atomically (see io/atomic.py): temp file, fsync, rename
    over `path` (the file a symbolic link points to, for a link).

    The target must be absent or a writable regular file: a read-only one is refused (see
    save()). Temp files of this target left by saves whose process died are removed first.
    """
    path = check_target(path)
    try:
        with atomic_file(path, "wb") as f:
            _write_zip(f, entries, date_time)
    except OSError as exc:  # disk full, read-only place, a directory in the way
        raise ModelFileError(f"cannot write model file '{path}': "
                             f"{exc.strerror or exc}") from None


def _write_zip(f: Any, entries: Sequence[tuple[str, Sequence[_Chunk]]],
               date_time: tuple[int, int, int, int, int, int]) -> None:
    """The stored, 64-byte-aligned zip entries, written to the open file f."""
    with zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as zf:
        for name, chunks in entries:
            info = zipfile.ZipInfo(name, date_time)
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            info.file_size = sum(memoryview(c).nbytes for c in chunks)
            zip64 = info.file_size * 1.05 > zipfile.ZIP64_LIMIT  # zipfile's own rule
            info.extra = _align_extra(f.tell(), name.encode("ascii"), zip64)
            with zf.open(info, "w", force_zip64=zip64) as w:
                for c in chunks:
                    w.write(c)


# -- the target and its temp files -------------------------------------------------------------
def check_target(path: Any) -> Path:
    """The path to write a model file to, or one error naming what was expected and found."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"expected a model file path, found {type(path).__name__}")
    text = os.fsdecode(os.fspath(path))
    if not text.strip():
        raise ConfigError("expected a model file path, found an empty string")
    p = Path(text)
    where = f"cannot write model file '{text}'"
    if text.endswith(("/", os.sep)):  # Path() would drop the slash and write a file there
        raise ModelFileError(f"{where}: expected a file name, found a directory path "
                             f"(ending in '{text[-1]}')")
    try:
        st = os.stat(p)
    except OSError:  # absent (or unreachable): the parents say why, or the write will
        _check_parents(p, where)
        return p
    if stat.S_ISDIR(st.st_mode):
        raise ModelFileError(f"{where}: expected a file, found a directory")
    if not stat.S_ISREG(st.st_mode):
        kind = "a pipe" if stat.S_ISFIFO(st.st_mode) else \
            "a socket" if stat.S_ISSOCK(st.st_mode) else "a device"
        raise ModelFileError(f"{where}: expected a regular file, found {kind} (the file is "
                             f"written whole, then renamed into place, which would replace it)")
    # a rename would replace it regardless (only the directory's permissions count); refused
    # as cp, np.save and torch.save refuse it, and by the mode bits too, so that root (whom
    # access() lets write anything) is refused alike
    mode = stat.S_IMODE(st.st_mode)
    if not mode & 0o222:
        found = f"a read-only one (mode {mode:o})"
    elif not os.access(p, os.W_OK):
        found = f"one this user may not write (mode {mode:o})"
    else:
        return p
    raise ModelFileError(f"{where}: expected a writable file, found {found}; make it writable "
                         f"(chmod u+w) or delete it first")


def _check_parents(p: Path, where: str) -> None:
    """The nearest existing parent of p must be a directory (else a ModelFileError)."""
    for parent in p.parents:
        try:
            st = os.stat(parent)
        except OSError:  # absent, or a higher parent is a file: look further up
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise ModelFileError(f"{where}: expected '{parent}' to be a directory, found a file")
        return


def unsafe_name(name: str) -> bool:
    """True for entry names that are absolute, contain '..' or a NUL byte, or are empty."""
    if not name or "\0" in name or name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return True
    return ".." in re.split(r"[/\\]", name)


class ArchiveReader:
    """A validated, memory-mapped, read-only view of a model archive's entries."""

    def __init__(self, path: str | os.PathLike) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise ModelFileError(f"expected the path of an nnforge model file, found "
                                 f"{type(path).__name__}")
        self.path = os.fspath(path)
        self._file: Any = None
        self._mm: Any = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    def _open(self) -> None:
        p = self.path
        try:
            st = os.stat(p)
            if stat.S_ISDIR(st.st_mode):
                raise ModelFileError(f"'{p}' is a directory, expected an nnforge model file")
            if not stat.S_ISREG(st.st_mode):
                raise ModelFileError(f"'{p}' is not a regular file, expected an nnforge model file")
            self._file = open(p, "rb")  # noqa: SIM115 - closed in close()
            if st.st_size == 0:
                raise ModelFileError(f"'{p}' is empty, expected an nnforge model file")
            self._mm = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        except ModelFileError:
            raise
        except FileNotFoundError:
            raise ModelFileError(f"model file '{p}' not found") from None
        except (OSError, ValueError) as exc:
            raise ModelFileError(f"cannot read model file '{p}': "
                                 f"{getattr(exc, 'strerror', None) or exc}") from None
        try:
            with zipfile.ZipFile(self._file) as zf:
                infos = zf.infolist()
        except Exception:  # noqa: BLE001 - zipfile parsing hostile bytes raises many kinds
            # (BadZipFile, struct.error, NotImplementedError for odd versions, ...); all of
            # them mean the same thing here
            if self._mm[:4] == b"PK\x03\x04":
                raise ModelFileError(f"'{p}' is truncated or damaged (its zip directory cannot "
                                     f"be read)") from None
            hint = ""
            if str(p).lower().endswith(".onnx") or self._mm[:1] == b"\x08":  # ONNX's ir_version
                hint = (f"; it looks like an ONNX model: run it with nnforge.InferenceSession"
                        f"('{p}'), or convert it with nnforge.onnx.to_module or 'nnforge import'")
            raise ModelFileError(f"'{p}' is not an nnforge model file (not a zip "
                                 f"archive){hint}") from None
        self.entries = self._check_entries(infos)

    def _check_entries(self, infos: list[zipfile.ZipInfo]) -> dict[str, zipfile.ZipInfo]:
        p, size = self.path, len(self._mm)
        if len(infos) > MAX_ENTRIES:
            raise ModelFileError(f"'{p}' has {len(infos):,} entries, expected at most "
                                 f"{MAX_ENTRIES}")
        out: dict[str, zipfile.ZipInfo] = {}
        for info in infos:
            name = info.orig_filename
            if unsafe_name(name):
                raise ModelFileError(f"'{p}' contains the unsafe entry name {name!r} (an "
                                     f"absolute path or '..'); refusing to read it")
            if name in out:
                raise ModelFileError(f"'{p}' contains the entry {name!r} twice; refusing to "
                                     f"guess which one counts")
            if info.flag_bits & 0x1:
                raise ModelFileError(f"entry {name!r} of '{p}' is encrypted; model files are not")
            if info.compress_type != zipfile.ZIP_STORED:
                raise ModelFileError(f"entry {name!r} of '{p}' is compressed (zip method "
                                     f"{info.compress_type}); model file entries are stored "
                                     f"uncompressed")
            if info.file_size != info.compress_size or info.header_offset + info.file_size > size:
                raise ModelFileError(f"entry {name!r} of '{p}' declares {info.file_size:,} bytes "
                                     f"but the whole file holds {size:,}; it is damaged")
            out[name] = info
            self._data_start(info)  # a damaged directory names entries their headers do not
        return out

    def __contains__(self, name: str) -> bool:
        return name in self.entries

    def _data_start(self, info: zipfile.ZipInfo) -> int:
        off, name = info.header_offset, info.orig_filename
        head = self._mm[off:off + _LOCAL_HEADER.size]
        if len(head) < _LOCAL_HEADER.size or head[:4] != b"PK\x03\x04":
            raise ModelFileError(f"entry {name!r} of '{self.path}' is damaged (no local header "
                                 f"where the zip directory points)")
        fields = _LOCAL_HEADER.unpack(head)
        n, m = fields[10], fields[11]
        raw = self._mm[off + _LOCAL_HEADER.size:off + _LOCAL_HEADER.size + n]
        local = raw.decode("utf-8" if info.flag_bits & 0x800 else "cp437", errors="replace")
        if local != name:
            raise ModelFileError(f"entry {name!r} of '{self.path}' is damaged (its local header "
                                 f"names {local!r})")
        start = off + _LOCAL_HEADER.size + n + m
        if start + info.file_size > len(self._mm):
            raise ModelFileError(f"entry {name!r} of '{self.path}' is truncated")
        return start

    def read(self, name: str, sha256: str | None = None, limit: int | None = None) -> memoryview:
        """The bytes of one entry, without copying, checked against sha256 (else the zip CRC)."""
        info = self.entries.get(name)
        if info is None:
            raise ModelFileError(f"'{self.path}' is missing the entry {name!r}")
        if limit is not None and info.file_size > limit:
            raise ModelFileError(f"entry {name!r} of '{self.path}' declares {info.file_size:,} "
                                 f"bytes, expected at most {limit:,}")
        start = self._data_start(info)
        view = memoryview(self._mm)[start:start + info.file_size]
        if sha256 is not None:
            if sha256_of([view]) != sha256:
                raise ModelFileError(f"checksum mismatch for entry {name!r} of '{self.path}': "
                                     f"the file is damaged or was modified")
        elif zlib.crc32(view) != info.CRC:
            raise ModelFileError(f"entry {name!r} of '{self.path}' is damaged (CRC mismatch)")
        return view

    def close(self) -> None:
        """Release the file; the map itself lives on while arrays still view it."""
        if self._file is not None:
            self._file.close()
        if self._mm is not None:
            try:
                self._mm.close()
            except BufferError:
                pass  # arrays returned to the caller still use it; it closes when they go
