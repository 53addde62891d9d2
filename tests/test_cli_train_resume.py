"""`nnforge train --checkpoint/--resume`: a resumed run ends bit for bit as the uninterrupted one;
Ctrl-C says what was saved and how to go on."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import run_cli as run

import nnforge as nf
from nnforge.io import checkpoint
from nnforge.train import Trainer

IRIS = ("--dataset", "iris", "--hidden", "8", "--dropout", "0.2", "--early-stopping", "5", "-q")
DIABETES = ("--dataset", "diabetes", "--hidden", "8", "--batch-size", "64", "-q")


def _weights(path: Path) -> dict[str, np.ndarray]:
    return nf.load(path).state_dict()


def _same(a: Path, b: Path) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


def _train(capsys: Any, *args: object) -> str:
    code, out, err = run(capsys, "train", *args)
    assert code == 0, err
    return out


@pytest.mark.parametrize("data", [IRIS, DIABETES], ids=["classes", "regression"])
def test_a_resumed_run_ends_bit_for_bit_as_the_uninterrupted_one(tmp_path, capsys, data):
    ck = tmp_path / "ck.nnf"
    _train(capsys, *data, "--epochs", "2", "--checkpoint", ck, "-o", tmp_path / "two.nnf")
    assert ck.is_file()
    _train(capsys, *data, "--epochs", "4", "--checkpoint", ck, "--resume", ck,
           "-o", tmp_path / "resumed.nnf")
    _train(capsys, *data, "--epochs", "4", "-o", tmp_path / "whole.nnf")
    assert _same(tmp_path / "resumed.nnf", tmp_path / "whole.nnf")
    assert not _same(tmp_path / "two.nnf", tmp_path / "whole.nnf")  # it did train on
    trained = nf.io.read_manifest(tmp_path / "resumed.nnf")["extra"]["trained_with"]
    assert trained["epochs_run"] == 4 and trained["resumed_from"] == str(ck)


def _interrupt_in_epoch(monkeypatch: Any, epoch: int) -> None:
    """Ctrl-C while validating that epoch (1-based), as a KeyboardInterrupt, not a signal."""
    real, calls = Trainer.evaluate, []

    def evaluate(self: Trainer, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == epoch:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "evaluate", evaluate)


def test_ctrl_c_with_a_checkpoint_says_what_was_saved_and_resuming_finishes_the_run(
        tmp_path, capsys, monkeypatch):
    ck = tmp_path / "ck.nnf"
    args = (*IRIS, "--epochs", "4", "--checkpoint", ck, "-o", tmp_path / "m.nnf")
    _interrupt_in_epoch(monkeypatch, 3)
    code, _, err = run(capsys, "train", *args)
    monkeypatch.undo()
    assert code == 130 and not (tmp_path / "m.nnf").exists()
    assert err == (f"nnforge: error: interrupted: after epoch 2 of 4; saved a checkpoint of "
                   f"epoch 2 to {ck}: rerun the same command with --resume {ck} to continue\n")
    _train(capsys, *args, "--resume", ck)  # the line's advice, taken
    _train(capsys, *IRIS, "--epochs", "4", "-o", tmp_path / "whole.nnf")
    assert _same(tmp_path / "m.nnf", tmp_path / "whole.nnf")


def test_ctrl_c_while_the_checkpoint_is_written_leaves_one_that_resumes_exactly(
        tmp_path, capsys, monkeypatch):
    ck, real, calls = tmp_path / "ck.nnf", checkpoint.write_archive, []

    def write_archive(*args: Any) -> None:
        calls.append(1)
        if len(calls) == 2:  # epoch 2's checkpoint, cut short: the file still holds epoch 1
            raise KeyboardInterrupt
        real(*args)

    args = (*IRIS, "--epochs", "4", "--checkpoint", ck, "-o", tmp_path / "m.nnf")
    monkeypatch.setattr(checkpoint, "write_archive", write_archive)
    code, _, err = run(capsys, "train", *args)
    monkeypatch.undo()
    # epoch 2 counts as done or as undone (the trainer decides): the line and the file agree
    done = nf.io.load_checkpoint(ck).trainer_state["epochs_done"]
    assert code == 130 and done in (1, 2)
    assert f"after epoch {done} of 4; saved a checkpoint of epoch {done} to {ck}" in err
    _train(capsys, *args, "--resume", ck)
    _train(capsys, *IRIS, "--epochs", "4", "-o", tmp_path / "whole.nnf")
    assert _same(tmp_path / "m.nnf", tmp_path / "whole.nnf")


def test_ctrl_c_without_a_checkpoint_says_nothing_was_saved(tmp_path, capsys, monkeypatch):
    _interrupt_in_epoch(monkeypatch, 2)
    code, _, err = run(capsys, "train", *IRIS, "--epochs", "4", "-o", tmp_path / "m.nnf")
    assert code == 130 and list(tmp_path.iterdir()) == []
    assert err == ("nnforge: error: interrupted: after epoch 1 of 4; nothing was saved (pass "
                   "--checkpoint FILE to save a resumable checkpoint every epoch)\n")


def test_resume_refuses_a_run_with_other_settings(tmp_path, capsys):
    ck = tmp_path / "ck.nnf"
    _train(capsys, *IRIS, "--epochs", "2", "--checkpoint", ck, "-o", tmp_path / "m.nnf")
    cases = [
        (("--lr", "0.01"), "found --lr 0.01 (the checkpoint's: 0.001); only --epochs may change"),
        (("--seed", "3"), "found --seed 3 (the checkpoint's: 0)"),
        (("--dataset", "wine"), 'found --dataset "wine" (the checkpoint\'s: "iris")'),
    ]
    for extra, words in cases:
        code, _, err = run(capsys, "train", *IRIS, "--epochs", "4", "--resume", ck, *extra,
                           "-o", tmp_path / "r.nnf")
        assert code == 1 and words in err and err.count("\n") == 1, err
        assert f"--resume {ck}: expected the settings its run was trained with" in err
    code, _, err = run(capsys, "train", *IRIS, "--epochs", "1", "--resume", ck)
    assert code == 1 and "expected --epochs of at least 2 (the epochs it has run), found 1" in err


def test_resume_refuses_an_edited_data_file(tmp_path, capsys):
    data, ck = tmp_path / "d.csv", tmp_path / "ck.nnf"
    rows = nf.data.load_dataset("iris")
    lines = [",".join(f"{v:g}" for v in x) + f",{t}" for x, t in zip(rows.X, rows.y)]
    data.write_text("\n".join(lines) + "\n")
    args = ("--data", data, "--hidden", "8", "-q", "-o", tmp_path / "m.nnf")
    _train(capsys, *args, "--epochs", "1", "--checkpoint", ck)
    data.write_text("\n".join(lines[::-1]) + "\n")
    code, _, err = run(capsys, "train", *args, "--epochs", "2", "--resume", ck)
    assert code == 1 and f"found other data (the bytes of '{data}' or its labels differ)" in err


@pytest.mark.parametrize("make, words", [
    (lambda p: None, "expected a checkpoint at '{p}' (--resume), found no such file"),
    (lambda p: nf.save(nf.nn.Sequential(nf.nn.Linear(4, 3)), p),
     "expected a checkpoint written by 'nnforge train --checkpoint' at '{p}' (--resume), "
     "found a model file without its training run"),
])
def test_resume_needs_a_train_checkpoint(tmp_path, capsys, make, words):
    p = tmp_path / "x.nnf"
    make(p)
    code, _, err = run(capsys, "train", *IRIS, "--resume", p, "-o", tmp_path / "m.nnf")
    assert code == 1 and err == f"nnforge: error: {words.format(p=p)}\n"


def test_checkpoint_and_output_must_differ(tmp_path, capsys):
    same = tmp_path / "m.nnf"
    code, _, err = run(capsys, "train", *IRIS, "--checkpoint", same, "-o", same)
    assert code == 2 and "expected --checkpoint to differ from the --output file" in err


def test_checkpoint_and_resume_come_from_a_config_file_too(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {"dataset": "iris", "hidden": [8], "epochs": 2, "quiet": True,
              "checkpoint": "ck.nnf", "output": "m.nnf"}
    Path("a.json").write_text(json.dumps(config))
    Path("b.json").write_text(json.dumps({**config, "epochs": 3, "resume": "ck.nnf"}))
    _train(capsys, "--config", "a.json")
    _train(capsys, "--config", "b.json")
    assert nf.io.load_checkpoint("ck.nnf").trainer_state["epochs_done"] == 3
