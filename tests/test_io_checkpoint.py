"""Checkpoints: optimizer and trainer state round-trip, training resumes bit for bit."""

from __future__ import annotations

import hashlib
import json
import zipfile
from typing import Any

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn
from nnforge.errors import ConfigError, ModelFileError
from nnforge.io import Checkpoint, load, load_checkpoint, read_manifest, save, save_checkpoint
from nnforge.random import get_rng_state, set_rng_state


class MomentumSGD:
    """A tiny stand-in with the optimizer interface: state_dict() -> {config, arrays}."""

    def __init__(self, params: list[nn.Parameter], lr: float = 0.05, momentum: float = 0.9):
        self.params, self.lr, self.momentum, self.steps = params, lr, momentum, 0
        self.velocity = [np.zeros_like(p.data) for p in params]

    def step(self) -> None:
        lr, mu = np.float32(self.lr), np.float32(self.momentum)
        for p, v in zip(self.params, self.velocity):
            v *= mu
            v += p.grad
            p.data -= lr * v
        self.steps += 1

    def state_dict(self) -> dict[str, Any]:
        return {"config": {"type": "MomentumSGD", "lr": self.lr, "momentum": self.momentum},
                "arrays": {**{f"velocity.{i}": v for i, v in enumerate(self.velocity)},
                           "steps": np.array(self.steps, np.int64)}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.lr, self.momentum = state["config"]["lr"], state["config"]["momentum"]
        self.velocity = [state["arrays"][f"velocity.{i}"] for i in range(len(self.params))]
        self.steps = int(state["arrays"]["steps"])


def _model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Dropout(0.2), nn.Linear(16, 2))


def _train(model: nn.Module, opt: MomentumSGD, x: np.ndarray, y: np.ndarray, steps: int,
           history: list[float]) -> None:
    model.train()
    for _ in range(steps):
        model.zero_grad()
        err = model(x) - nf.Tensor(y)
        loss = (err * err).mean()
        loss.backward()
        opt.step()
        history.append(float(loss.data))


def test_training_resumes_exactly_from_a_checkpoint(tmp_path, rng):
    x = rng.standard_normal((32, 5)).astype(np.float32)
    y = rng.standard_normal((32, 2)).astype(np.float32)
    nf.manual_seed(7)
    straight = _model()
    straight_opt, straight_hist = MomentumSGD(straight.parameters()), []
    _train(straight, straight_opt, x, y, 6, straight_hist)

    nf.manual_seed(7)
    first = _model()
    opt, hist = MomentumSGD(first.parameters()), []
    _train(first, opt, x, y, 3, hist)
    save_checkpoint(tmp_path / "ckpt.nnf", first, opt,
                    {"epoch": 3, "global_step": 3, "rng": get_rng_state(), "history": hist},
                    task="regression", metrics={"loss": hist[-1]})
    nf.manual_seed(999)  # anything that happened in between must not matter

    ckpt = load_checkpoint(tmp_path / "ckpt.nnf")
    assert isinstance(ckpt, Checkpoint) and ckpt.manifest["kind"] == "checkpoint"
    assert ckpt.trainer_state["epoch"] == 3 and ckpt.trainer_state["history"] == hist
    set_rng_state(ckpt.trainer_state["rng"])
    resumed_opt = MomentumSGD(ckpt.model.parameters())
    resumed_opt.load_state_dict(ckpt.optimizer_state)
    assert resumed_opt.steps == 3
    resumed_hist = list(ckpt.trainer_state["history"])
    _train(ckpt.model, resumed_opt, x, y, 3, resumed_hist)

    assert resumed_hist == straight_hist
    for a, b in zip(straight.parameters(), ckpt.model.parameters()):
        assert np.array_equal(a.data, b.data)


def test_optimizer_arrays_keep_dtypes_and_are_writable_copies(tmp_path):
    model = _model()
    opt = MomentumSGD(model.parameters())
    opt.velocity[0][...] = 1.5
    save_checkpoint(tmp_path / "c.nnf", model, opt)
    state = load_checkpoint(tmp_path / "c.nnf").optimizer_state
    assert state["config"] == {"type": "MomentumSGD", "lr": 0.05, "momentum": 0.9}
    arrays = state["arrays"]
    assert arrays["steps"].dtype == np.int64 and arrays["velocity.0"].dtype == np.float32
    assert np.all(arrays["velocity.0"] == 1.5) and arrays["velocity.0"].flags.writeable
    arrays["velocity.0"] += 1.0  # the optimizer updates its state in place


def test_a_checkpoint_is_a_model_file_and_a_model_file_a_checkpoint(tmp_path, rng):
    model = _model()
    save_checkpoint(tmp_path / "c.nnf", model, MomentumSGD(model.parameters()), {"epoch": 1})
    loaded = load(tmp_path / "c.nnf")
    x = rng.standard_normal((3, 5)).astype(np.float32)
    model.eval()
    with nf.no_grad():
        assert np.array_equal(loaded(x).data, model(x).data)
    save(model, tmp_path / "m.nnf")
    ckpt = load_checkpoint(tmp_path / "m.nnf")
    assert ckpt.optimizer_state is None and ckpt.trainer_state is None
    assert ckpt.manifest["kind"] == "model"


def test_trainer_state_round_trips_non_finite_floats_and_big_ints(tmp_path):
    model = _model()
    state = {"history": {"loss": [1.0, float("nan"), float("inf")]}, "rng": get_rng_state(),
             "big": 2**100}
    save_checkpoint(tmp_path / "c.nnf", model, trainer_state=state)
    back = load_checkpoint(tmp_path / "c.nnf").trainer_state
    assert back["rng"] == state["rng"] and back["big"] == 2**100
    assert back["history"]["loss"][0] == 1.0 and np.isnan(back["history"]["loss"][1])


def test_arrays_in_the_trainer_state_round_trip_bit_exact_in_their_dtypes(tmp_path):
    # e.g. EarlyStopping's best weights: stored as safetensors, not as JSON lists
    model = _model()
    best = {"w": np.linspace(0, 1, 7, dtype=np.float32) / 3, "n": np.arange(3, dtype=np.int64)}
    state = {"callbacks": [{"type": "EarlyStopping", "state": {"best_weights": best}}],
             "history": {"loss": [0.5]}}
    save_checkpoint(tmp_path / "c.nnf", model, trainer_state=state)
    assert "trainer.safetensors" in read_manifest(tmp_path / "c.nnf")["checksums"]
    back = load_checkpoint(tmp_path / "c.nnf").trainer_state
    got = back["callbacks"][0]["state"]["best_weights"]
    for k, v in best.items():
        assert got[k].dtype == v.dtype and got[k].flags.writeable
        np.testing.assert_array_equal(got[k], v)
    assert back["history"] == {"loss": [0.5]}


def test_bad_optimizer_state_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="optimizer state"):
        save_checkpoint(tmp_path / "c.nnf", _model(), {"lr": 0.1})
    with pytest.raises(ConfigError, match="JSON-serialisable"):
        save_checkpoint(tmp_path / "c.nnf", _model(), trainer_state={"when": object()})
    assert not (tmp_path / "c.nnf").exists()


@pytest.mark.parametrize("entry, data, words", [
    ("optimizer.json", b"[1]", "optimizer.json of"),
    ("trainer.json", b'"x"', "trainer.json of"),
    ("trainer.json", b'{"a": ' + b"[" * 600 + b"]" * 600 + b"}", "nests too deeply"),
])
def test_checkpoint_state_of_the_wrong_shape_is_refused(tmp_path, entry, data, words):
    model, path = _model(), tmp_path / "c.nnf"
    save_checkpoint(path, model, MomentumSGD(model.parameters()), {"epoch": 2})
    with zipfile.ZipFile(path) as zf:
        entries = {i.filename: zf.read(i) for i in zf.infolist()}
    entries[entry] = data
    manifest = json.loads(entries["manifest.json"])
    manifest["checksums"][entry] = "sha256:" + hashlib.sha256(data).hexdigest()
    entries["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w") as zf:
        for name, d in entries.items():
            zf.writestr(name, d)
    with pytest.raises(ModelFileError, match=words):
        load_checkpoint(path)


def test_extra_that_load_would_refuse_is_refused_at_save(tmp_path):
    with pytest.raises(ConfigError, match="extra must be a dict"):
        save(_model(), tmp_path / "m.nnf", extra=["x"])
    assert not (tmp_path / "m.nnf").exists()


def test_tampered_optimizer_state_is_detected(tmp_path):
    model = _model()
    path = tmp_path / "c.nnf"
    save_checkpoint(path, model, MomentumSGD(model.parameters()), {"epoch": 2})
    assert set(read_manifest(path)["checksums"]) == {
        "architecture.json", "weights.safetensors", "optimizer.json", "optimizer.safetensors",
        "trainer.json"}
    raw = path.read_bytes()
    i = raw.index(b'"epoch": 2')
    path.write_bytes(raw[:i] + b'"epoch": 9' + raw[i + 10:])
    with pytest.raises(ModelFileError, match="checksum mismatch for entry 'trainer.json'"):
        load_checkpoint(path)


def _trainer_checkpoint(path, seed, drop_seed=False):
    """A Trainer's checkpoint after one epoch (drop_seed: as written before seeds were kept)."""
    model = nn.Sequential(nn.Linear(3, 2))
    trainer = nf.Trainer(model, loss="mse", optimizer=nf.optim.SGD(model.parameters(), lr=0.1),
                         seed=seed, verbose=0)
    x = np.arange(24, dtype=np.float32).reshape(8, 3) / 24
    trainer.fit(x, x[:, :2], epochs=1, batch_size=4)
    state = trainer.state_dict()
    if drop_seed:
        del state["seed"]
    save_checkpoint(path, model, trainer.optimizer, state)
    return model


def test_trainer_checkpoints_keep_the_trainers_seed(tmp_path):
    """state_dict kept split_seed only: an unseeded run's random split seed passed for a seed."""
    _trainer_checkpoint(tmp_path / "seeded.nnf", 11)
    _trainer_checkpoint(tmp_path / "unseeded.nnf", None)
    assert load_checkpoint(tmp_path / "seeded.nnf").trainer_state["seed"] == 11
    unseeded = load_checkpoint(tmp_path / "unseeded.nnf").trainer_state
    assert unseeded["seed"] is None and isinstance(unseeded["split_seed"], int)
    model = nn.Sequential(nn.Linear(3, 2))
    resumed = nf.Trainer(model, loss="mse", optimizer=nf.optim.SGD(model.parameters()),
                         verbose=0)
    resumed.load_checkpoint(str(tmp_path / "seeded.nnf"))
    assert resumed.seed == 11 and resumed.state_dict()["seed"] == 11


def test_trainer_checkpoints_without_a_seed_still_load(tmp_path):
    _trainer_checkpoint(tmp_path / "old.nnf", 5, drop_seed=True)
    model = nn.Sequential(nn.Linear(3, 2))
    resumed = nf.Trainer(model, loss="mse", optimizer=nf.optim.SGD(model.parameters()),
                         seed=3, verbose=0)
    resumed.load_checkpoint(str(tmp_path / "old.nnf"))
    assert resumed.seed == 3 and resumed.state_dict()["split_seed"] == 5
    state = resumed.state_dict()
    state["seed"] = "seven"
    with pytest.raises(nf.errors.StateDictError, match="'seed' must be an integer"):
        resumed.load_state_dict(state)
    assert resumed.seed == 3
