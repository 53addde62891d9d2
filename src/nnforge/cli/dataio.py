"""Labeled data for `train` and `evaluate`: where it comes from, its task, its class coding."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, DataError
from .common import UsageError, column_ref

DATASETS = ("digits", "iris", "wine", "breast_cancer", "diabetes")
#: An integer target with more distinct values than this is taken for a regression target.
MAX_AUTO_CLASSES = 100


@dataclass
class LabeledData:
    """Features, raw targets (int, float or str) and what the source says about them."""

    x: np.ndarray
    y: np.ndarray
    name: str
    task: str | None = None  # known for the bundled sets
    class_names: list[str] | None = None  # bundled sets: names by class index


def add_data_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    """--dataset NAME | --data FILE, and --label-column."""
    group = parser.add_argument_group("data")
    src = group.add_mutually_exclusive_group(required=required)
    src.add_argument("--dataset", choices=DATASETS, default=None,
                     help="a data set bundled with scikit-learn")
    src.add_argument("--data", metavar="FILE", default=None,
                     help="a .csv file (header optional) or an .npz file with arrays X and y")
    group.add_argument("--label-column", metavar="NAME|INDEX", type=column_ref, default=None,
                       help="the CSV column holding the target, by header name or 0-based "
                            "index (default: the last column)")


def check_label_column(dataset: str | None, label_column: int | str | None) -> None:
    """--label-column names a column of a --data file; with --dataset it would be ignored."""
    if dataset is not None and label_column is not None:
        raise UsageError("--label-column applies to --data files; a bundled --dataset has its "
                         "own targets")


def load_labeled(dataset: str | None, data: str | None,
                 label_column: int | str | None) -> LabeledData:
    """Load a bundled set or a labeled .csv/.npz file."""
    from ..data import load_dataset, read_csv, read_npz  # noqa: PLC0415

    if dataset is not None:
        if dataset not in DATASETS:
            raise ConfigError(f"expected a data set name in {list(DATASETS)}, found {dataset!r}")
        b = load_dataset(dataset)
        return LabeledData(b.X, b.y, dataset, b.task, list(b.target_names) or None)
    if data is None:
        raise UsageError("expected a data source: --dataset NAME or --data FILE")
    path = Path(data)
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        delimiter = "\t" if suffix == ".tsv" else ","
        x, y = read_csv(path, label_column=-1 if label_column is None else label_column,
                        delimiter=delimiter)
    elif suffix == ".npz":
        if label_column is not None:
            raise UsageError("--label-column applies to CSV files; an .npz file keeps its "
                             "targets in the array 'y'")
        x, y = read_npz(path)
        if y is None:
            raise DataError(f"{path}: expected the targets in an array named 'y', found none")
    else:
        raise DataError(f"expected a .csv, .tsv or .npz data file, found {path.name!r}")
    assert y is not None
    return LabeledData(x, y, path.stem)


def infer_task(y: np.ndarray) -> str:
    """multiclass/binary for string or few-valued integer targets, else regression."""
    if y.ndim == 2 and y.shape[1] > 1:
        return "regression"
    flat = y.reshape(len(y))
    if flat.dtype.kind in "USO":
        return "binary" if len(np.unique(flat)) <= 2 else "multiclass"
    if flat.dtype.kind in "iub":
        n_classes = len(np.unique(flat))
        # Many distinct integers with few samples each look like counts, not classes.
        if n_classes <= MAX_AUTO_CLASSES and n_classes * 5 <= len(flat):
            return "binary" if n_classes <= 2 else "multiclass"
    return "regression"


def encode_classes(y: np.ndarray, class_names: list[str] | None = None
                   ) -> tuple[np.ndarray, list[Any]]:
    """(class indices, labels by index): sorted distinct values, or the bundled names."""
    flat = y.reshape(len(y))
    if flat.dtype.kind == "f":
        if not np.all(np.isfinite(flat)) or np.any(flat != np.round(flat)):
            raise DataError("expected integer or text class labels, found fractional or "
                            "non-finite targets (use --task regression for numeric targets)")
        flat = flat.astype(np.int64)
    values, indices = np.unique(flat, return_inverse=True)
    if class_names is not None and flat.dtype.kind in "iu" and \
            np.array_equal(values, np.arange(len(values))) and len(values) <= len(class_names):
        return indices.astype(np.int64), list(class_names)
    labels = [str(v) if flat.dtype.kind in "USO" else int(v) for v in values]
    return indices.astype(np.int64), labels


def targets_for_model(y: np.ndarray, task: str | None, labels: list[Any] | None,
                      n_outputs: int) -> np.ndarray:
    """Map data targets to what a saved model predicts: class indices, or float values."""
    if task in (None, "regression", "multilabel"):
        if y.dtype.kind not in "biuf":
            raise DataError(f"expected numeric targets for a {task or 'regression'} model, "
                            f"found text")
        return y.astype(np.float32)
    flat = y.reshape(len(y))
    n_classes = len(labels) if labels else (2 if task == "binary" else n_outputs)
    if flat.dtype.kind in "USO" or (labels and flat.dtype.kind in "iuf"
                                    and all(isinstance(v, int) for v in labels)):
        if flat.dtype.kind == "f":
            flat = flat.astype(np.int64)
        if not labels:
            raise DataError("expected numeric class indices: the model stores no class labels "
                            "to match text targets against")
        lookup = {(str(v) if flat.dtype.kind in "USO" else v): i for i, v in enumerate(labels)}
        try:
            return np.fromiter((lookup[v] for v in flat.tolist()), np.int64, len(flat))
        except KeyError as exc:
            raise DataError(f"expected targets among the model's labels {labels}, found "
                            f"{exc.args[0]!r}") from None
    if flat.dtype.kind == "f" and np.any(flat != np.round(flat)):
        raise DataError("expected integer class indices as targets, found fractional values")
    idx = flat.astype(np.int64)
    if idx.min() < 0 or idx.max() >= n_classes:
        raise DataError(f"expected class indices in [0, {n_classes - 1}], found values in "
                        f"[{idx.min()}, {idx.max()}]")
    return idx
