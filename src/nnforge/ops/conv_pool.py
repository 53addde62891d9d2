"""Convolution followed by a tiling max pool, as one op: what nn.Sequential runs for that pair.

A max pool over a convolution's output is bound by strided memory access: its windows'
elements sit one pixel apart, and NumPy runs strided loops several times slower than
contiguous ones. Here the convolution writes its output rows grouped by window row (see
`conv._windows`), so every step over the windows' rows works on contiguous slabs, and only
the steps over a window's columns remain strided. The gradient of each window goes to its
first maximum in row-major order, as in `pool.MaxPool`. The product's columns come in another
order than the separate conv's, so the outputs agree with the separate ops' to rounding (last
bits), and so do the weight and bias gradients. Where two window elements tie exactly, that
rounding can pick another maximum than the separate ops would: both routes are valid gradients,
and each path is deterministic on its own.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd.tensor import Tensor
from .activation import all_finite
from .conv import Conv, conv_output_size, pair
from .pool import reduce_views, route_first_max, route_max_exact


class ConvMaxPool(Conv):
    """max_pool(conv(x, w, b)) for a pool whose stride equals its kernel and tiles the output."""

    ir_name = None  # not an ONNX op: tracing lowers the Conv2d and MaxPool2d modules themselves

    def __init__(self, pool: tuple[int, int], stride: Any = 1, padding: Any = 0,
                 dilation: Any = 1, groups: int = 1) -> None:
        super().__init__(stride, padding, dilation, groups)
        self.pool = pool
        self.row_taps = pool[0]

    def lower(self, b: Any, xs: list[str]) -> Any:
        """Conv then MaxPool, as the two layers lower (the optimizer fuses them back)."""
        k = list(self.pool)
        return b.node("MaxPool", [super().lower(b, xs)], kernel_shape=k, strides=k,
                      pads=[0, 0, 0, 0])

    def forward(self, x: Any, w: Any, b: Any = None) -> Any:
        yc = super().forward(x, w, b)  # memory: (N, O, ph, OH/ph, OW), see conv._windows
        n, o, oh, ow = yc.shape
        ph, pw = self.pool
        slabs = yc.reshape(n, o, ph, oh // ph, ow)
        cols = [slabs[..., j::pw] for j in range(pw)]
        cm = reduce_views(cols, np.maximum)  # per window row: the max over its columns
        rows = [cm[:, :, i] for i in range(ph)]
        y = reduce_views(rows, np.maximum)
        if any(self.needs_input_grad):
            self.cm, self.y, self.col_views, self.row_views = cm, y, cols, rows
            self.conv_shape = yc.shape
        return y

    def backward(self, gy: Any) -> tuple[Any, ...]:
        ph, pw = self.pool
        n, o, oh, ow = self.conv_shape
        if all_finite(self.y) and all_finite(gy):
            gcm = np.empty(self.cm.shape, gy.dtype)
            # the first maximal window row, then the first maximal column in it: together the
            # first maximum in row-major order (as pool.MaxPool routes it)
            route_first_max(gy, self.y, self.row_views, [gcm[:, :, i] for i in range(ph)],
                            False)
            gyc = np.empty((n, o, ph, oh // ph, ow), gy.dtype)
            route_first_max(gcm, self.cm, self.col_views, [gyc[..., j::pw] for j in range(pw)],
                            False)
        else:  # NaN or infinite values: tap by tap, as pool.MaxPool's exact path
            gyc = np.zeros((n, o, ph, oh // ph, ow), gy.dtype)
            taps = [self.col_views[j][:, :, i] for i in range(ph) for j in range(pw)]
            dests = [gyc[:, :, i, :, j::pw] for i in range(ph) for j in range(pw)]
            route_max_exact(gy, self.y, taps, dests)
        self.cm = self.y = self.col_views = self.row_views = None
        return super().backward(gyc.reshape(self.conv_shape))


def fusable_pool(x_shape: tuple[int, ...], w_shape: tuple[int, ...], conv: Any,
                 pool: Any) -> tuple[int, int] | None:
    """The pool kernel when ConvMaxPool can run this Conv2d + MaxPool2d pair, else None."""
    k = pool.kernel_size
    if tuple(pool.stride) != tuple(k) or any(pool.padding) or len(x_shape) != 4:
        return None
    pads = tuple(conv.pads)  # (top, left, bottom, right): "same" can be asymmetric
    if pads[:2] != pads[2:]:
        return None
    stride, padding = pair(conv.stride, "stride"), pair(pads[:2], "padding", minimum=0)
    dilation = pair(conv.dilation, "dilation")
    out = [conv_output_size(x_shape[2 + i], w_shape[2 + i], stride[i], padding[i], dilation[i])
           for i in range(2)]
    if any(o < kk or o % kk for o, kk in zip(out, k)):
        return None  # windows that do not tile the output exactly: the separate ops handle it
    return (int(k[0]), int(k[1]))


def conv_max_pool2d(x: Tensor, weight: Tensor, bias: Tensor | None, pool: tuple[int, int],
                    stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                    groups: int = 1) -> Tensor:
    """max_pool2d(conv2d(x, weight, bias, ...), pool) as one op (see fusable_pool)."""
    attrs = {"pool": pool, "stride": stride, "padding": padding, "dilation": dilation,
             "groups": groups}
    if bias is None:
        return ConvMaxPool.apply(x, weight, **attrs)
    return ConvMaxPool.apply(x, weight, bias, **attrs)
