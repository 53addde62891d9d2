"""Building optimizers by name, for configuration files and the command line."""

from __future__ import annotations

import inspect
from typing import Any, Iterable

from ..errors import ConfigError
from .adam import Adam, AdamW
from .groups import groups_from_config
from .optimizer import Optimizer, _param_list
from .rmsprop import RMSprop
from .sgd import SGD

#: Optimizer classes by the name configs use.
OPTIMIZERS: dict[str, type[Optimizer]] = {c.name: c for c in (SGD, Adam, AdamW, RMSprop)}


def build_optimizer(name: str, params: Iterable[Any], **kwargs: Any) -> Optimizer:
    """Optimizer by (case-insensitive) name, e.g. build_optimizer("adam", model.parameters())."""
    cls = OPTIMIZERS.get(name.lower()) if isinstance(name, str) else None
    if cls is None:
        raise ConfigError(f"expected an optimizer name in {sorted(OPTIMIZERS)}, found {name!r}")
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self",
                                                                                    "params")]
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown argument(s) {unknown} for optimizer {cls.name!r}; expected "
                          f"some of {allowed}")
    if "betas" in kwargs and isinstance(kwargs["betas"], list):
        kwargs["betas"] = tuple(kwargs["betas"])  # JSON/YAML give lists
    return cls(params, **kwargs)


def optimizer_from_config(params: Iterable[Any], config: dict[str, Any]) -> Optimizer:
    """Optimizer from {"name": "adam", "lr": ..., ...} (what Optimizer.get_config() returns)."""
    if not isinstance(config, dict) or "name" not in config:
        raise ConfigError(f"expected an optimizer config with a 'name', found {config!r:.80}")
    kwargs = {k: v for k, v in config.items() if k not in ("name", "param_groups")}
    if "param_groups" in config:
        params = groups_from_config(params, config["param_groups"], _param_list)
    return build_optimizer(config["name"], params, **kwargs)
