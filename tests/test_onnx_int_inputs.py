"""An ONNX model imported as `.nnf` keeps each input's own dtype (int64 ids, int32, bool,
float64) in its manifest and in the graph a session compiles, so ids run as integers end to
end, as ONNX Runtime runs the original file; `.nnf` files written before, whose manifest says
float32 for an int input, still run."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from nnforge import nn
from nnforge.errors import ConfigError
from nnforge.io import read_manifest, save
from nnforge.io.archive import write_archive
from nnforge.onnx import export, import_model, to_module
from nnforge.runtime import InferenceSession

ROWS = 40
TABLE = np.arange(ROWS * 3, dtype=np.float32).reshape(ROWS, 3)


def _save(path: Path, nodes: list, x: tuple, y: tuple, inits: dict) -> Path:
    """A one-input, one-output model; x and y are (name, TensorProto type, shape)."""
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(*x)],
                              [helper.make_tensor_value_info(*y)],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    opsets = [helper.make_opsetid("", 17)]
    onnx.save(helper.make_model(graph, opset_imports=opsets,
                                ir_version=helper.find_min_ir_version_for(opsets)), str(path))
    return path


def _embedding(tmp_path: Path, ids_type: int = T.INT64) -> Path:
    return _save(tmp_path / "emb.onnx", [helper.make_node("Gather", ["E", "ids"], ["y"])],
                 ("ids", ids_type, ["N"]), ("y", T.FLOAT, ["N", 3]), {"E": TABLE})


def _bool_input(tmp_path: Path) -> Path:
    nodes = [helper.make_node("Where", ["m", "a", "b"], ["y"])]
    return _save(tmp_path / "where.onnx", nodes, ("m", T.BOOL, ["N", 3]),
                 ("y", T.FLOAT, ["N", 3]), {"a": TABLE[1], "b": TABLE[2]})


def _double_input(tmp_path: Path) -> Path:
    nodes = [helper.make_node("Cast", ["x"], ["xf"], to=T.FLOAT),
             helper.make_node("Add", ["xf", "b"], ["y"])]
    return _save(tmp_path / "double.onnx", nodes, ("x", T.DOUBLE, ["N", 3]),
                 ("y", T.FLOAT, ["N", 3]), {"b": TABLE[1]})


def _ort(path: Path, name: str, x: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(
        None, {name: x})[0]


CASES = {  # dtype: (model, a batch of inputs)
    "int64": (_embedding, np.array([3, ROWS - 1, 0, -1], np.int64)),
    "int32": (lambda p: _embedding(p, T.INT32), np.array([5, 0, -ROWS], np.int32)),
    "bool": (_bool_input, np.array([[True, False, True], [False, False, True]])),
    "float64": (_double_input, np.array([[0.1, 1e-9, 3.3], [2.0**30 + 0.5, -7.0, 1 / 3]])),
}


@pytest.mark.parametrize("dtype", CASES)
def test_an_imported_nnf_keeps_the_onnx_input_dtype(tmp_path: Path, dtype: str) -> None:
    make, x = CASES[dtype]
    path = make(tmp_path)
    name = onnx.load(str(path)).graph.input[0].name
    import_model(path, tmp_path / "m.nnf")
    assert read_manifest(tmp_path / "m.nnf")["inputs"][0]["dtype"] == dtype
    session = InferenceSession(tmp_path / "m.nnf")
    assert session.graph.inputs[0].dtype == dtype
    got, want = session.run(x), _ort(path, name, x)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def test_ids_past_float32_precision_stay_exact(tmp_path: Path) -> None:
    """float32 holds integers exactly only up to 2**24: ids must never pass through it."""
    path = _save(tmp_path / "ids.onnx", [helper.make_node("Cast", ["ids"], ["y"], to=T.DOUBLE)],
                 ("ids", T.INT64, ["N"]), ("y", T.DOUBLE, ["N"]), {})
    import_model(path, tmp_path / "ids.nnf")
    ids = np.array([2**24 + 1, 2**40 + 3, -(2**30) - 1], np.int64)
    got = InferenceSession(tmp_path / "ids.nnf").run(ids)
    np.testing.assert_array_equal(got, _ort(path, "ids", ids))
    np.testing.assert_array_equal(got, ids.astype(np.float64))


def _as_written_before(path: Path) -> None:
    """Rewrite the manifest as nnforge wrote it before: every input float32."""
    with zipfile.ZipFile(path) as z:
        entries = {n: z.read(n) for n in z.namelist()}
    manifest = json.loads(entries["manifest.json"])
    for spec in manifest["inputs"]:
        spec["dtype"] = "float32"
    entries["manifest.json"] = json.dumps(manifest).encode()
    write_archive(path, [(n, [data]) for n, data in entries.items()], (2024, 1, 1, 0, 0, 0))


def test_an_nnf_written_before_still_runs_its_ids(tmp_path: Path) -> None:
    path = _embedding(tmp_path)
    import_model(path, tmp_path / "old.nnf")
    _as_written_before(tmp_path / "old.nnf")
    assert read_manifest(tmp_path / "old.nnf")["inputs"][0]["dtype"] == "float32"
    session = InferenceSession(tmp_path / "old.nnf")
    ids = np.array([7, 0, ROWS - 1], np.int64)
    for feed in (ids, ids.astype(np.float32)):  # float ids, as the manifest said, run too
        np.testing.assert_array_equal(session.run(feed), TABLE[ids])
    assert session.graph.inputs[0].dtype == "int64"


def test_an_embedding_first_in_a_sequential_saves_and_exports_int_ids(tmp_path: Path) -> None:
    """The manifest, the session and the exported file all take int64 ids."""
    model = nn.Sequential(to_module(str(_embedding(tmp_path))), nn.Linear(3, 2))
    save(model, tmp_path / "seq.nnf", input_shape=())
    assert read_manifest(tmp_path / "seq.nnf")["inputs"][0]["dtype"] == "int64"
    session = InferenceSession(tmp_path / "seq.nnf")
    assert session.graph.inputs[0].dtype == "int64"
    export(tmp_path / "seq.nnf", tmp_path / "seq.onnx")
    assert onnx.load(str(tmp_path / "seq.onnx")).graph.input[0].type.tensor_type.elem_type \
        == T.INT64
    ids = np.array([1, 30, ROWS - 1], np.int64)
    np.testing.assert_allclose(session.run(ids), _ort(tmp_path / "seq.onnx", "input", ids),
                               rtol=1e-6)


class _Wrapper(nn.Module):
    """A forward of its own around an imported embedding (traced op by op)."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(x) * 2.0


def test_an_embedding_behind_float_values_gets_integer_indices(tmp_path: Path) -> None:
    """Values computed in a float dtype (an op-by-op trace's input, a float layer's output)
    are cast to the graph's int64, as calling the layer converts them: Gather sees ints."""
    inner = to_module(str(_embedding(tmp_path)))
    ids = np.array([2, 0, 9], np.int64)
    for model in (_Wrapper(inner), nn.Sequential(nn.Identity(), inner)):
        session = InferenceSession(model, input_shape=())
        ops = [n.op for n in session.graph.nodes]
        assert "Cast" in ops and ops.index("Cast") < ops.index("Gather")
        want = TABLE[ids] * (2.0 if isinstance(model, _Wrapper) else 1.0)
        np.testing.assert_array_equal(session.run(ids.astype(np.float32)), want)


def test_float_gather_indices_are_refused(tmp_path: Path) -> None:
    """ONNX takes int32/int64 indices only (ONNX Runtime refuses the file): no float path."""
    path = _embedding(tmp_path, T.FLOAT)
    with pytest.raises(ConfigError, match=r"Gather .*expected int32 or int64 indices, found "
                                          r"float32"):
        InferenceSession(path).run(np.array([1.0], np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_native_models_record_their_float_dtype(tmp_path: Path, dtype: type) -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU()).to(dtype=dtype)
    save(model, tmp_path / "m.nnf")
    spec = read_manifest(tmp_path / "m.nnf")["inputs"]
    assert spec == [{"name": "input", "shape": [None, 4], "dtype": np.dtype(dtype).name}]
