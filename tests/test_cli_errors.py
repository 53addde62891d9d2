"""Bad paths of the command line: one line on stderr, no traceback, exit code 1 or 2."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small untrained 4-feature, 3-class model and a few input files."""
    d = tmp_path_factory.mktemp("cli_errors")
    nf.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    nf.save(model, d / "m.nnf", task="multiclass", labels=["a", "b", "c"])
    (d / "garbage.nnf").write_bytes(np.random.default_rng(0).bytes(2000))
    truncated = (d / "m.nnf").read_bytes()
    (d / "truncated.nnf").write_bytes(truncated[: len(truncated) // 2])
    (d / "good.csv").write_text("w,x,y,z\n1,2,3,4\n5,6,7,8\n")
    (d / "ragged.csv").write_text("1,2,3,4\n5,6,7,8\n9,10,11\n")
    (d / "cell.csv").write_text("w,x,y,z\n1,2,3,4\n5,6,oops,8\n")
    (d / "three.csv").write_text("1,2,3\n4,5,6\n")
    (d / "nan.csv").write_text("1,2,3,4\n5,nan,7,8\n")
    (d / "bad.json").write_text('{"instances": [[1, 2, 3, 4], [1, 2]]}')
    (d / "bad.yaml").write_text("dataset: iris\nepoch: 3\n")
    (d / "binary.yaml").write_bytes(b"PK\x03\x04\xaf\xff")
    (d / "columns.json").write_text(json.dumps({f"c{i}": [1.0] for i in range(6)}))
    (d / "sub").mkdir()
    (d / "empty.csv").write_text("")
    (d / "header_only.csv").write_text("w,x,y,z\n")
    np.save(d / "no_rows.npy", np.zeros((0, 4), np.float32))
    (d / "utf16.json").write_text("[[1, 2, 3, 4]]", encoding="utf-16")
    os.mkfifo(d / "pipe.nnf")
    os.mkfifo(d / "pipe.onnx")
    _two_input_onnx(d / "two.onnx")
    return d


def _two_input_onnx(path: Path) -> None:
    """An ONNX model with inputs a and b (y = a + b), which the command line does not run."""
    from onnx import TensorProto, helper, save  # noqa: PLC0415 - the onnx extra

    spec = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 4]) for n in "aby"]
    graph = helper.make_graph([helper.make_node("Add", ["a", "b"], ["y"])], "two", spec[:2],
                              spec[2:])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    save(model, str(path))


CASES = {
    # name: (arguments, exit code, words the message must contain)
    "missing input file": (["predict", "m.nnf", "--input", "nope.csv"], 1,
                           ["nope.csv", "no such file"]),
    "missing model file": (["predict", "nope.nnf", "--input", "good.csv"], 1, ["nope.nnf"]),
    "missing data file": (["train", "--data", "nope.csv"], 1, ["nope.csv", "no such file"]),
    "missing config file": (["train", "--config", "nope.yaml"], 1, ["nope.yaml"]),
    "wrong number of CSV columns": (["predict", "m.nnf", "--input", "ragged.csv"], 1,
                                    ["ragged.csv", "line 3", "expected 4 columns, found 3"]),
    "non-numeric cell": (["predict", "m.nnf", "--input", "cell.csv"], 1,
                         ["cell.csv", "line 3", "column 3", "'y'", "'oops'"]),
    "wrong feature count": (["predict", "m.nnf", "--input", "three.csv"], 1,
                            ["expected 4 feature columns", "found 3"]),
    "NaN in the input": (["predict", "m.nnf", "--input", "nan.csv"], 1,
                         ["finite", "sample 2"]),
    "ragged JSON": (["predict", "m.nnf", "--input", "bad.json"], 1, ["same shape"]),
    "corrupt model (predict)": (["predict", "garbage.nnf", "--input", "good.csv"], 1,
                                ["garbage.nnf", "not an nnforge model file"]),
    "corrupt model (info)": (["info", "garbage.nnf"], 1, ["garbage.nnf"]),
    "truncated model (evaluate)": (["evaluate", "truncated.nnf", "--data", "good.csv"], 1,
                                   ["truncated.nnf"]),
    "corrupt model (bench)": (["bench", "garbage.nnf"], 1, ["garbage.nnf"]),
    "two-input model (bench)": (["bench", "two.onnx"], 1, ["single-input", "['a', 'b']"]),
    "two-input model (predict)": (["predict", "two.onnx", "--input", "good.csv"], 1,
                                  ["single-input", "['a', 'b']"]),
    "unknown setting in config": (["train", "--config", "bad.yaml"], 1,
                                  ["bad.yaml", "unknown setting 'epoch'"]),
    "unknown flag": (["predict", "m.nnf", "--input", "good.csv", "--bogus"], 2,
                     ["unrecognized arguments: --bogus", "nnforge predict --help"]),
    "bad flag value": (["train", "--dataset", "iris", "--hidden", "12,x"], 2,
                       ["--hidden", "12,x"]),
    "bad choice": (["train", "--dataset", "mnist"], 2, ["--dataset", "mnist"]),
    "missing required flag": (["predict", "m.nnf"], 2, ["--input"]),
    "unknown command": (["fly"], 2, ["fly"]),
    "unknown output format": (["predict", "m.nnf", "--input", "good.csv", "--format", "xml"],
                              2, ["--format"]),
    # found in the CLI audit: each of these used to overwrite a file, fail late or unclearly
    "predict output over its input": (["predict", "m.nnf", "--input", "good.csv", "--output",
                                       "good.csv"], 2, ["--input file 'good.csv'", "overwrite"]),
    "predict output over its model": (["predict", "m.nnf", "--input", "good.csv", "--output",
                                       "./m.nnf", "--format", "csv"], 2,
                                      ["model file 'm.nnf'", "overwrite"]),
    "unsupported output suffix": (["predict", "m.nnf", "--input", "good.csv", "--output",
                                   "p.xml"], 2, [".csv or .json", "--format", "'p.xml'"]),
    "output is a directory": (["predict", "m.nnf", "--input", "good.csv", "--output", "sub"], 1,
                              ["--output", "found a directory at 'sub'"]),
    "label column on JSON": (["predict", "m.nnf", "--input", "bad.json", "--label-column", "0"],
                             2, ["--label-column", "CSV inputs only", "bad.json"]),
    "JSON object of columns": (["predict", "m.nnf", "--input", "columns.json"], 1,
                               ["'instances'", "keys [c0, c1, c2, c3, c4, ... (6 in all)]"]),
    "train output over its data": (["train", "--data", "good.csv", "-o", "good.csv"], 2,
                                   ["--data file 'good.csv'", "overwrite"]),
    "train output is a directory": (["train", "--data", "good.csv", "-o", "sub"], 1,
                                    ["--output", "directory"]),
    "train output under a file": (["train", "--data", "good.csv", "-o", "good.csv/m.nnf"], 1,
                                  ["good.csv/m.nnf", "found a file at 'good.csv'"]),
    "report path is a file": (["evaluate", "m.nnf", "--data", "good.csv", "--report",
                               "good.csv"], 1, ["--report", "directory", "good.csv"]),
    "binary config file": (["train", "--config", "binary.yaml"], 1, ["binary.yaml", "UTF-8"]),
    "config path is a directory": (["train", "--config", "sub"], 1, ["'sub'", "directory"]),
    "export over its model": (["export", "m.nnf", "-o", "m.nnf"], 2, [".onnx", "'m.nnf'"]),
    "export into a directory": (["export", "m.nnf", "-o", "sub"], 1,
                                ["found a directory at 'sub'"]),
    "import over its source": (["import", "two.onnx", "-o", "two.onnx"], 2,
                               [".nnf", "'two.onnx'"]),
    "import a directory": (["import", "sub", "-o", "x.nnf"], 1, ["ONNX", "directory"]),
    # second audit: each of these failed late, fell through to an internal error, or was
    # silently ignored
    "momentum for adam": (["train", "--dataset", "iris", "--optimizer", "adam", "--momentum",
                           "0.9"], 2, ["--momentum", "sgd and rmsprop", "not to adam"]),
    "momentum for the default optimizer": (["train", "--dataset", "iris", "--momentum", "0.9"],
                                           2, ["--momentum", "adam (the default"]),
    "unknown loss": (["train", "--dataset", "iris", "--loss", "bogus"], 2,
                     ["--loss", "'bogus'", "cross_entropy"]),
    "seed out of range": (["train", "--dataset", "iris", "--seed", "4294967296"], 2,
                          ["--seed", "between 0 and 4294967295"]),
    "architecture file is not JSON": (["train", "--dataset", "iris", "--architecture",
                                       "good.csv"], 1, ["good.csv", "valid JSON"]),
    "label column with a bundled set (train)": (["train", "--dataset", "iris",
                                                 "--label-column", "2", "-o", "x.nnf"], 2,
                                                ["--label-column", "--dataset"]),
    "label column with a bundled set (evaluate)": (["evaluate", "m.nnf", "--dataset", "iris",
                                                    "--label-column", "2"], 2,
                                                   ["--label-column", "--dataset"]),
    "evaluate seed without a split": (["evaluate", "m.nnf", "--data", "good.csv", "--seed",
                                       "3"], 2, ["--seed", "--test-size"]),
    "info optimization without --graph": (["info", "m.nnf", "--optimization", "none"], 2,
                                          ["--optimization", "--graph"]),
    "predict format against the output suffix": (["predict", "m.nnf", "--input", "good.csv",
                                                  "--format", "json", "-o", "p.csv"], 2,
                                                 ["--format json", "'p.csv'"]),
    "predict an empty CSV": (["predict", "m.nnf", "--input", "empty.csv"], 1,
                             ["empty.csv", "at least one sample, found none"]),
    "predict a CSV of only a header": (["predict", "m.nnf", "--input", "header_only.csv",
                                        "-o", "none.csv"], 1,
                                       ["header_only.csv", "at least one sample"]),
    "predict an array of no samples": (["predict", "m.nnf", "--input", "no_rows.npy"], 1,
                                       ["no_rows.npy", "at least one sample"]),
    "UTF-16 JSON input": (["predict", "m.nnf", "--input", "utf16.json"], 1,
                          ["utf16.json", "UTF-16", "UTF-8"]),
    "batch size beyond any size": (["predict", "m.nnf", "--input", "good.csv", "--batch-size",
                                    "99999999999999999999"], 2, ["--batch-size", "up to"]),
    "bench iterations beyond any size": (["bench", "m.nnf", "--iterations",
                                          "99999999999999999999"], 2, ["--iterations"]),
    "train output is a named pipe": (["train", "--dataset", "iris", "-o", "pipe.nnf"], 1,
                                     ["regular file", "named pipe", "'pipe.nnf'"]),
    "export output is a named pipe": (["export", "m.nnf", "-o", "pipe.onnx"], 1,
                                      ["regular file", "named pipe"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_mistakes_print_one_line_and_exit_nonzero(work: Path, case: str,
                                                  one_line_error: object) -> None:
    args, code, words = CASES[case]
    env = {k: v for k, v in os.environ.items() if k != "NNFORGE_DEBUG"}
    r = subprocess.run([sys.executable, "-m", "nnforge", *args], cwd=work, capture_output=True,
                       text=True, env=env, timeout=120)
    one_line_error(r, code, words)
    assert not list(work.glob(".*.tmp"))  # no half-written output left behind


def test_a_failed_predict_leaves_no_output_file(work: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "nnforge", "predict", "m.nnf", "--input",
                        "ragged.csv", "--output", "out.csv", "--batch-size", "1"], cwd=work,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert not (work / "out.csv").exists() and not list(work.glob(".out.csv.*"))


def test_same_file_outputs_leave_the_inputs_intact(work: Path) -> None:
    """predict/train/export into their own input used to replace it with their output."""
    before = {n: (work / n).read_bytes() for n in ("good.csv", "m.nnf")}
    for args in (["predict", "m.nnf", "--input", "good.csv", "-o", "good.csv"],
                 ["train", "--data", "good.csv", "-o", "good.csv"],
                 ["export", "m.nnf", "-o", "m.nnf"]):
        r = subprocess.run([sys.executable, "-m", "nnforge", *args], cwd=work,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2, r.stderr
    assert {n: (work / n).read_bytes() for n in before} == before


def test_pipes_named_as_model_outputs_stay_pipes(work: Path) -> None:
    """train/export wrote a temp file and renamed it over the output, replacing the pipe (as
    root, `-o /dev/null` replaced the device itself)."""
    for args in (["train", "--dataset", "iris", "--epochs", "1", "-o", "pipe.nnf"],
                 ["export", "m.nnf", "-o", "pipe.onnx"]):
        r = subprocess.run([sys.executable, "-m", "nnforge", *args], cwd=work,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1, r.stderr
        assert stat.S_ISFIFO(os.stat(work / args[-1]).st_mode)


def test_a_diverged_training_fails_in_one_line_and_saves_nothing(tmp_path: Path) -> None:
    """lr 1e308 used to save a model of NaN weights (exit 0) with NumPy's warnings on stderr."""
    (tmp_path / "tiny.csv").write_text("a,b,t\n1,2,0\n3,4,1\n5,6,0\n7,8,1\n2,1,0\n4,3,1\n")
    runs = {"weights": ["--data", "tiny.csv", "--batch-size", "64", "--test-size", "0",
                        "--validation-split", "0"],
            "loss": ["--dataset", "iris"]}
    for why, args in runs.items():
        r = subprocess.run([sys.executable, "-m", "nnforge", "train", *args, "--lr", "1e308",
                            "--epochs", "1", "-q", "-o", "div.nnf"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 1, r.stderr
        assert r.stderr.count("\n") == 1 and "Warning" not in r.stderr, r.stderr
        assert ("training diverged" if why == "weights" else "the loss became nan") in r.stderr
        assert not (tmp_path / "div.nnf").exists()


def test_debug_mode_shows_the_traceback(work: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "nnforge", "info", "garbage.nnf"], cwd=work,
                       capture_output=True, text=True, env=os.environ | {"NNFORGE_DEBUG": "1"},
                       timeout=120)
    assert r.returncode == 1 and "Traceback" in r.stderr and "ModelFileError" in r.stderr
