"""Runtime kernels against the reference ops, and the reference Conv against plain loops."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from nnforge.errors import ConfigError
from nnforge.graph import Graph, Node, ValueInfo, evaluate_graph
from nnforge.runtime import compile_plan

F32 = np.float32


def _close(got: np.ndarray, expected: np.ndarray, rtol: float = 1e-6) -> None:
    np.testing.assert_allclose(got, expected, rtol=rtol,
                               atol=rtol * max(1.0, float(np.abs(expected).max())))


def _one(op: str, x: np.ndarray, attrs: dict, **weights: np.ndarray) -> tuple:
    """(runtime output, reference output) of a single-node graph."""
    g = Graph([Node(op, ["x", *weights], ["y"], attrs, "n")],
              [ValueInfo("x", ("N", *x.shape[1:]))], [ValueInfo("y")], weights)
    return compile_plan(g, [x.shape]).run((x,))[0], evaluate_graph(g, x)[0]


def _loop_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: tuple, pad: tuple,
               dil: tuple, groups: int) -> np.ndarray:
    """Convolution straight from its definition (float64 loops): the independent oracle."""
    n, c, h, wd = x.shape
    m, cg, kh, kw = w.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh = (h + 2 * pad[0] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * pad[1] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    y = np.zeros((n, m, oh, ow))
    mg = m // groups
    for i, o, r, q in itertools.product(range(n), range(m), range(oh), range(ow)):
        gi = o // mg
        patch = xp[i, gi * cg:(gi + 1) * cg, r * stride[0]:r * stride[0] + dil[0] * (kh - 1) + 1:
                   dil[0], q * stride[1]:q * stride[1] + dil[1] * (kw - 1) + 1:dil[1]]
        y[i, o, r, q] = (patch * w[o]).sum() + b[o]
    return y


CONV_CASES = [  # (c, m, k, stride, pad, dilation, groups, h, w)
    (1, 6, 5, 1, 2, 1, 1, 12, 12),
    (3, 4, 3, 1, 0, 1, 1, 7, 9),
    (4, 6, 3, 2, 1, 1, 2, 9, 8),
    (2, 3, 3, 1, 2, 2, 1, 8, 8),
    (4, 4, 3, 1, 1, 1, 4, 6, 6),
    (3, 5, 1, 1, 0, 1, 1, 4, 5),
    (2, 2, 2, 3, 0, 1, 1, 8, 7),
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_runtime_reference_and_loops_agree(rng: np.random.Generator, case: tuple) -> None:
    c, m, k, s, p, d, g, h, wd = case
    x = rng.standard_normal((3, c, h, wd)).astype(F32)
    w = rng.standard_normal((m, c // g, k, k)).astype(F32)
    b = rng.standard_normal(m).astype(F32)
    attrs = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p] * 4, "dilations": [d, d],
             "group": g}
    got, ref = _one("Conv", x, attrs, w=w, b=b)
    _close(ref, _loop_conv(x, w, b, (s, s), (p, p), (d, d), g), 1e-5)
    _close(got, ref, 1e-5)
    fused, _ = _one("FusedConv", x, dict(attrs, activation="Relu"), w=w, b=b)
    _close(fused, np.maximum(ref, 0), 1e-5)


def test_conv_asymmetric_pads_and_batch_one(rng: np.random.Generator) -> None:
    x = rng.standard_normal((1, 2, 6, 5)).astype(F32)
    w = rng.standard_normal((3, 2, 3, 2)).astype(F32)
    got, ref = _one("Conv", x, {"kernel_shape": [3, 2], "pads": [0, 1, 2, 0]}, w=w)
    assert got.shape == (1, 3, 6, 5)
    _close(got, ref, 1e-5)


POOL_CASES = [  # (op, kernel, stride, pad, count_include_pad)
    ("MaxPool", 2, 2, 0, 0), ("MaxPool", 3, 2, 1, 0), ("MaxPool", 3, 1, 0, 0),
    ("AveragePool", 2, 2, 0, 0), ("AveragePool", 3, 2, 1, 0), ("AveragePool", 3, 2, 1, 1),
    ("AveragePool", 3, 1, 1, 0),
]


@pytest.mark.parametrize("ceil", [0, 1])
@pytest.mark.parametrize("case", POOL_CASES)
def test_pools(rng: np.random.Generator, case: tuple, ceil: int) -> None:
    op, k, s, p, cip = case
    x = rng.standard_normal((2, 3, 7, 6)).astype(F32)
    attrs = {"kernel_shape": [k, k], "strides": [s, s], "pads": [p] * 4, "ceil_mode": ceil}
    if op == "AveragePool":
        attrs["count_include_pad"] = cip
    got, ref = _one(op, x, attrs)
    _close(got, ref)
    if op == "MaxPool" and p:  # padding must never win, even when every input is negative
        got, _ = _one(op, -np.abs(x) - 1, attrs)
        assert got.max() < -1 + 1e-6


def test_global_average_pool_and_batchnorm(rng: np.random.Generator) -> None:
    x = rng.standard_normal((4, 3, 5, 5)).astype(F32)
    got, ref = _one("GlobalAveragePool", x, {})
    assert got.shape == (4, 3, 1, 1)
    _close(got, ref)
    bn = {"s": rng.standard_normal(3).astype(F32), "b": rng.standard_normal(3).astype(F32),
          "m": rng.standard_normal(3).astype(F32), "v": (rng.random(3) + 0.1).astype(F32)}
    got, ref = _one("BatchNormalization", x, {"epsilon": 1e-4}, **bn)
    _close(got, ref)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [1, -1])
def test_softmax_axes(rng: np.random.Generator, op: str, axis: int) -> None:
    x = (rng.standard_normal((3, 4, 5)) * 30).astype(F32)  # large logits: stability matters
    got, ref = _one(op, x, {"axis": axis})
    _close(got, ref)


@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Tanh", "Gelu", "LeakyRelu"])
def test_elementwise_extremes(op: str) -> None:
    x = np.array([[-1e4, -100.0, -3.0, -1e-3, 0.0, 1e-3, 3.0, 100.0, 1e4]], F32)
    attrs = {"alpha": 0.1} if op == "LeakyRelu" else {}
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no warnings
        got, _ = _one(op, x, attrs)
    _, ref = _one(op, x, attrs)
    _close(got, ref)


@pytest.mark.parametrize("alpha", [-0.5, 2.0])
def test_leaky_relu_unusual_slopes(rng: np.random.Generator, alpha: float) -> None:
    x = rng.standard_normal((3, 8)).astype(F32)
    got, ref = _one("LeakyRelu", x, {"alpha": alpha})
    _close(got, ref)


def test_gemm_attribute_variants(rng: np.random.Generator) -> None:
    x = rng.standard_normal((5, 4)).astype(F32)
    for attrs, w, c in [({"transB": 1}, (3, 4), (3,)), ({}, (4, 3), (1, 3)),
                        ({"alpha": 2.0, "beta": 0.5}, (4, 3), (5, 3)),
                        ({"transA": 1}, (4, 3), ()), ({}, (4, 3), (1,))]:
        weights = {"w": rng.standard_normal(w).astype(F32),
                   "c": np.asarray(rng.standard_normal(c), F32)}
        inp = x.T.copy() if attrs.get("transA") else x
        got, ref = _one("Gemm", inp, attrs, **weights)
        _close(got, ref)


def test_binary_ops_matmul_transpose(rng: np.random.Generator) -> None:
    x = rng.standard_normal((3, 4)).astype(F32)
    for op in ("Add", "Sub", "Mul", "Div"):
        got, ref = _one(op, x, {}, k=(rng.random(4) + 0.5).astype(F32))
        _close(got, ref)
    got, ref = _one("MatMul", x, {}, w=rng.standard_normal((4, 2)).astype(F32))
    _close(got, ref)
    got, ref = _one("Transpose", x, {"perm": [1, 0]})
    _close(got, ref)


def test_plan_reuses_memory_and_outputs_are_fresh(rng: np.random.Generator) -> None:
    w = {f"w{i}": rng.standard_normal((16, 16)).astype(F32) for i in range(6)}
    nodes = [Node("MatMul", [f"h{i}" if i else "x", f"w{i}"], [f"m{i}"]) for i in range(6)]
    nodes = [n for i, m in enumerate(nodes) for n in
             (m, Node("Relu", [f"m{i}"], [f"h{i + 1}" if i < 5 else "y"]))]
    g = Graph(nodes, [ValueInfo("x", ("N", 16))], [ValueInfo("y")], w)
    x = rng.standard_normal((64, 16)).astype(F32)
    plan = compile_plan(g, [x.shape])
    # 12 values of 64x16 floats, but only the live ones take memory (plus the output)
    assert plan.nbytes < 4 * 64 * 16 * 4 + 1024
    a = plan.run((x,))[0]
    b = plan.run((x * 2,))[0]
    _close(a, evaluate_graph(g, x)[0])
    _close(b, evaluate_graph(g, x * 2)[0])


def test_dropout_with_mask_output_and_unsupported_maxpool_indices(rng: np.random.Generator
                                                                  ) -> None:
    x = rng.standard_normal((3, 4)).astype(F32)
    g = Graph([Node("Dropout", ["x"], ["y", "mask"]), Node("Relu", ["y"], ["z"])],
              [ValueInfo("x", ("N", 4))], [ValueInfo("z"), ValueInfo("mask")])
    z, mask = compile_plan(g, [x.shape]).run((x,))
    _close(z, np.maximum(x, 0))
    assert np.all(mask == 1)
    g = Graph([Node("MaxPool", ["x"], ["y", "idx"], {"kernel_shape": [2, 2]})],
              [ValueInfo("x", ("N", 1, 4, 4))], [ValueInfo("y"), ValueInfo("idx")])
    with pytest.raises(ConfigError, match="Indices"):
        compile_plan(g, [(1, 1, 4, 4)])


def test_kernels_never_write_weights_or_inputs(rng: np.random.Generator) -> None:
    big = rng.standard_normal(40).astype(F32)
    weights = {"a": big[:6].reshape(1, 6), "w": rng.standard_normal((3, 6)).astype(F32),
               "c": rng.standard_normal(3).astype(F32)}
    before = {k: v.copy() for k, v in weights.items()}
    big_before = big.copy()
    # a Gemm whose A is a weight view (level none keeps it) and one reading the graph input
    g = Graph([Node("Gemm", ["a", "w", "c"], ["h"], {"transB": 1}),
               Node("Gemm", ["x", "w", "c"], ["k"], {"transB": 1}),
               Node("Add", ["h", "k"], ["y"])],
              [ValueInfo("x", ("N", 6))], [ValueInfo("y")], weights)
    x = rng.standard_normal((1, 6)).astype(F32)
    x_before = x.copy()
    got = compile_plan(g, [x.shape], check_finite=True).run((x,))[0]
    _close(got, evaluate_graph(g, x)[0])
    np.testing.assert_array_equal(big, big_before)
    np.testing.assert_array_equal(x, x_before)
    for k, v in weights.items():
        np.testing.assert_array_equal(v, before[k])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_all_finite_sees_every_nan_and_inf_and_no_false_alarm(dtype):
    from nnforge.errors import DataError  # noqa: PLC0415
    from nnforge.runtime.kernels import all_finite, check_finite  # noqa: PLC0415

    rng = np.random.default_rng(0)
    x = rng.standard_normal((37, 11)).astype(dtype)
    assert all_finite(x) and all_finite(x[:, ::3]) and all_finite(x.T) and all_finite(x[:0])
    big = np.full((5, 4), np.finfo(dtype).max / 2, dtype)  # squares overflow: still finite
    assert all_finite(big) and all_finite(-big)
    for bad in (np.nan, np.inf, -np.inf):
        for pos in [(0, 0), (36, 10), (17, 5)]:
            y = x.copy()
            y[pos] = bad
            assert not all_finite(y) and not all_finite(y.T)
            with pytest.raises(DataError, match=f"at row {pos[0]}, position {pos[1]}"):
                check_finite(y)
    assert all_finite(np.arange(6).reshape(2, 3))  # integers are always finite
