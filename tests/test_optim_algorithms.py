"""Optimizers against straightforward float64 transcriptions of PyTorch's documented algorithms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nnforge import nn, optim
from nnforge.errors import ConfigError, DTypeError, ShapeError
from nnforge.nn import Parameter
from nnforge.optim import _flat
from nnforge.optim._flat import _Chooser

# one big parameter (several chunks, two workers), mid-sized and tiny ones (packed together)
SHAPES = [(300, 500), (7,), (40, 30), (1,), (5, 3)]


class Problem:
    """A smooth non-quadratic loss whose gradient depends on the parameters."""

    def __init__(self, shapes=SHAPES, seed=0):
        rng = np.random.default_rng(seed)
        self.init = [rng.normal(0, 1, s) for s in shapes]
        self.target = [rng.normal(0, 1, s) for s in shapes]
        self.scale = [rng.uniform(0.1, 3.0, s) for s in shapes]

    def grad(self, i, p):
        return self.scale[i] * (p - self.target[i]) + 0.3 * np.sin(3.0 * p)


# -- reference implementations: one parameter at a time, float64, as PyTorch documents them ----
def ref_sgd(p, g, st, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    if weight_decay:
        g = g + weight_decay * p
    if momentum:
        if "buf" not in st:
            st["buf"] = g.copy()
        else:
            st["buf"] = momentum * st["buf"] + (1 - dampening) * g
        g = g + momentum * st["buf"] if nesterov else st["buf"]
    return p - lr * g


def ref_adam(p, g, st, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
             decoupled=False):
    b1, b2 = betas
    st["step"] = st.get("step", 0) + 1
    t = st["step"]
    if decoupled:
        p = p * (1 - lr * weight_decay)
    elif weight_decay:
        g = g + weight_decay * p
    st["m"] = b1 * st.get("m", 0.0) + (1 - b1) * g
    st["v"] = b2 * st.get("v", 0.0) + (1 - b2) * g * g
    v = st["v"]
    if amsgrad:
        st["vmax"] = np.maximum(st.get("vmax", 0.0), v)
        v = st["vmax"]
    denom = np.sqrt(v) / math.sqrt(1 - b2 ** t) + eps
    return p - lr / (1 - b1 ** t) * st["m"] / denom


def ref_rmsprop(p, g, st, lr, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0,
                centered=False):
    if weight_decay:
        g = g + weight_decay * p
    st["sq"] = alpha * st.get("sq", 0.0) + (1 - alpha) * g * g
    if centered:
        st["ga"] = alpha * st.get("ga", 0.0) + (1 - alpha) * g
        avg = np.sqrt(st["sq"] - st["ga"] ** 2) + eps
    else:
        avg = np.sqrt(st["sq"]) + eps
    if momentum:
        st["buf"] = momentum * st.get("buf", 0.0) + g / avg
        return p - lr * st["buf"]
    return p - lr * g / avg


CASES = [
    (optim.SGD, ref_sgd, {"lr": 0.05}),
    (optim.SGD, ref_sgd, {"lr": 0.05, "momentum": 0.9}),
    (optim.SGD, ref_sgd, {"lr": 0.05, "momentum": 0.8, "dampening": 0.3, "weight_decay": 0.01}),
    (optim.SGD, ref_sgd, {"lr": 0.03, "momentum": 0.9, "nesterov": True, "weight_decay": 0.1}),
    (optim.Adam, ref_adam, {"lr": 0.01}),
    (optim.Adam, ref_adam, {"lr": 0.02, "betas": (0.8, 0.99), "eps": 1e-6,
                            "weight_decay": 0.05}),
    (optim.Adam, ref_adam, {"lr": 0.01, "amsgrad": True}),
    (optim.Adam, ref_adam, {"lr": 0.01, "betas": (0.0, 0.0)}),
    (optim.AdamW, ref_adam, {"lr": 0.01}),
    (optim.AdamW, ref_adam, {"lr": 0.01, "weight_decay": 0.3, "amsgrad": True}),
    (optim.RMSprop, ref_rmsprop, {"lr": 0.01}),
    (optim.RMSprop, ref_rmsprop, {"lr": 0.005, "alpha": 0.9, "centered": True}),
    (optim.RMSprop, ref_rmsprop, {"lr": 0.005, "momentum": 0.9, "weight_decay": 0.01}),
    (optim.RMSprop, ref_rmsprop, {"lr": 0.002, "momentum": 0.5, "centered": True,
                                  "weight_decay": 0.1, "eps": 1e-4}),
]


def _ref_kwargs(cls, kwargs):
    full = dict(kwargs)
    if cls is optim.AdamW:
        full.setdefault("weight_decay", 1e-2)
        full["decoupled"] = True
    return full


def run_pair(cls, ref, kwargs, dtype, steps=20, grad_mask=None, threads=None):
    """Run nnforge's optimizer and the reference side by side; return both trajectories."""
    prob = Problem()
    params = [Parameter(a.astype(dtype)) for a in prob.init]
    opt = cls(params, threads=threads, **kwargs)
    ref_p = [a.copy() for a in prob.init]
    ref_st = [{} for _ in ref_p]
    rk = _ref_kwargs(cls, kwargs)
    for t in range(steps):
        for i, p in enumerate(params):
            skip = grad_mask is not None and not grad_mask(t, i)
            p.grad = None if skip else prob.grad(i, p.data.astype(np.float64)).astype(dtype)
            if not skip:
                ref_p[i] = ref(ref_p[i], prob.grad(i, ref_p[i]), ref_st[i], **rk)
        opt.step()
    return [p.data for p in params], ref_p, opt


@pytest.mark.parametrize("cls,ref,kwargs", CASES)
def test_float64_trajectory_matches_reference(cls, ref, kwargs):
    ours, want, _ = run_pair(cls, ref, kwargs, np.float64)
    for a, b in zip(ours, want):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("cls,ref,kwargs", CASES)
def test_float32_trajectory_matches_reference(cls, ref, kwargs):
    # float32 rounding makes single elements drift where a gradient is near zero (Adam with
    # beta=0 is a sign update), so compare the error with the distance travelled
    ours, want, opt = run_pair(cls, ref, kwargs, np.float32)
    for a, b, init in zip(ours, want, Problem().init):
        assert a.dtype == np.float32
        err, moved = np.linalg.norm(a - b), np.linalg.norm(b - init)
        assert err <= 1e-5 * moved, (err, moved)
        assert np.abs(a - b).max() < 1e-3
    for name in opt._flat.states:
        assert opt._flat.states[name].dtype == np.float32


def test_parameters_moved(rng):
    """Guard against a trivially passing comparison: 20 steps really change the parameters."""
    ours, _, _ = run_pair(optim.Adam, ref_adam, {"lr": 0.01}, np.float64)
    for a, b in zip(ours, Problem().init):
        assert np.abs(a - b).max() > 0.01


@pytest.mark.parametrize("cls,ref,kwargs", [CASES[1], CASES[4], CASES[12]])
def test_params_without_grad_are_skipped(cls, ref, kwargs):
    # param 1 gets no grad on even steps, param 3 none at all: per-parameter step counts differ
    def mask(t, i):
        return not ((i == 1 and t % 2 == 0) or i == 3)

    ours, want, opt = run_pair(cls, ref, kwargs, np.float64, grad_mask=mask)
    for a, b in zip(ours, want):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(ours[3], Problem().init[3])
    assert opt.steps == [20, 10, 20, 0, 20]


def _subnormals(opt: optim.Optimizer) -> int:
    tiny = np.finfo(np.float32).tiny
    return sum(int(np.count_nonzero((a != 0) & (np.abs(a) < tiny)))
               for a in opt.state_dict()["arrays"].values())


@pytest.mark.parametrize("cls,kwargs", [(optim.Adam, {}), (optim.AdamW, {}),
                                        (optim.SGD, {"momentum": 0.9}),
                                        (optim.RMSprop, {"momentum": 0.9})])
def test_subnormal_state_is_flushed_and_weights_stay_bit_identical(cls, kwargs):
    # rows 0-4 of the weight stop getting gradients (dead units): their momentum decays by 0.9
    # a step and is subnormal after ~830 steps; a flush falls on step 1024
    rng = np.random.default_rng(0)
    shapes = [(48, 40), (48,), (3, 5)]
    grads = [(rng.standard_normal(s) * 1e-2).astype(np.float32) for s in shapes]
    dead = [g.copy() for g in grads]
    dead[0][:5] = 0
    dead[1][:5] = 0
    inits = [rng.standard_normal(s).astype(np.float32) for s in shapes]

    def run(flush_every: int) -> tuple[list[np.ndarray], optim.Optimizer]:
        params = [Parameter(a.copy()) for a in inits]
        opt = cls(params, lr=1e-3, **kwargs)
        opt._flat.flush_every = flush_every
        for t in range(1024):
            for p, g in zip(params, grads if t < 5 else dead):
                p.grad = g
            opt.step()
        return [p.data for p in params], opt

    assert 1024 % _flat.FLUSH_EVERY == 0
    flushed, opt = run(_flat.FLUSH_EVERY)
    kept, opt_unflushed = run(0)  # never
    assert _subnormals(opt_unflushed) >= 5 * 40  # the scenario does produce subnormals
    assert _subnormals(opt) == 0
    for a, b in zip(flushed, kept):
        np.testing.assert_array_equal(a, b)


def test_subnormal_flush_also_runs_when_some_parameters_are_frozen():
    p, frozen = Parameter(np.ones(8, np.float32)), Parameter(np.ones(3, np.float32))
    opt = optim.SGD([p, frozen], lr=0.0, momentum=0.5)
    opt._flat.flush_every = 4
    p.grad = np.full(8, 1e-39, np.float32)  # subnormal gradient: the buffer becomes subnormal
    for _ in range(3):
        opt.step()
    assert _subnormals(opt) == 8
    opt.step()  # the 4th step of p (frozen has none): flushed
    assert _subnormals(opt) == 0


def test_float16_state_is_not_flushed():
    # float16's smallest normal number (6.1e-5) is a real value for a second moment
    p = Parameter(np.ones(4, np.float16))
    opt = optim.SGD([p], lr=0.0, momentum=0.5)
    opt._flat.flush_every = 1
    p.grad = np.full(4, 1e-5, np.float16)  # subnormal in float16
    opt.step()
    np.testing.assert_array_equal(opt.state_view("momentum_buffer", 0),
                                  np.full(4, 1e-5, np.float16))


def test_one_two_and_auto_threads_give_identical_bits():
    a, _, o1 = run_pair(optim.Adam, ref_adam, {"lr": 0.01}, np.float32, threads=1)
    b, _, o2 = run_pair(optim.Adam, ref_adam, {"lr": 0.01}, np.float32, threads=2)
    c, _, o3 = run_pair(optim.Adam, ref_adam, {"lr": 0.01}, np.float32)
    assert list(o1._flat.plans) == [1] and o1._flat.chooser is None
    assert len(o2._flat.plans[2]) == 2 and o2._flat.chooser is None
    assert o3._flat.chooser is not None  # auto: both counts were timed during the 20 steps
    for x, y, z in zip(a, b, c):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)


def test_thread_chooser_follows_the_timings():
    ch = _Chooser()
    clock, picks = 0.0, []
    for step in range(2 * ch.PERIOD):
        mode = ch.pick()
        picks.append(mode)
        slow_two = step < ch.PERIOD  # two threads lose in the first round, win in the second
        clock += 2.0 if (mode == 2) == slow_two else 1.0
        ch.record(mode, clock)
    probe = [1] * ch.PROBE + [2] * ch.PROBE
    n = len(probe)
    assert picks[:n] == probe and set(picks[n:ch.PERIOD]) == {1}
    assert picks[ch.PERIOD:ch.PERIOD + n] == probe and set(picks[ch.PERIOD + n:]) == {2}
    # a tie keeps one thread
    ch = _Chooser()
    for _ in range(n):
        ch.record(ch.pick(), 1.0 + ch.n)
    assert ch.pick() == 1


def test_replaced_parameter_is_rehomed():
    prob = Problem()
    params = [Parameter(a.copy()) for a in prob.init]
    opt = optim.SGD(params, lr=0.1, momentum=0.9)
    ref_p = [a.copy() for a in prob.init]
    ref_st = [{} for _ in ref_p]
    for t in range(8):
        if t == 4:  # the user swaps in new arrays of the same shape
            new = np.full(SHAPES[0], 0.5)
            params[0].data = new.copy()
            ref_p[0] = new.copy()
        for i, p in enumerate(params):
            p.grad = prob.grad(i, p.data)
            ref_p[i] = ref_sgd(ref_p[i], prob.grad(i, ref_p[i]), ref_st[i], lr=0.1, momentum=0.9)
        opt.step()
    for a, b in zip(params, ref_p):
        np.testing.assert_allclose(a.data, b, rtol=1e-12)
    assert np.shares_memory(params[0].data, opt._flat.flat)


def test_replaced_parameter_with_other_shape_raises():
    params = [Parameter(np.ones((3, 4), np.float32))]
    opt = optim.Adam(params)
    params[0].data = np.ones((4, 3), np.float32)
    params[0].grad = np.ones((4, 3), np.float32)
    with pytest.raises(ShapeError, match=r"shape \(4, 3\).*\(3, 4\)"):
        opt.step()


def test_model_cast_to_float64_moves_state():
    model = nn.Linear(4, 3)
    opt = optim.Adam(model.parameters(), lr=0.1)
    for p in model.parameters():
        p.grad = np.ones_like(p.data)
    opt.step()
    before = opt.state_view("grad_sum", 0).copy()
    model.double()
    for p in model.parameters():
        p.grad = np.ones_like(p.data)
    opt.step()
    assert model.weight.data.dtype == np.float64
    assert opt._flat.states["grad_sum"].dtype == np.float64
    np.testing.assert_allclose(opt.state_view("grad_sum", 0), before * 0.9 + 1, rtol=1e-6)
    assert np.shares_memory(model.weight.data, opt._flat.flat)


def test_training_a_module_with_autograd_lowers_the_loss(rng):
    model = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))
    x = rng.normal(size=(64, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5]], np.float32)).astype(np.float32)
    opt = optim.Adam(model.parameters(), lr=0.02)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        diff = model(x) - y
        loss = (diff * diff).mean()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.05 * losses[0]
    assert all(p.grad is not None for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_lr_is_writable_and_used():
    p = Parameter(np.zeros(3))
    opt = optim.SGD([p], lr=1.0)
    opt.lr = 0.25
    p.grad = np.ones(3)
    opt.step()
    np.testing.assert_allclose(p.data, -0.25)
    with pytest.raises(ConfigError, match="lr"):
        opt.lr = -1.0


def test_switching_momentum_on_later_adds_a_buffer():
    p = Parameter(np.zeros(3))
    opt = optim.SGD([p], lr=1.0)
    p.grad = np.ones(3)
    opt.step()
    opt.momentum = 0.5
    opt.step()  # the buffer starts as this step's gradient
    opt.step()
    np.testing.assert_allclose(p.data, -1.0 - 1.0 - 1.5)
    opt.weight_decay = 0.1  # needs one more scratch buffer
    opt.step()
    np.testing.assert_allclose(p.data, -3.5 - (0.5 * 1.5 + 1.0 - 0.35))


def test_step_closure_returns_loss_and_duplicates_count_once():
    p = Parameter(np.zeros(2))

    def closure():
        p.grad = np.ones(2)
        return 3.0

    opt = optim.SGD([p, p], lr=0.5)
    assert opt.step(closure) == 3.0
    np.testing.assert_allclose(p.data, -0.5)
    assert len(opt.params) == 1


def test_gradient_of_wrong_shape_raises():
    p = Parameter(np.zeros((2, 3)))
    opt = optim.Adam([p])
    p.grad = np.zeros((3, 2))
    with pytest.raises(ShapeError, match=r"\(3, 2\).*expected \(2, 3\)"):
        opt.step()


def test_float64_grad_on_float32_param_keeps_float32():
    p = Parameter(np.zeros(5, np.float32))
    opt = optim.Adam([p], lr=0.1)
    p.grad = np.ones(5, np.float64)
    opt.step()
    assert p.data.dtype == np.float32
    np.testing.assert_allclose(p.data, -0.1, rtol=1e-6)


@pytest.mark.parametrize("make,match", [
    (lambda ps: optim.SGD(ps, lr=-0.1), "lr"),
    (lambda ps: optim.SGD(ps, lr=float("nan")), "lr"),
    (lambda ps: optim.SGD(ps, lr="fast"), "lr"),
    (lambda ps: optim.SGD(ps, momentum=-0.5), "momentum"),
    (lambda ps: optim.SGD(ps, nesterov=True), "Nesterov"),
    (lambda ps: optim.SGD(ps, momentum=0.9, dampening=0.1, nesterov=True), "Nesterov"),
    (lambda ps: optim.Adam(ps, betas=(1.0, 0.999)), "beta1"),
    (lambda ps: optim.Adam(ps, betas=(0.9, -0.1)), "beta2"),
    (lambda ps: optim.Adam(ps, betas=0.9), "betas"),
    (lambda ps: optim.Adam(ps, eps=-1e-8), "eps"),
    (lambda ps: optim.AdamW(ps, weight_decay=-0.01), "weight_decay"),
    (lambda ps: optim.Adam(ps, amsgrad="yes"), "amsgrad"),
    (lambda ps: optim.RMSprop(ps, alpha=1.0), "alpha"),
    (lambda ps: optim.RMSprop(ps, momentum=-1), "momentum"),
    (lambda ps: optim.Adam([]), "at least one parameter"),
    (lambda ps: optim.Adam([np.zeros(3)]), "Parameter"),
    (lambda ps: optim.Adam(5), "iterable"),
    (lambda ps: optim.Adam(ps, threads=0), "threads"),
    (lambda ps: optim.Adam(ps, threads=1.5), "threads"),
])
def test_bad_hyperparameters_raise_config_error(make, match):
    with pytest.raises(ConfigError, match=match):
        make([Parameter(np.zeros(3, np.float32))])


def test_mixed_dtypes_raise():
    with pytest.raises(DTypeError, match="float32.*float64|float64.*float32"):
        optim.Adam([Parameter(np.zeros(3, np.float32)), Parameter(np.zeros(3, np.float64))])
