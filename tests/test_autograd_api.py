"""Leaf gradients own their arrays; split/chunk, expand, maximum/minimum and argmax/argmin.

Expected values at ties, NaNs and odd sizes were taken from PyTorch 2.x (torch.maximum,
torch.amax, torch.chunk, torch.split, Tensor.expand, torch.argmax).
"""

from __future__ import annotations

import numpy as np
import pytest

import nnforge as nf
from nnforge.autograd import Function
from nnforge.autograd.gradcheck import check_gradients
from nnforge.errors import BackwardError, ConfigError, ShapeError
from nnforge.ops.activation import log_softmax, softmax
from nnforge.ops.math import maximum, minimum
from nnforge.ops.shape import chunk, concat, expand, split
from nnforge.runtime import InferenceSession


def _rand(rng, shape, lo=-2.0, hi=2.0):
    return rng.uniform(lo, hi, size=shape)


def _leaves(*arrays):
    return [nf.Tensor(np.asarray(a, dtype=np.float64), requires_grad=True) for a in arrays]


# -- every leaf owns its .grad ------------------------------------------------------------------
def test_two_leaves_fed_the_same_gradient_get_separate_arrays():
    a, b = _leaves(np.ones(3), np.ones(3))
    (a + b).sum().backward()  # Add hands the same gy to both
    assert a.grad is not b.grad
    a.grad *= 0  # was b.grad too: b's gradient became [0, 0, 0]
    np.testing.assert_array_equal(b.grad, [1.0, 1.0, 1.0])
    a.grad[...] = 5.0
    (a * b).sum().backward()
    np.testing.assert_array_equal(b.grad, [2.0, 2.0, 2.0])


def test_leaves_reached_through_views_of_one_gradient_do_not_share_memory():
    a, b = _leaves(np.ones((3, 2)), np.ones((3, 2)))
    (a.reshape(6) + b.reshape(6)).sum().backward()  # views of one gy: was shared memory
    assert not np.shares_memory(a.grad, b.grad)
    c, d = _leaves(np.ones((2, 3)), np.ones((2, 3)))
    (c.T + d.T).backward(np.arange(6.0).reshape(3, 2))
    assert not np.shares_memory(c.grad, d.grad)
    assert d.grad.flags.f_contiguous  # the copy keeps the layout (a column-major weight's)
    np.testing.assert_array_equal(d.grad, np.arange(6.0).reshape(3, 2).T)


@pytest.mark.parametrize("make", [lambda x: x, lambda x: x + 1.0, lambda x: x.reshape(2, 2),
                                  lambda x: concat([x, nf.Tensor(np.ones(2))])])
def test_a_gradient_passed_to_backward_is_not_kept_as_a_leaf_gradient(make):
    x = nf.Tensor(np.ones(4), requires_grad=True)
    y = make(x)
    seed = np.ones(y.shape)
    y.backward(seed)  # x.grad was `seed` itself (or a view of it)
    assert not np.shares_memory(x.grad, seed)
    before = x.grad.copy()
    seed[...] = 7.0  # the caller reuses its buffer
    np.testing.assert_array_equal(x.grad, before)


def test_a_fresh_gradient_is_stored_without_a_copy():
    handed = np.full(3, 2.0)

    class Hand(Function):
        def forward(self, x):
            return x * 1.0

        def backward(self, gy):
            return (handed,)

    x = nf.Tensor(np.ones(3), requires_grad=True)
    Hand.apply(x).sum().backward()
    assert x.grad is handed  # the usual case (one gradient per parameter) costs no copy
    z, w = _leaves(np.ones(3), np.ones(3))
    (Hand.apply(z) + Hand.apply(w)).sum().backward()
    assert z.grad is handed and w.grad is not handed
    np.testing.assert_array_equal(w.grad, handed)


def test_accumulation_leaves_an_assigned_gradient_alone():
    a, b = _leaves(np.ones(3), np.ones(3))
    (a + b).sum().backward()
    b.grad = a.grad  # b's gradient is set to a's array
    (a * 2.0).sum().backward()  # accumulating into a builds a new array
    np.testing.assert_array_equal(a.grad, [3.0, 3.0, 3.0])
    np.testing.assert_array_equal(b.grad, [1.0, 1.0, 1.0])


# -- split and chunk (torch semantics: an int is a piece size) -----------------------------------
@pytest.mark.parametrize("shape,size,axis", [((7, 5), 2, 0), ((7, 5), [2, 0, 3], -1),
                                             ((1, 4), 3, 1), ((3, 1, 2), 1, -2),
                                             ((2, 6, 1), [6], 1), ((1,), 1, 0)])
def test_split_gradients_and_values(rng, shape, size, axis):
    x = _rand(rng, shape)
    # each piece scaled differently, so a piece sent back to the wrong place would show
    check_gradients(lambda t: concat([p * (i + 1.0) for i, p in enumerate(t.split(size, axis))],
                                     axis), [x])
    pieces = nf.Tensor(x).split(size, axis)
    n = x.shape[axis]
    sizes = [size] * (n // size) + ([n % size] if n % size else []) if isinstance(size, int) \
        else size
    want = np.split(x, np.cumsum(sizes)[:-1], axis=axis)
    assert len(pieces) == len(want)
    for p, w in zip(pieces, want):
        np.testing.assert_array_equal(p.data, w)


def test_unused_pieces_get_zero_gradient_and_split_backward_runs_once(rng):
    x = _rand(rng, (6, 3))
    check_gradients(lambda t: t.split(2)[1] * 3.0, [x])
    check_gradients(lambda t: t.chunk(3, axis=0)[0] * t.chunk(3, axis=0)[2], [x])
    t = nf.Tensor(x, requires_grad=True)
    a, b, c = t.split(2)
    loss = (a * b).sum() + c.sum() + a.sum()  # a piece used twice, one piece in two terms
    loss.backward(retain_graph=True)
    np.testing.assert_array_equal(t.grad, np.concatenate([x[2:4] + 1.0, x[0:2], np.ones((2, 3))]))
    loss.backward()
    np.testing.assert_array_equal(t.grad, 2 * np.concatenate([x[2:4] + 1.0, x[0:2],
                                                               np.ones((2, 3))]))


def test_a_piece_of_a_split_whose_graph_was_freed_raises():
    x = nf.Tensor(np.arange(6.0), requires_grad=True)
    a, b, _ = x.split(2)
    (a * 2.0).sum().backward()
    np.testing.assert_array_equal(x.grad, [2.0, 2.0, 0.0, 0.0, 0.0, 0.0])
    with pytest.raises(BackwardError, match="freed"):
        b.sum().backward()


@pytest.mark.parametrize("n,chunks,want", [(6, 4, [2, 2, 2]), (5, 3, [2, 2, 1]), (2, 5, [1, 1]),
                                           (7, 1, [7]), (0, 3, [0, 0, 0])])
def test_chunk_sizes_follow_pytorch(n, chunks, want):
    x = nf.Tensor(np.arange(2.0 * n).reshape(2, n))
    pieces = x.chunk(chunks, axis=-1)
    assert [p.shape[1] for p in pieces] == want
    np.testing.assert_array_equal(np.concatenate([p.data for p in pieces], axis=1), x.data)
    assert [p.shape for p in chunk(x, chunks, 1)] == [p.shape for p in pieces]


def test_split_sizes_follow_pytorch_and_bad_ones_are_refused():
    x = nf.Tensor(np.arange(5.0))
    assert [p.shape for p in x.split(2)] == [(2,), (2,), (1,)]
    assert [p.shape for p in x.split(9)] == [(5,)]
    assert [p.shape for p in nf.Tensor(np.zeros(0)).split(2)] == [(0,)]
    assert [p.shape for p in split(x, [2, 0, 3])] == [(2,), (0,), (3,)]
    with nf.no_grad():
        assert all(not p.requires_grad for p in nf.Tensor(np.ones(4), requires_grad=True).split(2))
    for bad, match in [(lambda: x.split(0), "positive piece size"),
                       (lambda: x.split([2, 2]), "add up to the axis length 5"),
                       (lambda: x.split([6, -1]), "non-negative"),
                       (lambda: x.split([2.5, 2.5]), "integer sizes"),
                       (lambda: x.split(2, axis=1), r"axis in \[-1, 0\]"),
                       (lambda: x.split(2, axis=0.0), "one integer axis"),
                       (lambda: x.chunk(0), "positive number of chunks")]:
        with pytest.raises(ShapeError, match=match):
            bad()


# -- expand / broadcast_to --------------------------------------------------------------------
@pytest.mark.parametrize("shape,target", [((3, 1), (2, 3, 4)), ((3, 1), (2, -1, 4)),
                                          ((1,), (5,)), ((1, 1), (1, 1)), ((2, 1, 3), (2, 4, 3)),
                                          ((1, 3), (4, 3)), ((3, 1), (3, 0))])
def test_expand_gradients_and_values(rng, shape, target):
    x = _rand(rng, shape)
    check_gradients(lambda t: t.expand(*target), [x])
    resolved = tuple(x.shape[i - len(target) + x.ndim] if d == -1 else d
                     for i, d in enumerate(target))
    np.testing.assert_array_equal(nf.Tensor(x).expand(target).data, np.broadcast_to(x, resolved))
    if -1 not in target:
        np.testing.assert_array_equal(nf.Tensor(x).broadcast_to(target).data,
                                      np.broadcast_to(x, target))


def test_expand_refuses_what_pytorch_refuses():
    x = nf.Tensor(np.ones((3, 1)))
    with pytest.raises(ShapeError, match="at least 2 sizes"):
        x.expand(3)
    with pytest.raises(ShapeError, match="axis 0 of shape \\(3, 1\\) has size 3, found 2"):
        x.expand(2, 4)
    with pytest.raises(ShapeError, match="new leading axes"):
        x.expand(-1, 3, 1)
    with pytest.raises(ShapeError, match="found -2"):
        expand(x, (3, -2))
    with pytest.raises(ShapeError, match="integer sizes"):
        x.expand(3.0, 2)
    assert not x.expand(2, 3, 4).data.flags.writeable  # a view: writes would hit many places


# -- elementwise maximum / minimum ---------------------------------------------------------------
@pytest.mark.parametrize("sa,sb", [((1, 3), (3,)), ((4, 3), (4, 1)), ((2, 3, 5), (1, 5)),
                                   ((1,), (1, 1)), ((3,), ())])
def test_maximum_and_minimum_gradients_and_values(rng, sa, sb):
    a, b = _rand(rng, sa), _rand(rng, sb)  # continuous values: no ties
    check_gradients(lambda s, t: s.maximum(t), [a, b])
    check_gradients(lambda s, t: minimum(s, t), [a, b])
    np.testing.assert_array_equal(maximum(nf.Tensor(a), nf.Tensor(b)).data, np.maximum(a, b))
    np.testing.assert_array_equal(nf.Tensor(a).minimum(nf.Tensor(b)).data, np.minimum(a, b))


def test_maximum_and_minimum_split_ties_and_pass_nans_like_pytorch():
    a, b = _leaves([1.0, 2.0, 3.0, np.nan, 1.0], [1.0, 3.0, 2.0, 0.0, np.nan])
    out = maximum(a, b)
    out.sum().backward()
    np.testing.assert_array_equal(out.data, [1.0, 3.0, 3.0, np.nan, np.nan])
    np.testing.assert_array_equal(a.grad, [0.5, 0.0, 1.0, 1.0, 1.0])
    np.testing.assert_array_equal(b.grad, [0.5, 1.0, 0.0, 1.0, 1.0])
    a.grad = b.grad = None
    out = minimum(a, b)
    out.sum().backward()
    np.testing.assert_array_equal(out.data, [1.0, 2.0, 2.0, np.nan, np.nan])
    np.testing.assert_array_equal(a.grad, [0.5, 1.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(b.grad, [0.5, 0.0, 1.0, 1.0, 1.0])
    c, s = _leaves([0.0, 1.0, 2.0], 1.0)  # broadcast: a tie sends half to each side
    c.maximum(s).sum().backward()
    np.testing.assert_array_equal(c.grad, [0.0, 0.5, 1.0])
    assert s.grad == 1.5


def test_maximum_with_a_number_keeps_the_tensors_dtype():
    f32 = nf.Tensor(np.array([-1.0, 2.0], np.float32), requires_grad=True)
    out = f32.maximum(0.5)
    assert out.dtype == np.float32
    out.sum().backward()
    np.testing.assert_array_equal(f32.grad, [0.0, 1.0])
    np.testing.assert_array_equal(minimum(0.1, nf.Tensor(np.array([1.0]))).data, [0.1])


# -- reductions: max/min ties, argmax/argmin -------------------------------------------------
def test_max_and_min_over_an_axis_split_ties_like_amax():
    x = nf.Tensor(np.array([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]]), requires_grad=True)
    x.max(axis=1).sum().backward()
    np.testing.assert_array_equal(x.grad, [[0.0, 0.5, 0.5], [0.5, 0.5, 0.0]])
    y = nf.Tensor(np.array([[1.0, 2.0], [2.0, 0.0]]), requires_grad=True)
    y.max(axis=(0, -1)).backward()
    np.testing.assert_array_equal(y.grad, [[0.0, 0.5], [0.5, 0.0]])
    z = nf.Tensor(np.array([[0.0, 1.0], [0.0, 0.0]]), requires_grad=True)
    z.min(axis=0, keepdims=True).sum().backward()
    np.testing.assert_array_equal(z.grad, [[0.5, 0.0], [0.5, 1.0]])


@pytest.mark.parametrize("op", ["max", "min", "argmax", "argmin"])
def test_reducing_over_an_empty_axis_raises_a_shape_error(op):
    x = nf.Tensor(np.zeros((0, 3)))
    with pytest.raises(ShapeError, match="non-empty"):  # was NumPy's ValueError
        getattr(x, op)(axis=0)
    with pytest.raises(ShapeError, match="non-empty"):
        getattr(x, op)()
    assert getattr(x, op)(axis=1).shape == (0,)


@pytest.mark.parametrize("shape", [(1, 3), (4, 3), (2, 3, 5), (1,)])
@pytest.mark.parametrize("axis", [None, 0, -1])
@pytest.mark.parametrize("keepdims", [False, True])
def test_argmax_and_argmin_match_numpy(rng, shape, axis, keepdims):
    x = rng.integers(0, 3, size=shape).astype(np.float64)  # small integers: many ties
    t = nf.Tensor(x, requires_grad=True)
    for name in ("argmax", "argmin"):
        got = getattr(t, name)(axis=axis, keepdims=keepdims)
        assert got.dtype == np.int64 and not got.requires_grad and got.is_leaf
        np.testing.assert_array_equal(got.data, getattr(np, name)(x, axis=axis, keepdims=keepdims))


def test_argmax_picks_the_first_tie_and_nan_and_checks_its_axis():
    assert nf.Tensor(np.array([1.0, 3.0, 3.0])).argmax().item() == 1
    assert nf.Tensor(np.array([1.0, np.nan, 3.0, np.nan])).argmax().item() == 1  # as torch
    assert nf.Tensor(np.array([1.0, np.nan, 3.0])).argmin().item() == 1
    assert nf.Tensor(np.array(5.0)).argmax().item() == 0
    x = nf.Tensor(np.ones((2, 3)))
    assert x.argmax(keepdims=True).shape == (1, 1)
    with pytest.raises(ShapeError, match=r"axes in \[-2, 1\]"):
        x.argmax(axis=2)
    with pytest.raises(ShapeError, match="one integer axis"):
        x.argmin(axis=(0, 1))


# -- stack and where corners ----------------------------------------------------------------
def test_stack_names_itself_when_the_axis_is_out_of_range(rng):
    t = nf.Tensor(np.ones((2, 3)))
    assert nf.stack([t, t], axis=2).shape == (2, 3, 2) and nf.stack([t, t], -3).shape == (2, 2, 3)
    with pytest.raises(ShapeError, match=r"stack expects an axis in \[-3, 2\]"):
        nf.stack([t, t], axis=3)
    check_gradients(lambda a, b: nf.stack([a, b], axis=-1), [_rand(rng, (1, 3)),
                                                             _rand(rng, (1, 3))])


def test_where_condition_may_be_larger_than_both_sides(rng):
    cond = rng.random((4, 3)) > 0.5
    a, b = _rand(rng, (3,)), _rand(rng, (4, 1))
    check_gradients(lambda s, t: nf.where(cond, s, t), [a, b])
    np.testing.assert_array_equal(nf.where(cond, nf.Tensor(a), nf.Tensor(b)).data,
                                  np.where(cond, a, b))


def test_new_ops_are_reachable_from_the_package():
    """nf.maximum, nf.minimum, nf.split, nf.chunk and nf.expand are the ops' functions."""
    a = nf.Tensor([1.0, 5.0], requires_grad=True)
    nf.maximum(a, 2.0).sum().backward()
    np.testing.assert_array_equal(a.grad, [0.0, 1.0])
    assert [p.shape for p in nf.split(nf.Tensor(np.zeros((5, 2))), 2)] == [(2, 2), (2, 2), (1, 2)]
    assert len(nf.chunk(nf.Tensor(np.zeros(6)), 4)) == 3
    assert nf.expand(nf.Tensor(np.zeros((2, 1))), (2, 3)).shape == (2, 3)
    assert nf.minimum(a, 2.0).data.tolist() == [1.0, 2.0]
    assert {"maximum", "minimum", "split", "chunk", "expand"} <= set(nf.__all__)


# -- user-report fixes: ==, np.asarray, shape errors, int scalars, torch names ----------------
def test_eq_and_ne_are_elementwise_and_hash_stays_identity():
    pred, y = nf.Tensor([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 3.0])
    assert np.array_equal(pred == y, [True, False, True])
    assert np.array_equal(pred != y, [False, True, False])
    assert np.array_equal(y == pred, [True, False, True])  # reflected through the Tensor
    assert np.mean(pred == y) == pytest.approx(2 / 3)
    assert (pred == nf.Tensor([1.0, 0.0, 0.0])).dtype == bool
    assert (pred == None) is False and (pred != None) is True  # noqa: E711 - the operator
    assert {pred: 1}[pred] == 1 and pred in {pred}  # hashing by identity, as torch


def test_eq_and_ne_are_traced_like_the_other_comparisons():
    class Masked(nf.nn.Module):
        def forward(self, x):
            r = x.relu()
            return nf.where(r == 0, x * 2.0, x) + nf.where(r != 0, x, 1.0)

    x = np.random.default_rng(0).standard_normal((5, 6)).astype(np.float32)
    model = Masked()
    session = InferenceSession(model, input_shape=(6,))
    np.testing.assert_array_equal(session.run(x), model(x).data)


def test_np_asarray_gives_the_data_and_numpy_functions_leave_autograd():
    model = nf.nn.Sequential(nf.nn.Linear(3, 2))
    out = model(np.ones((4, 3), np.float32))
    arr = np.asarray(out)
    assert arr.dtype == np.float32 and arr.shape == (4, 2)
    assert np.shares_memory(arr, out.data)
    assert np.asarray(out, dtype=np.float64).dtype == np.float64
    t = nf.Tensor([0.0, 1.0], requires_grad=True)
    e = np.exp(t)
    assert type(e) is np.ndarray and e.dtype == np.float32  # a plain array: no graph
    assert isinstance(np.ones(2) + t, nf.Tensor)  # ndarray + Tensor still records
    assert not np.asarray(t).flags.owndata or np.shares_memory(np.asarray(t), t.data)


@pytest.mark.parametrize("make", [
    lambda a, b: a @ b, lambda a, b: a + b, lambda a, b: a * b,
    lambda a, b: concat([a, b], axis=1), lambda a, b: maximum(a, b)])
def test_shape_mismatches_raise_shape_error_naming_both_shapes(make):
    a, b = nf.Tensor(np.ones((2, 3))), nf.Tensor(np.ones((4, 5)))
    with pytest.raises(ShapeError, match=r"\(2, 3\).*\(4, 5\)"):
        make(a, b)


def test_python_scalars_keep_an_int_tensors_dtype_and_floats_promote_to_float32():
    t = nf.Tensor(np.array([1, 2], np.int32))
    for r in (t + 1, 1 + t, t - 1, 3 - t, t * 2, 2 * t, maximum(t, 1)):
        assert r.dtype == np.int32
    for r in (t + 0.5, 0.5 * t, t / 2, 3 / t, maximum(t, 1.5)):
        assert r.dtype == np.float32
    np.testing.assert_array_equal((t / 2).data, [0.5, 1.0])
    assert (nf.Tensor(np.array([True])) + 1).dtype == np.int64  # as torch
    x64 = nf.Tensor(np.ones(2), dtype=np.float64)
    assert (x64 * 0.1).dtype == np.float64


def test_view_permute_and_torch_style_transpose():
    x = np.arange(24.0).reshape(2, 3, 4)
    t = nf.Tensor(x, dtype=np.float64)
    np.testing.assert_array_equal(t.view(4, 6).data, x.reshape(4, 6))
    np.testing.assert_array_equal(t.permute(2, 0, 1).data, x.transpose(2, 0, 1))
    np.testing.assert_array_equal(t.transpose(0, 2).data, np.swapaxes(x, 0, 2))
    np.testing.assert_array_equal(t.transpose(-1, 1).data, np.swapaxes(x, -1, 1))
    np.testing.assert_array_equal(t.transpose((2, 0, 1)).data, x.transpose(2, 0, 1))
    np.testing.assert_array_equal(t.transpose(1, 2, 0).data, x.transpose(1, 2, 0))
    np.testing.assert_array_equal(t.transpose().data, x.T)
    with pytest.raises(ShapeError):
        t.transpose(0, 3)
    check_gradients(lambda a: a.transpose(0, 2) * a.permute(2, 1, 0), [_rand(
        np.random.default_rng(1), (2, 3, 2))])


def test_dim_is_accepted_as_axis_and_both_are_refused():
    x = np.random.default_rng(2).standard_normal((3, 4))
    t = nf.Tensor(x, dtype=np.float64)
    for name in ("sum", "mean", "max", "min", "var", "std", "argmax", "argmin"):
        by_dim = getattr(t, name)(dim=1)  # max/min: torch's (values, indices)
        by_dim = by_dim.values if isinstance(by_dim, tuple) else by_dim
        np.testing.assert_allclose(by_dim.data, getattr(t, name)(axis=1).data)
        with pytest.raises(ConfigError, match="axis= or its torch name dim="):
            getattr(t, name)(axis=0, dim=1)
    np.testing.assert_allclose(softmax(t, dim=0).data, softmax(t, axis=0).data)
    np.testing.assert_allclose(log_softmax(t, dim=0).data, log_softmax(t, 0).data)
    np.testing.assert_allclose(softmax(t).data, softmax(t, -1).data)
    np.testing.assert_array_equal(nf.cat([t, t], dim=1).data, np.concatenate([x, x], 1))
    assert nf.cat is nf.concat
    assert nf.concat([t, t]).shape == (6, 4)
    with pytest.raises(ConfigError):
        nf.cat([t, t], axis=0, dim=1)


def test_set_grad_enabled_is_a_function_and_a_context():
    x = nf.Tensor([1.0], requires_grad=True)
    with nf.set_grad_enabled(False):
        assert not (x * 2).requires_grad
    assert (x * 2).requires_grad
    nf.set_grad_enabled(False)
    try:
        assert not (x * 2).requires_grad
    finally:
        nf.set_grad_enabled(True)
    assert (x * 2).requires_grad
