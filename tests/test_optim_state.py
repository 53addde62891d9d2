"""Optimizer state dicts (bit-identical resume, validation) and building optimizers by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nnforge import optim
from nnforge.errors import ConfigError, ShapeError, StateDictError
from nnforge.nn import Parameter

SHAPES = [(200, 700), (9,), (30, 20), (3,)]
VARIANTS = [
    (optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    (optim.SGD, {"lr": 0.05}),
    (optim.Adam, {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01}),
    (optim.AdamW, {"lr": 0.01}),
    (optim.RMSprop, {"lr": 0.01, "centered": True, "momentum": 0.5}),
]


def make_params(seed=0):
    rng = np.random.default_rng(seed)
    return [Parameter(rng.normal(size=s).astype(np.float32)) for s in SHAPES]


def set_grads(params, t):
    for i, p in enumerate(params):
        # a gradient that depends on the parameters, so any divergence would grow
        p.grad = (np.sin(p.data * (i + 1) + t) + 0.1 * p.data).astype(np.float32)
    if t % 3 == 0:
        params[1].grad = None  # a skipped parameter makes the step counts differ


def run(opt, params, start, stop):
    for t in range(start, stop):
        set_grads(params, t)
        opt.step()


@pytest.mark.parametrize("cls,kwargs", VARIANTS)
def test_resume_from_state_dict_is_bit_identical(cls, kwargs):
    straight = make_params()
    opt = cls(straight, **kwargs)
    run(opt, straight, 0, 20)

    first = make_params()
    opt1 = cls(first, **kwargs)
    run(opt1, first, 0, 10)
    saved = opt1.state_dict()
    weights = [p.data.copy() for p in first]
    # a JSON round trip of the config, as a checkpoint file would do
    saved = {"config": json.loads(json.dumps(saved["config"])),
             "arrays": {k: v.copy() for k, v in saved["arrays"].items()}}
    assert all(isinstance(k, str) and k.startswith("state.") for k in saved["arrays"])

    resumed = [Parameter(w) for w in weights]
    opt2 = cls(resumed, **{k: v for k, v in kwargs.items() if k != "lr"})  # lr comes back
    opt2.load_state_dict(saved)
    assert opt2.lr == kwargs["lr"]
    assert opt2.steps == opt1.steps
    run(opt2, resumed, 10, 20)
    for a, b in zip(straight, resumed):
        np.testing.assert_array_equal(a.data, b.data)


def test_state_dict_keys_and_values():
    params = make_params()
    opt = optim.Adam(params, lr=0.01)
    run(opt, params, 0, 2)
    sd = opt.state_dict()
    assert sorted(sd["arrays"]) == sorted(f"state.{i}.{n}" for i in range(4)
                                          for n in ("grad_sum", "sq_grad_sum"))
    assert sd["arrays"]["state.0.grad_sum"].shape == SHAPES[0]
    assert sd["config"]["name"] == "adam"
    assert sd["config"]["steps"] == [2, 1, 2, 2]
    # the saved arrays are copies, not views that later steps would change
    before = sd["arrays"]["state.0.grad_sum"].copy()
    run(opt, params, 2, 3)
    np.testing.assert_array_equal(sd["arrays"]["state.0.grad_sum"], before)


def test_loading_a_state_with_other_hyperparameters_switches_state_buffers():
    params = make_params()
    src = optim.Adam(params, lr=0.01, amsgrad=True)
    run(src, params, 0, 3)
    dst = optim.Adam(make_params(), lr=0.5)
    dst.load_state_dict(src.state_dict())
    assert dst.amsgrad and dst.lr == 0.01
    np.testing.assert_array_equal(dst.state_view("max_sq_grad_sum", 0),
                                  src.state_view("max_sq_grad_sum", 0))


def test_load_errors_name_the_problem_and_leave_the_optimizer_unchanged():
    params = make_params()
    opt = optim.Adam(params, lr=0.01)
    run(opt, params, 0, 2)
    good = opt.state_dict()

    other = optim.Adam(make_params(), lr=0.3)
    with pytest.raises(StateDictError, match="for 3 parameters, this optimizer has 4"):
        other.load_state_dict(optim.Adam(make_params()[:3]).state_dict())
    wrong_shape = make_params()
    wrong_shape[2] = Parameter(np.zeros((20, 30), np.float32))
    with pytest.raises(ShapeError, match=r"parameter 2 has shape \(20, 30\).*\(30, 20\)"):
        other.load_state_dict(optim.Adam(wrong_shape).state_dict())
    with pytest.raises(StateDictError, match="'adam' optimizer, found 'sgd'"):
        other.load_state_dict(optim.SGD(make_params(), momentum=0.9).state_dict())
    missing = {"config": good["config"], "arrays": dict(good["arrays"])}
    del missing["arrays"]["state.1.grad_sum"]
    with pytest.raises(StateDictError, match=r"missing \['state.1.grad_sum'\]"):
        other.load_state_dict(missing)
    bad_array = {"config": good["config"], "arrays": dict(good["arrays"])}
    bad_array["arrays"]["state.0.sq_grad_sum"] = np.zeros(3, np.float32)
    with pytest.raises(ShapeError, match="state.0.sq_grad_sum"):
        other.load_state_dict(bad_array)
    bad_hyper = json.loads(json.dumps(good["config"]))
    bad_hyper["hyperparameters"]["betas"] = [1.5, 0.9]
    with pytest.raises(StateDictError, match="beta1"):
        other.load_state_dict({"config": bad_hyper, "arrays": good["arrays"]})
    with pytest.raises(StateDictError, match="expected an optimizer state"):
        other.load_state_dict({"weights": 1})
    # nothing of the failed loads stuck
    assert other.lr == 0.3 and other.betas == (0.9, 0.999) and other.steps == [0] * 4
    assert not other.state_view("grad_sum", 0).any()


def test_build_optimizer_by_name():
    ps = make_params()
    for name, cls in [("sgd", optim.SGD), ("Adam", optim.Adam), ("ADAMW", optim.AdamW),
                      ("rmsprop", optim.RMSprop)]:
        assert type(optim.build_optimizer(name, ps, lr=0.1)) is cls
    opt = optim.build_optimizer("adam", ps, lr=0.1, betas=[0.5, 0.6])  # JSON gives lists
    assert opt.betas == (0.5, 0.6)
    with pytest.raises(ConfigError, match=r"optimizer name in \['adam', 'adamw', 'rmsprop', "
                                          r"'sgd'\], found 'adagrad'"):
        optim.build_optimizer("adagrad", ps)
    with pytest.raises(ConfigError, match=r"unknown argument\(s\) \['betas'\].*'sgd'"):
        optim.build_optimizer("sgd", ps, betas=(0.9, 0.99))
    with pytest.raises(ConfigError, match="lr"):
        optim.build_optimizer("sgd", ps, lr=-1)


def test_optimizer_from_config_round_trip():
    ps = make_params()
    opt = optim.RMSprop(ps, lr=0.02, alpha=0.9, centered=True, momentum=0.3)
    config = json.loads(json.dumps(opt.get_config()))
    again = optim.optimizer_from_config(make_params(), config)
    assert type(again) is optim.RMSprop and again.get_config() == opt.get_config()
    with pytest.raises(ConfigError, match="'name'"):
        optim.optimizer_from_config(ps, {"lr": 0.1})


def test_column_major_parameters_keep_their_layout_and_match_row_major_ones():
    # nn.Linear stores its weight column-major; the flat buffer keeps that layout, and the
    # update, the state views and the saved state are the same as for a row-major copy
    rng = np.random.default_rng(0)
    w = rng.standard_normal((5, 7)).astype(np.float32)
    a, b = Parameter(np.asfortranarray(w)), Parameter(w.copy())
    opt_a, opt_b = optim.Adam([a], lr=0.1), optim.Adam([b], lr=0.1)
    for step in range(3):
        g = rng.standard_normal((5, 7)).astype(np.float32)
        a.grad, b.grad = np.asfortranarray(g), g.copy()
        if step == 1:
            a.grad = g.copy()  # a row-major gradient for a column-major parameter works too
        opt_a.step()
        opt_b.step()
        assert a.data.flags.f_contiguous and not a.data.flags.c_contiguous
        np.testing.assert_array_equal(a.data, b.data)
    sa, sb = opt_a.state_dict(), opt_b.state_dict()
    for key in ("state.0.grad_sum", "state.0.sq_grad_sum"):
        np.testing.assert_array_equal(sa["arrays"][key], sb["arrays"][key])
    opt_c = optim.Adam([Parameter(np.asfortranarray(w))], lr=0.1)
    opt_c.load_state_dict(sa)
    np.testing.assert_array_equal(opt_c.state_dict()["arrays"]["state.0.grad_sum"],
                                  sb["arrays"]["state.0.grad_sum"])


@pytest.mark.parametrize("grouped", [False, True])
def test_non_float_state_arrays_and_bad_configs_are_refused_before_any_change(grouped):
    # bool, int or object arrays used to be cast into the state silently (an object array
    # of strings failed halfway, after earlier arrays had been copied)
    def build(params, lr):
        if grouped:
            return optim.Adam([{"params": params[:2]}, {"params": params[2:]}], lr=lr)
        return optim.Adam(params, lr=lr)

    params = make_params()
    src = build(params, 0.01)
    run(src, params, 0, 2)
    good = src.state_dict()
    dst = build(make_params(), 0.3)
    prefix = "group.1." if grouped else ""
    last = f"{prefix}state.{1 if grouped else 3}.sq_grad_sum"
    for dtype in (bool, np.int64, object, np.complex64):
        arrays = {**good["arrays"], last: good["arrays"][last].astype(dtype)}
        with pytest.raises(StateDictError, match=f"{last[len(prefix):]}' has dtype"):
            dst.load_state_dict({"config": good["config"], "arrays": arrays})
    config = json.loads(json.dumps(good["config"]))
    config["format"] = 99
    with pytest.raises(StateDictError, match="state format 1, found 99"):
        dst.load_state_dict({"config": config, "arrays": good["arrays"]})
    if not grouped:
        for key, value in (("steps", [True] * 4), ("param_shapes", [None] * 4)):
            config = {**good["config"], key: value}
            with pytest.raises(StateDictError):
                dst.load_state_dict({"config": config, "arrays": good["arrays"]})
    assert dst.lr == 0.3 and dst.steps == [0] * 4
    assert not any(dst.state_view("grad_sum", i).any() for i in range(4))
    # float state of another width is cast, as PyTorch does
    arrays = {k: v.astype(np.float64) for k, v in good["arrays"].items()}
    dst.load_state_dict({"config": good["config"], "arrays": arrays})
    np.testing.assert_array_equal(dst.state_view("grad_sum", 0), src.state_view("grad_sum", 0))


def test_mixed_dtypes_name_the_odd_parameter():
    """A stray float64 Parameter in a float32 model: the error says which one and the fix."""
    from nnforge import nn  # noqa: PLC0415
    from nnforge.errors import DTypeError  # noqa: PLC0415

    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 1))
    model.scale = Parameter(np.ones(4))  # NumPy's default float64
    with pytest.raises(DTypeError, match=r"\(float32, that of most\), found parameter \d+ "
                                         r"\(4,\) is float64: convert with model.to"):
        optim.Adam(model.parameters())
