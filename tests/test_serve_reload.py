"""Versions: a new one swaps in under load without a failed request; a broken one is reported
while the old one keeps serving; links out of the repository are skipped; the admin endpoints
and the API keys."""

from __future__ import annotations

import asyncio
import http.client
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest

import nnforge as nf
from nnforge import nn
from nnforge.serve.batcher import BatchingConfig
from nnforge.serve.grpc_service import MESSAGES, METHODS, SERVICE
from nnforge.serve.metrics import ServerMetrics
from nnforge.serve.repository import ModelRepository, VersionPolicy
from nnforge.serve.testing import ServerProcess

API, ADMIN = "client-key", "operator-key"
SAMPLE = [float(i % 7) for i in range(16)]


def stage_version(repo: Path, version: int, seed: int | None) -> Path:
    """Write a version next to the model and rename it into place (what a deploy should do)."""
    staging = repo / "clf" / f".staging-{version}"
    staging.mkdir(parents=True)
    if seed is None:
        (staging / "model.nnf").write_bytes(b"PK\x03\x04 this is not a model")
    else:
        nf.manual_seed(seed)
        model = nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 5))
        nf.save(model, staging / "model.nnf", task="multiclass")
    final = repo / "clf" / str(version)
    os.rename(staging, final)
    return final / "model.nnf"


class Load:
    """Threads posting the same sample until stopped (at most `limit` requests each)."""

    def __init__(self, port: int, threads: int = 3, limit: int = 20000) -> None:
        self.port, self.limit = port, limit
        self.stop = threading.Event()
        self.answers: list[list[tuple[int, dict]]] = [[] for _ in range(threads)]
        self.threads = [threading.Thread(target=self._run, args=(a,), daemon=True)
                        for a in self.answers]

    def _run(self, out: list[tuple[int, dict]]) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        body = json.dumps({"data": SAMPLE})
        deadline = time.monotonic() + 120  # bounded whatever happens
        while not self.stop.is_set() and len(out) < self.limit and time.monotonic() < deadline:
            conn.request("POST", "/v1/models/clf:predict", body,
                         {"Authorization": f"Bearer {API}"})
            r = conn.getresponse()
            out.append((r.status, json.loads(r.read())))
        conn.close()

    def count(self, version: str | None = None) -> int:
        return sum(1 for a in self.answers for s, b in list(a)
                   if version is None or b.get("model_version") == version)

    def each_count(self, version: str) -> int:
        """The fewest answers from `version` that any one connection has had."""
        return min(sum(1 for _, b in list(a) if b.get("model_version") == version)
                   for a in self.answers)

    def wait_for(self, predicate, what: str, timeout: float = 60) -> None:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, f"gave up waiting for {what}"
            time.sleep(0.02)


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def workers(request: pytest.FixtureRequest) -> int:
    """Every test here runs against one server process, then against two workers (each of
    which polls the repository and swaps versions on its own)."""
    return request.param


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, workers: int) -> Path:
    root = tmp_path_factory.mktemp(f"repo-{workers}")
    stage_version(root, 1, seed=1)
    return root


@pytest.fixture(scope="module")
def server(repo: Path, workers: int):  # noqa: ANN201
    env = {"NNFORGE_API_KEY": API, "NNFORGE_ADMIN_KEY": ADMIN}
    with ServerProcess([str(repo), "--poll", "0.1", "--no-access-log", "--workers",
                        str(workers)], env=env) as srv:
        yield srv


def expected(path: Path) -> dict:
    pred = nf.InferenceSession(path).predict(np.array([SAMPLE], np.float32))
    return {"class": int(pred.classes[0]), "probabilities": pred.probabilities[0]}


def test_a_new_version_swaps_in_under_load_without_a_failed_request(repo: Path,
                                                                    server: ServerProcess
                                                                    ) -> None:
    v1 = expected(repo / "clf" / "1" / "model.nnf")
    load = Load(server.http_port)
    for t in load.threads:
        t.start()
    try:
        load.wait_for(lambda: load.count() >= 60, "answers from version 1")
        v2_path = stage_version(repo, 2, seed=2)
        # every connection must reach version 2: with two workers each swaps on its own
        # poll, and a keep-alive connection stays with one worker
        load.wait_for(lambda: load.each_count("2") >= 20, "answers from version 2 on every "
                      "connection")
    finally:
        load.stop.set()
        for t in load.threads:
            t.join(60)
    v2 = expected(v2_path)
    assert v1["class"] != v2["class"] or not np.allclose(v1["probabilities"],
                                                         v2["probabilities"])
    for answers in load.answers:
        assert {s for s, _ in answers} == {200}, [b for s, b in answers if s != 200][:3]
        versions = [b["model_version"] for _, b in answers]
        switch = versions.index("2")
        assert set(versions[:switch]) == {"1"} and set(versions[switch:]) == {"2"}
        for _, body in answers:
            want = v1 if body["model_version"] == "1" else v2
            (row,) = body["predictions"]
            assert row["class"] == want["class"]
            np.testing.assert_allclose(np.array(row["probabilities"], np.float32),
                                       want["probabilities"], rtol=1e-5, atol=1e-7)
    with httpx.Client(base_url=server.url, headers={"X-API-Key": API}) as c:
        gone = c.post("/v1/models/clf/versions/1:predict", json={"data": SAMPLE})
        assert gone.status_code == 404 and "versions served: 2" in gone.json()["error"]
        assert c.get("/v2/models/clf").json()["versions"] == ["2"]


def test_a_broken_version_is_reported_and_the_old_one_keeps_serving(repo: Path,
                                                                    server: ServerProcess
                                                                    ) -> None:
    stage_version(repo, 3, seed=None)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    with httpx.Client(base_url=server.url, timeout=30) as c:
        def state_of_3() -> dict:
            rows = c.post("/v2/repository/index", headers=admin).json()
            return next((r for r in rows if r["version"] == "3"), {})

        deadline = time.monotonic() + 60
        while state_of_3().get("state") != "UNAVAILABLE":  # until the poller has tried it
            assert time.monotonic() < deadline, "version 3 was never tried"
            time.sleep(0.05)
        assert "not an nnforge model file" in state_of_3()["reason"] or \
            "zip" in state_of_3()["reason"]
        r = c.post("/v1/models/clf:predict", json={"data": SAMPLE}, headers={"X-API-Key": API})
        assert r.status_code == 200 and r.json()["model_version"] == "2"
        assert c.get("/v2/health/ready").status_code == 200
        metrics = c.get("/metrics").text
        assert 'nnforge_model_load_failures_total{model="clf"} 1.0' in metrics


def test_admin_endpoints_and_keys(repo: Path, server: ServerProcess) -> None:
    body = {"data": SAMPLE}
    with httpx.Client(base_url=server.url, timeout=30) as c:
        assert c.post("/v1/models/clf:predict", json=body).status_code == 401
        wrong = c.post("/predict", json=body, headers={"X-API-Key": "guess"})
        assert wrong.status_code == 401 and "found a wrong key" in wrong.json()["error"]
        assert c.get("/v2/models/clf").status_code == 401
        assert c.get("/v2/health/ready").status_code == 200  # probes need no key
        assert c.get("/metrics").status_code == 200
        assert c.post("/v2/repository/index", headers={"X-API-Key": API}).status_code == 401
        admin = {"X-API-Key": ADMIN}
        assert c.post("/v2/repository/models/clf/unload", headers=admin).json() == {}
        off = c.post("/predict", json=body, headers={"X-API-Key": API})
        assert off.status_code == 404 and "is unloaded" in off.json()["error"]
        assert c.get("/v2/health/ready").status_code == 200  # an unloaded model is intended
        time.sleep(0.3)  # polling leaves an unloaded model alone
        assert c.post("/predict", json=body, headers={"X-API-Key": API}).status_code == 404
        load = c.post("/v2/repository/models/clf/load", headers=admin)
        assert load.status_code == 400 and "clf version 3" in load.json()["error"]
        back = c.post("/predict", json=body, headers={"X-API-Key": API})
        assert back.status_code == 200 and back.json()["model_version"] == "2"
        missing = c.post("/v2/repository/models/nope/load", headers=admin)
        assert missing.status_code == 404
        assert c.post("/v2/repository/models/nope/unload", headers=admin).status_code == 404


def test_grpc_checks_the_api_key(server: ServerProcess) -> None:
    req = MESSAGES["ModelInferRequest"](model_name="clf")
    req.inputs.add(name="input", datatype="FP32", shape=[1, 16])
    req.raw_input_contents.append(np.array([SAMPLE], np.float32).tobytes())
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        infer = channel.unary_unary(
            f"/{SERVICE}/ModelInfer",
            request_serializer=MESSAGES["ModelInferRequest"].SerializeToString,
            response_deserializer=MESSAGES["ModelInferResponse"].FromString)
        with pytest.raises(grpc.RpcError) as refused:
            infer(req, timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        reply = infer(req, timeout=30, metadata=[("authorization", f"Bearer {API}")])
        assert reply.model_name == "clf" and reply.outputs[0].name == "classes"
        reply = infer(req, timeout=30, metadata=[("x-api-key", API)])
        assert len(reply.raw_output_contents) == 2


OPEN_PATHS = ("/v2/health/live", "/v2/health/ready", "/metrics")


def test_without_the_key_only_the_probes_and_metrics_answer(server: ServerProcess) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        api = {"X-API-Key": API}
        spec = c.get("/openapi.json", headers=api).json()
        routes = [(method.upper(), path.replace("{model}", "clf").replace("{version}", "1"))
                  for path, item in spec["paths"].items() for method in item]
        assert len(routes) >= 20 and ("GET", "/") in routes
        extra = [("GET", p) for p in ("/docs", "/redoc", "/openapi.json", "/nope",
                                      "/v2/models/nope", "/metrics/")]
        for method, path in [*routes, *extra, ("HEAD", "/"), ("POST", "/v2/models/nope/infer")]:
            r = c.request(method, path)
            if path in OPEN_PATHS:
                assert r.status_code == 200, path
                continue
            # the index used to answer here, naming every model: nothing may name one now
            assert r.status_code == 401, (method, path, r.status_code, r.text[:200])
            assert "clf" not in r.text and "nope" not in r.text
        index = c.get("/", headers=api)
        assert index.status_code == 200 and "clf" in index.json()["models"]
        # X-API-Key wins over Authorization, as for inference
        both = {"Authorization": "Bearer wrong", "X-API-Key": API}
        assert c.get("/v2/models/clf", headers=both).status_code == 200
        assert c.get("/v2/models/clf", headers={"Authorization": f"Bearer {ADMIN}"}
                     ).status_code == 401  # the admin key opens the repository routes only


def test_grpc_without_the_key_only_the_probes_answer(server: ServerProcess) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        for rpc, (request, response) in METHODS.items():
            call = channel.unary_unary(f"/{SERVICE}/{rpc}",
                                       request_serializer=MESSAGES[request].SerializeToString,
                                       response_deserializer=MESSAGES[response].FromString)
            try:
                call(MESSAGES[request](), timeout=30)
                code = grpc.StatusCode.OK
            except grpc.RpcError as exc:
                code = exc.code()
            expected = grpc.StatusCode.UNAUTHENTICATED
            if rpc in ("ServerLive", "ServerReady"):
                expected = grpc.StatusCode.OK
            assert code == expected, rpc
        metadata = channel.unary_unary(
            f"/{SERVICE}/ModelMetadata",
            request_serializer=MESSAGES["ModelMetadataRequest"].SerializeToString,
            response_deserializer=MESSAGES["ModelMetadataResponse"].FromString)
        # x-api-key wins over authorization whatever their order, as on REST (it used to be
        # the first of the two that came)
        for pairs in ([("authorization", "Bearer wrong"), ("x-api-key", API)],
                      [("x-api-key", API), ("authorization", "Bearer wrong")]):
            reply = metadata(MESSAGES["ModelMetadataRequest"](name="clf"), timeout=30,
                             metadata=pairs)
            assert reply.name == "clf"


def test_links_out_of_the_repository_are_skipped_with_one_warning(tmp_path: Path) -> None:
    repo, outside = tmp_path / "repo", tmp_path / "outside"
    stage_version(repo, 1, seed=1)
    stage_version(outside, 1, seed=2)
    (repo / "secret").symlink_to(outside / "clf")  # a model directory
    (repo / "clf" / "2").symlink_to(outside / "clf" / "1")  # a version directory
    (repo / "clf" / "3").mkdir()
    (repo / "clf" / "3" / "model.nnf").symlink_to(outside / "clf" / "1" / "model.nnf")
    (repo / "clf" / "4").symlink_to(repo / "clf" / "1")  # links that stay inside are fine
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger("nnforge.serve")
    logger.addHandler(handler)

    async def served() -> dict[str, list[str]]:
        repository = ModelRepository(repo, ServerMetrics(), BatchingConfig(max_batch_size=2),
                                     VersionPolicy("all"))
        try:
            for _ in range(3):  # polling: the warnings come once
                await repository.sync()
            assert {r["version"] for r in await repository.index()} == {"1", "4"}
            return {n: sorted(e.versions) for n, e in repository.models.items()}
        finally:
            await repository.close()

    try:
        assert asyncio.run(served()) == {"clf": ["1", "4"]}
    finally:
        logger.removeHandler(handler)
    assert len(warnings) == 3, warnings
    for link in (repo / "secret", repo / "clf" / "2", repo / "clf" / "3" / "model.nnf"):
        assert any(f"skipping {link}: it links to" in w and "outside the repository" in w
                   for w in warnings), (link, warnings)


TRITON_GRPC_ADMIN = r"""
import json, sys
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

client = grpcclient.InferenceServerClient(sys.argv[1])
admin, api = {"authorization": "Bearer " + sys.argv[2]}, {"x-api-key": sys.argv[3]}
out = {}

def code(fn):
    try:
        fn()
    except InferenceServerException as exc:
        return [exc.status(), exc.message()]
    return None

out["index"] = client.get_model_repository_index(headers=admin, as_json=True)["models"]
out["no_key"] = code(lambda: client.get_model_repository_index(headers=api))
client.unload_model("clf", headers=admin)
out["ready_after_unload"] = client.is_model_ready("clf", headers=api)
out["load_errors"] = code(lambda: client.load_model("clf", headers=admin))
out["ready_after_load"] = client.is_model_ready("clf", headers=api)
out["missing"] = code(lambda: client.load_model("nope", headers=admin))
print(json.dumps(out))
"""


def test_triton_grpc_repository_extension(repo: Path, server: ServerProcess) -> None:
    # tritonclient.grpc's load_model / unload_model / get_model_repository_index, in a
    # process of its own (its protobuf registrations), with the admin key as metadata
    proc = subprocess.run([sys.executable, "-c", TRITON_GRPC_ADMIN,
                           f"127.0.0.1:{server.grpc_port}", ADMIN, API],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    served = [m for m in out["index"] if m.get("state") == "READY"]
    assert served and all(m["name"] == "clf" for m in served)
    assert out["no_key"][0] == "StatusCode.UNAUTHENTICATED"
    assert out["ready_after_unload"] is False
    # the load works, or names the broken version a neighbouring test dropped in
    assert out["load_errors"] is None or "clf version" in out["load_errors"][1]
    assert out["ready_after_load"] is True
    assert out["missing"][0] == "StatusCode.NOT_FOUND"
    # ready=True is not sent by this client call; the REST body's "ready" filters
    with httpx.Client(base_url=server.url, timeout=30) as c:
        admin = {"X-API-Key": ADMIN}
        every = c.post("/v2/repository/index", headers=admin).json()
        ready = c.post("/v2/repository/index", headers=admin, json={"ready": True}).json()
        assert ready and all(r["state"] == "READY" for r in ready) and len(ready) <= len(every)
