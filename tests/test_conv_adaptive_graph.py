"""Adaptive average pooling whose windows differ in size runs in the graph (MatMuls by
constant averaging matrices): InferenceSession at every optimization level and onnxruntime on
the export give eager's values, and a saved model predicts and benches from the CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import nnforge as nf
from nnforge import nn
from nnforge.cli import main
from nnforge.onnx import export

F32 = np.float32
LEVELS = ("none", "basic", "all")


def _eager(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with nf.no_grad():
        return model(x).data


def _check(model: nn.Module, sample: tuple[int, ...], tmp_path: Path) -> None:
    """Session (each level) and onnxruntime on the export equal eager at batches 1 and 3."""
    model.eval()
    rng = np.random.default_rng(0)
    sessions = [nf.InferenceSession(model, level, input_shape=sample) for level in LEVELS]
    export(model, tmp_path / "m.onnx", input_shape=sample)
    via_ort = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    name = via_ort.get_inputs()[0].name
    for batch in (1, 3):
        x = rng.standard_normal((batch, *sample)).astype(F32)
        want = _eager(model, x)
        for level, session in zip(LEVELS, sessions):
            np.testing.assert_allclose(session.run(x), want, rtol=1e-5, atol=1e-6,
                                       err_msg=level)
        np.testing.assert_allclose(via_ort.run(None, {name: x})[0], want, rtol=1e-5,
                                   atol=1e-6)


@pytest.mark.parametrize(("hw", "size"), [
    ((14, 14), 3), ((14, 14), 9),  # out > H/2: windows of 2 and 3 overlapping
    ((7, 5), (3, 2)), ((10, 13), (4, 7)), ((6, 9), (None, 4)), ((9, 6), (4, None)),
    ((3, 4), (5, 6)),  # larger than the input: windows of one value, repeated
    ((8, 6), (3, 3)),  # one axis divides, the other does not
])
def test_adaptive_avg_pool2d_with_uneven_windows_runs_in_the_graph(tmp_path, hw, size):
    # was refused: "has windows of different sizes, which ONNX pooling cannot express"
    _check(nn.Sequential(nn.AdaptiveAvgPool2d(size)), (2, *hw), tmp_path)


@pytest.mark.parametrize(("length", "size"), [(7, 3), (7, 4), (5, 9), (14, 13)])
def test_adaptive_avg_pool1d_with_uneven_windows_runs_in_the_graph(tmp_path, length, size):
    _check(nn.Sequential(nn.AdaptiveAvgPool1d(size)), (2, length), tmp_path)


def test_divisible_sizes_stay_an_average_pool():
    graph = nf.InferenceSession(nn.Sequential(nn.AdaptiveAvgPool2d((3, 2))), "none",
                                input_shape=(2, 6, 4)).graph
    assert [n.op for n in graph.nodes] == ["AveragePool"]


def test_a_cnn_with_uneven_adaptive_pooling_saves_predicts_and_benches(tmp_path, capsys):
    nf.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(3),
                          nn.Flatten(), nn.Linear(27, 4))
    x = np.random.default_rng(1).standard_normal((5, 1, 14, 14)).astype(F32)
    model.eval()
    want = _eager(model, x)
    nf.save(model, tmp_path / "m.nnf", task="multiclass", input_shape=(1, 14, 14))
    np.testing.assert_allclose(nf.InferenceSession(tmp_path / "m.nnf").run(x), want,
                               rtol=1e-5, atol=1e-6)
    np.save(tmp_path / "x.npy", x)
    assert main(["predict", str(tmp_path / "m.nnf"), "--input", str(tmp_path / "x.npy")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [int(line.split(",")[0]) for line in lines[1:]] == want.argmax(1).tolist()
    assert main(["bench", str(tmp_path / "m.nnf"), "--batch-sizes", "2", "--iterations",
                 "2", "--warmup", "1"]) == 0, capsys.readouterr().err
