"""Edge values from finite inputs: the NumPy runtime against onnxruntime on onnx.helper graphs
(every optimization level), and the training-time ops against NumPy formulas."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnforge as nf
from nnforge import nn
from nnforge.ops import activation as A
from nnforge.ops.norm import layer_norm

F32 = np.float32
LEVELS = ("none", "basic", "all")


def _model(tmp_path: Path, nodes: list, inits: dict[str, np.ndarray], rank: int) -> str:
    """An opset-17 model file: input x and output y, both of the given rank, batch dim N."""
    dims = ["N"] + [None] * (rank - 1)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, dims)
    graph = helper.make_graph(nodes, "g", [x], [y],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "edge.onnx"
    onnx.save(model, path)
    return str(path)


def _ort(path: str, x: np.ndarray) -> np.ndarray:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})[0]


def _check(tmp_path: Path, nodes: list, x: np.ndarray, inits: dict[str, np.ndarray] | None = None,
           **kw: Any) -> np.ndarray:
    """nnforge's output equals onnxruntime's at every level: the same infinities and NaNs,
    finite values to 1e-6 relative (Exp differs from ORT's by an ulp)."""
    path = _model(tmp_path, nodes, inits or {}, x.ndim)
    expected = _ort(path, x)
    for level in LEVELS:
        got = np.asarray(nf.InferenceSession(path, optimization=level, **kw).run(x))
        np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-6,
                                   err_msg=level)
    return expected


# -- LeakyRelu: alpha == 0 must keep +inf (0 * inf is NaN) ------------------------------------
@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # Exp overflows on purpose
def test_leaky_relu_alpha_zero_keeps_inf_from_exp_overflow(tmp_path: Path) -> None:
    nodes = [helper.make_node("Exp", ["x"], ["e"]),
             helper.make_node("LeakyRelu", ["e"], ["y"], alpha=0.0)]
    y = _check(tmp_path, nodes, np.array([[100.0, 1.0]], F32))
    assert y[0, 0] == np.inf


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("alpha", [0.0, 0.01, 1.0, 2.5, -0.5])
def test_leaky_relu_infinities_match_onnxruntime(tmp_path: Path, alpha: float) -> None:
    # +-inf from Exp(+-Exp(100)); ORT's formula is x if x >= 0 else alpha * x
    nodes = [helper.make_node("Exp", ["x"], ["e"]), helper.make_node("Mul", ["e", "s"], ["m"]),
             helper.make_node("LeakyRelu", ["m"], ["y"], alpha=alpha)]
    x = np.array([[100.0, 100.0, 1.0, -2.0, 0.0]], F32)
    _check(tmp_path, nodes, x, {"s": np.array([1, -1, 1, -1, -1], F32)})


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("alpha", [0.0, 0.2])
def test_fused_gemm_leaky_relu_keeps_inf(tmp_path: Path, alpha: float) -> None:
    # Gemm + LeakyRelu fuse into FusedGemm at level "all": the fused activation too
    w = np.array([[1.0, -1.0, 0.5]], F32)
    nodes = [helper.make_node("Exp", ["x"], ["e"]),
             helper.make_node("Gemm", ["e", "w"], ["g"]),
             helper.make_node("LeakyRelu", ["g"], ["y"], alpha=alpha)]
    _check(tmp_path, nodes, np.array([[100.0], [1.0]], F32), {"w": w})


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("alpha", [0.0, 0.01, 2.0, -0.5])
def test_training_leaky_relu_matches_formula_on_infinities(alpha: float) -> None:
    x = np.array([np.inf, -np.inf, 1.5, -2.0, 0.0], F32)
    expected = np.where(x >= 0, x, F32(alpha) * x)
    np.testing.assert_array_equal(A.leaky_relu(nf.Tensor(x), alpha).numpy(), expected)


# -- MaxPool: a window wholly in the padding gives the lowest finite value --------------------
def test_max_pool_all_padding_window_is_lowest_finite(tmp_path: Path) -> None:
    nodes = [helper.make_node("MaxPool", ["x"], ["p"], kernel_shape=[2], dilations=[2],
                              pads=[1, 1]),
             helper.make_node("MatMul", ["p", "w"], ["y"])]
    y = _check(tmp_path, nodes, np.full((2, 1, 1), 0.5, F32), {"w": np.array([[-1.0]], F32)})
    assert np.all(y == np.finfo(F32).max)


def test_max_pool_2d_all_padding_window(tmp_path: Path) -> None:
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[1, 2], dilations=[1, 2],
                            pads=[0, 1, 0, 1])
    y = _check(tmp_path, [node], np.array([[[[0.5]]]], F32))
    assert y.ravel()[0] == np.finfo(F32).min


def test_max_pool_unpadded_minus_inf_stays(tmp_path: Path) -> None:
    # ORT's 2-D pool keeps a real -inf where no padding takes part
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2])
    x = np.full((1, 1, 3, 3), -np.inf, F32)
    x[0, 0, 2, 2] = 1.0
    y = _check(tmp_path, [node], x, check_finite=False)
    assert y[0, 0, 0, 0] == -np.inf


def test_global_max_pool_of_minus_inf_is_lowest_finite(tmp_path: Path) -> None:
    node = helper.make_node("GlobalMaxPool", ["x"], ["y"])
    x = np.full((1, 2, 2, 2), -np.inf, F32)
    x[0, 1, 0, 0] = -5.0
    y = _check(tmp_path, [node], x, check_finite=False)
    assert y.ravel().tolist() == [np.finfo(F32).min, -5.0]


# -- LayerNormalization: a constant row normalises to exactly 0 -------------------------------
def test_layer_norm_constant_row_is_exactly_zero(tmp_path: Path) -> None:
    node = helper.make_node("LayerNormalization", ["x", "s"], ["y"], axis=-1)
    x = np.array([[-1.574734] * 3, [0.1] * 3, [1.0, 2.0, 4.0]], F32)
    y = _check(tmp_path, [node], x, {"s": np.ones(3, F32)})
    assert not y[:2].any()


def test_two_layer_norms_of_zeros_are_exactly_the_bias(tmp_path: Path) -> None:
    nodes = [helper.make_node("LayerNormalization", ["x", "s", "b"], ["h"], axis=-1),
             helper.make_node("LayerNormalization", ["h", "s", "b"], ["y"], axis=-1)]
    bias = np.full(7, 0.3, F32)
    y = _check(tmp_path, nodes, np.zeros((2, 7), F32), {"s": np.full(7, 2.0, F32), "b": bias})
    assert np.all(y == bias)


def test_training_layer_norm_constant_row_is_exactly_zero() -> None:
    # rows whose float32 mean is an ulp off the value
    x = np.full((2, 3), -1.574734, F32)
    y = layer_norm(nf.Tensor(x), 1).numpy()
    assert y.dtype == F32 and not y.any()
    layer = nn.LayerNorm(7)
    assert not layer(nf.Tensor(np.full((4, 7), 0.1, F32))).numpy().any()


def test_training_layer_norm_matches_formula() -> None:
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(F32) * 3 + 1
    mean = x.mean(axis=-1, keepdims=True, dtype=np.float64)
    expected = (x - mean) / np.sqrt(x.var(axis=-1, keepdims=True, dtype=np.float64) + 1e-5)
    np.testing.assert_allclose(layer_norm(nf.Tensor(x), 1).numpy(), expected, rtol=1e-5,
                               atol=1e-6)


# -- Sigmoid: no clamp far below zero ----------------------------------------------------------
def test_sigmoid_far_negative_is_zero(tmp_path: Path) -> None:
    node = helper.make_node("Sigmoid", ["x"], ["y"])
    x = np.array([[-110.0, -200.0, -1e30]], F32)
    y = _check(tmp_path, [node], x)
    assert not y.any()


def test_sigmoid_matches_onnxruntime_elsewhere(tmp_path: Path) -> None:
    # ORT approximates (it gives 0 below about -17): compare at an absolute tolerance
    x = np.linspace(-120, 40, 97, dtype=F32)[None]
    path = _model(tmp_path, [helper.make_node("Sigmoid", ["x"], ["y"])], {}, 2)
    got = np.asarray(nf.InferenceSession(path).run(x))
    np.testing.assert_allclose(got.reshape(1, -1), _ort(path, x), rtol=1e-5, atol=1e-7)
    assert np.all(got.ravel()[x.ravel() < -87.0] < 1e-37)


def test_training_sigmoid_matches_formula_far_negative() -> None:
    x = np.array([-60.0, -100.0, -200.0, 0.0, 30.0], F32)
    expected = (np.exp(x.astype(np.float64)) / (1 + np.exp(x.astype(np.float64)))).astype(F32)
    np.testing.assert_array_equal(A.sigmoid(nf.Tensor(x)).numpy(), expected)
