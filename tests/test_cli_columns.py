"""CSV columns are matched to a model's features by name; messages for common mistakes;
the multilabel task. Commands run in-process (main) to stay fast."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli as run

import nnforge as nf
from nnforge import nn
from nnforge.cli.predict import predict_file

NAMES = ["a", "b", "c", "d"]


def write_csv(path: Path, header: list[str] | None, x: np.ndarray,
              y: list[str] | None = None, label_at: int | None = None,
              order: list[str] | None = None) -> None:
    """Rows of x (columns named NAMES) in `order`, with the text label y inserted at label_at."""
    cols = [NAMES.index(n) for n in (order or NAMES)]
    lines = [] if header is None else [",".join(header)]
    for i, row in enumerate(x.tolist()):
        cells = [f"{row[j]:g}" for j in cols]
        if y is not None:
            cells.insert(len(cells) if label_at is None else label_at, y[i])
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hand-set model whose class is the largest of features a, b, c (d is ignored), saved
    with and without feature names, and its data in several column orders."""
    d = tmp_path_factory.mktemp("cli_columns")
    model = nn.Sequential(nn.Linear(4, 3))
    model[0].weight.data[...] = np.eye(3, 4, dtype=np.float32)
    model[0].bias.data[...] = 0
    labels = ["x", "y", "z"]
    extra = {"trained_with": {"label_column": "kind"}}
    nf.save(model, d / "named.nnf", task="multiclass", labels=labels, feature_names=NAMES,
            extra=extra)
    nf.save(model, d / "plain.nnf", task="multiclass", labels=labels)
    x = np.random.default_rng(0).permutation(np.arange(40, dtype=np.float32)).reshape(10, 4)
    y = [labels[i] for i in x[:, :3].argmax(1)]
    reordered = ["d", "c", "a", "b"]
    write_csv(d / "feats.csv", NAMES, x)
    write_csv(d / "feats_reordered.csv", reordered, x, order=reordered)
    write_csv(d / "labeled_reordered.csv", ["d", "kind", "c", "a", "b"], x, y, 1, reordered)
    write_csv(d / "labeled_mid.csv", ["a", "b", "kind", "c", "d"], x, y, 2)
    write_csv(d / "no_header_reordered.csv", None, x, order=reordered)
    write_csv(d / "wrong.csv", ["a", "b", "c", "e"], x)
    np.save(d / "x.npy", x)
    return d


def classes_of(csv_text: str) -> list[int]:
    return [int(line.split(",")[0]) for line in csv_text.splitlines()[1:]]


def test_reordered_columns_are_matched_by_name(work: Path, capsys) -> None:
    """A CSV with the model's columns in another order gave wrong classes with exit 0."""
    x = np.load(work / "x.npy")
    want = x[:, :3].argmax(1).tolist()
    for name in ("feats.csv", "feats_reordered.csv", "labeled_reordered.csv"):
        code, out, err = run(capsys, "predict", work / "named.nnf", "--input", work / name)
        assert code == 0 and classes_of(out) == want, (name, err)
    # the streamed path, one row per chunk, reorders every chunk
    buf = io.StringIO()
    predict_file(nf.InferenceSession(work / "named.nnf"), str(work / "feats_reordered.csv"),
                 buf, "csv", batch=1)
    assert classes_of(buf.getvalue()) == want
    # evaluate finds the label by the model's stored label name: accuracy 0.33 before
    code, out, err = run(capsys, "evaluate", work / "named.nnf", "--data",
                         work / "labeled_reordered.csv", "--json")
    assert code == 0 and json.loads(out)["metrics"]["accuracy"] == 1.0, err
    # no header (or a model without names): by position, as before
    code, out, _ = run(capsys, "predict", work / "named.nnf", "--input",
                       work / "no_header_reordered.csv")
    assert code == 0 and classes_of(out) != want


def test_other_columns_are_refused_naming_missing_and_unexpected(work: Path, capsys) -> None:
    code, out, err = run(capsys, "predict", work / "named.nnf", "--input", work / "wrong.csv")
    assert code == 1 and out == "" and len(err.splitlines()) == 1
    assert "expected columns ['a', 'b', 'c', 'd'], found ['a', 'b', 'c', 'e']" in err
    assert "missing 'd'" in err and "unexpected 'e'" in err


@pytest.mark.parametrize("command", ["evaluate", "predict"])
def test_an_unnamed_label_column_gets_a_hint(work: Path, capsys, command: str) -> None:
    """It said "column 3 ('kind'): expected a number, found 'x'"."""
    flag = "--data" if command == "evaluate" else "--input"
    code, out, err = run(capsys, command, work / "plain.nnf", flag, work / "labeled_mid.csv")
    assert code == 1 and len(err.splitlines()) == 1, err
    assert ("labeled_mid.csv has 5 columns, the model takes 4 features: is 'kind' the label? "
            "pass --label-column kind") in err


def test_train_stores_the_header_and_info_shows_it(tmp_path: Path, capsys) -> None:
    x = np.arange(48, dtype=np.float32).reshape(12, 4) % 7
    write_csv(tmp_path / "t.csv", ["a", "b", "kind", "c", "d"], x,
              ["p" if i % 2 else "q" for i in range(12)], 2)
    code, _, err = run(capsys, "train", "--data", tmp_path / "t.csv", "--label-column", "kind",
                       "--hidden", "4", "--epochs", "1", "--test-size", "0",
                       "--validation-split", "0", "-q", "-o", tmp_path / "m.nnf")
    assert code == 0, err
    m = nf.load(tmp_path / "m.nnf").manifest
    assert m["inputs"][0]["names"] == NAMES
    assert m["extra"]["trained_with"]["label_column"] == "kind"
    code, out, _ = run(capsys, "info", tmp_path / "m.nnf")
    assert code == 0 and "features" in out and "a, b, c, d" in out


MISTAKES = {
    "mse on classes": (["labeled_mid.csv", "--label-column", "kind", "--loss", "mse"],
                       "--loss mse regresses, but the task is multiclass with 3 classes: use "
                       "cross_entropy"),
    "bce on 3 classes": (["labeled_mid.csv", "--label-column", "kind", "--loss",
                          "bce_with_logits"],
                         "--loss bce_with_logits takes a yes/no target per output, but the task "
                         "is multiclass with 3 classes"),
    "continuous target as classes": (["feats.csv", "--label-column", "d", "--task",
                                      "multiclass"],
                                     "looks continuous (10 distinct values in 10 samples); "
                                     "use --task regression"),
}


@pytest.mark.parametrize("case", list(MISTAKES))
def test_train_mistakes_are_named_before_training(work: Path, tmp_path: Path, capsys,
                                                  case: str) -> None:
    (data, *args), says = MISTAKES[case]
    code, out, err = run(capsys, "train", "--data", work / data, *args, "-o",
                         tmp_path / "m.nnf")
    assert code == 1 and len(err.splitlines()) == 1 and says in err, err
    assert "epoch" not in out and not (tmp_path / "m.nnf").exists()


def test_multilabel_train_evaluate_predict(tmp_path: Path, capsys) -> None:
    """A 0/1 y of shape (n, k) was trained as k-output regression; --task multilabel was
    refused as an invalid choice."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(120, 5)).astype(np.float32)
    y = np.stack([x[:, 0] > 0, x[:, 1] > 0, x[:, 2] + x[:, 3] > 0], 1).astype(np.int64)
    np.savez(tmp_path / "ml.npz", X=x, y=y)
    np.save(tmp_path / "q.npy", x[:4])
    for task in ([], ["--task", "multilabel"]):  # inferred, or chosen
        code, _, err = run(capsys, "train", "--data", tmp_path / "ml.npz", *task, "--epochs",
                           "30", "--hidden", "16", "--lr", "0.01", "-q", "-o",
                           tmp_path / "ml.nnf")
        assert code == 0, err
        m = nf.load(tmp_path / "ml.nnf").manifest
        assert m["task"] == "multilabel" and m["extra"]["trained_with"]["loss"] == \
            "bce_with_logits"
    code, out, err = run(capsys, "evaluate", tmp_path / "ml.nnf", "--data", tmp_path / "ml.npz",
                         "--json")
    assert code == 0, err
    metrics = json.loads(out)["metrics"]
    assert metrics["f1_micro"] > 0.8 and set(metrics) == {"subset_accuracy", "f1_micro"}
    code, out, err = run(capsys, "predict", tmp_path / "ml.nnf", "--input", tmp_path / "q.npy")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "prob_0,prob_1,prob_2,is_0,is_1,is_2" and len(lines) == 5
    flags = [[int(v) for v in line.split(",")[3:]] for line in lines[1:]]
    probs = [[float(v) for v in line.split(",")[:3]] for line in lines[1:]]
    assert flags == (np.array(probs) >= 0.5).astype(int).tolist()
    # classes asked of such targets get pointed to multilabel
    code, _, err = run(capsys, "train", "--data", tmp_path / "ml.npz", "--task", "multiclass",
                       "-q", "-o", tmp_path / "c.nnf")
    assert code == 1 and "--task multilabel" in err


def test_one_hot_targets_train_as_multiclass(tmp_path: Path, capsys) -> None:
    """A 0/1 y with exactly one 1 per row is classes written one-hot, not k yes/no labels."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(90, 4)).astype(np.float32)
    y = np.eye(3, dtype=np.int64)[np.argmax(x[:, :3], axis=1)]
    np.savez(tmp_path / "oh.npz", X=x, y=y)
    code, _, err = run(capsys, "train", "--data", tmp_path / "oh.npz", "--epochs", "2", "-q",
                       "-o", tmp_path / "oh.nnf")
    assert code == 0, err
    m = nf.load(tmp_path / "oh.nnf").manifest
    assert m["task"] == "multiclass" and m["labels"] == [0, 1, 2]
