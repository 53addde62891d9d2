"""Matching a CSV file's columns to a saved model's features: by header name when both have
names, by position otherwise, with a hint when one extra column looks like the label."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

from ..data.tabular import MissingValueError, _is_missing, _is_number
from ..errors import DataError

#: what --fill-missing takes, for messages
FILL_MISSING_HINT = "--fill-missing mean|median|most_frequent|zero"
#: why predict and evaluate refuse an empty cell
NOT_FILLED = "this model was trained without --fill-missing"


def csv_delimiter(path: str) -> str | None:
    """The delimiter the commands read a file with, or None for a file that is no CSV."""
    suffix = Path(path).suffix.lower()
    return {".csv": ",", ".txt": ",", ".tsv": "\t"}.get(suffix)


def model_columns(manifest: dict[str, Any]) -> tuple[list[str] | None, str | None]:
    """(feature names, label column name) the model was trained with, where it stores them."""
    specs = manifest.get("inputs") or [{}]
    names = specs[0].get("names") if isinstance(specs[0], dict) else None
    trained = (manifest.get("extra") or {}).get("trained_with")
    label = trained.get("label_column") if isinstance(trained, dict) else None
    return (list(names) if isinstance(names, list) else None,
            label if isinstance(label, str) else None)


def feature_count(shape: tuple[Any, ...]) -> int | None:
    """The number of features of a model that takes flat rows, else None."""
    return shape[0] if len(shape) == 1 and isinstance(shape[0], int) else None


def label_index(label_column: int | str | None, header: list[str] | None,
                ncols: int) -> int | None:
    """The 0-based index a --label-column names, or None (the reader reports bad ones)."""
    if isinstance(label_column, str):
        return header.index(label_column) if header and label_column in header else None
    if isinstance(label_column, int) and -ncols <= label_column < ncols:
        return label_column % ncols
    return None


def _quoted(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names)


def plan_csv(path: str, manifest: dict[str, Any], n_features: int | None,
             label_column: int | str | None, labeled: bool) -> tuple[list[str] | None,
                                                                    int | str | None]:
    """(feature columns to read by name or None for by position, the label column to use).

    labeled: evaluate's file holds the targets (default: the model's label column by name,
    else the last column); predict's may hold one column to ignore (--label-column).
    """
    from ..data.tabular import csv_header  # noqa: PLC0415

    delimiter = csv_delimiter(path)
    if delimiter is None:
        return None, label_column
    header, first = csv_header(path, delimiter=delimiter)
    if first is None and header is None:
        return None, label_column  # empty: the reader says so
    names, stored_label = model_columns(manifest)
    given = label_column is not None
    if not given and header and names and stored_label in header and stored_label not in names:
        label_column = stored_label  # the model's own target column: score on it, or ignore it
    elif not given and labeled:
        label_column = -1
    ncols = len(header if header is not None else first or [])
    label = label_index(label_column, header, ncols)
    if given and label is None:
        return None, label_column  # a column the file lacks: the reader names the choices
    if header and names:
        rest = [h for j, h in enumerate(header) if j != label]
        if sorted(rest) == sorted(names):
            return names, label_column
        extra = [h for h in header if h not in names]
        if not given and len(extra) == 1 and all(n in header for n in names):
            raise _label_hint(path, ncols, len(names), repr(extra[0]), extra[0])
        missing = [n for n in names if n not in rest]
        unexpected = [h for h in rest if h not in names]
        twice = sorted({h for h in rest if rest.count(h) > 1})
        why = "; ".join(part for part in (
            f"missing {_quoted(missing)}" if missing else "",
            f"unexpected {_quoted(unexpected)}" if unexpected else "",
            f"twice {_quoted(twice)}" if twice else "") if part)
        raise DataError(f"{path}: expected columns {names}, found {rest} ({why})")
    if not given and n_features is not None and ncols == n_features + 1 and first is not None:
        # one text column too many is most likely the label the user forgot to name
        text = [j for j, c in enumerate(first) if not _is_number(c) and not _is_missing(c)]
        if len(text) == 1 and text[0] != label:
            j = text[0]
            ref = repr(header[j]) if header else f"column {j} (0-based)"
            raise _label_hint(path, ncols, n_features, ref, header[j] if header else str(j))
    return None, label_column


def _label_hint(path: str, ncols: int, n_features: int, ref: str, flag: str) -> DataError:
    return DataError(f"{path} has {ncols} columns, the model takes {n_features} features: "
                     f"is {ref} the label? pass --label-column {shlex.quote(flag)}")


def imputes(manifest: dict[str, Any]) -> bool:
    """Whether the model's stored preprocessing starts by filling in missing values (NaN)."""
    pre = manifest.get("preprocessing")
    first = pre[0] if isinstance(pre, list) and pre else pre
    return isinstance(first, dict) and first.get("type") == "impute"


def missing_cell_error(exc: MissingValueError, advice: str) -> DataError:
    """A reader's missing-cell error in the commands' words: where, what, and what to do."""
    what = "empty" if not exc.cell.strip() else f"missing ({exc.cell.strip()!r})"
    return DataError(f"{exc.where} is {what}; {advice}")
