"""`nnforge serve --workers N`: a supervisor process and N server processes sharing the ports.

One Python process answers at most one core's worth of requests (the GIL). With N workers the
kernel spreads connections over N copies of the server (SO_REUSEPORT on the HTTP and gRPC
ports), each with its own event loop, batcher and copy of the models; cluster.py keeps the
admin actions, metrics and statistics those of one server. The supervisor:

- reserves the ports (a bound, not listening, SO_REUSEPORT socket each, which also resolves
  port 0) so that nothing else takes them while workers come and go;
- starts the workers (spawned: a fresh interpreter each, no inherited threads or locks) and
  waits until every one has loaded its models and listens; a worker that cannot start stops
  them all, with its error;
- prints one 'serving' line, then replaces a worker that dies, unless workers die more than
  MAX_RESTARTS times within RESTART_WINDOW_S (a crash loop stops the server);
- on SIGTERM or SIGINT passes SIGTERM to every worker (each drains its requests) and waits.

Workers run in their own process group, so a terminal's Ctrl-C reaches the supervisor alone
and each worker is told once; a worker whose supervisor disappears stops by itself (its end of
the pipe to the supervisor reads end-of-file).
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

from ..errors import ConfigError, ModelFileError, NNForgeError
from .config import ServeConfig

log = logging.getLogger("nnforge.serve")

MAX_RESTARTS = 5
RESTART_WINDOW_S = 60.0
STOP_MARGIN_S = 15.0  # beyond the shutdown grace period, before a worker is killed


@dataclasses.dataclass
class WorkerLink:
    """What a worker process knows of its place: its number, the run directory, the pipe."""

    index: int
    run_dir: str
    parent_fd: int


def _worker_main(config: ServeConfig, index: int, run_dir: str, conn: Connection) -> None:
    """A worker process: serve, reporting 'ready' (or why not) to the supervisor."""
    try:
        os.setpgid(0, 0)  # a terminal's Ctrl-C goes to the supervisor, which tells us once
    except OSError:  # already a group leader: nothing to do
        pass
    from .server import run  # noqa: PLC0415

    try:
        for name in config.imports:  # a fresh interpreter: custom layers register again
            importlib.import_module(name)
        run(config, lambda info: conn.send({**info, "event": "ready"}),
            WorkerLink(index, run_dir, conn.fileno()))
    except NNForgeError as exc:
        conn.send({"event": "failed", "error": str(exc), "kind": type(exc).__name__})
        sys.exit(1)


class _Worker:
    __slots__ = ("index", "proc", "conn", "told")

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: Any = None
        self.conn: Connection | None = None
        self.told = False  # sent SIGTERM already (a second one means: stop at once)


class Supervisor:
    """Starts, watches and stops the worker processes of one server."""

    def __init__(self, config: ServeConfig, run_dir: str) -> None:
        self.config, self.run_dir = config, run_dir
        self.workers = [_Worker(i) for i in range(config.workers)]
        self.stopping = threading.Event()
        self._context = multiprocessing.get_context("spawn")

    def run(self, announce: Callable[[dict[str, Any]], None] | None) -> None:
        """Start every worker, announce, and replace dying ones until told to stop."""
        for w in self.workers:
            self._spawn(w)
        infos = [self._wait_ready(w) for w in self.workers]
        if self.stopping.is_set():
            return
        info = {**infos[0], "event": "serving"}
        info.update(workers=len(self.workers), pids=[w.proc.pid for w in self.workers])
        log.info("%d workers serving (pids %s)", len(self.workers), info["pids"])
        if announce is not None:
            announce(info)
        self._watch()

    def on_signal(self, signum: int, frame: Any) -> None:
        """SIGTERM/SIGINT: tell every worker to drain and stop (a second time: at once)."""
        self.stopping.set()
        for w in self.workers:
            if w.proc is not None and w.proc.is_alive():
                w.told = True
                _kill(w.proc.pid, signal.SIGTERM)

    def _spawn(self, w: _Worker) -> None:
        ours, theirs = self._context.Pipe(duplex=True)
        w.proc = self._context.Process(target=_worker_main, name=f"nnforge-worker-{w.index}",
                                       args=(self.config, w.index, self.run_dir, theirs))
        w.proc.start()
        theirs.close()
        w.conn, w.told = ours, False

    def _wait_ready(self, w: _Worker) -> dict[str, Any]:
        """The worker's 'serving' info once it listens; a ConfigError/ModelFileError if not."""
        assert w.conn is not None
        while not self.stopping.is_set():
            if not wait([w.conn, w.proc.sentinel], timeout=0.5):
                continue
            try:
                message = w.conn.recv() if w.conn.poll() else None
            except (EOFError, OSError):
                message = None
            if message is not None and message.get("event") == "ready":
                return message
            w.proc.join(5)
            if message is not None and message.get("event") == "failed":
                kind = ModelFileError if message.get("kind") == "ModelFileError" else ConfigError
                raise kind(message["error"])
            raise ConfigError(f"worker {w.index} exited with code {w.proc.exitcode} while "
                              f"starting; see its log lines above")
        return {}

    def _watch(self) -> None:
        """Replace workers that die, until stopping (or a crash loop: ConfigError)."""
        deaths: collections.deque[float] = collections.deque()
        while not self.stopping.is_set():
            by_sentinel = {w.proc.sentinel: w for w in self.workers}
            for sentinel in wait(list(by_sentinel), timeout=0.5):
                if self.stopping.is_set():
                    return
                w = by_sentinel[sentinel]
                w.proc.join(5)  # reap it
                now = time.monotonic()
                deaths.append(now)
                while deaths and deaths[0] < now - RESTART_WINDOW_S:
                    deaths.popleft()
                log.error("worker %d (pid %d) exited with code %s", w.index, w.proc.pid,
                          w.proc.exitcode)
                if len(deaths) > MAX_RESTARTS:
                    raise ConfigError(f"workers exited {len(deaths)} times within "
                                      f"{RESTART_WINDOW_S:g} s; stopping the server")
                self._replace(w)

    def _replace(self, w: _Worker) -> None:
        if w.conn is not None:
            w.conn.close()
        self._spawn(w)
        try:
            self._wait_ready(w)
        except NNForgeError as exc:  # its death is counted by the next pass of _watch
            log.error("worker %d could not start again: %s", w.index, exc)
            return
        if not self.stopping.is_set():
            log.info("worker %d started again (pid %d)", w.index, w.proc.pid)

    def stop_all(self) -> None:
        """SIGTERM to every worker not yet told, wait for them to drain, kill stragglers."""
        deadline = time.monotonic() + self.config.shutdown_grace_s + STOP_MARGIN_S
        for w in self.workers:
            if w.proc is not None and w.proc.is_alive() and not w.told:
                w.told = True
                _kill(w.proc.pid, signal.SIGTERM)
        for w in self.workers:
            if w.proc is None:
                continue
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                log.error("worker %d did not stop in time; killing it", w.index)
                w.proc.kill()
                w.proc.join(5)
            if w.conn is not None:
                w.conn.close()


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:  # exited meanwhile
        pass


def _reserve(host: str, port: int) -> Any:
    """A bound SO_REUSEPORT socket holding host:port for the workers.

    First a plain bind: SO_REUSEPORT alone would let this server share the port with another
    one already listening there (another `nnforge serve --workers`), splitting its traffic
    without a word. The plain bind fails in that case, with the usual error."""
    from .server import bind  # noqa: PLC0415

    probe = bind(host, port, listen=False)
    port = probe.getsockname()[1]
    probe.close()
    return bind(host, port, shared=True, listen=False)


def supervise(config: ServeConfig, announce: Callable[[dict[str, Any]], None] | None) -> None:
    """Serve with config.workers processes until SIGTERM/SIGINT (see the module docstring)."""
    reserved = [_reserve(config.host, config.port)]
    try:
        config = dataclasses.replace(config, port=reserved[0].getsockname()[1])
        if config.grpc_port is not None:
            reserved.append(_reserve(config.host, config.grpc_port))
            config = dataclasses.replace(config, grpc_port=reserved[1].getsockname()[1])
        try:
            run_dir = tempfile.mkdtemp(prefix="nnforge-serve-")
        except OSError as exc:
            raise ConfigError(f"cannot create the workers' run directory in "
                              f"'{tempfile.gettempdir()}': {exc.strerror or exc}") from None
    except BaseException:
        for sock in reserved:
            sock.close()
        raise
    supervisor = Supervisor(config, run_dir)
    previous = {sig: signal.signal(sig, supervisor.on_signal)
                for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        supervisor.run(announce)
    finally:
        supervisor.stop_all()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for sock in reserved:
            sock.close()
        shutil.rmtree(run_dir, ignore_errors=True)
    log.info("stopped")  # not after a failed start: its one-line error must come last
