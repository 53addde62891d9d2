"""`nnforge train`: data -> split -> standardize -> model -> fit -> test metrics -> .nnf file."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NNForgeError
from .common import (
    UsageError,
    check_output_dir,
    check_output_path,
    column_ref,
    fraction,
    int_list,
    new_command,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    require_matplotlib,
    seed_int,
    stdout_may_close,
)
from .config import (
    ACTIVATIONS,
    DEFAULTS,
    FILL_MISSING,
    MODEL_CHOICES,
    OPTIMIZERS,
    TASK_CHOICES,
    load_architecture,
    loss_name,
    resolve_settings,
)
from .dataio import DATA_HELP, DATASETS, LABELS_HELP, data_name

EXAMPLES = """\
  nnforge train --dataset digits -o models/digits/1/model.nnf
  nnforge train --dataset digits --model cnn --epochs 15 --report reports/digits
  nnforge train --dataset diabetes --hidden 64 --lr 3e-3 --epochs 100 --early-stopping 10
  nnforge train --data houses.csv --label-column price --task regression
  nnforge train --data survey.csv --fill-missing median    # empty cells: the column's median
  nnforge train --data train-images-idx3-ubyte.gz --labels train-labels-idx1-ubyte.gz \\
      --model cnn                                       # IDX images (N, H, W), as MNIST's
  nnforge train --config train.yaml --epochs 5        # flags override the config file
  nnforge train --dataset digits --checkpoint ck.nnf  # after Ctrl-C, rerun it + --resume ck.nnf

config file (YAML, which needs PyYAML, or JSON; the same names as the flags, with _ or -;
paths in it are relative to the current directory):
  dataset: digits             # or  data: file.csv  and  label_column: target
                              # or  data: x.idx.gz  and  labels: y.idx.gz
  hidden: [128, 64]
  activation: relu
  dropout: 0.1
  optimizer: {name: adam, lr: 0.001, weight_decay: 0.0001}
  epochs: 30
  batch_size: 32
  early_stopping: 5
  output: models/digits/1/model.nnf
  # or a full model instead of model/hidden/activation/dropout (Module.to_architecture()
  # output); those flags replace a config file's architecture, and --architecture its presets:
  # architecture: {type: Sequential, config: {layers: [...]}}"""


def _default(key: str) -> str:
    value = DEFAULTS[key]
    if isinstance(value, list):
        value = ",".join(map(str, value))
    return f"(default: {value})"


def add_parser(sub: Any) -> None:
    """Register `train`."""
    p = new_command(sub, "train", "train a model and save it as .nnf",
                    "Train a neural network on a bundled data set or a CSV/NPZ file, print the "
                    "test metrics and save the model (weights, preprocessing, task, labels, "
                    "metrics) as one .nnf file. Settings come from the flags, a YAML/JSON "
                    "config file, or both (flags win).", EXAMPLES)
    p.add_argument("--config", metavar="FILE", help="YAML or JSON file of settings")
    d = p.add_argument_group("data")
    src = d.add_mutually_exclusive_group()
    src.add_argument("--dataset", choices=DATASETS, help="a data set bundled with scikit-learn")
    src.add_argument("--data", metavar="FILE", help=DATA_HELP)
    d.add_argument("--label-column", metavar="NAME|INDEX", type=column_ref,
                   help="CSV column of the target, by name or 0-based index (default: last)")
    d.add_argument("--labels", metavar="FILE", help=LABELS_HELP)
    d.add_argument("--task", choices=TASK_CHOICES,
                   help="what to predict; auto: text or few integer targets are classes, "
                        "an .npz y of 0/1 columns multilabel, other numbers regression "
                        + _default("task"))
    d.add_argument("--test-size", type=fraction, metavar="F",
                   help="fraction held out for the final test, 0 for none " + _default("test_size"))
    d.add_argument("--validation-split", type=fraction, metavar="F",
                   help="fraction of the training part used for validation each epoch "
                        + _default("validation_split"))
    d.add_argument("--standardize", action=argparse.BooleanOptionalAction, default=None,
                   help="standardize features (fitted on the training part, stored in the "
                        "model) " + _default("standardize"))
    d.add_argument("--fill-missing", choices=FILL_MISSING,
                   help="fill missing feature values (empty or NA cells of a CSV file, NaN) "
                        "with the column's mean, median or most frequent value in the training "
                        "part, or zero; stored in the model (predict and evaluate fill them "
                        "too), applied before standardizing (default: missing values are an "
                        "error)")
    m = p.add_argument_group("model")
    m.add_argument("--model", choices=MODEL_CHOICES,
                   help="mlp, or cnn: a small CNN for 8x8-like images " + _default("model"))
    m.add_argument("--hidden", type=int_list, metavar="N,N,...",
                   help="hidden layer widths " + _default("hidden"))
    m.add_argument("--activation", choices=ACTIVATIONS, help=_default("activation"))
    m.add_argument("--dropout", type=fraction, metavar="P", help=_default("dropout"))
    m.add_argument("--architecture", metavar="FILE",
                   help="JSON file with a full architecture (Module.to_architecture() output)")
    m.add_argument("--loss", type=loss_name,
                   help="loss name (default: cross_entropy, bce_with_logits or mse by task)")
    o = p.add_argument_group("optimization")
    o.add_argument("--optimizer", choices=OPTIMIZERS, help=_default("optimizer"))
    o.add_argument("--lr", type=positive_float, metavar="LR", help=_default("lr"))
    o.add_argument("--weight-decay", type=nonnegative_float, metavar="W",
                   help="(default: the optimizer's: 0.01 for adamw, 0 for the others)")
    o.add_argument("--momentum", type=nonnegative_float, metavar="M",
                   help="momentum, for sgd and rmsprop only")
    o.add_argument("--epochs", type=positive_int, metavar="N", help=_default("epochs"))
    o.add_argument("--batch-size", type=positive_int, metavar="N", help=_default("batch_size"))
    o.add_argument("--seed", type=seed_int, metavar="N", help=_default("seed"))
    o.add_argument("--early-stopping", type=nonnegative_int, metavar="N",
                   help="stop after N epochs without improvement, keeping the best weights; "
                        "0 is off " + _default("early_stopping"))
    out = p.add_argument_group("output")
    out.add_argument("-o", "--output", metavar="FILE",
                     help="model file to write (default: models/<data name>/1/model.nnf)")
    out.add_argument("--report", metavar="DIR",
                     help="write loss/metric curves, a confusion matrix and a Markdown/HTML "
                          "report there, replacing an earlier nnforge report's files but no "
                          "others (needs matplotlib)")
    out.add_argument("--checkpoint", metavar="FILE",
                     help="write a resumable checkpoint there after every epoch (atomically); "
                          "on Ctrl-C it holds the last whole epoch")
    out.add_argument("--resume", metavar="FILE",
                     help="continue the run a --checkpoint file holds, ending exactly as the "
                          "uninterrupted run would; the settings must be the same (--epochs "
                          "may grow)")
    out.add_argument("-q", "--quiet", action="store_true", default=None,
                     help="print only the final summary")
    p.set_defaults(run=run)


def _say(settings: dict[str, Any], text: str) -> None:
    if not settings["quiet"]:
        print(text, flush=True)


def run(args: argparse.Namespace) -> int:
    """Train as the flags and config say."""
    with stdout_may_close():  # the model file is the output; a closed stdout must not lose it
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    settings = resolve_settings(vars(args), args.config)
    if settings["report"]:  # fail before the training, not after it
        check_output_dir(settings["report"], "--report")
        require_matplotlib()
    name = settings["dataset"] or data_name(settings["data"])  # as load_labeled names it
    arch = settings["architecture"]
    output = _output_path(settings, {"name": name})
    inputs = [("--data file", settings["data"]), ("--config file", args.config),
              ("--architecture file", arch if isinstance(arch, str) else None)]
    check_output_path(output, "--output", [*inputs, ("--resume checkpoint", settings["resume"])])
    if settings["checkpoint"]:  # the --resume file may be it: the run goes on writing there
        check_output_path(settings["checkpoint"], "--checkpoint", inputs)
        if Path(settings["checkpoint"]).resolve() == output.resolve():  # neither exists yet
            raise UsageError(f"expected --checkpoint to differ from the --output file "
                             f"{str(output)!r}; the final model would replace the checkpoint")
    if arch is not None:  # a bad file or an unknown layer: say so before loading the data
        from .models import build_from_architecture  # noqa: PLC0415

        settings["architecture"] = load_architecture(arch)
        build_from_architecture(settings["architecture"])
    resumed_at = _check_resume(settings) if settings["resume"] else None
    started = time.perf_counter()
    prep = _prepare(settings)
    if resumed_at is not None:
        _say(settings, f"resuming {settings['resume']} after epoch {resumed_at} of "
                       f"{settings['epochs']}")
    run_state: dict[str, Any] = {}
    try:
        result = _fit(settings, prep, run_state)
        _save(settings, prep, result)
    except KeyboardInterrupt:  # main() prints it: say what was kept and how to go on
        raise KeyboardInterrupt(_interrupted(settings, run_state)) from None
    elapsed = time.perf_counter() - started
    if settings["report"]:
        from .report import write_report  # noqa: PLC0415

        files = write_report(settings["report"], f"nnforge train: {prep['name']}",
                             _summary(settings, prep, result, elapsed), result["test_metrics"],
                             result["history"], result.get("confusion"),
                             prep["labels"], result.get("pairs"))
        print(f"report: {files[-1]}", flush=True)
    return 0


def _prepare(s: dict[str, Any]) -> dict[str, Any]:
    """Load, pick the task, encode classes, split, standardize."""
    from ..data import Pipeline, Standardizer, train_test_split  # noqa: PLC0415
    from ..errors import ConfigError, DataError  # noqa: PLC0415
    from .columns import FILL_MISSING_HINT  # noqa: PLC0415
    from .dataio import (  # noqa: PLC0415
        check_classes,
        encode_classes,
        infer_task,
        is_one_hot,
        multilabel_targets,
    )
    from .models import image_shape  # noqa: PLC0415

    data = _load(s)
    x, y = data.x, data.y
    if s["task"] != "multilabel" and is_one_hot(y):
        y = y.argmax(axis=1)  # one 1 per row is one class per sample, not k yes/no labels
    task = s["task"] if s["task"] != "auto" else (data.task or infer_task(y))
    if s["task"] in ("multiclass", "binary"):
        check_classes(y, task)
    labels = None
    if task == "multilabel":
        y = multilabel_targets(y)
    elif task in ("multiclass", "binary"):
        y, labels = encode_classes(y, data.class_names)
        if len(labels) < 2:
            raise ConfigError(f"expected at least 2 classes for {task}, found {len(labels)}")
        if task == "binary" and len(labels) != 2:
            raise ConfigError(f"--task binary needs exactly 2 classes, found {len(labels)} "
                              f"(use --task multiclass)")
    else:
        if y.dtype.kind not in "biuf":
            raise ConfigError("expected numeric targets for regression, found text")
        y = y.astype(np.float32)
    _check_loss(_loss_name(s, task), task, labels)  # before the split can fail on it
    if _takes_images(s) and x.ndim in (2, 3):
        # rows of pixels, or (H, W) images without their channel axis -> (N, 1, H, W)
        x = x.reshape(len(x), *image_shape(x.shape[1:]))
    _say(s, f"data: {data.name}, {len(x):,} samples of shape {x.shape[1:]}, task {task}"
            + (f", {len(labels)} classes" if labels else ""))
    classes = task in ("multiclass", "binary")
    if s["test_size"] > 0:
        x_train, x_test, y_train, y_test = train_test_split(
            x, y, test_size=s["test_size"], seed=s["seed"], stratify=y if classes else None)
    else:
        x_train, y_train, x_test, y_test = x, y, x[:0], y[:0]
    names = data.feature_names if x.ndim == 2 else None
    steps: list[Any] = []  # fitted on the training part only, applied to both parts
    if s["fill_missing"]:
        steps.append(_fit_imputer(s, x_train, names))
    elif np.isnan(x).any():
        row, col = np.argwhere(np.isnan(x.reshape(len(x), -1)))[0]
        raise DataError(f"{data.name}: sample {row + 1}, feature {col + 1} is missing (NaN); "
                        f"pass {FILL_MISSING_HINT} to fill missing values")
    if s["standardize"]:
        steps.append(Standardizer())
    for step in steps:
        x_train = step.transform(x_train) if step.fitted else step.fit_transform(x_train)
        x_test = step.transform(x_test) if len(x_test) else x_test
    pre = None if not steps else steps[0] if len(steps) == 1 else Pipeline(steps)
    # a header's names let evaluate and predict match columns by name, not position
    return {"name": data.name, "task": task, "labels": labels, "preprocessing": pre,
            "X_train": x_train, "y_train": y_train, "X_test": x_test, "y_test": y_test,
            "sample_shape": tuple(x.shape[1:]), "feature_names": names, "rows": len(x),
            "label_name": data.label_name if names else None}


def _takes_images(s: dict[str, Any]) -> bool:
    """The model to train takes (N, C, H, W) images: --model cnn, or an architecture whose
    first layer is a Conv2d."""
    from .models import build_from_architecture, takes_images  # noqa: PLC0415

    if s["architecture"] is not None:
        return takes_images(build_from_architecture(load_architecture(s["architecture"])))
    return s["model"] == "cnn"


def _load(s: dict[str, Any]) -> Any:
    """The labeled data; with --fill-missing a CSV's empty and NA feature cells read as NaN."""
    from ..data import MissingValueError  # noqa: PLC0415
    from .columns import FILL_MISSING_HINT, missing_cell_error  # noqa: PLC0415
    from .dataio import load_labeled  # noqa: PLC0415

    try:
        return load_labeled(s["dataset"], s["data"], s["label_column"],
                            missing="nan" if s["fill_missing"] else "error",
                            labels=s["labels"])
    except MissingValueError as exc:
        raise missing_cell_error(exc, f"pass {FILL_MISSING_HINT} to fill missing "
                                      f"values") from None


def _fit_imputer(s: dict[str, Any], x_train: np.ndarray, names: list[str] | None) -> Any:
    """The --fill-missing Imputer, fitted on the training part; says which features it had
    no value for (filled with 0)."""
    from ..data import Imputer  # noqa: PLC0415

    how = s["fill_missing"]
    imputer = Imputer("constant" if how == "zero" else how).fit(x_train)
    assert imputer.empty_features is not None
    empty = np.flatnonzero(imputer.empty_features.ravel())
    if len(empty):
        shown = [repr(names[j]) if names else str(j + 1) for j in empty[:10]]
        _say(s, f"note: feature{'s' * (len(empty) > 1)} {', '.join(shown)}"
                f"{' ...' if len(empty) > 10 else ''} had no value in the training part; "
                f"filled with 0")
    return imputer


def _loss_name(s: dict[str, Any], task: str) -> str:
    """--loss, else the task's usual loss."""
    return s["loss"] or {"multiclass": "cross_entropy", "binary": "bce_with_logits",
                         "multilabel": "bce_with_logits"}.get(task, "mse")


def _check_loss(loss: str, task: str, labels: list[Any] | None) -> None:
    """--loss must fit the task: found only in training, the mismatch was a shape error or
    a complaint about a metric the user never chose."""
    from ..errors import ConfigError  # noqa: PLC0415
    from ..nn.losses import LOSSES  # noqa: PLC0415

    cls = LOSSES.get(loss.lower())
    kind = getattr(cls, "kind", None)
    fits = {"regression": ("regression",), "multiclass": ("multiclass",),
            "binary": ("binary", "multilabel")}.get(kind or "", ())
    if cls is None or task in fits:
        return
    does = {"regression": "regresses", "multiclass": "classifies one class among several",
            "binary": "takes a yes/no target per output"}[kind or "regression"]
    what = f"{task} with {len(labels)} classes" if task == "multiclass" and labels else task
    use = {"multiclass": "cross_entropy", "binary": "bce_with_logits",
           "multilabel": "bce_with_logits", "regression": "mse"}[task]
    # a yes/no loss fits no other task of these targets; the others have one
    other = {"regression": ", or --task regression",
             "multiclass": ", or --task multiclass"}.get(kind or "", "")
    raise ConfigError(f"--loss {loss} {does}, but the task is {what}: use {use} (the "
                      f"default){other}")


def _n_outputs(task: str, y: np.ndarray, labels: list[Any] | None) -> int:
    if task == "multiclass":
        return len(labels or [])
    if task == "binary":
        return 1
    return 1 if y.ndim == 1 else int(y.shape[1])


def _build_model(s: dict[str, Any], prep: dict[str, Any]) -> Any:
    from .models import build_cnn, build_from_architecture, build_mlp, check_model_fits, image_shape  # noqa: PLC0415

    shape, task = prep["sample_shape"], prep["task"]
    n_out = _n_outputs(task, prep["y_train"], prep["labels"])
    if s["architecture"] is not None:
        model = build_from_architecture(load_architecture(s["architecture"]))
    elif s["model"] == "cnn":
        model = build_cnn(image_shape(shape), n_out, s["activation"], s["dropout"])
    else:
        model = build_mlp(shape, n_out, s["hidden"], s["activation"], s["dropout"])
    check_model_fits(model, shape, n_out, task)
    return model


def _optimizer(s: dict[str, Any], model: Any) -> Any:
    from ..optim import build_optimizer  # noqa: PLC0415

    kwargs: dict[str, Any] = {"lr": s["lr"]}
    for key in ("weight_decay", "momentum"):  # unset: the optimizer's own default
        if s[key] is not None:
            kwargs[key] = s[key]
    return build_optimizer(s["optimizer"], model.parameters(), **kwargs)


def _fit(s: dict[str, Any], prep: dict[str, Any], run_state: dict[str, Any]) -> dict[str, Any]:
    """Build and train the model (resuming --resume's checkpoint), then test it.

    run_state gets the trainer, and "in_fit" while fit() runs on it (any checkpoint loaded),
    for _interrupted().
    """
    import nnforge as nf  # noqa: PLC0415

    from .models import fold_target_scaling, last_linear  # noqa: PLC0415
    from .scoring import TRAINER_METRICS  # noqa: PLC0415

    task = prep["task"]
    nf.manual_seed(s["seed"])  # initial weights follow --seed
    model = _build_model(s, prep)
    loss = _loss_name(s, task)
    y_train = prep["y_train"]
    target_scale = None
    if task == "regression" and last_linear(model) is not None:
        # Standardized targets train far better; the scaling is folded back into the last
        # Linear after training, so the saved model predicts in the data's units.
        mean = y_train.mean(axis=0, dtype=np.float64)
        std = y_train.std(axis=0, dtype=np.float64)
        std = np.where(std > 0, std, 1.0)
        target_scale = (np.atleast_1d(mean), np.atleast_1d(std))
        y_train = ((y_train - mean) / std).astype(np.float32)
    trainer = nf.Trainer(model, loss=loss, optimizer=_optimizer(s, model),
                         metrics=TRAINER_METRICS.get(task, []), seed=s["seed"],
                         verbose=0 if s["quiet"] else 1)
    callbacks, early = _callbacks(s, prep, target_scale is not None, run_state)
    run_state["trainer"] = trainer
    if s["resume"]:  # as fit(resume_from=...) would, but known to be whole once it returns
        trainer.load_checkpoint(s["resume"])
    run_state["in_fit"] = True
    _say(s, f"model: {model.num_parameters():,} parameters, {loss} loss, {s['optimizer']} "
            f"lr {s['lr']:g}, {s['epochs']} epochs of batch {s['batch_size']}"
            + (" (targets standardized while training)" if target_scale else ""))
    history = trainer.fit(prep["X_train"], y_train, epochs=s["epochs"],
                          batch_size=s["batch_size"],
                          validation_split=s["validation_split"], callbacks=callbacks)
    run_state["in_fit"] = False
    if early is not None and early.stopped_epoch is not None:
        _say(s, f"early stopping after epoch {early.stopped_epoch + 1}; kept the "
                f"weights of epoch {early.best_epoch + 1}")
    _check_finite_weights(model)
    if target_scale is not None:
        fold_target_scaling(last_linear(model), *target_scale)
    result: dict[str, Any] = {"model": model, "history": dict(history), "loss": loss,
                              "test_metrics": {}, "standardized": target_scale is not None}
    if len(prep["X_test"]):
        result.update(_test(trainer, prep))
    return result


def _callbacks(s: dict[str, Any], prep: dict[str, Any], scaled: bool,
               run_state: dict[str, Any]) -> tuple[list[Any], Any]:
    """The trainer's callbacks, and the EarlyStopping among them (or None)."""
    from ..train import EarlyStopping, ModelCheckpoint  # noqa: PLC0415

    callbacks: list[Any] = []
    early = None
    if s["early_stopping"]:
        monitor = "val_loss" if s["validation_split"] > 0 else "loss"
        early = EarlyStopping(monitor=monitor, patience=s["early_stopping"],
                              restore_best_weights=True)
        callbacks.append(early)
    if s["checkpoint"]:  # every epoch, after the other callbacks (the trainer sees to that)
        run_state["checkpoint_kwargs"] = _checkpoint_kwargs(s, prep, scaled)
        callbacks.append(ModelCheckpoint(s["checkpoint"], **run_state["checkpoint_kwargs"]))
    return callbacks, early


#: The settings a resumed run must share with its checkpoint to end as the uninterrupted run
#: would: not --epochs (a run may be extended), nor where the results go.
RUN_SETTINGS = ("dataset", "label_column", "task", "model", "hidden", "activation", "dropout",
                "architecture", "loss", "optimizer", "lr", "weight_decay", "momentum",
                "batch_size", "seed", "validation_split", "early_stopping", "standardize",
                "fill_missing", "test_size")


def _run_settings(s: dict[str, Any]) -> dict[str, Any]:
    """The RUN_SETTINGS as JSON gives them back, with the data by content (a moved file is
    the same data, an edited one is not)."""
    from .heldout import data_identity  # noqa: PLC0415

    found = {k: s[k] for k in RUN_SETTINGS}
    found["data"] = data_identity(s["dataset"], s["data"], s.get("labels"))
    return json.loads(json.dumps(found))


def _checkpoint_kwargs(s: dict[str, Any], prep: dict[str, Any], scaled: bool) -> dict[str, Any]:
    """save()'s metadata for the --checkpoint file, with the settings --resume checks."""
    out: dict[str, Any] = {"input_shape": prep["sample_shape"],
                           "extra": {"nnforge_train": {"settings": _run_settings(s),
                                                       "epochs": s["epochs"]}}}
    if not scaled:  # with standardized targets it predicts in their units: no model of the task
        out.update(task=prep["task"], labels=prep["labels"],
                   preprocessing=prep["preprocessing"], feature_names=prep["feature_names"])
    return out


def _check_resume(s: dict[str, Any]) -> int:
    """The epochs --resume's checkpoint has run, once it is known to be this run's."""
    from ..errors import ConfigError  # noqa: PLC0415
    from ..io import read_manifest  # noqa: PLC0415
    from .training_state import training_state  # noqa: PLC0415

    path = s["resume"]
    if not Path(path).is_file():
        raise ConfigError(f"expected a checkpoint at {path!r} (--resume), found "
                          f"{'a directory' if Path(path).is_dir() else 'no such file'}")
    saved = (read_manifest(path).get("extra") or {}).get("nnforge_train")
    done = training_state(path).get("epoch")
    if not isinstance(saved, dict) or not isinstance(saved.get("settings"), dict) \
            or not isinstance(done, int):
        raise ConfigError(f"expected a checkpoint written by 'nnforge train --checkpoint' at "
                          f"{path!r} (--resume), found a model file without its training run")
    for key, value in _run_settings(s).items():
        then = saved["settings"].get(key)
        if then == value:
            continue
        # a bundled set differs by name (checked first); a file by its bytes
        found = f"--{key.replace('_', '-')} {_shown(value)} (the checkpoint's: {_shown(then)})" \
            if key != "data" else f"other data (the bytes of {s['data']!r} or its labels differ)"
        raise ConfigError(f"--resume {path}: expected the settings its run was trained with, "
                          f"found {found}; only --epochs may change")
    if done > s["epochs"]:
        raise ConfigError(f"--resume {path}: expected --epochs of at least {done} (the epochs "
                          f"it has run), found {s['epochs']}")
    return done


def _shown(value: Any) -> str:
    """A setting's value in a message."""
    return "unset" if value is None else json.dumps(value)[:60]


def _interrupted(s: dict[str, Any], run_state: dict[str, Any]) -> str:
    """Ctrl-C's line: where training stood, what was saved, how to go on."""
    trainer = run_state.get("trainer")
    if trainer is None:
        return "before training started; nothing was saved"
    done = trainer.state_dict()["epochs_done"]
    where = f"after epoch {done} of {s['epochs']}" if done else f"in epoch 1 of {s['epochs']}"
    path = s["checkpoint"]
    if not path:
        return (f"{where}; nothing was saved (pass --checkpoint FILE to save a resumable "
                f"checkpoint every epoch)")
    if run_state.get("in_fit"):
        # the epoch cut short was undone: the trainer stands at the end of the last whole one,
        # which the file may lack if the Ctrl-C came while it was being written
        try:
            trainer.save_checkpoint(path, **run_state["checkpoint_kwargs"])
        except (OSError, NNForgeError) as exc:
            return f"{where}; the checkpoint {path} could not be updated ({exc})"
    elif not Path(path).is_file():
        return f"{where}; nothing was saved yet"
    return (f"{where}; saved a checkpoint of epoch {done} to {path}: rerun the same command with "
            f"--resume {path} to continue")


def _check_finite_weights(model: Any) -> None:
    """A diverged model is refused, not saved: it would predict one class for every input."""
    from ..errors import DataError  # noqa: PLC0415

    for name, p in model.named_parameters():
        if not np.isfinite(p.data).all():
            raise DataError(f"training diverged: parameter {name!r} holds non-finite values "
                            f"(nan or inf); lower the learning rate (--lr) or check the data; "
                            f"no model was saved")


def _test(trainer: Any, prep: dict[str, Any]) -> dict[str, Any]:
    """Metrics of the finished model on the held-out part, as `evaluate` computes them."""
    from .scoring import compute_metrics, confusion, print_metrics  # noqa: PLC0415

    task, x, y = prep["task"], prep["X_test"], prep["y_test"]
    predicted = trainer.predict(x)
    out: dict[str, Any] = {"test_metrics": compute_metrics(task, y, predicted)}
    if task in ("multiclass", "binary"):
        out["confusion"] = confusion(y, predicted, len(prep["labels"]))
    elif task == "regression":  # a multilabel model's 0/1 flags make no scatter plot
        out["pairs"] = (y, predicted)
    print_metrics(out["test_metrics"], f"test metrics ({len(x):,} samples)")
    return out


def _output_path(s: dict[str, Any], prep: dict[str, Any]) -> Path:
    if s["output"]:
        return Path(s["output"])
    return Path("models") / prep["name"] / "1" / "model.nnf"


def _save(s: dict[str, Any], prep: dict[str, Any], result: dict[str, Any]) -> None:
    import nnforge as nf  # noqa: PLC0415

    from .heldout import data_identity  # noqa: PLC0415

    path = _output_path(s, prep)
    extra = {"trained_with": {
        "command": shlex.join(["nnforge", *sys.argv[1:]]) if sys.argv else "nnforge train",
        "data": prep["name"], "test_size": s["test_size"], "seed": s["seed"],
        "stratified": prep["task"] in ("multiclass", "binary"), "epochs": s["epochs"],
        "epochs_run": len(result["history"].get("loss", [])), "loss": result["loss"],
        # evaluate scores the held-out rows of this split when given this very data again
        "rows": prep["rows"], "test_rows": len(prep["X_test"]),
        **data_identity(s["dataset"], s["data"], s.get("labels"))}}
    if prep["label_name"]:  # predict leaves this column out of a file that still has it
        extra["trained_with"]["label_column"] = prep["label_name"]
    if s["resume"]:
        extra["trained_with"]["resumed_from"] = str(s["resume"])
    nf.save(result["model"], path, task=prep["task"], labels=prep["labels"],
            preprocessing=prep["preprocessing"], metrics=result["test_metrics"] or None,
            input_shape=prep["sample_shape"], extra=extra, feature_names=prep["feature_names"])
    result["path"] = path
    print(f"saved {path} ({path.stat().st_size:,} bytes)", flush=True)


def _summary(s: dict[str, Any], prep: dict[str, Any], result: dict[str, Any],
             elapsed: float) -> list[tuple[str, str]]:
    model = result["model"]
    return [("data", prep["name"]), ("task", prep["task"]),
            ("training samples", f"{len(prep['X_train']):,}"),
            ("test samples", f"{len(prep['X_test']):,}"),
            ("parameters", f"{model.num_parameters():,}"),
            ("loss", result["loss"]), ("optimizer", f"{s['optimizer']} (lr {s['lr']:g})"),
            ("epochs run", str(len(result["history"].get("loss", [])))),
            ("batch size", str(s["batch_size"])), ("seed", str(s["seed"])),
            ("model file", str(result["path"])), ("time", f"{elapsed:.1f} s")] + (
        # the per-epoch curves come from the Trainer, which saw standardized targets
        [("curves", "in standardized target units (test metrics in the data's units)")]
        if result.get("standardized") else [])
