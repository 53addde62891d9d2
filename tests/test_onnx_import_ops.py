"""Import: for every supported operator, models built with onnx.helper (several attribute
variants each) run in nnforge equal ONNX Runtime on the same file."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from nnforge.graph import OPS, evaluate_graph
from nnforge.onnx import graph_to_model, load
from nnforge.runtime import InferenceSession

F32 = np.float32
I64 = np.int64
BIG = 2**63 - 1  # ONNX's "to the end" in Slice


def node(op: str, ins: list[str], out: str = "y", **attrs: object) -> onnx.NodeProto:
    return helper.make_node(op, ins, [out], name=f"{op.lower()}_{out}", **attrs)


def case(cid: str, nodes: list, shape: tuple, inits: dict | None = None, opset: int = 17,
         batch: tuple[int, ...] = (1, 3), out: tuple | None = None) -> object:
    """One test model: input x (dim 0 dynamic unless shape[0] is an int), output y (its shape
    inferred by onnx unless given)."""
    return pytest.param(nodes, shape, inits or {}, opset, batch, out, id=cid)


C = np.array  # constants read better as C([...], F32)


def torch_pad(pads: list[int], rank: int, **attrs: object) -> list:
    """F.pad as torch's classic exporter writes it: the pads (last dim first, begin/end pairs)
    padded with ConstantOfShape zeros, then reordered into ONNX's layout at run time."""
    const = [helper.make_node("Constant", [], [k], value=numpy_helper.from_array(C(v, I64)))
             for k, v in (("n", [2 * rank - len(pads)]), ("p", pads), ("pair", [-1, 2]),
                          ("flat", [-1]), ("s0", [-1]), ("s1", [-(2**63) + 1]), ("ax", [0]))]
    zero = numpy_helper.from_array(C([0], I64))
    return [*const, node("ConstantOfShape", ["n"], "z", value=zero),
            node("Concat", ["p", "z"], "c", axis=0), node("Reshape", ["c", "pair"], "r"),
            node("Slice", ["r", "s0", "s1", "ax", "s0"], "rev"),
            node("Transpose", ["rev"], "t", perm=[1, 0]), node("Reshape", ["t", "flat"], "f"),
            node("Cast", ["f"], "pads", to=TensorProto.INT64),
            node("Pad", ["x", "pads", *(["v"] if attrs.get("mode") is None else [])], **attrs)]

CASES = [
    # -- dense ----------------------------------------------------------------------------
    case("Gemm", [node("Gemm", ["x", "w", "b"])], ("N", 3),
         {"w": C(np.arange(12).reshape(3, 4) / 7, F32), "b": C([1, -2, 3, 0.5], F32)}),
    case("Gemm transB alpha beta", [node("Gemm", ["x", "w", "b"], transB=1, alpha=0.5,
                                         beta=2.0)], ("N", 3),
         {"w": C(np.arange(12).reshape(4, 3) / 5, F32), "b": C([[1, 2, 3, 4]], F32)}),
    case("Gemm transA full C", [node("Gemm", ["x", "w", "c"], transA=1, beta=-1.0)], (3, 5),
         {"w": C(np.ones((3, 2)), F32), "c": C(np.arange(10).reshape(5, 2), F32)}, batch=(3,)),
    case("Gemm no C", [node("Gemm", ["x", "w"], alpha=3.0)], ("N", 2),
         {"w": C([[1, 2], [3, 4]], F32)}),
    case("Gemm scalar C", [node("Gemm", ["x", "w", "c"], transB=1)], ("N", 2),
         {"w": C([[1, 2], [3, 4], [5, 6]], F32), "c": C(0.25, F32)}),
    case("Gemm computed B", [node("Mul", ["x", "k"], "b"),
                             node("Gemm", ["x", "b", "c"], transB=1, alpha=0.5, beta=2.0)],
         (4, 3), {"k": C(0.5, F32), "c": C([1, 2, 3, 4], F32)}, batch=(4,)),
    case("MatMul", [node("MatMul", ["x", "w"])], ("N", 3), {"w": C(np.arange(15).reshape(3, 5),
                                                                    F32) / 9}),
    case("MatMul batched", [node("MatMul", ["x", "w"])], ("N", 2, 3),
         {"w": C(np.arange(12).reshape(3, 4), F32) / 9}),
    case("MatMul vector", [node("MatMul", ["x", "w"])], ("N", 3), {"w": C([1, -1, 2], F32)}),
    case("MatMul computed", [node("Transpose", ["x"], "t", perm=[0, 2, 1]),
                             node("MatMul", ["x", "t"])], ("N", 2, 3)),
    # -- elementwise ----------------------------------------------------------------------
    *[case(f"{op} {name}", [node(op, ["x", "c"])], ("N", 3, 4), {"c": c})
      for op in ("Add", "Sub", "Mul", "Div")
      for name, c in (("row", C([1, 2, -3, 4], F32)), ("column", C([[2], [3], [-4]], F32)),
                      ("scalar", C(1.5, F32)))],
    *[case(f"{op} constant first", [node(op, ["c", "x"])], ("N", 4), {"c": C([1, 2, 3, 4], F32)})
      for op in ("Sub", "Div")],
    *[case(f"{op} two computed", [node("Relu", ["x"], "r"), node(op, ["x", "r"])], ("N", 4))
      for op in ("Add", "Mul")],
    case("Div computed divisor", [node("Abs", ["x"], "a"), node("Add", ["a", "one"], "d"),
                                  node("Div", ["x", "d"])], ("N", 4), {"one": C(1.0, F32)}),
    *[case(op, [node(op, ["x"])], ("N", 5)) for op in ("Relu", "Sigmoid", "Tanh", "Erf", "Neg",
                                                       "Abs", "Exp", "Identity")],
    case("Sqrt", [node("Abs", ["x"], "a"), node("Sqrt", ["a"])], ("N", 5)),
    case("Log", [node("Abs", ["x"], "a"), node("Add", ["a", "one"], "b"), node("Log", ["b"])],
         ("N", 5), {"one": C(1.0, F32)}),
    case("Reciprocal", [node("Abs", ["x"], "a"), node("Add", ["a", "one"], "b"),
                        node("Reciprocal", ["b"])], ("N", 5), {"one": C(0.5, F32)}),
    case("LeakyRelu", [node("LeakyRelu", ["x"])], ("N", 5)),
    case("LeakyRelu alpha", [node("LeakyRelu", ["x"], alpha=0.3)], ("N", 2, 3)),
    case("LeakyRelu alpha > 1", [node("LeakyRelu", ["x"], alpha=1.5)], ("N", 5)),
    case("Pow float", [node("Pow", ["x", "e"])], ("N", 5), {"e": C(2.0, F32)}),
    case("Pow int", [node("Pow", ["x", "e"])], ("N", 5), {"e": C(3, I64)}),
    case("Pow sqrt", [node("Abs", ["x"], "a"), node("Pow", ["a", "e"])], ("N", 5),
         {"e": C(0.5, F32)}),
    case("Clip both", [node("Clip", ["x", "lo", "hi"])], ("N", 5),
         {"lo": C(-0.5, F32), "hi": C(0.7, F32)}),
    case("Clip min", [node("Clip", ["x", "lo"])], ("N", 5), {"lo": C(0.1, F32)}),
    case("Clip max", [node("Clip", ["x", "", "hi"])], ("N", 5), {"hi": C(0.0, F32)}),
    case("Clip none", [node("Clip", ["x"])], ("N", 5)),
    case("Cast float", [node("Cast", ["x"], to=TensorProto.FLOAT)], ("N", 5)),
    case("Cast float16 round trip", [node("Cast", ["x"], "h", to=TensorProto.FLOAT16),
                                     node("Cast", ["h"], to=TensorProto.FLOAT)], ("N", 5)),
    case("Cast int64 truncates", [node("Mul", ["x", "k"], "m"),
                                  node("Cast", ["m"], "i", to=TensorProto.INT64),
                                  node("Cast", ["i"], to=TensorProto.FLOAT)], ("N", 5),
         {"k": C(10.0, F32)}),
    case("Cast double", [node("Cast", ["x"], "d", to=TensorProto.DOUBLE),
                         node("Cast", ["d"], to=TensorProto.FLOAT)], ("N", 5)),
    # -- softmax --------------------------------------------------------------------------
    case("Softmax", [node("Softmax", ["x"])], ("N", 6)),
    case("Softmax axis 1", [node("Softmax", ["x"], axis=1)], ("N", 3, 4)),
    case("Softmax axis 0", [node("Softmax", ["x"], axis=0)], ("N", 3)),
    case("Softmax opset 13", [node("Softmax", ["x"])], ("N", 2, 4), opset=13),
    case("LogSoftmax", [node("LogSoftmax", ["x"])], ("N", 6)),
    case("LogSoftmax axis 1", [node("LogSoftmax", ["x"], axis=1)], ("N", 3, 4)),
    case("Gelu", [node("Gelu", ["x"])], ("N", 6), opset=20),
    case("Gelu tanh", [node("Gelu", ["x"], approximate="tanh")], ("N", 2, 6), opset=20),
    case("Gelu tanh of a constant", [node("Gelu", ["c"], "g", approximate="tanh"),
                                     node("Add", ["x", "g"])], ("N", 3),
         {"c": C([-2, 0, 1.5], F32)}, opset=20),
    case("Gelu erf formula", [node("Div", ["x", "s2"], "d"), node("Erf", ["d"], "e"),
                              node("Add", ["e", "one"], "a"), node("Mul", ["x", "a"], "m"),
                              node("Mul", ["m", "half"])], ("N", 6),
         {"s2": C(np.sqrt(2), F32), "one": C(1, F32), "half": C(0.5, F32)}),
    case("Gelu erf formula, half first", [node("Mul", ["x", "r2"], "d"), node("Erf", ["d"], "e"),
                                          node("Add", ["one", "e"], "a"),
                                          node("Mul", ["x", "half"], "h"),
                                          node("Mul", ["h", "a"])], ("N", 6),
         {"r2": C(np.sqrt(0.5), F32), "one": C(1, F32), "half": C(0.5, F32)}),
    # -- convolution and pooling ----------------------------------------------------------
    case("Conv", [node("Conv", ["x", "w", "b"])], ("N", 2, 7, 6),
         {"w": C(np.linspace(-1, 1, 3 * 2 * 9).reshape(3, 2, 3, 3), F32), "b": C([1, 0, -1], F32)}),
    case("Conv strides pads", [node("Conv", ["x", "w"], strides=[2, 1], pads=[1, 0, 2, 1],
                                    kernel_shape=[3, 3])], ("N", 2, 7, 6),
         {"w": C(np.linspace(-1, 1, 36).reshape(2, 2, 3, 3), F32)}),
    case("Conv dilations", [node("Conv", ["x", "w"], dilations=[2, 2])], ("N", 1, 9, 9),
         {"w": C(np.linspace(-1, 1, 8).reshape(2, 1, 2, 2), F32)}),
    case("Conv groups", [node("Conv", ["x", "w", "b"], group=2, pads=[1, 1, 1, 1])],
         ("N", 4, 5, 5), {"w": C(np.linspace(-1, 1, 72).reshape(4, 2, 3, 3), F32),
                          "b": C([1, 2, 3, 4], F32)}),
    case("Conv depthwise", [node("Conv", ["x", "w"], group=3)], ("N", 3, 5, 5),
         {"w": C(np.linspace(-1, 1, 27).reshape(3, 1, 3, 3), F32)}),
    *[case(f"Conv auto_pad {mode}", [node("Conv", ["x", "w"], auto_pad=mode, strides=[2, 2])],
           ("N", 1, 7, 6), {"w": C(np.linspace(-1, 1, 18).reshape(2, 1, 3, 3), F32)})
      for mode in ("SAME_UPPER", "SAME_LOWER", "VALID")],
    case("MaxPool", [node("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2])],
         ("N", 2, 6, 6)),
    # 1-D (torch's Conv1d, MaxPool1d, AvgPool1d): run as 2-D on H = 1
    case("Conv 1-D pads strides dilations groups", [
        node("Conv", ["x", "w", "b"], pads=[2, 1], strides=[2], dilations=[2], group=2)],
        ("N", 4, 11), {"w": C(np.linspace(-1, 1, 36).reshape(6, 2, 3), F32),
                       "b": C([1, 0, -1, 2, 0.5, 0], F32)}),
    case("Conv 1-D auto_pad no kernel_shape", [node("Conv", ["x", "w"], auto_pad="SAME_UPPER",
                                                    strides=[3])],
         ("N", 2, 10), {"w": C(np.linspace(-1, 1, 16).reshape(2, 2, 4), F32)}),
    case("MaxPool 1-D ceil_mode", [node("MaxPool", ["x"], kernel_shape=[3], strides=[2],
                                        pads=[1, 0], ceil_mode=1)], ("N", 3, 8)),
    case("AveragePool 1-D count_include_pad", [node("AveragePool", ["x"], kernel_shape=[2],
                                                    pads=[1, 1], count_include_pad=1)],
         ("N", 2, 5)),
    case("MaxPool unread Indices", [helper.make_node("MaxPool", ["x"], ["y", "i"],
                                                     kernel_shape=[2, 2])], ("N", 2, 4, 5)),
    case("MaxPool pads strides", [node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 1],
                                       pads=[1, 1, 1, 0])], ("N", 2, 7, 6)),
    case("MaxPool dilations", [node("MaxPool", ["x"], kernel_shape=[2, 2], dilations=[2, 2])],
         ("N", 1, 7, 7)),
    case("MaxPool auto_pad", [node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2],
                                   auto_pad="SAME_UPPER")], ("N", 1, 7, 8)),
    case("AveragePool", [node("AveragePool", ["x"], kernel_shape=[2, 2], strides=[2, 2])],
         ("N", 2, 6, 6)),
    case("AveragePool pads exclude", [node("AveragePool", ["x"], kernel_shape=[3, 3],
                                           pads=[1, 1, 1, 1])], ("N", 2, 5, 5)),
    case("AveragePool pads include", [node("AveragePool", ["x"], kernel_shape=[3, 2],
                                           strides=[2, 1], pads=[1, 0, 1, 1],
                                           count_include_pad=1)], ("N", 2, 6, 5)),
    # ceil_mode: the last window hangs over the end (and is dropped when it would start
    # beyond the input and the leading padding, as PyTorch and ONNX Runtime do)
    case("MaxPool ceil_mode", [node("MaxPool", ["x"], kernel_shape=[3, 3], strides=[2, 2],
                                    ceil_mode=1)], ("N", 2, 6, 7)),
    case("MaxPool ceil_mode pads", [node("MaxPool", ["x"], kernel_shape=[2, 2], strides=[2, 2],
                                         pads=[1, 1, 1, 1], ceil_mode=1)], ("N", 1, 5, 6)),
    *[case(f"AveragePool ceil_mode pads include={cip}",
           [node("AveragePool", ["x"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 0, 1, 1],
                 count_include_pad=cip, ceil_mode=1)], ("N", 2, 5, 6))
      for cip in (0, 1)],
    case("AveragePool ceil_mode", [node("AveragePool", ["x"], kernel_shape=[3, 3],
                                        strides=[2, 2], ceil_mode=1)], ("N", 1, 6, 6)),
    # a stride beyond the kernel: SAME asks for -1 padding, which both read as none (ONNX
    # Runtime's MaxPool, and AveragePool before opset 19, refuse it); -2 is refused
    # (test_onnx_errors)
    *[case(f"{op} auto_pad stride beyond kernel", [node(op, ["x", *w], auto_pad="SAME_UPPER",
                                                        kernel_shape=[1, 1], strides=[3, 2])],
           ("N", 1, 8, 6), {"w": C([[[[2.0]]]], F32)} if w else {}, opset=19)
      for op, w in (("Conv", ["w"]), ("AveragePool", []))],
    # dilated ceil_mode windows whose overhang is as long as the kernel: exported with
    # ceil_mode kept (ONNX Runtime refuses pads that long; it refused the re-export)
    case("MaxPool ceil_mode dilations", [node("MaxPool", ["x"], kernel_shape=[2, 2],
                                              strides=[2, 2], dilations=[2, 2], pads=[1, 1, 1, 1],
                                              ceil_mode=1)], ("N", 2, 6, 8)),
    case("AveragePool ceil_mode dilations", [node("AveragePool", ["x"], kernel_shape=[2, 2],
                                                  strides=[2, 3], dilations=[3, 2],
                                                  pads=[1, 1, 1, 0], ceil_mode=1)],
         ("N", 2, 7, 6), opset=19),
    case("GlobalAveragePool", [node("GlobalAveragePool", ["x"])], ("N", 3, 5, 4)),
    case("BatchNormalization", [node("BatchNormalization", ["x", "s", "b", "m", "v"])],
         ("N", 3, 4, 4), {"s": C([1, 2, 0.5], F32), "b": C([0, 1, -1], F32),
                          "m": C([0.5, -1, 2], F32), "v": C([1, 0.25, 4], F32)}),
    case("BatchNormalization 2-D epsilon", [node("BatchNormalization", ["x", "s", "b", "m", "v"],
                                                 epsilon=0.1)], ("N", 3),
         {"s": C([1, 2, 0.5], F32), "b": C([0, 1, -1], F32), "m": C([0.5, -1, 2], F32),
          "v": C([1, 0.25, 4], F32)}),
    case("BatchNormalization opset 15", [node("BatchNormalization", ["x", "s", "b", "m", "v"],
                                              training_mode=0, momentum=0.8)], ("N", 2, 3),
         {"s": C([1, 2], F32), "b": C([0, 1], F32), "m": C([0.5, -1], F32),
          "v": C([1, 0.25], F32)}, opset=15),
    # -- activations and normalization added with nn.LayerNorm/SiLU/ELU/Softplus ----------
    case("Elu", [node("Elu", ["x"])], ("N", 5)),
    case("Elu alpha", [node("Elu", ["x"], alpha=0.3)], ("N", 2, 3)),
    case("Softplus", [node("Softplus", ["x"])], ("N", 5)),
    case("Selu", [node("Selu", ["x"])], ("N", 5)),
    case("Selu alpha gamma", [node("Selu", ["x"], alpha=1.2, gamma=0.8)], ("N", 2, 3)),
    case("HardSigmoid", [node("HardSigmoid", ["x"])], ("N", 6)),
    case("HardSigmoid alpha beta", [node("HardSigmoid", ["x"], alpha=0.5, beta=0.25)],
         ("N", 2, 3)),
    case("HardSwish", [node("HardSwish", ["x"])], ("N", 6), opset=14),
    case("HardSwish opset 18", [node("HardSwish", ["x"])], ("N", 2, 3), opset=18),
    case("PRelu scalar slope", [node("PRelu", ["x", "s"])], ("N", 5), {"s": C(0.25, F32)}),
    case("PRelu per channel", [node("PRelu", ["x", "s"])], ("N", 3, 2, 2),
         {"s": C([[[0.1]], [[-0.5]], [[2.0]]], F32)}),
    case("PRelu last axis", [node("PRelu", ["x", "s"])], ("N", 4), {"s": C([0.1, 0.2, 0, 3],
                                                                           F32)}),
    case("GlobalMaxPool", [node("GlobalMaxPool", ["x"])], ("N", 3, 5, 4)),
    case("Sum three", [node("Sum", ["x", "c", "x"])], ("N", 3), {"c": C([1, -2, 0.5], F32)}),
    case("Sum one", [node("Sum", ["x"])], ("N", 3)),
    case("Mean", [node("Neg", ["x"], "n"), node("Mean", ["x", "c", "n", "c"])], ("N", 2, 3),
         {"c": C([[1], [-2]], F32)}),
    case("Max Min variadic", [node("Max", ["x", "c", "d"], "m"), node("Min", ["m"])], ("N", 3),
         {"c": C([0.5, -1, 0], F32), "d": C(0.25, F32)}),
    case("LayerNormalization", [node("LayerNormalization", ["x", "s", "b"])], ("N", 4),
         {"s": C([1, 2, 0.5, -1], F32), "b": C([0, 1, -1, 0.5], F32)}),
    case("LayerNormalization no bias, epsilon", [node("LayerNormalization", ["x", "s"],
                                                      epsilon=0.5)], ("N", 3, 4),
         {"s": C([1, 2, 0.5, -1], F32)}),
    # a Mean output nobody reads is dropped (it was refused)
    case("LayerNormalization unused Mean", [helper.make_node(
        "LayerNormalization", ["x", "s", "b"], ["y", "mean"], axis=1)], ("N", 4),
        {"s": C([1, 2, 3, 4], F32), "b": C([0, 1, 0, -1], F32)}),
    case("LayerNormalization axis -2", [node("LayerNormalization", ["x", "s", "b"], axis=-2)],
         ("N", 3, 4), {"s": C(np.linspace(-1, 2, 12).reshape(3, 4), F32),
                       "b": C(np.linspace(0, 1, 12).reshape(3, 4), F32)}),
    case("LayerNormalization axis 1 stash_type", [node("LayerNormalization", ["x", "s"], axis=1,
                                                       stash_type=1)], ("N", 2, 3),
         {"s": C([[1, 2, 3], [0.5, -1, 2]], F32)}, opset=18),
    # torch's exporter before opset 17: LayerNorm spelled out; it imports op by op
    case("LayerNorm decomposed (torch, opset 13)", [
        node("ReduceMean", ["x"], "m", axes=[-1]), node("Sub", ["x", "m"], "d"),
        node("Pow", ["d", "two"], "p"), node("ReduceMean", ["p"], "v", axes=[-1]),
        node("Add", ["v", "eps"], "ve"), node("Sqrt", ["ve"], "sd"), node("Div", ["d", "sd"], "n"),
        node("Mul", ["n", "s"], "ns"), node("Add", ["ns", "b"])], ("N", 3, 4),
        {"two": C(2.0, F32), "eps": C(1e-5, F32), "s": C([1, 2, 0.5, -1], F32),
         "b": C([0, 1, -1, 0.5], F32)}, opset=13),
    # -- shape ops ------------------------------------------------------------------------
    *[case(f"Flatten axis {a}", [node("Flatten", ["x"], axis=a)], ("N", 2, 3, 2))
      for a in (1, 2, 3, -1)],
    case("Flatten axis 0", [node("Flatten", ["x"], axis=0)], (2, 3, 2), batch=(2,)),
    case("Reshape", [node("Reshape", ["x", "s"])], ("N", 3, 4), {"s": C([0, -1], I64)}),
    case("Reshape split", [node("Reshape", ["x", "s"])], ("N", 12), {"s": C([0, 2, 3, 2], I64)}),
    case("Reshape allowzero", [node("Reshape", ["x", "s"], allowzero=1)], ("N", 3, 4),
         {"s": C([-1, 6, 2], I64)}, opset=17),
    case("Reshape Constant target", [helper.make_node("Constant", [], ["s"],
                                                      value_ints=[0, 4, 3]),
                                     node("Reshape", ["x", "s"])], ("N", 12), opset=17),
    case("Reshape Constant tensor", [helper.make_node(
        "Constant", [], ["s"], value=numpy_helper.from_array(C([0, -1], I64))),
        node("Reshape", ["x", "s"])], ("N", 2, 2)),
    case("Transpose", [node("Transpose", ["x"], perm=[0, 2, 1])], ("N", 2, 3)),
    case("Transpose default perm", [node("Transpose", ["x"])], ("N", 2, 3)),
    case("Squeeze axes", [node("Squeeze", ["x", "a"])], ("N", 1, 4, 1), {"a": C([1, -1], I64)}),
    case("Squeeze all", [node("Squeeze", ["x"])], ("N", 1, 4, 1), batch=(3,), out=("N", 4)),
    case("Unsqueeze", [node("Unsqueeze", ["x", "a"])], ("N", 4), {"a": C([1], I64)}),
    case("Unsqueeze several", [node("Unsqueeze", ["x", "a"])], ("N", 4), {"a": C([-1, 1], I64)}),
    case("Concat", [node("Relu", ["x"], "r"), node("Concat", ["x", "r", "c"], axis=1)],
         ("N", 2), {"c": C(np.ones((1, 3)), F32)}, batch=(1,)),
    case("Concat last axis", [node("Neg", ["x"], "n"), node("Concat", ["x", "n"], axis=-1)],
         ("N", 2, 3)),
    # -- ops op-level tracing emits ---------------------------------------------------------
    case("Max Min", [node("Max", ["x", "c"], "m"), node("Min", ["m", "x", "d"])], ("N", 3),
         {"c": C([0.5, -1, 0], F32), "d": C(1.0, F32)}),
    case("Where Greater", [node("Greater", ["x", "c"], "g"), node("Neg", ["x"], "n"),
                           node("Where", ["g", "x", "n"])], ("N", 3), {"c": C(0.25, F32)}),
    case("Where Less/Equal", [node("Less", ["x", "c"], "a"), node("LessOrEqual", ["x", "c"], "b"),
                              node("GreaterOrEqual", ["x", "c"], "e"),
                              node("Equal", ["x", "x"], "q"), node("Where", ["a", "x", "c"], "u"),
                              node("Where", ["b", "u", "c"], "v"),
                              node("Where", ["e", "v", "x"], "w"),
                              node("Where", ["q", "w", "c"])], ("N", 3), {"c": C(0.0, F32)}),
    # NaN columns in x + c; an exported Imputer fills NaN as Where(IsNaN(x), fill, x)
    case("IsNaN Where", [node("Add", ["x", "c"], "s"), node("IsNaN", ["s"], "m"),
                         node("Where", ["m", "f", "s"])], ("N", 3, 4),
         {"c": C([0, np.nan, 0, np.nan], F32), "f": C([1, 2, -3, 4], F32)}, batch=(1, 5)),
    case("ArgMax", [node("ArgMax", ["x"], "a", axis=1), node("Cast", ["a"], to=TensorProto.FLOAT)],
         ("N", 4, 2)),
    case("ArgMin keepdims last", [node("ArgMin", ["x"], "a", axis=-1, keepdims=0,
                                       select_last_index=1),
                                  node("Cast", ["a"], to=TensorProto.FLOAT)], ("N", 5)),
    case("Split", [helper.make_node("Split", ["x", "s"], ["p", "q"], axis=1),
                   node("Concat", ["q", "p"], axis=1)], ("N", 5), {"s": C([2, 3], I64)}),
    # an unused trailing piece still sets the sizes (`a, _ = x.chunk(2, 1)`): it was dropped,
    # giving one piece of all 6 columns, or "expected 1 sizes" with a split input
    case("Split one piece used", [helper.make_node("Split", ["x"], ["p", "q"], axis=1,
                                                   num_outputs=2), node("Relu", ["p"])],
         ("N", 6), opset=18),
    case("Split sizes one piece used", [helper.make_node("Split", ["x", "s"], ["p", "q", "r"],
                                                         axis=-1), node("Relu", ["q"])],
         ("N", 2, 7), {"s": C([2, 4, 1], I64)}, opset=13),
    case("Expand", [node("Expand", ["x", "s"])], ("N", 1, 3), {"s": C([1, 4, 1], I64)}),
    case("Pad constant", [node("Pad", ["x", "p", "v"])], ("N", 2, 3),
         {"p": C([0, 1, 2, 0, 0, 1], I64), "v": C(1.5, F32)}),
    case("Pad crop", [node("Pad", ["x", "p"])], ("N", 4, 5), {"p": C([0, -1, 1, 0, 2, -2], I64)}),
    case("Pad reflect", [node("Pad", ["x", "p"], mode="reflect")], ("N", 4, 5),
         {"p": C([0, 2, 1, 0, 1, 3], I64)}),
    case("Pad edge", [node("Pad", ["x", "p"], mode="edge")], ("N", 4, 5),
         {"p": C([0, 1, 0, 0, 2, 2], I64)}),
    case("Pad axes", [node("Pad", ["x", "p", "", "a"])], ("N", 2, 3, 4),
         {"p": C([1, 2, 0, 1], I64), "a": C([-1, 1], I64)}, opset=18),
    case("Pad from ConstantOfShape (torch F.pad)", torch_pad([1, 2, 0, 1], 4), ("N", 2, 4, 4),
         {"v": C(0.5, F32)}, opset=13),
    case("Pad reflect from ConstantOfShape", torch_pad([2, 1], 3, mode="reflect"), ("N", 2, 4)),
    case("Gather", [node("Gather", ["x", "i"], axis=1)], ("N", 5), {"i": C([4, 0, 2, 2], I64)}),
    case("Gather scalar negative", [node("Gather", ["x", "i"], axis=-1)], ("N", 3, 5),
         {"i": C(-2, I64)}),
    case("Gather 2-D indices", [node("Gather", ["x", "i"], axis=2)], ("N", 2, 4),
         {"i": C([[0, 1], [3, -1]], I64)}),
    case("Slice", [node("Slice", ["x", "s", "e"])], ("N", 6), {"s": C([0, 1], I64),
                                                                "e": C([BIG, 5], I64)}),
    case("Slice axes steps", [node("Slice", ["x", "s", "e", "a", "t"])], ("N", 6, 5),
         {"s": C([-1, 0], I64), "e": C([-BIG, BIG], I64), "a": C([1, 2], I64),
          "t": C([-2, 2], I64)}),
    # backwards from before the first element: ONNX clamps the start to it (Python's slice
    # gave nothing); an INT_MAX end backwards is ONNX Runtime's "to the first element"
    case("Slice backward from before the start", [node("Slice", ["x", "s", "e", "a", "t"])],
         ("N", 4), {"s": C([-7], I64), "e": C([-BIG], I64), "a": C([1], I64),
                    "t": C([-2], I64)}),
    *[case(f"Slice backward to INT{bits}_MAX", [node("Slice", ["x", "s", "e", "a", "t"])],
           ("N", 5, 4), {"s": C([-1, 3], I64), "e": C([2**(bits - 1) - 1, BIG], I64),
                         "a": C([1, 2], I64), "t": C([-2, -1], I64)})
      for bits in (32, 64)],
    # -- reductions -----------------------------------------------------------------------
    *[case(f"{op} axes", [node(op, ["x", "a"])], ("N", 3, 4), {"a": C([1], I64)}, opset=18)
      for op in ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd")],
    *[case(f"{op} keepdims 0", [node(op, ["x", "a"], keepdims=0)], ("N", 3, 4, 2),
           {"a": C([-1, 1], I64)}, opset=18)
      for op in ("ReduceMean", "ReduceSum", "ReduceMax")],
    *[case(f"{op} opset 13", [node(op, ["x"], axes=[2, 3], keepdims=1)], ("N", 3, 4, 2),
           opset=13) for op in ("ReduceMean", "ReduceMax", "ReduceMin")],
    case("ReduceSum opset 13", [node("ReduceSum", ["x", "a"], keepdims=0)], ("N", 3, 4),
         {"a": C([2], I64)}, opset=13),
    case("ReduceMean all axes", [node("ReduceMean", ["x"], keepdims=0)], (2, 3), batch=(2,),
         opset=18),
    case("ReduceSum noop", [node("ReduceSum", ["x"], noop_with_empty_axes=1)], ("N", 3),
         opset=18),
    # -- inference-time no-ops ------------------------------------------------------------
    case("Dropout", [node("Dropout", ["x"])], ("N", 4)),
    case("Dropout ratio and mask", [helper.make_node("Dropout", ["x", "r"], ["y", "mask"])],
         ("N", 4), {"r": C(0.5, F32)}),
    # -- the shape chains exporters emit before Reshape ----------------------------------
    case("Shape Gather Unsqueeze Concat", [
        node("Shape", ["x"], "s"), node("Gather", ["s", "zero"], "n", axis=0),
        node("Unsqueeze", ["n", "ax"], "nu"), node("Concat", ["nu", "minus"], "t", axis=0),
        node("Reshape", ["x", "t"])], ("N", 2, 3),
        {"zero": C(0, I64), "ax": C([0], I64), "minus": C([-1], I64)}, opset=13, out=("N", 6)),
    case("Shape start end Concat", [
        node("Shape", ["x"], "s", start=0, end=1), node("Concat", ["s", "rest"], "t", axis=0),
        node("Reshape", ["x", "t"])], ("N", 2, 3), {"rest": C([3, 2], I64)}, opset=18),
    case("Shape Slice Mul", [
        node("Shape", ["x"], "s"), node("Slice", ["s", "one", "big"], "hw"),
        node("ReduceProd", ["hw"], "p", keepdims=1), node("Slice", ["s", "zero", "one"], "n"),
        node("Concat", ["n", "p"], "t", axis=0), node("Reshape", ["x", "t"])], ("N", 2, 3, 2),
        {"zero": C([0], I64), "one": C([1], I64), "big": C([BIG], I64)}, opset=17),
    case("Shape Gather Mul Cast", [
        node("Shape", ["x"], "s"), node("Gather", ["s", "i"], "d"), node("ReduceProd", ["d"],
                                                                         "p", keepdims=0),
        node("Cast", ["p"], "pc", to=TensorProto.INT64), node("Unsqueeze", ["pc", "ax"], "pu"),
        node("Concat", ["minus", "pu"], "t", axis=0), node("Reshape", ["x", "t"])],
        ("N", 2, 3), {"i": C([1, 2], I64), "ax": C([0], I64), "minus": C([-1], I64)}),
]


def _model(nodes: list, shape: tuple, inits: dict, opset: int, out: tuple | None,
           out_type: int = TensorProto.FLOAT) -> onnx.ModelProto:
    """A checked one-input model "x" -> "y" of these nodes and initializers."""
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))
    y = helper.make_tensor_value_info("y", out_type, None if out is None else list(out))
    graph = helper.make_graph(nodes, "g", [x], [y],
                              [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(graph, opset_imports=opsets,
                              ir_version=helper.find_min_ir_version_for(opsets))
    model = onnx.shape_inference.infer_shapes(model)  # fills in the output's type
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.mark.parametrize(("nodes", "shape", "inits", "opset", "batches", "out"), CASES)
def test_operator_matches_onnx_runtime(tmp_path, nodes, shape, inits, opset, batches,
                                       out) -> None:
    path = tmp_path / "m.onnx"
    onnx.save(_model(nodes, shape, inits, opset, out), str(path))
    oracle = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    graph = load(path)
    sessions = [InferenceSession(path, optimization=level) for level in ("none", "basic", "all")]
    sessions.append(InferenceSession(path, backend="onnxruntime"))  # re-exported at opset 20
    # and re-exported at the lowest opset that can hold it: the other forms of the ops
    again = ort.InferenceSession(graph_to_model(graph, 13 if opset < 18 else opset)
                                 .SerializeToString())
    sessions.append(lambda x: again.run(None, {"x": x})[0])
    rng = np.random.default_rng(7)
    for n in batches:
        concrete = tuple(n if isinstance(d, str) else d for d in shape)
        x = (rng.standard_normal(concrete) * 2).astype(F32)
        expected = oracle.run(None, {"x": x})[0]
        got = [s(x) if callable(s) else s.run(x) for s in sessions]
        got.append(evaluate_graph(graph, x)[0])
        for g in got:
            assert g.shape == expected.shape
            np.testing.assert_allclose(g, expected.astype(F32), rtol=1e-5,
                                       atol=1e-5 * max(1.0, float(np.abs(expected).max())))


def test_every_standard_op_has_a_case() -> None:
    """The cases above and those of test_onnx_import_extra_ops cover the whole op set the
    importer accepts."""
    from test_onnx_import_extra_ops import EXTRA_OPS  # noqa: PLC0415 - it imports this file

    covered = {n.op_type for p in CASES for n in p.values[0]}
    standard = {k for k, d in OPS.items() if not d.domain}
    assert standard - covered - EXTRA_OPS == set()


def test_several_outputs_come_back_by_name(tmp_path) -> None:
    nodes = [node("Relu", ["x"], "a"), node("Sigmoid", ["x"], "b")]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 3]) for n in ("a", "b")]
    model = helper.make_model(helper.make_graph(nodes, "g", [x_info], outs),
                              opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(tmp_path / "two.onnx"))
    x = np.linspace(-2, 2, 12, dtype=F32).reshape(4, 3)
    expected = ort.InferenceSession(str(tmp_path / "two.onnx")).run(None, {"x": x})
    for backend in ("numpy", "onnxruntime"):
        got = InferenceSession(tmp_path / "two.onnx", backend=backend).run(x)
        assert list(got) == ["a", "b"]
        for g, e in zip(got.values(), expected):
            np.testing.assert_allclose(g, e, rtol=1e-6)


def test_constant_of_shape_left_as_an_output_runs(tmp_path) -> None:
    """A ConstantOfShape the importer cannot fold (it is a graph output) runs as a kernel."""
    fill = numpy_helper.from_array(C([2.5], F32))
    nodes = [node("Relu", ["x"], "a"), node("ConstantOfShape", ["s"], "b", value=fill)]
    x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3])
    outs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", 3]),
            helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 3])]
    graph = helper.make_graph(nodes, "g", [x_info], outs, [numpy_helper.from_array(C([2, 3], I64),
                                                                                  "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(tmp_path / "cos.onnx"))
    x = np.linspace(-2, 2, 6, dtype=F32).reshape(2, 3)
    expected = ort.InferenceSession(str(tmp_path / "cos.onnx")).run(None, {"x": x})
    for level in ("none", "all"):
        got = InferenceSession(tmp_path / "cos.onnx", optimization=level).run(x)
        for g, e in zip(got.values(), expected):
            np.testing.assert_allclose(g, e, rtol=1e-6)


def _torch_tanh_gelu(c: float = 0.044715) -> tuple[list, dict]:
    """The nodes PyTorch's TorchScript exporter writes for GELU(approximate='tanh') before
    opset 20 (after a Relu, so x comes from a node)."""
    k = np.float32(np.sqrt(2 / np.pi))
    nodes = [node("Relu", ["x"], "r"), node("Mul", ["r", "r"], "sq"),
             node("Mul", ["sq", "r"], "cu"), node("Mul", ["cu", "c"], "p"),
             node("Add", ["r", "p"], "i"), node("Mul", ["i", "k"], "s"),
             node("Tanh", ["s"], "t"), node("Add", ["t", "one"], "a"),
             node("Mul", ["r", "a"], "m"), node("Mul", ["m", "half"], "y")]
    inits = {"c": np.float32(c), "k": k, "one": np.float32(1), "half": np.float32(0.5)}
    return nodes, inits


@pytest.mark.parametrize("opset", [17, 20])
def test_tanh_gelu_is_imported_as_one_gelu_node(tmp_path, opset) -> None:
    if opset == 20:
        nodes, inits = [node("Relu", ["x"], "r"), node("Gelu", ["r"], "y", approximate="tanh")], {}
    else:
        nodes, inits = _torch_tanh_gelu()
    onnx.save(_model(nodes, ("N", 7), inits, opset, None), str(tmp_path / "m.onnx"))
    x = np.linspace(-4, 4, 21, dtype=np.float32).reshape(3, 7)
    sess = InferenceSession(str(tmp_path / "m.onnx"))
    assert [n.op for n in sess.graph.nodes] == ["Relu", "Gelu"]
    assert sess.graph.nodes[1].attrs["approximate"] == "tanh"
    ort_sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(x), ort_sess.run(None, {"x": x})[0], rtol=1e-5,
                               atol=1e-6)


def test_a_formula_that_is_not_tanh_gelu_is_left_as_it_is(tmp_path) -> None:
    nodes, inits = _torch_tanh_gelu(c=0.05)
    onnx.save(_model(nodes, ("N", 7), inits, 17, None), str(tmp_path / "m.onnx"))
    assert "Gelu" not in [n.op for n in load(str(tmp_path / "m.onnx")).nodes]
