"""HTTP/1.1 on the wire, for the fast inference path and for plain ASGI: pipelining,
Expect: 100-continue, HTTP/1.0, chunked bodies, oversized bodies, clients that leave."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn
from nnforge.serve.testing import ServerProcess

SAMPLE = [0.5, -1.0, 2.0, 0.0]


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("http") / "m.nnf"
    nf.manual_seed(4)
    nf.save(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)), path, task="multiclass")
    return path


@pytest.fixture(scope="module", params=["fast", "asgi"])
def mode(request: pytest.FixtureRequest) -> list[str]:
    return [] if request.param == "fast" else ["--no-fast-http"]


@pytest.fixture(scope="module")
def server(mode: list[str], model_path: Path):  # noqa: ANN201
    with ServerProcess([str(model_path), "--no-grpc", "--max-body-bytes", "4096",
                        "--max-batch-size", "8", *mode]) as srv:
        yield srv


def connect(server: ServerProcess) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.http_port), timeout=30)
    return sock


def read_response(sock: socket.socket, buffer: bytearray) -> tuple[int, dict, bytes]:
    """One response from the socket (status, headers, body); extra bytes stay in buffer."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection"
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines[1:])}
    size = int(fields.get("content-length", 0))
    while len(rest) < size:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection in a body"
        rest += chunk
    buffer[:] = rest[size:]
    return int(lines[0].split()[1]), fields, rest[:size]


def post(path: str, body: bytes, extra: str = "", version: str = "1.1") -> bytes:
    return (f"POST {path} HTTP/{version}\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
            f"{extra}\r\n").encode() + body


def closed(sock: socket.socket) -> bool:
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def predict_body(sample: list[float] = SAMPLE) -> bytes:
    return json.dumps({"data": sample}).encode()


@pytest.fixture(scope="module")
def expected_class(model_path: Path) -> int:
    return int(nf.InferenceSession(model_path).predict(np.array([SAMPLE], np.float32))
               .classes[0])


def test_pipelined_requests_are_answered_in_order(server: ServerProcess,
                                                  expected_class: int) -> None:
    with connect(server) as sock:
        sock.sendall(post("/predict", predict_body())
                     + b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n"
                     + post("/predict", b'{"data": [1]}')
                     + post("/v2/models/m/infer", json.dumps({"inputs": [{
                         "name": "input", "shape": [1, 4], "datatype": "FP32",
                         "data": SAMPLE}]}).encode()))
        buf = bytearray()
        answers = [read_response(sock, buf) for _ in range(4)]
    assert [status for status, _, _ in answers] == [200, 200, 400, 200]
    assert json.loads(answers[0][2])["predictions"][0]["class"] == expected_class
    assert json.loads(answers[1][2]) == {"live": True}
    assert "expected shape [4]" in json.loads(answers[2][2])["error"]
    assert json.loads(answers[3][2])["outputs"][0]["data"] == [expected_class]


def test_expect_100_continue(server: ServerProcess, expected_class: int) -> None:
    body = predict_body()
    with connect(server) as sock:
        sock.sendall(post("/predict", b"", "Expect: 100-continue\r\n").replace(
            b"Content-Length: 0", b"Content-Length: %d" % len(body)))
        buf = bytearray()
        while b"\r\n\r\n" not in buf:
            buf += sock.recv(4096)
        assert bytes(buf).startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        del buf[:25]
        sock.sendall(body)
        status, _, answer = read_response(sock, buf)
    assert status == 200 and json.loads(answer)["predictions"][0]["class"] == expected_class


def test_http10_and_connection_close(server: ServerProcess) -> None:
    for request in (post("/predict", predict_body(), version="1.0"),
                    post("/predict", predict_body(), "Connection: close\r\n")):
        with connect(server) as sock:
            sock.sendall(request)
            buf = bytearray()
            status, _, _ = read_response(sock, buf)
            assert status == 200 and closed(sock)


def test_chunked_body(server: ServerProcess, expected_class: int) -> None:
    body = predict_body()
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7])
                      for i in range(0, len(body), 7))
    with connect(server) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + chunks + b"0\r\n\r\n")
        status, _, answer = read_response(sock, bytearray())
    assert status == 200 and json.loads(answer)["predictions"][0]["class"] == expected_class


def test_bodies_over_the_limit_are_refused(server: ServerProcess) -> None:
    big = json.dumps({"data": [0.123456789] * 1000}).encode()
    with connect(server) as sock:  # declared too large: refused, and the connection closes
        sock.sendall(post("/predict", big))
        status, fields, answer = read_response(sock, bytearray())
        assert status == 413 and "at most 4096 bytes" in json.loads(answer)["error"]
        assert fields.get("connection") == "close" and closed(sock)
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(big[i:i + 500]), big[i:i + 500])
                      for i in range(0, len(big), 500))
    with connect(server) as sock:  # found too large while reading a chunked body
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + chunks + b"0\r\n\r\n")
        status, _, answer = read_response(sock, bytearray())
        assert status == 413


def test_a_client_that_leaves_is_not_computed(mode: list[str], model_path: Path) -> None:
    # a batch waits 2 s to fill: the client leaves long before its request would be computed
    with ServerProcess([str(model_path), "--no-grpc", "--max-queue-delay-ms", "2000",
                        *mode]) as server:
        assert_dropped(server)


def assert_dropped(server: ServerProcess) -> None:
    def cancelled() -> float:
        with connect(server) as sock:
            sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            _, _, text = read_response(sock, bytearray())
        line = next(x for x in text.decode().splitlines() if x.startswith(
            "nnforge_requests_total") and 'outcome="cancelled"' in x and 'model="m"' in x)
        return float(line.rsplit(" ", 1)[1])

    before = cancelled()
    sock = connect(server)
    sock.sendall(post("/predict", predict_body()))
    time.sleep(0.1)
    sock.close()
    deadline = time.monotonic() + 30
    while cancelled() == before:
        assert time.monotonic() < deadline, "the request of the departed client was computed"
        time.sleep(0.1)
    assert cancelled() == before + 1


def test_slow_and_silent_clients_are_cut_off(model_path: Path, tmp_path: Path) -> None:
    """A client that never sends, or sends its request a byte now and then (slowloris), must
    not hold a connection forever: silent ones close after keep_alive_s, slow ones get 408."""
    config = tmp_path / "serve.toml"
    config.write_text("keep_alive_s = 1\nread_timeout_s = 1\n")
    with ServerProcess([str(model_path), "--no-grpc", "--config", str(config)]) as srv:
        silent = connect(srv)
        slow_headers = connect(srv)
        slow_headers.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\n")
        slow_body = connect(srv)
        slow_body.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n{")
        for sock in (silent, slow_headers, slow_body):
            sock.settimeout(0.5)
        answers: dict[str, bytes] = {"silent": b"", "headers": b"", "body": b""}
        done: set[str] = set()
        deadline = time.monotonic() + 15  # bounded whatever the server does
        while len(done) < 3 and time.monotonic() < deadline:
            for name, sock in (("silent", silent), ("headers", slow_headers),
                               ("body", slow_body)):
                if name in done:
                    continue
                try:
                    if name != "silent":  # a byte or a header line now and then
                        sock.sendall(b"X-Drip: 1\r\n" if name == "headers" else b" ")
                    chunk = sock.recv(4096)
                except TimeoutError:
                    continue
                except (ConnectionResetError, BrokenPipeError):
                    chunk = b""
                answers[name] += chunk
                if not chunk:
                    done.add(name)
        for sock in (silent, slow_headers, slow_body):
            sock.close()
        assert done == {"silent", "headers", "body"}, f"still open: {set(answers) - done}"
        assert answers["silent"] == b""
        assert answers["headers"].startswith(b"HTTP/1.1 408 ")
        assert answers["body"].startswith(b"HTTP/1.1 408 ")
        with connect(srv) as sock:  # and the server goes on answering
            sock.sendall(post("/predict", predict_body()))
            assert read_response(sock, bytearray())[0] == 200


def test_a_large_body_is_decoded_off_the_event_loop(model_path: Path, monkeypatch) -> None:  # noqa: ANN001
    """A small request is answered while a large body is still being decoded (the decoder is
    held on an Event; on the event loop it would hold every other request with it)."""
    import asyncio  # noqa: PLC0415
    import threading  # noqa: PLC0415

    import httpx  # noqa: PLC0415

    from nnforge.serve import rest  # noqa: PLC0415
    from nnforge.serve.config import ServeConfig  # noqa: PLC0415
    from nnforge.serve.core import InferenceServer  # noqa: PLC0415
    from nnforge.serve.http_app import ServeApp  # noqa: PLC0415
    from nnforge.serve.logs import AccessLog  # noqa: PLC0415
    from nnforge.serve.metrics import ServerMetrics  # noqa: PLC0415
    from nnforge.serve.server import load_repository  # noqa: PLC0415

    release, order = threading.Event(), []
    real = rest.parse_json

    def held(body: bytes, *args: object) -> object:
        if len(body) > rest.INLINE_DECODE_BYTES:
            release.wait(10)  # bounded: on the old code the small request could never finish
            order.append("large decoded")
        return real(body, *args)

    monkeypatch.setattr(rest, "parse_json", held)
    large = json.dumps({"data": [SAMPLE] * 20_000}).encode()
    assert len(large) > rest.INLINE_DECODE_BYTES

    async def main() -> None:
        config = ServeConfig(path=str(model_path), grpc_port=None, max_body_bytes=len(large))
        metrics = ServerMetrics()
        repo = await load_repository(config, metrics)
        app = ServeApp(InferenceServer(config, repo, metrics, AccessLog(enabled=False)))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            big = asyncio.ensure_future(client.post("/predict", content=large))
            await asyncio.sleep(0.05)  # the large request is in the decoder now
            small = await asyncio.wait_for(client.post("/predict", content=predict_body()), 5)
            order.append("small answered")
            release.set()
            assert small.status_code == 200
            answer = await asyncio.wait_for(big, 30)
            assert answer.status_code == 200, answer.text
            assert len(answer.json()["predictions"]) == 20_000
        await repo.close()

    asyncio.run(main())
    assert order == ["small answered", "large decoded"]
