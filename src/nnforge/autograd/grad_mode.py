"""Switching gradient recording on and off (thread-local, like PyTorch's no_grad)."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

_state = threading.local()


def is_grad_enabled() -> bool:
    """True when operations record the graph needed for backward()."""
    return getattr(_state, "enabled", True)


class set_grad_enabled:  # noqa: N801 - PyTorch's name: a function that is also a context
    """Turn graph recording on or off for the current thread; as a context, restore it after."""

    def __init__(self, enabled: bool) -> None:
        # switched at once (the function form); `with` only adds the restore, as in PyTorch,
        # so `with set_grad_enabled(False):` does not leave recording off after the block
        self.prev = is_grad_enabled()
        _state.enabled = bool(enabled)

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        _state.enabled = self.prev


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
