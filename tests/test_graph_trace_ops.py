"""Op-level tracing of modules with their own forward: session, ONNX export, save/load."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from helpers import assert_close, check_everywhere, eager

import nnforge as nf
from nnforge import nn
from nnforge.autograd.function import Function
from nnforge.errors import ConfigError
from nnforge.graph.trace import trace
from nnforge.nn.module import LAYER_REGISTRY
from nnforge.onnx import export
from nnforge.ops.linear import linear
from nnforge.runtime import InferenceSession
from nnforge.runtime.cupy_plan import CupyPlan

F32 = np.float32
LEVELS = ("none", "basic", "all")


class ResidualMLP(nn.Module):
    def __init__(self, features: int = 6) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(features, 12), nn.Linear(12, features)

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        return x + self.fc2(self.fc1(x).relu())


class TwoBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Linear(5, 4), nn.Tanh())
        self.b = nn.Linear(5, 3)

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        return nf.concat([self.a(x), self.b(x)], axis=1)


class Swish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        h = self.fc(x)
        return h * h.sigmoid()


class ChunkSplit(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 8)

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        a, b = self.fc(x).chunk(2, axis=1)
        c, d, e = x.split([1, 2, 3], axis=1)
        return nf.concat([a * b.sigmoid(), c + e.sum(axis=1, keepdims=True), d], axis=1)


class MaxMin(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        h = self.fc(x)
        return nf.maximum(h, x) - nf.minimum(h, 0.25) + x.clip(-0.5, 0.5)


class AnyAllMasks(nn.Module):
    """Masks from any()/all(), which had no lowering (tracing refused them)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        h = self.fc(x).reshape(x.shape[0], 2, 3)
        row_hot = (h > 0.3).any(axis=2, keepdims=True)  # a bool input
        calm = (h > -0.8).all(dim=(1, 2), keepdim=True)
        nonzero = h.relu().any(axis=1)  # a float input: nonzero counts
        zero_free = h.relu().all(axis=-1)
        empty = h[:, 0, :0]  # as NumPy: any() of nothing is False, all() True
        out = nf.where(row_hot, h, -h) * (calm.float() + 0.5)
        return nf.concat([out.reshape(x.shape[0], 6), nonzero.float(), zero_free.float(),
                          h.any().float().reshape(1, 1).expand(x.shape[0], 1),
                          empty.any(axis=1, keepdims=True).float(),
                          empty.all(axis=1, keepdims=True).float()], axis=1)


class ArgMaxHead(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 5)

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        return self.fc(x).argmax(axis=1)


class Slicing(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(12, 6)

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        h = x[:, :10]  # the first ten features
        tail = x[:, ::-2][:, None, 0]  # reversed, stepped, an int and a new axis
        return nf.concat([self.fc(x)[:, 1:], h[..., -3:], tail[:, 0, None]], axis=1)


class Reductions(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(6, 6)

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        h = self.fc(x).reshape(x.shape[0], 2, 3)
        centered = h - h.mean(axis=2, keepdims=True)
        return nf.concat([centered.sum(axis=1), h.max(axis=(1, 2), keepdims=True)[:, 0],
                          (centered * centered).mean(axis=-1)], axis=1)


class BatchReshape(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        h = self.fc(x).reshape(x.shape[0], 4, 2)  # the batch size read from the input
        g = h.transpose(0, 2, 1).reshape(x.shape[0], -1)
        wide = x.unsqueeze(1).expand(x.shape[0], 3, 8)  # a batch-sized expand of a batch dim
        return g + wide.mean(axis=1) + h.flatten(1)


class ConvResidual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 3, 3, padding=1)
        self.bn = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3 * 6 * 6, 4)

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        h = self.conv2(self.bn(self.conv1(x)).relu()) + x
        return self.head(h.reshape(x.shape[0], -1))


@pytest.mark.parametrize("make,sample", [
    (ResidualMLP, (6,)), (TwoBranch, (5,)), (Swish, (4,)), (ChunkSplit, (6,)),
    (MaxMin, (4,)), (Slicing, (12,)), (Reductions, (6,)), (BatchReshape, (8,)),
    (AnyAllMasks, (4,)),
], ids=lambda v: getattr(v, "__name__", ""))
def test_custom_forward_matches_eager_in_session_and_onnx_runtime(make: Any, sample: tuple,
                                                                  tmp_path: Any) -> None:
    check_everywhere(make(), sample, tmp_path)


class NormZero(nn.Module):
    """torch's count of nonzeros, a bool sum underneath (untraceable before)."""

    def __init__(self, relu: bool = False) -> None:
        super().__init__()
        self.relu = relu

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        return (x.relu() if self.relu else x).norm(0, dim=1, keepdim=True)


class CountPositive(nn.Module):
    def forward(self, x: nf.Tensor) -> nf.Tensor:
        return (x > 0).sum(1)


@pytest.mark.parametrize("model, dtype", [(NormZero(), F32), (NormZero(relu=True), F32),
                                          (CountPositive(), np.int64)],
                         ids=["norm0", "norm0_relu", "bool_sum"])
def test_a_sum_of_bools_traces_as_eager_counts(model: nn.Module, dtype: type,
                                               tmp_path: Any) -> None:
    """The graph summed the bools as bools (ONNX's ReduceSum takes none): a Cast to int64 now
    comes first, the dtype eager's NumPy/torch sum of bools has."""
    check_everywhere(model, (5,), tmp_path, input_shape=(5,))
    x = np.random.default_rng(2).standard_normal((4, 5)).astype(F32)
    assert eager(model, x).dtype == dtype
    for level in LEVELS:
        got = InferenceSession(model, optimization=level, input_shape=(5,)).run(x)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got, eager(model, x))
    export(model, tmp_path / "m.onnx", input_shape=(5,))
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert got.dtype == dtype
    np.testing.assert_array_equal(got, eager(model, x))


def test_conv_block_with_residual_add(tmp_path: Any) -> None:
    model = ConvResidual()
    model.bn.running_mean[:] = np.asarray([0.1, -0.2, 0.3], F32)
    model.bn.running_var[:] = np.asarray([0.5, 2.0, 1.5], F32)
    check_everywhere(model, (3, 6, 6), tmp_path, input_shape=(3, 6, 6))
    ops = InferenceSession(model, input_shape=(3, 6, 6)).graph.count_ops()
    assert "BatchNormalization" not in ops  # folded into conv1


def test_argmax_output_is_int64_and_right(tmp_path: Any) -> None:
    model = ArgMaxHead()
    x = np.random.default_rng(1).standard_normal((9, 4)).astype(F32)
    want = eager(model, x)
    for level in LEVELS:
        np.testing.assert_array_equal(InferenceSession(model, optimization=level).run(x), want)
    export(model, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, want)


def test_reshape_by_batch_size_is_batch_free_in_the_graph() -> None:
    graph = trace(BatchReshape())
    targets = [graph.initializers[n.inputs[1]].tolist() for n in graph.nodes
               if n.op in ("Reshape", "Expand")]
    assert [0, 4, 2] in targets and [0, -1] in targets and [1, 3, 8] in targets
    assert graph.inputs[0].shape == ("N", 8) and graph.outputs[0].shape == ("N", 8)


class Normalized(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU())
        self.skip = nn.Linear(6, 8)
        self.out = nn.Linear(8, 3)

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        return self.out(self.body(x) + self.skip(x))


def test_layer_children_keep_bn_folding_and_gemm_fusion(tmp_path: Any) -> None:
    model = Normalized()
    model.body[1].running_mean[:] = np.linspace(-1, 1, 8).astype(F32)
    model.body[1].running_var[:] = np.linspace(0.5, 2, 8).astype(F32)
    raw = trace(model).count_ops()
    assert raw == {"Gemm": 3, "BatchNormalization": 1, "Relu": 1, "Add": 1}
    ops = InferenceSession(model, optimization="all").graph.count_ops()
    assert ops == {"FusedGemm": 1, "Gemm": 2, "Add": 1}  # BN folded, Relu fused
    check_everywhere(model, (6,), tmp_path)


class Cube(Function):
    """x ** 3 with no IR lowering."""

    def forward(self, x: Any) -> Any:
        self.x = x
        return x ** 3

    def backward(self, gy: Any) -> tuple[Any]:
        return (3 * gy * self.x ** 2,)


class UsesCube(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        return Cube.apply(self.fc(x))


class Outer(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = UsesCube()

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        return self.inner(x) + 1.0


def test_op_without_lowering_is_one_clear_error() -> None:
    with pytest.raises(ConfigError, match=r"op Cube in module inner: it has no IR lowering"):
        InferenceSession(Outer())


class Masked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        return self.fc(x)[x > 0]


class BatchConstant(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        return self.fc(x) + nf.Tensor(np.ones((x.shape[0], 1), F32))


def test_what_cannot_be_traced_is_refused_clearly() -> None:
    with pytest.raises(ConfigError, match="boolean mask"):
        trace(Masked())
    with pytest.raises(ConfigError, match="changes with the batch size"):
        trace(BatchConstant())


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.use_skip = True

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        h = self.fc(x)
        return h + x if self.use_skip else h


class BatchBranch(Branchy):
    def forward(self, x: nf.Tensor) -> nf.Tensor:
        return self.fc(x) if x.shape[0] > 4 else x


def test_python_control_flow_is_evaluated_once_at_trace_time() -> None:
    model = Branchy()
    session = InferenceSession(model)
    x = np.random.default_rng(3).standard_normal((5, 4)).astype(F32)
    with_skip = eager(model, x)
    model.use_skip = False  # the traced graph keeps the branch taken when it was traced
    assert_close(session.run(x), with_skip, 1e-6)
    assert not np.allclose(eager(model, x), with_skip)
    assert "Add" not in InferenceSession(model).graph.count_ops()
    with pytest.raises(ConfigError, match="different ops at batch sizes"):
        trace(BatchBranch())


@pytest.fixture
def registered() -> Any:
    cls = nn.register_layer(ResidualBlock)
    yield cls
    LAYER_REGISTRY.pop("ResidualBlock", None)


class ResidualBlock(nn.Module):
    def __init__(self, features: int = 5) -> None:
        super().__init__()
        self.features = features
        self.fc1, self.fc2 = nn.Linear(features, features), nn.Linear(features, features)

    def get_config(self) -> dict[str, Any]:
        return {"features": self.features}

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        return x + self.fc2(self.fc1(x).relu())


def test_registered_custom_module_saves_loads_and_serves(registered: Any, tmp_path: Any) -> None:
    model = nn.Sequential(registered(5), nn.Linear(5, 3))
    path = tmp_path / "res.nnf"
    nf.save(model, path)
    x = np.random.default_rng(5).standard_normal((4, 5)).astype(F32)
    loaded = nf.load(path)
    assert_close(eager(loaded, x), eager(model, x), 1e-6)
    assert_close(InferenceSession(str(path)).run(x), eager(model, x), 1e-6)


class TwoIn(nn.Module):
    """A forward with two arrays: features and a per-row gate."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, a: nf.Tensor, b: nf.Tensor) -> nf.Tensor:
        return self.fc(a).relu() * b[:, :3] + b.sum(axis=1, keepdims=True)


def test_a_forward_with_two_inputs_traces_and_matches_eager() -> None:
    model = TwoIn()
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((7, 4)).astype(F32), rng.standard_normal((7, 4)).astype(F32)
    want = model(nf.Tensor(a), nf.Tensor(b)).data
    graph = trace(model, input_shape=[(None, 4), (None, 4)], input_name=["feats", "gate"])
    assert graph.input_names == ["feats", "gate"]
    for backend in ("numpy", "onnxruntime"):
        # it was a raw TypeError: forward() missing 1 required positional argument
        session = InferenceSession(model, input_shape=[(4,), (4,)], backend=backend)
        assert session.input_names == ["input_0", "input_1"]
        np.testing.assert_allclose(session.run({"input_0": a, "input_1": b}), want,
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(session.run([a[:2], b[:2]]), want[:2], rtol=1e-5, atol=1e-6)


def test_a_forward_with_two_inputs_needs_one_shape_per_argument() -> None:
    for kwargs, found in (({}, "no input_shape"), ({"input_shape": (4,)}, "a single shape")):
        with pytest.raises(ConfigError, match=rf"^TwoIn.forward takes 2 inputs; expected "
                           rf"input_shape=\[...\] with one shape per argument, found {found}$"):
            InferenceSession(TwoIn(), **kwargs)
    with pytest.raises(ConfigError, match=r"takes 2 inputs; .* found 3 shapes"):
        InferenceSession(TwoIn(), input_shape=[(4,), (4,), (4,)])
    with pytest.raises(ConfigError, match=r"expected 2 distinct input name\(s\)"):
        trace(TwoIn(), [(None, 4), (None, 4)], input_name=["x", "x"])


class FunctionalLinear(nn.Module):
    """linear() (the op, not the layer) on (batch, seq, features) input, plus a Linear child."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 5)
        rng = np.random.default_rng(2)
        self.w = nn.Parameter(nf.Tensor(rng.standard_normal((3, 5)).astype(F32)))
        self.b = nn.Parameter(nf.Tensor(rng.standard_normal(3).astype(F32)))

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        h = self.fc(x)
        return linear(h, self.w, self.b, relu=True) + linear(h, self.w)


@pytest.mark.parametrize("make,sample", [
    (lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)), (6, 8)),
    (lambda: nn.Sequential(nn.Linear(8, 4)), (2, 3, 8)),
    (FunctionalLinear, (6, 8)),
], ids=["layers", "layer-4d", "ops"])
def test_linear_on_nd_input_lowers_to_matmul_add(make: Any, sample: tuple,
                                                 tmp_path: Any) -> None:
    # it was a ShapeError: Gemm takes 2-D inputs only
    model = make()
    check_everywhere(model, sample, tmp_path, input_shape=sample)
    ops = InferenceSession(model, input_shape=sample).graph.count_ops()
    assert "MatMul" in ops and not {"Gemm", "FusedGemm"} & set(ops)


def test_linear_on_2d_input_stays_a_gemm_for_fusion() -> None:
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    assert InferenceSession(model).graph.count_ops() == {"FusedGemm": 1, "Gemm": 1}


class ClassToken(nn.Module):
    """A learned token grown to the batch (x.shape[0] rows) and joined with the input."""

    def __init__(self, sizes: tuple[int, ...]) -> None:
        super().__init__()
        self.sizes = sizes
        shape = (1,) * (len(sizes) - 1) + (8,)
        self.token = nn.Parameter(nf.Tensor(np.linspace(-1, 1, 8, dtype=F32).reshape(shape)))
        self.fc = nn.Linear(8 if len(sizes) == 3 else 16, 3)  # rows joined, or columns

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        cls = self.token.expand(x.shape[0], *self.sizes[1:])
        return self.fc(nf.cat([cls, x], axis=1))


class TokenRows(nn.Module):
    """An (8,) parameter expanded to (batch, 2, 8): new leading axes, one of them the batch."""

    def __init__(self) -> None:
        super().__init__()
        self.token = nn.Parameter(nf.Tensor(np.arange(8, dtype=F32)))

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        return x * self.token.expand(x.shape[0], 2, 8) + x[:, :1].expand(x.shape[0], 2, 8)


@pytest.mark.parametrize("make,sample", [
    (lambda: ClassToken((-1, -1)), (8,)), (lambda: ClassToken((-1, 1, 8)), (4, 8)),
    (TokenRows, (2, 8)),
], ids=["expand(N, -1)", "expand(N, 1, 8)", "new-axes"])
def test_expand_to_the_batch_size_follows_the_batch(make: Any, sample: tuple,
                                                    tmp_path: Any) -> None:
    # it was refused: the expanded token became a constant of the traced batch size
    model = make()
    check_everywhere(model, sample, tmp_path, input_shape=sample)  # batches 1, 3, 17
    graph = trace(model, (None, *sample))
    assert "Shape" in graph.count_ops() and graph.outputs[0].shape[0] == "N"
    x = np.random.default_rng(4).standard_normal((17, *sample)).astype(F32)
    cupy_code_on_numpy = CupyPlan(InferenceSession(model, input_shape=sample).graph, xp=np)
    assert_close(cupy_code_on_numpy.run([x])[0], eager(model, x), 1e-6)


class TwiceTheBatch(ClassToken):
    def forward(self, x: nf.Tensor) -> nf.Tensor:
        return self.token.expand(2 * x.shape[0], -1) + nf.cat([x, x], axis=0)


def test_expand_to_another_size_that_follows_the_batch_is_refused() -> None:
    with pytest.raises(ConfigError, match="changes with the batch size"):
        trace(TwiceTheBatch((-1, -1)), (None, 8))


@pytest.mark.parametrize(("layer", "sample"), [
    (nn.AvgPool2d(2), "(C, H, W)"), (nn.MaxPool1d(2), "(C, L)"),
    (nn.ReLU(), "(features,) (or (C, H, W) for images)"),
])
def test_an_unguessable_input_shape_asks_for_one_samples_shape(layer: nn.Module,
                                                               sample: str) -> None:
    # said "expected input_shape=(None, features...)", which then failed as a 5-D input
    with pytest.raises(ConfigError, match=re.escape(
            f"expected input_shape={sample}, the shape of one sample without the batch axis")):
        InferenceSession(nn.Sequential(layer))


@pytest.mark.parametrize("model", [nn.Sequential(nn.AvgPool2d(2)), ResidualMLP(7)])
def test_a_leading_none_in_input_shape_is_told_to_leave_the_batch_axis_out(
        model: nn.Module) -> None:
    with pytest.raises(nf.errors.NNForgeError, match=r"without the batch axis: if the leading "
                       r"None of \(None, 2, 7, 7\) was the batch, pass input_shape=\(2, 7, 7\)"):
        InferenceSession(model, input_shape=(None, 2, 7, 7))
    session = InferenceSession(nn.Sequential(nn.AvgPool2d(2)), input_shape=(2, 7, 7))
    assert session.input_shape == (2, 7, 7)
