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


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def server(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest):  # noqa: ANN201
    """One server process, then two workers (admin actions and metrics cross processes)."""
    path = tmp_path_factory.mktemp("fuzz") / "clf" / "1" / "model.nnf"
    path.parent.mkdir(parents=True)
    nf.manual_seed(9)
    nf.save(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 3)), path,
            task="multiclass", labels=["a", "b", "c"])
    with ServerProcess([str(path.parent.parent.parent), "--max-body-bytes", "65536",
                        "--no-access-log", "--timeout-ms", "5000", "--workers",
                        str(request.param)],
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
edge_values = st.sampled_from([1e39, -1e39, True, None, "1", [], 2**70])


def mutate(draw: st.DrawFn, doc: dict, places: list[tuple]) -> None:
    """Replace what sits at a few of the places (paths into doc) with something else."""
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2]))):
        *parents, last = draw(st.sampled_from(places))
        value = draw(json_values | edge_values)
        try:
            target = doc
            for key in parents:
                target = target[key]
            target[last] = value
        except (KeyError, IndexError, TypeError):  # an earlier change removed the place
            pass


@st.composite
def v2_request(draw: st.DrawFn) -> tuple[dict, bytes | None]:
    """A V2 request for the 4-input model, often valid, else changed in a place or two.

    With binary, the data travels in the binary part: (JSON header doc, bytes)."""
    rows = draw(st.integers(1, 3))
    values = draw(st.lists(numbers, min_size=rows * 4, max_size=rows * 4))
    datatype = draw(st.sampled_from(["FP32"] * 8 + DATATYPES))
    tensor: dict = {"name": "input", "shape": [rows, 4], "datatype": datatype}
    binary = None
    if draw(st.booleans()):
        dtype = {"FP64": "<f8", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2"}.get(datatype,
                                                                                  "<f4")
        with np.errstate(over="ignore", invalid="ignore"):  # out-of-range values: the point
            binary = np.array(values).astype(dtype).tobytes()
        tensor["parameters"] = {"binary_data_size": len(binary)}
    else:
        tensor["data"] = values
    doc: dict = {"inputs": [tensor]}
    if draw(st.booleans()):
        names = draw(st.lists(st.sampled_from(["classes", "probabilities", "labels"]),
                              max_size=3, unique=True))
        doc["outputs"] = [{"name": n, "parameters": {"binary_data": draw(st.booleans())}}
                          for n in names]
    if draw(st.booleans()):
        doc["parameters"] = {"binary_data_output": draw(st.booleans())}
    if draw(st.booleans()):
        doc["id"] = draw(st.text(max_size=6))
    places = [("inputs",), ("inputs", 0), ("inputs", 0, "name"), ("inputs", 0, "shape"),
              ("inputs", 0, "shape", 1), ("inputs", 0, "datatype"), ("id",), ("outputs",),
              ("parameters",), ("extra",)]
    if binary is None:
        places += [("inputs", 0, "data"), ("inputs", 0, "data", 0)]
    else:
        places += [("inputs", 0, "parameters", "binary_data_size")]
    mutate(draw, doc, places)
    return doc, binary


@st.composite
def simple_request(draw: st.DrawFn) -> dict:
    """A simple-API body for the 4-input model, often valid, else changed."""
    key = draw(st.sampled_from(["data", "instances"]))
    one = st.lists(numbers, min_size=4, max_size=4)
    doc = {key: draw(one | st.lists(one, min_size=1, max_size=3))}
    mutate(draw, doc, [(key,), (key, 0), ("other",)])
    return doc


@st.composite
def bodies(draw: st.DrawFn) -> tuple[bytes, dict[str, str]]:
    """A request body and the headers that go with it: V2 (JSON or binary), simple, junk."""
    kind = draw(st.sampled_from(["v2", "v2", "simple", "simple", "json", "bytes"]))
    headers: dict[str, str] = {}
    if kind == "bytes":
        body = draw(st.binary(max_size=200))
    elif kind == "v2":
        doc, binary = draw(v2_request())
        body = json.dumps(doc).encode()  # orjson cannot write integers beyond 64 bits
        if binary is not None:
            length = len(body)
            if draw(st.integers(0, 4)) == 0:
                length = draw(st.sampled_from([0, -1, len(body) - 1, len(body) + len(binary)
                                               + 1]) | st.integers(0, 400))
            if draw(st.integers(0, 4)) == 0:
                binary = draw(st.binary(max_size=80))
            body += binary
            headers["Inference-Header-Content-Length"] = str(length)
    else:
        doc = draw(simple_request() if kind == "simple" else json_values)
        body = json.dumps(doc).encode()
    if draw(st.booleans()):
        headers["Content-Type"] = draw(st.sampled_from(["application/json", "text/plain",
                                                        "application/octet-stream"]))
    encoding = draw(st.sampled_from([None] * 6 + ["gzip", "gzip", "deflate", "br"]))
    if encoding is not None:
        headers["Content-Encoding"] = encoding
        if encoding == "gzip" and draw(st.integers(0, 3)):
            body = gzip.compress(body)
    if draw(st.integers(0, 3)) == 0:
        headers["X-API-Key"] = draw(st.sampled_from([ADMIN, "wrong"]))
    return body, headers


path_params = st.sampled_from(["clf", "1", "2", "nope", "\u00b2", "9" * 40, "01"]) | st.text(
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
