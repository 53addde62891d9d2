"""BCELoss on probabilities: values outside [0, 1] refused, exact 0 and 1 finite."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn
from nnforge.errors import DataError


def test_bce_refuses_values_outside_0_1_and_names_bce_with_logits():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no NumPy RuntimeWarning on the way to the error
        with pytest.raises(DataError, match=r"expected probabilities in \[0, 1\] \(the output of "
                                            r"a Sigmoid\), found values from -1 to 2: for "
                                            r"logits use BCEWithLogitsLoss"):
            nn.BCELoss()(nf.Tensor(np.array([2.0, -1.0], np.float32)), [1.0, 0.0])
    X = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    trainer = nf.Trainer(nn.Sequential(nn.Linear(3, 1)), loss="bce", verbose=0)  # no Sigmoid
    with pytest.raises(DataError, match="BCEWithLogitsLoss"):
        trainer.fit(X, (X[:, 0] > 0).astype(np.float32), epochs=1)


@pytest.mark.parametrize("target", [[0.0, 1.0], [1.0, 0.0]])
def test_bce_at_exactly_0_and_1_is_finite_as_in_torch(target):
    p = nf.Tensor(np.array([0.0, 1.0], np.float32), requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss = nn.BCELoss()(p, target)
        loss.backward()
    # torch clamps each log at -100 and divides the gradient by max(p (1 - p), 1e-12)
    assert float(loss.data) == (0.0 if target == [0.0, 1.0] else 100.0)
    assert np.isfinite(p.grad).all()
    if target == [1.0, 0.0]:
        np.testing.assert_allclose(p.grad, [-0.5e12, 0.5e12], rtol=1e-6)


@pytest.mark.parametrize("loss", ["bce", "bce_with_logits"])
@pytest.mark.parametrize("y", [[-1.0, 1.0, 1.0, -1.0], [0.0, 1.0, 2.0, 1.0]])
def test_bce_refuses_targets_outside_0_1(loss, y):
    # -1/1 labels, or iris-style class indices, gave a loss that could go negative
    p = nf.Tensor(np.array([0.2, 0.7, 0.9, 0.4], np.float32))
    with pytest.raises(DataError, match=r"expected targets in \[0, 1\].*found values from "
                                        r"-?\d to \d: map -1/1 labels to 0/1.*cross_entropy"):
        nn.get_loss(loss)(p, y)


@pytest.mark.parametrize("loss", ["bce", "bce_with_logits"])
def test_bce_keeps_soft_targets_and_refuses_bad_ones_in_fit_without_metrics(loss):
    p = nf.Tensor(np.array([0.2, 0.7], np.float32))
    assert float(nn.get_loss(loss)(p, [0.1, 0.95]).data) > 0  # soft labels stay allowed
    X = np.random.default_rng(0).standard_normal((12, 3)).astype(np.float32)
    model = nn.Sequential(nn.Linear(3, 1), *([nn.Sigmoid()] if loss == "bce" else []))
    trainer = nf.Trainer(model, loss=loss, verbose=0)  # no metric: the loss must check
    with pytest.raises(DataError, match=r"found values from 0 to 2"):
        trainer.fit(X, np.arange(12) % 3, epochs=1)
