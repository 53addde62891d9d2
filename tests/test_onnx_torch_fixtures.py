"""Models exported by torch.onnx.export (both exporters; committed fixtures made by
tests/fixtures/onnx/make_fixtures.py) import into nnforge and match ONNX Runtime."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import nnforge as nf
from nnforge.cli import main
from nnforge.onnx import GraphModule, export, load
from nnforge.runtime import InferenceSession

FIXTURES = Path(__file__).parent / "fixtures" / "onnx"
#: files with a dynamic batch dim; STATIC ones fix it at 5 (the importer frees it)
FILES = sorted(p.name for p in FIXTURES.glob("*.onnx") if not p.name.startswith("static_"))
STATIC = sorted(p.name for p in FIXTURES.glob("static_*.onnx"))
F32 = np.float32


def assert_close(got: np.ndarray, expected: np.ndarray, rtol: float = 1e-5) -> None:
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=rtol,
                               atol=rtol * max(1.0, float(np.abs(expected).max())))


def _ort(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _inputs(path: Path, n: int) -> np.ndarray:
    dims = _ort(path).get_inputs()[0].shape[1:]
    return np.random.default_rng(n).standard_normal((n, *dims)).astype(F32)


def test_both_exporters_are_covered() -> None:
    assert len(FILES) == 10 and len(STATIC) == 2
    for stem in ("mlp", "cnn_bn", "sigmoid", "cnn_ceil", "chunk_norm", "static"):
        kinds = [f for f in FILES + STATIC if f.startswith(stem + "_")]
        assert any("classic" in f for f in kinds) and any("dynamo" in f for f in kinds)
    external = set()
    for name in FILES + STATIC:
        model = onnx.load(str(FIXTURES / name), load_external_data=False)
        if any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer):
            external.add(name)
        assert model.opset_import[0].version >= 13
    # torch.export writes external data (the classic exporter never does), except for
    # models whose weights are all tiny
    assert external and all("dynamo" in name for name in external)
    assert {"mlp_dynamo.onnx", "cnn_bn_dynamo.onnx"} <= external


@pytest.mark.parametrize("name", FILES)
def test_fixture_imports_and_matches_onnx_runtime(name: str) -> None:
    path = FIXTURES / name
    oracle = _ort(path)
    sessions = [InferenceSession(path, optimization=level) for level in ("none", "all")]
    sessions.append(InferenceSession(path, backend="onnxruntime"))
    for n in (1, 4):
        x = _inputs(path, n)
        expected = oracle.run(None, {"input": x})[0]
        for s in sessions:
            assert_close(s.run(x), expected)
    ops = load(path).count_ops()
    assert not {"Shape", "Gather", "Concat", "Unsqueeze", "Squeeze", "Constant"} & set(ops)
    if name.startswith(("mlp", "cnn_bn")):
        assert ops.get("Gelu") == 1 and "Erf" not in ops  # the erf formula became one op
        assert ops.get("BatchNormalization", 0) >= 1  # kept by the exporters' settings
    if name.startswith("cnn_ceil"):
        assert ops.get("MaxPool") == 1 and ops.get("AveragePool") == 1
    if name == "chunk_norm_dynamo20.onnx":  # the unread half kept its output (it sets sizes)
        assert ops.get("Split") == 1 and ops.get("Expand") == 1  # to a constant shape


@pytest.mark.parametrize("name", STATIC)
def test_fixed_batch_size_is_freed(tmp_path, capsys, name: str) -> None:
    # torch.onnx.export without dynamic_axes writes (5, 1, 8, 8) and x.view(x.size(0), -1)
    # as Reshape(y, [5, -1]); the import failed ("expected input of shape (5, 4)")
    path = FIXTURES / name
    x = np.random.default_rng(0).standard_normal((5, 1, 8, 8)).astype(F32)
    expected = _ort(path).run(None, {"input": x})[0]
    with pytest.warns(UserWarning, match="fixes the batch size at 5; nnforge runs it on any"):
        graph = load(path)
    assert graph.inputs[0].shape == ("N", 1, 8, 8) and graph.outputs[0].shape == ("N", 1)
    session = InferenceSession(graph)
    for rows in (x, x[:1], x[:3], np.concatenate([x, x[::-1]])):
        want = expected if len(rows) == 5 else _ort_rows(path, rows)
        assert_close(session.run(rows), want)
    nnf = tmp_path / "static.nnf"
    assert main(["import", str(path), "-o", str(nnf), "--task", "regression"]) == 0
    assert "note: " in capsys.readouterr().err
    assert nf.load(nnf).manifest["extra"]["imported_from"]["fixed_batch"] == 5
    assert_close(InferenceSession(nnf).predict(x[:2]).values, expected[:2, 0])  # one target


def _ort_rows(path: Path, rows: np.ndarray) -> np.ndarray:
    """ONNX Runtime on any number of rows of a model that takes 5: 5 at a time."""
    pad = np.concatenate([rows, np.zeros((-len(rows) % 5, *rows.shape[1:]), F32)])
    runs = [_ort(path).run(None, {"input": pad[i:i + 5]})[0] for i in range(0, len(pad), 5)]
    return np.concatenate(runs)[:len(rows)]


def test_shape_chain_becomes_a_constant_reshape() -> None:
    graph = load(FIXTURES / "sigmoid_classic17.onnx")
    reshape = next(n for n in graph.nodes if n.op == "Reshape")
    assert graph.initializers[reshape.inputs[1]].tolist() == [0, -1]
    assert graph.inputs[0].shape == ("N", 1, 8, 8)


@pytest.mark.parametrize("name", ["cnn_bn_dynamo.onnx", "sigmoid_classic17.onnx"])
def test_imported_nnf_serves_like_a_native_model(tmp_path, name: str) -> None:
    # a copy elsewhere: the external data file must travel with the model
    for f in FIXTURES.glob(name + "*"):
        shutil.copy(f, tmp_path / f.name)
    src, nnf = tmp_path / name, tmp_path / "model.nnf"
    binary = name.startswith("sigmoid")
    task, labels = ("binary", "no,yes") if binary else ("multiclass", "a,b,c")
    assert main(["import", str(src), "-o", str(nnf), "--task", task, "--labels", labels]) == 0
    x = _inputs(src, 6)
    expected = _ort(src).run(None, {"input": x})[0]

    model = nf.load(nnf)
    assert isinstance(model, GraphModule) and model.manifest["task"] == task
    assert_close(model(x).data, expected)
    pred = InferenceSession(nnf).predict(x)
    assert pred.labels is not None and len(pred.labels) == 6
    if binary:
        assert_close(pred.probabilities, expected[:, 0])  # already a sigmoid: not applied twice
    else:
        e = np.exp(expected - expected.max(1, keepdims=True))
        assert_close(pred.probabilities, e / e.sum(1, keepdims=True))
        assert pred.labels == [labels.split(",")[i] for i in expected.argmax(1)]

    export(nnf, tmp_path / "again.onnx", opset=13)  # .nnf -> ONNX again
    assert_close(_ort(tmp_path / "again.onnx").run(None, {"input": x})[0], expected)


def test_imported_nnf_keeps_the_onnx_tensor_names(tmp_path) -> None:
    # torch.onnx.export(..., input_names=["x"], output_names=["logits"]): a client written
    # against the .onnx must work unchanged against the imported .nnf and its re-export
    m = onnx.load(str(FIXTURES / "mlp_classic.onnx"))
    renames = {m.graph.input[0].name: "x", m.graph.output[0].name: "logits"}
    for v in (*m.graph.input, *m.graph.output):
        v.name = renames[v.name]
    for node in m.graph.node:
        node.input[:] = [renames.get(i, i) for i in node.input]
        node.output[:] = [renames.get(o, o) for o in node.output]
    src, nnf = tmp_path / "named.onnx", tmp_path / "named.nnf"
    onnx.save(m, str(src))
    assert main(["import", str(src), "-o", str(nnf), "--task", "multiclass"]) == 0
    manifest = nf.load(nnf).manifest
    assert [s["name"] for s in manifest["inputs"]] == ["x"]
    assert [s["name"] for s in manifest["outputs"]] == ["logits"]
    assert InferenceSession(nnf).input_names == ["x"]
    x = _inputs(src, 4)
    export(nnf, tmp_path / "again.onnx")
    assert_close(_ort(tmp_path / "again.onnx").run(["logits"], {"x": x})[0],
                 _ort(src).run(None, {"x": x})[0])
