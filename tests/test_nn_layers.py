"""Dense layers: gradient checks, configs, state dicts, modes."""

from __future__ import annotations

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn
from nnforge.autograd.gradcheck import check_gradients
from nnforge.errors import ConfigError, DTypeError, ShapeError, StateDictError, UnknownLayerError

LAYERS = [lambda: nn.Linear(5, 3), lambda: nn.Linear(5, 3, bias=False, init="glorot"),
          nn.ReLU, nn.Sigmoid, nn.Tanh, nn.GELU, lambda: nn.LeakyReLU(0.2),
          lambda: nn.Softmax(-1), lambda: nn.LogSoftmax(1), nn.Identity, nn.Flatten,
          nn.SiLU, lambda: nn.ELU(0.5), nn.Softplus, lambda: nn.Softplus(2.0, 1.0),
          lambda: nn.LayerNorm(5), lambda: nn.LayerNorm([5], elementwise_affine=False),
          lambda: nn.LayerNorm(5, bias=False)]


@pytest.mark.parametrize("make", LAYERS)
@pytest.mark.parametrize("batch", [1, 4])
def test_layer_gradients(rng, make, batch):
    layer = make().double()
    x = rng.uniform(-2, 2, size=(batch, 5))
    x[np.abs(x) < 1e-3] = 0.3
    check_gradients(lambda t: layer(t), [x], params=layer.parameters())


def test_dropout_gradient_and_scaling(rng):
    layer = nn.Dropout(0.3).double()
    x = rng.uniform(-1, 1, size=(4, 6))

    def f(t):
        nf.manual_seed(5)  # same mask on every call, so the function is deterministic
        return layer(t)

    check_gradients(f, [x])
    nf.manual_seed(1)
    big = nn.Dropout(0.25)(np.ones((1000, 100), np.float32)).data
    kept = big != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(big[kept], 1 / 0.75, rtol=1e-6)
    layer.eval()
    assert layer(x).data is not None and np.array_equal(layer(x).data, x)


def test_mlp_gradients(rng):
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 6), nn.GELU(),
                          nn.Linear(6, 2)).double()
    for batch in (1, 3):
        check_gradients(lambda t: model(t), [rng.standard_normal((batch, 4))],
                        params=model.parameters())


@pytest.mark.parametrize("bias", [True, False])
def test_sequential_linear_relu_runs_fused_with_identical_results(rng, bias):
    # Sequential runs Linear -> ReLU as one op (ops.linear.LinearRelu); it must pass the
    # gradient check and equal the layers run one by one exactly, ties at zero included
    model = nn.Sequential(nn.Linear(5, 7, bias=bias), nn.ReLU(), nn.Linear(7, 3),
                          nn.ReLU()).double()
    for batch in (1, 4):
        x = rng.uniform(-2, 2, size=(batch, 5))
        x[np.abs(x) < 1e-3] = 0.3
        check_gradients(lambda t: model(t), [x], params=model.parameters())
    model.float()
    x = np.round(rng.standard_normal((6, 5))).astype(np.float32)  # exact zeros before ReLU
    model[0].weight.data[0] = 0.0
    gy = rng.standard_normal((6, 3)).astype(np.float32)
    out = model(nf.Tensor(x))
    assert out.data.flags.writeable and out._creator is not None
    assert type(out._creator).__name__ == "LinearRelu"
    _assert_same_as_one_by_one(model, x, gy)


def test_config_round_trip_rebuilds_the_same_model(rng):
    model = nn.Sequential(nn.Linear(8, 4, init="glorot"), nn.LeakyReLU(0.3), nn.Dropout(0.2),
                          nn.Linear(4, 2), nn.Softmax())
    arch = model.to_architecture()
    clone = nn.layer_from_architecture(arch)
    assert clone.to_architecture() == arch
    clone.load_state_dict(model.state_dict())
    model.eval()
    clone.eval()
    x = rng.standard_normal((3, 8)).astype(np.float32)
    np.testing.assert_array_equal(model(x).data, clone(x).data)


def test_unknown_layer_type_is_refused():
    with pytest.raises(UnknownLayerError, match="'os.system'"):
        nn.layer_from_architecture({"type": "os.system", "config": {}})
    with pytest.raises(ConfigError, match="Linear"):
        nn.layer_from_architecture({"type": "Linear", "config": {"in_features": 3}})


def test_bad_layer_arguments():
    with pytest.raises(ConfigError, match="in_features"):
        nn.Linear(0, 3)
    with pytest.raises(ConfigError, match="Dropout"):
        nn.Dropout(1.5)


def test_state_dict_reports_missing_and_unexpected():
    model = nn.Sequential(nn.Linear(3, 2))
    sd = model.state_dict()
    sd["extra"] = np.zeros(1)
    del sd["0.bias"]
    with pytest.raises(StateDictError,
                       match=r"missing keys \['0.bias'\].*unexpected keys \['extra'\]"):
        model.load_state_dict(sd)
    report = model.load_state_dict(sd, strict=False)
    assert report == {"missing_keys": ["0.bias"], "unexpected_keys": ["extra"]}
    with pytest.raises(ShapeError, match=r"'0.weight'.*\(3, 3\).*\(2, 3\)"):
        model.load_state_dict({"0.weight": np.zeros((3, 3)), "0.bias": np.zeros(2)})


def test_state_dict_is_a_copy_and_load_keeps_arrays():
    model = nn.Linear(3, 2)
    w = model.weight.data
    sd = model.state_dict()
    sd["weight"][:] = 7
    assert not np.any(model.weight.data == 7)
    model.load_state_dict(sd)
    assert model.weight.data is w and np.all(w == 7)


def test_train_eval_modes_and_named_parameters():
    model = nn.Sequential(nn.Linear(3, 2), nn.Dropout(0.5), nn.Sequential(nn.Linear(2, 1)))
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias", "2.0.weight",
                                                         "2.0.bias"]
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())
    assert model.num_parameters() == 3 * 2 + 2 + 2 + 1


def test_module_accepts_numpy_and_casts_float64(rng):
    model = nn.Linear(3, 2)
    out = model(rng.standard_normal((4, 3)))
    assert isinstance(out, nf.Tensor) and out.dtype == np.float32


def test_seeded_initialization_is_reproducible():
    nf.manual_seed(3)
    a = nn.Linear(10, 10).weight.data.copy()
    nf.manual_seed(3)
    b = nn.Linear(10, 10).weight.data
    np.testing.assert_array_equal(a, b)
    bound = np.sqrt(6 / 10)
    assert np.abs(a).max() <= bound and a.dtype == np.float32


@pytest.mark.parametrize("padding", [0, 1])
def test_sequential_pools_before_relu_with_identical_results(rng, padding):
    # Sequential runs ReLU -> MaxPool2d as MaxPool2d -> ReLU (a quarter of the work for the
    # activation); outputs and every gradient must equal running the layers one by one, ties
    # (rounded inputs, windows of zeros after the ReLU) included
    nf.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.MaxPool2d(2, padding=padding),
                          nn.Flatten(), nn.Linear(3 * (3 + padding) ** 2, 2))
    x = np.round(rng.standard_normal((4, 2, 9, 9))).astype(np.float32)
    gy = rng.standard_normal((4, 2)).astype(np.float32)
    _assert_same_as_one_by_one(model, x, gy)


@pytest.mark.parametrize("relu", [True, False])
def test_sequential_runs_conv_and_tiling_max_pool_fused(rng, relu):
    # Conv2d [ReLU] MaxPool2d runs as one op (ops.conv_pool.ConvMaxPool) when the pool's
    # windows tile the convolution's output, and as the separate layers otherwise
    def model_for(size):
        nf.manual_seed(4)
        layers = [nn.Conv2d(2, 3, 3, padding=1)] + ([nn.ReLU()] if relu else [])
        return nn.Sequential(*layers, nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(3 * (size // 2) ** 2, 2))
    for size, fused in ((8, True), (7, False)):
        model = model_for(size)
        x = np.round(rng.standard_normal((4, 2, size, size))).astype(np.float32)  # ties
        h = model[0].forward_pooled(nf.Tensor(x), model[1 + relu])
        assert (h is not None) == fused
        if fused:
            assert type(h._creator).__name__ == "ConvMaxPool"
        gy = rng.standard_normal((4, 2)).astype(np.float32)
        _assert_same_as_one_by_one(model, x, gy, params_rtol=1e-5)
        with nf.no_grad():  # inference keeps nothing for backward and gives the same output
            out, h = model(nf.Tensor(x)), nf.Tensor(x)
            for layer in model:
                h = layer(h)
        np.testing.assert_array_equal(out.data, h.data)


def test_pool_ceil_mode_config_round_trip_and_check():
    for layer in (nn.MaxPool2d(3, 2, ceil_mode=True), nn.AvgPool2d(2, ceil_mode=True)):
        config = layer.get_config()
        assert config["ceil_mode"] is True
        assert type(layer).from_config(config).get_config() == config
    assert "ceil_mode" not in nn.MaxPool2d(2).get_config()  # files without it stay the same
    with pytest.raises(ConfigError, match="ceil_mode must be True or False, found 'yes'"):
        nn.MaxPool2d(2, ceil_mode="yes")
    x = nf.Tensor(np.arange(49, dtype=np.float32).reshape(1, 1, 7, 7))
    assert nn.MaxPool2d(2, ceil_mode=True)(x).shape == (1, 1, 4, 4)
    assert nn.MaxPool2d(2)(x).shape == (1, 1, 3, 3)


def _assert_same_as_one_by_one(model, x, gy, params_rtol=0.0):
    """The Sequential's output and every gradient equal running its layers one by one (the
    parameters' gradients within params_rtol, for fused ops that sum in another order)."""
    def run(forward):
        model.zero_grad()
        xt = nf.Tensor(x, requires_grad=True)
        out = forward(xt)
        out.backward(gy)
        return [out.data, xt.grad] + [p.grad.copy() for p in model.parameters()]

    def one_by_one(h):
        for layer in model:
            h = layer(h)
        return h

    for k, (got, want) in enumerate(zip(run(model), run(one_by_one))):
        if k < 2 or not params_rtol:
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=params_rtol, atol=params_rtol)


@nn.register_layer
class _Residual(nn.Module):
    """A custom layer built on a ModuleList, as a user would write one."""

    def __init__(self, width: int = 4, depth: int = 2) -> None:
        super().__init__()
        self.width, self.depth = width, depth
        self.blocks = nn.ModuleList([nn.Linear(width, width) for _ in range(depth)])

    def forward(self, x):  # noqa: ANN001, ANN201
        for block in self.blocks:
            x = x + block(x).clip(low=0.0)
        return x

    def get_config(self):  # noqa: ANN201
        return {"width": self.width, "depth": self.depth}


def test_module_list_registers_its_layers_for_training_and_saving(rng, tmp_path):
    model = _Residual()
    assert [n for n, _ in model.named_parameters()] == [
        "blocks.0.weight", "blocks.0.bias", "blocks.1.weight", "blocks.1.bias"]
    x = rng.standard_normal((3, 4)).astype(np.float32)
    model.double()
    check_gradients(lambda t: model(t), [x.astype(np.float64)], params=model.parameters())
    model.float()
    nf.save(model, tmp_path / "r.nnf")
    again = nf.load(tmp_path / "r.nnf")
    with nf.no_grad():
        np.testing.assert_array_equal(again(x).data, model(x).data)
    blocks = model.blocks
    assert len(blocks) == 2 and blocks[-1] is list(blocks)[1]
    assert isinstance(blocks[:1], nn.ModuleList) and len(blocks[:1]) == 1
    blocks.append(nn.Linear(4, 4))
    assert len(model.parameters()) == 6
    with pytest.raises(ConfigError, match="not a layer to call"):
        blocks(x)
    with pytest.raises(ConfigError, match="expects a Module"):
        blocks.append("relu")


def test_sequential_slices_are_sequential():
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    head = model[1:]
    assert isinstance(head, nn.Sequential) and len(head) == 2 and head[0] is model[1]


def test_a_plain_list_of_layers_is_refused_with_the_fix():
    class Bad(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = [nn.Linear(2, 2)]

    with pytest.raises(ConfigError, match=r"Bad.layers: a plain list .* nn.ModuleList"):
        Bad()


@pytest.mark.parametrize("make, message", [
    (lambda: nn.BatchNorm2d(4, momentum=1.5), r"momentum in \[0, 1\], found 1.5"),
    (lambda: nn.BatchNorm2d(4, eps=0), "positive eps"),
    (lambda: nn.BatchNorm2d(4, eps="small"), "number for BatchNorm2d eps, found 'small'"),
    (lambda: nn.Dropout(None), "number for Dropout p, found None"),
    (lambda: nn.Dropout(1.01), r"Dropout p in \[0, 1\], found 1.01"),
    (lambda: nn.LeakyReLU("a"), "number for LeakyReLU negative_slope"),
    (lambda: nn.ELU("a"), "number for ELU alpha, found 'a'"),
    (lambda: nn.Softplus(0), "nonzero beta, found 0"),
    (lambda: nn.Softplus(1.0, float("inf")), "Softplus threshold in .*, found inf"),
    (lambda: nn.LayerNorm(0), "normalized_shape must be a positive integer .* found 0"),
    (lambda: nn.LayerNorm([]), r"non-empty list of them, found \[\]"),
    (lambda: nn.LayerNorm(4, eps=0), "positive eps"),
])
def test_bad_layer_hyperparameters_get_one_config_error(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def test_deleting_or_reassigning_attributes_keeps_registration_honest():
    layer = nn.Linear(3, 2)
    del layer.bias  # must leave parameters() and the state dict too, as in PyTorch
    assert [n for n, _ in layer.named_parameters()] == ["weight"]
    assert list(layer.state_dict()) == ["weight"]
    seq = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    delattr(seq, "0")
    assert len(seq) == 1 and seq.parameters() == []
    # an array in a parameter's slot would be used by forward but neither trained nor saved
    with pytest.raises(ConfigError, match=r"cannot assign ndarray to parameter Linear.weight"):
        layer.weight = np.zeros((2, 3), np.float32)
    with pytest.raises(ConfigError, match=r"cannot assign Tensor to parameter"):
        layer.weight = nf.Tensor(np.zeros((2, 3), np.float32))
    with pytest.raises(ConfigError, match=r"cannot assign int to child module Sequential.1"):
        setattr(seq, "1", 5)
    layer.weight = nn.Parameter(np.ones((2, 3), np.float32))  # a Parameter, or None, is fine
    assert layer.parameters()[0] is layer.weight
    setattr(seq, "1", None)
    assert len(seq) == 0


def test_a_buffer_set_to_none_is_skipped_like_pytorch():
    bn = nn.BatchNorm1d(2)
    bn.running_mean = None
    assert list(bn.state_dict()) == ["weight", "bias", "running_var"]
    assert bn.double().running_var.dtype == np.float64
    bn.load_state_dict({"weight": np.ones(2), "bias": np.zeros(2), "running_var": np.ones(2)})


def test_shared_parameters_load_their_own_state_dict():
    shared = nn.Linear(3, 3)
    model = nn.Sequential(shared, nn.ReLU(), shared)
    state = model.state_dict()
    assert list(state) == ["0.weight", "0.bias"] and model.num_parameters() == 12
    assert model.load_state_dict(state) == {"missing_keys": [], "unexpected_keys": []}
    # PyTorch's state dicts list every name of a shared parameter: either name loads it
    both = {**state, "2.weight": state["0.weight"], "2.bias": state["0.bias"]}
    assert model.load_state_dict(both) == {"missing_keys": [], "unexpected_keys": []}
    model.load_state_dict({"2.weight": np.zeros((3, 3)), "2.bias": np.zeros(3)})
    assert not shared.weight.data.any() and model[2] is shared


def test_load_state_dict_refuses_non_mappings_and_non_numbers_without_copying():
    layer = nn.Linear(3, 2)
    before = layer.weight.data.copy()
    with pytest.raises(StateDictError, match="expected a state dict .* found list"):
        layer.load_state_dict([("weight", before)])
    with pytest.raises(StateDictError, match="'bias' has dtype <U1 .* expected numbers"):
        layer.load_state_dict({"weight": np.zeros((2, 3)), "bias": np.array(["a", "b"])})
    np.testing.assert_array_equal(layer.weight.data, before)  # all or nothing
    layer.load_state_dict({"weight": nf.Tensor(np.ones((2, 3))), "bias": layer.bias})
    assert layer.weight.data.dtype == np.float32 and layer.weight.data.sum() == 6


def test_register_layer_refuses_a_second_class_under_a_taken_name():
    class Linear(nn.Module):  # a user's own "Linear" would rebuild every saved nn.Linear
        pass

    with pytest.raises(ConfigError, match=r"'Linear' is already registered by "
                                          r"nnforge.nn.layers.Linear; rename"):
        nn.register_layer(Linear)
    assert nn.LAYER_REGISTRY["Linear"] is nn.Linear
    with pytest.raises(ConfigError, match="expects a subclass of nnforge.nn.Module"):
        nn.register_layer(int)
    classes = []
    for _ in range(2):  # re-running one definition (a notebook cell) replaces it
        class Rerun(nn.Module):
            pass

        classes.append(nn.register_layer(Rerun))
    try:
        assert nn.LAYER_REGISTRY["Rerun"] is classes[1] and nn.register_layer(classes[1])
    finally:
        nn.LAYER_REGISTRY.pop("Rerun")


@pytest.mark.parametrize("cls, config, message", [
    (nn.Linear, {"in_features": 2, "out_features": 3, "bias": "no"}, "bias must be True or"),
    (nn.Conv2d, {"in_channels": 1, "out_channels": 1, "kernel_size": 3, "bias": 0}, "bias must"),
    (nn.BatchNorm1d, {"num_features": 2, "affine": "no"}, "affine must be True or False"),
    (nn.AvgPool2d, {"kernel_size": 2, "count_include_pad": "no"}, "count_include_pad must"),
    (nn.GlobalAvgPool2d, {"keepdims": 1}, "keepdims must be True or False"),
    (nn.Softmax, {"axis": 1.7}, "axis must be an integer, found 1.7"),
    (nn.Softmax, {"axis": "x"}, "axis must be an integer"),
    (nn.Flatten, {"start_dim": True}, "start_dim must be an integer, found True"),
    (nn.LayerNorm, {"normalized_shape": [4], "elementwise_affine": 1}, "elementwise_affine must"),
    (nn.LayerNorm, {"normalized_shape": [4.0]}, "normalized_shape must be a positive integer"),
    (nn.Sequential, {"layers": [], "extra": 1},
         "takes only 'layers' and 'names', found \\['extra'\\]"),
])
def test_configs_of_the_wrong_type_are_refused_not_coerced(cls, config, message):
    # bool("no") is True and int(1.7) is 1: a hand-edited architecture must not mean otherwise
    with pytest.raises(ConfigError, match=message):
        cls.from_config(config)


@pytest.mark.parametrize("layer", [nn.Softmax(3), nn.LogSoftmax(-4)])
def test_softmax_axis_out_of_range_is_a_shape_error(layer):
    # NumPy's AxisError is outside nnforge.errors: the CLI and server would not report it
    with pytest.raises(ShapeError, match=r"axis in \[-3, 2\] for input of shape \(2, 3, 4\)"):
        layer(np.ones((2, 3, 4), np.float32))
    assert layer(np.ones((2, 3, 4, 5), np.float32)).shape == (2, 3, 4, 5)


def test_tanh_gelu_and_flatten_end_dim_layers_round_trip(rng, tmp_path):
    model = nn.Sequential(nn.Linear(6, 8), nn.GELU(approximate="tanh"), nn.Flatten(0, 1))
    assert nn.GELU().get_config() == {} and nn.Flatten().get_config() == {"start_dim": 1}
    assert model[1].get_config() == {"approximate": "tanh"}
    assert model[2].get_config() == {"start_dim": 0, "end_dim": 1}
    nf.save(model, tmp_path / "m.nnf")
    loaded = nf.load(tmp_path / "m.nnf")
    x = rng.standard_normal((3, 6)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x).data, model(x).data)
    assert loaded(x).shape == (24,)
    with pytest.raises(ConfigError, match="approximate"):
        nn.GELU(approximate="fast")
    with pytest.raises(ConfigError, match="end_dim"):
        nn.Flatten(1, 2.0)


# -- user-report fixes: string input, ModuleDict, Linear on N-D input, torch names, repr ------
def test_string_input_is_a_dtype_error_naming_the_dtype():
    for model in (nn.Linear(64, 2), nn.Sequential(nn.Linear(64, 2), nn.ReLU())):
        with pytest.raises(DTypeError, match="<U1"):
            model(np.array([["a"] * 64]))


def test_a_plain_dict_of_layers_is_refused_and_module_dict_registers_them():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = {"a": nn.Linear(4, 4)}

    with pytest.raises(ConfigError, match="ModuleDict"):
        Bad()

    class Good(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleDict({"a": nn.Linear(4, 3), "b": nn.Linear(3, 2)})

        def forward(self, x):
            return self.layers["b"](self.layers["a"](x).relu())

    model = Good()
    assert list(model.state_dict()) == ["layers.a.weight", "layers.a.bias", "layers.b.weight",
                                        "layers.b.bias"]
    assert len(model.parameters()) == 4 and list(model.layers) == ["a", "b"]
    assert "a" in model.layers and len(model.layers) == 2
    with pytest.raises(ConfigError):
        model.layers["forward"] = nn.ReLU()
    with pytest.raises(ConfigError):
        model.layers["x.y"] = nn.ReLU()
    with pytest.raises(KeyError, match="'c'"):
        model.layers["c"]
    again = nn.layer_from_architecture(model.layers.to_architecture())  # what files hold
    assert isinstance(again, nn.ModuleDict) and list(again.keys()) == ["a", "b"]
    again.load_state_dict(model.layers.state_dict())
    for k, v in model.layers.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[k], v)
    del model.layers["b"]
    assert list(model.layers) == ["a"] and len(model.parameters()) == 2


@pytest.mark.parametrize("shape", [(2, 3, 4), (2, 1, 3, 4), (4,)])
def test_linear_applies_to_the_last_axis_of_nd_input(rng, shape):
    layer = nn.Linear(4, 3).double()
    x = rng.standard_normal(shape)
    w, b = layer.weight.data, layer.bias.data
    np.testing.assert_allclose(layer(x).data, x @ w.T + b, rtol=1e-12)
    check_gradients(lambda t: layer(t), [x], params=layer.parameters())
    fused = nn.Sequential(layer, nn.ReLU())  # the LinearRelu op
    np.testing.assert_allclose(fused(x).data, np.maximum(x @ w.T + b, 0), rtol=1e-12)
    check_gradients(lambda t: fused(t), [x], params=layer.parameters())
    with pytest.raises(ShapeError, match=r"\(batch, \.\.\., 4\)"):
        layer(rng.standard_normal((2, 3, 5)))


def test_softmax_layers_take_torch_dim():
    x = nf.Tensor(np.random.default_rng(0).standard_normal((2, 3)))
    for cls in (nn.Softmax, nn.LogSoftmax):
        assert cls(dim=0).axis == 0 and cls().axis == -1
        np.testing.assert_allclose(cls(dim=0)(x).data, cls(0)(x).data)
        with pytest.raises(ConfigError):
            cls(0, dim=1)


def test_loss_repr_shows_the_options_that_differ_from_defaults():
    assert repr(nn.CrossEntropyLoss()) == "CrossEntropyLoss()"
    assert repr(nn.CrossEntropyLoss(label_smoothing=0.1)) == \
        "CrossEntropyLoss(label_smoothing=0.1)"
    assert repr(nn.HuberLoss(delta=2.0, reduction="sum")) == "HuberLoss(delta=2.0, reduction='sum')"
    assert repr(nn.CrossEntropyLoss(weight=np.array([1.0, 2.0]))) == \
        "CrossEntropyLoss(weight=[1., 2.])"
    assert repr(nn.BCEWithLogitsLoss(pos_weight=3.0)) == "BCEWithLogitsLoss(pos_weight=3.0)"
