"""Define-by-run reverse-mode automatic differentiation."""

from .function import Function
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .tensor import Tensor, as_tensor

__all__ = ["Function", "Tensor", "as_tensor", "enable_grad", "is_grad_enabled", "no_grad",
           "set_grad_enabled"]
