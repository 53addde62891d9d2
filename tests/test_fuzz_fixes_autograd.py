"""Regressions from differential fuzzing of eager autograd against PyTorch (float64): the
expected numbers are torch's, worked out by hand or read from torch once."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from helpers import check_everywhere

import nnforge as nf
from nnforge import nn
from nnforge.autograd.gradcheck import check_gradients
from nnforge.errors import ConfigError, DTypeError, ShapeError

NAN, INF = float("nan"), float("inf")


def leaf(values: Any) -> nf.Tensor:
    """A float64 leaf that requires grad."""
    return nf.tensor(values, dtype=np.float64, requires_grad=True)


def grad_of(f: Any, *values: Any) -> list[np.ndarray]:
    """Gradients of f(*leaves) (seeded with ones) with respect to each leaf."""
    xs = [leaf(v) for v in values]
    y = f(*xs)
    y.backward(np.ones_like(y.data))
    return [x.grad for x in xs]


# -- A1: zero local gradients stay 0 when the incoming gradient is inf ---------------------
def test_clip_gradient_is_zero_where_clipped_even_under_an_infinite_gradient() -> None:
    (g,) = grad_of(lambda x: x.clip(min=0.0).sqrt().sum(), [-1.0, 4.0])
    np.testing.assert_array_equal(g, [0.0, 0.25])


@pytest.mark.parametrize("f, x, want", [
    (lambda x: x.max().sqrt(), [0.0, -1.0], [INF, 0.0]),
    (lambda x: x.min().sqrt(), [0.0, 1.0], [INF, 0.0]),
    (lambda x: x.max(axis=1).sqrt().sum(), [[0.0, -1.0]], [[INF, 0.0]]),
], ids=["max", "min", "max_axis"])
def test_max_min_gradient_is_zero_off_the_extreme_under_an_infinite_gradient(
        f: Any, x: list, want: list) -> None:
    (g,) = grad_of(f, x)
    np.testing.assert_array_equal(g, want)


# -- A3: norm for p other than 0, 1, 2 and inf ---------------------------------------------
@pytest.mark.parametrize("p, x, want", [
    (3, [0.0, 0.0], [0.0, 0.0]),
    (3, [0.0, -2.0], [0.0, -1.0]),
    (0.5, [0.0, -2.0], [0.0, -1.0]),
    (-1, [0.0, -2.0], [0.0, 0.0]),  # the norm is 0: 1 / (1/0 + 1/2)
    (-2, [0.0, 0.0], [0.0, 0.0]),
    (3, [1.0, -2.0], [9 ** (-2 / 3), -4 * 9 ** (-2 / 3)]),
    (-1, [1.0, -2.0], [4 / 9, -1 / 9]),
])
def test_norm_gradient_matches_torch_at_zeros(p: float, x: list, want: list) -> None:
    (g,) = grad_of(lambda t: t.norm(p), x)
    np.testing.assert_allclose(g, want, rtol=1e-12, atol=0)


def test_norm_of_negative_p_with_a_zero_is_zero() -> None:
    assert leaf([0.0, -2.0]).norm(-1).item() == 0.0
    assert leaf([3.0, -4.0]).norm(3).item() == pytest.approx(91 ** (1 / 3), rel=1e-12)


@pytest.mark.parametrize("p", [3, 1.5, 0.5, -1])
def test_norm_general_p_passes_the_gradient_check(p: float) -> None:
    x = np.random.default_rng(0).uniform(0.5, 2.0, (3, 4)) * np.array([1, -1, 1, -1])
    check_gradients(lambda t: t.norm(p, dim=1, keepdim=True), [x])
    check_gradients(lambda t: t.norm(p), [x])


# -- A4: NaN inputs of max/min ---------------------------------------------------------------
@pytest.mark.parametrize("f", [lambda x: x.max(), lambda x: x.min(),
                               lambda x: x.max(axis=0), lambda x: x.min(axis=0)],
                         ids=["max", "min", "max_axis", "min_axis"])
def test_max_min_send_the_gradient_to_the_nan_inputs(f: Any) -> None:
    # torch's max() splits it between the NaNs; nnforge splits ties of any kind
    (g,) = grad_of(f, [1.0, NAN, 3.0, NAN])
    np.testing.assert_array_equal(g, [0.0, 0.5, 0.0, 0.5])
    (g,) = grad_of(f, [1.0, NAN, 3.0])
    np.testing.assert_array_equal(g, [0.0, 1.0, 0.0])


def test_max_still_splits_ties_of_equal_values() -> None:
    (g,) = grad_of(lambda x: x.max(axis=1).sum(), [[3.0, 1.0, 3.0], [NAN, 2.0, 0.0]])
    np.testing.assert_array_equal(g, [[0.5, 0.0, 0.5], [1.0, 0.0, 0.0]])


# -- A5: division's gradient for the divisor ---------------------------------------------------
def test_div_gradient_does_not_overflow_or_underflow() -> None:
    ga, gb = grad_of(lambda a, b: a / b, [1e200], [1e200])
    np.testing.assert_array_equal(ga, [1e-200])
    np.testing.assert_array_equal(gb, [-1e-200])
    (g,) = grad_of(lambda x: x / x, [3.0, 0.1])
    np.testing.assert_array_equal(g, [0.0, 0.0])


# -- A7: tensor bounds of clip -------------------------------------------------------------------
def test_clip_with_tensor_bounds_differentiates_them_with_torchs_ties() -> None:
    x, lo, hi = [0.0, 0.5, 2.0, -1.0, 1.0], [0.0, 0.0, 0.0, 0.0, 2.0], [1.0, 1.0, 2.0, 1.0, 1.0]
    xs = [leaf(v) for v in (x, lo, hi)]
    y = xs[0].clip(xs[1], xs[2])
    np.testing.assert_array_equal(y.data, [0.0, 0.5, 2.0, 0.0, 1.0])  # high wins over low
    y.backward(np.ones(5))
    np.testing.assert_array_equal(xs[0].grad, [1, 1, 1, 0, 0])
    np.testing.assert_array_equal(xs[1].grad, [0, 0, 0, 1, 0])
    np.testing.assert_array_equal(xs[2].grad, [0, 0, 0, 0, 1])
    gx, gh = grad_of(lambda x, h: x.clamp(max=h), [0.0, 0.5, 2.0, -1.0], [0.0] * 4)
    np.testing.assert_array_equal(gx, [1, 0, 0, 1])
    np.testing.assert_array_equal(gh, [0, 1, 1, 0])
    gx, gl = grad_of(lambda x, lo: x.clamp(min=lo), [0.0, 0.5], [[0.2], [1.0]])  # broadcast
    np.testing.assert_array_equal(gx, [0, 1])
    np.testing.assert_array_equal(gl, [[1], [2]])


def test_clip_with_tensor_bounds_passes_the_gradient_check() -> None:
    rng = np.random.default_rng(1)
    x, lo, hi = rng.standard_normal((3, 4)), rng.uniform(-1, -0.2, 4), rng.uniform(0.2, 1, (3, 1))
    check_gradients(lambda a, b, c: a.clip(b, c), [x, lo, hi])
    check_gradients(lambda a, b: a.clip(b, 0.5), [x, lo])
    check_gradients(lambda a: a.clip(lo, hi), [x])  # array bounds: constants


# -- B: integers beside index arrays follow torch ------------------------------------------------
X = np.arange(120.0).reshape(2, 3, 4, 5)


@pytest.mark.parametrize("index, shape, numpy_steps", [
    ((0, slice(None), [0, 1]), (3, 2, 5), lambda x: x[0][:, [0, 1]]),
    ((0, slice(None), [0, 1], None), (3, 2, 1, 5), lambda x: x[0][:, [0, 1], None]),
    ((0, Ellipsis, [0, 1]), (3, 4, 2), lambda x: x[0][..., [0, 1]]),
    ((None, 0, slice(None), [0, 1]), (1, 3, 2, 5), lambda x: x[0][None, :, [0, 1]]),
    ((slice(None), [1, 1], None, 1), (2, 2, 1, 5), lambda x: x[:, :, 1][:, [1, 1], None]),
    ((0, slice(None), [True, False, True, True]), (3, 3, 5), lambda x: x[0][:, [0, 2, 3]]),
    ((0, slice(None), [[0, 1], [1, 1]], -1), (3, 2, 2), lambda x: x[0, :, :, -1][:, [[0, 1],
                                                                                    [1, 1]]]),
], ids=["slice_between", "new_axis", "ellipsis", "leading_none", "repeats", "mask", "2d"])
def test_an_integer_and_an_index_array_apart_index_as_torch(index: tuple, shape: tuple,
                                                            numpy_steps: Any) -> None:
    np.testing.assert_array_equal(nf.tensor(X, dtype=np.float64)[index].data, numpy_steps(X))
    assert numpy_steps(X).shape == shape
    check_gradients(lambda t: t[index], [X / 100])


def test_a_0d_integer_tensor_counts_as_an_integer_as_in_torch() -> None:
    t = nf.tensor(X, dtype=np.float64)
    assert t[nf.tensor(0), :, [0, 1]].shape == (3, 2, 5)


def test_index_arrays_with_repeats_scatter_the_gradient_back() -> None:
    x = leaf(X[:1, :2, :2, :1])
    x[0, :, [1, 1]].sum().backward()
    np.testing.assert_array_equal(x.grad[0, :, :, 0], [[0, 2], [0, 2]])


def test_numpy_compatible_indices_are_unchanged() -> None:
    t = nf.tensor(X, dtype=np.float64)
    assert t[:, 0, [0, 1]].shape == X[:, 0, [0, 1]].shape == (2, 2, 5)
    assert t[[0, 1], :, 0, [1, 2]].shape == (2, 3)  # arrays apart: NumPy's and torch's rule


# -- C1: 0-d tensors -----------------------------------------------------------------------------
def test_abs_backward_of_a_0d_tensor() -> None:
    x = leaf(-2.0)
    x.abs().backward()
    assert type(x.grad) is np.ndarray and x.grad.shape == () and x.grad == -1.0


def test_0d_leaf_gradients_are_arrays_that_scale_in_place() -> None:
    x = leaf(2.0)
    (x * 3.0).backward()
    (x * x).backward()  # accumulated: 0-d + 0-d is a NumPy scalar unless kept an array
    g = x.grad
    assert type(g) is np.ndarray and g == 7.0
    x.grad *= 2
    assert g == 14.0  # written in place, not rebound
    y = leaf(1.5)
    out = (y * 2.0).exp() * y / y
    assert type(out.data) is np.ndarray  # forward values of 0-d ops too, not np.float64
    out.backward()
    assert type(y.grad) is np.ndarray and y.grad == pytest.approx(2 * math.exp(3.0))


# -- C4: clear errors and array exponents ---------------------------------------------------------
def test_where_and_masked_fill_of_mismatched_shapes_raise_shape_error() -> None:
    with pytest.raises(ShapeError, match=r"\(1,\), \(2,\) and \(3,\)"):
        nf.where(np.array([True]), leaf([1.0, 2.0]), leaf([1.0, 2.0, 3.0]))
    with pytest.raises(ShapeError):
        leaf([1.0, 2.0, 3.0]).masked_fill(np.array([True, False]), 0.0)


def test_pow_with_an_array_exponent_or_base_is_elementwise() -> None:
    (g,) = grad_of(lambda t: t ** np.array([2.0, 3.0]), [1.0, 2.0])
    np.testing.assert_allclose(g, [2.0, 12.0])
    y = np.array([2.0, 3.0]) ** leaf([1.0, 2.0])
    np.testing.assert_allclose(y.data, [2.0, 9.0])
    (g,) = grad_of(lambda t: np.array([2.0, 3.0]) ** t, [1.0, 2.0])
    np.testing.assert_allclose(g, [2 * math.log(2), 9 * math.log(3)], rtol=1e-12)
    ga, gb = grad_of(lambda a, b: a ** b, [1.0, 2.0, 0.0], [2.0, 3.0, 0.0])
    np.testing.assert_allclose(ga, [2.0, 12.0, 0.0])  # torch: 0 where the exponent is 0
    np.testing.assert_allclose(gb, [0.0, 8 * math.log(2), 0.0])  # and where the base is 0
    rng = np.random.default_rng(2)
    check_gradients(lambda a, b: a ** b, [rng.uniform(0.5, 2, (2, 3)), rng.uniform(-2, 2, 3)])


def test_bad_clip_bounds_and_pow_operands_raise_nnforge_errors() -> None:
    x = leaf([1.0, 2.0])
    with pytest.raises(ConfigError, match="bound"):
        x.clip("a")
    with pytest.raises(ConfigError, match="bound"):
        x.clip(leaf([0.0, 0.0]), "a")
    with pytest.raises(DTypeError, match="exponent"):
        x ** "a"  # noqa: B018


# -- tracing of the new and changed ops -----------------------------------------------------------
class NewOps(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.low = nn.Parameter(nf.Tensor(np.full(4, -0.3, np.float32)))

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        h = self.fc(x)
        return nf.concat([h.clip(self.low, 0.4), h.norm(3, dim=1, keepdim=True),
                          x.abs() ** np.array([2.0, 1.0, 3.0, 0.5], np.float32)], axis=1)


def test_new_ops_trace_as_eager(tmp_path: Any) -> None:
    check_everywhere(NewOps(), (4,), tmp_path)
