"""Gradient checks for elementwise, reduction, shape, matmul, activation and loss ops."""

from __future__ import annotations

import math

import numpy as np
import pytest

import nnforge as nf
from nnforge.autograd.gradcheck import check_gradients
from nnforge.errors import ShapeError
from nnforge.ops import activation as A
from nnforge.ops import loss as L
from nnforge.ops.norm import layer_norm
from nnforge.ops.shape import concat, flatten

SHAPES = [(1, 3), (4, 3), (2, 3, 5)]


def _rand(rng, shape, lo=-2.0, hi=2.0):
    return rng.uniform(lo, hi, size=shape)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("op", ["add", "sub", "mul", "div"])
def test_binary_ops_with_broadcasting(rng, shape, op):
    a = _rand(rng, shape)
    b = _rand(rng, shape[-1:], 0.5, 2.0)  # broadcast along leading axes
    f = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y,
         "mul": lambda x, y: x * y, "div": lambda x, y: x / y}[op]
    check_gradients(f, [a, b])


@pytest.mark.parametrize("shape", SHAPES)
def test_unary_math(rng, shape):
    x = _rand(rng, shape, 0.5, 2.0)
    check_gradients(lambda t: t.exp(), [x])
    check_gradients(lambda t: t.log(), [x])
    check_gradients(lambda t: t ** 3, [x])
    check_gradients(lambda t: t.sqrt(), [x])
    check_gradients(lambda t: -t, [x])
    check_gradients(lambda t: 2.0 - t / 3.0, [x])


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("axis", [None, 0, -1])
@pytest.mark.parametrize("keepdims", [False, True])
def test_reductions(rng, shape, axis, keepdims):
    x = _rand(rng, shape)
    check_gradients(lambda t: t.sum(axis=axis, keepdims=keepdims), [x])
    check_gradients(lambda t: t.mean(axis=axis, keepdims=keepdims), [x])
    check_gradients(lambda t: t.max(axis=axis, keepdims=keepdims), [x])


def test_max_splits_gradient_between_ties():
    x = nf.Tensor(np.array([[1.0, 3.0, 3.0]]), requires_grad=True)
    x.max().backward()
    np.testing.assert_allclose(x.grad, [[0.0, 0.5, 0.5]])


@pytest.mark.parametrize("sa,sb", [((1, 4), (4, 3)), ((5, 4), (4, 3)), ((2, 5, 4), (4, 3)),
                                   ((4,), (4, 3)), ((5, 4), (4,)), ((4,), (4,))])
def test_matmul(rng, sa, sb):
    check_gradients(lambda a, b: a @ b, [_rand(rng, sa), _rand(rng, sb)])


def test_shape_ops(rng):
    x = _rand(rng, (2, 3, 4))
    check_gradients(lambda t: t.reshape(4, 6), [x])
    check_gradients(lambda t: t.transpose(2, 0, 1), [x])
    check_gradients(lambda t: t.T, [x])
    check_gradients(lambda t: t.flatten(1), [x])
    check_gradients(lambda t: t[:, 1:, ::2], [x])
    check_gradients(lambda t: t[np.array([0, 1, 1])], [x])  # repeated index accumulates
    check_gradients(lambda a, b: concat([a, b], axis=1), [x, _rand(rng, (2, 2, 4))])


def test_reshape_error_names_shapes():
    with pytest.raises(ShapeError, match=r"\(2, 3\).*\(4, 2\)"):
        nf.Tensor(np.zeros((2, 3))).reshape(4, 2)


@pytest.mark.parametrize("shape", [(1, 5), (4, 5), (2, 3, 5)])
def test_activations(rng, shape):
    x = _rand(rng, shape, -3, 3)
    x[np.abs(x) < 1e-3] = 0.5  # keep away from ReLU's kink
    for f in (A.relu, A.sigmoid, A.tanh, A.gelu, lambda t: A.leaky_relu(t, 0.1),
              lambda t: A.softmax(t, -1), lambda t: A.log_softmax(t, -1),
              lambda t: A.softmax(t, 0)):
        check_gradients(f, [x])


def test_activation_values():
    x = np.array([-100.0, -1.0, 0.0, 1.0, 100.0], dtype=np.float32)
    s = A.sigmoid(nf.Tensor(x)).data
    assert np.all(np.isfinite(s)) and 0.0 <= s[0] < 1e-40 and s[-1] == 1.0
    np.testing.assert_allclose(s[1:4], 1 / (1 + np.exp(-x[1:4])), rtol=1e-6)
    g = A.gelu(nf.Tensor(np.array([-1.0, 0.5, 2.0]))).data
    np.testing.assert_allclose(g, [-0.15865525393145707, 0.34573123063700656,
                                   1.9544997361036416], rtol=1e-6)
    ls = A.log_softmax(nf.Tensor(np.array([[1000.0, 0.0]]))).data
    np.testing.assert_allclose(ls, [[0.0, -1000.0]])


@pytest.mark.parametrize("n", [1, 6])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_regression_losses(rng, n, reduction):
    pred, target = _rand(rng, (n, 3)), _rand(rng, (n, 3))
    check_gradients(lambda p: L.mse_loss(p, target, reduction), [pred])
    check_gradients(lambda p: L.l1_loss(p, target, reduction), [pred])
    check_gradients(lambda p: L.huber_loss(p, target, 0.7, reduction), [pred])


@pytest.mark.parametrize("n", [1, 7])
@pytest.mark.parametrize("weight", [None, [0.5, 2.0, 1.0, 3.0]])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy(rng, n, weight, smoothing, reduction):
    logits = _rand(rng, (n, 4))
    target = rng.integers(0, 4, size=n)
    check_gradients(lambda z: L.cross_entropy(z, target, weight, smoothing, reduction), [logits])


def test_cross_entropy_matches_formula(rng):
    z = _rand(rng, (5, 3))
    t = np.array([0, 2, 1, 1, 0])
    w = np.array([1.0, 2.0, 0.5])
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    want = -(w[t] * logp[np.arange(5), t]).sum() / w[t].sum()
    got = L.cross_entropy(nf.Tensor(z), t, weight=w).item()
    assert got == pytest.approx(want, rel=1e-12)
    eps = 0.1
    q = np.full((5, 3), eps / 3)
    q[np.arange(5), t] += 1 - eps
    want_smooth = -(q * logp).sum(1).mean()
    assert L.cross_entropy(nf.Tensor(z), t, label_smoothing=eps).item() == pytest.approx(
        want_smooth, rel=1e-12)
    probs = np.full((5, 3), 1 / 3)
    check_gradients(lambda p: L.cross_entropy(p, probs), [z])


def test_cross_entropy_rejects_bad_targets():
    z = nf.Tensor(np.zeros((2, 3), np.float32))
    with pytest.raises(ShapeError, match=r"\[0, 3\)"):
        L.cross_entropy(z, np.array([0, 3]))
    with pytest.raises(ShapeError, match="2 class indices"):
        L.cross_entropy(z, np.array([0, 1, 2]))


@pytest.mark.parametrize("n", [1, 6])
@pytest.mark.parametrize("pos_weight", [None, 3.0])
def test_bce_with_logits(rng, n, pos_weight):
    x = _rand(rng, (n, 2), -4, 4)
    y = rng.integers(0, 2, size=(n, 2)).astype(np.float64)
    check_gradients(lambda t: L.binary_cross_entropy_with_logits(t, y, pos_weight), [x])
    pw = 1.0 if pos_weight is None else pos_weight
    p = 1 / (1 + np.exp(-x))
    want = -(pw * y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
    assert L.binary_cross_entropy_with_logits(nf.Tensor(x), y, pos_weight).item() == \
        pytest.approx(want, rel=1e-10)
    check_gradients(lambda t: L.binary_cross_entropy(t, y), [p])


def test_bce_with_logits_is_stable_for_large_logits():
    x = nf.Tensor(np.array([[1000.0], [-1000.0]], np.float32), requires_grad=True)
    loss = L.binary_cross_entropy_with_logits(x, np.array([0.0, 1.0]))
    loss.backward()
    assert loss.item() == pytest.approx(1000.0)
    np.testing.assert_allclose(x.grad, [[0.5], [-0.5]])


def test_gradients_accumulate_and_no_grad():
    w = nf.Tensor(np.array([2.0]), requires_grad=True)
    (w * 3.0).sum().backward()
    (w * 3.0).sum().backward()
    np.testing.assert_allclose(w.grad, [6.0])
    with nf.no_grad():
        y = w * 2.0
    assert not y.requires_grad
    assert not w.detach().requires_grad


def test_shared_input_gradient_is_not_aliased():
    a = nf.Tensor(np.ones(3), requires_grad=True)
    b = nf.Tensor(np.ones(3), requires_grad=True)
    (a + b).sum().backward()
    a.grad *= 0  # in place: b.grad was the same array
    np.testing.assert_allclose(b.grad, np.ones(3))


def test_backward_shape_check():
    x = nf.Tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(ShapeError, match="expected"):
        (x * 2.0).backward(np.ones(3))
    with pytest.raises(ShapeError, match="scalar"):
        (x * 2.0).backward()


# -- the ops a PyTorch user reaches for next: min, abs, clip, where, base ** x, var/std, --------
# -- squeeze/unsqueeze and stack -------------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("axis", [None, 0, -1])
@pytest.mark.parametrize("keepdims", [False, True])
def test_min_var_std_reductions(rng, shape, axis, keepdims):
    x = _rand(rng, shape)
    several = x.size // np.size(x.sum(axis=axis)) > 1
    ddof = 1 if several else 0  # ddof=1 needs 2+ values
    check_gradients(lambda t: t.min(axis=axis, keepdims=keepdims), [x])
    check_gradients(lambda t: t.var(axis=axis, keepdims=keepdims), [x])
    if several:  # the std of one value is 0, where its slope is infinite
        check_gradients(lambda t: t.std(axis=axis, keepdims=keepdims, ddof=ddof), [x])
    np.testing.assert_allclose(nf.Tensor(x).var(axis=axis, keepdims=keepdims).data,
                               x.var(axis=axis, keepdims=keepdims), rtol=1e-12)
    np.testing.assert_allclose(nf.Tensor(x).std(axis=axis, keepdims=keepdims, ddof=ddof).data,
                               x.std(axis=axis, keepdims=keepdims, ddof=ddof), rtol=1e-12)
    np.testing.assert_array_equal(nf.Tensor(x).min(axis=axis, keepdims=keepdims).data,
                                  x.min(axis=axis, keepdims=keepdims))


def test_min_splits_gradient_between_ties_and_var_needs_enough_values():
    x = nf.Tensor(np.array([[1.0, 1.0, 3.0]]), requires_grad=True)
    x.min().backward()
    np.testing.assert_allclose(x.grad, [[0.5, 0.5, 0.0]])
    with pytest.raises(ShapeError, match="more than ddof=1"):
        nf.Tensor(np.ones((3, 1))).var(axis=1, ddof=1)


@pytest.mark.parametrize("shape", SHAPES)
def test_abs_clip_and_base_power(rng, shape):
    x = _rand(rng, shape)
    x[np.abs(x) < 0.05] = 0.5  # keep away from the kink at 0
    check_gradients(lambda t: abs(t), [x])
    check_gradients(lambda t: t.abs(), [x])
    y = _rand(rng, shape)
    y[np.abs(np.abs(y) - 0.7) < 0.05] = 0.0  # away from the clip bounds
    check_gradients(lambda t: t.clip(-0.7, 0.7), [y])
    check_gradients(lambda t: t.clamp(low=-0.7), [y])
    check_gradients(lambda t: t.clip(high=0.7), [y])
    check_gradients(lambda t: 2.5 ** t, [x])
    np.testing.assert_array_equal((2.5 ** nf.Tensor(x)).data, 2.5 ** x)


def test_abs_and_clip_gradients_at_their_kinks_follow_pytorch():
    x = nf.Tensor(np.array([-1.0, 0.0, 0.5, 1.0, 2.0]), requires_grad=True)
    abs(x).sum().backward()
    np.testing.assert_array_equal(x.grad, [-1.0, 0.0, 1.0, 1.0, 1.0])
    x.grad = None
    x.clip(0.0, 1.0).sum().backward()  # the bounds themselves pass the gradient
    np.testing.assert_array_equal(x.grad, [0.0, 1.0, 1.0, 1.0, 0.0])
    from nnforge.errors import ConfigError  # noqa: PLC0415

    with pytest.raises(ConfigError, match="low <= high"):
        x.clip(1.0, 0.0)
    with pytest.raises(ConfigError, match="neither"):
        x.clip()


def test_power_gradients_at_a_zero_base_follow_pytorch():
    # d(x**0)/dx is 0 everywhere (0 * 0**-1 was NaN at x = 0); 0**x is flat for x >= 0
    x = nf.Tensor(np.array([0.0, 1.0, -2.0]), requires_grad=True)
    (x ** 0).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.0, 0.0, 0.0])
    e = nf.Tensor(np.array([0.0, 1.0, 2.5]), requires_grad=True)
    (0.0 ** e).sum().backward()
    np.testing.assert_array_equal(e.grad, [0.0, 0.0, 0.0])
    check_gradients(lambda t: t ** 0, [np.array([0.5, -1.5])])


def test_backward_through_a_freed_graph_raises_instead_of_doing_nothing():
    from nnforge.errors import BackwardError  # noqa: PLC0415

    w = nf.Tensor(np.array([2.0, -1.0]), requires_grad=True)
    y = w * w
    loss = y.sum()
    loss.backward()
    np.testing.assert_array_equal(w.grad, [4.0, -2.0])
    with pytest.raises(BackwardError, match="retain_graph"):
        loss.backward()  # used to return silently, leaving w.grad unchanged
    with pytest.raises(BackwardError, match="freed"):
        (y * 3.0).sum().backward()  # a tensor reused from the old graph
    assert not y.is_leaf and w.grad.tolist() == [4.0, -2.0]
    (y.detach() * w).sum().backward()  # detached, it is a constant again
    np.testing.assert_array_equal(w.grad, [8.0, -1.0])
    kept = (w * 3.0).sum()
    kept.backward(retain_graph=True)
    kept.backward()
    np.testing.assert_array_equal(w.grad, [14.0, 5.0])


def test_indexing_with_a_tensor_inside_a_tuple_scatters_repeats(rng):
    x = _rand(rng, (4, 3))
    rows = nf.Tensor(np.array([0, 2, 0, 0]))
    check_gradients(lambda t: t[rows, 1], [x])
    t = nf.Tensor(x, requires_grad=True)
    t[rows, 1:].sum().backward()
    np.testing.assert_array_equal(t.grad[:, 1:], [[3, 3], [0, 0], [1, 1], [0, 0]])


@pytest.mark.parametrize("shape", SHAPES)
def test_where_with_broadcasting_and_numbers(rng, shape):
    a, b = _rand(rng, shape), _rand(rng, shape[-1:])
    cond = rng.random(shape) > 0.5
    check_gradients(lambda s, t: nf.where(cond, s, t), [a, b])
    check_gradients(lambda s: nf.where(cond, s, 0.0), [a])
    out = nf.where(nf.Tensor(cond), nf.Tensor(a), nf.Tensor(b))  # a Tensor condition works too
    np.testing.assert_array_equal(out.data, np.where(cond, a, b))
    f32 = nf.where(cond, nf.Tensor(a.astype(np.float32)), 0.0)
    assert f32.dtype == np.float32


def test_squeeze_unsqueeze_and_stack(rng):
    x = _rand(rng, (2, 1, 3))
    check_gradients(lambda t: t.unsqueeze(0).unsqueeze(-1), [x])
    check_gradients(lambda t: t.squeeze(1), [x])
    check_gradients(lambda s, t: nf.stack([s, t], axis=1), [x, _rand(rng, (2, 1, 3))])
    t = nf.Tensor(x)
    assert t.unsqueeze(-1).shape == (2, 1, 3, 1) and t.unsqueeze(1).shape == (2, 1, 1, 3)
    assert t.squeeze().shape == (2, 3) and t.squeeze(-2).shape == (2, 3)
    assert nf.stack([t, t, t]).shape == (3, 2, 1, 3)
    np.testing.assert_array_equal(nf.stack([t, t], axis=-1).data, np.stack([x, x], axis=-1))
    with pytest.raises(ShapeError, match="length 1, found axis 0 of length 2"):
        t.squeeze(0)
    with pytest.raises(ShapeError, match="squeeze expects axes in"):
        t.squeeze(3)
    with pytest.raises(ShapeError, match="unsqueeze expects an axis"):
        t.unsqueeze(5)
    with pytest.raises(ShapeError, match="one shape"):
        nf.stack([t, t.squeeze()])
    with pytest.raises(ShapeError, match="at least one"):
        nf.stack([])


def test_float_of_a_one_element_tensor_and_no_item_assignment():
    assert float(nf.Tensor(np.array([2.5]))) == 2.5
    with pytest.raises(ShapeError, match="one element"):
        float(nf.Tensor(np.ones(2)))
    from nnforge.errors import DTypeError  # noqa: PLC0415

    with pytest.raises(DTypeError, match="cannot be assigned into"):
        nf.Tensor(np.ones(2))[0] = 1.0


def test_clip_bounds_are_compared_in_the_tensors_precision():
    # float32(0.7) < 0.7: at the float32 bound the value is inside, so the gradient passes
    x = nf.Tensor(np.array([0.7, 0.8], np.float32), requires_grad=True)
    x.clip(0.7, 0.75).sum().backward()
    np.testing.assert_array_equal(x.grad, [1.0, 0.0])


def test_relu_floor_gives_read_only_zeros_of_bounded_size():
    x = np.ones((3, 5), np.float32)
    z = A.relu_floor(x)
    assert z.shape == (3, 5) and z.dtype == np.float32 and not z.any()
    assert not z.flags.writeable
    big = np.lib.stride_tricks.as_strided(np.ones(1, np.float32),
                                          (A.ZEROS_MAX_ELEMENTS + 1, 2), (0, 0))
    row = A.relu_floor(big)  # beyond the cap: a row to broadcast, not a huge array
    assert row.shape == (2,)
    assert A._ZEROS["<f4"].size <= A.ZEROS_MAX_ELEMENTS
    np.testing.assert_array_equal(np.maximum(np.array([-1.0, 2.0]), A.relu_floor(
        np.zeros(2))), [0.0, 2.0])


def test_transpose_with_negative_axes_sends_the_gradient_back(rng):
    # argsort of (-1, 0, 1) is not the inverse of the permutation (2, 0, 1)
    check_gradients(lambda t: t.transpose(-1, 0, 1), [_rand(rng, (2, 3, 4))])
    x = nf.Tensor(_rand(rng, (3, 3, 3)), requires_grad=True)  # same shape both ways
    w = _rand(rng, (3, 3, 3))
    x.transpose(-1, 0, -2).backward(w)
    np.testing.assert_array_equal(x.grad, np.transpose(w, (1, 2, 0)))
    with pytest.raises(ShapeError, match="permutation"):
        x.transpose(0, 0, 1)


@pytest.mark.parametrize("op", ["sum", "mean", "max", "min", "var"])
def test_reductions_refuse_axes_out_of_range(op):
    x = nf.Tensor(np.ones((2, 3, 4)))
    with pytest.raises(ShapeError, match=r"axes in \[-3, 2\]"):
        getattr(x, op)(axis=3)  # was reduced over axis 0 (3 % 3)
    with pytest.raises(ShapeError, match="distinct"):
        getattr(x, op)(axis=(0, -3))
    with pytest.raises(ShapeError, match="axes in"):
        getattr(nf.Tensor(np.array(2.0)), op)(axis=0)  # was a ZeroDivisionError


def test_var_and_std_keep_an_empty_axis():
    assert nf.Tensor(np.ones((0, 3))).var(axis=1).shape == (0,)
    assert nf.Tensor(np.ones((0, 3))).std(axis=-1, keepdims=True).shape == (0, 1)


def test_std_of_constant_values_has_a_zero_gradient(rng):
    x = nf.Tensor(np.array([[1.5, 1.5, 1.5], [1.0, 2.0, 4.0]]), requires_grad=True)
    x.std(axis=1).sum().backward()  # sqrt'(0) = inf times a 0 slope gave NaN
    np.testing.assert_array_equal(x.grad[0], [0.0, 0.0, 0.0])
    assert np.isfinite(x.grad).all()
    check_gradients(lambda t: t.std(axis=(0, 2), ddof=1), [_rand(rng, (2, 3, 4))])


def test_integer_tensors_keep_fractional_exponents_and_bounds():
    n = nf.Tensor(np.array([1, 4, 9]))
    np.testing.assert_allclose(n.sqrt().data, [1.0, 2.0, 3.0])  # was [1, 1, 1]
    np.testing.assert_allclose((n ** 2.5).data, [1.0, 32.0, 243.0])
    np.testing.assert_allclose((n ** -1).data, [1.0, 0.25, 1 / 9], rtol=1e-6)
    np.testing.assert_allclose((2.5 ** n).data, [2.5, 2.5 ** 4, 2.5 ** 9], rtol=1e-6)
    np.testing.assert_allclose((0.5 ** n).data, [0.5, 0.5 ** 4, 0.5 ** 9])  # was 0s
    np.testing.assert_allclose(n.clip(1.5, 8.5).data, [1.5, 4.0, 8.5])
    assert (n ** 2).dtype == n.dtype and n.clip(2, 5).dtype == n.dtype  # integers stay ints


def test_python_numbers_take_the_tensors_float_dtype():
    x = nf.Tensor(np.array([3.0, -2.0]), requires_grad=True)  # float64
    v = x.data
    for got, want in [(x * 0.1, v * 0.1), (0.1 * x, 0.1 * v), (x + 0.1, v + 0.1),
                      (0.1 - x, 0.1 - v), (x / 0.3, v / 0.3), (0.3 / x, 0.3 / v),
                      (nf.where(v > 0, x, 0.1), np.where(v > 0, v, 0.1))]:
        np.testing.assert_array_equal(got.data, want)  # 0.1 was rounded to float32 first
    (x * 0.1).sum().backward()
    np.testing.assert_array_equal(x.grad, [0.1, 0.1])
    f32 = nf.Tensor(np.ones(2, np.float32))
    assert (f32 * 0.1).dtype == (0.1 - f32).dtype == (f32 / 3).dtype == np.float32


def test_gradients_take_the_dtype_of_their_tensor():
    x = nf.Tensor(np.ones(3, np.float32), requires_grad=True)
    y = x * 2.0
    (y * np.arange(3.0)).sum().backward()  # a float64 array upcasts the product
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(x.grad, [0.0, 2.0, 4.0])


def test_astype_to_an_integer_dtype_is_cut_from_the_graph():
    x = nf.Tensor(np.array([1.7, -2.2]), requires_grad=True)
    i = x.astype(np.int64)  # raised "only floating point tensors can require gradients"
    assert i.dtype == np.int64 and not i.requires_grad
    np.testing.assert_array_equal(i.data, [1, -2])


def test_indexing_copies_index_arrays_and_takes_a_list_of_tensors():
    x = nf.Tensor(np.arange(5.0), requires_grad=True)
    idx = np.array([0, 1])
    y = x[idx]
    idx[:] = 4  # changed before backward: the gradient still goes to 0 and 1
    y.backward(np.ones(2))
    np.testing.assert_array_equal(x.grad, [1, 1, 0, 0, 0])
    m = nf.Tensor(np.arange(12.0).reshape(3, 4))
    rows, cols = nf.Tensor(np.array([0, 2])), nf.Tensor(np.array([1, 1]))  # NumPy: one array
    np.testing.assert_array_equal(m[[rows, cols]].data, m.data[[rows.data, cols.data]])


def test_concat_and_flatten_refuse_axes_out_of_range():
    t = nf.Tensor(np.ones((2, 3, 4)))
    with pytest.raises(ShapeError, match="start_dim"):
        t.flatten(3)  # was flattened from axis 0 (3 % 3)
    assert t.flatten(-1).shape == (2, 3, 4) and nf.Tensor(np.ones(3)).flatten().shape == (3,)
    with pytest.raises(ShapeError, match="axis 3"):
        concat([t, t], axis=3)
    with pytest.raises(ShapeError, match="at least one"):
        concat([nf.Tensor(np.array(1.0)), nf.Tensor(np.array(2.0))])


def test_set_grad_enabled_works_as_a_function_and_as_a_context():
    from nnforge.autograd import is_grad_enabled, set_grad_enabled  # noqa: PLC0415

    with set_grad_enabled(False):
        assert not is_grad_enabled()
    assert is_grad_enabled()  # restored after the block
    set_grad_enabled(False)
    try:
        assert not is_grad_enabled()
    finally:
        set_grad_enabled(True)


def test_gradient_checker_flags_nan_gradients():
    class NanGrad(nf.autograd.Function):
        def forward(self, x):
            return x * 2.0

        def backward(self, gy):
            return (gy * np.nan,)

    with pytest.raises(AssertionError, match="nan"):
        check_gradients(lambda t: NanGrad.apply(t), [np.ones(3)])


def test_erf_and_gelu_are_accurate_to_the_last_places() -> None:
    """erf near 0 kept only an absolute 1.2e-7 (1e-4 relative at x=1e-3), and float64 GELU
    was off by up to 1.4e-8 from x * Phi(x): math.erf is the reference."""
    erf_array = A.erf_array
    x64 = np.concatenate([np.linspace(-7.0, 7.0, 20001), np.geomspace(1e-300, 1.0, 500),
                          -np.geomspace(1e-300, 1.0, 500)])
    want = np.array([math.erf(v) for v in x64])
    ulps = np.abs(erf_array(x64) - want) / np.spacing(np.abs(want))
    assert ulps.max() <= 16
    x32 = x64.astype(np.float32)
    want32 = np.array([math.erf(float(v)) for v in x32]).astype(np.float32)
    got32 = erf_array(x32)
    assert got32.dtype == np.float32
    assert (np.abs(got32.astype(np.float64) - want32) / np.spacing(np.abs(want32))).max() <= 1
    assert np.isnan(erf_array(np.array([np.nan]))[0])
    assert erf_array(np.array([np.inf, -np.inf])).tolist() == [1.0, -1.0]
    g = np.linspace(-6.0, 6.0, 241)
    exact = np.array([v * 0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in g])
    # (1 + erf) cancels for x < 0 as in PyTorch's formula: an absolute bound there
    np.testing.assert_allclose(A.gelu(nf.Tensor(g)).data, exact, rtol=1e-14, atol=5e-15)


# -- tanh GELU, flatten end_dim, basic-index gradients, abs at NaN ------------------------------
def test_tanh_gelu_gradient_and_values(rng):
    x = _rand(rng, (4, 5), -4.0, 4.0)
    check_gradients(lambda t: A.gelu(t, "tanh"), [x])
    check_gradients(lambda t: A.gelu(t, "none"), [x])
    # values frozen from torch.nn.GELU(approximate="tanh") (float64)
    got = A.gelu(nf.Tensor(np.array([-3.0, -0.5, 0.0, 0.7, 2.5])), "tanh").data
    np.testing.assert_allclose(got, [-0.0036373920817729943, -0.15428599017485606, 0.0,
                                     0.5305701347051167, 2.484915733910001], rtol=1e-12)


def test_gelu_refuses_an_unknown_approximation():
    with pytest.raises(nf.errors.ConfigError, match="approximate"):
        A.gelu(nf.Tensor(np.zeros(2)), "erf")


@pytest.mark.parametrize("start,end,shape", [(0, 1, (6, 4, 5)), (1, 2, (2, 12, 5)),
                                             (1, -2, (2, 12, 5)), (2, 3, (2, 3, 20)),
                                             (-3, -2, (2, 12, 5)), (2, 2, (2, 3, 4, 5))])
def test_flatten_with_end_dim(rng, start, end, shape):
    x = _rand(rng, (2, 3, 4, 5))
    assert flatten(nf.Tensor(x), start, end).shape == shape
    np.testing.assert_array_equal(flatten(nf.Tensor(x), start, end).data, x.reshape(shape))
    check_gradients(lambda t: flatten(t, start, end) * 1.5, [x])


def test_flatten_refuses_start_after_end():
    with pytest.raises(ShapeError, match="start_dim <= end_dim"):
        flatten(nf.Tensor(np.zeros((2, 3, 4))), 2, 1)
    with pytest.raises(ShapeError, match="end_dim"):
        flatten(nf.Tensor(np.zeros((2, 3, 4))), 1, 3)


@pytest.mark.parametrize("index", [1, (slice(None), 2), (slice(1, None, 2), None, Ellipsis),
                                   (Ellipsis, slice(None, None, -1)), (0, slice(1, 3))])
def test_basic_indexing_gradient_is_assigned(rng, index):
    x = _rand(rng, (4, 3, 5))
    check_gradients(lambda t: t[index] * 2.0, [x])


def test_repeated_advanced_index_still_accumulates(rng):
    x = _rand(rng, (4, 3))
    check_gradients(lambda t: t[np.array([0, 2, 0, 0])], [x])
    t = nf.Tensor(x, requires_grad=True)
    t[(np.array([1, 1, 3]), slice(None))].sum().backward()
    np.testing.assert_array_equal(t.grad[:, 0], [0.0, 2.0, 0.0, 1.0])


def test_abs_gradient_is_zero_at_nan_and_zero_as_in_torch():
    # torch.abs(x).sum().backward() gives [0, 0, 0, 1, -1, 1] for these
    t = nf.Tensor(np.array([np.nan, 0.0, -0.0, 2.0, -3.0, np.inf]), requires_grad=True)
    t.abs().sum().backward()
    np.testing.assert_array_equal(t.grad, [0.0, 0.0, 0.0, 1.0, -1.0, 1.0])


# -- SiLU, ELU, Softplus, layer norm ---------------------------------------------------------
@pytest.mark.parametrize("shape", SHAPES)
def test_silu_elu_softplus_gradients(rng, shape):
    x = _rand(rng, shape, -3.0, 3.0)
    x[np.abs(x) < 1e-3] = 0.4  # away from ELU's kink at 0
    check_gradients(A.silu, [x])
    check_gradients(lambda t: A.elu(t, 0.7), [x])
    check_gradients(A.softplus, [x])
    bx = 2.0 * x
    x[np.abs(bx - 1.5) < 1e-3] = 0.2  # away from the jump at beta x = threshold
    check_gradients(lambda t: A.softplus(t, 2.0, 1.5), [x])  # both branches taken


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("ndim", [1, 2])
@pytest.mark.parametrize("affine", ["none", "weight", "both"])
def test_layer_norm_gradients(rng, shape, ndim, affine):
    x = _rand(rng, shape)
    norm = shape[len(shape) - ndim:]
    params = [nf.Tensor(rng.uniform(0.5, 1.5, norm), requires_grad=True),
              nf.Tensor(rng.standard_normal(norm), requires_grad=True)]
    params = {"none": [], "weight": params[:1], "both": params}[affine]
    check_gradients(lambda t: layer_norm(t, ndim, *params, eps=1e-3), [x], params=params)


def test_layer_norm_refuses_a_weight_of_another_shape():
    with pytest.raises(ShapeError, match=r"last 1 dims equal the weight shape, found input "
                                         r"\(2, 3\) and weight \(4,\)"):
        layer_norm(nf.Tensor(np.ones((2, 3))), 1, nf.Tensor(np.ones(4)))


@pytest.mark.parametrize("name, kwargs", [
    ("mse", {}), ("l1", {}), ("huber", {"delta": 0.7}), ("bce_with_logits", {}),
    ("bce_with_logits", {"pos_weight": 2.5}), ("bce", {}), ("cross_entropy", {}),
    ("cross_entropy", {"weight": [0.5, 2.0, 1.0], "label_smoothing": 0.1}),
    ("mse", {"reduction": "sum"}),
])
def test_sample_weighted_losses(rng, name, kwargs):
    loss = nf.nn.losses.get_loss(name, **kwargs)  # the modules' weighted path, as fit() uses it
    w = np.array([1.0, 0.0, 2.5, 0.3, 1.7])
    if name == "cross_entropy":
        x, target = _rand(rng, (5, 3)), rng.integers(0, 3, 5)
    elif name == "bce":
        x, target = rng.uniform(0.1, 0.9, (5, 2)), rng.integers(0, 2, (5, 2)).astype(float)
    else:
        x, target = _rand(rng, (5, 2)), rng.integers(0, 2, (5, 2)).astype(float)
    check_gradients(lambda p: loss.weighted(p, target, w), [x])
