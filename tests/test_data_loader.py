"""ArrayDataset and DataLoader: coverage per epoch, seeded order, exact resume from state_dict."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

import nnforge as nf
from nnforge.data import ArrayDataset, DataLoader, Dataset
from nnforge.errors import ConfigError, ShapeError, StateDictError


def _data(n: int = 103):
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    y = np.arange(n, dtype=np.int64)  # y is the sample id: batches can be checked by it
    return x, y


def _ids(loader) -> list[np.ndarray]:
    return [b[1].copy() for b in loader]


def test_array_dataset():
    x, y = _data(10)
    ds = ArrayDataset(x, y)
    assert len(ds) == 10
    xi, yi = ds[3]
    np.testing.assert_array_equal(xi, x[3])
    assert yi == 3
    np.testing.assert_array_equal(ds[2:4][1], [2, 3])
    with pytest.raises(ShapeError, match="expected every array to have 10 samples"):
        ArrayDataset(x, y[:9])
    with pytest.raises(ShapeError, match="at least one array"):
        ArrayDataset()
    with pytest.raises(ShapeError, match="scalar"):
        ArrayDataset(x, np.float32(1.0))


@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("batch_size", [1, 10, 32, 103, 200])
def test_every_sample_once_per_epoch(shuffle, batch_size):
    x, y = _data()
    loader = DataLoader((x, y), batch_size=batch_size, shuffle=shuffle, seed=0)
    assert len(loader) == -(-103 // batch_size)
    for _ in range(2):
        batches = list(loader)
        assert len(batches) == len(loader)
        ids = np.concatenate([b[1] for b in batches])
        np.testing.assert_array_equal(np.sort(ids), y)
        for bx, by in batches:
            assert isinstance((bx, by), tuple) and bx.dtype == np.float32 and by.dtype == np.int64
            np.testing.assert_array_equal(bx, x[by])  # rows stay together
            assert len(by) <= batch_size
    if not shuffle:
        np.testing.assert_array_equal(ids, y)
    assert loader.epoch == 2


def test_drop_last():
    x, y = _data()
    loader = DataLoader((x, y), batch_size=10, shuffle=True, drop_last=True, seed=3)
    assert len(loader) == 10
    batches = list(loader)
    assert len(batches) == 10 and all(len(b[1]) == 10 for b in batches)
    ids = np.concatenate([b[1] for b in batches])
    assert len(np.unique(ids)) == 100


def test_shuffle_reproducible_by_seed():
    x, y = _data()
    a = DataLoader((x, y), batch_size=16, shuffle=True, seed=7)
    b = DataLoader(ArrayDataset(x, y), batch_size=16, shuffle=True, seed=7)
    c = DataLoader((x, y), batch_size=16, shuffle=True, seed=8)
    ea, eb, ec = _ids(a), _ids(b), _ids(c)
    assert all(np.array_equal(u, v) for u, v in zip(ea, eb))
    assert not np.array_equal(np.concatenate(ea), np.concatenate(ec))
    # A new epoch draws a new order.
    assert not np.array_equal(np.concatenate(ea), np.concatenate(_ids(a)))


def test_global_seed_drives_unseeded_loader():
    x, y = _data()
    nf.manual_seed(123)
    first = np.concatenate(_ids(DataLoader((x, y), batch_size=8, shuffle=True)))
    nf.manual_seed(123)
    again = np.concatenate(_ids(DataLoader((x, y), batch_size=8, shuffle=True)))
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("stop_after", [0, 1, 5, 6, 7, 13])
@pytest.mark.parametrize("shuffle", [True, False])
def test_resume_from_state_dict(stop_after, shuffle):
    """Stop after some batches (mid-epoch or on an epoch boundary), save, resume elsewhere."""
    x, y = _data()
    per_epoch = 7  # ceil(103 / 16)
    reference = DataLoader((x, y), batch_size=16, shuffle=shuffle, seed=5)
    expected = [ids for _ in range(3) for ids in _ids(reference)]

    loader = DataLoader((x, y), batch_size=16, shuffle=shuffle, seed=5)
    seen: list[np.ndarray] = []
    state = loader.state_dict() if stop_after == 0 else None
    while state is None:
        for _, by in loader:
            seen.append(by.copy())
            if len(seen) == stop_after:
                state = loader.state_dict()
                break
    state = json.loads(json.dumps(state))  # a checkpoint stores it as JSON
    assert state["epoch"] == stop_after // per_epoch
    assert state["batches_done"] == stop_after % per_epoch

    resumed = DataLoader((x, y), batch_size=16, shuffle=shuffle, seed=999)  # seed overridden
    resumed.load_state_dict(state)
    rest = []
    while len(seen) + len(rest) < len(expected):
        rest += _ids(resumed)
    got = seen + rest
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
    assert resumed.epoch == 3


def test_abandoned_epoch_counts_and_next_iteration_starts_fresh():
    x, y = _data()
    loader = DataLoader((x, y), batch_size=10, shuffle=True, seed=1)
    first = next(iter(loader))[1].copy()
    full = np.concatenate(_ids(loader))  # a fresh, complete epoch
    assert loader.epoch == 2 and len(full) == 103
    assert not np.array_equal(first, full[:10])


def test_state_dict_mismatch():
    x, y = _data()
    state = DataLoader((x, y), batch_size=16, shuffle=True, seed=0).state_dict()
    with pytest.raises(StateDictError, match="batch_size=8"):
        DataLoader((x, y), batch_size=8, shuffle=True).load_state_dict(state)
    with pytest.raises(StateDictError, match="num_samples=50"):
        DataLoader((x[:50], y[:50]), batch_size=16, shuffle=True).load_state_dict(state)
    with pytest.raises(StateDictError, match="missing"):
        DataLoader((x, y), batch_size=16, shuffle=True).load_state_dict({"epoch": 0})


def test_unshuffled_batches_are_read_only_views():
    x, y = _data()
    bx, _ = next(iter(DataLoader((x, y), batch_size=4)))
    assert np.shares_memory(bx, x) and not bx.flags.writeable
    with pytest.raises(ValueError):
        bx[0, 0] = 1.0
    assert x.flags.writeable  # the caller's array is untouched


def test_shuffled_batches_are_independent_copies():
    x, y = _data()
    loader = DataLoader((x, y), batch_size=4, shuffle=True, seed=0)
    batches = list(itertools.islice(loader, 3))
    assert not any(np.shares_memory(b[0], x) for b in batches)
    assert not np.shares_memory(batches[0][0], batches[1][0])


class _Squares(Dataset):
    def __len__(self) -> int:
        return 9

    def __getitem__(self, i: int):
        return np.array([i, i * i], dtype=np.float32), i


def test_map_style_dataset_and_single_array():
    batches = list(DataLoader(_Squares(), batch_size=4, shuffle=True, seed=0))
    assert [len(b[1]) for b in batches] == [4, 4, 1]
    xs = np.concatenate([b[0] for b in batches])
    np.testing.assert_array_equal(xs[:, 1], xs[:, 0] ** 2)
    np.testing.assert_array_equal(np.sort(np.concatenate([b[1] for b in batches])), np.arange(9))
    (only,) = next(iter(DataLoader(np.ones((5, 2)), batch_size=2)))
    assert only.shape == (2, 2)


def test_bad_arguments():
    x, y = _data()
    with pytest.raises(ConfigError, match="batch_size"):
        DataLoader((x, y), batch_size=0)
    with pytest.raises(ConfigError, match="found int"):
        DataLoader(5)
    assert len(DataLoader(np.zeros((0, 3)), batch_size=4)) == 0
    assert list(DataLoader(np.zeros((0, 3)), batch_size=4)) == []


def test_refused_state_names_the_problem_and_leaves_the_loader_unchanged():
    x, y = _data()
    src = DataLoader((x, y), batch_size=16, shuffle=True, seed=0)
    next(iter(src))
    good = json.loads(json.dumps(src.state_dict()))
    loader = DataLoader((x, y), batch_size=16, shuffle=True, seed=4)
    before = loader.state_dict()
    for key, value, match in [("batches_done", 1.5, "batches_done as an integer"),
                              ("batches_done", True, "batches_done as an integer"),
                              ("epoch", -1, "epoch as an integer"),
                              ("epoch", "2", "epoch as an integer"),
                              ("rng_state", {"bit_generator": "MT19937"}, "rng_state"),
                              ("rng_state", None, "rng_state")]:
        with pytest.raises(StateDictError, match=match):
            loader.load_state_dict({**good, key: value})
        assert loader.state_dict() == before
    with pytest.raises(StateDictError, match="found NoneType"):
        loader.load_state_dict(None)


def test_an_abandoned_iterator_refuses_to_continue():
    # one position per loader: a second iteration abandons the first, which must not go on
    # interleaving with it (that mixed two positions into one state_dict and counted epochs twice)
    x, y = _data(10)
    loader = DataLoader((x, y), batch_size=3, shuffle=True, seed=0)
    first = iter(loader)
    next(first)
    second = [b[1] for b in loader]
    assert len(np.concatenate(second)) == 10 and loader.epoch == 2
    with pytest.raises(ConfigError, match="abandoned"):
        next(first)
    assert loader.epoch == 2
    with pytest.raises(ConfigError, match="abandoned"):
        list(zip(loader, loader))


def test_a_dict_of_arrays_is_refused():
    x, y = _data(10)
    with pytest.raises(ConfigError, match=r"found a dict \(pass its arrays as a tuple"):
        DataLoader({"x": x, "y": y})


@pytest.mark.parametrize("kwargs", [{"batch_size": None}, {"batch_size": float("nan")},
                                    {"batch_size": float("inf")}, {"batch_size": [2]},
                                    {"shuffle": True, "seed": -1}, {"seed": 1.5}])
def test_bad_batch_size_or_seed_is_a_config_error(kwargs):
    with pytest.raises(ConfigError, match="batch_size|seed"):
        DataLoader((np.zeros((4, 2)),), **{"batch_size": 2, **kwargs})
