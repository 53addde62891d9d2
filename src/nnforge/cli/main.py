"""Entry point of the `nnforge` command: the parser, dispatch, and one-line error reporting.

Exit codes: 0 success, 1 failure (a user mistake found while running: a missing file, bad
data, a damaged model), 2 usage (unknown flag, bad flag value). A user mistake prints one
line ``nnforge: error: <message>`` on stderr; ``NNFORGE_DEBUG=1`` adds the traceback.

``serve``, ``export`` and ``import`` are implemented elsewhere and loaded only when used:
``nnforge serve ARGS`` calls ``nnforge.serve.cli.main(ARGS, prog="nnforge serve")`` and
``nnforge export|import ARGS`` call ``nnforge.onnx.cli.export_main`` / ``import_main`` the
same way; each returns an exit code and parses its own arguments (``--help`` included).
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import os
import sys
import traceback
import warnings
from typing import Sequence

from .common import EXIT_FAILURE, EXIT_USAGE, CliParser, UsageError, fail_line
from .plugins import UNKNOWN_LAYER_HINT, import_modules, split_imports

#: command -> (module, function) of the commands other packages implement
EXTERNAL_COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "serve": ("nnforge.serve.cli", "main", "serve", "serve a model repository over REST and gRPC"),
    "export": ("nnforge.onnx.cli", "export_main", "onnx", "export a .nnf model to ONNX"),
    "import": ("nnforge.onnx.cli", "import_main", "onnx", "import an ONNX model as .nnf"),
}

DESCRIPTION = "nnforge: train, evaluate, run, inspect and benchmark neural networks."
EPILOG = """examples:
  nnforge train --dataset digits --hidden 128,64 --epochs 30 -o models/digits/1/model.nnf
  nnforge evaluate models/digits/1/model.nnf --dataset digits --test-size 0.2
  nnforge predict models/digits/1/model.nnf --input rows.csv --output predictions.csv
  nnforge info models/digits/1/model.nnf --graph
  nnforge bench models/digits/1/model.nnf --batch-sizes 1,32,256

A model with custom layers: nnforge --import mypkg.layers predict model.nnf ...
Run 'nnforge COMMAND --help' for the options of one command.
Set NNFORGE_DEBUG=1 to see a traceback when a command fails."""


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (command modules add their own subparsers)."""
    from .. import __version__  # noqa: PLC0415 - the package is already imported by then
    from . import bench, evaluate, info, predict, train  # noqa: PLC0415

    parser = CliParser(prog="nnforge", description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"nnforge {__version__}")
    # taken off argv by _dispatch before parsing (so serve/export/import get it too): help only
    parser.add_argument("--import", metavar="MODULE", action="append", dest="imports",
                        help="import a Python module first, e.g. one that registers custom "
                             "layers (repeatable; before COMMAND)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=CliParser)
    for module in (train, evaluate, predict, info, bench):
        module.add_parser(sub)
    for name, (_, _, _, help_text) in EXTERNAL_COMMANDS.items():
        # add_help=False: `nnforge serve --help` must reach the implementing module
        p = sub.add_parser(name, help=help_text, add_help=False, prog=f"nnforge {name}")
        p.add_argument("args", nargs=argparse.REMAINDER)
    return parser


def _run_external(name: str, argv: list[str]) -> int:
    module_name, func_name, extra, _ = EXTERNAL_COMMANDS[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if module_name == missing or module_name.startswith(missing + "."):
            raise UsageError(f"'nnforge {name}' is not available in this installation "
                             f"({module_name} is missing)", EXIT_FAILURE) from None
        raise UsageError(f"'nnforge {name}' needs the Python package {missing!r}, which is not "
                         f"installed; install it with: pip install 'nnforge[{extra}]'",
                         EXIT_FAILURE) from None
    func = getattr(module, func_name, None)
    if func is None:
        raise UsageError(f"'nnforge {name}' is not available in this installation "
                         f"({module_name} has no {func_name}())", EXIT_FAILURE)
    try:
        accepts_prog = "prog" in inspect.signature(func).parameters
    except (TypeError, ValueError):
        accepts_prog = False
    code = func(argv, prog=f"nnforge {name}") if accepts_prog else func(argv)
    return int(code or 0)


def _dispatch(argv: Sequence[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names, argv = split_imports(argv)
    import_modules(names)
    # The external commands parse their own arguments, flags included, so route them first.
    if argv and argv[0] in EXTERNAL_COMMANDS:
        return _run_external(argv[0], argv[1:])
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        where = f"nnforge {args.command}" if args.command else "nnforge"
        fail_line(f"unrecognized arguments: {' '.join(unknown)} (see '{where} --help')")
        return EXIT_USAGE
    if args.command is None:
        parser.error("expected a command: train, evaluate, predict, info, bench, serve, export "
                     "or import (see 'nnforge --help')")
    with warnings.catch_warnings():
        if os.environ.get("NNFORGE_DEBUG", "") in ("", "0"):
            # NumPy's overflow/invalid-value warnings from inside nnforge (a diverging training)
            # would print lines of source code before the one-line error that explains them
            warnings.filterwarnings("ignore", category=RuntimeWarning, module=r"nnforge(\.|$)")
        return int(args.run(args) or 0)


def _is_user_mistake(exc: BaseException) -> bool:
    from ..errors import NNForgeError  # noqa: PLC0415

    # OSError: missing or unreadable files, a full disk: the environment, not a bug
    return isinstance(exc, (NNForgeError, OSError, UnicodeDecodeError))


def _unknown_layer(exc: BaseException) -> bool:
    from ..errors import UnknownLayerError  # noqa: PLC0415

    return isinstance(exc, UnknownLayerError) or "unknown layer type" in str(exc)


def _out_of_memory_line(exc: MemoryError) -> str:
    """What ran out of memory and how much it asked for, with the command line's remedy."""
    from ..errors import ResourceError, format_bytes, requested_bytes  # noqa: PLC0415

    if isinstance(exc, ResourceError):  # its message advises batch_size, the API's name
        return (f"out of memory {exc.what} ({exc.amount}); a smaller --batch-size may help"
                if exc.what else _oneline(exc))
    nbytes = requested_bytes(exc)
    amount = f" ({format_bytes(nbytes)} requested)" if nbytes is not None else ""
    return f"out of memory{amount}; a smaller --batch-size may help"


def _oneline(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        text = f"{exc.strerror}: {exc.filename!r}"
    return " ".join(text.split())  # messages with newlines would break the one-line promise


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `nnforge` command with argv (default sys.argv[1:]) and return the exit code."""
    debug = os.environ.get("NNFORGE_DEBUG", "") not in ("", "0")
    try:
        code = _dispatch(argv)
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except UsageError as exc:
        if debug:
            traceback.print_exc()
        fail_line(str(exc))
        code = exc.exit_code
    except KeyboardInterrupt as exc:  # a command may say where it stood and what it kept
        fail_line(f"interrupted: {exc}" if str(exc) else "interrupted")
        code = 130
    except BrokenPipeError:
        # the reader (e.g. `| head`) went away: not an error; silence the flush at exit
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        code = 0
    except Exception as exc:  # noqa: BLE001 - every failure becomes one line unless debugging
        if debug:
            traceback.print_exc()
        if isinstance(exc, MemoryError):  # a ResourceError too: the machine, not a mistake
            fail_line(_out_of_memory_line(exc))
        elif _is_user_mistake(exc):
            fail_line(_oneline(exc) + (UNKNOWN_LAYER_HINT if _unknown_layer(exc) else ""))
        else:
            fail_line(f"{type(exc).__name__}: {_oneline(exc)} (an internal error; rerun with "
                      f"NNFORGE_DEBUG=1 for the traceback and please report it)")
        code = EXIT_FAILURE
    return code
