"""Convolution as matrix products over im2col matrices gathered with strided views.

* The gathered matrix is laid out (C*kh*kw, samples, positions), so each copied row is long.
  For stride 1 the rows are "wide": position p runs over OH * Wp (the padded width), so every
  (channel, kernel offset) row of a sample is ONE contiguous slice of the padded input,
  starting at i*Wp + j; the Wp - OW extra columns are computed and dropped.
* The bias rides along in the product as a constant row of ones.
* The batch is processed in chunks of a few samples, so the gathered matrix and the product
  stay in cache while the next steps read them: the activation is applied while copying the
  product into the NCHW output, or, with a fused MaxPool (FusedConv `pool` attributes), the
  pool reads the product directly and the activation runs on the 4x smaller pooled output
  (max pooling commutes with non-decreasing activations).
* With `threads` > 1 the chunks are shared among that many threads (NumPy releases the GIL in
  the copies, the products and the ufuncs), each with its own scratch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..graph.ir import Node
from ..graph.ops import conv_geometry, fused_pool_node
from .kernels import MONOTONE, Ctx, Feed, Step, activation_step, kernel
from .parallel import run_parts

#: elements the plan allocates after every buffer, so wide views may read a little past the end
TAIL = 64
#: target size of one chunk's gathered matrix: small enough to stay in the L2 cache
CHUNK_BYTES = 384 * 1024


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
    starts = list(range(0, n, chunk))
    workers = max(1, min(ctx.threads, len(starts) // 2))  # threads only when each gets 2+ chunks
    wmat = np.zeros((groups, mg, kg + 1), ctx.dtype)
    wmat[:, :, :kg] = w.reshape(groups, mg, kg)
    if b is not None:
        wmat[:, :, kg] = b.reshape(groups, mg)
    wmat = ctx.const(wmat)
    kind, alpha = node.attrs.get("activation"), node.attrs.get("activation_alpha", 0.01)
    pool = fused_pool_node(node)
    parts = []
    for wk in range(workers):  # each worker owns its scratch and every workers-th chunk
        col = ctx.scratch((groups, kg + 1, chunk * p))
        col[:, kg] = 1.0  # the bias row: never overwritten
        res = ctx.scratch((groups, mg, chunk * p))
        jobs = []
        for s0 in starts[wk::workers]:
            k = min(chunk, n - s0)
            if wide:
                win = as_strided(src[s0:], (groups, cg, kh, kw, k, p),
                                 (cg * plane * e, plane * e, dh * wp * e, dw * e,
                                  c * plane * e, e))
            else:
                win = as_strided(src[s0:], (groups, cg, kh, kw, k, oh, ow),
                                 (cg * plane * e, plane * e, dh * wp * e, dw * e,
                                  c * plane * e, sh * wp * e, sw * e))
            dest = col[:, :kg, :k * p].reshape(win.shape)
            grid = res.reshape(m, chunk * p)[:, :k * p].reshape(m, k, oh, wq)  # (M, k, OH, W')
            out = y[s0:s0 + k]
            finish = (_pooled(pool, grid, out, kind, alpha, ctx) if pool is not None else
                      activation_step(kind, out, ctx, alpha,
                                      src=grid[:, :, :, :ow].transpose(1, 0, 2, 3)))
            jobs.append((win, dest, col[:, :, :k * p], res[:, :, :k * p], finish))
        parts.append(_chunk_runner(jobs, wmat))
    run = run_parts(parts)
    copyto = np.copyto

    def step(feeds: Any) -> None:
        if copy_in:
            copyto(inner, get(feeds) if get is not None else x)
        run()
    return step


def _chunk_runner(jobs: list[tuple], wmat: np.ndarray) -> Any:
    """A closure running a list of chunk jobs: gather, multiply, finish (activation/pool)."""
    mm, copyto = np.matmul, np.copyto

    def run() -> None:
        for win, dest, cols, prod, finish in jobs:
            copyto(dest, win)
            mm(wmat, cols, out=prod)
            finish()
    return run


def _pooled(pool: Node, grid: np.ndarray, out: np.ndarray, kind: str | None, alpha: float,
            ctx: Ctx) -> Any:
    """A closure max-pooling grid (M, k, OH, W') into out (k, M, PH, PW), with the activation."""
    (kh, kw), (sh, sw) = pool.attrs["kernel_shape"], pool.attrs["strides"]
    ph, pw = out.shape[2], out.shape[3]
    views = [grid[:, :, i:i + sh * (ph - 1) + 1:sh, j:j + sw * (pw - 1) + 1:sw]
             .transpose(1, 0, 2, 3) for i in range(kh) for j in range(kw)]
    first, rest = views[0], views[1:]
    monotone = kind in MONOTONE or (kind == "LeakyRelu" and alpha >= 0)
    before = None if monotone else activation_step(kind, grid, ctx, alpha)
    after = activation_step(kind, out, ctx, alpha) if monotone else None
    maximum, copyto = np.maximum, np.copyto

    def finish() -> None:
        if before is not None:
            before()
        if rest:
            maximum(first, rest[0], out=out)
        else:
            copyto(out, first)
        for v in rest[1:]:
            maximum(out, v, out=out)
        if after is not None:
            after()
    return finish
