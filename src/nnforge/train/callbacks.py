"""Training callbacks: early stopping, checkpoints, LR scheduling, history logs."""

from __future__ import annotations

import csv
import json
import math
import numbers
import os
import string
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, StateDictError
from ..io.atomic import atomic_file
from ..optim import schedulers
from ..optim.optimizer import Optimizer


class Callback:
    """Hooks called by Trainer.fit; `self.trainer` is set before on_train_begin."""

    trainer: Any = None

    def on_train_begin(self) -> None:
        """Called once at the start of each fit(): reset per-run state here (as Keras does;
        ModelCheckpoint keeps its best across fits, as Keras 3); a fit() resuming a
        checkpoint restores the saved state after this call."""

    def on_epoch_begin(self, epoch: int) -> None:
        """Called before each epoch (0-based)."""

    def on_batch_begin(self, step: int) -> None:
        """Called before each optimizer step's batch; step as in on_batch_end (setting
        `trainer.stop_training` here stops fit() after this batch)."""

    def on_batch_end(self, step: int, loss: float) -> None:
        """Called after each optimizer step; step counts from 0 over the whole run.

        Setting `trainer.stop_training = True` here stops fit() after this batch (as Keras
        does): the part-epoch keeps its weights, is validated, recorded and passed to
        on_epoch_end, and on_train_end follows. `trainer.save_checkpoint()` called here
        writes its file once every callback's on_batch_end of this step has run, so the
        order of the callbacks does not matter (a per-step LRScheduler's step is in it).
        """

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        """Called after each epoch with its loss, metrics and validation results."""

    def on_train_end(self) -> None:
        """Called once after the last epoch."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state, saved in checkpoints so a resumed run behaves identically."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state_dict()'s output."""

    def state_key(self) -> str:
        """What identifies this callback's saved state in a checkpoint: its type, plus the
        settings that tell two of one type apart (a path, a monitored value)."""
        return type(self).__name__


def _mode_for(monitor: str, mode: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ConfigError(f"mode must be 'auto', 'min' or 'max', found {mode!r}")
    if mode != "auto":
        return mode
    return "min" if any(k in monitor for k in ("loss", "mse", "mae", "rmse", "error")) else "max"


def _monitored(logs: dict[str, float], monitor: str) -> float:
    if monitor not in logs:
        raise ConfigError(f"cannot monitor {monitor!r}: the epoch logs hold {sorted(logs)} "
                          f"(validation metrics need validation_data or validation_split)")
    return float(logs[monitor])


def _state_int(state: dict[str, Any], key: str, low: int) -> int:
    """A saved counter, checked (a checkpoint may be damaged)."""
    value = state.get(key) if isinstance(state, dict) else None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise StateDictError(f"expected a callback state with {key!r} an integer >= {low}, "
                             f"found {value!r:.40}")
    return int(value)


def _state_float(state: dict[str, Any], key: str) -> float:
    """A saved best value: a number (infinite before the first epoch)."""
    value = state.get(key) if isinstance(state, dict) else None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or math.isnan(value):
        raise StateDictError(f"expected a callback state with {key!r} a number, found "
                             f"{value!r:.40}")
    return float(value)


class _Tracker:
    """Remembers the best monitored value."""

    def __init__(self, monitor: str, mode: str, min_delta: float) -> None:
        self.monitor, self.mode, self.min_delta = monitor, _mode_for(monitor, mode), min_delta
        self.reset()

    def reset(self) -> None:
        """Forget the best value (a new run starts)."""
        self.best = math.inf if self.mode == "min" else -math.inf

    def improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(Callback):
    """Stop when the monitored value has not improved for `patience` epochs.

    restore_best_weights=False (the default, as in Keras) leaves the model with the last
    epoch's weights, so a run that never stops early ends exactly as one without this
    callback. With True the best epoch's weights are put back when fit() ends, whether or not
    it stopped early (as Keras 3 does): asking for the best weights gives them either way.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 5, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = False) -> None:
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ConfigError(f"patience must be an integer >= 0, found {patience!r}")
        # a negative min_delta would count a worse value as an improvement
        if not min_delta >= 0:
            raise ConfigError(f"min_delta must be >= 0, found {min_delta!r}")
        if not isinstance(restore_best_weights, bool):
            raise ConfigError(f"restore_best_weights must be True or False, found "
                              f"{restore_best_weights!r}")
        self.tracker = _Tracker(monitor, mode, min_delta)
        self.patience, self.restore_best_weights = patience, restore_best_weights
        self.wait, self.best_epoch, self.best_weights = 0, -1, None
        self.stopped_epoch: int | None = None

    def on_train_begin(self) -> None:
        # each fit() is a run of its own (a second fit(), or another Trainer): a best value,
        # patience or weights left from an earlier one would stop or restore it wrongly
        self.tracker.reset()
        self.wait, self.best_epoch, self.best_weights, self.stopped_epoch = 0, -1, None, None

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        value = _monitored(logs, self.tracker.monitor)
        if self.tracker.improved(value):
            self.tracker.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.trainer.model.state_dict()
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = epoch
            self.trainer.stop_training = True

    def on_train_end(self) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            self.trainer.model.load_state_dict(self.best_weights)

    def state_dict(self) -> dict[str, Any]:
        # best_weights go into checkpoints (as arrays): a run resumed after its best epoch
        # must restore the same weights as the uninterrupted run
        return {"best": self.tracker.best, "wait": self.wait, "best_epoch": self.best_epoch,
                "best_weights": self.best_weights, "stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        best, wait = _state_float(state, "best"), _state_int(state, "wait", 0)
        best_epoch = _state_int(state, "best_epoch", -1)
        stopped = state.get("stopped_epoch")
        if stopped is not None:
            stopped = _state_int(state, "stopped_epoch", 0)
        weights = state.get("best_weights")
        if weights is not None and not (isinstance(weights, dict) and all(
                isinstance(k, str) and isinstance(v, np.ndarray) for k, v in weights.items())):
            raise StateDictError(f"expected EarlyStopping best_weights as name -> array or "
                                 f"null, found {type(weights).__name__}")
        self.tracker.best, self.wait, self.best_epoch = best, wait, best_epoch
        self.best_weights = None if weights is None else dict(weights)
        self.stopped_epoch = stopped

    def state_key(self) -> str:
        """The type and monitored value."""
        return f"EarlyStopping(monitor={self.tracker.monitor!r})"


class ModelCheckpoint(Callback):
    """Save a resumable checkpoint (model + optimizer + trainer state) after epochs.

    `path` may contain `{epoch}` (1-based) and any key of the epoch's logs, e.g.
    `"ckpt-{epoch:03d}-{val_loss:.3f}.nnf"`. With save_best_only, only improvements of `monitor`
    are written, over every fit() this callback object is given (as Keras 3 keeps its best):
    a later fit() never overwrites a better saved model with a worse one. Pass a new
    ModelCheckpoint to start over (another model, say).
    """

    def __init__(self, path: str | os.PathLike, monitor: str = "val_loss",
                 save_best_only: bool = False, mode: str = "auto", every_n_epochs: int = 1,
                 **save_kwargs: Any) -> None:
        if isinstance(every_n_epochs, bool) or not isinstance(every_n_epochs, int) \
                or every_n_epochs < 1:
            raise ConfigError(f"every_n_epochs must be a positive integer, found "
                              f"{every_n_epochs!r}")
        self.path, self.save_best_only = str(path), save_best_only
        self.tracker = _Tracker(monitor, mode, 0.0)
        self.every_n_epochs, self.save_kwargs = every_n_epochs, save_kwargs
        self.saved: list[str] = []  # every path written, over all runs
        # (path, monitored value or None) of the write this epoch asked for
        self._pending: tuple[str, float | None] | None = None
        _template_fields(self.path)  # unbalanced braces are refused at once

    # no on_train_begin reset, unlike the other callbacks: the best value belongs to the
    # file, which outlives the fit() that wrote it; forgetting it let a second fit() replace
    # a better saved model with a worse one
    def on_train_begin(self) -> None:
        # a path naming a value the logs will not hold, or a best-only monitor without
        # validation data, is refused now rather than after the first epoch's training
        self._pending = None
        expected = getattr(self.trainer, "_expected_log_keys", None)
        if expected is None:
            return
        keys, validated, open_ended = expected()
        fields = _template_fields(self.path)
        needed = fields | ({self.tracker.monitor} if self.save_best_only else set())
        for name in sorted(needed - keys - {"epoch"}):
            if name.startswith("val_") and not validated:
                raise ConfigError(f"cannot fill in the checkpoint path {self.path!r} or monitor "
                                  f"{name!r}: it exists only with validation_data or "
                                  f"validation_split")
            if not open_ended:  # a custom callback may add its own keys to the logs
                raise ConfigError(f"cannot fill in the checkpoint path {self.path!r} or monitor "
                                  f"{name!r}: expected 'epoch' or one of the epoch's logs "
                                  f"{sorted(keys)}")
        if fields <= keys | {"epoch"}:
            self._fill_path({k: 1.0 for k in keys}, 0)  # a bad format spec fails now

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if (epoch + 1) % self.every_n_epochs:
            return
        value = None
        if self.save_best_only:
            value = _monitored(logs, self.tracker.monitor)
            if not self.tracker.improved(value):
                return
        self._pending = (self._fill_path(logs, epoch), value)
        # inside fit() the trainer writes once every callback's on_epoch_end has run, so the
        # file holds each callback's end-of-epoch state (another checkpoint's best included)
        if not getattr(self.trainer, "_defer_checkpoints", False):
            self.write_pending()

    def write_pending(self) -> None:
        """Write the checkpoint this epoch asked for, then (only then) take its value as best."""
        pending = getattr(self, "_pending", None)
        if pending is None:
            return
        path, value = pending  # state_dict() reports the new best while the file is written
        try:
            self.trainer.save_checkpoint(path, **self.save_kwargs)
        finally:
            self._pending = None
        if value is not None:
            self.tracker.best = value
        self.saved.append(path)

    def _fill_path(self, logs: dict[str, float], epoch: int) -> str:
        try:
            return self.path.format(**{**logs, "epoch": epoch + 1})
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ConfigError(f"cannot fill in the checkpoint path {self.path!r} ({exc!r}): it "
                              f"may name 'epoch' and the epoch's logs {sorted(logs)}") from None

    def state_dict(self) -> dict[str, Any]:
        pending = getattr(self, "_pending", None)
        best = pending[1] if pending is not None and pending[1] is not None else self.tracker.best
        return {"best": best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tracker.best = _state_float(state, "best")
        self._pending = None

    def state_key(self) -> str:
        """The type, path template, monitored value and whether it keeps the best only."""
        return (f"ModelCheckpoint(path={self.path!r}, monitor={self.tracker.monitor!r}, "
                f"save_best_only={bool(self.save_best_only)})")


def _template_fields(template: str) -> set[str]:
    """The names a str.format template fills in ({val_loss:.3f} -> val_loss)."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ConfigError(f"cannot fill in the checkpoint path {template!r}: {exc}") from None
    return {name.split(".")[0].split("[")[0] for _, name, _, _ in parsed if name}


class LRScheduler(Callback):
    """Step an nnforge.optim scheduler each epoch (or each batch with per="step").

    A scheduler whose step() takes a metric (ReduceLROnPlateau) gets `monitor` from the logs.
    Several may drive one optimizer (a per-step warmup and a per-epoch plateau): their
    changes compound, as in PyTorch.
    """

    def __init__(self, scheduler: Any, per: str = "epoch", monitor: str | None = None) -> None:
        if per not in ("epoch", "step"):
            raise ConfigError(f"per must be 'epoch' or 'step', found {per!r}")
        if isinstance(scheduler, Optimizer) or not callable(getattr(scheduler, "step", None)) \
                or not callable(getattr(scheduler, "state_dict", None)):
            raise ConfigError(f"expected an nnforge.optim scheduler (StepLR, "
                              f"ReduceLROnPlateau, ...), found {type(scheduler).__name__}")
        plateau = isinstance(scheduler, schedulers.ReduceLROnPlateau)
        # caught here rather than as a TypeError from step() at the end of the first epoch
        if plateau and per == "step":
            raise ConfigError("ReduceLROnPlateau steps on a monitored value, which only epochs "
                              "have: use per='epoch'")
        if monitor is not None and isinstance(scheduler, schedulers.LRScheduler):
            raise ConfigError(f"monitor={monitor!r} is for ReduceLROnPlateau; a "
                              f"{type(scheduler).__name__} steps without a metric")
        self.scheduler, self.per, self.monitor = scheduler, per, monitor
        if monitor is None and plateau:
            self.monitor = "val_loss"

    def on_train_begin(self) -> None:
        # a plateau's best value and bad-epoch count belong to one run, as Keras's
        # ReduceLROnPlateau resets them; the lr reached stays (it lives in the optimizer)
        if isinstance(self.scheduler, schedulers.ReduceLROnPlateau):
            self.scheduler.reset()

    def on_batch_end(self, step: int, loss: float) -> None:
        if self.per == "step":
            self.scheduler.step()

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        if self.per != "epoch":
            return
        if self.monitor is not None:
            self.scheduler.step(_monitored(logs, self.monitor))
        else:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any]:
        return {"scheduler": self.scheduler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.scheduler.load_state_dict(state["scheduler"])

    def state_key(self) -> str:
        """The type, the scheduler's type, how often it steps and what it monitors (its
        settings are checked by the scheduler itself when it loads its state)."""
        return (f"LRScheduler({type(self.scheduler).__name__}, per={self.per!r}, "
                f"monitor={self.monitor!r})")


class HistoryLogger(Callback):
    """Write the history after every epoch to a .json or .csv file."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in (".json", ".csv"):
            raise ConfigError(f"history log must end in .json or .csv, found {self.path.name!r}")

    def on_train_begin(self) -> None:
        # path problems are found before the first epoch trains, not after it
        if self.path.is_dir():
            raise ConfigError(f"history log path '{self.path}' is a directory; expected a "
                              f".json or .csv file path")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cannot create the folder for history log '{self.path}': "
                              f"{exc.strerror or exc}") from None
        if not os.access(self.path.parent, os.W_OK):
            raise ConfigError(f"cannot write history log '{self.path}': its folder is not "
                              f"writable")

    def on_epoch_end(self, epoch: int, logs: dict[str, float]) -> None:
        try:
            with atomic_file(self.path, "w", newline="") as fh:
                self._write(fh)
        except OSError as exc:
            raise ConfigError(f"cannot write history log '{self.path}': "
                              f"{exc.strerror or exc}") from None

    def state_key(self) -> str:
        """The type and path."""
        return f"HistoryLogger(path={str(self.path)!r})"

    def _write(self, fh: Any) -> None:
        """The history so far, as JSON or CSV by the file's suffix."""
        history = self.trainer.history
        if self.path.suffix.lower() == ".json":
            # null for NaN (an epoch without that metric) and infinities: JSON has neither
            fh.write(json.dumps({k: [x if math.isfinite(x) else None for x in v]
                                 for k, v in history.items()}, indent=1))
        else:
            keys = list(history)
            rows = max((len(v) for v in history.values()), default=0)
            w = csv.writer(fh)
            w.writerow(["epoch", *keys])
            for i in range(rows):
                w.writerow([i + 1, *(history[k][i] if i < len(history[k]) else ""
                                     for k in keys)])
