"""Regressions for defects a differential fuzzer against torch.optim found. Expected numbers
were computed once with torch 2.13 (float64, same arguments); torch is not imported here."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nnforge import optim
from nnforge.errors import ConfigError, DTypeError, StateDictError
from nnforge.nn import Parameter

G = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.75], [-0.5, 2.0, 1.0], [1.0, -0.5, 0.3],
     [0.2, 0.8, -1.2], [-1.1, 0.4, 0.6]]


def close(a, b, tol=1e-12):
    np.testing.assert_allclose(a, b, rtol=tol, atol=tol)


# -- D1: betas / alpha changed mid-run ---------------------------------------------------------
@pytest.mark.parametrize("how", ["group", "attribute"])
def test_adam_betas_changed_mid_run_update_like_torch(how):
    p = Parameter(np.zeros(1))
    opt = optim.Adam([p], lr=0.1)
    for t in range(11):
        if t == 10:
            if how == "group":
                opt.param_groups[0]["betas"] = (0.5, 0.999)
            else:
                opt.betas = (0.5, 0.999)
        before = p.data.copy()
        p.grad = np.ones(1)
        opt.step()
    close(p.data - before, [-0.08260641233161059])  # was -0.2129


@pytest.mark.parametrize("amsgrad, want", [
    (False, [0.23077908896695487, 1.8752145556441389, 2.4970774287407154]),
    (True, [0.2335113674187626, 1.8782676706650983, 2.4995077065449753])])
def test_adam_both_betas_changed_and_state_saved_in_between(amsgrad, want):
    p = Parameter(np.array([1.0, 2.0, 3.0]))
    opt = optim.Adam([p], lr=0.1, amsgrad=amsgrad)
    for t in range(12):
        if t == 6:
            opt.param_groups[0]["betas"] = (0.5, 0.9)
            # saved between the change and the next step: arrays match the saved betas
            q = Parameter(p.data.copy())
            other = optim.Adam([q], lr=0.1, amsgrad=amsgrad)
            other.load_state_dict(opt.state_dict())
            p, opt = q, other
        p.grad = np.array(G[t % 6])
        opt.step()
    close(p.data, want)


def test_adamw_beta1_cycled_every_step_like_torch():
    p = Parameter(np.array([1.0, 2.0, 3.0]))
    opt = optim.AdamW([p], lr=0.05, weight_decay=0.1)
    for t in range(12):
        opt.param_groups[0]["betas"] = (0.85 + 0.1 * (t % 3) / 2, 0.999)  # OneCycle-style
        p.grad = np.array(G[t % 6])
        opt.step()
    close(p.data, [0.45563012443024165, 1.9823084819541676, 2.5097862444916705])


def test_rmsprop_alpha_changed_mid_run_like_torch():
    p = Parameter(np.zeros(1))
    opt = optim.RMSprop([p], lr=0.01, alpha=0.99)
    for t in range(11):
        if t == 10:
            opt.param_groups[0]["alpha"] = 0.5
        before = p.data.copy()
        p.grad = np.ones(1)
        opt.step()
    close(p.data - before, [-0.013510935710812078])  # was -0.00588
    p = Parameter(np.array([1.0, 2.0, 3.0]))
    opt = optim.RMSprop([p], lr=0.01, alpha=0.9, centered=True, momentum=0.5)
    for t in range(12):
        if t == 6:
            opt.alpha = 0.5
        p.grad = np.array(G[t % 6])
        opt.step()
    close(p.data, [0.8103658867459743, 1.9425861077269988, 2.892470455389127])


# -- D2: schedules scale an lr moved by hand even where their own lr sits at the floor ---------
def test_step_lr_decays_a_hand_set_lr_from_a_zero_base():
    opt = optim.SGD([Parameter(np.zeros(1))], lr=0.0)
    sched = optim.StepLR(opt, 1, 0.5)
    opt.param_groups[0]["lr"] = 0.1
    for _ in range(3):
        sched.step()
    close(opt.lr, 0.0125)  # was stuck at 0.1


def test_step_lr_two_groups_one_raised_from_zero():
    opt = optim.SGD([{"params": [Parameter(np.zeros(1))], "lr": 0.1},
                     {"params": [Parameter(np.zeros(1))], "lr": 0.0}], lr=0.1)
    sched = optim.StepLR(opt, 2, 0.5)
    got = []
    for t in range(6):
        if t == 1:
            opt.param_groups[1]["lr"] = 0.2
        sched.step()
        got.append([g["lr"] for g in opt.param_groups])
    close(got, [[0.1, 0.0], [0.05, 0.1], [0.05, 0.1], [0.025, 0.05], [0.025, 0.05],
                [0.0125, 0.025]])


def test_cosine_with_base_at_eta_min_decays_a_hand_set_lr():
    opt = optim.SGD([Parameter(np.zeros(1))], lr=1e-3)
    sched = optim.CosineAnnealingLR(opt, T_max=10, eta_min=1e-3)
    opt.param_groups[0]["lr"] = 0.1
    for _ in range(5):
        sched.step()
    close(opt.lr, 0.0505)  # was stuck at 0.1
    opt = optim.SGD([Parameter(np.zeros(1))], lr=0.01)
    sched = optim.CosineAnnealingLR(opt, T_max=3, eta_min=0.01)
    opt.lr = 0.1
    got = []
    for _ in range(7):
        sched.step()
        got.append(opt.lr)
    close(got, [0.0775, 0.032500000000000015, 0.01, 0.01, 0.01, 0.01, 0.01])


def test_cosine_valley_adds_the_rise_to_a_hand_set_lr():
    opt = optim.SGD([Parameter(np.zeros(1))], lr=0.1)
    sched = optim.CosineAnnealingLR(opt, T_max=2, eta_min=0.01)
    got = []
    for t in range(7):
        if t == 2:
            opt.lr = 0.03
        sched.step()
        got.append(opt.lr)
    close(got, [0.055, 0.01, 0.075, 0.14, 0.075, 0.01, 0.055])


def test_cosine_and_plateau_with_base_at_eta_min():
    opt = optim.SGD([Parameter(np.zeros(1))], lr=1e-3)
    cos = optim.CosineAnnealingLR(opt, 10, eta_min=1e-3)
    plateau = optim.ReduceLROnPlateau(opt, patience=0, factor=0.5)
    for _ in range(4):
        cos.step()
        plateau.step(1.0)
    close(opt.lr, 0.00020344177642748915)


def test_linear_warmup_scales_a_hand_set_lr_like_torch_linear_lr():
    opt = optim.SGD([Parameter(np.zeros(1))], lr=0.1)
    sched = optim.LinearWarmup(opt, 4, start_factor=0.25)
    got = []
    for t in range(6):
        if t == 2:
            opt.lr = 0.5
        sched.step()
        got.append(opt.lr)
    close(got, [0.04375, 0.0625, 0.65, 0.8, 0.8, 0.8])


def test_scheduler_step_refuses_an_epoch_argument():
    opt = optim.SGD([Parameter(np.zeros(1))], lr=0.1)
    with pytest.raises(ConfigError, match="epoch"):
        optim.StepLR(opt, 1).step(3)


# -- D3: the subnormal flush never changes an update -------------------------------------------
@pytest.mark.parametrize("eps", [0.0, 1e-30])
def test_flush_keeps_a_subnormal_second_moment_that_eps_does_not_hide(eps):
    def run(flush_every: int) -> np.ndarray:
        p = Parameter(np.array([1.0, 2.0, 3.0], np.float32))
        opt = optim.Adam([p], lr=0.01, eps=eps)
        opt._flat.flush_every = flush_every
        for _ in range(70):
            p.grad = np.full(3, 3e-21, np.float32)  # g*g is subnormal in float32
            opt.step()
        return p.data

    flushed = run(64)
    np.testing.assert_array_equal(flushed, run(0))
    # torch in float64: [0.3, 1.3, 2.3] (1 - 70 lr); was 0.0669 at step 70
    np.testing.assert_allclose(flushed, [0.3, 1.3, 2.3], atol=1e-4)


def test_flush_keeps_a_subnormal_momentum_whose_update_reaches_the_weight():
    # weight 0: any update from the momentum shows, so it must stay
    p = Parameter(np.zeros(2, np.float32))
    opt = optim.SGD([p], lr=1.0, momentum=0.5)
    opt._flat.flush_every = 1
    p.grad = np.full(2, 1e-39, np.float32)
    opt.step()
    assert opt.state_view("momentum_buffer", 0)[0] != 0
    np.testing.assert_array_equal(p.data, np.full(2, -1e-39, np.float32))


# -- D4: momentum switched on mid-run starts from a copy of the gradient -----------------------
def test_sgd_momentum_switched_on_mid_run_copies_the_gradient_per_parameter():
    p, q = Parameter(np.array([1.0, 2.0, 3.0])), Parameter(np.array([0.5, -0.5]))
    opt = optim.SGD([p, q], lr=0.1, dampening=0.5, weight_decay=0.01)
    for t in range(8):
        if t == 3:
            opt.param_groups[0]["momentum"] = 0.9
        p.grad = np.array(G[t % 6])
        q.grad = None if t in (3, 4) else np.array(G[t % 6][:2])  # q's buffer stays fresh
        opt.step()
        if t == 3:
            close(p.data, [0.7464056960509999, 1.916962266902, 2.7335674632030003])
            close(q.data, [0.3487514495, -0.6236763995000001])
        if t == 4:  # q's buffer is still fresh: it survives a round trip
            state = json.loads(json.dumps(opt.state_dict()["config"]))
            assert state["fresh"] == [1]
            p2, q2 = Parameter(p.data.copy()), Parameter(q.data.copy())
            opt2 = optim.SGD([p2, q2], lr=0.1)
            opt2.load_state_dict({"config": state, "arrays": opt.state_dict()["arrays"]})
            p, q, opt = p2, q2, opt2
    close(p.data, [0.42342164393774484, 1.9480043970086596, 2.592303088471703])
    close(q.data, [0.5227049206985086, -0.6469322564264199])


def test_sgd_state_saved_before_fresh_existed_still_loads():
    p = Parameter(np.array([1.0, 2.0]))
    opt = optim.SGD([p], lr=0.1, momentum=0.9, dampening=0.5)
    state = opt.state_dict()
    del state["config"]["fresh"]  # a checkpoint from before: fresh means "no step yet"
    opt2 = optim.SGD([Parameter(np.array([1.0, 2.0]))], lr=0.1)
    opt2.load_state_dict(state)
    opt2.params[0].grad = np.array([1.0, -1.0])
    opt2.step()
    close(opt2.state_view("momentum_buffer", 0), [1.0, -1.0])  # copied, not damped
    with pytest.raises(StateDictError, match="fresh"):
        opt2.load_state_dict({**state, "config": {**state["config"], "fresh": [7]}})


# -- D5: user mistakes give nnforge errors -----------------------------------------------------
def params_with_grad():
    p = Parameter(np.array([1.0, 2.0, 3.0]))
    p.grad = np.array([3.0, 4.0, 12.0])
    return p


@pytest.mark.parametrize("norm_type", [None, "fro", True, [2.0]])
def test_clip_grad_norm_bad_norm_type(norm_type):
    with pytest.raises(ConfigError, match="norm_type"):
        optim.clip_grad_norm_([params_with_grad()], 1.0, norm_type=norm_type)


def test_clip_grad_norm_accepts_inf_strings_and_an_infinite_max_norm():
    p = params_with_grad()
    assert optim.clip_grad_norm_([p], float("inf")) == 13.0  # measures, does not clip
    np.testing.assert_array_equal(p.grad, [3.0, 4.0, 12.0])
    assert optim.clip_grad_norm_([p], 1.0, norm_type="inf") == 12.0
    close(p.grad, np.array([3.0, 4.0, 12.0]) / (12.0 + 1e-6), 1e-9)


@pytest.mark.parametrize("params", [None, [1.0, 2.0], 5])
def test_clip_refuses_what_is_not_parameters(params):
    with pytest.raises(ConfigError, match="Parameters/Tensors"):
        optim.clip_grad_norm_(params, 1.0)
    with pytest.raises(ConfigError, match="Parameters/Tensors"):
        optim.clip_grad_value_(params, 1.0)


def test_a_list_gradient_names_the_parameter():
    p, q = Parameter(np.zeros(2)), Parameter(np.zeros(3))
    opt = optim.Adam([p, q])
    p.grad = np.zeros(2)
    q.grad = [1.0, 2.0, 3.0]
    with pytest.raises(DTypeError, match="parameter 1 is a list"):
        opt.step()


def test_state_view_checks_the_index_without_groups():
    opt = optim.SGD([Parameter(np.zeros(2))], lr=0.1, momentum=0.9)
    with pytest.raises(ConfigError, match="index"):
        opt.state_view("momentum_buffer", 5)
    with pytest.raises(ConfigError, match="index"):
        opt.state_view("momentum_buffer", -1)


# -- D6: ReduceLROnPlateau with an infinite best ----------------------------------------------
@pytest.mark.parametrize("mode, metric", [("min", float("-inf")), ("max", float("inf"))])
def test_plateau_state_with_infinite_best_reloads(mode, metric):
    opt = optim.SGD([Parameter(np.zeros(1))], lr=0.1)
    sched = optim.ReduceLROnPlateau(opt, mode=mode)
    sched.step(metric)
    state = json.loads(json.dumps(sched.state_dict()))  # checkpoints write JSON with Infinity
    other = optim.ReduceLROnPlateau(opt, mode=mode)
    other.load_state_dict(state)
    assert other.best == metric
    with pytest.raises(StateDictError, match="best"):
        other.load_state_dict({**state, "best": float("nan")})
