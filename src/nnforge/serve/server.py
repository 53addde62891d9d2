"""Run the server: load the repository, listen on HTTP and gRPC, shut down gracefully.

Both protocols share one event loop (uvloop when installed), so the batcher, the metrics and
the repository are only ever touched from one thread. SIGTERM or SIGINT: readiness turns
false, the listeners close, requests in flight are answered (up to `shutdown_grace_s`), the
batchers drain, the access log is flushed. A second SIGINT stops at once.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import socket
import sys
from typing import Any, Callable

import orjson

from ..backend import usable_cpus
from ..errors import ConfigError, ModelFileError
from .cluster import Cluster
from .config import ServeConfig
from .core import InferenceServer
from .http_app import ServeApp
from .logs import AccessLog, configure_logging
from .metrics import ServerMetrics
from .repository import ModelRepository, VersionPolicy, check_name

log = logging.getLogger("nnforge.serve")


def bind(host: str, port: int, shared: bool = False, listen: bool = True) -> socket.socket:
    """A TCP socket bound to host:port (port 0 picks a free one), listening unless told not
    to, or a ConfigError saying why not. `shared`: SO_REUSEPORT, so that the worker processes
    of one server can each listen on the port and the kernel spreads connections over them."""
    if shared and not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigError("several workers need SO_REUSEPORT, which this system lacks; "
                          "run one worker per port instead")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        family, kind, proto, _, addr = infos[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(addr)
        if listen:
            sock.listen(2048)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.setblocking(False)
    return sock


async def load_repository(config: ServeConfig, metrics: ServerMetrics) -> ModelRepository:
    """The repository with its first versions loaded; an error when nothing could be."""
    repo = ModelRepository(config.path, metrics, config.batching,
                           VersionPolicy.parse(config.version_policy), config.model_name,
                           config.models)
    # failures are logged only once the server is sure to start: when nothing loads, the
    # command's one-line error says it all (no log line before it)
    errors = await repo.sync(log_failures=False)
    if not any(e.versions for e in repo.models.values()):
        if errors:
            raise ModelFileError(f"no model could be loaded: {errors[0]}")
        if not config.poll_interval_s:
            skipped = "".join(f"; skipped {d.name!r}: {check_name(d.name)}"
                              for d in sorted(repo.skipped))
            raise ConfigError(f"found no models in '{config.path}' (expected a .nnf file or "
                              f"<repo>/<model>/<version>/model.nnf){skipped}")
    for error in errors:
        log.error("failed to load model %s", error)
    return repo


def _uvicorn_server(app: ServeApp, config: ServeConfig) -> Any:
    import uvicorn  # noqa: PLC0415 - heavy, and only the server needs it

    from .fasthttp import protocol_class  # noqa: PLC0415

    http = (protocol_class(app) if config.fast_http else None) or "auto"
    uv_config = uvicorn.Config(
        app, host=config.host, port=config.port, loop="none", http=http, interface="asgi3",
        lifespan="off", log_config=None, access_log=False, proxy_headers=False,
        server_header=False, limit_concurrency=config.max_connections,
        timeout_keep_alive=int(config.keep_alive_s),
        timeout_graceful_shutdown=int(config.shutdown_grace_s) or None)
    uv_config.load()
    uv = uvicorn.Server(uv_config)
    # what Server.serve() would set up before startup(); we drive startup, main_loop and
    # shutdown ourselves so that gRPC and the batchers stop in step with HTTP
    uv.lifespan = uv_config.lifespan_class(uv_config)
    return uv


def _bind_grpc(config: ServeConfig) -> tuple[Any, int]:
    """A grpc.aio server bound to the gRPC port (handlers and start come later)."""
    import grpc  # noqa: PLC0415

    if config.grpc_port and config.workers == 1:  # (workers: the supervisor checked it)
        # a plain bind first: grpc's C core would log a line of its own before our error
        bind(config.host, config.grpc_port, listen=False).close()
    limit = config.max_body_bytes
    grpc_server = grpc.aio.server(options=[("grpc.max_receive_message_length", limit),
                                           ("grpc.max_send_message_length", -1),
                                           ("grpc.so_reuseport", int(config.workers > 1))])
    host = f"[{config.host}]" if ":" in config.host else config.host
    address = f"{host}:{config.grpc_port}"
    try:
        port = grpc_server.add_insecure_port(address)
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen for gRPC on {address}: {exc}") from None
    if not port:
        raise ConfigError(f"cannot listen for gRPC on {address}")
    return grpc_server, port


async def serve(config: ServeConfig,
                announce: Callable[[dict[str, Any]], None] | None = None,
                worker: Any = None) -> None:
    """Serve until SIGTERM/SIGINT (or until the returned task is cancelled).

    `worker` (a workers.WorkerLink) makes this process one of several that share the ports."""
    loop = asyncio.get_running_loop()
    metrics = ServerMetrics()
    # the ports first: a port in use fails at once, with its one-line error and no log lines
    # of models loaded for nothing before it (listening waits: until the models are in,
    # clients are refused rather than left hanging)
    sock = bind(config.host, config.port, shared=worker is not None, listen=False)
    grpc_server, grpc_port, repo, cluster = None, None, None, None
    try:
        if config.grpc_port is not None:
            grpc_server, grpc_port = _bind_grpc(config)
        repo = await load_repository(config, metrics)
        access_log = AccessLog(enabled=config.access_log, atomic_lines=worker is not None)
        server = InferenceServer(config, repo, metrics, access_log)
        if worker is not None:
            cluster = server.cluster = Cluster(worker.run_dir, worker.index)
        http_port = sock.getsockname()[1]
        uv = _uvicorn_server(ServeApp(server), config)
        if cluster is not None:
            # listen to peers first, then replay: an admin action taken meanwhile reaches this
            # worker one way or the other (both ways is harmless: they are idempotent)
            await cluster.start(server)
            await cluster.replay(server)
        if grpc_server is not None:
            from .grpc_service import InferenceService, generic_handler  # noqa: PLC0415

            grpc_server.add_generic_rpc_handlers((generic_handler(InferenceService(server)),))
            await grpc_server.start()
        sock.listen(2048)
        await uv.startup(sockets=[sock])
    except BaseException:
        sock.close()
        if grpc_server is not None:
            await grpc_server.stop(None)
        if cluster is not None:
            await cluster.close()
        if repo is not None:
            await repo.close()
        raise
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            uv.force_exit = True  # second signal: stop waiting for requests in flight
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, on_signal)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests) or Windows
            pass
    if worker is not None:  # the supervisor never writes: readable means it is gone
        loop.add_reader(worker.parent_fd, lambda: (loop.remove_reader(worker.parent_fd),
                                                   on_signal()))
    poller = loop.create_task(repo.poll(config.poll_interval_s)) \
        if config.poll_interval_s else None
    ticker = loop.create_task(uv.main_loop())  # keeps the Date header current
    info = {"event": "serving", "http": f"http://{_url_host(config.host)}:{http_port}",
            "http_port": http_port, "grpc_port": grpc_port,
            "models": {n: sorted(e.versions, key=int) for n, e in repo.models.items()}}
    # everything loaded so far lives as long as the server: keep it out of the cyclic garbage
    # collector's full passes, whose pauses would otherwise show in the tail latency
    gc.collect()
    gc.freeze()
    log.info("serving %s on %s%s", ", ".join(sorted(repo.models)), info["http"],
             f" and gRPC port {grpc_port}" if grpc_port else "")
    if announce is not None:
        announce(info)
    try:
        await stop.wait()
    finally:
        log.info("shutting down: finishing requests in flight")
        server.live = False
        uv.should_exit = True
        if poller is not None:
            poller.cancel()
        grace = config.shutdown_grace_s
        # the batchers drain at the same time: a request waiting for its batch to fill must
        # not hold the shutdown up until the grace period ends
        if cluster is not None:
            await cluster.close()
        await asyncio.gather(uv.shutdown(), repo.close(), *(
            [grpc_server.stop(grace)] if grpc_server is not None else []),
            return_exceptions=True)
        await ticker
        access_log.flush()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        log.info("stopped")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else ("127.0.0.1" if host in ("0.0.0.0", "") else host)


def run(config: ServeConfig, announce: Callable[[dict[str, Any]], None] | None = None,
        worker: Any = None) -> None:
    """Configure logging and BLAS threads, then run `serve` on uvloop (when installed).

    With `workers` > 1 (and no `worker` link: this is the first process), a supervisor runs
    instead and starts the workers, each of which comes back here."""
    config.validate()
    configure_logging(config.log_level)
    if config.workers > 1 and worker is None:
        from .workers import supervise  # noqa: PLC0415

        supervise(config, announce)
        return
    limiter = None
    blas_threads = config.blas_threads
    if blas_threads is None and worker is not None:  # workers share the cores, not each all
        blas_threads = max(1, usable_cpus() // config.workers)
    if blas_threads:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415

        limiter = threadpool_limits(blas_threads)
    try:
        import uvloop  # noqa: PLC0415

        factory: Any = uvloop.new_event_loop
    except ImportError:
        factory = None
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve(config, announce, worker))
    finally:
        if limiter is not None:
            limiter.restore_original_limits()


def print_announcement(info: dict[str, Any]) -> None:
    """The 'serving' line on stdout, one JSON object (tests and scripts read the ports here)."""
    sys.stdout.write(orjson.dumps(info).decode() + "\n")
    sys.stdout.flush()
