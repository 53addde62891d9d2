"""Trainer: a callback's stop after a batch, and callbacks reused across fit() calls."""

from __future__ import annotations

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn, optim
from nnforge.data import DataLoader
from nnforge.train import Callback, EarlyStopping, LRScheduler, ModelCheckpoint


def _data(n=120, d=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    return X, ((X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)) % 3


def _trainer(lr=1e-2):
    nf.manual_seed(42)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 3))
    opt = optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    return nf.Trainer(model, optimizer=opt, metrics=["accuracy"], seed=0, verbose=0)


def _weights(trainer):
    return {k: v.copy() for k, v in trainer.model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


class StopAt(Callback):
    """Stops at one step; records what the trainer called."""

    def __init__(self, step):
        self.step, self.steps, self.losses, self.epochs, self.ends = step, [], [], [], 0
        self.weights = None

    def on_batch_end(self, step, loss):
        self.steps.append(step)
        self.losses.append(loss)
        if step == self.step:
            self.weights = _weights(self.trainer)
            self.trainer.stop_training = True

    def on_epoch_end(self, epoch, logs):
        self.epochs.append(epoch)

    def on_train_end(self):
        self.ends += 1


def test_a_stop_set_in_on_batch_end_stops_after_that_batch_and_keeps_its_weights():
    X, y = _data()
    trainer, stop = _trainer(), StopAt(6 + 2)  # 6 batches an epoch: epoch 2, batch 3
    trainer.fit(X, y, epochs=4, batch_size=16, validation_split=0.2, callbacks=[stop])
    assert stop.steps == list(range(9)) and trainer._step == 9
    assert _same(_weights(trainer), stop.weights)  # nothing undone, nothing trained after
    # the part-epoch is an epoch: ended, validated and recorded, then the run ends
    assert stop.epochs == [0, 1] and stop.ends == 1 and trainer._epochs_done == 2
    assert {len(v) for v in trainer.history.values()} == {2}
    assert trainer.history["loss"][1] == pytest.approx(np.mean(stop.losses[6:]))
    assert np.isfinite(trainer.history["val_loss"][1])
    assert trainer.history["val_loss"][1] == pytest.approx(
        trainer.evaluate(*trainer._split(X, y, 0.2, True)[2])["loss"])


@pytest.mark.parametrize("source", ["arrays", "loader"])
def test_going_on_after_a_part_epoch_stop_matches_a_run_resumed_from_its_checkpoint(
        tmp_path, source):
    # the loader's part-epoch is over in both: the next fit() starts its next epoch
    X, y = _data()

    def data():
        return (DataLoader((X, y), batch_size=16, shuffle=True, seed=3),) if source == "loader" \
            else (X, y)

    fit = dict(batch_size=16) if source == "arrays" else {}
    straight = _trainer()
    straight.fit(*data(), epochs=4, callbacks=[StopAt(10), ModelCheckpoint(tmp_path / "c.nnf")],
                 **fit)
    assert len(straight.history["loss"]) == 2
    straight.fit(*data() if source == "arrays" else (straight._loader,), epochs=2, **fit)

    resumed = _trainer()
    loader = data()
    resumed.fit(*loader, epochs=4, resume_from=str(tmp_path / "c.nnf"), **fit)
    assert len(resumed.history["loss"]) == 2  # the stop was saved: nothing more trained
    resumed.fit(*loader, epochs=2, **fit)
    assert _same(_weights(straight), _weights(resumed))
    assert resumed.history["loss"] == straight.history["loss"]


class Script(Callback):
    """Puts scripted values under logs['score'] for the callbacks listed after it."""

    def __init__(self, *values):
        self.values = list(values)

    def on_epoch_end(self, epoch, logs):
        logs["score"] = self.values.pop(0)


def test_early_stopping_starts_afresh_in_each_fit_with_a_new_trainer_or_the_same():
    X, y = _data(n=32)
    stopper = EarlyStopping(monitor="score", mode="min", patience=2, restore_best_weights=True)
    first = _trainer()
    first.fit(X, y, epochs=5, batch_size=16, callbacks=[Script(1, 2, 3), stopper])
    assert stopper.stopped_epoch == 2 and len(first.history["loss"]) == 3
    # another model: the first run's best value, wait and weights must not carry over
    second = _trainer(lr=0.1)
    second.fit(X, y, epochs=4, batch_size=16, callbacks=[Script(5, 4, 3, 2), stopper])
    assert len(second.history["loss"]) == 4 and stopper.stopped_epoch is None
    assert stopper.best_epoch == 3 and _same(stopper.best_weights, _weights(second))
    assert not _same(_weights(first), _weights(second))
    # the same trainer going on: a new run too (as Keras), its epochs counted on
    second.fit(X, y, epochs=3, batch_size=16, callbacks=[Script(9, 8, 8.5), stopper])
    assert len(second.history["loss"]) == 7 and stopper.best_epoch == 5


def test_checkpoint_best_is_kept_across_fits_and_a_new_callback_starts_over(tmp_path):
    """A second fit() forgot the best value and overwrote a better saved model (Keras 3 keeps
    it for the callback object's lifetime)."""
    X, y = _data(n=32)
    best_only = ModelCheckpoint(tmp_path / "best.nnf", monitor="score", mode="min",
                                save_best_only=True)
    trainer = _trainer()
    trainer.fit(X, y, epochs=2, batch_size=16, callbacks=[Script(2, 1), best_only])
    kept = _weights(trainer)
    trainer.fit(X, y, epochs=2, batch_size=16, callbacks=[Script(3, 1.5), best_only])
    assert len(best_only.saved) == 2 and best_only.state_dict() == {"best": 1.0}
    assert _same(nf.load(tmp_path / "best.nnf").state_dict(), kept)
    trainer.fit(X, y, epochs=1, batch_size=16, callbacks=[Script(0.5), best_only])
    assert len(best_only.saved) == 3  # a real improvement in a later fit() is still written
    # a fresh callback starts over: another model's first epoch is written
    other, fresh = _trainer(lr=0.1), ModelCheckpoint(tmp_path / "best.nnf", monitor="score",
                                                     mode="min", save_best_only=True)
    other.fit(X, y, epochs=1, batch_size=16, callbacks=[Script(5), fresh])
    assert _same(nf.load(tmp_path / "best.nnf").state_dict(), _weights(other))


def test_plateau_state_starts_afresh_in_each_fit():
    X, y = _data(n=32)
    trainer = _trainer()
    plateau = LRScheduler(optim.ReduceLROnPlateau(trainer.optimizer, patience=1, factor=0.5),
                          monitor="score")
    trainer.fit(X, y, epochs=2, batch_size=16, callbacks=[Script(1, 2), plateau])
    trainer.fit(X, y, epochs=2, batch_size=16, callbacks=[Script(3, 2.5), plateau])
    assert trainer.optimizer.lr == pytest.approx(1e-2)  # 3 is this run's first value, not bad
    trainer.fit(X, y, epochs=3, batch_size=16, callbacks=[Script(3, 4, 5), plateau])
    assert trainer.optimizer.lr == pytest.approx(5e-3)  # a plateau within one run still cuts


@pytest.mark.parametrize("preload", [False, True])
def test_a_resumed_fit_keeps_the_restored_callback_states(tmp_path, preload):
    # on_train_begin resets a run; the checkpoint's states must come back after it
    X, y = _data()
    scores = [3, 2, 2.5, 2.6, 2.7, 2.8, 2.9]  # best at epoch 1, a stop at epoch 4

    def run(resume=None, start=0):
        trainer = _trainer()
        stopper = EarlyStopping(monitor="score", mode="min", patience=3,
                                restore_best_weights=True)
        plateau = LRScheduler(optim.ReduceLROnPlateau(trainer.optimizer, patience=1),
                              monitor="score")
        ckpt = ModelCheckpoint(tmp_path / "c{epoch}.nnf", monitor="score", mode="min")
        if preload and resume:
            trainer.load_checkpoint(resume)
            resume = None
        trainer.fit(X, y, epochs=7, batch_size=16, resume_from=resume,
                    callbacks=[Script(*scores[start:]), stopper, plateau, ckpt])
        return trainer, stopper, plateau

    straight, stopper, plateau = run()
    assert stopper.stopped_epoch == 4 and len(straight.history["loss"]) == 5
    # a reset without the restore would count 2.6 as a new best and stop only at epoch 6
    resumed, stopper2, plateau2 = run(str(tmp_path / "c3.nnf"), start=3)
    assert _same(_weights(straight), _weights(resumed))  # the best epoch's, restored
    assert resumed.history["lr"] == straight.history["lr"]
    assert stopper2.state_dict()["stopped_epoch"] == 4 and stopper2.best_epoch == 1
    assert plateau2.state_dict() == plateau.state_dict()
