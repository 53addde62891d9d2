"""An ONNX model imported as `.nnf` keeps each input's own dtype (int64 ids, int32, bool,
float64) in its manifest and in the graph a session compiles, so ids run as integers end to
end, as ONNX Runtime runs the original file; `.nnf` files written before, whose manifest says
float32 for an int input, still run."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import httpx
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from helpers import serve_in_process
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from nnforge import nn
from nnforge.errors import ConfigError, DataError
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


def _ids_model(tmp_path: Path) -> Path:
    """Gather over a (10, 3) table with an int64 ids input of shape (N, 3)."""
    table = np.arange(30, dtype=np.float32).reshape(10, 3)
    return _save(tmp_path / "ids.onnx", [helper.make_node("Gather", ["E", "ids"], ["y"])],
                 ("ids", T.INT64, ["N", 3]), ("y", T.FLOAT, ["N", 3, 3]), {"E": table})


@pytest.mark.parametrize("feed, found", [
    ([[1.9, 2.0, 3.0]], r"sample 0: expected whole numbers .*int64 input, found 1\.9"),
    ([[1.0, 2.0, 3.0], [4.0, np.nan, 6.0]], r"sample 1: expected whole numbers .*found nan"),
    ([[1.0, 2.0**70, 3.0]], r"sample 0: expected values in \[-9223372036854775808, "
                            r"9223372036854775807\] .*found 1\.18\d*e\+21"),
    ([[1.0, 2.0**63, 3.0]], r"sample 0: expected values in .*found 9\.22337\d*e\+18"),
])
def test_float_feeds_for_int_ids_must_be_whole_numbers_in_range(
        tmp_path: Path, feed: list, found: str) -> None:
    """Casting would truncate 1.9 to the id 1 (and wrap 2**63) silently."""
    session = InferenceSession(_ids_model(tmp_path))
    for x in (np.array(feed), np.array(feed, np.float32), feed):  # float64, float32, a list
        with pytest.raises(DataError, match=r"input 'ids': " + found):
            session.run(x)
    with pytest.raises(DataError):  # predict's own NaN check may say it first
        session.predict(np.array(feed))


def test_whole_float_ids_run_as_the_ints_do(tmp_path: Path) -> None:
    session = InferenceSession(_ids_model(tmp_path))
    ids = np.array([[1, 2, 3], [9, -10, 0]])
    want = session.run(ids)
    np.testing.assert_array_equal(want, np.arange(30, dtype=np.float32).reshape(10, 3)[ids])
    np.testing.assert_array_equal(session.run(ids.astype(np.float64)), want)
    np.testing.assert_array_equal(session.run(ids.astype(np.int32)), want)


@pytest.mark.parametrize("bad", [10, -11, 10**12])
def test_ids_outside_the_table_name_the_node_and_the_range(tmp_path: Path, bad: int) -> None:
    """ONNX allows [-n, n-1]; past it np.take raised a bare IndexError from the kernel."""
    path = _ids_model(tmp_path)
    session = InferenceSession(path)
    ids = np.array([[1, 2, 3], [4, bad, 5]], np.int64)
    with pytest.raises(DataError, match=rf"Gather '.*': expected indices in \[-10, 9\], "
                                        rf"found {bad}\b"):
        session.run(ids)
    with pytest.raises(ort.capi.onnxruntime_pybind11_state.InvalidArgument):
        _ort(path, "ids", ids)  # ONNX Runtime refuses them too
    np.testing.assert_array_equal(session.run(ids[:1]), _ort(path, "ids", ids[:1]))


def test_the_server_answers_ids_outside_the_table_with_400(tmp_path: Path) -> None:
    """A DataError from the model is the request's fault (serve/errors.py model_error)."""
    version = tmp_path / "repo" / "emb" / "1"
    version.mkdir(parents=True)
    (version / "model.onnx").write_bytes(_ids_model(tmp_path).read_bytes())

    def body(values: list, datatype: str = "INT64") -> dict:
        return {"inputs": [{"name": "ids", "datatype": datatype, "shape": [1, 3],
                            "data": values}]}

    async def check(c: httpx.AsyncClient, server: object) -> None:
        ok = await c.post("/v2/models/emb/infer", json=body([1, -10, 3]))
        assert ok.status_code == 200, ok.text
        r = await c.post("/v2/models/emb/infer", json=body([1, 10, 3]))
        assert r.status_code == 400, r.text
        assert "expected indices in [-10, 9], found 10" in r.json()["error"], r.text
        # ids sent as FP64: whole numbers run as the ints do, 1.5 is not the id 1
        same = await c.post("/v2/models/emb/infer", json=body([1.0, -10.0, 3.0], "FP64"))
        assert same.status_code == 200 and same.json()["outputs"] == ok.json()["outputs"]
        r = await c.post("/v2/models/emb/infer", json=body([1.5, 2.0, 3.0], "FP64"))
        assert r.status_code == 400 and "expected whole numbers" in r.json()["error"], r.text
    serve_in_process(tmp_path / "repo", check)


def test_an_nnf_written_before_serves_ids_past_float32_precision_exactly(tmp_path: Path
                                                                          ) -> None:
    """Its manifest says float32, its graph int64: the server takes the graph's dtype, so an
    id above 2**24 (not a float32) reaches the model whole: ids - 2**24 comes back exact."""
    nodes = [helper.make_node("Sub", ["ids", "base"], ["d"]),
             helper.make_node("Cast", ["d"], ["y"], to=T.FLOAT)]
    path = _save(tmp_path / "off.onnx", nodes, ("ids", T.INT64, ["N", 1]),
                 ("y", T.FLOAT, ["N", 1]), {"base": np.array(2**24, np.int64)})
    version = tmp_path / "repo" / "off" / "1"
    version.mkdir(parents=True)
    import_model(path, version / "model.nnf")
    _as_written_before(version / "model.nnf")
    assert read_manifest(version / "model.nnf")["inputs"][0]["dtype"] == "float32"

    async def check(c: httpx.AsyncClient, server: object) -> None:
        meta = await c.get("/v2/models/off")
        assert meta.json()["inputs"][0]["datatype"] == "INT64", meta.text
        r = await c.post("/v2/models/off/infer", json={"inputs": [
            {"name": "ids", "datatype": "INT64", "shape": [2, 1], "data": [2**24 + 1, 2**24 + 3]}]})
        assert r.status_code == 200, r.text
        assert r.json()["outputs"][0]["data"] == [1.0, 3.0], r.text  # float32 ids: 0 and 4
    serve_in_process(tmp_path / "repo", check)
