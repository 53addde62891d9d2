"""`nnforge predict` streams CSV input: the output is complete and memory does not grow with it."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn
from nnforge.cli.predict import predict_file

FEATURES = 16


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An untrained 16-feature, 3-class model (training is not what is tested here)."""
    d = tmp_path_factory.mktemp("cli_stream")
    nf.manual_seed(0)
    model = nn.Sequential(nn.Linear(FEATURES, 8), nn.ReLU(), nn.Linear(8, 3))
    nf.save(model, d / "m.nnf", task="multiclass", labels=["a", "b", "c"])
    return d


def write_rows(path: Path, n: int, seed: int) -> np.ndarray:
    """A CSV of n rows (1,000 random rows repeated: fast to write) with a header; its values."""
    block = np.random.default_rng(seed).normal(size=(1000, FEATURES)).astype(np.float32)
    text = "".join(",".join(f"{v:.4f}" for v in row) + "\n" for row in block.tolist())
    with open(path, "w") as fh:
        fh.write(",".join(f"f{i}" for i in range(FEATURES)) + "\n")
        fh.write(text * (n // 1000))
    written = np.loadtxt(io.StringIO(text), delimiter=",", dtype=np.float32)
    return np.tile(written, (n // 1000, 1))


def test_predict_streams_200k_csv_rows_in_small_batches(work: Path) -> None:
    n = 200_000
    x = write_rows(work / "big.csv", n, seed=1)
    r = subprocess.run([sys.executable, "-m", "nnforge", "predict", "m.nnf", "--input",
                        "big.csv", "--batch-size", "1000", "--output", "out.csv"], cwd=work,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    with open(work / "out.csv") as fh:
        header = fh.readline().strip()
        lines = fh.read().splitlines()
    assert header == "class,label,prob_a,prob_b,prob_c" and len(lines) == n
    picks = [0, 1, 999, n // 2 + 7, n - 1]
    want = nf.InferenceSession(work / "m.nnf").predict(x[picks])
    got = [int(lines[i].split(",")[0]) for i in picks]
    assert got == want.classes.tolist()
    assert lines[1] != lines[0] and lines[1000] == lines[0]  # the rows stay in order


def test_json_output_streamed_over_many_chunks_is_one_valid_document(work: Path) -> None:
    x = write_rows(work / "mid.csv", 5_000, seed=4)
    buf = io.StringIO()
    assert predict_file(nf.InferenceSession(work / "m.nnf"), str(work / "mid.csv"), buf, "json",
                        batch=700) == 5_000  # 8 chunks, the last one short
    preds = json.loads(buf.getvalue())["predictions"]
    want = nf.InferenceSession(work / "m.nnf").predict(x)
    assert [p["class"] for p in preds] == want.classes.tolist()
    assert [p["label"] for p in preds] == want.labels
    np.testing.assert_allclose([p["probabilities"] for p in preds], want.probabilities,
                               rtol=1e-5, atol=1e-6)


def _peak_bytes(session: nf.InferenceSession, path: Path, batch: int) -> tuple[int, int]:
    with open(os.devnull, "w") as out:
        tracemalloc.start()
        try:
            rows = predict_file(session, str(path), out, "csv", batch)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    return rows, peak


def test_streaming_memory_is_bounded_by_the_batch_not_the_file(work: Path) -> None:
    batch = 500
    write_rows(work / "small.csv", 10_000, seed=2)
    x = write_rows(work / "large.csv", 40_000, seed=3)
    session = nf.InferenceSession(work / "m.nnf")
    _peak_bytes(session, work / "small.csv", batch)  # compile the batch's plan before measuring
    rows_small, peak_small = _peak_bytes(session, work / "small.csv", batch)
    rows_large, peak_large = _peak_bytes(session, work / "large.csv", batch)
    assert (rows_small, rows_large) == (10_000, 40_000)
    # Held at once: a few batches of 500 rows (their text lines, arrays and output lines, about
    # 0.1 MB each), never the input: the large file is 4.8 MB of text and 2.6 MB as float32.
    assert peak_large < 1_000_000 < x.nbytes
    # Four times the rows, the same peak: nothing grows with the length of the input.
    assert peak_large <= 1.2 * peak_small + 64 * 1024
