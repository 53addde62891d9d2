"""Resuming and interrupting fit(): checkpoints hold end-of-epoch states, rollbacks are whole,
mid-epoch checkpoints resume exactly, a changed run is refused."""

from __future__ import annotations

import errno
import os
import warnings

import numpy as np
import pytest

import nnforge as nf
import nnforge.io.checkpoint as ckpt_module
from nnforge import nn, optim
from nnforge.data import DataLoader
from nnforge.errors import ConfigError, ModelFileError
from nnforge.io import load_checkpoint
from nnforge.optim import schedulers as S
from nnforge.train import Callback, EarlyStopping, HistoryLogger, LRScheduler, ModelCheckpoint

SCRIPTED = [0.9, 0.5, 0.3, 0.4, 0.35, 0.2]


def _data(n=96, d=6, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d)).astype(np.float32)
    y = ((X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)) % classes
    return X, y


def _model(act=nn.ReLU, p=0.2):
    nf.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), act(), nn.Dropout(p), nn.Linear(16, 3))


def _trainer(model=None, lr=1e-2):
    model = model or _model()
    opt = optim.Adam(model.parameters(), lr=lr)
    return nf.Trainer(model, optimizer=opt, metrics=["accuracy"], seed=0, verbose=0), opt


def _weights(model):
    return {k: np.array(v) for k, v in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


class Script(Callback):
    """Stands in for a val_loss curve (the logs ModelCheckpoint sees)."""

    def on_epoch_end(self, epoch, logs):
        logs["val_loss"] = SCRIPTED[epoch]


class Raise(Callback):
    def __init__(self, hook, at):
        self.hook, self.at = hook, at

    def on_epoch_begin(self, epoch):
        if self.hook == "epoch_begin" and epoch == self.at:
            raise KeyboardInterrupt

    def on_batch_end(self, step, loss):
        if self.hook == "batch" and step == self.at:
            raise KeyboardInterrupt

    def on_epoch_end(self, epoch, logs):
        if self.hook == "epoch_end" and epoch == self.at:
            raise KeyboardInterrupt


class StopAt(Callback):
    def __init__(self, at):
        self.at = at

    def on_epoch_end(self, epoch, logs):
        if epoch == self.at:
            self.trainer.stop_training = True


def _fit(trainer, callbacks, epochs=6, **kw):
    X, y = _data()
    return trainer.fit(X, y, epochs=epochs, batch_size=16, validation_split=0.25,
                       callbacks=callbacks, **kw)


# -- 1: a checkpoint holds every callback's end-of-epoch state; states matched by key ------
@pytest.mark.parametrize("only_best", [False, True])
def test_resuming_from_last_never_overwrites_a_better_best(tmp_path, only_best):
    last, best = str(tmp_path / "last.nnf"), str(tmp_path / "best.nnf")
    t, _ = _trainer()
    with pytest.raises(KeyboardInterrupt):  # dies in epoch 4, after epoch 3 (the best) saved
        _fit(t, [Script(), ModelCheckpoint(last), ModelCheckpoint(best, save_best_only=True),
                 Raise("epoch_begin", 3)])
    assert load_checkpoint(best).trainer_state["epochs_done"] == 3
    cbs = [Script(), ModelCheckpoint(best, save_best_only=True), StopAt(3)]
    if not only_best:
        cbs.insert(1, ModelCheckpoint(last))
    t2, _ = _trainer()
    _fit(t2, cbs, resume_from=last)  # epoch 4's 0.4 is worse than epoch 3's 0.3
    assert load_checkpoint(best).trainer_state["epochs_done"] == 3
    assert cbs[-2].tracker.best == 0.3


def test_ambiguous_saved_callback_states_are_refused(tmp_path):
    t, _ = _trainer()
    path = str(tmp_path / "c.nnf")
    _fit(t, [ModelCheckpoint(path), ModelCheckpoint(path)], epochs=1)
    t2, _ = _trainer()
    with pytest.raises(ConfigError, match="cannot tell which saved callback state"):
        _fit(t2, [ModelCheckpoint(path)], epochs=2, resume_from=path)


# -- 2: a failed best-only write keeps the old best ---------------------------------------
def test_a_failed_best_only_write_does_not_advance_the_best(tmp_path, monkeypatch):
    mc = ModelCheckpoint(str(tmp_path / "best.nnf"), save_best_only=True)
    t, _ = _trainer()
    _fit(t, [Script(), mc], epochs=2)
    assert mc.tracker.best == 0.5

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_module, "write_archive", full)
    with pytest.raises(OSError, match="No space"):
        _fit(t, [Script(), mc], epochs=1)
    assert mc.tracker.best == 0.5 and t._epochs_done == 2
    mc._pending = ("x-{bad", 0.1)  # a direct write that fails also leaves the best alone
    mc.trainer = t
    with pytest.raises(OSError):
        mc.write_pending()
    assert mc.tracker.best == 0.5


# -- 3: a rollback restores the optimizer's lr, not a schedule's stale record -------------
def _warm_plateau(opt):
    return [LRScheduler(S.LinearWarmup(opt, 10), per="step"),
            LRScheduler(S.ReduceLROnPlateau(opt, patience=0, factor=0.5, threshold=0.5))]


def test_ctrl_c_rollback_keeps_a_plateau_cut_made_after_the_warmup():
    ref, ref_opt = _trainer()
    _fit(ref, _warm_plateau(ref_opt))
    t, opt = _trainer()
    with pytest.raises(KeyboardInterrupt):  # 5 batches an epoch: step 21 is in epoch 4
        _fit(t, [*_warm_plateau(opt), Raise("batch", 21)])
    assert t._epochs_done == 4 and opt.lr == ref.history["lr"][4]
    assert ref.history["lr"][4] < ref.history["lr"][2]  # cuts happened since the warmup
    _fit(t, t.callbacks[:2], epochs=2)  # continuing: same schedulers, their states kept
    assert t.history["lr"] == ref.history["lr"]
    assert _same(_weights(ref.model), _weights(t.model))


# -- 4: an error inside on_epoch_end undoes the epoch whole -------------------------------
def test_an_interrupt_in_on_epoch_end_undoes_the_whole_epoch(tmp_path):
    def cbs(opt):
        return [LRScheduler(S.StepLR(opt, 1, 0.5)), EarlyStopping(patience=2)]

    ref, ref_opt = _trainer()
    _fit(ref, cbs(ref_opt))
    t, opt = _trainer()
    with pytest.raises(KeyboardInterrupt):
        _fit(t, [Raise("epoch_end", 2), *cbs(opt)])
    assert t._epochs_done == 2 and len(t.history["loss"]) == 2 and opt.lr == 0.0025
    t.save_checkpoint(str(tmp_path / "c.nnf"))
    t2, opt2 = _trainer()
    _fit(t2, cbs(opt2), resume_from=str(tmp_path / "c.nnf"))
    assert _same(_weights(ref.model), _weights(t2.model))
    assert t2.history["lr"] == ref.history["lr"]


# -- 5: fit() after a Ctrl-C continues the callbacks' states ------------------------------
def test_fit_after_ctrl_c_continues_like_the_uninterrupted_run():
    def plateau(opt):
        return [LRScheduler(S.ReduceLROnPlateau(opt, patience=0, factor=0.5, threshold=0.5))]

    ref, ref_opt = _trainer()
    _fit(ref, plateau(ref_opt))
    t, opt = _trainer()
    cbs = plateau(opt)
    with pytest.raises(KeyboardInterrupt):
        _fit(t, [*cbs, Raise("batch", 13)])
    _fit(t, cbs, epochs=6 - t._epochs_done)
    assert t.history["lr"] == ref.history["lr"]
    assert _same(_weights(ref.model), _weights(t.model))


# -- 6, 7: mid-epoch checkpoints resume exactly, arrays and DataLoader --------------------
class MidSave(Callback):
    def __init__(self, path, at=6):
        self.path, self.at, self.steps = path, at, []

    def on_batch_end(self, step, loss):
        self.steps.append(step)
        if self.path and step == self.at:
            self.trainer.save_checkpoint(self.path)


@pytest.mark.parametrize("kind", ["arrays", "loader"])
def test_a_mid_epoch_checkpoint_resumes_the_epoch_exactly(tmp_path, kind):
    X, y = _data()

    def run(path, resume=None):
        t, opt = _trainer()
        data = (DataLoader((X, y), batch_size=16, shuffle=True, seed=5),) if kind == "loader" \
            else (X, y)
        mid = MidSave(path if resume is None else None)
        # the saving callback last: its checkpoint holds the scheduler's step of that batch
        t.fit(*data, epochs=3, batch_size=16, callbacks=[
            LRScheduler(S.StepLR(opt, 4, 0.5), per="step"), mid], resume_from=resume)
        return t, mid.steps

    path = str(tmp_path / "mid.nnf")
    ref, ref_steps = run(path)
    assert load_checkpoint(path).trainer_state["step"] == 7  # step 6 done
    got, steps = run(None, resume=path)
    assert steps == ref_steps[7:]
    assert _same(_weights(ref.model), _weights(got.model)) and got._step == ref._step
    for key in ("loss", "accuracy", "lr"):
        assert got.history[key] == ref.history[key], key


# -- 8: resuming with other settings is refused --------------------------------------------
CHANGES = {
    "batch_size": (lambda: _trainer()[0], {"batch_size": 32}, "batch_size"),
    "data": (lambda: _trainer()[0], {"rows": 64}, "training data.rows"),
    "content": (lambda: _trainer()[0], {"shift": 1.0}, "sample_hash"),
    "split": (lambda: _trainer()[0], {"validation_split": 0.5}, "validation_split"),
    "activation": (lambda: _trainer(_model(act=nn.Tanh))[0], {}, "'ReLU', now 'Tanh'"),
    "dropout": (lambda: _trainer(_model(p=0.5))[0], {}, r"\.p: checkpoint 0.2, now 0.5"),
    "loss": (lambda: nf.Trainer(_model(), loss=nn.CrossEntropyLoss(label_smoothing=0.1),
                                seed=0, verbose=0), {}, "label_smoothing"),
}


@pytest.mark.parametrize("name", sorted(CHANGES))
def test_resuming_with_other_settings_is_refused(tmp_path, name):
    path = str(tmp_path / "c.nnf")
    t, _ = _trainer()
    _fit(t, [ModelCheckpoint(path)], epochs=1)
    make, change, message = CHANGES[name]
    change = dict(change)
    X, y = _data()
    rows = change.pop("rows", len(X))
    X = X[:rows] + change.pop("shift", 0.0)
    fit = {"batch_size": 16, "validation_split": 0.25, **change}
    with pytest.raises(ConfigError, match=message):
        make().fit(X, y[:rows], epochs=2, resume_from=path, **fit)


def test_resuming_with_a_frozen_layer_is_refused_and_another_lr_warns(tmp_path):
    path = str(tmp_path / "c.nnf")
    t, _ = _trainer()
    _fit(t, [ModelCheckpoint(path)], epochs=1)
    frozen = _model()
    frozen[0].requires_grad_(False)
    with pytest.raises(ConfigError, match="frozen parameters"):
        _fit(_trainer(frozen)[0], [], epochs=2, resume_from=path)
    t2, opt2 = _trainer(lr=0.5)
    with pytest.warns(UserWarning, match="'lr': 0.5.*'lr': 0.01"):
        _fit(t2, [], epochs=2, resume_from=path)
    assert t2.history["lr"] == [0.01, 0.01]  # the checkpoint's lr resumes


def test_a_checkpoint_without_run_settings_still_resumes(tmp_path):
    t, _ = _trainer()
    _fit(t, [], epochs=1)
    state = t.state_dict()
    del state["run"], state["partial"]
    for cb in state["callbacks"]:
        del cb["key"]
    path = str(tmp_path / "old.nnf")
    ckpt_module.save_checkpoint(path, t.model, optimizer=t.optimizer, trainer_state=state)
    t2, _ = _trainer(_model(p=0.5))  # not checked: the old checkpoint does not say
    _fit(t2, [], epochs=2, resume_from=path)
    assert len(t2.history["loss"]) == 2


# -- 9: callback path problems are found before training, as nnforge errors ---------------
@pytest.mark.parametrize("template, fit_kw, message", [
    ("m-{val_acc}.nnf", {"validation_split": 0.25}, "val_acc"),
    ("m-{val_loss:.3f}.nnf", {}, "validation_data"),
    ("m-{epoch:.3q}.nnf", {}, "cannot fill in"),
])
def test_model_checkpoint_paths_are_checked_before_the_first_epoch(tmp_path, template,
                                                                     fit_kw, message):
    t, _ = _trainer()
    X, y = _data()
    with pytest.raises(ConfigError, match=message):
        t.fit(X, y, epochs=1, callbacks=[ModelCheckpoint(str(tmp_path / template))], **fit_kw)
    assert t._step == 0


def test_best_only_without_validation_is_refused_before_training(tmp_path):
    t, _ = _trainer()
    X, y = _data()
    with pytest.raises(ConfigError, match="val_loss"):
        t.fit(X, y, epochs=1, callbacks=[ModelCheckpoint(str(tmp_path / "b.nnf"),
                                                         save_best_only=True)])
    assert t._step == 0


def test_history_logger_path_problems_are_nnforge_errors_without_leftovers(tmp_path):
    (tmp_path / "dir.json").mkdir()
    (tmp_path / "file").write_text("x")
    t, _ = _trainer()
    X, y = _data()
    for path in (tmp_path / "dir.json", tmp_path / "file" / "h.json"):
        with pytest.raises(ConfigError, match="history log"):
            t.fit(X, y, epochs=1, callbacks=[HistoryLogger(path)])
        assert t._step == 0

    class Block(Callback):  # a directory appears in the way once training has begun
        def on_epoch_end(self, epoch, logs):
            (tmp_path / "late.csv").mkdir()

    with pytest.raises(ConfigError, match="cannot write history log"):
        t.fit(X, y, epochs=1, callbacks=[Block(), HistoryLogger(tmp_path / "late.csv")])
    assert not list(tmp_path.glob("*.tmp"))


# -- 10: resuming a finished run says so -----------------------------------------------------
def test_resuming_a_finished_run_warns(tmp_path):
    path = str(tmp_path / "c.nnf")
    t, _ = _trainer()
    _fit(t, [ModelCheckpoint(path)], epochs=2)
    t2, _ = _trainer()
    with pytest.warns(UserWarning, match="already finished with 2 epochs done"):
        _fit(t2, [], epochs=2, resume_from=path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _fit(t2, [], epochs=1)  # a later fit() trains on, silently
    assert len(t2.history["loss"]) == 3


# -- a mid-epoch checkpoint at an epoch's last batch, or from on_batch_begin ----------------
class SaveAt(Callback):
    """Save from on_batch_begin or on_batch_end of step `at`; record the steps trained."""

    def __init__(self, path, hook, at):
        self.path, self.hook, self.at, self.steps = path, hook, at, []

    def on_batch_begin(self, step):
        if self.path and self.hook == "begin" and step == self.at:
            self.trainer.save_checkpoint(self.path)

    def on_batch_end(self, step, loss):
        self.steps.append(step)
        if self.path and self.hook == "end" and step == self.at:
            self.trainer.save_checkpoint(self.path)


def _run(kind, hook, at, path, resume=None):
    """A run saving at step `at` (with a path), or resumed, on 96 rows in shuffled batches
    of 16 (6 batches an epoch); the trainer and the steps it trained."""
    X, y = _data()
    t = _trainer()[0]
    data = (DataLoader((X, y), batch_size=16, shuffle=True, seed=5),) if kind == "loader" \
        else (X, y)
    cb = SaveAt(path, hook, at)
    t.fit(*data, epochs=3, batch_size=16, callbacks=[cb], resume_from=resume)
    return t, cb.steps


def _save_and_resume(tmp_path, kind, hook, at):
    """The uninterrupted run (saving at step `at`) and the run resumed from its checkpoint."""
    path = str(tmp_path / "mid.nnf")
    return _run(kind, hook, at, path), _run(kind, hook, at, None, resume=path)


def _resumed_exactly(ref, got, first_step):
    (ref_t, ref_steps), (got_t, got_steps) = ref, got
    assert got_steps == ref_steps[first_step:]
    assert got_t._step == ref_t._step == 18
    assert _same(_weights(ref_t.model), _weights(got_t.model))
    for key in ("loss", "accuracy", "lr"):
        assert got_t.history[key] == ref_t.history[key], key


@pytest.mark.parametrize("kind", ["arrays", "loader"])
@pytest.mark.parametrize("at", [5, 11])
def test_a_checkpoint_saved_at_an_epochs_last_batch_resumes_exactly(tmp_path, kind, at):
    """The loader had handed out its last batch: it must not serve a whole new epoch inside
    the resumed one (a 'save every N steps' callback hits this whenever N divides it)."""
    ref, got = _save_and_resume(tmp_path, kind, "end", at)
    _resumed_exactly(ref, got, at + 1)


@pytest.mark.parametrize("kind", ["arrays", "loader"])
@pytest.mark.parametrize("at", [0, 3, 5, 6])
def test_a_checkpoint_saved_from_on_batch_begin_resumes_exactly(tmp_path, kind, at):
    """The loader has already handed out the batch about to train: it is not done, and the
    resumed run trains it."""
    ref, got = _save_and_resume(tmp_path, kind, "begin", at)
    _resumed_exactly(ref, got, at)


def test_a_last_batch_checkpoint_of_an_older_nnforge_resumes_exactly(tmp_path, monkeypatch):
    """Saved with the loader's own state (its epoch over, 0 batches done) while the partial
    block counts every batch: the resumed epoch trains no more batches."""
    path = str(tmp_path / "old.nnf")
    with monkeypatch.context() as patch:
        patch.setattr(nf.Trainer, "_loader_position",
                      lambda self: self._loader and self._loader.state_dict())
        ref = _run("loader", "end", 11, path)
    state = load_checkpoint(path).trainer_state
    assert (state["loader"]["epoch"], state["loader"]["batches_done"]) == (2, 0)
    assert state["partial"]["batches"] == 6
    _resumed_exactly(ref, _run("loader", "end", 11, None, resume=path), 12)


# -- a checkpoint saved from on_batch_end holds that step whole, whatever the callback order --
SAVE_STEP = 8  # inside the second epoch (6 batches of 16 an epoch)


class Interrupt(Callback):
    """KeyboardInterrupt at on_batch_end of step `at` (placed after the others: right after
    they ran) or at on_batch_begin of step `at` + 1."""

    def __init__(self, hook, at=SAVE_STEP):
        self.hook, self.at = hook, at

    def on_batch_begin(self, step):
        if self.hook == "begin" and step == self.at + 1:
            raise KeyboardInterrupt

    def on_batch_end(self, step, loss):
        if self.hook == "end" and step == self.at:
            raise KeyboardInterrupt


class LrLog(Callback):
    """The lr each step trains with."""

    def __init__(self):
        self.lrs = []

    def on_batch_begin(self, step):
        self.lrs.append(float(self.trainer.optimizer.lr))


SCHEDULES = {"warmup": lambda opt: S.LinearWarmup(opt, 10),
             "steplr": lambda opt: S.StepLR(opt, 4, 0.5)}


def _ordered_run(kind, schedule, order, extra=(), resume=None, path=None):
    """fit() for 3 epochs with a per-step schedule and a callback saving at SAVE_STEP placed
    `order` the scheduler (then `extra`); the trainer and the lrs its steps trained with."""
    X, y = _data()
    t, opt = _trainer()
    data = (DataLoader((X, y), batch_size=16, shuffle=True, seed=5),) if kind == "loader" \
        else (X, y)
    log, sched = LrLog(), LRScheduler(SCHEDULES[schedule](opt), per="step")
    save = SaveAt(path, "end", SAVE_STEP)
    cbs = [log, save, sched] if order == "before" else [log, sched, save]
    t.fit(*data, epochs=3, batch_size=16, callbacks=[*cbs, *extra], resume_from=resume)
    return t, log.lrs


@pytest.mark.parametrize("kind", ["arrays", "loader"])
@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("order", ["before", "after"])
@pytest.mark.parametrize("hook", ["end", "begin"])
def test_a_batch_end_checkpoint_holds_its_steps_schedule_in_any_order(tmp_path, kind, schedule,
                                                                      order, hook):
    ref, ref_lrs = _ordered_run(kind, schedule, "after")
    assert len(ref_lrs) == 18
    path = str(tmp_path / "mid.nnf")
    with pytest.raises(KeyboardInterrupt):
        _ordered_run(kind, schedule, order, [Interrupt(hook)], path=path)
    assert load_checkpoint(path).trainer_state["step"] == SAVE_STEP + 1
    got, lrs = _ordered_run(kind, schedule, order, resume=path)
    assert lrs == ref_lrs[SAVE_STEP + 1:]  # the lr sequence goes on as uninterrupted
    assert got._step == ref._step == 18 and got.optimizer.lr == ref.optimizer.lr
    assert _same(_weights(ref.model), _weights(got.model))
    for key in ("loss", "accuracy", "lr"):
        assert got.history[key] == ref.history[key], key


class Exists(Callback):
    """Whether the file exists when this callback's on_batch_end of step `at` runs and at
    the next step's on_batch_begin."""

    def __init__(self, path, at=SAVE_STEP):
        self.path, self.at, self.seen = path, at, []

    def on_batch_begin(self, step):
        if step == self.at + 1:
            self.seen.append(os.path.exists(self.path))

    def on_batch_end(self, step, loss):
        if step == self.at:
            self.seen.append(os.path.exists(self.path))


def test_a_batch_end_save_is_written_after_the_steps_callbacks_and_elsewhere_at_once(tmp_path):
    path = str(tmp_path / "mid.nnf")
    X, y = _data()
    t, _ = _trainer()
    probe = Exists(path)
    t.fit(X, y, epochs=2, batch_size=16, callbacks=[SaveAt(path, "end", SAVE_STEP), probe])
    assert probe.seen == [False, True]
    after = str(tmp_path / "after.nnf")
    t.save_checkpoint(after)  # outside fit(): written before it returns
    assert os.path.exists(after)


def test_a_failed_batch_end_write_raises_from_fit_and_undoes_the_epoch(tmp_path):
    X, y = _data()
    ref, _ = _trainer()
    ref.fit(X, y, epochs=1, batch_size=16)
    blocked = tmp_path / "dir.nnf"
    blocked.mkdir()  # a directory in the way of the file
    t, _ = _trainer()
    with pytest.raises(ModelFileError, match=f"on_batch_end of step {SAVE_STEP}"):
        t.fit(X, y, epochs=3, batch_size=16, callbacks=[SaveAt(str(blocked), "end", SAVE_STEP)])
    assert t._epochs_done == 1 and t._step == 6 and len(t.history["loss"]) == 1
    assert _same(_weights(ref.model), _weights(t.model))
    assert not t._pending_batch_saves
    t2, _ = _trainer()  # interrupted in the same step: the interrupt wins, the failure noted
    with pytest.raises(KeyboardInterrupt) as info:
        t2.fit(X, y, epochs=3, batch_size=16,
               callbacks=[SaveAt(str(blocked), "end", SAVE_STEP), Interrupt("end")])
    assert any("was not written" in note for note in info.value.__notes__)


class StopAndSave(Callback):
    """Stop the run at step `at` and save a checkpoint from that same on_batch_end."""

    def __init__(self, path, at):
        self.path, self.at, self.ends = path, at, []

    def on_batch_end(self, step, loss):
        if self.path and step == self.at:
            self.trainer.stop_training = True
            self.trainer.save_checkpoint(self.path)

    def on_epoch_end(self, epoch, logs):
        self.ends.append((epoch, self.trainer.stop_training))


@pytest.mark.parametrize("kind", ["arrays", "loader"])
def test_a_checkpoint_saved_as_the_run_stops_mid_epoch_resumes_that_stop(tmp_path, kind):
    """The checkpointed run counted its part-epoch as an epoch and stopped; the resumed run
    closes that part-epoch too (it used to warn that nothing was left and later retrain the
    whole epoch), and a later fit() then continues both alike."""
    X, y = _data()
    Xv, yv = _data(32, seed=1)
    path = str(tmp_path / "stop.nnf")

    def run(save_to, resume=None):
        t = _trainer()[0]
        data = (DataLoader((X, y), batch_size=16, shuffle=True, seed=5),) if kind == "loader" \
            else (X, y)
        cb = StopAndSave(save_to, 8)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "already finished, trains none"
            t.fit(*data, epochs=3, batch_size=16, validation_data=(Xv, yv), callbacks=[cb],
                  resume_from=resume)
        first = ({k: list(v) for k, v in t.history.items()}, _weights(t.model), cb.ends)
        t.fit(*data, epochs=2, batch_size=16, validation_data=(Xv, yv))
        return first, t

    (ref_hist, ref_w, ref_ends), ref = run(path)
    (got_hist, got_w, got_ends), got = run(None, resume=path)
    # epoch 0 ended before the checkpoint; epoch 1 is the stopped part-epoch in both runs
    assert len(ref_hist["loss"]) == 2 and ref_ends == [(0, False), (1, True)]
    assert got_ends == [(1, True)]
    assert _same(ref_w, got_w)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "lr"):
        assert got_hist[key] == ref_hist[key], key
    assert _same(_weights(ref.model), _weights(got.model)) and got._step == ref._step == 8 + 1 + 12
    assert got.history["loss"] == ref.history["loss"]
