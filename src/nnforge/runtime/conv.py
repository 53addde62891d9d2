"""Convolution as matrix products over im2col matrices gathered with strided views.

* The gathered matrix is laid out (C*kh*kw, samples, positions), so each copied row is long.
  For stride 1 the rows are "wide": position p runs over OH * Wp (the padded width), so every
  (channel, kernel offset) row of a sample is ONE contiguous slice of the padded input,
  starting at i*Wp + j; the Wp - OW extra columns are computed and dropped.
* The bias rides along in the product as a constant row of ones.
* The batch is gathered and multiplied in chunks of a few samples, so the gathered matrix
  stays in cache, and so that the product stays on OpenBLAS's small-matrix path where it
  has one (M*N*K <= 1e6: 1.3-5x faster for these skinny shapes). Blocks of chunks write one
  product buffer, which is then finished in a few large calls: the activation is applied
  while copying the product into the NCHW output, or, with a fused MaxPool (FusedConv `pool`
  attributes), the pool reads the product directly (rows first, on contiguous data) and the
  activation runs on the smaller pooled output (max pooling commutes with non-decreasing
  activations).
* With `threads` > 1 that many workers take blocks from a shared counter (NumPy releases the
  GIL in the copies, the products and the ufuncs), each with its own scratch; a block also
  fills its samples of the padded input copy first, where there is one.
* A stride-1 conv with few input channels followed by a 2x2/2 max pool (LeNet-5's first layer)
  runs on the input's space-to-depth form instead (see _s2d_conv).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..backend import blas_small_gemm_mnk
from ..graph.ir import Node
from ..graph.ops import conv_geometry, fused_pool_node, lift_1d_node
from .kernels import MONOTONE, Ctx, Feed, Step, activation_step, kernel, unit_height
from .parallel import BLAS_THREADED_MNK, SERIAL_BLAS, run_parts

#: elements the plan allocates after every buffer, so wide views may read a little past the end
TAIL = 64
#: target size of one chunk's gathered matrix: small enough to stay in the L2 cache
CHUNK_BYTES = 384 * 1024
#: largest depth 4*C*(kh//2+1)*(kw//2+1) of the space-to-depth product for which a conv
#: followed by a 2x2/2 max pool runs on that form. Measured, batch 64, 2 threads, time
#: against the plain path: 1x5x5 (depth 36) 0.73-0.75, 3x3x3 (48) 0.86-0.95, 4x3x3 (64)
#: 0.89, 2x5x5 (72) 0.83, 5x3x3 (80) 1.02, 6x3x3 (96) 1.05-1.18, 6x5x5 (216) 1.15
S2D_MAX_DEPTH = 72
#: target size of a block's product buffer, which the pooling/activation reads in one go
BLOCK_BYTES = 1024 * 1024


@kernel("Conv", "FusedConv")
def _conv(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, w, y = ins[0], ins[1], outs[0]
    if w.ndim == 3:  # 1-D: the 2-D kernel on H = 1, through views of the same buffers
        node, x, w, y = lift_1d_node(node), unit_height(x), w[:, :, None], unit_height(y)
    b = ins[2] if len(ins) > 2 and ins[2] is not None else None
    g = conv_geometry(node)
    groups = int(node.attrs.get("group", 1))
    pads, (sh, sw), (dh, dw) = g["pads"], g["strides"], g["dilations"]
    kind, alpha = node.attrs.get("activation"), node.attrs.get("activation_alpha", 0.01)
    pool = fused_pool_node(node)
    if _s2d_pays(y.shape, w.shape, groups, (sh, sw), (dh, dw), pool):
        return _s2d_conv(x, w, b, y, pads, kind, alpha, ctx)
    ph0, pw0, ph1, pw1 = pads
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    hp, wp = h + ph0 + ph1, wd + pw0 + pw1
    oh = (hp - dh * (kh - 1) - 1) // sh + 1
    ow = (wp - dw * (kw - 1) - 1) // sw + 1
    wide = sh == 1 and sw == 1
    margin = (kw - 1) * dw + 8  # how far a wide view reads past its plane
    # the windows read the caller's buffer, or a private zero-padded copy
    copy_in = bool(ph0 or pw0 or ph1 or pw1) or isinstance(x, Feed) or (wide and margin > TAIL)
    if copy_in:
        flat = ctx.scratch(n * c * hp * wp + margin, fill=0.0)
        src = flat[:n * c * hp * wp].reshape(n, c, hp, wp)
        fill = _copier(x, src[:, :, ph0:ph0 + h, pw0:pw0 + wd])
    else:
        src, fill = x, None
    wq = wp if wide else ow  # columns per output row in the product
    kg = cg * kh * kw
    wmat = _weight_matrix(w.reshape(groups, m // groups, kg), b, ctx)

    def finisher(res: np.ndarray, b0: int, bk: int, tmp: Any) -> Any:
        grid = res.reshape(m, bk, oh, wq)  # (M, k, OH, W')
        out = y[b0:b0 + bk]
        if pool is not None:
            return _pooled(pool, grid, out, tmp(), kind, alpha, ctx)
        return activation_step(kind, out, ctx, alpha,
                               src=grid[:, :, :, :ow].transpose(1, 0, 2, 3))

    return _product_runner(src, (kh, kw), (sh, sw), (dh, dw), (oh, ow), wide, wmat, finisher,
                           ctx, fill)


def _s2d_pays(y_shape: tuple, w_shape: tuple, groups: int, strides: tuple, dilations: tuple,
              pool: Node | None) -> bool:
    """Whether this conv + 2x2/2 max pool runs on the space-to-depth form (see _s2d_conv)."""
    if (pool is None or groups != 1 or tuple(strides) != (1, 1) or tuple(dilations) != (1, 1)
            or list(pool.attrs["kernel_shape"]) != [2, 2] or list(pool.attrs["strides"]) != [2, 2]
            or min(y_shape) < 1):  # an empty pooled output: nothing to gain
        return False
    _, c, kh, kw = w_shape
    return kh > 1 and kw > 1 and 4 * c * (kh // 2 + 1) * (kw // 2 + 1) <= S2D_MAX_DEPTH


def _s2d_conv(x: Any, w: np.ndarray, b: Any, y: np.ndarray, pads: tuple, kind: str | None,
              alpha: float, ctx: Ctx) -> Step:
    """Conv (stride 1) + activation + 2x2/2 max pool, computed on the input's space-to-depth
    form.

    The padded input is split by row and column parity (u, v) into 4C channels of half the
    height and width. The conv output at each corner (s, t) of every pooling window is then a
    (kh//2+1) x (kw//2+1) conv of that form whose weights are w's taps rearranged (zero where
    a tap falls outside the kernel); stacking the four corners' weights gives one product with
    4M rows, and the pool becomes an elementwise max of four contiguous row blocks. With few
    input channels this gathers about 2.8x fewer columns than the plain path (5x5 kernels)
    and pools without strided passes, for 1.4x the multiply-adds: LeNet-5's first layer ran
    in 0.6-0.8x the time. Same sums as the plain conv but for the order and the added zeros
    (which turn an infinite input within a window's 3x3 super-cell into NaN instead of +-inf:
    sessions reject non-finite inputs unless check_finite is off).
    """
    ph0, pw0, _, _ = pads
    n, c, h, wd = x.shape
    m, _, kh, kw = w.shape
    _, _, ph, pw = y.shape
    hp, wp = h + pads[0] + pads[2], wd + pads[1] + pads[3]
    hh, wh, kh2, kw2 = (hp + 1) // 2, (wp + 1) // 2, kh // 2 + 1, kw // 2 + 1
    size = n * 4 * c * hh * wh
    flat = ctx.scratch(size + kw2 + 8, fill=0.0)  # + how far the last wide view reads past
    src = flat[:size].reshape(n, 2, 2, c, hh, wh)
    parity = []  # (plane block of src, first input row, first input column)
    for u, v in itertools.product((0, 1), repeat=2):
        r0, c0 = (ph0 - u + 1) // 2, (pw0 - v + 1) // 2  # first plane row/col inside x
        i0, j0 = 2 * r0 + u - ph0, 2 * c0 + v - pw0
        rows, cols = len(range(i0, h, 2)), len(range(j0, wd, 2))
        parity.append((src[:, u, v, :, r0:r0 + rows, c0:c0 + cols], i0, j0))
    w2 = np.zeros((2, 2, m, 2, 2, c, kh2, kw2), ctx.dtype)  # (s, t, M, u, v, C, da, db)
    for s, t, u, v in itertools.product((0, 1), repeat=4):
        for da, db in itertools.product(range(kh2), range(kw2)):
            di, dj = 2 * da + u - s, 2 * db + v - t  # the tap this weight stands for
            if 0 <= di < kh and 0 <= dj < kw:
                w2[s, t, :, u, v, :, da, db] = w[:, :, di, dj]
    wmat = _weight_matrix(w2.reshape(1, 4 * m, 4 * c * kh2 * kw2),
                          None if b is None else np.tile(np.asarray(b), 4), ctx)
    monotone = kind in MONOTONE or (kind == "LeakyRelu" and alpha >= 0)

    def finisher(res: np.ndarray, b0: int, bk: int, tmp: Any) -> Any:
        corners = [res[i * m:(i + 1) * m] for i in range(4)]  # (M, k*P) each
        first = corners[0]
        before = None if monotone else activation_step(kind, res, ctx, alpha)
        last = activation_step(kind if monotone else None, y[b0:b0 + bk], ctx, alpha,
                               src=first.reshape(m, bk, ph, wh)[:, :, :, :pw]
                               .transpose(1, 0, 2, 3))
        maximum = np.maximum

        def finish() -> None:
            if before is not None:
                before()
            for other in corners[1:]:
                maximum(first, other, out=first)
            last()
        return finish

    copyto, get = np.copyto, (x.getter() if isinstance(x, Feed) else None)

    def fill(feeds: Any, lo: int, hi: int) -> None:
        xin = x if get is None else get(feeds)
        for dst, i0, j0 in parity:
            copyto(dst[lo:hi], xin[lo:hi, :, i0::2, j0::2])

    return _product_runner(src.reshape(n, 4 * c, hh, wh), (kh2, kw2), (1, 1), (1, 1),
                           (ph, pw), True, wmat, finisher, ctx, fill)


def _copier(x: Any, dst: np.ndarray) -> Any:
    """fill(feeds, lo, hi): copy samples lo:hi of the kernel's input (an array, or a graph
    input) into dst."""
    get, copyto = (x.getter() if isinstance(x, Feed) else None), np.copyto

    def fill(feeds: Any, lo: int, hi: int) -> None:
        copyto(dst[lo:hi], (x if get is None else get(feeds))[lo:hi])
    return fill


def _weight_matrix(wg: np.ndarray, b: Any, ctx: Ctx) -> np.ndarray:
    """(G, Mg, Kg) weights -> (G, Mg, Kg + 1) with the bias as the last column."""
    groups, mg, kg = wg.shape
    wmat = np.zeros((groups, mg, kg + 1), ctx.dtype)
    wmat[:, :, :kg] = wg
    if b is not None:
        wmat[:, :, kg] = np.asarray(b).reshape(groups, mg)
    return ctx.const(wmat)


def _product_runner(src: np.ndarray, kernel: tuple[int, int], strides: tuple[int, int],
                    dilations: tuple[int, int], out_hw: tuple[int, int], wide: bool,
                    wmat: np.ndarray, finisher: Any, ctx: Ctx, fill: Any = None) -> Any:
    """Chunks of gathered columns times wmat into per-block product buffers, then finisher's
    closure per block; blocks shared among ctx.threads workers. With `fill`, each block first
    fills its own samples of src (fill(feeds, lo, hi)): on the worker that gathers them,
    while they are in its cache.

    src is (N, C, Hp, Wp) with everything the windows read (padding included);
    finisher(res (M, k*P), first sample, k, tmp) returns the block's finishing closure.
    """
    (kh, kw), (sh, sw), (dh, dw), (oh, ow) = kernel, strides, dilations, out_hw
    n, c, hp, wp = src.shape
    groups, mg, kg1 = wmat.shape
    kg, m, cg = kg1 - 1, groups * mg, c // groups
    e, plane = src.itemsize, hp * wp
    wq = wp if wide else ow
    p = oh * wq
    chunk = max(1, min(n, CHUNK_BYTES // (kg1 * p * e * groups)))
    if not SERIAL_BLAS.available():  # BLAS threads stay on: keep the products below them
        chunk = max(1, min(chunk, (BLAS_THREADED_MNK - 1) // (mg * kg1 * p)))
    small = blas_small_gemm_mnk()  # stay on BLAS's faster small-matrix path where it has one
    if mg * kg1 * p <= small:
        chunk = min(chunk, small // (mg * kg1 * p))
    # blocks of whole chunks share one product buffer, finished (pooled) in a few big calls;
    # there are at least as many blocks as threads when the batch allows
    by_res = max(chunk, BLOCK_BYTES // (m * p * e) // chunk * chunk)
    block = min(by_res, max(chunk, -(-n // ctx.threads) // chunk * chunk), n)
    blocks = list(range(0, n, block))
    workers = max(1, min(ctx.threads, len(blocks)))
    per_worker = []
    for _ in range(workers):  # each worker owns its scratch, with jobs for every block in it
        col = ctx.scratch((groups, kg1, chunk * p))
        col[:, kg] = 1.0  # the bias row: never overwritten
        res = ctx.scratch((groups, mg, block * p))
        tmp = _LazyScratch(ctx, block * m * p)
        jobs = []
        for b0 in blocks:
            bk = min(block, n - b0)
            chunks = []
            for s0 in range(b0, b0 + bk, chunk):
                k = min(chunk, b0 + bk - s0)
                if wide:
                    win = as_strided(src[s0:], (groups, cg, kh, kw, k, p),
                                     (cg * plane * e, plane * e, dh * wp * e, dw * e,
                                      c * plane * e, e))
                else:
                    win = as_strided(src[s0:], (groups, cg, kh, kw, k, oh, ow),
                                     (cg * plane * e, plane * e, dh * wp * e, dw * e,
                                      c * plane * e, sh * wp * e, sw * e))
                dest = col[:, :kg, :k * p].reshape(win.shape)
                at = (s0 - b0) * p
                chunks.append((win, dest, col[:, :, :k * p], res[:, :, at:at + k * p]))
            finish = finisher(res.reshape(m, block * p)[:, :bk * p], b0, bk, tmp)
            jobs.append((b0, b0 + bk, chunks, finish))
        per_worker.append(jobs)
    ctx.split(workers)
    ctx.blas(mg * kg1 * chunk * p)
    return _block_scheduler(per_worker, wmat, fill)


def _block_scheduler(per_worker: list[list[tuple]], wmat: np.ndarray, fill: Any) -> Any:
    """A closure running every block once, each on whichever worker is free to take it next.

    Taking blocks from a shared counter (not a fixed share each) keeps both cores busy when one
    of them is slowed by another process, which on shared machines is most of the time; every
    block is computed the same way on any worker, so results do not depend on who ran what.
    """
    nblocks = len(per_worker[0])
    mm, copyto = np.matmul, np.copyto
    state = [itertools.count()]

    def worker(jobs: list[tuple]) -> Any:
        def run(feeds: Any) -> None:
            take = state[0]
            for i in iter(take.__next__, None):  # next() on a count is atomic under the GIL
                if i >= nblocks:
                    return
                lo, hi, chunks, finish = jobs[i]
                if fill is not None:  # wide views reading past a sample see dropped columns only
                    fill(feeds, lo, hi)
                for win, dest, cols, prod in chunks:
                    copyto(dest, win)
                    mm(wmat, cols, out=prod)
                finish()
        return run

    parts = run_parts([worker(jobs) for jobs in per_worker])

    def run(feeds: Any) -> None:
        state[0] = itertools.count()
        parts(feeds)
    return run


class _LazyScratch:
    """A worker's pooling scratch, allocated on first request (and only when needed)."""

    def __init__(self, ctx: Ctx, size: int) -> None:
        self.ctx, self.size, self.array = ctx, size, None

    def __call__(self) -> np.ndarray:
        if self.array is None:
            self.array = self.ctx.scratch(self.size)
        return self.array


def _pooled(pool: Node, grid: np.ndarray, out: np.ndarray, tmp: np.ndarray, kind: str | None,
            alpha: float, ctx: Ctx) -> Any:
    """A closure max-pooling grid (M, k, OH, W') into out (k, M, PH, PW), with the activation.

    Separable: the max over kernel rows first, on whole contiguous rows, then over columns.
    When the column windows tile the rows (kernel == stride, as in the common 2x2/2 pool), the
    row maxima's scratch is one flat run of windows, so the column max is a single long loop
    per kernel column (NumPy's per-row loops over short strided rows cost 3x more), and the
    activation runs while the result is copied into the NCHW output.
    """
    (kh, kw), (sh, sw) = pool.attrs["kernel_shape"], pool.attrs["strides"]
    m, k, _, wq = grid.shape
    ph, pw = out.shape[2], out.shape[3]
    rows = [grid[:, :, i:i + sh * (ph - 1) + 1:sh, :] for i in range(kh)]
    size = m * k * ph * wq
    t = tmp[:size].reshape(m, k, ph, wq) if kh > 1 else rows[0]
    dst = out.transpose(1, 0, 2, 3)
    monotone = kind in MONOTONE or (kind == "LeakyRelu" and alpha >= 0)
    before = None if monotone else activation_step(kind, grid, ctx, alpha)
    maximum, copyto = np.maximum, np.copyto
    # t is ours, contiguous, whole windows; red goes after t in tmp, which has room for it
    # unless the row windows overlap a lot (row stride 1 leaves ph close to OH)
    flat = (kh > 1 and 1 < kw == sw and wq % kw == 0
            and size + size // kw <= tmp.size)
    if flat:
        windows = tmp[:size].reshape(size // kw, kw)
        red = tmp[size:size + size // kw]
        cols = [windows[:, j] for j in range(kw)]
        last = activation_step(kind if monotone else None, out, ctx, alpha,
                               src=red.reshape(m, k, ph, wq // kw)[:, :, :, :pw]
                               .transpose(1, 0, 2, 3))
    else:
        cols = [t[:, :, :, j:j + sw * (pw - 1) + 1:sw] for j in range(kw)]
        red = dst
        last = activation_step(kind, out, ctx, alpha) if monotone else None

    def finish() -> None:
        if before is not None:
            before()
        if kh > 1:
            maximum(rows[0], rows[1], out=t)
            for r in rows[2:]:
                maximum(t, r, out=t)
        if kw > 1:
            maximum(cols[0], cols[1], out=red)
            for v in cols[2:]:
                maximum(red, v, out=red)
        else:
            copyto(red, cols[0])
        if last is not None:
            last()
    return finish
