"""Property-based fuzzing of every route in the OpenAPI document and of the gRPC service:
whatever a client sends, the answer is never a 5xx and the server keeps serving."""

from __future__ import annotations

import gzip
import json
import string
from urllib.parse import quote

import grpc
import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import nnforge as nf
from nnforge import nn
from nnforge.serve.grpc_service import MESSAGES, SERVICE
from nnforge.serve.testing import ServerProcess

ADMIN = "fuzz-admin"
DATATYPES = ["FP32", "FP64", "FP16", "INT8", "INT32", "INT64", "UINT8", "BOOL", "BYTES", "fp32",
             ""]
FUZZ = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
PER_ROUTE = settings(FUZZ, max_examples=40)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    path = tmp_path_factory.mktemp("fuzz") / "clf" / "1" / "model.nnf"
    path.parent.mkdir(parents=True)
    nf.manual_seed(9)
    nf.save(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)), path,
            task="multiclass", labels=["a", "b", "c"])
    with ServerProcess([str(path.parent.parent.parent), "--max-body-bytes", "65536",
                        "--no-access-log", "--timeout-ms", "5000"],
                       env={"NNFORGE_ADMIN_KEY": ADMIN}) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: ServerProcess):  # noqa: ANN201
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def routes(client: httpx.Client) -> list[tuple[str, str]]:
    spec = client.get("/openapi.json").json()
    found = [(method.upper(), path) for path, item in spec["paths"].items() for method in item]
    assert len(found) >= 20
    return found


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False,
                                                                     allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=30)
numbers = st.floats(-1e6, 1e6, width=32) | st.integers(-300, 300)
samples = st.one_of(st.lists(numbers, min_size=0, max_size=9),
                    st.lists(st.lists(numbers, min_size=3, max_size=5), max_size=4), json_values)
shapes = st.lists(st.integers(-2, 6) | st.sampled_from([2**31, 10**12]), max_size=4)
random_tensor = st.fixed_dictionaries(
    {"name": st.sampled_from(["input", "x", ""]), "shape": shapes | json_values,
     "datatype": st.sampled_from(DATATYPES), "data": samples},
    optional={"parameters": st.fixed_dictionaries(
        {}, optional={"binary_data_size": st.integers(-4, 64) | json_values})})


@st.composite
def fitting_tensor(draw: st.DrawFn) -> dict:
    """A tensor the model could take (n rows of 4), with one thing possibly changed."""
    rows = draw(st.integers(0, 3))
    data = draw(st.lists(numbers | st.sampled_from([1e39, -1e39, True]), min_size=rows * 4,
                         max_size=rows * 4))
    doc = {"name": "input", "shape": [rows, 4], "datatype": draw(st.sampled_from(DATATYPES)),
           "data": data}
    if draw(st.booleans()):
        key = draw(st.sampled_from(["name", "shape", "datatype", "data"]))
        doc[key] = draw(json_values)
    return doc


tensor = fitting_tensor() | random_tensor
v2_docs = st.fixed_dictionaries(
    {"inputs": st.lists(tensor, max_size=2) | json_values},
    optional={"outputs": st.lists(st.fixed_dictionaries(
        {"name": st.sampled_from(["classes", "probabilities", "labels", "nope"])},
        optional={"parameters": st.dictionaries(st.sampled_from(["binary_data", "x"]),
                                                json_values, max_size=2)}), max_size=3),
        "parameters": st.dictionaries(st.sampled_from(["binary_data_output", "y"]),
                                      json_values, max_size=2),
        "id": json_values})
simple_docs = st.dictionaries(st.sampled_from(["data", "instances", "inputs"]), samples,
                              max_size=2)


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """A request body and the headers that go with it: JSON, binary extension, junk."""
    kind = draw(st.sampled_from(["v2", "simple", "json", "bytes", "binary"]))
    headers: dict[str, str] = {}
    if kind == "bytes":
        body = draw(st.binary(max_size=200))
    elif kind == "binary":
        header = json.dumps(draw(v2_docs)).encode()
        body = header + draw(st.binary(max_size=80))
        length = draw(st.sampled_from([len(header), 0, len(body) + 1, -1]) | st.integers(0, 300))
        headers["Inference-Header-Content-Length"] = str(length)
    else:
        doc = draw({"v2": v2_docs, "simple": simple_docs, "json": json_values}[kind])
        body = json.dumps(doc).encode()  # orjson cannot write integers beyond 64 bits
    if draw(st.booleans()):
        headers["Content-Type"] = draw(st.sampled_from(["application/json", "text/plain",
                                                        "application/octet-stream"]))
    encoding = draw(st.sampled_from([None, None, "gzip", "deflate", "br"]))
    if encoding is not None:
        headers["Content-Encoding"] = encoding
        if encoding == "gzip" and draw(st.booleans()):
            body = gzip.compress(body)
    if draw(st.booleans()):
        headers["X-API-Key"] = draw(st.sampled_from([ADMIN, "wrong"]))
    return body, headers


path_params = st.sampled_from(["clf", "1", "2", "nope"]) | st.text(
    string.printable, min_size=1, max_size=12)


def fill(template: str, draw: st.DrawFn) -> str:
    path = template
    for name in ("{model}", "{version}"):
        if name in path:
            path = path.replace(name, quote(draw(path_params), safe=""))
    return path


def test_every_http_route_answers_client_mistakes_with_4xx(client: httpx.Client,
                                                           routes: list[tuple[str, str]]
                                                           ) -> None:
    def fuzz(method: str, template: str) -> None:
        @PER_ROUTE
        @given(data=st.data())
        def probe(data: st.DataObject) -> None:
            verb = method
            if data.draw(st.integers(0, 9)) == 0:
                verb = data.draw(st.sampled_from(["GET", "POST", "PUT", "DELETE"]))
            path = fill(template, data.draw)
            body, headers = data.draw(bodies())
            r = client.request(verb, path, content=body if verb != "GET" else None,
                               headers=headers)
            assert r.status_code < 500, (verb, path, body[:200], headers, r.text[:300])
            if r.status_code >= 400:
                assert isinstance(r.json()["error"], str)

        probe()

    for method, template in routes:
        fuzz(method, template)
    # the server still answers normally (the fuzzing may have unloaded the model)
    assert client.post("/v2/repository/models/clf/load",
                       headers={"X-API-Key": ADMIN}).status_code == 200
    assert client.get("/v2/health/ready").status_code == 200
    ok = client.post("/predict", json={"data": [1, 2, 3, 4]})
    assert ok.status_code == 200 and ok.json()["predictions"][0]["label"] in ("a", "b", "c")


contents = st.fixed_dictionaries({}, optional={
    "fp32_contents": st.lists(st.floats(width=32), max_size=12),
    "int_contents": st.lists(st.integers(-2**31, 2**31 - 1), max_size=12),
    "int64_contents": st.lists(st.integers(-2**63, 2**63 - 1), max_size=12),
    "bool_contents": st.lists(st.booleans(), max_size=12),
    "bytes_contents": st.lists(st.binary(max_size=4), max_size=3)})


@st.composite
def infer_requests(draw: st.DrawFn) -> bytes:
    """A ModelInferRequest with random tensors, contents and raw bytes."""
    req = MESSAGES["ModelInferRequest"](
        model_name=draw(st.sampled_from(["clf", "clf", "clf", "nope", ""])),
        model_version=draw(st.sampled_from(["", "", "1", "7", "x"])),
        id=draw(st.text(max_size=5)))
    for _ in range(draw(st.sampled_from([1, 1, 1, 0, 2]))):
        shape = draw(st.sampled_from([[1, 4], [2, 4], [3, 4], [4]]) | st.lists(
            st.integers(-3, 8) | st.just(2**40), max_size=3))
        t = req.inputs.add(name=draw(st.sampled_from(["input", "input", "x"])),
                           datatype=draw(st.sampled_from(DATATYPES)), shape=shape)
        for field, values in draw(contents).items():
            getattr(t.contents, field).extend(values)
    for _ in range(draw(st.integers(0, 2))):
        req.raw_input_contents.append(draw(st.binary(max_size=64)))
    for name in draw(st.lists(st.sampled_from(["classes", "labels", "zz"]), max_size=2)):
        req.outputs.add(name=name)
    return req.SerializeToString()


def test_grpc_infer_answers_client_mistakes_with_client_codes(server: ServerProcess) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    infer = channel.unary_unary(f"/{SERVICE}/ModelInfer", request_serializer=lambda b: b,
                                response_deserializer=MESSAGES["ModelInferResponse"].FromString)
    client_codes = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                    grpc.StatusCode.UNAUTHENTICATED}

    @FUZZ
    @given(payload=infer_requests() | st.binary(max_size=100))
    def probe(payload: bytes) -> None:
        try:
            infer(payload, timeout=30)
        except grpc.RpcError as exc:
            assert exc.code() in client_codes, (payload, exc.code(), exc.details())

    probe()
    ok = MESSAGES["ModelInferRequest"](model_name="clf")
    ok.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    ok.raw_input_contents.append(np.ones(4, np.float32).tobytes())
    reply = infer(ok.SerializeToString(), timeout=30)
    assert reply.model_name == "clf" and len(reply.raw_output_contents) == 3
    channel.close()
