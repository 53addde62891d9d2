"""Torch-style Tensor API for ported code: bool comparison tensors and dtype promotion, masks
that trace (and export to ONNX), size()/numel()/dim()/tolist(), casts, masked_fill, repeat,
clamp(min=, max=), dim= on split/chunk/stack, and the trace's input_shape hint."""

from __future__ import annotations

import pickle
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

import nnforge as nf
from nnforge import nn
from nnforge.autograd.gradcheck import check_gradients
from nnforge.errors import ConfigError, DTypeError, NNForgeError, ShapeError
from nnforge.onnx import export
from nnforge.runtime import InferenceSession

F64 = np.float64


def _away_from_zero(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal(shape)
    return np.where(np.abs(x) < 0.1, 0.5, x)  # no kink or mask flip within eps


# -- comparisons: bool tensors, promoted operands --------------------------------------------
def test_comparisons_give_bool_tensors_without_gradient():
    h = nf.Tensor(np.array([-1.0, 0.0, 2.0]), requires_grad=True)
    for mask, want in ((h > 0, [0, 0, 1]), (h < 0, [1, 0, 0]), (h >= 0, [0, 1, 1]),
                       (h <= 0, [1, 1, 0]), (h == 0, [0, 1, 0]), (h != 0, [1, 0, 1]),
                       (0 < h, [0, 0, 1])):
        assert isinstance(mask, nf.Tensor) and mask.dtype == bool and not mask.requires_grad
        assert mask.tolist() == [bool(w) for w in want]
    assert (h == pytest.approx([-1.0, 0.0, 2.0]))  # an unknown operand: NotImplemented


@pytest.mark.parametrize("shape", [(1, 4), (3, 5)])
def test_relu_by_mask_has_the_right_gradient(shape: tuple[int, ...]):
    check_gradients(lambda x: x * (x > 0), [_away_from_zero(shape)])
    check_gradients(lambda x: (x < 0) * x * 3.0, [_away_from_zero(shape, 1)])


def test_bool_and_int_tensors_promote_as_torch():
    f = nf.Tensor(np.ones(3, np.float32))
    mask = nf.Tensor(np.array([True, False, True]))
    idx = nf.Tensor(np.array([1, 2, 3]))
    assert (f * mask).dtype == np.float32 and (mask * f).dtype == np.float32
    assert (idx * f).dtype == np.float32  # NumPy would say float64
    assert (mask + idx).dtype == np.int64 and (mask + 1).dtype == np.int64
    assert (mask * 1.0).dtype == np.float32 and (mask * 1.0).tolist() == [1.0, 0.0, 1.0]
    assert (idx == 2.0).tolist() == [False, True, False]


# -- tracing masks: session and ONNX Runtime equal the eager forward --------------------------
class ReluByMask(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.l = nn.Linear(8, 4)

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        h = self.l(x)
        return h * (h > 0)


class IsClassTwo(ReluByMask):
    def forward(self, x: nf.Tensor) -> nf.Tensor:
        return (self.l(x).argmax(1) == 2) * 1.0


class TorchIdioms(ReluByMask):
    def forward(self, x: nf.Tensor) -> nf.Tensor:
        h = self.l(x)
        h = h.masked_fill(h < -0.5, 0.25).clamp(min=-0.3, max=2.0)
        return nf.cat([h.repeat(1, 2), h.softmax(dim=1) + (h >= 0.1).float()], dim=1)


@pytest.mark.parametrize("cls", [ReluByMask, IsClassTwo, TorchIdioms])
def test_masks_trace_and_export(cls: type, tmp_path: Any):
    model = cls()
    xs = [np.random.default_rng(n).standard_normal((n, 8)).astype(np.float32) for n in (1, 7)]
    session = InferenceSession(model, input_shape=(8,))
    path = tmp_path / "m.onnx"
    export(model, path, input_shape=(8,))
    ort_s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x in xs:
        want = model(x).data
        np.testing.assert_allclose(session.run(x), want, rtol=1e-5, atol=1e-6)
        got = ort_s.run(None, {ort_s.get_inputs()[0].name: x})[0]
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_any_and_all_in_a_traced_forward_trace():
    """They had no lowering: tracing a mask built with any() was refused (see
    test_graph_trace_ops for ONNX Runtime)."""
    class Flagged(ReluByMask):
        def forward(self, x: nf.Tensor) -> nf.Tensor:
            h = self.l(x)
            return h * (h > 0).any(dim=1, keepdim=True) + (h > -1).all(1, True)

    model = Flagged()
    session = InferenceSession(model, input_shape=(8,))
    for n in (1, 6):
        x = np.random.default_rng(n).standard_normal((n, 8)).astype(np.float32)
        np.testing.assert_allclose(session.run(x), model(x).data, rtol=1e-6)


# -- the trace names input_shape= when a guessed shape leaves sizes unknown ---------------------
def test_unknown_sizes_while_tracing_suggest_input_shape(tmp_path: Any):
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                          nn.Linear(32, 4))
    for build in (lambda: InferenceSession(model), lambda: export(model, tmp_path / "m.onnx")):
        with pytest.raises(ConfigError, match=r"pass input_shape=\(3, H, W\), the shape of one "
                                              r"sample"):
            build()
    assert InferenceSession(model, input_shape=(3, 8, 8)).run(
        np.zeros((2, 3, 8, 8), np.float32)).shape == (2, 4)


# -- torch's Tensor methods --------------------------------------------------------------------
def test_size_is_numpys_count_and_torchs_call():
    t = nf.Tensor(np.zeros((2, 3)))
    assert t.size == 6 and t.size * 2 == 12 and t.size() == (2, 3)
    assert t.size(1) == 3 and t.size(-2) == 2
    assert type(pickle.loads(pickle.dumps(t.size))) is int
    with pytest.raises(ShapeError, match=r"size\(\) expects an axis in \[-2, 1\]"):
        t.size(2)
    assert t.numel() == 6 and t.dim() == 2 and t.contiguous() is t
    assert t.tolist() == [[0.0] * 3] * 2 and nf.Tensor(np.array(2.5)).tolist() == 2.5


def test_scalar_conversions_as_torch():
    one, many = nf.Tensor(np.array([3.0])), nf.Tensor(np.zeros(2))
    assert int(one) == 3 and float(one) == 3.0 and bool(one) and not bool(one - 3.0)
    with pytest.raises(ShapeError, match="ambiguous"):
        bool(many)  # before: len() decided, so `if t > 0:` was True for any 1-element t
    assert [10, 20, 30][nf.Tensor(np.array(2))] == 30
    assert np.arange(5)[nf.Tensor(np.array([1, 3]))].tolist() == [1, 3]  # still an array index
    with pytest.raises(DTypeError, match="integer tensor"):
        [1, 2][one]


def test_casts_and_dtype_methods():
    t = nf.Tensor(np.array([1.5, -2.0]), requires_grad=True)
    assert t.float().dtype == np.float32 and t.double().dtype == np.float64
    assert t.long().dtype == np.int64 and t.int().dtype == np.int32 and t.bool().dtype == bool
    assert not t.long().requires_grad and t.float().requires_grad
    assert t.type_as(nf.Tensor(np.zeros(1, np.float32))).dtype == np.float32
    assert t.expand_as(nf.Tensor(np.zeros((3, 2)))).shape == (3, 2)
    x = nf.Tensor(np.ones(2)).requires_grad_()
    assert x.requires_grad and x.is_leaf


def test_dim_keyword_for_split_chunk_stack():
    t = nf.Tensor(np.arange(12.0).reshape(3, 4))
    assert [p.shape for p in t.chunk(2, dim=1)] == [(3, 2), (3, 2)]
    assert [p.shape for p in t.split(3, dim=1)] == [(3, 3), (3, 1)]
    assert [p.shape for p in nf.split(t, [1, 2], dim=0)] == [(1, 4), (2, 4)]
    assert nf.stack([t, t], dim=2).shape == (3, 4, 2) and nf.stack([t, t]).shape == (2, 3, 4)
    with pytest.raises(ConfigError, match="axis= or its torch name dim="):
        t.chunk(2, 0, dim=1)


@pytest.mark.parametrize("shape", [(1, 3), (2, 3)])
def test_new_differentiable_methods_pass_the_gradient_check(shape: tuple[int, ...]):
    mask = np.random.default_rng(3).random(shape) > 0.5
    check_gradients(lambda x: x.masked_fill(mask, -1.0), [_away_from_zero(shape)])
    check_gradients(lambda x: x.masked_fill(nf.Tensor(mask), 2.0) * x, [_away_from_zero(shape)])
    check_gradients(lambda x: x.repeat(2, 1, 3), [_away_from_zero(shape)])
    check_gradients(lambda x: x.clamp(min=-0.5, max=0.7), [_away_from_zero(shape)])
    check_gradients(lambda x: x.softmax(dim=0) + x.log_softmax(1), [_away_from_zero(shape)])
    check_gradients(lambda x: x.double() * x[:1].expand_as(x), [_away_from_zero(shape)])


def test_repeat_and_masked_fill_values():
    t = nf.Tensor(np.array([[1.0, 2.0]]))
    assert t.repeat(2, 2).tolist() == np.tile(t.data, (2, 2)).tolist()
    assert t.repeat((1, 1, 2)).shape == (1, 1, 4)
    with pytest.raises(ShapeError, match="at least 2"):
        t.repeat(2)
    assert t.masked_fill(t > 1.5, 0.0).tolist() == [[1.0, 0.0]]
    with pytest.raises(DTypeError, match="bool mask"):
        t.masked_fill(np.array([[1, 0]]), 0.0)


def test_in_place_methods_say_so():
    t = nf.Tensor(np.ones(2))
    with pytest.raises(NNForgeError, match=r"add_\(\) is not supported.*t = t \+"):
        t.add_(1)
    with pytest.raises(AttributeError, match=r"t = t.clamp\(...\)"):
        t.clamp_(0, 1)
    assert not hasattr(t, "mul_") and not hasattr(t, "no_such_name")


def test_clamp_takes_torch_and_numpy_bound_names():
    t = nf.Tensor(np.array([1.0, 5.0]))
    assert t.clamp(min=2).tolist() == [2.0, 5.0] and t.clamp(max=2).tolist() == [1.0, 2.0]
    assert t.clip(2, 3).tolist() == [2.0, 3.0] and t.clamp(low=2, max=4).tolist() == [2.0, 4.0]
    with pytest.raises(ConfigError, match="found both"):
        t.clamp(1, min=2)


# -- max/min: torch's (values, indices) for torch's spelling, values for NumPy's -----------------
@pytest.mark.parametrize("name", ["max", "min"])
def test_max_and_min_over_a_dim_return_values_and_indices_as_torch(name: str):
    """`vals, idx = t.max(dim=1)` iterated over the rows of the values before."""
    x = np.random.default_rng(3).standard_normal((2, 5))  # 2 rows: unpacking "worked"
    pick, arg = getattr(np, name), getattr(np, f"arg{name}")
    t = nf.Tensor(x, requires_grad=True)
    for kw, args in (({"dim": 1}, ()), ({}, (1,)), ({"dim": -1, "keepdim": True}, ()),
                     ({}, (1, True)), ({"keepdims": True}, (1,))):
        keep = kw.get("keepdim", kw.get("keepdims", args[1:] == (True,)))
        got = getattr(t, name)(*args, **kw)
        values, indices = got
        assert got.values is values and got.indices is indices, kw  # torch's field names
        assert isinstance(values, nf.Tensor) and indices.dtype == np.int64, kw
        np.testing.assert_array_equal(values.data, pick(x, axis=1, keepdims=keep))
        np.testing.assert_array_equal(indices.data, arg(x, axis=1, keepdims=keep))
        assert values.requires_grad and not indices.requires_grad
    getattr(t, name)(dim=0).values.sum().backward()
    want = np.zeros_like(x)
    want[arg(x, axis=0), np.arange(5)] = 1
    np.testing.assert_array_equal(t.grad, want)


@pytest.mark.parametrize("name", ["max", "min"])
def test_numpy_spellings_of_max_and_min_still_return_the_values(name: str):
    x = np.random.default_rng(4).standard_normal((3, 4))
    t = nf.Tensor(x)
    for got, want in ((getattr(t, name)(axis=1), getattr(x, name)(axis=1)),
                      (getattr(np, name)(t, axis=1), getattr(x, name)(axis=1)),
                      (getattr(np, name)(t, 0, keepdims=True), getattr(x, name)(0, keepdims=True)),
                      (getattr(t, name)(), getattr(x, name)()),
                      (getattr(t, name)(dim=(0, 1)), getattr(x, name)(axis=(0, 1)))):
        assert isinstance(got, nf.Tensor)  # torch's max takes no tuple: NumPy's amax then
        np.testing.assert_array_equal(got.data, want)
    other = nf.Tensor(np.zeros(4))  # torch.max(input, other): elementwise
    np.testing.assert_array_equal(getattr(t, name)(other).data, getattr(np, f"{name}imum")(x, 0))


def test_max_values_and_indices_used_wrongly_say_so():
    t = nf.Tensor(np.arange(6.0).reshape(2, 3))
    with pytest.raises(ConfigError, match=r"\(values, indices\); expected \.values"):
        t - t.max(1)  # NumPy's meaning of t.max(1): would broadcast a stacked pair
    with pytest.raises(ConfigError, match="positionally or as dim=, found both"):
        t.max(1, dim=1)
    with pytest.raises(ConfigError, match="elementwise maximum, which takes no axis"):
        t.max(t, dim=1)
    with pytest.raises(ConfigError, match="axis= or its torch name dim=, found both"):
        t.min(axis=0, dim=0)


@pytest.mark.parametrize("name", ["max", "min"])
@pytest.mark.parametrize("arg, found", [(0.5, "float 0.5"), (True, "bool True"),
                                        (np.True_, "bool"), ([0, 1], r"list \[0, 1\]"),
                                        ("1", "str '1'"), ((0, True), r"tuple \(0, True\)"),
                                        (1.0, "float 1.0")])
def test_max_and_min_refuse_a_dim_that_is_no_int(name: str, arg: Any, found: str):
    """t.max(0.5) raised a bare TypeError from NumPy; t.max(True) reduced axis 1 silently."""
    t = nf.Tensor(np.arange(6.0).reshape(2, 3))
    for call in (lambda: getattr(t, name)(arg), lambda: getattr(t, name)(dim=arg)):
        with pytest.raises(ConfigError, match=rf"{name} expects an int dim, a tuple of ints, or "
                                              rf"a Tensor/array for the elementwise {name}imum, "
                                              rf"found {found}"):
            call()
    values, indices = getattr(t, name)(np.int64(1))  # NumPy ints are ints
    assert indices.tolist() == ([2, 2] if name == "max" else [0, 0])
    assert getattr(t, name)((0, -1)).item() == (5.0 if name == "max" else 0.0)


def test_max_over_a_dim_traces_to_reduce_max_and_argmax(tmp_path):
    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 5)

        def forward(self, x: nf.Tensor) -> nf.Tensor:
            values, indices = self.fc(x).max(dim=1, keepdim=True)
            return values * indices.float()

    model = Head()
    x = np.random.default_rng(5).standard_normal((7, 4)).astype(np.float32)
    model.eval()
    with nf.no_grad():
        h = model.fc(x).data
    want = h.max(1, keepdims=True) * h.argmax(1)[:, None]
    np.testing.assert_allclose(InferenceSession(model).run(x), want, rtol=1e-6)
    export(model, tmp_path / "m.onnx")
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(sess.run(None, {sess.get_inputs()[0].name: x})[0], want,
                               rtol=1e-6)
