"""In-process tests of the command line's pieces: flag types, config merging, task and labels."""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn
from nnforge.cli import main
from nnforge.cli.common import (
    UsageError,
    atomic_output,
    check_output_dir,
    check_output_path,
    column_ref,
    fraction,
    int_between,
    int_list,
    nonnegative_float,
    nonnegative_int,
    positive_int,
    print_table,
    seed_int,
)
from nnforge.cli.config import DEFAULTS, normalize_config, resolve_settings
from nnforge.cli.dataio import encode_classes, infer_task, targets_for_model
from nnforge.cli.predict import predict_file
from nnforge.cli.train import _optimizer
from nnforge.errors import ConfigError, DataError


def test_flag_types_accept_good_values_and_reject_bad_ones() -> None:
    assert int_list("128, 64") == [128, 64]
    assert fraction("0") == 0.0 and fraction("0.25") == 0.25
    assert column_ref("3") == 3 and column_ref("-1") == -1 and column_ref("price") == "price"
    for bad in ("", "1,,2", "a", "0", "-3"):
        with pytest.raises(argparse.ArgumentTypeError):
            int_list(bad)
    for bad in ("1", "-0.1", "x", "nan"):
        with pytest.raises(argparse.ArgumentTypeError):
            fraction(bad)


def test_config_values_are_checked_like_flags() -> None:
    cfg = normalize_config({"hidden": [32, 16], "weight_decay": "1e-4", "batch-size": 8,
                            "optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9},
                            "standardize": False}, "c.yaml")
    assert cfg == {"hidden": [32, 16], "weight_decay": 1e-4, "batch_size": 8,
                   "optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "standardize": False}
    with pytest.raises(ConfigError, match="c.yaml: setting 'epochs'"):
        normalize_config({"epochs": 1.5}, "c.yaml")
    with pytest.raises(ConfigError, match="unknown setting 'epoch'"):
        normalize_config({"epoch": 3}, "c.yaml")
    with pytest.raises(ConfigError, match="unknown optimizer setting"):
        normalize_config({"optimizer": {"name": "adam", "betas2": 1}}, "c.yaml")


def test_flags_override_the_config_file_which_overrides_defaults(tmp_path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"dataset": "iris", "epochs": 7, "lr": 0.01}))
    flags = {k: None for k in DEFAULTS} | {"epochs": 3, "data": "x.csv"}
    s = resolve_settings(flags, str(path))
    assert s["epochs"] == 3 and s["lr"] == 0.01 and s["batch_size"] == DEFAULTS["batch_size"]
    assert s["data"] == "x.csv" and s["dataset"] is None  # a source flag replaces the file's
    with pytest.raises(ConfigError, match="expected a data source"):
        resolve_settings({k: None for k in DEFAULTS}, None)


def test_task_inference() -> None:
    assert infer_task(np.array(["a", "b", "c"] * 10)) == "multiclass"
    assert infer_task(np.array([0, 1] * 20)) == "binary"
    assert infer_task(np.arange(40) % 4) == "multiclass"
    assert infer_task(np.arange(40, dtype=np.float32) * 0.5) == "regression"
    # many distinct integers with few samples each are a numeric target, not classes
    assert infer_task(np.arange(300) % 150) == "regression"


def test_class_encoding_and_mapping_back_to_a_models_labels() -> None:
    idx, labels = encode_classes(np.array(["dog", "cat", "dog", "eel"]))
    assert labels == ["cat", "dog", "eel"] and idx.tolist() == [1, 0, 1, 2]
    idx, labels = encode_classes(np.array([3, 1, 3]))
    assert labels == [1, 3] and idx.tolist() == [1, 0, 1]
    idx, labels = encode_classes(np.array([0, 2, 1]), ["a", "b", "c"])
    assert labels == ["a", "b", "c"] and idx.tolist() == [0, 2, 1]
    assert targets_for_model(np.array(["eel", "cat"]), "multiclass", ["cat", "dog", "eel"],
                             3).tolist() == [2, 0]
    assert targets_for_model(np.array([3, 1]), "binary", [1, 3], 1).tolist() == [1, 0]
    assert targets_for_model(np.array([2, 0]), "multiclass", ["a", "b", "c"], 3).tolist() == [2, 0]
    with pytest.raises(DataError, match="among the model's labels"):
        targets_for_model(np.array(["cow"]), "multiclass", ["cat", "dog"], 2)
    with pytest.raises(DataError, match=r"class indices in \[0, 2\]"):
        targets_for_model(np.array([5]), "multiclass", ["a", "b", "c"], 3)


def test_plain_table_is_aligned() -> None:
    buf = io.StringIO()
    print_table(["metric", "value"], [("accuracy", "0.9000"), ("f1", "0.85")], "t", file=buf)
    assert buf.getvalue().splitlines() == ["t", "metric     value", "--------  ------",
                                           "accuracy  0.9000", "f1          0.85"]


def test_atomic_output_leaves_no_file_on_failure(tmp_path) -> None:
    target = tmp_path / "sub" / "out.csv"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as fh:
            fh.write("partial")
            raise RuntimeError("boom")
    assert not target.exists() and list((tmp_path / "sub").iterdir()) == []
    with atomic_output(target) as fh:
        fh.write("done\n")
    assert target.read_text() == "done\n"


def test_usage_errors_are_one_line_with_exit_code_2(capsys) -> None:
    assert main(["train", "--epochs", "zero"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("nnforge: error: argument --epochs")
    assert main([]) == 2
    assert capsys.readouterr().err.startswith("nnforge: error: expected a command")
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("nnforge ")


def test_missing_extension_commands_fail_in_one_line(capsys, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "nnforge.onnx.cli", None)  # None: import fails
    assert main(["export", "model.nnf", "-o", "m.onnx"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'nnforge export' is not available" in err


def _predict_text(model_path, x: np.ndarray, fmt: str, tmp_path) -> str:
    np.save(tmp_path / "x.npy", x)
    buf = io.StringIO()
    rows = predict_file(nf.InferenceSession(model_path), str(tmp_path / "x.npy"), buf, fmt,
                        batch=2)
    assert rows == len(x)
    return buf.getvalue()


def test_predict_writes_multilabel_and_task_free_models(tmp_path) -> None:
    x = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    nf.save(nn.Sequential(nn.Linear(4, 3)), tmp_path / "ml.nnf", task="multilabel",
            labels=["x", "y", "z"])
    want = nf.InferenceSession(tmp_path / "ml.nnf").predict(x)
    lines = _predict_text(tmp_path / "ml.nnf", x, "csv", tmp_path).splitlines()
    assert lines[0] == "prob_x,prob_y,prob_z,is_x,is_y,is_z" and len(lines) == 6
    assert [[int(v) for v in line.split(",")[3:]] for line in lines[1:]] == want.classes.tolist()
    doc = json.loads(_predict_text(tmp_path / "ml.nnf", x, "json", tmp_path))
    assert [p["labels"] for p in doc["predictions"]] == want.labels
    # no task: the raw outputs, one column per output value
    nf.save(nn.Sequential(nn.Linear(4, 2)), tmp_path / "raw.nnf")
    want = nf.InferenceSession(tmp_path / "raw.nnf").predict(x).values
    lines = _predict_text(tmp_path / "raw.nnf", x, "csv", tmp_path).splitlines()
    assert lines[0] == "value_0,value_1"
    np.testing.assert_allclose([[float(v) for v in line.split(",")] for line in lines[1:]],
                               want, rtol=1e-6)
    doc = json.loads(_predict_text(tmp_path / "raw.nnf", x, "json", tmp_path))
    np.testing.assert_allclose([p["values"] for p in doc["predictions"]], want, rtol=1e-6)


def test_binary_labels_with_commas_are_quoted_in_csv(tmp_path) -> None:
    x = np.zeros((3, 4), np.float32)
    nf.save(nn.Sequential(nn.Linear(4, 1)), tmp_path / "b.nnf", task="binary",
            labels=["no, never", 'yes "sure"'])
    rows = list(csv.reader(io.StringIO(_predict_text(tmp_path / "b.nnf", x, "csv", tmp_path))))
    assert rows[0] == ["class", "label", "probability"]
    assert all(r[1] in ("no, never", 'yes "sure"') and len(r) == 3 for r in rows[1:])


def test_unset_weight_decay_keeps_the_optimizers_own_default() -> None:
    model = nn.Sequential(nn.Linear(2, 1))
    base = {k: DEFAULTS[k] for k in ("lr", "weight_decay", "momentum")}
    adamw = _optimizer(base | {"optimizer": "adamw"}, model).get_config()
    assert adamw["weight_decay"] == pytest.approx(1e-2)  # was forced to 0: adamw == adam
    set_wd = _optimizer(base | {"optimizer": "adamw", "weight_decay": 0.0}, model).get_config()
    assert set_wd["weight_decay"] == 0.0


def test_architecture_and_preset_settings_are_not_silently_mixed(tmp_path) -> None:
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"dataset": "iris", "architecture": "a.json", "dropout": 0.1}))
    flags = {k: None for k in DEFAULTS}
    with pytest.raises(ConfigError, match="'architecture' or the built-in model's"):
        resolve_settings(flags, str(path))
    path.write_text(json.dumps({"dataset": "iris", "architecture": "a.json"}))
    s = resolve_settings(flags | {"hidden": [8]}, str(path))
    assert s["architecture"] is None and s["hidden"] == [8]  # the flag wins
    with pytest.raises(ConfigError, match="found both \\(--model\\)"):
        resolve_settings(flags | {"architecture": "a.json", "model": "cnn"}, str(path))


def test_bounded_flag_types_name_their_range() -> None:
    assert int_between(0, 65535, "a port number")("8080") == 8080
    for bad in ("65536", "-1", "80.5", "x", ""):
        with pytest.raises(argparse.ArgumentTypeError, match="between 0 and 65535"):
            int_between(0, 65535, "a port number")(bad)
    assert seed_int("4294967295") == 2**32 - 1
    with pytest.raises(argparse.ArgumentTypeError, match="seed between 0 and 4294967295"):
        seed_int("4294967296")
    # beyond sys.maxsize counts broke islice and array sizes with an internal error
    assert positive_int(str(sys.maxsize)) == sys.maxsize
    for parse in (positive_int, nonnegative_int):
        with pytest.raises(argparse.ArgumentTypeError, match=str(sys.maxsize)):
            parse(str(sys.maxsize + 1))
    with pytest.raises(argparse.ArgumentTypeError):
        int_list(f"1,{sys.maxsize + 1}")
    for bad in ("inf", "nan", "-1"):
        with pytest.raises(argparse.ArgumentTypeError, match="finite number >= 0"):
            nonnegative_float(bad)


def test_optimizer_settings_apply_only_to_optimizers_that_take_them(tmp_path) -> None:
    flags = {k: None for k in DEFAULTS} | {"dataset": "iris"}
    with pytest.raises(UsageError, match="--momentum applies to .* sgd and rmsprop, not to "
                                         "adamw"):
        resolve_settings(flags | {"optimizer": "adamw", "momentum": 0.9}, None)
    assert resolve_settings(flags | {"optimizer": "rmsprop", "momentum": 0.9},
                            None)["momentum"] == 0.9
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"optimizer": {"name": "adam", "momentum": 0.9}}))
    with pytest.raises(ConfigError, match="c.json: setting 'momentum' applies to"):
        resolve_settings(flags, str(path))
    path.write_text(json.dumps({"optimizer": {"name": "sgd", "momentum": 0.9}}))
    # --optimizer replaces the file's optimizer with the settings that were meant for it
    s = resolve_settings(flags | {"optimizer": "adam"}, str(path))
    assert s["optimizer"] == "adam" and s["momentum"] is None
    with pytest.raises(UsageError, match="--momentum"):
        resolve_settings(flags | {"optimizer": "adam", "momentum": 0.5}, str(path))
    path.write_text(json.dumps({"dataset": "iris", "label_column": "x"}))
    with pytest.raises(ConfigError, match="'label_column' applies to --data files"):
        resolve_settings({k: None for k in DEFAULTS}, str(path))


def test_a_report_removes_only_the_files_its_manifest_names(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    from nnforge.cli.report import MANIFEST, write_report  # noqa: PLC0415

    out = tmp_path / "rep"
    (out / "sub").mkdir(parents=True)
    keep = ["notes.txt", "sub/a.png", "data.csv", "mine.png"]
    for name in keep:
        (out / name).write_text("user's")
    (tmp_path / "outside.png").write_text("user's")
    (out / "old_curve.png").write_text("an earlier report's")
    # a hand-edited or hostile manifest must not reach files a report never writes
    (out / MANIFEST).write_text(json.dumps({"files": [
        "old_curve.png", "notes.txt", "data.csv", "sub/a.png", "../outside.png", "sub",
        str(tmp_path / "outside.png"), ".", "..", 7]}))
    files = write_report(out, "t", [("a", "b")], {"mse": 1.0}, {"loss": [2.0, 1.0]},
                         pairs=(np.arange(3.0), np.arange(3.0)))
    assert [f.name for f in files] == ["loss.png", "predicted_vs_true.png", "report.md",
                                       "report.html"]
    assert not (out / "old_curve.png").exists()
    assert all((out / name).read_text() == "user's" for name in keep)
    assert (tmp_path / "outside.png").exists()
    assert json.loads((out / MANIFEST).read_text())["files"] == sorted(f.name for f in files)
    (out / MANIFEST).write_text("{not json")  # a damaged manifest: nothing is removed
    write_report(out, "t", [], {}, None, matrix=np.eye(2, dtype=np.int64), labels=["x", "y"])
    assert (out / "loss.png").exists() and (out / "confusion_matrix.png").exists()


def test_outputs_in_folders_that_cannot_be_written_fail_before_the_work(tmp_path,
                                                                        monkeypatch) -> None:
    """A model bound for a read-only folder was refused only after the whole training run."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: Path(p) != locked and real_access(p, mode))
    for check, target, flag in ((check_output_path, locked / "m.nnf", "--output"),
                                (check_output_path, locked / "new" / "m.nnf", "--output"),
                                (check_output_dir, locked, "--report"),
                                (check_output_dir, locked / "rep", "--report")):
        with pytest.raises(UsageError, match=f"cannot write {flag} .*no permission to create "
                                             f"files in '{locked}'") as info:
            check(target, flag)
        assert info.value.exit_code == 1
    check_output_path(tmp_path / "ok" / "m.nnf", "--output")
    check_output_dir(tmp_path / "rep", "--report")
