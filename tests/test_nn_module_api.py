"""Module API that porters from torch reach for: load_state_dict's named tuple, shared layers
listed once, ModuleList editing, Sequential(OrderedDict), children, get_submodule, recurse=,
and Dropout(p=1)."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn
from nnforge.errors import ConfigError
from nnforge.nn.module import IncompatibleKeys


# -- load_state_dict ---------------------------------------------------------------------------
def test_load_state_dict_unpacks_into_missing_and_unexpected_keys():
    model = nn.Sequential(nn.Linear(3, 2))
    sd = {**model.state_dict(), "extra": np.zeros(1)}
    del sd["0.bias"]
    missing, unexpected = model.load_state_dict(sd, strict=False)  # was the dict's two keys
    assert (missing, unexpected) == (["0.bias"], ["extra"])
    report = model.load_state_dict(sd, strict=False)
    assert isinstance(report, IncompatibleKeys) and report.missing_keys == ["0.bias"]
    # the dict it used to be still reads
    assert report["unexpected_keys"] == ["extra"] and report[0] == ["0.bias"]
    assert report == {"missing_keys": ["0.bias"], "unexpected_keys": ["extra"]}
    with pytest.raises(KeyError, match="missing"):
        report["missing"]  # noqa: B018
    assert repr(model.load_state_dict(model.state_dict())) == "<All keys matched successfully>"


# -- shared sub-modules --------------------------------------------------------------------------
def _shared_model() -> tuple[nn.Module, nn.Module]:
    shared = nn.BatchNorm1d(2)
    return nn.Sequential(shared, nn.ReLU(), nn.Sequential(shared)), shared


def test_named_modules_lists_a_shared_module_once_and_apply_visits_it_once():
    model, shared = _shared_model()
    assert [n for n, _ in model.named_modules()] == ["", "0", "1", "2"]
    assert [n for n, _ in model.named_modules(remove_duplicate=False)] == [
        "", "0", "1", "2", "2.0"]
    seen: list[str] = []
    model.apply(lambda m: seen.append(type(m).__name__))
    assert seen == ["BatchNorm1d", "ReLU", "Sequential", "Sequential"]  # children first
    pair = nn.Sequential(shared, shared)
    assert list(pair.children()) == [shared] and [n for n, _ in pair.named_children()] == ["0"]


def test_a_shared_module_saves_its_buffers_once_and_loads_either_name():
    model, shared = _shared_model()
    state = model.state_dict()
    assert [k for k in state if k.endswith("running_mean")] == ["0.running_mean"]
    assert model.load_state_dict(state) == ([], [])
    torch_style = {**state, **{f"2.0.{k[2:]}": v for k, v in state.items()}}  # every name
    torch_style["2.0.running_mean"] = np.full(2, 5.0)
    del torch_style["0.running_mean"]
    assert model.load_state_dict(torch_style) == ([], [])
    assert (shared.running_mean == 5.0).all()


def test_replacing_a_child_keeps_its_place():
    model = nn.Sequential(nn.Linear(3, 3), nn.ReLU(), nn.Linear(3, 1))
    setattr(model, "0", nn.Linear(3, 3, bias=False))  # used to move it after the last
    assert [type(m).__name__ for m in model] == ["Linear", "ReLU", "Linear"]
    assert model(np.ones((2, 3))).shape == (2, 1)


# -- ModuleList ------------------------------------------------------------------------------------
def test_module_list_edits_like_a_list_and_renumbers():
    a, b, c, d = nn.Linear(1, 1), nn.ReLU(), nn.Tanh(), nn.Sigmoid()
    ml = nn.ModuleList([a])
    assert ml.extend([b]) is ml and list(ml) == [a, b]
    ml.insert(0, c)
    ml.insert(-1, d)  # before the last, as list.insert
    assert list(ml) == [c, a, d, b]
    ml[1] = nn.Identity()
    ml[-1] = a
    assert [type(m).__name__ for m in ml] == ["Tanh", "Identity", "Sigmoid", "Linear"]
    assert list(ml.state_dict()) == ["3.weight", "3.bias"]
    del ml[0]
    assert list(ml.state_dict()) == ["2.weight", "2.bias"] and list(ml._modules) == ["0", "1",
                                                                                      "2"]
    both = ml + nn.ModuleList([b])
    assert isinstance(both, nn.ModuleList) and list(both) == [*ml, b] and len(ml) == 3
    ml += [c]
    assert list(ml)[-1] is c and len(ml) == 4


@pytest.mark.parametrize("edit, words", [
    (lambda ml: ml.extend([nn.ReLU(), "relu"]), "ModuleList.extend expects a Module, found str "
                                                "at position 1"),
    (lambda ml: ml.extend(nn.ReLU()), "extend expects an iterable of Modules, found ReLU"),
    (lambda ml: ml.insert(0, 3), r"ModuleList.insert expects a Module, found int"),
    (lambda ml: ml.__setitem__(0, "x"), r"expects a Module, found str"),
    (lambda ml: ml.__setitem__("0", nn.ReLU()), "integer index, found str"),
])
def test_module_list_edits_refuse_non_modules_and_change_nothing(edit, words):
    ml = nn.ModuleList([nn.Linear(1, 1)])
    with pytest.raises(ConfigError, match=words):
        edit(ml)
    assert len(ml) == 1
    with pytest.raises(IndexError, match="index 5 is out of range for 1 layers"):
        ml[5] = nn.ReLU()


# -- Sequential(OrderedDict) -------------------------------------------------------------------
def _named() -> nn.Sequential:
    return nn.Sequential(OrderedDict([("fc", nn.Linear(3, 4)), ("act", nn.ReLU()),
                                      ("head", nn.Linear(4, 1))]))


def test_sequential_from_an_ordered_dict_names_its_layers(rng):
    model = _named()
    assert list(model.state_dict()) == ["fc.weight", "fc.bias", "head.weight", "head.bias"]
    assert model.fc is model[0] and model.get_submodule("head") is model[2]
    x = rng.standard_normal((2, 3)).astype(np.float32)
    want = model.head(model.fc(x).relu())
    np.testing.assert_allclose(model(x).data, want.data, rtol=1e-6)
    assert list(model[1:].state_dict()) == ["head.weight", "head.bias"]  # names kept, as torch
    assert "(fc): Linear" in repr(model)


def test_a_named_sequential_saves_and_loads_with_its_names(tmp_path, rng):
    model = _named()
    assert model.get_config()["names"] == ["fc", "act", "head"]
    assert "names" not in nn.Sequential(nn.Linear(1, 1)).get_config()  # plain files as before
    nf.save(model, tmp_path / "m.nnf")
    loaded = nf.load(tmp_path / "m.nnf")
    assert list(loaded.state_dict()) == list(model.state_dict())
    x = rng.standard_normal((2, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded(x).data, model(x).data)


@pytest.mark.parametrize("make, words", [
    (lambda: nn.Sequential(OrderedDict([("a.b", nn.ReLU())])), "without '.', found 'a.b'"),
    (lambda: nn.Sequential({"forward": nn.ReLU()}), "'forward' would hide the attribute"),
    (lambda: nn.Sequential({"a": "relu"}), "Sequential expects a Module, found str for name 'a'"),
    (lambda: nn.Sequential.from_config({"layers": [], "names": ["a"]}),
     r"'names' must be a list of 0 layer names"),
])
def test_bad_sequential_names_are_config_errors(make, words):
    with pytest.raises(ConfigError, match=words):
        make()


def test_append_to_a_named_sequential_refuses_a_taken_name():
    model = nn.Sequential({"a": nn.ReLU(), "1": nn.ReLU()})
    with pytest.raises(ConfigError, match="would name the new layer '2'"):
        nn.Sequential({"a": nn.ReLU(), "2": nn.ReLU()}).append(nn.ReLU())
    assert len(model.append(nn.Tanh())) == 3


# -- children, get_submodule, recurse= ----------------------------------------------------------
def test_named_children_get_submodule_and_non_recursive_parameters():
    inner = nn.Sequential(nn.Linear(2, 2))
    model = nn.Sequential(nn.Linear(2, 2), inner)
    assert [n for n, _ in model.named_children()] == ["0", "1"]
    assert list(model.children()) == [model[0], inner]
    assert model.get_submodule("1.0") is inner[0] and model.get_submodule("") is model
    with pytest.raises(ConfigError, match=r"get_submodule\('1.3'\): Sequential at '1' has no "
                                          r"sub-module '3'; its sub-modules are \['0'\]"):
        model.get_submodule("1.3")
    assert model.parameters(recurse=False) == [] and list(model.named_parameters(
        recurse=False)) == []
    assert [n for n, _ in model[0].named_parameters(recurse=False)] == ["weight", "bias"]
    bn = nn.Sequential(nn.BatchNorm1d(2))
    assert bn.buffers(recurse=False) == [] and len(bn[0].buffers(recurse=False)) == 2


# -- Dropout(p=1) --------------------------------------------------------------------------------
def test_dropout_of_one_zeros_everything_in_training_and_nothing_in_eval():
    drop = nn.Dropout(1.0)
    x = nf.Tensor(np.ones((3, 4)), requires_grad=True)
    y = drop(x)
    y.sum().backward()
    assert not y.data.any() and np.isfinite(y.data).all() and not x.grad.any()
    assert drop.eval()(x) is x
