"""Seeded and stratified splits: sizes, coverage, class proportions, scikit-learn's indices."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split as sk_split

from nnforge.data import split_indices, train_test_split, train_val_test_split
from nnforge.errors import ConfigError, DataError, ShapeError


def _imbalanced(n: int = 401, seed: int = 0):
    rng = np.random.default_rng(seed)
    y = rng.choice(4, size=n, p=[0.55, 0.25, 0.15, 0.05])
    x = np.arange(n, dtype=np.float32)[:, None] * np.ones((1, 3), np.float32)
    return x, y


def test_sizes_coverage_and_rows_stay_together():
    x, y = _imbalanced()
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.2, seed=0)
    assert len(x_te) == 81 and len(x_tr) == 320  # test rounds up: ceil(0.2 * 401)
    ids = np.concatenate([x_tr[:, 0], x_te[:, 0]]).astype(int)
    np.testing.assert_array_equal(np.sort(ids), np.arange(401))
    np.testing.assert_array_equal(y[x_tr[:, 0].astype(int)], y_tr)
    a, b = train_test_split(x, test_size=50, seed=0)  # no y: two arrays; a count works
    assert len(b) == 50 and len(a) == 351


def test_reproducible_by_seed():
    x, y = _imbalanced()
    r1, r2 = train_test_split(x, y, seed=3), train_test_split(x, y, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(r1, r2))
    assert not np.array_equal(r1[1], train_test_split(x, y, seed=4)[1])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stratified_keeps_class_proportions(seed):
    x, y = _imbalanced(seed=seed)
    _, _, y_tr, y_te = train_test_split(x, y, test_size=0.25, seed=seed, stratify=y)
    counts = np.bincount(y, minlength=4)
    expected_test = counts * len(y_te) / len(y)
    # Each class's test count is its proportional share, rounded one way or the other.
    assert np.all(np.abs(np.bincount(y_te, minlength=4) - expected_test) < 1)
    assert np.all(np.abs(np.bincount(y_tr, minlength=4) - counts * len(y_tr) / len(y)) < 1)
    # An unstratified split of the same data drifts further on at least one seed-class pair.
    _, _, _, y_plain = train_test_split(x, y, test_size=0.25, seed=seed)
    assert np.abs(np.bincount(y_plain, minlength=4) - expected_test).max() >= \
        np.abs(np.bincount(y_te, minlength=4) - expected_test).max()


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("stratified", [False, True])
def test_same_indices_as_sklearn(seed, stratified):
    x, y = _imbalanced(seed=seed)
    kw = {"stratify": y} if stratified else {}
    ours = train_test_split(x, y, test_size=0.2, seed=seed, **kw)
    theirs = sk_split(x, y, test_size=0.2, random_state=seed, **kw)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)


def test_stratify_true_means_y_and_string_labels():
    y = np.array(["cat", "dog"] * 10 + ["eel"] * 4)
    x = np.arange(len(y))
    _, _, _, y_te = train_test_split(x, y, test_size=0.25, stratify=True)
    assert sorted(y_te.tolist()) == ["cat"] * 2 + ["dog"] * 3 + ["eel"] or \
        sorted(y_te.tolist()) == ["cat"] * 3 + ["dog"] * 2 + ["eel"]


def test_train_val_test_split():
    x, y = _imbalanced(1000)
    x_tr, x_va, x_te, y_tr, y_va, y_te = train_val_test_split(
        x, y, val_size=0.15, test_size=0.2, seed=0, stratify=y)
    assert (len(x_tr), len(x_va), len(x_te)) == (650, 150, 200)
    ids = np.concatenate([x_tr[:, 0], x_va[:, 0], x_te[:, 0]]).astype(int)
    np.testing.assert_array_equal(np.sort(ids), np.arange(1000))
    counts = np.bincount(y, minlength=4) / 1000
    for part in (y_tr, y_va, y_te):
        assert np.all(np.abs(np.bincount(part, minlength=4) - counts * len(part)) < 1.5)
    again = train_val_test_split(x, y, val_size=0.15, test_size=0.2, seed=0, stratify=y)
    np.testing.assert_array_equal(again[1], x_va)
    three = train_val_test_split(x, val_size=100, test_size=100)
    assert [len(a) for a in three] == [800, 100, 100]


def test_split_errors():
    x, y = _imbalanced(20)
    for bad in (0.0, 1.0, -0.1, "half", None):
        with pytest.raises(ConfigError, match="test_size"):
            train_test_split(x, y, test_size=bad)
    with pytest.raises(DataError, match="both parts non-empty"):
        train_test_split(x, y, test_size=20)
    with pytest.raises(ShapeError, match="expected y with 20 samples"):
        train_test_split(x, y[:19])
    with pytest.raises(ConfigError, match="stratify=True uses y"):
        train_test_split(x, stratify=True)
    lonely = np.array([0] * 19 + [1])
    with pytest.raises(DataError, match="at least 2 samples of every class.*found 1 of class 1"):
        train_test_split(x, lonely, stratify=lonely)
    many = np.arange(20) % 10
    with pytest.raises(DataError, match="10 classes"):
        train_test_split(x, many, test_size=0.2, stratify=many)
    with pytest.raises(ShapeError, match="stratify labels for 20 samples"):
        split_indices(20, 0.2, 0, stratify=np.zeros(5))
    with pytest.raises(ConfigError, match="val_size"):
        train_val_test_split(x, y, val_size=1.5)
    with pytest.raises(DataError, match="both parts non-empty"):
        train_val_test_split(x, y, val_size=0.8, test_size=0.2)


@pytest.mark.parametrize("seed", [-1, 2**32, "a", 1.5])
def test_seed_outside_random_state_range_is_a_config_error(seed):
    with pytest.raises(ConfigError, match="expected seed"):
        train_test_split(np.arange(10), seed=seed)


def test_unsortable_stratify_labels_and_scalars():
    x = np.arange(6)
    mixed = np.array([0, "a", 0, "a", 1, 1], dtype=object)
    with pytest.raises(DataError, match="one sortable type"):
        train_test_split(x, mixed, stratify=True)
    with pytest.raises(ShapeError, match="found a scalar"):
        train_test_split(x, 5)
    with pytest.raises(ShapeError, match="sample dimension"):
        train_val_test_split(5)


def test_stratify_by_rows_of_any_rank_and_sample_count_checks():
    x, y = np.arange(20.0).reshape(10, 2), np.array([0, 1] * 5)
    tr, te, _, _ = train_test_split(x, y, 0.4, stratify=np.zeros((10, 2, 2)))
    assert len(tr) == 6 and len(te) == 4
    for n in (5.5, "5", -5, True):
        with pytest.raises(ConfigError, match="sample count"):
            split_indices(n)


def test_seed_none_is_a_fresh_split_and_random_state_an_alias():
    x, y = np.arange(200), np.arange(200) % 2
    # None draws fresh entropy, as scikit-learn's random_state=None does
    tests = {tuple(train_test_split(x, seed=None)[1]) for _ in range(3)}
    assert len(tests) == 3
    ours = train_test_split(x, y, test_size=0.25, random_state=7)
    theirs = sk_split(x, y, test_size=0.25, random_state=7)
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    assert len(train_val_test_split(x, y, seed=None, stratify=y)) == 6
    with pytest.raises(ConfigError, match="seed or random_state"):
        train_test_split(x, seed=3, random_state=7)
