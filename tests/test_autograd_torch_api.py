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


def test_any_in_a_traced_forward_is_one_clear_error():
    class Flagged(ReluByMask):
        def forward(self, x: nf.Tensor) -> nf.Tensor:
            h = self.l(x)
            return h * (h > 0).any(dim=1, keepdim=True)

    with pytest.raises(ConfigError, match="AnyAll"):
        InferenceSession(Flagged(), input_shape=(8,))


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
