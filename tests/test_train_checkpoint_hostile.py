"""Hostile mid-epoch checkpoints: entries edited and their checksums recomputed, so only the
trainer's own checks stand between them and a resumed run. Each is refused with one
StateDictError naming the field; none raises a raw Python or NumPy error or resumes wrongly."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from test_io_damaged_files import _entries, _rewrite  # rewrites entries with valid checksums

import nnforge as nf
from nnforge import nn
from nnforge.data import DataLoader
from nnforge.errors import StateDictError
from nnforge.io.safetensors_format import deserialize, serialize
from nnforge.train import Callback
from nnforge.train.state import check_rng_state

#: 96 rows in batches of 16: 6 per epoch; the checkpoint is saved after step 8, i.e. in the
#: second epoch with 3 batches (48 rows) done
ROWS, BATCH, SAVE_AT = 96, 16, 8


def _data() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((ROWS, 6)).astype(np.float32)
    return X, ((X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)) % 3


def _fit(kind: str, callbacks: list[Callback], resume: str | None = None) -> nf.Trainer:
    nf.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    trainer = nf.Trainer(model, metrics=["accuracy"], seed=0, verbose=0)
    X, y = _data()
    data = (DataLoader((X, y), batch_size=BATCH, shuffle=True, seed=5),) if kind == "loader" \
        else (X, y)
    trainer.fit(*data, epochs=2, batch_size=BATCH, callbacks=callbacks, resume_from=resume)
    return trainer


class _SaveMidEpoch(Callback):
    def __init__(self, path: Path) -> None:
        self.path = path

    def on_batch_end(self, step: int, loss: float) -> None:
        if step == SAVE_AT:
            self.trainer.save_checkpoint(str(self.path))


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """One real mid-epoch checkpoint per kind of training data."""
    out = {}
    for kind in ("arrays", "loader"):
        out[kind] = tmp_path_factory.mktemp(kind) / "mid.nnf"
        _fit(kind, [_SaveMidEpoch(out[kind])])
    return out


def _hostile(src: Path, dst: Path, edit: Callable[[dict[str, Any], dict[str, Any]], None]
             ) -> str:
    """A copy of src with its trainer state edited (edit(state, arrays)) and its checksums
    recomputed honestly."""
    shutil.copy(src, dst)
    entries = _entries(dst)
    state = json.loads(entries["trainer.json"])
    arrays = {k: np.array(v) for k, v in deserialize(entries["trainer.safetensors"])[0].items()}
    edit(state, arrays)
    _rewrite(dst, {"trainer.json": json.dumps(state).encode(),
                   "trainer.safetensors": serialize(arrays)})
    return str(dst)


def _refused(saved: dict[str, Path], tmp_path: Path, edit: Callable[..., None],
             words: list[str], kind: str = "arrays") -> str:
    path = _hostile(saved[kind], tmp_path / "hostile.nnf", edit)
    with pytest.raises(StateDictError) as info:
        _fit(kind, [], resume=path)
    message = str(info.value)
    # one clear error: no raw exception chained behind it
    assert info.value.__cause__ is None and (info.value.__context__ is None
                                             or info.value.__suppress_context__)
    for word in words:
        assert word in message, message
    return message


def _partial(**changes: Any) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    def edit(state: dict[str, Any], arrays: dict[str, Any]) -> None:
        state["partial"].update(changes)
    return edit


def _array(key: str, make: Callable[[np.ndarray], np.ndarray]
           ) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    """Replace the partial's outputs or targets with make(the saved array)."""
    def edit(state: dict[str, Any], arrays: dict[str, Any]) -> None:
        name = state["partial"][key]["__array__"]
        arrays[name] = make(arrays[name])
    return edit


def _rng(*where: str, value: Any) -> Callable[[dict[str, Any], dict[str, Any]], None]:
    def edit(state: dict[str, Any], arrays: dict[str, Any]) -> None:
        node = state
        for key in where[:-1]:
            node = node[key]
        node[where[-1]] = value
    return edit


@pytest.mark.parametrize("kind", ["arrays", "loader"])
def test_the_untouched_checkpoint_resumes(saved, tmp_path, kind):
    """The rewriting itself is harmless: the same checkpoint, rewritten, resumes."""
    path = _hostile(saved[kind], tmp_path / "same.nnf", lambda state, arrays: None)
    state = json.loads(_entries(Path(path))["trainer.json"])
    assert state["partial"]["batches"] == 3 and state["partial"]["seen"] == 48
    assert _fit(kind, [], resume=path)._step == 12


@pytest.mark.parametrize("where, value", [
    (("partial", "order_rng", "state", "state"), -1),
    (("shuffle_rng", "state", "state"), -1),
    (("global_rng", "state", "inc"), 2**200),
    (("global_rng", "has_uint32"), 2**70),
])
def test_out_of_range_rng_states_are_refused(saved, tmp_path, where, value):
    _refused(saved, tmp_path, _rng(*where, value=value), [where[0] if where[0] != "partial"
                                                          else "order_rng"])


def test_an_out_of_range_loader_rng_state_is_refused(saved, tmp_path):
    _refused(saved, tmp_path, _rng("loader", "rng_state", "state", "state", value=-1),
             ["loader", "rng_state"], kind="loader")


@pytest.mark.parametrize("kind", ["arrays", "loader"])
@pytest.mark.parametrize("changes, words", [
    ({"batches": 2**62}, ["'batches'", "[0, 6]", str(2**62)]),
    ({"batches": 100, "seen": 1}, ["'batches'", "[0, 6]", "100"]),
    ({"batches": 7}, ["'batches'", "[0, 6]", "7"]),
    ({"seen": 1}, ["'seen'", "48", "found 1"]),
    ({"seen": 0}, ["'seen'", "48", "found 0"]),
    ({"seen": 2**63 - 1}, ["'seen'", "48"]),
])
def test_counts_that_disagree_with_the_epoch_are_refused(saved, tmp_path, kind, changes, words):
    _refused(saved, tmp_path, _partial(**changes), words, kind=kind)


@pytest.mark.parametrize("total", [float("nan"), float("inf"), float("-inf"), -1e308, -1.0])
def test_a_loss_total_that_is_not_finite_or_negative_is_refused(saved, tmp_path, total):
    _refused(saved, tmp_path, _partial(total=total), ["'total'", repr(total)])


@pytest.mark.parametrize("make, words", [
    (lambda a: a[:, 0].copy(), ["'outputs'", "(48, 3)", "(48,)"]),
    (lambda a: np.array(1.5, np.float32), ["'outputs'", "(48, 3)", "()"]),
    (lambda a: a[:, :2].copy(), ["'outputs'", "(48, 3)", "(48, 2)"]),
    (lambda a: np.concatenate([a, a[:, :1]], axis=1), ["'outputs'", "(48, 4)"]),
    (lambda a: a[:40].copy(), ["'outputs'", "(48, 3)", "(40, 3)"]),
    (lambda a: np.where(np.arange(3) == 1, np.nan, a).astype(np.float32),
     ["'outputs'", "finite"]),
    (lambda a: a > 0, ["'outputs'", "float32", "bool"]),
    (lambda a: a.astype(np.float64), ["'outputs'", "float32", "float64"]),
])
def test_outputs_of_the_wrong_shape_dtype_or_values_are_refused(saved, tmp_path, make, words):
    _refused(saved, tmp_path, _array("outputs", make), words)


@pytest.mark.parametrize("make, words", [
    (lambda a: np.where(np.arange(len(a)) == 5, 99, a), ["'targets'", "[0, 3)", "99"]),
    (lambda a: np.where(np.arange(len(a)) == 5, -3, a), ["'targets'", "[0, 3)", "-3"]),
    (lambda a: np.where(np.arange(len(a)) == 5, np.nan, a), ["'targets'", "int64", "float64"]),
    (lambda a: a.astype(bool), ["'targets'", "int64", "bool"]),
    (lambda a: a[:, None].copy(), ["'targets'", "(48,)", "(48, 1)"]),
    (lambda a: a[:47].copy(), ["'targets'", "(48,)", "(47,)"]),
])
def test_targets_of_the_wrong_shape_dtype_or_values_are_refused(saved, tmp_path, make, words):
    _refused(saved, tmp_path, _array("targets", make), words)


def test_outputs_without_targets_are_refused(saved, tmp_path):
    _refused(saved, tmp_path, _partial(targets=None), ["'outputs'", "'targets'"])


@pytest.mark.parametrize("step", [2**63 - 1, 2**62])
def test_a_step_near_the_counter_limit_is_refused(saved, tmp_path, step):
    _refused(saved, tmp_path, _rng("step", value=step), ["'step'", str(step)])


def test_a_partial_epoch_without_its_run_settings_is_refused(saved, tmp_path):
    def edit(state: dict[str, Any], arrays: dict[str, Any]) -> None:
        del state["run"]
    _refused(saved, tmp_path, edit, ["'partial'", "'run'"])


#: an {"__array__": name} marker naming a real array of the file (the partial's outputs)
_MARKER = {"__array__": "0"}


@pytest.mark.parametrize("where", [
    ("run", "data"), ("run", "frozen"), ("run", "batching", "batch_size"),
    ("shuffle_rng", "state"), ("global_rng", "state", "inc"), ("history", "loss"),
    ("partial", "lr"), ("partial", "order_rng"), ("step",),
])
def test_arrays_outside_their_slots_are_refused(saved, tmp_path, where):
    """An array where plain JSON belongs would fail as a raw ValueError or IndexError where
    it is read: refused up front, the field named."""
    _refused(saved, tmp_path, _rng(*where, value=_MARKER),
             [".".join(where), "must not be an array"])


def test_an_array_in_the_loaders_state_is_refused(saved, tmp_path):
    _refused(saved, tmp_path, _rng("loader", "rng_state", value=_MARKER),
             ["loader.rng_state", "must not be an array"], kind="loader")


@pytest.mark.parametrize("frozen, words", [
    ([1, 2], ["'frozen'", "[1, 2]"]),
    ("0.weight", ["'frozen'", "list of parameter names"]),
    ([float("nan")], ["'frozen'"]),
])
def test_frozen_must_be_a_list_of_parameter_names(saved, tmp_path, frozen, words):
    _refused(saved, tmp_path, _rng("run", "frozen", value=frozen), words)


def test_a_loader_state_at_another_batch_than_the_partial_is_refused(saved, tmp_path):
    """A resumed epoch would drop or repeat batches (as a checkpoint saved from
    on_batch_begin before the loader's state was saved as of the part-epoch did)."""
    _refused(saved, tmp_path, _rng("loader", "batches_done", value=4),
             ["'batches' is 3", "'batches_done' 4"], kind="loader")


def test_a_state_with_an_array_for_an_rng_is_refused_directly():
    """Trainer.load_state_dict() takes arrays as they are: NumPy's IndexError is caught."""
    trainer = nf.Trainer(nn.Sequential(nn.Linear(6, 3)), seed=0, verbose=0)
    state = trainer.state_dict()
    state["shuffle_rng"] = {**state["shuffle_rng"], "state": np.arange(3)}
    with pytest.raises(StateDictError, match="shuffle_rng.state must not be an array"):
        trainer.load_state_dict(state)
    with pytest.raises(StateDictError, match="IndexError"):
        check_rng_state(state["shuffle_rng"], np.random.PCG64, "'shuffle_rng'")
