"""Trainer inputs: validation_data's shape, predict() on a DataLoader or one sample, (n, 1)
class labels."""

from __future__ import annotations

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn
from nnforge.data import DataLoader
from nnforge.errors import ConfigError, DataError


def _data(n=30, d=4):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)


def _trainer():
    nf.manual_seed(0)
    return nf.Trainer(nn.Sequential(nn.Linear(4, 3)), seed=0, verbose=0)


@pytest.mark.parametrize("items, found", [(1, "a tuple of 1 item"), (4, "a tuple of 4 items")])
def test_validation_data_must_be_a_pair_or_a_triple(items, found):
    X, y = _data()
    # (X,) was a raw IndexError; a third item is validation sample weights (as Keras), a fourth
    # has no meaning
    with pytest.raises(ConfigError, match=rf"expected validation_data=\(X, y\), \(X, y, "
                                          rf"sample_weight\) or a DataLoader, found {found}"):
        _trainer().fit(X, y, epochs=1,
                       validation_data=(X, y, np.ones(len(X)), "garbage")[:items])


def test_validation_data_as_a_list_pair_still_works():
    X, y = _data()
    history = _trainer().fit(X, y, epochs=1, validation_data=[X, y])
    assert "val_loss" in history


def test_predict_takes_an_unshuffled_dataloader_and_ignores_its_targets():
    X, y = _data()
    trainer = _trainer()
    want = trainer.predict(X)
    np.testing.assert_array_equal(trainer.predict(DataLoader((X, y), batch_size=7)), want)
    np.testing.assert_array_equal(trainer.predict(DataLoader((X,), batch_size=7)), want)
    np.testing.assert_allclose(trainer.predict_proba(DataLoader((X, y), batch_size=7)),
                               trainer.predict_proba(X))
    with pytest.raises(ConfigError, match="shuffle=False"):
        trainer.predict(DataLoader((X, y), batch_size=7, shuffle=True, seed=0))


def test_predict_takes_one_1d_sample_as_one_row():
    X, _ = _data()
    trainer = _trainer()
    assert trainer.predict(X[0]).tolist() == trainer.predict(X[:1]).tolist()
    assert trainer.predict(list(X[0])).shape == (1,)
    with pytest.raises(nf.errors.ShapeError, match="samples, features"):
        trainer.predict(X[0, :3])  # not the model's width: still refused


def test_cross_entropy_takes_a_column_of_class_labels():
    X, y = _data()
    trainer = _trainer()
    history = trainer.fit(X, y[:, None], epochs=1, batch_size=8)
    assert np.isfinite(history["loss"][0])
    assert set(trainer.evaluate(X, y[:, None].astype(np.float32))) == {"loss"}
    with pytest.raises(DataError, match=r"class labels must be 1-D \(n,\), found \(30, 1\)"):
        trainer.fit(X, (y[:, None] + 0.5).astype(np.float32), epochs=1)


def test_trainer_takes_a_callable_metric_fed_the_predicted_classes():
    X, y = _data()
    seen = []

    def balanced_accuracy(y_true, y_pred):
        seen.append(np.asarray(y_pred).dtype.kind)
        return float(np.mean(np.asarray(y_true) == np.asarray(y_pred)))

    nf.manual_seed(0)
    trainer = nf.Trainer(nn.Sequential(nn.Linear(4, 3)), metrics=[balanced_accuracy, "Accuracy"],
                         verbose=0)
    assert trainer.metric_names == ["balanced_accuracy", "accuracy"]
    history = trainer.fit(X, y, epochs=1)
    assert history["balanced_accuracy"] == history["accuracy"] and seen == ["i"]
    with pytest.raises(ConfigError, match=r"distinct names, found \['<lambda>'\]"):
        nf.Trainer(nn.Sequential(nn.Linear(4, 3)), metrics=[lambda t, p: 0.0, lambda t, p: 1.0])


def test_fit_called_from_inside_fit_is_refused() -> None:
    """A callback calling fit() again swapped the seeded RNG state twice and leaked the
    trainer's stream into the global generator (review finding)."""
    from nnforge import random as nf_random  # noqa: PLC0415
    from nnforge.train.callbacks import Callback  # noqa: PLC0415

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, 3)).astype(np.float32), rng.integers(0, 2, 20)

    class Again(Callback):
        def on_epoch_end(self, epoch: int, logs: dict) -> None:
            self.trainer.fit(x, y, epochs=1, verbose=0)

    trainer = nf.Trainer(nn.Sequential(nn.Linear(3, 2)), optimizer="adam", seed=3, verbose=0)
    before = nf_random.get_rng_state()
    with pytest.raises(ConfigError, match="while this trainer's fit"):
        trainer.fit(x, y, epochs=1, callbacks=[Again()])
    assert nf_random.get_rng_state() == before
    trainer.fit(x, y, epochs=1)  # and the trainer is usable afterwards


def test_predict_refuses_a_drop_last_loader_that_would_lose_rows() -> None:
    """50 rows in batches of 16 with drop_last gave 48 predictions, silently."""

    x = np.zeros((50, 3), np.float32)
    trainer = nf.Trainer(nn.Sequential(nn.Linear(3, 2)), optimizer="adam", verbose=0)
    with pytest.raises(ConfigError, match="leave out the last 2 rows"):
        trainer.predict(DataLoader((x,), batch_size=16, drop_last=True))
    assert trainer.predict(DataLoader((x,), batch_size=10, drop_last=True)).shape == (50,)
