"""The `nnforge` command line: train, evaluate, predict, info, bench (serve/export/import hooks)."""

from __future__ import annotations

from .main import main

__all__ = ["main"]
