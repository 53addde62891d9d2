"""Convolution as matrix products over im2col matrices gathered with strided views.

* The gathered matrix is laid out (C*kh*kw, samples, positions), so each copied row is long.
  For stride 1 the rows are "wide": position p runs over OH * Wp (the padded width), so every
  (channel, kernel offset) row of a sample is ONE contiguous slice of the padded input,
  starting at i*Wp + j; the Wp - OW extra columns are computed and dropped.
* The bias rides along in the product as a constant row of ones.
* The batch is gathered and multiplied in chunks of a few samples, so the gathered matrix
  stays in cache. Blocks of chunks write one product buffer, which is then finished in a few
  large calls: the activation is applied while copying the product into the NCHW output, or,
  with a fused MaxPool (FusedConv `pool` attributes), the pool reads the product directly
  (rows first, on contiguous data) and the activation runs on the smaller pooled output (max
  pooling commutes with non-decreasing activations).
* With `threads` > 1 the blocks are shared among that many threads (NumPy releases the GIL in
  the copies, the products and the ufuncs), each with its own scratch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..graph.ir import Node
from ..graph.ops import conv_geometry, fused_pool_node
from .kernels import MONOTONE, Ctx, Feed, Step, activation_step, kernel
from .parallel import BLAS_THREADED_MNK, SERIAL_BLAS, run_parts

#: elements the plan allocates after every buffer, so wide views may read a little past the end
TAIL = 64
#: target size of one chunk's gathered matrix: small enough to stay in the L2 cache
CHUNK_BYTES = 384 * 1024
#: target size of a block's product buffer, which the pooling/activation reads in one go
BLOCK_BYTES = 1024 * 1024


@kernel("Conv", "FusedConv")
def _conv(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, w, y = ins[0], ins[1], outs[0]
    b = ins[2] if len(ins) > 2 and ins[2] is not None else None
    g = conv_geometry(node)
    groups = int(node.attrs.get("group", 1))
    (ph0, pw0, ph1, pw1), (sh, sw), (dh, dw) = g["pads"], g["strides"], g["dilations"]
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    hp, wp = h + ph0 + ph1, wd + pw0 + pw1
    oh = (hp - dh * (kh - 1) - 1) // sh + 1
    ow = (wp - dw * (kw - 1) - 1) // sw + 1
    wide = sh == 1 and sw == 1
    margin = (kw - 1) * dw + 8  # how far a wide view reads past its plane
    # the windows read the caller's buffer, or a private zero-padded copy
    copy_in = bool(ph0 or pw0 or ph1 or pw1) or isinstance(x, Feed) or (wide and margin > TAIL)
    get = None
    if copy_in:
        flat = ctx.scratch(n * c * hp * wp + margin, fill=0.0)
        src = flat[:n * c * hp * wp].reshape(n, c, hp, wp)
        inner = src[:, :, ph0:ph0 + h, pw0:pw0 + wd]
        get = x.getter() if isinstance(x, Feed) else None
    else:
        src = x
    e, plane, mg = src.itemsize, hp * wp, m // groups
    kg = cg * kh * kw  # rows of the gathered matrix per group
    wq = wp if wide else ow  # columns per output row in the product
    p = oh * wq
    chunk = max(1, min(n, CHUNK_BYTES // ((kg + 1) * p * e * groups)))
    if not SERIAL_BLAS.available():  # BLAS threads stay on: keep the products below them
        chunk = max(1, min(chunk, (BLAS_THREADED_MNK - 1) // (mg * (kg + 1) * p)))
    # blocks of whole chunks share one product buffer, finished (pooled) in a few big calls;
    # there are at least as many blocks as threads when the batch allows
    by_res = max(chunk, BLOCK_BYTES // (m * p * e) // chunk * chunk)
    block = min(by_res, max(chunk, -(-n // ctx.threads) // chunk * chunk), n)
    blocks = list(range(0, n, block))
    workers = max(1, min(ctx.threads, len(blocks)))
    wmat = np.zeros((groups, mg, kg + 1), ctx.dtype)
    wmat[:, :, :kg] = w.reshape(groups, mg, kg)
    if b is not None:
        wmat[:, :, kg] = b.reshape(groups, mg)
    wmat = ctx.const(wmat)
    kind, alpha = node.attrs.get("activation"), node.attrs.get("activation_alpha", 0.01)
    pool = fused_pool_node(node)
    parts = []
    for wk in range(workers):  # each worker owns its scratch and every workers-th block
        col = ctx.scratch((groups, kg + 1, chunk * p))
        col[:, kg] = 1.0  # the bias row: never overwritten
        res = ctx.scratch((groups, mg, block * p))
        tmp = ctx.scratch(block * m * p) if pool is not None else None
        jobs = []
        for b0 in blocks[wk::workers]:
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
            grid = res.reshape(m, block * p)[:, :bk * p].reshape(m, bk, oh, wq)  # (M,k,OH,W')
            out = y[b0:b0 + bk]
            finish = (_pooled(pool, grid, out, tmp, kind, alpha, ctx) if pool is not None else
                      activation_step(kind, out, ctx, alpha,
                                      src=grid[:, :, :, :ow].transpose(1, 0, 2, 3)))
            jobs.append((chunks, finish))
        parts.append(_block_runner(jobs, wmat))
    run = run_parts(parts)
    ctx.split(len(parts))
    ctx.blas(mg * (kg + 1) * chunk * p)
    copyto = np.copyto

    def step(feeds: Any) -> None:
        if copy_in:
            copyto(inner, get(feeds) if get is not None else x)
        run(feeds)
    return step


def _block_runner(jobs: list[tuple], wmat: np.ndarray) -> Any:
    """A closure running blocks: per chunk gather and multiply, then finish the block."""
    mm, copyto = np.matmul, np.copyto

    def run(feeds: Any) -> None:
        for chunks, finish in jobs:
            for win, dest, cols, prod in chunks:
                copyto(dest, win)
                mm(wmat, cols, out=prod)
            finish()
    return run


def _pooled(pool: Node, grid: np.ndarray, out: np.ndarray, tmp: np.ndarray, kind: str | None,
            alpha: float, ctx: Ctx) -> Any:
    """A closure max-pooling grid (M, k, OH, W') into out (k, M, PH, PW), with the activation.

    Separable: the max over kernel rows first, on whole contiguous rows, then over columns.
    """
    (kh, kw), (sh, sw) = pool.attrs["kernel_shape"], pool.attrs["strides"]
    m, k, _, wq = grid.shape
    ph, pw = out.shape[2], out.shape[3]
    rows = [grid[:, :, i:i + sh * (ph - 1) + 1:sh, :] for i in range(kh)]
    t = tmp[:m * k * ph * wq].reshape(m, k, ph, wq) if kh > 1 else rows[0]
    cols = [t[:, :, :, j:j + sw * (pw - 1) + 1:sw] for j in range(kw)]
    dst = out.transpose(1, 0, 2, 3)
    monotone = kind in MONOTONE or (kind == "LeakyRelu" and alpha >= 0)
    before = None if monotone else activation_step(kind, grid, ctx, alpha)
    after = activation_step(kind, out, ctx, alpha) if monotone else None
    maximum, copyto = np.maximum, np.copyto

    def finish() -> None:
        if before is not None:
            before()
        if kh > 1:
            maximum(rows[0], rows[1], out=t)
            for r in rows[2:]:
                maximum(t, r, out=t)
        if kw > 1:
            maximum(cols[0], cols[1], out=dst)
            for v in cols[2:]:
                maximum(dst, v, out=dst)
        else:
            copyto(dst, cols[0])
        if after is not None:
            after()
    return finish
