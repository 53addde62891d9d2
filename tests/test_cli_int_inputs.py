"""`nnforge predict` on a model whose input is integer ids (an embedding's Gather)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from helpers import run_cli
from onnx import TensorProto, helper, numpy_helper

ROWS = 40


@pytest.fixture(params=["onnx", "nnf"])
def embedding(request, capsys, tmp_path):
    """Gather rows of a (40, 3) table by int64 ids: the output is the id's row, exactly; the
    .onnx file, or the .nnf `nnforge import` makes of it (whose input stays int64)."""
    path = _embedding_onnx(tmp_path)
    if request.param == "onnx":
        return path
    code, _, err = run_cli(capsys, "import", str(path), "-o", str(tmp_path / "emb.nnf"))
    assert code == 0, err
    return tmp_path / "emb.nnf"


def _embedding_onnx(tmp_path):
    table = numpy_helper.from_array(np.arange(ROWS * 3, dtype=np.float32).reshape(ROWS, 3), "E")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["E", "ids"], ["y"], axis=0)], "emb",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["N"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], [table])
    path = tmp_path / "emb.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


def _rows(text: str) -> np.ndarray:
    return np.loadtxt(text.splitlines()[1:], delimiter=",", ndmin=2)


@pytest.mark.parametrize("suffix", [".npy", ".json"])
def test_integer_ids_are_read_as_integers(capsys, tmp_path, embedding, suffix):
    ids = np.array([3, ROWS - 1, 0], np.int64)
    path = tmp_path / f"ids{suffix}"
    np.save(path, ids) if suffix == ".npy" else path.write_text(json.dumps(ids.tolist()))
    code, out, err = run_cli(capsys, "predict", str(embedding), "-i", str(path), "-o", "-")
    assert code == 0, err
    np.testing.assert_array_equal(_rows(out), np.arange(ROWS * 3).reshape(ROWS, 3)[ids])


@pytest.mark.parametrize("value, what", [(3.5, "expected whole numbers"),
                                         (2.0**70, "expected values in")])
def test_fractional_or_huge_ids_are_refused(capsys, tmp_path, embedding, value, what):
    path = tmp_path / "ids.json"
    path.write_text(json.dumps([1, value]))
    code, _, err = run_cli(capsys, "predict", str(embedding), "-i", str(path), "-o", "-")
    assert code == 1 and what in err and err.count("\n") == 1


def test_export_of_an_imported_model_writes_int64_ids(capsys, tmp_path, embedding):
    back = tmp_path / "back.onnx"
    code, _, err = run_cli(capsys, "export", str(embedding), "-o", str(back))
    assert code == 0, err
    assert onnx.load(str(back)).graph.input[0].type.tensor_type.elem_type == TensorProto.INT64


def test_ids_outside_the_table_name_the_node_and_range(capsys, tmp_path, embedding):
    """np.take's bare IndexError reached the user before."""
    path = tmp_path / "ids.json"
    path.write_text(json.dumps([1, ROWS]))
    code, _, err = run_cli(capsys, "predict", str(embedding), "-i", str(path), "-o", "-")
    assert code == 1 and err.count("\n") == 1, err
    assert f"expected indices in [{-ROWS}, {ROWS - 1}], found {ROWS}" in err


def test_a_fractional_id_in_a_later_csv_chunk_names_its_row(capsys, tmp_path, embedding):
    """Each CSV chunk counted its rows from 0 (the shared check takes the chunk's offset)."""
    path = tmp_path / "ids.csv"
    path.write_text("id\n" + "".join(f"{i % ROWS}\n" for i in range(9)) + "2.5\n")
    code, _, err = run_cli(capsys, "predict", str(embedding), "-i", str(path), "-o", "-",
                           "--batch-size", "4")
    assert code == 1 and "sample 9: expected whole numbers" in err, err
