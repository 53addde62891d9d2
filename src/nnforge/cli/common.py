"""Shared pieces of the commands: the one-line-error parser, flag types, tables, output files."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import stat
import sys
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Sequence

from ..io.atomic import atomic_file

EXIT_OK, EXIT_FAILURE, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """A mistake in how the command was called, found after parsing (exit code 2 by default)."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def fail_line(message: str) -> None:
    """Print the one-line error report on stderr."""
    print(f"nnforge: error: {message}", file=sys.stderr, flush=True)


class CliParser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line on stderr and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        hint = f" (see '{self.prog} --help')" if "--help" not in message else ""
        fail_line(f"{message}{hint}")
        raise SystemExit(EXIT_USAGE)


def new_command(sub: Any, name: str, help_text: str, description: str,
                examples: str) -> argparse.ArgumentParser:
    """A subcommand parser with its examples in the epilog, kept as written."""
    return sub.add_parser(name, help=help_text, description=description,
                          epilog="examples:\n" + examples,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


# -- flag value types (argparse turns their ArgumentTypeError into a usage error) ------------
#: The largest count a flag takes: beyond it Python's own sizes (islice, array dims) overflow.
MAX_COUNT = sys.maxsize
#: Seeds are NumPy's 32-bit seeds.
MAX_SEED = 2**32 - 1


def _int_or_none(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def positive_int(text: str) -> int:
    """An integer >= 1 (and at most MAX_COUNT)."""
    value = _int_or_none(text)
    if value is None or value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, found {text!r}")
    if value > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"expected a positive integer up to {MAX_COUNT}, "
                                         f"found {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer >= 0 (and at most MAX_COUNT)."""
    value = _int_or_none(text)
    if value is None or value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, found {text!r}")
    if value > MAX_COUNT:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {MAX_COUNT}, found "
                                         f"{text!r}")
    return value


def int_between(low: int, high: int, what: str = "an integer") -> Callable[[str], int]:
    """A flag type: an integer in [low, high]; the message names the range."""
    def check(text: str) -> int:
        value = _int_or_none(text)
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"expected {what} between {low} and {high}, "
                                             f"found {text!r}")
        return value
    return check


def seed_int(text: str) -> int:
    """A random seed: an integer from 0 to 2**32 - 1."""
    return int_between(0, MAX_SEED, "a seed")(text)


def positive_float(text: str) -> float:
    """A finite float > 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive number, found {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite float >= 0."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, found {text!r}")
    return value


def fraction(text: str) -> float:
    """A float in [0, 1): 0 turns the split it sizes off."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), found {text!r}")
    return value


def int_list(text: str) -> list[int]:
    """Comma-separated positive integers, e.g. '128,64'."""
    parts = [p.strip() for p in str(text).split(",")]
    if not parts or not all(re.fullmatch(r"[0-9]+", p) and 0 < int(p) <= MAX_COUNT
                            for p in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated positive integers like "
                                         f"128,64, found {text!r}")
    return [int(p) for p in parts]


def column_ref(text: str) -> int | str:
    """A CSV column given by name, or by 0-based index (negative counts from the end)."""
    return int(text) if re.fullmatch(r"-?[0-9]+", text.strip()) else text


# -- output ---------------------------------------------------------------------------------
def stdout_is_tty() -> bool:
    """True when stdout is an interactive terminal (rich output, progress bars)."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def fmt_number(value: Any, digits: int = 4) -> str:
    """A metric for a table: integers plainly, floats to `digits` decimals, None as 'n/a'."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], title: str = "",
                align: str | None = None, file: IO[str] | None = None) -> None:
    """A table: rich's on a terminal, aligned plain text otherwise (align: 'l'/'r' per column)."""
    out = sys.stdout if file is None else file
    cells = [[str(c) for c in row] for row in rows]
    align = align or "l" + "r" * (len(headers) - 1)
    if file is None and stdout_is_tty():
        try:
            from rich.console import Console  # noqa: PLC0415 - optional, only on a terminal
            from rich.table import Table  # noqa: PLC0415
            from rich.text import Text  # noqa: PLC0415
        except ImportError:
            pass
        else:
            console = Console()
            if title:  # above the table, not its caption: a caption wraps at the table's width
                console.print(Text(title, style="bold"))
            table = Table()
            for h, a in zip(headers, align):
                table.add_column(Text(h), justify="right" if a == "r" else "left")
            for row in cells:
                table.add_row(*(Text(c) for c in row))  # Text: no markup in cells ("[1]")
            console.print(table)
            return
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if a == "r" else v.ljust(w)
                         for v, w, a in zip(values, widths, align)).rstrip()

    if title:
        print(title, file=out)
    print(line(headers), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for row in cells:
        print(line(row), file=out)


def to_jsonable(obj: Any) -> Any:
    """NumPy scalars and arrays as plain numbers and lists; non-finite floats as None."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if hasattr(obj, "tolist"):  # NumPy array or scalar
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def print_json(obj: Any) -> None:
    """Pretty JSON on stdout."""
    print(json.dumps(to_jsonable(obj), indent=2, ensure_ascii=False))


class _PipeSafeStdout:
    """stdout that goes quiet, instead of raising, once its reader has gone away."""

    def __init__(self, stream: Any) -> None:
        self._stream, self.broken = stream, False

    def _guard(self, call: Any, *args: Any) -> Any:
        if not self.broken:
            try:
                return call(*args)
            except BrokenPipeError:
                self.broken = True
                with contextlib.suppress(OSError):  # later flushes, even at exit, go nowhere
                    devnull = os.open(os.devnull, os.O_WRONLY)
                    os.dup2(devnull, self._stream.fileno())
                    os.close(devnull)
        return None

    def write(self, text: str) -> int:
        self._guard(self._stream.write, text)
        return len(text)

    def flush(self) -> None:
        self._guard(self._stream.flush)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


@contextlib.contextmanager
def stdout_may_close() -> Iterator[None]:
    """For commands whose real output is a file (train): `| head` must not stop the work.

    Without it the first print after the reader left raised BrokenPipeError, which ended the
    training before the model was saved, and the command still exited 0.
    """
    original = sys.stdout
    sys.stdout = _PipeSafeStdout(original)  # type: ignore[assignment]
    try:
        yield
    finally:
        sys.stdout = original


def writes_in_place(path: str | os.PathLike) -> bool:
    """True for an output that is no regular file: /dev/null, a named pipe, /dev/stdout.

    Such an output is written to directly: renaming a temp file over it would replace the
    device or pipe with a plain file (as root, /dev/null itself).
    """
    text = os.fspath(path)
    # the process's own streams, also when they are redirected to a regular file (`>> log`)
    if text.startswith(("/dev/stdout", "/dev/stderr", "/dev/fd/", "/proc/")):
        return True
    try:
        mode = os.stat(text).st_mode
    except OSError:  # missing (it will be created) or unreachable (the write will say so)
        return False
    return not stat.S_ISREG(mode) and not stat.S_ISDIR(mode)


def _kind_of(path: str | os.PathLike) -> str:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "a device path"
    for test, name in ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, newline: str | None = "") -> Iterator[IO[str]]:
    """A text file that appears at `path` only when the block succeeds (temp file + rename).

    A device or pipe (/dev/null, a FIFO) is written to directly instead, and a symbolic link
    to a file keeps being a link: the file it points to is replaced.
    """
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(target))
    if writes_in_place(target):
        # "a": /dev/stdout redirected with `>> log` must not truncate the log when reopened
        with open(target, "a", encoding="utf-8", newline=newline) as fh:
            yield fh
        return
    with atomic_file(target, "w", newline=newline) as fh:
        yield fh


def _same_file(a: Path, b: str | os.PathLike) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:  # one of them does not exist (yet): they cannot be the same file
        return False


def check_output_path(path: str | os.PathLike, flag: str,
                      inputs: Sequence[tuple[str, str | os.PathLike | None]] = (),
                      in_place_ok: bool = False) -> None:
    """Before any work: refuse an output that is a directory, lies under a file, or is an input.

    Found late, these failures would waste a training run or, for a same-file output, replace
    the input (data, config or model) with the result. A device or pipe (/dev/null) is refused
    unless `in_place_ok` (the writer uses atomic_output, which writes such outputs directly):
    model files are written whole and renamed into place, which would replace the device.
    """
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"expected {flag} to name a file, found a directory at "
                         f"{str(target)!r}", EXIT_FAILURE)
    if writes_in_place(target):
        if in_place_ok:
            return
        raise UsageError(f"expected {flag} to name a regular file, found {_kind_of(target)} "
                         f"at {str(target)!r} (the file is written whole, then renamed into "
                         f"place)", EXIT_FAILURE)
    _check_parents(target, flag)
    for name, other in inputs:
        if other is not None and _same_file(target, other):
            raise UsageError(f"expected {flag} to differ from the {name} {str(other)!r}; "
                             f"writing there would overwrite it")


def check_output_dir(path: str | os.PathLike, flag: str) -> None:
    """Before any work: refuse an output directory that is a file, lies under a file, or
    cannot be written."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise UsageError(f"expected {flag} to name a directory, found a file at "
                         f"{str(target)!r}", EXIT_FAILURE)
    if target.is_dir():
        _check_writable(target, target, flag)
        return
    _check_parents(target, flag)


def _check_parents(target: Path, flag: str) -> None:
    # the nearest existing ancestor decides whether the missing folders can be created
    for folder in target.parents:
        if folder.exists():
            if not folder.is_dir():
                raise UsageError(f"expected {flag} {str(target)!r} to lie in a directory, found "
                                 f"a file at {str(folder)!r}", EXIT_FAILURE)
            _check_writable(folder, target, flag)
            return


def _check_writable(folder: Path, target: Path, flag: str) -> None:
    # found only when writing, this failure came after the whole training run (or after the
    # metrics were printed); the file is written beside its name and renamed, so the folder
    # itself must be writable even when the file already exists
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write {flag} {str(target)!r}: no permission to create files "
                         f"in {str(folder)!r}", EXIT_FAILURE)


def require_matplotlib() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend, or a one-line failure."""
    try:
        import matplotlib  # noqa: PLC0415 - optional extra

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt  # noqa: PLC0415
    except ImportError:
        raise UsageError("--report needs matplotlib, which is not installed; install it with: "
                         "pip install 'nnforge[report]'", EXIT_FAILURE) from None
    return plt


def sample_shape(session: Any) -> tuple[Any, ...]:
    """The shape of one input sample (no batch dimension), from the model's manifest."""
    if len(session.input_names) > 1:
        raise UsageError(f"the command line runs single-input models; this one has inputs "
                         f"{session.input_names} (from Python, InferenceSession.run takes a "
                         f"dict of arrays)", EXIT_FAILURE)
    specs = session.manifest.get("inputs") if isinstance(session.manifest, dict) else None
    if specs:
        return tuple(specs[0]["shape"][1:])
    return tuple(session.input_shape)
