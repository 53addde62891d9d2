"""Trainer.fit(sample_weight=, class_weight=): the weighted loss (Keras's sum over the batch
size), weights following batches and splits, resume, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn, optim
from nnforge.data import DataLoader
from nnforge.errors import ConfigError, DataError, ShapeError
from nnforge.nn.losses import get_loss
from nnforge.train.metrics import recall


def _trainer(d=4, out=1, loss="bce_with_logits", lr=0.1, seed=0, metrics=None, **kw):
    nf.manual_seed(seed)
    model = nn.Sequential(nn.Linear(d, 8), nn.ReLU(), nn.Linear(8, out))
    opt = optim.SGD(model.parameters(), lr=lr)
    return nf.Trainer(model, loss=get_loss(loss, **kw), optimizer=opt, metrics=metrics,
                      seed=0, verbose=0)


def _params(trainer):
    return [v.copy() for v in trainer.model.state_dict().values()]


def _binary(n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    return X, (X[:, 0] + 0.3 * X[:, 1] > 0).astype(np.float64)


def test_weighted_losses_match_numpy_by_hand():
    rng = np.random.default_rng(1)
    w = np.array([1.0, 0.0, 2.5, 0.5])
    pred, target = rng.standard_normal((4, 2)), rng.standard_normal((4, 2))
    got = get_loss("mse").weighted(nf.Tensor(pred), target, w).item()
    # one term per sample (the mean over its outputs), weighted, over the batch size
    assert got == pytest.approx((w * ((pred - target) ** 2).mean(axis=1)).sum() / 4)
    logits, labels = rng.standard_normal((4, 3)), np.array([0, 2, 1, 2])
    logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    got = get_loss("cross_entropy").weighted(nf.Tensor(logits), labels, w).item()
    assert got == pytest.approx(-(w * logp[np.arange(4), labels]).sum() / 4)
    x, y = rng.standard_normal(4), np.array([1.0, 0.0, 0.0, 1.0])
    per = np.log1p(np.exp(-x)) + (1 - y) * x
    got = get_loss("bce_with_logits").weighted(nf.Tensor(x[:, None]), y, w).item()
    assert got == pytest.approx((w * per).sum() / 4)
    # reduction='sum' drops the division, as Keras's 'sum'
    got = get_loss("bce_with_logits", reduction="sum").weighted(nf.Tensor(x[:, None]), y, w)
    assert got.item() == pytest.approx((w * per).sum())


def test_class_weight_raises_minority_recall():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((400, 4))
    y = (X[:, 0] + 0.5 * X[:, 1] > 1.6).astype(np.float64)  # about 7% positives
    recalls = []
    for cw in (None, {0: 1.0, 1: 10.0}):
        trainer = _trainer()
        trainer.fit(X, y, epochs=15, batch_size=32, class_weight=cw)
        recalls.append(recall(y, trainer.predict(X)))
    assert recalls[1] >= recalls[0] + 0.25, recalls


def test_weights_of_two_double_the_step_as_keras_batch_size_reduction():
    X, y = _binary()
    doubled = _trainer(lr=0.05)
    doubled.fit(X, y, epochs=3, batch_size=16, sample_weight=np.full(len(X), 2.0))
    plain = _trainer(lr=0.1)  # the same as twice the learning rate (plain SGD)
    plain.fit(X, y, epochs=3, batch_size=16)
    for a, b in zip(_params(doubled), _params(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # and the reported loss is the weighted one (twice the unweighted)
    ones = _trainer(lr=0.1)
    h = ones.fit(X, y, epochs=1, batch_size=16, sample_weight=np.ones(len(X)))
    assert h["loss"][0] == pytest.approx(plain.history["loss"][0], rel=1e-6)


def test_zero_weight_ignores_the_label_and_matches_removing_the_row():
    X, y = _binary(n=20)
    w = np.linspace(0.5, 1.5, len(X))
    w[7] = 0.0
    runs = []
    for label in (y[7], 1.0 - y[7]):  # its true label, then a wrong one
        yy = y.copy()
        yy[7] = label
        trainer = _trainer()
        trainer.fit(X, yy, epochs=3, batch_size=8, sample_weight=w)
        runs.append(_params(trainer))
    assert all(np.array_equal(a, b) for a, b in zip(*runs))  # bit-identical
    # one full batch: dropping the row equals scaling the rest by (n - 1) / n, since the
    # loss divides by the batch size (Keras), not by the weights' sum
    keep = np.arange(len(X)) != 7
    full, removed = _trainer(), _trainer()
    full.fit(X, y, epochs=3, batch_size=len(X), sample_weight=w, shuffle=False)
    removed.fit(X[keep], y[keep], epochs=3, batch_size=len(X), shuffle=False,
                sample_weight=w[keep] * (len(X) - 1) / len(X))
    for a, b in zip(_params(full), _params(removed)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_class_weight_multiplies_sample_weight_and_reads_one_hot_targets():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 4))
    labels = rng.integers(0, 3, 30)
    sw = rng.uniform(0.5, 2.0, 30)
    cw = {0: 2.0, 2: 0.5}  # class 1 left out: 1.0
    by_class = _trainer(out=3, loss="cross_entropy")
    by_class.fit(X, labels, epochs=2, batch_size=8, sample_weight=sw, class_weight=cw)
    by_sample = _trainer(out=3, loss="cross_entropy")
    by_sample.fit(X, labels, epochs=2, batch_size=8,
                  sample_weight=sw * np.array([2.0, 1.0, 0.5])[labels])
    one_hot = _trainer(out=3, loss="cross_entropy")
    one_hot.fit(X, np.eye(3)[labels], epochs=2, batch_size=8, sample_weight=sw,
                class_weight=cw)
    for a, b, c in zip(_params(by_class), _params(by_sample), _params(one_hot)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, c, rtol=1e-12)


def test_validation_weights_from_the_split_and_from_a_third_item():
    X, y = _binary()
    w = np.linspace(0.0, 2.0, len(X))
    trainer = _trainer(metrics=["accuracy"])
    h = trainer.fit(X, y, epochs=1, validation_split=0.25, shuffle=False, sample_weight=w,
                    class_weight={1: 3.0})  # class weights train only, as in Keras
    want = trainer.evaluate(X[45:], y[45:], sample_weight=w[45:])
    assert h["val_loss"][0] == pytest.approx(want["loss"])
    assert h["val_accuracy"][0] == pytest.approx(want["accuracy"])  # metrics unweighted
    assert want["accuracy"] == trainer.evaluate(X[45:], y[45:])["accuracy"]
    h = trainer.fit(X, y, epochs=1, validation_data=(X[:10], y[:10], w[:10]))
    assert h["val_loss"][-1] == pytest.approx(
        trainer.evaluate(X[:10], y[:10], sample_weight=w[:10])["loss"])


def test_resume_with_the_same_weights_is_bit_identical(tmp_path):
    X, y = _binary()
    w = np.random.default_rng(5).uniform(0.0, 3.0, len(X))
    fit = {"batch_size": 16, "sample_weight": w, "class_weight": {0: 1.0, 1: 2.0}}
    whole = _trainer()
    whole.fit(X, y, epochs=4, **fit)
    first = _trainer()
    first.fit(X, y, epochs=2, **fit)
    first.save_checkpoint(str(tmp_path / "c.nnf"))
    resumed = _trainer(seed=9)
    resumed.fit(X, y, epochs=4, resume_from=str(tmp_path / "c.nnf"), **fit)
    assert all(np.array_equal(a, b) for a, b in zip(_params(whole), _params(resumed)))
    assert whole.history["loss"] == resumed.history["loss"]


@pytest.mark.parametrize("weights, error, match", [
    (np.ones(59), ShapeError, "X has 60 samples but sample_weight has 59"),
    (np.ones((60, 2)), ShapeError, "must be 1-D"),
    (-np.ones(60), DataError, "must be >= 0, found -1"),
    (np.full(60, np.nan), DataError, "must be finite"),
    (np.array(["a"] * 60), DataError, "must hold numbers"),
])
def test_bad_sample_weights_are_refused(weights, error, match):
    X, y = _binary()
    with pytest.raises(error, match=match):
        _trainer().fit(X, y, epochs=1, sample_weight=weights)


@pytest.mark.parametrize("cw, match", [
    ({"yes": 2.0}, r"keys must be class indices \(integers >= 0\), found 'yes'"),
    ({True: 2.0}, "keys must be class indices"),
    ({1.0: 2.0}, "keys must be class indices"),
    ({1: -2.0}, "values must be finite numbers >= 0, found -2.0 for class 1"),
    ({1: float("nan")}, "values must be finite numbers >= 0"),
    ({2: 5.0}, "names class 2, which the targets do not hold"),
    ([1.0, 5.0], "must be a dict of class index -> weight, found list"),
])
def test_bad_class_weights_are_refused(cw, match):
    X, y = _binary()
    with pytest.raises(ConfigError, match=match):
        _trainer().fit(X, y, epochs=1, class_weight=cw)


def test_class_weight_refused_where_it_has_no_meaning():
    X, y = _binary()
    with pytest.raises(ConfigError, match="class_weight needs a classification loss"):
        _trainer(loss="mse").fit(X, y, epochs=1, class_weight={0: 1.0, 1: 2.0})
    with pytest.raises(ConfigError, match=r"pos_weight=\.\.\.\) would weigh the classes twice"):
        _trainer(pos_weight=3.0).fit(X, y, epochs=1, class_weight={1: 2.0})
    with pytest.raises(ConfigError, match=r"weight=\.\.\.\) would weigh the classes twice"):
        _trainer(out=3, loss="cross_entropy", weight=np.ones(3)).fit(
            X, y.astype(np.int64), epochs=1, class_weight={1: 2.0})
    with pytest.raises(ConfigError, match="multilabel targets"):
        _trainer(out=2).fit(X, np.stack([y, 1 - y], 1), epochs=1, class_weight={1: 2.0})
    with pytest.raises(ConfigError, match="a DataLoader yields"):
        _trainer().fit(DataLoader((X, y), batch_size=8), epochs=1, sample_weight=np.ones(60))
    nf.manual_seed(0)
    custom = nf.Trainer(nn.Sequential(nn.Linear(4, 1)), verbose=0,
                        loss=lambda p, t: ((p - nf.Tensor(t[:, None])) ** 2).mean())
    with pytest.raises(ConfigError, match="need a loss with per-sample terms"):
        custom.fit(X, y, epochs=1, sample_weight=np.ones(60))


def test_a_class_only_in_the_held_out_rows_may_still_be_weighted():
    rng = np.random.default_rng(0)
    X, labels = rng.standard_normal((20, 4)), np.r_[np.zeros(10, int), np.ones(8, int), 2, 2]
    trainer = _trainer(out=3, loss="cross_entropy")
    h = trainer.fit(X, labels, epochs=1, validation_split=0.1, shuffle=False,
                    class_weight={2: 4.0})  # class 2 sits in the last (held-out) rows only
    assert np.isfinite(h["val_loss"][0])
