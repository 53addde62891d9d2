"""Which rows `evaluate` scores: the held-out rows of the training split when it is given the
data `nnforge train` split, every row otherwise, and a line that says which."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: the note for rows that may include training rows
MAY_INCLUDE = "this includes any rows the model was trained on"


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, read in chunks (data files can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def data_identity(dataset: str | None, data: str | None,
                  labels: str | None = None) -> dict[str, Any]:
    """What train records to recognize its data later: a bundled set by name, a file by the
    SHA-256 of its bytes (a name or a size would match an edited or a different file), and
    an IDX labels file the same way."""
    if dataset is not None:
        return {"source": "dataset"}
    assert data is not None
    found = {"source": "file", "data_sha256": file_sha256(data)}
    if labels is not None:
        found["labels_sha256"] = file_sha256(labels)
    return found


@dataclass
class RowChoice:
    """A split to score the test part of (test_size None: every row) and why these rows."""

    test_size: float | None
    seed: int = 0
    stratified: bool | None = None  # None: by task, as train splits
    # held_out: the training split's; split: --test-size's; asked: --test-size 0;
    # other: data train never saw; trained_on: train held none of it out; unknown: no record
    which: str = "unknown"


def _same_data(record: dict[str, Any], dataset: str | None, data: str | None,
               rows: int, labels: str | None = None) -> bool | None:
    """Whether this is the data train split (None: the record cannot tell)."""
    source = record.get("source")
    if source not in ("dataset", "file") or not isinstance(record.get("rows"), int):
        return None  # written before train recorded its data's identity
    if record["rows"] != rows:
        return False
    if source == "dataset":
        return dataset is not None and dataset == record.get("data")
    if record.get("labels_sha256") != (
            file_sha256(labels) if labels is not None and Path(labels).is_file() else None):
        return False  # other labels for the same images are other data
    return data is not None and Path(data).is_file() and \
        file_sha256(data) == record.get("data_sha256")


def choose_rows(manifest: dict[str, Any], test_size: float | None, seed: int | None,
                dataset: str | None, data: str | None, rows: int,
                labels: str | None = None) -> RowChoice:
    """The rows to score: --test-size wins (0: every row); without it, the training split's
    held-out rows when this is the data train recorded, else every row."""
    if test_size is not None:
        return RowChoice(test_size, seed or 0, which="split") if test_size > 0 else \
            RowChoice(None, which="asked")
    record = (manifest.get("extra") or {}).get("trained_with")
    same = _same_data(record, dataset, data, rows, labels) if isinstance(record, dict) \
        else None
    if same is None:
        return RowChoice(None)
    if not same:
        return RowChoice(None, which="other")
    assert isinstance(record, dict)
    held = record.get("test_size") or 0
    if not held:
        return RowChoice(None, which="trained_on")
    return RowChoice(held, int(record.get("seed") or 0), bool(record.get("stratified")),
                     "held_out")


def note(choice: RowChoice, scored: int) -> str | None:
    """The line that says which rows are scored, where the user could not know it."""
    if choice.which == "held_out":
        return (f"scoring the {scored:,} held-out test rows of the training split (seed "
                f"{choice.seed}, test_size {choice.test_size:g}); --test-size 0 scores every "
                f"row")
    if choice.which == "trained_on":
        return (f"scoring all {scored:,} rows: the model was trained on every row of this "
                f"data (test_size 0)")
    if choice.which == "unknown":
        return f"scoring all {scored:,} rows ({MAY_INCLUDE})"
    return None


def rows_text(choice: RowChoice, scored: int, total: int) -> str:
    """The rows scored, in words, for a report's summary and --json."""
    if choice.which == "held_out":
        return (f"{scored:,} of {total:,}: the held-out test rows of the training split "
                f"(seed {choice.seed}, test_size {choice.test_size:g})")
    if choice.which == "split":
        return (f"{scored:,} of {total:,}: the test part of the split with seed "
                f"{choice.seed}, test_size {choice.test_size:g}")
    why = {"trained_on": " (all of them training rows)", "unknown": f" ({MAY_INCLUDE})"}
    return f"all {total:,}" + why.get(choice.which, "")
