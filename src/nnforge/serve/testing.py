"""Start `nnforge serve` in a child process for tests and scripts, and stop it again.

    with ServerProcess(["models/", "--max-batch-size", "32"]) as srv:
        requests.post(f"{srv.url}/predict", json={"data": [...]})

The server listens on free ports (port 0) and announces them on its first stdout line; the
child is stopped with SIGTERM (graceful) and killed if it does not exit in time. `post_many`
sends many requests at a chosen concurrency.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
from typing import IO, Any, Sequence


class ServerProcess:
    """A running `python -m nnforge.serve` child; a context manager."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None,
                 start_timeout: float = 60.0, log: IO[str] | None = None) -> None:
        self.args = [*args]
        if "--port" not in self.args:
            self.args += ["--port", "0"]
        if "--grpc-port" not in self.args and "--no-grpc" not in self.args:
            self.args += ["--grpc-port", "0"]
        self.env = {**os.environ, **(env or {})}
        self.start_timeout = start_timeout
        self.log = log
        self.proc: subprocess.Popen[str] | None = None
        self.info: dict[str, Any] = {}
        self.stderr_lines: list[str] = []

    @property
    def url(self) -> str:
        """Base URL of the HTTP server."""
        return self.info["http"]

    @property
    def http_port(self) -> int:
        """The HTTP port."""
        return int(self.info["http_port"])

    @property
    def grpc_port(self) -> int | None:
        """The gRPC port (None without gRPC)."""
        return self.info.get("grpc_port")

    @property
    def pid(self) -> int:
        """Process id of the server."""
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> ServerProcess:
        """Launch and wait for the 'serving' announcement (RuntimeError if it never comes)."""
        self.proc = subprocess.Popen([sys.executable, "-m", "nnforge.serve", *self.args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=self.env, start_new_session=True)
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        line: list[str] = []
        reader = threading.Thread(target=lambda: line.append(self.proc.stdout.readline()),
                                  daemon=True)
        reader.start()
        reader.join(self.start_timeout)
        text = line[0] if line else ""
        try:
            self.info = json.loads(text)
        except ValueError:
            self.stop()
            raise RuntimeError("the server did not start: " + (
                " ".join(self.stderr_lines[-5:]) or text or "no output")) from None
        return self

    def _drain_stderr(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for text in self.proc.stderr:
            self.stderr_lines.append(text)
            if len(self.stderr_lines) > 5000:  # keep memory bounded under a long load
                del self.stderr_lines[:1000]
            if self.log is not None:
                self.log.write(text)

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


async def _exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    request: bytes) -> tuple[int, bytes, bool]:
    """Send one HTTP/1.1 request; (status, body, whether the server keeps the connection)."""
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    body = await reader.readexactly(int(fields.get("content-length", "0")))
    return status, body, fields.get("connection", "").lower() != "close"


async def post_many(url: str, path: str, bodies: Sequence[bytes], concurrency: int,
                    headers: dict[str, str] | None = None) -> list[tuple[int, bytes]]:
    """POST every body over `concurrency` keep-alive connections; (status, body) in order.

    A minimal HTTP/1.1 client: general-purpose clients spend more time managing their pools
    than the server spends answering when hundreds of requests wait for a connection.
    """
    host, _, port = url.removeprefix("http://").partition(":")
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    results: list[tuple[int, bytes]] = [(0, b"")] * len(bodies)
    todo = iter(range(len(bodies)))

    async def worker() -> None:
        reader = writer = None
        for i in todo:
            req = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                   f"Content-Length: {len(bodies[i])}\r\n{extra}\r\n").encode() + bodies[i]
            if writer is None:
                reader, writer = await asyncio.open_connection(host, int(port))
            status, body, keep = await _exchange(reader, writer, req)
            results[i] = (status, body)
            if not keep:
                writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return results
