"""Each optimization pass fires on a graph made for it and keeps the outputs equal."""

from __future__ import annotations

import numpy as np
import pytest

from nnforge import nn
from nnforge.errors import ConfigError
from nnforge.graph import Graph, Node, ValueInfo, evaluate_graph, optimize, trace
from nnforge.graph.passes import (
    PASSES,
    eliminate_dead_code,
    eliminate_identity,
    fold_batchnorm,
    fold_constants,
    fuse_activation,
    fuse_matmul_add,
)
from nnforge.runtime import compile_plan

F32 = np.float32


def _w(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(F32)


def _same_outputs(before: Graph, after: Graph, x: np.ndarray, rtol: float = 1e-5) -> None:
    """Reference interpreter and the compiled runtime agree on before and after."""
    expected = evaluate_graph(before, x)[0]
    for got in (evaluate_graph(after, x)[0], compile_plan(after, [x.shape]).run((x,))[0]):
        np.testing.assert_allclose(got, expected, rtol=rtol,
                                   atol=rtol * max(1.0, float(np.abs(expected).max())))


def _bn(rng: np.random.Generator, name: str, c: int) -> dict[str, np.ndarray]:
    return {f"{name}.s": _w(rng, c), f"{name}.b": _w(rng, c), f"{name}.m": _w(rng, c),
            f"{name}.v": (rng.random(c) + 0.5).astype(F32)}


def test_eliminate_identity_removes_dropout_and_identity(rng: np.random.Generator) -> None:
    g = trace(nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Identity(), nn.ReLU(),
                            nn.Dropout(0.1)))
    out = eliminate_identity(g)
    assert [n.op for n in out.nodes] == ["Gemm", "Relu"]
    assert out.nodes[-1].outputs == ["output"]  # the graph output keeps its name
    out.validate()
    _same_outputs(g, out, _w(rng, 3, 4))


def test_eliminate_identity_keeps_input_to_output_identity(rng: np.random.Generator) -> None:
    g = Graph([Node("Identity", ["x"], ["y"])], [ValueInfo("x", ("N", 3))], [ValueInfo("y")])
    assert len(eliminate_identity(g).nodes) == 1
    x = _w(rng, 2, 3)
    got = compile_plan(g, [x.shape]).run((x,))[0]
    np.testing.assert_array_equal(got, x)
    assert got is not x


def test_fold_constants_evaluates_weight_only_nodes(rng: np.random.Generator) -> None:
    w = _w(rng, 3, 5)
    g = Graph([Node("Transpose", ["w"], ["wt"], {"perm": [1, 0]}),
               Node("Mul", ["wt", "two"], ["w2"]),
               Node("MatMul", ["x", "w2"], ["y"])],
              [ValueInfo("x", ("N", 5))], [ValueInfo("y")],
              {"w": w, "two": np.asarray(2.0, F32)})
    out = fold_constants(g)
    assert [n.op for n in out.nodes] == ["MatMul"]
    np.testing.assert_allclose(out.initializers["w2"], 2 * w.T)
    _same_outputs(g, out, _w(rng, 4, 5))
    assert set(eliminate_dead_code(out).initializers) == {"w2"}


def test_eliminate_dead_code_drops_unused_branch(rng: np.random.Generator) -> None:
    g = Graph([Node("Relu", ["x"], ["a"]), Node("Tanh", ["x"], ["dead"]),
               Node("MatMul", ["dead", "w"], ["dead2"]), Node("Sigmoid", ["a"], ["y"])],
              [ValueInfo("x", ("N", 3))], [ValueInfo("y")], {"w": _w(rng, 3, 3)})
    out = eliminate_dead_code(g)
    assert [n.op for n in out.nodes] == ["Relu", "Sigmoid"]
    assert out.initializers == {}
    _same_outputs(g, out, _w(rng, 2, 3))


def test_fuse_matmul_add_makes_gemm(rng: np.random.Generator) -> None:
    g = Graph([Node("MatMul", ["x", "w"], ["m"]), Node("Add", ["b", "m"], ["y"])],
              [ValueInfo("x", ("N", 6))], [ValueInfo("y")],
              {"w": _w(rng, 6, 4), "b": _w(rng, 4)})
    out = fuse_matmul_add(g)
    assert [n.op for n in out.nodes] == ["Gemm"] and out.nodes[0].outputs == ["y"]
    _same_outputs(g, out, _w(rng, 5, 6))
    # a 3-D MatMul cannot become a Gemm
    g.inputs[0].shape = ("N", 2, 6)
    assert [n.op for n in fuse_matmul_add(g).nodes] == ["MatMul", "Add"]


@pytest.mark.parametrize("trans_b", [0, 1])
def test_fold_batchnorm_into_gemm(rng: np.random.Generator, trans_b: int) -> None:
    w = _w(rng, 8, 5) if trans_b else _w(rng, 5, 8)
    inits = {"w": w, "c": _w(rng, 8), **_bn(rng, "bn", 8)}
    g = Graph([Node("Gemm", ["x", "w", "c"], ["h"], {"transB": trans_b, "alpha": 0.5,
                                                     "beta": 2.0}),
               Node("BatchNormalization", ["h", "bn.s", "bn.b", "bn.m", "bn.v"], ["y"],
                    {"epsilon": 1e-3})],
              [ValueInfo("x", ("N", 5))], [ValueInfo("y")], inits)
    out = fold_batchnorm(g)
    assert [n.op for n in out.nodes] == ["Gemm"]
    _same_outputs(g, out, _w(rng, 7, 5))


def test_fold_batchnorm_into_conv_without_bias(rng: np.random.Generator) -> None:
    inits = {"w": _w(rng, 4, 2, 3, 3), **_bn(rng, "bn", 4)}
    g = Graph([Node("Conv", ["x", "w"], ["h"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),
               Node("BatchNormalization", ["h", "bn.s", "bn.b", "bn.m", "bn.v"], ["y"])],
              [ValueInfo("x", ("N", 2, 6, 6))], [ValueInfo("y")], inits)
    out = fold_batchnorm(g)
    assert [n.op for n in out.nodes] == ["Conv"] and len(out.nodes[0].inputs) == 3
    _same_outputs(g, out, _w(rng, 3, 2, 6, 6))


def test_fold_batchnorm_skips_shared_producer(rng: np.random.Generator) -> None:
    inits = {"w": _w(rng, 3, 3), **_bn(rng, "bn", 3)}
    g = Graph([Node("Gemm", ["x", "w"], ["h"]),
               Node("BatchNormalization", ["h", "bn.s", "bn.b", "bn.m", "bn.v"], ["a"]),
               Node("Add", ["a", "h"], ["y"])],
              [ValueInfo("x", ("N", 3))], [ValueInfo("y")], inits)
    assert len(fold_batchnorm(g).nodes) == 3


def test_fold_batchnorm_leaves_non_finite_and_training_bn(rng: np.random.Generator) -> None:
    def graph(var: np.ndarray, eps: float, outs: list[str]) -> Graph:
        inits = {"w": _w(rng, 3, 3), **_bn(rng, "bn", 3), "bn.v": var}
        return Graph([Node("Gemm", ["x", "w"], ["h"]),
                      Node("BatchNormalization", ["h", "bn.s", "bn.b", "bn.m", "bn.v"], outs,
                           {"epsilon": eps})],
                     [ValueInfo("x", ("N", 3))], [ValueInfo("y")], inits)
    # zero variance with epsilon 0: BN gives +-inf, a folded Gemm would give NaN
    g = graph(np.zeros(3, F32), 0.0, ["y"])
    assert [n.op for n in fold_batchnorm(g).nodes] == ["Gemm", "BatchNormalization"]
    ok = np.ones(3, F32)
    assert [n.op for n in fold_batchnorm(graph(ok, 0.0, ["y"])).nodes] == ["Gemm"]
    # training-mode BN has running-stat outputs a Gemm cannot produce
    g = graph(ok, 1e-5, ["y", "rm", "rv"])
    assert [n.op for n in fold_batchnorm(g).nodes] == ["Gemm", "BatchNormalization"]


def test_fold_constants_does_not_expand_into_huge_weights() -> None:
    g = Graph([Node("ConstantOfShape", ["shp"], ["big"], {"value": np.ones(1, F32)}),
               Node("ReduceSum", ["big"], ["s"], {"keepdims": 0}),
               Node("ConstantOfShape", ["small"], ["c"], {"value": np.ones(1, F32)}),
               Node("Add", ["x", "s"], ["a"]), Node("Add", ["a", "c"], ["y"])],
              [ValueInfo("x", ("N", 4))], [ValueInfo("y")],
              {"shp": np.array([3000, 3000], np.int64), "small": np.array([4], np.int64)})
    out = fold_constants(g)  # 9M elements: past the cap, so left to run time
    assert [n.op for n in out.nodes] == ["ConstantOfShape", "ReduceSum", "Add", "Add"]
    np.testing.assert_array_equal(out.initializers["c"], np.ones(4, F32))


@pytest.mark.parametrize("act", ["Relu", "LeakyRelu", "Sigmoid", "Tanh"])
def test_fuse_activation_into_gemm_and_conv(rng: np.random.Generator, act: str) -> None:
    attrs = {"alpha": 0.3} if act == "LeakyRelu" else {}
    g = Graph([Node("Conv", ["x", "w", "b"], ["c"], {"kernel_shape": [3, 3]}),
               Node(act, ["c"], ["a"], attrs),
               Node("Flatten", ["a"], ["f"], {"axis": 1}),
               Node("Gemm", ["f", "w2"], ["g"], {"transB": 1}),
               Node(act, ["g"], ["y"], attrs)],
              [ValueInfo("x", ("N", 2, 5, 5))], [ValueInfo("y")],
              {"w": _w(rng, 3, 2, 3, 3), "b": _w(rng, 3), "w2": _w(rng, 4, 27)})
    out = fuse_activation(g)
    assert [n.op for n in out.nodes] == ["FusedConv", "Flatten", "FusedGemm"]
    assert all(n.domain == "nnforge" and n.attrs["activation"] == act
               for n in out.nodes if n.op.startswith("Fused"))
    if act == "LeakyRelu":
        assert out.nodes[0].attrs["activation_alpha"] == 0.3
    _same_outputs(g, out, _w(rng, 4, 2, 5, 5))


def test_levels_and_off_switches() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 2))
    g = trace(model)
    assert [n.op for n in optimize(g, "none").nodes] == ["Gemm", "Relu", "Dropout", "Gemm"]
    assert [n.op for n in optimize(g, "basic").nodes] == ["Gemm", "Relu", "Gemm"]
    assert [n.op for n in optimize(g, "all").nodes] == ["FusedGemm", "Gemm"]
    assert [n.op for n in optimize(g, "all", disabled=["fuse_activation"]).nodes] == [
        "Gemm", "Relu", "Gemm"]
    assert "Dropout" in optimize(g, "all", disabled=["eliminate_identity"]).count_ops()
    with pytest.raises(ConfigError, match="expected optimization level"):
        optimize(g, "max")
    with pytest.raises(ConfigError, match="expected pass names"):
        optimize(g, "all", disabled=["nope"])
    assert list(PASSES)[-1] == "eliminate_dead_code"


def test_one_disabled_pass_may_be_named_by_a_string() -> None:
    # a string was taken as a set of letters: "expected pass names ..., found ['_', 'a', ...]"
    g = trace(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    assert [n.op for n in optimize(g, "all", disabled="fuse_activation").nodes] == [
        "Gemm", "Relu", "Gemm"]


def test_optimize_fills_shapes() -> None:
    g = optimize(trace(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))))
    assert g.outputs[0].shape == ("N", 2)
    assert all(g.value_info[o].shape is not None for n in g.nodes for o in n.outputs)


@pytest.mark.parametrize(("act", "alpha"), [("Relu", 0.0), ("Tanh", 0.0), ("LeakyRelu", -0.5),
                                            (None, 0.0)])
def test_fuse_conv_pool(rng: np.random.Generator, act: str | None, alpha: float) -> None:
    conv_attrs = {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}
    if act:
        conv_attrs.update(activation=act, activation_alpha=alpha)
    g = Graph([Node("FusedConv" if act else "Conv", ["x", "w", "b"], ["c"], conv_attrs,
                    domain="nnforge" if act else ""),
               Node("MaxPool", ["c"], ["y"], {"kernel_shape": [3, 2], "strides": [2, 2]})],
              [ValueInfo("x", ("N", 2, 9, 8))], [ValueInfo("y")],
              {"w": _w(rng, 4, 2, 3, 3), "b": _w(rng, 4)})
    out = optimize(g, "all")
    assert [n.op for n in out.nodes] == ["FusedConv"]
    assert out.nodes[0].attrs["pool"] == "MaxPool" and out.outputs[0].shape == ("N", 4, 4, 4)
    _same_outputs(g, out, _w(rng, 3, 2, 9, 8))
    # a padded pool stays separate
    g.nodes[1].attrs["pads"] = [1, 1, 1, 1]
    assert len(optimize(g, "all").nodes) == 2
