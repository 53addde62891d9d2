"""Batching under concurrency, a full queue, memory under overload, graceful shutdown."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import grpc
import httpx
import numpy as np
import orjson
import psutil
import pytest

import nnforge as nf
from nnforge import nn
from nnforge.serve.grpc_service import MESSAGES, SERVICE
from nnforge.serve.testing import ServerProcess, post_many


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("load") / "clf.nnf"
    nf.manual_seed(5)
    model = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    nf.save(model, path, task="multiclass")
    return path


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus text."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no sample {name} {labels} in the metrics")


def test_500_concurrent_requests_are_batched_and_equal_the_unbatched_answers(
        model_path: Path, rng: np.random.Generator) -> None:
    x = (rng.random((500, 64)) * 16).astype(np.float32)
    session = nf.InferenceSession(model_path)
    with ServerProcess([str(model_path), "--no-grpc", "--max-batch-size", "32",
                        "--max-queue-delay-ms", "2", "--no-access-log"]) as srv:
        bodies = [orjson.dumps({"data": row.tolist()}) for row in x]
        answers = asyncio.run(post_many(srv.url, "/predict", bodies, 500))
        text = httpx.get(f"{srv.url}/metrics").text
    assert [status for status, _ in answers] == [200] * 500
    for i, (_, answer) in enumerate(answers):
        (row,) = orjson.loads(answer)["predictions"]
        alone = session.predict(x[i:i + 1])
        assert row["class"] == alone.classes[0]
        np.testing.assert_allclose(np.array(row["probabilities"], np.float32),
                                   alone.probabilities[0], rtol=1e-5, atol=1e-7)
    batches = metric(text, "nnforge_batch_size_count", model="clf")
    single = metric(text, "nnforge_batch_size_bucket", model="clf", le="1.0")
    assert metric(text, "nnforge_batch_size_sum", model="clf") == 500
    assert batches - single > 0, "no batch held more than one request"
    assert batches < 500


def grpc_infer(port: int) -> grpc.StatusCode:
    """The status of one gRPC ModelInfer of a sample of ones."""
    req = MESSAGES["ModelInferRequest"](model_name="clf")
    req.inputs.add(name="input", datatype="FP32", shape=[1, 64])
    req.raw_input_contents.append(np.ones(64, np.float32).tobytes())
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.unary_unary(f"/{SERVICE}/ModelInfer",
                                   request_serializer=MESSAGES["ModelInferRequest"].
                                   SerializeToString, response_deserializer=lambda b: b)
        try:
            call(req, timeout=30)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def _fill_queue_then_overflow(srv: ServerProcess
                                    ) -> tuple[list[int], int, str, bool, grpc.StatusCode]:
    async with httpx.AsyncClient(base_url=srv.url, timeout=60) as client:
        body = {"data": [1.0] * 64}
        waiting = [asyncio.ensure_future(client.post("/predict", json=body)) for _ in range(8)]
        for _ in range(2000):  # until the 8 requests sit in the queue
            text = (await client.get("/metrics")).text
            if metric(text, "nnforge_queue_samples", model="clf") == 8:
                break
            await asyncio.sleep(0.005)
        overflow = await client.post("/predict", json=body)
        overflow_grpc = await asyncio.to_thread(grpc_infer, srv.grpc_port)
        pending = not any(t.done() for t in waiting)
        assert srv.proc is not None
        srv.proc.terminate()  # SIGTERM: a graceful stop answers the queued requests
        statuses = [r.status_code for r in await asyncio.gather(*waiting)]
        return statuses, overflow.status_code, overflow.json()["error"], pending, overflow_grpc


def test_full_queue_answers_503_while_the_queued_requests_wait(model_path: Path) -> None:
    # a batch may wait 10 s to fill: 8 queued samples fill the queue and the 9th is refused
    # (HTTP 503, gRPC UNAVAILABLE) while they wait; then SIGTERM drains the queue and the 8
    # get their answers
    with ServerProcess([str(model_path), "--max-batch-size", "64",
                        "--max-queue-delay-ms", "10000", "--max-queue-size", "8"]) as srv:
        statuses, overflow, error, pending, overflow_grpc = asyncio.run(
            _fill_queue_then_overflow(srv))
        code = srv.stop()
    assert overflow == 503 and "admits at most 8" in error
    assert overflow_grpc == grpc.StatusCode.UNAVAILABLE
    assert pending, "the refusal came only after the queued requests were answered"
    assert statuses == [200] * 8
    assert code == 0


def test_memory_stays_flat_under_overload(tmp_path: Path) -> None:
    # waves of 1000 connections sending a 784-float sample each at the same moment: most
    # are refused with 503, and the resident memory does not grow from wave to wave
    path = tmp_path / "wide.nnf"
    nf.save(nn.Sequential(nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 10)), path,
            task="multiclass")
    with ServerProcess([str(path), "--no-grpc", "--max-batch-size", "16",
                        "--max-queue-delay-ms", "20", "--max-queue-size", "32",
                        "--no-access-log"]) as srv:
        proc = psutil.Process(srv.pid)
        body = orjson.dumps({"data": [0.25] * 784})
        asyncio.run(post_many(srv.url, "/predict", [body] * 50, 10))
        rss, refused = [proc.memory_info().rss], 0
        for _ in range(5):
            answers = asyncio.run(post_many(srv.url, "/predict", [body] * 1000, 1000))
            codes = [status for status, _ in answers]
            assert set(codes) <= {200, 503}
            refused += codes.count(503)
            rss.append(proc.memory_info().rss)
        text = httpx.get(f"{srv.url}/metrics").text
    mib = [round(r / 2**20, 1) for r in rss]
    assert refused > 2500, "the load never filled the queue"
    assert metric(text, "nnforge_requests_total", outcome="rejected_queue_full") == refused
    # after the first wave has sized the heap, later waves must not add to it
    assert max(rss[2:]) - rss[1] < 4 * 2**20, f"resident memory grew from wave to wave: {mib} MiB"
    assert rss[-1] - rss[0] < 96 * 2**20, f"overload took too much memory: {mib} MiB"
    assert re.search(r"nnforge_queue_samples\{[^}]*\} 0\.0", text)
