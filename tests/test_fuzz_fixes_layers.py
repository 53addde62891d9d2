"""Regression tests for layer and op defects found by differential fuzzing against PyTorch.

Expected numbers were computed once with torch 2.13 (float64) and written in by hand.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import nnforge.nn as nn
from nnforge import Tensor
from nnforge.errors import DTypeError, ShapeError
from nnforge.ops import activation as A
from nnforge.ops import norm as N
from nnforge.ops import pool as P
from nnforge.runtime.session import InferenceSession

INF, NAN = np.inf, np.nan
SIGMOID_INTS = [0.2689414213699951, 0.8807970779778823, 0.9525741268224334]  # torch, x = -1 2 3


def grad_of(layer: Any, x: np.ndarray, gy: np.ndarray | None = None) -> tuple[Any, Any]:
    """(output data, input gradient) of layer on float64 x, backward with gy (ones)."""
    t = Tensor(np.asarray(x, np.float64), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        y = layer(t)
        y.backward(np.ones(y.shape) if gy is None else np.asarray(gy, np.float64))
    return y.data, t.grad


# -- 1: integer input ------------------------------------------------------------------------
@pytest.mark.parametrize("make", [nn.Sigmoid, nn.Tanh, nn.GELU, nn.SiLU, nn.ELU, nn.Softplus,
                                  lambda: nn.LeakyReLU(0.1), lambda: nn.Softmax(-1),
                                  lambda: nn.LogSoftmax(-1), lambda: nn.LayerNorm(3)])
def test_int_tensor_into_layer_is_cast_to_float(make: Any) -> None:
    layer = make()
    xi = np.array([[-1, 2, 3]])
    y = layer(Tensor(xi))
    assert y.dtype.kind == "f"
    np.testing.assert_allclose(y.data, layer(Tensor(xi.astype(np.float32))).data, rtol=1e-6)


def test_int_tensor_layer_values_match_torch() -> None:
    np.testing.assert_allclose(nn.Sigmoid()(Tensor(np.array([-1, 2, 3]))).data, SIGMOID_INTS,
                               rtol=1e-6)
    x = Tensor(np.arange(16).reshape(1, 1, 4, 4))
    np.testing.assert_allclose(nn.AdaptiveAvgPool2d(3)(x).data.ravel(),
                               [2.5, 3.5, 4.5, 6.5, 7.5, 8.5, 10.5, 11.5, 12.5])
    np.testing.assert_allclose(nn.AvgPool2d(2)(x).data.ravel(), [2.5, 4.5, 10.5, 12.5])
    np.testing.assert_allclose(nn.AdaptiveAvgPool1d(3)(Tensor(np.arange(4).reshape(1, 1, 4)))
                               .data.ravel(), [0.5, 1.5, 2.5])
    bn = nn.BatchNorm2d(1)  # training mode: normalised by the batch's own statistics
    y = bn(Tensor(np.array([0, 2]).reshape(2, 1, 1, 1))).data.ravel()
    np.testing.assert_allclose(y, [-1.0, 1.0], rtol=1e-4)  # eps 1e-5 on a variance of 1
    kept = nn.Dropout(0.3)(Tensor(np.ones((50, 50), np.int64))).data
    assert set(np.unique(kept).tolist()) <= {0.0, np.float32(1 / 0.7)}


def test_float_only_ops_refuse_integer_arrays_and_sigmoid_promotes() -> None:
    xi = Tensor(np.array([[-1, 2, 3]]))
    for fn in (A.gelu, A.silu, A.elu, A.softplus, A.leaky_relu, A.softmax, A.log_softmax,
               lambda t: N.layer_norm(t, 1)):
        with pytest.raises(DTypeError, match="floating-point"):
            fn(xi)
    with pytest.raises(DTypeError):
        P.avg_pool2d(Tensor(np.ones((1, 1, 2, 2), np.int64)), 2)
    y = A.sigmoid(xi)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y.data.ravel(), SIGMOID_INTS, rtol=1e-6)
    assert A.tanh(xi).dtype == np.float32
    r = A.relu(xi)  # exact in the integers, as torch keeps Long
    assert r.dtype.kind == "i" and r.data.tolist() == [[0, 2, 3]]


class _IdsLayer(nn.Module):
    """A layer taking integer ids, as an imported ONNX graph with an int64 input does."""

    input_dtype = "int64"

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(np.zeros(1, np.float32))
        self.seen: list[Any] = []

    def forward(self, x: Any) -> Any:
        self.seen.append(x.data.copy())
        return Tensor(x.data.astype(np.float32))


def test_integer_input_dtype_module_keeps_ids_exact() -> None:
    ids = np.array([[2 ** 24 + 1, 3]], np.int64)  # float32 would round the first id
    layer = _IdsLayer()
    model = nn.Sequential(layer, nn.Sigmoid())
    model(ids)
    model(Tensor(ids))
    for seen in layer.seen:
        assert seen.dtype == np.int64 and seen.tolist() == ids.tolist()


# -- 2: inf/NaN incoming gradient meets a structural zero --------------------------------------
def test_relu_zero_gradient_stays_zero_under_infinite_upstream() -> None:
    x = Tensor(np.array([-1.0, 4.0]), requires_grad=True)
    A.relu(x).sqrt().sum().backward()  # d sqrt at 0 is inf; torch gives 0 at x = -1
    assert x.grad.tolist() == [0.0, 0.25]


def test_linear_relu_zero_gradient_stays_zero_under_infinite_upstream() -> None:
    lin = nn.Linear(2, 2)
    lin.weight.data[...] = np.eye(2)
    lin.bias.data[...] = 0
    model = nn.Sequential(lin, nn.ReLU())  # runs the fused LinearRelu
    x = Tensor(np.array([[-1.0, 4.0]], np.float32), requires_grad=True)
    model(x).sqrt().sum().backward()
    assert x.grad.tolist() == [[0.0, 0.25]]
    assert lin.weight.grad.tolist() == [[0.0, 0.0], [-0.25, 1.0]]


@pytest.mark.parametrize("stride", [2, 1])
def test_max_pool_infinite_gradient_goes_to_the_maximum_only(stride: int) -> None:
    x = np.array([[[[1.0, 2.0, 0.0], [3.0, 4.0, 0.0]]]])
    pool = nn.MaxPool2d(2, stride)
    y, _ = grad_of(pool, x)
    _, g = grad_of(pool, x, np.full(y.shape, INF))
    expected = np.zeros_like(x)
    expected[0, 0, 1, 1] = INF
    np.testing.assert_array_equal(g, expected)


# -- 3: NaN and -inf windows in max pooling ----------------------------------------------------
def test_max_pool_nan_window_routes_to_last_nan_as_torch() -> None:
    # torch's kernel keeps any NaN it meets, so the last one in row-major window order wins
    for v, want in (([NAN, 1.0, NAN, 2.0], [0, 0, 1, 0]), ([1.0, NAN, 2.0, NAN], [0, 0, 0, 1]),
                    ([NAN, NAN, 1.0, 1.0], [0, 1, 0, 0])):
        y, g = grad_of(nn.MaxPool2d(2), np.array(v).reshape(1, 1, 2, 2))
        assert np.isnan(y).all() and g.ravel().tolist() == want
        _, g1 = grad_of(nn.MaxPool1d(4), np.array(v).reshape(1, 1, 4))
        assert g1.ravel().tolist() == want


def test_max_pool_all_minus_inf_with_padding_routes_to_first_input() -> None:
    _, g = grad_of(nn.MaxPool2d(3, 1, 1), np.full((1, 1, 3, 3), -INF))
    np.testing.assert_array_equal(g[0, 0], [[4, 2, 0], [2, 1, 0], [0, 0, 0]])  # torch


def _unit_conv() -> nn.Conv2d:
    conv = nn.Conv2d(1, 1, 1)
    conv.weight.data[...] = 1
    conv.bias.data[...] = 0
    return conv


def test_fused_conv_max_pool_nan_and_minus_inf_windows() -> None:
    model = nn.Sequential(_unit_conv(), nn.MaxPool2d(2))  # runs ConvMaxPool
    x = np.array([[[[NAN, 1.0, -INF, -INF], [2.0, NAN, -INF, -INF]]]])
    y, g = grad_of(model, x, np.array([[[[1.0, 2.0]]]]))
    assert np.isnan(y[0, 0, 0, 0]) and y[0, 0, 0, 1] == -INF
    np.testing.assert_array_equal(g[0, 0], [[0, 0, 2, 0], [0, 1, 0, 0]])
    # an infinite gradient reaches the maximum alone
    _, g = grad_of(model, np.array([[[[1.0, 5.0, 0.0, 0.0], [2.0, 3.0, 0.0, 7.0]]]]),
                   np.array([[[[INF, 1.0]]]]))
    np.testing.assert_array_equal(g[0, 0], [[0, INF, 0, 0], [0, 0, 0, 1]])


def test_sequential_relu_max_pool_nan_matches_torch() -> None:
    # torch: relu(NaN) = NaN is the window's maximum and its gradient passes relu
    _, g = grad_of(nn.Sequential(nn.ReLU(), nn.MaxPool2d(2)),
                   np.array([[[[-1.0, NAN], [-2.0, -3.0]]]]))
    assert g.ravel().tolist() == [0, 1, 0, 0]


# -- 4: ceil_mode on inputs shorter than the kernel -------------------------------------------
def test_pooled_size_ceil_mode_small_input() -> None:
    assert P.pooled_size(3, 4, 4, 0, 0, ceil=True) == 1  # torch: (8, 3) -> (2, 1)
    assert P.pooled_size(3, 4, 4, 0, 0) == 0
    assert P.pooled_size(1, 4, 1, 0, 0, ceil=True) == 0  # too short even rounding up
    assert P.pooled_size(2, 3, 2, 1, 1, ceil=True) == 2
    assert P.pooled_size(5, 3, 2, 1, 1, ceil=True) == 3  # a window starting in padding: dropped


def test_ceil_mode_pools_accept_inputs_shorter_than_the_kernel() -> None:
    x = np.arange(24.0).reshape(1, 1, 8, 3)
    y, g = grad_of(nn.MaxPool2d(4, ceil_mode=True), x)
    assert y.ravel().tolist() == [11.0, 23.0]
    assert g.ravel().tolist() == [0.0] * 11 + [1.0] + [0.0] * 11 + [1.0]
    y, g = grad_of(nn.AvgPool2d(4, ceil_mode=True), x, np.array([[[[1.0], [2.0]]]]))
    np.testing.assert_allclose(y.ravel(), [5.5, 17.5])  # torch: divisor 12, overhang not counted
    np.testing.assert_allclose(g.ravel(), [1 / 12] * 12 + [2 / 12] * 12)
    y, _ = grad_of(nn.AvgPool2d(3, 2, 1, ceil_mode=True), np.arange(4.0).reshape(1, 1, 2, 2))
    np.testing.assert_allclose(y.ravel(), [2 / 3, 2 / 3, 5 / 6, 0.75])  # torch
    y, _ = grad_of(nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
                   np.arange(4.0).reshape(1, 1, 2, 2))
    np.testing.assert_allclose(y.ravel(), [1.5, 2.0, 2.5, 3.0])
    x1 = np.array([[[1.0, 5.0]]])
    assert grad_of(nn.MaxPool1d(3, ceil_mode=True), x1)[0].tolist() == [[[5.0]]]
    assert grad_of(nn.AvgPool1d(3, ceil_mode=True), x1)[0].tolist() == [[[3.0]]]


def test_runtime_shares_the_ceil_mode_output_size() -> None:
    # graph/ops.py infers pool shapes with the same pooled_size (ONNX's ceil_mode rule matches
    # torch's; checked against ONNX Runtime by hand)
    x = np.arange(48.0, dtype=np.float32).reshape(1, 2, 8, 3)
    for layer, want in ((nn.MaxPool2d(4, ceil_mode=True), [11, 23, 35, 47]),
                        (nn.AvgPool2d(4, ceil_mode=True), [5.5, 17.5, 29.5, 41.5])):
        model = nn.Sequential(layer)
        model.eval()
        y = InferenceSession(model, input_shape=(2, 8, 3)).run(x)
        np.testing.assert_allclose(np.asarray(y).ravel(), want, rtol=1e-6)


def test_pool_too_small_message_names_a_possible_size() -> None:
    with pytest.raises(ShapeError, match="at least 2x1 pixels"):
        nn.MaxPool2d((4, 2), 1, (1, 1))(Tensor(np.zeros((1, 1, 0, 3), np.float32)))
    with pytest.raises(ShapeError, match="at least 4, found 3"):
        nn.MaxPool1d(4)(Tensor(np.zeros((1, 1, 3), np.float32)))


# -- 5: softmax edge shapes --------------------------------------------------------------------
@pytest.mark.parametrize("fn", [A.softmax, A.log_softmax])
def test_softmax_edge_shapes(fn: Any) -> None:
    x = Tensor(np.zeros((2, 0)), requires_grad=True)
    y = fn(x, -1)
    assert y.shape == (2, 0)
    y.sum().backward()
    assert x.grad.shape == (2, 0)
    with pytest.raises(ShapeError, match=r"dim 2 .* 2 dims"):
        fn(Tensor(np.zeros((2, 3))), 2)
    s = Tensor(np.array(3.0), requires_grad=True)
    y = fn(s)
    y.backward()
    assert y.shape == () and float(y.data) == (1.0 if fn is A.softmax else 0.0)
    assert float(s.grad) == 0.0


# -- 6: gradient at a NaN input ----------------------------------------------------------------
def test_relu_and_elu_pass_the_gradient_at_nan_like_torch() -> None:
    x = np.array([NAN, -1.0, 1.0])
    gy = np.full(3, 2.0)
    assert grad_of(nn.ReLU(), x, gy)[1].tolist() == [2.0, 0.0, 2.0]
    np.testing.assert_allclose(grad_of(nn.ELU(), x, gy)[1], [2.0, 2 * np.exp(-1.0), 2.0])
    np.testing.assert_allclose(grad_of(nn.LeakyReLU(0.01), x, gy)[1], [0.02, 0.02, 2.0])


# -- 7: batch norm on an empty batch -----------------------------------------------------------
def test_batch_norm_backward_on_empty_batch() -> None:
    bn = nn.BatchNorm2d(3)
    bn.eval()
    x = Tensor(np.zeros((0, 3, 2, 2), np.float32), requires_grad=True)
    bn(x).sum().backward()
    assert x.grad.shape == (0, 3, 2, 2)
    assert bn.weight.grad.tolist() == [0.0, 0.0, 0.0] and bn.bias.grad.tolist() == [0.0] * 3


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("value, grad", [(1.5, 1.0), (-2.0, 0.0)])
def test_relu_backward_of_a_0d_tensor(dtype, value, grad):
    # np.maximum on a 0-d array gives a NumPy scalar, which has no out= (a raw TypeError)
    for relu in (lambda t: t.relu(), nn.ReLU()):
        x = Tensor(np.array(value, dtype), requires_grad=True)
        relu(x).backward()
        assert isinstance(x.grad, np.ndarray) and x.grad.shape == () and float(x.grad) == grad


@pytest.mark.parametrize("call, words", [
    (lambda x: A.leaky_relu(x, "a"), "leaky_relu alpha"),
    (lambda x: A.elu(x, None), "elu alpha"),
    (lambda x: A.softplus(x, float("nan")), "softplus beta"),
    (lambda x: A.softplus(x, 0.0), "nonzero beta"),
    (lambda x: A.softplus(x, 1.0, "20"), "softplus threshold"),
])
def test_functional_activation_options_are_config_errors(call, words):
    from nnforge.errors import ConfigError  # noqa: PLC0415

    with pytest.raises(ConfigError, match=words):
        call(Tensor(np.ones(3, np.float32)))
