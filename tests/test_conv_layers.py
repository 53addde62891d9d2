"""Conv, pooling and batch-norm layers: gradients, attributes, configs, running statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn
from nnforge.autograd.gradcheck import check_gradients
from nnforge.errors import ConfigError, ShapeError

LAYERS = [
    # (factory, input shape without the batch axis)
    (lambda: nn.Conv2d(3, 4, 3), (3, 6, 7)),
    (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1), (3, 7, 6)),
    (lambda: nn.Conv2d(2, 3, (2, 3), dilation=2, bias=False, init="glorot"), (2, 7, 8)),
    (lambda: nn.Conv2d(4, 6, 3, padding=(1, 0), groups=2), (4, 5, 6)),
    (lambda: nn.MaxPool2d(2), (2, 6, 6)),
    (lambda: nn.MaxPool2d(3, stride=1, padding=1), (2, 5, 4)),
    (lambda: nn.AvgPool2d(2), (2, 6, 5)),
    (lambda: nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (2, 7, 7)),
    (lambda: nn.GlobalAvgPool2d(), (3, 4, 5)),
    (lambda: nn.GlobalAvgPool2d(keepdims=True), (3, 2, 2)),
    (lambda: nn.AdaptiveAvgPool2d(1), (2, 5, 4)),
    (lambda: nn.AdaptiveAvgPool2d((3, 2)), (2, 6, 4)),  # divides: an AvgPool2d
    (lambda: nn.AdaptiveAvgPool2d((3, None)), (2, 7, 5)),  # windows of different sizes
    (lambda: nn.BatchNorm1d(4), (4,)),
    (lambda: nn.BatchNorm1d(3, affine=False), (3, 5)),
    (lambda: nn.BatchNorm2d(3), (3, 4, 3)),
    (lambda: nn.BatchNorm2d(2, eps=1e-3, momentum=0.5), (2, 3, 3)),
    (lambda: nn.Conv2d(2, 3, 3, padding="same"), (2, 5, 6)),
    (lambda: nn.Conv2d(2, 3, (4, 2), padding="same", dilation=(1, 3)), (2, 6, 7)),
    (lambda: nn.Conv2d(2, 3, (2, 3), padding="valid"), (2, 5, 6)),
    (lambda: nn.BatchNorm1d(3, track_running_stats=False), (3, 4)),
    (lambda: nn.BatchNorm2d(2, affine=False, track_running_stats=False), (2, 3, 3)),
]


def _input(rng, shape):
    # distinct values keep max pooling away from ties, where the gradient is not defined
    return rng.permutation(int(np.prod(shape))).reshape(shape) / np.prod(shape) - 0.5


@pytest.mark.parametrize("make, shape", LAYERS)
@pytest.mark.parametrize("batch", [1, 3])
def test_layer_gradients(rng, make, shape, batch):
    layer = make().double()
    if isinstance(layer, nn.BatchNorm1d) and batch == 1 and len(shape) == 1:
        batch = 2  # one value per channel has no batch variance (tested below)
    x = _input(rng, (batch,) + shape)
    if layer.parameters():  # move weight and bias away from their 1/0 initial values
        for p in layer.parameters():
            p.data = p.data + rng.uniform(-0.5, 0.5, p.shape)
    check_gradients(lambda t: layer(t), [x], params=layer.parameters(), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("make, shape", LAYERS)
def test_config_round_trip(rng, make, shape):
    layer = make()
    arch = json.loads(json.dumps(layer.to_architecture()))  # through JSON, as in a model file
    clone = nn.layer_from_architecture(arch)
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()
    clone.load_state_dict(layer.state_dict())
    x = _input(rng, (2,) + shape).astype(np.float32)
    layer.eval()
    clone.eval()
    np.testing.assert_array_equal(clone(x).data, layer(x).data)


def test_conv2d_attributes():
    conv = nn.Conv2d(4, 6, (3, 5), stride=2, padding=(1, 2), dilation=(1, 2), groups=2)
    assert conv.weight.shape == (6, 2, 3, 5) and conv.bias.shape == (6,)
    assert conv.weight.dtype == conv.bias.dtype == np.float32
    assert conv.kernel_size == (3, 5) and conv.stride == (2, 2)
    assert conv.padding == (1, 2) and conv.dilation == (1, 2) and conv.groups == 2
    assert nn.Conv2d(1, 2, 3, bias=False).bias is None
    assert [n for n, _ in conv.named_parameters()] == ["weight", "bias"]
    y = conv(np.zeros((2, 4, 9, 11), np.float32))
    assert y.shape == (2, 6, 5, 4) and y.dtype == np.float32


def test_pool_attributes():
    pool = nn.MaxPool2d(3)
    assert pool.kernel_size == (3, 3) and pool.stride == (3, 3) and pool.padding == (0, 0)
    avg = nn.AvgPool2d((2, 3), stride=1, padding=(1, 1), count_include_pad=False)
    assert avg.stride == (1, 1) and avg.padding == (1, 1) and not avg.count_include_pad
    assert nn.GlobalAvgPool2d()(np.ones((2, 3, 4, 4), np.float32)).shape == (2, 3)
    assert nn.GlobalAvgPool2d(keepdims=True)(np.ones((2, 3, 4, 4))).shape == (2, 3, 1, 1)


def test_batch_norm_running_statistics(rng):
    bn = nn.BatchNorm2d(3, momentum=0.2)
    assert bn.running_mean.dtype == bn.running_var.dtype == np.float32
    assert set(bn.state_dict()) == {"weight", "bias", "running_mean", "running_var"}
    x = (rng.standard_normal((4, 3, 5, 5)) * 3 + 2).astype(np.float32)
    bn(x)  # one training step
    mean = x.mean(axis=(0, 2, 3))
    unbiased = x.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(bn.running_mean, 0.2 * mean, rtol=1e-5)
    np.testing.assert_allclose(bn.running_var, 0.8 + 0.2 * unbiased, rtol=1e-5)
    assert bn.running_mean.dtype == np.float32
    # evaluation normalises with the running statistics, not the batch's
    bn.weight.data[:] = [1.0, 2.0, 0.5]
    bn.bias.data[:] = [0.0, -1.0, 1.0]
    bn.eval()
    x2 = rng.standard_normal((2, 3, 4, 4)).astype(np.float32)
    shape = (1, 3, 1, 1)
    ref = ((x2 - bn.running_mean.reshape(shape)) / np.sqrt(bn.running_var.reshape(shape) + 1e-5)
           * bn.weight.data.reshape(shape) + bn.bias.data.reshape(shape))
    before = bn.running_mean.copy()
    np.testing.assert_allclose(bn(x2).data, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(bn.running_mean, before)  # eval does not update them
    # training mode output is normalised with the batch statistics
    bn.train()
    out = nn.BatchNorm1d(2)(np.array([[1.0, 10.0], [3.0, 30.0]], np.float32)).data
    np.testing.assert_allclose(out, [[-1, -1], [1, 1]], rtol=1e-4)


def test_batch_norm_batch_of_one():
    bn = nn.BatchNorm1d(3)
    with pytest.raises(ShapeError, match="more than one value per channel"):
        bn(np.ones((1, 3), np.float32))
    bn.eval()
    assert bn(np.ones((1, 3), np.float32)).shape == (1, 3)
    assert nn.BatchNorm2d(3)(np.ones((1, 3, 2, 2), np.float32)).shape == (1, 3, 2, 2)


def test_small_cnn_end_to_end_gradients(rng):
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.BatchNorm2d(3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(3, 4, 3), nn.Tanh(), nn.AvgPool2d(2),
                          nn.Flatten(), nn.Linear(4, 2)).double()
    check_gradients(lambda t: model(t), [rng.standard_normal((2, 1, 8, 8))],
                    params=model.parameters(), rtol=1e-4, atol=1e-6)


def test_lenet_learns_a_tiny_problem(rng):
    # two classes told apart by where the bright blob is: a few SGD steps must fit them
    nf.manual_seed(0)
    x = rng.standard_normal((32, 1, 12, 12)).astype(np.float32) * 0.1
    y = np.arange(32) % 2
    x[y == 0, :, 2:5, 2:5] += 1.0
    x[y == 1, :, 7:10, 7:10] += 1.0
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(4, 8, 3), nn.ReLU(), nn.GlobalAvgPool2d(), nn.Linear(8, 2))
    opt = nf.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(30):
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    model.eval()
    assert (model(x).data.argmax(axis=1) == y).mean() == 1.0


def test_layer_shape_errors():
    conv = nn.Conv2d(3, 4, 5)
    with pytest.raises(ShapeError, match=r"Conv2d expected input of shape \(batch, channels, H, "
                                         r"W\) with 3 channels, found \(2, 1, 28, 28\)"):
        conv(np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(ShapeError, match=r"with 3 channels, found \(3, 28, 28\)"):
        conv(np.zeros((3, 28, 28), np.float32))
    with pytest.raises(ShapeError, match=r"at least 5x5 pixels, found 4x9"):
        conv(np.zeros((1, 3, 4, 9), np.float32))
    with pytest.raises(ShapeError, match=r"at least 2x2 pixels, found 1x1"):
        nn.MaxPool2d(2)(np.zeros((1, 3, 1, 1), np.float32))
    with pytest.raises(ShapeError, match=r"BatchNorm2d expected input of shape \(batch, channels,"
                                         r" H, W\) with 3 channels, found \(2, 4, 5, 5\)"):
        nn.BatchNorm2d(3)(np.zeros((2, 4, 5, 5), np.float32))
    with pytest.raises(ShapeError, match=r"with 3 channels, found \(2, 3, 4, 4\)"):
        nn.BatchNorm1d(3)(np.zeros((2, 3, 4, 4), np.float32))


@pytest.mark.parametrize("make", [
    lambda: nn.Conv2d(3, 4, 0), lambda: nn.Conv2d(3, 4, 3, stride=(1, 0)),
    lambda: nn.Conv2d(3, 4, 3, padding=-1), lambda: nn.Conv2d(3, 4, 3, groups=2),
    lambda: nn.Conv2d(0, 4, 3), lambda: nn.Conv2d(3, 4, (3, 3, 3)),
    lambda: nn.Conv2d(3, 4, "3"), lambda: nn.MaxPool2d(2, padding=2),
    lambda: nn.AvgPool2d(0), lambda: nn.BatchNorm2d(0), lambda: nn.BatchNorm1d(3, eps=0),
    lambda: nn.BatchNorm1d(3, momentum=1.5),
])
def test_config_errors(make):
    with pytest.raises(ConfigError):
        make()


def _adaptive_reference(x, oh, ow):
    """PyTorch's adaptive windows, one output at a time."""
    n, c, h, w = x.shape
    out = np.empty((n, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            r0, r1 = (i * h) // oh, -(-((i + 1) * h) // oh)
            c0, c1 = (j * w) // ow, -(-((j + 1) * w) // ow)
            out[:, :, i, j] = x[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return out


@pytest.mark.parametrize("hw, size", [((7, 7), 1), ((8, 6), (4, 3)), ((7, 5), (3, 2)),
                                      ((6, 9), (None, 4)), ((5, 5), 5), ((3, 4), (5, 6))])
def test_adaptive_avg_pool_uses_pytorchs_windows(rng, hw, size):
    x = rng.standard_normal((2, 3, *hw))
    layer = nn.AdaptiveAvgPool2d(size)
    oh, ow = layer.target(*hw)
    np.testing.assert_allclose(layer(nf.Tensor(x)).data, _adaptive_reference(x, oh, ow),
                               rtol=1e-12, atol=1e-15)


def test_adaptive_avg_pool_errors():
    with pytest.raises(ConfigError, match="output_size must be"):
        nn.AdaptiveAvgPool2d(0)
    with pytest.raises(ConfigError, match="output_size must be"):
        nn.AdaptiveAvgPool2d((2, 2, 2))
    with pytest.raises(ShapeError, match=r"\(N, C, H, W\)"):
        nn.AdaptiveAvgPool2d(1)(np.ones((2, 3, 4), np.float32))
    model = nn.Sequential(nn.AdaptiveAvgPool2d((3, 2)))
    with pytest.raises(ConfigError, match=r"needs an input of shape \(N, C, H, W\) with known"):
        nf.InferenceSession(model, input_shape=(2, None, 5))


def test_module_freezing_apply_and_buffers():
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2))
    assert model[0].requires_grad_(False) is model[0]
    frozen = [p.data.copy() for p in model[0].parameters()]
    opt = nf.optim.SGD(model.parameters(), lr=0.1)
    model(np.ones((5, 3), np.float32)).sum().backward()
    assert all(p.grad is None for p in model[0].parameters())
    opt.step()
    for p, before in zip(model[0].parameters(), frozen):
        np.testing.assert_array_equal(p.data, before)
    assert model[2].weight.grad is not None
    model.requires_grad_()
    assert all(p.requires_grad for p in model.parameters())
    seen = []
    assert model.apply(lambda m: seen.append(type(m).__name__)) is model
    assert seen == ["Linear", "BatchNorm1d", "Linear", "Sequential"]  # children first
    names = [n for n, _ in model.named_buffers()]
    assert names == ["1.running_mean", "1.running_var"]
    assert [b.shape for b in model.buffers()] == [(4,), (4,)]


@pytest.mark.parametrize("cls, shape", [(nn.BatchNorm1d, (6, 3)), (nn.BatchNorm1d, (4, 3, 5)),
                                        (nn.BatchNorm2d, (2, 3, 4, 3))])
def test_batch_norm_momentum_none_is_pytorchs_cumulative_average(rng, cls, shape, tmp_path):
    bn = cls(3, momentum=None).double()
    axes = tuple(i for i in range(len(shape)) if i != 1)
    batches = [rng.standard_normal(shape) * (k + 1) + k for k in range(3)]
    for x in batches:
        bn(x)
    # running statistics are the plain means of the batches' statistics (PyTorch, momentum=None)
    np.testing.assert_allclose(bn.running_mean, np.mean([x.mean(axes) for x in batches], 0),
                               rtol=1e-12)
    np.testing.assert_allclose(bn.running_var,
                               np.mean([x.var(axes, ddof=1) for x in batches], 0), rtol=1e-12)
    assert bn.num_batches_tracked == 3 and bn.state_dict()["num_batches_tracked"] == 3
    bn.eval()
    bn(batches[0])  # evaluation neither updates the statistics nor counts the batch
    assert bn.num_batches_tracked == 3
    again = nn.layer_from_architecture(json.loads(json.dumps(bn.to_architecture())))
    assert again.momentum is None and again.get_config() == bn.get_config()
    again.load_state_dict(bn.state_dict())
    assert again.num_batches_tracked == 3  # so training resumes the same average
    nf.save(nn.Sequential(bn), tmp_path / "bn.nnf", input_shape=shape[1:])
    assert nf.load(tmp_path / "bn.nnf")[0].num_batches_tracked == 3


def test_batch_norm_loads_pytorchs_state_dict_keys():
    # PyTorch's BatchNorm state dicts always hold num_batches_tracked; with a float momentum it
    # is never used, so it loads strictly without being kept (and without changing our keys)
    model = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3, momentum=0.2))
    state = {**model.state_dict(), "1.num_batches_tracked": np.array(7, np.int64)}
    assert model.load_state_dict(state) == {"missing_keys": [], "unexpected_keys": []}
    assert "1.num_batches_tracked" not in model.state_dict()
    with pytest.raises(nf.errors.StateDictError, match=r"unexpected keys \['0.num_batches"):
        model.load_state_dict({**state, "0.num_batches_tracked": np.array(1)})


def test_adaptive_avg_pool_repr_shows_its_output_size():
    assert repr(nn.AdaptiveAvgPool2d((None, 3))) == "AdaptiveAvgPool2d(output_size=(None, 3))"
    assert repr(nn.AdaptiveAvgPool2d(2)) == "AdaptiveAvgPool2d(output_size=(2, 2))"


# -- padding="same"/"valid" and track_running_stats=False, as PyTorch has them -----------------
def _naive_conv(x, w, b, pads, dilation):
    """Cross-correlation over explicitly zero-padded input (top, left, bottom, right)."""
    top, left, bottom, right = pads
    xp = np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))
    o, _, kh, kw = w.shape
    dh, dw = dilation
    oh, ow = xp.shape[2] - dh * (kh - 1), xp.shape[3] - dw * (kw - 1)
    y = np.zeros((x.shape[0], o, oh, ow)) + b.reshape(1, -1, 1, 1)
    for i in range(kh):
        for j in range(kw):
            y += np.einsum("nchw,oc->nohw", xp[:, :, i * dh:i * dh + oh, j * dw:j * dw + ow],
                           w[:, :, i, j])
    return y


# pads PyTorch uses (checked against torch 2.x): an odd total puts the extra at the bottom/right
@pytest.mark.parametrize("kernel,dilation,pads", [(3, 1, (1, 1, 1, 1)), (4, 1, (1, 1, 2, 2)),
                                                  ((2, 3), (3, 1), (1, 1, 2, 1)),
                                                  (2, 1, (0, 0, 1, 1)), (3, 2, (2, 2, 2, 2))])
def test_conv2d_same_padding_keeps_the_size_with_pytorchs_pads(rng, kernel, dilation, pads):
    conv = nn.Conv2d(3, 4, kernel, padding="same", dilation=dilation).double()
    assert conv.pads == pads and conv.padding == "same"
    x = rng.standard_normal((2, 3, 7, 8))
    y = conv(x).data
    assert y.shape == (2, 4, 7, 8)
    expected = _naive_conv(x, conv.weight.data, conv.bias.data, pads, conv.dilation)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


def test_conv2d_same_padding_in_a_fused_conv_relu_pool_matches(rng):
    model = nn.Sequential(nn.Conv2d(2, 3, 4, padding="same"), nn.ReLU(), nn.MaxPool2d(2))
    x = rng.standard_normal((2, 2, 6, 8)).astype(np.float32)
    conv = model[0]
    ref = np.maximum(_naive_conv(x, conv.weight.data, conv.bias.data, conv.pads, (1, 1)), 0)
    ref = ref.reshape(2, 3, 3, 2, 4, 2).max(axis=(3, 5))
    np.testing.assert_allclose(model(x).data, ref, rtol=1e-5, atol=1e-5)


def test_conv2d_padding_strings_are_checked():
    with pytest.raises(ConfigError, match="stride 1"):
        nn.Conv2d(1, 1, 3, stride=2, padding="same")
    with pytest.raises(ConfigError, match="'same', 'valid'"):
        nn.Conv2d(1, 1, 3, padding="full")
    assert nn.Conv2d(1, 1, 3, padding="valid").pads == (0, 0, 0, 0)
    assert nn.Conv2d(1, 1, 3, stride=2, padding="valid").get_config()["padding"] == "valid"


def _batch_normalized(x, eps=1e-5):
    axes = (0,) + tuple(range(2, x.ndim))
    return (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)


@pytest.mark.parametrize("make,shape", [(nn.BatchNorm1d, (5, 3)), (nn.BatchNorm1d, (4, 3, 6)),
                                        (nn.BatchNorm2d, (3, 3, 4, 4))])
def test_batch_norm_without_running_stats_uses_the_batch_in_eval_too(rng, make, shape):
    layer = make(3, track_running_stats=False)
    assert layer.running_mean is None and set(layer.state_dict()) == {"weight", "bias"}
    x = rng.standard_normal(shape).astype(np.float32) * 3 + 1
    for mode in (layer.train, layer.eval):
        mode()
        np.testing.assert_allclose(layer(x).data, _batch_normalized(x), rtol=1e-4, atol=1e-5)
    assert layer.get_config()["track_running_stats"] is False
    assert "track_running_stats" not in make(3).get_config()  # older files stay as they were


def test_batch_norm_without_running_stats_is_refused_by_the_trace():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, track_running_stats=False))
    with pytest.raises(ConfigError, match="track_running_stats=False.*depend on the others"):
        nf.InferenceSession(model.eval())


def test_same_padding_and_untracked_batch_norm_survive_save_and_load(rng, tmp_path):
    model = nn.Sequential(nn.Conv2d(2, 3, 4, padding="same"),
                          nn.BatchNorm2d(3, track_running_stats=False)).eval()
    nf.save(model, tmp_path / "m.nnf", input_shape=(2, 6, 6))
    loaded = nf.load(tmp_path / "m.nnf").eval()
    assert loaded[0].padding == "same" and loaded[1].track_running_stats is False
    x = rng.standard_normal((4, 2, 6, 6)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x).data, model(x).data)
