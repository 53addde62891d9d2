"""The CuPy executor (`backend="cupy"`) without a GPU: the very same executor over NumPy
(`CupyPlan(..., xp=numpy)`) against the compiled NumPy plan, for every layer type and for
imported ONNX models; the session's use of it (a stand-in `cupy_module` hands it NumPy); its
errors. The same checks on a real GPU live in tests/test_backend_gpu.py."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import eager, run_in_threads, stats_bn

import nnforge as nf
from nnforge import nn
from nnforge.errors import ConfigError, DataError, DeviceError, NNForgeError, ShapeError
from nnforge.graph.ir import Graph, Node, ValueInfo
from nnforge.graph.reference import evaluate_graph
from nnforge.onnx import GraphModule, load
from nnforge.runtime import InferenceSession, cupy_plan
from nnforge.runtime import session as session_mod
from nnforge.runtime.cupy_plan import CupyPlan

F32 = np.float32
LEVELS = ("none", "basic", "all")
FIXTURES = Path(__file__).parent / "fixtures" / "onnx"


def assert_close(got: np.ndarray, want: np.ndarray, rtol: float = 1e-5) -> None:
    assert isinstance(got, np.ndarray) and got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=rtol,
                               atol=rtol * max(1.0, float(np.abs(want).max(initial=0))))


@pytest.fixture
def fake_cupy(monkeypatch: pytest.MonkeyPatch) -> None:
    """backend='cupy' sessions get NumPy as their array module (no GPU needed)."""
    monkeypatch.setattr(cupy_plan, "cupy_module", lambda device="cuda": np)



DENSE = {
    "Linear": lambda r: nn.Linear(6, 5), "Linear(bias=False)": lambda r: nn.Linear(6, 5, False),
    "ReLU": lambda r: nn.ReLU(), "LeakyReLU": lambda r: nn.LeakyReLU(0.2),
    "Sigmoid": lambda r: nn.Sigmoid(), "Tanh": lambda r: nn.Tanh(), "GELU": lambda r: nn.GELU(),
    "Softmax": lambda r: nn.Softmax(), "LogSoftmax": lambda r: nn.LogSoftmax(),
    "Identity": lambda r: nn.Identity(), "Dropout": lambda r: nn.Dropout(0.5),
    "Flatten": lambda r: nn.Flatten(), "BatchNorm1d": lambda r: stats_bn(nn.BatchNorm1d, 6, r),
}
CONV = {
    "Conv2d": lambda r: nn.Conv2d(3, 4, 3),
    "Conv2d(pad,stride)": lambda r: nn.Conv2d(3, 4, 3, stride=2, padding=1),
    "Conv2d(dilation,no bias)": lambda r: nn.Conv2d(3, 2, 3, dilation=2, bias=False),
    "Conv2d(groups)": lambda r: nn.Conv2d(3, 6, 3, groups=3, padding=1),
    "MaxPool2d": lambda r: nn.MaxPool2d(2),
    "MaxPool2d(pad)": lambda r: nn.MaxPool2d(3, stride=2, padding=1),
    "MaxPool2d(ceil,pad)": lambda r: nn.MaxPool2d(2, padding=1, ceil_mode=True),
    "AvgPool2d(pad)": lambda r: nn.AvgPool2d(3, stride=2, padding=1),
    "AvgPool2d(pad,exclude)": lambda r: nn.AvgPool2d(3, 1, 1, count_include_pad=False),
    "AvgPool2d(ceil,exclude)": lambda r: nn.AvgPool2d(2, ceil_mode=True,
                                                      count_include_pad=False),
    "GlobalAvgPool2d": lambda r: nn.GlobalAvgPool2d(),
    "AdaptiveAvgPool2d(3,4)": lambda r: nn.AdaptiveAvgPool2d((3, 4)),
    "BatchNorm2d": lambda r: stats_bn(nn.BatchNorm2d, 3, r),
    "Conv2d+ReLU+MaxPool2d": lambda r: nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(),
                                                     nn.MaxPool2d(2)),
}


def _check_against_numpy_plan(model: nn.Module, x: np.ndarray, levels: tuple = LEVELS) -> None:
    for level in levels:
        ref = InferenceSession(model, optimization=level, input_shape=x.shape[1:],
                               backend="numpy")
        plan = CupyPlan(ref.graph, xp=np)
        for batch in (x, x[:1]):
            assert_close(plan.run_one((batch,)), ref.run(batch))


@pytest.mark.parametrize("name", list(DENSE))
def test_each_dense_layer_matches_the_numpy_plan(rng: np.random.Generator, name: str) -> None:
    model = nn.Sequential(nn.Linear(4, 6), DENSE[name](rng)).eval()
    _check_against_numpy_plan(model, (rng.standard_normal((7, 4)) * 3).astype(F32))


@pytest.mark.parametrize("name", list(CONV))
def test_each_conv_layer_matches_the_numpy_plan(rng: np.random.Generator, name: str) -> None:
    model = nn.Sequential(CONV[name](rng)).eval()
    _check_against_numpy_plan(model, rng.standard_normal((5, 3, 9, 8)).astype(F32))


def test_lenet_with_batchnorm_matches_the_numpy_plan(rng: np.random.Generator) -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 6, 5, padding=2), stats_bn(nn.BatchNorm2d, 6, rng), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(400, 120),
        stats_bn(nn.BatchNorm1d, 120, rng), nn.ReLU(), nn.Dropout(0.2), nn.Linear(120, 10)).eval()
    _check_against_numpy_plan(model, rng.standard_normal((9, 1, 28, 28)).astype(F32))


@pytest.mark.parametrize("name", sorted(p.name for p in FIXTURES.glob("*.onnx")))
@pytest.mark.filterwarnings("ignore:.*fixes the batch size")  # static_*: freed, as intended
def test_imported_onnx_models_match_the_numpy_plan(name: str) -> None:
    for level in ("none", "all"):
        ref = InferenceSession(FIXTURES / name, optimization=level)
        plan = CupyPlan(ref.graph, xp=np)
        for n in (1, 4):
            x = np.random.default_rng(n).standard_normal(
                (n, *ref.input_shape)).astype(F32)
            assert_close(plan.run_one((x,)), ref.run(x))


def _one_node_graph(op: str, attrs: dict, x_shape: tuple, consts: list) -> Graph:
    names = ["x"] + [f"c{k}" for k in range(len(consts))]
    return Graph([Node(op, names, ["y"], attrs, op)], [ValueInfo("x", x_shape, "float32")],
                 [ValueInfo("y", None, OUT_DTYPES.get(op, "float32"))],
                 dict(zip(names[1:], consts)))


#: the declared output types of the test ops that do not give their input's type
OUT_DTYPES = {"Cast": "float64", "ArgMax": "int64", "ArgMin": "int64", "Greater": "bool"}


def _i64(*v: int) -> np.ndarray:
    return np.asarray(v, np.int64)


ARRAY_MODULE_OPS = {  # ops that convert their result with the input's array module
    "Cast": ({"to": 11}, []), "ReduceMean": ({}, [_i64(2, 3)]),
    "ReduceSum": ({"keepdims": 0}, [_i64(1)]), "ReduceMax": ({}, []),
    "ReduceMin": ({"keepdims": 0}, []), "ReduceProd": ({}, [_i64(-1)]),
    "ArgMax": ({"axis": 1}, []), "ArgMin": ({"axis": -1, "keepdims": 0}, []),
    "Where": ({}, [np.zeros(4, F32), np.ones(4, F32)]),
    "Max": ({}, [np.zeros(4, F32)]), "Greater": ({}, [np.zeros(4, F32)]),
    "Expand": ({}, [_i64(2, 3, 5, 4)]), "Min": ({}, [np.zeros(4, F32)]),
    "Split": ({"axis": 1}, [_i64(3)]),
}

ONNX_OPS = {  # ops of imported models, with the constants they read on the host
    "Pad": ({"mode": "reflect"}, [_i64(0, 0, 1, 1, 0, 0, 1, 2)]),
    "Slice": ({}, [_i64(1), _i64(4), _i64(2), _i64(2)]),
    "Concat": ({"axis": 1}, [np.ones((2, 2, 5, 4), F32)]),
    "Unsqueeze": ({}, [_i64(1)]), "Gather": ({"axis": 1}, [_i64(0, 2, -1)]),
    "Clip": ({}, [np.asarray(-0.5, F32), np.asarray(0.5, F32)]),
    "Pow": ({}, [np.full(4, 2.0, F32)]),
    "Transpose": ({"perm": [0, 2, 3, 1]}, []),
    "Erf": ({}, []), "Abs": ({}, []), "Neg": ({}, []), "Exp": ({}, []),
    **ARRAY_MODULE_OPS,
}


@pytest.mark.parametrize("op", list(ONNX_OPS))
def test_onnx_ops_match_the_reference(rng: np.random.Generator, op: str) -> None:
    attrs, consts = ONNX_OPS[op]
    x = rng.standard_normal((2, 3, 5, 4)).astype(F32)
    graph = _one_node_graph(op, attrs, x.shape, consts)
    assert_close(CupyPlan(graph, xp=np).run_one((x,)), evaluate_graph(graph, x)[0], 1e-6)


def test_repeated_inputs_and_weight_outputs(rng: np.random.Generator) -> None:
    w = rng.standard_normal(3).astype(F32)
    graph = Graph([Node("Mul", ["x", "x"], ["y"]), Node("Add", ["y", "w"], ["z"])],
                  [ValueInfo("x", ("N", 3))], [ValueInfo("z", ("N", 3)), ValueInfo("w", (3,))],
                  {"w": w})
    x = rng.standard_normal((4, 3)).astype(F32)
    z, w_out = CupyPlan(graph, xp=np).run((x,))
    assert_close(z, x * x + w)
    assert_close(w_out, w)
    assert not np.shares_memory(w_out, graph.initializers["w"])


# -- the session on its cupy backend ---------------------------------------------------------
def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3), nn.Softmax()).eval()


def test_session_runs_and_predicts_on_the_cupy_backend(fake_cupy, rng) -> None:
    model = _mlp()
    ref = InferenceSession(model, task="multiclass")
    session = InferenceSession(model, backend="cupy", task="multiclass")
    assert session.backend == "cupy" and isinstance(session._shared, CupyPlan)
    for n in (1, 5, 64):
        x = rng.standard_normal((n, 4)).astype(F32)
        assert_close(session.run(x), ref.run(x))
        assert_close(session.run(x.astype(np.float64).tolist()), ref.run(x))
        got, want = session.predict(x), ref.predict(x)
        np.testing.assert_array_equal(got.classes, want.classes)
        assert_close(got.probabilities, want.probabilities)
    with pytest.raises(DataError, match="found nan at row 1"):
        session.run(np.array([[0, 0, 0, 0], [0, np.nan, 0, 0]], F32))
    with pytest.raises(ShapeError, match=r"expected input of shape \(N, 4\)"):
        session.run(np.zeros((2, 5), F32))


def test_cupy_backend_runs_several_inputs(fake_cupy, tmp_path, rng) -> None:
    graph = Graph([Node("MatMul", ["a", "W"], ["t"]), Node("Add", ["t", "b"], ["s"]),
                   Node("Relu", ["s"], ["y"])],
                  [ValueInfo("a", ("N", 4)), ValueInfo("b", ("N", 5))],
                  [ValueInfo("y", ("N", 5)), ValueInfo("t", ("N", 5))],
                  {"W": rng.standard_normal((4, 5)).astype(F32)})
    feeds = {"a": rng.standard_normal((3, 4)).astype(F32),
             "b": rng.standard_normal((3, 5)).astype(F32)}
    want = InferenceSession(graph).run(feeds)
    got = InferenceSession(graph, backend="cupy").run(feeds)
    assert set(got) == {"y", "t"}
    for k in want:
        assert_close(got[k], want[k])


def test_cupy_backend_is_safe_from_many_threads(fake_cupy, rng) -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                          nn.Flatten(), nn.Linear(4 * 4 * 4, 3)).eval()
    ref = InferenceSession(model, input_shape=(1, 8, 8))
    session = InferenceSession(model, backend="cupy", input_shape=(1, 8, 8))
    xs = [rng.standard_normal((1 + i % 5, 1, 8, 8)).astype(F32) for i in range(16)]
    wants = [ref.run(x) for x in xs]
    failures: list[str] = []

    def work(i: int) -> None:
        for _ in range(5):
            got = session.run(xs[i])
            if got.shape != wants[i].shape or not np.allclose(got, wants[i], atol=1e-5):
                failures.append(f"thread {i}")

    run_in_threads(work, 16)
    assert failures == []


def test_a_model_on_a_gpu_picks_the_cupy_backend(fake_cupy, monkeypatch) -> None:
    monkeypatch.setattr(session_mod, "device_of", lambda m: "cuda:0")
    assert InferenceSession(_mlp()).backend == "cupy"
    assert InferenceSession(_mlp(), backend="numpy").backend == "numpy"  # explicit wins
    graph = InferenceSession(_mlp()).graph
    assert InferenceSession(graph).backend == "numpy"  # a graph (or a path): numpy
    assert InferenceSession(FIXTURES / "mlp_classic.onnx").backend == "numpy"


def test_zero_rows_on_the_cupy_backend(fake_cupy) -> None:
    session = InferenceSession(_mlp(), backend="cupy")
    for _ in range(2):
        out = session.run(np.zeros((0, 4), F32))
        assert out.shape == (0, 3) and out.dtype == F32


# -- errors without CuPy ---------------------------------------------------------------------
def test_cupy_backend_without_cupy_says_how_to_install(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "cupy", None)  # `import cupy` raises ImportError
    with pytest.raises(DeviceError) as info:
        InferenceSession(_mlp(), backend="cupy")
    message = str(info.value)
    assert "\n" not in message and "pip install nnforge[gpu]" in message
    assert isinstance(info.value, NNForgeError)


def test_unknown_backend_names_cupy_among_the_choices() -> None:
    with pytest.raises(ConfigError, match="'cupy'"):
        InferenceSession(_mlp(), backend="cuda")


# -- GraphModule moves and casts ----------------------------------------------------------------
def test_graph_module_casts_and_stays_on_the_cpu(rng) -> None:
    gm = GraphModule(load(FIXTURES / "mlp_classic.onnx"))
    x = rng.standard_normal((3, 8)).astype(F32)
    want = gm(x).data
    assert gm.to("cpu") is gm and gm.to(device="cpu") is gm
    gm.to(np.float64)
    got = gm(x.astype(np.float64)).data
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    assert gm.get_config()["graph"]["inputs"][0]["dtype"] == "float64"
    assert InferenceSession(gm).run(x).dtype == np.float64
    gm.to(device="cpu", dtype=np.float32)
    assert_close(gm(x).data, want, 1e-5)


def test_graph_module_to_cuda_without_cupy_says_how_to_install(monkeypatch) -> None:
    gm = GraphModule(load(FIXTURES / "mlp_classic.onnx"))
    monkeypatch.setitem(sys.modules, "cupy", None)
    with pytest.raises(DeviceError, match=r"pip install nnforge\[gpu\]"):
        gm.to("cuda")
    assert gm(np.zeros((1, 8), F32)).data.shape == (1, 4)  # nothing moved


def test_an_in_graph_imputation_may_take_nan_on_the_cupy_plan() -> None:
    """The CuPy plan checked every input itself and refused the NaN the graph fills in."""
    from nnforge.data.preprocessing import Imputer  # noqa: PLC0415
    from nnforge.graph.trace import trace  # noqa: PLC0415
    from nnforge.onnx import exporter  # noqa: PLC0415
    from nnforge.runtime.session import _imputed_inputs  # noqa: PLC0415

    nf.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2))
    imputer = Imputer("constant", fill_value=0.5).fit(np.zeros((2, 3), F32))
    graph = exporter.prepend_preprocessing(trace(model, (None, 3)), imputer.get_config())
    plan = CupyPlan(graph, xp=np, check_finite=True, allow_nan=_imputed_inputs(graph))
    x = np.array([[np.nan, 1.0, 2.0]], F32)
    assert_close(plan.run_one((x,)), eager(model, np.nan_to_num(x, nan=0.5)))
    with pytest.raises(DataError, match="found inf"):
        plan.run_one((np.array([[np.inf, 0, 0]], F32),))
