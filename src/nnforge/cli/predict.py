"""`nnforge predict`: stream rows from CSV/NPY/NPZ/JSON through a model into CSV or JSON.

A CSV input is read chunk by chunk and each chunk's predictions are written before the next
chunk is read, so memory stays bounded by a few batches however long the file is. With
--output the result appears atomically (temp file + rename): never half a file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import IO, Any, Iterator

import numpy as np

from .common import (
    UsageError,
    atomic_output,
    check_output_path,
    column_ref,
    new_command,
    positive_int,
    sample_shape,
)

EXAMPLES = """\
  nnforge predict model.nnf --input rows.csv                      # CSV to stdout
  nnforge predict model.nnf --input rows.csv --output preds.csv --batch-size 4096
  nnforge predict model.nnf --input images.npy --format json
  nnforge predict model.nnf --input request.json --output preds.json
  nnforge predict model.nnf --input labeled.csv --label-column target   # ignore that column
  nnforge predict model.nnf --input t10k-images-idx3-ubyte.gz       # IDX images, as MNIST's

inputs: .csv/.tsv (header optional; one sample per row), .npy (an array of samples), .npz (the
array X or x), .json (a list of rows, {"instances": [...]} or {"data": [...]}), IDX (.idx,
.idx.gz, *-idx3-ubyte[.gz]: an array of samples). An array of one sample's shape is that one
sample (an (H, W) image too, for a model of (1, H, W) images); (N, H, W) images get their
channel axis.
classification output has the columns class, label and one probability per class (binary:
the probability of the positive class); regression output has the predicted value(s)."""

#: Rows read and predicted per step when --batch-size is not given.
DEFAULT_BATCH = 8192


def add_parser(sub: Any) -> None:
    """Register `predict`."""
    p = new_command(sub, "predict", "predict a file of samples with a model",
                    "Run a .nnf model over the samples in a file, applying its stored "
                    "preprocessing and task post-processing; CSV inputs are streamed in "
                    "bounded memory.", EXAMPLES)
    p.add_argument("model", metavar="MODEL", help="the .nnf model file (or an .onnx file)")
    p.add_argument("-i", "--input", required=True, metavar="FILE",
                   help="samples: .csv, .tsv, .npy, .npz, .json or IDX (.idx[.gz])")
    p.add_argument("-o", "--output", metavar="FILE",
                   help="where to write the predictions: .csv or .json (default or '-': "
                        "stdout)")
    p.add_argument("--format", choices=("csv", "json"),
                   help="output format (default: from the --output suffix, else csv)")
    p.add_argument("--batch-size", type=positive_int, metavar="N",
                   help=f"rows read and predicted per step (default: {DEFAULT_BATCH})")
    p.add_argument("--label-column", metavar="NAME|INDEX", type=column_ref,
                   help="a CSV column to ignore (e.g. the true labels of a labeled file)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Predict the input file."""
    from ..runtime import InferenceSession  # noqa: PLC0415

    output = None if args.output == "-" else args.output  # '-': stdout, as usual
    fmt = _format_of(output, args.format)
    _check_readable(args.input)
    if output is not None:
        check_output_path(output, "--output", [("--input file", args.input),
                                               ("model file", args.model)], in_place_ok=True)
    session = InferenceSession(args.model)
    batch = args.batch_size or DEFAULT_BATCH
    if output is None:
        predict_file(session, args.input, sys.stdout, fmt, batch, args.label_column)
        sys.stdout.flush()
        return 0
    with atomic_output(output) as fh:
        rows = predict_file(session, args.input, fh, fmt, batch, args.label_column)
    print(f"wrote {rows:,} predictions to {output}", file=sys.stderr)
    return 0


def _format_of(output: str | None, fmt: str | None = None) -> str:
    """The output format: --format, else what the --output name implies.

    Any other suffix needs an explicit --format; a --format that contradicts the suffix (JSON
    into preds.csv) is refused rather than writing a file whose name lies about its content.
    """
    suffix = Path(output).suffix.lower() if output else ""
    implied = {".json": "json", ".csv": "csv"}.get(suffix)
    if fmt is not None:
        if implied is not None and implied != fmt:
            raise UsageError(f"expected --format to match the --output suffix, found --format "
                             f"{fmt} for {Path(output or '').name!r} (drop --format, or name a "
                             f".{fmt} file)")
        return fmt
    if implied is not None:
        return implied
    if suffix in ("", ".txt"):
        return "csv"
    raise UsageError(f"expected --output to end in .csv or .json (or --format csv|json to "
                     f"choose), found {Path(output or '').name!r}")


def _check_readable(path: str) -> None:
    from ..errors import DataError  # noqa: PLC0415

    p = Path(path)
    if not p.exists():
        raise DataError(f"expected an input file at {path!r}, found no such file")
    if p.is_dir():
        raise DataError(f"expected an input file at {path!r}, found a directory")


# -- reading ---------------------------------------------------------------------------------
def _json_rows(path: str, dtype: Any = np.float32) -> np.ndarray:
    from ..errors import DataError  # noqa: PLC0415

    try:
        with open(path, encoding="utf-8-sig") as fh:  # -sig: Windows tools write a BOM
            doc = json.load(fh)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: expected valid JSON, found: {exc}") from None
    except RecursionError:  # Python's parser recurses once per '[' or '{'
        raise DataError(f"{path}: expected rows of numbers, found JSON nested too deeply to "
                        f"read") from None
    except UnicodeDecodeError:  # its own message would not name the file
        with open(path, "rb") as fh:
            utf16 = fh.read(2) in (b"\xff\xfe", b"\xfe\xff")
        raise DataError(f"{path}: expected JSON in UTF-8 text, found "
                        + ("UTF-16 text (save it as UTF-8)" if utf16 else
                           "binary or other non-UTF-8 data")) from None
    except ValueError as exc:  # integers of over 4300 digits (after UnicodeDecodeError,
        # itself a ValueError)
        raise DataError(f"{path}: expected rows of numbers, found a number JSON cannot be "
                        f"read as one ({exc})") from None
    if isinstance(doc, dict):
        key = next((k for k in ("instances", "data", "inputs") if k in doc), None)
        if key is None:
            keys = [str(k) for k in doc][:5] + ([f"... ({len(doc)} in all)"] if len(doc) > 5
                                                  else [])
            raise DataError(f"{path}: expected a list of rows or an object with 'instances' "
                            f"or 'data' (a list of rows), found an object with keys "
                            f"[{', '.join(keys)}]")
        doc = doc[key]
    if not isinstance(doc, list) or not doc:
        raise DataError(f"{path}: expected a non-empty list of samples, found "
                        f"{type(doc).__name__ if not isinstance(doc, list) else 'an empty list'}")
    try:
        # integer ids (an embedding's) are read as integers: float32 holds them exactly only
        # up to 2**24
        arr = np.asarray(doc, dtype=None if np.dtype(dtype).kind in "iu" else np.float32)
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"non-numeric values ({arr.dtype})")
    except OverflowError:  # an integer with hundreds of digits: no float holds it
        raise DataError(f"{path}: expected numbers within the range of float32, found an "
                        f"integer too large to convert") from None
    except RecursionError:
        raise DataError(f"{path}: expected rows of numbers, found lists nested too deeply")\
            from None
    except (ValueError, TypeError):
        raise DataError(f"{path}: expected samples of numbers, all of the same shape, found "
                        f"rows of different lengths or non-numeric values") from None
    return arr


def _npy_rows(path: str) -> np.ndarray:
    from ..errors import DataError  # noqa: PLC0415

    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)  # mapped: read as needed
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{path}: expected a .npy array file, found: {exc}") from None
    if arr.dtype.kind not in "biuf" or arr.ndim == 0:
        raise DataError(f"{path}: expected a numeric array of samples, found dtype {arr.dtype} "
                        f"and shape {arr.shape}")
    return arr


def iter_input(path: str, batch: int, label_column: int | str | None = None,
               shape: tuple[int, ...] | None = None, columns: list[str] | None = None,
               missing: str = "error", dtype: Any = np.float32) -> Iterator[np.ndarray]:
    """Feature chunks of at most `batch` rows from a CSV/TSV, NPY, NPZ, JSON or IDX file.

    An array of exactly one sample's `shape` (a JSON row, one image) is one sample; columns
    picks a CSV's feature columns by header name, in that order; missing="nan" reads a CSV's
    empty and NA cells as NaN. Chunks come as `dtype` (an integer one for a model of ids,
    whose inputs must then be whole numbers).
    """
    dtype = np.dtype(dtype)
    from ..data import iter_csv, read_idx, read_npz  # noqa: PLC0415
    from ..errors import DataError  # noqa: PLC0415
    from ..runtime.feeds import as_input_dtype  # noqa: PLC0415
    from .dataio import is_idx  # noqa: PLC0415
    from .inputlimits import STREAM_HINT, check_idx, check_npz  # noqa: PLC0415

    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".tsv", ".txt"):
        done = 0  # rows before this chunk, so errors number samples in the whole file
        for x, _ in iter_csv(path, label_column=label_column, chunk_rows=batch,
                             delimiter="\t" if suffix == ".tsv" else ",", columns=columns,
                             missing=missing):
            yield x if dtype.kind == "f" else as_input_dtype(x, dtype, path, done)
            done += len(x)
        return
    if label_column is not None:
        raise UsageError(f"--label-column applies to CSV inputs only, found "
                         f"{Path(path).name!r}")
    if is_idx(path):
        check_idx(path, STREAM_HINT)
        arr = read_idx(path)
    elif suffix == ".npy":
        arr = _npy_rows(path)
    elif suffix == ".npz":
        check_npz(path, ("X", "x"), STREAM_HINT)
        arr = read_npz(path, y_key=None)[0]
    elif suffix == ".json":
        arr = _json_rows(path, dtype)
    else:
        raise DataError(f"expected a .csv, .tsv, .npy, .npz, .json or IDX (.idx, .idx.gz) "
                        f"input file, found {Path(path).name!r}")
    if shape is not None:
        arr = _as_samples(arr, tuple(shape), path)
    for i in range(0, len(arr), batch):
        yield as_input_dtype(arr[i:i + batch], dtype, path, i)


def _fits(sample: tuple[int, ...], shape: tuple[Any, ...]) -> bool:
    """Samples of this shape are the model's (or reshape to them, see _conform)."""
    if sample == shape or None in shape:  # free dimensions: the session checks them
        return True
    # flat rows of pixels, or images without their single channel: same values, same order
    return (len(sample) == 1 and sample[0] == int(np.prod(shape))) or \
        tuple(d for d in sample if d != 1) == tuple(d for d in shape if d != 1)


def _as_samples(arr: np.ndarray, shape: tuple[Any, ...], path: str) -> np.ndarray:
    """An array file's samples: the array itself is one sample when it has the model's sample
    shape, or is one (H, W) image for a model of (1, H, W) samples; else its first axis counts
    samples, and a ShapeError says how the file was read when those samples do not fit."""
    from ..errors import ShapeError  # noqa: PLC0415

    if arr.shape == shape or (len(shape) == 3 and shape[0] == 1 and arr.shape == shape[1:]):
        return arr[None]
    if arr.ndim and _fits(arr.shape[1:], shape):
        return arr
    n, each = (arr.shape[0] if arr.ndim else 1), arr.shape[1:]
    read = (f"{n} samples of {each[0]} features" if len(each) == 1 else
            f"{n} samples of one value" if not each else f"{n} samples of shape {each}")
    takes = (f"{shape[0]} features per sample" if len(shape) == 1 else
             f"samples of shape {shape}")
    hint = (f" (one sample: save it with shape {shape})"
            if None not in shape and arr.size == int(np.prod(shape)) else "")
    raise ShapeError(f"{path}: an array of shape {arr.shape}, read as {read}; the model takes "
                     f"{takes}{hint}")


def _conform(x: np.ndarray, shape: tuple[int, ...], path: str) -> np.ndarray:
    """Rows shaped as the model's samples: flat rows of images are reshaped, others checked."""
    from ..errors import ShapeError  # noqa: PLC0415

    if x.shape[1:] == shape or None in shape:  # free dimensions: the session checks them
        return x
    size = int(np.prod(shape))
    if _fits(x.shape[1:], shape):
        return x.reshape(len(x), *shape)
    if x.ndim == 2:
        raise ShapeError(f"{path}: expected {size} feature columns for this model, found "
                         f"{x.shape[1]}")
    raise ShapeError(f"{path}: expected samples of shape {shape} for this model, found "
                     f"{x.shape[1:]}")


def _check_finite(x: np.ndarray, path: str, offset: int, allow_nan: bool = False) -> None:
    """A DataError naming the sample (counted over the whole file) that holds a NaN or inf
    (allow_nan: only inf, for a model that fills in missing values)."""
    from ..errors import DataError  # noqa: PLC0415

    if x.dtype.kind == "f" and not np.isfinite(np.add.reduce(x, axis=None)):
        flat = x.reshape(len(x), -1)
        bad = np.isinf(flat) if allow_nan else ~np.isfinite(flat)
        if bad.any():
            row, col = np.unravel_index(int(np.argmax(bad)), bad.shape)
            raise DataError(f"{path}: expected finite values, found {flat[row, col]} in sample "
                            f"{offset + int(row) + 1}, value {int(col) + 1}")


def missing_cells_refused(chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """The chunks; a CSV's empty cell, for a model that does not fill them, is refused in
    words that say why."""
    from ..data import MissingValueError  # noqa: PLC0415
    from .columns import NOT_FILLED, missing_cell_error  # noqa: PLC0415

    try:
        yield from chunks
    except MissingValueError as exc:
        raise missing_cell_error(exc, NOT_FILLED) from None


# -- writing ---------------------------------------------------------------------------------
def _width(a: np.ndarray) -> int:
    """Values per row (1 for a 1-D array of one value per row)."""
    return int(np.prod(a.shape[1:])) if a.ndim > 1 else 1


def _rows_text(a: np.ndarray, fmt: str) -> list[str]:
    a = a.reshape(len(a), -1)
    row_fmt = ",".join([fmt] * a.shape[1])
    return [row_fmt % tuple(r) for r in a.tolist()]


class _Writer:
    """Turns prediction chunks into CSV lines or the items of a JSON list."""

    def __init__(self, out: IO[str], fmt: str, task: str | None, labels: list[Any] | None
                 ) -> None:
        self.out, self.fmt, self.task, self.labels = out, fmt, task, labels
        self.rows = 0

    def _csv_label(self, v: Any) -> str:
        s = str(v)
        return '"' + s.replace('"', '""') + '"' if any(c in s for c in ',"\n\r') else s

    def header(self, width: int) -> None:
        if self.fmt == "json":
            self.out.write('{"predictions": [')
            return
        if self.task in ("multiclass", "binary"):
            names = [self._csv_label(f"prob_{v}") for v in self._class_names(width)]
            cols = ["class", "label"] + (["probability"] if self.task == "binary" else names)
        elif self.task == "multilabel":
            cols = [self._csv_label(f"prob_{v}") for v in self._class_names(width)] + \
                   [self._csv_label(f"is_{v}") for v in self._class_names(width)]
        else:
            cols = ["value"] if width == 1 else [f"value_{i}" for i in range(width)]
        self.out.write(",".join(cols) + "\n")

    def _class_names(self, width: int) -> list[Any]:
        if self.labels and len(self.labels) >= width:
            return list(self.labels)
        return list(range(max(width, 2 if self.task == "binary" else width)))

    def write(self, cols: dict[str, np.ndarray]) -> None:
        lines = self._json_items(cols) if self.fmt == "json" else self._csv_lines(cols)
        if self.fmt == "json":
            sep = "," if self.rows else ""
            self.out.write(sep + "\n " + ",\n ".join(lines))
        else:
            self.out.write("\n".join(lines) + "\n")
        self.rows += len(lines)

    def _csv_lines(self, cols: dict[str, np.ndarray]) -> list[str]:
        if "classes" in cols:
            names = [self._csv_label(v) for v in self._class_names(_width(cols["scores"]))]
            probs = _rows_text(cols["scores"], "%.6g")
            return [f"{c},{names[c]},{p}" for c, p in zip(cols["classes"].tolist(), probs)]
        if "multilabel" in cols:
            probs = _rows_text(cols["scores"], "%.6g")
            flags = _rows_text(cols["multilabel"].astype(np.int64), "%d")
            return [f"{p},{f}" for p, f in zip(probs, flags)]
        return _rows_text(cols["values"], "%.7g")

    def _json_items(self, cols: dict[str, np.ndarray]) -> list[str]:
        if "classes" in cols:
            names = [json.dumps(v, ensure_ascii=False)
                     for v in self._class_names(_width(cols["scores"]))]
            key = "probability" if self.task == "binary" else "probabilities"
            wrap = "%s" if self.task == "binary" else "[%s]"
            probs = _rows_text(cols["scores"], "%.6g")
            return [f'{{"class": {c}, "label": {names[c]}, "{key}": {wrap % p}}}'
                    for c, p in zip(cols["classes"].tolist(), probs)]
        if "multilabel" in cols:
            on = cols["multilabel"].astype(bool)
            names = [json.dumps(v, ensure_ascii=False) for v in self._class_names(on.shape[1])]
            probs = _rows_text(cols["scores"], "%.6g")
            flags = _rows_text(on.astype(np.int64), "%d")
            picked = [", ".join(n for n, b in zip(names, row) if b) for row in on.tolist()]
            return [f'{{"classes": [{f}], "labels": [{n}], "probabilities": [{p}]}}'
                    for p, f, n in zip(probs, flags, picked)]
        vals = _rows_text(cols["values"], "%.7g")
        if _width(cols["values"]) > 1:
            return [f'{{"values": [{v}]}}' for v in vals]
        return [f'{{"value": {v}}}' for v in vals]

    def close(self) -> None:
        if self.fmt == "json":
            self.out.write("\n]}\n" if self.rows else "]}\n")


def prediction_columns(result: Any, task: str | None) -> dict[str, np.ndarray]:
    """The arrays of a session's post-processed result that the writers print."""
    if task in ("multiclass", "binary"):
        scores = result.probabilities
        return {"classes": np.asarray(result.classes).astype(np.int64).reshape(-1),
                "scores": np.asarray(scores)}
    if task == "multilabel":
        return {"scores": np.asarray(result.probabilities),
                "multilabel": np.asarray(result.classes)}
    return {"values": np.asarray(result.values)}


def predict_file(session: Any, path: str, out: IO[str], fmt: str = "csv",
                 batch: int = DEFAULT_BATCH, label_column: int | str | None = None) -> int:
    """Stream the samples of `path` through session.predict into `out`; return the row count.

    A CSV header is matched to the model's feature names (columns reordered, its label column
    left out); a file without one is read by position.
    """
    from .columns import feature_count, imputes, plan_csv  # noqa: PLC0415

    manifest = session.manifest
    task, labels = manifest.get("task"), manifest.get("labels")
    shape = sample_shape(session)
    columns, label_column = plan_csv(path, manifest if isinstance(manifest, dict) else {},
                                     feature_count(shape), label_column, labeled=False)
    writer = _Writer(out, fmt, task, labels)
    started = False
    done = 0
    fills = imputes(manifest if isinstance(manifest, dict) else {})
    dtype = np.dtype(session.graph.inputs[0].dtype or np.float32)
    dtype = dtype if dtype.kind in "iu" else np.dtype(np.float32)
    for x in missing_cells_refused(iter_input(path, batch, label_column, shape, columns,
                                              "nan" if fills else "error", dtype)):
        x = _conform(x, shape, path)
        _check_finite(x, path, done, allow_nan=fills)
        cols = prediction_columns(session.predict(x, batch_size=batch), task)
        if not started:
            writer.header(_width(cols["scores"] if "scores" in cols else cols["values"]))
            started = True
        writer.write(cols)
        done += len(x)
    if not started:
        # as train and evaluate do: an empty input is a mistake (a wrong file, a failed export),
        # not zero predictions to report as a success
        from ..errors import DataError  # noqa: PLC0415

        raise DataError(f"{path}: expected at least one sample, found none")
    writer.close()
    return writer.rows
