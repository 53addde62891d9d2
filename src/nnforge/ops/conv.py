"""2-D convolution (ONNX Conv) on NCHW arrays: im2col plus one matrix product per sample.

Small convolutions are bound by memory layout and NumPy call overhead more than by
arithmetic, so the layouts are chosen for long contiguous runs:

* Forward: the im2col columns of each sample form one (C*kh*kw, OH*OW) matrix, copied from a
  strided view of the (padded) input in one call, and `W @ cols` per sample yields the output
  directly in NCHW order, so no transposing copy follows.
* Input gradient (col2im without np.add.at): the output gradient is spread onto a
  *full-width* grid (every column of the padded input, zeros elsewhere), so each kernel offset
  (i, j) becomes a plain shift by `i*Wp + j` of the flattened planes. `W^T @ gy` is written into
  a buffer laid out (sample, kernel offset, channel, plane), and the offsets are summed back in
  one reduction over a strided view that reads each offset's rows shifted.
* Large batches are split in two halves computed on two threads: NumPy and BLAS release the
  GIL, and the per-sample products are too small for OpenBLAS to thread them itself.

GPU (CuPy) arrays take a plain path instead: im2col by one strided copy per kernel offset,
one batched product, col2im by one strided add per offset; no threads or scratch buffers.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided

from .. import backend
from ..autograd.function import Function
from ..autograd.tensor import Tensor
from ..backend import usable_cpus
from ..errors import ConfigError, ShapeError

#: Work (multiply-adds) below which a second thread costs more than it saves.
SPLIT_MIN_WORK = 1 << 21
#: OpenBLAS threads a product itself above about this many multiply-adds (2 * 65536 * 4);
#: splitting such batches over our own threads as well would oversubscribe the cores.
BLAS_THREADED_WORK = 1 << 19
#: Most elements one chunk's temporary buffers may hold (bounds memory for large inputs).
CHUNK_ELEMENTS = 1 << 23
#: Threads a convolution may use: two when this process may run on two CPUs (set 1 to turn
#: the splitting off).
THREADS = min(2, usable_cpus())


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


def conv_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    """Output length along one axis (floor mode, like ONNX and PyTorch)."""
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


# -- running chunks of the batch, on two threads when it pays -------------------------------
_EXECUTOR: ThreadPoolExecutor | None = None
_EXECUTOR_PID = 0
_EXECUTOR_LOCK = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    global _EXECUTOR, _EXECUTOR_PID
    with _EXECUTOR_LOCK:
        if _EXECUTOR is None or _EXECUTOR_PID != os.getpid():  # a forked child has no thread
            _EXECUTOR = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nnforge-conv")
            _EXECUTOR_PID = os.getpid()
        return _EXECUTOR


def _run_chunks(fn: Callable[[int, int], None], n: int, per_sample_elements: int,
                per_sample_work: int) -> None:
    """Call fn(lo, hi) over chunks covering range(n); two threads share them when it pays."""
    chunk = max(1, min(n, CHUNK_ELEMENTS // max(per_sample_elements, 1)))
    # the chunks never depend on THREADS: the weight gradient sums one partial per chunk, so
    # other chunks would round differently and THREADS (the CPU affinity) would change weights
    split = (n >= 2 and per_sample_work * n >= SPLIT_MIN_WORK
             and per_sample_work < BLAS_THREADED_WORK)
    if split:
        chunk = min(chunk, (n + 1) // 2)
    bounds = [(lo, min(lo + chunk, n)) for lo in range(0, n, chunk)]
    if not split or THREADS < 2 or len(bounds) < 2:
        for lo, hi in bounds:
            fn(lo, hi)
        return

    def run(part: list[tuple[int, int]]) -> None:
        for lo, hi in part:
            fn(lo, hi)

    future = _executor().submit(run, bounds[1::2])
    try:
        run(bounds[0::2])
    finally:
        future.result()


# -- scratch buffers reused between calls ---------------------------------------------------
#: Scratch buffers are kept per thread for the next call with the same shape, up to this many
#: elements in all: their zero regions then need no clearing (and no page faults) again.
SCRATCH_ELEMENTS = 1 << 23
_SCRATCH = threading.local()


def _scratch(tag: Any, shape: tuple[int, ...], dtype: Any) -> Any:
    """A zero-filled buffer the first time; later the same buffer, holding what was left in it.

    `tag` must name everything that decides which elements callers write (so zeros stay zero).
    """
    cache = getattr(_SCRATCH, "buffers", None)
    if cache is None:
        cache = _SCRATCH.buffers = {}
    key = (tag, shape, np.dtype(dtype).str)
    buf = cache.pop(key, None)
    if buf is None:
        buf = np.zeros(shape, dtype=dtype)
    cache[key] = buf  # most recently used last; the oldest go first when over budget
    while sum(b.size for b in cache.values()) > SCRATCH_ELEMENTS:
        cache.pop(next(iter(cache)))
    return buf


# -- geometry and im2col --------------------------------------------------------------------
class _Geometry(NamedTuple):
    """Sizes of one convolution."""

    n: int
    c: int
    h: int
    w: int
    o: int
    kh: int
    kw: int
    hp: int  # padded height and width
    wp: int
    oh: int  # output height and width
    ow: int


def _geometry(x: Any, w: Any, groups: int, stride: tuple[int, int], padding: tuple[int, int],
              dilation: tuple[int, int]) -> _Geometry:
    if w.ndim != 4:
        raise ShapeError(f"Conv expected a weight of shape (out_channels, in_channels/groups, "
                         f"kh, kw), found {w.shape}")
    o, cg, kh, kw = w.shape
    if x.ndim != 4 or x.shape[1] != cg * groups:
        raise ShapeError(f"Conv2d expected input of shape (batch, {cg * groups}, H, W), "
                         f"found {x.shape}")
    if o % groups:
        raise ShapeError(f"Conv expected out_channels divisible by groups={groups}, found "
                         f"weight shape {w.shape}")
    n, c, h, wd = x.shape
    oh = conv_output_size(h, kh, stride[0], padding[0], dilation[0])
    ow = conv_output_size(wd, kw, stride[1], padding[1], dilation[1])
    if oh < 1 or ow < 1:
        eh, ew = dilation[0] * (kh - 1) + 1, dilation[1] * (kw - 1) + 1
        raise ShapeError(f"Conv2d with a {kh}x{kw} kernel (dilation {dilation}, padding "
                         f"{padding}) expected an input of at least {eh - 2 * padding[0]}x"
                         f"{ew - 2 * padding[1]} pixels, found {h}x{wd} (input shape {x.shape})")
    return _Geometry(n, c, h, wd, o, kh, kw, h + 2 * padding[0], wd + 2 * padding[1], oh, ow)


def _pad(x: Any, padding: tuple[int, int]) -> Any:
    if padding == (0, 0):
        return x
    ph, pw = padding
    n, c, h, w = x.shape
    xp = backend.xp_of(x).zeros((n, c, h + 2 * ph, w + 2 * pw), dtype=x.dtype)
    xp[:, :, ph:ph + h, pw:pw + w] = x
    return xp


def _windows(xp: Any, g: _Geometry, stride: tuple[int, int], dilation: tuple[int, int],
             row_taps: int = 1) -> Any:
    """(N, C, kh, kw, OH, OW) read-only strided view of the padded input: the im2col columns.

    With row_taps = r > 1 the output rows come grouped by their remainder modulo r, as
    (N, C, kh, kw, r, OH/r, OW): row oh = r*q + i sits at [..., i, q, :]. Each group is then
    one contiguous slab of the product, which is what a following r-row max pool wants.
    """
    sn, sc, sh, sw = xp.strides
    if row_taps > 1:
        return as_strided(xp, (xp.shape[0], g.c, g.kh, g.kw, row_taps, g.oh // row_taps, g.ow),
                          (sn, sc, dilation[0] * sh, dilation[1] * sw, stride[0] * sh,
                           row_taps * stride[0] * sh, stride[1] * sw), writeable=False)
    return as_strided(xp, (xp.shape[0], g.c, g.kh, g.kw, g.oh, g.ow),
                      (sn, sc, dilation[0] * sh, dilation[1] * sw, stride[0] * sh,
                       stride[1] * sw), writeable=False)


def _view_as(a: Any, shape: tuple[int, ...]) -> Any:
    """a reshaped as a view, or an error: a silent copy would take writes meant for a."""
    if _RESHAPE_TAKES_COPY:
        return a.reshape(shape, copy=False)
    view = a.view()
    view.shape = shape  # NumPy < 2.1 (deprecated from 2.5, where the branch above runs)
    return view


_RESHAPE_TAKES_COPY = tuple(int(v) for v in np.__version__.split(".")[:2]) >= (2, 1)


class Conv(Function):
    """2-D convolution of x (N, C, H, W) with w (O, C/groups, kh, kw) plus an optional bias (O,)."""

    ir_name = "Conv"
    #: output rows grouped by remainder modulo this (see _windows); ConvMaxPool sets it
    row_taps = 1

    def __init__(self, stride: Any = 1, padding: Any = 0, dilation: Any = 1,
                 groups: int = 1) -> None:
        self.stride = pair(stride, "stride")
        self.padding = pair(padding, "padding", minimum=0)
        self.dilation = pair(dilation, "dilation")
        if not isinstance(groups, (int, np.integer)) or isinstance(groups, bool) or groups < 1:
            raise ConfigError(f"groups must be a positive integer, found {groups!r}")
        self.groups = int(groups)

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX Conv, as the Conv2d layer lowers (the kernel is the weight's shape)."""
        ph, pw = self.padding
        return b.node("Conv", xs, kernel_shape=list(b.shape(xs[1])[2:]),
                      strides=list(self.stride), pads=[ph, pw, ph, pw],
                      dilations=list(self.dilation), group=self.groups)

    def forward(self, x: Any, w: Any, b: Any = None) -> Any:
        g = _geometry(x, w, self.groups, self.stride, self.padding, self.dilation)
        if b is not None and b.shape != (g.o,):
            raise ShapeError(f"Conv expected a bias of shape ({g.o},), found {b.shape}")
        if type(x) is not np.ndarray and backend.is_device_array(x):
            return self._forward_device(x, w, b, g)
        groups, kg, p = self.groups, w.shape[1] * g.kh * g.kw, g.oh * g.ow
        og = g.o // groups
        windows = _windows(_pad(x, self.padding), g, self.stride, self.dilation, self.row_taps)
        wg = w.reshape(groups, og, kg)
        # the bias rides in the product as one more weight column times a row of ones, which
        # saves a pass over the output here and gives its gradient with the weights' later
        rows = kg + (b is not None)
        if b is not None:
            wg = np.concatenate([wg, b.reshape(groups, og, 1).astype(wg.dtype)], axis=2)
        y = np.empty((g.n, g.o, g.oh, g.ow), dtype=np.result_type(x, w))
        keep = self.needs_input_grad[1]
        cols = np.empty((g.n, groups, rows, p), dtype=x.dtype) if keep else None

        def chunk(lo: int, hi: int) -> None:
            m = hi - lo
            c = cols[lo:hi] if cols is not None else np.empty((m, groups, rows, p), x.dtype)
            src = windows[lo:hi].reshape(m, groups, g.c // groups, *windows.shape[2:])
            dst = _view_as(c[:, :, :kg], src.shape)  # splits axes only: a view, never a copy
            dst[...] = src
            if rows > kg:
                c[:, :, kg] = 1
            np.matmul(wg, c, out=y[lo:hi].reshape(m, groups, og, p))

        work = g.o * rows * p
        _run_chunks(chunk, g.n, g.c * g.kh * g.kw * p, work)
        self.geometry, self.cols, self.w = g, cols, w
        return y

    def backward(self, gy: Any) -> tuple[Any, ...]:
        if type(gy) is not np.ndarray and backend.is_device_array(gy):
            return self._backward_device(gy)
        g, w, groups = self.geometry, self.w, self.groups
        need = self.needs_input_grad
        og, p = g.o // groups, g.oh * g.ow
        gy4 = np.ascontiguousarray(gy).reshape(g.n, groups, og, p)
        gw = gb = gx = None
        want_gb = len(need) == 3 and need[2]
        if want_gb and not need[1]:  # no columns kept to take it from
            gb = np.einsum("nop->o", gy4.reshape(g.n, g.o, p))
        kg = w.shape[1] * g.kh * g.kw
        partial_gw: dict[int, Any] = {}
        if need[0]:
            gx = np.empty((g.n, g.c, g.h, g.w), dtype=gy.dtype)
            wt = self._offset_major_weight()
        lock = threading.Lock()

        def chunk(lo: int, hi: int) -> None:
            if need[1]:
                # cols @ gy^T keeps the long position axis as the products' inner dimension
                part = np.matmul(self.cols[lo:hi], gy4[lo:hi].transpose(0, 1, 3, 2)).sum(axis=0)
                with lock:
                    partial_gw[lo] = part
            if need[0]:
                gx[lo:hi] = self._input_grad(gy[lo:hi], wt)

        plane = g.hp * g.wp
        _run_chunks(chunk, g.n, g.kh * g.kw * g.c * plane + kg * p, g.o * kg * p)
        if need[1]:
            # summed in batch order, so the result does not depend on thread timing
            parts = [partial_gw[k] for k in sorted(partial_gw)]
            rows = self.cols.shape[2]
            gwt = (np.zeros((groups, rows, og), dtype=gy.dtype) if not parts  # an empty batch
                   else parts[0] if len(parts) == 1 else np.sum(parts, axis=0))
            # (G, Kg, Og) -> (O, Cg, kh, kw); the ones row's products are the bias gradient
            gw = np.ascontiguousarray(gwt[:, :kg].transpose(0, 2, 1)).reshape(w.shape)
            if want_gb:
                gb = gwt[:, kg].reshape(g.o) if rows > kg else np.zeros(g.o, gy.dtype)
        return (gx, gw) if len(need) == 2 else (gx, gw, gb)

    # -- GPU arrays: the plain im2col path ---------------------------------------------------
    def _taps(self, g: _Geometry) -> list[tuple[int, int, slice, slice]]:
        """(i, j, rows, cols) per kernel offset: the padded input's pixels it reads."""
        (sh, sw), (dh, dw) = self.stride, self.dilation
        return [(i, j, slice(i * dh, i * dh + sh * (g.oh - 1) + 1, sh),
                 slice(j * dw, j * dw + sw * (g.ow - 1) + 1, sw))
                for i in range(g.kh) for j in range(g.kw)]

    def _forward_device(self, x: Any, w: Any, b: Any, g: _Geometry) -> Any:
        if self.row_taps != 1:  # Sequential fuses conv and pool on the CPU only
            raise backend.DeviceError("the fused conv + max pool op (conv_max_pool2d) runs on "
                                      "the CPU only; on a GPU call conv2d, then max_pool2d")
        xp, groups = backend.xp_of(x), self.groups
        kg, p = w.shape[1] * g.kh * g.kw, g.oh * g.ow
        padded = _pad(x, self.padding)
        cols = xp.empty((g.n, g.c, g.kh, g.kw, g.oh, g.ow), dtype=x.dtype)
        for i, j, rows, columns in self._taps(g):
            cols[:, :, i, j] = padded[:, :, rows, columns]
        cols = cols.reshape(g.n, groups, kg, p)  # rows of a group: (channel, kh, kw)
        y = xp.matmul(w.reshape(groups, g.o // groups, kg), cols).reshape(g.n, g.o, g.oh, g.ow)
        if b is not None:
            y += b.reshape(1, g.o, 1, 1).astype(y.dtype, copy=False)
        self.geometry, self.w = g, w
        self.cols = cols if self.needs_input_grad[1] else None
        return y

    def _backward_device(self, gy: Any) -> tuple[Any, ...]:
        g, w, groups, need = self.geometry, self.w, self.groups, self.needs_input_grad
        xp = backend.xp_of(gy)
        og, kg, p = g.o // groups, w.shape[1] * g.kh * g.kw, g.oh * g.ow
        gy4 = xp.ascontiguousarray(gy).reshape(g.n, groups, og, p)
        gx = gw = gb = None
        if len(need) == 3 and need[2]:
            gb = gy.sum(axis=(0, 2, 3))
        if need[1]:
            gw = xp.matmul(gy4, self.cols.transpose(0, 1, 3, 2)).sum(axis=0).reshape(w.shape)
        if need[0]:
            cols = xp.matmul(w.reshape(groups, og, kg).transpose(0, 2, 1), gy4)
            cols = cols.reshape(g.n, g.c, g.kh, g.kw, g.oh, g.ow)
            gxp = xp.zeros((g.n, g.c, g.hp, g.wp), dtype=gy.dtype)
            for i, j, rows, columns in self._taps(g):
                gxp[:, :, rows, columns] += cols[:, :, i, j]
            (ph, pw) = self.padding
            gx = xp.ascontiguousarray(gxp[:, :, ph:ph + g.h, pw:pw + g.w])
        return (gx, gw) if len(need) == 2 else (gx, gw, gb)

    def _offset_major_weight(self) -> Any:
        """W^T as (G, kh*kw*Cg, Og): rows ordered (kernel offset, channel)."""
        w, groups = self.w, self.groups
        o, cg, kh, kw = w.shape
        wt = w.reshape(groups, o // groups, cg, kh * kw).transpose(0, 3, 2, 1)
        return np.ascontiguousarray(wt).reshape(groups, kh * kw * cg, o // groups)

    def _input_grad(self, gy: Any, wt: Any) -> Any:
        """d(loss)/dx for a chunk of samples: W^T @ gy per offset, then the shifted sum."""
        g, groups = self.geometry, self.groups
        n = gy.shape[0]
        cg, og, koff = g.c // groups, g.o // groups, g.kh * g.kw
        (sh, sw), (dh, dw), (ph, pw) = self.stride, self.dilation, self.padding
        # the output gradient on the stride-1 full-width grid, zero between and beside
        rows = g.hp - dh * (g.kh - 1)
        # zero except where gy goes, which the tag pins down
        gd = _scratch(("gd", self.stride, g.oh, g.ow), (n, g.o, rows, g.wp), gy.dtype)
        r = self.row_taps
        if r == 1:
            gd[:, :, :sh * (g.oh - 1) + 1:sh, :sw * (g.ow - 1) + 1:sw] = gy
        else:  # output row r*q + i is gy's [i, q] (see _windows)
            gyr = gy.reshape(n, g.o, r, g.oh // r, g.ow)
            for i in range(r):
                gd[:, :, i * sh::r * sh, :sw * (g.ow - 1) + 1:sw][:, :, :g.oh // r] = gyr[:, :, i]
        plane, pos = g.hp * g.wp, rows * g.wp
        # the tail of each plane beyond `pos` stays zero: the product never writes it
        buf = _scratch(("buf", pos), (n, groups, koff * cg, plane), gy.dtype)
        np.matmul(wt, gd.reshape(n, groups, og, pos), out=buf[..., :pos])
        buf = buf.reshape(n * groups, koff, cg * plane)
        # offset k = (i, j) adds its row shifted right by i*dh*Wp + j*dw. All of them in one
        # reduction over a strided view whose [s, i, j, q] is buf[s, k, q - shift]: reading
        # before a plane's start lands in the plane before it, whose last `shift` entries are
        # zero (its tail, plus the grid's empty columns in its last row), so no index leaves buf
        # and nothing but zeros crosses between planes
        e, rs = buf.itemsize, buf.strides[1]
        taps = as_strided(buf, (n * groups, g.kh, g.kw, cg * plane),
                          (buf.strides[0], g.kw * rs - dh * g.wp * e, rs - dw * e, e),
                          writeable=False)
        acc = _scratch("acc", (n * groups, cg * plane), gy.dtype)
        np.add.reduce(taps, axis=(1, 2), out=acc)
        return acc.reshape(n, g.c, g.hp, g.wp)[:, :, ph:ph + g.h, pw:pw + g.w]


def same_pads(kernel: tuple[int, int], dilation: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) zero padding that keeps H and W at stride 1 (padding="same"):
    an odd total puts the extra row/column at the bottom/right, as PyTorch does."""
    total = [d * (k - 1) for k, d in zip(kernel, dilation)]
    return (total[0] // 2, total[1] // 2, total[0] - total[0] // 2, total[1] - total[1] // 2)


class PadEnd(Function):
    """Zeros added after the last row and column of (N, C, H, W): the odd part of an asymmetric
    "same" padding (the Conv op pads symmetrically)."""

    ir_name = "Pad"

    def __init__(self, bottom: int = 0, right: int = 0) -> None:
        self.bottom, self.right = int(bottom), int(right)

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX Pad with constant zeros at the end of the last two axes."""
        return b.node("Pad", [xs[0], b.ints([0, 0, 0, 0, 0, 0, self.bottom, self.right])])

    def forward(self, x: Any) -> Any:
        n, c, h, w = x.shape
        y = backend.xp_of(x).zeros((n, c, h + self.bottom, w + self.right), x.dtype)
        y[:, :, :h, :w] = x
        return y

    def backward(self, gy: Any) -> tuple[Any]:
        return (gy[:, :, :gy.shape[2] - self.bottom, :gy.shape[3] - self.right],)


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,
           padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
    """2-D convolution of an NCHW tensor (cross-correlation, like PyTorch and ONNX)."""
    attrs = {"stride": stride, "padding": padding, "dilation": dilation, "groups": groups}
    if bias is None:
        return Conv.apply(x, weight, **attrs)
    return Conv.apply(x, weight, bias, **attrs)


# -- 1-D: the 2-D op on (N, C, 1, L), whose reshapes are views ------------------------------
def single(value: Any, name: str, minimum: int = 1) -> int:
    """Normalise an int or a one-int tuple/list (PyTorch's 1-D layers take both)."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
        raise ConfigError(f"{name} must be an int or a tuple of one int, found {value!r}")
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, found {value!r}")
    return int(value)


def pads_1d(padding: Any, kernel: int, dilation: int, stride: int) -> tuple[int, int]:
    """(left, right) zeros of a 1-D convolution's padding: an int, "valid", or "same" (stride 1
    only, as in PyTorch; an odd total puts the extra zero on the right)."""
    if not isinstance(padding, str):
        p = single(padding, "padding", minimum=0)
        return p, p
    if padding == "valid":
        return 0, 0
    if padding != "same":
        raise ConfigError(f"Conv1d: padding must be 'same', 'valid' or an int, found "
                          f"{padding!r:.60}")
    if stride != 1:
        raise ConfigError(f"Conv1d: padding='same' needs stride 1 (as in PyTorch), found "
                          f"stride={stride}; give the padding as a number instead")
    total = dilation * (kernel - 1)
    return total // 2, total - total // 2


def conv1d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: Any = 1,
           padding: Any = 0, dilation: Any = 1, groups: int = 1) -> Tensor:
    """1-D convolution of an (N, C, L) tensor with an (O, C/groups, k) weight (padding: an int,
    "same" or "valid"); computed by the 2-D op on H = 1, so speed and gradients are shared."""
    if x.ndim != 3 or weight.ndim != 3 or x.shape[1] != weight.shape[1] * groups:
        raise ShapeError(f"Conv1d expected input (batch, {weight.shape[1] * groups}, length) and "
                         f"weight (out, in/groups, k), found input {tuple(x.shape)} and weight "
                         f"{tuple(weight.shape)}")
    length, k = x.shape[2], weight.shape[2]
    s, d = single(stride, "stride"), single(dilation, "dilation")
    left, right = pads_1d(padding, k, d, s)
    if length + left + right < d * (k - 1) + 1:
        raise ShapeError(f"Conv1d with kernel {k} (dilation {d}, padding {left + right} in all) "
                         f"expected an input length of at least {d * (k - 1) + 1 - left - right},"
                         f" found {length} (input shape {tuple(x.shape)})")
    return Conv1d.apply(x, weight, *([] if bias is None else [bias]), stride=s,
                        pads=(left, right), dilation=d, groups=groups)


class Conv1d(Function):
    """1-D convolution of x (N, C, L) with w (O, C/groups, k) plus an optional bias (O,): the
    2-D op on the (N, C, 1, L) view, so speed and gradients are shared; pads (left, right) may
    differ ("same" puts an odd extra zero on the right)."""

    ir_name = "Conv"

    def __init__(self, stride: int = 1, pads: tuple[int, int] = (0, 0), dilation: int = 1,
                 groups: int = 1) -> None:
        self.pads = (int(pads[0]), int(pads[1]))
        self.conv = Conv((1, stride), (0, self.pads[0]), (1, dilation), groups)

    def lower(self, b: Any, xs: list[str]) -> Any:
        """ONNX's 1-D Conv, as the Conv1d layer lowers (pads [left, right])."""
        c = self.conv
        return b.node("Conv", xs, kernel_shape=list(b.shape(xs[1])[2:]),
                      strides=[c.stride[1]], pads=list(self.pads),
                      dilations=[c.dilation[1]], group=c.groups)

    def forward(self, x: Any, w: Any, b: Any = None) -> Any:
        n, c, length = x.shape
        x4 = x.reshape(n, c, 1, length)
        left, right = self.pads
        if right != left:  # the odd zero of "same" first: the 2-D op pads symmetrically
            x4 = PadEnd(right=right - left).forward(x4)
        self.length, self.w_shape = length, w.shape
        self.conv.needs_input_grad = self.needs_input_grad
        y = self.conv.forward(x4, w.reshape(*w.shape[:2], 1, w.shape[2]), b)
        return y.reshape(n, y.shape[1], y.shape[3])

    def backward(self, gy: Any) -> tuple[Any, ...]:
        grads = list(self.conv.backward(gy.reshape(*gy.shape[:2], 1, gy.shape[2])))
        if grads[0] is not None:  # the padded input's gradient, cut back to the input
            grads[0] = grads[0][:, :, 0, :self.length]
        if grads[1] is not None:
            grads[1] = grads[1].reshape(self.w_shape)
        return tuple(grads)
