"""`nnforge info` on a checkpoint shows where training stood: epoch and step, the optimizer
with its settings per param group, the last epoch's metrics, callbacks, the seed."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli as run

import nnforge as nf
from nnforge import nn, optim
from nnforge.train import EarlyStopping


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """A checkpoint after 3 epochs of Adam with two param groups and early stopping."""
    path = tmp_path_factory.mktemp("cli_info_ckpt") / "ck.nnf"
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = optim.Adam([{"params": model[0].parameters(), "lr": 0.01},
                      {"params": model[2].parameters()}], lr=0.001)
    trainer = nf.Trainer(model, loss="cross_entropy", optimizer=opt, metrics=["accuracy"],
                         seed=7, verbose=0)
    x = np.random.default_rng(0).normal(size=(40, 4)).astype(np.float32)
    history = trainer.fit(x, x[:, :3].argmax(1), epochs=3, batch_size=8, validation_split=0.2,
                          callbacks=[EarlyStopping(patience=5)])
    trainer.save_checkpoint(str(path), task="multiclass")
    return path, dict(history)


def test_info_shows_the_training_state(checkpoint: tuple[Path, dict], capsys) -> None:
    """Showed the layers of a checkpoint but nothing of the run it can resume."""
    path, history = checkpoint
    code, out, err = run(capsys, "info", path)
    assert code == 0, err
    state = out[out.index("training state"):]
    rows = {line.split("  ", 1)[0]: line.split("  ", 1)[1].strip()
            for line in state.splitlines()[3:]}
    assert rows["epoch"] == "3" and rows["step"] == "12" and rows["optimizer"] == "adam"
    assert rows["hyperparameters"].startswith("lr 0.001  betas (0.9, 0.999)")
    assert rows["param group 0"] == "lr 0.01" and rows["param group 1"] == "lr 0.001"
    assert f"loss {history['loss'][-1]:.4f}" in rows["last epoch"]
    assert f"val_accuracy {history['val_accuracy'][-1]:.4f}" in rows["last epoch"]
    assert rows["callbacks"] == "EarlyStopping" and rows["seed"] == "7"
    code, out, err = run(capsys, "info", path, "--json")
    doc = json.loads(out)["training_state"]
    assert doc["epoch"] == 3 and doc["optimizer"]["groups"] == [{"lr": 0.01}, {"lr": 0.001}]
    assert doc["last_epoch"]["loss"] == pytest.approx(history["loss"][-1])
    assert doc["callbacks"] == ["EarlyStopping"] and doc["seed"] == 7


def test_a_model_file_has_no_training_state(tmp_path: Path, capsys) -> None:
    nf.save(nn.Sequential(nn.Linear(2, 1)), tmp_path / "m.nnf")
    code, out, _ = run(capsys, "info", tmp_path / "m.nnf")
    assert code == 0 and "training state" not in out
    code, out, _ = run(capsys, "info", tmp_path / "m.nnf", "--json")
    assert "training_state" not in json.loads(out)


def _rows(out: str) -> dict[str, str]:
    state = out[out.index("training state"):]
    return {line.split("  ", 1)[0]: line.split("  ", 1)[1].strip()
            for line in state.splitlines()[3:]}


def test_info_shows_the_trainer_seed_not_the_split_seed(tmp_path: Path, capsys) -> None:
    """An unseeded run showed its randomly drawn split seed as 'seed'."""
    model = nn.Sequential(nn.Linear(2, 1))
    trainer = nf.Trainer(model, loss="mse", optimizer=optim.SGD(model.parameters()), verbose=0)
    x = np.ones((6, 2), np.float32)
    trainer.fit(x, x[:, :1], epochs=1, batch_size=3)
    trainer.save_checkpoint(str(tmp_path / "unseeded.nnf"))
    split = trainer.state_dict()["split_seed"]
    code, out, err = run(capsys, "info", tmp_path / "unseeded.nnf")
    assert code == 0, err
    rows = _rows(out)
    assert rows["seed"] == "none" and rows["validation split seed"] == str(split)
    code, out, _ = run(capsys, "info", tmp_path / "unseeded.nnf", "--json")
    doc = json.loads(out)["training_state"]
    assert doc["seed"] is None and doc["split_seed"] == split
    # a checkpoint from before seeds were kept: its split seed is no proof of a seed
    state = trainer.state_dict()
    del state["seed"]
    state["split_seed"] = 7
    nf.io.save_checkpoint(tmp_path / "old.nnf", model, trainer_state=state)
    code, out, err = run(capsys, "info", tmp_path / "old.nnf")
    rows = _rows(out)
    assert code == 0 and "seed" not in rows and rows["validation split seed"] == "7"
