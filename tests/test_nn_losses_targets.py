"""Loss targets: shapes refused rather than reshaped, pos_weight shapes, non-numeric targets,
and CrossEntropyLoss's ignore_index and (N, C, d1, ...) logits."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn
from nnforge.autograd.gradcheck import check_gradients
from nnforge.errors import DTypeError, ShapeError
from nnforge.ops import loss as L

REGRESSION_AND_BINARY = ["mse", "l1", "huber", "bce_with_logits", "bce"]


def _pred(shape: tuple[int, ...]) -> nf.Tensor:
    """Predictions in (0, 1), valid for every loss (BCELoss takes probabilities)."""
    return nf.Tensor(np.random.default_rng(0).uniform(0.1, 0.9, shape))


@pytest.mark.parametrize("name", REGRESSION_AND_BINARY)
@pytest.mark.parametrize("shape", [(2, 4), (8,), (4, 2, 1), (4,)])
def test_same_size_targets_of_another_shape_are_refused_not_reshaped(name, shape):
    # (2, 4) against (4, 2) used to be reshaped, pairing the wrong elements
    with pytest.raises(ShapeError, match=rf"\(4, 2\).*found target shape {re.escape(str(shape))}"):
        nn.get_loss(name)(_pred((4, 2)), np.zeros(shape))


@pytest.mark.parametrize("name", REGRESSION_AND_BINARY)
@pytest.mark.parametrize("pred_shape, target_shape", [((4, 1), (4,)), ((4,), (4, 1))])
def test_an_n_vector_against_an_n_by_1_column_is_kept(name, pred_shape, target_shape):
    pred = _pred(pred_shape)
    y = np.array([0.0, 1.0, 1.0, 0.0])
    got = nn.get_loss(name)(pred, y.reshape(target_shape)).item()
    want = nn.get_loss(name)(pred, y.reshape(pred_shape)).item()
    assert got == want


def _loss_and_grad(name: str, shape: tuple[int, ...], target: object,
                   reduction: str) -> tuple[np.ndarray, np.ndarray]:
    pred = nf.Tensor(_pred(shape).data, requires_grad=True)
    out = nn.get_loss(name, reduction=reduction)(pred, target)
    out.sum().backward()
    return out.data, pred.grad


@pytest.mark.parametrize("name", REGRESSION_AND_BINARY)
@pytest.mark.parametrize("pred_shape, target", [((1,), 0.75), ((), [0.75]), ((1, 1), 0.75),
                                                ((1, 1), [0.75]), ((4,), 0.75),
                                                ((2, 3), np.float32(0.75))])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_a_single_number_target_broadcasts_and_size_1_pairs_match(name, pred_shape, target,
                                                                  reduction):
    """As torch: a 0-d target broadcasts to any prediction, and one element pairs with one
    (mse_loss(pred (1,), 3.0) was 1.0 before the stricter check refused it)."""
    got = _loss_and_grad(name, pred_shape, target, reduction)
    want = _loss_and_grad(name, pred_shape, np.full(pred_shape, 0.75), reduction)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=1e-12)


def test_mse_of_one_prediction_against_a_number():
    assert L.mse_loss(nf.Tensor(np.array([2.0], np.float32)), 3.0).item() == 1.0


@pytest.mark.parametrize("pred_shape, target_shape", [((1, 4), (4,)), ((4, 1, 1), (4,)),
                                                      ((1,), (2,)), ((), (2,))])
def test_other_shapes_stay_refused(pred_shape, target_shape):
    with pytest.raises(ShapeError, match=re.escape(f"found target shape {target_shape}")):
        L.mse_loss(nf.Tensor(np.zeros(pred_shape)), np.zeros(target_shape))


def test_the_trainer_still_fits_n_vector_and_multi_output_regression_targets(rng):
    X = rng.standard_normal((16, 3)).astype(np.float32)
    for out, y in ((1, X[:, 0]), (2, X[:, :2] * 2)):
        trainer = nf.Trainer(nn.Sequential(nn.Linear(3, out)), loss="mse", verbose=0)
        history = trainer.fit(X, y, epochs=2, batch_size=8)
        assert np.isfinite(history["loss"]).all()
        assert trainer.evaluate(X, y)["loss"] >= 0


@pytest.mark.parametrize("pos_weight", [[1.0, 2.0, 3.0], np.ones((4, 3)), np.ones((2, 2))])
def test_pos_weight_of_the_wrong_shape_is_a_shape_error(pos_weight):
    with pytest.raises(ShapeError, match=r"pos_weight must broadcast to the logits' shape "
                                         r"\(4, 2\) \(one weight per output, shape \(2,\).*"
                                         r"found shape \((3,|4, 3|2, 2)\)"):
        nn.BCEWithLogitsLoss(pos_weight=pos_weight)(_pred((4, 2)), np.ones((4, 2)))


@pytest.mark.parametrize("pos_weight", [[1.5, 3.0], 2.5, np.full((1, 2), 2.0),
                                        np.arange(1.0, 9.0).reshape(4, 2)])
def test_pos_weight_that_broadcasts_matches_the_formula(pos_weight):
    x = np.random.default_rng(1).standard_normal((4, 2))
    y = np.array([[0.0, 1.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    p = 1 / (1 + np.exp(-x))
    want = -(np.asarray(pos_weight) * y * np.log(p) + (1 - y) * np.log(1 - p)).mean()
    got = nn.BCEWithLogitsLoss(pos_weight=pos_weight)(nf.Tensor(x), y).item()
    assert got == pytest.approx(want, rel=1e-12)


@pytest.mark.parametrize("name", sorted(nn.losses.LOSSES))
def test_non_numeric_targets_are_a_dtype_error_naming_the_dtype(name):
    with pytest.raises(DTypeError, match=r"expected numeric targets.*found an array of dtype "
                                         r"<U1 and shape \(4, 2\)"):
        nn.get_loss(name)(_pred((4, 2)), np.array([["a", "b"]] * 4))


def test_an_object_array_of_numbers_is_still_a_target():
    y = np.array([[0.0, 1.0]] * 4, dtype=object)
    assert nn.MSELoss()(_pred((4, 2)), y).item() == nn.MSELoss()(_pred((4, 2)),
                                                                  y.astype(float)).item()


# -- CrossEntropyLoss: ignore_index -------------------------------------------------------------
def _logp(z: np.ndarray) -> np.ndarray:
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def _ce_formula(z, t, weight=None, eps=0.0, ignore=-100):
    """torch's cross-entropy, written out: per-row terms (0 where ignored) and the mean."""
    n, c = z.shape
    w = np.ones(c) if weight is None else np.asarray(weight)
    keep = t != ignore
    safe = np.where(keep, t, 0)
    q = np.full((n, c), eps / c)
    q[np.arange(n), safe] += 1 - eps
    per = -(q * w * _logp(z)).sum(1) * keep
    return per, per.sum() / (w[safe] * keep).sum()


@pytest.mark.parametrize("weight", [None, [0.5, 2.0, 1.0, 3.0]])
@pytest.mark.parametrize("eps", [0.0, 0.2])
def test_ignore_index_rows_count_for_nothing(rng, weight, eps):
    z = rng.standard_normal((6, 4))
    t = np.array([1, -100, 3, 0, -100, 2])
    per, mean = _ce_formula(z, t, weight, eps)
    kw = {"weight": weight, "label_smoothing": eps}
    assert nn.CrossEntropyLoss(**kw)(nf.Tensor(z), t).item() == pytest.approx(mean, rel=1e-12)
    np.testing.assert_allclose(L.cross_entropy(nf.Tensor(z), t, reduction="none", **kw).data,
                               per, rtol=1e-12)
    assert L.cross_entropy(nf.Tensor(z), t, reduction="sum", **kw).item() == pytest.approx(
        per.sum(), rel=1e-12)
    for reduction in ("mean", "sum", "none"):
        check_gradients(lambda p, r=reduction: L.cross_entropy(p, t, reduction=r, **kw), [z])
    zt = nf.Tensor(z.copy(), requires_grad=True)
    L.cross_entropy(zt, t, **kw).backward()
    assert not zt.grad[[1, 4]].any()  # ignored rows get no gradient


def test_ignore_index_inside_the_classes_and_in_the_module(rng):
    z = rng.standard_normal((5, 3))
    t = np.array([0, 1, 2, 0, 1])
    per, mean = _ce_formula(z, t, ignore=0)
    loss = nn.CrossEntropyLoss(ignore_index=0)
    assert loss(nf.Tensor(z), t).item() == pytest.approx(mean, rel=1e-12)
    assert repr(loss) == "CrossEntropyLoss(ignore_index=0)"
    np.testing.assert_allclose(loss.unreduced(nf.Tensor(z), t).data, per, rtol=1e-12)


def test_every_row_ignored_gives_nan_and_zero_gradient_as_torch():
    z = nf.Tensor(np.ones((2, 3)), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy division warning on the way
        loss = L.cross_entropy(z, [-100, -100])
        loss.backward()
    assert np.isnan(loss.item()) and not z.grad.any()


def test_indices_outside_the_classes_other_than_ignore_index_are_refused():
    z = nf.Tensor(np.zeros((3, 3)))
    with pytest.raises(ShapeError, match=r"must be in \[0, 3\) \(or ignore_index=-100\), found "
                                         r"values from -1 to 2"):
        L.cross_entropy(z, [-1, 2, -100])
    with pytest.raises(ShapeError, match=r"\[0, 3\)"):
        L.cross_entropy(z, [0, 1, 3], ignore_index=-1)


# -- CrossEntropyLoss: (N, C, d1, ...) logits ---------------------------------------------------
def _classes_last(a: np.ndarray) -> np.ndarray:
    return np.moveaxis(a, 1, -1).reshape(-1, a.shape[1])


@pytest.mark.parametrize("rest", [(5,), (3, 2)])
@pytest.mark.parametrize("weight", [None, [0.5, 2.0, 1.0, 3.0]])
def test_spatial_logits_with_class_targets(rng, rest, weight):
    z = rng.standard_normal((2, 4, *rest))
    t = rng.integers(0, 4, (2, *rest))
    t.reshape(-1)[1] = -100
    per, mean = _ce_formula(_classes_last(z), t.reshape(-1), weight)
    loss = nn.CrossEntropyLoss(weight=weight)
    assert loss(nf.Tensor(z), t).item() == pytest.approx(mean, rel=1e-12)
    none = L.cross_entropy(nf.Tensor(z), t, weight, reduction="none")
    assert none.shape == (2, *rest)
    np.testing.assert_allclose(none.data.reshape(-1), per, rtol=1e-12)
    for reduction in ("mean", "none"):
        check_gradients(lambda p, r=reduction: L.cross_entropy(p, t, weight, 0.1, r), [z])


def test_spatial_logits_with_probability_targets(rng):
    z = rng.standard_normal((2, 3, 4))
    q = rng.dirichlet(np.ones(3), (2, 4)).transpose(0, 2, 1)  # classes along axis 1
    want = -(_classes_last(q) * _logp(_classes_last(z))).sum(1).mean()
    assert L.cross_entropy(nf.Tensor(z), q).item() == pytest.approx(want, rel=1e-12)
    check_gradients(lambda p: L.cross_entropy(p, q), [z])


@pytest.mark.parametrize("target_shape", [(2, 3), (2, 4, 3), (8,)])
def test_spatial_logits_refuse_targets_of_another_shape(target_shape):
    with pytest.raises(ShapeError, match=r"logits of shape \(2, 3, 4\) expects class indices "
                                         r"of shape \(2, 4\) or probabilities of shape "
                                         r"\(2, 3, 4\)"):
        L.cross_entropy(nf.Tensor(np.zeros((2, 3, 4))), np.zeros(target_shape, int))
    with pytest.raises(ShapeError, match=r"\(batch, classes, d1, \.\.\.\), found \(3,\)"):
        L.cross_entropy(nf.Tensor(np.zeros(3)), 0)
