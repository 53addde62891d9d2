"""Models with several inputs: InferenceSession.run takes a dict by name or a list in order."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import GatedPair
from onnx import TensorProto, helper, numpy_helper

import nnforge as nf
from nnforge import nn
from nnforge.cli import main
from nnforge.errors import ConfigError, DataError, ShapeError
from nnforge.nn.module import LAYER_REGISTRY
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
    with pytest.raises(ConfigError, match=r"^missing input 'b': expected a dict with the "
                       r"model's input names \['a', 'b'\]$"):
        session.run({"a": a})
    with pytest.raises(ConfigError, match=r"^unknown input name 0; missing input 'b': "
                       r"expected .* \['a', 'b'\]$"):
        session.run({"a": a, 0: b})
    with pytest.raises(ConfigError, match=r"^unknown input name 'c': expected"):
        session.run({"a": a, "b": b, "c": b})
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


def _int_and_bool_outputs(tmp_path, outputs: list[str]) -> str:
    nodes = [helper.make_node("ArgMax", ["a"], ["i"], axis=1, keepdims=0),
             helper.make_node("ArgMin", ["a"], ["j"], axis=1, keepdims=1),
             helper.make_node("Greater", ["a", "t"], ["g"])]
    infos = {"i": helper.make_tensor_value_info("i", TensorProto.INT64, ["N"]),
             "j": helper.make_tensor_value_info("j", TensorProto.INT64, ["N", 1]),
             "g": helper.make_tensor_value_info("g", TensorProto.BOOL, ["N", 6])}
    graph = helper.make_graph(
        nodes, "ints", [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 6])],
        [infos[k] for k in outputs], [numpy_helper.from_array(np.float32(0.2), "t")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = str(tmp_path / f"{''.join(outputs)}.onnx")
    onnx.save(model, path)
    return path


@pytest.mark.parametrize("outputs", [["i", "j", "g"], ["i"], ["g"]])
def test_argmax_and_comparison_outputs_have_the_declared_dtype(
        tmp_path, rng: np.random.Generator, outputs: list[str]) -> None:
    path = _int_and_bool_outputs(tmp_path, outputs)
    oracle = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    a = rng.standard_normal((5, 6)).astype(F32)
    want = oracle.run(None, {"a": a})
    for backend in ("numpy", "onnxruntime"):
        got = InferenceSession(path, backend=backend).run(a)
        got = [got] if len(outputs) == 1 else [got[k] for k in outputs]
        for g, w in zip(got, want):  # the NumPy plan gave float32 for every one of them
            assert g.dtype == w.dtype
            np.testing.assert_array_equal(g, w)


@pytest.fixture
def gated_pair() -> Any:
    yield nn.register_layer(GatedPair)
    LAYER_REGISTRY.pop("GatedPair", None)


def test_saved_multi_input_model_runs_without_input_shape(gated_pair: Any, tmp_path: Any,
                                                          rng: np.random.Generator) -> None:
    model, path = gated_pair(), tmp_path / "pair.nnf"
    nf.save(model, path, input_shape=[(4,), (2,)])
    specs = nf.io.read_manifest(path)["inputs"]
    assert [(s["name"], s["shape"]) for s in specs] == [("input_0", [None, 4]),
                                                         ("input_1", [None, 2])]
    a, b = rng.standard_normal((5, 4)).astype(F32), rng.standard_normal((5, 2)).astype(F32)
    want = model(a, b).data
    for backend in ("numpy", "onnxruntime"):
        # it needed input_shape=[(4,), (2,)] again (and save itself failed before)
        session = InferenceSession(str(path), backend=backend)
        assert session.input_names == ["input_0", "input_1"]
        np.testing.assert_allclose(session.run([a, b]), want, rtol=1e-5, atol=1e-6)
    loaded = nf.load(path)
    assert loaded.input_shape == [(4,), (2,)]
    nf.save(loaded, tmp_path / "again.nnf")  # the loaded shapes serve a re-save
    np.testing.assert_allclose(InferenceSession(loaded).run({"input_0": a, "input_1": b}), want,
                               rtol=1e-5, atol=1e-6)
    for extra in ([], ["--graph"]):
        assert main(["info", str(path), *extra]) == 0


def test_saving_a_multi_input_model_says_what_it_needs(gated_pair: Any, tmp_path: Any) -> None:
    for kwargs, found in (({}, "no input_shape"), ({"input_shape": (4,)}, r"\(4,\)"),
                          ({"input_shape": [(4,)] * 3}, r"\[\(4,\), \(4,\), \(4,\)\]")):
        with pytest.raises(ConfigError, match=rf"^GatedPair.forward takes 2 inputs; expected "
                           rf"input_shape=\[...\] with one sample shape per argument, found "
                           rf"{found}$"):
            nf.save(gated_pair(), tmp_path / "x.nnf", **kwargs)
    with pytest.raises(ConfigError, match="preprocessing applies to a model with one input"):
        nf.save(gated_pair(), tmp_path / "x.nnf", input_shape=[(4,), (2,)],
                preprocessing={"type": "standardize", "mean": [0.0] * 4, "std": [1.0] * 4})
