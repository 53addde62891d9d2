"""Seeded, optionally stratified train/test and train/validation/test splits."""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError, ShapeError


def _sizes(n: int, test_size: float | int) -> tuple[int, int]:
    """(n_train, n_test): a fraction rounds the test part up, as scikit-learn does."""
    if isinstance(test_size, Integral) and not isinstance(test_size, bool):
        n_test = int(test_size)
    elif isinstance(test_size, Real) and 0.0 < test_size < 1.0:
        n_test = math.ceil(float(test_size) * n)
    else:
        raise ConfigError(f"expected test_size to be a fraction in (0, 1) or a count, "
                          f"found {test_size!r}")
    if not 0 < n_test < n:
        raise DataError(f"expected a split leaving both parts non-empty, found {n_test} held-out "
                        f"samples out of {n}")
    return n - n_test, n_test


def _allocate(counts: np.ndarray, n_draws: int, rng: np.random.RandomState) -> np.ndarray:
    """Share n_draws among classes in proportion to counts; tied remainders drawn at random."""
    share = counts / counts.sum() * n_draws
    alloc = np.floor(share)
    left = int(n_draws - alloc.sum())
    remainder = share - alloc
    for value in np.unique(remainder)[::-1]:  # largest remainders get the leftover draws first
        if left == 0:
            break
        tied = np.flatnonzero(remainder == value)
        chosen = rng.choice(tied, size=min(len(tied), left), replace=False)
        alloc[chosen] += 1
        left -= len(chosen)
    return alloc.astype(np.int64)


def split_indices(n: int, test_size: float | int = 0.2, seed: int = 0,
                  stratify: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """(train_indices, test_indices), both shuffled; stratified keeps class proportions."""
    if isinstance(n, bool) or not isinstance(n, Integral) or n < 0:
        raise ConfigError(f"expected n to be a sample count (an integer >= 0), found {n!r}")
    n_train, n_test = _sizes(int(n), test_size)
    if isinstance(seed, bool) or not isinstance(seed, Integral) or not 0 <= seed < 2**32:
        raise ConfigError(f"expected seed to be an integer in [0, 2**32), found {seed!r}")
    # A legacy RandomState on purpose: with it, the same seed gives the same split as
    # scikit-learn's train_test_split(random_state=seed), so results compare across tools.
    rng = np.random.RandomState(seed)
    if stratify is None:
        perm = rng.permutation(n)
        return perm[n_test:], perm[:n_test]
    labels = np.asarray(stratify)
    if labels.shape[:1] != (n,):
        raise ShapeError(f"expected stratify labels for {n} samples, found shape {labels.shape}")
    if labels.ndim >= 2:  # multilabel rows: one class per distinct row
        labels = np.array([" ".join(map(str, row)) for row in labels.reshape(n, -1)])
    try:
        classes, inverse = np.unique(labels, return_inverse=True)
    except TypeError as e:  # e.g. an object array mixing strings and numbers
        raise DataError(f"expected stratify labels of one sortable type, found: {e}") from None
    counts = np.bincount(inverse.ravel())
    if counts.min() < 2:
        rare = classes[int(np.argmin(counts))].tolist()
        raise DataError(f"expected at least 2 samples of every class to stratify, found "
                        f"{counts.min()} of class {rare!r}")
    if min(n_train, n_test) < len(classes):
        raise DataError(f"expected at least one sample per class ({len(classes)} classes) in "
                        f"both parts, found {n_train} train and {n_test} test samples")
    members = np.split(np.argsort(inverse.ravel(), kind="mergesort"), np.cumsum(counts)[:-1])
    n_tr = _allocate(counts, n_train, rng)
    n_te = _allocate(counts - n_tr, n_test, rng)
    train, test = [], []
    for idx, a, b in zip(members, n_tr, n_te):
        idx = idx[rng.permutation(len(idx))]
        train.append(idx[:a])
        test.append(idx[a:a + b])
    return rng.permutation(np.concatenate(train)), rng.permutation(np.concatenate(test))


def _stratify_labels(stratify: Any, y: Any) -> Any:
    if stratify is True:
        if y is None:
            raise ConfigError("stratify=True uses y, so expected y, found None")
        return y
    return None if stratify is False else stratify


def _take(a: Any, idx: np.ndarray) -> np.ndarray:
    return np.take(np.asarray(a), idx, axis=0)


def _samples(x: Any, y: Any) -> tuple[np.ndarray, int]:
    """x as an array and its sample count, after checking that y has as many samples."""
    x = np.asarray(x)
    if x.ndim == 0:
        raise ShapeError(f"expected X with a sample dimension, found a scalar {x!r:.40}")
    if y is not None and np.ndim(y) == 0:
        raise ShapeError(f"expected y with {len(x)} samples like X, found a scalar {y!r:.40}")
    if y is not None and len(y) != len(x):
        raise ShapeError(f"expected y with {len(x)} samples like X, found {len(y)}")
    return x, len(x)


def _seed_arg(seed: Any, random_state: Any) -> Any:
    """The split's seed: seed, or scikit-learn's name for it, random_state (not both); None
    draws a fresh one, as random_state=None does there."""
    if random_state is not None:
        if seed not in (0, None):
            raise ConfigError(f"pass seed or random_state (the same thing), not both; found "
                              f"seed={seed!r} and random_state={random_state!r}")
        seed = random_state
    if seed is None:
        return int(np.random.SeedSequence().generate_state(1)[0])  # a uint32: RandomState's
    return seed


def train_test_split(x: Any, y: Any = None, test_size: float | int = 0.2, seed: int | None = 0,
                     stratify: Any = None, *, random_state: int | None = None
                     ) -> tuple[np.ndarray, ...]:
    """X_train, X_test, y_train, y_test (or X_train, X_test without y); stratify=y or True;
    seed=None for a fresh split each call (random_state= is an alias of seed)."""
    x, n = _samples(x, y)
    seed = _seed_arg(seed, random_state)
    train, test = split_indices(n, test_size, seed, _stratify_labels(stratify, y))
    out = (_take(x, train), _take(x, test))
    return out if y is None else out + (_take(y, train), _take(y, test))


def train_val_test_split(x: Any, y: Any = None, val_size: float | int = 0.1,
                         test_size: float | int = 0.2, seed: int | None = 0,
                         stratify: Any = None, *, random_state: int | None = None
                         ) -> tuple[np.ndarray, ...]:
    """X_train, X_val, X_test, y_train, y_val, y_test; sizes are fractions of the whole set;
    seed and random_state as in train_test_split."""
    x, n = _samples(x, y)
    seed = _seed_arg(seed, random_state)
    labels = _stratify_labels(stratify, y)
    rest, test = split_indices(n, test_size, seed, labels)
    if isinstance(val_size, Real) and not isinstance(val_size, Integral):
        if not 0.0 < val_size < 1.0:
            raise ConfigError(f"expected val_size to be a fraction in (0, 1) or a count, "
                              f"found {val_size!r}")
        val_size = math.ceil(float(val_size) * n)  # a fraction of the whole set, not the rest
    sub = None if labels is None else _take(labels, rest)
    train, val = split_indices(len(rest), val_size, seed, sub)
    train, val = rest[train], rest[val]
    out = (_take(x, train), _take(x, val), _take(x, test))
    return out if y is None else out + (_take(y, train), _take(y, val), _take(y, test))
