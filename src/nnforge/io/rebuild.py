"""The save-time check that the architecture about to be written rebuilds the model being
saved, along the path load() takes (so a file that saves also loads)."""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError, ModelFileError
from ..nn import Module
from .archive import from_json, to_json

Shapes = dict[str, tuple[int, ...]]


def _difference(want: Shapes, got: Shapes, prefix: str) -> str | None:
    """The first weight that differs between the model (want) and its rebuild (got), named
    as in the whole model's state dict."""
    for k, shape in want.items():
        if k not in got:
            return f"has no weight {prefix + k!r}"
        if got[k] != shape:
            return f"gives weight {prefix + k!r} the shape {got[k]} where the model has {shape}"
    extra = next((k for k in got if k not in want), None)
    return None if extra is None else f"has a weight {prefix + extra!r} the model lacks"


def _rebuild_problem(m: Module, arch: Any, prefix: str = "") -> str | None:
    """Why arch does not rebuild m (None if it does): an error, or a differing weight."""
    from .model_file import _build_layers, _named_arrays  # noqa: PLC0415 (imports this)

    try:
        rebuilt = _build_layers(arch, "")
    except ModelFileError as exc:
        return f"fails ({str(exc).split(': ', 1)[-1]})"  # the cause, without the file wording
    return _difference({k: tuple(v.shape) for k, v in _named_arrays(m)},
                       {k: tuple(v.shape) for k, v in _named_arrays(rebuilt)}, prefix)


def check_rebuilds(model: Module, arch: bytes) -> None:
    """ConfigError naming the layer when the architecture JSON about to be written would not
    rebuild the model's parameters and buffers (names and shapes) when the file is loaded."""
    if _rebuild_problem(model, from_json(arch, "the architecture")) is None:
        return
    # find the layer at fault: children come before their parents in reversed pre-order, so
    # the first layer that does not rebuild alone is one whose sub-layers all do (a parent
    # that builds correct children wrongly is then at fault itself)
    for name, m in reversed(list(model.named_modules())):
        cfg = from_json(to_json(m.to_architecture(), "the architecture"), "the architecture")
        problem = _rebuild_problem(m, cfg, f"{name}." if name else "")
        if problem is not None:
            where = f"layer {name!r} ({type(m).__name__})" if name else type(m).__name__
            raise ConfigError(
                f"{where} would not load back from the file: rebuilt from its config "
                f"{cfg['config']!r:.120} it {problem}. Its get_config() must return the "
                f"arguments of its __init__ (implement get_config on the registered layer)")
    raise ConfigError("the saved architecture would not rebuild the model's weights; check "
                      "the get_config() of its custom layers")
