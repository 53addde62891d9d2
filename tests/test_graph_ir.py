"""Graph IR: construction, validation, text dump, tracing each layer type, shape inference."""

from __future__ import annotations

import numpy as np
import pytest

from nnforge import nn
from nnforge.autograd.function import Function
from nnforge.errors import ConfigError, ShapeError
from nnforge.graph import Graph, Node, ValueInfo, evaluate_graph, infer_shapes, trace
from nnforge.graph.ops import reshape_target


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Dropout(0.3), nn.Linear(5, 3),
                         nn.Softmax()).eval()


def test_trace_mlp_nodes_names_and_weights_are_copies() -> None:
    model = _mlp()
    g = trace(model)
    assert [n.op for n in g.nodes] == ["Gemm", "Relu", "Dropout", "Gemm", "Softmax"]
    assert g.nodes[0].attrs == {"transB": 1}
    assert g.nodes[0].inputs == ["input", "0.weight", "0.bias"]
    assert g.input_names == ["input"] and g.output_names == ["output"]
    assert g.nodes[-1].outputs == ["output"]
    assert g.inputs[0].shape == ("N", 6)
    np.testing.assert_array_equal(g.initializers["0.weight"], model[0].weight.data)
    model[0].weight.data[...] = 7.0  # training later must not change a traced graph
    assert not np.any(g.initializers["0.weight"] == 7.0)
    g.validate()


def test_trace_matches_eager_forward(rng: np.random.Generator) -> None:
    model = _mlp()
    x = rng.standard_normal((4, 6)).astype(np.float32)
    np.testing.assert_allclose(evaluate_graph(trace(model), x)[0], model(x).data, rtol=1e-6)


@pytest.mark.parametrize(("layer", "op", "attrs"), [
    (nn.ReLU(), "Relu", {}),
    (nn.LeakyReLU(0.2), "LeakyRelu", {"alpha": 0.2}),
    (nn.Sigmoid(), "Sigmoid", {}),
    (nn.Tanh(), "Tanh", {}),
    (nn.GELU(), "Gelu", {"approximate": "none"}),
    (nn.Softmax(axis=1), "Softmax", {"axis": 1}),
    (nn.LogSoftmax(), "LogSoftmax", {"axis": -1}),
    (nn.Identity(), "Identity", {}),
    (nn.Dropout(0.5), "Dropout", {}),
    (nn.Flatten(), "Flatten", {"axis": 1}),
])
def test_each_layer_lowers_to_its_onnx_op(layer: nn.Module, op: str, attrs: dict) -> None:
    g = trace(nn.Sequential(nn.Linear(4, 4), layer))
    node = g.nodes[1]
    assert (node.op, node.attrs) == (op, attrs)


def test_linear_without_bias_has_two_inputs() -> None:
    g = trace(nn.Sequential(nn.Linear(3, 2, bias=False)))
    assert g.nodes[0].inputs == ["input", "0.weight"]


def test_flatten_other_start_dims_become_reshape(rng: np.random.Generator) -> None:
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    for start in (2, -1, -2, 0):
        model = nn.Sequential(nn.Flatten(start))
        g = infer_shapes(trace(model, (None, 3, 4, 5)))
        assert g.nodes[0].op == "Reshape"
        out = evaluate_graph(g, x)[0]
        assert out.shape == model(x).shape
        assert g.outputs[0].shape[1:] == model(x).shape[1:]


def test_unknown_layer_is_a_config_error_naming_it() -> None:
    # a custom layer's forward is traced op by op (tests/test_graph_trace_ops.py); an op in it
    # with no IR lowering is the error, naming the op and the layer's path
    class Twice(Function):
        def forward(self, x):  # noqa: ANN001, ANN202
            return x * 2

    class Custom(nn.Module):
        def forward(self, x):  # noqa: ANN001, ANN202
            return Twice.apply(x)

    with pytest.raises(ConfigError, match="op Twice in module 1"):
        trace(nn.Sequential(nn.Linear(2, 2), Custom()))


def test_input_shape_needed_when_first_layer_does_not_tell() -> None:
    with pytest.raises(ConfigError, match="input_shape"):
        trace(nn.Sequential(nn.ReLU()))
    assert trace(nn.Sequential(nn.ReLU()), (None, 7)).inputs[0].shape == ("N", 7)


def test_dump_lists_inputs_weights_nodes_outputs() -> None:
    text = infer_shapes(trace(_mlp())).dump()
    assert "input: float32[N,6]" in text
    assert "0.weight: float32[5,6]" in text
    assert "%0 = Gemm(%input, %0.weight, %0.bias) {transB=1}  -> float32[N,5]" in text
    assert "output: float32[N,3]" in text
    assert str(trace(_mlp())).startswith("graph Sequential")


def test_validate_rejects_undefined_and_duplicate_values() -> None:
    w = {"w": np.ones((2, 2), np.float32)}
    bad = Graph([Node("MatMul", ["x", "missing"], ["y"])], [ValueInfo("x", ("N", 2))],
                [ValueInfo("y")], w)
    with pytest.raises(ConfigError, match="missing"):
        bad.validate()
    dup = Graph([Node("Relu", ["x"], ["y"]), Node("Relu", ["x"], ["y"])],
                [ValueInfo("x", ("N", 2))], [ValueInfo("y")])
    with pytest.raises(ConfigError, match="twice"):
        dup.validate()


def test_validate_allows_omitted_outputs_and_names_cycles_and_duplicates() -> None:
    x = [ValueInfo("x", ("N", 2))]
    # "" is an optional output left out: any number of nodes may leave theirs out
    Graph([Node("Dropout", ["x"], ["a", ""]), Node("Dropout", ["a"], ["y", ""])], x,
          [ValueInfo("y")]).validate()
    cycle = Graph([Node("Relu", ["b"], ["a"]), Node("Tanh", ["a"], ["b"])], x, [ValueInfo("b")])
    with pytest.raises(ConfigError, match="later node.*cycle"):
        cycle.validate()
    with pytest.raises(ConfigError, match=r"output names \['y'\] are listed more than once"):
        Graph([Node("Relu", ["x"], ["y"])], x, [ValueInfo("y"), ValueInfo("y")]).validate()
    with pytest.raises(ConfigError, match=r"input names \['x'\] are listed more than once"):
        Graph([Node("Relu", ["x"], ["y"])], x * 2, [ValueInfo("y")]).validate()


def test_shape_inference_dtypes_of_type_making_ops() -> None:
    g = Graph([Node("Shape", ["x"], ["s"]), Node("Cast", ["s"], ["sf"], {"to": 1}),
               Node("Cast", ["x"], ["xi"], {"to": 6}),
               Node("Constant", [], ["k"], {"value": np.arange(3, dtype=np.int64)}),
               Node("ConstantOfShape", ["shp"], ["z"])],
              [ValueInfo("x", ("N", 4))], [ValueInfo("sf"), ValueInfo("xi"), ValueInfo("z")],
              {"shp": np.array([2, 3], np.int64)})
    info = infer_shapes(g).value_info
    assert {k: info[k].dtype for k in ("s", "sf", "xi", "k", "z")} == {
        "s": "int64", "sf": "float32", "xi": "int32", "k": "int64", "z": "float32"}


def test_shape_inference_symbolic_batch_and_errors() -> None:
    g = Graph([Node("Conv", ["x", "w"], ["c"], {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1],
                                               "strides": [2, 2]}),
               Node("MaxPool", ["c"], ["p"], {"kernel_shape": [2, 2], "strides": [2, 2]}),
               Node("Flatten", ["p"], ["f"], {"axis": 1})],
              [ValueInfo("x", ("N", 3, 16, 16))], [ValueInfo("f")],
              {"w": np.zeros((8, 3, 3, 3), np.float32)})
    g = infer_shapes(g)
    assert g.value_info["c"].shape == ("N", 8, 8, 8)
    assert g.value_info["p"].shape == ("N", 8, 4, 4)
    assert g.outputs[0].shape == ("N", 128)
    g.inputs[0].shape = ("N", 4, 16, 16)
    with pytest.raises(ShapeError, match="expected input channels 3, found 4"):
        infer_shapes(g)


def test_reshape_target_with_symbols() -> None:
    assert reshape_target(("N", 16, 5, 5), [0, -1]) == ("N", 400)
    assert reshape_target(("N", 6), [-1]) == (None,)
    assert reshape_target((2, 3, 4), [0, 0, -1]) == (2, 3, 4)
    # the known dims divide out, leaving the batch symbol
    assert reshape_target(("N", 4), [-1, 2, 2]) == ("N", 2, 2)
    assert reshape_target(("N", 8, 3), [-1, 24]) == ("N", 24)
    assert reshape_target(("N", 4), [-1, 2]) == (None, 2)


def test_copy_is_independent() -> None:
    g = trace(_mlp())
    c = g.copy()
    c.nodes[0].attrs["transB"] = 0
    c.nodes.pop()
    assert g.nodes[0].attrs["transB"] == 1 and len(g.nodes) == 5
