"""Export: native model -> ONNX -> ONNX Runtime equals nnforge for every layer type and for
trained digits models; metadata, preprocessing in the graph, opsets, the CLI, the ORT backend."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from sklearn.model_selection import train_test_split

import nnforge as nf
from nnforge import nn, optim
from nnforge.cli import main
from nnforge.data import Imputer, MinMaxScaler, Pipeline, Standardizer, load_dataset
from nnforge.errors import ConfigError
from nnforge.graph import evaluate_graph
from nnforge.onnx import export, graph_to_model, load
from nnforge.onnx import exporter as onnx_exporter
from nnforge.runtime import InferenceSession

F32 = np.float32


def assert_close(got: np.ndarray, expected: np.ndarray, rtol: float = 1e-5) -> None:
    """Equal to rtol, relative to each value or to the output's scale (float32 sums)."""
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=rtol,
                               atol=rtol * max(1.0, float(np.abs(expected).max())))


def ort_run(path: object, x: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return sess.run(None, {sess.get_inputs()[0].name: x})[0]


def _bn(layer: nn.Module, rng: np.random.Generator) -> nn.Module:
    """Batch norm with running statistics and affine weights that are not the identity."""
    c = layer.num_features
    layer.running_mean = rng.standard_normal(c).astype(F32)
    layer.running_var = (rng.random(c) + 0.5).astype(F32)
    if layer.weight is not None:
        layer.weight.data[...] = rng.random(c) + 0.5
        layer.bias.data[...] = rng.standard_normal(c) * 0.1
    return layer


def _ln(layer: nn.Module, rng: np.random.Generator) -> nn.Module:
    """Layer norm with affine weights that are not the identity."""
    layer.weight.data[...] = rng.random(layer.weight.shape) + 0.5
    if layer.bias is not None:
        layer.bias.data[...] = rng.standard_normal(layer.bias.shape) * 0.1
    return layer


DENSE = {
    "Linear": lambda r: nn.Linear(6, 5), "Linear(bias=False)": lambda r: nn.Linear(6, 5, False),
    "ReLU": lambda r: nn.ReLU(), "LeakyReLU": lambda r: nn.LeakyReLU(0.2),
    "Sigmoid": lambda r: nn.Sigmoid(), "Tanh": lambda r: nn.Tanh(), "GELU": lambda r: nn.GELU(),
    "Softmax": lambda r: nn.Softmax(), "LogSoftmax": lambda r: nn.LogSoftmax(),
    "Identity": lambda r: nn.Identity(), "Dropout": lambda r: nn.Dropout(0.5),
    "Flatten": lambda r: nn.Flatten(), "BatchNorm1d": lambda r: _bn(nn.BatchNorm1d(6), r),
    "BatchNorm1d(affine=False)": lambda r: _bn(nn.BatchNorm1d(6, affine=False), r),
    "SiLU": lambda r: nn.SiLU(), "ELU": lambda r: nn.ELU(0.5), "Softplus": lambda r: nn.Softplus(),
    "Softplus(beta, threshold)": lambda r: nn.Softplus(2.0, 1.0),
    "LayerNorm": lambda r: _ln(nn.LayerNorm(6), r),
    "LayerNorm(bias=False)": lambda r: _ln(nn.LayerNorm(6, bias=False), r),
    "LayerNorm(affine=False)": lambda r: nn.LayerNorm(6, elementwise_affine=False),
}

SPATIAL = {
    "Conv2d": lambda r: nn.Conv2d(4, 6, 3),
    "Conv2d(stride, padding)": lambda r: nn.Conv2d(4, 6, 3, stride=2, padding=1),
    "Conv2d(dilation, no bias)": lambda r: nn.Conv2d(4, 3, (3, 2), dilation=2, bias=False),
    "Conv2d(groups)": lambda r: nn.Conv2d(4, 8, 3, padding=(1, 0), groups=2),
    "Conv2d(depthwise)": lambda r: nn.Conv2d(4, 4, 3, groups=4),
    "MaxPool2d": lambda r: nn.MaxPool2d(2),
    "MaxPool2d(stride, padding)": lambda r: nn.MaxPool2d(3, stride=2, padding=1),
    "AvgPool2d": lambda r: nn.AvgPool2d(2),
    "AvgPool2d(padding)": lambda r: nn.AvgPool2d(3, stride=2, padding=1),
    "AvgPool2d(padding, exclude pad)": lambda r: nn.AvgPool2d(3, 1, 1, count_include_pad=False),
    "MaxPool2d(ceil_mode)": lambda r: nn.MaxPool2d(2, ceil_mode=True),
    "MaxPool2d(ceil_mode, padding)": lambda r: nn.MaxPool2d(3, 2, 1, ceil_mode=True),
    "AvgPool2d(ceil_mode)": lambda r: nn.AvgPool2d(3, 2, 1, ceil_mode=True),
    "AvgPool2d(ceil_mode, exclude pad)": lambda r: nn.AvgPool2d(2, ceil_mode=True,
                                                                count_include_pad=False),
    # on 9x8 inputs the last window of rows would start in the end padding: dropped
    "AvgPool2d(ceil_mode, drop)": lambda r: nn.AvgPool2d(2, padding=1, ceil_mode=True),
    # on 9x8 the last window of rows hangs over, that of columns would start in the end
    # padding (dropped); with count_include_pad (the default) ONNX kept that window, and the
    # export failed onnx.checker ("Inferred shape and existing shape differ")
    "AvgPool2d(ceil_mode, include pad, drop)": lambda r: nn.AvgPool2d(2, 4, ceil_mode=True),
    "AvgPool2d(ceil_mode, padding, include pad, drop)": lambda r: nn.AvgPool2d(
        3, 3, 1, ceil_mode=True),
    "GlobalAvgPool2d": lambda r: nn.GlobalAvgPool2d(),
    "GlobalAvgPool2d(keepdims)": lambda r: nn.GlobalAvgPool2d(keepdims=True),
    "AdaptiveAvgPool2d(1)": lambda r: nn.AdaptiveAvgPool2d(1),
    "AdaptiveAvgPool2d(3,4)": lambda r: nn.AdaptiveAvgPool2d((3, 4)),
    "BatchNorm2d": lambda r: _bn(nn.BatchNorm2d(4), r),
    "ReLU": lambda r: nn.ReLU(), "Flatten": lambda r: nn.Flatten(),
    "Dropout": lambda r: nn.Dropout(0.3), "SiLU": lambda r: nn.SiLU(),
    "LayerNorm(H, W)": lambda r: _ln(nn.LayerNorm([9, 8]), r),
}


def _check_export(model: nn.Module, x: np.ndarray, path: object, opset: int = 17) -> None:
    model.eval()
    with nf.no_grad():
        eager = model(x).data
    expected = InferenceSession(model, input_shape=x.shape[1:]).run(x)
    export(model, path, opset=opset, input_shape=x.shape[1:])
    assert_close(expected, eager)
    assert_close(ort_run(path, x), expected)
    assert_close(ort_run(path, x[:1]), expected[:1])  # the batch dim is dynamic


@pytest.mark.parametrize("name", list(DENSE))
def test_each_dense_layer_matches_onnx_runtime(rng: np.random.Generator, tmp_path, name) -> None:
    model = nn.Sequential(nn.Linear(4, 6), DENSE[name](rng))
    x = (rng.standard_normal((7, 4)) * 2).astype(F32)
    _check_export(model, x, tmp_path / "m.onnx")


@pytest.mark.parametrize("name", list(SPATIAL))
def test_each_spatial_layer_matches_onnx_runtime(rng: np.random.Generator, tmp_path,
                                                 name) -> None:
    model = nn.Sequential(nn.Conv2d(2, 4, 1), SPATIAL[name](rng))
    x = rng.standard_normal((3, 2, 9, 8)).astype(F32)
    _check_export(model, x, tmp_path / "m.onnx")


@pytest.mark.parametrize("opset", [13, 17, 18, 20])
def test_every_opset_writes_a_checked_model(rng: np.random.Generator, tmp_path, opset) -> None:
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), _bn(nn.BatchNorm2d(3), rng), nn.GELU(),
                          nn.MaxPool2d(2), nn.GlobalAvgPool2d(), nn.Linear(3, 2), nn.LogSoftmax())
    x = rng.standard_normal((4, 1, 6, 6)).astype(F32)
    _check_export(model, x, tmp_path / "m.onnx", opset)
    m = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(m, full_check=True)
    assert m.opset_import[0].version == opset
    ops = [n.op_type for n in m.graph.node]
    assert ("Gelu" in ops) == (opset >= 20) and ("Erf" in ops) == (opset < 20)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "N" and [d.dim_value for d in dims[1:]] == [1, 6, 6]
    assert m.graph.output[0].type.tensor_type.shape.dim[0].dim_param == "N"


@pytest.mark.parametrize("kernel,stride,padding", [(2, 3, 0), (3, 3, 1), (4, 3, 2), (3, 2, 1),
                                                    (2, 2, 0), (3, 2, 0), ((3, 2), (2, 3), (1, 0))])
def test_ceil_mode_average_pool_counting_padding_matches_onnx_runtime(
        rng: np.random.Generator, tmp_path, kernel, stride, padding) -> None:
    """count_include_pad=True with ceil_mode: the padding counts, the overhang does not, and
    a last window starting past the input and the leading padding is dropped (PyTorch's
    rule), on every size from 4 to 9; ONNX's AveragePool cannot say that alone, so the export
    pads explicitly and pools without ceil_mode."""
    for h, w in ((4, 4), (5, 7), (6, 6), (7, 5), (8, 9), (9, 8)):
        model = nn.Sequential(nn.AvgPool2d(kernel, stride, padding, ceil_mode=True))
        x = rng.standard_normal((2, 3, h, w)).astype(F32)
        _check_export(model, x, tmp_path / "m.onnx", opset=13)
        nodes = onnx.load(str(tmp_path / "m.onnx")).graph.node
        pool = next(n for n in nodes if n.op_type == "AveragePool")
        assert all(a.i == 0 for a in pool.attribute if a.name == "ceil_mode")


def test_ceil_mode_average_pool_divisor_by_hand(tmp_path) -> None:
    """4x4 input, 3x3 windows, stride 2, padding 1: the last row and column of windows hang
    over the end; PyTorch divides by the taps on the input and padding (6, 6, 4 there)."""
    x = np.arange(1, 17, dtype=F32).reshape(1, 1, 4, 4)
    model = nn.Sequential(nn.AvgPool2d(3, 2, 1, ceil_mode=True))
    expected = np.array([14 / 9, 30 / 9, 12 / 6, 57 / 9, 99 / 9, 36 / 6, 27 / 6, 45 / 6, 16 / 4],
                        F32).reshape(1, 1, 3, 3)
    _check_export(model, x, tmp_path / "m.onnx")
    assert_close(ort_run(tmp_path / "m.onnx", x), expected)


def test_every_opset_export_accepts_loads_in_onnx_runtime(rng: np.random.Generator,
                                                         tmp_path) -> None:
    """onnx 1.23 knows opsets up to 28, ONNX Runtime 1.31 loads up to 26: export wrote opset
    27 and 28 files that ORT refused to open; now every opset it writes loads, and the ones
    above say why they are refused."""
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), _bn(nn.BatchNorm2d(3), rng), nn.GELU(),
                          nn.MaxPool2d(2, ceil_mode=True), nn.AvgPool2d(2, ceil_mode=True),
                          nn.Flatten(), nn.Linear(12, 2), nn.Softmax())
    x = rng.standard_normal((2, 1, 7, 7)).astype(F32)
    low, high, _ = onnx_exporter.opset_range()
    assert low == 13 and high <= onnx_exporter.max_opset()
    for opset in range(13, onnx_exporter.max_opset() + 1):
        if opset <= high:
            _check_export(model, x, tmp_path / f"m{opset}.onnx", opset)
            continue
        with pytest.raises(ConfigError, match=rf"expected an opset from 13 to {high}, found "
                                              rf"{opset} \(the installed onnxruntime"):
            export(model, tmp_path / f"m{opset}.onnx", opset=opset)
        assert not (tmp_path / f"m{opset}.onnx").exists()


def test_opset_range_says_which_package_limits_it(monkeypatch, tmp_path) -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    newest = onnx_exporter.max_opset()
    monkeypatch.setattr(onnx_exporter, "ort_max_opset", lambda: ("1.16.3", 19))
    assert onnx_exporter.opset_range()[:2] == (13, 19)
    with pytest.raises(ConfigError, match=r"from 13 to 19, found 20 \(the installed onnxruntime "
                                          r"1\.16\.3 loads opsets up to 19, although onnx .* "
                                          r"upgrade onnxruntime"):
        export(model, tmp_path / "m.onnx", opset=20)
    with pytest.raises(ConfigError, match=r"from 13 to 19, found 12$"):
        export(model, tmp_path / "m.onnx", opset=12)
    monkeypatch.setattr(onnx_exporter, "ort_max_opset", lambda: None)  # no onnxruntime
    assert onnx_exporter.opset_range()[:2] == (13, newest)
    with pytest.raises(ConfigError, match=rf"from 13 to {newest}, found {newest + 1} "
                                          rf"\(onnx .* knows opsets up to {newest}\)"):
        graph_to_model(InferenceSession(model).graph, opset=newest + 1)
    assert not (tmp_path / "m.onnx").exists()


def test_export_command_refuses_an_opset_out_of_range(tmp_path, capsys) -> None:
    nf.save(nn.Sequential(nn.Linear(3, 2)), tmp_path / "m.nnf", input_shape=(3,))
    high = onnx_exporter.opset_range()[1]
    capsys.readouterr()
    assert main(["export", str(tmp_path / "m.nnf"), "-o", str(tmp_path / "m.onnx"),
                 "--opset", str(high + 1)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"--opset: expected an opset from 13 to {high}, found {high + 1}" in err
    assert not (tmp_path / "m.onnx").exists()
    assert main(["export", str(tmp_path / "m.nnf"), "-o", str(tmp_path / "m.onnx"),
                 "--opset", str(high)]) == 0
    assert onnx.load(str(tmp_path / "m.onnx")).opset_import[0].version == high
    ort_run(tmp_path / "m.onnx", np.ones((2, 3), F32))


def test_fused_graph_is_split_back_into_standard_ops(rng: np.random.Generator, tmp_path) -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.LeakyReLU(0.1), nn.MaxPool2d(2),
                          nn.Conv2d(4, 4, 1), nn.Tanh(), nn.Flatten(), nn.Linear(36, 5),
                          nn.Sigmoid(), nn.Linear(5, 3))
    session = InferenceSession(model, input_shape=(1, 8, 8))
    assert {"FusedConv", "FusedGemm"} <= set(session.graph.count_ops())
    x = rng.standard_normal((2, 1, 8, 8)).astype(F32)
    export(session.graph, tmp_path / "fused.onnx")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "fused.onnx")).graph.node]
    assert "FusedConv" not in ops and {"LeakyRelu", "MaxPool", "Tanh", "Sigmoid"} <= set(ops)
    assert_close(ort_run(tmp_path / "fused.onnx", x), session.run(x))


def _digits(flat: bool) -> tuple[np.ndarray, ...]:
    ds = load_dataset("digits")
    X_tr, X_te, y_tr, y_te = train_test_split(ds.X, ds.y, test_size=0.2, random_state=0,
                                              stratify=ds.y)
    scaler = Standardizer().fit(X_tr)
    X_tr, X_te = scaler.transform(X_tr), scaler.transform(X_te)
    if not flat:
        X_tr, X_te = X_tr.reshape(-1, 1, 8, 8), X_te.reshape(-1, 1, 8, 8)
    return X_tr, X_te, y_tr, y_te


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_trained_digits_models_match_onnx_runtime(tmp_path, kind: str) -> None:
    X_tr, X_te, y_tr, y_te = _digits(kind == "mlp")
    nf.manual_seed(0)
    if kind == "mlp":
        model = nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.2),
                              nn.Linear(64, 10))
    else:
        model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Conv2d(8, 16, 3, padding=1),
                              nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(), nn.Dropout(0.2),
                              nn.Linear(256, 10))
    trainer = nf.Trainer(model, optimizer=optim.Adam(model.parameters(), lr=3e-3),
                         metrics=["accuracy"], seed=0, verbose=0)
    trainer.fit(X_tr, y_tr, epochs=4, batch_size=32)
    path = tmp_path / "digits.nnf"
    nf.save(model, path, task="multiclass", labels=[str(i) for i in range(10)],
            input_shape=X_tr.shape[1:])
    assert main(["export", str(path), "-o", str(tmp_path / "digits.onnx")]) == 0
    native = InferenceSession(path)
    expected = native.run(X_te)
    got = ort_run(tmp_path / "digits.onnx", X_te)
    assert_close(got, expected)
    assert (got.argmax(1) == expected.argmax(1)).all()
    assert (expected.argmax(1) == y_te).mean() >= 0.85  # a trained model, not random weights
    via_ort = InferenceSession(path, backend="onnxruntime").predict(X_te)
    pred = native.predict(X_te)
    assert_close(via_ort.probabilities, pred.probabilities)
    assert via_ort.labels == pred.labels


def test_metadata_and_preprocessing(rng: np.random.Generator, tmp_path) -> None:
    X = (rng.standard_normal((40, 5)) * 4 + 3).astype(F32)
    pre = Pipeline([MinMaxScaler((-1, 1)), Standardizer()])
    pre.fit(X)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3), nn.Softmax())
    nf.save(model, tmp_path / "m.nnf", task="multiclass", labels=["x", "y", "z"],
            preprocessing=pre, metrics={"accuracy": 0.5})
    expected = InferenceSession(tmp_path / "m.nnf").predict(X)

    export(tmp_path / "m.nnf", tmp_path / "plain.onnx", opset=13)
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "plain.onnx")).metadata_props}
    assert json.loads(props["task"]) == "multiclass"
    assert json.loads(props["labels"]) == ["x", "y", "z"]
    assert json.loads(props["preprocessing"]) == pre.get_config()
    assert json.loads(props["metrics"]) == {"accuracy": 0.5}
    raw = ort_run(tmp_path / "plain.onnx", pre.transform(X))
    assert_close(raw, expected.probabilities)
    got = InferenceSession(tmp_path / "plain.onnx").predict(X)  # preprocessing from metadata
    assert_close(got.probabilities, expected.probabilities)
    assert got.labels == expected.labels

    assert main(["export", str(tmp_path / "m.nnf"), "-o", str(tmp_path / "self.onnx"),
                 "--include-preprocessing"]) == 0
    m = onnx.load(str(tmp_path / "self.onnx"))
    props = {p.key: p.value for p in m.metadata_props}
    assert "preprocessing" not in props and "preprocessing_in_graph" in props
    assert [n.op_type for n in m.graph.node][:4] == ["Mul", "Add", "Sub", "Div"]
    assert_close(ort_run(tmp_path / "self.onnx", X), expected.probabilities)  # raw input
    got = InferenceSession(tmp_path / "self.onnx").predict(X)  # no double preprocessing
    assert_close(got.probabilities, expected.probabilities)


def test_onnxruntime_backend_has_the_session_api(rng: np.random.Generator) -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1), nn.Sigmoid())
    numpy_s = InferenceSession(model, task="binary", labels=["no", "yes"])
    ort_s = InferenceSession(model, backend="onnxruntime", task="binary", labels=["no", "yes"],
                             threads=2)
    assert ort_s.backend == "onnxruntime" and ort_s.input_shape == (4,)
    for n in (1, 5, 33):
        x = rng.standard_normal((n, 4)).astype(F32)
        assert_close(ort_s.run(x), numpy_s.run(x))
    x = rng.standard_normal((9, 4)).astype(F32)
    a, b = ort_s.predict(x, batch_size=4), numpy_s.predict(x)
    assert_close(a.probabilities, b.probabilities)
    assert a.labels == b.labels and (a.classes == b.classes).all()


def test_export_errors(tmp_path) -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ConfigError, match="expected an opset from 13"):
        export(model, tmp_path / "m.onnx", opset=11)
    with pytest.raises(ConfigError, match="expected an nnforge Module"):
        export(42, tmp_path / "m.onnx")
    with pytest.raises(ConfigError, match="expected an opset"):
        graph_to_model(InferenceSession(model).graph, opset=99)
    assert not (tmp_path / "m.onnx").exists()


def test_export_refuses_directories_and_non_finite_weights(tmp_path) -> None:
    model = nn.Sequential(nn.Linear(3, 2), _bn(nn.BatchNorm1d(2), np.random.default_rng(0)))
    for out in (tmp_path, f"{tmp_path / 'sub'}/"):  # an existing folder, a path ending in "/"
        with pytest.raises(ConfigError, match="it is a directory; expected a file path"):
            export(model, out)
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no temp file, no folder made
    assert export(model, tmp_path / "m.onnx", opset=np.int64(17)).opset_import[0].version == 17
    for value in (np.nan, np.inf):
        model[1].running_var = np.array([1.0, value], F32)
        with pytest.raises(ConfigError, match=r"non-finite weights: '1\.running_var' has 1"):
            export(model, tmp_path / "bad.onnx")
    assert not (tmp_path / "bad.onnx").exists()


class _ScaledShifted(nn.Module):
    """Parameters used through Mul and Add, not a Linear: a learnable scale and offset."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.scale = nn.Parameter(np.ones(2, F32))
        self.pos = nn.Parameter(np.zeros(2, F32))

    def forward(self, x):
        return self.fc(x) * self.scale + self.pos


def test_export_refuses_nan_in_a_parameter_used_through_mul_or_add(tmp_path) -> None:
    """NaN is refused in every weight, not only in those of Linear/Conv/BN layers."""
    for name in ("scale", "pos"):
        model = _ScaledShifted()
        getattr(model, name).data[1] = np.nan
        with pytest.raises(ConfigError, match="non-finite weights"):
            export(model, tmp_path / "m.onnx", input_shape=(3,))
    assert not (tmp_path / "m.onnx").exists()


def test_float64_model_with_preprocessing_in_the_graph(rng: np.random.Generator,
                                                       tmp_path) -> None:
    X = rng.standard_normal((20, 3)) * 5 + 2
    model = nn.Sequential(nn.Linear(3, 2)).double()
    for pre in (Standardizer().fit(X), MinMaxScaler((-1, 1)).fit(X)):
        graph = InferenceSession(model, optimization="none").graph
        graph.manifest = {"task": "regression", "preprocessing": pre.get_config()}
        export(graph, tmp_path / "m64.onnx", include_preprocessing=True)  # Sub/Div in float64
        got = ort_run(tmp_path / "m64.onnx", X)
        with nf.no_grad():
            expected = model(pre.transform(X).astype(np.float64)).data
        assert got.dtype == np.float64
        assert_close(got, expected)


def test_onnxruntime_backend_names_what_it_cannot_run(rng: np.random.Generator) -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.LeakyReLU(0.2)).double()
    x = rng.standard_normal((5, 4))
    try:  # ONNX Runtime has no float64 LeakyRelu kernel (so far): an nnforge error, not ORT's
        session = InferenceSession(model, backend="onnxruntime")
    except ConfigError as exc:
        assert "ONNX Runtime cannot run this float64 model" in str(exc)
        assert "LeakyRelu" in str(exc) and "backend='numpy'" in str(exc)
    else:
        assert_close(session.run(x), InferenceSession(model).run(x))


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("name,make,shape", [
    ("tanh GELU", lambda: nn.Sequential(nn.Linear(4, 6), nn.GELU(approximate="tanh")), (7, 4)),
    ("Flatten(1, 2)", lambda: nn.Sequential(nn.Conv2d(2, 3, 1), nn.Flatten(1, 2)), (3, 2, 5, 4)),
    ("Flatten(2, 3)", lambda: nn.Sequential(nn.Conv2d(2, 3, 1), nn.Flatten(2, 3)), (3, 2, 5, 4)),
    ("Conv2d(same, even)", lambda: nn.Sequential(nn.Conv2d(2, 3, 4, padding="same")),
     (3, 2, 9, 8)),
    ("Conv2d(same) ReLU pool", lambda: nn.Sequential(
        nn.Conv2d(2, 3, (2, 3), padding="same", dilation=(3, 1)), nn.ReLU(), nn.MaxPool2d(2)),
     (3, 2, 8, 8)),
    ("Conv2d(valid)", lambda: nn.Sequential(nn.Conv2d(2, 3, (4, 2), padding="valid")),
     (3, 2, 9, 8)),
])
def test_pytorch_layer_options_export_and_import(rng, tmp_path, opset, name, make, shape):
    model = make()
    x = rng.standard_normal(shape).astype(F32) * 2
    _check_export(model, x, tmp_path / "m.onnx", opset)
    m = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(m, full_check=True)
    ops = [n.op_type for n in m.graph.node]
    if name == "tanh GELU":
        assert ("Gelu" in ops) == (opset >= 20) and "Erf" not in ops
    with nf.no_grad():
        eager = model.eval()(x).data
    imported = InferenceSession(str(tmp_path / "m.onnx"))
    assert_close(imported.run(x), eager)
    if name == "tanh GELU":  # both spellings come back as one Gelu node
        assert [n.op for n in imported.graph.nodes] == ["Gemm", "Gelu"]


SEQUENCE = {
    "Conv1d": lambda r: nn.Conv1d(4, 6, 3),
    "Conv1d(stride, padding)": lambda r: nn.Conv1d(4, 6, 3, stride=2, padding=1),
    "Conv1d(dilation, no bias)": lambda r: nn.Conv1d(4, 3, 2, dilation=3, bias=False),
    "Conv1d(groups, same)": lambda r: nn.Conv1d(4, 8, 4, padding="same", groups=2),
    "Conv1d(depthwise)": lambda r: nn.Conv1d(4, 4, 3, groups=4),
    "MaxPool1d": lambda r: nn.MaxPool1d(2),
    "MaxPool1d(stride, padding)": lambda r: nn.MaxPool1d(3, stride=2, padding=1),
    "MaxPool1d(ceil_mode)": lambda r: nn.MaxPool1d(2, ceil_mode=True),
    "AvgPool1d": lambda r: nn.AvgPool1d(2),
    "AvgPool1d(padding)": lambda r: nn.AvgPool1d(3, stride=2, padding=1),
    "AvgPool1d(padding, exclude pad)": lambda r: nn.AvgPool1d(3, 1, 1, count_include_pad=False),
    "AvgPool1d(ceil_mode, padding)": lambda r: nn.AvgPool1d(3, 2, 1, ceil_mode=True),
    "AdaptiveAvgPool1d(1)": lambda r: nn.AdaptiveAvgPool1d(1),
    "AdaptiveAvgPool1d(3)": lambda r: nn.AdaptiveAvgPool1d(3),
    "BatchNorm1d": lambda r: _bn(nn.BatchNorm1d(4), r),
    "ReLU": lambda r: nn.ReLU(), "Flatten": lambda r: nn.Flatten(),
}


@pytest.mark.parametrize("name", list(SEQUENCE))
def test_each_sequence_layer_matches_onnx_runtime(rng: np.random.Generator, tmp_path,
                                                  name) -> None:
    model = nn.Sequential(nn.Conv1d(2, 4, 1), SEQUENCE[name](rng))
    x = rng.standard_normal((3, 2, 9)).astype(F32)
    _check_export(model, x, tmp_path / "m.onnx")


def test_1d_layers_export_as_1d_onnx_ops(tmp_path) -> None:
    model = nn.Sequential(nn.Conv1d(2, 4, 4, padding="same", dilation=2, groups=2),
                          nn.MaxPool1d(3, 2, 1), nn.AvgPool1d(2, count_include_pad=False))
    export(model, tmp_path / "m.onnx", input_shape=(2, 16))
    m = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(m, full_check=True)
    attrs = {n.op_type: {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
             for n in m.graph.node}
    assert list(attrs) == ["Conv", "MaxPool", "AveragePool"]  # no Unsqueeze/Squeeze around them
    assert attrs["Conv"] == {"kernel_shape": [4], "strides": [1], "pads": [3, 3],
                             "dilations": [2], "group": 2}
    assert attrs["MaxPool"] == {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}
    assert attrs["AveragePool"]["kernel_shape"] == [2] and attrs["AveragePool"]["pads"] == [0, 0]
    assert [i.dims for i in m.graph.initializer if i.name.endswith("weight")] == [[4, 1, 4]]
    x = np.random.default_rng(0).standard_normal((2, 2, 16)).astype(F32)
    imported = InferenceSession(str(tmp_path / "m.onnx"))  # the import lifts them to 2-D
    assert_close(imported.run(x), InferenceSession(model).run(x))


def test_imputer_goes_into_the_graph_as_where_isnan(rng: np.random.Generator, tmp_path) -> None:
    """include_preprocessing refused a model whose preprocessing starts with an impute step."""
    X = (rng.standard_normal((40, 4)) * 3 + 1).astype(F32)
    X[rng.random(X.shape) < 0.25] = np.nan
    X[:, 3] = np.nan  # a feature never seen: filled with fill_value
    pre = Pipeline([Imputer("median", fill_value=-2.0), Standardizer()])
    pre.fit(X)
    model = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3), nn.Softmax())
    nf.save(model, tmp_path / "m.nnf", task="multiclass", labels=["x", "y", "z"],
            preprocessing=pre)
    expected = InferenceSession(tmp_path / "m.nnf").predict(X)
    onnx_model = export(tmp_path / "m.nnf", tmp_path / "self.onnx", include_preprocessing=True)
    ops = [n.op_type for n in onnx_model.graph.node]
    assert ops[:4] == ["IsNaN", "Where", "Sub", "Div"]
    assert_close(ort_run(tmp_path / "self.onnx", X), expected.probabilities)  # NaN in
    # nnforge reads its own export; the session's NaN check stays off, as the graph fills them
    got = InferenceSession(tmp_path / "self.onnx", check_finite=False).predict(X)
    assert_close(got.probabilities, expected.probabilities)
    assert_close(evaluate_graph(load(tmp_path / "self.onnx"), X)[0], expected.probabilities)


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_nnforge_runs_its_own_export_with_an_imputer_on_nan(rng: np.random.Generator, tmp_path,
                                                             backend: str) -> None:
    """The session refused NaN before the graph could fill it in: 'expected finite input'."""
    X = (rng.standard_normal((30, 4)) * 2).astype(F32)
    X[rng.random(X.shape) < 0.3] = np.nan
    pre = Pipeline([Imputer("mean"), Standardizer()]).fit(X)
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    nf.save(model, tmp_path / "m.nnf", task="multiclass", preprocessing=pre)
    expected = InferenceSession(tmp_path / "m.nnf").predict(X)
    export(tmp_path / "m.nnf", tmp_path / "m.onnx", include_preprocessing=True)
    session = InferenceSession(tmp_path / "m.onnx", backend=backend)
    assert session.fills_missing
    got = session.predict(X)
    np.testing.assert_array_equal(got.classes, expected.classes)
    assert_close(got.probabilities, expected.probabilities)
    # run takes NaN too: the raw outputs of the .nnf model on the preprocessed rows
    assert_close(session.run(X), InferenceSession(tmp_path / "m.nnf").run(pre.transform(X)))
    X[4, 2] = -np.inf  # infinity is no missing value
    for call in (session.predict, session.run):
        with pytest.raises(nf.errors.DataError, match="found -inf at row 4, position 2"):
            call(X)
    # preprocessing kept in the metadata: predict fills NaN in, but the graph's own input
    # is the model's, so run refuses it
    export(tmp_path / "m.nnf", tmp_path / "bare.onnx")
    bare = InferenceSession(tmp_path / "bare.onnx", backend=backend)
    assert bare.fills_missing
    with pytest.raises(nf.errors.DataError, match="expected finite input values, found nan"):
        bare.run(np.where(np.isinf(X), 0, X))
