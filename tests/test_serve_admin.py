"""In-process (ASGI) checks of the V2 health answers and of the admin routes' event loop use.

The health routes follow the KServe V2 REST protocol: 200 means true, a 4xx means false.
The admin routes scan the disk and load models on worker threads, so a slow disk never
stalls the other requests.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Awaitable, Callable

import httpx
import pytest
from helpers import serve_in_process

import nnforge as nf
from nnforge import nn
from nnforge.serve.core import InferenceServer
from nnforge.serve.grpc_service import MESSAGES, InferenceService
from nnforge.serve.repository import ModelRepository

ADMIN = {"X-API-Key": "operator"}


def _repo(tmp_path: Path, broken: bool = False) -> Path:
    """A repository with model 'good' (and 'broken', whose only file is not a model)."""
    root = tmp_path / "repo"
    (root / "good" / "1").mkdir(parents=True)
    nf.manual_seed(0)
    nf.save(nn.Sequential(nn.Linear(3, 2)), root / "good" / "1" / "model.nnf",
            task="multiclass")
    if broken:
        (root / "broken" / "1").mkdir(parents=True)
        (root / "broken" / "1" / "model.nnf").write_bytes(b"PK\x03\x04 not a model")
    return root


def _serve(root: Path, check: Callable[[httpx.AsyncClient, InferenceServer],
                                       Awaitable[None]]) -> None:
    """Run check against the app serving root, with an admin key."""
    serve_in_process(root, check, max_batch_size=2, log_failures=False, admin_key="operator")


def test_v2_health_answers_4xx_for_false_not_503(tmp_path: Path) -> None:
    """KServe V2: '200 indicates true and a 4xx indicates false'; 503 read as a crash."""
    async def check(c: httpx.AsyncClient, server: InferenceServer) -> None:
        ready = await c.get("/v2/health/ready")  # 'broken' has no version to serve
        assert (ready.status_code, ready.json()) == (400, {"ready": False})
        for path in ("/v2/models/broken/ready", "/v2/models/broken/versions/1/ready",
                     "/v2/models/nope/ready", "/v2/models/good/versions/7/ready"):
            r = await c.get(path)
            assert 400 <= r.status_code < 500, (path, r.status_code)
        r = await c.get("/v2/models/broken/ready")
        assert (r.status_code, r.json()) == (400, {"name": "broken", "ready": False})
        good = await c.get("/v2/models/good/versions/1/ready")
        assert good.status_code == 200 and good.json()["ready"] is True
        assert (await c.get("/v2/health/live")).status_code == 200

        # gRPC answers ready=false, not an error
        grpc = InferenceService(server)
        reply = await grpc.ServerReady(MESSAGES["ServerReadyRequest"](), None)
        assert reply.ready is False
        for name in ("broken", "nope"):
            reply = await grpc.ModelReady(MESSAGES["ModelReadyRequest"](name=name), None)
            assert reply.ready is False
        await c.post("/v2/repository/models/broken/unload", headers=ADMIN)
        assert (await c.get("/v2/health/ready")).status_code == 200  # unloaded: intended
        server.live = False  # shutting down
        assert (await c.get("/v2/health/ready")).status_code == 400

    _serve(_repo(tmp_path, broken=True), check)


class SlowScan:
    """ModelRepository.scan, held on a worker thread until released (a slow network disk)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        self.order: list[str] = []
        self.armed = False
        real = ModelRepository.scan

        def scan(repo: ModelRepository) -> Any:
            if self.armed:
                self.armed = False
                self.entered.set()
                # bounded: on the event loop (the old code) this wait is what stalls it
                self.release.wait(5)
                self.order.append("scan done")
            return real(repo)

        monkeypatch.setattr(ModelRepository, "scan", scan)

    async def started(self) -> None:
        """Wait (without blocking the loop) until the held scan has begun."""
        assert await asyncio.to_thread(self.entered.wait, 5)


@pytest.mark.parametrize("request_path", ["/v2/repository/index",
                                          "/v2/repository/models/good/load"])
def test_a_slow_scan_does_not_stall_other_requests(tmp_path: Path, request_path: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The index and load routes scanned the disk on the event loop: a slow disk stalled
    every request, the probes included."""
    slow = SlowScan(monkeypatch)

    async def check(c: httpx.AsyncClient, server: InferenceServer) -> None:
        slow.armed = True
        admin = asyncio.create_task(c.post(request_path, headers=ADMIN))
        await slow.started()
        live = await c.get("/v2/health/live")  # answered while the scan is still held
        slow.order.append("live")
        slow.release.set()
        assert live.status_code == 200 and (await admin).status_code == 200
        assert slow.order == ["live", "scan done"]

    _serve(_repo(tmp_path), check)


def test_an_unload_during_a_slow_load_waits_for_it(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Load and unload take the repository's lock, scan included: the unload comes after."""
    slow = SlowScan(monkeypatch)

    async def check(c: httpx.AsyncClient, server: InferenceServer) -> None:
        slow.armed = True
        load = asyncio.create_task(c.post("/v2/repository/models/good/load", headers=ADMIN))
        await slow.started()
        unload = asyncio.create_task(c.post("/v2/repository/models/good/unload",
                                            headers=ADMIN))
        for _ in range(200):  # let the unload run as far as it can
            await asyncio.sleep(0)
        assert not unload.done()  # held behind the load's lock
        slow.release.set()
        assert (await load).status_code == 200 and (await unload).status_code == 200
        off = await c.get("/v2/models/good/ready")
        assert off.status_code == 404 and "unloaded" in off.json()["error"]

    _serve(_repo(tmp_path), check)


def test_grpc_repository_index_runs_off_the_loop(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """gRPC RepositoryIndex shares the index: it must not stall the loop either."""
    slow = SlowScan(monkeypatch)

    async def check(c: httpx.AsyncClient, server: InferenceServer) -> None:
        slow.armed = True
        grpc = InferenceService(server)
        request = MESSAGES["RepositoryIndexRequest"]()
        index = asyncio.create_task(grpc.RepositoryIndex(request, SimpleNamespace()))
        await slow.started()
        assert (await c.get("/v2/health/live")).status_code == 200
        slow.order.append("live")
        slow.release.set()
        assert [m.name for m in (await index).models] == ["good"]
        assert slow.order == ["live", "scan done"]

    _serve(_repo(tmp_path), check)


class _AbortedError(Exception):
    """What the fake gRPC context raises in place of grpc's abort."""


class _AbortContext:
    """The part of a grpc.aio context that the rpcs use on failure."""

    async def abort(self, code: Any, details: str) -> None:
        raise _AbortedError(code, details)


def test_rest_live_follows_server_live_like_grpc(tmp_path: Path) -> None:
    """REST /v2/health/live answers server.live as gRPC ServerLive does: 200 while live,
    400 ({"live": false}) once the server drains on shutdown."""
    async def check(c: httpx.AsyncClient, server: InferenceServer) -> None:
        grpc = InferenceService(server)
        for live, status in ((True, 200), (False, 400)):
            server.live = live
            r = await c.get("/v2/health/live")
            assert (r.status_code, r.json()) == (status, {"live": live})
            reply = await grpc.ServerLive(MESSAGES["ServerLiveRequest"](), None)
            assert reply.live is live

    _serve(_repo(tmp_path), check)


def test_a_model_without_a_ready_version_is_unavailable_on_both_protocols(
        tmp_path: Path) -> None:
    """Metadata and inference of a known model with no version loaded: 503 over REST and
    UNAVAILABLE over gRPC, as Triton answers (its 'not at ready state' is UNAVAILABLE)."""
    import grpc as grpclib  # noqa: PLC0415

    from nnforge.serve.grpc_service import _guard  # noqa: PLC0415

    async def check(c: httpx.AsyncClient, server: InferenceServer) -> None:
        body = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32",
                            "data": [1.0, 2.0, 3.0]}]}
        for r in (await c.get("/v2/models/broken"),
                  await c.post("/v2/models/broken/infer", json=body)):
            assert r.status_code == 503 and "no version ready" in r.json()["error"]
        service = InferenceService(server)
        metadata = _guard(service.ModelMetadata, MESSAGES["ModelMetadataRequest"].FromString,
                          None)
        infer = _guard(service.ModelInfer, MESSAGES["ModelInferRequest"].FromString, None)
        for call, request in (
                (metadata, MESSAGES["ModelMetadataRequest"](name="broken")),
                (infer, MESSAGES["ModelInferRequest"](model_name="broken"))):
            with pytest.raises(_AbortedError) as aborted:
                await call(request.SerializeToString(), _AbortContext())
            assert aborted.value.args[0] == grpclib.StatusCode.UNAVAILABLE

    _serve(_repo(tmp_path, broken=True), check)


def test_head_on_the_health_routes_answers_like_get_without_a_body(tmp_path: Path) -> None:
    """Load balancers may HEAD the probes: same status as GET, empty body."""
    async def check(c: httpx.AsyncClient, server: InferenceServer) -> None:
        for path in ("/v2/health/live", "/v2/health/ready"):
            for live in (True, False):
                server.live = live
                got, head = await c.get(path), await c.head(path)
                assert head.status_code == got.status_code == (200 if live else 400), path
                assert head.content == b""

    _serve(_repo(tmp_path), check)
