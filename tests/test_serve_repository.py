"""The repository under polling, driven by `sync()` directly: a loaded version outlives a broken
or half-copied new file, a file still being written is not loaded (nor logged as an error),
and folders with names no model may have are named in a warning."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Iterator

import pytest

import nnforge as nf
from nnforge import nn
from nnforge.errors import ConfigError
from nnforge.serve.batcher import BatchingConfig
from nnforge.serve.config import ServeConfig
from nnforge.serve.metrics import ServerMetrics
from nnforge.serve.repository import ModelRepository
from nnforge.serve.server import load_repository


def save(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nf.manual_seed(seed)
    nf.save(nn.Sequential(nn.Linear(3, 4)), path, task="multiclass")
    return path


def overwrite(path: Path, data: bytes) -> None:
    """Write over a file in place (a slow `cp`): its signature changes, its inode does not."""
    with open(path, "r+b") as f:
        f.truncate(0)
        f.write(data)
    st = path.stat()  # a later mtime even where the clock ticks coarsely
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))


@pytest.fixture
def logged() -> Iterator[list[logging.LogRecord]]:
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = records.append  # type: ignore[method-assign]
    logger = logging.getLogger("nnforge.serve")
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield records
    logger.removeHandler(handler)
    logger.setLevel(old)


def lines(records: list[logging.LogRecord], level: int) -> list[str]:
    return [r.getMessage() for r in records if r.levelno == level]


def repository(path: Path) -> ModelRepository:
    return ModelRepository(path, ServerMetrics(), BatchingConfig(max_batch_size=2))


def test_a_broken_new_file_keeps_the_loaded_copy_of_its_version(
        tmp_path: Path, logged: list[logging.LogRecord]) -> None:
    root = tmp_path / "repo"
    save(root / "digits" / "3" / "model.nnf", 3)
    v4 = save(root / "digits" / "4" / "model.nnf", 4)

    async def main() -> None:
        repo = repository(root)
        try:
            await repo.sync()
            loaded = repo.get("digits")
            assert loaded.model.version == "4"
            overwrite(v4, v4.read_bytes()[:300])  # a copy cut short
            for _ in range(4):
                await repo.sync()
            # the loaded copy of version 4 serves on: not version 3, not a 404
            assert repo.get("digits") is loaded and repo.get("digits", "4") is loaded
            assert sorted(repo.models["digits"].versions) == ["4"]
            row = next(r for r in await repo.index() if r["version"] == "4")
            assert row["state"] == "READY" and "failed to load" in row["reason"]
            kept = [m for m in lines(logged, logging.WARNING) if "keeping the loaded" in m]
            assert kept == [kept[0]] and "version 4: the new file failed to load (" in kept[0]
            assert not lines(logged, logging.ERROR)
            # the load endpoint reports the broken file and keeps the copy too
            errors = await repo.load("digits")
            assert errors and "digits version 4" in errors[0]
            assert repo.get("digits") is loaded
            save(v4, 5)  # a good file again: loaded once it has settled
            for _ in range(2):
                await repo.sync()
            fresh = repo.get("digits")
            assert fresh is not loaded and fresh.model.version == "4"
            row = next(r for r in await repo.index() if r["version"] == "4")
            assert row == {"name": "digits", "version": "4", "state": "READY"}
        finally:
            await repo.close()
    asyncio.run(main())


def test_a_single_file_server_keeps_serving_when_the_file_breaks(tmp_path: Path) -> None:
    single = save(tmp_path / "single.nnf", 1)

    async def main() -> None:
        repo = repository(single)
        try:
            await repo.sync()
            loaded = repo.get("single")
            overwrite(single, b"broken\n")
            for _ in range(3):
                await repo.sync()
            assert repo.ready() and repo.get("single") is loaded
        finally:
            await repo.close()
    asyncio.run(main())


def test_a_file_still_being_written_is_loaded_once_it_settles(
        tmp_path: Path, logged: list[logging.LogRecord]) -> None:
    root = tmp_path / "repo"
    save(root / "m" / "1" / "model.nnf", 1)
    good = save(tmp_path / "staged.nnf", 2).read_bytes()
    target = root / "m" / "2" / "model.nnf"
    target.parent.mkdir()

    async def main() -> None:
        repo = repository(root)
        try:
            await repo.sync()
            target.write_bytes(b"")
            for end in range(1000, len(good), 1000):  # one chunk more before every poll
                overwrite(target, good[:end])
                await repo.sync()
                assert repo.get("m").model.version == "1"
            overwrite(target, good)
            await repo.sync()  # changed since the last poll: wait
            await repo.sync()  # the same as at the last poll: load
            assert repo.get("m").model.version == "2"
            assert repo.metrics.load_failures == {}
            assert not lines(logged, logging.ERROR) + lines(logged, logging.WARNING)
            # a file that is broken and stays so is one error, not one a poll
            broken = root / "m" / "3" / "model.nnf"
            broken.parent.mkdir()
            broken.write_bytes(b"PK\x03\x04 not a model")
            for _ in range(5):
                await repo.sync()
            errors = lines(logged, logging.ERROR)
            assert len(errors) == 1 and "m version 3 failed to load" in errors[0]
            assert repo.get("m").model.version == "2"
        finally:
            await repo.close()
    asyncio.run(main())


def test_folders_with_invalid_model_names_are_named_once(
        tmp_path: Path, logged: list[logging.LogRecord]) -> None:
    root = tmp_path / "repo"
    for name in ("模型", "my model"):
        save(root / name / "1" / "model.nnf", 1)
    (root / ".git" / "1").mkdir(parents=True)  # no model folder: no warning
    (root / "notes here").mkdir()

    async def main() -> None:
        repo = repository(root)
        for _ in range(3):
            await repo.sync()
        assert repo.models == {}
    asyncio.run(main())
    warned = lines(logged, logging.WARNING)
    assert len(warned) == 2, warned
    for name in ("模型", "my model"):
        (line,) = [w for w in warned if f"skipping {root / name}: " in w]
        assert "expected a model name of up to 128 letters" in line
    with pytest.raises(ConfigError) as err:
        asyncio.run(load_repository(ServeConfig(path=str(root)), ServerMetrics()))
    assert "found no models" in str(err.value) and "skipped '模型'" in str(err.value) \
        and "skipped 'my model'" in str(err.value)
