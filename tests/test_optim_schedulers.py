"""Learning-rate schedules: sequences against hand-computed values, state round trips."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nnforge import optim
from nnforge.errors import ConfigError, StateDictError
from nnforge.nn import Parameter


def make_opt(lr=0.1):
    return optim.SGD([Parameter(np.zeros(3, np.float32))], lr=lr)


def lrs(opt, sched, n):
    out = [opt.lr]
    for _ in range(n):
        sched.step()
        out.append(opt.lr)
    return out


def test_step_lr():
    opt = make_opt(0.1)
    got = lrs(opt, optim.StepLR(opt, step_size=3, gamma=0.5), 8)
    np.testing.assert_allclose(got, [0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025])


def test_cosine_annealing():
    opt = make_opt(0.1)
    got = lrs(opt, optim.CosineAnnealingLR(opt, T_max=4, eta_min=0.01), 4)
    # 0.01 + 0.09 * (1 + cos(pi t / 4)) / 2 for t = 0..4
    np.testing.assert_allclose(got, [0.1, 0.08681980515, 0.055, 0.02318019485, 0.01], rtol=1e-9)


def test_linear_warmup_alone():
    opt = make_opt(1.0)
    got = lrs(opt, optim.LinearWarmup(opt, warmup_steps=4, start_factor=0.2), 6)
    np.testing.assert_allclose(got, [0.2, 0.4, 0.6, 0.8, 1.0, 1.0, 1.0])


def test_linear_warmup_then_step_lr():
    opt = make_opt(1.0)
    after = optim.StepLR(opt, step_size=2, gamma=0.1)
    sched = optim.LinearWarmup(opt, warmup_steps=2, start_factor=0.5, after=after)
    np.testing.assert_allclose(lrs(opt, sched, 6), [0.5, 0.75, 1.0, 1.0, 0.1, 0.1, 0.01])
    assert after.last_epoch == 4


def test_scheduler_state_round_trip_continues_identically():
    def build(opt):
        return optim.LinearWarmup(opt, 3, 0.1, after=optim.CosineAnnealingLR(opt, T_max=10))

    opt = make_opt(0.3)
    sched = build(opt)
    full = lrs(opt, sched, 12)
    opt1 = make_opt(0.3)
    s1 = build(opt1)
    lrs(opt1, s1, 5)
    state = json.loads(json.dumps(s1.state_dict()))
    opt2 = make_opt(0.3)
    s2 = build(opt2)
    s2.load_state_dict(state)
    assert opt2.lr == full[5]
    assert lrs(opt2, s2, 7) == full[5:]
    with pytest.raises(StateDictError, match="expected the state of a LinearWarmup"):
        s2.load_state_dict(optim.StepLR(make_opt(), 2).state_dict())
    other = optim.LinearWarmup(make_opt(), 4)
    with pytest.raises(StateDictError, match="settings"):
        other.load_state_dict(optim.LinearWarmup(make_opt(), 5).state_dict())


PLATEAU_METRICS = [10, 9, 9.5, 9.2, 9.1, 8, 8.5, 8.5, 8.5, 8.5, 8.5, 8.5, 8.5]


def test_reduce_on_plateau_patience_and_cooldown():
    opt = make_opt(1.0)
    sched = optim.ReduceLROnPlateau(opt, factor=0.5, patience=2, threshold=0.1, cooldown=1)
    got = []
    for m in PLATEAU_METRICS:
        sched.step(m)
        got.append(opt.lr)
    # 9 is not 10% better than 10; the third bad epoch in a row reduces; one cooldown epoch
    assert got == [1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5, 0.25, 0.25, 0.25, 0.25, 0.125]
    assert sched.best == 8


def test_reduce_on_plateau_min_lr_and_max_mode():
    opt = make_opt(1.0)
    sched = optim.ReduceLROnPlateau(opt, factor=0.5, patience=2, threshold=0.1, cooldown=1,
                                    min_lr=0.3)
    for m in PLATEAU_METRICS:
        sched.step(m)
    assert opt.lr == 0.3
    opt = make_opt(1.0)
    sched = optim.ReduceLROnPlateau(opt, mode="max", factor=0.1, patience=0, threshold=0.5,
                                    threshold_mode="abs")
    got = []
    for m in [1.0, 1.4, 2.0, 2.0]:
        sched.step(m)
        got.append(opt.lr)
    np.testing.assert_allclose(got, [1.0, 0.1, 0.1, 0.01])


def test_reduce_on_plateau_state_round_trip():
    opt = make_opt(1.0)
    sched = optim.ReduceLROnPlateau(opt, factor=0.5, patience=2, threshold=0.1, cooldown=1)
    fresh = optim.ReduceLROnPlateau(make_opt(1.0))
    assert json.loads(json.dumps(fresh.state_dict()))["best"] is None
    for m in PLATEAU_METRICS[:8]:
        sched.step(m)
    state = json.loads(json.dumps(sched.state_dict()))
    opt2 = make_opt(opt.lr)
    again = optim.ReduceLROnPlateau(opt2)
    again.load_state_dict(state)
    assert again.patience == 2 and again.best == 8 and again.num_bad_epochs == 2
    for m in PLATEAU_METRICS[8:]:
        sched.step(m)
        again.step(m)
        assert opt2.lr == opt.lr
    with pytest.raises(StateDictError, match="ReduceLROnPlateau"):
        again.load_state_dict(optim.StepLR(make_opt(), 2).state_dict())


@pytest.mark.parametrize("make,match", [
    (lambda o: optim.StepLR(o, step_size=0), "step_size"),
    (lambda o: optim.StepLR(o, step_size=2.5), "step_size"),
    (lambda o: optim.CosineAnnealingLR(o, T_max=0), "T_max"),
    (lambda o: optim.CosineAnnealingLR(o, T_max=5, eta_min=-1), "eta_min"),
    (lambda o: optim.LinearWarmup(o, warmup_steps=0), "warmup_steps"),
    (lambda o: optim.LinearWarmup(o, 3, start_factor=1.5), "start_factor"),
    (lambda o: optim.LinearWarmup(o, 3, after=optim.StepLR(make_opt(), 2)), "same optimizer"),
    (lambda o: optim.ReduceLROnPlateau(o, mode="lowest"), "mode"),
    (lambda o: optim.ReduceLROnPlateau(o, factor=1.0), "factor"),
    (lambda o: optim.ReduceLROnPlateau(o, patience=-1), "patience"),
    (lambda o: optim.StepLR(object(), 2), "Optimizer"),
])
def test_bad_scheduler_arguments(make, match):
    with pytest.raises(ConfigError, match=match):
        make(make_opt())
