"""`nnforge train` settings: built-in defaults, then a YAML/JSON config file, then flags."""

from __future__ import annotations

import argparse
import difflib
import json
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError
from .common import (
    UsageError,
    column_ref,
    fraction,
    int_list,
    nonnegative_float,
    nonnegative_int,
    positive_float,
    positive_int,
    seed_int,
)
from .dataio import DATASETS

TASK_CHOICES = ("auto", "multiclass", "binary", "multilabel", "regression")
MODEL_CHOICES = ("mlp", "cnn")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu", "leaky_relu")
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
#: --fill-missing: an Imputer strategy, "zero" for the constant 0
FILL_MISSING = ("mean", "median", "most_frequent", "zero")
#: The built-in model's settings, which a full `architecture` replaces.
PRESET_KEYS = ("model", "hidden", "activation", "dropout")
#: Optimizer settings that only some optimizers take (lr and weight_decay: all of them).
OPTIMIZER_ONLY = {"momentum": ("sgd", "rmsprop")}

#: Every setting with its default; a config file may set any of them, flags override it.
DEFAULTS: dict[str, Any] = {
    "dataset": None, "data": None, "label_column": None, "labels": None, "task": "auto",
    "model": "mlp", "hidden": [128, 64], "activation": "relu", "dropout": 0.0,
    "architecture": None, "loss": None,
    # weight_decay None: the optimizer's own default (AdamW decays by 0.01, the others not)
    "optimizer": "adam", "lr": 1e-3, "weight_decay": None, "momentum": None,
    "epochs": 20, "batch_size": 32, "seed": 0, "validation_split": 0.1,
    "early_stopping": 0, "standardize": True, "fill_missing": None, "test_size": 0.2,
    "output": None, "report": None, "quiet": False, "checkpoint": None, "resume": None,
}


def _bool(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "yes", "on", "1"):
        return True
    if low in ("false", "no", "off", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, found {text!r}")


def _choice(options: tuple[str, ...]) -> Callable[[str], str]:
    def check(text: str) -> str:
        if text not in options:
            raise argparse.ArgumentTypeError(f"expected one of {list(options)}, found {text!r}")
        return text
    return check


def _text(text: str) -> str:
    return text


def loss_name(text: str) -> str:
    """A loss the trainer knows by name (checked before the data is loaded)."""
    from ..nn.losses import LOSSES  # noqa: PLC0415

    if text.lower() not in LOSSES:
        raise argparse.ArgumentTypeError(f"expected one of {sorted(LOSSES)}, found {text!r}")
    return text


#: How a config file value is checked: the flag's own type function, applied to its text.
CONVERTERS: dict[str, Callable[[str], Any]] = {
    "dataset": _choice(DATASETS), "data": _text, "label_column": column_ref, "labels": _text,
    "task": _choice(TASK_CHOICES), "model": _choice(MODEL_CHOICES), "hidden": int_list,
    "activation": _choice(ACTIVATIONS), "dropout": fraction, "loss": loss_name,
    "optimizer": _choice(OPTIMIZERS), "lr": positive_float, "weight_decay": nonnegative_float,
    "momentum": nonnegative_float, "epochs": positive_int, "batch_size": positive_int,
    "seed": seed_int, "validation_split": fraction, "early_stopping": nonnegative_int,
    "standardize": _bool, "fill_missing": _choice(FILL_MISSING), "test_size": fraction,
    "output": _text, "report": _text, "quiet": _bool, "checkpoint": _text, "resume": _text,
}


def _read_text(p: Path, what: str) -> str:
    """The UTF-8 text of a settings file (a BOM, as Windows editors write, is dropped)."""
    try:
        return p.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"expected {what} at {str(p)!r}, found no such file") from None
    except IsADirectoryError:
        raise ConfigError(f"expected {what} at {str(p)!r}, found a directory") from None
    except UnicodeDecodeError:  # its message alone would not name the file
        raise ConfigError(f"expected {what} of UTF-8 text at {str(p)!r}, found binary or "
                          f"other non-UTF-8 data") from None


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Parse a .yaml/.yml or .json config file into a dict."""
    p = Path(path)
    text = _read_text(p, "a config file")
    if p.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml  # noqa: PLC0415 - optional: only YAML configs need it
        except ImportError:
            raise ConfigError(f"{p}: reading YAML needs PyYAML (pip install pyyaml); or write "
                              f"the config as JSON") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{p}: expected valid YAML, found: {exc}") from None
    elif p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{p}: expected valid JSON, found: {exc}") from None
    else:
        raise ConfigError(f"expected a config file ending in .yaml, .yml or .json, "
                          f"found {p.name!r}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping of settings at the top level, found "
                          f"{type(data).__name__}")
    return data


def _as_text(key: str, value: Any) -> str:
    if key == "hidden" and isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    if isinstance(value, (dict, list)):
        raise argparse.ArgumentTypeError(f"expected a single value, found {value!r:.60}")
    return str(value)


def normalize_config(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Check a config mapping against the known settings; an optimizer mapping is flattened."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        k = str(key).replace("-", "_")
        if k == "architecture":
            if not isinstance(value, (dict, str)):
                raise ConfigError(f"{where}: 'architecture' must be a mapping like "
                                  f"to_architecture()'s output or a JSON file path, found "
                                  f"{type(value).__name__}")
            out[k] = value
            continue
        if k == "optimizer" and isinstance(value, dict):
            opts = {str(o).replace("-", "_"): v for o, v in value.items()}
            named = "name" if "name" in opts else "type"
            name = opts.pop("name", opts.pop("type", None))
            if name is not None:
                out["optimizer"] = _convert("optimizer", name, where, f"optimizer.{named}")
            for o in ("lr", "weight_decay", "momentum"):
                if o in opts:
                    out[o] = _convert(o, opts.pop(o), where, f"optimizer.{o}")
            if opts:
                raise ConfigError(f"{where}: unknown optimizer setting(s) {sorted(opts)}; "
                                  f"expected name, lr, weight_decay, momentum")
            continue
        if k not in CONVERTERS:
            known = sorted(set(CONVERTERS) | {"architecture"})
            close = difflib.get_close_matches(k, known, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise ConfigError(f"{where}: unknown setting {key!r}; {hint}expected one of {known}")
        out[k] = _convert(k, value, where, k)
    return out


def _convert(key: str, value: Any, where: str, shown: str) -> Any:
    """One config value checked by its flag's type; errors name the file and the key."""
    if value is None:
        return None
    try:
        return CONVERTERS[key](_as_text(key, value))
    except argparse.ArgumentTypeError as exc:
        raise ConfigError(f"{where}: setting {shown!r}: {exc}") from None


def resolve_settings(flags: dict[str, Any], config_path: str | None) -> dict[str, Any]:
    """Defaults, overridden by the config file, overridden by the flags that were given."""
    settings = dict(DEFAULTS)
    config: dict[str, Any] = {}
    if config_path is not None:
        config = normalize_config(read_config_file(config_path), config_path)
        settings.update(config)
    given = {k: v for k, v in flags.items() if k in DEFAULTS and v is not None}
    settings.update(given)
    _resolve_architecture(settings, config, given, config_path)
    if settings["architecture"] is not None and "architecture" not in given:
        _check_file_architecture(settings["architecture"], str(config_path))
    if settings["dataset"] is not None and settings["data"] is not None:
        # a flag for one source replaces the other source from the config file
        if flags.get("dataset") is not None:
            settings["data"] = None
        elif flags.get("data") is not None:
            settings["dataset"] = None
        else:
            raise ConfigError(f"{config_path}: expected one data source, 'dataset' or 'data', "
                              f"found both")
    if settings["dataset"] is None and settings["data"] is None:
        raise ConfigError("expected a data source: --dataset NAME or --data FILE (or 'dataset' "
                          "/ 'data' in the config file)")
    for key in ("label_column", "labels"):
        if settings["dataset"] is None or settings[key] is None:
            continue
        if flags.get(key) is None and flags.get("dataset") is not None:
            settings[key] = None  # it named the targets of the file's data source
        else:
            _not_applicable(key, "applies to --data files; a bundled --dataset has its own "
                            "targets", flags, config_path)
    _check_optimizer_settings(settings, config, flags, config_path)
    return settings


def _not_applicable(key: str, why: str, flags: dict[str, Any], config_path: str | None) -> None:
    """A setting that does not apply: a usage error for a flag, a ConfigError for the file."""
    if flags.get(key) is not None:
        raise UsageError(f"--{key.replace('_', '-')} {why}")
    raise ConfigError(f"{config_path}: setting {key!r} {why}")


def _check_optimizer_settings(settings: dict[str, Any], config: dict[str, Any],
                              flags: dict[str, Any], config_path: str | None) -> None:
    """A setting the chosen optimizer does not take fails up front, not after the data loads.

    (It used to fail only once the model was built, or, had the optimizer ignored it, never.)
    """
    name = settings["optimizer"]
    for key, takers in OPTIMIZER_ONLY.items():
        if settings[key] is None or name in takers:
            continue
        if flags.get(key) is None and flags.get("optimizer") is not None:
            # --optimizer replaces the config file's optimizer, and with it the settings that
            # were meant for that one (as --dataset replaces its 'data')
            settings[key] = None
            continue
        chosen = name if flags.get("optimizer") is not None or "optimizer" in config else \
            f"{name} (the default; choose one with --optimizer)"
        _not_applicable(key, f"applies to the optimizers {' and '.join(takers)}, not to "
                        f"{chosen}", flags, config_path)


def _resolve_architecture(settings: dict[str, Any], config: dict[str, Any],
                          given: dict[str, Any], config_path: str | None) -> None:
    """A full architecture and the built-in model's settings must not be silently mixed."""
    if settings["architecture"] is None:
        return
    # as with the data source, a flag replaces what the config file says instead
    flag_presets = [k for k in PRESET_KEYS if k in given]
    if "architecture" in given:
        if flag_presets:
            raise ConfigError(f"expected --architecture or the built-in model's flags, found "
                              f"both (--{flag_presets[0].replace('_', '-')})")
        return
    if flag_presets:
        settings["architecture"] = None
        return
    if "architecture" in config and any(k in config for k in PRESET_KEYS):
        found = [k for k in PRESET_KEYS if k in config]
        raise ConfigError(f"{config_path}: expected 'architecture' or the built-in model's "
                          f"settings, found both ({', '.join(found)})")


def _check_file_architecture(value: Any, config_path: str) -> None:
    """Build the config file's architecture once, so that its errors name the file."""
    from ..errors import NNForgeError  # noqa: PLC0415
    from .models import build_from_architecture  # noqa: PLC0415

    try:
        build_from_architecture(load_architecture(value))
    except NNForgeError as exc:  # the layer registry's errors name the layer, not the file
        raise ConfigError(f"{config_path}: setting 'architecture': {exc}") from None


def load_architecture(value: Any) -> dict[str, Any]:
    """An architecture mapping, or one read from a JSON file path."""
    if isinstance(value, dict):
        return value
    p = Path(value)
    text = _read_text(p, "an architecture JSON file")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: expected valid JSON, found: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected an architecture object, found {type(data).__name__}")
    return data
