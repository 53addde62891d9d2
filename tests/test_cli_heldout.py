"""`nnforge evaluate` on the data the model was trained from scores the held-out rows of the
training split train recorded, and says which rows it scored. Commands run in-process."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli as run

import nnforge as nf
from nnforge import nn
from nnforge.cli import main
from nnforge.io import read_manifest

HELD_OUT = ("scoring the 89 held-out test rows of the training split (seed 0, test_size 0.2); "
            "--test-size 0 scores every row")
MAY_INCLUDE = "(this includes any rows the model was trained on)"


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A diabetes model trained by `nnforge train` (one short epoch), one saved by the API,
    and a labeled CSV file with a model trained on it."""
    d = tmp_path_factory.mktemp("cli_heldout")
    assert main(["train", "--dataset", "diabetes", "--epochs", "1", "--hidden", "4", "-q",
                 "-o", str(d / "d.nnf")]) == 0
    nf.save(nn.Sequential(nn.Linear(10, 1)), d / "api.nnf", task="regression")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    rows = [f"{a:.3f},{b:.3f},{c:.3f},{'up' if a > b else 'down'}" for a, b, c in x]
    (d / "f.csv").write_text("a,b,c,kind\n" + "\n".join(rows) + "\n")
    assert main(["train", "--data", str(d / "f.csv"), "--epochs", "1", "--hidden", "4", "-q",
                 "-o", str(d / "f.nnf")]) == 0
    return d


def test_the_training_data_scores_its_held_out_rows(work: Path, capsys) -> None:
    """Scored all 442 rows, the 353 training rows among them, and said nothing about it."""
    record = read_manifest(work / "d.nnf")["extra"]["trained_with"]
    assert record["source"] == "dataset" and record["rows"] == 442 and record["test_rows"] == 89
    code, out, err = run(capsys, "evaluate", work / "d.nnf", "--dataset", "diabetes")
    assert code == 0, err
    assert out.splitlines()[0] == HELD_OUT and "diabetes: 89 samples" in out
    code, out, err = run(capsys, "evaluate", work / "d.nnf", "--dataset", "diabetes", "--json")
    doc = json.loads(out)
    assert doc["samples"] == 89 and doc["rows"]["of"] == 442
    assert doc["rows"]["which"] == "held_out"
    saved = read_manifest(work / "d.nnf")["metrics"]  # train's own test metrics
    for name, value in saved.items():
        assert doc["metrics"][name] == pytest.approx(value, rel=1e-5, abs=1e-6)
    code, out, err = run(capsys, "evaluate", work / "d.nnf", "--dataset", "diabetes",
                         "--test-size", "0")
    assert code == 0 and "diabetes: 442 samples" in out and "scoring" not in out, err


def test_a_file_is_recognized_by_its_bytes(work: Path, capsys) -> None:
    assert "data_sha256" in read_manifest(work / "f.nnf")["extra"]["trained_with"]
    shutil.copy(work / "f.csv", work / "renamed.csv")  # same bytes: still the training data
    for name in ("f.csv", "renamed.csv"):
        code, out, err = run(capsys, "evaluate", work / "f.nnf", "--data", work / name,
                             "--json")
        assert code == 0 and json.loads(out)["rows"]["which"] == "held_out", err
        assert json.loads(out)["samples"] == 12
    lines = (work / "f.csv").read_text().splitlines()
    lines[1] = lines[1].replace("-", "", 1) if "-" in lines[1] else "9" + lines[1]
    (work / "edited.csv").write_text("\n".join(lines) + "\n")  # other data: every row
    code, out, err = run(capsys, "evaluate", work / "f.nnf", "--data", work / "edited.csv")
    assert code == 0 and "edited: 60 samples" in out and "scoring" not in out, err


def test_other_data_and_unrecorded_models_score_every_row(work: Path, capsys) -> None:
    code, out, err = run(capsys, "evaluate", work / "d.nnf", "--dataset", "diabetes",
                         "--test-size", "0.5", "--seed", "3")
    assert code == 0 and "diabetes: 221 samples" in out and "scoring" not in out, err
    code, out, err = run(capsys, "evaluate", work / "api.nnf", "--dataset", "diabetes")
    assert code == 0, err
    assert out.splitlines()[0] == f"scoring all 442 rows {MAY_INCLUDE}"
    assert "diabetes: 442 samples" in out


def test_report_states_the_rows_scored(work: Path, capsys) -> None:
    code, out, err = run(capsys, "evaluate", work / "d.nnf", "--dataset", "diabetes",
                         "--report", work / "rep")
    assert code == 0, err
    md = (work / "rep" / "report.md").read_text()
    assert ("| rows scored | 89 of 442: the held-out test rows of the training split (seed 0, "
            "test_size 0.2) |") in md
