"""save() refuses a model whose layers' get_config() would not rebuild them (io/rebuild.py):
a setting left out of a config, seen on the layer's attributes or on a probe batch; and it
saves every built-in layer, and models whose odd attributes are not settings."""

from __future__ import annotations

import itertools
import random
import uuid
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn
from nnforge.errors import ConfigError
from nnforge.io.checkpoint import save_checkpoint
from nnforge.random import get_rng_state

ONNX = Path(__file__).parent / "fixtures" / "onnx" / "mlp_classic.onnx"
_names = itertools.count()


# -- layers with incomplete configs (module level: registered once, by class name) --------
@nn.register_layer
class RcScale(nn.Module):
    """The review's repro: k is never returned by get_config (the default {})."""

    def __init__(self, k: float = 2.0) -> None:
        super().__init__()
        self.k = k
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Any) -> Any:
        return self.fc(x) * self.k


@nn.register_layer
class RcNet(nn.Module):
    """A model with a complete config of its own, holding the faulty layer at 'body.2'."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: Any) -> Any:
        return self.body(x)

    def get_config(self) -> dict[str, Any]:
        return {"body": self.body.to_architecture()}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> nn.Module:
        return cls(nn.layer_from_architecture(config["body"]))


def _net(k: float) -> nn.Module:
    return RcNet(nn.Sequential(nn.Linear(4, 4), nn.ReLU(), RcScale(k)))


@nn.register_layer
class RcPrivate(nn.Module):
    """A setting kept in a private attribute: only the probe can see it."""

    def __init__(self, k: float = 2.0) -> None:
        super().__init__()
        self._k = k
        self.fc = nn.Linear(4, 3)

    def forward(self, x: Any) -> Any:
        return self.fc(x) * self._k


@nn.register_layer
class RcBlock(nn.Module):
    """Builds its sub-layer from a setting it neither keeps nor saves: the block is at fault,
    not the LeakyReLU (whose own config is complete)."""

    def __init__(self, slope: float = 0.01) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.act = nn.LeakyReLU(slope)

    def forward(self, x: Any) -> Any:
        return self.act(self.fc(x))


@nn.register_layer
class RcOdd(nn.Module):
    """Attributes that are not settings: a name from a global counter, an id, a random draw
    in __init__, a counter and a list a forward changes. None may cause a refusal."""

    def __init__(self) -> None:
        super().__init__()
        self.name = f"odd_{next(_names)}"
        self.uid = uuid.uuid4().hex
        self.jitter = random.random()
        self.calls = 0
        self.seen: list[int] = []
        self._warned = False
        self.fc = nn.Linear(4, 2)

    def forward(self, x: Any) -> Any:
        self.calls += 1
        self.seen.append(len(self.seen))
        self._warned = True
        return self.fc(x)


@nn.register_layer
class RcHolder(nn.Module):
    """ModuleList and ModuleDict are not callable on their own: held by a model."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Tanh()])
        self.heads = nn.ModuleDict({"a": nn.Linear(4, 2), "b": nn.Sigmoid()})

    def forward(self, x: Any) -> Any:
        for layer in self.blocks:
            x = layer(x)
        return self.heads["b"](self.heads["a"](x))


# -- every built-in layer, with settings other than the defaults -------------------------------
def _graph_module() -> nn.Module:
    from nnforge.onnx import GraphModule, load  # noqa: PLC0415

    return GraphModule(load(ONNX))


BUILT_IN: dict[str, tuple[Callable[[], nn.Module], tuple[int, ...]]] = {
    "Linear": (lambda: nn.Linear(4, 3, bias=False, init="xavier"), (4,)),
    "Conv2d": (lambda: nn.Conv2d(2, 4, 3, padding="same", dilation=2, groups=2, bias=False,
                                 init="lecun"), (2, 6, 6)),
    "Conv1d": (lambda: nn.Conv1d(2, 4, 3, stride=2, padding=1, groups=2), (2, 9)),
    "MaxPool2d": (lambda: nn.MaxPool2d(3, stride=2, padding=1, ceil_mode=True), (2, 7, 7)),
    "AvgPool2d": (lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
                  (2, 7, 7)),
    "MaxPool1d": (lambda: nn.MaxPool1d(3, stride=2, padding=1, ceil_mode=True), (2, 9)),
    "AvgPool1d": (lambda: nn.AvgPool1d(3, 2, 1, ceil_mode=True, count_include_pad=False),
                  (2, 9)),
    "GlobalAvgPool2d": (lambda: nn.GlobalAvgPool2d(keepdims=True), (2, 5, 5)),
    "AdaptiveAvgPool2d": (lambda: nn.AdaptiveAvgPool2d((3, None)), (2, 7, 5)),
    "AdaptiveAvgPool1d": (lambda: nn.AdaptiveAvgPool1d(3), (2, 7)),
    "BatchNorm1d": (lambda: nn.BatchNorm1d(3, eps=1e-3, momentum=None, affine=False), (3,)),
    "BatchNorm2d": (lambda: nn.BatchNorm2d(2, momentum=0.2, track_running_stats=False),
                    (2, 4, 4)),
    "LayerNorm": (lambda: nn.LayerNorm([2, 3], eps=1e-3, bias=False), (2, 3)),
    "Dropout": (lambda: nn.Dropout(0.3), (4,)),
    "ReLU": (nn.ReLU, (4,)),
    "Sigmoid": (nn.Sigmoid, (4,)),
    "Tanh": (nn.Tanh, (4,)),
    "GELU": (lambda: nn.GELU("tanh"), (4,)),
    "LeakyReLU": (lambda: nn.LeakyReLU(0.2), (4,)),
    "SiLU": (nn.SiLU, (4,)),
    "ELU": (lambda: nn.ELU(0.5), (4,)),
    "Softplus": (lambda: nn.Softplus(2.0, 10.0), (4,)),
    "Softmax": (lambda: nn.Softmax(axis=1), (3, 4)),
    "LogSoftmax": (lambda: nn.LogSoftmax(axis=1), (3, 4)),
    "Identity": (nn.Identity, (4,)),
    "Flatten": (lambda: nn.Flatten(1, 2), (2, 3, 4)),
    "Sequential": (lambda: nn.Sequential(OrderedDict([("fc", nn.Linear(4, 4)),
                                                      ("act", nn.ReLU())])), (4,)),
    "ModuleList": (RcHolder, (4,)),
    "ModuleDict": (RcHolder, (4,)),
    "GraphModule": (_graph_module, (8,)),
}


def test_every_built_in_layer_has_a_case() -> None:
    """No built-in layer is left out of the save test below without a word."""
    built_in = {name for name, cls in nn.LAYER_REGISTRY.items()
                if cls.__module__.startswith("nnforge.")}
    assert built_in == set(BUILT_IN)


@pytest.mark.parametrize("name", sorted(BUILT_IN))
def test_built_in_layers_save_and_load_as_they_were(name: str, tmp_path: Path) -> None:
    make, shape = BUILT_IN[name]
    model = make()
    x = np.random.default_rng(3).standard_normal((4, *shape)).astype(np.float32)
    if name != "GraphModule":  # training moves running statistics and counters
        model.train()
        model(x)
    want = model.eval()(x).data
    model.train(name != "GraphModule")
    nf.save(model, tmp_path / "m.nnf", input_shape=shape)
    np.testing.assert_array_equal(nf.load(tmp_path / "m.nnf")(x).data, want)


# -- refusals ----------------------------------------------------------------------------------
def test_a_setting_left_out_of_get_config_is_refused_naming_layer_values_and_fix(
        tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        nf.save(_net(3.0), tmp_path / "m.nnf")
    msg = str(err.value)
    for part in ("'body.2' (RcScale)", "k is 3.0 in the model but 2.0 when rebuilt",
                 "return k from RcScale.get_config()"):
        assert part in msg, msg
    assert not (tmp_path / "m.nnf").exists()


def test_the_review_repro_saved_alone(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"the model \(RcScale\).*k is 3.0 .* but 2.0"):
        nf.save(RcScale(k=3.0), tmp_path / "m.nnf")
    nf.save(RcScale(k=2.0), tmp_path / "m.nnf")  # the value the config rebuilds: nothing lost


def test_a_checkpoint_is_refused_too(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"'body.2' \(RcScale\)"):
        save_checkpoint(tmp_path / "c.nnf", _net(3.0), trainer_state={"epoch": 1})


def test_a_private_setting_is_caught_by_the_probe(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"computes differently.*_k = 3.0 but 2.0"):
        nf.save(RcPrivate(k=3.0), tmp_path / "m.nnf")


def test_a_parent_that_builds_a_sub_layer_from_an_unsaved_setting_is_named(
        tmp_path: Path) -> None:
    model = nn.Sequential(RcBlock(slope=0.2), nn.Linear(4, 1))
    with pytest.raises(ConfigError) as err:
        nf.save(model, tmp_path / "m.nnf")
    msg = str(err.value)
    assert "'0.act' (LeakyReLU)" in msg and "negative_slope is 0.2" in msg, msg
    assert "layer '0' (RcBlock), which builds it" in msg, msg


@nn.register_layer
class RcTrainOnly(nn.Module):
    """A setting that acts in training only (a noise level), left out of get_config."""

    def __init__(self, noise: float = 0.1) -> None:
        super().__init__()
        self.noise = noise
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(x)  # the noise would be added in training; eval never sees it


def test_a_lost_setting_that_changes_no_output_warns_and_saves(tmp_path: Path) -> None:
    """Refusing here would cost the save itself (a ModelCheckpoint mid-fit): warn instead."""
    with pytest.warns(UserWarning, match=r"noise is 0.5 in the model but 0.1 .* saved anyway"):
        nf.save(RcTrainOnly(noise=0.5), tmp_path / "m.nnf")
    assert nf.load(tmp_path / "m.nnf").noise == 0.1


# -- what is not refused, and what the check leaves as it was ----------------------------------
def test_attributes_that_are_not_settings_do_not_refuse(tmp_path: Path) -> None:
    model = nn.Sequential(RcOdd())
    model(np.ones((2, 4), np.float32))
    model.note = "set after construction"  # only the model has it: not from a config
    nf.save(model, tmp_path / "m.nnf")


def test_the_check_leaves_the_model_as_it_was(tmp_path: Path) -> None:
    odd = RcOdd()
    model = nn.Sequential(odd, nn.Dropout(0.5))
    model.train()
    rng, np_rng, py_rng = get_rng_state(), np.random.get_state(), random.getstate()
    attrs = dict(vars(odd))
    seen = list(odd.seen)
    nf.save(model, tmp_path / "m.nnf")
    assert all(m.training for m in model.modules())
    assert get_rng_state() == rng and random.getstate() == py_rng
    assert all(np.array_equal(a, b) for a, b in zip(np.random.get_state(), np_rng))
    # save's own zero-batch run (for the output shapes) counts once; the probe leaves no trace
    assert odd.calls == attrs["calls"] + 1 and odd.seen == [*seen, len(seen)]
    assert all(vars(odd)[k] is v for k, v in attrs.items() if k not in ("calls", "_warned"))


def test_a_model_that_does_not_repeat_its_output_is_not_refused(tmp_path: Path) -> None:
    @nn.register_layer
    class RcNoisy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x: Any) -> Any:  # unseeded noise even in eval mode
            return self.fc(x) + np.random.default_rng().standard_normal(2).astype(np.float32)

    nf.save(RcNoisy(), tmp_path / "m.nnf")
