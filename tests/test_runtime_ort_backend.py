"""backend="onnxruntime": what the wrapper adds to ONNX Runtime's run, and what it must keep."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from nnforge import nn
from nnforge.errors import DataError
from nnforge.runtime import InferenceSession
from nnforge.runtime import session as session_module

F32 = np.float32


def mlp() -> nn.Module:
    """A small MLP like the benchmark's (784-256-128-10 scaled down)."""
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4), nn.ReLU(),
                         nn.Linear(4, 3))


def raw_ort(session: InferenceSession) -> ort.InferenceSession:
    """ONNX Runtime on the very model bytes the wrapper runs, with its settings."""
    plan = session._shared
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = plan.threads, 1
    return ort.InferenceSession(plan._model_bytes, opts, providers=["CPUExecutionProvider"])


def count_checks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of rows of every NaN/Inf check the session makes from here on."""
    rows: list[int] = []
    real = session_module.check_finite

    def spy(x: np.ndarray, *args: object, **kwargs: object) -> None:
        rows.append(len(x))
        real(x, *args, **kwargs)
    monkeypatch.setattr(session_module, "check_finite", spy)
    return rows


def test_run_and_predict_equal_onnxruntime_bit_for_bit(rng: np.random.Generator) -> None:
    session = InferenceSession(mlp(), backend="onnxruntime", threads=2)
    oracle = raw_ort(session)
    for rows in (1, 7, 300):
        x = rng.standard_normal((rows, 6)).astype(F32)
        want = oracle.run(None, {"input": x})[0]
        assert np.array_equal(session.run(x), want)
        assert np.array_equal(session.predict(x).values, want)
        assert np.array_equal(session.predict(x, batch_size=4).values, want)
        # a float64 or strided input is cast / made contiguous first, as before
        assert np.array_equal(session.run(x.astype(np.float64)), want)
        assert np.array_equal(session.run(np.asfortranarray(x)), want)


def test_predict_reads_each_chunk_once_for_nan(monkeypatch: pytest.MonkeyPatch,
                                              rng: np.random.Generator) -> None:
    # predict checked every chunk and then run() checked it again: two passes over the input
    session = InferenceSession(mlp(), backend="onnxruntime")
    x = rng.standard_normal((10, 6)).astype(F32)
    rows = count_checks(monkeypatch)
    session.predict(x, batch_size=4)
    assert rows == [4, 4, 2]
    rows.clear()
    session.run(x)  # run() alone checks its input once, as before
    assert rows == [10]


@pytest.mark.parametrize("backend", ["numpy", "onnxruntime"])
def test_predict_names_the_bad_row_of_the_whole_input(backend: str,
                                                     rng: np.random.Generator) -> None:
    session = InferenceSession(mlp(), backend=backend)
    with np.errstate(over="ignore", invalid="ignore"):
        for row, bad in ((1, np.inf), (7, np.nan), (9, -np.inf)):
            x = rng.standard_normal((10, 6)).astype(F32)
            x[row, 2] = bad
            with pytest.raises(DataError, match=f"found {bad} at row {row}, position 2"):
                session.predict(x, batch_size=4)
        # finite as float64, not once cast to the model's float32: refused all the same
        x = rng.standard_normal((10, 6))
        x[5, 0] = 1e39
        with pytest.raises(DataError, match="found inf at row 5, position 0"):
            session.predict(x, batch_size=4)


def test_predict_still_checks_what_preprocessing_makes(rng: np.random.Generator) -> None:
    # with stored preprocessing, predict checks the raw rows and run() the transformed ones
    session = InferenceSession(mlp(), backend="onnxruntime", task="regression")
    session._pre = _Scale(np.float32(1e30))
    x = rng.standard_normal((6, 6)).astype(F32) * 1e10  # finite, but not once scaled
    with np.errstate(over="ignore"), pytest.raises(DataError, match="found -?inf at row"):
        session.predict(x)


def test_run_hands_back_ort_own_output(rng: np.random.Generator) -> None:
    # ORT's output arrays are fresh: the wrapper neither copies them nor casts them again
    session = InferenceSession(mlp(), backend="onnxruntime")
    ort_session, answers = session._shared.session, []
    real_run = ort_session.run

    class Spy:  # ORT's InferenceSession.run cannot be patched on the instance: wrap it
        def __getattr__(self, name: str):
            return getattr(ort_session, name)

        def run(self, *args, **kwargs):
            answers.append(real_run(*args, **kwargs))
            return answers[-1]

    session._shared.session = Spy()
    out = session.run(rng.standard_normal((5, 6)).astype(F32))
    assert out.dtype == F32 and out.shape == (5, 3) and out.flags.c_contiguous
    assert len(answers) == 1 and np.shares_memory(out, answers[0][0])


class _Scale:
    """A stand-in for a stored preprocessing step: multiply by a constant."""

    def __init__(self, factor: np.float32) -> None:
        self.factor = factor

    def transform(self, x: np.ndarray) -> np.ndarray:
        return x * self.factor
