"""Switching gradient recording on and off (thread-local, like PyTorch's no_grad)."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

_state = threading.local()


def is_grad_enabled() -> bool:
    """True when operations record the graph needed for backward()."""
    return getattr(_state, "enabled", True)


def set_grad_enabled(enabled: bool) -> None:
    """Turn graph recording on or off for the current thread."""
    _state.enabled = bool(enabled)


@contextmanager
def no_grad() -> Iterator[None]:
    """Context in which no graph is recorded: for inference and for optimizer updates."""
    prev = is_grad_enabled()
    _state.enabled = False
    try:
        yield
    finally:
        _state.enabled = prev


@contextmanager
def enable_grad() -> Iterator[None]:
    """Context that turns graph recording back on inside no_grad()."""
    prev = is_grad_enabled()
    _state.enabled = True
    try:
        yield
    finally:
        _state.enabled = prev
