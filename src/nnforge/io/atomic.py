"""Atomic file writes: a temp file beside the target, fsync, then one rename over it.

Every file nnforge writes (model files and checkpoints, predictions, reports, ONNX exports,
history logs) goes through `atomic_file`, so a crash, a full disk or Ctrl-C never leaves a
half-written file where a good one was. Temp files carry the writing process's PID and a tag
of its host, so the next write of the same target can delete the leftovers of a writer that
was killed (kill -9, OOM) without touching a write still in progress.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import socket
import stat
import tempfile
import time
from pathlib import Path
from typing import IO, Iterator

#: A temp file of a write whose process is gone, untouched this long, is that write's leftover
#: (the mtime guard also covers a PID that looks gone only briefly, e.g. across namespaces).
STALE_AFTER_S = 10.0
#: Whether os.kill(pid, 0) probes a process (on Windows signal 0 is CTRL_C_EVENT: never there).
_CAN_PROBE_PIDS = os.name == "posix"


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb",
                newline: str | None = None) -> Iterator[IO]:
    """A new file (opened with `mode`, "wb" or "w") that replaces `path` when the block ends
    without an exception; on any exception the target is left as it was and the temp file is
    removed. A symbolic link stays a link: the file it points to is replaced. An existing file
    keeps its permission bits; a new one gets 0o666 less the umask. OSErrors name `path`."""
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_file writes with mode 'wb' or 'w', not {mode!r}")
    target = Path(os.path.realpath(path)) if os.path.islink(path) else Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(target)  # first: a disk filled by dead writers' leftovers frees up
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(target, os.getpid()), suffix=".tmp",
                                   dir=target.parent)
    except OSError as exc:  # name the file asked for, not the temp file beside it
        raise OSError(exc.errno, exc.strerror or str(exc), os.fspath(path)) from None
    try:
        encoding = None if "b" in mode else "utf-8"
        with os.fdopen(fd, mode, encoding=encoding, newline=newline) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename in (None, tmp):
            raise OSError(exc.errno, exc.strerror or str(exc), os.fspath(path)) from None
        raise
    _fsync_dir(target.parent)


def _mode_for(target: Path) -> int:
    """The permission bits the written file gets: the old file's, else a normal new file's
    (mkstemp makes its file owner-only; model files and outputs are meant to be shared)."""
    with contextlib.suppress(OSError):
        st = os.stat(target)
        if stat.S_ISREG(st.st_mode):
            return stat.S_IMODE(st.st_mode)
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def _host_tag() -> str:
    """8 hex digits naming this machine: a PID only means something on the host that has it
    (a directory shared over the network holds other machines' temp files too)."""
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


def temp_prefix(path: Path, pid: int) -> str:
    """The name start of a temp file that process `pid` of this host writes `path` through."""
    return f".{path.name}.{pid}-{_host_tag()}."


def _pid_alive(pid: int) -> bool | None:
    """Whether a process with this PID exists on this host; None when that cannot be told."""
    if not _CAN_PROBE_PIDS or pid <= 0:  # 0 and below name process groups, not a process
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, as another user's process
        return True
    except (OSError, OverflowError, ValueError):
        return None
    return True


def remove_stale_temps(path: Path) -> list[str]:
    """Delete this target's temp files left by dead writers (kill -9, a crash); their names.

    Only files named by temp_prefix() for this host, whose PID is surely gone and which were
    untouched for STALE_AFTER_S: never a write in progress, nor another target's temp file,
    nor one whose writer cannot be told (an older nnforge's, another machine's, Windows).
    """
    pattern = re.compile(rf"\.{re.escape(path.name)}\.(\d+)-{_host_tag()}\.[A-Za-z0-9_]+\.tmp")
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    removed = []
    for name in names:
        found = pattern.fullmatch(name)
        if found is None or _pid_alive(int(found.group(1))) is not False:
            continue
        candidate = path.parent / name
        try:
            st = os.lstat(candidate)
            if stat.S_ISREG(st.st_mode) and time.time() - st.st_mtime > STALE_AFTER_S:
                os.unlink(candidate)
                removed.append(name)
        except OSError:  # gone already (another write cleaned it), or not ours to delete
            continue
    return removed


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (not every platform lets a directory be opened)."""
    try:
        dfd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)
