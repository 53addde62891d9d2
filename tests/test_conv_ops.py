"""Conv, pooling and batch-norm ops: naive loop references, gradient checks, shape errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnforge.autograd.gradcheck import check_gradients
from nnforge.autograd.tensor import Tensor
from nnforge.errors import ConfigError, ShapeError
from nnforge.ops import conv as conv_module
from nnforge.ops.conv import conv2d
from nnforge.ops.conv_pool import conv_max_pool2d
from nnforge.ops.norm import batch_norm, batch_statistics
from nnforge.ops.pool import avg_pool2d, global_avg_pool2d, max_pool2d


# -- naive references: plain loops over every output pixel of a tiny input ----------------------
def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def conv_ref(x, w, b, stride=1, padding=0, dilation=1, groups=1):
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    xp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw))
    xp[:, :, ph:ph + h, pw:pw + wd] = x
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    og = o // groups
    y = np.zeros((n, o, oh, ow))
    for s in range(n):
        for oc in range(o):
            g = oc // og
            for i in range(oh):
                for j in range(ow):
                    acc = 0.0 if b is None else b[oc]
                    for ci in range(cg):
                        for a in range(kh):
                            for e in range(kw):
                                acc += (w[oc, ci, a, e]
                                        * xp[s, g * cg + ci, i * sh + a * dh, j * sw + e * dw])
                    y[s, oc, i, j] = acc
    return y


def _pooled(size, k, s, p, ceil):
    if not ceil:
        return (size + 2 * p - k) // s + 1
    out = math.ceil((size + 2 * p - k) / s) + 1
    # PyTorch's rule: the last window starts inside the input or the leading padding
    return out - 1 if (out - 1) * s >= size + p else out


def pool_ref(x, kernel, stride, padding, mode, count_include_pad=True, ceil=False):
    (kh, kw), (sh, sw), (ph, pw) = _pair(kernel), _pair(stride), _pair(padding)
    n, c, h, w = x.shape
    oh, ow = _pooled(h, kh, sh, ph, ceil), _pooled(w, kw, sw, pw, ceil)
    y = np.zeros((n, c, oh, ow))
    for s in range(n):
        for ch in range(c):
            for i in range(oh):
                for j in range(ow):
                    vals, pads = [], 0
                    for a in range(kh):
                        for e in range(kw):
                            r, q = i * sh + a - ph, j * sw + e - pw
                            if 0 <= r < h and 0 <= q < w:
                                vals.append(x[s, ch, r, q])
                            elif -ph <= r < h + ph and -pw <= q < w + pw:
                                pads += 1  # ceil_mode's overhang past the padding: nothing
                    if mode == "max":
                        y[s, ch, i, j] = max(vals)
                    else:
                        count = len(vals) + (pads if count_include_pad else 0)
                        y[s, ch, i, j] = sum(vals) / count
    return y


def bn_ref(x, weight, bias, mean, var, eps):
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return ((x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps) * weight.reshape(shape)
            + bias.reshape(shape))


# -- convolution -----------------------------------------------------------------------------
CONV_CASES = [
    # (x shape, out_channels, kernel, stride, padding, dilation, groups)
    ((2, 3, 7, 9), 4, 3, 1, 0, 1, 1),
    ((1, 3, 7, 9), 4, 3, 1, 0, 1, 1),  # batch size 1
    ((2, 3, 7, 6), 4, 3, 2, 1, 1, 1),  # stride 2, padding 1, non-square input
    ((2, 2, 9, 8), 3, 3, 1, 2, 2, 1),  # dilation 2
    ((1, 4, 6, 7), 6, (2, 3), (2, 1), (1, 2), (2, 1), 2),  # everything non-square, groups
    ((2, 4, 5, 5), 4, 3, 1, 1, 1, 4),  # depthwise
    ((3, 1, 6, 6), 2, 1, 1, 0, 1, 1),  # 1x1 kernel
    ((2, 2, 5, 7), 3, (5, 7), 1, 0, 1, 1),  # kernel covers the whole input
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_forward_matches_naive_loops(rng, case):
    shape, o, k, s, p, d, g = case
    kh, kw = _pair(k)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((o, shape[1] // g, kh, kw))
    b = rng.standard_normal(o)
    got = conv2d(Tensor(x), Tensor(w), Tensor(b), s, p, d, g).data
    np.testing.assert_allclose(got, conv_ref(x, w, b, s, p, d, g), rtol=1e-10, atol=1e-12)
    nobias = conv2d(Tensor(x), Tensor(w), None, s, p, d, g).data
    np.testing.assert_allclose(nobias, conv_ref(x, w, None, s, p, d, g), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_gradients(rng, case):
    shape, o, k, s, p, d, g = case
    kh, kw = _pair(k)
    x = rng.standard_normal(shape)
    w = rng.standard_normal((o, shape[1] // g, kh, kw))
    b = rng.standard_normal(o)
    check_gradients(lambda xt, wt, bt: conv2d(xt, wt, bt, s, p, d, g), [x, w, b])
    check_gradients(lambda xt, wt: conv2d(xt, wt, None, s, p, d, g), [x, w])


def test_conv_float32_stays_float32(rng):
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    b = np.zeros(4, np.float32)
    xt, wt, bt = (Tensor(a, requires_grad=True) for a in (x, w, b))
    y = conv2d(xt, wt, bt, padding=1)
    y.backward(np.ones(y.shape, np.float32))
    assert y.dtype == xt.grad.dtype == wt.grad.dtype == bt.grad.dtype == np.float32
    np.testing.assert_allclose(y.data, conv_ref(x, w, b, padding=1), rtol=1e-4, atol=1e-4)


def test_conv_only_requested_gradients(rng):
    x = Tensor(rng.standard_normal((2, 2, 5, 5)))  # data: no gradient wanted
    w = Tensor(rng.standard_normal((3, 2, 3, 3)), requires_grad=True)
    y = conv2d(x, w)
    y.backward(np.ones(y.shape))
    assert x.grad is None and w.grad is not None


@pytest.mark.parametrize("groups", [1, 2])
def test_conv_bias_gradient_alone_and_with_the_weights(rng, groups):
    # the bias rides in the product as a column of the weights: its gradient must come out
    # right whether the weights' gradient is computed too or not
    x = Tensor(rng.standard_normal((3, 4, 6, 5)))
    w = rng.standard_normal((6, 4 // groups, 3, 2))
    b = rng.standard_normal(6)
    check_gradients(lambda bt: conv2d(x, Tensor(w), bt, padding=1, groups=groups), [b])
    check_gradients(lambda wt, bt: conv2d(x, wt, bt, stride=2, groups=groups), [w, b])


def test_conv_shape_errors(rng):
    w = Tensor(rng.standard_normal((4, 3, 3, 3)))
    with pytest.raises(ShapeError, match=r"expected input of shape \(batch, 3, H, W\), found "
                                         r"\(2, 5, 8, 8\)"):
        conv2d(Tensor(np.zeros((2, 5, 8, 8))), w)
    with pytest.raises(ShapeError, match=r"expected input of shape \(batch, 3, H, W\), found "
                                         r"\(3, 8, 8\)"):
        conv2d(Tensor(np.zeros((3, 8, 8))), w)
    with pytest.raises(ShapeError, match=r"at least 3x3 pixels, found 2x8"):
        conv2d(Tensor(np.zeros((1, 3, 2, 8))), w)
    with pytest.raises(ShapeError, match=r"at least 5x5 pixels, found 4x4"):
        conv2d(Tensor(np.zeros((1, 3, 4, 4))), w, dilation=2)
    with pytest.raises(ShapeError, match=r"bias of shape \(4,\), found \(3,\)"):
        conv2d(Tensor(np.zeros((1, 3, 4, 4))), w, Tensor(np.zeros(3)))
    with pytest.raises(ConfigError, match="stride"):
        conv2d(Tensor(np.zeros((1, 3, 4, 4))), w, stride=0)


# -- pooling ---------------------------------------------------------------------------------
POOL_CASES = [
    # (x shape, kernel, stride, padding)
    ((2, 3, 6, 8), 2, None, 0),  # non-overlapping, the fast case
    ((1, 2, 7, 7), 2, None, 0),  # odd size: the last row and column are dropped
    ((2, 2, 6, 5), 3, 1, 0),  # overlapping
    ((1, 3, 7, 6), 3, 2, 1),  # overlapping with padding
    ((2, 2, 5, 8), (2, 3), (1, 2), (1, 1)),  # non-square everything
    ((1, 1, 4, 4), 2, 2, 1),  # non-overlapping with padding
]


@pytest.mark.parametrize("case", POOL_CASES)
def test_max_pool_forward_and_gradients(rng, case):
    shape, k, s, p = case
    x = rng.permutation(np.prod(shape)).reshape(shape) / 10.0  # distinct values: no ties
    got = max_pool2d(Tensor(x), k, s, p).data
    np.testing.assert_allclose(got, pool_ref(x, k, s if s is not None else k, p, "max"))
    check_gradients(lambda t: max_pool2d(t, k, s, p), [x])


@pytest.mark.parametrize("case", POOL_CASES)
@pytest.mark.parametrize("count_include_pad", [True, False])
def test_avg_pool_forward_and_gradients(rng, case, count_include_pad):
    shape, k, s, p = case
    x = rng.standard_normal(shape)
    got = avg_pool2d(Tensor(x), k, s, p, count_include_pad).data
    ref = pool_ref(x, k, s if s is not None else k, p, "avg", count_include_pad)
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    check_gradients(lambda t: avg_pool2d(t, k, s, p, count_include_pad), [x])


CEIL_CASES = [  # (x shape, kernel, stride, padding): the last window hangs over the end
    ((2, 2, 7, 6), 2, 2, 0), ((1, 2, 6, 7), 3, 2, 1), ((1, 1, 5, 5), 2, 2, 1),  # one dropped
    ((1, 2, 8, 7), (3, 2), (2, 3), (1, 0))]


@pytest.mark.parametrize("case", CEIL_CASES)
def test_pools_in_ceil_mode(rng, case):
    shape, k, s, p = case
    x = rng.permutation(np.prod(shape)).reshape(shape) / 10.0 - 1.0
    got = max_pool2d(Tensor(x), k, s, p, ceil_mode=True).data
    np.testing.assert_allclose(got, pool_ref(x, k, s, p, "max", ceil=True))
    check_gradients(lambda t: max_pool2d(t, k, s, p, ceil_mode=True), [x])
    for include in (True, False):
        got = avg_pool2d(Tensor(x), k, s, p, include, ceil_mode=True).data
        np.testing.assert_allclose(got, pool_ref(x, k, s, p, "avg", include, ceil=True),
                                   rtol=1e-12)
        check_gradients(lambda t, i=include: avg_pool2d(t, k, s, p, i, ceil_mode=True), [x])


def test_max_pool_ties_send_the_gradient_to_one_element():
    x = Tensor(np.zeros((1, 1, 4, 4)), requires_grad=True)
    y = max_pool2d(x, 2)
    y.backward(np.ones(y.shape))
    # one element per window gets it, the first in row-major order
    expected = np.zeros((4, 4))
    expected[::2, ::2] = 1
    np.testing.assert_array_equal(x.grad[0, 0], expected)
    x.grad = None
    y = max_pool2d(x, 2, stride=1)  # overlapping: each window still gives its gradient once
    y.backward(np.ones(y.shape))
    assert x.grad.sum() == 9
    np.testing.assert_array_equal(x.grad[0, 0, :3, :3], np.ones((3, 3)))


# -- convolution fused with a tiling max pool ----------------------------------------------------
CONV_POOL_CASES = [
    # (x shape, out_channels, kernel, stride, padding, dilation, groups, pool)
    ((1, 1, 6, 6), 2, 3, 1, 1, 1, 1, (2, 2)),  # batch size 1
    ((2, 4, 7, 8), 4, (2, 3), 1, (1, 0), 1, 2, (2, 3)),  # non-square everything, groups
    ((3, 2, 11, 11), 3, 3, 2, 1, 1, 1, (2, 2)),  # stride 2, padding 1
    ((2, 2, 10, 10), 2, 3, 1, 0, 2, 1, (3, 3)),  # dilation 2, 3x3 pool
    ((2, 3, 5, 6), 2, 3, 1, 1, 1, 1, (1, 2)),  # one window row: no row grouping
]


@pytest.mark.parametrize("case", CONV_POOL_CASES)
def test_conv_max_pool_equals_the_separate_ops_and_passes_the_gradient_check(rng, case):
    shape, o, k, s, p, d, g, pool = case
    kh, kw = _pair(k)
    w = rng.standard_normal((o, shape[1] // g, kh, kw))
    b = rng.standard_normal(o)
    for x in (rng.standard_normal(shape), np.round(rng.standard_normal(shape))):  # ties too

        def both(fused, bias=b, x=x):
            xt, wt = Tensor(x, requires_grad=True), Tensor(w, requires_grad=True)
            bt = None if bias is None else Tensor(bias, requires_grad=True)
            y = (conv_max_pool2d(xt, wt, bt, pool, s, p, d, g) if fused
                 else max_pool2d(conv2d(xt, wt, bt, s, p, d, g), pool))
            y.backward(np.linspace(-1, 1, y.size).reshape(y.shape))
            return [y.data, xt.grad, wt.grad] + ([] if bt is None else [bt.grad])

        for bias in (b, None):
            got, want = both(True, bias), both(False, bias)
            # the same products and maxima, and each window's gradient reaches the same input
            np.testing.assert_array_equal(got[0], want[0])
            np.testing.assert_array_equal(got[1], want[1])
            # parameter gradients sum the positions in another order
            for gp, wp in zip(got[2:], want[2:]):
                np.testing.assert_allclose(gp, wp, rtol=1e-12, atol=1e-12)
    x = rng.standard_normal(shape)
    check_gradients(lambda xt, wt, bt: conv_max_pool2d(xt, wt, bt, pool, s, p, d, g), [x, w, b])


def test_global_avg_pool(rng):
    for shape in [(2, 3, 4, 5), (1, 2, 1, 1), (1, 1, 3, 2)]:
        x = rng.standard_normal(shape)
        y = global_avg_pool2d(Tensor(x)).data
        assert y.shape == shape[:2] + (1, 1)
        np.testing.assert_allclose(y[:, :, 0, 0], [[x[n, c].sum() / x[n, c].size
                                                    for c in range(shape[1])]
                                                   for n in range(shape[0])])
        check_gradients(global_avg_pool2d, [x])


def test_pool_shape_and_config_errors():
    with pytest.raises(ShapeError, match=r"at least 3x3 pixels, found 2x5"):
        max_pool2d(Tensor(np.zeros((1, 1, 2, 5))), 3)
    with pytest.raises(ShapeError, match=r"\(batch, channels, H, W\), found \(4, 4\)"):
        avg_pool2d(Tensor(np.zeros((4, 4))), 2)
    with pytest.raises(ShapeError, match=r"found \(2, 3\)"):
        global_avg_pool2d(Tensor(np.zeros((2, 3))))
    with pytest.raises(ConfigError, match="at most half the kernel"):
        max_pool2d(Tensor(np.zeros((1, 1, 6, 6))), 2, padding=2)


# -- batch normalisation ---------------------------------------------------------------------
BN_SHAPES = [(5, 3), (1, 2, 3, 4), (4, 3, 2, 3), (3, 2, 4)]


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batch_norm_training_matches_reference_and_gradients(rng, shape):
    c = shape[1]
    x = rng.standard_normal(shape) * 2 + 1
    w, b = rng.standard_normal(c), rng.standard_normal(c)

    def f(xt, wt, bt):
        mean, var = batch_statistics(xt.data)
        return batch_norm(xt, wt, bt, mean, var, training=True, eps=1e-5)

    axes = tuple(i for i in range(len(shape)) if i != 1)
    ref = bn_ref(x, w, b, x.mean(axis=axes), x.var(axis=axes), 1e-5)
    np.testing.assert_allclose(f(Tensor(x), Tensor(w), Tensor(b)).data, ref, rtol=1e-10,
                               atol=1e-12)
    check_gradients(f, [x, w, b], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shape", BN_SHAPES)
def test_batch_norm_eval_uses_given_statistics(rng, shape):
    c = shape[1]
    x = rng.standard_normal(shape)
    w, b = rng.standard_normal(c), rng.standard_normal(c)
    mean, var = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)

    def f(xt, wt, bt):
        return batch_norm(xt, wt, bt, mean, var, training=False, eps=1e-3)

    np.testing.assert_allclose(f(Tensor(x), Tensor(w), Tensor(b)).data,
                               bn_ref(x, w, b, mean, var, 1e-3), rtol=1e-12)
    check_gradients(f, [x, w, b])


def test_batch_statistics_and_errors(rng):
    x = rng.standard_normal((6, 3, 2, 2)) + 100.0  # a large offset: two-pass variance
    mean, var = batch_statistics(x.astype(np.float32))
    assert mean.dtype == var.dtype == np.float32
    np.testing.assert_allclose(var, x.var(axis=(0, 2, 3)), rtol=1e-3)
    with pytest.raises(ShapeError, match=r"more than one value per channel, found input of "
                                         r"shape \(1, 3\)"):
        batch_statistics(np.zeros((1, 3)))
    with pytest.raises(ShapeError, match=r"weight of shape \(C,\), found input \(2, 3\) and "
                                         r"weight \(4,\)"):
        batch_norm(Tensor(np.zeros((2, 3))), Tensor(np.ones(4)), Tensor(np.zeros(3)),
                   np.zeros(3), np.ones(3), training=False)


@pytest.mark.parametrize("pool", [None, (2, 2)])
def test_conv_chunked_and_threaded_paths_agree(rng, monkeypatch, pool):
    x = rng.standard_normal((7, 4, 9, 8) if pool is None else (7, 4, 10, 8))
    w = rng.standard_normal((6, 2, 3, 3))
    b = rng.standard_normal(6)
    gy = rng.standard_normal((7, 6, 5, 4))

    def run():
        xt, wt, bt = (Tensor(a, requires_grad=True) for a in (x, w, b))
        y = (conv2d(xt, wt, bt, stride=(2, 2), padding=1, groups=2) if pool is None else
             conv_max_pool2d(xt, wt, bt, pool, padding=1, groups=2))  # rows grouped by two
        y.backward(gy)
        return y.data, xt.grad, wt.grad, bt.grad

    whole = run()
    # every sample its own chunk, the chunks shared by two threads
    monkeypatch.setattr(conv_module, "CHUNK_ELEMENTS", 1)
    monkeypatch.setattr(conv_module, "SPLIT_MIN_WORK", 0)
    monkeypatch.setattr(conv_module, "THREADS", 2)
    for _ in range(2):  # the second run reuses the scratch buffers of the first
        for a, b_ in zip(run(), whole):
            np.testing.assert_allclose(a, b_, rtol=1e-12, atol=1e-12)
    ref = (conv_ref(x, w, b, (2, 2), 1, 1, 2) if pool is None else
           pool_ref(conv_ref(x, w, b, 1, 1, 1, 2), pool, pool, 0, "max"))
    np.testing.assert_allclose(whole[0], ref, rtol=1e-10, atol=1e-12)


def test_conv_input_gradient_is_right_on_repeated_calls(rng):
    # the col2im scratch buffers are reused between calls (and between convolutions whose
    # buffers have the same shapes): stale data must never leak into a gradient
    w = Tensor(rng.standard_normal((3, 2, 3, 3)))
    for _ in range(2):
        for attrs in ({"padding": 1}, {"padding": 1, "dilation": 2}, {"stride": 2},
                      {"stride": (1, 2)}):
            x = rng.standard_normal((2, 2, 7, 7))
            check_gradients(lambda t, a=attrs: conv2d(t, w, **a), [x])


def test_conv_weight_gradient_does_not_depend_on_threads(rng, monkeypatch):
    # the weight gradient sums one partial per batch chunk: the chunks must be the same with
    # one thread as with two, or the CPU affinity (THREADS) would change trained weights
    x = rng.standard_normal((9, 2, 6, 6))
    w = rng.standard_normal((4, 2, 3, 3))
    gy = rng.standard_normal((9, 4, 4, 4))
    monkeypatch.setattr(conv_module, "SPLIT_MIN_WORK", 0)
    grads = []
    for threads in (1, 2):
        monkeypatch.setattr(conv_module, "THREADS", threads)
        wt = Tensor(w, requires_grad=True)
        conv2d(Tensor(x), wt).backward(gy)
        grads.append(wt.grad)
    np.testing.assert_array_equal(grads[0], grads[1])
