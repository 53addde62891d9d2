"""Hostile ONNX files: small files that ask for huge arrays fail with one nnforge error."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnforge.errors import ConfigError, ModelFileError, ResourceError, ShapeError
from nnforge.graph import passes, shapes
from nnforge.graph.ir import Graph, Node, ValueInfo
from nnforge.onnx import load
from nnforge.runtime import InferenceSession
from nnforge.runtime import plan as plan_module

F32 = np.float32


def _save(path: Path, nodes: list, inits: dict | None = None, opset: int = 17,
          tensors: list | None = None) -> Path:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "M"])
    ts = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], ts + (tensors or [])),
                              opset_imports=[helper.make_opsetid("", opset)], ir_version=8)
    onnx.save(model, str(path))
    return path


def _fill(name: str, shape_name: str) -> Node:
    return helper.make_node("ConstantOfShape", [shape_name], [name],
                            value=numpy_helper.from_array(np.ones(1, F32)))


def test_import_does_not_fold_an_output_past_the_cap(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(passes, "FOLD_MAX_GROWTH", 100)
    nodes = [_fill("c", "s"), helper.make_node("ReduceMax", ["c"], ["r"], keepdims=0),
             helper.make_node("Add", ["x", "r"], ["y"])]
    path = _save(tmp_path / "m.onnx", nodes, {"s": np.array([20, 20], np.int64)})
    g = load(path)  # 400 elements from 2: left to run time, not stored in the graph
    assert "ConstantOfShape" in [n.op for n in g.nodes]
    out = InferenceSession(path).run(np.zeros((2, 4), F32))
    np.testing.assert_array_equal(out, np.ones((2, 4), F32))


def test_import_counts_an_input_listed_many_times_once(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(passes, "FOLD_MAX_GROWTH", 16)
    nodes = [helper.make_node("Concat", ["w"] * 50, ["c"], axis=0),
             helper.make_node("ReduceMax", ["c"], ["r"], keepdims=0),
             helper.make_node("Add", ["x", "r"], ["y"])]
    g = load(_save(tmp_path / "m.onnx", nodes, {"w": np.ones(8, F32)}))
    assert "Concat" in [n.op for n in g.nodes]  # 400 elements out of 8 stored ones


def test_fold_constants_counts_distinct_inputs_and_a_total_budget(monkeypatch) -> None:
    monkeypatch.setattr(passes, "FOLD_MAX_GROWTH", 16)
    g = Graph([Node("Concat", ["w"] * 10, ["c"], {"axis": 0}), Node("Add", ["x", "c"], ["y"])],
              [ValueInfo("x", ("N", 80))], [ValueInfo("y")], {"w": np.ones(8, F32)})
    assert [n.op for n in passes.fold_constants(g).nodes] == ["Concat", "Add"]
    # each fill is under the per-node cap; together they pass the pass's budget
    monkeypatch.setattr(passes, "FOLD_MIN_BUDGET", 20)
    fills = [Node("ConstantOfShape", ["s"], [f"c{i}"], {"value": np.ones(1, F32)})
             for i in range(3)]
    adds = [Node("Add", ["x" if i == 0 else f"a{i - 1}", f"c{i}"], [f"a{i}" if i < 2 else "y"])
            for i in range(3)]
    g = Graph(fills + adds, [ValueInfo("x", ("N", 8))], [ValueInfo("y")],
              {"s": np.array([8], np.int64)})
    assert [n.op for n in passes.fold_constants(g).nodes].count("ConstantOfShape") == 1


def test_static_output_past_the_element_budget_is_refused_at_load(tmp_path, monkeypatch
                                                                   ) -> None:
    monkeypatch.setattr(shapes, "MAX_ELEMENTS", 100)
    nodes = [helper.make_node("Pad", ["x", "p"], ["y"])]
    path = _save(tmp_path / "m.onnx", nodes, {"p": np.array([0, 0, 0, 400], np.int64)})
    with pytest.raises(ModelFileError, match=r"Pad 'Pad_0'.*\('N', 404\)"):
        InferenceSession(path)


def test_batch_pad_past_the_budget_is_refused_at_compile(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(shapes, "MAX_ELEMENTS", 1000)
    nodes = [helper.make_node("Pad", ["x", "p"], ["y"])]  # 1000 more rows whatever the batch
    session = InferenceSession(_save(tmp_path / "m.onnx", nodes,
                                     {"p": np.array([0, 0, 1000, 0], np.int64)}))
    with pytest.raises(ModelFileError, match="Pad 'Pad_0'"):
        session.run(np.zeros((2, 4), F32))


def test_kernel_out_of_memory_names_the_node(tmp_path, monkeypatch) -> None:
    def oom_kernel(node, ins, outs, ctx):  # noqa: ANN001, ANN202 - the kernel signature
        def step(feeds):  # noqa: ANN001, ANN202
            raise MemoryError("Unable to allocate 4.00 TiB")
        return step
    monkeypatch.setitem(plan_module.KERNELS, "Sqrt", oom_kernel)
    session = InferenceSession(_save(tmp_path / "m.onnx",
                                     [helper.make_node("Sqrt", ["x"], ["y"], name="root")]))
    # the machine's memory, not the input's shape (a ResourceError is no ShapeError/ValueError)
    with pytest.raises(ResourceError, match="out of memory running Sqrt 'root'"):
        session.run(np.ones((2, 4), F32))


def test_constant_gather_index_out_of_range_is_refused_at_load(tmp_path) -> None:
    nodes = [helper.make_node("Gather", ["x", "i"], ["y"], axis=1, name="pick")]
    path = _save(tmp_path / "m.onnx", nodes, {"i": np.array([10**9], np.int64)})
    with pytest.raises(ShapeError, match=r"Gather pick: expected indices in \[-4, 3\]"):
        load(path)


def test_external_tensor_with_negative_dims(tmp_path) -> None:
    (tmp_path / "w.bin").write_bytes(bytes(32))
    w = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[-4, -2])
    w.data_location = TensorProto.EXTERNAL
    w.external_data.append(onnx.StringStringEntryProto(key="location", value="w.bin"))
    path = _save(tmp_path / "m.onnx", [helper.make_node("MatMul", ["x", "w"], ["y"])],
                 tensors=[w])
    with pytest.raises(ModelFileError, match=r"expected dims >= 0, found shape \(-4, -2\)"):
        load(path)


def test_opset_newer_than_any_onnx_release_is_refused(tmp_path) -> None:
    path = _save(tmp_path / "m.onnx", [helper.make_node("Relu", ["x"], ["y"])], opset=999)
    with pytest.raises(ConfigError, match="opset 999; expected opset"):
        load(path)


def test_data_sized_outputs_are_not_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    """A convolution of a big image may pass MAX_ELEMENTS (a 128-channel 2048x2048 map is 2**29
    elements): only outputs sized by constants (ConstantOfShape, Expand, Pad, ...) are capped."""
    from nnforge import nn  # noqa: PLC0415

    monkeypatch.setattr(shapes, "MAX_ELEMENTS", 100)
    model = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 1, 1))
    x = np.ones((2, 1, 6, 6), np.float32)  # 8 x 6 x 6 = 288 elements per sample, over 100
    assert InferenceSession(model, input_shape=(1, 6, 6)).run(x).shape == (2, 1, 6, 6)
