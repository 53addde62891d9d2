"""Serve pieces in process: batcher, tensors, V2 codec, models per task, config, metrics, proto."""

from __future__ import annotations

import argparse
import asyncio
import gzip
import math
import threading
import zlib
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import orjson
import pytest
from tritonclient.grpc import service_pb2  # registers inference.* in protobuf's default pool
from tritonclient.http import InferResult

import nnforge as nf
from nnforge import nn
from nnforge.errors import ConfigError, ShapeError
from nnforge.serve import cli as serve_cli
from nnforge.serve.batcher import BatchingConfig, DynamicBatcher
from nnforge.serve.config import ServeConfig, apply_environment, from_mapping, read_file
from nnforge.serve.errors import (
    ClientGoneError,
    InvalidInputError,
    QueueFullError,
    RequestTimeoutError,
    UnavailableError,
)
from nnforge.serve.grpc_service import MESSAGES, decode_infer, message
from nnforge.serve.metrics import UNKNOWN, ServerMetrics
from nnforge.serve.model import ServedModel, batch_buckets
from nnforge.serve.proto import _descriptor, compile_proto
from nnforge.serve.repository import VersionPolicy
from nnforge.serve.rest import _int_header, decompress, match_inference
from nnforge.serve.tensors import TensorSpec, array_from_json, to_model_rows
from nnforge.serve.v2 import Requested, decode_request, encode_response


def run(coro):  # noqa: ANN001, ANN201 - a tiny helper for async tests
    return asyncio.run(coro)


# -- the dynamic batcher -----------------------------------------------------------------------
def doubling(calls: list[int]):  # noqa: ANN201
    def compute(x: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(len(x))
        return {"y": x * 2}
    return compute


def make_batcher(compute, threaded: bool = False, **kw) -> DynamicBatcher:  # noqa: ANN001
    return DynamicBatcher(compute, BatchingConfig(**kw), ServerMetrics().model("m", "1"),
                          threaded)


def test_concurrent_requests_share_one_forward_pass() -> None:
    async def main() -> None:
        calls: list[int] = []
        b = make_batcher(doubling(calls), max_batch_size=64)
        xs = [np.full((1, 3), i, np.float32) for i in range(10)]
        outs = await asyncio.gather(*[b.infer(x) for x in xs])
        assert calls == [10]
        for x, out in zip(xs, outs):
            np.testing.assert_array_equal(out["y"], x * 2)
        assert b.metrics.batch.counts[4] == 1  # one batch, in the bucket le=16
        await b.close()
    run(main())


def test_batches_are_cut_at_max_batch_size_without_joining_requests_beyond_it() -> None:
    async def main() -> None:
        calls: list[int] = []
        b = make_batcher(doubling(calls), max_batch_size=4)
        xs = [np.full((n, 2), n, np.float32) for n in (1, 2, 2, 3, 1, 6)]
        outs = await asyncio.gather(*[b.infer(x) for x in xs])
        assert calls == [3, 2, 4, 4, 2]  # a request above the limit runs alone, in passes
        for x, out in zip(xs, outs):
            np.testing.assert_array_equal(out["y"], x * 2)
        await b.close()
    run(main())


def test_full_queue_refuses_at_once_and_the_queued_requests_still_finish() -> None:
    async def main() -> None:
        calls: list[int] = []
        # a long queue delay holds the first requests in the queue
        b = make_batcher(doubling(calls), max_batch_size=100, max_queue_delay_ms=60000,
                         max_queue_size=3)
        waiting = [asyncio.ensure_future(b.infer(np.ones((1, 2), np.float32)))
                   for _ in range(3)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFullError, match="admits at most 3"):
            await b.infer(np.ones((1, 2), np.float32))
        assert not any(t.done() for t in waiting) and calls == []
        await b.close()  # closing ends the wait: the queued requests are computed
        assert [len(t.result()["y"]) for t in waiting] == [1, 1, 1]
        with pytest.raises(UnavailableError):
            await b.infer(np.ones((1, 2), np.float32))
    run(main())


def test_timeouts_gone_clients_and_cancelled_requests_are_not_computed() -> None:
    release = threading.Event()
    calls: list[int] = []

    def slow(x: np.ndarray) -> dict[str, np.ndarray]:
        calls.append(len(x))
        release.wait(10)
        return {"y": x}

    async def main() -> None:
        b = make_batcher(slow, threaded=True, max_batch_size=8, timeout_ms=50)
        first = asyncio.ensure_future(b.infer(np.ones((1, 1), np.float32)))
        await asyncio.sleep(0.01)  # the first batch is now blocked in compute
        late = asyncio.ensure_future(b.infer(np.ones((2, 1), np.float32)))
        with pytest.raises(RequestTimeoutError):
            await late  # waited in the queue past its timeout
        b.config.timeout_ms = 0  # the next ones have no timeout
        gone = asyncio.ensure_future(b.infer(np.ones((3, 1), np.float32), gone=lambda: True))
        cancelled = asyncio.ensure_future(b.infer(np.ones((4, 1), np.float32)))
        kept = asyncio.ensure_future(b.infer(np.ones((5, 1), np.float32)))
        await asyncio.sleep(0)
        cancelled.cancel()
        release.set()
        with pytest.raises(RequestTimeoutError):
            await first  # its compute outlived the timeout too
        with pytest.raises(ClientGoneError):
            await gone
        assert (await kept)["y"].shape == (5, 1)
        await b.close()

    run(main())
    assert calls == [1, 5]  # the timed-out, gone and cancelled requests never ran


def test_a_failing_batch_is_retried_request_by_request() -> None:
    def picky(x: np.ndarray) -> dict[str, np.ndarray]:
        if (x < 0).any():
            raise ShapeError("expected non-negative rows, found a negative one")
        return {"y": x + 1}

    async def main() -> None:
        b = make_batcher(picky)
        good = [np.ones((1, 2), np.float32) * i for i in range(3)]
        bad = -np.ones((1, 2), np.float32)
        outs = await asyncio.gather(*[b.infer(x) for x in (*good, bad)],
                                    return_exceptions=True)
        for x, out in zip(good, outs[:3]):
            np.testing.assert_array_equal(out["y"], x + 1)
        assert isinstance(outs[3], InvalidInputError) and "negative" in str(outs[3])
        await b.close()
    run(main())


def test_queue_delay_waits_for_the_batch_to_fill() -> None:
    async def main() -> None:
        calls: list[int] = []
        b = make_batcher(doubling(calls), max_batch_size=4, max_queue_delay_ms=60000)
        first = [asyncio.ensure_future(b.infer(np.ones((1, 1), np.float32))) for _ in range(3)]
        await asyncio.sleep(0.01)
        assert calls == []  # 3 < 4 samples: still waiting
        await b.infer(np.ones((1, 1), np.float32))  # the 4th fills the batch
        await asyncio.gather(*first)
        assert calls == [4]
        await b.close()
    run(main())


def test_a_request_beyond_max_batch_size_is_computed_off_the_event_loop() -> None:
    # its passes, one per max_batch_size rows, would stall the loop (and the health probes)
    async def main() -> list[tuple[int, bool]]:
        calls: list[tuple[int, bool]] = []

        def compute(x: np.ndarray) -> dict[str, np.ndarray]:
            calls.append((len(x), threading.current_thread() is threading.main_thread()))
            return {"y": x * 2}

        b = make_batcher(compute, max_batch_size=4)  # an inline batcher
        assert not b.threaded
        assert (await b.infer(np.ones((4, 1), np.float32)))["y"].shape == (4, 1)
        x = np.arange(9, dtype=np.float32)[:, None]
        np.testing.assert_array_equal((await b.infer(x))["y"], x * 2)
        # the batch-size histogram counts passes of at most max_batch_size (it counted one
        # batch of 9 rows, what /v2/models/m/config says never happens)
        assert b.metrics.batch.counts[:4] == [1, 0, 3, 0] and b.metrics.batch.sum == 13
        assert sorted(b.metrics.by_batch) == [1, 4]
        await b.close()
        return calls
    assert run(main()) == [(4, True), (4, False), (4, False), (1, False)]


# -- tensors on the wire ------------------------------------------------------------------------
SPEC = TensorSpec("input", "FP32", (3,))


@pytest.mark.parametrize("data, shape", [
    ([1, 2, 3], (1, 3)), ([[1, 2, 3]], (1, 3)), ([[1, 2, 3], [4, 5, 6.5]], (2, 3))])
def test_rows_from_one_sample_or_many(data: list, shape: tuple) -> None:
    rows = to_model_rows(array_from_json(data, "'data'"), SPEC, "'data'")
    assert rows.shape == shape and rows.dtype == np.float32


@pytest.mark.parametrize("data, message", [
    ("abc", "must be a list"), ([1, "2", 3], "must hold numbers, found strings"),
    ([1, None, 3], "mixed or null"), ([[1, 2, 3], [4, 5]], "rectangular"),
    ([1, 2], r"expected shape \[3\] \(one sample\) or \[n, 3\]"), ([], "expected shape"),
    ([[1, 2, 3], [1, 2, "x"]], "found strings"), ([1, 2, 1e39], "finite numbers"),
    ([[1, 2, 3]] * 0, "expected shape")])
@pytest.mark.parametrize("float32", [False, True])
def test_bad_samples_name_what_was_expected(data: object, message: str, float32: bool) -> None:
    with pytest.raises(InvalidInputError, match=message):
        to_model_rows(array_from_json(data, "'data'", float32), SPEC, "'data'")


@pytest.mark.parametrize("float32", [False, True])
def test_both_routes_from_json_give_the_same_rows(float32: bool) -> None:
    for data in ([1, 2.5, 3], [[1, 2, 3], [4, 5, 6]], [[0, 0, 1]], [2**40, -1e-3, 0]):
        rows = to_model_rows(array_from_json(data, "x", float32), SPEC, "x")
        expected = np.array(data, np.float64).reshape(-1, 3).astype(np.float32)
        np.testing.assert_array_equal(rows, expected)
        assert rows.dtype == np.float32


def test_image_samples_may_come_flat() -> None:
    spec = TensorSpec("input", "FP32", (2, 2))
    assert to_model_rows(np.arange(4.0), spec, "x").shape == (1, 2, 2)
    assert to_model_rows(np.arange(8.0).reshape(2, 4), spec, "x").shape == (2, 2, 2)
    assert to_model_rows(np.arange(8.0).reshape(2, 2, 2), spec, "x").shape == (2, 2, 2)


# -- a model per task ---------------------------------------------------------------------------
def save_model(path: Path, task: str | None, out: int, labels: list[str] | None = None,
               seed: int = 0, n_in: int = 3) -> Path:
    nf.manual_seed(seed)
    model = nn.Sequential(nn.Linear(n_in, 8), nn.ReLU(), nn.Linear(8, out))
    nf.save(model, path, task=task, labels=labels)
    return path


@pytest.mark.parametrize("task, out, labels", [
    ("multiclass", 4, ["a", "b", "c", "d"]), ("multiclass", 4, None),
    ("multiclass", 3, [10, 20, 30]), ("binary", 1, ["no", "yes"]),
    ("binary", 2, None), ("multilabel", 3, ["x", "y", "z"]), ("regression", 1, None),
    ("regression", 2, None), (None, 2, None)])
def test_served_answers_equal_predict(tmp_path: Path, rng: np.random.Generator, task: str | None,
                                      out: int, labels: list | None) -> None:
    path = save_model(tmp_path / "m.nnf", task, out, labels)
    model = ServedModel.load("m", "1", path, max_batch_size=8)
    model.warm_up()
    x = rng.standard_normal((5, 3)).astype(np.float32)
    pred = nf.InferenceSession(path).predict(x)
    result = model.compute(x)
    rows = orjson.loads(orjson.dumps(model.rows(result), option=orjson.OPT_SERIALIZE_NUMPY))
    assert len(rows) == 5
    if task in ("multiclass", "binary", "multilabel"):
        np.testing.assert_array_equal(result["classes"], pred.classes)
        np.testing.assert_allclose(result["probabilities"], pred.probabilities, rtol=1e-6)
        key = "probability" if task == "binary" else "probabilities"
        np.testing.assert_allclose(np.array([r[key] for r in rows], np.float32),
                                   pred.probabilities, rtol=1e-6)
        key = "classes" if task == "multilabel" else "class"
        assert [r[key] for r in rows] == pred.classes.tolist()
        if labels is not None:
            key = "labels" if task == "multilabel" else "label"
            assert [r[key] for r in rows] == pred.labels
    else:
        np.testing.assert_allclose(result["values"], pred.values, rtol=1e-6)
        got = [r["value"] for r in rows] if out == 1 else [r["values"] for r in rows]
        np.testing.assert_allclose(np.array(got, np.float32), pred.values, rtol=1e-6)
    names = [s.name for s in model.outputs]
    assert ("labels" in names) == (labels is not None and task != "multilabel")


def test_outputs_that_overflow_are_refused_for_their_request_alone(tmp_path: Path,
                                                                    rng: np.random.Generator
                                                                    ) -> None:
    # 3e38 inputs overflow the logits: softmax gave nan, served as JSON null and class 0
    path = save_model(tmp_path / "m.nnf", "multiclass", 4)
    model = ServedModel.load("m", "1", path, max_batch_size=8)
    good = rng.standard_normal((2, 3)).astype(np.float32)
    huge = np.full((2, 3), 3e38, np.float32)
    with pytest.raises(InvalidInputError, match="not finite numbers for sample 0"):
        model.compute(huge)

    async def main() -> list:
        b = make_batcher(model.compute, max_batch_size=8)
        outs = await asyncio.gather(b.infer(good), b.infer(huge), b.infer(good[:1]),
                                    return_exceptions=True)
        await b.close()
        return outs

    first, bad, last = run(main())
    expected = nf.InferenceSession(path).predict(good).probabilities
    np.testing.assert_allclose(first["probabilities"], expected, rtol=1e-5)
    np.testing.assert_allclose(last["probabilities"], expected[:1], rtol=1e-5)
    assert isinstance(bad, InvalidInputError) and "too large" in str(bad)


def test_padding_to_bucket_sizes_keeps_the_answers(tmp_path: Path,
                                                   rng: np.random.Generator) -> None:
    path = save_model(tmp_path / "m.nnf", "multiclass", 4)
    model = ServedModel.load("m", "1", path, max_batch_size=64)
    session = nf.InferenceSession(path)
    for n in (1, 5, 13, 64, 70):
        x = rng.standard_normal((n, 3)).astype(np.float32)
        got = model.compute(x)
        assert len(got["classes"]) == n
        np.testing.assert_allclose(got["probabilities"], session.predict(x).probabilities,
                                   rtol=1e-5, atol=1e-7)


def test_requests_beyond_max_batch_size_run_in_passes_of_max_batch_size(
        tmp_path: Path, rng: np.random.Generator) -> None:
    path = save_model(tmp_path / "m.nnf", "multiclass", 4)
    model = ServedModel.load("m", "1", path, max_batch_size=8)
    shapes: list[tuple] = []
    run_one = model.session.run
    model.session.run = lambda x: (shapes.append(x.shape), run_one(x))[1]  # type: ignore
    x = rng.standard_normal((21, 3)).astype(np.float32)
    got = model.compute(x)
    assert shapes == [(8, 3)] * 3  # not one pass of 21 rows (memory, a plan per size)
    np.testing.assert_allclose(got["probabilities"],
                               nf.InferenceSession(path).predict(x).probabilities, rtol=1e-5)


def test_bucket_sizes() -> None:
    assert batch_buckets(1) == [1]
    assert batch_buckets(64) == [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64]
    assert batch_buckets(100) == [1, 2, 4, 8, 16, 32, 64, 100]
    assert all(len(batch_buckets(n)) <= 14 for n in range(1, 5000, 37))


# -- V2 REST codec ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def v2_model(tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    path = save_model(tmp_path_factory.mktemp("v2") / "m.nnf", "multiclass", 4,
                      ["a", "b", "c", "d"])
    return ServedModel.load("m", "1", path, max_batch_size=8)


def v2_body(x: np.ndarray, binary: bool, outputs: list | None = None, **extra: object
            ) -> tuple[bytes, int | None]:
    tensor: dict = {"name": "input", "shape": list(x.shape), "datatype": "FP32"}
    if binary:
        raw = x.astype("<f4").tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
    else:
        tensor["data"] = x.ravel().tolist()
    doc = {"inputs": [tensor], **extra}
    if outputs is not None:
        doc["outputs"] = outputs
    header = orjson.dumps(doc)
    return (header + raw, len(header)) if binary else (header, None)


@pytest.mark.parametrize("binary_in", [False, True])
@pytest.mark.parametrize("binary_out", [False, True])
def test_v2_round_trip_through_the_tritonclient_parser(v2_model: ServedModel,
                                                       rng: np.random.Generator,
                                                       binary_in: bool,
                                                       binary_out: bool) -> None:
    x = rng.standard_normal((3, 3)).astype(np.float32)
    body, hlen = v2_body(x, binary_in, id="req-7",
                         outputs=[{"name": n, "parameters": {"binary_data": binary_out}}
                                  for n in ("classes", "probabilities", "labels")])
    rows, requested, rid = decode_request(body, hlen, v2_model)
    np.testing.assert_array_equal(rows, x)
    assert rid == "req-7" and requested.names[0] == ("classes", binary_out)
    out = v2_model.compute(rows)
    payload, header = encode_response(v2_model, out, requested, rid)
    assert (header is not None) == binary_out
    result = InferResult.from_response_body(payload, header_length=header)
    np.testing.assert_array_equal(result.as_numpy("classes"), out["classes"])
    np.testing.assert_array_equal(result.as_numpy("probabilities"), out["probabilities"])
    labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("labels")]
    assert labels == [["a", "b", "c", "d"][c] for c in out["classes"]]
    assert result.get_response()["id"] == "req-7"


def test_v2_nested_data_and_all_outputs_by_default(v2_model: ServedModel) -> None:
    doc = {"inputs": [{"name": "input", "shape": [2, 3], "datatype": "INT32",
                       "data": [[1, 2, 3], [4, 5, 6]]}], "parameters": {"binary_data_output": True}}
    rows, requested, _ = decode_request(orjson.dumps(doc), None, v2_model)
    assert rows.dtype == np.float32 and rows.tolist() == [[1, 2, 3], [4, 5, 6]]
    assert requested == Requested([], True)


@pytest.mark.parametrize("doc, message", [
    ({"inputs": []}, "non-empty list"),
    ({"inputs": [{"name": "x", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}]},
     "has one input, 'input'"),
    ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP33", "data": [1, 2, 3]}]},
     "expected 'datatype' among"),
    ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "BYTES", "data": ["a"] * 3}]},
     "takes numbers"),
    ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "INT8", "data": [1, 2, 300]}]},
     r"values must lie in \[-128, 127\]"),
    ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "INT32", "data": [1, 2, 3.5]}]},
     "expects integers, found floats"),
    ({"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}]},
     "needs 4 values, found 3"),
    ({"inputs": [{"name": "input", "shape": [4], "datatype": "FP32", "data": [1, 2, 3, 4]}]},
     r"expected shape \[n, 3\]"),
    ({"inputs": [{"name": "input", "shape": [1, -3], "datatype": "FP32", "data": [1]}]},
     "non-negative integers"),
    # more dimensions than NumPy holds: the reshape used to fail with a 500
    ({"inputs": [{"name": "input", "shape": [1] * 65, "datatype": "FP32", "data": [1]}]},
     "at most 32 non-negative integers"),
    ({"inputs": [{"name": "input", "shape": [1] * 33, "datatype": "FP32",
                  "parameters": {"binary_data_size": 4}}]}, "at most 32"),
    ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32"}]}, "expected 'data'"),
    ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}],
      "outputs": [{"name": "logits"}]}, "expected an output among"),
    ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}],
      "id": 5}, "'id' must be a string"),
    ([1, 2], "must be a JSON object"),
    ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP16",
                  "data": [1, 2, 70000]}]}, r"values must lie within \[-65504, 65504\] for FP16"),
    ({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3],
                  "parameters": {"binary_data_size": 12}}]}, "found both"),
])
def test_v2_bad_requests_name_the_problem(v2_model: ServedModel, doc: object,
                                          message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        decode_request(orjson.dumps(doc), None, v2_model)


def test_v2_null_counts_as_a_left_out_optional_field(v2_model: ServedModel) -> None:
    # /openapi.json documents these fields as nullable, and pydantic-built clients send null
    tensor = {"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3],
              "parameters": None}
    doc = {"id": None, "parameters": None, "outputs": None, "inputs": [tensor]}
    rows, requested, rid = decode_request(orjson.dumps(doc), None, v2_model)
    assert rows.tolist() == [[1, 2, 3]] and requested == Requested([], False) and rid is None
    doc.update(parameters={"binary_data_output": True},
               outputs=[{"name": "classes", "parameters": None},
                        {"name": "labels", "parameters": {"binary_data": None}}])
    _, requested, _ = decode_request(orjson.dumps(doc), None, v2_model)
    assert requested.names == [("classes", True), ("labels", True)]
    body, hlen = v2_body(np.ones((1, 3), np.float32), True)
    header = orjson.loads(body[:hlen])
    header["inputs"][0]["data"] = None  # next to binary_data_size
    header = orjson.dumps(header)
    rows, _, _ = decode_request(header + body[hlen:], len(header), v2_model)
    assert rows.tolist() == [[1, 1, 1]]


@pytest.mark.parametrize("datatype, data, message", [
    ("UINT64", [2**64 - 1, 1, 2], None),
    ("UINT64", [[2**64 - 1], [1], [2]], None),
    ("INT64", [2**63, 1, 2], r"values must lie in \[-9223372036854775808, "),
    ("UINT64", [-1, 2**63, 2], r"values must lie in \[0, 18446744073709551615\]"),
    ("INT8", [2**63, 1, 2], r"values must lie in \[-128, 127\]"),
    ("UINT64", [2**63, 1.5, 2], "expects integers, found floats"),
])
def test_v2_integers_beyond_int64(v2_model: ServedModel, datatype: str, data: list,
                                  message: str | None) -> None:
    # NumPy reads [2**64 - 1, 1] as floats: valid UINT64 data was refused as "floats"
    doc = {"inputs": [{"name": "input", "shape": [1, 3], "datatype": datatype, "data": data}]}
    if message is None:
        rows, _, _ = decode_request(orjson.dumps(doc), None, v2_model)
        assert rows.tolist() == [[2.0**64, 1, 2]]
        return
    with pytest.raises(InvalidInputError, match=message):
        decode_request(orjson.dumps(doc), None, v2_model)


def test_v2_binary_part_is_checked(v2_model: ServedModel) -> None:
    x = np.ones((1, 3), np.float32)
    body, hlen = v2_body(x, True)
    with pytest.raises(InvalidInputError, match="bytes that no input claims"):
        decode_request(body + b"\0\0\0\0", hlen, v2_model)
    with pytest.raises(InvalidInputError, match="goes past the end"):
        decode_request(body[:-4], hlen, v2_model)
    with pytest.raises(InvalidInputError, match="between 1 and the body size"):
        decode_request(body, len(body) + 1, v2_model)
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        decode_request(body, hlen - 1, v2_model)
    with pytest.raises(InvalidInputError, match="finite numbers"):
        nan = np.array([[1, np.nan, 2]], np.float32)
        decode_request(*v2_body(nan, True), v2_model)


def test_v2_non_utf8_bodies_and_header_lengths_name_the_problem(v2_model: ServedModel) -> None:
    body = orjson.dumps({"inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP32",
                                     "data": [1, 2, 3]}], "id": "x"})
    bad = body.replace(b'"x"', b'"\xff"')
    with pytest.raises(InvalidInputError, match=f"found byte 0xff at byte {bad.index(0xff)}"):
        decode_request(bad, None, v2_model)
    # int() alone would read "1_0" as 10; the message shows the text, not a bytes repr
    for value in (b"1_0", b"abc", b"0x10", b"99999999999999999999"):
        with pytest.raises(InvalidInputError, match="Length must be an integer, found '"):
            _int_header("Inference-Header-Content-Length", value)
    assert _int_header("Inference-Header-Content-Length", b" 42") == 42


def test_grpc_tensor_in_raw_and_typed_contents_is_refused() -> None:
    req = MESSAGES["ModelInferRequest"](model_name="m")
    t = req.inputs.add(name="input", datatype="FP32", shape=[1, 3])
    t.contents.fp32_contents.extend([1, 2, 3])
    req.raw_input_contents.append(np.array([4, 5, 6], np.float32).tobytes())
    with pytest.raises(InvalidInputError, match="found both"):
        decode_infer(req, SPEC, "m")
    del req.raw_input_contents[:]
    assert decode_infer(req, SPEC, "m").tolist() == [[1, 2, 3]]


def test_grpc_shapes_beyond_numpy_dimensions_are_refused() -> None:
    for raw in (True, False):  # the reshape used to fail with INTERNAL
        req = MESSAGES["ModelInferRequest"](model_name="m")
        t = req.inputs.add(name="input", datatype="FP32", shape=[1] * 65)
        if raw:
            req.raw_input_contents.append(np.ones(1, np.float32).tobytes())
        else:
            t.contents.fp32_contents.append(1.0)
        with pytest.raises(InvalidInputError, match="at most 32 non-negative sizes"):
            decode_infer(req, SPEC, "m")


def test_decompression_is_bounded() -> None:
    data = b'{"data": [1, 2, 3]}'
    assert decompress(gzip.compress(data), b"gzip", 100) == data
    assert decompress(zlib.compress(data), b"deflate", 100) == data
    with pytest.raises(Exception, match="at most 1000 bytes"):
        decompress(gzip.compress(b"0" * 10**6), b"gzip", 1000)  # a small zip bomb
    with pytest.raises(InvalidInputError):
        decompress(b"not gzip", b"gzip", 1000)
    with pytest.raises(Exception, match="expected Content-Encoding"):
        decompress(data, b"br", 1000)


# -- routes, policies, config -------------------------------------------------------------------
def test_inference_paths() -> None:
    assert match_inference("/predict") == ("simple", None, None)
    assert match_inference("/v1/models/digits:predict") == ("simple", "digits", None)
    assert match_inference("/v1/models/digits/versions/3:predict") == ("simple", "digits", "3")
    assert match_inference("/v2/models/digits/infer") == ("v2", "digits", None)
    assert match_inference("/v2/models/digits/versions/2/infer") == ("v2", "digits", "2")
    for path in ("/v2/models//infer", "/v2/models/a/b/infer", "/v2/models/a/versions//infer",
                 "/v2/models/digits", "/predict/", "/v1/models/:predict"):
        assert match_inference(path) is None


def test_version_policies() -> None:
    have = [3, 1, 10, 2]
    assert VersionPolicy.parse("latest").select(have) == [10]
    assert VersionPolicy.parse("latest:2").select(have) == [3, 10]
    assert VersionPolicy.parse("all").select(have) == [1, 2, 3, 10]
    assert VersionPolicy.parse("specific:2,3,7").select(have) == [2, 3]
    for bad in ("newest", "latest:0", "latest:x", "specific:", "all:2"):
        with pytest.raises(ConfigError, match="expected a version policy"):
            VersionPolicy.parse(bad)


def test_config_file_environment_and_flags(tmp_path: Path) -> None:
    f = tmp_path / "serve.toml"
    f.write_text('port = 9000\nversion_policy = "latest:2"\n[batching]\nmax_batch_size = 16\n'
                 '[models.digits]\nmax_queue_size = 5\n[auth]\napi_key = "k1"\n')
    cfg = from_mapping(read_file(f))
    assert (cfg.port, cfg.batching.max_batch_size, cfg.api_key) == (9000, 16, "k1")
    assert cfg.batching_for("digits").max_queue_size == 5
    assert cfg.batching_for("digits").max_batch_size == 16  # inherited from [batching]
    apply_environment(cfg, {"NNFORGE_ADMIN_KEY": "adm"})
    assert cfg.admin_key == "adm" and cfg.api_key == "k1"
    parser = argparse.ArgumentParser()
    serve_cli.add_arguments(parser)
    args = parser.parse_args(["m.nnf", "--config", str(f), "--port", "0", "--no-grpc",
                              "--max-batch-size", "8"])
    cfg = serve_cli.build_config(args)
    assert (cfg.port, cfg.grpc_port, cfg.path, cfg.version_policy) == (0, None, "m.nnf",
                                                                       "latest:2")
    assert cfg.batching.max_batch_size == 8 and cfg.models["digits"].max_batch_size == 8
    (tmp_path / "bad.toml").write_text("prot = 9000\n")
    with pytest.raises(ConfigError, match=r"unknown setting\(s\) \['prot'\]"):
        from_mapping(read_file(tmp_path / "bad.toml"))
    (tmp_path / "bad.json").write_text('{"batching": {"max_batch_size": 0}}')
    with pytest.raises(ConfigError, match="max_batch_size to be an integer >= 1"):
        from_mapping(read_file(tmp_path / "bad.json")).validate()
    with pytest.raises(ConfigError, match="cannot parse"):
        (tmp_path / "broken.yaml").write_text("a: [1,\n")
        read_file(tmp_path / "broken.yaml")
    for key in ('""', '"  "', "5"):  # an empty key must not quietly switch auth off
        (tmp_path / "open.toml").write_text(f"[auth]\napi_key = {key}\n")
        with pytest.raises(ConfigError, match="api_key of .* non-empty string"):
            from_mapping(read_file(tmp_path / "open.toml"))


def test_blank_keys_are_refused_from_python_too(tmp_path: Path) -> None:
    # serve(path, api_key="") used to start an open server without a word
    for key in ("", "  ", 5):
        with pytest.raises(ConfigError, match="api_key to be a non-empty string"):
            ServeConfig(path=str(tmp_path), api_key=key).validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="admin_key to be a non-empty string .* found ''"):
        ServeConfig(path=str(tmp_path), admin_key="").validate()
    ServeConfig(path=str(tmp_path), api_key="k").validate()



def test_infinite_or_nan_times_are_refused_from_python_too(tmp_path: Path) -> None:
    # NaN passed the old `v < 0` checks, and inf overflowed the timers once the server ran
    for bad in (math.inf, math.nan):
        with pytest.raises(ConfigError, match="shutdown_grace_s to be a finite number"):
            ServeConfig(path=str(tmp_path), shutdown_grace_s=bad).validate()
        with pytest.raises(ConfigError, match="batching.timeout_ms to be a finite number"):
            ServeConfig(path=str(tmp_path),
                        batching=BatchingConfig(timeout_ms=bad)).validate()
    ServeConfig(path=str(tmp_path), shutdown_grace_s=0.5).validate()

# -- metrics and the gRPC protocol --------------------------------------------------------------
def test_metrics_text() -> None:
    metrics = ServerMetrics()
    m = metrics.model("digits", "2")
    m.outcomes["success"] += 3
    for v in (0.0004, 0.002, 7.0):
        m.total.observe(v)
    m.batch.observe(5)
    text = metrics.render().decode()
    assert 'nnforge_requests_total{model="digits",outcome="success",version="2"} 3.0' in text
    assert 'nnforge_request_duration_seconds_bucket{le="0.0005",model="digits",version="2"} 1.0' \
        in text
    assert 'nnforge_request_duration_seconds_bucket{le="+Inf",model="digits",version="2"} 3.0' \
        in text
    assert 'nnforge_batch_size_bucket{le="4.0",model="digits",version="2"} 0.0' in text
    assert 'nnforge_batch_size_bucket{le="8.0",model="digits",version="2"} 1.0' in text
    assert "process_resident_memory_bytes" in text


def test_committed_descriptor_matches_the_proto_file() -> None:
    assert compile_proto() == _descriptor.SERIALIZED, \
        "grpc_service.proto changed: run python -m nnforge.serve.proto"


def test_messages_are_wire_compatible_with_tritonclient_in_one_process() -> None:
    def fields(desc):  # noqa: ANN001, ANN202
        out = {f.name: (f.number, f.type, f.is_repeated) for f in desc.fields}
        for nested in desc.nested_types:
            if not nested.GetOptions().map_entry:
                out[nested.name] = fields(nested)
        return out

    for name in ["InferParameter", "InferTensorContents", *MESSAGES]:
        ours = message(name).DESCRIPTOR
        theirs = service_pb2.DESCRIPTOR.message_types_by_name[name]
        assert fields(ours) == fields(theirs), name
    # and bytes written by one side parse on the other
    req = service_pb2.ModelInferRequest(model_name="m", id="7")
    req.inputs.add(name="input", datatype="FP32", shape=[1, 3])
    req.raw_input_contents.append(np.ones(3, np.float32).tobytes())
    ours = MESSAGES["ModelInferRequest"].FromString(req.SerializeToString())
    assert (ours.model_name, list(ours.inputs[0].shape), ours.raw_input_contents[0]) == \
        ("m", [1, 3], req.raw_input_contents[0])


# -- gRPC keys come before parsing ----------------------------------------------------------
class _AbortedError(Exception):
    pass


class _Context:
    """The part of grpc.aio's ServicerContext the handlers use."""

    def __init__(self, metadata: tuple = ()) -> None:
        self.metadata, self.code = metadata, None

    def invocation_metadata(self) -> tuple:
        return self.metadata

    async def abort(self, code: object, details: str) -> None:
        self.code = code
        raise _AbortedError(details)


def test_grpc_checks_the_key_before_it_parses_the_request(tmp_path: Path) -> None:
    import grpc  # noqa: PLC0415

    from nnforge.serve.core import InferenceServer  # noqa: PLC0415
    from nnforge.serve.grpc_service import SERVICE, InferenceService, generic_handler  # noqa: PLC0415
    from nnforge.serve.logs import AccessLog  # noqa: PLC0415

    class Repo:
        models: dict = {}

        def ready(self) -> bool:
            return True

    server = InferenceServer(ServeConfig(path=str(tmp_path), api_key="k", admin_key="a"),
                             Repo(), ServerMetrics(), AccessLog(enabled=False))
    handler = generic_handler(InferenceService(server))

    def call(rpc: str, data: bytes, metadata: tuple = ()) -> object:
        details = SimpleNamespace(method=f"/{SERVICE}/{rpc}", invocation_metadata=metadata)
        context = _Context(metadata)
        try:
            run(handler.service(details).unary_unary(data, context))
        except _AbortedError:
            pass
        return context.code

    junk = b"\xff" * 64  # not a protobuf message: parsing it would answer INVALID_ARGUMENT
    for rpc in ("ModelInfer", "ModelMetadata", "ModelStatistics", "ServerMetadata"):
        assert call(rpc, junk) == grpc.StatusCode.UNAUTHENTICATED, rpc
        assert call(rpc, junk, (("x-api-key", "a"),)) == grpc.StatusCode.UNAUTHENTICATED
        assert call(rpc, junk, (("x-api-key", "k"),)) == grpc.StatusCode.INVALID_ARGUMENT
    for rpc in ("RepositoryIndex", "RepositoryModelLoad", "RepositoryModelUnload"):
        assert call(rpc, junk, (("x-api-key", "k"),)) == grpc.StatusCode.UNAUTHENTICATED, rpc
        assert call(rpc, junk, (("x-api-key", "a"),)) == grpc.StatusCode.INVALID_ARGUMENT
    assert call("ServerLive", junk) == grpc.StatusCode.INVALID_ARGUMENT  # probes need no key
    m = server.metrics.model(UNKNOWN, "")  # refused inferences are still counted
    assert m.outcomes["unauthorized"] == 2


def test_a_model_named_stats_is_refused_at_load(tmp_path: Path, caplog) -> None:  # noqa: ANN001
    """GET /v2/models/stats is Triton's statistics of every model: a model named "stats" had
    metadata nobody could read (the statistics route answered instead)."""
    from nnforge.serve.repository import ModelRepository  # noqa: PLC0415

    nf.manual_seed(0)
    for name in ("stats", "m"):
        (tmp_path / "repo" / name / "1").mkdir(parents=True)
        nf.save(nn.Sequential(nn.Linear(2, 2)), tmp_path / "repo" / name / "1" / "model.nnf")
    repo = ModelRepository(tmp_path / "repo", ServerMetrics(), BatchingConfig())
    with caplog.at_level("WARNING", logger="nnforge.serve"):
        assert list(repo.scan()) == ["m"]
        assert list(repo.scan()) == ["m"]
    warned = [r.getMessage() for r in caplog.records if "stats" in r.getMessage()]
    assert len(warned) == 1 and "statistics of every model" in warned[0]
    with pytest.raises(ConfigError, match="other than 'stats'.*statistics"):
        ModelRepository(tmp_path / "repo" / "stats", ServerMetrics(), BatchingConfig())
    single = tmp_path / "stats.nnf"
    single.write_bytes((tmp_path / "repo" / "m" / "1" / "model.nnf").read_bytes())
    with pytest.raises(ConfigError, match="other than 'stats'.*--model-name"):
        ModelRepository(single, ServerMetrics(), BatchingConfig())
    assert ModelRepository(single, ServerMetrics(), BatchingConfig(), model_name="s").scan()
    with pytest.raises(argparse.ArgumentTypeError, match="other than 'stats'"):
        serve_cli._model_name("stats")
