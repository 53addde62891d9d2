"""A served model with an Imputer takes missing values (JSON null, NaN in binary and gRPC
tensors) and answers what InferenceSession.predict gives; Inf stays refused, and a model
without an Imputer refuses null and NaN as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Awaitable, Callable

import httpx
import numpy as np
import orjson
import pytest
from helpers import serve_in_process

import nnforge as nf
from nnforge import nn
from nnforge.data import Imputer, Pipeline, Standardizer
from nnforge.serve.core import InferenceServer
from nnforge.serve.grpc_service import MESSAGES, InferenceService

LABELS = ["a", "b", "c"]
X = np.array([[0.5, np.nan, 2.0], [np.nan, np.nan, np.nan], [1.0, 0.0, -1.0]], np.float32)


def _repo(root: Path, *names: str) -> Path:
    """Model 'imp' has an Imputer first in its preprocessing; 'plain' has no preprocessing."""
    train = np.array([[0.0, 1.0, 2.0], [np.nan, 3.0, 1.0], [2.0, np.nan, 0.0]], np.float32)
    pres = {"imp": Pipeline([Imputer("mean"), Standardizer()]).fit(train), "plain": None}
    for name in names:
        pre = pres[name]
        (root / name / "1").mkdir(parents=True)
        nf.manual_seed(2)
        nf.save(nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 3)),
                root / name / "1" / "model.nnf", task="multiclass", labels=LABELS,
                preprocessing=pre)
    return root


Check = Callable[[httpx.AsyncClient, InferenceServer], Awaitable[None]]


def serve(root: Path, check: Check) -> None:
    """Run check against the app serving root."""
    serve_in_process(root, check)


def _json_rows(x: np.ndarray) -> list:
    """Rows as JSON lists, NaN as null."""
    return [[None if np.isnan(v) else float(v) for v in row] for row in x.tolist()]


def v2_json(x: np.ndarray, datatype: str = "FP32") -> bytes:
    return orjson.dumps({"inputs": [{"name": "input", "shape": list(x.shape),
                                     "datatype": datatype, "data": _json_rows(x)}]})


def v2_binary(x: np.ndarray) -> tuple[bytes, dict[str, str]]:
    raw = x.astype("<f4").tobytes()
    header = orjson.dumps({"inputs": [{"name": "input", "shape": list(x.shape),
                                       "datatype": "FP32",
                                       "parameters": {"binary_data_size": len(raw)}}]})
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


def grpc_request(model: str, x: np.ndarray, datatype: str = "FP32") -> Any:
    req = MESSAGES["ModelInferRequest"](model_name=model)
    req.inputs.add(name="input", datatype=datatype, shape=list(x.shape))
    req.raw_input_contents.append(x.astype("<f4" if datatype == "FP32" else "<f8").tobytes())
    return req


class AbortedError(Exception):
    pass


class Aborts:
    """The part of a grpc.aio context that ModelInfer uses on failure."""

    async def abort(self, code: Any, message: str) -> None:
        raise AbortedError(f"{code}: {message}")


def _v2_probs(doc: dict) -> np.ndarray:
    out = {o["name"]: o for o in doc["outputs"]}["probabilities"]
    return np.array(out["data"], np.float32).reshape(out["shape"])


def test_missing_values_reach_the_imputer_over_every_protocol(tmp_path: Path) -> None:
    root = _repo(tmp_path, "imp")  # one model: POST /predict serves it
    expected = nf.InferenceSession(root / "imp" / "1" / "model.nnf").predict(X)

    def same(probs: np.ndarray) -> None:
        np.testing.assert_allclose(probs, expected.probabilities, rtol=1e-6, atol=1e-7)

    async def check(c: httpx.AsyncClient, server: InferenceServer) -> None:
        for datatype in ("FP32", "FP64"):
            r = await c.post("/v2/models/imp/infer", content=v2_json(X, datatype))
            assert r.status_code == 200, r.text
            same(_v2_probs(r.json()))
        body, headers = v2_binary(X)
        r = await c.post("/v2/models/imp/infer", content=body, headers=headers)
        assert r.status_code == 200, r.text
        same(_v2_probs(r.json()))
        for key in ("data", "instances"):
            r = await c.post("/predict", content=orjson.dumps({key: _json_rows(X)}))
            assert r.status_code == 200, r.text
            got = r.json()["predictions"]
            assert [p["label"] for p in got] == expected.labels
            same(np.array([p["probabilities"] for p in got], np.float32))
        one = await c.post("/v1/models/imp:predict", content=orjson.dumps(
            {"data": _json_rows(X[1:2])[0]}))  # one sample, all of it missing
        assert one.json()["predictions"][0]["class"] == expected.classes[1]
        service = InferenceService(server)
        for datatype in ("FP32", "FP64"):
            reply = await service.ModelInfer(grpc_request("imp", X, datatype), Aborts())
            names = [o.name for o in reply.outputs]
            raw = reply.raw_output_contents[names.index("probabilities")]
            same(np.frombuffer(raw, "<f4").reshape(3, 3))
    serve(root, check)


def test_infinity_and_models_without_an_imputer_are_still_refused(tmp_path: Path) -> None:
    inf = X.copy()
    inf[2, 1] = np.inf

    async def check(c: httpx.AsyncClient, server: InferenceServer) -> None:
        for model, x, words in (("imp", inf, "expected finite numbers"),
                                ("plain", X, "expected finite numbers")):
            body, headers = v2_binary(x)
            r = await c.post(f"/v2/models/{model}/infer", content=body, headers=headers)
            assert r.status_code == 400 and words in r.json()["error"], r.text
            assert ("found inf" if x is inf else "found nan") in r.json()["error"]
            with pytest.raises(AbortedError, match=words):
                await InferenceService(server).ModelInfer(grpc_request(model, x), Aborts())
        null = "'data' must hold numbers, found mixed or null values"
        r = await c.post("/v2/models/plain/infer", content=v2_json(X))
        assert r.status_code == 400 and null in r.json()["error"], r.text
        r = await c.post("/v1/models/plain:predict", content=orjson.dumps({"data": _json_rows(X)}))
        assert r.status_code == 400 and null in r.json()["error"], r.text
        # null is a missing float, never an integer nor a string
        r = await c.post("/v2/models/imp/infer", content=orjson.dumps(
            {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "INT32",
                         "data": [1, None, 3]}]}))
        assert r.status_code == 400 and null in r.json()["error"], r.text
        r = await c.post("/v1/models/imp:predict", content=b'{"data": [1, null, "3"]}')
        assert r.status_code == 400 and "must hold numbers" in r.json()["error"], r.text
        r = await c.post("/v2/models/imp/infer", content=orjson.dumps(  # beyond FP32, and null
            {"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32",
                         "data": [1e39, None, 3]}]}))
        assert r.status_code == 400 and "found [3.0, 1e+39]" in r.json()["error"], r.text
    serve(_repo(tmp_path, "imp", "plain"), check)

    async def simple(c: httpx.AsyncClient, _: InferenceServer) -> None:
        r = await c.post("/predict", content=orjson.dumps({"data": _json_rows(X)}))
        assert r.status_code == 400, r.text
        assert r.json()["error"] == "'data' must hold numbers, found mixed or null values"
    serve(_repo(tmp_path / "alone", "plain"), simple)
