"""InferenceSession: equal to the eager forward at every level, predict, errors, threads."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest
from helpers import eager, run_in_threads, stats_bn
from hypothesis import given, settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_info

import nnforge as nf
from nnforge import nn
from nnforge.data.preprocessing import Standardizer
from nnforge.errors import ConfigError, DataError, DTypeError, ModelFileError, ShapeError
from nnforge.graph.ir import Graph, Node, ValueInfo
from nnforge.onnx import exporter
from nnforge.runtime import InferenceSession, Prediction
from nnforge.runtime.ort_backend import ORT_OPSET

LEVELS = ("none", "basic", "all")
F32 = np.float32


def assert_close(got: np.ndarray, expected: np.ndarray, rtol: float = 1e-6) -> None:
    """Equal to rtol, relative to each value or to the output's scale (float32 sums)."""
    np.testing.assert_allclose(got, expected, rtol=rtol,
                               atol=rtol * max(1.0, float(np.abs(expected).max())))



LAYERS = {
    "Linear": lambda: nn.Linear(6, 5),
    "Linear(bias=False)": lambda: nn.Linear(6, 5, bias=False),
    "ReLU": nn.ReLU, "LeakyReLU": lambda: nn.LeakyReLU(0.2), "Sigmoid": nn.Sigmoid,
    "Tanh": nn.Tanh, "GELU": nn.GELU, "Softmax": nn.Softmax, "LogSoftmax": nn.LogSoftmax,
    "Identity": nn.Identity, "Dropout": lambda: nn.Dropout(0.5), "Flatten": nn.Flatten,
    "SiLU": nn.SiLU, "ELU": lambda: nn.ELU(0.5), "Softplus": nn.Softplus,
    "Softplus(beta, threshold)": lambda: nn.Softplus(2.0, 1.0),
    "LayerNorm": lambda: nn.LayerNorm(6),
    "LayerNorm(affine=False)": lambda: nn.LayerNorm(6, elementwise_affine=False),
}


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("level", LEVELS)
def test_each_layer_matches_eager(rng: np.random.Generator, name: str, level: str) -> None:
    model = nn.Sequential(nn.Linear(4, 6), LAYERS[name]())
    x = (rng.standard_normal((7, 4)) * 3).astype(F32)
    session = InferenceSession(model, optimization=level)
    assert_close(session.run(x), eager(model, x))
    assert_close(session.run(x[:1]), eager(model, x[:1]))  # batch size 1


ACTS = [nn.ReLU, lambda: nn.LeakyReLU(0.1), nn.Sigmoid, nn.Tanh, nn.GELU, nn.Identity,
        lambda: nn.Dropout(0.3)]


@st.composite
def mlp_stacks(draw: st.DrawFn) -> tuple[nn.Sequential, int]:
    """A random stack of dense layers, activations, dropout and an optional softmax head."""
    width = draw(st.integers(1, 12))
    layers: list[nn.Module] = []
    first = width
    for _ in range(draw(st.integers(1, 4))):
        out = draw(st.integers(1, 12))
        layers.append(nn.Linear(width, out, bias=draw(st.booleans())))
        for act in draw(st.lists(st.sampled_from(range(len(ACTS))), max_size=2)):
            layers.append(ACTS[act]())
        width = out
    head = draw(st.sampled_from([None, nn.Softmax, nn.LogSoftmax]))
    if head is not None:
        layers.append(head())
    return nn.Sequential(*layers), first


@settings(max_examples=25, deadline=None, derandomize=True)
@given(stack=mlp_stacks(), batch=st.integers(1, 9), seed=st.integers(0, 2**16))
def test_random_stacks_match_eager(stack: tuple[nn.Sequential, int], batch: int,
                                   seed: int) -> None:
    model, width = stack
    x = np.random.default_rng(seed).standard_normal((batch, width)).astype(F32)
    expected = eager(model, x)
    for level in LEVELS:
        assert_close(InferenceSession(model, optimization=level).run(x), expected)


def test_session_exposes_graph_shapes_and_reuses_plans(rng: np.random.Generator) -> None:
    model = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Dropout(0.1), nn.Linear(6, 3))
    session = InferenceSession(model)
    assert session.input_shape == (4,) and session.output_shape == (3,)
    assert [n.op for n in session.graph.nodes] == ["FusedGemm", "Gemm"]
    assert session.manifest == {}
    x = rng.standard_normal((5, 4)).astype(F32)
    first = session.run(x)
    second = session.run(x)
    assert first is not second  # callers own their results
    assert_close(first, second)
    assert len(session._pools[(5, 4)]) == 1  # one plan, reused


def test_run_accepts_lists_ints_and_float64(rng: np.random.Generator) -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    session = InferenceSession(model)
    x = rng.integers(-3, 3, (4, 3))
    expected = eager(model, x.astype(F32))
    assert_close(session.run(x), expected)
    assert_close(session.run(x.astype(np.float64)), expected)
    assert_close(session.run(x.tolist()), expected)
    assert_close(session.run(np.asfortranarray(x.astype(F32))), expected)


def test_input_errors() -> None:
    session = InferenceSession(nn.Sequential(nn.Linear(3, 2)))
    with pytest.raises(ShapeError, match=r"expected input of shape \(N, 3\), found \(2, 4\)"):
        session.run(np.zeros((2, 4), F32))
    with pytest.raises(ShapeError, match="expected input of shape"):
        session.run(np.zeros(3, F32))
    with pytest.raises(DTypeError, match="expected numeric input"):
        session.run(np.array([["a", "b", "c"]]))
    with pytest.raises(DataError, match="expected finite input values, found nan at row 1"):
        session.run(np.array([[0, 0, 0], [0, np.nan, 0]], F32))
    with pytest.raises(DataError, match="found inf"):
        session.predict(np.array([[0, 0, np.inf]]))
    with pytest.raises(ShapeError, match="expected 3 features per row, found 5"):
        session.predict(np.zeros((4, 5)))
    with pytest.raises(DTypeError, match="expected numeric input"):
        session.predict([["x", "y", "z"]])
    with pytest.raises(ConfigError, match="batch_size"):
        session.predict(np.zeros((4, 3)), batch_size=0)


def test_a_dict_by_the_wrong_name_is_one_clear_error() -> None:
    session = InferenceSession(nn.Sequential(nn.Linear(3, 2)))
    x = np.ones((2, 3), F32)
    # it was a DTypeError about dtype object, naming neither the key nor the input
    with pytest.raises(ConfigError, match=r"^unknown input name 'x'; missing input 'input': "
                       r"expected a dict with the model's input name \['input'\]$"):
        session.run({"x": x})
    with pytest.raises(ConfigError, match=r"^unknown input name 'x': expected"):
        session.run({"input": x, "x": x})
    np.testing.assert_array_equal(session.run({"input": x}), session.run(x))


def test_constructor_errors(tmp_path: object) -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ConfigError, match="expected backend"):
        InferenceSession(model, backend="tpu")
    with pytest.raises(ConfigError, match="expected optimization level"):
        InferenceSession(model, optimization="max")
    with pytest.raises(ModelFileError):
        InferenceSession(str(tmp_path) + "/missing.nnf")
    with pytest.raises(ConfigError, match="expected a model path"):
        InferenceSession(42)


@pytest.mark.parametrize("task,outputs,labels", [
    ("multiclass", 3, ["a", "b"]), ("multiclass", 3, ["a", "b", "c", "d"]),
    ("binary", 1, ["no"]), ("binary", 2, ["a", "b", "c"]),
    ("multilabel", 3, ["a", "b"]), ("multilabel", 3, ["a", "b", "c", "d"])])
def test_labels_that_do_not_fit_the_outputs_are_refused(task: str, outputs: int,
                                                        labels: list[str]) -> None:
    # were an IndexError from the label lookup, or silently ignored extra names
    session = InferenceSession(nn.Sequential(nn.Linear(4, outputs)), task=task, labels=labels)
    for rows in (5, 0):
        with pytest.raises(ConfigError, match=f"needs .* labels .*found {len(labels)}"):
            session.predict(np.full((rows, 4), 3.0, F32))


def test_labels_given_as_an_array_come_back_as_plain_values() -> None:
    # NumPy scalars from an array of labels made to_dict() unserializable (np.int64)
    model = nn.Sequential(nn.Linear(4, 3))
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(F32)
    for labels in (np.array([10, 20, 30]), np.array(["a", "b", "c"])):
        pred = InferenceSession(model, task="multiclass", labels=labels).predict(x)
        assert all(type(v) in (int, str) for v in pred.labels)
        json.dumps(pred.to_dict())


@pytest.mark.parametrize("threshold", [None, "0.5", float("nan"), 1.5, -0.1, True])
def test_bad_threshold_is_a_config_error(threshold: object) -> None:
    # were a TypeError/ValueError from float(), or a cut giving every row the same class
    with pytest.raises(ConfigError, match="threshold"):
        InferenceSession(nn.Sequential(nn.Linear(4, 1)), task="binary", threshold=threshold)


def test_boolean_batch_size_and_threads_are_refused() -> None:
    model = nn.Sequential(nn.Linear(3, 2))
    with pytest.raises(ConfigError, match="batch_size"):
        InferenceSession(model).predict(np.zeros((4, 3)), batch_size=True)
    with pytest.raises(ConfigError, match="threads"):
        InferenceSession(model, threads=True)


def _logits_model(outputs: int, head: nn.Module | None = None) -> nn.Sequential:
    layers = [nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, outputs)]
    return nn.Sequential(*layers, *([head] if head is not None else []))


@pytest.mark.parametrize("head", [None, nn.Softmax(), nn.LogSoftmax()])
def test_predict_multiclass(rng: np.random.Generator, head: nn.Module | None) -> None:
    model = _logits_model(3, head)
    x = rng.standard_normal((10, 4)).astype(F32)
    session = InferenceSession(model, task="multiclass", labels=["a", "b", "c"])
    pred = session.predict(x, batch_size=3)
    raw = eager(model, x)
    if isinstance(head, nn.LogSoftmax):  # (a subclass of Softmax: test it first)
        probs = np.exp(raw)
    elif isinstance(head, nn.Softmax):
        probs = raw
    else:
        probs = np.exp(raw) / np.exp(raw).sum(1, keepdims=True)
    assert_close(pred.probabilities, probs, 1e-5)
    np.testing.assert_array_equal(pred.classes, probs.argmax(1))
    assert pred.labels == [["a", "b", "c"][c] for c in pred.classes]
    d = pred.to_dict()
    assert d["task"] == "multiclass" and len(d["probabilities"]) == 10 and "values" not in d


@pytest.mark.parametrize("head", [None, nn.Sigmoid()])
def test_predict_binary(rng: np.random.Generator, head: nn.Module | None) -> None:
    model = _logits_model(1, head)
    x = rng.standard_normal((9, 4)).astype(F32)
    raw = eager(model, x)[:, 0]
    p = raw if head is not None else 1 / (1 + np.exp(-raw))
    pred = InferenceSession(model, task="binary", threshold=0.4).predict(x)
    assert_close(pred.probabilities, p, 1e-5)
    np.testing.assert_array_equal(pred.classes, (p >= 0.4).astype(int))
    assert pred.labels is None and pred.threshold == 0.4


@pytest.mark.parametrize("tail", [nn.Dropout(0.3), nn.Identity(), nn.Flatten()])
@pytest.mark.parametrize("level", LEVELS)
def test_predict_sees_the_final_activation_behind_pass_through_layers(
        rng: np.random.Generator, tail: nn.Module, level: str) -> None:
    # at level "none" (and for a Flatten at any level) the last node is not the Softmax or
    # Sigmoid, which predict() must not apply a second time
    x = rng.standard_normal((9, 4)).astype(F32)
    model = nn.Sequential(*_logits_model(3, nn.Softmax())._modules.values(), tail)
    pred = InferenceSession(model, optimization=level, task="multiclass").predict(x)
    assert_close(pred.probabilities, eager(model, x), 1e-5)
    binary = nn.Sequential(*_logits_model(1, nn.Sigmoid())._modules.values(), tail)
    pred = InferenceSession(binary, optimization=level, task="binary").predict(x)
    assert_close(pred.probabilities, eager(binary, x)[:, 0], 1e-5)


@pytest.mark.parametrize("level", LEVELS)
def test_predict_sees_the_final_activation_behind_a_flatten_of_image_outputs(
        rng: np.random.Generator, level: str) -> None:
    # a (N, C, 1, 1) Softmax over the channels, or an elementwise Sigmoid of any shape, then
    # Flatten: predict() once applied the Softmax or Sigmoid a second time (errors ~0.4)
    x = rng.standard_normal((4, 2, 6, 6)).astype(F32) * 5
    for head, task in ((nn.Softmax(axis=1), "multiclass"), (nn.Sigmoid(), "multilabel")):
        model = nn.Sequential(nn.Conv2d(2, 3, 1), nn.GlobalAvgPool2d(keepdims=True), head,
                              nn.Flatten())
        pred = InferenceSession(model, optimization=level, task=task).predict(x)
        assert_close(pred.probabilities, eager(model, x), 1e-5)
    pixels = nn.Sequential(nn.Conv2d(2, 2, 1), nn.Sigmoid(), nn.Flatten())
    pred = InferenceSession(pixels, optimization=level, task="multilabel").predict(x)
    assert_close(pred.probabilities, eager(pixels, x), 1e-5)


def test_predict_without_finite_check_passes_nan_through(rng: np.random.Generator) -> None:
    x = rng.standard_normal((5, 4)).astype(F32)
    x[3, 1] = np.nan
    model = _logits_model(2)
    with pytest.raises(DataError, match="at row 3, position 1"):
        InferenceSession(model, task="regression").predict(x, batch_size=2)
    values = InferenceSession(model, task="regression", check_finite=False).predict(x).values
    assert np.isnan(values[3]).all() and np.isfinite(np.delete(values, 3, axis=0)).all()


def test_predict_multilabel_and_regression(rng: np.random.Generator) -> None:
    model = _logits_model(3)
    x = rng.standard_normal((6, 4)).astype(F32)
    raw = eager(model, x)
    pred = InferenceSession(model, task="multilabel", labels=["x", "y", "z"]).predict(x)
    p = 1 / (1 + np.exp(-raw))
    assert_close(pred.probabilities, p, 1e-5)
    np.testing.assert_array_equal(pred.classes, (p >= 0.5).astype(int))
    assert pred.labels[0] == [n for n, on in zip("xyz", p[0] >= 0.5) if on]
    single = _logits_model(1)
    reg = InferenceSession(single, task="regression").predict(x)
    assert reg.values.shape == (6,) and reg.classes is None
    assert_close(reg.values, eager(single, x)[:, 0])
    one = InferenceSession(model, task="regression").predict(x[0])  # one sample, no batch dim
    assert one.values.shape == (1, 3)
    assert isinstance(one, Prediction) and len(one) == 1


def test_nnf_file_with_preprocessing(tmp_path: object, rng: np.random.Generator) -> None:
    x = (rng.standard_normal((50, 4)) * 10 + 3).astype(F32)
    scaler = Standardizer().fit(x)
    model = _logits_model(3)
    path = f"{tmp_path}/m.nnf"
    nf.save(model, path, task="multiclass", labels=["a", "b", "c"], preprocessing=scaler)
    session = InferenceSession(path)
    assert session.manifest["task"] == "multiclass" and session.input_shape == (4,)
    pred = session.predict(x, batch_size=16)
    logits = eager(model, scaler.transform(x))
    np.testing.assert_array_equal(pred.classes, logits.argmax(1))
    assert pred.labels[:3] == [["a", "b", "c"][c] for c in logits.argmax(1)[:3]]
    assert_close(session.run(scaler.transform(x)), logits)


def test_32_threads_share_one_session(rng: np.random.Generator) -> None:
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 8), nn.Tanh(),
                          nn.Linear(8, 4), nn.Softmax())
    session = InferenceSession(model)
    inputs = [rng.standard_normal((1 + i % 5, 16)).astype(F32) for i in range(32)]
    expected = [eager(model, x) for x in inputs]
    barrier = threading.Barrier(32)
    failures: list[str] = []

    def worker(i: int) -> None:
        barrier.wait()
        for k in range(40):
            j = (i + k) % 32  # every thread walks all inputs, so shapes collide constantly
            got = session.run(inputs[j])
            if not np.allclose(got, expected[j], rtol=1e-5, atol=1e-6):
                failures.append(f"thread {i} input {j}")

    run_in_threads(worker, 32)
    assert failures == []



CONV_LAYERS = {
    "Conv2d": lambda r: nn.Conv2d(3, 4, 3),
    "Conv2d(pad,stride)": lambda r: nn.Conv2d(3, 4, 3, stride=2, padding=1),
    "Conv2d(dilation,no bias)": lambda r: nn.Conv2d(3, 2, 3, dilation=2, bias=False),
    "Conv2d(groups)": lambda r: nn.Conv2d(3, 6, 3, groups=3, padding=1),
    "MaxPool2d": lambda r: nn.MaxPool2d(2),
    "MaxPool2d(pad)": lambda r: nn.MaxPool2d(3, stride=2, padding=1),
    "AvgPool2d": lambda r: nn.AvgPool2d(2),
    "AvgPool2d(pad)": lambda r: nn.AvgPool2d(3, stride=2, padding=1),
    "AvgPool2d(pad,exclude)": lambda r: nn.AvgPool2d(3, 1, 1, count_include_pad=False),
    "MaxPool2d(ceil)": lambda r: nn.MaxPool2d(2, ceil_mode=True),
    "MaxPool2d(ceil,pad)": lambda r: nn.MaxPool2d(2, padding=1, ceil_mode=True),
    "AvgPool2d(ceil)": lambda r: nn.AvgPool2d(3, 2, 1, ceil_mode=True),
    "AvgPool2d(ceil,exclude)": lambda r: nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False),
    "GlobalAvgPool2d": lambda r: nn.GlobalAvgPool2d(),
    "GlobalAvgPool2d(keepdims)": lambda r: nn.GlobalAvgPool2d(keepdims=True),
    "AdaptiveAvgPool2d(1)": lambda r: nn.AdaptiveAvgPool2d(1),
    "AdaptiveAvgPool2d(3,4)": lambda r: nn.AdaptiveAvgPool2d((3, 4)),
    "AdaptiveAvgPool2d(3,None)": lambda r: nn.AdaptiveAvgPool2d((3, None)),
    "BatchNorm2d": lambda r: stats_bn(nn.BatchNorm2d, 3, r),
}


@pytest.mark.parametrize("name", list(CONV_LAYERS))
@pytest.mark.parametrize("level", LEVELS)
def test_each_conv_layer_matches_eager(rng: np.random.Generator, name: str, level: str) -> None:
    model = nn.Sequential(CONV_LAYERS[name](rng))
    x = rng.standard_normal((5, 3, 9, 8)).astype(F32)
    session = InferenceSession(model, optimization=level, input_shape=(3, 9, 8))
    assert_close(session.run(x), eager(model, x))
    assert_close(session.run(x[:1]), eager(model, x[:1]))


def test_batchnorm1d_both_layouts(rng: np.random.Generator) -> None:
    for shape in ((6, 4), (6, 4, 5)):
        model = nn.Sequential(stats_bn(nn.BatchNorm1d, 4, rng))
        x = rng.standard_normal(shape).astype(F32)
        for level in LEVELS:
            session = InferenceSession(model, optimization=level, input_shape=shape[1:])
            assert_close(session.run(x), eager(model, x))


def _lenet(rng: np.random.Generator, act: type, pool: type, bn: bool) -> nn.Sequential:
    layers = [nn.Conv2d(1, 6, 5, padding=2), *([stats_bn(nn.BatchNorm2d, 6, rng)] if bn else []),
              act(), pool(2), nn.Conv2d(6, 16, 5), act(), pool(2), nn.Flatten(),
              nn.Linear(400, 120), *([stats_bn(nn.BatchNorm1d, 120, rng)] if bn else []), act(),
              nn.Dropout(0.2), nn.Linear(120, 84), act(), nn.Linear(84, 10)]
    return nn.Sequential(*layers)


@pytest.mark.parametrize(("act", "pool", "bn"), [(nn.ReLU, nn.MaxPool2d, False),
                                                 (nn.Tanh, nn.AvgPool2d, True),
                                                 (nn.Sigmoid, nn.MaxPool2d, True)])
def test_lenet_matches_eager_and_fuses(rng: np.random.Generator, act: type, pool: type,
                                       bn: bool) -> None:
    model = _lenet(rng, act, pool, bn)
    x = rng.standard_normal((9, 1, 28, 28)).astype(F32)
    expected = eager(model, x)
    for level in LEVELS:
        session = InferenceSession(model, optimization=level, input_shape=(1, 28, 28))
        assert_close(session.run(x), expected, 2e-6 if bn else 1e-6)
        assert_close(session.run(x[3:4]), expected[3:4], 2e-6 if bn else 1e-6)
    ops = session.graph.count_ops()  # level "all"
    assert "BatchNormalization" not in ops and "Dropout" not in ops
    assert ops["FusedConv"] == 2 and ops["FusedGemm"] == 2
    if pool is nn.MaxPool2d:  # the pools ride inside the convolutions
        assert "MaxPool" not in ops
        assert session.graph.nodes[0].attrs["pool"] == "MaxPool"


@settings(max_examples=15, deadline=None, derandomize=True)
@given(seed=st.integers(0, 2**16), channels=st.integers(1, 4), size=st.integers(5, 10),
       convs=st.lists(st.tuples(st.integers(1, 5), st.integers(1, 3), st.integers(1, 2),
                                st.integers(0, 1), st.sampled_from(["relu", "tanh", "max",
                                                                    "avg", "bn", "none"])),
                      min_size=1, max_size=3))
def test_random_conv_stacks_match_eager(seed: int, channels: int, size: int,
                                        convs: list[tuple]) -> None:
    rng = np.random.default_rng(seed)
    layers: list[nn.Module] = []
    c, s = channels, size
    for out, k, stride, pad, extra in convs:
        if s + 2 * pad < k:
            continue
        layers.append(nn.Conv2d(c, out, k, stride=stride, padding=pad))
        c, s = out, (s + 2 * pad - k) // stride + 1
        if extra == "relu":
            layers.append(nn.ReLU())
        elif extra == "tanh":
            layers.append(nn.Tanh())
        elif extra == "bn":
            layers.append(stats_bn(nn.BatchNorm2d, c, rng))
        elif extra in ("max", "avg") and s >= 2:
            layers.append(nn.MaxPool2d(2) if extra == "max" else nn.AvgPool2d(2))
            s //= 2
    layers += [nn.Flatten(), nn.Linear(c * s * s, 3)]
    model = nn.Sequential(*layers)
    x = rng.standard_normal((3, channels, size, size)).astype(F32)
    expected = eager(model, x)
    for level in LEVELS:
        got = InferenceSession(model, optimization=level, input_shape=x.shape[1:]).run(x)
        assert_close(got, expected, 2e-6)


def test_threads_split_convolution_chunks(rng: np.random.Generator) -> None:
    model = _lenet(rng, nn.ReLU, nn.MaxPool2d, False)
    x = rng.standard_normal((67, 1, 28, 28)).astype(F32)  # many chunks, a ragged last one
    expected = eager(model, x)
    session = InferenceSession(model, threads=3, input_shape=(1, 28, 28))
    for _ in range(3):
        assert_close(session.run(x), expected)
    with pytest.raises(ConfigError, match="threads"):
        InferenceSession(model, threads=0)


@pytest.mark.parametrize("rows", [1, 6])
def test_non_finite_inputs_caught_by_first_gemm(rng: np.random.Generator, rows: int) -> None:
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    session = InferenceSession(model)
    with np.errstate(over="ignore", invalid="ignore"):  # BLAS flags what it was given
        for bad in (np.nan, np.inf, -np.inf):
            x = rng.standard_normal((rows, 5)).astype(F32)
            x[rows - 1, 3] = bad
            with pytest.raises(DataError, match=f"at row {rows - 1}, position 3"):
                session.run(x)
        assert session._pools[(rows, 5)][0].probed == {0}  # the Gemm did the check
        huge = np.full((rows, 5), 3e38, F32)  # finite input whose products overflow: no error
        assert session.run(huge).shape == (rows, 2)
        unchecked = InferenceSession(model, check_finite=False)
        x[0, 0] = np.nan
        assert np.isnan(unchecked.run(x)).any()


def test_non_finite_inputs_caught_before_convolution(rng: np.random.Generator) -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.Flatten())
    session = InferenceSession(model, input_shape=(1, 5, 5))
    x = rng.standard_normal((2, 1, 5, 5)).astype(F32)
    x[1, 0, 1, 1] = np.nan  # a pixel the stride-2 windows never read: still rejected
    with pytest.raises(DataError, match=r"at row 1, position \(0, 1, 1\)"):
        session.run(x)


def test_threaded_session_called_from_many_threads(rng: np.random.Generator) -> None:
    model = _lenet(rng, nn.ReLU, nn.MaxPool2d, False)
    session = InferenceSession(model, threads=2, input_shape=(1, 28, 28))
    inputs = [rng.standard_normal((8 + i % 3, 1, 28, 28)).astype(F32) for i in range(12)]
    expected = [eager(model, x) for x in inputs]
    failures: list[int] = []
    barrier = threading.Barrier(12)

    def worker(i: int) -> None:
        barrier.wait()
        for k in range(6):
            j = (i + k) % 12
            if not np.allclose(session.run(inputs[j]), expected[j], rtol=1e-5, atol=1e-5):
                failures.append(j)

    run_in_threads(worker, 12)
    assert failures == []


def test_threads_split_gemm_rows_and_restore_blas(rng: np.random.Generator,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import nnforge.runtime.kernels as kernels  # noqa: PLC0415

    monkeypatch.setattr(kernels, "PARALLEL_MNK", 1 << 20)  # row splitting is off by default
    model = nn.Sequential(nn.Linear(300, 200), nn.Tanh(), nn.Linear(200, 40), nn.ReLU(),
                          nn.Linear(40, 3))
    x = rng.standard_normal((101, 300)).astype(F32)  # 101*300*200 multiply-adds: split
    session = InferenceSession(model, threads=3)
    before = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    assert_close(session.run(x), eager(model, x))
    plan = session._pools[x.shape][0]
    assert plan.parallel
    after = [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    assert after == before  # BLAS went serial for the run only
    with pytest.raises(DataError):  # the probe runs in every row block
        bad = x.copy()
        bad[77, 5] = np.nan
        session.run(bad)
    assert [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"] == before


# -- batches of 0 rows -------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_run_on_zero_rows_gives_empty_outputs(backend: str) -> None:
    dense = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3))
    convs = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3))
    for model, sample in ((dense, (4,)), (convs, (1, 8, 8))):
        session = InferenceSession(model, backend=backend, input_shape=sample)
        for _ in range(2):  # the second call takes the pooled plan
            out = session.run(np.zeros((0, *sample), F32))
            assert out.shape == (0, 3) and out.dtype == F32
        assert session.run(np.ones((2, *sample), F32)).shape == (2, 3)
        assert session.predict(np.zeros((0, *sample), F32)).values.shape == (0, 3)
    with pytest.raises(ShapeError, match=r"expected input of shape \(N, 4\), found \(0, 5\)"):
        InferenceSession(dense, backend=backend).run(np.zeros((0, 5), F32))


def test_zero_rows_of_a_model_with_several_outputs() -> None:
    graph = Graph([Node("Relu", ["x"], ["y"]), Node("Sigmoid", ["x"], ["z"])],
                  [ValueInfo("x", ("N", 2, 3))],
                  [ValueInfo("y", ("N", 2, 3)), ValueInfo("z", ("N", 2, 3))])
    out = InferenceSession(graph).run(np.zeros((0, 2, 3), F32))
    assert {k: v.shape for k, v in out.items()} == {"y": (0, 2, 3), "z": (0, 2, 3)}


# -- ONNX Runtime's opset ----------------------------------------------------------------------
def test_onnxruntime_backend_caps_its_opset_like_export(monkeypatch: pytest.MonkeyPatch,
                                                        rng: np.random.Generator) -> None:
    model = nn.Sequential(nn.Linear(4, 6), nn.GELU(), nn.Linear(6, 3))
    x = rng.standard_normal((5, 4)).astype(F32)
    want = InferenceSession(model).run(x)
    high = exporter.opset_range()[1]
    assert InferenceSession(model, backend="onnxruntime")._shared.opset == min(ORT_OPSET, high)
    # an older onnxruntime: the model goes to it at the newest opset it loads (Gelu spelled out)
    monkeypatch.setattr(exporter, "ort_max_opset", lambda: ("1.14.0", 17))
    session = InferenceSession(model, backend="onnxruntime")
    assert session._shared.opset == 17
    assert_close(session.run(x), want, 1e-5)
    monkeypatch.setattr(exporter, "ort_max_opset", lambda: ("1.0.0", 12))
    with pytest.raises(ConfigError, match="onnxruntime 1.0.0 loads opsets up to 12"):
        InferenceSession(model, backend="onnxruntime")


class _Frame:
    """The two things predict() reads of a pandas DataFrame: columns and by-name selection."""

    def __init__(self, data: dict[str, np.ndarray]) -> None:
        self.data = data
        self.columns = list(data)

    def __getitem__(self, names: list[str]) -> _Frame:
        return _Frame({n: self.data[n] for n in names})

    def to_numpy(self) -> np.ndarray:
        return np.stack([self.data[n] for n in self.columns], axis=1)


def test_predict_takes_a_table_by_column_name(tmp_path) -> None:
    """A model saved with feature names reads a DataFrame-like table by name, in any order."""
    nf.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2))
    path = tmp_path / "named.nnf"
    nf.save(model, path, task="regression", input_shape=(3,), feature_names=["a", "b", "c"])
    session = nf.InferenceSession(path)
    x = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    expected = session.predict(x).values
    shuffled = _Frame({"c": x[:, 2], "label": x[:, 0], "a": x[:, 0], "b": x[:, 1]})
    np.testing.assert_array_equal(session.predict(shuffled).values, expected)
    with pytest.raises(ShapeError, match=r"missing \['b'\]; unexpected \['d'\]"):
        session.predict(_Frame({"a": x[:, 0], "d": x[:, 1], "c": x[:, 2]}))


CONV1D_LAYERS = {
    "Conv1d": lambda r: nn.Conv1d(3, 4, 3),
    "Conv1d(pad,stride)": lambda r: nn.Conv1d(3, 4, 3, stride=2, padding=1),
    "Conv1d(dilation,no bias)": lambda r: nn.Conv1d(3, 2, 3, dilation=2, bias=False),
    "Conv1d(groups,same)": lambda r: nn.Conv1d(3, 6, 4, groups=3, padding="same"),
    "Conv1d+ReLU+MaxPool1d": lambda r: nn.Sequential(nn.Conv1d(3, 4, 2), nn.ReLU(),
                                                     nn.MaxPool1d(2)),
    "Conv1d+BatchNorm1d": lambda r: nn.Sequential(nn.Conv1d(3, 4, 3, padding=1),
                                                  stats_bn(nn.BatchNorm1d, 4, r)),
    "MaxPool1d": lambda r: nn.MaxPool1d(2),
    "MaxPool1d(pad)": lambda r: nn.MaxPool1d(3, stride=2, padding=1),
    "MaxPool1d(ceil,pad)": lambda r: nn.MaxPool1d(2, padding=1, ceil_mode=True),
    "AvgPool1d": lambda r: nn.AvgPool1d(2),
    "AvgPool1d(pad)": lambda r: nn.AvgPool1d(3, stride=2, padding=1),
    "AvgPool1d(pad,exclude)": lambda r: nn.AvgPool1d(3, 1, 1, count_include_pad=False),
    "AvgPool1d(ceil)": lambda r: nn.AvgPool1d(3, 2, 1, ceil_mode=True),
    "AdaptiveAvgPool1d(1)": lambda r: nn.AdaptiveAvgPool1d(1),
    "AdaptiveAvgPool1d(3)": lambda r: nn.AdaptiveAvgPool1d(3),
    "BatchNorm1d": lambda r: stats_bn(nn.BatchNorm1d, 3, r),
}


@pytest.mark.parametrize("name", list(CONV1D_LAYERS))
@pytest.mark.parametrize("level", LEVELS)
def test_each_conv1d_layer_matches_eager(rng: np.random.Generator, name: str,
                                         level: str) -> None:
    model = nn.Sequential(CONV1D_LAYERS[name](rng))
    x = rng.standard_normal((5, 3, 9)).astype(F32)
    session = InferenceSession(model, optimization=level, input_shape=(3, 9))
    assert_close(session.run(x), eager(model, x))
    assert_close(session.run(x[:1]), eager(model, x[:1]))


def test_an_input_read_only_by_an_in_graph_imputation_may_hold_nan() -> None:
    """A graph that fills NaN itself (Where(IsNaN(x), fill, x)) had it refused at the door;
    an input that any other op also reads still refuses it."""
    from nnforge.data.preprocessing import Imputer  # noqa: PLC0415
    from nnforge.graph.trace import trace  # noqa: PLC0415

    nf.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    imputer = Imputer("constant", fill_value=0.5).fit(np.zeros((2, 3), F32))
    graph = exporter.prepend_preprocessing(trace(model, (None, 3)), imputer.get_config())
    x = np.array([[np.nan, 1.0, 2.0], [0.5, 1.0, np.nan]], F32)
    for level in ("none", "all"):
        got = InferenceSession(graph, optimization=level).run(x)
        assert_close(got, eager(model, np.nan_to_num(x, nan=0.5)))
    with pytest.raises(DataError, match="found inf at row 1, position 0"):
        InferenceSession(graph).run(np.array([[0, 0, 0], [np.inf, 0, np.nan]], F32))
    leaky = graph.copy()  # the raw input also goes out through a Relu of its own
    name = leaky.inputs[0].name
    leaky.nodes.append(Node("Relu", [name], ["raw_relu"], {}, "raw_relu"))
    leaky.outputs.append(ValueInfo("raw_relu", (None, 3), "float32"))
    with pytest.raises(DataError, match="expected finite input values, found nan at row 0"):
        InferenceSession(leaky).run(x)
    nan_fill = graph.copy()  # a fill that is itself NaN would hand the NaN on
    where = next(n for n in nan_fill.nodes if n.op == "Where")
    nan_fill.initializers[where.inputs[1]] = np.full_like(
        nan_fill.initializers[where.inputs[1]], np.nan)
    with pytest.raises(DataError, match="expected finite input values, found nan at row 0"):
        InferenceSession(nan_fill).run(x)
