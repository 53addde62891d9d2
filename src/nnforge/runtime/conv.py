"""Convolution as one matrix product over an im2col matrix gathered with strided views.

The gathered matrix is laid out (C*kh*kw, N, positions) so that one GEMM covers the whole batch
and each copied row is long. For stride 1 the rows are "wide": position p runs over
OH * Wp, the padded width, so every (channel, kernel offset) row is ONE contiguous slice of the
padded input (p + i*Wp + j); the Wp - OW extra columns per row are computed and discarded. The
bias rides along in the GEMM as a constant row of ones. The result (M, N, OH, W') is copied
into the NCHW output with a transposed view, then the activation runs in place.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..graph.ir import Node
from ..graph.ops import conv_geometry
from .kernels import Ctx, Feed, Step, activation_step, kernel

#: elements the plan allocates after every buffer, so wide views may read a little past the end
TAIL = 64


@kernel("Conv", "FusedConv")
def _conv(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, w, y = ins[0], ins[1], outs[0]
    b = ins[2] if len(ins) > 2 and ins[2] is not None else None
    g = conv_geometry(node)
    groups = int(node.attrs.get("group", 1))
    (ph0, pw0, ph1, pw1), (sh, sw), (dh, dw) = g["pads"], g["strides"], g["dilations"]
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    oh, ow = y.shape[2], y.shape[3]
    hp, wp = h + ph0 + ph1, wd + pw0 + pw1
    wide = sh == 1 and sw == 1
    padded = bool(ph0 or pw0 or ph1 or pw1)
    # the source the windows read: the caller's buffer, or a private padded copy
    need_copy = padded or isinstance(x, Feed) or (wide and (kw - 1) * dw > TAIL)
    if need_copy:
        flat = ctx.scratch(n * c * hp * wp + TAIL, fill=0.0)
        xp = flat[:n * c * hp * wp].reshape(n, c, hp, wp)
        inner = xp[:, :, ph0:ph0 + h, pw0:pw0 + wd]
        get = x.getter() if isinstance(x, Feed) else None
        src = xp
    else:
        src = x
    e = src.itemsize
    plane = hp * wp
    kg = cg * kh * kw  # rows of the gathered matrix per group
    p = oh * wp if wide else oh * ow
    col = ctx.scratch((groups, kg + 1, n * p))
    col[:, kg] = 1.0  # the bias row: never overwritten
    if wide:
        window = as_strided(src, (groups, cg, kh, kw, n, p),
                            (cg * plane * e, plane * e, dh * wp * e, dw * e, c * plane * e, e))
    else:
        window = as_strided(src, (groups, cg, kh, kw, n, oh, ow),
                            (cg * plane * e, plane * e, dh * wp * e, dw * e, c * plane * e,
                             sh * wp * e, sw * e))
    dest = col[:, :kg].reshape(window.shape)
    wmat = np.zeros((groups, m // groups, kg + 1), ctx.dtype)
    wmat[:, :, :kg] = w.reshape(groups, m // groups, kg)
    if b is not None:
        wmat[:, :, kg] = b.reshape(groups, m // groups)
    wmat = ctx.const(wmat)
    res = ctx.scratch((groups, m // groups, n * p))
    # NCHW output <- (M, N, OH, W') result, dropping the wide columns
    res_view = res.reshape(m, n, oh, wp if wide else ow)[:, :, :, :ow].transpose(1, 0, 2, 3)
    at = node.attrs
    act = activation_step(at.get("activation"), y, ctx, at.get("activation_alpha", 0.01))
    mm, copyto = np.matmul, np.copyto

    def step(feeds: Any) -> None:
        if need_copy:
            copyto(inner, get(feeds) if get is not None else x)
        copyto(dest, window)
        mm(wmat, col, out=res)
        copyto(y, res_view)
        if act is not None:
            act()
    return step
