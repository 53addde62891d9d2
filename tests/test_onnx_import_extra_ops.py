"""Import of the ops PyTorch CNN exports use beyond the core set (Resize, ConvTranspose,
InstanceNormalization, Tile, Range, CumSum, Sin, Cos, Celu, Mish, ReduceL2, DepthToSpace):
models built with onnx.helper (several attribute variants each) run in nnforge equal ONNX
Runtime on the same file; integer outputs exactly."""

from __future__ import annotations

import re

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto
from test_onnx_import_ops import F32, I64, C, node
from test_onnx_import_ops import _model as base_model

from nnforge.errors import ConfigError
from nnforge.graph import evaluate_graph
from nnforge.onnx import graph_to_model, load
from nnforge.runtime import InferenceSession
from nnforge.runtime.cupy_plan import CupyPlan

I32 = np.int32
INT64 = TensorProto.INT64


def case(cid: str, nodes: list, shape: tuple, inits: dict | None = None, opset: int = 17,
         batch: tuple[int, ...] = (1, 3), out_type: int = TensorProto.FLOAT,
         out: tuple | None = None) -> object:
    """One test model: input x (dim 0 dynamic unless shape[0] is an int), output y of
    out_type (its shape inferred by onnx unless given)."""
    return pytest.param(nodes, shape, inits or {}, opset, batch, (out_type, out), id=cid)


def sizes_from_shape(hw: list[int]) -> list:
    """torch's F.interpolate(size=...) sizes: the input's (N, C), then the constant size."""
    return [node("Shape", ["x"], "sh"), node("Slice", ["sh", "s0", "s2"], "nc"),
            node("Concat", ["nc", "hw"], "sz", axis=0)], {
        "s0": C([0], I64), "s2": C([2], I64), "hw": C(hw, I64)}


_SZ_NODES, _SZ_INITS = sizes_from_shape([7, 3])
_RAMP = C(np.linspace(-1, 1, 72), F32)

CASES = [
    # -- Resize: F.interpolate / nn.Upsample ------------------------------------------------
    case("Resize nearest asymmetric floor (classic torch)", [
        node("Resize", ["x", "roi", "s"], mode="nearest", coordinate_transformation_mode=(
            "asymmetric"), nearest_mode="floor")], ("N", 2, 3, 4),
        {"roi": C([], F32), "s": C([1, 1, 2, 2], F32)}, opset=13),
    case("Resize nearest half_pixel round_prefer_floor fractional", [
        node("Resize", ["x", "", "s"], mode="nearest")], ("N", 2, 4, 5),
        {"s": C([1, 1, 1.5, 2.5], F32)}, opset=13),
    case("Resize nearest round_prefer_ceil downsample", [
        node("Resize", ["x", "", "s"], nearest_mode="round_prefer_ceil",
             coordinate_transformation_mode="asymmetric")], ("N", 1, 6, 7),
        {"s": C([1, 1, 0.5, 0.7], F32)}, opset=13),
    case("Resize nearest ceil align_corners", [
        node("Resize", ["x", "", "s"], nearest_mode="ceil",
             coordinate_transformation_mode="align_corners")], ("N", 2, 3, 4),
        {"s": C([1, 1, 2, 1.5], F32)}, opset=13),
    case("Resize nearest sizes", [node("Resize", ["x", "", "", "sz"])], (1, 2, 4, 5),
         {"sz": C([1, 2, 7, 3], I64)}, opset=13, batch=(1,)),
    case("Resize nearest sizes from Shape (torch size=)", [
        *_SZ_NODES, node("Resize", ["x", "", "", "sz"], coordinate_transformation_mode=(
            "asymmetric"), nearest_mode="floor")], ("N", 2, 4, 5), _SZ_INITS, opset=13),
    case("Resize nearest 3-D", [node("Resize", ["x", "", "s"], nearest_mode="floor",
                                     coordinate_transformation_mode="asymmetric")],
         ("N", 2, 5), {"s": C([1, 1, 3], F32)}, opset=13),
    case("Resize nearest axes (opset 18)", [node("Resize", ["x", "", "s"], axes=[2, 3])],
         ("N", 2, 3, 4), {"s": C([2, 3], F32)}, opset=18),
    case("Resize linear half_pixel scales", [node("Resize", ["x", "", "s"], mode="linear")],
         ("N", 2, 3, 4), {"s": C([1, 1, 2, 2], F32)}, opset=13),
    case("Resize linear pytorch_half_pixel fractional", [
        node("Resize", ["x", "", "s"], mode="linear",
             coordinate_transformation_mode="pytorch_half_pixel")], ("N", 2, 4, 5),
        {"s": C([1, 1, 1.5, 2.3], F32)}, opset=13),
    case("Resize linear pytorch_half_pixel to one column", [
        node("Resize", ["x", "", "", "sz"], mode="linear",
             coordinate_transformation_mode="pytorch_half_pixel")], (2, 3, 4, 5),
        {"sz": C([2, 3, 6, 1], I64)}, opset=13, batch=(2,)),
    case("Resize linear align_corners sizes from Shape", [
        *_SZ_NODES, node("Resize", ["x", "", "", "sz"], mode="linear",
                         coordinate_transformation_mode="align_corners")], ("N", 2, 4, 5),
        _SZ_INITS, opset=13),
    case("Resize linear downsample", [node("Resize", ["x", "", "s"], mode="linear")],
         ("N", 2, 6, 8), {"s": C([1, 1, 0.6, 0.75], F32)}, opset=13),
    case("Resize linear asymmetric 3-D", [
        node("Resize", ["x", "", "s"], mode="linear",
             coordinate_transformation_mode="asymmetric")], ("N", 2, 5), {"s": C([1, 1, 2.5],
                                                                                F32)}),
    case("Resize linear half_pixel_symmetric (opset 19)", [
        node("Resize", ["x", "", "s"], mode="linear",
             coordinate_transformation_mode="half_pixel_symmetric")], ("N", 1, 4, 5),
        {"s": C([1, 1, 1.7, 0.8], F32)}, opset=19),
    # -- ConvTranspose: nn.ConvTranspose2d / 1d ---------------------------------------------
    case("ConvTranspose", [node("ConvTranspose", ["x", "w", "b"])], ("N", 2, 4, 5),
         {"w": _RAMP[:54].reshape(2, 3, 3, 3), "b": C([1, 0, -1], F32)}),
    case("ConvTranspose strides pads output_padding", [
        node("ConvTranspose", ["x", "w"], strides=[2, 2], pads=[1, 1, 1, 1],
             output_padding=[1, 1])], ("N", 2, 3, 4), {"w": _RAMP[:36].reshape(2, 2, 3, 3)}),
    case("ConvTranspose dilations asymmetric pads", [
        node("ConvTranspose", ["x", "w", "b"], strides=[1, 2], dilations=[2, 1],
             pads=[0, 1, 2, 0], kernel_shape=[3, 2])], ("N", 2, 4, 4),
        {"w": _RAMP[:24].reshape(2, 2, 3, 2), "b": C([0.5, -0.5], F32)}),
    case("ConvTranspose groups stride = kernel (U-Net)", [
        node("ConvTranspose", ["x", "w", "b"], strides=[2, 2], group=2)], ("N", 4, 3, 3),
        {"w": _RAMP[:48].reshape(4, 3, 2, 2), "b": C(np.arange(6) / 4, F32)}),
    case("ConvTranspose depthwise output_padding past the taps", [
        node("ConvTranspose", ["x", "w"], strides=[3, 3], group=3, output_padding=[2, 1])],
        ("N", 3, 2, 3), {"w": _RAMP[:12].reshape(3, 1, 2, 2)}),
    case("ConvTranspose 1-D", [
        node("ConvTranspose", ["x", "w", "b"], strides=[2], pads=[1, 0], output_padding=[1],
             dilations=[2])], ("N", 2, 7), {"w": _RAMP[:24].reshape(2, 4, 3),
                                            "b": C([1, 2, 3, 4], F32)}),
    # -- InstanceNormalization: nn.InstanceNorm2d, nn.GroupNorm -------------------------------
    case("InstanceNormalization", [node("InstanceNormalization", ["x", "s", "b"])],
         ("N", 3, 4, 5), {"s": C([1, 2, 0.5], F32), "b": C([0, 1, -1], F32)}),
    case("InstanceNormalization 3-D epsilon", [
        node("InstanceNormalization", ["x", "s", "b"], epsilon=0.1)], ("N", 2, 6),
        {"s": C([1, -2], F32), "b": C([0.5, 1], F32)}),
    case("GroupNorm as torch exports it", [
        node("Reshape", ["x", "g"], "r"), node("InstanceNormalization", ["r", "one", "zero"],
                                               "n"),
        node("Shape", ["x"], "sh"), node("Reshape", ["n", "sh"], "back"),
        node("Mul", ["back", "gamma"], "m"), node("Add", ["m", "beta"])], ("N", 4, 3, 3),
        {"g": C([0, 2, -1], I64), "one": C([1, 1], F32), "zero": C([0, 0], F32),
         "gamma": C([1, 2, 0.5, -1], F32).reshape(4, 1, 1),
         "beta": C([0, 1, 0, -1], F32).reshape(4, 1, 1)}, opset=13, out=("N", 4, 3, 3)),
    # -- Tile, Range, CumSum ------------------------------------------------------------------
    case("Tile", [node("Tile", ["x", "r"])], ("N", 2, 3), {"r": C([1, 2, 3], I64)}),
    case("Tile batch", [node("Tile", ["x", "r"])], ("N", 3), {"r": C([2, 1], I64)}),
    case("Tile int64 output", [node("Mul", ["x", "k"], "m"), node("Cast", ["m"], "i", to=INT64),
                               node("Tile", ["i", "r"])], ("N", 2, 3),
         {"k": C(10.0, F32), "r": C([1, 3, 2], I64)}, out_type=INT64),
    case("Range float constant (folded)", [node("Range", ["a", "l", "d"], "r"),
                                           node("Add", ["x", "r"])], ("N", 11),
         {"a": C(0.5, F32), "l": C(3.7, F32), "d": C(0.3, F32)}),
    case("Range float backwards", [node("Range", ["a", "l", "d"], "r"),
                                   node("Mul", ["x", "r"])], ("N", 8),
         {"a": C(3.0, F32), "l": C(-1.0, F32), "d": C(-0.5, F32)}),
    case("Range int64 over the batch", [
        node("Shape", ["x"], "sh"), node("Gather", ["sh", "zero"], "n"),
        node("Range", ["zero", "n", "one"], "r"), node("Cast", ["r"], "rf", to=1),
        node("Unsqueeze", ["rf", "ax"], "ru"), node("Add", ["x", "ru"])], ("N", 3),
        {"zero": C(0, I64), "one": C(1, I64), "ax": C([1], I64)}),
    case("Range int64 output", [
        node("Shape", ["x"], "sh"), node("Gather", ["sh", "i"], "d"),
        node("Range", ["one", "d", "two"])], ("N", 7),
        {"i": C(1, I64), "one": C(1, I64), "two": C(2, I64)}, out_type=INT64, out=("R",)),
    case("CumSum", [node("CumSum", ["x", "a"])], ("N", 5), {"a": C(1, I64)}),
    case("CumSum exclusive reverse", [node("CumSum", ["x", "a"], exclusive=1, reverse=1)],
         ("N", 2, 4), {"a": C(-1, I64)}),
    case("CumSum exclusive batch axis int32", [node("CumSum", ["x", "a"], exclusive=1)],
         ("N", 3), {"a": C(0, I32)}, batch=(1, 4)),
    case("CumSum reverse axis 1", [node("CumSum", ["x", "a"], reverse=1)], ("N", 3, 2),
         {"a": C([1], I64)}),
    case("CumSum int64 output", [
        node("Mul", ["x", "k"], "m"), node("Cast", ["m"], "i", to=INT64),
        node("CumSum", ["i", "a"])], ("N", 6), {"k": C(10.0, F32), "a": C(1, I64)},
        out_type=INT64),
    # -- elementwise ----------------------------------------------------------------------------
    case("Sin", [node("Sin", ["x"])], ("N", 5)),
    case("Cos", [node("Cos", ["x"])], ("N", 2, 3)),
    case("Celu", [node("Celu", ["x"])], ("N", 5)),
    case("Celu alpha", [node("Celu", ["x"], alpha=2.0)], ("N", 2, 3)),
    case("Mish", [node("Mish", ["x"])], ("N", 6), opset=18),
    # -- ReduceL2: F.normalize ------------------------------------------------------------------
    case("ReduceL2 opset 13", [node("ReduceL2", ["x"], axes=[1], keepdims=1)], ("N", 3, 4),
         opset=13),
    case("ReduceL2 axes input keepdims 0", [node("ReduceL2", ["x", "a"], keepdims=0)],
         ("N", 3, 4, 2), {"a": C([-1, 1], I64)}, opset=18),
    case("ReduceL2 noop with empty axes is |x|",
         [node("ReduceL2", ["x"], keepdims=1, noop_with_empty_axes=1)], ("N", 3), opset=18),
    case("F.normalize", [
        node("ReduceL2", ["x"], "n", axes=[1], keepdims=1), node("Clip", ["n", "eps"], "c"),
        node("Shape", ["x"], "sh"), node("Expand", ["c", "sh"], "e"), node("Div", ["x", "e"])],
        ("N", 4, 3), {"eps": C(1e-12, F32)}, opset=13),
    # -- DepthToSpace: nn.PixelShuffle ------------------------------------------------------------
    case("DepthToSpace DCR", [node("DepthToSpace", ["x"], blocksize=2)], ("N", 8, 2, 3)),
    case("DepthToSpace CRD (PixelShuffle)", [node("DepthToSpace", ["x"], blocksize=2,
                                                  mode="CRD")], ("N", 8, 3, 2)),
    case("DepthToSpace CRD blocksize 3", [node("DepthToSpace", ["x"], blocksize=3, mode="CRD")],
         ("N", 9, 2, 2)),
]

#: the ops this file covers (test_onnx_import_ops.CASES covers the rest of the op table)
EXTRA_OPS = frozenset({"Resize", "ConvTranspose", "InstanceNormalization", "Tile", "Range",
                       "CumSum", "Sin", "Cos", "Celu", "Mish", "ReduceL2", "DepthToSpace"})


def _model(nodes: list, shape: tuple, inits: dict, opset: int,
           out: tuple[int, tuple | None] = (TensorProto.FLOAT, None)) -> onnx.ModelProto:
    """test_onnx_import_ops's model builder, the output's (dtype, shape) given together."""
    return base_model(nodes, shape, inits, opset, out[1], out_type=out[0])


def _assert_matches(got: np.ndarray, expected: np.ndarray) -> None:
    assert got.shape == expected.shape
    if expected.dtype.kind in "iub":
        np.testing.assert_array_equal(got, expected)
        return
    np.testing.assert_allclose(got, expected, rtol=1e-5,
                               atol=1e-5 * max(1.0, float(np.abs(expected).max())))


@pytest.mark.parametrize(("nodes", "shape", "inits", "opset", "batches", "out"), CASES)
def test_operator_matches_onnx_runtime(tmp_path, nodes, shape, inits, opset, batches,
                                       out) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(_model(nodes, shape, inits, opset, out), str(path))
    oracle = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph = load(path)
    sessions = [InferenceSession(path, optimization=level) for level in ("none", "all")]
    sessions.append(InferenceSession(path, backend="onnxruntime"))  # re-exported at opset 20
    again = ort.InferenceSession(graph_to_model(graph, 13 if opset < 18 else opset)
                                 .SerializeToString())
    cupy_like = CupyPlan(graph, xp=np)  # the GPU executor's code path, on NumPy arrays
    rng = np.random.default_rng(7)
    for n in batches:
        concrete = tuple(n if isinstance(d, str) else d for d in shape)
        x = (rng.standard_normal(concrete) * 2).astype(F32)
        expected = oracle.run(None, {"x": x})[0]
        got = [s.run(x) for s in sessions]
        got += [again.run(None, {"x": x})[0], evaluate_graph(graph, x)[0],
                cupy_like.run_one([x])]
        for g in got:
            _assert_matches(np.asarray(g), expected)


def test_every_extra_op_has_a_case() -> None:
    covered = {n.op_type for p in CASES for n in p.values[0]}
    assert EXTRA_OPS - covered == set()


def test_range_of_constants_is_folded(tmp_path) -> None:
    nodes = [node("Range", ["a", "l", "d"], "r"), node("Cast", ["r"], "rf", to=1),
             node("Add", ["x", "rf"])]
    inits = {"a": C(2, I64), "l": C(6, I64), "d": C(1, I64)}
    onnx.save(_model(nodes, ("N", 4), inits, 17), str(tmp_path / "m.onnx"))
    assert "Range" not in [n.op for n in load(tmp_path / "m.onnx").nodes]
    x = np.zeros((2, 4), F32)
    np.testing.assert_array_equal(InferenceSession(tmp_path / "m.onnx").run(x), x + [2, 3, 4, 5])


REFUSED = [
    ("Resize", {"mode": "cubic"}, "mode='cubic'"),
    ("Resize", {"mode": "linear", "antialias": 1}, "antialias=1"),
    ("Resize", {"mode": "linear", "exclude_outside": 1}, "exclude_outside=1"),
    ("Resize", {"coordinate_transformation_mode": "tf_crop_and_resize"},
     "coordinate_transformation_mode='tf_crop_and_resize'"),
    ("Resize", {"coordinate_transformation_mode": "tf_half_pixel_for_nn"},
     "coordinate_transformation_mode='tf_half_pixel_for_nn'"),
    ("Resize", {"keep_aspect_ratio_policy": "not_larger"}, "keep_aspect_ratio_policy="),
    ("Resize", {"coordinate_transformation_mode": "half_pixel_symmetric"},
     "coordinate_transformation_mode='half_pixel_symmetric'"),
    ("ConvTranspose", {"auto_pad": "SAME_UPPER"}, "auto_pad='SAME_UPPER'"),
    ("ConvTranspose", {"output_shape": [6, 6]}, "output_shape=[6, 6]"),
]


@pytest.mark.parametrize(("op", "attrs", "said"), REFUSED, ids=[r[2] for r in REFUSED])
def test_unsupported_attributes_are_refused_by_name(tmp_path, op, attrs, said) -> None:
    if op == "Resize":  # sizes: keep_aspect_ratio_policy applies to them alone
        nodes, inits = [node("Resize", ["x", "", "", "s"], **attrs)], {"s": C([2, 2, 6, 6], I64)}
    else:
        nodes, inits = [node("ConvTranspose", ["x", "w"], **attrs)], {
            "w": np.ones((2, 1, 3, 3), F32)}
    onnx.save(_model(nodes, ("N", 2, 3, 3), inits, 19), str(tmp_path / "m.onnx"))
    with pytest.raises(ConfigError, match=f"{op} '{op.lower()}_y'.*{re.escape(said)}"):
        load(tmp_path / "m.onnx")
