"""Convolution, pooling and batch-normalisation layers (NCHW, PyTorch's names and defaults)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import backend
from ..autograd.function import Function
from ..autograd.tensor import Tensor
from ..errors import ConfigError, ShapeError, check_float
from ..ops.activation import require_float
from ..ops.conv import PadEnd, conv2d, pair, same_pads
from ..ops.conv_pool import conv_max_pool2d, fusable_pool
from ..ops.norm import batch_norm, batch_statistics
from ..ops.pool import AveragePool, MaxPool, avg_pool2d, global_avg_pool2d, max_pool2d
from ..ops.shape import flatten
from .init import get_initializer, ones
from .module import Module, Parameter, check_bool, register_layer


def _positive_int(layer: Module, name: str, value: Any) -> int:
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value <= 0:
        raise ConfigError(f"{type(layer).__name__}: {name} must be a positive integer, "
                          f"found {value!r}")
    return int(value)


def set_channels(layer: Module, in_channels: Any, out_channels: Any, groups: Any) -> None:
    """Check and set a convolution's in_channels, out_channels and groups."""
    layer.in_channels = _positive_int(layer, "in_channels", in_channels)
    layer.out_channels = _positive_int(layer, "out_channels", out_channels)
    layer.groups = _positive_int(layer, "groups", groups)
    if layer.in_channels % layer.groups or layer.out_channels % layer.groups:
        raise ConfigError(f"{type(layer).__name__}: in_channels and out_channels must be "
                          f"divisible by groups={layer.groups}, found {layer.in_channels} and "
                          f"{layer.out_channels}")


def make_conv_weights(layer: Module, init: str, bias: Any) -> None:
    """A convolution's weight (out, in/groups, *kernel_size) from `init` and optional bias."""
    layer.init = init
    shape = (layer.out_channels, layer.in_channels // layer.groups) + tuple(layer.kernel_size)
    layer.weight = Parameter(get_initializer(init)(shape))
    has_bias = check_bool(layer, "bias", bias)
    layer.bias = Parameter(np.zeros(layer.out_channels, np.float32)) if has_bias else None


def _check_channels(layer: Module, x: Tensor, channels: int, ndims: tuple[int, ...],
                    layout: str) -> None:
    if x.ndim not in ndims or x.shape[1] != channels:
        raise ShapeError(f"{type(layer).__name__} expected input of shape {layout} with "
                         f"{channels} channels, found {tuple(x.shape)}")


class _Spatial(Module):
    """Shows the (height, width) pairs of its config in repr() as tuples."""

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={tuple(v) if isinstance(v, list) else v!r}"
                         for k, v in self.get_config().items())


@register_layer
class Conv2d(_Spatial):
    """2-D convolution over NCHW input; weight (out, in/groups, kh, kw), bias (out,)."""

    #: the op splits its batch over nnforge's own threads (see backend.SERIAL_BLAS)
    own_threads = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 init: str = "he") -> None:
        super().__init__()
        set_channels(self, in_channels, out_channels, groups)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride")
        self.dilation = pair(dilation, "dilation")
        #: "same", "valid" or (height, width), as given (PyTorch keeps the string too)
        self.padding: Any = _conv_padding(padding, self.stride)
        #: (top, left, bottom, right) zeros: "same" puts an odd extra at the bottom/right
        self.pads = (same_pads(self.kernel_size, self.dilation) if self.padding == "same"
                     else (0, 0, 0, 0) if self.padding == "valid" else self.padding * 2)
        make_conv_weights(self, init, bias)

    def forward(self, x: Tensor) -> Tensor:
        _check_channels(self, x, self.in_channels, (4,), "(batch, channels, H, W)")
        top, left, bottom, right = self.pads
        if (bottom, right) != (top, left):  # the extra row/column first, then symmetric pads
            x = PadEnd.apply(self._as_input(x), bottom=bottom - top, right=right - left)
        return conv2d(x, self.weight, self.bias, self.stride, (top, left), self.dilation,
                      self.groups)

    def forward_pooled(self, x: Tensor, pool: MaxPool2d) -> Tensor | None:
        """pool(self(x)) as one fused op (ops.conv_pool), or None where it does not apply."""
        x = self._as_input(x)  # what calling the layer does first
        _check_channels(self, x, self.in_channels, (4,), "(batch, channels, H, W)")
        if backend.is_device_array(x.data):  # on a GPU the two ops run separately
            return None
        kernel = fusable_pool(x.shape, self.weight.shape, self, pool)
        if kernel is None:
            return None
        return conv_max_pool2d(x, self.weight, self.bias, kernel, self.stride, self.pads[:2],
                               self.dilation, self.groups)

    def get_config(self) -> dict[str, Any]:
        return {"in_channels": self.in_channels, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": (self.padding if isinstance(self.padding, str)
                            else list(self.padding)), "dilation": list(self.dilation),
                "groups": self.groups, "bias": self.bias is not None, "init": self.init}


def _conv_padding(padding: Any, stride: tuple[int, int]) -> Any:
    """Conv2d's padding checked: "same" (stride 1 only, as in PyTorch), "valid" or ints."""
    if not isinstance(padding, str):
        return pair(padding, "padding", minimum=0)
    if padding not in ("same", "valid"):
        raise ConfigError(f"Conv2d: padding must be 'same', 'valid', an int or a pair of ints, "
                          f"found {padding!r:.60}")
    if padding == "same" and stride != (1, 1):
        raise ConfigError(f"Conv2d: padding='same' needs stride 1 (as in PyTorch), found "
                          f"stride={stride}; give the padding as numbers instead")
    return padding


class _Pool2d(_Spatial):
    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 ceil_mode: bool = False) -> None:
        super().__init__()
        if not isinstance(ceil_mode, (bool, np.bool_)):
            raise ConfigError(f"{type(self).__name__}: ceil_mode must be True or False, found "
                              f"{ceil_mode!r}")
        self.ceil_mode = bool(ceil_mode)
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.stride = pair(stride, "stride") if stride is not None else self.kernel_size
        self.padding = pair(padding, "padding", minimum=0)
        if any(p > k // 2 for p, k in zip(self.padding, self.kernel_size)):
            raise ConfigError(f"{type(self).__name__}: padding must be at most half the kernel "
                              f"size {self.kernel_size}, found {self.padding}")

    def get_config(self) -> dict[str, Any]:
        config = {"kernel_size": list(self.kernel_size), "stride": list(self.stride),
                  "padding": list(self.padding)}
        if self.ceil_mode:  # written only when set, so files without it stay as they were
            config["ceil_mode"] = True
        return config


@register_layer
class MaxPool2d(_Pool2d):
    """Maximum over kernel_size windows (stride defaults to kernel_size; padding is -inf)."""

    def forward(self, x: Tensor) -> Tensor:
        return max_pool2d(x, self.kernel_size, self.stride, self.padding, self.ceil_mode)

    def traced_op(self) -> tuple[Function, dict[str, Any]]:
        """The op this layer applies and its weights by name (tracing lowers it as the op)."""
        return MaxPool(self.kernel_size, self.stride, self.padding, self.ceil_mode), {}


@register_layer
class AvgPool2d(_Pool2d):
    """Mean over kernel_size windows; count_include_pad counts padded zeros in the divisor."""

    # torch's order: ceil_mode before count_include_pad, so a ported positional call means
    # the same thing here
    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 ceil_mode: bool = False, count_include_pad: bool = True) -> None:
        super().__init__(kernel_size, stride, padding, ceil_mode)
        self.count_include_pad = check_bool(self, "count_include_pad", count_include_pad)

    def forward(self, x: Tensor) -> Tensor:
        return avg_pool2d(x, self.kernel_size, self.stride, self.padding, self.count_include_pad,
                          self.ceil_mode)

    def traced_op(self) -> tuple[Function, dict[str, Any]]:
        """The op this layer applies and its weights by name (tracing lowers it as the op)."""
        return AveragePool(self.kernel_size, self.stride, self.padding,
                           self.count_include_pad, self.ceil_mode), {}

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "count_include_pad": self.count_include_pad}


@register_layer
class GlobalAvgPool2d(Module):
    """Mean over H and W: output (N, C), or (N, C, 1, 1) with keepdims=True."""

    def __init__(self, keepdims: bool = False) -> None:
        super().__init__()
        self.keepdims = check_bool(self, "keepdims", keepdims)

    def forward(self, x: Tensor) -> Tensor:
        y = global_avg_pool2d(x)
        return y if self.keepdims else flatten(y, 1)

    def get_config(self) -> dict[str, Any]:
        return {"keepdims": self.keepdims}


@register_layer
class AdaptiveAvgPool2d(_Spatial):
    """Mean pooling to a fixed output size (H', W'), as torch.nn.AdaptiveAvgPool2d.

    A size of None keeps that input dimension. Output (1, 1) is a global average; sizes that
    divide the input are an AvgPool2d with kernel = stride = input // output (both exact).
    Other sizes use PyTorch's windows [floor(i*H/H'), ceil((i+1)*H/H')) as two products with
    averaging matrices, which agree with PyTorch to rounding; traced and exported, they are
    the same products as MatMul nodes with constant matrices (ONNX pooling has one window
    size, so PyTorch's exporter refuses them).
    """

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        sizes = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * 2
        if len(sizes) != 2 or not all(s is None or (isinstance(s, (int, np.integer))
                                                    and not isinstance(s, bool) and s > 0)
                                      for s in sizes):
            raise ConfigError(f"AdaptiveAvgPool2d: output_size must be a positive integer, None "
                              f"or a pair of them, found {output_size!r}")
        self.output_size = tuple(None if s is None else int(s) for s in sizes)

    def target(self, h: int, w: int) -> tuple[int, int]:
        """The output (H', W') for an input of H x W."""
        oh, ow = self.output_size
        return (h if oh is None else oh, w if ow is None else ow)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ShapeError(f"AdaptiveAvgPool2d expected input of shape (N, C, H, W), found "
                             f"{tuple(x.shape)}")
        require_float(x.data, "AdaptiveAvgPool2d")  # the averaging matrices are float
        h, w = x.shape[2:]
        oh, ow = self.target(h, w)
        if (oh, ow) == (1, 1):
            return global_avg_pool2d(x)
        if h % oh == 0 and w % ow == 0:
            return avg_pool2d(x, (h // oh, w // ow))
        dt, on = x.dtype, x.data  # the matrices go where x is
        rows = backend.same_device_as(averaging_matrix(h, oh, dt), on)
        cols = backend.same_device_as(averaging_matrix(w, ow, dt).T, on)
        return Tensor(rows) @ x @ Tensor(cols)

    def get_config(self) -> dict[str, Any]:
        return {"output_size": list(self.output_size)}


def averaging_matrix(n: int, m: int, dtype: Any) -> np.ndarray:
    """(m, n) matrix whose row i averages PyTorch's adaptive window i of n inputs."""
    a = np.zeros((m, n), dtype=np.float64)
    for i in range(m):
        lo, hi = (i * n) // m, -(-((i + 1) * n) // m)
        a[i, lo:hi] = 1.0 / (hi - lo)
    return a.astype(dtype)


class _BatchNorm(Module):
    """Batch normalisation over axis 1. With track_running_stats=False there are no running
    statistics: the batch's own are used in training and in eval mode alike (as in PyTorch).
    Such a layer is refused by trace/InferenceSession/ONNX export: an inference graph whose
    output for one sample depends on the rest of the batch would break per-sample serving,
    dynamic batching and chunked predict."""

    ndims: tuple[int, ...] = ()
    layout = ""

    #: PyTorch's state dicts always hold this key; ours only with momentum=None (its one use)
    optional_state = ("num_batches_tracked",)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True) -> None:
        super().__init__()
        self.num_features = _positive_int(self, "num_features", num_features)
        name = type(self).__name__
        # None is PyTorch's cumulative moving average: the running statistics are the plain
        # mean of every batch's statistics so far, which needs the count of batches
        self.momentum = None if momentum is None else check_float(f"{name} momentum", momentum,
                                                                  0.0, 1.0)
        self.eps = check_float(f"{name} eps", eps, 0.0)
        if self.eps == 0.0:
            raise ConfigError(f"{name}: expected a positive eps, found {eps!r}")
        self.affine = check_bool(self, "affine", affine)
        c = self.num_features
        if self.affine:
            self.weight = Parameter(ones((c,)))
            self.bias = Parameter(np.zeros(c, backend.DEFAULT_DTYPE))
        else:
            self.weight = self.bias = None
        self.track_running_stats = check_bool(self, "track_running_stats", track_running_stats)
        if not self.track_running_stats:  # no buffers at all, as PyTorch has it
            self.running_mean = self.running_var = None
            return
        self.register_buffer("running_mean", np.zeros(c, backend.DEFAULT_DTYPE))
        self.register_buffer("running_var", ones((c,)))
        if self.momentum is None:  # not kept otherwise, so files without it stay as they were
            self.register_buffer("num_batches_tracked", np.zeros((), np.int64))

    def forward(self, x: Tensor) -> Tensor:
        _check_channels(self, x, self.num_features, self.ndims, self.layout)
        weight, bias = self.weight, self.bias
        if weight is None:  # affine=False: a fixed unit scale and zero shift
            xp = backend.xp_of(x.data)
            weight = Tensor(xp.ones(self.num_features, x.dtype))
            bias = Tensor(xp.zeros(self.num_features, x.dtype))
        if not self.track_running_stats:  # batch statistics in training and in eval mode
            mean, var = batch_statistics(x.data)
            return batch_norm(x, weight, bias, mean, var, training=True, eps=self.eps)
        if not self.training:
            rm = self.running_mean.astype(x.dtype, copy=False)
            rv = self.running_var.astype(x.dtype, copy=False)
            return batch_norm(x, weight, bias, rm, rv, training=False, eps=self.eps)
        mean, var = batch_statistics(x.data)
        count = x.data.size // self.num_features
        m = self.momentum
        if m is None:
            self.num_batches_tracked = self.num_batches_tracked + 1
            m = 1.0 / float(self.num_batches_tracked)
        dt = self.running_mean.dtype.type
        # the running variance is unbiased, like PyTorch's; normalisation uses the biased one
        unbiased = var * (count / (count - 1))
        self.running_mean = (dt(1 - m) * self.running_mean + dt(m) * mean).astype(dt)
        self.running_var = (dt(1 - m) * self.running_var + dt(m) * unbiased).astype(dt)
        return batch_norm(x, weight, bias, mean, var, training=True, eps=self.eps)

    def get_config(self) -> dict[str, Any]:
        config = {"num_features": self.num_features, "eps": self.eps,
                  "momentum": self.momentum, "affine": self.affine}
        if not self.track_running_stats:  # written only when set: older files stay as they were
            config["track_running_stats"] = False
        return config


@register_layer
class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) input over the batch (and length) axes."""

    ndims = (2, 3)
    layout = "(batch, channels) or (batch, channels, length)"


@register_layer
class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) input per channel."""

    ndims = (4,)
    layout = "(batch, channels, H, W)"
