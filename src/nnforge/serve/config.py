"""Server settings: defaults, then a config file (TOML, JSON or YAML), then environment, then flags.

Example ``serve.toml``::

    host = "0.0.0.0"
    port = 8000
    grpc_port = 8001
    version_policy = "latest:2"
    poll_interval_s = 5
    max_body_bytes = 16777216

    [batching]              # every model
    max_batch_size = 64
    max_queue_delay_ms = 1
    max_queue_size = 2048
    timeout_ms = 30000

    [models.digits]         # one model's own batching
    max_batch_size = 32

    [auth]                  # or the NNFORGE_API_KEY / NNFORGE_ADMIN_KEY environment variables
    api_key = "secret-for-clients"
    admin_key = "secret-for-operators"
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .batcher import BatchingConfig
from .repository import VersionPolicy

COMPUTE_MODES = ("auto", "thread", "inline")
MAX_WORKERS = 64


@dataclass
class ServeConfig:
    """Everything `nnforge serve` can be told."""

    path: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    grpc_port: int | None = 8001  # None: no gRPC server
    model_name: str | None = None  # for a single .nnf file
    version_policy: str = "latest:1"
    poll_interval_s: float = 0.0  # 0: no polling; load/unload by the admin endpoints only
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    models: dict[str, BatchingConfig] = field(default_factory=dict)
    max_body_bytes: int = 16 * 2**20
    max_connections: int = 2048  # beyond it new connections get 503
    api_key: str | None = None
    admin_key: str | None = None
    access_log: bool = True
    log_level: str = "info"
    shutdown_grace_s: float = 10.0
    keep_alive_s: float = 5.0
    read_timeout_s: float = 30.0  # to send a whole request (headers and body); 0: no limit
    blas_threads: int | None = None  # None: leave the BLAS library's default
    fast_http: bool = True  # inference requests skip ASGI (see fasthttp.py); False: plain uvicorn
    workers: int = 1  # server processes sharing the ports (see workers.py)
    #: modules imported before models load (custom layers register themselves on import);
    #: spawned workers import them again, as they start from a fresh interpreter
    imports: list[str] = field(default_factory=list)

    def validate(self) -> ServeConfig:
        """Check ranges and the policy; returns self."""
        try:
            VersionPolicy.parse(self.version_policy)
        except ConfigError as exc:  # its message says what a policy is, not which setting
            raise ConfigError(f"version_policy: {exc}") from None
        if not isinstance(self.imports, list) or not all(
                isinstance(m, str) and m.strip() for m in self.imports):
            raise ConfigError(f"expected imports to be a list of module names, found "
                              f"{self.imports!r:.80}")
        for name, value, low in (("port", self.port, 0), ("max_body_bytes", self.max_body_bytes, 1),
                                 ("max_connections", self.max_connections, 1),
                                 ("workers", self.workers, 1)):
            _int(name, value, low)
        if self.workers > MAX_WORKERS:
            raise ConfigError(f"expected workers between 1 and {MAX_WORKERS}, found {self.workers}")
        if self.port > 65535 or self.grpc_port is not None and not 0 <= self.grpc_port <= 65535:
            raise ConfigError(f"expected ports between 0 and 65535, found port {self.port} and "
                              f"grpc_port {self.grpc_port}")
        for name in ("poll_interval_s", "shutdown_grace_s", "keep_alive_s",
                     "read_timeout_s"):
            if not _finite_at_least_0(getattr(self, name)):
                raise ConfigError(f"expected {name} to be a finite number >= 0, found "
                                  f"{getattr(self, name)!r}")
        for where, b in (("batching", self.batching), *(
                (f"models.{k}", v) for k, v in self.models.items())):
            _check_batching(where, b)
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(f"expected log_level debug, info, warning or error, found "
                              f"{self.log_level!r}")
        for name in ("api_key", "admin_key"):
            key = getattr(self, name)
            # serve(api_key="") (say, from an unset variable) would quietly leave the server
            # open, where the caller meant to close it
            if key is not None and (not isinstance(key, str) or not key.strip()):
                found = repr(key) if isinstance(key, str) else f"a {type(key).__name__}"
                raise ConfigError(f"expected {name} to be a non-empty string (or None for no "
                                  f"key), found {found}")
        return self

    def batching_for(self, model: str) -> BatchingConfig:
        """The batching settings of one model."""
        return self.models.get(model, self.batching)


def _int(name: str, value: Any, low: int) -> None:
    if type(value) is not int or value < low:
        raise ConfigError(f"expected {name} to be an integer >= {low}, found {value!r}")


def _finite_at_least_0(v: Any) -> bool:
    # NaN passes a plain `v < 0` test, and inf would overflow the event loop's timers
    return (not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
            and v >= 0)


def _check_batching(where: str, b: BatchingConfig) -> None:
    _int(f"{where}.max_batch_size", b.max_batch_size, 1)
    _int(f"{where}.max_queue_size", b.max_queue_size, 1)
    _int(f"{where}.threads", b.threads, 1)
    _int(f"{where}.max_sample_bytes", b.max_sample_bytes, 1)
    for name in ("max_queue_delay_ms", "timeout_ms"):
        v = getattr(b, name)
        if not _finite_at_least_0(v):
            raise ConfigError(f"expected {where}.{name} to be a finite number >= 0, found {v!r}")
    if b.compute not in COMPUTE_MODES:
        raise ConfigError(f"expected {where}.compute one of {list(COMPUTE_MODES)}, found "
                          f"{b.compute!r}")


def _dataclass_from(cls: type, data: Any, where: str) -> Any:
    """Build a dataclass from a dict, refusing unknown keys (a typo must not pass silently)."""
    if not isinstance(data, dict):
        raise ConfigError(f"expected a table for {where}, found {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(data) - names)  # YAML keys may be numbers too
    if unknown:
        raise ConfigError(f"unknown setting(s) {unknown} in {where}; expected some of "
                          f"{sorted(names)}")
    return cls(**data)


def read_file(path: str | os.PathLike) -> dict[str, Any]:
    """The settings of a .toml, .json, .yaml or .yml file as a dict."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the config file '{p}': {exc.strerror}") from None
    try:
        if p.suffix == ".toml":
            data = tomllib.loads(text)
        elif p.suffix == ".json":
            data = json.loads(text)
        elif p.suffix in (".yaml", ".yml"):
            try:
                import yaml  # noqa: PLC0415 - optional; TOML and JSON need nothing
            except ImportError:
                raise ConfigError(f"reading '{p}' needs PyYAML (pip install pyyaml); or write "
                                  f"the config as .toml or .json") from None
            data = yaml.safe_load(text)
        else:
            raise ConfigError(f"expected a config file ending in .toml, .json, .yaml or .yml, "
                              f"found '{p.name}'")
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot parse the config file '{p}': {exc}") from None
    except Exception as exc:  # yaml.YAMLError has no common base with the others
        if type(exc).__module__.startswith("yaml"):
            raise ConfigError(f"cannot parse the config file '{p}': {exc}") from None
        raise
    if not isinstance(data, dict):
        raise ConfigError(f"expected the config file '{p}' to hold a table of settings, found "
                          f"{type(data).__name__}")
    return data


def from_mapping(data: dict[str, Any], where: str = "the config file") -> ServeConfig:
    """A ServeConfig from a dict shaped like the config file."""
    data = dict(data)
    auth = data.pop("auth", {})
    auth = _dataclass_from(_Auth, auth, f"[auth] of {where}")
    batching = _dataclass_from(BatchingConfig, data.pop("batching", {}),
                               f"[batching] of {where}")
    models_raw = data.pop("models", {})
    if not isinstance(models_raw, dict):
        raise ConfigError(f"expected [models] of {where} to be a table, found "
                          f"{type(models_raw).__name__}")
    models = {name: _dataclass_from(BatchingConfig, {**dataclasses.asdict(batching), **v}
                                    if isinstance(v, dict) else v, f"[models.{name}] of {where}")
              for name, v in models_raw.items()}
    cfg = _dataclass_from(ServeConfig, data, where)
    cfg.batching, cfg.models = batching, models
    for name in ("api_key", "admin_key"):
        key = getattr(auth, name)
        # an empty or blank key would quietly leave the server open: leave the key out instead
        if key is not None and (not isinstance(key, str) or not key.strip()):
            raise ConfigError(f"expected [auth] {name} of {where} to be a non-empty string "
                              f"(or left out for no key), found {key!r}")
    cfg.api_key, cfg.admin_key = auth.api_key, auth.admin_key
    return cfg


@dataclass
class _Auth:
    api_key: str | None = None
    admin_key: str | None = None


def apply_environment(cfg: ServeConfig, environ: dict[str, str] | None = None) -> None:
    """NNFORGE_API_KEY and NNFORGE_ADMIN_KEY (keys stay out of the process list)."""
    env = os.environ if environ is None else environ
    cfg.api_key = env.get("NNFORGE_API_KEY") or cfg.api_key
    cfg.admin_key = env.get("NNFORGE_ADMIN_KEY") or cfg.admin_key
