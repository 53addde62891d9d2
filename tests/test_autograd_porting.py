"""What code ported from PyTorch reaches for: augmented assignment on parameters, flatten's
default, data and index checks, retain_grad, gather, topk, norm, t/mT, to() and factories."""

from __future__ import annotations

import warnings
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from helpers import check_everywhere

import nnforge as nf
from nnforge import nn
from nnforge.autograd.gradcheck import check_gradients
from nnforge.autograd.tensor import InPlaceError
from nnforge.errors import (
    BackwardError,
    ConfigError,
    DeviceError,
    DTypeError,
    ShapeError,
    TensorIndexError,
)
from nnforge.ops.shape import flatten

AUGMENTED = ["+=", "-=", "*=", "/=", "//=", "%=", "**=", "@=", "&=", "|=", "^=", "<<=", ">>="]


def _augment(target: Any, symbol: str, value: Any) -> Any:
    scope = {"t": target, "v": value}
    exec(f"t {symbol} v", scope)  # noqa: S102 - the statement itself is what is tested
    return scope["t"]


# -- 1. augmented assignment on parameters ------------------------------------------------------
@pytest.mark.parametrize("symbol", AUGMENTED)
@pytest.mark.parametrize("grad_mode", ["enabled", "no_grad"])
def test_augmented_assignment_on_a_parameter_is_refused(symbol: str, grad_mode: str) -> None:
    p = nn.Parameter(np.ones((2, 2), np.float32))
    before = p.data.copy()
    with pytest.raises(InPlaceError, match=r"p\.data .*no_grad|no_grad.*p\.data"):
        if grad_mode == "no_grad":
            with nf.no_grad():
                _augment(p, symbol, 2)
        else:
            _augment(p, symbol, 2)
    np.testing.assert_array_equal(p.data, before)


@pytest.mark.parametrize("make", [
    lambda: nf.Tensor(np.ones(3), requires_grad=True),  # a leaf that requires grad
    lambda: nn.Parameter(np.ones(3, np.float32), requires_grad=False),  # a frozen parameter
])
def test_augmented_assignment_on_other_update_targets_is_refused(make: Any) -> None:
    with pytest.raises(InPlaceError, match="optimizer"):
        _augment(make(), "-=", 0.1)


def test_manual_sgd_the_way_the_error_says_updates_the_model() -> None:
    model = nn.Linear(3, 1)
    x = nf.Tensor(np.ones((4, 3), np.float32))
    loss = (model(x) ** 2).mean()
    loss.backward()
    before = model.weight.data.copy()
    with nf.no_grad():
        for p in model.parameters():
            p.data -= 0.1 * p.grad
    np.testing.assert_allclose(model.weight.data, before - 0.1 * model.weight.grad)


def test_augmented_assignment_accumulates_losses_and_counts() -> None:
    w = nf.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    loss = (w * 3.0).sum()
    loss += (w * w).sum()  # a non-leaf: rebinds to the sum, autograd follows
    total = nf.Tensor(0.0)
    total = total + loss
    total += loss
    total.backward()
    np.testing.assert_allclose(w.grad, 2 * (3.0 + 2 * w.data))
    with nf.no_grad():  # an evaluation loop's counter
        correct = 0
        for _ in range(3):
            correct += (nf.Tensor([1, 2, 3]) == nf.Tensor([1, 0, 3])).sum()
    assert int(correct) == 6


def test_augmented_assignment_on_a_plain_tensor_rebinds_the_name() -> None:
    t = nf.Tensor(np.array([1.0, 2.0]))
    alias = t
    t *= 2
    np.testing.assert_array_equal(t.data, [2.0, 4.0])
    np.testing.assert_array_equal(alias.data, [1.0, 2.0])  # documented: a new tensor
    with pytest.raises(TypeError):  # no binary & on tensors: as before
        _augment(nf.Tensor([1, 2]), "&=", 1)


# -- 2. flatten's default ----------------------------------------------------------------
def test_tensor_flatten_flattens_every_axis_by_default_as_torch(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3, 4))
    assert nf.Tensor(x).flatten().shape == (24,)
    assert flatten(nf.Tensor(x)).shape == (24,)  # torch.flatten's default too
    assert nf.Tensor(x).flatten(1).shape == (2, 12)
    assert nf.Tensor(x).flatten(0, 1).shape == (6, 4)
    assert nn.Flatten()(nf.Tensor(x)).shape == (2, 12)  # the layer keeps the batch axis
    check_gradients(lambda t: t.flatten() * 1.5, [x])


# -- 3. data that is no number ----------------------------------------------------------------
@pytest.mark.parametrize("data,found", [
    (None, "None"), (["a"], "<U1.*'a'"), ([1.0, None], "NoneType None"),
    (np.array(["x", "y"]), "<U1"), ([b"a"], "S1"), (np.array([object()]), "object"),
])
def test_a_tensor_of_no_numbers_is_refused(data: Any, found: str) -> None:
    with pytest.raises(DTypeError, match=f"expects numbers, bools or arrays of them, found "
                                         f".*{found}"):
        nf.Tensor(data)


def test_numbers_of_other_types_and_ragged_lists() -> None:
    t = nf.Tensor([Fraction(1, 2), 2])
    assert t.dtype == np.float32 and t.tolist() == [0.5, 2.0]
    with pytest.raises(DTypeError, match="None"):
        nf.tensor(None)
    with pytest.raises(ShapeError, match="nested lists of one shape"):
        nf.Tensor([[1.0], [1.0, 2.0]])


def test_ndarray_subclasses_keep_their_dtype_as_plain_arrays(tmp_path: Any) -> None:
    """A memory-mapped float64 file became float32 while the same values in memory stayed
    float64 (the fast path tested `type(data) is np.ndarray`)."""
    values = np.arange(6, dtype=np.float64).reshape(2, 3)
    np.save(tmp_path / "a.npy", values)
    mapped = np.load(tmp_path / "a.npy", mmap_mode="r")
    for make in (nf.Tensor, nf.tensor):
        t = make(mapped)
        assert type(t.data) is np.ndarray and t.dtype == np.float64
        np.testing.assert_array_equal(t.data, values)
    assert nf.Tensor(mapped, dtype=np.float32).dtype == np.float32
    assert (nf.Tensor(np.ones(2, np.float32)) * mapped[0, :2]).dtype == np.float64


def test_a_masked_array_is_refused_rather_than_unmasked() -> None:
    masked = np.ma.masked_invalid(np.array([1.0, np.nan, 3.0]))
    with pytest.raises(DTypeError, match=r"found a masked array: pass \.filled\(value\).*"
                                         r"or \.data"):
        nf.Tensor(masked)
    assert nf.Tensor(masked.filled(0.0)).tolist() == [1.0, 0.0, 3.0]


# -- 4. indexing errors ----------------------------------------------------------------
@pytest.mark.parametrize("index,named", [
    (5, "index 5 .*out of bounds"), (np.array([0.0, 1.0]), "float64 array"),
    (nf.Tensor([0.5]), "float32 array"), (np.array([True, False]), "bool array"),
    ((0, 7), "index 0, 7"),
])
def test_bad_indices_raise_an_index_error_naming_index_and_shape(index: Any, named: str) -> None:
    t = nf.Tensor(np.zeros((3, 2)))
    with pytest.raises(TensorIndexError, match=rf"{named}.*shape \(3, 2\)|shape \(3, 2\).*{named}"):
        t[index]
    try:
        t[index]
    except IndexError as exc:  # NumPy-style handlers keep working
        assert isinstance(exc, ShapeError)


# -- 5. retain_grad and a non-leaf's .grad --------------------------------------------------------
def test_retain_grad_keeps_a_non_leafs_gradient() -> None:
    x = nf.Tensor(np.array([1.0, -2.0, 3.0]), requires_grad=True)
    y = x * 2.0
    y.retain_grad()
    loss = (y * y).sum()
    loss.retain_grad()
    loss.backward(retain_graph=True)
    np.testing.assert_allclose(y.grad, 2 * y.data)
    np.testing.assert_allclose(x.grad, 8 * x.data)  # the leaf gets its own gradient too
    assert loss.grad == 1.0 and y.retains_grad and not x.retains_grad
    loss.backward()  # accumulates, as a leaf's does
    np.testing.assert_allclose(y.grad, 4 * y.data)


def test_a_non_leafs_grad_without_retain_grad_is_none_with_a_warning() -> None:
    x = nf.Tensor(np.ones(2), requires_grad=True)
    y = x * 3.0
    y.sum().backward()
    with pytest.warns(UserWarning, match="retain_grad"):
        assert y.grad is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_allclose(x.grad, [3.0, 3.0])  # a leaf: no warning
    with pytest.raises(BackwardError, match="requires grad"):
        nf.Tensor(np.ones(2)).retain_grad()


# -- gather ----------------------------------------------------------------
def test_gather_picks_along_dim_with_gradient(rng: np.random.Generator) -> None:
    x = rng.standard_normal((3, 4))
    index = np.array([[0, 0], [3, 1], [2, 2]])  # repeated indices accumulate
    got = nf.Tensor(x).gather(1, index)
    np.testing.assert_array_equal(got.data, np.take_along_axis(x, index, 1))
    check_gradients(lambda t: t.gather(1, index), [x])
    rows = np.array([[2, 0, 1, 1]])  # dim 0, an index shorter than x on dim 1 too
    np.testing.assert_array_equal(nf.Tensor(x).gather(0, rows[:, :3]).data,
                                  [[x[2, 0], x[0, 1], x[1, 2]]])
    check_gradients(lambda t: t.gather(-2, nf.Tensor(rows[:, :3].astype(np.int32))), [x])


@pytest.mark.parametrize("index,error,match", [
    (np.array([[0.0]]), DTypeError, "integer index"),
    (np.array([[4]]), TensorIndexError, r"\[0, 4\).*found 4"),
    (np.array([[-1]]), TensorIndexError, "found -1"),
    (np.array([0]), ShapeError, "2 axes"),
    (np.zeros((4, 1), np.int64), ShapeError, "no longer than"),
])
def test_gather_refuses_bad_indices(index: np.ndarray, error: type, match: str) -> None:
    with pytest.raises(error, match=match):
        nf.Tensor(np.zeros((3, 4))).gather(1, index)


# -- topk ----------------------------------------------------------------
def test_topk_returns_values_and_indices_best_first(rng: np.random.Generator) -> None:
    x = rng.standard_normal((3, 5))
    values, indices = nf.Tensor(x).topk(2)
    want = np.argsort(-x, axis=1)[:, :2]
    np.testing.assert_array_equal(indices.data, want)
    np.testing.assert_array_equal(values.data, np.take_along_axis(x, want, 1))
    assert indices.dtype == np.int64
    low = nf.Tensor(x).topk(2, dim=0, largest=False, sorted=False)
    np.testing.assert_array_equal(low.indices.data, np.argsort(x, axis=0)[:2])
    check_gradients(lambda t: t.topk(3, dim=1).values, [x])


def test_topk_ties_take_the_first_position_and_nan_counts_largest() -> None:
    t = nf.Tensor([1.0, 3.0, 3.0, np.nan, 1.0])
    assert t.topk(3).indices.tolist() == [3, 1, 2]
    assert t.topk(2, largest=False).indices.tolist() == [0, 4]
    with pytest.raises(ShapeError, match=r"k in \[0, 5\].*found 6"):
        t.topk(6)


# -- norm ----------------------------------------------------------------
@pytest.mark.parametrize("p", [2, "fro", 1, 3, np.inf, -np.inf, 0])
def test_norm_matches_numpy(rng: np.random.Generator, p: Any) -> None:
    x = rng.standard_normal((3, 4))
    x[0, 0] = 0.0
    order = 2 if p == "fro" else p
    np.testing.assert_allclose(nf.Tensor(x).norm(p).data, np.linalg.norm(x.ravel(), order))
    np.testing.assert_allclose(nf.Tensor(x).norm(p, dim=1, keepdim=True).data,
                               np.linalg.norm(x, order, axis=1, keepdims=True))
    if p != 0:
        check_gradients(lambda t: t.norm(p, dim=0), [x])


def test_norm_gradient_at_zero_is_zero_and_bad_arguments_are_refused() -> None:
    z = nf.Tensor(np.zeros(3), requires_grad=True)
    z.norm().backward()
    np.testing.assert_array_equal(z.grad, np.zeros(3))  # not NaN, as torch
    with pytest.raises(DTypeError, match="floating point"):
        nf.Tensor([1, 2]).norm()
    with pytest.raises(ConfigError, match="'nuc'"):
        nf.Tensor([1.0]).norm("nuc")


# -- t, mT, to ----------------------------------------------------------------
def test_t_and_matrix_transpose(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3, 4))
    assert nf.Tensor(x[0]).t().shape == (4, 3)
    v = nf.Tensor(x[0, 0])
    assert v.t() is v
    with pytest.raises(ShapeError, match="at most 2"):
        nf.Tensor(x).t()
    np.testing.assert_array_equal(nf.Tensor(x).mT.data, np.swapaxes(x, -1, -2))
    check_gradients(lambda t: t.mT * 2.0, [x])
    with pytest.raises(ShapeError, match="at least 2"):
        _ = v.mT


def test_to_casts_and_moves_like_torch() -> None:
    x = nf.Tensor(np.array([1.5, 2.5], np.float32), requires_grad=True)
    y = x.to(np.float64)
    assert y.dtype == np.float64
    (y * y).sum().backward()
    assert x.grad.dtype == np.float32
    np.testing.assert_allclose(x.grad, [3.0, 5.0])
    assert x.to("cpu") is x and x.to(np.float32) is x
    assert x.to(nf.Tensor([1])).dtype == np.int64
    assert x.to(dtype="float16", device="cpu").dtype == np.float16
    copied = x.to("cpu", copy=True)
    assert copied is not x and copied.data is not x.data
    with pytest.raises(DeviceError):
        x.to("tpu:0x")
    with pytest.raises(ConfigError, match="found none"):
        x.to()
    with pytest.raises(ConfigError, match="one dtype"):
        x.to(np.float64, dtype=np.float32)


# -- factories ----------------------------------------------------------------
def test_factories_take_torchs_arguments() -> None:
    assert nf.zeros(2, 3).shape == (2, 3) and nf.zeros((2, 3)).dtype == np.float32
    assert nf.ones([4], dtype=np.int32).tolist() == [1, 1, 1, 1]
    assert nf.zeros(()).shape == () and nf.ones().shape == ()
    w = nf.zeros(3, requires_grad=True)
    assert w.requires_grad and w.is_leaf
    assert nf.full((2,), 7).dtype == np.int64 and nf.full((2,), 0.5).dtype == np.float32
    assert nf.full((1,), True).dtype == np.bool_
    assert nf.arange(4).tolist() == [0, 1, 2, 3] and nf.arange(4).dtype == np.int64
    np.testing.assert_allclose(nf.arange(0, 1, 0.25).data, [0, 0.25, 0.5, 0.75])
    assert nf.arange(1, 7, 2, dtype=np.float64).dtype == np.float64
    assert nf.zeros_like(nf.ones(2, dtype=np.int32)).dtype == np.int32
    with pytest.raises(ShapeError, match=">= 0"):
        nf.zeros(2, -1)
    with pytest.raises(ShapeError, match="ints"):
        nf.ones(2.5)
    with pytest.raises(DTypeError, match="floating point"):
        nf.randn(2, dtype=np.int64)


def test_random_factories_follow_manual_seed() -> None:
    nf.manual_seed(11)
    a, u = nf.randn(3, 4), nf.rand((5,), dtype=np.float64)
    nf.manual_seed(11)
    b, v = nf.randn((3, 4)), nf.rand(5, dtype=np.float64)
    np.testing.assert_array_equal(a.data, b.data)
    np.testing.assert_array_equal(u.data, v.data)
    assert a.dtype == np.float32 and u.dtype == np.float64
    assert ((u.data >= 0) & (u.data < 1)).all()
    assert nf.randn(2, requires_grad=True).requires_grad


def test_tensor_copies_its_data() -> None:
    src = np.array([1.0, 2.0], np.float32)
    t = nf.tensor(src, requires_grad=True)
    src[0] = 9.0
    assert t.tolist() == [1.0, 2.0] and t.requires_grad
    assert nf.tensor([1, 2]).dtype == np.int64 and nf.tensor([1.0], dtype=np.float64).dtype == \
        np.float64


# -- tracing: gather, topk, norm and mT into the inference graph --------------------------------
class Picks(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        h = self.fc(x)
        best = h.gather(1, h.argmax(axis=1, keepdims=True))
        values, indices = h.topk(3, dim=1)
        low = h.topk(2, dim=-1, largest=False).values
        n = h.norm(dim=1, keepdim=True)
        turned = h.reshape(x.shape[0], 2, 3).mT.reshape(x.shape[0], 6)
        return nf.concat([best, values, indices.float(), low, n, turned / n,
                          h.flatten(1)], axis=1)


def test_gather_topk_norm_and_matrix_transpose_trace_into_the_graph(tmp_path: Any) -> None:
    check_everywhere(Picks(), (6,), tmp_path)
