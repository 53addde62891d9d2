"""A running `nnforge serve`: tritonclient over HTTP and gRPC, simple REST, errors, metadata."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http

import nnforge as nf
from nnforge import nn
from nnforge.serve.testing import ServerProcess

LABELS = [f"digit{i}" for i in range(10)]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("repo") / "clf" / "1" / "model.nnf"
    path.parent.mkdir(parents=True)
    nf.manual_seed(3)
    model = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    nf.save(model, path, task="multiclass", labels=LABELS)
    return path


@pytest.fixture(scope="module", params=[1, 2], ids=["1-worker", "2-workers"])
def server(model_path: Path, request: pytest.FixtureRequest):  # noqa: ANN201
    """One server process, then two workers sharing the ports: clients see no difference."""
    with ServerProcess([str(model_path.parent.parent.parent), "--max-body-bytes", "200000",
                        "--max-queue-delay-ms", "1", "--workers", str(request.param)]) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: ServerProcess):  # noqa: ANN201
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def session(model_path: Path) -> nf.InferenceSession:
    return nf.InferenceSession(model_path)


@pytest.fixture
def samples(rng: np.random.Generator) -> np.ndarray:
    return (rng.random((5, 64)) * 16).astype(np.float32)


def test_tritonclient_http_with_binary_and_json_tensors(server: ServerProcess,
                                                        session: nf.InferenceSession,
                                                        samples: np.ndarray) -> None:
    c = triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("clf")
    assert c.get_server_metadata()["name"] == "nnforge"
    meta = c.get_model_metadata("clf")
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 64]}]
    assert [o["name"] for o in meta["outputs"]] == ["classes", "probabilities", "labels"]
    expected = session.predict(samples)
    for binary in (True, False):
        tensor = triton_http.InferInput("input", list(samples.shape), "FP32")
        tensor.set_data_from_numpy(samples, binary_data=binary)
        outputs = [triton_http.InferRequestedOutput(n, binary_data=binary)
                   for n in ("probabilities", "classes", "labels")]
        result = c.infer("clf", [tensor], outputs=outputs, request_id=f"r-{binary}")
        np.testing.assert_array_equal(result.as_numpy("classes"), expected.classes)
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected.probabilities,
                                   rtol=1e-5, atol=1e-7)
        labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("labels")]
        assert labels == expected.labels
        assert result.get_response()["id"] == f"r-{binary}"
    default = c.infer("clf", [tensor], model_version="1")  # no outputs named: all, binary
    np.testing.assert_array_equal(default.as_numpy("classes"), expected.classes)
    c.close()


GRPC_CLIENT = r"""
import json, sys
import numpy as np
import tritonclient.grpc as g
from tritonclient.utils import InferenceServerException
c = g.InferenceServerClient(sys.argv[1])
x = np.array(json.loads(sys.argv[2]), np.float32)
out = {"live": c.is_server_live(), "ready": c.is_server_ready(),
       "model_ready": c.is_model_ready("clf"), "missing_ready": c.is_model_ready("nope"),
       "server": c.get_server_metadata(as_json=True),
       "meta": c.get_model_metadata("clf", as_json=True)}
t = g.InferInput("input", list(x.shape), "FP32")
t.set_data_from_numpy(x)
r = c.infer("clf", [t], outputs=[g.InferRequestedOutput("probabilities"),
                                 g.InferRequestedOutput("classes")], request_id="g1")
out["probabilities"] = r.as_numpy("probabilities").tolist()
out["classes"] = r.as_numpy("classes").tolist()
out["id"] = r.get_response().id
r = c.infer("clf", [t], model_version="1")
out["labels"] = [v.decode() for v in r.as_numpy("labels")]
errors = {}
for name, call in [
        ("bad_shape", lambda: c.infer("clf", [g.InferInput("input", [2, 5], "FP32")
                                              .set_data_from_numpy(np.ones((2, 5), np.float32))])),
        ("bad_model", lambda: c.infer("nope", [t])),
        ("bad_version", lambda: c.infer("clf", [t], model_version="9")),
        ("bad_output", lambda: c.infer("clf", [t], outputs=[g.InferRequestedOutput("zzz")]))]:
    try:
        call()
        errors[name] = "no error"
    except InferenceServerException as e:
        errors[name] = [e.status(), e.message()]
out["errors"] = errors
r = c.infer("clf", [t])
out["after_errors"] = r.as_numpy("classes").tolist()
out["stats"] = c.get_inference_statistics("clf", as_json=True)
print(json.dumps(out))
"""


def test_tritonclient_grpc_in_its_own_process(server: ServerProcess,
                                              session: nf.InferenceSession,
                                              samples: np.ndarray) -> None:
    # the client runs apart, as its protobuf registrations would clash with another
    # package's `inference.*` messages in the default pool of one process
    proc = subprocess.run([sys.executable, "-c", GRPC_CLIENT, f"127.0.0.1:{server.grpc_port}",
                           json.dumps(samples.tolist())], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout)
    expected = session.predict(samples)
    assert out["live"] and out["ready"] and out["model_ready"] and not out["missing_ready"]
    assert out["server"]["name"] == "nnforge"
    assert out["meta"]["inputs"][0] == {"name": "input", "datatype": "FP32",
                                        "shape": ["-1", "64"]}
    assert out["classes"] == expected.classes.tolist() and out["id"] == "g1"
    np.testing.assert_allclose(np.array(out["probabilities"], np.float32),
                               expected.probabilities, rtol=1e-5, atol=1e-7)
    assert out["labels"] == expected.labels
    errors = out["errors"]
    assert errors["bad_shape"][0] == "StatusCode.INVALID_ARGUMENT"
    assert "expected shape [n, 64]" in errors["bad_shape"][1]
    assert errors["bad_model"][0] == "StatusCode.NOT_FOUND"
    assert errors["bad_version"][0] == "StatusCode.NOT_FOUND"
    assert errors["bad_output"][0] == "StatusCode.INVALID_ARGUMENT"
    assert out["after_errors"] == expected.classes.tolist()
    stats = out["stats"]["model_stats"]
    assert [(m["name"], m["version"]) for m in stats] == [("clf", "1")]
    infer = stats[0]["inference_stats"]
    # bad shape and bad output count against version 1 (a bad version has no version)
    assert int(infer["success"]["count"]) >= 3 and int(infer["fail"]["count"]) >= 2
    assert int(stats[0]["execution_count"]) >= 3 and int(stats[0]["last_inference"]) > 0


def test_triton_statistics_extension(client: httpx.Client, server: ServerProcess,
                                     samples: np.ndarray) -> None:
    c = triton_http.InferenceServerClient(f"127.0.0.1:{server.http_port}")
    before = c.get_inference_statistics("clf")["model_stats"][0]
    for i in range(3):
        assert client.post("/v1/models/clf:predict",
                           json={"instances": samples[:i + 1].tolist()}).status_code == 200
    assert client.post("/v1/models/clf:predict", json={"instances": [[1, 2]]}).status_code == 400
    after = c.get_inference_statistics("clf", "1")["model_stats"]
    assert len(after) == 1 and after[0]["version"] == "1"
    new, old = after[0]["inference_stats"], before["inference_stats"]
    assert new["success"]["count"] - old["success"]["count"] == 3
    assert new["fail"]["count"] - old["fail"]["count"] == 1
    assert after[0]["inference_count"] - before["inference_count"] == 6  # 1 + 2 + 3 samples
    assert new["compute_infer"]["ns"] > old["compute_infer"]["ns"]
    sizes = {b["batch_size"] for b in after[0]["batch_stats"]}
    assert {1, 2, 3} <= sizes
    every = c.get_inference_statistics()["model_stats"]
    assert [m["name"] for m in every] == ["clf"]
    assert "statistics" in c.get_server_metadata()["extensions"]
    missing = client.get("/v2/models/nope/stats")
    assert missing.status_code == 404 and "unknown model" in missing.json()["error"]


def test_simple_rest_one_sample_or_many(client: httpx.Client, session: nf.InferenceSession,
                                        samples: np.ndarray) -> None:
    expected = session.predict(samples)
    for path in ("/predict", "/v1/models/clf:predict", "/v1/models/clf/versions/1:predict"):
        one = client.post(path, json={"data": samples[0].tolist()})
        assert one.status_code == 200, one.text
        body = one.json()
        assert (body["model_name"], body["model_version"]) == ("clf", "1")
        (row,) = body["predictions"]
        assert row["class"] == expected.classes[0] and row["label"] == expected.labels[0]
        np.testing.assert_allclose(np.array(row["probabilities"], np.float32),
                                   expected.probabilities[0], rtol=1e-5, atol=1e-7)
        many = client.post(path, json={"instances": samples.tolist()}).json()["predictions"]
        assert [r["class"] for r in many] == expected.classes.tolist()
    # curl -d sends a form content type; the body is JSON all the same
    form = client.post("/predict", content=json.dumps({"data": samples[1].tolist()}),
                       headers={"content-type": "application/x-www-form-urlencoded"})
    assert form.json()["predictions"][0]["class"] == expected.classes[1]


@pytest.mark.parametrize("method, path, body, status, message", [
    ("POST", "/predict", b"{not json", 400, "not valid JSON"),
    ("POST", "/predict", b'{"data": [1, 2, 3]}', 400, "expected shape [64] (one sample)"),
    ("POST", "/predict", b'{"rows": [1]}', 400, "exactly one of the keys"),
    ("POST", "/predict", b'{"data": [' + b"1e999," * 63 + b"1]}", 400, "not valid JSON"),
    ("POST", "/predict", b'{"data": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400,
     "not valid JSON"),
    ("POST", "/v1/models/nope:predict", b'{"data": [1]}', 404, "unknown model 'nope'"),
    ("POST", "/v1/models/clf/versions/7:predict", b'{"data": [1]}', 404, "no version '7'"),
    ("POST", "/v2/models/clf/versions/x1/infer", b"{}", 400, "expected a version number"),
    ("POST", "/v2/models/clf/infer", b'{"inputs": {}}', 400, "'inputs' must be"),
    # finite inputs that overflow the model: once nan probabilities (JSON null) and class 0
    ("POST", "/v2/models/clf/infer", json.dumps({"inputs": [{
        "name": "input", "shape": [1, 64], "datatype": "FP32", "data": [3e38] * 64}]}).encode(),
     400, "probably too large"),
    ("POST", "/predict", b'{"data": [' + b"-3e38," * 63 + b"3e38]}", 400, "probably too large"),
    ("POST", "/v2/models/clf/infer", b'{"inputs": [{"name": "input", "data": "\xff"}]}', 400,
     "expected UTF-8 text, found byte 0xff"),
    ("POST", "/predict", b" " * 300000, 413, "at most 200000 bytes"),
    ("GET", "/predict", b"", 405, "GET is not allowed"),
    ("GET", "/v2/models/nope", b"", 404, "unknown model"),
    ("GET", "/nowhere", b"", 404, "no route GET /nowhere"),
    ("POST", "/v2/repository/index", b"", 403, "administration endpoints are off"),
])
def test_client_mistakes_get_4xx_and_the_server_keeps_serving(
        client: httpx.Client, samples: np.ndarray, method: str, path: str, body: bytes,
        status: int, message: str) -> None:
    r = client.request(method, path, content=body)
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    ok = client.post("/predict", json={"data": samples[0].tolist()})
    assert ok.status_code == 200


def test_binary_and_compressed_requests_over_raw_http(client: httpx.Client,
                                                      session: nf.InferenceSession,
                                                      samples: np.ndarray) -> None:
    import gzip  # noqa: PLC0415

    raw = samples.tobytes()
    header = json.dumps({"inputs": [{"name": "input", "shape": list(samples.shape),
                                     "datatype": "FP32",
                                     "parameters": {"binary_data_size": len(raw)}}],
                         "outputs": [{"name": "classes"}]}).encode()
    r = client.post("/v2/models/clf/infer", content=gzip.compress(header + raw),
                    headers={"Inference-Header-Content-Length": str(len(header)),
                             "Content-Encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == session.predict(samples).classes.tolist()
    nan = samples.copy()
    nan[2, 5] = np.nan
    r = client.post("/v2/models/clf/infer", content=header + nan.tobytes(),
                    headers={"Inference-Header-Content-Length": str(len(header))})
    assert r.status_code == 400 and "finite" in r.json()["error"]


def test_metadata_docs_metrics_and_logs(client: httpx.Client, server: ServerProcess) -> None:
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}
    assert client.get("/v2").json()["extensions"] == ["binary_tensor_data", "classification",
                                                     "model_repository", "statistics"]
    assert client.get("/v2/models/clf/versions/1/ready").json()["ready"] is True
    config = client.get("/v2/models/clf/config").json()
    assert config["max_batch_size"] == 64 and config["input"][0]["dims"] == [64]
    status = client.get("/v1/models/clf").json()
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    assert status["model"]["task"] == "multiclass" and status["model"]["labels"] == LABELS
    spec = client.get("/openapi.json").json()
    for path in ("/predict", "/v1/models/{model}:predict", "/v2/models/{model}/infer",
                 "/v2/models/{model}/versions/{version}/infer", "/v2/health/ready",
                 "/v2/repository/models/{model}/load", "/metrics"):
        assert path in spec["paths"], path
    assert "swagger" in client.get("/docs").text.lower()
    client.post("/predict", json={"data": [0.0] * 64}, headers={"X-Request-Id": "trace-42"})
    text = client.get("/metrics").text
    assert 'nnforge_requests_total{model="clf",outcome="success",version="1"}' in text
    assert 'nnforge_requests_total{model="_unknown",outcome="invalid_input",version=""}' in text
    assert "nnforge_model_load_duration_seconds" in text and "nnforge_inflight_requests" in text
    server.stop()  # flushes the access log
    records = [json.loads(line) for line in server.stderr_lines if line.startswith("{")]
    traced = [r for r in records if r.get("request_id") == "trace-42"]
    assert traced and traced[0]["status"] == 200 and traced[0]["model"] == "clf"
    assert {"ts", "path", "version", "outcome", "latency_ms"} <= set(traced[0])
    assert server.proc is not None and server.proc.returncode == 0  # a graceful stop


def test_command_line_errors_are_one_line(tmp_path: Path, model_path: Path) -> None:
    def serve(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nnforge.serve", *args],
                              capture_output=True, text=True, timeout=120)

    r = serve(str(tmp_path / "missing.nnf"))
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0
    assert "expected a .nnf/.onnx model file or a model repository" in r.stderr
    (tmp_path / "broken.nnf").write_bytes(b"PK not a model")
    r = serve(str(tmp_path / "broken.nnf"), "--port", "0", "--no-grpc")
    # the error alone: no JSON log line of the failed load (or of loads) before it
    assert r.returncode == 1 and r.stderr.startswith("nnforge: error: no model could be "
                                                     "loaded") and r.stderr.count("\n") == 1
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = str(busy.getsockname()[1])
        for args in (["--port", port, "--no-grpc"], ["--port", "0", "--grpc-port", port]):
            r = serve(str(model_path), *args)
            assert r.returncode == 1 and r.stderr.startswith(
                f"nnforge: error: cannot listen on 127.0.0.1:{port}"), r.stderr
            assert r.stderr.count("\n") == 1, r.stderr
    r = serve(str(model_path), "--version-policy", "newest")
    # a flag's mistake is a usage error: exit 2, one line naming the accepted values
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert "argument --version-policy: expected a version policy 'latest', 'latest:N', " \
           "'all' or 'specific:V1,V2', found 'newest'" in r.stderr
    r = serve("--help")
    assert r.returncode == 0 and "--max-queue-delay-ms" in r.stdout
