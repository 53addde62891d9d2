"""nf.save(..., target_scaler=): a regression model trained on scaled targets predicts in the
targets' own units from the file (session, load, ONNX), the caller's model is left alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

import nnforge as nf
from nnforge import nn
from nnforge.cli.models import fold_target_scaling, last_linear
from nnforge.data.preprocessing import MinMaxScaler, Standardizer
from nnforge.errors import ConfigError
from nnforge.io import load, read_manifest, save
from nnforge.io.target_scaling import final_linear
from nnforge.onnx import exporter

SCALERS = [Standardizer, lambda: MinMaxScaler((-1.0, 1.0))]


def _data(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Features and two targets far from unit scale (like diabetes progression, ~25..350)."""
    x = rng.standard_normal((40, 6)).astype(np.float32)
    y = (x @ rng.standard_normal((6, 2)) * 60 + [150, 220]).astype(np.float32)
    return x, y


def _scaled_prediction(model: nn.Module, scaler, x: np.ndarray) -> np.ndarray:
    model.eval()
    with nf.no_grad():
        return scaler.inverse_transform(model(x).data)


@pytest.mark.parametrize("make_scaler", SCALERS)
def test_saved_model_predicts_in_target_units(tmp_path: Path, rng, make_scaler) -> None:
    x, y = _data(rng)
    xs, ys = Standardizer().fit(x), make_scaler().fit(y)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Sequential(nn.Linear(16, 2),
                                                                      nn.Dropout(0.2)))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    path = tmp_path / "r.nnf"
    save(model, path, task="regression", preprocessing=xs, target_scaler=ys)

    expected = _scaled_prediction(model, ys, xs.transform(x))
    got = nf.InferenceSession(path).predict(x).values
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)
    assert abs(got.mean() - y.mean()) < 0.5 * y.std()  # original units, not scaled ones
    with nf.no_grad():  # the loaded Module too
        np.testing.assert_allclose(load(path)(xs.transform(x)).data, expected, rtol=1e-5,
                                   atol=1e-4)
    # the caller's model still predicts in scaled units: its weights were not touched
    assert all(np.array_equal(v, model.state_dict()[k]) for k, v in before.items())
    record = read_manifest(path)["target_scaling"]
    assert record["folded_into"] == "2.0" and record["scaler"] == ys.get_config()


def test_onnx_export_of_the_file_predicts_in_target_units(tmp_path: Path, rng) -> None:
    x, y = _data(rng)
    ys = Standardizer().fit(y)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))
    save(model, tmp_path / "r.nnf", task="regression", target_scaler=ys)
    exporter.export(tmp_path / "r.nnf", tmp_path / "r.onnx")
    sess = ort.InferenceSession(str(tmp_path / "r.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    np.testing.assert_allclose(got, _scaled_prediction(model, ys, x), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("model,input_shape,found", [
    (nn.Sequential(nn.Linear(6, 2), nn.ReLU()), None, "found ReLU (layer '1')"),
    (nn.Sequential(nn.Conv2d(1, 1, 3)), (1, 3, 4), "found Conv2d (layer '0')"),
    (nn.Sequential(nn.Linear(6, 2, bias=False)), None, "bias=False"),
])
def test_refuses_a_model_it_cannot_fold_into(tmp_path: Path, rng, model, input_shape,
                                             found) -> None:
    ys = Standardizer().fit(rng.standard_normal((10, 2)))
    with pytest.raises(ConfigError, match="target_scaler needs") as info:
        save(model, tmp_path / "r.nnf", task="regression", target_scaler=ys,
             input_shape=input_shape)
    assert found in str(info.value)
    assert not (tmp_path / "r.nnf").exists()


@pytest.mark.parametrize("kwargs,words", [
    ({"task": "multiclass"}, "task='regression'"),
    ({"target_scaler": Standardizer()}, "must be fitted"),
    ({"target_scaler": Standardizer().fit(np.ones((4, 3)))}, "fitted on 3 target(s)"),
    ({"target_scaler": "standardize"}, "Standardizer or MinMaxScaler, found str"),
])
def test_refuses_a_bad_target_scaler(tmp_path: Path, kwargs, words) -> None:
    args = {"task": "regression", "target_scaler": Standardizer().fit(np.ones((4, 2))), **kwargs}
    with pytest.raises(ConfigError) as info:
        save(nn.Sequential(nn.Linear(6, 2)), tmp_path / "r.nnf", **args)
    assert words in str(info.value)


def test_cli_folds_with_the_shared_code(rng) -> None:
    """`nnforge train` folds in place through the same functions; the layer is found past
    trailing pass-through layers and inside nested Sequentials."""
    model = nn.Sequential(nn.Linear(6, 4), nn.Sequential(nn.Linear(4, 2), nn.Identity()),
                          nn.Flatten())
    assert final_linear(model) == ("1.0", model[1][0]) and last_linear(model) is model[1][0]
    assert last_linear(nn.Sequential(nn.Linear(6, 2, bias=False))) is None
    x = rng.standard_normal((5, 6)).astype(np.float32)
    with nf.no_grad():
        raw = model(x).data
    mean, scale = np.array([10.0, -3.0]), np.array([2.0, 0.5])
    fold_target_scaling(model[1][0], mean, scale)
    with nf.no_grad():
        np.testing.assert_allclose(model(x).data, raw * scale + mean, rtol=1e-5, atol=1e-5)


def test_info_shows_the_folded_target_scaling(tmp_path: Path, rng, capsys) -> None:
    """nnforge info showed the record only in --json."""
    from helpers import run_cli  # noqa: PLC0415

    x, y = _data(rng)
    path = tmp_path / "r.nnf"
    save(nn.Sequential(nn.Linear(6, 2)), path, task="regression",
         target_scaler=Standardizer().fit(y))
    code, out, err = run_cli(capsys, "info", path)
    assert code == 0, err
    assert "target scaling" in out and "standardize, folded into 0" in out
