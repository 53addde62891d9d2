"""In-process checks of protocol details: admin bodies without a Content-Type (tritonclient's),
the 401 challenge, Triton's classification extension and request timeout, BOOL inputs and
JSON booleans in numeric data."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx
import numpy as np
import orjson
import pytest
from helpers import serve_in_process
from tritonclient.http import InferRequestedOutput, InferResult

import nnforge as nf
from nnforge import nn
from nnforge.serve.batcher import BatchingConfig, DynamicBatcher
from nnforge.serve.core import InferenceServer
from nnforge.serve.errors import RequestTimeoutError
from nnforge.serve.grpc_service import MESSAGES, InferenceService
from nnforge.serve.metrics import ServerMetrics
from nnforge.serve.tensors import NUMERIC_TO_MODEL

API, ADMIN = {"X-API-Key": "client"}, {"X-API-Key": "operator"}
LABELS = ["cat", "dog", "eel", "fox"]
X = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, 1.0]], np.float32)


def _repo(root: Path) -> Path:
    for name, task, out, labels in (("clf", "multiclass", 4, LABELS),
                                    ("reg", "regression", 1, None)):
        (root / name / "1").mkdir(parents=True)
        nf.manual_seed(1)
        nf.save(nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, out)),
                root / name / "1" / "model.nnf", task=task, labels=labels)
    return root


Check = Callable[[httpx.AsyncClient, InferenceServer], Awaitable[None]]


def serve(root: Path, check: Check) -> None:
    """Run check against the app serving root, with a client and an admin key."""
    serve_in_process(root, check, api_key="client", admin_key="operator")


def v2(datatype: str, data: Any, shape: list[int], **extra: Any) -> bytes:
    return orjson.dumps({"inputs": [{"name": "input", "shape": shape, "datatype": datatype,
                                     "data": data}], **extra})


def test_admin_routes_read_json_bodies_whatever_their_content_type(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, _: InferenceServer) -> None:
        # tritonclient.http sends '{}' with no Content-Type; curl -d sends it as a form
        for headers in ({}, {"content-type": "application/x-www-form-urlencoded"},
                        {"content-type": "application/json"}):
            for op in ("unload", "load"):
                r = await c.post(f"/v2/repository/models/clf/{op}", content=b"{}",
                                 headers={**ADMIN, **headers})
                assert (r.status_code, r.json()) == (200, {}), (op, headers, r.text)
        assert (await c.post("/v2/repository/models/clf/load", headers=ADMIN)).status_code == 200
        every = (await c.post("/v2/repository/index", headers=ADMIN)).json()
        (await c.post("/v2/repository/models/reg/unload", headers=ADMIN)).raise_for_status()
        ready = await c.post("/v2/repository/index", content=b'{"ready": true}', headers=ADMIN)
        assert [r["name"] for r in ready.json()] == ["clf"] and len(every) == 2
        bad = await c.post("/v2/repository/index", content=b'{"ready": [1]}', headers=ADMIN)
        assert bad.status_code == 400 and "body.ready" in bad.json()["error"]
        broken = await c.post("/v2/repository/models/clf/load", content=b"{", headers=ADMIN)
        assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]
    serve(_repo(tmp_path), check)


def test_401_answers_carry_a_bearer_challenge(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, _: InferenceServer) -> None:
        for method, path, headers in (("POST", "/v1/models/clf:predict", {}),
                                      ("POST", "/v2/models/clf/infer", {"X-API-Key": "x"}),
                                      ("GET", "/v2/models/clf", {}),
                                      ("POST", "/v2/repository/index", API)):
            r = await c.request(method, path, headers=headers, content=b"{}")
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"].startswith("Bearer"), path
        ok = await c.get("/v2/models/clf", headers=API)
        assert ok.status_code == 200 and "www-authenticate" not in ok.headers
        meta = (await c.get("/v2", headers=API)).json()
        assert "classification" in meta["extensions"]
    serve(_repo(tmp_path), check)


def test_classification_extension_over_rest_and_grpc(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    probs = nf.InferenceSession(root / "clf" / "1" / "model.nnf").predict(X).probabilities
    best = np.argsort(-probs, axis=1, kind="stable")[:, :2]

    def parse(rows: np.ndarray) -> list[list[tuple[float, int, str]]]:
        out = []
        for row in rows.tolist():
            items = [(v.decode() if isinstance(v, bytes) else v).split(":") for v in row]
            out.append([(float(s), int(i), label) for s, i, label in items])
        return out

    def expect(top: list[list[tuple[float, int, str]]]) -> None:
        assert [[i for _, i, _ in row] for row in top] == best.tolist()
        for r, row in enumerate(top):
            for score, i, label in row:
                assert label == LABELS[i]
                np.testing.assert_allclose(score, probs[r, i], rtol=1e-6)

    async def check(c: httpx.AsyncClient, server: InferenceServer) -> None:
        for binary in (False, True):  # tritonclient asks for binary data
            wanted = InferRequestedOutput("probabilities", binary_data=binary, class_count=2)
            body = v2("FP32", X.ravel().tolist(), [2, 3], outputs=[wanted._get_tensor()])
            r = await c.post("/v2/models/clf/infer", content=body, headers=API)
            assert r.status_code == 200, r.text
            hlen = r.headers.get("inference-header-content-length")
            result = InferResult.from_response_body(r.content, header_length=hlen and int(hlen))
            out = result.get_output("probabilities")
            assert out["datatype"] == "BYTES" and out["shape"] == [2, 2]
            expect(parse(result.as_numpy("probabilities")))
        many = v2("FP32", X.ravel().tolist(), [2, 3], outputs=[
            {"name": "probabilities", "parameters": {"classification": 99}}])
        r = await c.post("/v2/models/clf/infer", content=many, headers=API)
        assert r.json()["outputs"][0]["shape"] == [2, 4]  # capped at the number of classes
        for model, name, count, words in (("reg", "values", 1, "classification models"),
                                          ("clf", "classes", 1, "output 'probabilities'"),
                                          ("clf", "probabilities", 0, "positive integer")):
            body = v2("FP32", X.ravel().tolist(), [2, 3], outputs=[
                {"name": name, "parameters": {"classification": count}}])
            r = await c.post(f"/v2/models/{model}/infer", content=body, headers=API)
            assert r.status_code == 400 and words in r.json()["error"], r.text

        service = InferenceService(server)
        req = MESSAGES["ModelInferRequest"](model_name="clf")
        req.inputs.add(name="input", datatype="FP32", shape=[2, 3])
        req.raw_input_contents.append(X.tobytes())
        req.outputs.add(name="probabilities").parameters["classification"].int64_param = 2
        reply = await service.ModelInfer(req, Aborts())
        assert reply.outputs[0].datatype == "BYTES" and list(reply.outputs[0].shape) == [2, 2]
        raw, values = reply.raw_output_contents[0], []
        while raw:
            n = int.from_bytes(raw[:4], "little")
            values.append(raw[4:4 + n].decode())
            raw = raw[4 + n:]
        expect(parse(np.array(values, object).reshape(2, 2)))
        req.model_name = "reg"
        req.outputs[0].name = "values"
        with pytest.raises(AbortedError, match="classification models"):
            await service.ModelInfer(req, Aborts())
    serve(root, check)


class AbortedError(Exception):
    pass


class Aborts:
    """The part of a grpc.aio context that ModelInfer uses on failure."""

    async def abort(self, code: Any, message: str) -> None:
        raise AbortedError(f"{code}: {message}")


def test_a_request_timeout_shortens_the_servers() -> None:
    async def main() -> None:
        # a lone request waits a minute for its batch to fill: its own timeout ends that
        b = DynamicBatcher(lambda x: {"y": x}, BatchingConfig(max_batch_size=4,
                                                              max_queue_delay_ms=60000),
                           ServerMetrics().model("m", "1"))
        with pytest.raises(RequestTimeoutError, match="timeout of 20 ms"):
            await b.infer(np.ones((1, 1), np.float32), timeout_s=0.02)
        await b.close()
    asyncio.run(main())


def test_timeout_parameter_reaches_the_batcher(tmp_path: Path) -> None:
    async def check(c: httpx.AsyncClient, server: InferenceServer) -> None:
        seen: list[Any] = []
        batcher = server.repository.get("clf").batcher
        submit = batcher.submit
        batcher.submit = lambda x, arrived, gone, timeout_s: (  # type: ignore[method-assign]
            seen.append(timeout_s), submit(x, arrived, gone, timeout_s))[1]
        body = v2("FP32", X.ravel().tolist(), [2, 3], parameters={"timeout": 2_500_000})
        assert (await c.post("/v2/models/clf/infer", content=body, headers=API)).is_success
        bad = v2("FP32", X.ravel().tolist(), [2, 3], parameters={"timeout": "soon"})
        r = await c.post("/v2/models/clf/infer", content=bad, headers=API)
        assert r.status_code == 400 and "'timeout'" in r.json()["error"]
        req = MESSAGES["ModelInferRequest"](model_name="clf")
        req.inputs.add(name="input", datatype="FP32", shape=[2, 3])
        req.raw_input_contents.append(X.tobytes())
        req.parameters["timeout"].int64_param = 1000
        await InferenceService(server).ModelInfer(req, Aborts())
        assert seen == [2.5, 0.001]
    serve(_repo(tmp_path), check)


def test_bool_inputs_and_booleans_in_numeric_data(tmp_path: Path) -> None:
    root = _repo(tmp_path)
    ones = np.array([[1, 0, 1]], np.float32)
    want = nf.InferenceSession(root / "clf" / "1" / "model.nnf").predict(ones).probabilities

    async def check(c: httpx.AsyncClient, server: InferenceServer) -> None:
        async def probs(body: bytes, headers: dict[str, str] | None = None) -> np.ndarray:
            r = await c.post("/v2/models/clf/infer", content=body,
                             headers={**API, **(headers or {})})
            assert r.status_code == 200, r.text
            out = next(o for o in r.json()["outputs"] if o["name"] == "probabilities")
            return np.array(out["data"], np.float32).reshape(out["shape"])

        np.testing.assert_allclose(await probs(v2("BOOL", [True, False, True], [1, 3])), want,
                                   rtol=1e-6)
        header = orjson.dumps({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "BOOL",
                                           "parameters": {"binary_data_size": 3}}]})
        np.testing.assert_allclose(await probs(header + b"\x01\x00\x07", {
            "inference-header-content-length": str(len(header))}), want, rtol=1e-6)
        # the list of datatypes an unknown one is told about is the list that works
        r = await c.post("/v2/models/clf/infer", content=v2("FP8", [1, 0, 1], [1, 3]),
                         headers=API)
        assert r.status_code == 400 and str(list(NUMERIC_TO_MODEL)) in r.json()["error"]
        assert "'BOOL'" in r.json()["error"]
        for datatype in NUMERIC_TO_MODEL:
            data = [True, False, True] if datatype == "BOOL" else [1, 0, 1]
            await probs(v2(datatype, data, [1, 3]))
        # JSON true is no number: refused where it stands
        r = await c.post("/v2/models/clf/infer", content=v2("FP32", [[1, 2, True]], [1, 3]),
                         headers=API)
        assert r.status_code == 400 and "boolean at index [0, 2]" in r.json()["error"]
        for body in ({"data": [1.5, False, 2]}, {"instances": [[1, 2, 3], [True, 0, 0]]}):
            r = await c.post("/v1/models/clf:predict", json=body, headers=API)
            assert r.status_code == 400 and "found a boolean at index [" in r.json()["error"]
        r = await c.post("/v2/models/clf/infer", content=v2("INT32", [1, True, 1], [1, 3]),
                         headers=API)
        assert r.status_code == 400 and "boolean at index [1]" in r.json()["error"]
        # gRPC: BOOL in raw bytes and in bool_contents
        service = InferenceService(server)
        for raw in (True, False):
            req = MESSAGES["ModelInferRequest"](model_name="clf")
            t = req.inputs.add(name="input", datatype="BOOL", shape=[1, 3])
            if raw:
                req.raw_input_contents.append(b"\x01\x00\x01")
            else:
                t.contents.bool_contents.extend([True, False, True])
            reply = await service.ModelInfer(req, Aborts())
            got = np.frombuffer(reply.raw_output_contents[1], np.float32)
            np.testing.assert_allclose(got, want.ravel(), rtol=1e-6)
    serve(root, check)
