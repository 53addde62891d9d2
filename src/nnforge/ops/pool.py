"""2-D pooling on NCHW arrays: MaxPool, AveragePool and GlobalAveragePool (ONNX names).

Windowed pooling is separable: first over the kernel's columns, then over its rows. Each
kernel offset along an axis is one strided slice covering every window at once, so a 2x2 pool
is two slices per axis; Python loops run over kernel offsets only, never over pixels. Where
the windows tile an axis exactly (stride == kernel) the backward writes each slice once
instead of accumulating into a zeroed array.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import backend
from ..autograd.function import Function
from ..autograd.tensor import Tensor
from ..errors import ConfigError, ShapeError
from .activation import all_finite, require_float
from .conv import pair, single


def pooled_size(size: int, k: int, s: int, p0: int, p1: int, dil: int = 1,
                ceil: bool = False) -> int:
    """Output length of a pooling window along one axis (below 1: the input is too small).

    ceil_mode rounds up, but as in PyTorch and ONNX Runtime a last window that would start
    beyond the input and the leading padding is dropped. Rounding up keeps a window that only
    partly covers an input shorter than the kernel (8x3 input, kernel 4: one column).
    """
    span = size + p0 + p1 - dil * (k - 1) - 1  # negative: the input is shorter than a window
    if not ceil:
        return max(0, span // s + 1)
    out = -(-span // s) + 1
    if out > 1 and (out - 1) * s >= size + p0:
        out -= 1
    return max(0, out)


def min_pooled_input(k: int, s: int, p: int, ceil: bool) -> int:
    """The shortest input length giving one pooled output at least (for error messages)."""
    return next(n for n in range(1, k + 2) if pooled_size(n, k, s, p, p, ceil=ceil) >= 1)


def pool_window_counts(size: int, out: int, k: int, s: int, p0: int, p1: int, dil: int,
                       include_pad: bool) -> np.ndarray:
    """Per output position along one axis, how many window taps fall on the input (and, with
    include_pad, on the explicit padding); taps past it (ceil_mode's last window) never count."""
    taps = np.arange(out)[:, None] * s + np.arange(k)[None, :] * dil  # in padded coordinates
    lo, hi = (0, size + p0 + p1) if include_pad else (p0, size + p0)
    return ((taps >= lo) & (taps < hi)).sum(axis=1)


def _out_size(what: str, x: Any, kernel: tuple[int, int], stride: tuple[int, int],
              padding: tuple[int, int], ceil: bool) -> tuple[int, int]:
    if x.ndim != 4:
        raise ShapeError(f"{what} expected input of shape (batch, channels, H, W), "
                         f"found {x.shape}")
    h, w = x.shape[2:]
    oh = pooled_size(h, kernel[0], stride[0], padding[0], padding[0], ceil=ceil)
    ow = pooled_size(w, kernel[1], stride[1], padding[1], padding[1], ceil=ceil)
    if oh < 1 or ow < 1:
        lo = [min_pooled_input(kernel[i], stride[i], padding[i], ceil) for i in range(2)]
        raise ShapeError(f"{what} with a {kernel[0]}x{kernel[1]} kernel, stride {stride}, "
                         f"padding {padding} and ceil_mode={ceil} expected an input of at least "
                         f"{lo[0]}x{lo[1]} pixels, found {h}x{w} (input shape {x.shape})")
    return oh, ow


def _pad(x: Any, padding: tuple[int, int], extra: tuple[int, int], value: float) -> Any:
    """x with `padding` on both sides and `extra` more at the end of each axis."""
    if padding == (0, 0) and extra == (0, 0):
        return x
    n, c, h, w = x.shape
    (ph, pw), (eh, ew) = padding, extra
    xp = backend.xp_of(x).full((n, c, h + 2 * ph + eh, w + 2 * pw + ew), value, dtype=x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    return xp


def _axis_slices(k: int, s: int, out: int) -> list[slice]:
    """Along one axis, for each kernel offset the slice picking it in every window."""
    return [slice(i, i + s * (out - 1) + 1, s) for i in range(k)]


def reduce_views(views: list[Any], op: Any) -> Any:
    """op folded over views (np.maximum, np.add): a fresh array of their common shape."""
    out = views[0].copy(order="K") if len(views) == 1 else op(views[0], views[1])
    for v in views[2:]:
        op(out, v, out=out)
    return out


def _spread(gviews: list[Any], parts: list[Any], accumulate: bool) -> None:
    """Write each kernel offset's share of the gradient into that offset's slice."""
    for gv, part in zip(gviews, parts):
        if accumulate:
            gv += part
        else:
            gv[...] = part


class _Pool(Function):
    what = ""

    def __init__(self, kernel: Any, stride: Any = None, padding: Any = 0,
                 ceil_mode: bool = False) -> None:
        self.ceil_mode = bool(ceil_mode)
        self.kernel = pair(kernel, "kernel_size")
        self.stride = pair(stride, "stride") if stride is not None else self.kernel
        self.padding = pair(padding, "padding", minimum=0)
        if self.padding[0] > self.kernel[0] // 2 or self.padding[1] > self.kernel[1] // 2:
            raise ConfigError(f"pooling padding must be at most half the kernel size "
                              f"{self.kernel}, found {self.padding}")

    def onnx_attrs(self, first_axis: int = 0) -> dict[str, Any]:
        """The ONNX pooling attributes of the axes from first_axis (1: the width alone, for
        the 1-D op on H = 1), as the pooling layers lower."""
        axes = range(first_axis, 2)
        pads = [self.padding[i] for i in axes]
        attrs: dict[str, Any] = {"kernel_shape": [self.kernel[i] for i in axes],
                                 "strides": [self.stride[i] for i in axes], "pads": pads * 2}
        if self.ceil_mode:
            attrs["ceil_mode"] = 1
        if isinstance(self, AveragePool):
            attrs["count_include_pad"] = int(self.count_include_pad)
        return attrs

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX MaxPool/AveragePool."""
        return b.node(self.ir_name, xs, **self.onnx_attrs())

    def _prepare(self, x: Any, pad_value: float) -> tuple[Any, tuple[int, int]]:
        require_float(x, self.what)  # -inf padding and the mean have no integer form
        out = _out_size(self.what, x, self.kernel, self.stride, self.padding, self.ceil_mode)
        self.rows = _axis_slices(self.kernel[0], self.stride[0], out[0])
        self.cols = _axis_slices(self.kernel[1], self.stride[1], out[1])
        self.x_shape, self.am = x.shape, backend.xp_of(x)
        # ceil_mode's last window may hang over the end padding: pad_value there too
        extra = tuple(max(0, (o - 1) * s + k - (d + 2 * p)) for o, s, k, d, p in
                      zip(out, self.stride, self.kernel, x.shape[2:], self.padding))
        return _pad(x, self.padding, extra, pad_value), out

    def _grad_buffers(self, xp_shape: tuple[int, ...], out: tuple[int, int],
                      dtype: Any) -> tuple[Any, Any, bool, bool]:
        """Gradient arrays for the column-reduced and the padded input, and whether each
        stage's windows overlap (then slices accumulate into zeros)."""
        (kh, kw), (sh, sw) = self.kernel, self.stride
        over_h, over_w = sh < kh, sw < kw
        tiled_h = sh == kh and xp_shape[2] == kh * out[0]
        tiled_w = sw == kw and xp_shape[3] == kw * out[1]
        # arrays every element of which the slices write need no zeroing first
        am = self.am  # the array module: numpy, or cupy for GPU arrays
        gcm = (am.empty if tiled_h else am.zeros)(xp_shape[:3] + (out[1],), dtype=dtype)
        gxp = (am.empty if tiled_w else am.zeros)(xp_shape, dtype=dtype)
        return gcm, gxp, over_h, over_w

    def _unpad(self, gxp: Any) -> Any:
        if gxp.shape == self.x_shape:
            return gxp
        ph, pw = self.padding
        h, w = self.x_shape[2:]
        return self.am.ascontiguousarray(gxp[:, :, ph:ph + h, pw:pw + w])


def route_first_max(g: Any, m: Any, views: list[Any], dests: list[Any],
                     accumulate: bool) -> None:
    """Send g to dests[k] for the first view k equal to the maximum m (zero to the others).

    Where the windows do not overlap each destination is written once, straight from the
    products (the mask is a float array: multiplying by a boolean one casts on the way and
    takes twice as long).
    """
    if len(views) == 1:
        if accumulate:
            dests[0] += g
        else:
            dests[0][...] = g
        return
    mask = backend.xp_of(g).empty(g.shape, g.dtype)
    remaining = g  # the gradient not yet claimed by an earlier offset
    last = len(views) - 2
    for k in range(last + 1):
        np.equal(views[k], m, out=mask)
        part = np.multiply(remaining, mask, out=None if accumulate else dests[k])
        if accumulate:
            dests[k] += part
        if k < last:
            remaining = remaining - part
        elif accumulate:
            dests[-1] += remaining - part
        else:
            np.subtract(remaining, part, out=dests[-1])


def route_max_exact(g: Any, y: Any, taps: list[Any], dests: list[Any],
                    inside: list[Any] | None = None) -> None:
    """Add g to dests[k] for the tap k that torch's max pooling picks, one per window.

    taps are a window's elements in row-major order, each a view over every window (as y);
    inside[k] (None: all) says where tap k lies on the input rather than on padding. torch
    keeps the first in-bounds element greater than all before it, or any NaN, so: the last
    NaN of a NaN window, else the first in-bounds maximum (an all -inf window's gradient goes
    to its first input, not to padding). Writing g with np.where keeps the other taps at exact
    zeros when g is infinite or NaN. The slow path of route_first_max's callers: it takes a
    pass per tap and an index array.
    """
    xp = backend.xp_of(g)
    any_nan = bool(xp.isnan(y).any())
    pick = xp.full(y.shape, -1, dtype=np.int32)
    for k, v in enumerate(taps):
        hit = xp.isnan(v) if any_nan else xp.zeros(y.shape, bool)
        np.logical_or(hit, (v == y) & (pick < 0), out=hit)  # v == NaN y is never true
        if inside is not None and inside[k] is not None:
            hit &= inside[k]
        pick[hit] = k
    zero = g.dtype.type(0)
    for k, d in enumerate(dests):
        d += xp.where(pick == k, g, zero)


class MaxPool(_Pool):
    """Maximum over each window; padding counts as -inf.

    The gradient of a window goes to exactly one input, the first maximum in row-major window
    order (as in PyTorch), so tied maxima (zeros after a ReLU, say) do not multiply it; for
    a NaN window, its last NaN, and for an all -inf one, its first input (route_max_exact).
    """

    ir_name = "MaxPool"
    what = "MaxPool2d"

    def forward(self, x: Any) -> Any:
        xp, out = self._prepare(x, -np.inf)
        cm = reduce_views([xp[..., c] for c in self.cols], np.maximum)  # (N, C, Hp, OW)
        y = reduce_views([cm[:, :, r] for r in self.rows], np.maximum)
        if self.needs_input_grad[0]:
            self.xp, self.cm, self.y, self.out = xp, cm, y, out
        return y

    def backward(self, gy: Any) -> tuple[Any]:
        xp, cm, rows, cols = self.xp, self.cm, self.rows, self.cols
        if not (all_finite(self.y) and all_finite(gy)):
            return (self._backward_exact(gy),)
        gcm, gxp, over_h, over_w = self._grad_buffers(xp.shape, self.out, gy.dtype)
        # the first maximal row of the window, then the first maximal column in that row:
        # together the first maximum in row-major order
        route_first_max(gy, self.y, [cm[:, :, r] for r in rows],
                         [gcm[:, :, r] for r in rows], over_h)
        route_first_max(gcm, cm, [xp[..., c] for c in cols], [gxp[..., c] for c in cols],
                         over_w)
        return (self._unpad(gxp),)

    def _backward_exact(self, gy: Any) -> Any:
        """The gradient for a non-finite output or gradient, routed tap by tap (see
        route_max_exact); the separable route would send a NaN window's gradient to its last
        element, an all -inf one's to padding, and make inf - inf of an infinite gradient."""
        xp, am = self.xp, self.am
        gxp = am.zeros(xp.shape, dtype=gy.dtype)
        inside = []  # per axis and kernel offset: which windows' taps fall on the input
        for ax in range(2):
            o, s, p, n = self.out[ax], self.stride[ax], self.padding[ax], self.x_shape[2 + ax]
            pos = np.arange(o)[:, None] * s + np.arange(self.kernel[ax])[None, :]
            inside.append((pos >= p) & (pos < p + n))  # (out, kernel)
        taps, dests, where = [], [], []
        for i, r in enumerate(self.rows):
            for j, c in enumerate(self.cols):
                taps.append(xp[:, :, r, c])
                dests.append(gxp[:, :, r, c])
                where.append(backend.same_device_as(np.outer(inside[0][:, i], inside[1][:, j]),
                                                    gy))
        route_max_exact(gy, self.y, taps, dests, where)
        return self._unpad(gxp)


class AveragePool(_Pool):
    """Mean over each window (count_include_pad: whether padded zeros count in the divisor)."""

    ir_name = "AveragePool"
    what = "AvgPool2d"

    def __init__(self, kernel: Any, stride: Any = None, padding: Any = 0,
                 count_include_pad: bool = True, ceil_mode: bool = False) -> None:
        super().__init__(kernel, stride, padding, ceil_mode)
        self.count_include_pad = bool(count_include_pad)

    def _divisor(self, x: Any, out: tuple[int, int]) -> Any:
        """Per-output counts of the pixels each window covers (padding included with
        count_include_pad; ceil_mode's overhang never), or one number when all are equal."""
        ch, cw = (pool_window_counts(x.shape[2 + i], out[i], self.kernel[i], self.stride[i],
                                     self.padding[i], self.padding[i], 1,
                                     self.count_include_pad) for i in range(2))
        if ch.min() == ch.max() and cw.min() == cw.max():
            return x.dtype.type(ch[0] * cw[0])
        return backend.same_device_as(np.outer(ch, cw).astype(x.dtype), x)

    def forward(self, x: Any) -> Any:
        xp, out = self._prepare(x, 0.0)
        cs = reduce_views([xp[..., c] for c in self.cols], np.add)  # (N, C, Hp, OW)
        y = reduce_views([cs[:, :, r] for r in self.rows], np.add)
        self.divisor = self._divisor(x, out)
        y /= self.divisor
        self.xp_shape, self.out = xp.shape, out
        return y

    def backward(self, gy: Any) -> tuple[Any]:
        gcs, gxp, over_h, over_w = self._grad_buffers(self.xp_shape, self.out, gy.dtype)
        g = gy / self.divisor
        _spread([gcs[:, :, r] for r in self.rows], [g] * len(self.rows), over_h)
        _spread([gxp[..., c] for c in self.cols], [gcs] * len(self.cols), over_w)
        return (self._unpad(gxp),)


class GlobalAveragePool(Function):
    """Mean over all spatial positions: (N, C, H, W) -> (N, C, 1, 1)."""

    ir_name = "GlobalAveragePool"
    simple_lowering = True

    def forward(self, x: Any) -> Any:
        if x.ndim != 4:
            raise ShapeError(f"GlobalAvgPool2d expected input of shape (batch, channels, H, W), "
                             f"found {x.shape}")
        n, c = x.shape[:2]
        self.x_shape = x.shape
        return x.reshape(n, c, -1).mean(axis=2).reshape(n, c, 1, 1)

    def backward(self, gy: Any) -> tuple[Any]:
        h, w = self.x_shape[2:]
        gx = backend.xp_of(gy).empty(self.x_shape, dtype=gy.dtype)
        gx[...] = gy / gy.dtype.type(h * w)
        return (gx,)


def max_pool2d(x: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
               ceil_mode: bool = False) -> Tensor:
    """Max pooling over kernel_size windows (stride defaults to kernel_size)."""
    return MaxPool.apply(x, kernel=kernel_size, stride=stride, padding=padding,
                         ceil_mode=ceil_mode)


def avg_pool2d(x: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
               count_include_pad: bool = True, ceil_mode: bool = False) -> Tensor:
    """Average pooling over kernel_size windows (stride defaults to kernel_size)."""
    return AveragePool.apply(x, kernel=kernel_size, stride=stride, padding=padding,
                             count_include_pad=count_include_pad, ceil_mode=ceil_mode)


def global_avg_pool2d(x: Tensor) -> Tensor:
    """Mean over H and W, keeping them as size-1 axes: (N, C, 1, 1)."""
    return GlobalAveragePool.apply(x)


# -- 1-D: the 2-D ops on (N, C, 1, L), whose reshapes are views ------------------------------
class _Pool1d(Function):
    """A 2-D pool run on the (N, C, 1, L) view of (N, C, L) input: one implementation of each
    pool; lowered to ONNX's 1-D op."""

    pool: _Pool

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX's 1-D MaxPool/AveragePool, as the 1-D pooling layers lower."""
        return b.node(self.pool.ir_name, xs, **self.pool.onnx_attrs(first_axis=1))

    def forward(self, x: Any) -> Any:
        self.pool.needs_input_grad = self.needs_input_grad
        y = self.pool.forward(x.reshape(*x.shape[:2], 1, x.shape[2]))
        return y.reshape(*y.shape[:2], y.shape[3])

    def backward(self, gy: Any) -> tuple[Any]:
        (gx,) = self.pool.backward(gy.reshape(*gy.shape[:2], 1, gy.shape[2]))
        return (gx.reshape(*gx.shape[:2], gx.shape[3]),)


class MaxPool1d(_Pool1d):
    """Maximum over windows of (N, C, L) (the 2-D MaxPool on H = 1)."""

    ir_name = "MaxPool"

    def __init__(self, kernel: int, stride: int | None = None, padding: int = 0,
                 ceil_mode: bool = False) -> None:
        self.pool = MaxPool((1, kernel), (1, kernel if stride is None else stride),
                            (0, padding), ceil_mode)


class AveragePool1d(_Pool1d):
    """Mean over windows of (N, C, L) (the 2-D AveragePool on H = 1)."""

    ir_name = "AveragePool"

    def __init__(self, kernel: int, stride: int | None = None, padding: int = 0,
                 count_include_pad: bool = True, ceil_mode: bool = False) -> None:
        self.pool = AveragePool((1, kernel), (1, kernel if stride is None else stride),
                                (0, padding), count_include_pad, ceil_mode)


def _pool1d_args(what: str, x: Tensor, kernel_size: Any, stride: Any, padding: Any,
                 ceil_mode: bool) -> dict[str, int]:
    """A 1-D pool's kernel, stride and padding, checked against each other and against x."""
    k = single(kernel_size, "kernel_size")
    s = k if stride is None else single(stride, "stride")
    p = single(padding, "padding", minimum=0)
    if p > k // 2:
        raise ConfigError(f"{what}: padding must be at most half the kernel size {k}, found {p}")
    if x.ndim != 3:
        raise ShapeError(f"{what} expected input of shape (batch, channels, length), found "
                         f"{tuple(x.shape)}")
    length = x.shape[2]
    if pooled_size(length, k, s, p, p, ceil=ceil_mode) < 1:
        raise ShapeError(f"{what} with kernel {k}, stride {s}, padding {p} and "
                         f"ceil_mode={ceil_mode} expected an input length of at least "
                         f"{min_pooled_input(k, s, p, ceil_mode)}, found {length} (input shape "
                         f"{tuple(x.shape)})")
    return {"kernel": k, "stride": s, "padding": p}


def max_pool1d(x: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
               ceil_mode: bool = False) -> Tensor:
    """Max pooling of (N, C, L) over kernel_size windows (stride defaults to kernel_size)."""
    args = _pool1d_args("MaxPool1d", x, kernel_size, stride, padding, ceil_mode)
    return MaxPool1d.apply(x, **args, ceil_mode=ceil_mode)


def avg_pool1d(x: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0,
               count_include_pad: bool = True, ceil_mode: bool = False) -> Tensor:
    """Average pooling of (N, C, L) over kernel_size windows (stride defaults to kernel_size)."""
    args = _pool1d_args("AvgPool1d", x, kernel_size, stride, padding, ceil_mode)
    return AveragePool1d.apply(x, **args, count_include_pad=count_include_pad,
                               ceil_mode=ceil_mode)
