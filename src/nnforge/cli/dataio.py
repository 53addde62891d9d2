"""Labeled data for `train` and `evaluate`: where it comes from, its task, its class coding."""

from __future__ import annotations

import argparse
import re
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
    feature_names: list[str] | None = None  # a CSV header's names of the feature columns
    label_name: str | None = None  # and of the label column


#: --data's help, shared by train and evaluate
DATA_HELP = ("a .csv file (header optional), an .npz file with arrays X and y, or an IDX file "
             "of samples (.idx, .idx.gz, MNIST's *-idx3-ubyte[.gz]) with --labels")
LABELS_HELP = "the IDX file of the targets of an IDX --data file, one per sample"


def is_idx(path: str | Path) -> bool:
    """True for a file name the commands read as IDX: .idx or MNIST's *-idx3-ubyte, maybe .gz."""
    name = Path(path).name.lower().removesuffix(".gz")
    return name.endswith(".idx") or re.search(r"idx\d+-ubyte$", name) is not None


def data_name(path: str | Path) -> str:
    """What a data file is called in messages and default output paths: its name without
    the suffixes (.gz and .idx both, for images.idx.gz)."""
    if not is_idx(path):
        return Path(path).stem
    name = Path(path).name
    for suffix in (".gz", ".idx"):
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            name = name[:-len(suffix)]
    return name


def add_data_arguments(parser: argparse.ArgumentParser, required: bool) -> None:
    """--dataset NAME | --data FILE, and --label-column or --labels."""
    group = parser.add_argument_group("data")
    src = group.add_mutually_exclusive_group(required=required)
    src.add_argument("--dataset", choices=DATASETS, default=None,
                     help="a data set bundled with scikit-learn")
    src.add_argument("--data", metavar="FILE", default=None, help=DATA_HELP)
    group.add_argument("--label-column", metavar="NAME|INDEX", type=column_ref, default=None,
                       help="the CSV column holding the target, by header name or 0-based "
                            "index (default: the last column)")
    group.add_argument("--labels", metavar="FILE", default=None, help=LABELS_HELP)


def check_label_column(dataset: str | None, label_column: int | str | None,
                       labels: str | None = None) -> None:
    """--label-column names a column of a --data file, --labels the targets of an IDX one;
    with --dataset either would be ignored."""
    if dataset is not None and label_column is not None:
        raise UsageError("--label-column applies to --data files; a bundled --dataset has its "
                         "own targets")
    if dataset is not None and labels is not None:
        raise UsageError("--labels applies to IDX --data files; a bundled --dataset has its "
                         "own targets")


def load_labeled(dataset: str | None, data: str | None, label_column: int | str | None,
                 columns: list[str] | None = None, missing: str = "error",
                 labels: str | None = None) -> LabeledData:
    """Load a bundled set, a labeled .csv/.npz file, or IDX samples with their IDX `labels`
    (columns: CSV features by name; missing: "nan" reads empty feature cells as NaN)."""
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
    if is_idx(path):
        return _load_idx(path, label_column, labels)
    if labels is not None:
        raise UsageError(f"--labels applies to IDX --data files (.idx, .idx.gz, "
                         f"*-idx3-ubyte); {path.name!r} keeps its targets "
                         + ("in the array 'y'" if suffix == ".npz" else "in a column "
                            "(--label-column)"))
    if suffix in (".csv", ".tsv", ".txt"):
        delimiter = "\t" if suffix == ".tsv" else ","
        label = -1 if label_column is None else label_column
        x, y = read_csv(path, label_column=label, delimiter=delimiter, columns=columns,
                        missing=missing)
        assert y is not None
        _check_labels_present(y, path)
        return LabeledData(x, y, path.stem, None, None, *_csv_names(path, delimiter, label,
                                                                    columns))
    elif suffix == ".npz":
        if label_column is not None:
            raise UsageError("--label-column applies to CSV files; an .npz file keeps its "
                             "targets in the array 'y'")
        from .inputlimits import check_npz  # noqa: PLC0415

        check_npz(path)
        x, y = read_npz(path)
        if y is None:
            raise DataError(f"{path}: expected the targets in an array named 'y', found none")
    else:
        raise DataError(f"expected a .csv, .tsv, .npz or IDX (.idx, .idx.gz) data file, found "
                        f"{path.name!r}")
    assert y is not None
    return LabeledData(x, y, path.stem)


def _load_idx(path: Path, label_column: int | str | None, labels: str | None) -> LabeledData:
    """IDX samples (an (N, H, W) image file is N images) and their targets from --labels."""
    from ..data import read_idx  # noqa: PLC0415

    if label_column is not None:
        raise UsageError("--label-column applies to CSV files; an IDX --data file takes its "
                         "targets from --labels FILE")
    if labels is None:
        raise UsageError(f"an IDX --data file holds no targets: pass them with --labels FILE "
                         f"(e.g. --labels labels.idx.gz for {path.name!r})")
    from .inputlimits import check_idx  # noqa: PLC0415

    check_idx(path)
    check_idx(labels)
    x, y = read_idx(path), read_idx(labels)
    if x.ndim < 2:
        raise DataError(f"{path}: expected IDX samples (N, features) or images (N, H, W), "
                        f"found shape {x.shape}")
    if len(y) != len(x):
        raise DataError(f"expected one target per sample: {path.name} holds {len(x):,} "
                        f"samples, {Path(labels).name} {len(y):,} targets")
    return LabeledData(x.astype(np.float32), y, data_name(path))


def _check_labels_present(y: np.ndarray, path: Path) -> None:
    """An empty label cell is a missing target, not a class named '': refuse it."""
    if y.dtype.kind == "U":
        empty = np.flatnonzero(y == "")
        if len(empty):
            raise DataError(f"{path}: expected a label in every row, found an empty label cell "
                            f"in data row {int(empty[0]) + 1} (missing values are filled in "
                            f"feature columns only)")


def _csv_names(path: Path, delimiter: str, label_column: int | str,
               columns: list[str] | None) -> tuple[list[str] | None, str | None]:
    """(feature names, label name) from the header of a file read_csv has read, or Nones."""
    from ..data.tabular import csv_header  # noqa: PLC0415
    from .columns import label_index  # noqa: PLC0415

    header = csv_header(path, delimiter=delimiter)[0]
    if not header:
        return None, None
    label = label_index(label_column, header, len(header))
    if label is None:
        return None, None
    features = columns or [h for j, h in enumerate(header) if j != label]
    # a model can only be matched by names that tell its columns apart
    usable = len(set(features)) == len(features) and all(features)
    return (features if usable else None), header[label]


def is_multi_hot(y: np.ndarray) -> bool:
    """True for (samples, k > 1) targets of only 0 and 1: labels that are each on or off."""
    return (y.ndim == 2 and y.shape[1] > 1 and y.dtype.kind in "biuf"
            and bool(np.isin(y, (0, 1)).all()))


def is_one_hot(y: np.ndarray) -> bool:
    """True for multi-hot targets with exactly one 1 per row: classes written one-hot."""
    return is_multi_hot(y) and bool((y.sum(axis=1) == 1).all())


def infer_task(y: np.ndarray) -> str:
    """multiclass/binary for string or few-valued integer targets, multilabel for 0/1 columns,
    else regression."""
    if y.ndim == 2 and y.shape[1] > 1:
        return "multilabel" if is_multi_hot(y) else "regression"
    flat = y.reshape(len(y))
    if flat.dtype.kind in "USO":
        return "binary" if len(np.unique(flat)) <= 2 else "multiclass"
    if flat.dtype.kind in "iub":
        n_classes = len(np.unique(flat))
        # Many distinct integers with few samples each look like counts, not classes.
        if n_classes <= MAX_AUTO_CLASSES and n_classes * 5 <= len(flat):
            return "binary" if n_classes <= 2 else "multiclass"
    return "regression"


def multilabel_targets(y: np.ndarray) -> np.ndarray:
    """0/1 float32 targets of a multilabel task, or a DataError saying what they are."""
    if not is_multi_hot(y):
        found = (f"shape {y.shape}" if y.ndim != 2 or y.shape[1] < 2 else
                 "text" if y.dtype.kind not in "biuf" else "values other than 0 and 1")
        raise DataError(f"--task multilabel expects targets y of shape (samples, labels) "
                        f"holding 0 or 1 (an .npz file's y), found {found}")
    return y.astype(np.float32)


def check_classes(y: np.ndarray, task: str) -> None:
    """A numeric target that looks continuous cannot be classes: say so, not a split error."""
    if y.ndim > 1 and int(np.prod(y.shape[1:])) > 1:
        hint = " (0/1 columns: --task multilabel)" if is_multi_hot(y) else ""
        raise DataError(f"--task {task} expects one class label per sample, found targets of "
                        f"shape {y.shape}{hint}")
    flat = y.reshape(len(y))
    if flat.dtype.kind not in "iuf" or infer_task(flat) != "regression":
        return
    values, counts = np.unique(flat, return_counts=True)
    fractional = flat.dtype.kind == "f" and bool(np.any(values != np.round(values)))
    if fractional or counts.min() < 2:
        raise DataError(f"--task {task} expects class labels, but the target looks continuous "
                        f"({len(values):,} distinct values in {len(flat):,} samples); use "
                        f"--task regression")


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
