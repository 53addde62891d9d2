"""Structured logs: one JSON object per line, for access records and server events.

Access records are buffered and written in blocks (at most `FLUSH_SECONDS` late), because a
write system call per request would cost more than the rest of a small request.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from typing import IO, Any

import orjson

FLUSH_SECONDS = 0.2
MAX_BUFFERED = 512
#: writes of at most this many bytes to a pipe are never interleaved with other processes'
PIPE_BUF = 4096


def _timestamp(t: float, _cache: list[Any] = [None, ""]) -> str:  # noqa: B006 - a cache
    """ISO 8601 UTC with milliseconds; the seconds part is formatted once per second."""
    sec = int(t)
    if _cache[0] != sec:
        _cache[0], _cache[1] = sec, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
    return f"{_cache[1]}.{int((t - sec) * 1000):03d}Z"


class AccessLog:
    """Buffered JSON-lines writer; `enabled=False` makes `write` free."""

    def __init__(self, stream: IO[bytes] | None = None, enabled: bool = True,
                 atomic_lines: bool = False) -> None:
        self.stream = stream if stream is not None else sys.stderr.buffer
        self.enabled = enabled
        # several worker processes share the stream: write whole lines, PIPE_BUF at a time
        self.atomic_lines = atomic_lines
        self._lines: list[bytes] = []
        self._timer: asyncio.TimerHandle | None = None

    def write(self, record: dict[str, Any]) -> None:
        """Queue one record (a timestamp is added)."""
        if not self.enabled:
            return
        self._lines.append(orjson.dumps({"ts": _timestamp(time.time()), **record},
                                        option=orjson.OPT_APPEND_NEWLINE))
        if len(self._lines) >= MAX_BUFFERED:
            self.flush()
        elif self._timer is None:
            try:
                self._timer = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self.flush)
            except RuntimeError:  # no loop (called from a thread): write now
                self.flush()

    def flush(self) -> None:
        """Write out what is buffered."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        lines, self._lines = self._lines, []
        if not lines:
            return
        try:
            for block in (_blocks(lines) if self.atomic_lines else [b"".join(lines)]):
                self.stream.write(block)
                self.stream.flush()
        except (OSError, ValueError):  # a closed or broken log stream must not stop serving
            pass


def _blocks(lines: list[bytes]) -> list[bytes]:
    """Whole lines joined into blocks of at most PIPE_BUF bytes (a longer line on its own)."""
    blocks, current, size = [], [], 0
    for line in lines:
        if current and size + len(line) > PIPE_BUF:
            blocks.append(b"".join(current))
            current, size = [], 0
        current.append(line)
        size += len(line)
    if current:
        blocks.append(b"".join(current))
    return blocks


class JsonFormatter(logging.Formatter):
    """Server events (loads, errors, startup) as JSON lines like the access records."""

    def format(self, record: logging.LogRecord) -> str:
        """One JSON object with time, level, logger and message (and the traceback)."""
        doc: dict[str, Any] = {"ts": _timestamp(record.created), "level": record.levelname.lower(),
                               "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


def configure_logging(level: str = "info") -> None:
    """JSON lines on stderr for nnforge's and uvicorn's loggers."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    for name in ("nnforge", "uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(level.upper())
        logger.propagate = False
    logging.getLogger("uvicorn.access").disabled = True  # our access records replace it
