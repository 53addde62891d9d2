"""The model repository: which versions are served, loading them and swapping them atomically.

Layout (Triton's): ``<repo>/<model>/<version>/model.nnf`` (or ``model.onnx``, imported on load)
with integer versions. A single ``.nnf`` or ``.onnx`` file can be served too. A version is loaded
and warmed up on a worker thread while the server keeps answering; then one assignment on the
event loop makes it visible. Requests that already hold the old version finish on it: its
batcher drains before it is dropped. A version that fails to load is reported (index, logs,
metrics) and whatever served before goes on serving: when the new file of a loaded version
fails (a deploy copying over it, a corrupt file), the loaded copy of that version keeps
serving (as Triton's poll mode does) and the index shows it READY with the failure as reason.

Polling loads a new or changed file only once its signature (size, mtime, inode) is the same
on two polls in a row: a file still being copied is not loaded half-written (the first sync
and the load endpoint load at once).

Symbolic links are followed only where they stay inside the repository: a model directory,
version directory or model file whose real path lies outside it is skipped, with one warning
(a link in a shared volume must not make the server load, and answer with, a file from
anywhere else on the machine).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .batcher import BatchingConfig, DynamicBatcher
from .errors import InvalidInputError, NotFoundError, UnavailableError
from .metrics import ServerMetrics
from .model import ServedModel, timed_load

log = logging.getLogger("nnforge.serve")
MODEL_FILE = "model.nnf"
#: file names a version directory may hold, in order of preference (ONNX files are imported)
MODEL_FILES = (MODEL_FILE, "model.onnx")


def model_file(version_dir: Path) -> Path | None:
    """The model file inside a version directory, or None when it holds none."""
    for name in MODEL_FILES:
        if (version_dir / name).is_file():
            return version_dir / name
    return None
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
#: names no model may have. Triton's statistics extension (which tritonclient's
#: get_inference_statistics() calls) answers the statistics of every model at
#: GET /v2/models/stats, the very path of KServe V2's metadata of a model named "stats": no
#: routing tells the two apart, and moving either route breaks the clients of that protocol.
#: ("versions", "ready", "config", "infer" are safe: they only clash as a path's later part.)
RESERVED_NAMES = frozenset({"stats"})


def check_name(name: str) -> str | None:
    """Why name cannot name a model, or None when it can."""
    if not _NAME.match(name):
        return (f"expected a model name of up to 128 letters, digits, '_', '-' and '.' (not "
                f"starting with '.' or '-'), found {name!r}")
    if name in RESERVED_NAMES:
        return (f"expected a model name other than {name!r}: GET /v2/models/{name} is the "
                f"statistics of every model (Triton's statistics extension); rename the model")
    return None


@dataclass(frozen=True)
class VersionPolicy:
    """Which versions on disk are served: the latest N, all, or specific ones."""

    kind: str = "latest"
    count: int = 1
    versions: tuple[int, ...] = ()

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """'latest', 'latest:N', 'all', or 'specific:1,3'."""
        kind, _, arg = str(text).strip().partition(":")
        try:
            if kind == "latest" and int(arg or 1) >= 1:
                return cls("latest", int(arg or 1))
            if kind == "all" and not arg:
                return cls("all")
            versions = {int(v) for v in arg.split(",")} if kind == "specific" and arg else None
            if versions and min(versions) >= 0:  # a version folder is digits: never negative
                return cls("specific", versions=tuple(sorted(versions)))
        except ValueError:
            pass
        raise ConfigError(f"expected a version policy 'latest', 'latest:N', 'all' or "
                          f"'specific:V1,V2', found {text!r}")

    def select(self, available: list[int]) -> list[int]:
        """The versions to serve among the ones on disk."""
        ordered = sorted(available)
        if self.kind == "latest":
            return ordered[-self.count:]
        if self.kind == "all":
            return ordered
        return [v for v in ordered if v in self.versions]

    def __str__(self) -> str:
        if self.kind == "latest":
            return f"latest:{self.count}"
        return "all" if self.kind == "all" else "specific:" + ",".join(map(str, self.versions))


@dataclass
class LoadedVersion:
    """A served version: the model and its batcher."""

    model: ServedModel
    batcher: DynamicBatcher
    signature: tuple[int, int, int]  # the file's (inode, size, mtime) when loaded


@dataclass
class ModelEntry:
    """One model name: its served versions and what went wrong loading others."""

    name: str
    versions: dict[str, LoadedVersion] = field(default_factory=dict)
    default: str | None = None  # the highest served version, used when none is asked for
    failures: dict[str, tuple[tuple[int, int, int], str]] = field(default_factory=dict)
    unloaded: bool = False  # by the unload endpoint: polling leaves it alone until a load

    def publish(self, versions: dict[str, LoadedVersion]) -> None:
        """Make a new set of versions visible in one step."""
        self.versions = versions
        self.default = max(versions, key=int) if versions else None


def is_version(text: str) -> bool:
    """A version number: ASCII digits, short enough for an int64."""
    return text.isascii() and text.isdigit() and len(text) <= 18


def _signature(path: Path) -> tuple[int, int, int]:
    st = path.stat()
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _signatures(files: dict[str, Path]) -> dict[str, tuple[int, int, int]]:
    """version -> signature of each file still there (stat() runs off the event loop)."""
    sigs = {}
    for version, path in files.items():
        try:
            sigs[version] = _signature(path)
        except OSError:  # removed while we looked
            pass
    return sigs


class ModelRepository:
    """The models the server answers for, kept in step with the directory they come from."""

    def __init__(self, path: str | os.PathLike, metrics: ServerMetrics,
                 batching: BatchingConfig, policy: VersionPolicy = VersionPolicy(),
                 model_name: str | None = None,
                 per_model: dict[str, BatchingConfig] | None = None) -> None:
        self.path = Path(path)
        self.metrics, self.batching, self.policy = metrics, batching, policy
        self.per_model = per_model or {}
        self.models: dict[str, ModelEntry] = {}
        # one admin action at a time (load, unload, reload by polling, close): each reads the
        # disk and swaps versions, and two interleaved ones would publish a stale set
        self._lock = asyncio.Lock()
        # scans run on worker threads, and an index (which takes no _lock, so it answers
        # while a slow load runs) may scan beside a sync: the warn-once sets are shared
        self._scan_lock = threading.Lock()
        self._single: tuple[str, str] | None = None
        self._refused: set[Path] = set()  # links out of the repository, warned about once
        self.skipped: set[Path] = set()  # folders of invalid names, warned about once
        self._polled = False  # after the first sync, changed files must settle first
        self._seen: dict[str, dict[str, tuple[int, int, int]]] = {}  # at the last sync
        if not self.path.exists():
            raise ConfigError(f"expected a .nnf/.onnx model file or a model repository at "
                              f"'{self.path}', found nothing there")
        if self.path.is_file():
            self._single = self._single_identity(model_name)
        elif model_name is not None:
            raise ConfigError("--model-name applies to a single model file, found a directory")
        elif self.path.name in RESERVED_NAMES and self._is_model_dir(self.path):
            raise ConfigError(f"{self.path}: {check_name(self.path.name)}")

    def _single_identity(self, model_name: str | None) -> tuple[str, str]:
        """Name and version of a lone file: <model>/<version>/model.nnf names itself."""
        p = self.path
        if p.name in MODEL_FILES and is_version(p.parent.name) and p.parent.parent.name:
            name, version = p.parent.parent.name, str(int(p.parent.name))
        else:
            name, version = p.stem, "1"
        name = model_name or name
        problem = check_name(name)
        if problem is not None:
            raise ConfigError(problem + ("" if model_name else " (or pass --model-name)"))
        return name, version

    # -- what is on disk ---------------------------------------------------------------------
    def scan(self) -> dict[str, dict[str, Path]]:
        """model -> version -> file, for everything on disk inside the repository."""
        if self._single is not None:
            name, version = self._single
            return {name: {version: self.path}}
        found: dict[str, dict[str, Path]] = {}
        root = self.path.resolve()
        model_dirs = [self.path] if self._is_model_dir(self.path) else [
            d for d in sorted(self.path.iterdir())
            if d.is_dir() and self._allowed(d) and self._inside(d, root)]
        for d in model_dirs:
            versions = {str(int(v.name)): f for v in d.iterdir()
                        if is_version(v.name) and (f := model_file(v)) is not None
                        and self._inside(v, root) and self._inside(f, root)}
            if versions:
                found[d.name] = versions
        return found

    async def scan_off_loop(self) -> dict[str, dict[str, Path]]:
        """scan() on a worker thread: a slow or network disk must not stall the event loop."""
        def locked() -> dict[str, dict[str, Path]]:
            with self._scan_lock:
                return self.scan()
        return await asyncio.to_thread(locked)

    def _allowed(self, d: Path) -> bool:
        """Whether the folder's name may name a model; warns once about one that may not."""
        problem = check_name(d.name)
        if problem is None:
            return True
        if d.name.startswith(".") or not self._is_model_dir(d):  # .git, notes/: no models
            return False
        if d not in self.skipped:
            self.skipped.add(d)
            log.warning("model repository: skipping %s: %s", d, problem)
        return False

    def _inside(self, path: Path, root: Path) -> bool:
        """Whether path's real path lies in the repository; warns once about one that does not."""
        real = Path(os.path.realpath(path))
        if real.is_relative_to(root):
            self._refused.discard(path)  # a link fixed since: warn again should it go astray
            return True
        if path not in self._refused:
            self._refused.add(path)
            log.warning("model repository: skipping %s: it links to %s, outside the repository "
                        "%s", path, real, root)
        return False

    @staticmethod
    def _is_model_dir(d: Path) -> bool:
        try:
            return any(is_version(v.name) and model_file(v) is not None for v in d.iterdir())
        except OSError:  # unreadable, or removed while we looked
            return False

    # -- answering ---------------------------------------------------------------------------
    def get(self, name: str, version: str | None = None) -> LoadedVersion:
        """The served version (the default one when version is None), or a 404/503."""
        entry = self.models.get(name)
        if entry is None:
            known = ", ".join(sorted(self.models)) or "none"
            raise NotFoundError(f"unknown model {name!r:.80}; models served: {known}")
        if entry.unloaded:
            raise NotFoundError(f"model {name!r} is unloaded; an operator can load it with "
                                f"POST /v2/repository/models/{name}/load")
        if version is None or version == "":
            if entry.default is None:
                raise UnavailableError(f"model {name!r} has no version ready")
            return entry.versions[entry.default]
        if not is_version(version):
            raise InvalidInputError(f"expected a version number, found {version!r:.40}")
        loaded = entry.versions.get(str(int(version)))
        if loaded is None:
            served = ", ".join(sorted(entry.versions, key=int)) or "none"
            raise NotFoundError(f"model {name!r} has no version {version!r:.40} ready; "
                                f"versions served: {served}")
        return loaded

    def only_model(self) -> str:
        """The name of the one served model (for POST /predict)."""
        if len(self.models) != 1:
            found = ", ".join(sorted(self.models)) or "none"
            raise NotFoundError(f"POST /predict needs exactly one model, found {found}; use "
                                f"POST /v1/models/<name>:predict")
        return next(iter(self.models))

    def ready(self) -> bool:
        """Every known model has a version to serve."""
        return bool(self.models) and all(e.versions or e.unloaded for e in self.models.values())

    async def index(self) -> list[dict[str, Any]]:
        """Triton's repository index: every version on disk with its state."""
        on_disk = await self.scan_off_loop()
        # from here on no await: the rows are one consistent picture of self.models
        rows = []
        for name in sorted(set(on_disk) | set(self.models)):
            entry = self.models.get(name)
            files = on_disk.get(name, {})
            wanted = {str(v) for v in self.policy.select([int(v) for v in files])}
            for version in sorted(set(files) | set(entry.versions if entry else ()), key=int):
                row: dict[str, Any] = {"name": name, "version": version}
                if entry and version in entry.versions:
                    row["state"] = "READY"
                    failure = entry.failures.get(version)
                    if failure is not None:  # its new file failed: the loaded copy serves on
                        row["reason"] = (f"serving the copy loaded before; the new file "
                                         f"failed to load: {failure[1]}")
                elif entry and version in entry.failures:
                    row.update(state="UNAVAILABLE", reason=entry.failures[version][1])
                elif entry and entry.unloaded:
                    row.update(state="UNAVAILABLE", reason="model unloaded")
                elif version in wanted:
                    row.update(state="LOADING", reason="not loaded yet")
                else:
                    row.update(state="UNAVAILABLE",
                               reason=f"not served (version policy {self.policy})")
                rows.append(row)
        return rows

    # -- loading -----------------------------------------------------------------------------
    async def sync(self, only: str | None = None, explicit: bool = False,
                   log_failures: bool = True) -> list[str]:
        """Load new or changed versions, drop the ones the policy no longer serves.

        Returns the load errors. `explicit` (the load endpoint) also brings back unloaded
        models and retries failed versions whose file did not change. `log_failures=False`
        leaves reporting the errors to the caller (startup: one line when nothing loads).
        """
        async with self._lock:
            on_disk = await self.scan_off_loop()
            errors: list[str] = []
            names = [only] if only is not None else sorted(set(on_disk) | set(self.models))
            for name in names:
                errors += await self._sync_model(name, on_disk.get(name, {}), explicit,
                                                 log_failures)
            self._polled = True
            return errors

    async def load(self, name: str) -> list[str]:
        """Load (or reload) one model from the disk, as the load endpoint does; its errors."""
        async with self._lock:  # the scan too: an unload or a poll must not come in between
            on_disk = await self.scan_off_loop()
            if name not in on_disk:
                raise NotFoundError(f"the repository has no model {name!r} (expected "
                                    f"<repo>/{name}/<version>/model.nnf)")
            return await self._sync_model(name, on_disk[name], explicit=True)

    async def _sync_model(self, name: str, files: dict[str, Path], explicit: bool,
                          log_failures: bool = True) -> list[str]:
        created = name not in self.models
        entry = self.models.setdefault(name, ModelEntry(name))
        if entry.unloaded and not explicit:
            return []
        entry.unloaded = False
        entry.failures = {v: f for v, f in entry.failures.items() if v in files}
        retry = set(files) if explicit else set()  # the load endpoint retries broken files
        # polling waits for a changed file to settle (same signature as at the last sync):
        # one still being copied would fail to load, and log an error on every poll
        settle = self._polled and not explicit
        seen = self._seen.get(name, {})
        errors: list[str] = []
        while True:
            sigs = await asyncio.to_thread(_signatures, files)
            changed = {v for v in sigs if v not in entry.versions
                       or entry.versions[v].signature != sigs[v]}
            # a file that failed to load, unchanged since, is not tried again (but on load)
            broken = {v for v in changed if v not in retry
                      and entry.failures.get(v, (None,))[0] == sigs[v]}
            unsettled = {v for v in changed if settle and seen.get(v) != sigs[v]}
            # a loaded version stays a candidate whatever its file does now: its loaded copy
            # keeps serving; the policy picks among it and the files that can be loaded
            usable = [v for v in sigs if v in entry.versions or v not in broken | unsettled]
            wanted = [str(v) for v in self.policy.select([int(v) for v in usable])]
            todo = [v for v in wanted if v in changed and v not in broken | unsettled]
            if not todo:
                break
            for version in todo:
                retry.discard(version)
                loaded = await self._load_version(name, version, files[version], sigs[version],
                                                  entry, log_failures)
                if loaded is None:
                    errors.append(f"{name} version {version}: {entry.failures[version][1]}")
                    continue
                old = entry.versions.get(version)
                entry.publish({**entry.versions, version: loaded})  # visible from now on
                if old is not None:
                    await old.batcher.close()  # requests holding it finish on it
        self._seen[name] = sigs
        for version in [v for v in entry.versions if v not in wanted]:
            old = entry.versions[version]
            entry.publish({k: v for k, v in entry.versions.items() if k != version})
            log.info("model %s version %s unloaded", name, version)
            await old.batcher.close()
        if not entry.versions and not entry.failures and (not files or created and settle):
            del self.models[name]  # gone, or new and still settling: not known (nor unready)
        if not files:
            self._seen.pop(name, None)
        return errors

    async def _load_version(self, name: str, version: str, path: Path,
                            sig: tuple[int, int, int], entry: ModelEntry,
                            log_failures: bool = True) -> LoadedVersion | None:
        cfg = self.per_model.get(name, self.batching)
        loop = asyncio.get_running_loop()
        try:
            model = await loop.run_in_executor(None, timed_load, name, version, path,
                                               cfg.max_batch_size, cfg.threads,
                                               cfg.max_sample_bytes)
        except Exception as exc:  # noqa: BLE001 - a broken file must not stop the server
            reason = " ".join(str(exc).split()) or type(exc).__name__
            entry.failures[version] = (sig, reason)
            self.metrics.load_failures[name] = self.metrics.load_failures.get(name, 0) + 1
            if log_failures:
                self._log_failure(name, version, path, sig, reason, entry)
            return None
        entry.failures.pop(version, None)
        metrics = self.metrics.model(name, version)
        metrics.load_seconds = model.load_seconds
        threaded = cfg.compute == "thread" or (cfg.compute == "auto" and model.slow)
        batcher = DynamicBatcher(model.compute, cfg, metrics, threaded, f"{name}-{version}")
        log.info("model %s version %s loaded from %s in %.3f s (batches on %s)", name, version,
                 path, model.load_seconds, "a worker thread" if threaded else "the event loop")
        return LoadedVersion(model, batcher, sig)

    @staticmethod
    def _log_failure(name: str, version: str, path: Path, sig: tuple[int, int, int],
                     reason: str, entry: ModelEntry) -> None:
        """One log line for a failed load: info while the file still changes (a copy in
        progress: tried again once it settles), a warning while a loaded copy serves on."""
        try:
            still_changing = _signature(path) != sig
        except OSError:
            still_changing = True
        if still_changing:
            log.info("model %s version %s: %s changed while it was loading (%s); trying again "
                     "once it stops changing", name, version, path, reason)
        elif version in entry.versions:
            log.warning("model %s: keeping the loaded version %s: the new file failed to load "
                        "(%s)", name, version, reason)
        else:
            log.error("model %s version %s failed to load from %s: %s", name, version, path,
                      reason)

    async def unload(self, name: str) -> None:
        """Stop serving every version of a model (until it is loaded again)."""
        async with self._lock:
            entry = self.models.get(name)
            if entry is None:
                raise NotFoundError(f"unknown model {name!r}")
            old = list(entry.versions.values())
            entry.publish({})
            entry.unloaded = True
            for loaded in old:
                await loaded.batcher.close()

    async def close(self) -> None:
        """Drain and stop every batcher."""
        async with self._lock:
            for entry in self.models.values():
                old = list(entry.versions.values())
                entry.publish({})
                for loaded in old:
                    await loaded.batcher.close()

    async def poll(self, interval: float) -> None:
        """Re-sync with the disk every `interval` seconds (runs until cancelled)."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.sync()
            except Exception:  # noqa: BLE001 - polling must survive a bad moment on disk
                log.exception("polling the model repository failed")
