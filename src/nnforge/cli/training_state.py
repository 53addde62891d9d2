"""`nnforge info` on a checkpoint: where training stood, the optimizer and its settings, the
last epoch's logged metrics, the callbacks with saved state, the seed."""

from __future__ import annotations

import math
from typing import Any

from .common import fmt_number, print_table


def training_state(path: str) -> dict[str, Any]:
    """What a checkpoint says about its training run (keys absent where it holds nothing)."""
    from ..io import load_checkpoint  # noqa: PLC0415

    ckpt = load_checkpoint(path)
    doc: dict[str, Any] = {}
    trainer = ckpt.trainer_state if isinstance(ckpt.trainer_state, dict) else {}
    for key, name in (("epochs_done", "epoch"), ("step", "step")):
        if isinstance(trainer.get(key), int):
            doc[name] = trainer[key]
    if trainer.get("stop_training"):
        doc["stopped"] = True
    config = (ckpt.optimizer_state or {}).get("config")
    if isinstance(config, dict):
        doc["optimizer"] = _optimizer(config)
    history = trainer.get("history")
    if isinstance(history, dict):
        # the last entry of each logged quantity; time is the run's, not the model's
        last = {k: v[-1] for k, v in history.items()
                if isinstance(v, list) and v and k != "time"}
        if last:
            doc["last_epoch"] = last
    callbacks = trainer.get("callbacks")
    if isinstance(callbacks, list):
        doc["callbacks"] = [str(c.get("type")) for c in callbacks
                            if isinstance(c, dict) and c.get("state")]
    # the trainer's own seed (null: none was given); the seed it drew validation rows with
    # equals it when one was given, and is shown apart when not (or when the checkpoint is
    # older than saved seeds: the split seed is then no proof of a trainer seed)
    if "seed" in trainer and (trainer["seed"] is None or _is_int(trainer["seed"])):
        doc["seed"] = trainer["seed"]
    split = trainer.get("split_seed")
    if _is_int(split) and ("seed" not in doc or doc["seed"] != split):
        doc["split_seed"] = split
    return doc


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _optimizer(config: dict[str, Any]) -> dict[str, Any]:
    """name, hyperparameters and, with param groups, each group's lr."""
    out: dict[str, Any] = {"name": config.get("name"),
                           "hyperparameters": config.get("hyperparameters") or {}}
    groups = config.get("groups")
    if isinstance(groups, list):
        out["groups"] = [{"lr": (g.get("hyperparameters") or {}).get("lr")}
                         for g in groups if isinstance(g, dict)]
    return out


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return fmt_number(value) if not math.isfinite(value) else f"{value:g}"
    if isinstance(value, list):
        return "(" + ", ".join(_value_text(v) for v in value) + ")"
    return str(value)


def print_training_state(doc: dict[str, Any]) -> None:
    """The training state as a field | value table."""
    rows = []
    if "epoch" in doc:
        rows.append(("epoch", f"{doc['epoch']:,}" + (" (stopped)" if doc.get("stopped") else "")))
    if "step" in doc:
        rows.append(("step", f"{doc['step']:,}"))
    opt = doc.get("optimizer")
    if opt:
        rows.append(("optimizer", str(opt["name"])))
        rows.append(("hyperparameters", "  ".join(
            f"{k} {_value_text(v)}" for k, v in opt["hyperparameters"].items()) or "-"))
        for i, group in enumerate(opt.get("groups", [])):
            rows.append((f"param group {i}", f"lr {_value_text(group['lr'])}"))
    if "last_epoch" in doc:
        # metrics to 4 decimals as elsewhere; a learning rate as it is (1e-5 is no 0.0000)
        rows.append(("last epoch", "  ".join(
            f"{k} {_value_text(v) if k == 'lr' else fmt_number(v)}"
            for k, v in doc["last_epoch"].items())))
    if "callbacks" in doc:
        rows.append(("callbacks", ", ".join(doc["callbacks"]) or "-"))
    if "seed" in doc:
        rows.append(("seed", "none" if doc["seed"] is None else str(doc["seed"])))
    if "split_seed" in doc:
        rows.append(("validation split seed", str(doc["split_seed"])))
    print_table(["field", "value"], rows or [("state", "-")], "training state", align="ll")
