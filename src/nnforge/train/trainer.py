"""`Trainer`: fit, evaluate and predict with a model, a loss, an optimizer and metrics."""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import time
import warnings
from typing import Any, Iterator, Sequence

import numpy as np

from .. import backend
from .. import random as nf_random
from ..autograd.grad_mode import no_grad
from ..autograd.tensor import Tensor
from ..backend import SERIAL_BLAS
from ..data.dataset import DataLoader
from ..errors import ConfigError, DataError, ModelFileError, ShapeError, StateDictError
from ..nn.conv_layers import BatchNorm1d, BatchNorm2d
from ..nn.losses import Loss, get_loss
from ..nn.module import Module
from ..ops import conv as conv_ops
from ..ops.activation import sigmoid_array, softmax_array
from ..optim import groups as groups_lib
from ..optim.optimizer import Optimizer
from . import callbacks as callbacks_module
from .callbacks import Callback, ModelCheckpoint
from .progress import ProgressDisplay
from .state import History, check_trainer_state
from .weights import class_weight_arg, class_weights_per_sample, sample_weight_arg


def _as_features(X: Any, dtype: Any, what: str = "X") -> np.ndarray:
    if backend.is_device_array(X):  # checked and batched on the host like any other input
        X = backend.to_numpy(X)
    try:
        arr = np.asarray(X)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} must be a numeric array, found {type(X).__name__} "
                        f"({exc})") from None
    if arr.dtype.kind not in "fiub":
        raise DataError(f"{what} must be numeric, found dtype {arr.dtype}")
    if arr.ndim < 2:
        raise ShapeError(f"{what} must have shape (samples, features...), found {arr.shape}")
    arr = np.ascontiguousarray(arr, dtype=dtype)
    if not np.isfinite(arr).all():
        raise DataError(f"{what} contains NaN or infinite values")
    return arr


def _int_at_least(name: str, value: Any, low: int, error: type = ConfigError) -> int:
    """value as an int >= low (NumPy integers accepted, bools and fractions refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise error(f"{name} must be an integer >= {low}, found {value!r}")
    return int(value)


def _check_metric_fits_loss(name: Any, metric: Any, loss: Loss) -> None:
    """ConfigError for a metric that would score the wrong thing: a regression metric of
    predicted class indices, a class metric of raw regression values, or top-k of a binary
    model's single probability (it would otherwise fail or mislead at the first epoch's end)."""
    regression = loss.kind == "regression"
    if metric.kind == "regression" and not regression:
        wrong = f"compares raw values, but the {loss.kind} loss gives class predictions"
    elif metric.kind != "regression" and regression:
        wrong = ("compares classes, but the loss regresses (a custom classification loss "
                 "must set kind = 'multiclass' or 'binary')")
    elif metric.kind == "score" and loss.kind != "multiclass":
        wrong = f"needs per-class scores, but the {loss.kind} loss gives one probability"
    elif getattr(metric, "average", None) == "samples" and loss.kind != "binary":
        wrong = (f"averages over the labels of each sample (multilabel), but the {loss.kind} "
                 f"loss gives one class per sample")
    else:
        return
    raise ConfigError(f"metric {getattr(metric, 'name', name)!r} {wrong}")


def _check_metric_fits_targets(metric: Any, loss: Loss, y: np.ndarray) -> None:
    """ConfigError for a class metric that cannot score these targets, raised before training
    rather than when the first epoch ends: multilabel rows against one positive class
    (average='binary') or the other way round, more than 2 classes for average='binary', or
    targets other than 0/1 against a binary loss's thresholded predictions."""
    from .metrics import is_multilabel  # noqa: PLC0415

    if metric.kind != "class" or loss.kind == "regression" or not len(y):
        return
    name, average = metric.name, getattr(metric, "average", None)
    multilabel = loss.kind == "binary" and is_multilabel(y)
    others = f"use {name}_macro, {name}_micro or {name}_weighted"
    if multilabel and average == "binary":
        wrong = (f"scores one positive class, but y holds multilabel rows of shape {y.shape} "
                 f"({others} or {name}_samples)")
    elif average == "samples" and not multilabel:
        wrong = (f"needs multilabel targets (0/1 rows, one column per label), found y of "
                 f"shape {y.shape}")
    elif loss.kind == "binary" and not np.isin(y, (0, 1)).all():
        wrong = (f"compares y with the predicted classes 0 and 1, but y holds other values, "
                 f"such as {float(y[~np.isin(y, (0, 1))].reshape(-1)[0]):g}")
    elif average == "binary" and y.ndim == 1 and len(np.unique(y)) > 2:
        wrong = (f"scores one positive class of 2, but y holds {len(np.unique(y))} classes "
                 f"({others})")
    else:
        return
    raise ConfigError(f"metric {name!r} {wrong}")


def _optimizer_arg(optimizer: Any, model: Module) -> Any:
    """The optimizer to train with: Adam(lr=1e-3) for None, a name (as Keras takes one) built
    with its defaults over the model's parameters, a name with its arguments as
    ("adam", {"lr": 0.01}) or {"name": "adam", "lr": 0.01}, or an optimizer object as it is."""
    from ..optim import OPTIMIZERS, build_optimizer, optimizer_from_config  # noqa: PLC0415

    if optimizer is None:
        return build_optimizer("adam", model.parameters(), lr=1e-3)
    if isinstance(optimizer, str):  # ConfigError listing the names for an unknown one
        return build_optimizer(optimizer, model.parameters())
    if isinstance(optimizer, dict):  # what Optimizer.get_config() gives
        return optimizer_from_config(model.parameters(), optimizer)
    if isinstance(optimizer, tuple) and len(optimizer) == 2 and isinstance(optimizer[0], str) \
            and isinstance(optimizer[1], dict) and all(isinstance(k, str) for k in optimizer[1]):
        return build_optimizer(optimizer[0], model.parameters(), **optimizer[1])
    if isinstance(optimizer, type) or not all(callable(getattr(optimizer, a, None))
                                              for a in ("zero_grad", "step")):
        hint = (f"; make one first, e.g. {optimizer.__name__}(model.parameters())"
                if isinstance(optimizer, type) else "")
        raise ConfigError(f"optimizer must be a name in {sorted(OPTIMIZERS)}, a name with "
                          f"arguments as ('adam', {{'lr': 0.01}}) or {{'name': 'adam', "
                          f"'lr': 0.01}}, an optimizer (with zero_grad() and step()) or None, "
                          f"found "
                          f"{getattr(optimizer, '__name__', type(optimizer).__name__)}{hint}")
    return optimizer


def _check_logits_head(model: Module, loss: Loss) -> None:
    """ConfigError for a Sequential ending in Softmax (Sigmoid) trained with cross-entropy on
    logits: the loss would squash probabilities a second time and train badly, silently. A
    model written for Keras's categorical_crossentropy (probabilities by default) ends so."""
    from ..nn.layers import Sequential, Sigmoid, Softmax  # noqa: PLC0415
    from ..nn.losses import BCEWithLogitsLoss, CrossEntropyLoss  # noqa: PLC0415

    last = list(model._modules.values())[-1] if isinstance(model, Sequential) \
        and model._modules else None
    for head, logits_loss, probs_name in ((Softmax, CrossEntropyLoss, None),
                                          (Sigmoid, BCEWithLogitsLoss, "'bce'")):
        if isinstance(last, head) and isinstance(loss, logits_loss):
            other = f", or keep it and use loss={probs_name}" if probs_name else ""
            raise ConfigError(f"{type(loss).__name__} takes logits, but the model ends in "
                              f"{head.__name__}, so its outputs are probabilities: remove the "
                              f"final {head.__name__} (predict_proba and a saved model's "
                              f"post-processing apply it){other}")


def _input_width(model: Module) -> int | None:
    """The model's number of input features when it takes 1-D samples (from the shape it
    trained on, else a leading Linear's in_features); None when unknown or not 1-D."""
    from ..nn.layers import Linear  # noqa: PLC0415

    shape = getattr(model, "input_shape", None)
    if shape is not None:
        return int(shape[0]) if isinstance(shape, (tuple, list)) and len(shape) == 1 \
            and isinstance(shape[0], numbers.Integral) else None
    first = next((m for m in model.modules() if m._parameters), None)
    return first.in_features if isinstance(first, Linear) else None


def _record_input_shape(model: Module, xb: np.ndarray) -> None:
    """Remember the per-sample input shape (for nf.save) once the model has run on it; a
    known shape stays: inputs that failed never get here, and the first one that ran is
    as right as any later one."""
    if getattr(model, "input_shape", None) is None:
        object.__setattr__(model, "input_shape", tuple(xb.shape[1:]))


def _batch_edges(n: int, batch_size: int, drop_last: bool, merge_one: bool) -> list[int]:
    """Where each array batch starts, then where the last one ends: whole batches, then the
    rest (left out with drop_last); with merge_one, a rest of one row joins the batch before."""
    stop = n - n % batch_size if drop_last else n
    edges = [*range(0, stop, batch_size), stop]
    if merge_one and len(edges) > 2 and edges[-1] - edges[-2] == 1:
        del edges[-2]
    return edges


def _loader_arg(X: Any, y: Any, what: str) -> DataLoader | None:
    """X when it is a DataLoader (y must then be left out); None for arrays (y is needed)."""
    if isinstance(X, DataLoader):
        if y is not None:
            raise ConfigError(f"{what} with a DataLoader takes its targets from the loader's "
                              f"(x, y) batches: leave y out")
        return X
    if y is None:
        raise ConfigError(f"{what} needs targets y for the arrays X (or a DataLoader of (x, y) "
                          f"batches as X)")
    return None


def _validation_arg(data: Any) -> Any:
    """validation_data as None, a DataLoader, or an (X, y) or (X, y, sample_weight) tuple (as
    Keras); a ConfigError for any other shape."""
    if data is None or isinstance(data, DataLoader):
        return data
    if isinstance(data, (tuple, list)) and len(data) in (2, 3):
        return tuple(data)
    found = (f"a {type(data).__name__} of {len(data)} item{'s' * (len(data) != 1)}"
             if isinstance(data, (tuple, list)) else f"a {type(data).__name__}")
    raise ConfigError(f"expected validation_data=(X, y), (X, y, sample_weight) or a "
                      f"DataLoader, found {found}")


class _EpochProgress:
    """A running epoch's sums, kept on the trainer so that a checkpoint saved mid-epoch (from
    on_batch_end) holds them and the resumed epoch logs the whole epoch."""

    __slots__ = ("kind", "lr", "order_rng", "total", "seen", "batches", "outputs", "targets",
                 "prev_outputs", "prev_targets")

    def __init__(self, kind: str, lr: float, partial: dict[str, Any] | None) -> None:
        self.kind, self.lr, self.order_rng = kind, lr, None
        self.total, self.seen, self.batches = 0.0, 0, 0
        self.outputs: list[Any] = []
        self.targets: list[np.ndarray] = []
        self.prev_outputs = self.prev_targets = None  # a checkpoint's part of this epoch
        if partial is not None:
            self.total, self.seen = float(partial["total"]), int(partial["seen"])
            self.batches = int(partial["batches"])
            self.prev_outputs, self.prev_targets = partial.get("outputs"), partial.get("targets")

    def collected(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The epoch's outputs and targets so far (a checkpoint's part first), on the host."""
        outs = [] if self.prev_outputs is None else [self.prev_outputs]
        tgts = [] if self.prev_targets is None else [self.prev_targets]
        if self.outputs:
            outs.append(backend.to_numpy(np.concatenate(self.outputs)))
            tgts.append(np.concatenate(self.targets))
        if not outs:
            return None, None
        return np.concatenate(outs), np.concatenate(tgts)

    def state(self) -> dict[str, Any]:
        """JSON-ready (arrays apart) position of the epoch, for a mid-epoch checkpoint."""
        outputs, targets = self.collected()
        return {"kind": self.kind, "lr": self.lr, "order_rng": self.order_rng,
                "total": self.total, "seen": self.seen, "batches": self.batches,
                "outputs": outputs, "targets": targets}


def _partial_bad(detail: str) -> StateDictError:
    return StateDictError(f"expected a trainer state as Trainer.state_dict() gives: 'partial' "
                          f"(the epoch the checkpoint was saved in) {detail}")


def _partial_seen(partial: dict[str, Any], edges: list[int]) -> int:
    """The rows the part-epoch trained, which its batch count fixes (the resumed run skips
    that many batches, and the epoch's loss is its sum over those rows)."""
    batches, seen, most = partial["batches"], partial["seen"], len(edges) - 1
    if batches > most:
        raise _partial_bad(f"needs 'batches' in [0, {most}] (the batches of an epoch of this "
                           f"run), found {batches}")
    rows = edges[batches] - edges[0]
    if seen != rows:
        raise _partial_bad(f"needs 'seen' {rows} (the rows in its first {batches} batches), "
                           f"found {seen}")
    return rows


def _loader_agrees(state: Any, batches: int, per_epoch: int) -> None:
    """Refuse a part-epoch on a DataLoader whose saved loader state is at another batch: the
    resumed epoch would drop or repeat batches. A checkpoint saved after the last batch by
    an older nnforge has the loader at its next epoch's start, which resumes right too."""
    done = state.get("batches_done") if isinstance(state, dict) else None
    if done == batches or (done == 0 and batches == per_epoch):
        return
    found = "no loader state" if state is None else f"the loader's 'batches_done' {done!r:.40}"
    raise _partial_bad(f"on a DataLoader needs the loader's state at the same batch (its "
                       f"'batches' is {batches}), found {found}")


#: nnforge's own losses: each term is >= 0, so a negative loss sum is damage (a custom loss
#: may go negative, e.g. a likelihood's)
_NONNEGATIVE_LOSSES = ("MSELoss", "L1Loss", "HuberLoss", "CrossEntropyLoss",
                       "BCEWithLogitsLoss", "BCELoss")


def _partial_total(partial: dict[str, Any], seen: int, loss: Loss) -> None:
    """The part-epoch's loss sum: 0 before any row, never negative for nnforge's losses."""
    total = partial["total"]
    own = type(loss).__module__ == Loss.__module__ and type(loss).__name__ in _NONNEGATIVE_LOSSES
    if (seen == 0 and total != 0) or (own and total < 0):
        need = "0 (no rows seen yet)" if seen == 0 else \
            f"a sum >= 0 ({type(loss).__name__} is never negative)"
        raise _partial_bad(f"needs 'total' (its loss sum) {need}, found {total!r}")


def _partial_array(partial: dict[str, Any], key: str, like: np.ndarray, seen: int) -> None:
    """outputs or targets: one row per row seen, each as the probe's (dtype, row shape)."""
    arr = partial[key]
    shape = (seen, *like.shape[1:])
    if arr.dtype != like.dtype or arr.shape != shape:
        raise _partial_bad(f"needs {key!r} of dtype {like.dtype} and shape {shape} (one row "
                           f"per row seen, as this model and data give them), found dtype "
                           f"{arr.dtype} and shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise _partial_bad(f"needs {key!r} finite, found NaN or infinite values")


def _partial_target_values(targets: np.ndarray, loss: Loss, out: np.ndarray) -> None:
    """Class indices within the model's classes (or the loss's ignore_index); binary
    targets within [0, 1]: the metrics would otherwise count rows no data holds."""
    if loss.kind == "multiclass" and targets.dtype.kind in "iu" and out.ndim >= 2:
        classes = out.shape[1]
        bad = (targets < 0) | (targets >= classes)
        bad &= targets != getattr(loss, "ignore_index", -100)
        if bad.any():
            raise _partial_bad(f"needs 'targets' class indices in [0, {classes}), found "
                               f"{targets[bad].reshape(-1)[0]}")
    elif loss.kind == "binary" and targets.size and not (
            (targets >= 0).all() and (targets <= 1).all()):
        raise _partial_bad(f"needs 'targets' in [0, 1] (binary), found values from "
                           f"{targets.min()} to {targets.max()}")


def _data_fingerprint(X: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Row count, sample shape and a hash of up to 16 evenly spaced rows (dtype-blind): cheap,
    and enough to tell other data from the checkpointed run's."""
    n = len(X)
    idx = np.unique(np.linspace(0, n - 1, num=min(n, 16)).astype(np.int64))
    digest = hashlib.blake2b(digest_size=8)
    digest.update(np.ascontiguousarray(X[idx], dtype=np.float64).tobytes())
    digest.update(np.ascontiguousarray(y[idx], dtype=np.float64).tobytes())
    return {"kind": "arrays", "rows": n, "shape": list(X.shape[1:]),
            "sample_hash": digest.hexdigest()}


def _loss_config(loss: Loss) -> dict[str, Any]:
    """The loss's type and simple settings (e.g. label_smoothing)."""
    return {"type": type(loss).__name__, **{
        k: v for k, v in sorted(vars(loss).items())
        if not k.startswith("_") and isinstance(v, (bool, int, float, str, type(None)))}}


def _architecture(model: Module) -> Any:
    """The model's architecture (layer types and settings: Tanh vs ReLU, Dropout's p), or its
    layer types when a layer cannot describe itself."""
    try:
        return model.to_architecture()
    except ConfigError:
        return [type(m).__name__ for m in model.modules()]


def _optimizer_config(optimizer: Any) -> Any:
    """The optimizer's name and hyperparameters (lr per group included); None if unknown."""
    return optimizer.get_config() if isinstance(optimizer, Optimizer) else None


def _jsonable(value: Any) -> Any:
    """value as it reads back from a checkpoint's JSON (tuples become lists)."""
    return json.loads(json.dumps(value))


#: what a resumed fit() must share with the checkpointed run to continue it exactly
_RUN_FIELDS = {"data": "training data", "batching": "batching (batch_size, drop_last, shuffle)",
               "validation_split": "validation_split", "loss": "loss",
               "architecture": "architecture", "dtype": "model dtype",
               "frozen": "frozen parameters (requires_grad=False)"}


def _first_difference(old: Any, new: Any, where: str) -> str:
    """Where two JSON values first differ, and how: 'where: checkpoint X, now Y'."""
    if isinstance(old, dict) and isinstance(new, dict) and old.keys() == new.keys():
        key = next(k for k in old if old[k] != new[k])
        return _first_difference(old[key], new[key], f"{where}.{key}")
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        i = next(i for i, (a, b) in enumerate(zip(old, new)) if a != b)
        return _first_difference(old[i], new[i], f"{where}[{i}]")
    return f"{where}: checkpoint {old!r:.120}, now {new!r:.120}"


def _run_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """'what: checkpoint X, now Y' for each setting that differs (fields an older checkpoint
    lacks are not compared)."""
    return [_first_difference(old[key], new.get(key), what)
            for key, what in _RUN_FIELDS.items() if key in old and old[key] != new.get(key)]


def _match_callback_states(callbacks: list[Callback], saved: list[dict[str, Any]]
                           ) -> list[tuple[Callback, dict[str, Any]]]:
    """Pair saved callback states with callbacks by state_key() (type and identifying
    settings); entries of older checkpoints, without a key, by type in order. A ConfigError
    when a key is shared by unequal numbers of saved states and callbacks: no guessing."""
    keyed: dict[str, list[dict[str, Any]]] = {}
    legacy: dict[str, list[dict[str, Any]]] = {}
    for entry in saved:
        if entry.get("key"):
            keyed.setdefault(entry["key"], []).append(entry["state"])
        else:
            legacy.setdefault(entry["type"], []).append(entry["state"])
    mine: dict[str, list[Callback]] = {}
    for cb in callbacks:
        mine.setdefault(cb.state_key(), []).append(cb)
    pairs: list[tuple[Callback, dict[str, Any]]] = []
    for key, group in mine.items():
        states = keyed.get(key)
        if states is None:
            continue
        if len(states) != len(group):
            raise ConfigError(f"cannot tell which saved callback state is whose: the checkpoint "
                              f"holds {len(states)} state(s) of {key}, this run has "
                              f"{len(group)} such callback(s); give them distinct settings "
                              f"(paths, monitors) or pass as many as the checkpointed run had")
        pairs += zip(group, states)
    for cb in callbacks:  # older checkpoints: by type, in order, as they were written
        queue = legacy.get(type(cb).__name__)
        if queue:
            pairs.append((cb, queue.pop(0)))
    return pairs


class Trainer:
    """Trains a Module: `fit`, `evaluate`, `predict`, with callbacks, metrics and checkpoints.

    `device` ("cpu", "cuda", "cuda:N") moves the model there first; None leaves it where it is.
    Either way each batch is sent to the model's device (NumPy arrays come in, the metrics and
    `predict` give NumPy arrays back), and an optimizer made before the move follows it.

    `metrics`: names (`nnforge.train.metrics.METRICS`, any case, '-' for '_'), `Metric`
    objects, or callables (y_true, y_pred) -> float named by their __name__, fed the
    predicted classes for a classification loss and the raw values for a regression one
    (e.g. sklearn.metrics.balanced_accuracy_score).

    `seed` fixes the trainer's own draws: shuffle order, validation_split's rows and dropout
    during its fit() (a stream of its own, kept in checkpoints). The global generator that
    code outside fit() sees (`nf.manual_seed`) is left as fit() found it, so models built
    after a seeded fit() still get fresh initial weights. With seed=None, dropout draws from
    the global stream and shuffling from fresh entropy. The global generator is one per
    process: seeded fits running at once in several threads share it, and are then neither
    reproducible nor isolated (run them one after another, or in processes).
    """

    def __init__(self, model: Module, loss: Any = "cross_entropy", optimizer: Any = None,
                 metrics: Any = None, seed: int | None = None,
                 grad_clip_norm: float | None = None, grad_clip_value: float | None = None,
                 verbose: Any = "auto", device: str | None = None) -> None:
        if not isinstance(model, Module):
            raise ConfigError(f"Trainer needs an nnforge.nn.Module, found {type(model).__name__}")
        from . import metrics as metric_lib  # noqa: PLC0415

        if device is not None:
            model.to(device)  # DeviceError for an unknown device, or no CuPy / GPU
        self.model = model
        self.loss: Loss = get_loss(loss)
        _check_logits_head(model, self.loss)
        self.optimizer = _optimizer_arg(optimizer, model)
        # one name (or one callable) alone is one metric, not a list of its letters
        given = [metrics] if isinstance(metrics, str) or callable(metrics) \
            else list(metrics or [])
        self.metrics = [metric_lib.get_metric(m, self.loss.kind) for m in given]
        # the history's keys: canonical names ("F1-macro" is "f1_macro"), a callable's __name__
        self.metric_names = [m.name for m in self.metrics]
        for name, metric in zip(self.metric_names, self.metrics):
            _check_metric_fits_loss(name, metric, self.loss)
        twice = sorted({n for n in self.metric_names if self.metric_names.count(n) > 1})
        if twice:
            raise ConfigError(f"expected metrics with distinct names, found {twice} more than "
                              f"once (name a lambda with def, or use Metric(name, fn))")
        self.seed = seed
        self.grad_clip_norm, self.grad_clip_value = grad_clip_norm, grad_clip_value
        self.verbose = verbose
        self.history = History()
        self.stop_training = False
        self.callbacks: list[Callback] = []
        self._epochs_done = 0
        self._step = 0
        self._resumed = False  # a checkpoint was just loaded: fit()'s epochs count from 0
        self._loader: DataLoader | None = None  # the one fit() is training on
        self._loader_state: dict[str, Any] | None = None  # from a checkpoint, for the next fit
        # callback states from a checkpoint, for the callbacks the next fit() gets (a checkpoint
        # loaded before fit() has no callbacks to give them to yet)
        self._callback_states: dict[str, list[Any]] | None = None
        self._resumed_stopped = False  # the checkpointed run had already stopped early
        self._progress: _EpochProgress | None = None  # the epoch in progress, if any
        self._partial_in: dict[str, Any] | None = None  # a mid-epoch checkpoint's epoch
        self._run: dict[str, Any] | None = None  # the settings of the run (see _run_config)
        self._saved_run: dict[str, Any] | None = None  # a loaded checkpoint's run settings
        self._fresh_optimizer: Any = None  # the optimizer's config before a checkpoint loaded
        # callback states at the end of the last whole epoch of an interrupted fit(): the next
        # fit() continues them instead of starting its callbacks afresh
        self._continue_states: list[dict[str, Any]] | None = None
        self._defer_checkpoints = False  # inside the end of an epoch: checkpoints wait
        # inside a step's on_batch_end calls: save_checkpoint() queues (path, kwargs) here and
        # the trainer writes them once every callback's on_batch_end has run
        self._batch_end_running = False
        self._pending_batch_saves: list[tuple[str, dict[str, Any]]] = []
        self._log_keys: tuple[set[str], bool, bool] = (set(), False, True)
        self._shuffle_rng = np.random.default_rng(seed)
        # a seeded trainer's own state of the global generator (dropout draws during its
        # fit()); None until its first fit() starts it from the seed. Unseeded: not used.
        self._own_rng: dict[str, Any] | None = None
        self._in_fit = False  # its own state is swapped into the global generator
        self._fitting = False  # fit() is running (a second, nested one is refused)
        # validation_split's draw: the seed, else fixed once per trainer (kept in checkpoints)
        self._split_seed = seed if seed is not None else int(
            np.random.SeedSequence().generate_state(1, np.uint64)[0])

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, X: Any, y: Any = None, epochs: int = 10, batch_size: int = 32,
            validation_split: float = 0.0, validation_data: Any = None,
            callbacks: Sequence[Callback] | None = None, shuffle: bool = True,
            verbose: Any = None, resume_from: str | None = None,
            drop_last: bool = False, class_weight: Any = None,
            sample_weight: Any = None) -> History:
        """Train for `epochs` more epochs and return the history (of every fit() so far).

        The history is a dict of name -> one value per epoch ("loss", each metric, "val_..."
        and "lr"); like Keras's History it also has `.history` (itself) and `.epoch`.

        X and y are arrays, or X is a `nnforge.data.DataLoader` of (x, y) batches and y is
        left out: the loader then decides batches and order (batch_size and shuffle are
        its own), and its position is kept in checkpoints. validation_data is (X, y) or a
        DataLoader.

        Array batches hold batch_size rows each (in an order drawn from the trainer's seed
        with shuffle=True); the rows left over make a smaller last batch, or sit that epoch
        out with drop_last=True (as DataLoader's drop_last; other rows each epoch when
        shuffling). In a model with batch normalisation a last batch of one row instead
        joins the batch before it (batch_size + 1 rows): one sample has no batch statistics
        (PyTorch refuses such a batch; Keras trains on a zero variance, which drags the
        running variance towards 0). Batches depend only on the row count, batch_size,
        drop_last and that rule, so a resumed run trains on the same batches as the
        uninterrupted one.

        validation_split holds out the last rows with shuffle=False (as Keras does: an ordered
        series validates on its latest rows), and rows drawn at random with shuffle=True (from
        the trainer's seed, the same rows in every fit() of this trainer).

        sample_weight (one finite weight >= 0 per row of X) and class_weight ({class index:
        weight}, classification losses; a class left out weighs 1.0) weigh each sample's loss
        term, multiplied together as in Keras; validation_split holds out their rows too, and
        validation_data may carry validation weights as a third item (class_weight is for
        training only, as in Keras). Each batch's loss is then sum(w_i * l_i) / batch size,
        Keras's default 'sum_over_batch_size' (not sum(w_i): weights of 2.0 everywhere double
        the loss and its gradients, as a doubled learning rate would for SGD); a sample of
        weight 0 adds nothing to the gradient, whatever its label. The history's "loss" is
        that weighted loss; metrics stay unweighted (Keras's `metrics`, not
        `weighted_metrics`). Weights are data, not state: a resumed run needs the same ones.
        Not with a DataLoader (a ConfigError).

        Right after a checkpoint was loaded (`resume_from`, `load_checkpoint` or
        `load_state_dict`), `epochs` counts from the start of the original run instead, so a
        resumed run stops where the uninterrupted one would have (a run that had already
        finished trains no epoch, with a UserWarning saying so). A checkpoint saved
        mid-epoch (`save_checkpoint()` from on_batch_end) resumes inside that epoch, with
        arrays as with a DataLoader: the batches left, the epoch's logged loss and metrics
        over all its batches and its lr as at its start.

        A resumed fit() must continue the checkpointed run: different training data (row
        count, or a hash of a few sampled rows), batching (batch_size, drop_last, shuffle),
        validation_split, loss, architecture (Tanh for ReLU, Dropout's p), dtype or frozen
        parameters is refused with a ConfigError naming the first difference (checkpoints
        from before these were recorded are not checked). More epochs, other callbacks,
        metrics or validation_data are fine: they leave the training itself as it was. An
        optimizer given other hyperparameters (lr, ...) only warns: the checkpoint's state,
        with its schedules' current lr, is what resumes; to change the lr deliberately, set
        it after `load_checkpoint()` and call fit() without resume_from.

        An epoch cut short (KeyboardInterrupt, an error), in training or in a callback's
        on_epoch_end, is undone whole: model, optimizer (every group's lr), callbacks,
        history, RNGs, step and loader go back to the end of the last whole epoch, so a
        later fit() or a checkpoint saved then continues exactly as the uninterrupted run
        (files a callback wrote before the error stay, but its state forgets them).
        ModelCheckpoint files are written once every callback's on_epoch_end has run, so each
        holds every callback's state at the end of its epoch.

        A callback that sets `trainer.stop_training = True` stops fit() deliberately; that is
        not an interruption and nothing is undone. Set in on_batch_end, it stops after that
        batch (as Keras): the part-epoch keeps the weights of its last step and counts as an
        epoch, validated, recorded in the history (its loss and metrics over the batches it
        trained) and passed to on_epoch_end, then on_train_end runs. A DataLoader starts its
        next epoch afterwards. Set in on_epoch_end, it stops after that epoch. A checkpoint
        saved from the on_batch_end that stops the run resumes the same way: fit() closes that
        part-epoch (validation, history, on_epoch_end) without training more batches.

        Each fit() is a new run for the callbacks: on_train_begin resets per-run state
        (EarlyStopping's best value and patience, ReduceLROnPlateau's), and a fit() resuming
        a checkpoint then restores their saved states, matched by `Callback.state_key()`
        (type, path, monitor). So does the fit() right after an interrupted one: it continues
        that run's callback states as they were at its last whole epoch. ModelCheckpoint
        keeps its best across fits (as Keras 3), so a later fit() never overwrites a better
        saved model.
        """
        if getattr(self, "_fitting", False):  # RNG swap, history, loader: one run each
            raise ConfigError("fit() was called while this trainer's fit() runs (from a "
                              "callback?); expected it to be called once that fit() returns")
        epochs = _int_at_least("epochs", epochs, 1)
        batch_size = _int_at_least("batch_size", batch_size, 1)
        loader = _loader_arg(X, y, "fit()")
        if not isinstance(drop_last, (bool, np.bool_)):
            raise ConfigError(f"drop_last must be True or False, found {drop_last!r}")
        if loader is not None and drop_last and not loader.drop_last:
            raise ConfigError("drop_last=True with a DataLoader: the loader makes the batches, "
                              "so pass it there: DataLoader(..., drop_last=True)")
        if validation_split and validation_data is not None:
            raise ConfigError("pass validation_split or validation_data, not both (the split "
                              "would be silently ignored)")
        validation_data = _validation_arg(validation_data)
        class_weight = class_weight_arg(class_weight, self.loss)
        if loader is not None and (class_weight is not None or sample_weight is not None):
            raise ConfigError("sample_weight and class_weight need arrays X and y; a DataLoader "
                              "yields (x, y) batches without weights")
        # checkpoints last, so each one holds every other callback's state after its epoch
        # (an LR step or an early stop saved before it happened would be lost on resume)
        self.callbacks = sorted(callbacks or [], key=lambda cb: isinstance(cb, ModelCheckpoint))
        for cb in self.callbacks:
            cb.trainer = self
        if resume_from is not None:
            # before validation_split's draw: the checkpoint's split_seed picks the held-out
            # rows, as with load_checkpoint() then fit()
            self.load_checkpoint(resume_from)
        weights: np.ndarray | None = None  # per-sample loss weights; None: the unweighted path
        if loader is not None:
            if validation_split:
                raise ConfigError("validation_split needs arrays; with a DataLoader pass "
                                  "validation_data (arrays or another DataLoader)")
            data = {"kind": "loader", "rows": len(loader.dataset),
                    "batch_size": loader.batch_size, "shuffle": bool(loader.shuffle),
                    "drop_last": bool(loader.drop_last)}
        else:
            X = _as_features(X, self.model.dtype)
            y = self._as_targets(y, len(X))
            if len(X) == 0:
                raise DataError("fit() needs at least one training sample, found none")
            self._check_targets(y)
            data = _data_fingerprint(X, y)  # of every row, before validation_split's draw
            weights = sample_weight_arg(sample_weight, len(X))
            # before the split: keys are checked against every row's class
            per_class = None if class_weight is None else \
                class_weights_per_sample(class_weight, self.loss.kind, y)
            if validation_data is None and validation_split:
                train, val = self._split_rows(len(X), validation_split, shuffle)
                # class weights train only (as Keras); sample weights go with their rows
                validation_data = (X[val], y[val]) if weights is None \
                    else (X[val], y[val], weights[val])
                X, y = X[train], y[train]
                weights = None if weights is None else weights[train]
                per_class = None if per_class is None else per_class[train]
            if per_class is not None:  # as Keras: multiplied with sample_weight
                weights = per_class if weights is None else weights * per_class
        if validation_data is not None and not isinstance(validation_data, DataLoader):
            Xv = _as_features(validation_data[0], self.model.dtype, "validation X")
            yv = self._as_targets(validation_data[1], len(Xv))
            wv = sample_weight_arg(validation_data[2], len(Xv), "validation sample_weight") \
                if len(validation_data) == 3 else None
            validation_data = (Xv, yv) if wv is None else (Xv, yv, wv)
            self._check_targets(yv)
        # refused now rather than at the end of the first epoch's training
        if validation_data is not None and len(validation_data[0] if isinstance(
                validation_data, tuple) else validation_data) == 0:
            raise DataError("validation_data holds no samples (or its DataLoader no batches): "
                            "leave it out or give it some")
        edges: list[int] = []
        if loader is None:
            # one row has no batch statistics: it joins the batch before (see the docstring)
            edges = _batch_edges(len(X), batch_size, bool(drop_last), any(
                isinstance(m, (BatchNorm1d, BatchNorm2d)) for m in self.model.modules()))
            if len(edges) < 2:
                raise DataError(f"drop_last=True with {len(X)} training samples and batch_size="
                                f"{batch_size} leaves no batch to train on: use a smaller "
                                f"batch_size or drop_last=False")
        self._start_run(data, None if loader is not None else {
            "batch_size": batch_size, "drop_last": bool(drop_last), "shuffle": bool(shuffle)},
            float(validation_split or 0.0))
        if resume_from is None and self._resumed:  # loaded before fit(): its RNG states stand
            self._restore_callbacks(self._callback_states or [])
        # on_train_begin resets each callback for a new run; a resumed run gets its saved
        # states back after that (they were checked, all or none, just above), and so does
        # a fit() continuing one that was interrupted (see the docstring)
        restored = self._callback_states if self._resumed else self._continue_states
        self._callback_states = self._continue_states = None
        partial, self._partial_in = (self._partial_in if self._resumed else None), None
        if partial is not None:  # once, before the epoch resumes: not in the batch loop
            self._check_partial(partial, edges, loader, (X, y))
        self._log_keys = self._expected_logs(validation_data is not None)
        self._loader = loader
        if loader is not None and self._loader_state is not None:
            loader.load_state_dict(self._loader_state)  # where the checkpointed run was
        self._loader_state = None
        first = self._epochs_done
        last = (first if self._resumed_stopped else epochs) if self._resumed else first + epochs
        # saved from the on_batch_end that stopped the run: that part-epoch ends now, as it
        # did in the checkpointed run (validated, recorded, on_epoch_end), with no more batches
        closing = self._resumed_stopped and partial is not None
        if closing:
            last = first + 1
        if self._resumed and first >= last:  # say so rather than train nothing silently
            why = ("it stopped early; call fit() again to train more" if self._resumed_stopped
                   else f"epochs={epochs} counts from the run's start: pass a larger epochs")
            warnings.warn(f"the checkpointed run already finished with {first} epochs done, so "
                          f"this fit() trains none ({why})", UserWarning, stacklevel=2)
        self._resumed = self._resumed_stopped = False
        n = len(X) if loader is None else len(loader.dataset)
        batches = len(edges) - 1 if loader is None else len(loader)
        display = ProgressDisplay(self.verbose if verbose is None else verbose, last, batches)
        self.stop_training = closing
        outer = self._enter_own_rng()
        self._fitting = True
        try:
            self._run_epochs(first, last, X, (y, weights),
                             (batch_size, edges), shuffle, loader, validation_data, display, n,
                             (restored, partial))
        finally:  # an interrupted fit() must not leave a live progress bar drawing
            self._fitting = False
            self._leave_own_rng(outer)
            display.close()
        return self.history

    def _check_partial(self, partial: dict[str, Any], edges: list[int],
                       loader: DataLoader | None, data: tuple[Any, Any]) -> None:
        """Refuse (StateDictError) a mid-epoch checkpoint's part of an epoch that this fit()'s
        batches and model could not have produced: counts off the batch edges, a negative
        loss sum, or outputs and targets unlike the ones this epoch adds to them."""
        if partial["kind"] != ("arrays" if loader is None else "loader"):
            return  # _epoch refuses it, naming both kinds
        if loader is not None:  # the loader's batches: batch_size rows each, the rest last
            rows, size = len(loader.dataset), loader.batch_size
            edges = [min(i * size, rows) for i in range(len(loader) + 1)]
        seen = _partial_seen(partial, edges)
        if loader is not None:  # once its batch count is known to fit the epoch
            _loader_agrees(self._loader_state, partial["batches"], len(loader))
        _partial_total(partial, seen, self.loss)
        if partial.get("outputs") is None:
            return
        out, truth = self._probe(data, loader)
        if out is None:  # no sample to probe: the first batch reports the problem
            return
        _partial_array(partial, "outputs", out, seen)
        _partial_array(partial, "targets", truth, seen)
        _partial_target_values(partial["targets"], self.loss, out)

    def _probe(self, data: tuple[Any, Any], loader: DataLoader | None
               ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """The model's output (eval mode, no gradients: no state or RNG changes) and the
        target for the training data's first row, as an epoch's batches would hold them."""
        X, y = data
        if loader is not None:
            batch = loader._gather(slice(0, 1)) if len(loader.dataset) else None
            if not isinstance(batch, tuple) or len(batch) != 2:
                return None, None
            X = _as_features(batch[0], self.model.dtype, "batch 1 x")
            y = self._as_targets(batch[1], len(X))
        return self._forward(X[:1], 1), y[:1]

    def _start_run(self, data: dict[str, Any], batching: dict[str, Any] | None,
                   validation_split: float) -> None:
        """Record this fit()'s settings (kept in checkpoints); resuming, first check them
        against the checkpointed run's (see _check_resume)."""
        model = self.model
        run = _jsonable({"data": data, "batching": batching, "validation_split": validation_split,
                         "loss": _loss_config(self.loss), "architecture": _architecture(model),
                         "dtype": str(model.dtype),
                         "frozen": sorted(k for k, p in model.named_parameters()
                                          if not p.requires_grad)})
        if self._resumed:
            self._check_resume(run)
            saved = self._saved_run or {}
            run["optimizer"] = saved.get("optimizer", self._fresh_optimizer)
        elif self._run is not None and self._epochs_done:  # a later fit() of the same run
            run["optimizer"] = self._run.get("optimizer")
        else:  # a new run: its optimizer settings as given (before any epoch)
            run["optimizer"] = _jsonable(_optimizer_config(self.optimizer))
        self._run = run

    def _check_resume(self, run: dict[str, Any]) -> None:
        """Refuse (ConfigError) a resumed fit() whose data, batching, validation_split, loss,
        architecture, dtype or frozen layers differ from the checkpointed run's: it would not
        continue that run. Optimizer hyperparameters that differ only warn: the checkpoint's
        are used (set them after load_checkpoint() to change them deliberately)."""
        saved = self._saved_run
        if saved is None:  # a checkpoint from before runs were recorded
            return
        diffs = _run_differences(saved, run)
        if diffs:
            raise ConfigError("expected fit() to resume the checkpointed run with its settings; "
                              "found " + "; ".join(diffs) + " (start a new run, e.g. load "
                              "only the weights with model.load_state_dict, to change them)")
        old, new = saved.get("optimizer"), _jsonable(self._fresh_optimizer)
        if old is not None and new is not None and old != new:
            warnings.warn(f"the optimizer given has settings {new}, the checkpointed run's "
                          f"were {old}: resuming continues with the checkpoint's (and its "
                          f"schedule's current lr); set trainer.optimizer.lr (etc.) after "
                          f"load_checkpoint() to change them", UserWarning, stacklevel=4)

    def _expected_logs(self, validated: bool) -> tuple[set[str], bool, bool]:
        """The keys each epoch's logs will hold, whether validation runs, and whether a
        callback from outside nnforge may add keys of its own (ModelCheckpoint's check)."""
        keys = {"loss", "time", "lr", *self.metric_names}
        if validated:
            keys |= {"val_loss", *(f"val_{m}" for m in self.metric_names)}
        open_ended = any(type(cb).__module__ != callbacks_module.__name__
                         for cb in self.callbacks)
        return keys, validated, open_ended

    def _expected_log_keys(self) -> tuple[set[str], bool, bool]:
        """_expected_logs() of the fit() starting (read by ModelCheckpoint.on_train_begin)."""
        return self._log_keys

    def _enter_own_rng(self) -> dict[str, Any] | None:
        """Swap a seeded trainer's own state into the global generator (dropout draws follow
        the seed, and a later fit() continues them); the outer state, for _leave_own_rng.
        Unseeded: None, and training draws from the global stream as it stands."""
        if self.seed is None:
            return None
        outer = nf_random.get_rng_state()
        nf_random.set_rng_state(self._own_rng_state())
        self._in_fit = True
        return outer

    def _leave_own_rng(self, outer: dict[str, Any] | None) -> None:
        """Keep the trainer's state and give the global generator back as fit() found it, so
        models built after a seeded fit() still get fresh initial weights."""
        if outer is None:
            return
        self._own_rng = nf_random.get_rng_state()
        self._in_fit = False
        nf_random.set_rng_state(outer)

    def _own_rng_state(self) -> dict[str, Any]:
        """The dropout stream's state: the global generator's while it is in use (unseeded,
        or inside a seeded fit()), else the seeded trainer's own."""
        if self.seed is None or self._in_fit:
            return nf_random.get_rng_state()
        if self._own_rng is None:
            return np.random.default_rng(self.seed).bit_generator.state
        return self._own_rng

    def _set_own_rng_state(self, state: dict[str, Any]) -> None:
        """Restore _own_rng_state() to where it was."""
        if self.seed is None or self._in_fit:
            nf_random.set_rng_state(state)
        else:
            self._own_rng = state

    def _run_epochs(self, first: int, last: int, X: Any, y: Any,
                    batching: tuple[int, list[int]],
                    shuffle: bool, loader: DataLoader | None, validation_data: Any,
                    display: ProgressDisplay, n: int,
                    resume: tuple[list[dict[str, Any]] | None, dict[str, Any] | None]) -> None:
        """The epochs first..last-1; resume is the callback states to restore after
        on_train_begin and a mid-epoch checkpoint's part of the first epoch (or None)."""
        restored, partial = resume
        for cb in self.callbacks:
            cb.on_train_begin()
        if restored is not None:
            self._restore_callbacks(restored)
        for epoch in range(first, last):
            start = self._snapshot()
            try:
                logs = self._epoch(epoch, X, y, batching, shuffle, loader, validation_data,
                                   display, partial)
                display.epoch_end(epoch, {k: v for k, v in logs.items()
                                          if k not in ("time", "lr")}, n)
                self._end_epoch(epoch, logs)
            except BaseException:
                # an epoch cut short (Ctrl-C, an error, in training or in on_epoch_end) is
                # undone whole: the history only has whole epochs, and continuing or
                # checkpointing must start from where they end
                self._rollback(start)
                self._continue_states = start[2]["callbacks"]
                raise
            partial = None
            if self.stop_training:
                break
        for cb in self.callbacks:
            cb.on_train_end()

    def _end_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        """Every callback's on_epoch_end, then the checkpoints they asked for (best-only ones
        first): each file holds every callback's end-of-epoch state, and a best value is
        taken only once its file is written."""
        self._defer_checkpoints = True
        try:
            for cb in self.callbacks:
                cb.on_epoch_end(epoch, logs)
        finally:
            self._defer_checkpoints = False
        writers = [cb for cb in self.callbacks if isinstance(cb, ModelCheckpoint)]
        for cb in sorted(writers, key=lambda cb: not cb.save_best_only):
            cb.write_pending()

    def _epoch(self, epoch: int, X: Any, y: Any, batching: tuple[int, list[int]],
               shuffle: bool, loader: DataLoader | None, validation_data: Any,
               display: ProgressDisplay, partial: dict[str, Any] | None = None
               ) -> dict[str, float]:
        """Train and validate one epoch and record it; its logs. y is the targets and their
        sample weights (or None); batching is fit()'s batch_size and the array batches' edges
        (_batch_edges); partial, a mid-epoch checkpoint's part of this epoch (its
        on_epoch_begin ran before that checkpoint was saved, and is not repeated)."""
        batch_size, edges = batching
        if partial is None:
            for cb in self.callbacks:
                cb.on_epoch_begin(epoch)
        display.epoch_begin(epoch)
        # the rate at the epoch's start: a per-step schedule has moved on by its end
        lr = float(getattr(self.optimizer, "lr", float("nan"))) if partial is None \
            else float(partial["lr"])
        progress = _EpochProgress("arrays" if loader is None else "loader", lr, partial)
        if partial is not None and partial["kind"] != progress.kind:
            raise ConfigError(f"the checkpoint was saved mid-epoch while training on "
                              f"{partial['kind']}; expected fit() to resume on them, found "
                              f"{progress.kind}")
        t0 = time.perf_counter()
        self._progress = progress
        try:
            if partial is not None and self.stop_training:  # see fit(): a stopped part-epoch
                batches: Iterator[Any] = iter(())
                self._end_epoch_early()
            else:
                batches = self._resumed_loader_batches(loader, partial) if loader is not None \
                    else self._array_batches(X, *y, edges, shuffle, partial)
            with SERIAL_BLAS.serial(self._own_threads()), \
                    backend.device_scope(backend.device_of(self.model)):
                logs = self._train_epoch(batches, display)
        finally:  # checkpoints from now on are of whole epochs
            self._progress = None
            self._pending_batch_saves.clear()  # none may leak into a later step or fit()
        logs["time"] = time.perf_counter() - t0
        if validation_data is not None:
            val = (self.evaluate(validation_data) if isinstance(validation_data, DataLoader)
                   else self.evaluate(*validation_data[:2], batch_size=max(batch_size, 256),
                                      sample_weight=validation_data[2]
                                      if len(validation_data) == 3 else None))
            logs.update({f"val_{k}": v for k, v in val.items()})
        logs["lr"] = lr
        self._record(logs)
        self._epochs_done = epoch + 1
        return logs

    def _snapshot(self) -> tuple[Any, Any, dict[str, Any]]:
        """Copies of everything an epoch changes (taken once per epoch, outside its timing)."""
        opt = self.optimizer.state_dict() if hasattr(self.optimizer, "state_dict") else None
        state = self.state_dict()
        state["history"] = {k: list(v) for k, v in self.history.items()}
        return self.model.state_dict(), opt, state

    def _rollback(self, snapshot: tuple[Any, Any, dict[str, Any]]) -> None:
        """Put model, optimizer, callbacks, history, RNGs, step and loader back to a
        _snapshot()."""
        weights, opt, state = snapshot
        self.model.load_state_dict(weights)
        for cb, saved in zip(self.callbacks, state["callbacks"]):
            cb.load_state_dict(saved["state"])
        if opt is not None:  # after the schedules: the optimizer's saved lrs are the truth
            self.optimizer.load_state_dict(opt)
        for k in [k for k in self.history if k not in state["history"]]:
            del self.history[k]
        for k, values in state["history"].items():  # in place: fit() returned this object
            self.history[k] = values
        self._epochs_done = state["epochs_done"]
        self._step, self.stop_training = state["step"], state["stop_training"]
        self._shuffle_rng.bit_generator.state = state["shuffle_rng"]
        self._set_own_rng_state(state["global_rng"])
        if self._loader is not None and state["loader"] is not None:
            self._loader.load_state_dict(state["loader"])

    def _record(self, logs: dict[str, float]) -> None:
        """Append an epoch's logs to the history, NaN-padded so every list stays epoch-aligned.

        A metric or validation set added (or dropped) between fit() calls or on resume would
        otherwise leave lists of different lengths, their rows no longer matching epochs.
        """
        rows = max((len(v) for v in self.history.values()), default=0)
        for k, v in logs.items():
            self.history.setdefault(k, [math.nan] * rows).append(float(v))
        for k, values in self.history.items():
            if k not in logs:
                values.append(math.nan)

    def _train_epoch(self, batches: Iterator[tuple[np.ndarray, np.ndarray, Any]],
                     display: ProgressDisplay) -> dict[str, float]:
        model, opt, loss_fn = self.model, self.optimizer, self.loss
        model.train()
        keep_outputs = bool(self.metrics)
        # on the trainer (not locals), so a checkpoint saved mid-epoch holds them
        acc = self._progress
        outputs, targets, skip = acc.outputs, acc.targets, acc.batches
        device = backend.device_of(model)
        for b, (xb, yb, wb) in enumerate(batches, skip):
            for cb in self.callbacks:
                cb.on_batch_begin(self._step)
            opt.zero_grad()
            xin, yin = (xb, yb) if device == "cpu" else (backend.to_device(xb, device),
                                                         backend.to_device(yb, device))
            out = model(Tensor(xin, _keep=True))
            # without weights, the loss exactly as before (same op, same reduction)
            loss = loss_fn(out, yin) if wb is None else loss_fn.weighted(out, yin, wb)
            value = float(loss.data)
            if not math.isfinite(value):  # before the step, so the weights stay as they were
                raise DataError(f"the loss became {value} at epoch {self._epochs_done + 1}, "
                                f"batch {b + 1}: lower the learning rate or check the data")
            loss.backward()
            self._clip()
            opt.step()
            if b == skip:  # once per epoch: this input shape has now been through the model
                _record_input_shape(model, xb)
            acc.total += value * len(xb)
            acc.seen += len(xb)
            acc.batches = b + 1
            if keep_outputs:
                outputs.append(out.data)  # on the model's device until the epoch ends
                targets.append(yb)
            # counted before on_batch_end: a checkpoint saved there has this step done
            step = self._step
            self._step = step + 1
            self._batch_end_running = True
            try:
                for cb in self.callbacks:
                    cb.on_batch_end(step, value)
            except BaseException as exc:  # saves asked for before it are written, as before
                self._batch_end_running = False
                self._write_batch_saves(step, exc)
                raise
            self._batch_end_running = False
            if self._pending_batch_saves:  # the one check a step pays for deferred saves
                self._write_batch_saves(step)
            display.batch_end(b, acc.total / acc.seen, acc.seen)
            if self.stop_training:  # a callback's deliberate stop: after this batch, as Keras
                self._end_epoch_early()
                break
        if not acc.seen:  # a loss of 0 for an epoch that never trained would look like success
            raise DataError("the training DataLoader yielded no batches (drop_last=True with "
                            "fewer samples than batch_size?)")
        logs = {"loss": acc.total / acc.seen}
        out, truth = acc.collected() if keep_outputs else (None, None)
        if out is not None:
            logs.update(self._metrics(out, truth))
        return logs

    def _end_epoch_early(self) -> None:
        """Close the loader's epoch a callback stopped part-way, so that a later fit() and a
        run resumed from a checkpoint saved now both start the loader's next epoch."""
        if self._loader is not None:
            self._loader.end_epoch()

    def _array_batches(self, X: np.ndarray, y: np.ndarray, w: np.ndarray | None,
                       edges: list[int], shuffle: bool, partial: dict[str, Any] | None = None
                       ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """(x, y, sample weights or None) batches of arrays between the edges, in an order
        drawn from the trainer's generator (a permutation of every row, so drop_last leaves
        out other rows each epoch); the weights follow their rows. After a mid-epoch
        checkpoint (partial), the same order again, less the batches it had trained."""
        n, skip = len(X), 0
        if partial is not None:
            skip = int(partial["batches"])
            if shuffle and partial.get("order_rng") is not None:
                self._set_shuffle_state(partial["order_rng"])
        if shuffle:  # where the order is drawn from, for a checkpoint saved mid-epoch
            self._progress.order_rng = self._shuffle_rng.bit_generator.state
        order = self._shuffle_rng.permutation(n) if shuffle else np.arange(n)
        for start, stop in zip(edges[skip:-1], edges[skip + 1:]):
            idx = order[start:stop]
            yield X.take(idx, axis=0), y.take(idx, axis=0), None if w is None else w.take(idx)

    def _set_shuffle_state(self, state: Any) -> None:
        """Put the shuffle generator at a saved state (StateDictError for a damaged one)."""
        try:
            self._shuffle_rng.bit_generator.state = state
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise StateDictError(f"expected a trainer state as Trainer.state_dict() gives: "
                                 f"'partial' has a bad 'order_rng' ({exc})") from None

    def _resumed_loader_batches(self, loader: DataLoader, partial: dict[str, Any] | None
                                ) -> Iterator[tuple[np.ndarray, np.ndarray, None]]:
        """The loader's (x, y, no weights) batches; none when a mid-epoch checkpoint was
        saved after the epoch's last batch: its epoch is closed instead (a checkpoint written
        before the loader's state was saved as of the part-epoch already says it is over)."""
        if partial is not None and partial["batches"] >= len(loader):
            loader.end_epoch()
            return iter(())
        return ((xb, yb, None) for xb, yb in self._loader_batches(loader))

    def _loader_batches(self, loader: DataLoader) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """A DataLoader's batches, checked and converted like fit()'s arrays."""
        for b, batch in enumerate(loader):
            if not isinstance(batch, tuple) or len(batch) != 2:
                raise DataError(f"expected the DataLoader to yield (x, y) batches, found batch "
                                f"{b + 1} with {len(batch) if isinstance(batch, tuple) else 1} "
                                f"part(s)")
            xb = _as_features(batch[0], self.model.dtype, f"batch {b + 1} x")
            yb = self._as_targets(batch[1], len(xb))
            if b == 0:  # before the first step, not when the epoch's metrics are taken
                self._check_targets(yb)
            yield xb, yb

    def _own_threads(self) -> bool:
        """Whether the model has layers that split their work over nnforge's own threads.

        BLAS then runs on one thread while they train: OpenBLAS's workers, spinning after each
        threaded product, would otherwise take the cores the convolutions' threads need.
        """
        return conv_ops.THREADS > 1 and any(getattr(m, "own_threads", False)
                                            for m in self.model.modules())

    def _clip(self) -> None:
        if self.grad_clip_norm is None and self.grad_clip_value is None:
            return
        from ..optim import clip_grad_norm_, clip_grad_value_  # noqa: PLC0415

        params = self.model.parameters()
        if self.grad_clip_value is not None:
            clip_grad_value_(params, self.grad_clip_value)
        if self.grad_clip_norm is not None:
            clip_grad_norm_(params, self.grad_clip_norm)

    # -- evaluation ------------------------------------------------------------------------
    def evaluate(self, X: Any, y: Any = None, batch_size: int = 256,
                 sample_weight: Any = None) -> dict[str, float]:
        """Loss and metrics on (X, y), or on a DataLoader's (x, y) batches, in eval mode,
        without gradients; sample_weight weighs the loss as in fit() (not the metrics)."""
        loader = _loader_arg(X, y, "evaluate()")
        if loader is not None and sample_weight is not None:
            raise ConfigError("sample_weight needs arrays X and y; a DataLoader yields (x, y) "
                              "batches without weights")
        if loader is not None:
            parts = [(self._forward(xb, len(xb)), yb) for xb, yb in self._loader_batches(loader)]
            if not parts:
                raise DataError("the DataLoader yielded no batches to evaluate")
            out, y = np.concatenate([o for o, _ in parts]), np.concatenate([t for _, t in parts])
        else:
            X = _as_features(X, self.model.dtype)
            y = self._as_targets(y, len(X))
            if len(X) == 0:
                raise DataError("evaluate() needs at least one sample, found none")
            self._check_targets(y)
            sample_weight = sample_weight_arg(sample_weight, len(X))
            out = self._forward(X, batch_size)
        with no_grad():
            loss = self.loss(Tensor(out, _keep=True), y) if sample_weight is None \
                else self.loss.weighted(Tensor(out, _keep=True), y, sample_weight)
        return {"loss": float(loss.data), **self._metrics(out, y)}

    def predict(self, X: Any, batch_size: int = 256) -> np.ndarray:
        """Class indices for classification losses, raw outputs for regression.

        X is an array of samples, one 1-D sample of the model's input width (one row, as
        InferenceSession.predict takes it), or an unshuffled DataLoader (its x batches, in
        order; any y in them is ignored).
        """
        return self._to_predictions(self._forward(self._predict_features(X), batch_size))

    def predict_proba(self, X: Any, batch_size: int = 256) -> np.ndarray:
        """Class probabilities (multiclass) or positive-class probabilities (binary); X as
        for predict()."""
        if self.loss.kind == "regression":
            raise ConfigError("predict_proba needs a classification loss; this model regresses")
        return self._to_scores(self._forward(self._predict_features(X), batch_size))

    def _predict_features(self, X: Any) -> np.ndarray:
        """predict()'s X as one array of samples."""
        dtype = self.model.dtype
        if isinstance(X, DataLoader):
            if X.shuffle:  # the predictions could not be matched back to the rows
                raise ConfigError("predict() with a shuffling DataLoader would return the "
                                  "predictions in a random order: pass one made with "
                                  "shuffle=False")
            if X.drop_last and len(X.dataset) % X.batch_size:  # rows would go missing
                raise ConfigError(f"predict() with a drop_last DataLoader would leave out the "
                                  f"last {len(X.dataset) % X.batch_size} rows: pass one made "
                                  f"with drop_last=False")
            parts = [_as_features(b[0] if isinstance(b, tuple) else b, dtype, f"batch {i + 1} x")
                     for i, b in enumerate(X)]
            if not parts:
                raise DataError("the DataLoader yielded no batches to predict")
            return np.concatenate(parts)
        shape = getattr(X, "shape", None)
        if shape is None and isinstance(X, (list, tuple)):
            try:
                shape = np.shape(X)
            except ValueError:  # ragged: _as_features names it
                shape = None
        if shape is not None and len(shape) == 1 and shape[0] == _input_width(self.model):
            X = (backend.to_numpy(X) if backend.is_device_array(X) else np.asarray(X))[None]
        return _as_features(X, dtype)

    def _forward(self, X: np.ndarray, batch_size: int) -> np.ndarray:
        was_training = self.model.training
        self.model.eval()
        device = backend.device_of(self.model)
        try:
            with no_grad(), SERIAL_BLAS.serial(self._own_threads()), \
                    backend.device_scope(device):
                # no samples still runs one (empty) pass: the output keeps its class axis
                parts = [backend.to_numpy(self.model(Tensor(
                    X[i:i + batch_size] if device == "cpu" else
                    backend.to_device(X[i:i + batch_size], device), _keep=True)).data)
                    for i in range(0, max(len(X), 1), batch_size)]
        finally:
            self.model.train(was_training)
        return np.concatenate(parts)

    def _to_scores(self, out: np.ndarray) -> np.ndarray:
        if self.loss.kind == "multiclass":
            return softmax_array(out.astype(np.float64), axis=-1)
        probs = sigmoid_array(out.astype(np.float64)) if self.loss.from_logits else out
        return probs.reshape(len(probs)) if probs.ndim == 2 and probs.shape[1] == 1 else probs

    def _to_predictions(self, out: np.ndarray) -> np.ndarray:
        if self.loss.kind == "multiclass":
            return out.argmax(axis=-1)
        if self.loss.kind == "binary":
            return (self._to_scores(out) >= 0.5).astype(np.int64)
        return out.reshape(len(out)) if out.ndim == 2 and out.shape[1] == 1 else out

    def _metrics(self, out: np.ndarray, y: np.ndarray) -> dict[str, float]:
        if not self.metrics:
            return {}
        preds = scores = None
        truth = y.reshape(len(y)) if y.ndim == 2 and y.shape[1] == 1 else y
        results = {}
        for name, metric in zip(self.metric_names, self.metrics):
            if metric.kind == "score":
                scores = self._to_scores(out) if scores is None else scores
                given = scores
            else:
                preds = self._to_predictions(out) if preds is None else preds
                given = preds
            try:
                results[name] = float(metric.fn(truth, given))
            except (ShapeError, DataError) as exc:
                # in the user's terms: their targets y against the model's predictions
                raise type(exc)(f"metric {name!r} cannot score targets y of shape {y.shape} "
                                f"against the model's predictions of shape {given.shape}: "
                                f"{exc}") from None
        return results

    # -- data helpers ----------------------------------------------------------------------
    def _check_targets(self, y: np.ndarray) -> None:
        """Refuse, before any training, a metric that cannot score these targets."""
        truth = y.reshape(len(y)) if y.ndim == 2 and y.shape[1] == 1 else y
        for metric in self.metrics:
            _check_metric_fits_targets(metric, self.loss, truth)

    def _as_targets(self, y: Any, n: int) -> np.ndarray:
        arr = backend.to_numpy(y) if backend.is_device_array(y) else np.asarray(y)
        if len(arr) != n:
            raise ShapeError(f"X has {n} samples but y has {len(arr)}")
        if arr.dtype.kind == "O":  # e.g. a pandas object column of numbers
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError):
                pass
        if arr.dtype.kind not in "biuf":
            sample = arr.reshape(-1)[0] if arr.size else None
            sample = sample.item() if isinstance(sample, np.generic) else sample
            hint = ("; turn class names into indices first, e.g. "
                    "classes, y = np.unique(y, return_inverse=True)"
                    if self.loss.kind in ("multiclass", "binary") else "")
            raise DataError(f"y must hold numbers, found {arr.dtype} values such as "
                            f"{sample!r:.40}{hint}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise DataError("y contains NaN, infinite or missing values")
        if self.loss.kind == "multiclass" and arr.ndim == 2 and arr.shape[1] == 1:
            # a column of class labels (as Keras's sparse cross-entropy takes): read as (n,),
            # not as one probability per class of a 1-class model
            if arr.dtype.kind == "f" and np.any(np.mod(arr, 1)):
                raise DataError(f"class labels must be 1-D (n,), found {arr.shape} with "
                                f"fractional values; cross-entropy probability targets have "
                                f"one column per class")
            arr = arr.reshape(len(arr))
        if self.loss.kind == "multiclass" and arr.ndim == 1:
            if arr.dtype.kind == "f" and np.any(np.mod(arr, 1)):
                raise DataError("cross-entropy needs integer class labels, found fractional values")
            return arr.astype(np.int64)
        return np.ascontiguousarray(arr, dtype=self.model.dtype)

    def _split(self, X: np.ndarray, y: np.ndarray, fraction: float,
               shuffle: bool) -> tuple[Any, Any, Any]:
        """X and y's training rows, and their held-out (X, y) (see _split_rows)."""
        train, val = self._split_rows(len(X), fraction, shuffle)
        return X[train], y[train], (X[val], y[val])

    def _split_rows(self, n: int, fraction: float, shuffle: bool) -> tuple[Any, Any]:
        """Hold out validation rows: the last ones with shuffle=False (as Keras does, so an
        ordered series validates on its latest rows), else rows drawn from the split seed."""
        if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) \
                or not 0.0 < fraction < 1.0:
            raise ConfigError(f"validation_split must be a number in (0, 1), found {fraction!r}")
        n_val = max(1, int(round(n * fraction)))
        if n_val >= n:
            raise DataError(f"validation_split={fraction} of {n} samples leaves none to "
                            f"train on: use more data or a smaller split")
        if not shuffle:  # the training and validation rows, as slices or sorted indices
            cut = n - n_val
            return slice(None, cut), slice(cut, None)
        # drawn at random: rows sorted by class would otherwise validate on one class only;
        # one seed per trainer, so a second fit() or a resumed run holds out the same rows
        order = np.random.default_rng([self._split_seed, 7]).permutation(n)
        return np.sort(order[n_val:]), np.sort(order[:n_val])

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Trainer position: epoch, step, RNG states, history, callbacks (JSON-serialisable but
        for callbacks' NumPy arrays, e.g. EarlyStopping's best weights)."""
        return {"epochs_done": self._epochs_done, "step": self._step,
                "stop_training": self.stop_training,
                "shuffle_rng": self._shuffle_rng.bit_generator.state,
                "global_rng": self._own_rng_state(), "history": self.history,
                "callbacks": [{"type": type(cb).__name__, "key": cb.state_key(),
                               "state": cb.state_dict()} for cb in self.callbacks],
                "loader": self._loader_position(),
                "split_seed": self._split_seed, "seed": self.seed, "run": self._run,
                # saved mid-epoch (from on_batch_end): that epoch's part so far
                "partial": None if self._progress is None else self._progress.state()}

    def _loader_position(self) -> dict[str, Any] | None:
        """The training loader's state to save. Mid-epoch, as of the end of the last batch
        trained, as the part-epoch counts it: the loader has already handed out the batch a
        callback's on_batch_begin sees, and it counts its last batch's hand-out as the end of
        its epoch; saved as it stands, a resumed run would drop a batch or train an epoch
        twice."""
        loader, progress = self._loader, self._progress
        if loader is None:
            return None
        if progress is None or progress.kind != "loader":
            return loader.state_dict()
        return loader.state_within_epoch(progress.batches)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore state_dict()'s output (a StateDictError, and nothing changed, if it is not)."""
        parsed = check_trainer_state(state, self._shuffle_rng, nf_random.get_rng())
        seed = _saved_seed(state)
        # match saved callback states to this run's callbacks by their state_key(), so a
        # resumed run may drop or add callbacks (e.g. no ModelCheckpoint) without losing
        # scheduler state; first, since a callback may still refuse its state
        self._restore_callbacks(parsed["callbacks"])
        self._saved_run, self._partial_in = parsed["run"], parsed["partial"]
        self._continue_states = None
        self._epochs_done, self._step = parsed["epochs_done"], parsed["step"]
        self.history = History(parsed["history"])
        self._resumed, self._resumed_stopped = True, parsed["stop_training"]
        self._loader_state = parsed["loader"]  # applied to the loader the next fit() gets
        self._shuffle_rng.bit_generator.state = parsed["shuffle_rng"]
        if parsed["split_seed"] is not None:  # older checkpoints lack it
            self._split_seed = parsed["split_seed"]
        if "seed" in state:  # older checkpoints lack it: this trainer's seed stays
            self.seed = seed
        # seeded: the trainer's own dropout stream (the global one stays as it is); unseeded:
        # the global stream, as the checkpointed run drew from it
        self._set_own_rng_state(parsed["global_rng"])
        self._callback_states = parsed["callbacks"]

    def _restore_callbacks(self, saved: list[dict[str, Any]]) -> None:
        """Give saved callback states to this run's callbacks (_match_callback_states); all
        or none. The optimizer's lrs stay as they are: they come from its own state, which
        holds every schedule's changes (a schedule's own record may be stale)."""
        pairs = _match_callback_states(self.callbacks, saved)
        before = [(cb, cb.state_dict()) for cb in self.callbacks]
        lrs = groups_lib.scheduled_lrs(self.optimizer) \
            if isinstance(self.optimizer, Optimizer) else None
        name = ""
        try:
            for cb, state in pairs:
                name = type(cb).__name__
                cb.load_state_dict(state)
            if lrs is not None:
                groups_lib.set_scheduled_lrs(self.optimizer, lrs)
        except (StateDictError, KeyError, IndexError, TypeError, ValueError,
                AttributeError) as exc:
            for cb, old in before:
                cb.load_state_dict(old)
            if isinstance(exc, StateDictError):
                raise
            raise StateDictError(f"expected a trainer state as Trainer.state_dict() gives: "
                                 f"callback {name} refused its saved state "
                                 f"({type(exc).__name__}: {exc})") from None

    def save_checkpoint(self, path: str, **save_kwargs: Any) -> None:
        """Write a resumable checkpoint (a valid .nnf with optimizer and trainer state).

        Called from a callback's on_batch_end during fit(), the file is written once every
        callback's on_batch_end for that step has run (before the trainer goes on to its next
        step), so it holds the whole step: a per-step LRScheduler's step is in it whether it
        comes before or after the saving callback. A write that fails then raises from fit()
        (a ModelFileError naming the step), and the epoch is undone as for any error in
        on_batch_end. If a callback's on_batch_end raises (Ctrl-C) after the save was asked
        for, the file is still written, with the state as of that error, before the error
        leaves fit() (a write that fails then is noted on that error). Anywhere else (between
        fits, on_batch_begin, on_epoch_end, after fit()) the file is written before this
        returns.
        """
        if getattr(self, "_batch_end_running", False):
            self._pending_batch_saves.append((path, save_kwargs))
            return
        self._write_checkpoint(path, save_kwargs)

    def _write_checkpoint(self, path: str, save_kwargs: dict[str, Any]) -> None:
        from ..io import save_checkpoint  # noqa: PLC0415

        save_checkpoint(path, self.model, optimizer=self.optimizer,
                        trainer_state=self.state_dict(), **save_kwargs)

    def _write_batch_saves(self, step: int, error: BaseException | None = None) -> None:
        """Write the checkpoints asked for during step's on_batch_end calls, in order; the
        queue is emptied first, so a failed write leaves none behind for a later step. With
        the error a callback raised, a failed write is noted on it rather than hiding it."""
        pending, self._pending_batch_saves = self._pending_batch_saves, []
        for path, save_kwargs in pending:
            try:
                self._write_checkpoint(path, save_kwargs)
            except Exception as exc:
                # the write ran after the callback that asked for it returned: say which
                where = f"save_checkpoint({path!r}) from on_batch_end of step {step}"
                if error is not None:
                    error.add_note(f"{where} was not written: {type(exc).__name__}: {exc}")
                    continue
                if not isinstance(exc, ModelFileError):  # e.g. bad save_kwargs: as raised
                    exc.add_note(f"(from {where})")
                    raise
                raise ModelFileError(f"{exc} ({where}, written once that step's callbacks "
                                     f"ran)") from None

    def load_checkpoint(self, path: str) -> None:
        """Restore model weights, optimizer and trainer state from a checkpoint."""
        from ..io import load_checkpoint  # noqa: PLC0415

        ckpt = load_checkpoint(path)
        if ckpt.trainer_state is not None:  # refused before anything changes
            check_trainer_state(ckpt.trainer_state, self._shuffle_rng, nf_random.get_rng())
        # the optimizer as given, to compare with the checkpointed run's (fit() warns)
        self._fresh_optimizer = _optimizer_config(self.optimizer)
        before = self._snapshot()
        try:
            self.model.load_state_dict(ckpt.model.state_dict())
            if ckpt.optimizer_state is not None:
                self.optimizer.load_state_dict(ckpt.optimizer_state)
            if ckpt.trainer_state is not None:
                self.load_state_dict(ckpt.trainer_state)
        except BaseException:  # e.g. an optimizer of another kind: the weights go back too
            self._rollback(before)
            raise


def _saved_seed(state: dict[str, Any]) -> int | None:
    """The trainer seed a state holds (None: unseeded, or a checkpoint from before seeds were
    saved), or a StateDictError."""
    seed = state.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                             or not 0 <= seed < 2**64):
        raise StateDictError(f"expected a trainer state as Trainer.state_dict() gives: 'seed' "
                             f"must be an integer in [0, 2**64) or null, found {seed!r:.40}")
    return None if seed is None else int(seed)
