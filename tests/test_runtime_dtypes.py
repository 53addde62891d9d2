"""Per-value dtypes in compiled plans: int, bool and float64 values computed in their own type,
compared exactly (values and dtype) with ONNX Runtime at every optimization level."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper, numpy_helper

from nnforge import InferenceSession
from nnforge.errors import ConfigError, DataError
from nnforge.graph.ir import Node
from nnforge.runtime.kernels import KERNELS

ONNX_TYPE = {np.dtype(np.int32): T.INT32, np.dtype(np.int8): T.INT8,
             np.dtype(np.uint8): T.UINT8, np.dtype(np.int64): T.INT64,
             np.dtype(np.bool_): T.BOOL, np.dtype(np.float64): T.DOUBLE,
             np.dtype(np.float32): T.FLOAT}
#: per dtype: a batch of 2 rows of 4 that float32 (the old plans' only type) gets wrong:
#: past 2**24 for int32, wrapping for int8/uint8, below float32's precision for float64
SAMPLES = {
    "int32": np.array([[2**30 + 1, -(2**30) - 3, 7, -7], [2**31 - 1, 5, -2**31, 16777217]],
                      np.int32),
    "int8": np.array([[100, -100, 127, -128], [7, -7, 64, -65]], np.int8),
    "uint8": np.array([[200, 100, 255, 0], [7, 9, 128, 129]], np.uint8),
    "float64": np.array([[1 + 1e-12, -2.5e-13, 1e300, 3.0], [1e-310, -7.25, 2.0 / 3, -1e12]],
                        np.float64),
    "bool": np.array([[True, False, True, True], [False, False, True, False]]),
}
#: a constant of each dtype that makes the samples overflow or round
CONSTS = {"int32": np.int32(-3), "int8": np.int8(100), "uint8": np.uint8(100),
          "float64": np.float64(1e-13), "bool": np.bool_(True)}


def _save(tmp_path: Path, nodes: list, inputs: list, outputs: list, inits: dict,
          opset: int = 17) -> str:
    """The model, with a float32 first input "f32" (so plans are float32 plans, where the old
    code held every value as float32) and each non-float output also output cast to float
    (where a value held as float32 showed even when the final cast to its type hid it)."""
    nodes, outputs = list(nodes), list(outputs)
    for name, t, shape in list(outputs):
        if t not in (T.FLOAT, T.BOOL):
            nodes.append(helper.make_node("Cast", [name], [f"{name}_f"], to=T.FLOAT))
            outputs.append((f"{name}_f", T.FLOAT, shape))
    inputs = [("f32", T.FLOAT, ["N", 1])] + list(inputs)
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
        [helper.make_tensor_value_info(n, t, s) for n, t, s in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    path = str(tmp_path / f"m{len(list(tmp_path.iterdir()))}.onnx")
    onnx.save(model, path)
    return path


def _f32(rows: int) -> np.ndarray:
    return np.linspace(-1, 1, rows, dtype=np.float32).reshape(rows, 1)


def _matches_ort(path: str, feeds: dict[str, np.ndarray]) -> None:
    """nnforge at every optimization level gives ONNX Runtime's outputs, dtype included, for
    the whole batch and for its first row (a dynamic batch dimension)."""
    oracle = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rows = len(next(iter(feeds.values())))
    feeds = {"f32": _f32(rows), **feeds}
    for rows in (None, 1):
        sub = {k: v[:rows] for k, v in feeds.items()}
        want = oracle.run(None, sub)
        for level in ("none", "basic", "all"):
            session = InferenceSession(path, optimization=level)
            got = session.run(sub)
            got = list(got.values()) if isinstance(got, dict) else [got]
            for g, w in zip(got, want):
                assert g.dtype == w.dtype, level
                np.testing.assert_array_equal(g, w, err_msg=level)


def _unary_graph(tmp_path: Path, op: str, dtype: str, out_type: int | None = None,
                 const: bool = False, **attrs: Any) -> str:
    """y = op(x) (or op(x, c)) on an input x of dtype, dynamic batch."""
    t = ONNX_TYPE[np.dtype(dtype)]
    ins = ["x", "c"] if const else ["x"]
    inits = {"c": CONSTS[dtype]} if const else {}
    return _save(tmp_path, [helper.make_node(op, ins, ["y"], **attrs)], [("x", t, ["N", 4])],
                 [("y", t if out_type is None else out_type, ["N", 4])], inits)


# -- the fuzzer's repros ------------------------------------------------------------------------
def test_int64_div_truncates_toward_zero(tmp_path: Path) -> None:
    nodes = [helper.make_node("Cast", ["x"], ["i"], to=T.INT64),
             helper.make_node("Div", ["i", "two"], ["q"]),
             helper.make_node("Cast", ["q"], ["y"], to=T.FLOAT)]
    path = _save(tmp_path, nodes, [("x", T.FLOAT, ["N", 4])], [("y", T.FLOAT, ["N", 4])],
                 {"two": np.int64(2)})
    _matches_ort(path, {"x": np.array([[3, -3, 5, 7], [-7, 1, -1, 0]], np.float32)})


def test_double_arithmetic_is_done_in_float64(tmp_path: Path) -> None:
    nodes = [helper.make_node("Cast", ["x"], ["d"], to=T.DOUBLE),
             helper.make_node("Add", ["d", "big"], ["a"]),
             helper.make_node("Sub", ["a", "big"], ["s"]),
             helper.make_node("Cast", ["s"], ["y"], to=T.FLOAT)]
    path = _save(tmp_path, nodes, [("x", T.FLOAT, ["N", 4])], [("y", T.FLOAT, ["N", 4])],
                 {"big": np.float64(1e12)})
    _matches_ort(path, {"x": np.array([[1.7, -2.6, 3.2, 0.4], [5, 6, 7, 8]], np.float32)})


def test_uint8_add_wraps_around(tmp_path: Path) -> None:
    nodes = [helper.make_node("Cast", ["x"], ["i"], to=T.UINT8),
             helper.make_node("Add", ["i", "k"], ["a"]),
             helper.make_node("Cast", ["a"], ["y"], to=T.FLOAT)]
    path = _save(tmp_path, nodes, [("x", T.FLOAT, ["N", 4])], [("y", T.FLOAT, ["N", 4])],
                 {"k": np.uint8(250)})
    _matches_ort(path, {"x": np.array([[1, 5, 6, 9], [0, 255, 128, 7]], np.float32)})


def test_int64_input_cast_to_float_is_exact_past_float32(tmp_path: Path) -> None:
    nodes = [helper.make_node("Cast", ["x"], ["f"], to=T.DOUBLE),
             helper.make_node("Mul", ["f", "h"], ["y"])]
    path = _save(tmp_path, nodes, [("x", T.INT64, ["N", 2])], [("y", T.DOUBLE, ["N", 2])],
                 {"h": np.float64(0.5)})
    _matches_ort(path, {"x": np.array([[3, 2**40 + 1], [-5, 2**53 - 1]], np.int64)})


def test_argmax_indices_feed_a_gather_past_float32_precision(tmp_path: Path) -> None:
    """ArgMax's int64 output used as run-time Gather indices into a constant table."""
    nodes = [helper.make_node("ArgMax", ["x"], ["i"], axis=1, keepdims=0),
             helper.make_node("Gather", ["table", "i"], ["y"], axis=0),
             helper.make_node("Add", ["i", "big"], ["z"])]
    path = _save(tmp_path, nodes, [("x", T.FLOAT, ["N", 4])],
                 [("y", T.INT64, ["N"]), ("z", T.INT64, ["N"])],
                 {"table": np.array([2**40 + 1, -3, 2**53 + 7, 5], np.int64),
                  "big": np.int64(2**50)})
    _matches_ort(path, {"x": np.array([[0, 1, 5, 2], [9, 1, 0, 2]], np.float32)})


def test_argmax_past_2_to_the_24_is_exact(tmp_path: Path) -> None:
    """ArgMax writes int64 indices: no float rounding, no refusal on a long axis."""
    path = _save(tmp_path, [helper.make_node("ArgMax", ["x"], ["y"], axis=1, keepdims=0)],
                 [("x", T.INT8, ["N", 2**24 + 2])], [("y", T.INT64, ["N"])], {})
    x = np.zeros((1, 2**24 + 2), np.int8)
    x[0, -1] = 1
    got = InferenceSession(path, optimization="none").run({"f32": _f32(1), "x": x})
    assert got["y"].dtype == np.int64 and got["y"][0] == 2**24 + 1
    node = Node("ArgMax", ["x"], ["y"], {"axis": 1, "keepdims": 0}, "am")
    y = np.empty(1, np.int64)  # the kernel itself, on a long axis
    KERNELS["ArgMax"](node, [x], [y], None)(None)
    assert y[0] == 2**24 + 1


# -- per dtype: arithmetic, casts, selection, comparisons, moves, reductions -----------------
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("dtype", ["int32", "int8", "uint8", "float64"])
def test_binary_arithmetic_in_the_values_dtype(tmp_path: Path, op: str, dtype: str) -> None:
    _matches_ort(_unary_graph(tmp_path, op, dtype, const=True), {"x": SAMPLES[dtype]})


@pytest.mark.parametrize("op, dtype", [("Neg", "int32"), ("Neg", "int8"), ("Neg", "float64"),
                                       ("Abs", "int32"), ("Abs", "int8"),
                                       ("Abs", "float64")])
def test_unary_arithmetic_in_the_values_dtype(tmp_path: Path, op: str, dtype: str) -> None:
    x = SAMPLES[dtype]
    if dtype != "uint8" and dtype != "float64":  # the most negative value negates to itself
        x = x.copy()
        x[0, 0] = np.iinfo(x.dtype).min
    _matches_ort(_unary_graph(tmp_path, op, dtype), {"x": x})


@pytest.mark.parametrize("to", ["int32", "int8", "uint8", "bool", "float64", "int64"])
def test_cast_from_float_truncates_toward_zero(tmp_path: Path, to: str) -> None:
    x = np.array([[-2.7, 2.7, 0.0, 100.9], [-0.5, 0.25, 120.5, -99.99]], np.float32)
    if to == "uint8":
        x = np.abs(x)
    elif to == "float64":
        x = x + np.float32(1e-3)
    t = ONNX_TYPE[np.dtype(to)]
    nodes = [helper.make_node("Cast", ["x"], ["y"], to=t)]
    outputs = [("y", t, ["N", 4])]
    if to != "bool":  # then computed on in the target type
        nodes.append(helper.make_node("Mul", ["y", "k"], ["z"]))
        outputs.append(("z", t, ["N", 4]))
    k = {"bool": True, "float64": 1 + 2**-40, "int64": 2**40 + 1, "int32": 2**30 + 1}.get(to, 3)
    path = _save(tmp_path, nodes, [("x", T.FLOAT, ["N", 4])], outputs,
                 {"k": np.asarray(k, to)})
    _matches_ort(path, {"x": x})


@pytest.mark.parametrize("to", ["int8", "uint8", "bool", "float64"])
def test_cast_between_integer_types_wraps(tmp_path: Path, to: str) -> None:
    x = np.array([[300, -1, 2**24 + 1, 0], [255, 256, -129, 7]], np.int32)
    path = _save(tmp_path, [helper.make_node("Cast", ["x"], ["y"], to=ONNX_TYPE[np.dtype(to)])],
                 [("x", T.INT32, ["N", 4])], [("y", ONNX_TYPE[np.dtype(to)], ["N", 4])], {})
    _matches_ort(path, {"x": x})


@pytest.mark.parametrize("dtype", ["int32", "int8", "uint8", "float64"])  # ORT: no bool Where
def test_where_selects_in_the_values_dtype(tmp_path: Path, dtype: str) -> None:
    t = ONNX_TYPE[np.dtype(dtype)]
    nodes = [helper.make_node("Greater", ["f", "zero"], ["c"]),
             helper.make_node("Where", ["c", "x", "k"], ["y"])]
    path = _save(tmp_path, nodes, [("x", t, ["N", 4]), ("f", T.FLOAT, ["N", 4])],
                 [("y", t, ["N", 4])], {"zero": np.float32(0), "k": CONSTS[dtype]})
    f = np.array([[1, -1, 2, -2], [-3, 3, 0, 4]], np.float32)
    _matches_ort(path, {"x": SAMPLES[dtype], "f": f})


# every pair but Greater on bool, which ONNX does not define
@pytest.mark.parametrize(("op", "dtype"), [
    (op, dtype) for op in ("Equal", "Greater")
    for dtype in ("int32", "int8", "uint8", "bool", "float64")
    if (op, dtype) != ("Greater", "bool")])
def test_comparisons_give_bool_in_the_values_dtype(tmp_path: Path, op: str, dtype: str) -> None:
    x = SAMPLES[dtype].copy()
    consts = {"int32": np.int32(2**30), "int8": np.int8(100), "uint8": np.uint8(200),
              "float64": np.float64(1.0), "bool": np.bool_(True)}
    # a value equal to the constant only in float32 (past its precision)
    x[1, 3] = {"int32": 2**30 + 1, "float64": 1 + 1e-12}.get(dtype, x[1, 3])
    path = _save(tmp_path, [helper.make_node(op, ["x", "c"], ["y"])],
                 [("x", ONNX_TYPE[x.dtype], ["N", 4])], [("y", T.BOOL, ["N", 4])],
                 {"c": consts[dtype]})
    nodes = [helper.make_node(op, ["x", "c"], ["b"]),  # and a bool value used inside the plan
             helper.make_node("Cast", ["b"], ["y"], to=T.INT32),
             helper.make_node("Mul", ["y", "k"], ["z"])]
    inner = _save(tmp_path, nodes, [("x", ONNX_TYPE[x.dtype], ["N", 4])],
                  [("z", T.INT32, ["N", 4])], {"c": consts[dtype], "k": np.int32(2**30 + 1)})
    for p in (path, inner):
        _matches_ort(p, {"x": x})


@pytest.mark.parametrize("dtype", ["int32", "int8", "uint8", "bool", "float64"])
def test_concat_and_gather_move_values_of_any_dtype(tmp_path: Path, dtype: str) -> None:
    t = ONNX_TYPE[np.dtype(dtype)]
    nodes = [helper.make_node("Concat", ["x", "x"], ["c"], axis=1),
             helper.make_node("Gather", ["c", "idx"], ["y"], axis=1)]
    path = _save(tmp_path, nodes, [("x", t, ["N", 4])], [("y", t, ["N", 3])],
                 {"idx": np.array([7, -8, 2], np.int64)})
    _matches_ort(path, {"x": SAMPLES[dtype]})


@pytest.mark.parametrize("op, dtype", [("ReduceSum", "int32"), ("ReduceSum", "int64"),
                                       ("ReduceSum", "float64"), ("ReduceMax", "int32"),
                                       ("ReduceMax", "int8"), ("ReduceMax", "uint8"),
                                       ("ReduceMax", "float64")])
def test_reductions_in_the_values_dtype(tmp_path: Path, op: str, dtype: str) -> None:
    x = SAMPLES.get(dtype, SAMPLES["int32"].astype(np.int64) * 2**20)
    if op == "ReduceMax" and dtype != "float64":
        x = x.copy()
        x[:, 0] = x[:, 1] + 1 if dtype == "int32" else x[:, 0]  # a max float32 cannot tell
    t = ONNX_TYPE[x.dtype]
    path = _save(tmp_path, [helper.make_node(op, ["x", "axes"], ["y"], keepdims=1)],
                 [("x", t, ["N", 4])], [("y", t, ["N", 1])], {"axes": np.array([1], np.int64)},
                 opset=18)
    _matches_ort(path, {"x": x})


@pytest.mark.parametrize("dtype", ["int32", "int8", "uint8", "float64"])
def test_argmax_of_each_dtype(tmp_path: Path, dtype: str) -> None:
    x = SAMPLES[dtype].copy()
    if dtype == "int32":
        x[0] = [2**30 + 1, 2**30, 2**30 - 1, 0]  # one value in float32: index 0 on ties
    elif dtype == "float64":
        x[1] = [1.0, 1 + 1e-12, 0.5, 1 - 1e-12]
    path = _save(tmp_path, [helper.make_node("ArgMax", ["x"], ["y"], axis=1,
                                             select_last_index=1)],
                 [("x", ONNX_TYPE[x.dtype], ["N", 4])], [("y", T.INT64, ["N", 1])], {})
    _matches_ort(path, {"x": x})


# -- refusals ------------------------------------------------------------------------------
def test_a_float_kernel_on_ints_is_refused_at_compile_time(tmp_path: Path) -> None:
    nodes = [helper.make_node("Cast", ["x"], ["i"], to=T.INT32),
             helper.make_node("Relu", ["i"], ["y"])]
    path = _save(tmp_path, nodes, [("x", T.FLOAT, ["N", 4])], [("y", T.INT32, ["N", 4])], {},
                 opset=14)
    session = InferenceSession(path, optimization="none")
    with pytest.raises(ConfigError, match=r"Relu .* found int32 .*backend='onnxruntime'"):
        session.run({"f32": _f32(2), "x": np.ones((2, 4), np.float32)})


def test_arithmetic_on_bools_is_refused(tmp_path: Path) -> None:
    path = _unary_graph(tmp_path, "Add", "bool", const=True)
    with pytest.raises(ConfigError, match=r"Add .* numeric .* found bool"):
        InferenceSession(path, optimization="none").run({"f32": _f32(2), "x": SAMPLES["bool"]})


def test_zero_rows_of_int_ids_give_float_outputs(tmp_path) -> None:
    """An empty batch answers in the outputs' dtype, not the int64 input's."""
    table = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "E")
    graph = helper.make_graph(
        [helper.make_node("Gather", ["E", "ids"], ["y"], axis=0)], "emb",
        [helper.make_tensor_value_info("ids", T.INT64, ["N"])],
        [helper.make_tensor_value_info("y", T.FLOAT, ["N", 3])], [table])
    path = tmp_path / "emb.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    session = InferenceSession(path)
    empty = np.zeros((0,), np.int64)
    assert session.run(empty).dtype == np.float32
    assert session.predict(empty).values.dtype == np.float32


@pytest.mark.parametrize("x, dtype, found", [
    (np.array([[1], [2**31]], np.int64), np.int32,
     r"sample 1: expected values in \[-2147483648, 2147483647\].*found 2147483648"),
    (np.array([1, 2**63], np.uint64), np.int64, r"sample 1: expected values in .*found 9223372"),
    (np.array([3, -1], np.int64), np.uint8, r"sample 1: expected values in \[0, 255\].*found -1"),
    (np.array([np.inf]), np.int64, "sample 0: expected whole numbers .*found inf"),
    (np.array([0.5]), np.uint8, "sample 0: expected whole numbers .*found 0.5"),
])
def test_integer_inputs_take_exact_values_only(x: np.ndarray, dtype: type, found: str) -> None:
    """The cast sessions and the CLI share: a plain astype would wrap or truncate silently."""
    from nnforge.errors import DataError  # noqa: PLC0415
    from nnforge.runtime.feeds import as_input_dtype  # noqa: PLC0415

    with pytest.raises(DataError, match=rf"^input 'ids': {found}"):
        as_input_dtype(x, dtype, "input 'ids'")
    for fits in (np.array([1.0, 0.0, 7.0]), np.array([1, 0, 7], x.dtype)):
        got = as_input_dtype(fits[::2], dtype)  # a strided view comes back contiguous
        assert got.dtype == dtype and got.flags.c_contiguous and got.tolist() == [1, 7]
    assert as_input_dtype(np.array([True, False]), dtype).tolist() == [1, 0]


@pytest.mark.parametrize("dtype", ["int32", "uint8"])
def test_integer_division_by_zero_is_an_error_not_a_silent_zero(tmp_path: Path,
                                                                dtype: str) -> None:
    """NumPy answers x // 0 with 0; C leaves it undefined (ONNX Runtime: an error or SIGFPE)."""
    t = ONNX_TYPE[np.dtype(dtype)]
    fed = _save(tmp_path, [helper.make_node("Div", ["a", "b"], ["y"], name="div")],
                [("a", t, ["N", 2]), ("b", t, ["N", 2])], [("y", t, ["N", 2])], {})
    a = np.array([[7, 9]], dtype)
    session = InferenceSession(fed)
    np.testing.assert_array_equal(session.run({"f32": _f32(1), "a": a, "b": a})["y"], [[1, 1]])
    with pytest.raises(DataError, match="Div 'div': expected integer divisors other than 0"):
        session.run({"f32": _f32(1), "a": a, "b": np.array([[1, 0]], dtype)})
    const = _save(tmp_path, [helper.make_node("Div", ["a", "z"], ["y"], name="div")],
                  [("a", t, ["N", 2])], [("y", t, ["N", 2])],
                  {"z": np.array([3, 0], dtype)})
    with pytest.raises(ConfigError, match="Div 'div': expected integer divisors other than 0"):
        InferenceSession(const).run({"f32": _f32(1), "a": a})
