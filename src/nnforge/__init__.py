"""nnforge: define, train, evaluate, save, load, infer, export and serve neural networks."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from . import errors, nn
from .autograd import Tensor, enable_grad, no_grad, set_grad_enabled
from .autograd.factories import (
    arange,
    full,
    ones,
    ones_like,
    rand,
    randn,
    randn_like,
    tensor,
    zeros,
    zeros_like,
)
from .random import manual_seed

# heavier pieces load on first use so `import nnforge` stays fast
_LAZY = {
    "Trainer": ("nnforge.train", "Trainer"),
    "save": ("nnforge.io", "save"),
    "load": ("nnforge.io", "load"),
    "save_checkpoint": ("nnforge.io", "save_checkpoint"),
    "load_checkpoint": ("nnforge.io", "load_checkpoint"),
    "InferenceSession": ("nnforge.runtime", "InferenceSession"),
    "concat": ("nnforge.ops.shape", "concat"),
    "cat": ("nnforge.ops.shape", "cat"),
    "stack": ("nnforge.ops.shape", "stack"),
    "where": ("nnforge.ops.math", "where"),
    "maximum": ("nnforge.ops.math", "maximum"),
    "minimum": ("nnforge.ops.math", "minimum"),
    "split": ("nnforge.ops.shape", "split"),
    "chunk": ("nnforge.ops.shape", "chunk"),
    "expand": ("nnforge.ops.shape", "expand"),
    "optim": ("nnforge.optim", None),
    "data": ("nnforge.data", None),
    "train": ("nnforge.train", None),
    "io": ("nnforge.io", None),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib  # noqa: PLC0415

        module_name, attr = _LAZY[name]
        module = importlib.import_module(module_name)
        value = module if attr is None else getattr(module, attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'nnforge' has no attribute {name!r}")


__all__ = ["InferenceSession", "Tensor", "Trainer", "__version__", "arange", "cat", "chunk",
           "concat", "enable_grad", "errors", "expand", "full", "load", "load_checkpoint",
           "manual_seed", "maximum", "minimum", "nn", "no_grad", "ones", "ones_like", "rand",
           "randn", "randn_like", "save", "save_checkpoint", "set_grad_enabled", "split",
           "stack", "tensor", "where", "zeros", "zeros_like"]
