"""Trainer names: optimizers with arguments, Keras loss names, on_batch_begin."""

from __future__ import annotations

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn, optim
from nnforge.errors import ConfigError
from nnforge.train import Callback


def _model(head=None, out=3):
    nf.manual_seed(0)
    return nn.Sequential(nn.Linear(4, out), *([head] if head is not None else []))


@pytest.mark.parametrize("spec", [("adam", {"lr": 0.01}), {"name": "adam", "lr": 0.01},
                                  ("SGD", {"lr": 0.5, "momentum": 0.9})])
def test_optimizer_by_name_with_arguments(spec):
    trainer = nf.Trainer(_model(), optimizer=spec)
    name, kwargs = spec if isinstance(spec, tuple) else (spec["name"], {"lr": spec["lr"]})
    assert type(trainer.optimizer).__name__.lower() == name.lower()
    assert all(trainer.optimizer.param_groups[0][k] == v for k, v in kwargs.items())


def test_optimizer_bad_spec_names_the_forms():
    with pytest.raises(ConfigError, match=r"\('adam', \{'lr': 0.01\}\) or \{'name': 'adam'"):
        nf.Trainer(_model(), optimizer=("adam", 0.01))
    with pytest.raises(ConfigError, match="unknown argument"):
        nf.Trainer(_model(), optimizer=("adam", {"learning_rate": 0.01}))


def test_keras_loss_names():
    assert isinstance(nn.get_loss("binary_crossentropy"), nn.BCELoss)  # probabilities, as Keras
    assert isinstance(nn.get_loss("sparse_categorical_crossentropy"), nn.CrossEntropyLoss)
    assert isinstance(nn.get_loss("mean_absolute_error"), nn.L1Loss)


@pytest.mark.parametrize("head, loss, fix", [
    (nn.Softmax(axis=1), "categorical_crossentropy", "remove the final Softmax"),
    (nn.Softmax(axis=1), "cross_entropy", "remove the final Softmax"),
    (nn.Sigmoid(), "bce_with_logits", "use loss='bce'"),
])
def test_logits_loss_after_a_probability_head_is_refused(head, loss, fix):
    # a Keras-style model (Softmax last) under a logits loss trains on a double softmax
    with pytest.raises(ConfigError, match=rf"takes logits, but the model ends in .*{fix}"):
        nf.Trainer(_model(head, 1 if loss == "bce_with_logits" else 3), loss=loss)
    nf.Trainer(_model(nn.Sigmoid(), 1), loss="binary_crossentropy")  # probabilities: fine


def test_on_batch_begin_is_called_before_each_batch():
    calls = []

    class Spy(Callback):
        def on_batch_begin(self, step):
            calls.append(("begin", step))

        def on_batch_end(self, step, loss):
            calls.append(("end", step))

    X = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    model = _model()
    nf.Trainer(model, optimizer=optim.SGD(model.parameters(), lr=0.1), verbose=0).fit(
        X, np.arange(10) % 3, epochs=2, batch_size=4, callbacks=[Spy()])
    assert calls == [(kind, s) for s in range(6) for kind in ("begin", "end")]
