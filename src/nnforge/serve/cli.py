"""`nnforge serve PATH`: the command line of the model server."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any, Sequence

from ..cli.common import (
    CliParser,
    UsageError,
    int_between,
    nonnegative_float,
    positive_int,
)
from ..errors import ConfigError
from .config import MAX_WORKERS, ServeConfig, apply_environment, from_mapping, read_file

#: Bounds of the settings, for the flags (a usage error) and the config file (a failure).
PORTS = (0, 65535)
#: Warm-up runs every batch size up to it: a huge value hung the start without a word.
MAX_BATCH_SIZE = 65536
#: gRPC takes the body limit as a C int.
MAX_BODY_BYTES = 2**31 - 1
MAX_THREADS = 1024

DESCRIPTION = """Serve a model over simple REST, KServe V2 REST and KServe V2 gRPC.

PATH is a .nnf model file or a model repository laid out <repo>/<model>/<version>/model.nnf.
Settings come from the defaults, then --config FILE (.toml, .json, or .yaml with PyYAML),
then the NNFORGE_API_KEY / NNFORGE_ADMIN_KEY environment variables, then these flags."""

EPILOG = """examples:
  nnforge serve models/digits/1/model.nnf
  nnforge serve models --port 8080 --version-policy latest:2 --poll 5
  nnforge serve models --config serve.toml --host 0.0.0.0
  nnforge serve models --workers 2                # one process per core

then:
  curl -s localhost:8000/predict -d '{"data": [0, 1, 2, ...]}'
  curl -s localhost:8000/v2/models/digits          # KServe V2 metadata
  open http://localhost:8000/docs                  # every route (Swagger UI, fetched
                                                   # from a CDN; needs the API key if set)"""


def _model_name(text: str) -> str:
    from .repository import check_name  # noqa: PLC0415 - the repository's own rule for names

    problem = check_name(text)  # an empty name used to fall back to the file's name silently
    if problem is not None:
        raise argparse.ArgumentTypeError(problem)
    return text


def _version_policy(text: str) -> str:
    from .repository import VersionPolicy  # noqa: PLC0415

    try:
        VersionPolicy.parse(text)
    except ConfigError as exc:  # a flag's mistake is a usage error (exit 2), not a failure
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _host(text: str) -> str:
    if not text.strip():  # "" failed only at bind time, as "cannot listen on :0"
        raise argparse.ArgumentTypeError(f"expected a host name or address to listen on, "
                                         f"found {text!r}")
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `nnforge serve` (defaults are None: unset flags leave the config alone)."""
    parser.add_argument("path", metavar="PATH", help="a .nnf file or a model repository")
    parser.add_argument("--config", metavar="FILE", help="settings file (.toml, .json, .yaml)")
    parser.add_argument("--host", type=_host, help="address to listen on (default 127.0.0.1)")
    port = int_between(*PORTS, "a port number")  # the message names the range
    parser.add_argument("--port", type=port, help="HTTP port, 0 to 65535 (default 8000; 0: any)")
    parser.add_argument("--grpc-port", type=port,
                        help="gRPC port, 0 to 65535 (default 8001; 0: any)")
    parser.add_argument("--no-grpc", action="store_true", help="do not start the gRPC server")
    parser.add_argument("--model-name", type=_model_name,
                        help="name for a single .nnf file (default: taken from "
                             "<model>/<version>/model.nnf or the file name)")
    parser.add_argument("--version-policy", metavar="POLICY", type=_version_policy,
                        help="latest, latest:N, all or specific:V1,V2 (default latest:1)")
    parser.add_argument("--poll", type=nonnegative_float, metavar="SECONDS",
                        dest="poll_interval_s",
                        help="look for new or changed versions every SECONDS (default: off)")
    parser.add_argument("--max-batch-size", type=int_between(1, MAX_BATCH_SIZE),
                        help=f"most samples per forward pass, 1 to {MAX_BATCH_SIZE} "
                             f"(default 64); a larger request runs in passes of this size")
    parser.add_argument("--max-queue-delay-ms", type=nonnegative_float,
                        help="how long the first request may wait for others (default 0)")
    parser.add_argument("--max-queue-size", type=positive_int,
                        help="samples waiting per model before 503 (default 2048)")
    parser.add_argument("--timeout-ms", type=nonnegative_float,
                        help="per-request timeout, 0: none (default 30000)")
    parser.add_argument("--compute", choices=["auto", "inline", "thread"],
                        help="where forward passes run: the event loop (inline), a worker "
                             "thread, or auto: a thread for models slower than 2 ms a batch "
                             "(default auto)")
    parser.add_argument("--model-threads", type=int_between(1, MAX_THREADS), dest="threads",
                        help="threads one forward pass may use (default 1)")
    parser.add_argument("--max-body-bytes", type=int_between(1, MAX_BODY_BYTES),
                        help="largest request body (default 16 MiB)")
    parser.add_argument("--shutdown-grace-s", type=nonnegative_float, metavar="SECONDS",
                        help="on SIGTERM, how long requests in flight may take (default 10)")
    parser.add_argument("--workers", type=int_between(1, MAX_WORKERS, "workers"),
                        help="server processes sharing the ports, for more requests per second "
                             f"on several cores, 1 to {MAX_WORKERS} (default 1)")
    parser.add_argument("--blas-threads", type=int_between(1, MAX_THREADS),
                        help="threads of the BLAS library (default: its own choice)")
    parser.add_argument("--no-fast-http", action="store_true",
                        help="send inference requests through ASGI like every other route "
                             "(slower; for comparison and debugging)")
    parser.add_argument("--no-access-log", action="store_true",
                        help="do not write a JSON access record per request")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    parser.add_argument("--import", metavar="MODULE", action="append", dest="imports",
                        default=[], help="import a Python module first, e.g. one that "
                                         "registers custom layers (repeatable)")


def build_config(args: argparse.Namespace) -> ServeConfig:
    """Defaults, config file, environment, flags: in that order."""
    if args.no_grpc and args.grpc_port is not None:
        raise UsageError("--grpc-port and --no-grpc contradict each other; give one of them")
    where = f"'{args.config}'" if args.config else "the settings"
    if args.config:
        try:
            cfg = from_mapping(read_file(args.config), where)
        except UnicodeDecodeError:
            raise ConfigError(f"expected the config file {where} to be UTF-8 text, found binary "
                              f"or other non-UTF-8 data") from None
    else:
        cfg = ServeConfig()
    apply_environment(cfg)
    cfg.path = args.path
    for name in ("host", "port", "grpc_port", "model_name", "version_policy", "poll_interval_s",
                 "max_body_bytes", "blas_threads", "log_level", "shutdown_grace_s", "workers"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg, name, value)
    for name in ("max_batch_size", "max_queue_delay_ms", "max_queue_size", "timeout_ms",
                 "compute", "threads"):
        value = getattr(args, name)
        if value is not None:
            setattr(cfg.batching, name, value)
            for per_model in cfg.models.values():
                setattr(per_model, name, value)
    if args.no_grpc:
        cfg.grpc_port = None
    if args.no_access_log:
        cfg.access_log = False
    if args.no_fast_http:
        cfg.fast_http = False
    _check_bounds(cfg, where)  # first: its messages name the config file
    try:
        cfg.validate()
    except ConfigError as exc:
        if not args.config:
            raise
        # the flags were checked by their types: what validate() refuses came from the file
        raise ConfigError(f"{where}: {exc}") from None
    if cfg.model_name is not None and Path(cfg.path).is_dir():
        # the repository names its models by their folders: the name would be ignored
        message = (f"names a single model file; {cfg.path!r} is a model repository, whose "
                   f"models are named by their folders")
        if args.model_name is not None:
            raise UsageError(f"--model-name {message}")
        raise ConfigError(f"{where}: model_name {message}")
    if cfg.grpc_port is not None and cfg.port == cfg.grpc_port != 0:
        # both servers on one port failed late, after the models loaded (with --workers, the
        # shared port even let both start, each answering a share of the other's clients)
        message = (f"expected different HTTP and gRPC ports, found both {cfg.port} (choose "
                   f"another --grpc-port, or --no-grpc)")
        if args.port is not None or args.grpc_port is not None:
            raise UsageError(message)
        raise ConfigError(f"{where}: {message}")
    return cfg


def _check_bounds(cfg: ServeConfig, where: str) -> None:
    """The flags' bounds, for values that came from the config file (validate() lacks them)."""
    limits: list[tuple[str, Any, int]] = [("max_body_bytes", cfg.max_body_bytes, MAX_BODY_BYTES),
                                          ("blas_threads", cfg.blas_threads, MAX_THREADS)]
    for group, b in (("batching", cfg.batching),
                     *((f"models.{k}", v) for k, v in cfg.models.items())):
        limits += [(f"{group}.max_batch_size", b.max_batch_size, MAX_BATCH_SIZE),
                   (f"{group}.threads", b.threads, MAX_THREADS)]
        for name in ("max_queue_delay_ms", "timeout_ms"):
            _finite(f"{group}.{name}", getattr(b, name), where)
    for name, value, high in limits:
        if value is not None and (type(value) is not int or not 1 <= value <= high):
            raise ConfigError(f"{where}: expected {name} to be an integer between 1 and "
                              f"{high}, found {value!r}")
    for name in ("poll_interval_s", "shutdown_grace_s", "keep_alive_s", "read_timeout_s"):
        _finite(name, getattr(cfg, name), where)


def _finite(name: str, value: Any, where: str) -> None:
    # validate() refuses these too, but without naming the file they came from; inf grace
    # crashed the start, inf delays hang requests
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where}: expected {name} to be a finite number >= 0, found {value!r}")


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; the exit code."""
    from ..cli.plugins import IMPORTED, import_modules  # noqa: PLC0415
    from . import server  # noqa: PLC0415 - uvicorn and grpc load only when serving

    import_modules(getattr(args, "imports", None) or [])
    cfg = build_config(args)
    try:
        import_modules(cfg.imports)  # a config file's own list
    except UsageError as exc:  # it said "--import", a flag nobody gave, and exit 2 for usage
        raise ConfigError(f"'{args.config}': imports: {str(exc).removeprefix('--import ')}"
                          ) from None
    cfg.imports = list(IMPORTED)  # the global --import, serve --import and the file's
    server.run(cfg, server.print_announcement)
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "nnforge serve") -> int:
    """Parse argv and serve (what `nnforge serve` and `python -m nnforge.serve` call)."""
    parser = CliParser(prog=prog, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))
