"""Optimizers, Trainers and InferenceSessions survive copy.deepcopy and pickle (joblib and
multiprocessing send them to workers): the copies continue or answer exactly as the originals."""

from __future__ import annotations

import copy
import multiprocessing
import pickle
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn, optim
from nnforge.data.preprocessing import Standardizer
from nnforge.errors import ConfigError, DeviceError
from nnforge.nn import Parameter
from nnforge.runtime.cupy_plan import CupyPlan
from nnforge.train import EarlyStopping, HistoryLogger, LRScheduler, ModelCheckpoint

VARIANTS = [
    (optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True}),
    (optim.Adam, {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01}),
    (optim.AdamW, {"lr": 0.01}),
    (optim.RMSprop, {"lr": 0.01, "centered": True, "momentum": 0.5}),
]
SHAPES = [(300, 200), (9,), (30, 20)]  # one parameter above the chunk size, two packed ones


def _params() -> list[Parameter]:
    rng = np.random.default_rng(0)
    return [Parameter(rng.normal(size=s).astype(np.float32)) for s in SHAPES]


def _steps(opt, start: int, stop: int) -> None:
    for t in range(start, stop):
        for i, p in enumerate(opt.params):
            p.grad = (np.sin(p.data * (i + 1) + t) + 0.1 * p.data).astype(np.float32)
        if t % 5 == 0:
            opt.params[1].grad = None  # differing step counts
        opt.step()


def _same(a, b) -> bool:
    return all(np.array_equal(x.data, y.data) for x, y in zip(a.params, b.params))


@pytest.mark.parametrize("cls,kwargs", VARIANTS)
def test_copied_optimizer_continues_bit_identically(cls, kwargs) -> None:
    opt = cls(_params(), **kwargs)
    _steps(opt, 0, 5)
    copies = [copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))]
    _steps(opt, 5, 70)  # past a subnormal flush (every 64 steps)
    for c in copies:
        assert not any(p is q for p, q in zip(opt.params, c.params))
        _steps(c, 5, 70)
        assert _same(opt, c) and c.steps == opt.steps
        ours, theirs = opt.state_dict()["arrays"], c.state_dict()["arrays"]
        assert all(np.array_equal(ours[k], theirs[k]) for k in ours)


def test_copied_optimizer_with_param_groups_and_replaced_data() -> None:
    opt = optim.SGD([{"params": _params()[:2], "lr": 0.01}, {"params": _params()[2:]}],
                    lr=0.1, momentum=0.9)
    _steps(opt, 0, 3)
    opt.params[2].data = opt.params[2].data + 1  # replaced, not yet moved into the buffer
    c = copy.deepcopy(opt)
    _steps(opt, 3, 10)
    _steps(c, 3, 10)
    assert _same(opt, c)


@pytest.mark.parametrize("groups", [False, True])
def test_shallow_copy_of_an_optimizer_is_refused_and_leaves_it_working(groups: bool) -> None:
    """copy.copy shared the flat buffers (and the group members): a step or an lr change on
    the copy silently acted on the original too."""
    params = _params()
    opt = optim.SGD([{"params": params[:2]}, {"params": params[2:]}] if groups else params,
                    lr=0.1, momentum=0.9)
    twin = optim.SGD(_params(), lr=0.1, momentum=0.9)  # the same run, never copied
    _steps(opt, 0, 2)
    with pytest.raises(ConfigError, match=r"copy.copy\(\) of a SGD would share.*deepcopy"):
        copy.copy(opt)
    _steps(opt, 2, 4)  # the original is untouched by the refused copy
    _steps(twin, 0, 4)
    assert _same(opt, twin)
    assert _same(copy.deepcopy(opt), opt)  # deep copies still work


def _xy() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 4)).astype(np.float32)
    return x, (x[:, :1] * 2 - x[:, 1:2]).astype(np.float32)


def test_trainer_with_callbacks_copies_and_continues_identically(tmp_path: Path) -> None:
    x, y = _xy()
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    opt = optim.Adam(model.parameters(), lr=0.01)
    trainer = nf.Trainer(model, loss="mse", optimizer=opt, metrics=["mae"], seed=0, verbose=1)
    callbacks = [EarlyStopping(patience=3, restore_best_weights=True),
                 ModelCheckpoint(tmp_path / "best.nnf"), HistoryLogger(tmp_path / "log.csv"),
                 LRScheduler(optim.StepLR(opt, 1, gamma=0.5))]
    trainer.fit(x, y, epochs=2, batch_size=16, validation_split=0.25, callbacks=callbacks)
    for other in (copy.deepcopy(trainer), pickle.loads(pickle.dumps(trainer))):
        np.testing.assert_array_equal(other.predict(x), trainer.predict(x))
        assert other.optimizer.params[0] is next(iter(other.model.parameters()))
    other = pickle.loads(pickle.dumps(trainer))
    trainer.fit(x, y, epochs=1, batch_size=16)
    other.fit(x, y, epochs=1, batch_size=16)
    np.testing.assert_array_equal(other.predict(x), trainer.predict(x))


def _session(tmp_path: Path, **kwargs) -> nf.InferenceSession:
    x, y = _xy()
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    nf.save(model, tmp_path / "r.nnf", task="regression", preprocessing=Standardizer().fit(x),
            target_scaler=Standardizer().fit(y))
    return nf.InferenceSession(tmp_path / "r.nnf", **kwargs)


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_session_pickles_and_answers_identically(tmp_path: Path, backend) -> None:
    x, _ = _xy()
    session = _session(tmp_path, backend=backend)
    expected = session.predict(x).values  # compiled plans are pooled now: left out of a copy
    for other in (pickle.loads(pickle.dumps(session)), copy.deepcopy(session)):
        np.testing.assert_array_equal(other.predict(x).values, expected)
        np.testing.assert_array_equal(other.run(x[:3]), session.run(x[:3]))
        assert other.task == "regression" and other.manifest == session.manifest


def _predict_values(session: nf.InferenceSession, x: np.ndarray) -> np.ndarray:
    return session.predict(x).values


@pytest.mark.skipif(sys.platform == "win32", reason="fork start method")
def test_session_runs_in_a_worker_process(tmp_path: Path) -> None:
    x, _ = _xy()
    session = _session(tmp_path)
    expected = session.predict(x).values
    context = multiprocessing.get_context("fork")
    with ProcessPoolExecutor(1, mp_context=context) as pool:
        np.testing.assert_array_equal(pool.submit(_predict_values, session, x).result(),
                                      expected)


def test_cupy_plan_pickles_its_weights_to_the_host(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    x, _ = _xy()
    session = _session(tmp_path)
    plan = CupyPlan(session.graph, xp=np)  # the executor's code on the CPU
    copied = pickle.loads(pickle.dumps(plan))
    np.testing.assert_array_equal(copied.run_one((x,)), plan.run_one((x,)))
    state = plan.__getstate__()
    assert state["xp"] == "numpy" and all(type(a) is np.ndarray
                                          for a in state["consts"].values())
    # a GPU plan unpickled where CuPy is missing says what to install
    monkeypatch.setitem(sys.modules, "cupy", None)
    gpu = object.__new__(CupyPlan)
    with pytest.raises(DeviceError, match="nnforge\\[gpu\\]"):
        gpu.__setstate__({**state, "xp": "cupy"})
