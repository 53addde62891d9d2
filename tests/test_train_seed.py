"""A seeded Trainer draws from its own stream and leaves nnforge's global generator alone."""

from __future__ import annotations

import numpy as np

import nnforge as nf
from nnforge import nn
from nnforge.random import get_rng, get_rng_state
from nnforge.train import ModelCheckpoint


def _data(n=48, d=4):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d)).astype(np.float32)
    return X, (X[:, 0] > 0).astype(np.int64)


def _model():
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 2))


def _weights(model):
    return np.concatenate([v.reshape(-1) for v in model.state_dict().values()])


def test_models_built_after_seeded_fits_get_different_initial_weights():
    X, y = _data()
    nf.manual_seed(0)
    inits = []
    for _ in range(4):  # an ensemble: build, train with a fixed trainer seed, repeat
        model = _model()
        inits.append(_weights(model))
        nf.Trainer(model, seed=0, verbose=0).fit(X, y, epochs=1, batch_size=16)
    assert all(not np.array_equal(a, b) for i, a in enumerate(inits) for b in inits[i + 1:])


def test_seeded_fit_leaves_the_global_stream_where_it_was():
    X, y = _data()
    nf.manual_seed(3)
    model = _model()
    before = get_rng_state()
    nf.Trainer(model, seed=5, verbose=0).fit(X, y, epochs=2, batch_size=16)
    assert get_rng_state() == before


def _seeded_run(noise: int, epochs: int = 2):
    X, y = _data()
    nf.manual_seed(1)
    model = _model()
    trainer = nf.Trainer(model, seed=7, verbose=0)
    get_rng().random(noise)  # whatever the global generator did before fit() must not matter
    trainer.fit(X, y, epochs=epochs, batch_size=16)
    return trainer


def test_seeded_dropout_does_not_depend_on_the_global_stream_before_fit():
    a, b = _seeded_run(0), _seeded_run(13)
    np.testing.assert_array_equal(_weights(a.model), _weights(b.model))


def test_second_fit_continues_the_trainers_own_stream():
    straight = _seeded_run(0, epochs=4)
    split = _seeded_run(0, epochs=2)
    get_rng().random(11)  # between the two fit() calls: not the trainer's business
    X, y = _data()
    split.fit(X, y, epochs=2, batch_size=16)
    np.testing.assert_array_equal(_weights(straight.model), _weights(split.model))


def test_seeded_resume_is_bit_identical_and_keeps_the_global_stream(tmp_path):
    X, y = _data()
    straight = _seeded_run(0, epochs=4)
    ckpt = tmp_path / "c-{epoch}.nnf"
    nf.manual_seed(1)
    trainer = nf.Trainer(_model(), seed=7, verbose=0)
    trainer.fit(X, y, epochs=2, batch_size=16,
                callbacks=[ModelCheckpoint(ckpt, save_best_only=False)])
    nf.manual_seed(99)
    fresh = nf.Trainer(_model(), seed=7, verbose=0)
    before = get_rng_state()
    fresh.load_checkpoint(str(tmp_path / "c-2.nnf"))
    assert get_rng_state() == before  # the trainer's stream went to the trainer, not global
    fresh.fit(X, y, epochs=4, batch_size=16)
    assert get_rng_state() == before
    np.testing.assert_array_equal(_weights(straight.model), _weights(fresh.model))
