"""The runtime's fused Conv + activation + MaxPool kernels against the reference ops.

Two paths compute it: the plain one (gathered columns, then a separable pool) and, for a
2x2/2 pool after a stride-1 conv with few input channels, the space-to-depth one. Both must equal
conv -> activation -> pool evaluated op by op, for every padding and size parity, activations
that do and do not commute with max, a graph input or an intermediate value as the input,
and batches that split into several chunks, blocks and worker threads.
"""

from __future__ import annotations

import numpy as np
import pytest

from nnforge.graph import Graph, Node, ValueInfo, evaluate_graph
from nnforge.runtime import compile_plan
from nnforge.runtime import conv as runtime_conv

F32 = np.float32

CASES = [  # (c, m, kernel (kh, kw), pads, h, w, pool (k, s))
    (1, 6, (5, 5), [2, 2, 2, 2], 28, 28, (2, 2)),  # LeNet-5's first layer
    (1, 4, (3, 3), [1, 1, 1, 1], 9, 7, (2, 2)),  # odd sizes: the pool drops a row/column
    (2, 3, (4, 2), [0, 1, 2, 0], 8, 9, (2, 2)),  # even kernels, asymmetric pads
    (3, 5, (3, 3), [1, 0, 0, 1], 6, 6, (2, 2)),
    (1, 2, (5, 5), [0, 0, 0, 0], 6, 7, (2, 2)),  # a 1x1 (then 1x1) output grid
    (6, 16, (5, 5), [0, 0, 0, 0], 14, 14, (2, 2)),  # many taps: the plain path
    (2, 3, (3, 3), [1, 1, 1, 1], 9, 8, (3, 2)),  # another pool: the plain path
]
ACTIVATIONS = [("Relu", 0.0), ("LeakyRelu", -0.5), ("Tanh", 0.0), ("Sigmoid", 0.0), (None, 0.0)]


def _graph(case: tuple, act: str | None, alpha: float, rng: np.random.Generator,
           through_relu: bool) -> Graph:
    """x [-> Relu] -> FusedConv(conv, act, pool): the input is a graph input or a kernel's."""
    c, m, (kh, kw), pads, h, wd, (pk, ps) = case
    attrs = {"kernel_shape": [kh, kw], "pads": pads, "pool": "MaxPool",
             "pool_kernel_shape": [pk, pk], "pool_strides": [ps, ps]}
    if act:
        attrs.update(activation=act, activation_alpha=alpha)
    nodes = [Node("FusedConv", ["r" if through_relu else "x", "w", "b"], ["y"], attrs, "conv",
                  domain="nnforge")]
    if through_relu:
        nodes.insert(0, Node("Relu", ["x"], ["r"], {}, "relu"))
    weights = {"w": rng.standard_normal((m, c, kh, kw)).astype(F32),
               "b": rng.standard_normal(m).astype(F32)}
    return Graph(nodes, [ValueInfo("x", ("N", c, h, wd))], [ValueInfo("y")], weights)


@pytest.mark.parametrize(("act", "alpha"), ACTIVATIONS)
@pytest.mark.parametrize("case", CASES)
def test_fused_conv_pool_equals_reference(rng: np.random.Generator, case: tuple,
                                          act: str | None, alpha: float) -> None:
    for n, threads, through_relu in [(1, 1, False), (5, 2, True), (70, 2, False)]:
        g = _graph(case, act, alpha, rng, through_relu)
        x = rng.standard_normal((n, *g.inputs[0].shape[1:])).astype(F32)
        ref = evaluate_graph(g, x)[0]
        got = compile_plan(g, [x.shape], threads=threads).run((x,))[0]
        assert got.shape == ref.shape
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))


@pytest.mark.parametrize(("kernel", "strides"), [([2, 2], [1, 2]), ([3, 3], [1, 3])])
def test_fused_pool_with_row_stride_1_equals_reference(rng: np.random.Generator,
                                                       kernel: list, strides: list) -> None:
    # row windows that overlap leave nearly OH pooled rows: the row maxima and the column
    # maxima no longer fit one block's scratch side by side (this failed to compile)
    g = _graph((2, 3, (3, 3), [0, 0, 0, 0], 30, 30, (2, 2)), "Tanh", 0.0, rng, False)
    g.nodes[0].attrs.update(pool_kernel_shape=kernel, pool_strides=strides)
    for n, threads in [(1, 1), (7, 2)]:
        x = rng.standard_normal((n, 2, 30, 30)).astype(F32)
        ref = evaluate_graph(g, x)[0]
        got = compile_plan(g, [x.shape], threads=threads).run((x,))[0]
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5 * float(np.abs(ref).max()))


def test_space_to_depth_path_is_taken_only_where_it_pays(rng: np.random.Generator,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    taken = []
    real = runtime_conv._s2d_conv
    monkeypatch.setattr(runtime_conv, "_s2d_conv", lambda *a: taken.append(1) or real(*a))
    for case, expected in [(CASES[0], 1), (CASES[2], 1), (CASES[5], 0), (CASES[6], 0)]:
        taken.clear()
        g = _graph(case, "Relu", 0.0, rng, False)
        compile_plan(g, [(2, *g.inputs[0].shape[1:])])
        assert len(taken) == expected, case
    # and switched off, the plain path gives the same result
    g = _graph(CASES[0], "Relu", 0.0, rng, False)
    x = rng.standard_normal((9, 1, 28, 28)).astype(F32)
    s2d = compile_plan(g, [x.shape], threads=2).run((x,))[0]
    monkeypatch.setattr(runtime_conv, "S2D_MAX_DEPTH", 0)
    plain = compile_plan(g, [x.shape], threads=2).run((x,))[0]
    np.testing.assert_allclose(s2d, plain, rtol=1e-5, atol=1e-5 * float(np.abs(plain).max()))


def test_repeated_runs_reuse_buffers_without_leftovers(rng: np.random.Generator) -> None:
    g = _graph(CASES[0], "Relu", 0.0, rng, False)
    plan = compile_plan(g, [(3, 1, 28, 28)], threads=2)
    a, b = (rng.standard_normal((3, 1, 28, 28)).astype(F32) for _ in range(2))
    first = plan.run((a,))[0]
    plan.run((b,))
    np.testing.assert_array_equal(plan.run((a,))[0], first)
