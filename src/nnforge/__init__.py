"""nnforge: define, train, evaluate, save, load, infer, optimize, export and serve neural networks."""

from __future__ import annotations

__version__ = "0.1.0"

from . import errors, nn
from .autograd import Tensor, enable_grad, no_grad
from .random import manual_seed

__all__ = ["Tensor", "__version__", "enable_grad", "errors", "manual_seed", "nn", "no_grad"]
