"""2-D convolution (ONNX Conv) on NCHW arrays: im2col + one batched matrix product.

Layout, not arithmetic, decides the speed of small convolutions in NumPy, so the data are
arranged for long contiguous copies:

* Every (sample, channel) plane is copied once, zero padded, into a flat buffer with a small
  zero tail. With stride 1 the im2col matrix then covers *full-width* rows: output column
  `ow` runs over the whole padded width, so each kernel offset is a single contiguous run of
  `OH * Wp` values per plane instead of `OH` runs of `OW`. The `Wp - OW` extra columns are
  garbage that the forward crops and the backward feeds with zero gradient.
* The input gradient is the transposed product `W^T @ gy` written straight into a buffer laid
  out as `(kernel offset, channel, sample, plane)`; summing the kernel offsets back (col2im)
  is then one contiguous add per offset over the whole batch, each shifted by `i * Wp + j`.
  Strides above 1 reuse this by spreading the output gradient onto the stride-1 grid.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..autograd.function import Function
from ..autograd.tensor import Tensor
from ..errors import ConfigError, ShapeError


def pair(value: Any, name: str, minimum: int = 1) -> tuple[int, int]:
    """Normalise an int or a pair of ints to a (height, width) tuple, checking the range."""
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        out = (int(value), int(value))
    elif (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)):
        out = (int(value[0]), int(value[1]))
    else:
        raise ConfigError(f"{name} must be an int or a pair of ints, found {value!r}")
    if min(out) < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, found {value!r}")
    return out


class _Geometry(NamedTuple):
    """Sizes of one convolution: padded input, output, and the im2col position grid."""

    hp: int  # padded height and width
    wp: int
    oh: int  # output height and width
    ow: int
    q: int  # im2col columns per output row: wp (full width, stride 1) or ow (stride > 1)
    tail: int  # zeros after each padded plane so full-width windows never leave the buffer


def conv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """Output length along one axis (floor mode, like ONNX and PyTorch)."""
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def _geometry(what: str, x: Any, kh: int, kw: int, stride: tuple[int, int],
              padding: tuple[int, int], dilation: tuple[int, int]) -> _Geometry:
    h, w = x.shape[2:]
    oh = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    ow = conv_output_size(w, kw, stride[1], padding[1], dilation[1])
    if oh < 1 or ow < 1:
        eh, ew = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
        raise ShapeError(f"{what} with a {kh}x{kw} kernel (dilation {dilation}, padding "
                         f"{padding}) expected an input of at least {eh - 2 * padding[0]}x"
                         f"{ew - 2 * padding[1]} pixels, found {h}x{w} (input shape {x.shape})")
    hp, wp = h + 2 * padding[0], w + 2 * padding[1]
    q = wp if stride == (1, 1) else ow
    return _Geometry(hp, wp, oh, ow, q, dilation[1] * (kw - 1))


def _padded_planes(x: Any, g: _Geometry, padding: tuple[int, int]) -> Any:
    """Copy x into an (N, C, Hp*Wp + tail) buffer: zero border and zero tail."""
    n, c, h, w = x.shape
    size = g.hp * g.wp
    if padding == (0, 0):
        buf = np.empty((n, c, size + g.tail), dtype=x.dtype)
        buf[:, :, :size] = x.reshape(n, c, size)
        buf[:, :, size:] = 0
    else:
        buf = np.zeros((n, c, size + g.tail), dtype=x.dtype)
        ph, pw = padding
        buf[:, :, :size].reshape(n, c, g.hp, g.wp)[:, :, ph:ph + h, pw:pw + w] = x
    return buf


def _im2col(buf: Any, kh: int, kw: int, g: _Geometry, stride: tuple[int, int],
            dilation: tuple[int, int]) -> Any:
    """(N, C*kh*kw, OH*Q) columns: one row per (channel, kernel offset), one column per position."""
    n, c, _ = buf.shape
    sn, sc, it = buf.strides[0], buf.strides[1], buf.itemsize
    view = as_strided(buf, (n, c, kh, kw, g.oh, g.q),
                      (sn, sc, dilation[0] * g.wp * it, dilation[1] * it,
                       stride[0] * g.wp * it, stride[1] * it), writeable=False)
    return np.ascontiguousarray(view).reshape(n, c * kh * kw, g.oh * g.q)


class Conv(Function):
    """2-D convolution of x (N, C, H, W) with w (O, C/groups, kh, kw) plus an optional bias (O,)."""

    ir_name = "Conv"

    def __init__(self, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                 groups: int = 1) -> None:
        self.stride = pair(stride, "stride")
        self.padding = pair(padding, "padding", minimum=0)
        self.dilation = pair(dilation, "dilation")
        if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
            raise ConfigError(f"groups must be a positive integer, found {groups!r}")
        self.groups = int(groups)

    def forward(self, x: Any, w: Any, b: Any = None) -> Any:
        groups = self.groups
        if w.ndim != 4:
            raise ShapeError(f"Conv expected a weight of shape (out_channels, in_channels/groups,"
                             f" kh, kw), found {w.shape}")
        o, cg, kh, kw = w.shape
        if x.ndim != 4 or x.shape[1] != cg * groups:
            raise ShapeError(f"Conv2d expected input of shape (batch, {cg * groups}, H, W), "
                             f"found {x.shape}")
        if o % groups:
            raise ShapeError(f"Conv expected out_channels divisible by groups={groups}, "
                             f"found weight shape {w.shape}")
        if b is not None and b.shape != (o,):
            raise ShapeError(f"Conv expected a bias of shape ({o},), found {b.shape}")
        g = _geometry("Conv2d", x, kh, kw, self.stride, self.padding, self.dilation)
        n = x.shape[0]
        cols = _im2col(_padded_planes(x, g, self.padding), kh, kw, g, self.stride, self.dilation)
        cols = cols.reshape(n, groups, cg * kh * kw, g.oh * g.q)
        out = np.matmul(w.reshape(groups, o // groups, cg * kh * kw), cols)
        out = out.reshape(n, o, g.oh, g.q)
        if g.q != g.ow:  # crop the full-width garbage columns (one copy, adding the bias)
            y = np.empty((n, o, g.oh, g.ow), dtype=out.dtype)
            if b is None:
                y[...] = out[..., :g.ow]
            else:
                np.add(out[..., :g.ow], b.reshape(o, 1, 1), out=y)
        else:
            y = out
            if b is not None:
                y += b.reshape(o, 1, 1)
        self.geometry, self.x_shape, self.w_shape = g, x.shape, w.shape
        if self.needs_input_grad[1]:
            self.cols = cols
        if self.needs_input_grad[0]:
            self.w = w
        return y

    def backward(self, gy: Any) -> tuple[Any, ...]:
        g, (n, c, h, w_) = self.geometry, self.x_shape
        need = self.needs_input_grad
        o = gy.shape[1]
        groups = self.groups
        if g.q != g.ow:  # back onto the full-width grid, zero in the cropped columns
            gf = np.zeros((n, o, g.oh, g.q), dtype=gy.dtype)
            gf[..., :g.ow] = gy
        else:
            gf = np.ascontiguousarray(gy)
        gf = gf.reshape(n, groups, o // groups, g.oh * g.q)
        gw = gb = gx = None
        if need[1]:
            # cols @ gf^T keeps the long position axis as the product's inner dimension
            gwt = np.matmul(self.cols, gf.transpose(0, 1, 3, 2)).sum(axis=0)  # (G, Kg, Og)
            gw = gwt.transpose(0, 2, 1).reshape(self.w_shape)
        if len(need) == 3 and need[2]:
            gb = gf.sum(axis=3).sum(axis=0).reshape(o)
        if need[0]:
            gx = self._input_grad(gy, gf, n, c, h, w_)
        return (gx, gw) if len(need) == 2 else (gx, gw, gb)

    def _input_grad(self, gy: Any, gf: Any, n: int, c: int, h: int, w_: int) -> Any:
        """d(loss)/dx: W^T @ gy into offset-major planes, then one shifted add per offset."""
        g, w, groups = self.geometry, self.w, self.groups
        o, cg, kh, kw = w.shape
        (sh, sw), (dh, dw), (ph, pw) = self.stride, self.dilation, self.padding
        if g.q != g.wp or (sh, sw) != (1, 1):
            # spread the gradient onto the stride-1 full-width grid (zeros between)
            rows = g.hp - dh * (kh - 1)
            gd = np.zeros((n, o, rows, g.wp), dtype=gy.dtype)
            gd[:, :, :sh * g.oh:sh, :sw * g.ow:sw] = gy
            gd = gd.reshape(n, groups, o // groups, rows * g.wp)
        else:
            rows, gd = g.oh, gf
        plane, pos = g.hp * g.wp, rows * g.wp
        koff = kh * kw
        # buf[grp, offset, channel-in-group, sample, position]; each (sample, group) product is a
        # matrix with rows (offset, channel) at a uniform stride n*plane, so matmul writes it
        buf = np.empty((groups, koff, cg, n, plane), dtype=gy.dtype)
        if pos < plane:
            buf[..., pos:] = 0
        out = buf.reshape(groups, koff * cg, n, plane)[..., :pos].transpose(2, 0, 1, 3)
        wt = w.reshape(groups, o // groups, cg, koff).transpose(0, 3, 2, 1)
        np.matmul(np.ascontiguousarray(wt).reshape(groups, koff * cg, o // groups), gd, out=out)
        total = c * n * plane
        acc = np.zeros(total + dh * (kh - 1) * g.wp + dw * (kw - 1), dtype=gy.dtype)
        for i in range(kh):
            for j in range(kw):
                shift = i * dh * g.wp + j * dw
                dst = acc[shift:shift + total].reshape(groups, cg * n * plane)
                dst += buf[:, i * kw + j].reshape(groups, cg * n * plane)
        planes = acc[:total].reshape(c, n, g.hp, g.wp)[:, :, ph:ph + h, pw:pw + w_]
        return np.ascontiguousarray(planes.transpose(1, 0, 2, 3))


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,
           padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
    """2-D convolution of an NCHW tensor (cross-correlation, like PyTorch and ONNX)."""
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    if bias is None:
        return Conv.apply(x, weight, **attrs)
    return Conv.apply(x, weight, bias, **attrs)
