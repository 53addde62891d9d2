"""NumPy kernels of the ops PyTorch CNN exports use beyond the core set: Resize, ConvTranspose,
InstanceNormalization, Tile, Range, CumSum, Sin, Cos, Celu, Mish, ReduceL2, DepthToSpace.

Imported by kernels.py. Shapes and geometry come from `graph/ops_onnx.py`. Inputs that
say how (Resize's scales, CumSum's axis, Range's bounds) may be values the plan computes, so
their contents are read when a call runs, never when the kernel is built (buffers are empty
then); where the output shape tells the same (Resize's sizes, Tile's repeats) it is used.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError
from ..graph.ir import Node
from ..graph.ops_onnx import (
    ResizeStep,
    celu_array,
    conv_transpose_2d,
    cumsum_axis,
    depth_to_space_view,
    reduce_axes,
    resize_geometry,
    resize_steps,
)
from .kernels import IN_PLACE, Ctx, Step, kernel

IN_PLACE.update({"Sin", "Cos", "Celu", "Mish", "InstanceNormalization"})


# -- elementwise ----------------------------------------------------------------------------
@kernel("Sin", "Cos")
def _trig(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    fn, x, y = (np.sin if node.op == "Sin" else np.cos), ins[0], outs[0]
    return lambda feeds: fn(x, out=y)


@kernel("Celu")
def _celu(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y, alpha = ins[0], outs[0], node.attrs.get("alpha", 1.0)
    return lambda feeds: np.copyto(y, celu_array(x, alpha))


@kernel("Mish")
def _mish(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    soft, zero = ctx.scratch(x.shape), y.dtype.type(0)

    def step(feeds: Any) -> None:
        np.logaddexp(zero, x, out=soft)  # softplus without overflow
        np.tanh(soft, out=soft)
        np.multiply(x, soft, out=y)
    return step


@kernel("ReduceL2")
def _reduce_l2(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    red = reduce_axes(node, x.ndim, ins[1] if len(ins) > 1 else None)
    if red is None:  # noop_with_empty_axes: each element's own L2 norm, |x| (as ORT)
        return lambda feeds: np.abs(x, out=y)
    sq, keep = ctx.scratch(x.shape), bool(node.attrs.get("keepdims", 1))

    def step(feeds: Any) -> None:
        np.multiply(x, x, out=sq)
        np.sum(sq, axis=red, keepdims=keep, out=y)
        np.sqrt(y, out=y)
    return step


# -- Resize ---------------------------------------------------------------------------------
def _repeats(step: ResizeStep, n_in: int) -> int | None:
    """k when a nearest step repeats each input k times in a row (integer upsampling)."""
    a, idx, second, _ = step
    k = len(idx) // n_in
    if second is None and k >= 1 and len(idx) == k * n_in and (idx == np.arange(len(idx)) // k
                                                               ).all():
        return k
    return None


def _resize_runner(steps: list[ResizeStep], x: np.ndarray, y: np.ndarray, ctx: Ctx) -> Step:
    """One pass per resized axis, each into a scratch array (the last into y). Integer
    nearest upsampling (nn.Upsample's) is a broadcast copy, innermost axis first, so that
    the outer passes copy whole rows."""
    reps = {st[0]: k for st in steps if (k := _repeats(st, x.shape[st[0]])) is not None}
    order = [st for st in steps if st[0] not in reps] + sorted(
        (st for st in steps if st[0] in reps), key=lambda st: -st[0])
    passes = []
    shape, src = list(x.shape), x
    for n, (a, i0, i1, w) in enumerate(order):
        before = list(shape)
        shape[a] = len(i0)
        dst = y if n == len(order) - 1 else ctx.scratch(tuple(shape))
        if a in reps:  # dst as (..., d, k, ...) takes src as (..., d, 1, ...) broadcast
            passes.append((dst.reshape((*before[:a + 1], reps[a], *before[a + 1:])),
                           src.reshape((*before[:a + 1], 1, *before[a + 1:])), a, None,
                           None, None, None))
        else:
            diff = None if i1 is None else ctx.scratch(tuple(shape))
            wb = None if w is None else ctx.const(w.reshape((-1,) + (1,) * (x.ndim - 1 - a)))
            passes.append((dst, src, a, i0, i1, diff, wb))
        src = dst
    if not passes:
        return lambda feeds: np.copyto(y, x)

    def run(feeds: Any) -> None:
        for d, s, a, i0, i1, diff, wb in passes:
            if i0 is None:
                np.copyto(d, s)
                continue
            np.take(s, i0, axis=a, out=d)
            if i1 is not None:  # linear: d += w * (x[i1] - x[i0])
                np.take(s, i1, axis=a, out=diff)
                np.subtract(diff, d, out=diff)
                np.multiply(diff, wb, out=diff)
                np.add(d, diff, out=d)
    return run


@kernel("Resize")
def _resize(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    scales = ins[2] if len(ins) > 2 else None
    if scales is None or scales.size == 0:  # sizes: the output shape says it all
        if "axes" in node.attrs:  # y.shape covers every axis
            node = Node(node.op, node.inputs, node.outputs,
                        {k: v for k, v in node.attrs.items() if k != "axes"}, node.name)
        _, scale = resize_geometry(node, x.shape, None, np.asarray(y.shape))
        return _resize_runner(resize_steps(node, x.shape, y.shape, scale), x, y, ctx)
    runners: dict[bytes, Step] = {}  # by scales: fixed in practice, read at each call anyway

    def step(feeds: Any) -> None:
        key = scales.tobytes()
        if key not in runners:
            _, scale = resize_geometry(node, x.shape, scales, None)
            runners[key] = _resize_runner(resize_steps(node, x.shape, y.shape, scale), x, y, ctx)
        runners[key](feeds)
    return step


# -- convolution and normalization ----------------------------------------------------------
@kernel("ConvTranspose")
def _conv_transpose(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    (x4, w4), g = conv_transpose_2d(node, ins[0], ins[1])
    b = ins[2] if len(ins) > 2 else None
    y4 = outs[0].reshape(outs[0].shape[:2] + (-1, outs[0].shape[-1]))
    groups = node.attrs.get("group", 1)
    n, cin, h, w = x4.shape
    cout_g, kh, kw = w4.shape[1:]
    (sh, sw), (dh, dw), (ph0, pw0) = g["strides"], g["dilations"], g["pads"][:2]
    xg = x4.reshape(n, groups, cin // groups, h * w)
    cols = ctx.scratch((n, groups, cout_g * kh * kw, h * w))
    taps = cols.reshape(n, groups * cout_g, kh, kw, h, w)
    fh, fw = sh * (h - 1) + dh * (kh - 1) + 1, sw * (w - 1) + dw * (kw - 1) + 1
    oh, ow = y4.shape[2:]
    # without pads the taps land in y itself (output_padding: zeros past them); else in a
    # scratch plane that the pads crop
    padded = any(g["pads"])
    full = ctx.scratch((n, groups * cout_g, fh, fw)) if padded else y4[:, :, :fh, :fw]
    crop = full[:, :, ph0:ph0 + oh, pw0:pw0 + ow]  # shorter where output_padding passes fh
    # taps that never overlap (stride >= dilated kernel: the U-Net k = s case) are copied
    disjoint = sh >= dh * (kh - 1) + 1 and sw >= dw * (kw - 1) + 1
    planes = [(full[:, :, i * dh:i * dh + sh * (h - 1) + 1:sh,
                    j * dw:j * dw + sw * (w - 1) + 1:sw], taps[:, :, i, j])
              for i in range(kh) for j in range(kw)]
    ctx.blas(n * groups * cout_g * kh * kw * h * w * (cin // groups))

    def step(feeds: Any) -> None:
        # weights read per call (a computed weight is legal ONNX); the transpose is a view
        np.matmul(w4.reshape(groups, cin // groups, -1).transpose(0, 2, 1), xg, out=cols)
        (full if padded else y4).fill(0)
        for dst, tap in planes:  # kernel taps, each a whole strided plane: no pixel loop
            if disjoint:
                np.copyto(dst, tap)
            else:
                np.add(dst, tap, out=dst)
        if padded:
            if crop.shape[2:] != (oh, ow):  # output_padding reaches past the taps
                y4.fill(0)
            y4[:, :, :crop.shape[2], :crop.shape[3]] = crop
        if b is not None:
            np.add(y4, b.reshape(1, -1, 1, 1), out=y4)
    return step


@kernel("InstanceNormalization")
def _instance_norm(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, scale, bias, y = ins[0], ins[1], ins[2], outs[0]
    axes = tuple(range(2, x.ndim))
    per_c = (1, -1) + (1,) * (x.ndim - 2)
    stat = ctx.scratch(x.shape[:2] + (1,) * (x.ndim - 2))
    # the mean summed in float64: a constant plane then gives exactly 0, not 1 ulp / sqrt(eps)
    stat64 = np.empty(stat.shape, np.float64)
    sq = ctx.scratch(x.shape)
    eps = y.dtype.type(node.attrs.get("epsilon", 1e-5))

    def step(feeds: Any) -> None:
        np.mean(x, axis=axes, keepdims=True, dtype=np.float64, out=stat64)
        np.copyto(stat, stat64, casting="same_kind")
        np.subtract(x, stat, out=y)  # y may be x (in place): the mean is taken first
        np.multiply(y, y, out=sq)
        np.mean(sq, axis=axes, keepdims=True, out=stat)
        np.add(stat, eps, out=stat)
        np.sqrt(stat, out=stat)
        np.divide(scale.reshape(per_c), stat, out=stat)
        np.multiply(y, stat, out=y)
        np.add(y, bias.reshape(per_c), out=y)
    return step


# -- shape and index ops ----------------------------------------------------------------------
@kernel("Tile")
def _tile(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    if 0 in x.shape or 0 in y.shape:
        return lambda feeds: None
    reps = [o // i for o, i in zip(y.shape, x.shape)]  # the output shape gives the repeats
    # y as (r0, d0, r1, d1, ...): x broadcast into it is the tiling
    y_blocks = y.reshape([v for r, d in zip(reps, x.shape) for v in (r, d)])
    x_blocks = x.reshape([v for d in x.shape for v in (1, d)])
    return lambda feeds: np.copyto(y_blocks, x_blocks)


@kernel("Range")
def _range(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    start, delta, y = ins[0], ins[2], outs[0]
    steps = ctx.const(np.arange(y.size))

    def step(feeds: Any) -> None:
        np.multiply(steps, y.dtype.type(delta.reshape(()).item()), out=y)
        np.add(y, y.dtype.type(start.reshape(()).item()), out=y)
    return step


@kernel("CumSum")
def _cumsum(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, axis, y = ins[0], ins[1], outs[0]
    reverse, exclusive = node.attrs.get("reverse", 0), node.attrs.get("exclusive", 0)
    cumsum_axis(node, 0, x.ndim)  # rank 0: refused when the plan is built

    def step(feeds: Any) -> None:
        # read per call (it may be a computed value); out of range is a DataError, not a wrap
        a = cumsum_axis(node, axis, x.ndim, DataError)
        flip = tuple(slice(None, None, -1) if k == a else slice(None) for k in range(x.ndim))
        src, dst = (x[flip], y[flip]) if reverse else (x, y)
        if exclusive:  # out[i] = sum of x[:i]: the sum shifted by one, a zero first
            head = tuple(slice(0, 1) if k == a else slice(None) for k in range(x.ndim))
            body = tuple(slice(1, None) if k == a else slice(None) for k in range(x.ndim))
            most = tuple(slice(0, -1) if k == a else slice(None) for k in range(x.ndim))
            dst[head] = 0
            np.cumsum(src[most], axis=a, out=dst[body])
        else:
            np.cumsum(src, axis=a, out=dst)
    return step


@kernel("DepthToSpace")
def _depth_to_space(node: Node, ins: list, outs: list, ctx: Ctx) -> Step:
    x, y = ins[0], outs[0]
    view = depth_to_space_view(node, x)
    blocks = y.reshape(view.shape)  # (N, C', H, b, W, b) over the output buffer
    return lambda feeds: np.copyto(blocks, view)
