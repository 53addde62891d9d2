"""LayerNorm, SiLU, ELU, Softplus: torch's values, save/load, op-level tracing, ONNX forms."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import eager
from onnx import TensorProto, helper, numpy_helper

import nnforge as nf
from nnforge import nn
from nnforge.errors import ConfigError, ShapeError
from nnforge.onnx import export, load
from nnforge.ops import activation as A
from nnforge.ops.norm import layer_norm
from nnforge.runtime import InferenceSession

F32 = np.float32
X = np.array([-3.0, -1.0, -0.25, 0.0, 0.3, 0.6, 2.0, 25.0])
# frozen from torch 2.13 (float64): nn.SiLU(), nn.ELU(0.5), nn.Softplus(), nn.Softplus(2, 1)
TORCH = {
    "SiLU": (nn.SiLU(), [-0.14227761953270035, -0.2689414213699951, -0.10945587477855048, 0.0,
                         0.1723327550434977, 0.3873937837354772, 1.7615941559557646,
                         24.9999999996528]),
    "ELU": (nn.ELU(0.5), [-0.475106465816068, -0.31606027941427883, -0.11059960846429756, 0.0,
                          0.3, 0.6, 2.0, 25.0]),
    "Softplus": (nn.Softplus(), [0.04858735157374206, 0.31326168751822286, 0.5759394198788436,
                                 0.6931471805599453, 0.8543552444685272, 1.0374879504858856,
                                 2.1269280110429727, 25.0]),
    "Softplus(2, 1)": (nn.Softplus(2.0, 1.0), [0.0012378425688652247, 0.06346400552148625,
                                               0.23703849209005334, 0.34657359027997264,
                                               0.5187439752429428, 0.6, 2.0, 25.0]),
}


@pytest.mark.parametrize("name", list(TORCH))
def test_activations_equal_torch(name):
    layer, expected = TORCH[name]
    np.testing.assert_allclose(layer.double()(X[None]).data[0], expected, rtol=1e-12)


def _torch_layer_norm() -> nn.LayerNorm:
    ln = nn.LayerNorm([2, 3], eps=1e-3)
    ln.weight.data[...] = [[1, 2, 0.5], [-1, 0.25, 3]]
    ln.bias.data[...] = [[0, 1, -1], [0.5, 0, 2]]
    return ln


def test_layer_norm_equals_torch_and_normalizes_each_sample_alone(rng):
    ln = _torch_layer_norm().double()
    x = np.array([[[1.0, 2, 4], [-1, 0, 3]]])
    # frozen from torch.nn.LayerNorm([2, 3], eps=1e-3) with the weights above
    expected = [[[-0.29271984564004544, 1.585439691280091, -0.2682003858998864],
                 [1.9635992282002273, -0.21953988423003407, 4.634478610760409]]]
    np.testing.assert_allclose(ln(x).data, expected, rtol=1e-12)
    batch = rng.standard_normal((5, 2, 3))
    batch[2] = x[0]
    np.testing.assert_allclose(ln(batch).data[2], expected[0], rtol=1e-12)  # no batch mixing
    ln.eval()
    np.testing.assert_allclose(ln(x).data, expected, rtol=1e-12)  # eval mode: the same


def test_layer_norm_wrong_trailing_dims_is_a_shape_error():
    with pytest.raises(ShapeError, match=r"LayerNorm expected input of shape \(\.\.\., 2, 3\), "
                                         r"found \(4, 3, 2\)"):
        _torch_layer_norm()(np.ones((4, 3, 2), F32))
    with pytest.raises(ShapeError, match=r"found \(3,\)"):
        nn.LayerNorm([2, 3])(np.ones(3, F32))


def test_new_layers_save_and_load_with_their_settings(rng, tmp_path):
    model = nn.Sequential(_torch_layer_norm(), nn.SiLU(), nn.Flatten(), nn.Linear(6, 4),
                          nn.ELU(0.3), nn.Softplus(0.5, 3.0), nn.LayerNorm(4, eps=0.01, bias=False),
                          nn.LayerNorm(4, elementwise_affine=False))
    x = rng.standard_normal((3, 2, 3)).astype(F32)
    configs = [m.get_config() for m in model]
    assert configs[0] == {"normalized_shape": [2, 3], "eps": 1e-3, "elementwise_affine": True}
    assert configs[4:6] == [{"alpha": 0.3}, {"beta": 0.5, "threshold": 3.0}]
    assert configs[6]["bias"] is False and "bias" not in configs[7]
    assert sorted(model[6].state_dict()) == ["weight"] and model[7].state_dict() == {}
    nf.save(model, tmp_path / "m.nnf", input_shape=(2, 3))
    loaded = nf.load(tmp_path / "m.nnf")
    assert [m.get_config() for m in loaded] == configs
    np.testing.assert_array_equal(eager(loaded, x), eager(model, x))
    session = InferenceSession(tmp_path / "m.nnf")
    np.testing.assert_allclose(session.run(x), eager(model, x), rtol=1e-5, atol=1e-6)


class _Functional(nn.Module):
    """A forward calling the ops directly: traced op by op (each op's own lowering)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)
        self.g = nn.Parameter(np.linspace(0.5, 2, 6).astype(F32))
        self.b = nn.Parameter(np.linspace(-1, 1, 6).astype(F32))

    def forward(self, x):
        h = self.fc(x)
        h = A.silu(h) + A.elu(h, 0.4) + A.softplus(h) + A.softplus(h, 3.0, 2.0)
        return layer_norm(h, 1, self.g, self.b) + layer_norm(h, 1, eps=0.1)


def test_functional_forms_trace_op_by_op_and_export(rng, tmp_path):
    model = _Functional()
    x = (rng.standard_normal((5, 4)) * 2).astype(F32)
    expected = eager(model, x)
    for level in ("none", "all"):
        got = InferenceSession(model, input_shape=(4,), optimization=level).run(x)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    export(model, tmp_path / "f.onnx", input_shape=(4,))
    sess = ort.InferenceSession(str(tmp_path / "f.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {"input": x})[0], expected, rtol=1e-5, atol=1e-5)


def _ops(path) -> list[str]:
    return [n.op_type for n in onnx.load(str(path)).graph.node]


@pytest.mark.parametrize("opset", [13, 17])
def test_onnx_forms_of_the_new_layers(rng, tmp_path, opset):
    """SiLU as Sigmoid, Mul; Softplus(beta=1) as one node, other betas and thresholds as the
    formula with Where; LayerNorm as one node from opset 17, spelled out before."""
    x = (rng.standard_normal((4, 2, 6)) * 3).astype(F32)
    cases = {"silu": (nn.SiLU(), ["Sigmoid", "Mul"]), "softplus": (nn.Softplus(), ["Softplus"]),
             "softplus_beta": (nn.Softplus(2.0, 1.0), ["Mul", "Softplus", "Div", "Greater",
                                                       "Where"]),
             "softplus_threshold": (nn.Softplus(1.0, 0.5), ["Softplus", "Greater", "Where"]),
             "layernorm": (nn.LayerNorm([2, 6]), ["LayerNormalization"] if opset >= 17 else
                           ["ReduceMean", "Sub", "Mul", "ReduceMean", "Add", "Sqrt", "Div",
                            "Mul", "Add"])}
    for name, (layer, ops) in cases.items():
        if isinstance(layer, nn.LayerNorm):
            layer.weight.data[...] = rng.random((2, 6)) + 0.5
            layer.bias.data[...] = rng.standard_normal((2, 6))
        path = tmp_path / f"{name}.onnx"
        export(layer, path, opset=opset, input_shape=(2, 6))
        assert _ops(path) == ops, name
        sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        np.testing.assert_allclose(got, eager(layer, x), rtol=1e-5, atol=1e-5, err_msg=name)
        again = load(path)  # and the file comes back into nnforge with the same numbers
        np.testing.assert_allclose(InferenceSession(again).run(x), got, rtol=1e-5, atol=1e-5)


def test_hard_swish_is_spelled_out_before_opset_14(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 5])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5])
    g = helper.make_graph([helper.make_node("HardSwish", ["x"], ["y"])], "g", [x], [y])
    ids = [helper.make_opsetid("", 14)]
    onnx.save(helper.make_model(g, opset_imports=ids,
                                ir_version=helper.find_min_ir_version_for(ids)),
              str(tmp_path / "h.onnx"))
    model = nf.onnx.graph_to_model(load(tmp_path / "h.onnx"), 13)
    assert [n.op_type for n in model.graph.node] == ["HardSigmoid", "Mul"]


def test_layer_norm_with_statistics_outputs_is_refused_by_name(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])
    m = helper.make_tensor_value_info("m", TensorProto.FLOAT, ["N", 1])
    node = helper.make_node("LayerNormalization", ["x", "s"], ["y", "m"], name="ln")
    g = helper.make_graph([node], "g", [x], [y, m],
                          [numpy_helper.from_array(np.ones(4, F32), "s")])
    ids = [helper.make_opsetid("", 17)]
    onnx.save(helper.make_model(g, opset_imports=ids,
                                ir_version=helper.find_min_ir_version_for(ids)),
              str(tmp_path / "ln.onnx"))
    with pytest.raises(ConfigError, match=r"LayerNormalization \(node 'ln'\) with Mean/InvStdDev"):
        load(tmp_path / "ln.onnx")
