"""Hostile ONNX files for the ops PyTorch CNN exports use (ConvTranspose, Resize, Range,
CumSum, InstanceNormalization) and integer division under backend="onnxruntime": each is
refused with one nnforge error naming the node, before any large allocation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnforge.errors import ConfigError, DataError, ModelFileError, ShapeError
from nnforge.onnx import load
from nnforge.runtime import InferenceSession

F32, I64 = np.float32, np.int64
FLOAT, INT64 = TensorProto.FLOAT, TensorProto.INT64


def _save(path: Path, nodes: list, x_shape: list, inits: dict | None = None,
          x_type: int = FLOAT, y_type: int = FLOAT, y_rank: int | None = None) -> Path:
    """A model of input x, output y (its dims named, of x's rank unless given), the given
    initializers."""
    x = helper.make_tensor_value_info("x", x_type, x_shape)
    rank = len(x_shape) if y_rank is None else y_rank
    y = helper.make_tensor_value_info("y", y_type, [f"o{i}" for i in range(rank)])
    ts = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], ts),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))
    return path


# -- ConvTranspose ----------------------------------------------------------------------------
def _conv_transpose(path: Path, attrs: dict, w_shape: tuple = (1, 1, 1, 1),
                    channels: int = 1) -> Path:
    node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", **attrs)
    return _save(path, [node], ["N", channels, 2, 2], {"w": np.ones(w_shape, F32)})


def test_conv_transpose_output_sized_by_strides_is_capped(tmp_path) -> None:
    # 2x2 input, strides 20000: a 20001 x 20001 output (1.6 GB) from a few bytes of file
    path = _conv_transpose(tmp_path / "m.onnx", {"strides": [20000, 20000]})
    with pytest.raises(ModelFileError, match=r"ConvTranspose 'up'.*400040001 elements.*"
                                             r"expected at most 268435456"):
        load(path)


CONV_TRANSPOSE_REFUSED = [
    ({"strides": [0, 0]}, (1, 1, 3, 3), 1, r"strides values >= 1, found \[0, 0\]"),
    ({"strides": [-1, 1]}, (1, 1, 3, 3), 1, r"strides values >= 1, found \[-1, 1\]"),
    ({"dilations": [0, 0]}, (1, 1, 3, 3), 1, r"dilations values >= 1, found \[0, 0\]"),
    ({"dilations": [-1, -1]}, (1, 1, 2, 2), 1, r"dilations values >= 1, found \[-1, -1\]"),
    ({"pads": [-2, -2, -2, -2]}, (1, 1, 1, 1), 1, r"pads values >= 0, found \[-2, -2, -2, -2\]"),
    ({"pads": [10**6, 0, -10**6, 0]}, (1, 1, 1, 1), 1, r"pads values >= 0"),
    ({"output_padding": [-1, -1]}, (1, 1, 3, 3), 1,
     r"output_padding values >= 0, found \[-1, -1\]"),
    ({"output_padding": [5, 5], "strides": [2, 2]}, (1, 1, 1, 1), 1,
     r"output_padding values below max\(stride, dilation\).*found \[5, 5\]"),
    ({"output_padding": [1, 0]}, (1, 1, 3, 3), 1,
     r"output_padding values below max\(stride, dilation\).*found \[1, 0\]"),
    ({"strides": [1, 1, 1]}, (1, 1, 3, 3), 1, r"strides 2 integers, found \[1, 1, 1\]"),
    ({"kernel_shape": [3, 3]}, (1, 1, 1, 1), 1,
     r"kernel_shape equal to the weight's kernel \[1, 1\], found \[3, 3\]"),
    ({"group": 0}, (1, 1, 1, 1), 1, r"group an integer >= 1, found 0"),
    ({"group": -1}, (1, 1, 1, 1), 1, r"group an integer >= 1, found -1"),
    ({"group": 2}, (1, 1, 1, 1), 1, r"group a divisor of the 1 input channels, found 2"),
    ({"group": 2}, (3, 1, 1, 1), 3, r"group a divisor of the 3 input channels, found 2"),
    ({}, (2, 1, 1, 1), 1, r"expected 2 input channels, found 1"),
    ({}, (1, 1, 1), 1, r"expected a weight of rank 4"),
]


@pytest.mark.parametrize(("attrs", "w_shape", "channels", "said"), CONV_TRANSPOSE_REFUSED,
                         ids=[c[3][:40] for c in CONV_TRANSPOSE_REFUSED])
def test_conv_transpose_attributes_ort_refuses_are_refused_at_import(
        tmp_path, attrs, w_shape, channels, said) -> None:
    path = _conv_transpose(tmp_path / "m.onnx", attrs, w_shape, channels)
    with pytest.raises(ShapeError, match=f"ConvTranspose 'up': .*{said}"):
        load(path)


def test_valid_conv_transpose_output_padding_still_runs(tmp_path) -> None:
    # output_padding below the dilation (not the stride) is legal ONNX
    attrs = {"output_padding": [1, 1], "dilations": [2, 2]}
    path = _conv_transpose(tmp_path / "m.onnx", attrs, (1, 1, 2, 2))
    y = InferenceSession(path).run(np.ones((1, 1, 2, 2), F32))
    assert y.shape == (1, 1, 5, 5)


# -- Resize and Range with NaN / Inf ----------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_resize_with_non_finite_scales_is_refused(tmp_path, bad) -> None:
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], name="rs")
    path = _save(tmp_path / "m.onnx", [node], ["N", 1, 2, 2],
                 {"s": np.array([1, 1, bad, 1], F32)})
    with pytest.raises(ShapeError, match=r"Resize 'rs': expected finite positive scales, "
                                         r"found \[1.0, 1.0, -?(nan|inf), 1.0\]"):
        load(path)


def _range(path: Path, start: object, limit: object, delta: object, dtype: type) -> Path:
    nodes = [helper.make_node("Range", ["a", "l", "d"], ["r"], name="rg"),
             helper.make_node("Cast", ["r"], ["rf"], to=FLOAT),
             helper.make_node("ReduceSum", ["rf"], ["s"], keepdims=1),
             helper.make_node("Add", ["x", "s"], ["y"])]
    inits = {"a": np.array(start, dtype), "l": np.array(limit, dtype),
             "d": np.array(delta, dtype)}
    return _save(path, nodes, ["N", 1], inits)


@pytest.mark.parametrize(("start", "limit", "delta"), [
    (0, np.nan, 1), (0, np.inf, 1), (np.nan, 10, 1), (0, 10, np.inf), (0, 10, -np.nan)])
def test_range_with_non_finite_bounds_is_refused(tmp_path, start, limit, delta) -> None:
    path = _range(tmp_path / "m.onnx", start, limit, delta, F32)
    with pytest.raises(ShapeError, match="Range 'rg': expected finite start, limit and delta"):
        load(path)


def test_range_of_float_bounds_whose_length_overflows_is_refused(tmp_path) -> None:
    path = _range(tmp_path / "m.onnx", -3e38, 3e38, 1e-30, F32)
    with pytest.raises(ShapeError, match=r"Range 'rg': the length .* overflows float32"):
        load(path)


@pytest.mark.parametrize(("start", "limit", "delta", "count"), [
    (2**63 - 3, 2**63 - 1, 1, 2),  # ONNX Runtime's double arithmetic gives 0 here
    (2**63 - 5, -2**63, -2**62, 4),  # limit - start passes int64: exact in Python ints
    (-2**63, -2**63 + 3, 2, 2)])
def test_int64_range_length_near_the_limits_is_exact(start, limit, delta, count) -> None:
    from nnforge.graph.ops_onnx import range_length  # noqa: PLC0415

    got = range_length(np.int64(start), np.int64(limit), np.int64(delta))
    assert got == count == len(range(start, limit, delta))


# -- CumSum -----------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [5, -3, 2**62, -2**63])
def test_cumsum_constant_axis_out_of_range_is_refused_at_import(tmp_path, axis) -> None:
    node = helper.make_node("CumSum", ["x", "a"], ["y"], name="cs")
    path = _save(tmp_path / "m.onnx", [node], ["N", 3], {"a": np.array(axis, I64)})
    with pytest.raises(ShapeError, match=rf"CumSum 'cs': expected axis in \[-2, 1\], "
                                         rf"found {axis}"):
        load(path)


def test_cumsum_computed_axis_out_of_range_fails_at_run_time(tmp_path) -> None:
    # the axis is a value of the input (its max): known only when the call runs
    nodes = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0),
             helper.make_node("Cast", ["m"], ["n"], to=INT64),
             helper.make_node("CumSum", ["x", "n"], ["y"], name="cs")]
    path = _save(tmp_path / "m.onnx", nodes, ["N", 3])
    session = InferenceSession(path)
    np.testing.assert_array_equal(session.run(np.array([[0, 1, 1]], F32)), [[0, 1, 2]])
    with pytest.raises(DataError, match=r"CumSum 'cs': expected axis in \[-2, 1\], found 5"):
        session.run(np.array([[0, 1, 5]], F32))
    with pytest.raises(DataError, match=r"CumSum 'cs': .*found -3"):
        session.run(np.array([[-3, -3, -3]], F32))


def test_cumsum_of_a_rank_0_input_is_refused(tmp_path) -> None:
    node = helper.make_node("CumSum", ["x", "a"], ["y"], name="cs")
    path = _save(tmp_path / "m.onnx", [node], [], {"a": np.array(0, I64)})
    with pytest.raises(ShapeError, match="CumSum 'cs': expected an input of rank 1 or more"):
        load(path)


# -- InstanceNormalization --------------------------------------------------------------------
@pytest.mark.parametrize(("scale", "bias", "said"), [
    (np.ones(5, F32), np.ones(3, F32), r"expected scale of shape \(3,\), found \(5,\)"),
    (np.ones((3, 3), F32), np.ones(3, F32), r"expected scale of shape \(3,\), found \(3, 3\)"),
    (np.ones(3, F32), np.ones(2, F32), r"expected bias of shape \(3,\), found \(2,\)"),
    (np.ones(3), np.ones(3), r"expected input 'sc' of the first input's type float32, "
                             r"found float64")])
def test_instance_norm_scale_and_bias_are_checked_at_import(tmp_path, scale, bias,
                                                            said) -> None:
    node = helper.make_node("InstanceNormalization", ["x", "sc", "b"], ["y"], name="in")
    path = _save(tmp_path / "m.onnx", [node], ["N", 3, 4], {"sc": scale, "b": bias})
    with pytest.raises(ShapeError, match=f"InstanceNormalization 'in': {said}"):
        load(path)


# -- integer division under backend="onnxruntime" ---------------------------------------------
def _int_div(path: Path, op: str, divisor_from_input: bool, divisor: list | None = None
             ) -> Path:
    ins = ["c", "x"] if divisor_from_input else ["x", "c"]
    const = np.array([5, 5, 5, 5] if divisor is None else divisor, I64)
    node = helper.make_node(op, ins, ["y"], name="dv")
    return _save(path, [node], ["N", 4], {"c": const}, x_type=INT64, y_type=INT64)


@pytest.mark.parametrize(("op", "from_input", "divisor"), [
    ("Div", True, None),  # x may hold 0 (or -1 under INT64_MIN): never run in ORT
    ("Div", False, [2, 0, 3, 4]),
    ("Div", False, [2, -1, 3, 4])])
def test_onnxruntime_backend_refuses_an_unsafe_integer_division(tmp_path, op, from_input,
                                                                divisor) -> None:
    path = _int_div(tmp_path / "m.onnx", op, from_input, divisor)
    # refused when the session is made: no input ever reaches ONNX Runtime (SIGFPE)
    with pytest.raises(ConfigError, match=rf"{op} 'dv': an integer division by '(x|c)'.*"
                                          r"backend='numpy'"):
        InferenceSession(path, backend="onnxruntime")
    if op == "Div" and divisor is not None and 0 in divisor:  # refused by NumPy's too
        with pytest.raises(ConfigError, match="expected integer divisors other than 0"):
            InferenceSession(path).run(np.array([[7, 7, 7, 7]], I64))
    elif op == "Div" and divisor is not None:  # the NumPy backend computes it (it wraps)
        InferenceSession(path).run(np.array([[7, 7, 7, 7]], I64))


def test_onnxruntime_backend_runs_an_integer_division_by_a_safe_constant(tmp_path) -> None:
    path = _int_div(tmp_path / "m.onnx", "Div", False, [2, 3, -2, 7])
    got = InferenceSession(path, backend="onnxruntime").run(np.array([[7, 7, 7, 7]], I64))
    np.testing.assert_array_equal(got, InferenceSession(path).run(np.array([[7, 7, 7, 7]], I64)))


def test_onnxruntime_backend_run_errors_are_data_errors(tmp_path) -> None:
    # Gather of row ids from the input: ONNX Runtime checks them itself, in its own exception
    nodes = [helper.make_node("Gather", ["t", "x"], ["y"], name="emb", axis=0)]
    path = _save(tmp_path / "m.onnx", nodes, ["N", 2], {"t": np.ones((4, 3), F32)},
                 x_type=INT64, y_rank=3)
    session = InferenceSession(path, backend="onnxruntime")
    assert session.run(np.array([[0, 3]], I64)).shape == (1, 2, 3)
    with pytest.raises(DataError, match="ONNX Runtime failed on this input: .*out of"):
        session.run(np.array([[0, 99]], I64))
