"""Out of memory is a ResourceError (a MemoryError), not a ShapeError: the runtime, the CLI and
the server say what ran out, how much it asked for and what to do, and the server answers 503 /
RESOURCE_EXHAUSTED instead of blaming the request. No test allocates more than a few bytes:
MemoryErrors are raised by patched kernels and allocators."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable

import httpx
import numpy as np
import orjson
import pytest
from helpers import run_cli, serve_in_process

import nnforge as nf
from nnforge import nn
from nnforge.data.preprocessing import one_hot
from nnforge.errors import (
    DataError,
    NNForgeError,
    ResourceError,
    ShapeError,
    format_bytes,
    out_of_memory,
)
from nnforge.runtime import InferenceSession
from nnforge.runtime import plan as plan_module
from nnforge.runtime import session as session_module
from nnforge.serve import rest
from nnforge.serve.core import InferenceServer
from nnforge.serve.errors import InvalidInputError, ResourceExhaustedError, model_error
from nnforge.serve.grpc_service import MESSAGES, InferenceService

F32 = np.float32
TIB4 = (2**30, 1024)  # float32: 4.00 TiB


class NumpyMemoryError(MemoryError):
    """What NumPy raises when an array does not fit: it records the shape and dtype."""

    def __init__(self, shape: tuple[int, ...], dtype: Any) -> None:
        super().__init__(f"Unable to allocate an array with shape {shape}")
        self.shape, self.dtype = shape, np.dtype(dtype)


def gemm_out_of_memory(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Make compiled Gemm kernels raise NumPy's MemoryError while the returned list is true."""
    real, armed = plan_module.KERNELS["Gemm"], [True]

    def kernel(node: Any, ins: Any, outs: Any, ctx: Any) -> Callable[[Any], None]:
        step = real(node, ins, outs, ctx)

        def run(feeds: Any) -> None:
            if armed[0]:
                raise NumpyMemoryError(TIB4, F32)
            step(feeds)
        return run
    monkeypatch.setitem(plan_module.KERNELS, "Gemm", kernel)
    return armed


def linear_session() -> InferenceSession:
    nf.manual_seed(0)
    return InferenceSession(nn.Sequential(nn.Linear(4, 3)))


# -- the error class ----------------------------------------------------------------------------
def test_resource_error_is_a_memory_error_and_no_value_error() -> None:
    err = out_of_memory("running Gemm 'fc'", nbytes=3 * 2**30)
    assert isinstance(err, NNForgeError) and isinstance(err, MemoryError)
    assert not isinstance(err, (ShapeError, ValueError))
    assert str(err) == ("out of memory running Gemm 'fc' (3.00 GiB); use a smaller batch_size, "
                        "or call predict() on fewer rows at a time")
    assert (err.what, err.amount) == ("running Gemm 'fc'", "3.00 GiB")


@pytest.mark.parametrize("n, text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.50 KiB"),
                                     (10 * 2**20, "10.0 MiB"), (4 * 2**40, "4.00 TiB")])
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


def test_the_amount_comes_from_numpys_error_or_its_message() -> None:
    assert out_of_memory("x", NumpyMemoryError(TIB4, F32)).amount == "4.00 TiB"
    # CuPy's OutOfMemoryError has no shape: its message says the size
    assert out_of_memory("x", MemoryError("Out of memory allocating 1,024 bytes")).amount == \
        "Out of memory allocating 1,024 bytes"
    assert out_of_memory("x", MemoryError()).amount == "unknown size"


# -- the runtime --------------------------------------------------------------------------------
def test_a_kernel_out_of_memory_is_a_resource_error_naming_node_size_and_remedy(
        monkeypatch: pytest.MonkeyPatch) -> None:
    gemm_out_of_memory(monkeypatch)
    session = linear_session()
    with pytest.raises(ResourceError) as info:
        session.run(np.ones((2, 4), F32))
    text = str(info.value)
    assert "out of memory running Gemm '0' (4.00 TiB)" in text and "batch_size" in text
    with pytest.raises(MemoryError):  # callers catching MemoryError still catch it
        session.predict(np.ones((2, 4), F32), batch_size=2)


def test_a_plan_whose_buffers_do_not_fit_says_their_total(
        monkeypatch: pytest.MonkeyPatch) -> None:
    session = linear_session()

    class NoMemory:  # plan.py's numpy, whose zeros() (the buffers) fails
        def __getattr__(self, name: str) -> Any:
            return getattr(np, name)

        @staticmethod
        def zeros(*args: Any, **kwargs: Any) -> np.ndarray:
            raise MemoryError

    monkeypatch.setattr(plan_module, "np", NoMemory())
    with pytest.raises(ResourceError, match=r"allocating the buffers of a plan for inputs "
                                            r"\[\(2, 4\)\] \(\d+ B\); use a smaller batch_size"):
        session.run(np.ones((2, 4), F32))


def test_another_backends_memory_error_names_the_input_shape(
        monkeypatch: pytest.MonkeyPatch) -> None:
    class CupyLikePlan:  # CuPy's OutOfMemoryError is a MemoryError that says its size
        probed = frozenset()

        def run_one(self, feeds: Any) -> np.ndarray:
            raise MemoryError("Out of memory allocating 1,024 bytes")
    monkeypatch.setattr(session_module, "compile_plan", lambda *args: CupyLikePlan())
    session = linear_session()
    with pytest.raises(ResourceError, match=r"running the model on inputs of shape \(2, 4\) "
                                            r"\(Out of memory allocating 1,024 bytes\)"):
        session.run(np.ones((2, 4), F32))


def test_one_hot_that_does_not_fit_is_a_resource_error_but_impossible_sizes_stay_data_errors(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from nnforge.data import preprocessing  # noqa: PLC0415

    with pytest.raises(DataError, match="do not fit in memory"):  # beyond any machine
        one_hot([0], 2**62)

    def zeros(*args: Any, **kwargs: Any) -> np.ndarray:
        raise MemoryError
    monkeypatch.setattr(preprocessing.np, "zeros", zeros)
    with pytest.raises(ResourceError, match=r"one-hot rows of shape \(3, 5\) \(60 B\); encode "
                                            r"fewer labels at a time"):
        one_hot([0, 4, 1])


# -- the command line ---------------------------------------------------------------------------
@pytest.fixture
def model_and_rows(tmp_path: Path) -> tuple[Path, Path]:
    nf.manual_seed(0)
    nf.save(nn.Sequential(nn.Linear(4, 3)), tmp_path / "m.nnf", task="multiclass")
    np.save(tmp_path / "x.npy", np.ones((3, 4), F32))
    return tmp_path / "m.nnf", tmp_path / "x.npy"


def test_cli_out_of_memory_is_one_line_with_size_and_batch_size_and_exit_1(
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
        model_and_rows: tuple[Path, Path]) -> None:
    gemm_out_of_memory(monkeypatch)
    model, rows = model_and_rows
    code, out, err = run_cli(capsys, "predict", model, "--input", rows)
    assert code == 1 and out == "" and "Traceback" not in err
    line = err.strip()
    assert "\n" not in line and "out of memory running Gemm" in line, line
    assert "(4.00 TiB); a smaller --batch-size may help" in line, line


def test_cli_plain_memory_error_says_how_much_was_requested(
        capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch,
        model_and_rows: tuple[Path, Path]) -> None:
    cli_main = importlib.import_module("nnforge.cli.main")  # nnforge.cli.main is the function

    def dispatch(argv: Any) -> int:
        raise NumpyMemoryError(TIB4, F32)
    monkeypatch.setattr(cli_main, "_dispatch", dispatch)
    code, _, err = run_cli(capsys, "predict", *model_and_rows)
    assert code == 1
    assert err.strip().endswith("out of memory (4.00 TiB requested); a smaller --batch-size "
                                "may help"), err


# -- the server ---------------------------------------------------------------------------------
def test_model_errors_map_memory_to_the_server_and_the_rest_to_the_request() -> None:
    assert isinstance(model_error(ShapeError("bad")), InvalidInputError)
    for exc in (out_of_memory("running Gemm 'fc'", nbytes=2**42), NumpyMemoryError(TIB4, F32)):
        err = model_error(exc)
        assert isinstance(err, ResourceExhaustedError)
        assert (err.status, err.grpc_code) == (503, "RESOURCE_EXHAUSTED")
        assert "4.00 TiB" in str(err) and "fewer rows per request" in str(err)


class AbortedError(Exception):
    pass


class Aborts:
    """The part of a grpc.aio context that ModelInfer uses on failure."""

    def __init__(self) -> None:
        self.code: Any = None

    async def abort(self, code: Any, message: str) -> None:
        self.code = code
        raise AbortedError(message)


def _repo(root: Path) -> Path:
    (root / "m" / "1").mkdir(parents=True)
    nf.manual_seed(0)
    nf.save(nn.Sequential(nn.Linear(4, 3)), root / "m" / "1" / "model.nnf", task="multiclass")
    return root


V2_BODY = orjson.dumps({"inputs": [{"name": "input", "datatype": "FP32", "shape": [2, 4],
                                    "data": [1.0] * 8}]})


def test_server_out_of_memory_is_503_and_resource_exhausted(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import grpc  # noqa: PLC0415

    armed = gemm_out_of_memory(monkeypatch)
    armed[0] = False  # loading warms the model up: let it

    async def check(c: httpx.AsyncClient, server: InferenceServer) -> None:
        assert (await c.post("/v2/models/m/infer", content=V2_BODY)).status_code == 200
        armed[0] = True
        r = await c.post("/v2/models/m/infer", content=V2_BODY)
        assert r.status_code == 503, r.text
        error = r.json()["error"]
        assert "out of memory running Gemm" in error and "4.00 TiB" in error, error
        r = await c.post("/v1/models/m:predict", json={"instances": [[1.0] * 4]})
        assert r.status_code == 503 and "out of memory" in r.json()["error"], r.text

        req = MESSAGES["ModelInferRequest"](model_name="m")
        req.inputs.add(name="input", datatype="FP32", shape=[2, 4])
        req.raw_input_contents.append(np.ones((2, 4), F32).tobytes())
        context = Aborts()
        with pytest.raises(AbortedError, match="out of memory running Gemm"):
            await InferenceService(server).ModelInfer(req, context)
        assert context.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    serve_in_process(_repo(tmp_path), check)


def test_server_memory_error_outside_the_model_is_503_not_500(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_memory(*args: Any, **kwargs: Any) -> Any:  # encoding a huge answer, say
        raise NumpyMemoryError((2**30,), F32)
    monkeypatch.setattr(rest, "encode_response", no_memory)

    async def check(c: httpx.AsyncClient, server: InferenceServer) -> None:
        r = await c.post("/v2/models/m/infer", content=V2_BODY)
        assert r.status_code == 503, r.text
        assert r.json()["error"].startswith("the server ran out of memory computing the "
                                            "request (4.00 GiB)")
    serve_in_process(_repo(tmp_path), check)
