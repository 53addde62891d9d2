"""`nnforge serve PATH`: the command line of the model server."""

from __future__ import annotations

import argparse
from typing import Sequence

from ..cli.common import CliParser, nonnegative_int, positive_int
from .config import ServeConfig, apply_environment, from_mapping, read_file

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
  open http://localhost:8000/docs                  # every route"""


def _nonnegative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0, found {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `nnforge serve` (defaults are None: unset flags leave the config alone)."""
    parser.add_argument("path", metavar="PATH", help="a .nnf file or a model repository")
    parser.add_argument("--config", metavar="FILE", help="settings file (.toml, .json, .yaml)")
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=nonnegative_int, help="HTTP port (default 8000; 0: any)")
    parser.add_argument("--grpc-port", type=nonnegative_int,
                        help="gRPC port (default 8001; 0: any)")
    parser.add_argument("--no-grpc", action="store_true", help="do not start the gRPC server")
    parser.add_argument("--model-name", help="name for a single .nnf file (default: taken from "
                                             "<model>/<version>/model.nnf or the file name)")
    parser.add_argument("--version-policy", metavar="POLICY",
                        help="latest, latest:N, all or specific:V1,V2 (default latest:1)")
    parser.add_argument("--poll", type=_nonnegative, metavar="SECONDS", dest="poll_interval_s",
                        help="look for new or changed versions every SECONDS (default: off)")
    parser.add_argument("--max-batch-size", type=positive_int,
                        help="samples per batched forward pass (default 64)")
    parser.add_argument("--max-queue-delay-ms", type=_nonnegative,
                        help="how long the first request may wait for others (default 0)")
    parser.add_argument("--max-queue-size", type=positive_int,
                        help="samples waiting per model before 503 (default 2048)")
    parser.add_argument("--timeout-ms", type=_nonnegative,
                        help="per-request timeout, 0: none (default 30000)")
    parser.add_argument("--compute", choices=["auto", "inline", "thread"],
                        help="where forward passes run: the event loop (inline), a worker "
                             "thread, or auto: a thread for models slower than 2 ms a batch "
                             "(default auto)")
    parser.add_argument("--model-threads", type=positive_int, dest="threads",
                        help="threads one forward pass may use (default 1)")
    parser.add_argument("--max-body-bytes", type=positive_int,
                        help="largest request body (default 16 MiB)")
    parser.add_argument("--shutdown-grace-s", type=_nonnegative, metavar="SECONDS",
                        help="on SIGTERM, how long requests in flight may take (default 10)")
    parser.add_argument("--workers", type=positive_int,
                        help="server processes sharing the ports, for more requests per second "
                             "on several cores (default 1)")
    parser.add_argument("--blas-threads", type=positive_int,
                        help="threads of the BLAS library (default: its own choice)")
    parser.add_argument("--no-fast-http", action="store_true",
                        help="send inference requests through ASGI like every other route "
                             "(slower; for comparison and debugging)")
    parser.add_argument("--no-access-log", action="store_true",
                        help="do not write a JSON access record per request")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error"])


def build_config(args: argparse.Namespace) -> ServeConfig:
    """Defaults, config file, environment, flags: in that order."""
    cfg = from_mapping(read_file(args.config), f"'{args.config}'") if args.config \
        else ServeConfig()
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
    return cfg.validate()


def run(args: argparse.Namespace) -> int:
    """Serve until interrupted; the exit code."""
    from . import server  # noqa: PLC0415 - uvicorn and grpc load only when serving

    server.run(build_config(args), server.print_announcement)
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "nnforge serve") -> int:
    """Parse argv and serve (what `nnforge serve` and `python -m nnforge.serve` call)."""
    parser = CliParser(prog=prog, description=DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))
