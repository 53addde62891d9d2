"""2-D pooling on NCHW arrays: MaxPool, AveragePool and GlobalAveragePool (ONNX names).

Windowed pooling loops over the kh*kw kernel offsets, never over pixels: each offset is one
strided slice of the (padded) input covering every window at once, so a 2x2 pool is four
vectorised slices. When stride >= kernel the slices of different offsets never overlap and the
backward writes them directly instead of accumulating.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd.function import Function
from ..autograd.tensor import Tensor
from ..errors import ConfigError, ShapeError
from .conv import pair


def _pool_attrs(fn: Any, kernel: Any, stride: Any, padding: Any) -> None:
    fn.kernel = pair(kernel, "kernel_size")
    fn.stride = pair(stride, "stride") if stride is not None else fn.kernel
    fn.padding = pair(padding, "padding", minimum=0)
    if fn.padding[0] > fn.kernel[0] // 2 or fn.padding[1] > fn.kernel[1] // 2:
        raise ConfigError(f"pooling padding must be at most half the kernel size "
                          f"{fn.kernel}, found {fn.padding}")


def _out_size(what: str, x: Any, kernel: tuple[int, int], stride: tuple[int, int],
              padding: tuple[int, int]) -> tuple[int, int]:
    if x.ndim != 4:
        raise ShapeError(f"{what} expected input of shape (batch, channels, H, W), "
                         f"found {x.shape}")
    h, w = x.shape[2:]
    oh = (h + 2 * padding[0] - kernel[0]) // stride[0] + 1
    ow = (w + 2 * padding[1] - kernel[1]) // stride[1] + 1
    if oh < 1 or ow < 1:
        raise ShapeError(f"{what} with a {kernel[0]}x{kernel[1]} kernel and padding {padding} "
                         f"expected an input of at least {kernel[0] - 2 * padding[0]}x"
                         f"{kernel[1] - 2 * padding[1]} pixels, found {h}x{w} "
                         f"(input shape {x.shape})")
    return oh, ow


def _pad(x: Any, padding: tuple[int, int], value: float) -> Any:
    if padding == (0, 0):
        return x
    n, c, h, w = x.shape
    ph, pw = padding
    xp = np.full((n, c, h + 2 * ph, w + 2 * pw), value, dtype=x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    return xp


def _window_slices(kernel: tuple[int, int], stride: tuple[int, int],
                   out: tuple[int, int]) -> list[tuple[slice, slice]]:
    """For each kernel offset (row-major), the slices picking that offset in every window."""
    (kh, kw), (sh, sw), (oh, ow) = kernel, stride, out
    return [(slice(i, i + sh * (oh - 1) + 1, sh), slice(j, j + sw * (ow - 1) + 1, sw))
            for i in range(kh) for j in range(kw)]


class _Pool(Function):
    def __init__(self, kernel: Any, stride: Any = None, padding: Any = 0) -> None:
        _pool_attrs(self, kernel, stride, padding)

    def _unpad(self, gxp: Any) -> Any:
        if self.padding == (0, 0):
            return gxp
        ph, pw = self.padding
        h, w = self.x_shape[2:]
        return np.ascontiguousarray(gxp[:, :, ph:ph + h, pw:pw + w])

    @property
    def overlapping(self) -> bool:
        """True when windows share input pixels (stride smaller than the kernel)."""
        return self.stride[0] < self.kernel[0] or self.stride[1] < self.kernel[1]


def _axis_slices(k: int, s: int, out: int) -> list[slice]:
    """Along one axis, for each kernel offset the slice picking it in every window."""
    return [slice(i, i + s * (out - 1) + 1, s) for i in range(k)]


def _max_over(views: list[Any]) -> Any:
    m = np.array(views[0])
    for v in views[1:]:
        np.maximum(m, v, out=m)
    return m


def _route_max_grad(g: Any, m: Any, views: list[Any], gviews: list[Any],
                    accumulate: bool) -> None:
    """Give g to the first view equal to the maximum m; later ties get nothing."""
    remaining = g  # gradient not yet claimed by an earlier offset
    last = len(views) - 1
    for t, (v, gv) in enumerate(zip(views, gviews)):
        part = remaining if t == last else remaining * np.equal(v, m)
        if accumulate:
            gv += part
        else:
            gv[...] = part
        if t < last:
            remaining = remaining - part


class MaxPool(_Pool):
    """Maximum over each window; padding counts as -inf.

    Computed separably: the maximum over the kernel columns, then over its rows. The gradient
    of a window goes to exactly one input, the first maximum in row-major window order (as in
    PyTorch), so tied maxima (after a ReLU, say) do not multiply the gradient.
    """

    ir_name = "MaxPool"

    def forward(self, x: Any) -> Any:
        oh, ow = _out_size("MaxPool2d", x, self.kernel, self.stride, self.padding)
        xp = _pad(x, self.padding, -np.inf)
        self.cols = _axis_slices(self.kernel[1], self.stride[1], ow)
        self.rows = _axis_slices(self.kernel[0], self.stride[0], oh)
        cm = _max_over([xp[..., c] for c in self.cols])  # (N, C, Hp, OW)
        y = _max_over([cm[:, :, r] for r in self.rows])
        if self.needs_input_grad[0]:
            self.xp, self.cm, self.y, self.x_shape = xp, cm, y, x.shape
        return y

    def backward(self, gy: Any) -> tuple[Any]:
        xp, cm, rows, cols = self.xp, self.cm, self.rows, self.cols
        (kh, kw), (sh, sw) = self.kernel, self.stride
        # windows that tile an axis exactly write every gradient element once: no zeros needed
        tiled_h = sh == kh and xp.shape[2] == kh * self.y.shape[2]
        tiled_w = sw == kw and xp.shape[3] == kw * self.y.shape[3]
        gcm = (np.empty if tiled_h else np.zeros)(cm.shape, dtype=gy.dtype)
        _route_max_grad(gy, self.y, [cm[:, :, r] for r in rows], [gcm[:, :, r] for r in rows],
                        accumulate=sh < kh)
        gxp = (np.empty if tiled_w else np.zeros)(xp.shape, dtype=gy.dtype)
        _route_max_grad(gcm, cm, [xp[..., c] for c in cols], [gxp[..., c] for c in cols],
                        accumulate=sw < kw)
        return (self._unpad(gxp),)


class AveragePool(_Pool):
    """Mean over each window (count_include_pad: whether padded zeros count in the divisor)."""

    ir_name = "AveragePool"

    def __init__(self, kernel: Any, stride: Any = None, padding: Any = 0,
                 count_include_pad: bool = True) -> None:
        super().__init__(kernel, stride, padding)
        self.count_include_pad = bool(count_include_pad)

    def _divisor(self, x: Any, out: tuple[int, int]) -> Any:
        """Scalar kh*kw, or per-output counts of real (unpadded) pixels in each window."""
        (kh, kw), (sh, sw), (ph, pw) = self.kernel, self.stride, self.padding
        if self.count_include_pad or self.padding == (0, 0):
            return x.dtype.type(kh * kw)

        def counts(size: int, k: int, s: int, p: int, n: int) -> Any:
            start = np.arange(n) * s - p
            return np.minimum(start + k, size) - np.maximum(start, 0)

        ch = counts(x.shape[2], kh, sh, ph, out[0])
        cw = counts(x.shape[3], kw, sw, pw, out[1])
        return np.outer(ch, cw).astype(x.dtype)

    def forward(self, x: Any) -> Any:
        out = _out_size("AvgPool2d", x, self.kernel, self.stride, self.padding)
        xp = _pad(x, self.padding, 0.0)
        slices = _window_slices(self.kernel, self.stride, out)
        y = np.array(xp[(Ellipsis, *slices[0])])
        for s in slices[1:]:
            y += xp[(Ellipsis, *s)]
        self.divisor = self._divisor(x, out)
        y /= self.divisor
        self.slices, self.x_shape, self.xp_shape = slices, x.shape, xp.shape
        return y

    def backward(self, gy: Any) -> tuple[Any]:
        g = gy / self.divisor
        overlapping = self.overlapping
        gxp = np.zeros(self.xp_shape, dtype=gy.dtype)
        for s in self.slices:
            if overlapping:
                gxp[(Ellipsis, *s)] += g
            else:
                gxp[(Ellipsis, *s)] = g
        return (self._unpad(gxp),)


class GlobalAveragePool(Function):
    """Mean over all spatial positions: (N, C, H, W) -> (N, C, 1, 1)."""

    ir_name = "GlobalAveragePool"

    def forward(self, x: Any) -> Any:
        if x.ndim != 4:
            raise ShapeError(f"GlobalAvgPool2d expected input of shape (batch, channels, H, W), "
                             f"found {x.shape}")
        n, c = x.shape[:2]
        self.x_shape = x.shape
        return x.reshape(n, c, -1).mean(axis=2).reshape(n, c, 1, 1)

    def backward(self, gy: Any) -> tuple[Any]:
        h, w = self.x_shape[2:]
        gx = np.empty(self.x_shape, dtype=gy.dtype)
        gx[...] = gy / gy.dtype.type(h * w)
        return (gx,)


def max_pool2d(x: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Tensor:
    """Max pooling over kernel_size windows (stride defaults to kernel_size)."""
    return MaxPool.apply(x, kernel=kernel_size, stride=stride, padding=padding)


def avg_pool2d(x: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
               count_include_pad: bool = True) -> Tensor:
    """Average pooling over kernel_size windows (stride defaults to kernel_size)."""
    return AveragePool.apply(x, kernel=kernel_size, stride=stride, padding=padding,
                             count_include_pad=count_include_pad)


def global_avg_pool2d(x: Tensor) -> Tensor:
    """Mean over H and W, keeping them as size-1 axes: (N, C, 1, 1)."""
    return GlobalAveragePool.apply(x)
