"""`nnforge serve --workers N`: several processes on one port that behave as one server.

Connections are spread over the workers by the kernel, so the checks that every worker took
an admin action open a fresh connection per request (20 of them: the chance that all land on
one of two workers is 2**-19)."""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

import nnforge as nf
from nnforge import nn
from nnforge.errors import ConfigError
from nnforge.serve.cluster import Cluster
from nnforge.serve.config import from_mapping
from nnforge.serve.grpc_service import MESSAGES, METHODS, SERVICE
from nnforge.serve.logs import PIPE_BUF, AccessLog
from nnforge.serve.metrics import ServerMetrics
from nnforge.serve.testing import ServerProcess, post_many

ADMIN = "operator-key"
FRESH = 20  # requests on fresh connections when every worker must be reached


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with one 16-feature classifier, version 1."""
    nf.manual_seed(3)
    model = nn.Sequential(nn.Linear(16, 12), nn.ReLU(), nn.Linear(12, 5))
    (tmp_path / "repo" / "clf" / "1").mkdir(parents=True)
    nf.save(model, tmp_path / "repo" / "clf" / "1" / "model.nnf", task="multiclass")
    return tmp_path / "repo"


def _request(port: int, method: str, path: str, body: object = None,
             key: str | None = None) -> tuple[int, dict]:
    """One request on its own connection (so that any worker may get it)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        headers = {"Content-Type": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        conn.request(method, path, None if body is None else json.dumps(body), headers)
        resp = conn.getresponse()
        raw = resp.read()
        return resp.status, json.loads(raw) if raw.startswith(b"{") else {"text": raw.decode()}
    finally:
        conn.close()


def _fresh_statuses(port: int, rows: np.ndarray) -> list[int]:
    return [_request(port, "POST", "/v1/models/clf:predict", {"data": rows[i % len(rows)]
                                                              .tolist()})[0]
            for i in range(FRESH)]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes; its parent (not us) reaps it
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _wait_gone(pids: list[int], seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not any(_alive(p) for p in pids):
            return True
        time.sleep(0.2)
    return False


def _grpc(channel: grpc.Channel, rpc: str) -> grpc.UnaryUnaryMultiCallable:
    request, response = METHODS[rpc]
    return channel.unary_unary(f"/{SERVICE}/{rpc}",
                               request_serializer=MESSAGES[request].SerializeToString,
                               response_deserializer=MESSAGES[response].FromString)


def _worker_pids(port: int) -> set[str]:
    text = _request(port, "GET", "/metrics")[1]["text"]
    return set(re.findall(r'nnforge_worker_cpu_seconds_total\{pid="(\d+)"\}', text))


def test_workers_answer_and_count_as_one_server(repo: Path, rng: np.random.Generator) -> None:
    rows = rng.standard_normal((200, 16)).astype(np.float32)
    expected = nf.InferenceSession(repo / "clf" / "1" / "model.nnf").predict(rows).classes
    with ServerProcess([str(repo), "--workers", "2"]) as srv:
        pids = srv.info["pids"]
        assert srv.info["workers"] == 2 and len(set(pids)) == 2
        bodies = [json.dumps({"data": r.tolist()}).encode() for r in rows]
        answers = asyncio.run(post_many(srv.url, "/v1/models/clf:predict", bodies, 16))
        assert [s for s, _ in answers] == [200] * len(rows)
        got = [json.loads(b)["predictions"][0]["class"] for _, b in answers]
        assert got == [int(c) for c in expected]
        # the sums over both workers: every request counted once
        text = _request(srv.http_port, "GET", "/metrics")[1]["text"]
        assert 'nnforge_requests_total{model="clf",outcome="success",version="1"} 200.0' in text
        assert "nnforge_workers 2.0" in text
        assert _worker_pids(srv.http_port) == {str(p) for p in pids}
        stats = _request(srv.http_port, "GET", "/v2/models/clf/stats")[1]["model_stats"][0]
        assert stats["inference_count"] == 200 and stats["inference_stats"]["success"]["count"] \
            == 200
        # both workers answered some (their request ids start with their pid in hex); access
        # records are flushed within 0.2 s and read by a thread: wait for all 200
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            records = [json.loads(line) for line in list(srv.stderr_lines)
                       if '"request_id"' in line]
            if len(records) >= len(rows):
                break
            time.sleep(0.05)
        assert {r["request_id"].split("-")[0] for r in records} == {f"{p:x}" for p in pids}
        # gRPC shares its port the same way; its statistics are the sums too
        req = MESSAGES["ModelInferRequest"](model_name="clf")
        req.inputs.add(name="input", datatype="FP32", shape=[1, 16])
        req.raw_input_contents.append(rows[:1].tobytes())
        for _ in range(FRESH):  # a channel each: new connections, spread over the workers
            with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as channel:
                reply = _grpc(channel, "ModelInfer")(req, timeout=30)
            assert np.frombuffer(reply.raw_output_contents[0], np.int64)[0] == expected[0]
        with grpc.insecure_channel(f"127.0.0.1:{srv.grpc_port}") as channel:
            docs = _grpc(channel, "ModelStatistics")(
                MESSAGES["ModelStatisticsRequest"](name="clf"), timeout=30)
        assert docs.model_stats[0].inference_count == 200 + FRESH
        assert srv.stop() == 0
    assert _wait_gone(pids)


def test_admin_actions_reach_every_worker_and_a_restarted_one(
        repo: Path, rng: np.random.Generator) -> None:
    rows = rng.standard_normal((4, 16)).astype(np.float32)
    with ServerProcess([str(repo), "--workers", "2", "--no-grpc"],
                       env={"NNFORGE_ADMIN_KEY": ADMIN}) as srv:
        port = srv.http_port
        status, _ = _request(port, "POST", "/v2/repository/models/clf/unload", {}, ADMIN)
        assert status == 200
        assert _fresh_statuses(port, rows) == [404] * FRESH
        # a worker that dies is replaced, and the new one replays the unload
        victim = srv.info["pids"][0]
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                pids = _worker_pids(port)
            except ConnectionResetError:  # queued on the killed worker's socket as it closed
                pids = set()
            if len(pids) == 2 and str(victim) not in pids:
                break
            time.sleep(0.3)
        else:
            pytest.fail("the killed worker was not replaced")
        assert _fresh_statuses(port, rows) == [404] * FRESH
        status, _ = _request(port, "POST", "/v2/repository/models/clf/load", {}, ADMIN)
        assert status == 200
        assert _fresh_statuses(port, rows) == [200] * FRESH
        index = _request(port, "POST", "/v2/repository/index", {}, ADMIN)
        assert index[0] == 200
        assert "exited with code" in "".join(srv.stderr_lines)


def test_workers_stop_when_the_supervisor_is_killed(repo: Path) -> None:
    srv = ServerProcess([str(repo), "--workers", "2", "--no-grpc"]).start()
    try:
        pids = srv.info["pids"]
        os.kill(srv.pid, signal.SIGKILL)
        assert _wait_gone(pids), "workers outlived their supervisor"
    finally:
        srv.stop()


def _workers_of(pid: int) -> list[int]:
    """The worker processes a supervisor spawned (not multiprocessing's resource tracker)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, ValueError):
            continue
        if ppid == pid and b"spawn_main" in cmdline:
            found.append(int(stat.parent.name))
    return found


def test_a_crash_loop_stops_the_server(repo: Path) -> None:
    srv = ServerProcess([str(repo), "--workers", "2", "--no-grpc"]).start()
    try:
        killed: set[int] = set()
        deadline = time.monotonic() + 90
        while srv.proc.poll() is None and time.monotonic() < deadline:
            for pid in set(_workers_of(srv.pid)) - killed:
                killed.add(pid)
                os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        assert srv.proc.wait(30) == 1
        message = "workers exited 6 times within 60 s; stopping the server"
        deadline = time.monotonic() + 10  # stderr is read by a thread: let it catch up
        while not any(message in line for line in srv.stderr_lines) and \
                time.monotonic() < deadline:
            time.sleep(0.05)
        assert message in srv.stderr_lines[-1]
        assert len(killed) >= 6
    finally:
        srv.stop()


def test_startup_failures_are_one_line_and_leave_nothing_running(tmp_path: Path,
                                                                 repo: Path) -> None:
    def serve(*args: str, workers: str = "2") -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "nnforge.serve", *args, "--workers",
                               workers], capture_output=True, text=True, timeout=120)

    (tmp_path / "broken.nnf").write_bytes(b"PK not a model")
    r = serve(str(tmp_path / "broken.nnf"), "--port", "0", "--no-grpc")
    assert r.returncode == 1  # one line: no worker's load error nor 'stopped' before it
    assert r.stderr.startswith("nnforge: error: no model could be loaded"), r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        r = serve(str(repo), "--port", str(busy.getsockname()[1]), "--no-grpc")
    assert r.returncode == 1 and "cannot listen on 127.0.0.1" in r.stderr.splitlines()[-1]
    r = serve(str(repo), "--port", "0", "--no-grpc", workers="65")  # a usage error: exit 2
    assert r.returncode == 2 and "expected workers between 1 and 64" in r.stderr
    # SO_REUSEPORT must not let a second server share the port of a running one
    with ServerProcess([str(repo), "--workers", "2"]) as running:
        for taken in (["--port", str(running.http_port), "--no-grpc"],
                      ["--port", "0", "--grpc-port", str(running.grpc_port)]):
            r = serve(str(repo), *taken)
            assert r.returncode == 1 and "cannot listen on 127.0.0.1" in r.stderr


# -- the pieces, in one process ------------------------------------------------------------------
def test_merged_metrics_are_the_sums_of_the_workers() -> None:
    a, b = ServerMetrics(), ServerMetrics()
    for m, n in ((a, 3), (b, 5)):
        mm = m.model("clf", "1")
        mm.outcomes["success"] += n
        mm.total.observe(0.001 * n)
        mm.record_batch(n, 0.002, 1000 + n)
        mm.inflight = 1
    b.model("clf", "2").outcomes["timeout"] += 1
    b.load_failures["clf"] = 2
    merged = ServerMetrics.merged([a.snapshot(), json.loads(json.dumps(b.snapshot()))])
    m1 = merged.model("clf", "1")
    assert m1.outcomes["success"] == 8 and m1.inflight == 2
    assert m1.total.sum == pytest.approx(0.008) and sum(m1.total.counts) == 2
    assert m1.by_batch == {3: [1, 0.002], 5: [1, 0.002]} and m1.last_inference_ms == 1005
    assert merged.model("clf", "2").outcomes["timeout"] == 1
    assert merged.load_failures == {"clf": 2}  # the most any worker saw: each tries each load
    text = merged.render().decode()
    assert "nnforge_workers 2.0" in text and text.count("nnforge_worker_cpu_seconds_total{") == 2


def test_access_log_writes_whole_lines_at_most_pipe_buf_at_once() -> None:
    writes: list[bytes] = []

    class Stream:
        def write(self, data: bytes) -> None:
            writes.append(bytes(data))

        def flush(self) -> None:
            pass

    log = AccessLog(Stream(), atomic_lines=True)  # type: ignore[arg-type]
    for i in range(300):
        log.write({"request_id": str(i), "pad": "x" * (i % 90)})
    log.write({"request_id": "long", "pad": "y" * 6000})
    log.flush()
    assert len(writes) > 1
    assert all(w.endswith(b"\n") and (len(w) <= PIPE_BUF or w.count(b"\n") == 1)
               for w in writes)
    lines = b"".join(writes).splitlines()
    assert [json.loads(x)["request_id"] for x in lines] == [*map(str, range(300)), "long"]


def test_cluster_history_keeps_each_models_last_action_in_order(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 0)
    assert cluster.history() == []
    for op, model in (("unload", "a"), ("unload", "b"), ("load", "a"), ("unload", "c")):
        cluster.record(op, model)
    assert cluster.history() == [("unload", "b"), ("load", "a"), ("unload", "c")]


def test_workers_setting_from_the_config_file_is_checked() -> None:
    assert from_mapping({"workers": 3}).validate().workers == 3
    for bad in (0, 65, "2", 1.5):
        with pytest.raises(ConfigError, match="workers"):
            from_mapping({"workers": bad}).validate()
