"""What every protocol shares: keys, resolving a model, running it, counting the outcome."""

from __future__ import annotations

import asyncio
import hmac
import itertools
import os
import time
from typing import Any, Callable, Iterable

import numpy as np

from .. import __version__
from .cluster import SNAPSHOT_TIMEOUT_S, Cluster
from .config import ServeConfig
from .errors import ForbiddenError, InvalidInputError, UnauthorizedError
from .logs import AccessLog
from .metrics import UNKNOWN, ServerMetrics
from .model import Outputs, ServedModel
from .repository import LoadedVersion, ModelRepository, check_name
from .tensors import array_from_json, to_model_rows

SERVER_NAME = "nnforge"
EXTENSIONS = ["binary_tensor_data", "classification", "model_repository", "statistics"]
#: the header of every 401: how to authenticate (RFC 7235 requires it; RFC 6750's scheme)
CHALLENGE = (b"www-authenticate", b'Bearer realm="nnforge"')


class InferenceServer:
    """The protocol-independent server: repository, metrics, keys, logs."""

    def __init__(self, config: ServeConfig, repository: ModelRepository,
                 metrics: ServerMetrics, access_log: AccessLog) -> None:
        self.config, self.repository, self.metrics = config, repository, metrics
        self.access_log = access_log
        self._api_key = config.api_key.encode() if config.api_key else None
        self._admin_key = config.admin_key.encode() if config.admin_key else None
        self._ids = itertools.count(1)
        self._id_prefix = f"{os.getpid():x}-{int(time.time()) & 0xFFFFFF:x}-"
        self.live = True
        self.cluster: Cluster | None = None  # the other worker processes, with --workers N

    # -- identity ----------------------------------------------------------------------------
    def server_metadata(self) -> dict[str, Any]:
        """The V2 server metadata document."""
        return {"name": SERVER_NAME, "version": __version__, "extensions": EXTENSIONS}

    def request_id(self, given: str | None) -> str:
        """The client's X-Request-Id when it sent a sane one, else a new unique id."""
        if given and len(given) <= 128 and given.isprintable():
            return given
        return f"{self._id_prefix}{next(self._ids):x}"

    # -- keys --------------------------------------------------------------------------------
    def check_api_key(self, presented: bytes | None) -> None:
        """401 unless the inference key is off or matches."""
        if self._api_key is not None and not (
                presented is not None and hmac.compare_digest(presented, self._api_key)):
            found = "a wrong key" if presented else "none"
            raise UnauthorizedError(f"expected a valid API key in 'Authorization: Bearer <key>' "
                                    f"or 'X-API-Key', found {found}")

    def check_admin_key(self, presented: bytes | None) -> None:
        """403 when administration is off, 401 unless the admin key matches."""
        if self._admin_key is None:
            raise ForbiddenError("administration endpoints are off; start the server with an admin "
                                 "key (NNFORGE_ADMIN_KEY or [auth] admin_key) to use them")
        if presented is None or not hmac.compare_digest(presented, self._admin_key):
            found = "a wrong key" if presented else "none"
            raise UnauthorizedError(f"expected the admin key in 'Authorization: Bearer <key>' or "
                                    f"'X-API-Key', found {found}")

    # -- metrics and statistics (Triton's extension) -----------------------------------------
    async def server_metrics(self) -> ServerMetrics:
        """The whole server's numbers: this process's, summed with every worker's."""
        if self.cluster is None:
            return self.metrics
        replies = await self.cluster.ask({"op": "snapshot"}, SNAPSHOT_TIMEOUT_S)
        return ServerMetrics.merged([self.metrics.snapshot(),
                                     *(r["snapshot"] for r in replies if "snapshot" in r)])

    async def model_statistics(self, name: str | None = None,
                               version: str | None = None) -> list[dict[str, Any]]:
        """Triton's statistics of the served versions (of one model, or one version)."""
        metrics = await self.server_metrics()
        repo = self.repository
        if name:
            loaded = repo.get(name, version)  # 404 for an unknown model or version
            versions = [loaded.model.version] if version else sorted(
                repo.models[name].versions, key=int)
            wanted = [(name, v) for v in versions]
        else:
            wanted = [(n, v) for n, e in sorted(repo.models.items())
                      for v in sorted(e.versions, key=int)]
        return [_statistics(metrics.model(n, v)) for n, v in wanted]

    # -- model repository (Triton's extension; callers check the admin key) -----------------
    async def repository_index(self, ready_only: bool = False) -> list[dict[str, Any]]:
        """Every version on disk or served, with its state (READY only, if asked)."""
        rows = await self.repository.index()
        return [r for r in rows if r.get("state") == "READY"] if ready_only else rows

    async def load_model(self, name: str) -> None:
        """Load (or reload) a model's versions from the repository, in every worker; errors
        name each failure."""
        failed = None
        try:
            await self.apply_admin("load", name)
        except InvalidInputError as exc:  # some versions failed, the others serve again:
            failed = exc                  # every worker must bring them back all the same
        if self.cluster is not None:
            try:
                await self.cluster.broadcast("load", name)
            except InvalidInputError:
                if failed is None:
                    raise
        if failed is not None:  # the peers' failures are the same files': report ours
            raise failed

    async def unload_model(self, name: str) -> None:
        """Stop serving every version of a model until it is loaded again, in every worker."""
        await self.apply_admin("unload", name)
        if self.cluster is not None:
            await self.cluster.broadcast("unload", name)

    async def apply_admin(self, op: str, name: str) -> None:
        """Load or unload a model in this process only."""
        repo = self.repository
        if op == "unload":
            await repo.unload(name)
            return
        problem = check_name(name)
        if problem is not None:  # a reserved name's folder is skipped: say why, not "no model"
            raise InvalidInputError(problem)
        errors = await repo.load(name)  # scans and loads off the event loop, under its lock
        if errors:
            raise InvalidInputError("failed to load " + "; ".join(errors))

    # -- inference ---------------------------------------------------------------------------
    def submit(self, loaded: LoadedVersion, x: np.ndarray, arrived: float,
               gone: Callable[[], bool] | None = None,
               timeout_s: float | None = None) -> asyncio.Future:
        """Queue x on the version's batcher, counting it in flight until answered."""
        future = loaded.batcher.submit(x, arrived, gone, timeout_s)
        m = loaded.batcher.metrics
        m.inflight += 1
        future.add_done_callback(lambda _: _leave(m))
        return future

    async def infer(self, loaded: LoadedVersion, x: np.ndarray, arrived: float,
                    gone: Callable[[], bool] | None = None,
                    timeout_s: float | None = None) -> Outputs:
        """Run x through the version's batcher (see submit)."""
        return await self.submit(loaded, x, arrived, gone, timeout_s)

    def finish(self, loaded: LoadedVersion | None, name: str | None, outcome: str,
               arrived: float, record: dict[str, Any]) -> None:
        """Count the request's outcome and latency and write its access record."""
        seconds = time.perf_counter() - arrived
        if loaded is not None:
            model, version = loaded.model.name, loaded.model.version
        else:  # failed before a version was chosen: count it under the model, if it exists
            model = name if name in self.repository.models else UNKNOWN
            version = ""
        m = self.metrics.model(model, version)
        m.outcomes[outcome] += 1
        if outcome == "success":
            m.total.observe(seconds)
        else:
            m.failed_seconds += seconds
        record["model"], record["version"], record["outcome"] = model, version, outcome
        record["latency_ms"] = round(seconds * 1000, 3)
        self.access_log.write(record)


def _leave(m: Any) -> None:
    m.inflight -= 1


def presented_key(pairs: Iterable[tuple[Any, Any]]) -> bytes | None:
    """The key of ASGI headers or gRPC metadata (lower-case names, bytes or str): X-API-Key,
    else Authorization (`Bearer <key>` or the bare key), whichever order they came in."""
    api = auth = None
    for name, value in pairs:
        if name in (b"x-api-key", "x-api-key"):
            api = value
        elif name in (b"authorization", "authorization"):
            auth = value
    key = api
    if key is None and auth is not None:
        key = auth[7:] if auth[:7].lower() in (b"bearer ", "bearer ") else auth
    return key.encode() if isinstance(key, str) else key


def decode_simple(doc: Any, model: ServedModel, maybe_bools: bool = True) -> np.ndarray:
    """Rows from a simple-API body: {"instances": [...]} or {"data": [...]}, one or many
    (`maybe_bools=False`: the body spells no JSON boolean, see array_from_json)."""
    if not isinstance(doc, dict):
        raise InvalidInputError(f'expected a JSON object {{"instances": [...]}} or '
                                f'{{"data": [...]}}, found '
                                f"{type(doc).__name__ if doc is not None else 'null'}")
    keys = [k for k in ("instances", "data") if k in doc]
    if len(keys) != 1:
        raise InvalidInputError(f"expected exactly one of the keys 'instances' or 'data', found "
                                f"{sorted(doc)[:10]}")
    what = f"'{keys[0]}'"
    data = array_from_json(doc[keys[0]], what, float32=model.input.datatype == "FP32",
                           maybe_bools=maybe_bools, nulls=model.input.missing)
    return to_model_rows(data, model.input, what)


def _duration(count: float, seconds: float) -> dict[str, int]:
    return {"count": int(count), "ns": int(seconds * 1e9)}


def _statistics(m: Any) -> dict[str, Any]:
    """One version's statistics document (Triton's field names; input and output copies are
    part of the forward pass here, so they count as zero)."""
    done = sum(m.outcomes.values())
    none = _duration(0, 0.0)
    return {
        "name": m.labels[0], "version": m.labels[1],
        "last_inference": m.last_inference_ms,
        "inference_count": int(m.batch.sum), "execution_count": sum(m.batch.counts),
        "inference_stats": {
            "success": _duration(m.outcomes["success"], m.total.sum),
            "fail": _duration(done - m.outcomes["success"], m.failed_seconds),
            "queue": _duration(sum(m.queue.counts), m.queue.sum),
            "compute_input": none, "compute_output": none,
            "compute_infer": _duration(sum(m.compute.counts), m.compute.sum),
            "cache_hit": none, "cache_miss": none},
        "batch_stats": [{"batch_size": size, "compute_input": none, "compute_output": none,
                         "compute_infer": _duration(*m.by_batch[size])}
                        for size in sorted(m.by_batch)],
    }
