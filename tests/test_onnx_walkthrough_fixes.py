"""Regressions from a PyTorch-export walkthrough, each on a small onnx.helper graph in the form
torch.onnx.export writes, run by nnforge and by onnxruntime on the same file: int64 first
inputs (embeddings), a class token expanded to the batch size, Reshape targets with run-time
dims, export of -inf mask constants and of Split(num_outputs) below opset 18, and the
external-data location message."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_onnx_errors import external_matmul

from nnforge.errors import ConfigError, ModelFileError
from nnforge.onnx import export, import_model, load
from nnforge.runtime import InferenceSession

F32, I64 = np.float32, np.int64


def _save(path: Path, nodes: list, inputs: list, outputs: list, inits: dict | None = None,
          opset: int = 17) -> Path:
    """Write a model; inputs/outputs are (name, TensorProto type, shape) triples."""
    def info(name: str, kind: int, shape: list) -> onnx.ValueInfoProto:
        return helper.make_tensor_value_info(name, kind, shape)

    tensors = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    opsets = [helper.make_opsetid("", opset)]
    graph = helper.make_graph(nodes, "g", [info(*i) for i in inputs],
                              [info(*o) for o in outputs], tensors)
    model = helper.make_model(graph, opset_imports=opsets,
                              ir_version=helper.find_min_ir_version_for(opsets))
    onnx.save(model, str(path))
    return path


def _ort(path: Path, feeds: dict[str, np.ndarray]) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None,
                                                                                   feeds)[0]


def _weights(rng: np.random.Generator, *shapes: tuple[int, ...]) -> list[np.ndarray]:
    return [rng.standard_normal(s).astype(F32) for s in shapes]


# -- 1: an int64 first input ----------------------------------------------------------------------
def _embedding(tmp_path: Path, rng: np.random.Generator, with_x: bool = False) -> Path:
    """nn.Embedding(20, 8) -> Linear(8, 3), as classic export writes it (Gather, MatMul, Add);
    with_x adds a float second input (ids first, x second)."""
    table, w, b, wx = _weights(rng, (20, 8), (8, 3), (3,), (5, 3))
    nodes = [helper.make_node("Gather", ["table", "ids"], ["e"]),
             helper.make_node("MatMul", ["e", "w"], ["m"]),
             helper.make_node("Add", ["m", "b"], ["y" if not with_x else "h"])]
    inputs = [("ids", TensorProto.INT64, ["batch", 7])]
    inits = {"table": table, "w": w, "b": b}
    if with_x:
        nodes += [helper.make_node("MatMul", ["x", "wx"], ["hx"]),
                  helper.make_node("Unsqueeze", ["hx", "one"], ["hx1"]),
                  helper.make_node("Add", ["h", "hx1"], ["y"])]
        inputs.append(("x", TensorProto.FLOAT, ["batch", 5]))
        inits.update(wx=wx, one=np.array([1], I64))
    return _save(tmp_path / f"emb{int(with_x)}.onnx", nodes, inputs,
                 [("y", TensorProto.FLOAT, ["batch", 7, 3])], inits)


def test_an_int64_first_input_runs_like_onnxruntime(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = _embedding(tmp_path, rng)
    ids = rng.integers(0, 20, (4, 7)).astype(I64)
    want = _ort(path, {"ids": ids})
    session = InferenceSession(path)
    assert session.manifest["inputs"][0]["dtype"] == "int64"
    for feed in (ids, {"ids": ids}, ids[:1]):
        got = session.run(feed)
        assert got.dtype == F32
        np.testing.assert_array_equal(got, want[:len(got)])
    import_model(path, tmp_path / "emb.nnf")  # `nnforge import`, then a .nnf session
    nnf = InferenceSession(tmp_path / "emb.nnf")
    assert nnf.manifest["inputs"][0]["dtype"] == nnf.graph.inputs[0].dtype == "int64"
    np.testing.assert_array_equal(nnf.run(ids), want)
    export(tmp_path / "emb.nnf", tmp_path / "back.onnx")  # the ids stay int64 in the file
    np.testing.assert_array_equal(_ort(tmp_path / "back.onnx", {"ids": ids}), want)
    both = _embedding(tmp_path, rng, with_x=True)
    feeds = {"ids": ids, "x": rng.standard_normal((4, 5)).astype(F32)}
    np.testing.assert_allclose(InferenceSession(both).run(feeds), _ort(both, feeds),
                               rtol=1e-6, atol=1e-6)


# -- 2: a class token expanded to the batch size ---------------------------------------------------
def _cls_token(tmp_path: Path, rng: np.random.Generator) -> Path:
    """`l(cat([cls.expand(x.shape[0], -1, -1), x], 1))[:, 0]`, as classic export writes it."""
    cls, w, b = _weights(rng, (1, 1, 8), (8, 8), (8,))
    n = helper.make_node
    nodes = [n("Shape", ["x"], ["s"]), n("Gather", ["s", "zero"], ["b0"], axis=0),
             n("Unsqueeze", ["b0", "axes0"], ["b1"]),
             n("Concat", ["b1", "minus1", "minus1"], ["c"], axis=0),
             n("Reshape", ["c", "minus1"], ["r"]), n("Shape", ["r"], ["rs"]),
             n("ConstantOfShape", ["rs"], ["ones"],
               value=numpy_helper.from_array(np.array([1], I64))),
             n("Mul", ["ones", "neg"], ["negs"]), n("Equal", ["r", "negs"], ["eq"]),
             n("Where", ["eq", "ones", "r"], ["target"]),
             n("Expand", ["cls", "target"], ["tokens"]),
             n("Concat", ["tokens", "x"], ["seq"], axis=1),
             n("MatMul", ["seq", "w"], ["m"]), n("Add", ["b", "m"], ["h"]),
             n("Gather", ["h", "zero"], ["y"], axis=1)]
    inits = {"zero": np.array(0, I64), "axes0": np.array([0], I64),
             "minus1": np.array([-1], I64), "neg": np.array(-1, I64), "cls": cls, "w": w, "b": b}
    return _save(tmp_path / "cls.onnx", nodes, [("x", TensorProto.FLOAT, ["batch", 5, 8])],
                 [("y", TensorProto.FLOAT, ["batch", 8])], inits)


def test_a_class_token_expanded_to_the_batch_compiles(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = _cls_token(tmp_path, rng)
    graph = load(path)
    assert graph.outputs[0].shape == ("N", 8)
    session = InferenceSession(path)
    for rows in (3, 1, 7):
        x = rng.standard_normal((rows, 5, 8)).astype(F32)
        np.testing.assert_allclose(session.run(x), _ort(path, {"x": x}), rtol=1e-6, atol=1e-6)


def test_a_shape_that_cannot_be_inferred_is_refused_at_import(tmp_path: Path) -> None:
    # Expand to a shape fed as data: onnxruntime runs it, a compiled plan cannot size it
    path = _save(tmp_path / "dyn.onnx",
                 [helper.make_node("Expand", ["x", "shape"], ["e"], name="grow"),
                  helper.make_node("Relu", ["e"], ["y"])],
                 [("x", TensorProto.FLOAT, ["batch", 3]), ("shape", TensorProto.INT64, [2])],
                 [("y", TensorProto.FLOAT, ["batch", 3])])
    with pytest.raises(ConfigError, match=r"the shape of 'e' \(Expand node 'grow'\) cannot be "
                                          r"inferred from the input sizes"):
        InferenceSession(path)


# -- 3: Reshape targets with run-time dims -------------------------------------------------------
def test_reshape_back_to_the_batch_of_another_value(tmp_path: Path) -> None:
    # B, T, D = x.shape; l(x.reshape(-1, D)).reshape(B, T, -1): the second target is
    # ['N', 5, -1] for an input of shape (N * 5, 4), whose N is the graph input's
    rng = np.random.default_rng(2)
    (w,) = _weights(rng, (6, 4))
    n = helper.make_node
    nodes = [n("Shape", ["x"], ["s"]), n("Gather", ["s", "zero"], ["b0"], axis=0),
             n("Unsqueeze", ["b0", "axes0"], ["b1"]),
             n("Reshape", ["x", "rows"], ["flat"]), n("MatMul", ["flat", "w"], ["m"]),
             n("Concat", ["b1", "five", "minus1"], ["t"], axis=0),
             n("Reshape", ["m", "t"], ["y"], name="back")]
    inits = {"zero": np.array(0, I64), "axes0": np.array([0], I64), "w": w,
             "rows": np.array([-1, 6], I64), "five": np.array([5], I64),
             "minus1": np.array([-1], I64)}
    path = _save(tmp_path / "merge.onnx", nodes, [("x", TensorProto.FLOAT, ["batch", 5, 6])],
                 [("y", TensorProto.FLOAT, ["batch", 5, 4])], inits)
    session = InferenceSession(path)
    for rows in (2, 7, 1):
        x = rng.standard_normal((rows, 5, 6)).astype(F32)
        got = session.run(x)
        assert got.shape == (rows, 5, 4)
        np.testing.assert_allclose(got, _ort(path, {"x": x}), rtol=1e-6, atol=1e-6)
    import_model(path, tmp_path / "merge.nnf")  # the run-time target survives a .nnf
    export(tmp_path / "merge.nnf", tmp_path / "back.onnx", opset=13)
    x = rng.standard_normal((3, 5, 6)).astype(F32)
    np.testing.assert_allclose(_ort(tmp_path / "back.onnx", {"x": x}), _ort(path, {"x": x}),
                               rtol=1e-6, atol=1e-6)


def test_reshape_to_two_dims_of_its_input_and_allowzero(tmp_path: Path) -> None:
    # dynamo: view(x.shape[0], x.shape[1], 2, 8) with allowzero=1, batch and tokens dynamic
    n = helper.make_node
    nodes = [n("Shape", ["x"], ["s0"], start=0, end=1), n("Shape", ["x"], ["s1"], start=1, end=2),
             n("Concat", ["s0", "s1", "heads"], ["t"], axis=0),
             n("Reshape", ["x", "t"], ["v"], allowzero=1),
             n("Transpose", ["v"], ["y"], perm=[0, 2, 1, 3])]
    path = _save(tmp_path / "heads.onnx", nodes,
                 [("x", TensorProto.FLOAT, ["batch", "tokens", 16])],
                 [("y", TensorProto.FLOAT, ["batch", 2, "tokens", 8])],
                 {"heads": np.array([2, 8], I64)}, opset=18)
    session = InferenceSession(path)
    rng = np.random.default_rng(3)
    for shape in ((3, 5, 16), (2, 9, 16)):
        x = rng.standard_normal(shape).astype(F32)
        np.testing.assert_array_equal(session.run(x), _ort(path, {"x": x}))


# -- 4, 5: export ---------------------------------------------------------------------------------
def test_export_keeps_a_minus_inf_mask_and_refuses_nan_weights(tmp_path: Path) -> None:
    rng = np.random.default_rng(4)
    (w,) = _weights(rng, (4, 4))
    mask = np.triu(np.ones((4, 4), bool), 1)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["a"]),
             helper.make_node("Where", ["mask", "ninf", "a"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["y"], axis=-1)]
    inits = {"w": w, "mask": mask, "ninf": np.array(-np.inf, F32)}
    io = ([("x", TensorProto.FLOAT, ["batch", 4, 4])], [("y", TensorProto.FLOAT, ["batch", 4, 4])])
    path = _save(tmp_path / "causal.onnx", nodes, *io, inits)
    export(path, tmp_path / "back.onnx")
    x = rng.standard_normal((3, 4, 4)).astype(F32)
    want = _ort(path, {"x": x})
    np.testing.assert_array_equal(_ort(tmp_path / "back.onnx", {"x": x}), want)
    np.testing.assert_allclose(InferenceSession(tmp_path / "back.onnx").run(x), want,
                               rtol=1e-6, atol=1e-7)
    w[1, 2] = np.nan  # a trained weight: still refused
    bad = _save(tmp_path / "nan.onnx", nodes, *io, inits)
    with pytest.raises(ConfigError, match="non-finite weights: 'w' has 1 NaN/Inf"):
        export(bad, tmp_path / "bad.onnx")


def _chunks(tmp_path: Path, width: int | str) -> Path:
    """x.chunk(3, -1) as dynamo writes it: Split(num_outputs=3), opset 18."""
    nodes = [helper.make_node("Split", ["x"], ["a", "b", "c"], axis=1, num_outputs=3),
             helper.make_node("Mul", ["a", "b"], ["ab"]),
             helper.make_node("Concat", ["ab", "c"], ["y"], axis=1)]
    out = width if isinstance(width, str) else width - width // 3
    return _save(tmp_path / f"chunk_{width}.onnx", nodes,
                 [("x", TensorProto.FLOAT, ["batch", width])],
                 [("y", TensorProto.FLOAT, ["batch", out])], opset=18)


def test_split_num_outputs_exports_below_opset_18(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    for width in (6, 7):  # 7: the last piece is smaller (3, 3, 1)
        path = _chunks(tmp_path, width)
        for opset in (17, 13):
            model = export(path, tmp_path / "back.onnx", opset=opset)
            split = next(n for n in model.graph.node if n.op_type == "Split")
            assert [a.name for a in split.attribute] == ["axis"] and len(split.input) == 2
            x = rng.standard_normal((4, width)).astype(F32)
            want = _ort(path, {"x": x})
            np.testing.assert_array_equal(_ort(tmp_path / "back.onnx", {"x": x}), want)
            np.testing.assert_array_equal(InferenceSession(tmp_path / "back.onnx").run(x), want)
    free = _chunks(tmp_path, "width")
    with pytest.raises(ConfigError, match=r"num_outputs=3 needs opset 18 .* run time .* "
                                          r"expected opset=18 \(--opset 18\)"):
        export(free, tmp_path / "free.onnx", opset=17)
    assert export(free, tmp_path / "free.onnx", opset=18).opset_import[0].version == 18


# -- 6: the external-data message ----------------------------------------------------------------
def test_external_data_outside_the_folder_names_the_rule(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "model.data").write_bytes(np.ones(4, F32).tobytes())
    onnx.save(external_matmul("../a/model.data"), str(tmp_path / "b" / "model.onnx"))
    with pytest.raises(ModelFileError) as err:
        InferenceSession(tmp_path / "b" / "model.onnx")
    assert "'../a/model.data' must name a file inside the model's directory" in str(err.value)
    assert "relative to" not in str(err.value)
