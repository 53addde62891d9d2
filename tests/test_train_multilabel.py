"""The Trainer's metrics on multilabel targets, and metrics refused before training."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

import nnforge as nf
from nnforge import nn
from nnforge.data import DataLoader
from nnforge.errors import ConfigError


def _data(n: int = 300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5)).astype(np.float32)
    Y = np.stack([X[:, 0] > 0, X[:, 1] + X[:, 2] > 0.5, X[:, 3] > 1.0], axis=1)
    return X, Y.astype(np.float32)  # multi-hot rows, one column per label


@pytest.mark.parametrize("loss", ["bce_with_logits", "bce"])
def test_multilabel_metrics_equal_sklearn_on_thresholded_outputs(loss):
    X, Y = _data()
    nf.manual_seed(0)
    layers = [nn.Linear(5, 3)] + ([nn.Sigmoid()] if loss == "bce" else [])
    model = nn.Sequential(*layers)
    names = ["accuracy", "f1_macro", "f1_micro", "precision_weighted", "recall_samples"]
    trainer = nf.Trainer(model, loss=loss, metrics=names, seed=0, verbose=0)
    history = trainer.fit(X, Y, epochs=2, batch_size=32, validation_split=0.1)
    assert all(np.isfinite(history[k]).all() for k in names + [f"val_{k}" for k in names])
    scores = trainer.evaluate(X, Y)
    out = nf.Tensor(X)
    with nf.no_grad():
        out = model(out).data
    pred = (out >= 0) if loss == "bce_with_logits" else (out >= 0.5)  # 0.5 as a probability
    np.testing.assert_array_equal(trainer.predict(X), pred)
    assert scores["accuracy"] == pytest.approx(skm.accuracy_score(Y, pred), abs=1e-9)
    for name, fn, avg in (("f1_macro", skm.f1_score, "macro"), ("f1_micro", skm.f1_score,
                          "micro"), ("precision_weighted", skm.precision_score, "weighted"),
                          ("recall_samples", skm.recall_score, "samples")):
        want = fn(Y, pred, average=avg, zero_division=0)
        assert scores[name] == pytest.approx(want, abs=1e-9), name


def test_metrics_that_cannot_score_the_targets_are_refused_before_training():
    X, Y = _data()
    model = nn.Sequential(nn.Linear(5, 3))
    before = model[0].weight.data.copy()
    trainer = nf.Trainer(model, loss="bce_with_logits", metrics=["f1"], verbose=0)
    with pytest.raises(ConfigError, match=r"metric 'f1' scores one positive class, but y holds "
                                          r"multilabel rows of shape \(300, 3\) \(use f1_macro"):
        trainer.fit(X, Y, epochs=1)
    with pytest.raises(ConfigError, match="multilabel rows"):  # a loader: at its first batch
        trainer.fit(DataLoader((X, Y), batch_size=32), epochs=1)
    with pytest.raises(ConfigError, match="multilabel rows"):
        trainer.evaluate(X, Y)
    assert np.array_equal(model[0].weight.data, before) and trainer._step == 0
    # targets of other values than 0/1 against a binary loss's 0/1 predictions
    binary = nf.Trainer(nn.Sequential(nn.Linear(5, 1)), loss="bce_with_logits",
                        metrics=["accuracy"], verbose=0)
    with pytest.raises(ConfigError, match=r"metric 'accuracy' compares y with the predicted "
                                          r"classes 0 and 1, but y holds other values, such as "
                                          r"0.9"):
        binary.fit(X, np.where(Y[:, 0] > 0, 0.9, 0.1), epochs=1)
    with pytest.raises(ConfigError, match=r"'f1_samples' needs multilabel targets"):
        nf.Trainer(nn.Sequential(nn.Linear(5, 1)), loss="bce_with_logits",
                   metrics=["f1_samples"], verbose=0).fit(X, Y[:, 0], epochs=1)
    # known from the loss alone: refused when the Trainer is built
    with pytest.raises(ConfigError, match=r"'f1_samples' averages over the labels of each "
                                          r"sample \(multilabel\), but the multiclass loss"):
        nf.Trainer(nn.Sequential(nn.Linear(5, 3)), metrics=["f1_samples"])
