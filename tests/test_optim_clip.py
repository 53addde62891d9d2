"""Gradient clipping: the formulas, and shared gradient arrays are never written."""

from __future__ import annotations

import numpy as np
import pytest

from nnforge import nn, optim
from nnforge.errors import ConfigError, NNForgeError
from nnforge.nn import Parameter


def params_with(grads):
    ps = []
    for g in grads:
        p = Parameter(np.zeros(np.shape(g), np.float32))
        p.grad = g
        ps.append(p)
    return ps


def test_clip_grad_norm_matches_formula_and_keeps_shared_arrays(rng):
    shared = rng.normal(size=(4, 5)).astype(np.float32)
    other = rng.normal(size=7).astype(np.float32)
    keep = shared.copy()
    ps = params_with([shared, shared, other])  # two params share one grad array
    expected = np.sqrt(2 * np.sum(shared.astype(np.float64) ** 2)
                       + np.sum(other.astype(np.float64) ** 2))
    total = optim.clip_grad_norm_(ps, max_norm=1.0)
    assert isinstance(total, float)
    np.testing.assert_allclose(total, expected, rtol=1e-6)
    coef = 1.0 / (expected + 1e-6)
    np.testing.assert_allclose(ps[0].grad, keep * coef, rtol=1e-6)
    np.testing.assert_allclose(ps[1].grad, keep * coef, rtol=1e-6)
    np.testing.assert_allclose(ps[2].grad, other * coef, rtol=1e-6)
    np.testing.assert_array_equal(shared, keep)  # the original array is untouched
    assert ps[0].grad.dtype == np.float32
    new_norm = np.sqrt(sum(np.sum(p.grad.astype(np.float64) ** 2) for p in ps))
    np.testing.assert_allclose(new_norm, 1.0, rtol=1e-5)


def test_clip_grad_norm_below_limit_leaves_grads_alone(rng):
    g = rng.normal(size=10).astype(np.float32)
    ps = params_with([g])
    total = optim.clip_grad_norm_(ps, max_norm=1e3)
    assert ps[0].grad is g
    np.testing.assert_allclose(total, np.linalg.norm(g.astype(np.float64)), rtol=1e-6)


@pytest.mark.parametrize("norm_type", [1.0, 3.0, float("inf")])
def test_clip_grad_norm_other_norms(rng, norm_type):
    gs = [rng.normal(size=(3, 3)), rng.normal(size=5)]
    flat = np.concatenate([g.ravel() for g in gs])
    expected = (np.abs(flat).max() if np.isinf(norm_type)
                else np.sum(np.abs(flat) ** norm_type) ** (1 / norm_type))
    ps = params_with([g.copy() for g in gs])
    total = optim.clip_grad_norm_(ps, max_norm=0.5, norm_type=norm_type)
    np.testing.assert_allclose(total, expected, rtol=1e-12)
    for p, g in zip(ps, gs):
        np.testing.assert_allclose(p.grad, g * 0.5 / (expected + 1e-6), rtol=1e-12)


def test_clip_grad_norm_skips_missing_grads_and_accepts_a_module():
    model = nn.Linear(3, 2)
    model.weight.grad = np.full((2, 3), 2.0, np.float32)
    total = optim.clip_grad_norm_(model, max_norm=1.0)
    np.testing.assert_allclose(total, np.sqrt(6 * 4.0), rtol=1e-6)
    assert model.bias.grad is None
    assert optim.clip_grad_norm_([Parameter(np.zeros(2))], 1.0) == 0.0


def test_clip_grad_norm_nonfinite():
    ps = params_with([np.array([1.0, np.nan]), np.array([3.0])])
    assert np.isnan(optim.clip_grad_norm_(ps, 1.0))
    with pytest.raises(NNForgeError, match="finite"):
        optim.clip_grad_norm_(params_with([np.array([np.inf])]), 1.0, error_if_nonfinite=True)
    with pytest.raises(ConfigError, match="max_norm"):
        optim.clip_grad_norm_(ps, -1.0)
    with pytest.raises(ConfigError, match="norm_type"):
        optim.clip_grad_norm_(ps, 1.0, norm_type=0)


def test_clip_grad_value_makes_new_arrays():
    g = np.array([-3.0, -0.5, 0.2, 4.0], np.float32)
    keep = g.copy()
    ps = params_with([g, g])
    optim.clip_grad_value_(ps, 1.0)
    for p in ps:
        np.testing.assert_array_equal(p.grad, np.float32([-1.0, -0.5, 0.2, 1.0]))
        assert p.grad.dtype == np.float32
    np.testing.assert_array_equal(g, keep)
    with pytest.raises(ConfigError, match="clip_value"):
        optim.clip_grad_value_(ps, -1)


def test_clip_grad_norm_of_finite_grads_whose_squares_overflow_float32():
    # a norm of 4.2e19 is finite, but its float32 square is not: the grads are scaled, not
    # zeroed by a norm of inf
    ps = params_with([np.float32([3e19, 3e19, 1.0]), np.float32([1.0, 1.0])])
    total = optim.clip_grad_norm_(ps, 1.0)
    np.testing.assert_allclose(total, np.sqrt(2) * 3e19, rtol=1e-6)
    np.testing.assert_allclose(ps[0].grad[:2], [np.sqrt(0.5)] * 2, rtol=1e-5)
    assert ps[0].grad.dtype == np.float32


def test_clip_grad_norm_minus_inf_is_the_smallest_magnitude():
    ps = params_with([np.float32([3.0, -0.5]), np.float32([2.0])])
    assert optim.clip_grad_norm_(ps, 10.0, norm_type=-np.inf) == 0.5
    assert optim.clip_grad_norm_(ps, 10.0, norm_type=np.inf) == 3.0
