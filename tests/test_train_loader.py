"""Trainer.fit / evaluate on a DataLoader of (x, y) batches instead of arrays."""

from __future__ import annotations

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn, optim
from nnforge.data import ArrayDataset, DataLoader
from nnforge.errors import ConfigError, DataError
from nnforge.train import ModelCheckpoint


def _data(n=120, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    return X, ((X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)) % 3


def _trainer(seed=0):
    nf.manual_seed(42)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
    return nf.Trainer(model, optimizer=optim.Adam(model.parameters(), lr=1e-2),
                      metrics=["accuracy"], seed=seed, verbose=0)


def _same_weights(a, b):
    for k, v in a.model.state_dict().items():
        np.testing.assert_array_equal(v, b.model.state_dict()[k], err_msg=k)


def test_loader_in_order_trains_exactly_like_the_arrays():
    X, y = _data()
    arrays, loaded = _trainer(), _trainer()
    arrays.fit(X, y, epochs=3, batch_size=16, shuffle=False)
    loaded.fit(DataLoader((X, y), batch_size=16), epochs=3)
    _same_weights(arrays, loaded)
    assert loaded.history["loss"] == arrays.history["loss"]
    assert loaded.history["accuracy"] == arrays.history["accuracy"]


def test_validation_and_evaluate_accept_loaders():
    X, y = _data()
    Xv, yv = _data(40, seed=1)
    t = _trainer()
    hist = t.fit(DataLoader(ArrayDataset(X, y), batch_size=32, shuffle=True, seed=3), epochs=2,
                 validation_data=DataLoader((Xv, yv), batch_size=7))
    assert len(hist["val_loss"]) == 2 and len(hist["val_accuracy"]) == 2
    on_arrays = t.evaluate(Xv, yv)
    on_loader = t.evaluate(DataLoader((Xv, yv), batch_size=7))
    assert on_loader["accuracy"] == on_arrays["accuracy"]
    assert on_loader["loss"] == pytest.approx(on_arrays["loss"], rel=1e-6)
    assert hist["val_loss"][-1] == pytest.approx(on_arrays["loss"], rel=1e-6)


def test_resuming_a_loader_run_is_bit_identical(tmp_path):
    X, y = _data()

    def run(epochs, callbacks=(), resume_from=None):
        t = _trainer()
        loader = DataLoader((X, y), batch_size=16, shuffle=True, seed=7)
        t.fit(loader, epochs=epochs, callbacks=list(callbacks), resume_from=resume_from)
        return t

    straight = run(5)
    run(2, [ModelCheckpoint(tmp_path / "ckpt-{epoch}.nnf", save_best_only=False)])
    resumed = run(5, resume_from=str(tmp_path / "ckpt-2.nnf"))
    _same_weights(straight, resumed)
    assert resumed.history["loss"] == straight.history["loss"]


def test_loader_mistakes_get_one_clear_error():
    X, y = _data()
    t = _trainer()
    with pytest.raises(ConfigError, match="leave y out"):
        t.fit(DataLoader((X, y)), y, epochs=1)
    with pytest.raises(ConfigError, match="validation_split needs arrays"):
        t.fit(DataLoader((X, y)), epochs=1, validation_split=0.2)
    with pytest.raises(DataError, match=r"\(x, y\) batches, found batch 1 with 1 part"):
        t.fit(DataLoader(X), epochs=1)
    with pytest.raises(ConfigError, match="needs targets y"):
        t.fit(X, epochs=1)
    with pytest.raises(ConfigError, match="leave y out"):
        t.evaluate(DataLoader((X, y)), y)
