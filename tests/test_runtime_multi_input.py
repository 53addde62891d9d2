"""Models with several inputs: InferenceSession.run takes a dict by name or a list in order."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnforge.errors import ConfigError, DataError, ShapeError
from nnforge.onnx import load
from nnforge.runtime import InferenceSession

F32 = np.float32


@pytest.fixture
def two_inputs(tmp_path, rng: np.random.Generator) -> str:
    """relu(a @ Wa + b @ Wb + c) and a second output a @ Wa: features plus side information."""
    inits = {"Wa": rng.standard_normal((4, 5)).astype(F32),
             "Wb": rng.standard_normal((3, 5)).astype(F32),
             "c": rng.standard_normal(5).astype(F32)}
    nodes = [helper.make_node("MatMul", ["a", "Wa"], ["ta"]),
             helper.make_node("MatMul", ["b", "Wb"], ["tb"]),
             helper.make_node("Add", ["ta", "tb"], ["s"]),
             helper.make_node("Add", ["s", "c"], ["z"]),
             helper.make_node("Relu", ["z"], ["y"])]
    graph = helper.make_graph(
        nodes, "two", [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 4]),
                       helper.make_tensor_value_info("b", TensorProto.FLOAT, ["N", 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 5]),
         helper.make_tensor_value_info("ta", TensorProto.FLOAT, ["N", 5])],
        [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = str(tmp_path / "two.onnx")
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_several_inputs_match_onnx_runtime(two_inputs: str, rng: np.random.Generator,
                                           backend: str) -> None:
    oracle = ort.InferenceSession(two_inputs, providers=["CPUExecutionProvider"])
    session = InferenceSession(load(two_inputs), backend=backend)
    assert session.input_names == ["a", "b"]
    for n in (1, 7):
        a, b = rng.standard_normal((n, 4)).astype(F32), rng.standard_normal((n, 3)).astype(F32)
        want = dict(zip(["y", "ta"], oracle.run(None, {"a": a, "b": b})))
        for feeds in ({"b": b, "a": a}, [a, b], (a.astype(np.float64), b)):
            got = session.run(feeds)
            assert set(got) == {"y", "ta"}
            for k, expected in want.items():
                np.testing.assert_allclose(got[k], expected, rtol=1e-5, atol=1e-6)


def test_several_inputs_mistakes_get_one_clear_error(two_inputs: str) -> None:
    session = InferenceSession(two_inputs)
    a, b = np.ones((2, 4), F32), np.ones((2, 3), F32)
    with pytest.raises(ConfigError, match=r"expected inputs \['a', 'b'\], found \['a'\]"):
        session.run({"a": a})
    with pytest.raises(ConfigError, match=r"expected inputs \['a', 'b'\], found \['0', 'a'\]"):
        session.run({"a": a, 0: b})
    with pytest.raises(ConfigError, match="has 2 inputs"):
        session.run(a)
    with pytest.raises(ShapeError, match=r"input 'b' of shape \(N, 3\), found \(2, 4\)"):
        session.run([a, a])
    b_nan = b.copy()
    b_nan[1, 2] = np.nan
    with pytest.raises(DataError):
        session.run([a, b_nan])
    with pytest.raises(ConfigError, match="predict\\(\\) needs a model with one input"):
        session.predict(a)
