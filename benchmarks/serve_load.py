"""Serving speed: nnforge serve against the blog's Flask server and a plain FastAPI server.

Each server runs in turn on 127.0.0.1 with the same model (an MLP 784-256-128-10 with random
weights) and the same one-sample request (784 floats, as in the blog: POST /predict with
{"data": [...]}). wrk drives it at each concurrency for a bounded time. BLAS uses one thread
in every server. Printed: requests/s, p50 and p99 latency, and the server's CPU time per
request (from /proc, the server process and its children).

Each server runs pinned to its own CPU list, written `name@cpus` (taskset syntax with '-' for
ranges); wrk runs on --wrk-cpus. The default set runs nnforge with one worker per CPU on both
CPUs (`--workers 2`, wrk sharing CPU 1 with a worker) and on CPU 0 alone, and Flask both on CPU 0
alone and on both CPUs (Flask's threads are slower on two CPUs: the GIL moves between them). The
ratio is best nnforge against best Flask, round by round.

    python benchmarks/serve_load.py                  # 10 s per point, c = 1, 16, 64, 3 rounds
    python benchmarks/serve_load.py --duration 5 --concurrency 64 --servers nnforge@0,flask@0

Needs wrk (Debian/Ubuntu: apt-get install wrk). Timings on shared machines are noisy:
compare servers within one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

import nnforge as nf
from nnforge import nn

FLASK_APP = '''
import logging, sys
import numpy as np
from flask import Flask, request
import nnforge as nf

session = nf.InferenceSession(sys.argv[1])
app = Flask(__name__)
logging.getLogger("werkzeug").setLevel(logging.ERROR)

@app.route("/predict", methods=["POST"])
def predict():
    data = request.json["data"]
    X = np.array(data).reshape(1, -1)
    y_pred = session.run(X)
    return {"class": int(np.argmax(y_pred))}

app.run(host="127.0.0.1", port=int(sys.argv[2]), threaded=True)
'''

FASTAPI_APP = '''
import sys
import numpy as np
import uvicorn
from fastapi import FastAPI, Request
import nnforge as nf

session = nf.InferenceSession(sys.argv[1])
app = FastAPI()

@app.post("/predict")
async def predict(request: Request):
    data = (await request.json())["data"]
    X = np.array(data, dtype=np.float32).reshape(1, -1)
    y_pred = session.run(X)
    return {"class": int(np.argmax(y_pred))}

uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="error", access_log=False)
'''

LUA = '''
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = io.open("{body}", "r"):read("*a")
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, body: bytes, timeout: float = 60) -> None:
    """Until POST url answers 200 (the server is up and its model loaded)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            req = urllib.request.Request(url, body, {"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} did not come up within {timeout:.0f} s")
        time.sleep(0.2)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, its threads and its live children (workers)."""
    parents: dict[int, tuple[int, int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited meanwhile
            continue
        parents[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    family = {pid}
    for _ in range(3):  # the server, its workers, and whatever they start
        family |= {p for p, (ppid, _) in parents.items() if ppid in family}
    total = sum(parents[p][1] for p in family if p in parents)
    return total / os.sysconf("SC_CLK_TCK")


def parse_wrk(text: str) -> dict[str, float]:
    """Requests/s, p50 and p99 in ms, request and error counts from wrk --latency output."""
    def ms(value: str, unit: str) -> float:
        return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]

    out = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
           "requests": int(re.search(r"(\d+) requests in", text).group(1))}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        out[f"p{pct}"] = ms(*m.groups())
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errors = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors += sum(int(g) for g in m.groups()) if m else 0
    out["errors"] = errors
    return out


def run_wrk(url: str, lua: Path, concurrency: int, duration: float, cpus: str) -> str:
    cmd = ["wrk", "-t1", f"-c{concurrency}", f"-d{duration:g}s", "--latency", "-s", str(lua),
           "--timeout", "10s", url]
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, check=True,
                          timeout=duration + 60).stdout


def cpu_count(cpus: str) -> int:
    """How many CPUs a taskset list names ('' = all of them)."""
    if not cpus:
        return os.cpu_count() or 1
    n = 0
    for part in re.split(r"[,+]", cpus):
        lo, _, hi = part.partition("-")
        n += int(hi or lo) - int(lo) + 1
    return n


def start(kind: str, model: Path, workdir: Path, cpus: str) -> tuple[subprocess.Popen, str]:
    """Launch one server; its process and predict URL."""
    port = free_port()
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1"}
    if kind == "nnforge":
        cmd = [sys.executable, "-m", "nnforge.serve", str(model), "--port", str(port),
               "--no-grpc", "--workers", str(cpu_count(cpus))]
    else:
        script = workdir / f"{kind}_app.py"
        script.write_text(FLASK_APP if kind == "flask" else FASTAPI_APP)
        cmd = [sys.executable, str(script), str(model), str(port)]
    if cpus:
        cmd = ["taskset", "-c", cpus, *cmd]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    return proc, f"http://127.0.0.1:{port}/predict"


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def server_pid(proc: subprocess.Popen) -> int:
    """The Python process (taskset execs into it, so it is the same pid)."""
    return proc.pid


def main() -> int:
    """Run the comparison and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="seconds per point")
    ap.add_argument("--warmup", type=float, default=2.0, help="seconds of unrecorded load")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds of all servers")
    ap.add_argument("--concurrency", default="1,16,64")
    ap.add_argument("--servers", default="nnforge@0-1,nnforge@0,flask@0,flask@0-1,fastapi@0",
                    help="comma-separated name@cpus (nnforge, flask, fastapi; cpus in taskset "
                         "syntax with '-' ranges and '+' between parts, empty = any; nnforge "
                         "runs one worker per CPU)")
    ap.add_argument("--wrk-cpus", default="1", help="taskset list for wrk ('' = any)")
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        print("serve_load.py needs wrk: apt-get install wrk", file=sys.stderr)
        return 1
    kinds = args.servers.split(",")
    if shutil.which("taskset") is None:
        args.wrk_cpus = ""
        kinds = [k.partition("@")[0] for k in kinds]
    levels = [int(c) for c in args.concurrency.split(",")]
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        nf.manual_seed(0)
        model_path = workdir / "mlp.nnf"
        nf.save(nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(),
                              nn.Linear(128, 10)), model_path, task="multiclass")
        sample = np.random.default_rng(0).random(784).round(4).tolist()
        body = json.dumps({"data": sample}).encode()
        (workdir / "body.json").write_bytes(body)
        lua = workdir / "post.lua"
        lua.write_text(LUA.format(body=workdir / "body.json"))
        # rounds alternate the servers, so that a slow phase of a shared machine does not
        # land on one server only
        for _ in range(args.rounds):
            for kind in kinds:
                name, _, cpus = kind.partition("@")
                proc, url = start(name, model_path, workdir, cpus.replace("+", ","))
                try:
                    wait_ready(url, body)
                    run_wrk(url, lua, max(levels), args.warmup, args.wrk_cpus)
                    for c in levels:
                        before = cpu_seconds(server_pid(proc))
                        result = parse_wrk(run_wrk(url, lua, c, args.duration, args.wrk_cpus))
                        used = cpu_seconds(server_pid(proc)) - before
                        result["cpu_ms"] = used / max(result["requests"], 1) * 1000
                        runs.setdefault((kind, c), []).append(result)
                        print(f"  {kind:14s} c={c:<3d} {result['rps']:8.0f} req/s",
                              file=sys.stderr)
                finally:
                    stop(proc)
    print(f"\nserving one 784-float sample per request, wrk {args.duration:g} s per point, "
          f"{args.rounds} alternating rounds (medians), server@CPUs as named, wrk on CPUs "
          f"'{args.wrk_cpus}', nnforge with one worker per CPU")
    print(f"{'server':14s} {'conc':>4s} {'req/s':>9s} {'p50 ms':>8s} {'p99 ms':>8s} "
          f"{'CPU ms/req':>10s} {'errors':>6s}")
    for (kind, c), results in runs.items():
        med = {k: float(np.median([r[k] for r in results])) for k in ("rps", "p50", "p99",
                                                                      "cpu_ms")}
        errors = sum(int(r["errors"]) for r in results)
        print(f"{kind:14s} {c:4d} {med['rps']:9.0f} {med['p50']:8.2f} {med['p99']:8.2f} "
              f"{med['cpu_ms']:10.3f} {errors:6d}")
    for name in ("nnforge", "fastapi"):
        for c in levels:
            ratios = [best(runs, name, c, i) / best(runs, "flask", c, i)
                      for i in range(args.rounds)
                      if best(runs, "flask", c, i) and best(runs, name, c, i)]
            if ratios:
                print(f"best {name} / best flask at c={c}: {np.median(ratios):.1f}x (rounds: "
                      f"{' '.join(f'{r:.1f}' for r in ratios)})")
    return 0


def best(runs: dict[tuple[str, int], list[dict[str, float]]], name: str, c: int,
         round_index: int) -> float:
    """The highest requests/s of any CPU layout of one server in one round (0 if none)."""
    return max((r[round_index]["rps"] for (kind, level), r in runs.items()
                if kind.partition("@")[0] == name and level == c and len(r) > round_index),
               default=0.0)


if __name__ == "__main__":
    sys.exit(main())
