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
