"""Learning-rate schedules: sequences against hand-computed values and values computed once
with torch 2.13's schedulers (same arguments), state round trips, compounding."""

from __future__ import annotations

import json

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn, optim
from nnforge.errors import ConfigError, StateDictError
from nnforge.nn import Parameter
from nnforge.train import LRScheduler as LRSchedulerCallback
from nnforge.train import ModelCheckpoint


def make_opt(lr=0.1):
    return optim.SGD([Parameter(np.zeros(3, np.float32))], lr=lr)


def make_grouped(lrs=(0.1, 0.01)):
    """One param group per lr; the optimizer's own lr is the first group's."""
    return optim.SGD([{"params": [Parameter(np.zeros(2, np.float32))], "lr": lr} for lr in lrs],
                     lr=lrs[0])


def group_lrs(opt):
    return [g["lr"] for g in opt.param_groups]


def trajectory(opt, sched, n, metrics=None):
    """Every group's lr after building, then after each of n steps."""
    out = [group_lrs(opt)]
    for i in range(n):
        sched.step() if metrics is None else sched.step(metrics[i])
        out.append(group_lrs(opt))
    return out


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
    (lambda o: optim.LinearWarmup(o, warmup_steps=-1), "warmup_steps"),
    (lambda o: optim.CosineAnnealingLR(o, T_max=True), "T_max"),
    (lambda o: optim.StepLR(o, 2, gamma=float("nan")), "gamma"),
    (lambda o: optim.ReduceLROnPlateau(o, min_lr=[0.1, 0.2]), "one per param group"),
    (lambda o: optim.ReduceLROnPlateau(o, min_lr=[-0.1]), r"min_lr\[0\]"),
    (lambda o: optim.ReduceLROnPlateau(o, threshold_mode="relative"), "threshold_mode"),
    (lambda o: optim.ReduceLROnPlateau(o, eps=-1e-8), "eps"),
    (lambda o: optim.ReduceLROnPlateau(o).step("low"), "metric"),
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


def test_numpy_integer_counts_are_accepted():
    opt = make_opt(1.0)
    sched = optim.CosineAnnealingLR(opt, T_max=np.int64(4))
    assert sched.T_max == 4 and type(sched.T_max) is int
    assert optim.StepLR(opt, np.int32(2)).get_config()["step_size"] == 2


# -- param groups: each group follows its own trajectory, as in torch ------------------------

def test_cosine_eta_min_bounds_each_group_like_torch():
    opt = make_grouped()
    got = trajectory(opt, optim.CosineAnnealingLR(opt, T_max=4, eta_min=0.005), 6)
    # torch: CosineAnnealingLR(T_max=4, eta_min=0.005) on groups with lr 0.1 and 0.01
    want = [[0.1, 0.01], [0.086087572106361, 0.00926776695296637], [0.0525, 0.0075],
            [0.018912427893638995, 0.005732233047033631], [0.005, 0.005],
            [0.01891242789363899, 0.005732233047033631], [0.0525, 0.0075]]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # the optimizer's own lr is scheduled as one more group
    assert opt.lr == got[-1][0]


PLATEAU_BAD = [1.0, 1.0, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]


@pytest.mark.parametrize("kwargs,want", [
    # torch: ReduceLROnPlateau(factor=0.5, patience=0, **kwargs) on groups 0.1 and 0.01
    ({"min_lr": 0.004},
     [[0.1, 0.01], [0.1, 0.01], [0.05, 0.005], [0.05, 0.005], [0.025, 0.004], [0.0125, 0.004],
      [0.00625, 0.004], [0.004, 0.004], [0.004, 0.004]]),
    ({"cooldown": 1, "min_lr": [0.02, 0.001]},
     [[0.1, 0.01], [0.1, 0.01], [0.05, 0.005], [0.05, 0.005], [0.025, 0.0025], [0.025, 0.0025],
      [0.02, 0.00125], [0.02, 0.00125], [0.02, 0.001]]),
    ({"eps": 0.003},  # group 1's cut 0.005 -> 0.0025 is below eps: ignored
     [[0.1, 0.01], [0.1, 0.01], [0.05, 0.005], [0.05, 0.005], [0.025, 0.005], [0.0125, 0.005],
      [0.00625, 0.005], [0.003125, 0.005], [0.003125, 0.005]]),
])
def test_reduce_on_plateau_cuts_each_group_on_its_own_like_torch(kwargs, want):
    opt = make_grouped()
    sched = optim.ReduceLROnPlateau(opt, factor=0.5, patience=0, **kwargs)
    got = trajectory(opt, sched, len(PLATEAU_BAD), PLATEAU_BAD)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)
    assert sched.get_last_lr() == got[-1]
    state = json.loads(json.dumps(sched.state_dict()))
    again = optim.ReduceLROnPlateau(opt)
    again.load_state_dict(state)
    assert again.min_lrs == sched.min_lrs


@pytest.mark.parametrize("mode_kwargs,want", [
    ({"threshold_mode": "abs"}, [[0.1, 0.01], [0.1, 0.01], [0.05, 0.005], [0.05, 0.005],
                                 [0.025, 0.0025], [0.025, 0.0025], [0.0125, 0.00125]]),
    ({"threshold_mode": "rel"}, [[0.1, 0.01], [0.1, 0.01], [0.05, 0.005], [0.05, 0.005],
                                 [0.025, 0.0025], [0.0125, 0.00125], [0.00625, 0.000625]]),
])
def test_reduce_on_plateau_max_mode_thresholds_like_torch(mode_kwargs, want):
    opt = make_grouped()
    sched = optim.ReduceLROnPlateau(opt, mode="max", factor=0.5, patience=0, threshold=0.1,
                                    **mode_kwargs)
    got = trajectory(opt, sched, 6, [1.0, 1.05, 1.2, 1.2, 1.31, 1.3])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)


# -- composition: warmup then decay, as torch's SequentialLR ---------------------------------

# torch: SequentialLR([LinearLR(start_factor=0.25, total_iters=3), after], milestones=[3])
SEQ_COSINE = [[0.025, 0.0025], [0.05, 0.005], [0.075, 0.0075], [0.1, 0.01],
              [0.09064183272437243, 0.00923606797749979],
              [0.06614183272437242, 0.00723606797749979],
              [0.03585816727562757, 0.00476393202250021],
              [0.011358167275627579, 0.0027639320225002107],
              [0.002, 0.002],
              [0.011358167275627575, 0.0027639320225002102],
              [0.035858167275627593, 0.004763932022500211]]
SEQ_STEP = [[0.025, 0.0025], [0.05, 0.005], [0.075, 0.0075], [0.1, 0.01], [0.1, 0.01],
            [0.05, 0.005], [0.05, 0.005], [0.025, 0.0025], [0.025, 0.0025]]


def warmup_then(opt, name):
    after = (optim.CosineAnnealingLR(opt, T_max=5, eta_min=0.002) if name == "cosine"
             else optim.StepLR(opt, step_size=2, gamma=0.5))
    return optim.LinearWarmup(opt, warmup_steps=3, start_factor=0.25, after=after)


@pytest.mark.parametrize("name,want", [("cosine", SEQ_COSINE), ("step", SEQ_STEP)])
def test_warmup_then_decay_matches_torch_sequential_lr_per_group(name, want):
    opt = make_grouped()
    got = trajectory(opt, warmup_then(opt, name), len(want) - 1)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["cosine", "step"])
@pytest.mark.parametrize("at", [0, 2, 3, 5])
def test_warmup_then_decay_resumes_identically_from_its_state(name, at):
    opt = make_grouped()
    sched = warmup_then(opt, name)
    full = trajectory(opt, sched, 9)
    opt1 = make_grouped()
    s1 = warmup_then(opt1, name)
    trajectory(opt1, s1, at)
    state = json.loads(json.dumps(s1.state_dict()))
    opt_state = opt1.state_dict()
    # the schedule's state alone, on a fresh optimizer
    opt2 = make_grouped()
    s2 = warmup_then(opt2, name)
    s2.load_state_dict(state)
    assert trajectory(opt2, s2, 9 - at) == full[at:]
    # with the optimizer's state loaded after the schedule was built, or before (torch's
    # order, and a checkpoint loaded before the schedule is built)
    for opt_first in (False, True):
        opt3 = make_grouped()
        if opt_first:
            opt3.load_state_dict(opt_state)
        s3 = warmup_then(opt3, name)
        if not opt_first:
            opt3.load_state_dict(opt_state)
        s3.load_state_dict(state)
        assert s3.get_last_lr() == full[at]
        assert trajectory(opt3, s3, 9 - at) == full[at:], opt_first


def test_zero_warmup_steps_means_no_warmup():
    opt = make_grouped()
    sched = optim.LinearWarmup(opt, 0, after=optim.CosineAnnealingLR(opt, T_max=4))
    # torch: SequentialLR([LinearLR(...), CosineAnnealingLR(T_max=4)], milestones=[0])
    want = [[0.1, 0.01], [0.08535533905932738, 0.008535533905932738], [0.05, 0.005],
            [0.014644660940672627, 0.0014644660940672626], [0.0, 0.0]]
    np.testing.assert_allclose(trajectory(opt, sched, 4), want, rtol=0, atol=1e-12)
    opt = make_opt(0.5)
    assert lrs(opt, optim.LinearWarmup(opt, 0), 2) == [0.5, 0.5, 0.5]


def test_cosine_past_t_max_rises_again_like_torch():
    opt = make_opt(1.0)
    # torch: CosineAnnealingLR(T_max=3) stepped 9 times, past T_max
    want = [1.0, 0.75, 0.25, 0.0, 0.25, 0.75, 1.0, 0.75, 0.25, 0.0]
    np.testing.assert_allclose(lrs(opt, optim.CosineAnnealingLR(opt, T_max=3), 9), want,
                               rtol=0, atol=1e-12)


def test_the_after_schedule_is_stepped_only_through_its_warmup():
    opt = make_opt()
    after = optim.StepLR(opt, 2)
    optim.LinearWarmup(opt, 3, after=after)
    with pytest.raises(ConfigError, match="step only that one"):
        after.step()
    with pytest.raises(ConfigError, match="already follows another LinearWarmup"):
        optim.LinearWarmup(opt, 3, after=after)


# -- compounding: schedules on one optimizer multiply, as torch's chainable ones do ----------

def test_warmup_per_batch_and_plateau_per_epoch_compound_like_torch():
    opt = make_grouped()
    warmup = optim.LinearWarmup(opt, 4, start_factor=0.25)
    plateau = optim.ReduceLROnPlateau(opt, factor=0.5, patience=0)
    got = []
    for _ in range(4):  # epochs of two batches; the metric never improves
        warmup.step()
        warmup.step()
        plateau.step(1.0)
        got.append(group_lrs(opt))
    # torch: LinearLR(start_factor=0.25, total_iters=4) + ReduceLROnPlateau(factor=0.5,
    # patience=0); each cut is kept by the warmup's later steps
    want = [[0.0625, 0.00625], [0.05, 0.005], [0.025, 0.0025], [0.0125, 0.00125]]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-15)


def test_two_schedules_stepped_together_multiply_like_torch_chained_scheduler():
    opt = make_grouped()
    s1, s2 = optim.StepLR(opt, step_size=2, gamma=0.5), optim.CosineAnnealingLR(opt, T_max=4)
    got = [group_lrs(opt)]
    for _ in range(4):
        s1.step()
        s2.step()
        got.append(group_lrs(opt))
    # torch: ChainedScheduler([StepLR(step_size=2, gamma=0.5), CosineAnnealingLR(T_max=4)])
    want = [[0.1, 0.01], [0.08535533905932738, 0.008535533905932738], [0.025, 0.0025],
            [0.0073223304703363135, 0.0007322330470336313], [0.0, 0.0]]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_a_hand_set_group_lr_is_kept_and_scaled_by_later_steps():
    opt = make_grouped()
    sched = optim.StepLR(opt, step_size=1, gamma=0.5)
    opt.param_groups[1]["lr"] = 0.04
    sched.step()
    assert group_lrs(opt) == [0.05, 0.02]


def test_compounding_never_makes_a_negative_lr():
    # a plateau cut below the cosine's eta_min, then the cosine rising past T_max: torch's
    # recursive step gives -0.44 at the fourth epoch; nnforge stops at 0
    opt = make_opt(1.0)
    cosine = optim.CosineAnnealingLR(opt, T_max=2, eta_min=0.5)
    plateau = optim.ReduceLROnPlateau(opt, factor=0.1, patience=0)
    got = []
    for _ in range(6):
        cosine.step()
        plateau.step(1.0)
        got.append(opt.lr)
    np.testing.assert_allclose(got, [0.75, 0.05, 0.03, 0.0, 0.025, 0.05], rtol=0, atol=1e-15)


# -- the Trainer's LRScheduler callback --------------------------------------------------------

def test_lr_scheduler_callback_refuses_what_cannot_work():
    opt = make_opt()
    with pytest.raises(ConfigError, match="per='epoch'"):
        LRSchedulerCallback(optim.ReduceLROnPlateau(opt), per="step")
    with pytest.raises(ConfigError, match="steps without a metric"):
        LRSchedulerCallback(optim.StepLR(opt, 2), monitor="val_loss")
    with pytest.raises(ConfigError, match="expected an nnforge.optim scheduler"):
        LRSchedulerCallback(opt)


def test_trainer_resume_with_warmup_per_step_and_plateau_per_epoch_is_bit_identical(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(64, 5)).astype(np.float32)
    y = rng.integers(0, 2, 64)

    def run(epochs, resume=None, checkpoint=False):
        nf.manual_seed(0)
        model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))
        weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
        biases = [p for n, p in model.named_parameters() if n.endswith("bias")]
        opt = optim.SGD([{"params": weights}, {"params": biases, "lr": 0.5}], lr=0.1)
        cbs = [LRSchedulerCallback(optim.LinearWarmup(opt, 6, 0.2), per="step"),
               # min_delta-like threshold so that it cuts in this short run
               LRSchedulerCallback(optim.ReduceLROnPlateau(opt, factor=0.5, patience=0,
                                                           threshold=0.5))]
        if checkpoint:
            cbs.append(ModelCheckpoint(tmp_path / "c{epoch}.nnf"))
        trainer = nf.Trainer(model, optimizer=opt, seed=0, verbose=0)
        trainer.fit(X, y, epochs=epochs, batch_size=16, validation_split=0.25, callbacks=cbs,
                    resume_from=resume)
        return trainer, opt

    straight, opt = run(5, checkpoint=True)
    lr = straight.history["lr"]  # the lr each epoch started with
    # 3 batches an epoch: warmup over epochs 1-2, then a cut after each epoch from the 2nd,
    # which the warmup's last steps and the ones after it keep
    np.testing.assert_allclose(lr, [0.02, 0.06, 0.05, 0.025, 0.0125], rtol=1e-12)
    for epoch in (1, 3):  # mid-warmup, and after it
        resumed, opt2 = run(5, resume=str(tmp_path / f"c{epoch}.nnf"))
        assert resumed.history["lr"] == lr
        assert group_lrs(opt2) == group_lrs(opt)
        for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
            np.testing.assert_array_equal(a.data, b.data)


def test_a_state_for_other_param_groups_is_refused():
    state = optim.StepLR(make_grouped(), 2).state_dict()
    sched = optim.StepLR(make_opt(), 2)
    with pytest.raises(StateDictError, match="base_lrs as a list of 1 lrs"):
        sched.load_state_dict(state)
    assert sched.base_lrs == [0.1]
