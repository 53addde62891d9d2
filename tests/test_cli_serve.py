"""`nnforge serve` on bad settings: one line on stderr, exit 2 for a flag, 1 for the rest.

None of these may start a server: each fails before binding a port or loading a model.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

import nnforge as nf
from nnforge import nn
from nnforge.errors import ConfigError
from nnforge.serve import cli as serve_cli


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model file, a repository holding it, and a few config files."""
    d = tmp_path_factory.mktemp("cli_serve")
    nf.manual_seed(0)
    nf.save(nn.Sequential(nn.Linear(4, 3)), d / "m.nnf", task="multiclass")
    (d / "repo" / "m" / "1").mkdir(parents=True)
    (d / "repo" / "m" / "1" / "model.nnf").write_bytes((d / "m.nnf").read_bytes())
    (d / "same_ports.toml").write_text("port = 18795\ngrpc_port = 18795\n")
    (d / "inf_timeout.toml").write_text("[batching]\ntimeout_ms = inf\n")
    (d / "nan_grace.toml").write_text("shutdown_grace_s = nan\n")
    (d / "huge_body.toml").write_text("max_body_bytes = 99999999999\n")
    (d / "huge_batch.json").write_text('{"models": {"m": {"max_batch_size": 100000}}}')
    (d / "utf16.toml").write_bytes("port = 0\n".encode("utf-16"))
    return d


def _free_port() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return str(s.getsockname()[1])


def serve(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m nnforge serve ARGS`; a server that starts anyway is killed by the timeout."""
    env = {k: v for k, v in os.environ.items() if k != "NNFORGE_DEBUG"}
    return subprocess.run([sys.executable, "-m", "nnforge", "serve", *args], cwd=cwd,
                          capture_output=True, text=True, env=env, timeout=60)


LOCAL = ["--port", "0", "--no-grpc"]  # where a wrong acceptance would start a server

CASES = {
    # name: (arguments after PATH, exit code, words the message must contain)
    "port above the range": (["--port", "99999"], 2, ["--port", "between 0 and 65535",
                                                      "'99999'"]),
    "negative port": (["--port", "-1"], 2, ["--port", "between 0 and 65535"]),
    "port that is no number": (["--port", "http"], 2, ["--port", "between 0 and 65535"]),
    "fractional port": (["--port", "8000.5"], 2, ["--port", "between 0 and 65535"]),
    "gRPC port above the range": (["--grpc-port", "70000", "--port", "0"], 2,
                                  ["--grpc-port", "between 0 and 65535"]),
    "too many workers": (["--workers", "65", *LOCAL], 2, ["--workers", "between 1 and 64"]),
    "no workers": (["--workers", "0", *LOCAL], 2, ["--workers", "between 1 and 64"]),
    "huge batch size": (["--max-batch-size", "70000", *LOCAL], 2,
                        ["--max-batch-size", "between 1 and 65536"]),
    "zero batch size": (["--max-batch-size", "0", *LOCAL], 2, ["--max-batch-size"]),
    "infinite timeout": (["--timeout-ms", "inf", *LOCAL], 2, ["--timeout-ms", "finite"]),
    "infinite queue delay": (["--max-queue-delay-ms", "inf", *LOCAL], 2,
                             ["--max-queue-delay-ms", "finite"]),
    "infinite shutdown grace": (["--shutdown-grace-s", "inf", *LOCAL], 2,
                                ["--shutdown-grace-s", "finite"]),
    "negative poll": (["--poll", "-1", *LOCAL], 2, ["--poll"]),
    "body limit beyond gRPC's": (["--max-body-bytes", "99999999999", "--port", "0",
                                  "--grpc-port", "0"], 2,
                                 ["--max-body-bytes", "between 1 and 2147483647"]),
    "absurd BLAS threads": (["--blas-threads", "99999999999999999999", *LOCAL], 2,
                            ["--blas-threads", "between 1 and 1024"]),
    "empty model name": (["--model-name", "", *LOCAL], 2, ["--model-name", "found ''"]),
    # these exited 1 after parsing, as if the server had failed
    "unknown version policy": (["--version-policy", "bogus", *LOCAL], 2,
                               ["--version-policy", "'latest', 'latest:N', 'all' or "
                                "'specific:V1,V2'", "'bogus'"]),
    "latest:0 version policy": (["--version-policy", "latest:0", *LOCAL], 2,
                                ["--version-policy", "'latest:0'"]),
    "negative specific version": (["--version-policy", "specific:-1", *LOCAL], 2,
                                  ["--version-policy", "'specific:-1'"]),
    "empty host": (["--host", "", *LOCAL], 2, ["--host", "found ''"]),
    "gRPC port and --no-grpc": (["--grpc-port", "0", "--no-grpc", "--port", "0"], 2,
                                ["--grpc-port", "--no-grpc"]),
    "config file with both ports equal": (["--config", "same_ports.toml"], 1,
                                          ["same_ports.toml", "different HTTP and gRPC ports",
                                           "18795"]),
    "config file with an infinite timeout": (["--config", "inf_timeout.toml", *LOCAL], 1,
                                             ["inf_timeout.toml", "batching.timeout_ms",
                                              "finite"]),
    "config file with a nan grace period": (["--config", "nan_grace.toml", *LOCAL], 1,
                                            ["nan_grace.toml", "shutdown_grace_s"]),
    "config file with a huge body limit": (["--config", "huge_body.toml", "--port", "0",
                                            "--grpc-port", "0"], 1,
                                           ["huge_body.toml", "max_body_bytes",
                                            "between 1 and 2147483647"]),
    "config file with a huge batch": (["--config", "huge_batch.json", *LOCAL], 1,
                                      ["models.m.max_batch_size", "between 1 and 65536"]),
    "UTF-16 config file": (["--config", "utf16.toml", *LOCAL], 1, ["'utf16.toml'", "UTF-8"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_settings_print_one_line_and_exit_nonzero(work: Path, case: str,
                                                       one_line_error: object) -> None:
    args, code, words = CASES[case]
    one_line_error(serve(work, "m.nnf", *args), code, words)


def test_the_same_port_for_http_and_grpc_is_a_usage_error(work: Path) -> None:
    """It failed only after the models loaded, with a log line and '[Errno 98]' naming no port;
    with --workers 2 both servers even shared the port."""
    port = _free_port()
    for extra in ([], ["--workers", "2"]):
        r = serve(work, "m.nnf", "--port", port, "--grpc-port", port, *extra)
        assert r.returncode == 2, r.stderr
        assert r.stderr.splitlines() == [
            f"nnforge: error: expected different HTTP and gRPC ports, found both {port} "
            f"(choose another --grpc-port, or --no-grpc)"]


def test_a_port_in_use_fails_in_one_line_naming_it(work: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for args in (["--port", port, "--no-grpc"], ["--port", "0", "--grpc-port", port]):
            r = serve(work, "m.nnf", *args)
            assert r.returncode == 1, r.stderr
            assert r.stderr.splitlines() == [r.stderr.strip()], r.stderr
            assert f"127.0.0.1:{port}" in r.stderr and "in use" in r.stderr


def test_model_name_for_a_repository_is_a_usage_error(work: Path) -> None:
    """A repository names its models by their folders: --model-name was silently ignored."""
    r = serve(work, "repo", "--model-name", "other", *LOCAL)
    assert r.returncode == 2 and "--model-name names a single model file" in r.stderr
    assert r.stderr.count("\n") == 1


def _config(*args: str) -> object:
    parser = argparse.ArgumentParser()
    serve_cli.add_arguments(parser)
    return serve_cli.build_config(parser.parse_args(list(args)))


def test_good_bounds_still_pass_and_config_values_are_checked_like_flags(work: Path) -> None:
    cfg = _config("m.nnf", "--port", "65535", "--grpc-port", "0", "--workers", "64",
                  "--max-batch-size", "65536", "--timeout-ms", "0", "--max-body-bytes",
                  str(2**31 - 1))
    assert (cfg.port, cfg.grpc_port, cfg.workers) == (65535, 0, 64)  # type: ignore[attr-defined]
    # port 0 twice is fine: each picks its own free port
    assert _config("m.nnf", "--port", "0", "--grpc-port", "0").port == 0  # type: ignore[attr-defined]
    with pytest.raises(ConfigError, match="huge_batch.json'.*models.m.max_batch_size"):
        _config(str(work / "m.nnf"), "--config", str(work / "huge_batch.json"))
