"""Param groups: PyTorch's [{"params": ..., "lr": ...}, ...] form, its lr scaling and its state."""

from __future__ import annotations

import json

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn, optim
from nnforge.errors import ConfigError, ShapeError, StateDictError
from nnforge.io import load_checkpoint, save_checkpoint
from nnforge.nn import Parameter

SHAPES = [(60, 70), (7,), (30, 20), (3,)]


def make_params(seed: int = 0) -> list[Parameter]:
    rng = np.random.default_rng(seed)
    return [Parameter(rng.normal(size=s).astype(np.float32)) for s in SHAPES]


def set_grads(params: list[Parameter], t: int) -> None:
    for i, p in enumerate(params):
        p.grad = (np.sin(p.data * (i + 1) + t) + 0.1 * p.data).astype(np.float32)


def grouped(cls, params, **kwargs):
    """Weights in one group, biases in another with their own lr and no weight decay."""
    return cls([{"params": params[0::2]},
                {"params": params[1::2], "lr": 0.05, "weight_decay": 0.0}], **kwargs)


@pytest.mark.parametrize("cls,kwargs", [(optim.Adam, {"lr": 0.01, "weight_decay": 0.01}),
                                        (optim.AdamW, {"lr": 0.01}),
                                        (optim.SGD, {"lr": 0.01, "momentum": 0.9,
                                                     "weight_decay": 0.01}),
                                        (optim.RMSprop, {"lr": 0.01, "weight_decay": 0.01})])
def test_each_group_updates_exactly_as_its_own_optimizer(cls, kwargs):
    ours, solo = make_params(), make_params()
    opt = grouped(cls, ours, **kwargs)
    alone = [cls(solo[0::2], **kwargs), cls(solo[1::2], **{**kwargs, "lr": 0.05,
                                                            "weight_decay": 0.0})]
    for t in range(12):
        set_grads(ours, t)
        set_grads(solo, t)
        opt.step()
        for o in alone:
            o.step()
    for a, b in zip(ours, solo):
        np.testing.assert_array_equal(a.data, b.data)
    assert opt.steps == [12] * 2 + [12] * 2
    assert [len(g["params"]) for g in opt.param_groups] == [2, 2]


def test_setting_lr_moves_every_group_in_proportion_and_schedulers_do_too():
    opt = grouped(optim.SGD, make_params(), lr=0.01)
    assert [g["lr"] for g in opt.param_groups] == [0.01, 0.05]
    opt.lr = 0.02
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.02, 0.1])
    sched = optim.StepLR(opt, step_size=1, gamma=0.5)
    sched.step()
    assert opt.lr == pytest.approx(0.01)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.05])


def test_schedulers_set_each_group_and_the_optimizer_lr_alongside():
    opt = grouped(optim.SGD, make_params(), lr=0.01)  # groups at 0.01 and 0.05
    sched = optim.CosineAnnealingLR(opt, T_max=2, eta_min=0.005)
    sched.step()
    # eta_min bounds each group, as in PyTorch (not the proportion 1 : 5): halfway down
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.0075, 0.0275])
    assert opt.lr == pytest.approx(0.0075) and sched.get_last_lr() == pytest.approx(
        [0.0075, 0.0275])
    opt.lr = 0.015  # by hand: every group moves in its current proportion
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.015, 0.055])
    plateau = optim.ReduceLROnPlateau(opt, factor=0.5, patience=0, min_lr=[0.01, 0.0])
    plateau.step(1.0)
    plateau.step(1.0)  # no better: each group is cut on its own, group 0 down to its min_lr
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.01, 0.0275])
    assert opt.lr == pytest.approx(0.0075)  # the optimizer's own: down to the smallest min_lr


def test_param_group_entries_can_be_changed_and_are_validated():
    params = make_params()
    opt = grouped(optim.SGD, params, lr=0.01)
    group = opt.param_groups[1]
    group["lr"] = 0.2  # the group's share of later opt.lr changes follows
    opt.lr = 0.02
    assert opt.param_groups[1]["lr"] == pytest.approx(0.4)
    group["momentum"] = 0.9  # switches a momentum buffer on for that group only
    set_grads(params, 0)
    opt.step()
    # opt.params lists group 0's parameters, then group 1's: params[1] is index 2
    assert opt.state_view("momentum_buffer", 2).shape == (7,)
    with pytest.raises(ConfigError, match="state name"):
        opt.state_view("momentum_buffer", 0)  # group 0 has no momentum
    with pytest.raises(ConfigError, match=r"index in \[0, 4\), found 4"):
        opt.state_view("momentum_buffer", 4)
    with pytest.raises(ConfigError, match="momentum"):
        group["momentum"] = -1.0
    assert group["momentum"] == 0.9
    with pytest.raises(ConfigError, match="unknown setting 'betas'"):
        group["betas"] = (0.9, 0.99)
    with pytest.raises(ConfigError, match="fixed"):
        group["params"] = []
    assert set(group) == {"params", "lr", "momentum", "dampening", "weight_decay", "nesterov"}


def test_an_optimizer_without_groups_shows_itself_as_one_group():
    params = make_params()
    opt = optim.Adam(params, lr=0.01)
    (group,) = opt.param_groups
    assert group["params"] == params and group["lr"] == 0.01
    group["lr"] = 0.5
    assert opt.lr == 0.5


@pytest.mark.parametrize("spec,match", [
    ([{"params": []}], "param group 0: expected at least one parameter"),
    ([{"lr": 0.1}], "param group 0 has no 'params'"),
    ([{"params": "x"}], "param group 0: expected Parameter"),
    ("mix", "a mix of both"),
    ("twice", "param group 1 repeats a parameter"),
    ([{"params": None, "momentun": 0.9}], "unknown setting"),
    ([{"params": None, "lr": -1.0}], "param group 0: expected lr"),
])
def test_bad_groups_raise_one_clear_error(spec, match):
    params = make_params()
    if spec == "mix":
        spec = [params[0], {"params": params[1:]}]
    elif spec == "twice":
        spec = [{"params": params[:2]}, {"params": params[1:]}]
    else:
        spec = [{**g, "params": params} if g.get("params", 0) is None else g for g in spec]
    with pytest.raises(ConfigError, match=match):
        optim.SGD(spec, lr=0.01)


def test_group_lr_needs_a_default_lr_above_zero():
    params = make_params()
    with pytest.raises(ConfigError, match="lr above 0"):
        optim.SGD([{"params": params[:2]}, {"params": params[2:], "lr": 0.1}], lr=0.0)


def test_groups_from_a_generator_of_dicts():
    params = make_params()
    opt = optim.SGD(({"params": [p]} for p in params), lr=0.1)
    assert len(opt.param_groups) == len(params)


def test_resume_from_state_dict_is_bit_identical_and_survives_json():
    straight, resumed = make_params(), make_params()
    a = grouped(optim.Adam, straight, lr=0.01)
    b = grouped(optim.Adam, resumed, lr=0.01)
    for t in range(6):
        set_grads(straight, t)
        set_grads(resumed, t)
        a.step()
        b.step()
    b.param_groups[1]["lr"] = 0.07
    a.param_groups[1]["lr"] = 0.07
    state = b.state_dict()
    state = {"config": json.loads(json.dumps(state["config"])), "arrays": state["arrays"]}
    fresh = grouped(optim.Adam, resumed, lr=0.5)  # other settings: the state brings its own
    fresh.load_state_dict(state)
    assert fresh.lr == 0.01 and [g["lr"] for g in fresh.param_groups] == [0.01, 0.07]
    for t in range(6, 12):
        set_grads(straight, t)
        set_grads(resumed, t)
        a.step()
        fresh.step()
    for x, y in zip(straight, resumed):
        np.testing.assert_array_equal(x.data, y.data)
    fresh.lr = 0.02  # the saved proportion came back too
    assert fresh.param_groups[1]["lr"] == pytest.approx(0.14)


def test_mismatched_states_are_refused_and_leave_the_optimizer_unchanged():
    params = make_params()
    opt = grouped(optim.Adam, params, lr=0.01)
    set_grads(params, 0)
    opt.step()
    before = opt.state_dict()
    plain = optim.Adam(make_params(), lr=0.01).state_dict()
    with pytest.raises(StateDictError, match="2 param groups, the state has one"):
        opt.load_state_dict(plain)
    with pytest.raises(StateDictError, match="one param group, the state has 2"):
        optim.Adam(make_params(), lr=0.01).load_state_dict(before)
    three = optim.Adam([{"params": [p]} for p in make_params()[:3]], lr=0.01).state_dict()
    with pytest.raises(StateDictError, match="2 param groups, the state has 3"):
        opt.load_state_dict(three)
    broken = {"config": before["config"],
              "arrays": {**before["arrays"], "group.1.state.0.grad_sum": np.zeros(3)}}
    with pytest.raises(ShapeError, match="shape"):
        opt.load_state_dict(broken)
    stray = {"config": before["config"], "arrays": {**before["arrays"], "group.7.x": np.zeros(1)}}
    with pytest.raises(StateDictError, match="unexpected"):
        opt.load_state_dict(stray)
    bad_lr = {"config": {**before["config"], "hyperparameters": {
        **before["config"]["hyperparameters"], "lr": -1}}, "arrays": before["arrays"]}
    with pytest.raises(StateDictError, match="lr"):
        opt.load_state_dict(bad_lr)
    after = opt.state_dict()
    assert after["config"] == before["config"]
    for k, v in before["arrays"].items():
        np.testing.assert_array_equal(after["arrays"][k], v)


def test_config_round_trip_rebuilds_the_groups():
    params = make_params()
    opt = grouped(optim.AdamW, params, lr=0.01)
    config = json.loads(json.dumps(opt.get_config()))
    assert config["param_groups"] == [{"count": 2}, {"count": 2, "lr": 0.05,
                                                     "weight_decay": 0.0}]
    again = optim.optimizer_from_config(params[0::2] + params[1::2], config)
    assert again.get_config() == config and "2 param groups" in repr(again)
    with pytest.raises(ConfigError, match="add up to 4, found 3"):
        optim.optimizer_from_config(params[:3], config)


def test_trainer_checkpoint_resume_with_groups_is_bit_identical(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(96, 6)).astype(np.float32)
    y = rng.integers(0, 3, 96)

    def setup():
        nf.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
        weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
        biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
        opt = optim.AdamW([{"params": weights}, {"params": biases, "weight_decay": 0.0}],
                          lr=0.01)
        return model, opt

    model, opt = setup()
    nf.Trainer(model, optimizer=opt, seed=0, verbose=0).fit(X, y, epochs=2, batch_size=16)
    save_checkpoint(tmp_path / "c.nnf", model, opt)
    nf.Trainer(model, optimizer=opt, seed=1, verbose=0).fit(X, y, epochs=1, batch_size=16)

    ckpt = load_checkpoint(tmp_path / "c.nnf")
    model2, opt2 = setup()
    model2.load_state_dict(ckpt.model.state_dict())
    opt2.load_state_dict(ckpt.optimizer_state)
    nf.Trainer(model2, optimizer=opt2, seed=1, verbose=0).fit(X, y, epochs=1, batch_size=16)
    for (n, a), (_, b) in zip(model.named_parameters(), model2.named_parameters()):
        np.testing.assert_array_equal(a.data, b.data, err_msg=n)
