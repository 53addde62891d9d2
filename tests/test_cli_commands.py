"""End to end in subprocesses: `python -m nnforge` train -> evaluate -> predict -> info -> bench."""

from __future__ import annotations

import csv
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnforge as nf
from nnforge.cli import main
from nnforge.data import load_dataset

MODEL = "models/iris/1/model.nnf"


def nnforge(cwd: Path, *args: object, env: dict[str, str] | None = None
            ) -> subprocess.CompletedProcess[str]:
    """Run `python -m nnforge ARGS` in cwd and capture its output."""
    base = {k: v for k, v in os.environ.items() if k != "NNFORGE_DEBUG"}
    return subprocess.run([sys.executable, "-m", "nnforge", *map(str, args)], cwd=cwd,
                          capture_output=True, text=True, env=base | (env or {}), timeout=300)


def ok(result: subprocess.CompletedProcess[str]) -> str:
    """stdout of a run that must have succeeded (its stderr shown if not)."""
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def write_labeled_csv(path: Path, name: str, label: str) -> None:
    """A bundled set as CSV with a header and text labels (reading it skips sklearn's import)."""
    ds = load_dataset(name)
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([f"f{i}" for i in range(ds.X.shape[1])] + [label])
        w.writerows([*(f"{v:.6g}" for v in row), ds.target_names[t]]
                    for row, t in zip(ds.X.tolist(), ds.y.tolist()))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding an iris model trained from flags (and the train output)."""
    d = tmp_path_factory.mktemp("cli")
    write_labeled_csv(d / "iris.csv", "iris", "species")
    out = ok(nnforge(d, "train", "--dataset", "iris", "--hidden", "16", "--epochs", "40",
                     "--batch-size", "16", "--seed", "0", "-o", MODEL))
    (d / "train_stdout.txt").write_text(out)
    return d


def iris_rows(n: int) -> np.ndarray:
    return load_dataset("iris").X[:n]


def test_train_from_flags_prints_progress_and_metrics_and_saves(work: Path) -> None:
    out = (work / "train_stdout.txt").read_text()
    assert "epoch 1/40" in out and "epoch 40/40" in out and "val_loss" in out
    assert "test metrics (30 samples)" in out and f"saved {MODEL}" in out
    model = nf.load(work / MODEL)
    m = model.manifest
    assert m["task"] == "multiclass" and m["labels"] == ["setosa", "versicolor", "virginica"]
    assert m["preprocessing"]["type"] == "standardize"
    assert m["metrics"]["accuracy"] >= 0.8  # seeded: 40 epochs of a 16-unit MLP on iris


def test_evaluate_on_the_same_split_reproduces_the_training_test_metrics(work: Path) -> None:
    # text labels in a CSV map onto the model's classes, so the split is the one train made
    doc = json.loads(ok(nnforge(work, "evaluate", MODEL, "--data", "iris.csv", "--label-column",
                                "species", "--test-size", "0.2", "--seed", "0", "--json")))
    saved = nf.load(work / MODEL).manifest["metrics"]
    assert doc["samples"] == 30 and doc["task"] == "multiclass"
    for name, value in saved.items():
        assert doc["metrics"][name] == pytest.approx(value, abs=1e-6)
    matrix = np.array(doc["confusion_matrix"])
    assert matrix.shape == (3, 3) and matrix.sum() == 30
    assert np.trace(matrix) / 30 == pytest.approx(doc["metrics"]["accuracy"])


def test_evaluate_prints_a_metrics_table_and_confusion_matrix(work: Path) -> None:
    out = ok(nnforge(work, "evaluate", MODEL, "--data", "iris.csv"))  # label: the last column
    assert "iris: 150 samples, task multiclass" in out
    assert "accuracy" in out and "f1_macro" in out and "confusion matrix" in out
    row = next(line for line in out.splitlines() if line.startswith("setosa "))
    assert sum(int(v) for v in row.split()[1:]) == 50  # every setosa sample counted once


def _expected(work: Path, x: np.ndarray):
    return nf.InferenceSession(work / MODEL).predict(x)


def test_predict_csv_in_csv_out(work: Path) -> None:
    x = iris_rows(12)
    np.savetxt(work / "in.csv", x, delimiter=",", header="a,b,c,d", comments="", fmt="%.6g")
    result = nnforge(work, "predict", MODEL, "--input", "in.csv", "--output", "out/p.csv",
                     "--batch-size", "5")
    ok(result)
    assert "wrote 12 predictions" in result.stderr
    with open(work / "out/p.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["class", "label", "prob_setosa", "prob_versicolor", "prob_virginica"]
    want = _expected(work, np.loadtxt(work / "in.csv", delimiter=",", skiprows=1,
                                      dtype=np.float32))
    assert [int(r["class"]) for r in rows] == want.classes.tolist()
    assert [r["label"] for r in rows] == want.labels
    probs = np.array([[float(r[k]) for k in list(r)[2:]] for r in rows])
    np.testing.assert_allclose(probs, want.probabilities, rtol=1e-5, atol=1e-6)


def test_predict_json_in_json_out(work: Path) -> None:
    x = iris_rows(3)
    (work / "req.json").write_text(json.dumps({"instances": x.tolist()}))
    ok(nnforge(work, "predict", MODEL, "--input", "req.json", "--output", "p.json"))
    preds = json.loads((work / "p.json").read_text())["predictions"]
    want = _expected(work, x)
    assert [p["class"] for p in preds] == want.classes.tolist()
    assert [p["label"] for p in preds] == want.labels
    np.testing.assert_allclose([p["probabilities"] for p in preds], want.probabilities,
                               rtol=1e-5, atol=1e-6)
    # one sample as {"data": row}, printed on stdout
    (work / "one.json").write_text(json.dumps({"data": x[0].tolist()}))
    one = json.loads(ok(nnforge(work, "predict", MODEL, "--input", "one.json", "--format",
                                "json")))["predictions"]
    assert len(one) == 1 and one[0]["class"] == want.classes[0]


def test_predict_npy_to_stdout(work: Path) -> None:
    x = iris_rows(150)[::10]
    np.save(work / "in.npy", x)
    lines = ok(nnforge(work, "predict", MODEL, "--input", "in.npy")).splitlines()
    assert lines[0].startswith("class,label,prob_setosa") and len(lines) == 1 + len(x)
    assert [int(line.split(",")[0]) for line in lines[1:]] == _expected(work, x).classes.tolist()


def test_info_shows_manifest_layers_totals_and_graph(work: Path) -> None:
    out = ok(nnforge(work, "info", MODEL, "--graph"))
    for text in ("task", "multiclass", "setosa", "standardize", "Linear", "(N, 16)", "(N, 3)",
                 "total", "inference graph (optimization all)", "Gemm"):
        assert text in out
    doc = json.loads(ok(nnforge(work, "info", MODEL, "--json")))
    layers = doc["layers"]
    assert [(r["type"], r["output_shape"]) for r in layers] == [
        ("Linear", ["N", 16]), ("ReLU", ["N", 16]), ("Linear", ["N", 3])]
    params = sum(r["parameters"] for r in layers)
    assert params == doc["totals"]["parameters"] == doc["manifest"]["num_parameters"]
    assert params == 4 * 16 + 16 + 16 * 3 + 3
    assert doc["totals"]["bytes"] == 4 * params  # float32 weights, no buffers


def test_bench_reports_latency_and_throughput(work: Path) -> None:
    doc = json.loads(ok(nnforge(work, "bench", MODEL, "--batch-sizes", "1,8", "--iterations",
                                "5", "--warmup", "1", "--json")))
    assert [r["batch_size"] for r in doc["results"]] == [1, 8]
    for r in doc["results"]:
        assert 0 < r["p50_ms"] <= r["p99_ms"] and r["samples_per_s"] > 0
    table = ok(nnforge(work, "bench", MODEL, "--batch-sizes", "4", "--iterations", "3",
                       "--warmup", "0"))
    assert "p50 ms" in table and "samples/s" in table


def test_bench_threads_limit_the_session_too(work: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    # --threads used to limit only BLAS: the session's own kernels still split over every CPU
    import nnforge.runtime as runtime  # noqa: PLC0415

    seen: list[int] = []

    class Spy(runtime.InferenceSession):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            seen.append(self.threads)

    monkeypatch.setattr(runtime, "InferenceSession", Spy)
    assert main(["bench", str(work / MODEL), "--threads", "1", "--batch-sizes", "2",
                 "--iterations", "1", "--warmup", "0", "--json"]) == 0
    assert seen == [1] and json.loads(capsys.readouterr().out)["threads"] == 1


def test_train_from_a_yaml_config_with_flags_overriding_it(tmp_path: Path) -> None:
    write_labeled_csv(tmp_path / "bc.csv", "breast_cancer", "diagnosis")
    (tmp_path / "train.yaml").write_text(
        "data: bc.csv\n"
        "label_column: diagnosis\n"
        "hidden: [8]\n"
        "activation: tanh\n"
        "optimizer: {name: adamw, lr: 0.003, weight_decay: 0.0001}\n"
        "epochs: 50\n"
        "batch_size: 64\n"
        "output: bc.nnf\n")
    out = ok(nnforge(tmp_path, "train", "--config", "train.yaml", "--epochs", "3"))
    assert "epoch 3/3" in out and "epoch 4" not in out and "adamw lr 0.003" in out
    m = nf.load(tmp_path / "bc.nnf").manifest
    assert m["task"] == "binary" and m["labels"] == ["benign", "malignant"]  # sorted text
    assert m["extra"]["trained_with"]["epochs_run"] == 3
    assert m["outputs"][0]["shape"] == [None, 1]  # one logit for a binary task
    assert m["metrics"]["accuracy"] >= 0.85
    x = load_dataset("breast_cancer").X[:4]
    np.save(tmp_path / "bc.npy", x)
    lines = ok(nnforge(tmp_path, "predict", "bc.nnf", "--input", "bc.npy")).splitlines()
    assert lines[0] == "class,label,probability" and len(lines) == 5
    want = nf.InferenceSession(tmp_path / "bc.nnf").predict(x)
    assert [line.split(",")[1] for line in lines[1:]] == want.labels
    np.testing.assert_allclose([float(line.split(",")[2]) for line in lines[1:]],
                               want.probabilities, rtol=1e-5, atol=1e-6)


def test_train_with_an_architecture_from_a_json_config(work: Path) -> None:
    arch = {"type": "Sequential", "config": {"layers": [
        {"type": "Linear", "config": {"in_features": 4, "out_features": 6}},
        {"type": "Tanh", "config": {}},
        {"type": "Linear", "config": {"in_features": 6, "out_features": 3}}]}}
    (work / "arch.json").write_text(json.dumps({"data": "iris.csv", "architecture": arch,
                                                "epochs": 2, "output": "arch.nnf"}))
    ok(nnforge(work, "train", "--config", "arch.json", "--quiet"))
    saved = nf.load(work / "arch.nnf").to_architecture()
    assert [layer["type"] for layer in saved["config"]["layers"]] == ["Linear", "Tanh", "Linear"]
    # an architecture that does not fit the data is one clear error
    arch["config"]["layers"][0]["config"]["in_features"] = 5
    (work / "bad_arch.json").write_text(json.dumps({"data": "iris.csv", "architecture": arch}))
    r = nnforge(work, "train", "--config", "bad_arch.json")
    assert r.returncode == 1 and len(r.stderr.splitlines()) == 1
    assert "does not accept samples of shape (4,)" in r.stderr


def test_train_regression_from_csv_predicts_in_the_targets_units(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 3)).astype(np.float32)
    y = 100 + 30 * x[:, 0] - 20 * x[:, 1] + rng.normal(scale=1.0, size=400)
    with open(tmp_path / "h.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["a", "price", "b", "c"])
        w.writerows([[f"{r[0]:.5f}", f"{t:.3f}", f"{r[1]:.5f}", f"{r[2]:.5f}"]
                     for r, t in zip(x, y)])
    out = ok(nnforge(tmp_path, "train", "--data", "h.csv", "--label-column", "price",
                     "--hidden", "16", "--epochs", "60", "--lr", "0.01", "-o", "h.nnf"))
    assert "task regression" in out
    m = nf.load(tmp_path / "h.nnf").manifest
    assert m["task"] == "regression" and m["metrics"]["r2"] > 0.9
    doc = json.loads(ok(nnforge(tmp_path, "evaluate", "h.nnf", "--data", "h.csv",
                                "--label-column", "1", "--json")))
    assert doc["metrics"]["r2"] > 0.9 and doc["metrics"]["mae"] < 10  # targets are ~100 +- 36
    np.savez(tmp_path / "h.npz", X=x[:5], y=y[:5].astype(np.float32))
    doc = json.loads(ok(nnforge(tmp_path, "evaluate", "h.nnf", "--data", "h.npz", "--json")))
    assert doc["samples"] == 5 and doc["metrics"]["mae"] < 10
    lines = ok(nnforge(tmp_path, "predict", "h.nnf", "--input", "h.npz")).splitlines()
    assert lines[0] == "value" and len(lines) == 6
    np.testing.assert_allclose([float(v) for v in lines[1:]], y[:5], atol=10)


def test_report_writes_plots_and_markdown_and_html(work: Path) -> None:
    out = ok(nnforge(work, "train", "--data", "iris.csv", "--epochs", "3", "--quiet",
                     "-o", "r.nnf", "--report", "rep"))
    assert "report: rep/report.html" in out and "epoch" not in out
    rep = work / "rep"
    for name in ("loss.png", "accuracy.png", "f1_macro.png", "confusion_matrix.png"):
        assert (rep / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (rep / "report.md").read_text()
    assert "## Test metrics" in md and "![confusion matrix](confusion_matrix.png)" in md
    assert "| **setosa** |" in md
    assert '<img src="loss.png"' in (rep / "report.html").read_text()


def test_report_without_matplotlib_fails_in_one_line(tmp_path: Path) -> None:
    fake = tmp_path / "fake"
    (fake / "matplotlib").mkdir(parents=True)
    (fake / "matplotlib" / "__init__.py").write_text("raise ImportError('hidden for a test')\n")
    r = nnforge(tmp_path, "train", "--dataset", "iris", "--report", "rep",
                env={"PYTHONPATH": str(fake)})
    assert r.returncode == 1 and r.stdout == ""  # it fails before training
    assert r.stderr.splitlines() == [r.stderr.strip()] and "needs matplotlib" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("command", ["train", "evaluate", "predict", "info", "bench"])
def test_every_command_has_help_with_examples(command: str, capsys) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert f"usage: nnforge {command}" in out and "examples:" in out


def test_cnn_preset_trains_on_flat_pixel_rows_and_predicts_them(tmp_path: Path) -> None:
    ds = load_dataset("digits")
    x, y = ds.X[:200], ds.y[:200]
    np.savetxt(tmp_path / "d.csv", np.column_stack([x, y]), delimiter=",", fmt="%g")
    out = ok(nnforge(tmp_path, "train", "--data", "d.csv", "--model", "cnn", "--epochs", "1",
                     "-o", "cnn.nnf"))
    assert "200 samples of shape (1, 8, 8)" in out and "10 classes" in out
    doc = json.loads(ok(nnforge(tmp_path, "info", "cnn.nnf", "--json")))
    assert doc["manifest"]["inputs"][0]["shape"] == [None, 1, 8, 8]
    assert [r["type"] for r in doc["layers"]].count("Conv2d") == 2
    # rows of 64 pixels (the training file, label column ignored) are reshaped into images
    lines = ok(nnforge(tmp_path, "predict", "cnn.nnf", "--input", "d.csv", "--label-column",
                       "64")).splitlines()
    want = nf.InferenceSession(tmp_path / "cnn.nnf").predict(x.reshape(-1, 1, 8, 8))
    assert [int(line.split(",")[0]) for line in lines[1:]] == want.classes.tolist()


def test_predict_output_dash_is_stdout_and_json_may_start_with_a_bom(work: Path) -> None:
    """'-o -' used to write a file named '-'; a BOM (Windows tools) used to fail the JSON."""
    x = iris_rows(2)
    (work / "bom.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(x.tolist()).encode())
    out = ok(nnforge(work, "predict", MODEL, "--input", "bom.json", "--output", "-"))
    assert out.splitlines()[0].startswith("class,label,") and len(out.splitlines()) == 3
    assert not (work / "-").exists()


def test_train_into_a_closed_pipe_still_saves_the_model(tmp_path: Path) -> None:
    """`nnforge train ... | head -1` used to stop at the first print, exit 0, save nothing."""
    base = {k: v for k, v in os.environ.items() if k != "NNFORGE_DEBUG"}
    proc = subprocess.Popen([sys.executable, "-m", "nnforge", "train", "--dataset", "iris",
                             "--epochs", "3", "-o", "m.nnf"], cwd=tmp_path, env=base,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # the reader goes away before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0, err
    assert "Traceback" not in err and "Exception ignored" not in err
    assert nf.load(tmp_path / "m.nnf").manifest["task"] == "multiclass"


def test_train_reads_a_json_config_with_a_bom(tmp_path: Path) -> None:
    (tmp_path / "c.json").write_bytes(b"\xef\xbb\xbf" + json.dumps(
        {"dataset": "iris", "epochs": 1, "output": "c.nnf"}).encode())
    ok(nnforge(tmp_path, "train", "--config", "c.json", "-q"))
    assert (tmp_path / "c.nnf").is_file()


def test_info_reads_an_exported_onnx_file_which_others_can_read(work: Path) -> None:
    """info used to refuse .onnx files that predict and bench run; exports were mode 0600."""
    pytest.importorskip("onnx")
    ok(nnforge(work, "export", MODEL, "-o", "iris.onnx"))
    mask = os.umask(0)
    os.umask(mask)
    assert (work / "iris.onnx").stat().st_mode & 0o777 == 0o666 & ~mask
    out = ok(nnforge(work, "info", "iris.onnx", "--graph"))
    assert "onnx (opset" in out and "setosa" in out and "inference graph" in out


def test_a_report_directory_holds_one_runs_report_and_keeps_other_files(tmp_path: Path) -> None:
    """A regression report into an earlier classification report's directory used to keep its
    confusion matrix and accuracy curves, so the report mixed two runs."""
    rep = tmp_path / "rep"
    rep.mkdir()
    (rep / "notes.txt").write_text("mine")
    (rep / "photo.png").write_bytes(b"not nnforge's")
    ok(nnforge(tmp_path, "train", "--dataset", "iris", "--epochs", "2", "-q", "-o", "c.nnf",
               "--report", "rep"))
    assert (rep / "confusion_matrix.png").is_file() and (rep / "accuracy.png").is_file()
    ok(nnforge(tmp_path, "train", "--dataset", "diabetes", "--epochs", "2", "-q", "-o",
               "r.nnf", "--report", "rep"))
    names = {p.name for p in rep.iterdir()}
    assert "predicted_vs_true.png" in names and "loss.png" in names
    assert not names & {"confusion_matrix.png", "accuracy.png", "f1_macro.png"}, names
    assert (rep / "notes.txt").read_text() == "mine"  # never the user's files
    assert (rep / "photo.png").read_bytes() == b"not nnforge's"
    recorded = json.loads((rep / ".nnforge-report.json").read_text())["files"]
    assert set(recorded) == names - {"notes.txt", "photo.png", ".nnforge-report.json"}
    assert "![predicted vs true](predicted_vs_true.png)" in (rep / "report.md").read_text()


def test_predict_into_a_named_pipe_or_a_link_writes_through_them(work: Path) -> None:
    """An output that is a pipe (or /dev/null) is written to, not replaced by a plain file
    renamed over it; a symbolic link stays a link to the file it names."""
    import threading  # noqa: PLC0415

    x = iris_rows(3)
    np.save(work / "three.npy", x)
    pipe = work / "out.pipe"
    os.mkfifo(pipe)
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(pipe.read_text()), daemon=True)
    reader.start()
    r = nnforge(work, "predict", MODEL, "--input", "three.npy", "-o", "out.pipe",
                "--format", "csv")
    reader.join(timeout=60)
    assert r.returncode == 0, r.stderr
    assert stat.S_ISFIFO(os.stat(pipe).st_mode)
    assert got and got[0].startswith("class,label,") and len(got[0].splitlines()) == 4
    (work / "real.csv").write_text("old")
    os.symlink("real.csv", work / "link.csv")
    ok(nnforge(work, "predict", MODEL, "--input", "three.npy", "-o", "link.csv"))
    assert (work / "link.csv").is_symlink()
    assert (work / "real.csv").read_text().startswith("class,label,")
