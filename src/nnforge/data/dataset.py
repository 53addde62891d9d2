"""`ArrayDataset` and `DataLoader`: batches of NumPy arrays, seeded shuffling, exact resume."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import ConfigError, ShapeError, StateDictError
from ..random import get_rng


class Dataset:
    """Base of map-style data sets: item i is a tuple of arrays (one sample)."""

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        raise NotImplementedError


class ArrayDataset(Dataset):
    """Several arrays that share their first dimension; item i is the tuple of their rows i."""

    def __init__(self, *arrays: Any) -> None:
        if not arrays:
            raise ShapeError("expected at least one array, found none")
        arrs = tuple(np.asarray(a) for a in arrays)
        for i, a in enumerate(arrs):
            if a.ndim == 0:
                raise ShapeError(f"expected arrays with a sample dimension, found a scalar at "
                                 f"position {i}")
        n = arrs[0].shape[0]
        for i, a in enumerate(arrs[1:], start=1):
            if a.shape[0] != n:
                raise ShapeError(f"expected every array to have {n} samples (like array 0), "
                                 f"found {a.shape[0]} in array {i}")
        self.arrays = arrs

    def __len__(self) -> int:
        return int(self.arrays[0].shape[0])

    def __getitem__(self, index: Any) -> tuple[np.ndarray, ...]:
        return tuple(a[index] for a in self.arrays)

    def take(self, indices: np.ndarray) -> tuple[np.ndarray, ...]:
        """Gather the rows at `indices` of every array (one fancy-indexing copy per array)."""
        # mode="clip" skips the bounds check: the loader only passes indices in range.
        return tuple(np.take(a, indices, axis=0, mode="clip") for a in self.arrays)


def _as_dataset(data: Any) -> Any:
    if isinstance(data, ArrayDataset):
        return data
    if isinstance(data, np.ndarray):
        return ArrayDataset(data)
    if isinstance(data, (tuple, list)):
        return ArrayDataset(*data)
    if isinstance(data, Mapping):  # has __getitem__, but item 0 would be a KeyError later
        raise ConfigError(f"expected an ArrayDataset, an array or a tuple of arrays, found a "
                          f"{type(data).__name__} (pass its arrays as a tuple: (X, y))")
    if hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        return data  # a map-style dataset: item i is a tuple of arrays
    raise ConfigError(f"expected an ArrayDataset, an array, a tuple of arrays or a dataset with "
                      f"__len__ and __getitem__, found {type(data).__name__}")


def _read_only(a: np.ndarray) -> np.ndarray:
    a.flags.writeable = False  # a view of the caller's data: writing to it would corrupt it
    return a


class DataLoader:
    """Iterate a dataset in batches (tuples of arrays); seeded shuffle; resumable by state_dict.

    A loader has one position (what state_dict() saves), so one iteration runs at a time:
    starting a new one abandons the one in progress (its epoch still counts), and advancing
    the abandoned iterator afterwards raises ConfigError instead of mixing two positions.
    """

    def __init__(self, dataset_or_arrays: Any, batch_size: int = 32, shuffle: bool = False,
                 drop_last: bool = False, seed: int | None = None) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Real) \
                or not math.isfinite(batch_size) or int(batch_size) != batch_size \
                or batch_size < 1:
            raise ConfigError(f"expected batch_size >= 1, found {batch_size!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)
                                 or seed < 0):
            raise ConfigError(f"expected seed to be None or an integer >= 0, found {seed!r}")
        self.dataset = _as_dataset(dataset_or_arrays)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        if seed is None and self.shuffle:
            # Drawn from nnforge's global generator so manual_seed() makes runs reproducible.
            seed = int(get_rng().integers(2**63))
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self.epoch = 0  # completed epochs
        self._batches_done = 0  # batches handed out in the epoch in progress
        self._epoch_state: dict[str, Any] | None = None  # generator state when it began
        self._resume = False
        self._iteration = 0  # number of the newest iteration; older iterators are stale

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def _gather(self, indices: Sequence[int] | np.ndarray | slice) -> tuple[np.ndarray, ...]:
        ds = self.dataset
        if isinstance(ds, ArrayDataset):
            if isinstance(indices, slice):  # unshuffled: contiguous views, no copy
                return tuple(_read_only(a[indices]) for a in ds.arrays)
            return ds.take(indices)
        if isinstance(indices, slice):
            indices = range(*indices.indices(len(ds)))
        items = [ds[int(i)] for i in indices]
        if not isinstance(items[0], tuple):
            return (np.stack([np.asarray(x) for x in items]),)
        return tuple(np.stack([np.asarray(x) for x in col]) for col in zip(*items))

    def __iter__(self) -> Iterator[tuple[np.ndarray, ...]]:
        n, bs = len(self.dataset), self.batch_size
        self._iteration += 1
        mine = self._iteration
        if self._resume:
            # load_state_dict() put the generator back to where this epoch began.
            self._resume = False
            start = self._batches_done
        else:
            if self._batches_done:  # the previous epoch was abandoned part-way: it still counts
                self.epoch += 1
            start = 0
        self._batches_done = start
        self._epoch_state = self._rng.bit_generator.state if self.shuffle else None
        order = self._rng.permutation(n) if self.shuffle else None
        for b in range(start, len(self)):
            self._check_current(mine)
            lo, hi = b * bs, min((b + 1) * bs, n)
            batch = self._gather(slice(lo, hi) if order is None else order[lo:hi])
            # Counted before the yield: a state_dict() taken while the consumer holds this
            # batch must say it was already handed out.
            self._batches_done = b + 1
            yield batch
        self._check_current(mine)
        self.epoch += 1
        self._batches_done = 0
        self._epoch_state = None

    def _check_current(self, mine: int) -> None:
        if mine != self._iteration:
            raise ConfigError("this DataLoader iterator was abandoned: a newer iteration of the "
                              "same loader started (a loader has one position; build a second "
                              "DataLoader to iterate twice at once)")

    def end_epoch(self) -> None:
        """Count the epoch in progress as over, its other batches skipped (a run stopped
        part-way); an iterator still held on it becomes stale."""
        if self._resume and self.shuffle:  # its order was never drawn: draw it, as __iter__
            self._rng.permutation(len(self.dataset))
        if self._batches_done:
            self.epoch += 1
            self._batches_done = 0
        self._epoch_state = None
        self._resume = False
        self._iteration += 1

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable position: completed epochs, batches done, generator state."""
        epoch, done, rng_state = self.epoch, self._batches_done, self._rng.bit_generator.state
        if done and done == len(self):  # last batch handed out: the epoch is over
            epoch, done = epoch + 1, 0
        elif done and self._epoch_state is not None:
            rng_state = self._epoch_state  # replaying from here redraws this epoch's order
        return {
            "epoch": epoch,
            "batches_done": done,
            "rng_state": rng_state,
            "num_samples": len(self.dataset),
            "batch_size": self.batch_size,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def state_within_epoch(self, batches_done: int) -> dict[str, Any]:
        """state_dict() as a consumer that has finished `batches_done` batches of the epoch in
        progress sees it: the batch it holds is not done yet, and the epoch is not over
        while it holds the last one. Loading it replays the epoch's order from its start
        and hands out the batches after those (none after the last: the epoch then ends)."""
        rng_state = self._epoch_state if self._epoch_state is not None \
            else self._rng.bit_generator.state  # not iterated yet: still at the epoch's start
        return {**self.state_dict(), "epoch": self.epoch, "batches_done": int(batches_done),
                "rng_state": rng_state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state_dict(): the next iteration continues exactly where it was taken."""
        expected = ("epoch", "batches_done", "rng_state", "num_samples", "batch_size", "shuffle",
                    "drop_last")
        if not isinstance(state, Mapping):
            raise StateDictError(f"expected a DataLoader state dict, found {type(state).__name__}")
        missing = [k for k in expected if k not in state]
        if missing:
            raise StateDictError(f"expected DataLoader state keys {list(expected)}, "
                                 f"found {sorted(state)} (missing {missing})")
        for key, mine in (("num_samples", len(self.dataset)), ("batch_size", self.batch_size),
                          ("shuffle", self.shuffle), ("drop_last", self.drop_last)):
            if state[key] != mine:
                raise StateDictError(f"expected a DataLoader state with {key}={mine!r}, "
                                     f"found {key}={state[key]!r}")
        # everything is checked before anything changes: a refused state leaves the loader as is
        epoch, done = state["epoch"], state["batches_done"]
        for key, value in (("epoch", epoch), ("batches_done", done)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise StateDictError(f"expected {key} as an integer >= 0, found {value!r}")
        if done > len(self):
            raise StateDictError(f"expected batches_done in [0, {len(self)}], found {done}")
        probe = np.random.default_rng()
        try:
            probe.bit_generator.state = state["rng_state"]
        except (TypeError, ValueError, KeyError) as exc:
            raise StateDictError(f"expected rng_state as saved by state_dict(), found "
                                 f"{state['rng_state']!r:.80} ({exc})") from None
        self._rng.bit_generator.state = state["rng_state"]
        self.epoch = int(epoch)
        self._batches_done = int(done)
        self._epoch_state = None
        self._resume = done > 0
