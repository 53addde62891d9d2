"""`nnforge --import MODULE COMMAND ...`: import the user's modules before a command runs.

A model file names its layers by type; a custom layer (`@nn.register_layer`) exists only once
the module that defines it is imported, which a command line cannot do by itself.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Sequence

from .common import EXIT_USAGE, UsageError

#: what the CLI adds to "unknown layer type" errors
UNKNOWN_LAYER_HINT = ("; a custom layer needs the module that registers it: nnforge --import "
                      "MODULE COMMAND ... (e.g. nnforge --import mypkg.layers info model.nnf), or "
                      "export the model to ONNX and use the .onnx file")

#: the modules imported in this process, in order (`nnforge serve` hands them to its workers)
IMPORTED: list[str] = []


def split_imports(argv: Sequence[str]) -> tuple[list[str], list[str]]:
    """The leading `--import MODULE` / `--import=MODULE` options, and the rest of argv."""
    names: list[str] = []
    rest = list(argv)
    while rest and (rest[0] == "--import" or rest[0].startswith("--import=")):
        if rest[0] == "--import":
            if len(rest) < 2 or rest[1].startswith("-"):
                raise UsageError("--import: expected a module name (nnforge --import MODULE "
                                 "COMMAND ...)", EXIT_USAGE)
            names.append(rest[1])
            rest = rest[2:]
        else:
            names.append(rest[0].split("=", 1)[1])
            rest = rest[1:]
    return names, rest


def import_modules(names: Sequence[str]) -> None:
    """Import each module (registering its layers); a UsageError naming the first that fails."""
    if names and "" not in sys.path and os.getcwd() not in sys.path:
        # as `python -m` does: a module beside the user's files is found without PYTHONPATH
        sys.path.insert(0, os.getcwd())
    for name in names:
        if not name.strip():
            raise UsageError("--import: expected a module name, found ''", EXIT_USAGE)
        try:
            importlib.import_module(name)
        except Exception as exc:  # noqa: BLE001 - whatever the module raises is one line
            text = " ".join(str(exc).split()) or type(exc).__name__
            raise UsageError(f"--import {name}: cannot import it ({type(exc).__name__}: "
                             f"{text})", EXIT_USAGE) from None
        if name not in IMPORTED:
            IMPORTED.append(name)
