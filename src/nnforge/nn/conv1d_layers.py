"""1-D convolution and pooling layers over (N, C, L) input, with PyTorch's names, defaults and
parameter layout (Conv1d weight (out, in/groups, k)), so a torch state_dict loads as is.

They run the 2-D ops on the (N, C, 1, L) view of their input: one implementation of each op
(speed, threads, gradients), and the reshapes around it are views. Tracing lowers them to
ONNX's 1-D Conv/MaxPool/AveragePool (graph/trace.py), which the NumPy runtime runs on the
same H = 1 views (runtime/kernels.py).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import backend
from ..autograd.function import Function
from ..autograd.tensor import Tensor
from ..errors import ConfigError, ShapeError
from ..ops import conv as C
from ..ops import pool as P
from ..ops.activation import require_float
from ..ops.conv import conv1d, pads_1d, single
from ..ops.pool import avg_pool1d, global_avg_pool2d, max_pool1d
from .conv_layers import (
    _check_channels,
    averaging_matrix,
    make_conv_weights,
    set_channels,
)
from .module import Module, check_bool, register_layer


@register_layer
class Conv1d(Module):
    """1-D convolution over (N, C, L); weight (out, in/groups, k), bias (out,)."""

    #: the op splits its batch over nnforge's own threads (see backend.SERIAL_BLAS)
    own_threads = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 init: str = "he") -> None:
        super().__init__()
        set_channels(self, in_channels, out_channels, groups)
        # one-element tuples, as PyTorch keeps them
        self.kernel_size = (single(kernel_size, "kernel_size"),)
        self.stride = (single(stride, "stride"),)
        self.dilation = (single(dilation, "dilation"),)
        #: (left, right) zeros: "same" puts an odd extra one on the right
        self.pads = pads_1d(padding, self.kernel_size[0], self.dilation[0], self.stride[0])
        #: "same", "valid" or (p,), as given (PyTorch keeps the string too)
        self.padding: Any = padding if isinstance(padding, str) else (self.pads[0],)
        make_conv_weights(self, init, bias)

    def forward(self, x: Tensor) -> Tensor:
        _check_channels(self, x, self.in_channels, (3,), "(batch, channels, length)")
        padding = self.padding if isinstance(self.padding, str) else self.padding[0]
        return conv1d(x, self.weight, self.bias, self.stride[0], padding, self.dilation[0],
                      self.groups)

    def traced_op(self) -> tuple[Function, dict[str, Any]]:
        """The op this layer applies and its weights by name (tracing lowers it as the op)."""
        op = C.Conv1d(self.stride[0], self.pads, self.dilation[0], self.groups)
        return op, {"weight": self.weight, "bias": self.bias}

    def get_config(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": self.kernel_size[0], "stride": self.stride[0],
                "padding": self.padding if isinstance(self.padding, str) else self.padding[0],
                "dilation": self.dilation[0], "groups": self.groups,
                "bias": self.bias is not None, "init": self.init}


class _Pool1d(Module):
    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 ceil_mode: bool = False) -> None:
        super().__init__()
        self.ceil_mode = check_bool(self, "ceil_mode", ceil_mode)
        self.kernel_size = single(kernel_size, "kernel_size")
        self.stride = self.kernel_size if stride is None else single(stride, "stride")
        self.padding = single(padding, "padding", minimum=0)
        if self.padding > self.kernel_size // 2:
            raise ConfigError(f"{type(self).__name__}: padding must be at most half the kernel "
                              f"size {self.kernel_size}, found {self.padding}")

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = {"kernel_size": self.kernel_size, "stride": self.stride,
                                  "padding": self.padding}
        if self.ceil_mode:
            config["ceil_mode"] = True
        return config


@register_layer
class MaxPool1d(_Pool1d):
    """Maximum over kernel_size windows of (N, C, L) (stride defaults to kernel_size)."""

    def forward(self, x: Tensor) -> Tensor:
        return max_pool1d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode)

    def traced_op(self) -> tuple[Function, dict[str, Any]]:
        """The op this layer applies and its weights by name (tracing lowers it as the op)."""
        return P.MaxPool1d(self.kernel_size, self.stride, self.padding, self.ceil_mode), {}


@register_layer
class AvgPool1d(_Pool1d):
    """Mean over kernel_size windows of (N, C, L); count_include_pad counts padded zeros."""

    # torch's order: ceil_mode before count_include_pad, so a ported positional call means
    # the same thing here
    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = check_bool(self, "count_include_pad", count_include_pad)

    def forward(self, x: Tensor) -> Tensor:
        return avg_pool1d(x, self.kernel_size, self.stride, self.padding,
                          self.count_include_pad, self.ceil_mode)

    def traced_op(self) -> tuple[Function, dict[str, Any]]:
        """The op this layer applies and its weights by name (tracing lowers it as the op)."""
        return P.AveragePool1d(self.kernel_size, self.stride, self.padding,
                               self.count_include_pad, self.ceil_mode), {}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "count_include_pad": self.count_include_pad}


@register_layer
class AdaptiveAvgPool1d(Module):
    """Mean pooling of (N, C, L) to a fixed length L', as torch.nn.AdaptiveAvgPool1d.

    L' = 1 is a global average (traceable for any L) and an L' that divides L an AvgPool1d;
    other sizes use PyTorch's windows [floor(i*L/L'), ceil((i+1)*L/L')) as a product with an
    averaging matrix, traced and exported as a MatMul by that constant matrix.
    """

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        size = output_size[0] if isinstance(output_size, (tuple, list)) and \
            len(output_size) == 1 else output_size
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size <= 0:
            raise ConfigError(f"AdaptiveAvgPool1d: output_size must be a positive integer, "
                              f"found {output_size!r}")
        self.output_size = int(size)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 3:
            raise ShapeError(f"AdaptiveAvgPool1d expected input of shape (N, C, L), found "
                             f"{tuple(x.shape)}")
        require_float(x.data, "AdaptiveAvgPool1d")  # the averaging matrix is float
        n, c, length = x.shape
        out = self.output_size
        if out == 1:
            return global_avg_pool2d(x.reshape(n, c, 1, length)).reshape(n, c, 1)
        if length % out == 0:
            return avg_pool1d(x, length // out)
        cols = averaging_matrix(length, out, x.dtype).T  # (L, L'): x @ cols averages windows
        return x @ Tensor(backend.same_device_as(cols, x.data))

    def get_config(self) -> dict[str, Any]:
        return {"output_size": self.output_size}
