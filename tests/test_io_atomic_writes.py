"""Atomic model-file writes: leftovers of killed saves are cleaned up, live ones never; unusable
targets fail with one clear error."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nnforge import nn
from nnforge.errors import ConfigError, ModelFileError
from nnforge.io import atomic, load, save, save_checkpoint
from nnforge.io.atomic import STALE_AFTER_S, temp_prefix


def _model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 3))


def _dead_pid() -> int:
    """The PID of a child process that has exited and been reaped (so it names no process)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def _temp(target: Path, pid: int, age_s: float = STALE_AFTER_S + 60, tag: str = "abc_12xy",
          prefix: str | None = None) -> Path:
    """A fake temp file of a save of `target` by `pid`, last written `age_s` ago."""
    p = target.parent / f"{prefix or temp_prefix(target, pid)}{tag}.tmp"
    p.write_bytes(b"PK" + b"\0" * 1000)
    then = time.time() - age_s
    os.utime(p, (then, then))
    return p


def _temps(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_a_save_removes_its_targets_leftovers_from_dead_saves_only(tmp_path):
    target, dead = tmp_path / "m.nnf", _dead_pid()
    stale = [_temp(target, dead), _temp(target, dead, tag="zz9_0000")]
    keep = [
        _temp(target, os.getpid()),  # a save of this (live) process, however old
        # written just now: a PID that looks gone may be another namespace's live writer
        _temp(target, dead, age_s=0, tag="new_0000"),
        _temp(tmp_path / "other.nnf", dead),  # another target's
        _temp(tmp_path / "m.nnf.1", dead),  # a target whose name starts alike
        _temp(target, dead, prefix=".m.nnf."),  # an older nnforge's name: no PID, cannot tell
        _temp(target, dead, prefix=f".m.nnf.{dead}-00000000."),  # another machine's
    ]
    save(_model(), target)
    assert not any(p.exists() for p in stale)
    assert _temps(tmp_path) == sorted(p.name for p in keep)
    assert load(target).num_parameters() == 15


def test_a_checkpoint_save_cleans_up_too(tmp_path):
    target = tmp_path / "ck.nnf"
    stale = _temp(target, _dead_pid())
    save_checkpoint(target, _model(), trainer_state={"epochs_done": 1})
    assert not stale.exists() and _temps(tmp_path) == []


def test_without_a_pid_probe_nothing_is_removed(tmp_path, monkeypatch):
    # on Windows os.kill(pid, 0) sends CTRL_C_EVENT: no process can be told dead there
    monkeypatch.setattr(atomic, "_CAN_PROBE_PIDS", False)
    target = tmp_path / "m.nnf"
    stale = _temp(target, _dead_pid())
    save(_model(), target)
    assert stale.exists()


def test_a_saves_temp_file_names_its_process(tmp_path, monkeypatch):
    target, seen = tmp_path / "m.nnf", []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        seen.extend(_temps(tmp_path))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    save(_model(), target)
    assert len(seen) == 1 and seen[0].startswith(temp_prefix(target, os.getpid()))
    assert _temps(tmp_path) == []


@pytest.mark.parametrize("make, target, words", [
    (lambda d: (d / "file.nnf").write_text("x"), "file.nnf/x.nnf",
     "expected '.*file.nnf' to be a directory, found a file"),
    (lambda d: (d / "file.nnf").write_text("x"), "file.nnf/a/b/x.nnf",
     "expected '.*file.nnf' to be a directory, found a file"),
    (lambda d: (d / "taken").mkdir(), "taken", "expected a file, found a directory"),
    (lambda d: None, "new/", "expected a file name, found a directory path"),
    (lambda d: os.mkfifo(d / "pipe"), "pipe", "expected a regular file, found a pipe"),
])
def test_unusable_targets_say_what_was_expected_and_found(tmp_path, make, target, words):
    make(tmp_path)
    path = str(tmp_path / target) + ("/" if target.endswith("/") else "")
    with pytest.raises(ModelFileError, match=f"cannot write model file '.*': {words}"):
        save(_model(), path)
    assert _temps(tmp_path) == []


@pytest.mark.parametrize("path", ["", "  "])
def test_an_empty_path_is_a_config_error(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # where a blank-named file would land if it were written
    with pytest.raises(ConfigError, match="expected a model file path, found an empty string"):
        save(_model(), path)


def test_a_read_only_target_is_refused_and_kept(tmp_path):
    # judged by the mode bits (tests may run as root, whom permissions do not stop)
    target = tmp_path / "m.nnf"
    save(_model(), target)
    before = target.read_bytes()
    target.chmod(0o444)
    with pytest.raises(ModelFileError, match="expected a writable file, found a read-only one "
                                             r"\(mode 444\); make it writable"):
        save(nn.Sequential(nn.Linear(4, 2)), target)
    assert target.read_bytes() == before and stat.S_IMODE(target.stat().st_mode) == 0o444
    target.chmod(0o644)  # made writable again, it is replaced as before
    save(nn.Sequential(nn.Linear(4, 2)), target)
    assert load(target).num_parameters() == 10


# -- every writer shares the one atomic write (nnforge.io.atomic) ------------------------------
def test_a_save_through_a_symbolic_link_replaces_the_file_it_points_to(tmp_path):
    real, link = tmp_path / "models" / "v1.nnf", tmp_path / "current.nnf"
    save(_model(), real)
    link.symlink_to(real)
    save(nn.Sequential(nn.Linear(4, 2)), link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert load(real).num_parameters() == 10 and _temps(real.parent) == []


def test_an_onnx_export_writes_through_named_temps_and_cleans_dead_ones(tmp_path, monkeypatch):
    from nnforge.onnx import export  # noqa: PLC0415 - needs the onnx extra

    target, seen = tmp_path / "m.onnx", []
    stale = _temp(target, _dead_pid())
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        seen.extend(_temps(tmp_path))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    export(_model(), target, input_shape=(1, 4))
    assert not stale.exists() and _temps(tmp_path) == []
    assert [n for n in seen if n.startswith(temp_prefix(target, os.getpid()))] == seen != []
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~_umask()  # shareable, as a save


def test_history_logs_of_two_trainers_in_one_folder_do_not_share_a_temp_file(tmp_path):
    import numpy as np  # noqa: PLC0415

    from nnforge import Trainer  # noqa: PLC0415
    from nnforge.train.callbacks import HistoryLogger  # noqa: PLC0415

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((32, 4)).astype(np.float32), rng.integers(0, 3, 32)
    real = tmp_path / "logs" / "run.csv"
    real.parent.mkdir()
    (tmp_path / "latest.csv").symlink_to(real)
    stale = _temp(real, _dead_pid())
    for path in (tmp_path / "latest.csv", tmp_path / "run.json"):
        Trainer(_model(), seed=0, verbose=0).fit(X, y, epochs=2, callbacks=[HistoryLogger(path)])
    assert (tmp_path / "latest.csv").is_symlink() and not stale.exists()
    assert real.read_text().splitlines()[0].startswith("epoch,loss")
    assert len(real.read_text().splitlines()) == 3 and (tmp_path / "run.json").is_file()
    assert _temps(tmp_path) == [] and _temps(real.parent) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
