"""Reductions: NumPy's and torch's argument names, NumPy functions called on a Tensor."""

from __future__ import annotations

import numpy as np
import pytest

import nnforge as nf
from nnforge.autograd.gradcheck import check_gradients
from nnforge.errors import ConfigError, DTypeError

REDUCTIONS = ["sum", "mean", "max", "min", "var", "std"]
AXES = [None, 0, -1, (0, 2), (-1, 0), (-3, -2, -1)]


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal((2, 3, 4))


@pytest.mark.parametrize("name", REDUCTIONS)
@pytest.mark.parametrize("axis", AXES)
@pytest.mark.parametrize("keep", [False, True])
def test_torch_and_numpy_spellings_give_numpys_values_and_correct_gradients(x, name, axis,
                                                                             keep):
    want = getattr(np, name)(x, axis=axis, keepdims=keep)
    spellings = [dict(axis=axis, keepdims=keep), dict(dim=axis, keepdim=keep),
                 dict(axis=axis, keepdim=keep), dict(dim=axis, keepdims=keep)]
    for kw in spellings:
        got = _values(getattr(nf.Tensor(x), name)(**kw))
        assert got.shape == np.shape(want), kw
        np.testing.assert_allclose(got.data, want, rtol=1e-12, err_msg=str(kw))
    check_gradients(lambda t: _values(getattr(t, name)(dim=axis, keepdim=keep)), [x])


def _values(got):
    """max/min with one int dim return torch's (values, indices): the values."""
    return got.values if isinstance(got, tuple) else got


@pytest.mark.parametrize("name", ["argmax", "argmin"])
@pytest.mark.parametrize("axis", [None, 1, -1])
def test_argmax_and_argmin_take_keepdim_too(x, name, axis):
    got = getattr(nf.Tensor(x), name)(dim=axis, keepdim=True)
    np.testing.assert_array_equal(got.data, getattr(np, name)(x, axis=axis, keepdims=True))
    # what np.argmax(t) hands to the method: a Tensor back, as the other reductions give
    via_numpy = getattr(np, name)(nf.Tensor(x), axis=axis, keepdims=True)
    assert isinstance(via_numpy, nf.Tensor) and via_numpy.dtype == np.int64
    np.testing.assert_array_equal(via_numpy.data, got.data)


@pytest.mark.parametrize("fn", [np.sum, np.mean, np.max, np.min, np.amax, np.amin, np.var,
                                np.std])
def test_numpy_reductions_of_a_tensor_return_tensors_that_keep_autograd(x, fn):
    t = nf.Tensor(x, requires_grad=True)
    for kw in ({}, {"axis": 1}, {"axis": (0, -1), "keepdims": True}):
        got = fn(t, **kw)
        assert isinstance(got, nf.Tensor) and got.requires_grad, kw
        np.testing.assert_allclose(got.data, fn(x, **kw), rtol=1e-12)
    fn(t).backward()
    assert t.grad is not None and t.grad.shape == x.shape
    if fn is np.mean:
        np.testing.assert_allclose(t.grad, np.full(x.shape, 1 / x.size))


def test_a_loss_written_with_numpy_functions_still_trains():
    w = nf.Tensor(np.zeros(3), requires_grad=True)
    target = np.array([1.0, -2.0, 0.5])
    for _ in range(50):
        loss = np.mean((w - target) ** 2)
        w.grad = None
        loss.backward()
        w.data -= 0.5 * w.grad
    np.testing.assert_allclose(w.data, target, atol=1e-6)
    assert float(np.sum(w)) == pytest.approx(target.sum())


def test_numpy_dtype_casts_first_and_out_is_refused_not_left_unwritten(x):
    t = nf.Tensor(x.astype(np.float32), requires_grad=True)
    s = np.sum(t, dtype=np.float64)
    assert s.dtype == np.float64 and s.item() == pytest.approx(x.astype(np.float32).sum())
    s.backward()
    assert t.grad.dtype == np.float32  # the gradient comes back through the cast
    assert np.mean(t, axis=0, dtype=np.float64).dtype == np.float64
    assert nf.Tensor(np.arange(4)).sum(dtype=np.float32).dtype == np.float32
    with pytest.raises(DTypeError, match="floating dtype, found int64"):
        np.mean(t, dtype=np.int64)  # torch refuses it too: a mean truncated to an int
    with pytest.raises(DTypeError, match="name a NumPy dtype"):
        t.sum(dtype="no such type")
    out = np.zeros(())
    with pytest.raises(ConfigError, match="expects out=None.*found out=ndarray"):
        np.sum(t, out=out)
    with pytest.raises(ConfigError, match="expects out=None"):
        np.max(t, out=out)


def test_keepdims_must_be_a_bool_and_both_spellings_must_agree(x):
    t = nf.Tensor(x)
    with pytest.raises(ConfigError, match="keepdims True or False, found 1"):
        t.sum(0, 1)  # meant as axes 0 and 1: would keep the dims of axis 0 only
    with pytest.raises(ConfigError, match="keepdims= or its torch name keepdim=, found both"):
        t.mean(axis=0, keepdims=True, keepdim=False)
    assert t.max(axis=0, keepdims=True, keepdim=True).shape == (1, 3, 4)
    assert t.min(0, np.bool_(True)).values.shape == (1, 3, 4)


def test_var_and_std_take_ddof_or_its_name_correction(x):
    t = nf.Tensor(x)
    np.testing.assert_allclose(t.var(dim=1, correction=1).data, x.var(axis=1, ddof=1))
    np.testing.assert_allclose(np.std(t, axis=-1, ddof=1).data, x.std(axis=-1, ddof=1))
    np.testing.assert_allclose(t.std(correction=1, ddof=1).data, x.std(ddof=1))
    with pytest.raises(ConfigError, match="ddof= or its other name correction=, found both"):
        t.var(ddof=0, correction=1)
    with pytest.raises(ConfigError, match="ddof as a number >= 0, found -1"):
        t.std(ddof=-1)


@pytest.mark.parametrize("call", [lambda t: np.max(t, initial=0.0),
                                  lambda t: np.sum(t, where=np.ones(3, bool)),
                                  lambda t: t.mean(bogus=1)])
def test_numpy_only_reduction_arguments_are_one_clear_error(call) -> None:
    """np.max(t, initial=...) raised Python's TypeError from inside the method."""
    t = nf.Tensor(np.ones(3, np.float32))
    with pytest.raises(ConfigError, match="which a Tensor does not take"):
        call(t)
