"""CSV (whole or streamed in chunks) and NPZ readers that return float32 features."""

from __future__ import annotations

import csv
import functools
import itertools
import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Iterator, Sequence

import numpy as np

from ..errors import DataError, ShapeError

#: Rows parsed per np.loadtxt call: large enough to amortise the call, small enough to stream.
DEFAULT_CHUNK_ROWS = 65536
#: Feature cells that mean "no value" (after stripping spaces), as spreadsheets, R and pandas
#: write them. With missing="nan" they read as NaN; "nan"/"NaN" are numbers to float() and
#: read as NaN in either mode.
MISSING_MARKERS = frozenset({"", "NA", "N/A", "n/a", "NULL", "null", "None"})
#: What the readers do with a missing feature cell: refuse it, or read it as NaN.
MISSING_MODES = ("error", "nan")


class MissingValueError(DataError):
    """A feature cell holds no value (empty, or a MISSING_MARKERS marker) and the reader was
    not asked to read it as NaN; `where` names the file, line and column, `cell` its text."""

    def __init__(self, message: str, where: str = "", cell: str = "") -> None:
        super().__init__(message)
        self.where, self.cell = where, cell


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _is_missing(cell: str) -> bool:
    return cell.strip() in MISSING_MARKERS


@dataclass
class _Layout:
    """What the header (or first row) says about the columns."""

    path: str
    delimiter: str
    names: list[str] | None
    ncols: int
    label: int | None
    string_labels: bool
    features: list[int]  # the feature columns, in the order they are returned
    missing: str = "error"  # see MISSING_MODES

    def column(self, j: int) -> str:
        name = f" ({self.names[j]!r})" if self.names else ""
        return f"column {j + 1}{name}"


def _check_path(path: Any, what: str) -> None:
    # open() takes an int as a file descriptor: read_csv(3) would read and close fd 3
    if not isinstance(path, (str, os.PathLike)):
        raise DataError(f"expected the path of {what}, found {type(path).__name__} {path!r:.40}")


def _open_text(path: str | Path) -> IO[str]:
    _check_path(path, "a CSV file")
    try:
        return open(path, encoding="utf-8-sig")  # -sig: drop the BOM spreadsheet tools write
    except FileNotFoundError as e:
        raise DataError(f"expected a CSV file at {str(path)!r}, found no such file") from e
    except (IsADirectoryError, PermissionError) as e:
        raise DataError(f"expected a readable CSV file at {str(path)!r}, found: {e}") from e


@functools.lru_cache(maxsize=8)
def _record_patterns(delimiter: str) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(a line that is a whole record, a line that closes an open quoted field and its record).

    They follow the csv module's rules: a quote opens a quoted field only at the start of a
    field, "" inside one is a quote, and after the closing quote the field goes on unquoted.
    Possessive quantifiers make the match linear and as greedy as csv's own parser.
    """
    d = re.escape(delimiter)
    field = f'(?>"(?:[^"]|"")*+"[^{d}\n]*+|[^"{d}\n][^{d}\n]*+|)'
    rest = f"(?:{d}{field})*+\n?"
    return re.compile(field + rest), re.compile(f'(?:[^"]|"")*+"[^{d}\n]*+' + rest)


def _records(fh: IO[str], path: str, delimiter: str) -> Iterator[tuple[int, str]]:
    """(first line number, text) of each CSV record: a quoted field may span lines, and a
    record is never cut in two (chunks, and np.loadtxt, see whole records only)."""
    whole, closes = _record_patterns(delimiter)
    pending: list[str] = []
    start = size = 0
    for no, line in enumerate(fh, start=1):
        if not pending:
            if '"' not in line or whole.fullmatch(line):  # the common case: one line
                yield no, line
                continue
            pending, start, size = [line], no, len(line)
            continue
        pending.append(line)
        size += len(line)
        if closes.fullmatch(line):  # else the field, or one opened after it, is still open
            yield start, "".join(pending)
            pending = []
        elif size > csv.field_size_limit():  # an unclosed quote must not swallow the file
            raise DataError(f"{path}, line {start}: expected the quoted field opened there to "
                            f"close within {csv.field_size_limit()} characters, found more")
    if pending:
        raise DataError(f"{path}, line {start}: expected the quoted field opened there to "
                        f"close, found the end of the file")


def _split(line: str, delimiter: str) -> list[str]:
    return next(csv.reader([line], delimiter=delimiter))


def _resolve_label(label_column: int | str | None, names: list[str] | None, ncols: int,
                   path: str) -> int | None:
    if label_column is None:
        return None
    if isinstance(label_column, str):
        if names is None:
            raise DataError(f"{path}: label_column {label_column!r} is a name, so expected a "
                            f"header row, found none (pass header=True or a column index)")
        if label_column not in names:
            raise DataError(f"{path}: expected label_column to be one of {names}, "
                            f"found {label_column!r}")
        return names.index(label_column)
    if isinstance(label_column, bool) or not isinstance(label_column, (int, np.integer)):
        raise DataError(f"expected label_column to be None, a column name or an index, "
                        f"found {label_column!r}")
    if not -ncols <= label_column < ncols:
        raise DataError(f"{path}: expected label_column in [{-ncols}, {ncols - 1}] for a file "
                        f"with {ncols} columns, found {label_column}")
    return int(label_column) % ncols


def _has_header(first: list[str], second: list[str] | None, header: bool | str) -> bool:
    if header == "infer":
        # table header has a non-numeric cell where the data below it is numeric; a file whose
        # only non-numeric cells are string labels has none.
        # an empty (missing) cell is no name: a first data row with a gap is no header
        if second is None:
            has_header = not all(_is_number(c) or _is_missing(c) for c in first)
        else:
            has_header = any(not _is_number(a) and not _is_missing(a) and _is_number(b)
                             for a, b in zip(first, second))
    elif isinstance(header, bool):
        has_header = header
    else:
        raise DataError(f"expected header to be True, False or 'infer', found {header!r}")
    return has_header


def _select(columns: Any, names: list[str] | None, label: int | None, path: str) -> list[int]:
    """The indices of the named feature columns, in the order named."""
    if not isinstance(columns, (list, tuple)) or not all(isinstance(c, str) for c in columns):
        raise DataError(f"expected columns to be a list of column names, found {columns!r:.80}")
    if names is None:
        raise DataError(f"{path}: columns are given by name, so expected a header row, "
                        f"found none")
    missing = [c for c in columns if c not in names]
    twice = sorted({c for c in columns if names.count(c) > 1})
    if missing or twice:
        found = f"no column {missing}" if missing else f"the columns {twice} more than once"
        raise DataError(f"{path}: expected the columns {list(columns)}, found {found}")
    picked = [names.index(c) for c in columns]
    if label in picked:
        raise DataError(f"{path}: expected the label column {names[label]!r} to be no feature "
                        f"column, found it among columns")
    return picked


def _read_layout(path: str, first: list[str], second: list[str] | None, header: bool | str,
                 delimiter: str, label_column: int | str | None,
                 columns: Any = None) -> _Layout:
    names = [c.strip() for c in first] if _has_header(first, second, header) else None
    label = _resolve_label(label_column, names, len(first), path)
    if label is not None and len(first) < 2:
        raise DataError(f"{path}: expected feature columns besides the label column, "
                        f"found {len(first)} column in all")
    sample = second if names is not None else first
    # a short second row is reported with its line number when its chunk is parsed
    string_labels = (label is not None and sample is not None and label < len(sample)
                     and not _is_number(sample[label]))
    features = ([j for j in range(len(first)) if j != label] if columns is None
                else _select(columns, names, label, path))
    return _Layout(path, delimiter, names, len(first), label, string_labels, features)


def _locate_error(lay: _Layout, lines: list[str], nos: list[int], numeric: list[int],
                  err: Exception | None, missing_ok: bool = False) -> DataError:
    """Find the line and column that np.loadtxt tripped on, for a message a person can act on.

    A missing feature cell is a MissingValueError (missing_ok: no error at all); a missing
    label is a plain DataError, since no reader mode fills labels in.
    """
    for no, row in zip(nos, csv.reader(lines, delimiter=lay.delimiter)):
        if len(row) != lay.ncols:
            return DataError(f"{lay.path}, line {no}: expected {lay.ncols} columns, "
                             f"found {len(row)}")
        for j in numeric:
            cell = row[j]
            if _is_number(cell) or (missing_ok and j != lay.label and _is_missing(cell)):
                continue
            where = f"{lay.path}, line {no}, {lay.column(j)}"
            found = "an empty cell" if not cell.strip() else repr(cell)
            if j == lay.label or not _is_missing(cell):
                return DataError(f"{where}: expected a number, found {found}")
            return MissingValueError(f"{where}: expected a number, found {found} (read_csv("
                                     f"missing='nan') reads missing values as NaN)", where, cell)
    return DataError(f"{lay.path}, lines {nos[0]}-{nos[-1]}: expected numeric CSV, found: {err}")


def _parse_missing(lay: _Layout, lines: list[str], nos: list[int]
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    """A chunk with missing feature cells, read as NaN (slower than loadtxt: only chunks that
    need it come here)."""
    rows = list(csv.reader(lines, delimiter=lay.delimiter))
    if any(len(r) != lay.ncols for r in rows):
        raise _locate_error(lay, lines, nos, [], None)
    cells = np.array([["nan" if r[j].strip() in MISSING_MARKERS else r[j] for j in lay.features]
                      for r in rows], dtype=str)
    numeric = lay.features + ([] if lay.string_labels or lay.label is None else [lay.label])
    try:
        with np.errstate(over="ignore"):  # beyond float32 is inf, as np.loadtxt reads it
            x = cells.astype(np.float32)
            y: np.ndarray | None = None
            if lay.label is not None:
                y = np.array([r[lay.label].strip() for r in rows])
                if not lay.string_labels:
                    y = y.astype(np.float32)
    except ValueError as e:
        raise _locate_error(lay, lines, nos, numeric, e, missing_ok=True) from None
    return x.reshape(len(rows), len(lay.features)), y


def _parse_chunk(lay: _Layout, lines: list[str], nos: list[int]
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        return _parse_numeric(lay, lines, nos)
    except MissingValueError:
        if lay.missing != "nan":
            raise
        return _parse_missing(lay, lines, nos)


def _parse_numeric(lay: _Layout, lines: list[str], nos: list[int]
                   ) -> tuple[np.ndarray, np.ndarray | None]:
    features = lay.features
    # every other column but the label, in file order: one loadtxt call parses the table
    natural = features == [j for j in range(lay.ncols) if j != lay.label]
    numeric = features + ([] if lay.string_labels or lay.label is None else [lay.label])
    if natural and not lay.string_labels:
        numeric = list(range(lay.ncols))
    opts: dict[str, Any] = {"delimiter": lay.delimiter, "dtype": np.float32, "ndmin": 2,
                            "comments": None, "quotechar": '"'}
    try:
        if lay.string_labels or not natural:
            # selected (or reordered) columns, or text labels: the csv module checks each
            # row's length and gives the label cells, loadtxt parses the features
            rows = list(csv.reader(lines, delimiter=lay.delimiter))
            if any(len(r) != lay.ncols for r in rows):
                raise _locate_error(lay, lines, nos, [], None)
            y: np.ndarray | None = None
            if lay.label is not None:
                y = np.array([r[lay.label].strip() for r in rows])
                if not lay.string_labels:
                    y = y.astype(np.float32)
            x = np.loadtxt(lines, usecols=features, **opts)
            return x, y
        table = np.loadtxt(lines, **opts)
    except ValueError as e:
        if isinstance(e, DataError):
            raise
        raise _locate_error(lay, lines, nos, numeric, e) from None
    if table.shape[1] != lay.ncols:  # loadtxt only checks rows against each other
        raise _locate_error(lay, lines, nos, numeric, None)
    if lay.label is None:
        return table, None
    y = table[:, lay.label].copy()
    if lay.label == lay.ncols - 1:
        return np.ascontiguousarray(table[:, :-1]), y
    return np.ascontiguousarray(table[:, features]), y


def iter_csv(path: str | Path, label_column: int | str | None = None,
             header: bool | str = "infer", delimiter: str = ",",
             chunk_rows: int = DEFAULT_CHUNK_ROWS, columns: Sequence[str] | None = None,
             missing: str = "error") -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
    """Stream a CSV file as (X, y) chunks of at most chunk_rows rows (y float32, str or None).

    columns: the feature columns by header name, in the order X gets them (other columns are
    left out); None takes every column but the label, in file order. missing: "error" refuses
    a feature cell that is empty or a MISSING_MARKERS marker (NA, N/A, NULL, ...) with a
    MissingValueError naming its line and column; "nan" reads it as NaN (a label cell is
    never filled in).
    """
    if missing not in MISSING_MODES:
        raise DataError(f"expected missing to be one of {list(MISSING_MODES)}, found "
                        f"{missing!r:.40}")
    if isinstance(chunk_rows, bool) or not isinstance(chunk_rows, (int, np.integer)) \
            or chunk_rows < 1:
        raise DataError(f"expected chunk_rows to be an integer >= 1, found {chunk_rows!r}")
    if not isinstance(delimiter, str) or len(delimiter) != 1 or delimiter in "\"\r\n":
        raise DataError(f"expected delimiter to be one character other than a quote or a "
                        f"newline, found {delimiter!r}")
    with _open_text(path) as fh:
        try:
            numbered = ((no, rec) for no, rec in _records(fh, str(path), delimiter)
                        if rec.strip())
            head = list(itertools.islice(numbered, 2))
            if not head:
                return
            first = _split(head[0][1], delimiter)
            second = _split(head[1][1], delimiter) if len(head) > 1 else None
            lay = _read_layout(str(path), first, second, header, delimiter, label_column,
                               columns)
            lay.missing = missing
            pending = head[1:] if lay.names is not None else head
            rows = itertools.chain(pending, numbered)
            while True:
                chunk = list(itertools.islice(rows, chunk_rows))
                if not chunk:
                    return
                nos, lines = [c[0] for c in chunk], [c[1] for c in chunk]
                yield _parse_chunk(lay, lines, nos)
        except UnicodeDecodeError as e:
            raise DataError(f"expected a UTF-8 text file at {str(path)!r}, found: {e}") from None
        except csv.Error as e:  # e.g. a field over csv.field_size_limit() characters
            raise DataError(f"{path}: expected CSV fields a reader can split, found: {e}") \
                from None


def csv_header(path: str | Path, header: bool | str = "infer", delimiter: str = ","
               ) -> tuple[list[str] | None, list[str] | None]:
    """(the header's column names or None, the first data row's cells or None), as iter_csv
    reads them, without reading further."""
    with _open_text(path) as fh:
        try:
            numbered = (rec for _, rec in _records(fh, str(path), delimiter) if rec.strip())
            head = [_split(rec, delimiter) for rec in itertools.islice(numbered, 2)]
        except UnicodeDecodeError as e:
            raise DataError(f"expected a UTF-8 text file at {str(path)!r}, found: {e}") from None
        except csv.Error as e:
            raise DataError(f"{path}: expected CSV fields a reader can split, found: {e}") \
                from None
    if not head:
        return None, None
    second = head[1] if len(head) > 1 else None
    if not _has_header(head[0], second, header):
        return None, head[0]
    return [c.strip() for c in head[0]], second


def read_csv(path: str | Path, label_column: int | str | None = None,
             header: bool | str = "infer", delimiter: str = ",",
             columns: Sequence[str] | None = None, missing: str = "error"
             ) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a numeric CSV file: X float32; y int64 if every label is integral, else float32/str.

    columns, missing: as for iter_csv (the feature columns by header name; "nan" reads empty
    and NA-like feature cells as NaN, "error" refuses them).
    """
    parts = list(iter_csv(path, label_column, header, delimiter, columns=columns,
                          missing=missing))
    if not parts:
        raise DataError(f"{path}: expected at least one data row, found none")
    x = parts[0][0] if len(parts) == 1 else np.concatenate([p[0] for p in parts])
    if parts[0][1] is None:
        return x, None
    y = np.concatenate([p[1] for p in parts])
    # integral labels become int64 classes, but only where int64 holds them exactly
    if (y.dtype.kind == "f" and np.all(np.abs(y) <= 2**53)
            and np.all(y == np.round(y))):
        y = y.astype(np.int64)
    return x, y


def read_npz(path: str | Path, x_key: str | None = None, y_key: str | None = "y"
             ) -> tuple[np.ndarray, np.ndarray | None]:
    """Read X (key "X" or "x" unless given) and y from an .npz archive; no pickled objects."""
    _check_path(path, "an .npz file")
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError as e:
        raise DataError(f"expected an .npz file at {str(path)!r}, found no such file") from e
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, NotImplementedError,
            RuntimeError) as e:  # the last two: a zip header claiming odd versions or encryption
        raise DataError(f"expected an .npz archive at {str(path)!r}, found: {e}") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"expected an .npz archive at {str(path)!r}, found a single .npy array")
    with archive:
        keys = list(archive.files)
        if x_key is None:
            x_key = next((k for k in ("X", "x") if k in keys), None)
            if x_key is None:
                raise DataError(f"{path}: expected an array named 'X' or 'x', found {keys}")
        elif x_key not in keys:
            raise DataError(f"{path}: expected an array named {x_key!r}, found {keys}")
        x = _load_member(archive, x_key, path)
        y = None
        if y_key is not None and y_key in keys:
            y = _load_member(archive, y_key, path)
        elif y_key not in (None, "y"):  # the default "y" is optional: unlabeled data is fine
            raise DataError(f"{path}: expected an array named {y_key!r}, found {keys}")
    if x.ndim == 0 or x.dtype.kind not in "biuf":
        raise DataError(f"{path}: expected a numeric array with a sample dimension for x, "
                        f"found dtype {x.dtype} and shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    if y is not None:
        if y.ndim == 0 or y.shape[0] != x.shape[0]:
            raise ShapeError(f"{path}: expected y with {x.shape[0]} samples like X, "
                             f"found shape {y.shape}")
        if y.dtype.kind in "biu":
            y = y.astype(np.int64, copy=False)
        elif y.dtype.kind == "f":
            y = y.astype(np.float32, copy=False)
    return x, y


def _load_member(archive: Any, key: str, path: str | Path) -> np.ndarray:
    try:
        return np.asarray(archive[key])
    except (ValueError, OSError, zipfile.BadZipFile, EOFError, NotImplementedError,
            RuntimeError) as e:  # the last two: a damaged zip header (odd method, encryption)
        raise DataError(f"{path}: expected a plain numeric array under {key!r}, found: {e}") \
            from None
