"""Serve limits on what a model file or a request may declare: warm-up memory, sample size,
tensor shapes (audit findings F2 and F4)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import orjson
import pytest
from tritonclient.grpc import service_pb2  # noqa: F401 - registers inference.* in protobuf's pool

import nnforge as nf
from nnforge import nn
from nnforge.errors import ConfigError
from nnforge.serve import model as served
from nnforge.serve.config import from_mapping
from nnforge.serve.errors import InvalidInputError
from nnforge.serve.grpc_service import MESSAGES, decode_infer
from nnforge.serve.model import ServedModel
from nnforge.serve.tensors import TensorSpec, to_model_rows
from nnforge.serve.v2 import decode_request


def relu_model(path: Path, width: int) -> Path:
    nf.save(nn.Sequential(nn.ReLU()), path, task="regression", input_shape=(width,))
    return path


def declaring(path: Path, width: int) -> Path:
    """A copy of a ReLU model whose manifest declares samples of `width` values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    src = relu_model(path.with_name("small.nnf.tmp"), 4)
    with zipfile.ZipFile(src) as z:
        entries = {i.filename: z.read(i) for i in z.infolist()}
    manifest = json.loads(entries["manifest.json"])
    manifest["inputs"][0]["shape"] = manifest["outputs"][0]["shape"] = [None, width]
    with zipfile.ZipFile(path, "w") as out:
        out.writestr("manifest.json", json.dumps(manifest))
        for name, data in entries.items():
            if name != "manifest.json":
                out.writestr(name, data)
    src.unlink()
    return path


# -- F2: warm-up and sample size ----------------------------------------------------------------
def test_warm_up_skips_buckets_beyond_its_byte_budget(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    # warm-up used to run every bucket up to max_batch_size, whatever one sample weighed
    monkeypatch.setattr(served, "WARM_UP_BYTES", 3 * 16 * 4)
    model = ServedModel.load("m", "1", relu_model(tmp_path / "m.nnf", 16), max_batch_size=64)
    sizes: list[int] = []
    run_one = model.session.run
    model.session.run = lambda x: (sizes.append(len(x)), run_one(x))[1]  # type: ignore
    model.warm_up()
    assert max(sizes) == 3 and set(sizes) == {1, 2, 3}
    assert model.slow  # its full batch never ran: give it a worker thread


def test_warm_up_runs_batch_1_even_when_one_sample_is_over_budget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(served, "WARM_UP_BYTES", 8)
    model = ServedModel.load("m", "1", relu_model(tmp_path / "m.nnf", 16), max_batch_size=8)
    sizes: list[int] = []
    run_one = model.session.run
    model.session.run = lambda x: (sizes.append(len(x)), run_one(x))[1]  # type: ignore
    model.warm_up()
    assert set(sizes) == {1}


def test_a_model_declaring_a_huge_sample_fails_to_load_before_warm_up(tmp_path: Path) -> None:
    # the audit's file: ReLU declaring 2**28 values per sample took 7.4 GB in warm-up
    path = declaring(tmp_path / "big.nnf", 2**28)
    with pytest.raises(ConfigError, match=r"takes 1073741824 bytes.*max_sample_bytes"):
        ServedModel.load("m", "1", path, max_batch_size=64)


def test_max_sample_bytes_is_a_batching_setting(tmp_path: Path) -> None:
    path = relu_model(tmp_path / "m.nnf", 100)
    with pytest.raises(ConfigError, match="takes 400 bytes"):
        ServedModel.load("m", "1", path, max_sample_bytes=399)
    assert ServedModel.load("m", "1", path, max_sample_bytes=400).sample_bytes == 400
    cfg = from_mapping({"batching": {"max_sample_bytes": 400}}).validate()
    assert cfg.batching.max_sample_bytes == 400
    with pytest.raises(ConfigError, match="max_sample_bytes"):
        from_mapping({"batching": {"max_sample_bytes": 0}}).validate()


def test_the_server_load_refuses_a_too_big_model_without_warming_it_up(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = declaring(tmp_path / "big.nnf", 2**28)

    def no_warm_up(self: ServedModel) -> None:
        raise AssertionError("warm-up ran for a model over max_sample_bytes")

    monkeypatch.setattr(ServedModel, "warm_up", no_warm_up)
    with pytest.raises(ConfigError, match="max_sample_bytes"):
        served.timed_load("big", "1", path, 64)


# -- F4: shapes of empty tensors with huge other dimensions ----------------------------------
@pytest.fixture(scope="module")
def model16(tmp_path_factory: pytest.TempPathFactory) -> ServedModel:
    return ServedModel.load("m", "1", relu_model(tmp_path_factory.mktemp("m") / "m.nnf", 16),
                            max_batch_size=4)


@pytest.mark.parametrize("shape", [[0] + [2**31 - 1] * 5, [0, 2**31], [0, 2**20, 2**20]])
@pytest.mark.parametrize("binary", [False, True])
def test_v2_refuses_empty_tensors_with_huge_dims(model16: ServedModel, shape: list[int],
                                                 binary: bool) -> None:
    tensor: dict = {"name": "input", "datatype": "FP32", "shape": shape}
    if binary:
        tensor["parameters"] = {"binary_data_size": 0}
    else:
        tensor["data"] = []
    body = orjson.dumps({"inputs": [tensor]})
    with pytest.raises(InvalidInputError, match="shape"):
        decode_request(body, len(body) if binary else None, model16)


@pytest.mark.parametrize("shape", [[0, 2**62, 2**62], [0, 2**31, 1], [0, 2**20, 2**20]])
def test_grpc_refuses_empty_tensors_with_huge_dims(model16: ServedModel,
                                                   shape: list[int]) -> None:
    req = MESSAGES["ModelInferRequest"](model_name="m")
    req.inputs.add(name="input", datatype="FP32", shape=shape)
    req.raw_input_contents.append(b"")
    with pytest.raises(InvalidInputError, match="shape"):
        decode_infer(req, model16.input, "m")


def test_empty_and_ordinary_shapes_still_pass(model16: ServedModel) -> None:
    req = MESSAGES["ModelInferRequest"](model_name="m")
    req.inputs.add(name="input", datatype="FP32", shape=[2, 16])
    req.raw_input_contents.append(np.ones((2, 16), "<f4").tobytes())
    assert decode_infer(req, model16.input, "m").shape == (2, 16)


# -- F7: a non-finite value names the datatype it was sent in -----------------------------------
def test_an_fp16_inf_is_not_blamed_on_the_range_of_fp32() -> None:
    spec = TensorSpec("input", "FP32", (4,))
    with pytest.raises(InvalidInputError, match=r"found inf \(sent as FP16\)") as info:
        to_model_rows(np.array([[1, np.inf, 0, 0]], np.float16), spec, "input 'input'")
    assert "range" not in str(info.value)
    with pytest.raises(InvalidInputError, match="within the range of FP32, found 1e"):
        to_model_rows(np.array([[1, 1e300, 0, 0]]), spec, "input 'input'")
