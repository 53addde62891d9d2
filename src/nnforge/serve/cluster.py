"""The worker processes of one server (`--workers N`): what they share and how.

The supervisor (workers.py) starts N copies of the server that listen on the same ports
(SO_REUSEPORT: the kernel spreads connections over them). Each copy answers on its own, so
what must look like one server is coordinated here, through a private run directory:

- every worker listens on a Unix socket there; /metrics and the statistics endpoints ask each
  peer for its numbers and answer with the sum (`ServerMetrics.merged`);
- a model load or unload is applied by the worker that received it, then by every peer,
  before the answer goes out; it is also appended to the run directory's admin log, which a
  worker restarted after a crash replays so that it serves what the others serve.

Messages are one JSON line each way per connection: rare, small and easy to reason about.
A peer that does not answer (being restarted) is left out; it catches up from the log.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from ..errors import ConfigError
from .errors import InvalidInputError, ServeError

if TYPE_CHECKING:
    from .core import InferenceServer

log = logging.getLogger("nnforge.serve")

SNAPSHOT_TIMEOUT_S = 5.0
ADMIN_TIMEOUT_S = 600.0  # a peer loading a big model takes as long as that takes
ADMIN_LOG = "admin.jsonl"
MAX_MESSAGE = 64 * 2**20  # metrics of many model versions stay far below this


class Cluster:
    """This worker's place among its peers: its control socket, theirs, the admin log."""

    def __init__(self, run_dir: str | os.PathLike, index: int) -> None:
        self.run_dir, self.index = Path(run_dir), index
        self.path = self.run_dir / f"worker-{index}.sock"
        self._server: asyncio.AbstractServer | None = None
        self._inference: InferenceServer | None = None

    async def start(self, inference: InferenceServer) -> None:
        """Answer peers' questions about `inference` from now on."""
        self._inference = inference
        self.path.unlink(missing_ok=True)  # left by this worker's crashed predecessor
        try:
            self._server = await asyncio.start_unix_server(self._handle, path=str(self.path),
                                                           limit=MAX_MESSAGE)
        except OSError as exc:  # e.g. a TMPDIR so long that the socket path does not fit
            raise ConfigError(f"cannot open the control socket '{self.path}': "
                              f"{exc.strerror or exc}") from None

    async def close(self) -> None:
        """Stop answering peers."""
        if self._server is not None:
            self._server.close()
            self.path.unlink(missing_ok=True)
            self._server = None

    def peers(self) -> list[Path]:
        """The control sockets of the other workers."""
        return sorted(p for p in self.run_dir.glob("worker-*.sock") if p != self.path)

    async def ask(self, message: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
        """Every reachable peer's reply to message (peers that cannot be reached are left out)."""
        replies = await asyncio.gather(*(self._ask_one(p, message, timeout)
                                         for p in self.peers()))
        return [r for r in replies if r is not None]

    async def _ask_one(self, path: Path, message: dict[str, Any],
                       timeout: float) -> dict[str, Any] | None:
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_unix_connection(str(path), limit=MAX_MESSAGE), timeout)
        except (TimeoutError, OSError):  # gone or restarting: it replays the admin log
            return None
        try:
            writer.write(orjson.dumps(message) + b"\n")
            line = await asyncio.wait_for(reader.readline(), timeout)
            return orjson.loads(line) if line else None
        except (TimeoutError, OSError, orjson.JSONDecodeError):
            log.warning("worker at %s did not answer %s", path.name, message.get("op"))
            return None
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            message = orjson.loads(await reader.readline())
            reply = await self._answer(message)
            writer.write(orjson.dumps(reply) + b"\n")
            await writer.drain()
        except (OSError, ValueError, asyncio.IncompleteReadError):
            pass  # the asking peer went away; nothing to answer
        finally:
            writer.close()

    async def _answer(self, message: dict[str, Any]) -> dict[str, Any]:
        server = self._inference
        assert server is not None
        op = message.get("op")
        if op == "snapshot":
            return {"snapshot": server.metrics.snapshot()}
        if op in ("load", "unload"):
            try:
                await server.apply_admin(op, str(message.get("model")))
            except ServeError as exc:
                return {"error": str(exc), "status": exc.status}
            return {}
        return {"error": f"unknown control message {op!r}", "status": 400}

    # -- admin actions --------------------------------------------------------------------------
    def record(self, op: str, model: str) -> None:
        """Append an admin action to the log (one small O_APPEND write: atomic)."""
        line = orjson.dumps({"op": op, "model": model}) + b"\n"
        fd = os.open(self.run_dir / ADMIN_LOG, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
        finally:
            os.close(fd)

    def history(self) -> list[tuple[str, str]]:
        """The last admin action of each model, in the order they were taken."""
        try:
            lines = (self.run_dir / ADMIN_LOG).read_bytes().splitlines()
        except FileNotFoundError:
            return []
        last: dict[str, str] = {}
        for line in lines:
            entry = orjson.loads(line)
            last.pop(entry["model"], None)  # re-insert: dicts keep insertion order
            last[entry["model"]] = entry["op"]
        return [(op, model) for model, op in last.items()]

    async def replay(self, server: InferenceServer) -> None:
        """Take the admin actions the other workers took before this one started."""
        for op, model in self.history():
            try:
                await server.apply_admin(op, model)
            except ServeError as exc:
                log.warning("replaying %s of model %s: %s", op, model, exc)

    async def broadcast(self, op: str, model: str) -> None:
        """Record an admin action and have every peer take it; raise if one failed."""
        self.record(op, model)
        failed = [r["error"] for r in await self.ask({"op": op, "model": model}, ADMIN_TIMEOUT_S)
                  if "error" in r]
        if failed:
            raise InvalidInputError(f"{op} of model {model!r} failed in {len(failed)} other "
                                    f"worker(s): {failed[0]}")
