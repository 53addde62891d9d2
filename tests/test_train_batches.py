"""fit()'s array batches: a last batch of one row with batch norm, drop_last, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn
from nnforge.cli.main import main
from nnforge.data import DataLoader
from nnforge.errors import ConfigError, DataError, ShapeError


class BatchSizes(nn.Module):
    """A pass-through layer that records the size of every batch trained on."""

    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        if self.training:  # not the validation passes
            self.sizes.append(len(x.data))
        return x


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0)


def _bn_model(seed: int = 0, *spy: nn.Module) -> nn.Module:
    nf.manual_seed(seed)
    return nn.Sequential(*spy, nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Linear(16, 3))


def _trainer(model: nn.Module) -> nf.Trainer:
    return nf.Trainer(model, optimizer=nf.optim.SGD(model.parameters(), lr=0.1),
                      metrics=["accuracy"], seed=0, verbose=0)


def test_a_last_batch_of_one_row_joins_the_batch_before_with_batch_norm():
    X, y = _data(37)  # the walkthrough: 37 rows, 10% held out -> 33 = 32 + 1
    sizes = BatchSizes()
    model = _bn_model(0, sizes)
    history = _trainer(model).fit(X, y, epochs=2, batch_size=32, validation_split=0.1)
    assert np.isfinite(history["loss"]).all() and np.isfinite(history["val_loss"]).all()
    assert np.isfinite(model[2].running_var).all() and (model[2].running_var > 0).all()
    assert sizes.sizes == [33, 33]  # one batch per epoch, the last row in it
    # without batch norm nothing changes: the last row is a batch of its own
    sizes = BatchSizes()
    _trainer(nn.Sequential(sizes, nn.Linear(4, 3))).fit(X, y, epochs=1, batch_size=32,
                                                        validation_split=0.1)
    assert sizes.sizes == [32, 1]


def test_a_merged_batch_resumes_bit_identically(tmp_path):
    X, y = _data(33)

    def run(epochs: int, resume: str | None = None) -> nf.Trainer:
        trainer = _trainer(_bn_model())
        trainer.fit(X, y, epochs=epochs, batch_size=8, resume_from=resume)
        return trainer

    straight = run(3)
    first = run(1)
    first.save_checkpoint(str(tmp_path / "ckpt.nnf"))
    resumed = run(3, str(tmp_path / "ckpt.nnf"))
    want, got = straight.model.state_dict(), resumed.model.state_dict()
    for k in want:
        np.testing.assert_array_equal(want[k], got[k], err_msg=k)
    assert resumed.history["loss"] == straight.history["loss"]


def test_drop_last_leaves_the_rest_out_of_each_epoch():
    X, y = _data(37)
    sizes = BatchSizes()
    trainer = _trainer(nn.Sequential(sizes, nn.Linear(4, 3)))
    trainer.fit(X, y, epochs=2, batch_size=16, drop_last=True)
    assert sizes.sizes == [16, 16, 16, 16] and trainer._step == 4
    with pytest.raises(DataError, match=r"drop_last=True with 37 training samples and "
                                        r"batch_size=64 leaves no batch"):
        trainer.fit(X, y, epochs=1, batch_size=64, drop_last=True)
    with pytest.raises(ConfigError, match=r"DataLoader\(\.\.\., drop_last=True\)"):
        trainer.fit(DataLoader((X, y), batch_size=16), drop_last=True)
    with pytest.raises(ConfigError, match="drop_last must be True or False, found 'yes'"):
        trainer.fit(X, y, drop_last="yes")


def test_a_loader_batch_of_one_row_names_the_fixes():
    X, y = _data(33)
    trainer = _trainer(_bn_model())
    with pytest.raises(ShapeError, match=r"found input of shape \(1, 16\): train on batches of "
                                         r"2 or more samples \(e\.g\. DataLoader\(\.\.\., "
                                         r"drop_last=True\)"):
        trainer.fit(DataLoader((X, y), batch_size=32), epochs=1)
    trainer.fit(DataLoader((X, y), batch_size=32, drop_last=True), epochs=1)  # the fix


def test_cli_train_with_batch_norm_and_a_remainder_of_one(tmp_path, capsys):
    X, y = _data(33)  # no test or validation part: 33 rows to train on, 32 + 1
    csv = tmp_path / "d.csv"
    csv.write_text("a,b,c,d,label\n" + "".join(
        ",".join(f"{v:.5f}" for v in row) + f",{t}\n" for row, t in zip(X, y)))
    arch = tmp_path / "arch.json"
    arch.write_text(json.dumps(_bn_model().to_architecture()))
    rc = main(["train", "--data", str(csv), "--label-column", "label", "--architecture",
               str(arch), "--test-size", "0", "--validation-split", "0", "--epochs", "1",
               "-q", "-o", str(tmp_path / "m.nnf")])
    assert rc == 0, capsys.readouterr().err
    assert (tmp_path / "m.nnf").exists()
