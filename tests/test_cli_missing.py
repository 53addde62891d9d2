"""`nnforge train --fill-missing`: CSV files with empty cells, end to end (train, evaluate,
predict, info), and the messages for a model that does not fill them. Run in-process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli as run

from nnforge.io import read_manifest


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 labeled rows (class: a > b) with some empty and NA cells, and the same without."""
    d = tmp_path_factory.mktemp("cli_missing")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 3))
    kind = np.where(x[:, 0] > x[:, 1], "up", "down")
    cells = [[f"{v:.3f}" for v in row] for row in x]
    full = ["a,b,c,kind"] + [",".join([*r, k]) for r, k in zip(cells, kind)]
    (d / "full.csv").write_text("\n".join(full) + "\n")
    for i in range(0, 60, 7):
        cells[i][2] = ""
    cells[3][1] = "NA"
    gaps = ["a,b,c,kind"] + [",".join([*r, k]) for r, k in zip(cells, kind)]
    (d / "gaps.csv").write_text("\n".join(gaps) + "\n")
    (d / "gaps_unlabeled.csv").write_text("\n".join(line.rsplit(",", 1)[0] for line in gaps))
    return d


def test_train_evaluate_predict_info_with_empty_cells(files: Path, tmp_path: Path,
                                                      capsys) -> None:
    model = tmp_path / "m.nnf"
    code, _, err = run(capsys, "train", "--data", files / "gaps.csv", "--label-column", "kind",
                       "--fill-missing", "median", "--epochs", 3, "--hidden", 8, "-q",
                       "-o", model)
    assert code == 0, err
    steps = read_manifest(model)["preprocessing"]
    assert [s["type"] for s in steps] == ["impute", "standardize"]  # filled, then scaled
    assert steps[0]["strategy"] == "median"
    code, out, err = run(capsys, "evaluate", model, "--data", files / "gaps.csv", "--json")
    assert code == 0 and json.loads(out)["samples"] == 12, err  # the held-out rows
    code, out, err = run(capsys, "evaluate", model, "--data", files / "gaps.csv",
                         "--test-size", 0, "--json")
    assert code == 0 and json.loads(out)["samples"] == 60, err
    code, out, err = run(capsys, "predict", model, "--input", files / "gaps_unlabeled.csv",
                         "--batch-size", 16)
    assert code == 0 and len(out.splitlines()) == 61, err
    code, out, _ = run(capsys, "info", model)
    assert code == 0 and "impute (median), standardize" in out


def test_without_fill_missing_empty_cells_are_refused_with_the_way_out(files: Path,
                                                                       tmp_path: Path,
                                                                       capsys) -> None:
    code, _, err = run(capsys, "train", "--data", files / "gaps.csv", "--label-column", "kind",
                       "-o", tmp_path / "x.nnf")
    assert code == 1 and len(err.splitlines()) == 1
    assert ("gaps.csv, line 2, column 3 ('c') is empty; pass --fill-missing "
            "mean|median|most_frequent|zero") in err
    plain = tmp_path / "plain.nnf"
    code, _, err = run(capsys, "train", "--data", files / "full.csv", "--label-column", "kind",
                       "--epochs", 1, "--hidden", 4, "-q", "-o", plain)
    assert code == 0, err
    refusal = "line 2, column 3 ('c') is empty; this model was trained without --fill-missing"
    code, out, err = run(capsys, "predict", plain, "--input", files / "gaps_unlabeled.csv")
    assert code == 1 and out == "" and refusal in err
    code, out, err = run(capsys, "evaluate", plain, "--data", files / "gaps.csv")
    assert code == 1 and refusal in err


def test_config_file_fill_missing_and_an_empty_label(files: Path, tmp_path: Path,
                                                     capsys) -> None:
    config = tmp_path / "c.json"
    model = tmp_path / "z.nnf"
    config.write_text(json.dumps({"data": str(files / "gaps.csv"), "label_column": "kind",
                                  "fill_missing": "zero", "standardize": False, "epochs": 1,
                                  "hidden": [4], "quiet": True, "output": str(model)}))
    code, _, err = run(capsys, "train", "--config", config)
    assert code == 0, err
    pre = read_manifest(model)["preprocessing"]
    assert pre["strategy"] == "constant" and pre["fill_value"] == 0
    config.write_text(json.dumps({"data": "x.csv", "fill_missing": "mode"}))
    code, _, err = run(capsys, "train", "--config", config)
    assert code == 1 and "setting 'fill_missing'" in err and "found 'mode'" in err
    bad = tmp_path / "nolabel.csv"
    bad.write_text("a,b,kind\n1,2,up\n3,,\n")
    code, _, err = run(capsys, "train", "--data", bad, "--fill-missing", "mean")
    assert code == 1 and "empty label cell in data row 2" in err
