"""Trainer behaviour: reproducibility, resume, callbacks, errors."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn, optim
from nnforge.backend import SERIAL_BLAS
from nnforge.data import DataLoader
from nnforge.errors import ConfigError, DataError, ShapeError, StateDictError
from nnforge.ops import conv
from nnforge.train import Callback, EarlyStopping, HistoryLogger, LRScheduler, ModelCheckpoint
from nnforge.train import trainer as trainer_module
from nnforge.train.progress import ProgressDisplay


def _data(n=120, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)
    return X, y % classes


def _model():
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))


def _train(epochs, callbacks=(), resume_from=None, seed=0):
    X, y = _data()
    nf.manual_seed(42)
    model = _model()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    sched = optim.StepLR(opt, step_size=2, gamma=0.5)
    trainer = nf.Trainer(model, optimizer=opt, metrics=["accuracy"], seed=seed, verbose=0)
    cbs = [LRScheduler(sched), *callbacks]
    trainer.fit(X, y, epochs=epochs, batch_size=16, validation_split=0.2, callbacks=cbs,
                resume_from=resume_from)
    return trainer


def test_same_seed_gives_bit_identical_weights():
    a, b = _train(3).model.state_dict(), _train(3).model.state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    c = _train(3, seed=1).model.state_dict()
    assert any(not np.array_equal(a[k], c[k]) for k in a)


def test_resume_from_checkpoint_is_bit_identical(tmp_path):
    straight = _train(6)
    ckpt = tmp_path / "ckpt-{epoch}.nnf"
    _train(3, callbacks=[ModelCheckpoint(ckpt, save_best_only=False)])
    resumed = _train(6, resume_from=str(tmp_path / "ckpt-3.nnf"))
    want, got = straight.model.state_dict(), resumed.model.state_dict()
    for k in want:
        np.testing.assert_array_equal(want[k], got[k], err_msg=k)
    assert resumed.history["loss"] == straight.history["loss"]
    assert resumed.optimizer.lr == straight.optimizer.lr


@pytest.mark.parametrize("seed", [None, 5])
def test_resume_from_uses_the_checkpoints_split_whatever_the_new_trainers_seed(tmp_path, seed):
    # resume_from= drew validation_split's rows from the new trainer's seed before loading the
    # checkpoint's split_seed: other held-out rows, another history than load_checkpoint + fit
    straight = _train(4, callbacks=[ModelCheckpoint(tmp_path / "c{epoch}.nnf")])
    resumed = _train(4, resume_from=str(tmp_path / "c2.nnf"), seed=seed)
    assert resumed.history["val_loss"] == straight.history["val_loss"]
    assert _same_weights(straight, resumed)


def test_resuming_a_finished_run_trains_nothing(tmp_path):
    _train(3, callbacks=[ModelCheckpoint(tmp_path / "ckpt-{epoch}.nnf", save_best_only=False)])
    resumed = _train(3, resume_from=str(tmp_path / "ckpt-3.nnf"))
    assert len(resumed.history["loss"]) == 3  # the checkpoint's three epochs, no new ones


@pytest.mark.parametrize("damage", [
    lambda s: s.pop("epochs_done"),
    lambda s: s.update(step=-1),
    lambda s: s.update(epochs_done=True),
    lambda s: s.update(history={"loss": ["x"]}),
    lambda s: s.update(shuffle_rng={"bit_generator": "PCG64", "state": 5}),
    lambda s: s.update(global_rng=None),
    lambda s: s.update(callbacks=[{"state": {}}]),
])
def test_a_damaged_trainer_state_is_refused_and_changes_nothing(damage):
    trainer = _train(1)
    state = trainer.state_dict()
    damage(state)
    before = json.dumps(trainer.state_dict(), default=str)
    with pytest.raises(StateDictError, match="expected a trainer state"):
        trainer.load_state_dict(state)
    assert json.dumps(trainer.state_dict(), default=str) == before


def test_early_stopping_restores_best_weights():
    X, y = _data()
    nf.manual_seed(0)
    model = _model()
    snapshots = []

    class Snapshot(Callback):
        def on_epoch_end(self, epoch, logs):
            snapshots.append((logs["val_loss"], self.trainer.model.state_dict()))

    stopper = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True)
    trainer = nf.Trainer(model, optimizer=optim.SGD(model.parameters(), lr=0.5), seed=0,
                         verbose=0)
    trainer.fit(X, y, epochs=50, batch_size=8, validation_split=0.3,
                callbacks=[Snapshot(), stopper])
    assert stopper.stopped_epoch is not None and len(snapshots) < 50
    best_loss, best_state = min(snapshots, key=lambda s: s[0])
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, best_state[k])


def test_history_logs_and_lr_schedule(tmp_path):
    trainer = _train(4, callbacks=[HistoryLogger(tmp_path / "h.json"),
                                   HistoryLogger(tmp_path / "h.csv")])
    history = json.loads((tmp_path / "h.json").read_text())
    assert history == trainer.history
    assert history["lr"] == [1e-2, 1e-2, 5e-3, 5e-3]  # StepLR(step_size=2): lr in use per epoch
    assert set(history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "time"}
    rows = list(csv.DictReader((tmp_path / "h.csv").open()))
    assert len(rows) == 4 and float(rows[0]["loss"]) == pytest.approx(history["loss"][0])


def test_evaluate_and_predict_match_metrics():
    trainer = _train(3)
    X, y = _data(seed=5)
    scores = trainer.evaluate(X, y)
    pred = trainer.predict(X)
    assert scores["accuracy"] == pytest.approx((pred == y).mean())
    proba = trainer.predict_proba(X)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(proba.argmax(1), pred)


def test_user_mistakes_get_clear_errors():
    X, y = _data()
    trainer = nf.Trainer(_model(), verbose=0)
    with pytest.raises(ShapeError, match="120 samples but y has 100"):
        trainer.fit(X, y[:100], epochs=1)
    with pytest.raises(ConfigError, match="epochs"):
        trainer.fit(X, y, epochs=0)
    bad = X.copy()
    bad[3, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        trainer.fit(bad, y, epochs=1)
    with pytest.raises(ShapeError, match="expected input of shape \\(batch, 6\\)"):
        trainer.fit(X[:, :5], y, epochs=1)
    with pytest.raises(ConfigError, match="unknown loss"):
        nf.Trainer(_model(), loss="hinge")
    with pytest.raises(ConfigError, match="cannot monitor 'val_loss'"):
        trainer.fit(X, y, epochs=2, callbacks=[EarlyStopping()])
    names = np.array(["cat", "dog", "emu"])[y]  # class names instead of indices
    with pytest.raises(DataError, match="found <U3 values such as '(cat|dog|emu)'.*np.unique"):
        trainer.fit(X, names, epochs=1)
    with pytest.raises(DataError, match="found object values such as 'x'"):
        trainer.fit(X, np.array(["x", 1] * (len(y) // 2), dtype=object), epochs=1)
    with pytest.raises(DataError, match="NaN, infinite or missing"):
        trainer.fit(X, np.array([None] * len(y)), epochs=1)
    with pytest.raises(DataError, match="NaN, infinite or missing"):
        trainer.fit(X, np.where(y == 1, np.nan, y), epochs=1)
    trainer.fit(X, y.astype(object), epochs=1)  # an object column of numbers is fine


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_a_non_finite_loss_stops_before_the_step_and_leaves_the_weights():
    X, _ = _data()
    nf.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 1))
    before = {k: v.copy() for k, v in model.state_dict().items()}
    trainer = nf.Trainer(model, loss="mse", optimizer=optim.SGD(model.parameters(), lr=0.1),
                         verbose=0)
    y = np.full(len(X), 1e30, np.float32)  # squared error overflows float32 on batch 1
    with pytest.raises(DataError, match="loss became inf at epoch 1, batch 1"):
        trainer.fit(X, y, epochs=1)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_fit_called_twice_continues_like_one_call():
    straight = _train(4)
    X, y = _data()
    nf.manual_seed(42)
    model = _model()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    cbs = [LRScheduler(optim.StepLR(opt, step_size=2, gamma=0.5))]
    trainer = nf.Trainer(model, optimizer=opt, metrics=["accuracy"], seed=0, verbose=0)
    trainer.fit(X, y, epochs=2, batch_size=16, validation_split=0.2, callbacks=cbs)
    trainer.fit(X, y, epochs=2, batch_size=16, validation_split=0.2, callbacks=cbs)  # 2 more
    assert len(trainer.history["loss"]) == 4
    for k, v in straight.model.state_dict().items():
        np.testing.assert_array_equal(v, model.state_dict()[k])


def test_conv_models_train_with_blas_on_one_thread(monkeypatch):
    # the convolutions split their batch over nnforge's threads; BLAS's own threads would
    # compete with them, so fit() switches BLAS to one thread and restores it afterwards
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not SERIAL_BLAS.available():
        pytest.skip("threadpoolctl finds no BLAS to switch")
    monkeypatch.setattr(conv, "THREADS", 2)

    def blas_threads():
        return max(i["num_threads"] for i in threadpoolctl.threadpool_info()
                   if i["user_api"] == "blas")

    class Record(Callback):
        def __init__(self):
            self.seen = set()

        def on_batch_end(self, step, loss):
            self.seen.add(blas_threads())

    rng = np.random.default_rng(0)
    X = rng.standard_normal((16, 1, 6, 6)).astype(np.float32)
    y = rng.integers(0, 2, 16)
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        for model, expected in ((nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(),
                                               nn.Linear(32, 2)), {1}),
                                (nn.Sequential(nn.Flatten(), nn.Linear(36, 2)), {2})):
            record = Record()
            nf.Trainer(model, seed=0, verbose=0).fit(X, y, epochs=1, batch_size=8,
                                                     callbacks=[record])
            assert record.seen == expected
            assert blas_threads() == 2


def _same_weights(a, b):
    want, got = a.model.state_dict(), b.model.state_dict()
    return all(np.array_equal(want[k], got[k]) for k in want)


def test_resume_after_early_stopping_found_its_best_is_bit_identical(tmp_path):
    # the best weights and the stop itself travel in the checkpoint: a run resumed after its
    # best epoch restores them, and one resumed at the stopping epoch trains no further
    def stopper():
        return EarlyStopping(patience=1, min_delta=0.05, restore_best_weights=True)

    ckpt = ModelCheckpoint(tmp_path / "c{epoch}.nnf")
    straight = _train(12, callbacks=[stopper(), ckpt])
    assert straight.callbacks[1].stopped_epoch is not None
    for e in range(1, len(straight.history["loss"]) + 1):
        resumed = _train(12, callbacks=[stopper()], resume_from=str(tmp_path / f"c{e}.nnf"))
        assert _same_weights(straight, resumed), f"resumed from epoch {e}"
        assert resumed.history["val_loss"] == straight.history["val_loss"]


def test_checkpoint_listed_first_or_loaded_before_fit_still_resumes_exactly(tmp_path):
    # a checkpoint must hold the LR schedule after its epoch's step, whatever the callback
    # order; and load_checkpoint() before fit() must hand the schedule its saved state
    def run(epochs, checkpoint=None, resume=None, preload=False):
        X, y = _data()
        nf.manual_seed(42)
        model = _model()
        opt = optim.Adam(model.parameters(), lr=1e-2)
        trainer = nf.Trainer(model, optimizer=opt, metrics=["accuracy"], seed=0, verbose=0)
        if preload:
            trainer.load_checkpoint(resume)
            resume = None
        cbs = [checkpoint] if checkpoint else []  # listed before the scheduler
        cbs.append(LRScheduler(optim.StepLR(opt, step_size=2, gamma=0.5)))
        trainer.fit(X, y, epochs=epochs, batch_size=16, validation_split=0.2, callbacks=cbs,
                    resume_from=resume)
        return trainer

    straight = run(6, ModelCheckpoint(tmp_path / "c{epoch}.nnf"))
    for preload in (False, True):
        resumed = run(6, resume=str(tmp_path / "c3.nnf"), preload=preload)
        assert resumed.history["lr"] == straight.history["lr"], preload
        assert _same_weights(straight, resumed)


def test_checkpoint_paths_fill_in_epoch_logs_and_refuse_unknown_keys(tmp_path):
    trainer = _train(2, callbacks=[ModelCheckpoint(tmp_path / "m-{epoch:02d}-{val_loss:.3f}.nnf")])
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [f"m-{i + 1:02d}-{v:.3f}.nnf" for i, v in
                     enumerate(trainer.history["val_loss"])]
    with pytest.raises(ConfigError, match="cannot fill in the checkpoint path.*'foo'"):
        _train(1, callbacks=[ModelCheckpoint(tmp_path / "m-{foo}.nnf")])
    with pytest.raises(ConfigError, match="every_n_epochs"):
        ModelCheckpoint(tmp_path / "m.nnf", every_n_epochs=0)


def test_history_stays_aligned_when_metrics_or_validation_change(tmp_path):
    X, y = _data()
    nf.manual_seed(0)
    trainer = nf.Trainer(_model(), metrics=["accuracy"], seed=0, verbose=0)
    trainer.fit(X, y, epochs=2, callbacks=[ModelCheckpoint(tmp_path / "c.nnf")])
    nf.manual_seed(0)
    more = nf.Trainer(_model(), metrics=["accuracy", "f1_macro"], seed=0, verbose=0)
    logs = [HistoryLogger(tmp_path / "h.csv"), HistoryLogger(tmp_path / "h.json")]
    # validation_data, not validation_split: a split would change the training rows, which a
    # resumed run refuses
    more.fit(X, y, epochs=3, validation_data=(X[:24], y[:24]), callbacks=logs,
             resume_from=str(tmp_path / "c.nnf"))
    assert {len(v) for v in more.history.values()} == {3}
    assert np.isnan(more.history["f1_macro"][:2]).all() and more.history["f1_macro"][2] >= 0
    rows = list(csv.DictReader((tmp_path / "h.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"] and rows[0]["val_loss"] == "nan"
    logged = json.loads((tmp_path / "h.json").read_text())  # strict JSON: null, not NaN
    assert logged["val_loss"][:2] == [None, None] and logged["loss"] == more.history["loss"]


def test_empty_training_sets_are_refused_and_counts_may_be_numpy_ints():
    X, y = _data()
    trainer = nf.Trainer(_model(), seed=0, verbose=0)
    for n, split in ((1, 0.2), (2, 0.9)):
        with pytest.raises(DataError, match="leaves none to train on"):
            trainer.fit(X[:n], y[:n], epochs=1, validation_split=split)
    with pytest.raises(DataError, match="at least one training sample"):
        trainer.fit(X[:0], y[:0], epochs=1)
    with pytest.raises(ConfigError, match="epochs"):
        trainer.fit(X, y, epochs=True)
    trainer.fit(X, y, epochs=np.int64(1), batch_size=np.int64(500))  # one batch of all
    assert trainer.predict(X[:0]).shape == (0,)
    assert trainer.predict_proba(X[:0]).shape == (0, 3)
    cnn = nf.Trainer(nn.Sequential(nn.Conv2d(1, 2, 3), nn.MaxPool2d(2), nn.Flatten(),
                                   nn.Linear(18, 3)), verbose=0)
    assert cnn.predict_proba(np.zeros((0, 1, 8, 8), np.float32)).shape == (0, 3)  # Flatten of 0
    with pytest.raises(DataError, match="at least one sample"):
        trainer.evaluate(X[:0], y[:0])


def test_fit_refuses_settings_that_would_be_silently_ignored_or_fail_late():
    X, y = _data()
    trainer = nf.Trainer(_model(), seed=0, verbose=0)
    with pytest.raises(ConfigError, match="validation_split or validation_data, not both"):
        trainer.fit(X, y, epochs=1, validation_split=0.2, validation_data=(X[:10], y[:10]))
    # an empty validation set is refused before training, not after the first epoch
    with pytest.raises(DataError, match="validation_data holds no samples"):
        trainer.fit(X, y, epochs=1, validation_data=(X[:0], y[:0]))
    with pytest.raises(DataError, match="validation_data holds no samples"):
        trainer.fit(X, y, epochs=1, validation_data=DataLoader((X[:5], y[:5]), batch_size=8,
                                                               drop_last=True))
    assert trainer.history == {}
    # a loader that drops every batch trains nothing: an error, not an epoch of loss 0.0
    with pytest.raises(DataError, match="yielded no batches"):
        trainer.fit(DataLoader((X[:5], y[:5]), batch_size=8, drop_last=True), epochs=1)
    assert trainer.history == {}


def test_metrics_must_fit_the_loss_and_one_name_is_one_metric():
    X, y = _data()
    assert nf.Trainer(_model(), metrics="accuracy").metric_names == ["accuracy"]
    with pytest.raises(ConfigError, match="'mse' compares raw values.*multiclass"):
        nf.Trainer(_model(), metrics=["accuracy", "mse"])
    with pytest.raises(ConfigError, match="'accuracy' compares classes, but the loss regresses"):
        nf.Trainer(nn.Sequential(nn.Linear(6, 1)), loss="mse", metrics=["accuracy"])
    with pytest.raises(ConfigError, match="'top2_accuracy' needs per-class scores.*binary"):
        nf.Trainer(nn.Sequential(nn.Linear(6, 1)), loss="bce_with_logits",
                   metrics=["accuracy", "top2_accuracy"])


def test_early_stopping_refuses_negative_patience_or_min_delta():
    with pytest.raises(ConfigError, match="patience must be an integer >= 0"):
        EarlyStopping(patience=-1)
    with pytest.raises(ConfigError, match="min_delta must be >= 0"):
        EarlyStopping(min_delta=-0.1)  # would count a worse value as an improvement
    EarlyStopping(patience=0, min_delta=0)


def test_an_interrupted_fit_stops_its_progress_bar_and_keeps_whole_epochs(monkeypatch):
    displays = []

    class Recording(ProgressDisplay):
        def __init__(self, *args):
            super().__init__(*args)
            self.use_bar = True  # as on a terminal
            displays.append(self)

    class Interrupt(Callback):
        def on_batch_end(self, step, loss):
            if step == 9:  # epoch 2, batch 2 of 8
                raise KeyboardInterrupt

    monkeypatch.setattr(trainer_module, "ProgressDisplay", Recording)
    X, y = _data()
    trainer = nf.Trainer(_model(), seed=0, verbose=1)
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(X, y, epochs=3, batch_size=16, callbacks=[Interrupt()])
    assert displays[0]._progress is None  # stopped: no live bar left drawing
    assert {len(v) for v in trainer.history.values()} == {1}  # the whole epochs only
    trainer.fit(X, y, epochs=1, batch_size=16)  # and the trainer goes on
    assert len(trainer.history["loss"]) == 2


def test_history_logs_the_rate_an_epoch_started_with_under_a_per_step_schedule():
    X, y = _data(n=40)
    model = _model()
    opt = optim.SGD(model.parameters(), lr=1.0)
    trainer = nf.Trainer(model, optimizer=opt, seed=0, verbose=0)
    sched = LRScheduler(optim.StepLR(opt, step_size=2, gamma=0.5), per="step")
    trainer.fit(X, y, epochs=3, batch_size=10, callbacks=[sched])  # 4 steps an epoch
    assert trainer.history["lr"] == [1.0, 0.25, 0.0625]  # not the rate after the last step


@pytest.mark.parametrize("how", ["continue", "checkpoint"])
def test_an_interrupted_epoch_is_undone_so_going_on_matches_the_uninterrupted_run(tmp_path,
                                                                                  how):
    X, y = _data()

    def trainer_and_schedule():
        nf.manual_seed(42)
        model = _model()
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        trainer = nf.Trainer(model, optimizer=opt, metrics=["accuracy"], seed=0, verbose=0)
        return trainer, LRScheduler(optim.StepLR(opt, step_size=4, gamma=0.8), per="step")

    class Steps(Callback):
        def __init__(self):
            self.seen = []

        def on_batch_end(self, step, loss):
            self.seen.append(step)

    class Interrupt(Callback):
        def on_batch_end(self, step, loss):
            if step == 2 * 6 + 3:  # 6 batches an epoch: epoch 3, batch 4
                raise KeyboardInterrupt

    fit = dict(batch_size=16, validation_split=0.2)
    straight, sched = trainer_and_schedule()
    straight_steps = Steps()
    straight.fit(X, y, epochs=5, callbacks=[sched, straight_steps], **fit)

    broken, sched = trainer_and_schedule()
    with pytest.raises(KeyboardInterrupt):
        broken.fit(X, y, epochs=5, callbacks=[sched, Interrupt()], **fit)
    assert broken._step == 2 * 6 and len(broken.history["loss"]) == 2
    steps = Steps()
    if how == "continue":
        broken.fit(X, y, epochs=3, callbacks=[sched, steps], **fit)
        resumed = broken
    else:  # "save on Ctrl-C", then resume in a new process
        broken.save_checkpoint(str(tmp_path / "ctrl-c.nnf"))
        resumed, sched = trainer_and_schedule()
        resumed.fit(X, y, epochs=5, callbacks=[sched, steps],
                    resume_from=str(tmp_path / "ctrl-c.nnf"), **fit)
    assert steps.seen == straight_steps.seen[2 * 6:]
    for key in ("loss", "accuracy", "val_loss", "lr"):
        assert resumed.history[key] == straight.history[key], key
    assert resumed.optimizer.lr == straight.optimizer.lr
    assert _same_weights(straight, resumed)


def test_early_stopping_keeps_the_last_weights_unless_asked_for_the_best():
    # Keras's default: a run that never stops early ends as if the callback were not there
    def run(*callbacks):
        X, y = _data()
        nf.manual_seed(0)
        model = _model()
        trainer = nf.Trainer(model, optimizer=optim.SGD(model.parameters(), lr=0.5), seed=0,
                             verbose=0)
        trainer.fit(X, y, epochs=6, batch_size=8, validation_split=0.3,
                    callbacks=list(callbacks))
        return trainer

    plain = run()
    never_stops = EarlyStopping(patience=100)
    assert _same_weights(plain, run(never_stops)) and never_stops.stopped_epoch is None
    best = EarlyStopping(patience=100, restore_best_weights=True)
    restored = run(best)
    assert best.stopped_epoch is None  # restored although it never stopped (as Keras 3)
    assert best.best_epoch == int(np.argmin(plain.history["val_loss"]))
    assert best.best_epoch != 5 and not _same_weights(plain, restored)
    with pytest.raises(ConfigError, match="restore_best_weights must be True or False"):
        EarlyStopping(restore_best_weights="yes")


def test_validation_split_takes_the_last_rows_without_shuffling_and_fixed_rows_with_it():
    X, y = _data(n=100)
    trainer = nf.Trainer(_model(), seed=0, verbose=0)
    history = trainer.fit(X, y, epochs=1, batch_size=16, validation_split=0.2, shuffle=False)
    assert history["val_loss"][0] == trainer.evaluate(X[80:], y[80:])["loss"]
    Xt, yt, (Xv, yv) = trainer._split(X, y, 0.2, shuffle=False)
    np.testing.assert_array_equal(Xt, X[:80])
    np.testing.assert_array_equal(yv, y[80:])
    # shuffled: random rows, but the same ones for every fit() of one trainer, seed or not
    unseeded = nf.Trainer(_model(), verbose=0)
    first, second = unseeded._split(X, y, 0.2, True)[2][0], unseeded._split(X, y, 0.2, True)[2][0]
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, X[80:])
    restored = nf.Trainer(_model(), verbose=0)
    restored.load_state_dict(unseeded.state_dict())
    np.testing.assert_array_equal(restored._split(X, y, 0.2, True)[2][0], first)
    with pytest.raises(ConfigError, match=r"validation_split must be a number in \(0, 1\)"):
        trainer.fit(X, y, epochs=1, validation_split=True)


@pytest.mark.parametrize("damage, says", [
    (lambda s: s.update(epochs_done=10**19), "'epochs_done' must be an integer in"),
    (lambda s: s.update(step=2**63), "'step' must be an integer in"),
    (lambda s: s.update(step=0), r"'step' \(0\) must be at least 'epochs_done' \(2\)"),
    (lambda s: s.update(epochs_done=3), "history 'loss' must have one entry per epoch done"),
    (lambda s: s["history"]["loss"].append(0.5), "one entry per epoch done"),
    (lambda s: s.update(history={"loss": [True, 1.0]}), "lists of numbers"),
    (lambda s: s.update(stop_training="no"), "'stop_training' must be true or false"),
    (lambda s: s.update(callbacks={"a": 1}), "'callbacks' must be a list"),
    (lambda s: s.update(loader=5), "'loader' must be a DataLoader state"),
    (lambda s: s.update(split_seed=-1), "'split_seed' must be an integer"),
    (lambda s: s["callbacks"][1]["state"].update(best="low"), "'best' a number"),
    (lambda s: s["callbacks"][1]["state"].update(wait=-2), "'wait' an integer >= 0"),
    (lambda s: s["callbacks"][0]["state"].pop("scheduler"), "LRScheduler refused its saved"),
    (lambda s: s.update(global_rng={"bit_generator": "MT19937"}), "'global_rng' must be a"),
])
def test_every_restored_trainer_field_is_checked_before_anything_changes(tmp_path, damage,
                                                                         says):
    def trainer():
        X, y = _data()
        nf.manual_seed(42)
        model = _model()
        opt = optim.Adam(model.parameters(), lr=1e-2)
        t = nf.Trainer(model, optimizer=opt, seed=0, verbose=0)
        t.fit(X, y, epochs=2, batch_size=16, validation_split=0.2,
              callbacks=[LRScheduler(optim.StepLR(opt, step_size=1, gamma=0.5)),
                         EarlyStopping(restore_best_weights=True)])
        return t

    source = trainer()
    state = json.loads(json.dumps(source.state_dict(), default=lambda a: None))
    state["callbacks"][1]["state"]["best_weights"] = None
    damage(state)
    nf.io.save_checkpoint(tmp_path / "bad.nnf", _model(), trainer_state=state)
    target = trainer()
    before = (json.dumps(target.state_dict(), default=str), target.model.state_dict(),
              target.optimizer.lr)
    for load in (target.load_state_dict, target.load_checkpoint):
        with pytest.raises(StateDictError, match=says):
            load(state if load == target.load_state_dict else str(tmp_path / "bad.nnf"))
        assert json.dumps(target.state_dict(), default=str) == before[0]
        assert target.optimizer.lr == before[2]
        for k, v in target.model.state_dict().items():
            np.testing.assert_array_equal(v, before[1][k])


def test_a_failed_fit_does_not_record_a_wrong_input_shape(tmp_path):
    model = nn.Sequential(nn.Linear(64, 10))
    trainer = nf.Trainer(model, loss="cross_entropy", verbose=0)
    with pytest.raises(ShapeError):
        trainer.fit(np.zeros((8, 60), np.float32), np.zeros(8, int), epochs=1)
    assert getattr(model, "input_shape", None) is None
    trainer.fit(np.zeros((8, 64), np.float32), np.zeros(8, int), epochs=1)
    assert model.input_shape == (64,)
    with pytest.raises(ShapeError):  # a later wrong input leaves the right shape alone
        trainer.fit(np.zeros((8, 60), np.float32), np.zeros(8, int), epochs=1)
    assert model.input_shape == (64,)
    nf.save(model, tmp_path / "p.nnf", task="multiclass")
    assert nf.load(tmp_path / "p.nnf").input_shape == (64,)


def test_classification_metrics_take_one_hot_targets():
    X, y = _data()
    onehot = np.eye(3, dtype=np.float32)[y]
    metrics = ["accuracy", "f1_macro", "precision_macro", "recall_macro", "top2_accuracy"]
    nf.manual_seed(0)
    labels = nf.Trainer(_model(), metrics=metrics, seed=0, verbose=0)
    nf.manual_seed(0)
    hot = nf.Trainer(_model(), metrics=metrics, seed=0, verbose=0)
    want = labels.fit(X, y, epochs=2, batch_size=16)
    got = hot.fit(X, onehot, epochs=2, batch_size=16)
    for name in metrics:  # the loss takes one-hot rows; the metrics score their argmax
        np.testing.assert_allclose(got[name], want[name], rtol=1e-6)
    assert hot.evaluate(X, onehot)["accuracy"] == pytest.approx(labels.evaluate(X, y)["accuracy"])


def test_metric_errors_name_the_targets_and_predictions():
    X, y = _data()
    model = _model()
    before = model[0].weight.data.copy()
    trainer = nf.Trainer(model, metrics=["f1"], verbose=0)  # binary f1 of 3 classes
    with pytest.raises(ConfigError, match=r"metric 'f1' scores one positive class of 2, but y "
                                          r"holds 3 classes \(use f1_macro, f1_micro"):
        trainer.fit(X, y, epochs=1)  # refused before training, not when the epoch ends
    assert np.array_equal(model[0].weight.data, before)
    # targets of 2 classes pass; a third class only in the predictions fails on scoring
    model[-1].bias.data[...] = [0.0, 0.0, 100.0]
    with pytest.raises(DataError, match=r"metric 'f1' cannot score targets y of shape \(120,\) "
                                        r"against the model's predictions of shape \(120,\)"):
        trainer.evaluate(X, y % 2)


@pytest.mark.parametrize("name", ["adam", "SGD", "adamw", "rmsprop"])
def test_optimizer_names_are_built_with_their_defaults(name):
    X, y = _data()
    model = _model()
    trainer = nf.Trainer(model, loss="cross_entropy", optimizer=name, verbose=0)
    assert isinstance(trainer.optimizer, optim.OPTIMIZERS[name.lower()])
    before = model[0].weight.data.copy()
    trainer.fit(X, y, epochs=1)
    assert not np.array_equal(model[0].weight.data, before)


def test_unknown_optimizers_and_losses_are_refused_at_construction():
    with pytest.raises(ConfigError, match=r"optimizer name in \['adam', 'adamw', 'rmsprop', "
                                          r"'sgd'\], found 'adagrad'"):
        nf.Trainer(_model(), optimizer="adagrad")
    with pytest.raises(ConfigError, match=r"make one first, e.g. Adam\(model.parameters\(\)\)"):
        nf.Trainer(_model(), optimizer=optim.Adam)
    with pytest.raises(ConfigError, match="optimizer must be a name .* found int"):
        nf.Trainer(_model(), optimizer=3)
    with pytest.raises(ConfigError, match="loss must be a name, a Loss or a callable"):
        nf.Trainer(_model(), loss=3)
    default = nf.Trainer(_model(), optimizer=None).optimizer  # None: Adam at lr 1e-3
    assert isinstance(default, optim.Adam) and default.lr == pytest.approx(1e-3)


def test_fit_returns_a_keras_like_history():
    X, y = _data()
    trainer = nf.Trainer(_model(), metrics=["accuracy"], verbose=0)
    history = trainer.fit(X, y, epochs=3, validation_split=0.2)
    assert isinstance(history, dict) and history.history is history
    assert history.history["loss"] == history["loss"] and len(history["loss"]) == 3
    assert history.epoch == [0, 1, 2] and "val_accuracy" in history
    assert json.loads(json.dumps(history)) == dict(history)
