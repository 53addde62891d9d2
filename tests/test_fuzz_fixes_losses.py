"""Loss defects a differential fuzzer against PyTorch found: ignored cross-entropy rows with
non-finite logits, None targets turned into NaN, and loss options checked only at call time.
Expected numbers were computed with torch 2.x by hand, or from the formulas."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn
from nnforge.errors import ConfigError, DTypeError, ShapeError
from nnforge.ops import loss as L
from nnforge.train.trainer import _loss_config

INF, NAN = np.inf, np.nan

# -log softmax([1, 2, 0.5])[1], and softmax - onehot: the one kept row of the cases below
KEPT_LOSS = 0.4643687841079449  # torch.nn.functional.cross_entropy, float64
KEPT_GRAD = [0.23122389762214904, -0.37146828078823757, 0.14024438316608848]
# the same row with label_smoothing=0.1 (torch: 0.5477021174412783)
SMOOTH_LOSS = 0.5477021174412783
SMOOTH_GRAD = [0.1978905642888157, -0.3048016141215709, 0.10691104983275515]


def _ce(logits, target, gy=None, **kw):
    """cross_entropy's value and the logits' gradient (backward with gy, default ones)."""
    x = nf.Tensor(np.array(logits, dtype=np.float64), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # inf - inf inside log_softmax
        y = L.cross_entropy(x, np.array(target), **kw)
        y.backward(np.ones(y.shape) if gy is None else np.array(gy, dtype=np.float64))
    return np.asarray(y.data), x.grad


def test_kept_row_matches_the_formula():
    z = np.array([1.0, 2.0, 0.5])
    assert KEPT_LOSS == pytest.approx(np.log(np.exp(z).sum()) - 2.0, rel=1e-15)


# -- 1. cross_entropy: ignored rows with inf/NaN logits ----------------------------------------
@pytest.mark.parametrize("row", [[INF, 0.0, 0.0], [NAN, 0.0, 0.0], [-INF, -INF, -INF]])
@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_ignored_row_with_non_finite_logits_adds_nothing(row, reduction):
    y, g = _ce([[1, 2, 0.5], row], [1, -100], reduction=reduction)
    assert y.item() == pytest.approx(KEPT_LOSS, rel=1e-12)  # torch: 0.46437, was NaN
    np.testing.assert_allclose(g[0], KEPT_GRAD, rtol=1e-12)
    # torch gives NaN here (log_softmax's backward of a non-finite row); the loss does not
    # depend on an ignored row, so its gradient is exactly 0
    assert np.array_equal(g[1], np.zeros(3))


def test_ignored_row_is_positive_zero_with_reduction_none():
    for row in ([INF, 0.0, 0.0], [1.0, 0.0, 0.0]):  # the finite row used to give -0.0
        y, g = _ce([[1, 2, 0.5], row], [1, -100], reduction="none")
        assert y[0] == pytest.approx(KEPT_LOSS, rel=1e-12)
        assert y[1] == 0.0 and not np.signbit(y[1])  # torch: 0.0, sign bit clear
        assert np.array_equal(g[1], np.zeros(3))


def test_ignored_row_with_label_smoothing_and_minus_inf_logits():
    for reduction in ("mean", "none"):
        y, g = _ce([[1, 2, 0.5], [-INF, -INF, -INF]], [1, -100], label_smoothing=0.1,
                   reduction=reduction)
        assert np.ravel(y)[0] == pytest.approx(SMOOTH_LOSS, rel=1e-12)
        if reduction == "none":
            assert y[1] == 0.0 and not np.signbit(y[1])
        np.testing.assert_allclose(g[0], SMOOTH_GRAD, rtol=1e-12)
        assert np.array_equal(g[1], np.zeros(3))


def test_ignored_row_with_class_weights_and_nan_logits():
    w = np.array([1.0, 2.0, 3.0])
    y, _ = _ce([[1, 2, 0.5], [NAN, 0, 0]], [1, -100], weight=w)
    assert y.item() == pytest.approx(KEPT_LOSS, rel=1e-12)  # w[1] * l / w[1]
    y, g = _ce([[1, 2, 0.5], [NAN, 0, 0]], [1, -100], weight=w, reduction="none")
    np.testing.assert_allclose(y, [2 * KEPT_LOSS, 0.0], rtol=1e-12)  # torch: [0.92874, 0]
    np.testing.assert_allclose(g, [2 * np.array(KEPT_GRAD), [0, 0, 0]], rtol=1e-12)


@pytest.mark.parametrize("bad", [INF, NAN, -INF])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_ignored_row_gets_zero_gradient_whatever_its_incoming_gradient(bad, smoothing):
    _, g = _ce([[1, 2, 0.5], [1, 0, 0]], [1, -100], gy=[1.0, bad], reduction="none",
               label_smoothing=smoothing)
    assert np.array_equal(g[1], np.zeros(3))  # torch: 0, was NaN (0 * inf)
    np.testing.assert_allclose(g[0], SMOOTH_GRAD if smoothing else KEPT_GRAD, rtol=1e-12)


def test_ignored_row_gets_zero_gradient_under_an_infinite_mean_gradient():
    _, g = _ce([[1, 2, 0.5], [1, 0, 0]], [1, -100], gy=INF)
    assert np.array_equal(g[1], np.zeros(3))  # torch: 0


def test_every_row_ignored_sums_to_zero_even_with_inf_logits():
    y, g = _ce([[INF, 2, 0.5], [1, 0, 0]], [-100, -100], reduction="sum")
    assert y.item() == 0.0  # torch: 0.0, was NaN
    assert np.array_equal(g, np.zeros((2, 3)))
    y, g = _ce([[1, 2, 0.5], [1, 0, 0]], [-100, -100])
    assert np.isnan(y.item()) and np.array_equal(g, np.zeros((2, 3)))  # torch: nan, zeros


def test_ignored_position_of_nd_logits_with_inf():
    # (N=1, C=3, d=2): position 1 ignored, its logits [inf, 0, 0]
    z = np.array([[[1.0, INF], [2.0, 0.0], [0.5, 0.0]]])
    y, g = _ce(z, [[1, -100]], reduction="none")
    assert y.shape == (1, 2) and y[0, 0] == pytest.approx(KEPT_LOSS, rel=1e-12)
    assert y[0, 1] == 0.0 and not np.signbit(y[0, 1])
    np.testing.assert_allclose(g[0, :, 0], KEPT_GRAD, rtol=1e-12)
    assert np.array_equal(g[0, :, 1], np.zeros(3))


def test_common_path_is_unchanged():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((16, 10)).astype(np.float32)
    t = rng.integers(0, 10, 16)
    x = nf.Tensor(z, requires_grad=True)
    y = nn.CrossEntropyLoss()(x, t)
    y.backward()
    z64 = z.astype(np.float64)
    logp = z64 - np.log(np.exp(z64).sum(1, keepdims=True))
    assert y.dtype == np.float32 and x.grad.dtype == np.float32
    assert y.item() == pytest.approx(-logp[np.arange(16), t].mean(), rel=1e-5)
    want = (np.exp(logp) - np.eye(10)[t]) / 16
    np.testing.assert_allclose(x.grad, want, rtol=1e-4, atol=1e-7)


# -- 2. None and non-number targets ------------------------------------------------------------
LOSS_CLASSES = [nn.MSELoss, nn.L1Loss, nn.HuberLoss, nn.BCELoss, nn.BCEWithLogitsLoss,
                nn.CrossEntropyLoss]


@pytest.mark.parametrize("cls", LOSS_CLASSES)
def test_none_target_is_a_dtype_error_naming_the_loss(cls):
    pred = nf.Tensor(np.full((3, 2), 0.5))
    with pytest.raises(DTypeError, match=r"expected numeric targets.*found None"):
        cls()(pred, None)  # torch raises TypeError; this used to give NaN


@pytest.mark.parametrize("bad", [None, "1.5", "a"])
def test_object_target_holding_a_non_number_is_refused(bad):
    target = np.array([1.0, bad, 2.0], dtype=object)
    with pytest.raises(DTypeError, match=r"mse_loss expected numeric targets.*dtype object.*"
                                         r"holding"):
        nn.MSELoss()(nf.Tensor(np.ones(3)), target)
    with pytest.raises(DTypeError, match="huber_loss expected numeric targets"):
        nn.HuberLoss()(nf.Tensor(np.ones(3)), list(target))  # a list: object or str dtype


def test_object_target_of_numbers_still_works():
    target = np.array([1, 2.5, np.float32(2.0), True], dtype=object)
    got = nn.MSELoss()(nf.Tensor(np.ones(4)), target).item()
    assert got == pytest.approx((0 + 1.5**2 + 1 + 0) / 4, rel=1e-12)


# -- 3. options validated at construction ------------------------------------------------------
@pytest.mark.parametrize("make, error, words", [
    (lambda: nn.HuberLoss("1"), ConfigError, "expected a number for HuberLoss delta, found '1'"),
    (lambda: nn.HuberLoss(0), ConfigError, r"HuberLoss delta in \(0, inf\), found 0"),
    (lambda: nn.HuberLoss(-1), ConfigError, r"HuberLoss delta in \(0, inf\), found -1"),
    (lambda: nn.HuberLoss(INF), ConfigError, r"HuberLoss delta in \(0, inf\), found inf"),
    (lambda: nn.HuberLoss(NAN), ConfigError, "HuberLoss delta"),
    (lambda: nn.HuberLoss(reduction="avg"), ConfigError, "HuberLoss: reduction must be one of"),
    (lambda: nn.MSELoss(reduction="avg"), ConfigError,
     r"MSELoss: reduction must be one of \('mean', 'sum', 'none'\), found 'avg'"),
    (lambda: nn.L1Loss(reduction=None), ConfigError, "L1Loss: reduction.*found None"),
    (lambda: nn.BCELoss(reduction=["mean"]), ConfigError, "BCELoss: reduction"),
    (lambda: nn.BCEWithLogitsLoss(reduction="all"), ConfigError, "BCEWithLogitsLoss: reduction"),
    (lambda: nn.CrossEntropyLoss(reduction="avg"), ConfigError, "CrossEntropyLoss: reduction"),
    (lambda: nn.CrossEntropyLoss(label_smoothing="a"), ConfigError,
     "expected a number for CrossEntropyLoss label_smoothing, found 'a'"),
    (lambda: nn.CrossEntropyLoss(label_smoothing=1.5), ConfigError,
     r"CrossEntropyLoss label_smoothing in \[0, 1\], found 1.5"),
    (lambda: nn.CrossEntropyLoss(label_smoothing=-0.1), ConfigError, "label_smoothing"),
    (lambda: nn.CrossEntropyLoss(ignore_index=1.0), ConfigError,
     "CrossEntropyLoss: ignore_index must be an integer, found 1.0"),
    (lambda: nn.CrossEntropyLoss(ignore_index=True), ConfigError, "ignore_index"),
    (lambda: nn.CrossEntropyLoss(weight=["a", "b"]), DTypeError,
     "CrossEntropyLoss: weight must be an array of numbers, found dtype <U1"),
    (lambda: nn.CrossEntropyLoss(weight=[[1], [1, 2]]), DTypeError, "weight must be an array"),
    (lambda: nn.CrossEntropyLoss(weight=[1.0, NAN]), ConfigError,
     "CrossEntropyLoss: weight must be finite"),
    (lambda: nn.CrossEntropyLoss(weight=np.ones((2, 2))), ShapeError,
     r"weight must be a 1-D array.*found shape \(2, 2\)"),
    (lambda: nn.BCEWithLogitsLoss(pos_weight=[INF]), ConfigError,
     "BCEWithLogitsLoss: pos_weight must be finite"),
    (lambda: nn.BCEWithLogitsLoss(pos_weight="x"), DTypeError,
     "BCEWithLogitsLoss: pos_weight must be an array of numbers"),
    (lambda: nn.get_loss("huber", delta=0), ConfigError, "HuberLoss delta"),
    (lambda: nn.get_loss("cross_entropy", weight=["a"]), DTypeError, "weight must be an array"),
])
def test_bad_options_are_refused_at_construction(make, error, words):
    with pytest.raises(error, match=words):
        make()


def test_functional_api_refuses_bad_options_naming_them():
    x = nf.Tensor(np.ones((2, 3)))
    with pytest.raises(ConfigError, match="huber_loss delta"):
        L.huber_loss(x, np.ones((2, 3)), delta="1")  # was a raw TypeError
    with pytest.raises(ConfigError, match="cross_entropy label_smoothing"):
        L.cross_entropy(x, np.array([0, 1]), label_smoothing="a")
    with pytest.raises(ConfigError, match="reduction"):
        L.mse_loss(x, np.ones((2, 3)), reduction="avg")


def test_good_options_are_kept_and_losses_pickle_and_describe_themselves():
    ce = nn.CrossEntropyLoss(weight=[1, 2, 3], label_smoothing=0.1, ignore_index=2)
    huber, bce = nn.HuberLoss(2), nn.BCEWithLogitsLoss(pos_weight=[-1.0, 2.0])  # torch: any sign
    assert huber.delta == 2.0 and repr(huber) == "HuberLoss(delta=2.0)"
    x = nf.Tensor(np.array([[1.0, 2.0, 0.5], [0.0, 1.0, 0.0]]))
    t = np.array([1, 2])  # row 1 ignored
    want = ce(x, t).item()
    assert want == pytest.approx(0.5560354507746116, rel=1e-12)  # torch, same options
    for loss in (ce, huber, bce, nn.MSELoss("sum")):
        copy = pickle.loads(pickle.dumps(loss))
        assert repr(copy) == repr(loss) and _loss_config(copy) == _loss_config(loss)
    assert pickle.loads(pickle.dumps(ce))(x, t).item() == want
    assert _loss_config(ce) == {"type": "CrossEntropyLoss", "ignore_index": 2,
                                "label_smoothing": 0.1, "reduction": "mean"}
