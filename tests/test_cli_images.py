"""Images on the command line: (N, H, W) samples get their channel axis for a CNN (train,
evaluate, predict), one (H, W) image is one sample, and IDX files are read. In-process."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli as run

import nnforge as nf
from nnforge import nn
from nnforge.data import write_idx

SIDE = 6


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 (6, 6) images, class 1 when the top half is brighter; as .npz, .npy and IDX."""
    d = tmp_path_factory.mktemp("cli_images")
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (40, SIDE, SIDE)).astype(np.uint8)
    y = (x[:, :3].mean((1, 2)) > x[:, 3:].mean((1, 2))).astype(np.uint8)
    np.savez(d / "images.npz", X=x.astype(np.float32), y=y)
    np.save(d / "batch.npy", x[:5].astype(np.float32))
    np.save(d / "one.npy", x[0].astype(np.float32))
    write_idx(d / "images.idx", x)
    write_idx(d / "labels.idx", y)
    write_idx(d / "images.idx.gz", x)
    write_idx(d / "labels.idx.gz", y)
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 1))
    (d / "arch.json").write_text(json.dumps(conv.to_architecture()))
    return d


def _train(capsys, out: Path, *args: object) -> None:
    code, _, err = run(capsys, "train", *args, "--epochs", 1, "--batch-size", 16, "-q",
                       "--validation-split", 0, "-o", out)
    assert code == 0, err


@pytest.mark.parametrize("model", [["--model", "cnn"], ["--architecture", "arch.json"]])
def test_a_cnn_trains_evaluates_and_predicts_on_images_without_a_channel_axis(
        work: Path, capsys, model: list[str]) -> None:
    # (N, H, W) samples were passed to Conv2d as they were: "expected ... 1 channels"
    path = work / f"cnn_{model[0][2:]}.nnf"
    arch = [model[0], work / model[1]] if model[1].endswith(".json") else model
    _train(capsys, path, "--data", work / "images.npz", *arch)
    assert nf.load(path).manifest["inputs"][0]["shape"] == [None, 1, SIDE, SIDE]
    code, out, err = run(capsys, "evaluate", path, "--data", work / "images.npz", "--json")
    assert code == 0, err
    assert json.loads(out)["samples"] == 8  # the held-out rows of the training split
    code, out, err = run(capsys, "predict", path, "--input", work / "batch.npy")
    assert code == 0, err
    assert len(out.splitlines()) == 1 + 5


def test_one_image_file_is_one_sample_for_a_model_of_images(work: Path, capsys) -> None:
    path = work / "one_cnn.nnf"
    _train(capsys, path, "--data", work / "images.npz", "--model", "cnn")
    code, one, err = run(capsys, "predict", path, "--input", work / "one.npy")
    assert code == 0, err
    _, batch, _ = run(capsys, "predict", path, "--input", work / "batch.npy")
    assert one.splitlines() == batch.splitlines()[:2]  # header, then the first image's row


def test_one_image_for_a_model_of_flat_rows_says_how_the_file_was_read(work: Path,
                                                                        capsys) -> None:
    nf.save(nn.Sequential(nn.Linear(SIDE * SIDE, 2)), work / "flat.nnf", task="multiclass")
    code, _, err = run(capsys, "predict", work / "flat.nnf", "--input", work / "one.npy")
    assert code != 0
    assert f"an array of shape ({SIDE}, {SIDE}), read as {SIDE} samples of {SIDE} features; " \
           f"the model takes {SIDE * SIDE} features per sample" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("suffix", ["idx", "idx.gz"])
def test_idx_files_train_evaluate_and_predict(work: Path, capsys, suffix: str) -> None:
    images, labels = work / f"images.{suffix}", work / f"labels.{suffix}"
    path = work / f"idx_{suffix}.nnf"
    _train(capsys, path, "--data", images, "--labels", labels, "--model", "cnn")
    model = nf.load(path)
    assert model.manifest["inputs"][0]["shape"] == [None, 1, SIDE, SIDE]
    code, out, err = run(capsys, "evaluate", path, "--data", images, "--labels", labels,
                         "--json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["data"] == "images" and doc["rows"]["of"] == 40
    code, out, err = run(capsys, "predict", path, "--input", images)
    assert code == 0, err
    assert len(out.splitlines()) == 1 + 40
    x = np.load(work / "images.npz")["X"]
    want = nf.InferenceSession(path).predict(x[:, None]).classes
    got = [int(line.split(",")[0]) for line in out.splitlines()[1:]]
    np.testing.assert_array_equal(got, np.asarray(want).reshape(-1))


@pytest.mark.parametrize(("args", "message"), [
    (["--data", "images.idx"], "an IDX --data file holds no targets: pass them with --labels"),
    (["--data", "images.npz", "--labels", "labels.idx"],
     "--labels applies to IDX --data files"),
    (["--data", "images.idx", "--labels", "labels.idx", "--label-column", "0"],
     "--label-column applies to CSV files; an IDX --data file takes its targets from --labels"),
    (["--dataset", "digits", "--labels", "labels.idx"], "--labels applies to"),
])
def test_idx_labels_mistakes_are_one_clear_line(work: Path, capsys, args: list[str],
                                               message: str) -> None:
    args = [str(work / a) if a.startswith(("images", "labels")) else a for a in args]
    code, _, err = run(capsys, "train", *args, "-o", work / "never.nnf")
    assert code != 0 and message in err and "Traceback" not in err
    assert not (work / "never.nnf").exists()


def test_idx_labels_must_match_the_samples(work: Path, capsys) -> None:
    write_idx(work / "short.idx", np.zeros(7, np.uint8))
    code, _, err = run(capsys, "train", "--data", work / "images.idx", "--labels",
                       work / "short.idx", "-o", work / "never.nnf")
    assert code != 0
    assert "images.idx holds 40 samples, short.idx 7 targets" in err


def test_evaluate_tells_idx_data_apart_by_its_labels_file_too(work: Path, capsys) -> None:
    """The same images with other labels are other data: every row is scored, not the
    training split's held-out rows (evaluate compared the images file alone)."""
    path = work / "split.nnf"
    code, _, err = run(capsys, "train", "--data", work / "images.idx", "--labels",
                       work / "labels.idx", "--model", "cnn", "--epochs", 1, "--batch-size",
                       16, "-q", "--test-size", 0.25, "-o", path)
    assert code == 0, err
    y = nf.data.read_idx(work / "labels.idx")
    write_idx(work / "flipped.idx", (1 - y).astype(np.uint8))
    rows = {}
    for labels in ("labels.idx", "flipped.idx"):
        code, out, err = run(capsys, "evaluate", path, "--data", work / "images.idx",
                             "--labels", work / labels, "--json")
        assert code == 0, err
        rows[labels] = json.loads(out)["rows"]["scored"]
    assert rows == {"labels.idx": 10, "flipped.idx": 40}
