"""Export -> ONNX Runtime -> re-import for models beyond one input and one used output:
a half of a chunk (the other half unused), and a forward with two inputs."""

from __future__ import annotations

from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
from helpers import GatedPair

import nnforge as nf
from nnforge import nn
from nnforge.nn.module import LAYER_REGISTRY
from nnforge.onnx import export, load
from nnforge.runtime import InferenceSession

F32 = np.float32


def _ort(path: Any) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _close(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


class FirstHalf(nn.Module):
    """a, _ = fc(x).chunk(2, 1); relu(a): the Split's second output is never read."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 6)

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        a, _ = self.fc(x).chunk(2, 1)
        return a.relu()

    def get_config(self) -> dict[str, Any]:
        return {}


@pytest.fixture
def layers() -> Any:
    yield nn.register_layer(FirstHalf), nn.register_layer(GatedPair)
    for name in ("FirstHalf", "GatedPair"):
        LAYER_REGISTRY.pop(name, None)


def test_unused_chunk_half_reimports(layers: Any, tmp_path: Any,
                                     rng: np.random.Generator) -> None:
    model, path = layers[0](), tmp_path / "half.onnx"
    export(model, path, input_shape=(4,))
    x = rng.standard_normal((5, 4)).astype(F32)
    want = _ort(path).run(None, {"input": x})[0]
    _close(want, model(x).data)
    graph = load(path)  # re-import kept both outputs, so each piece is 3 columns (was 6)
    split = next(n for n in graph.nodes if n.op == "Split")
    assert len(split.outputs) == 2 and graph.outputs[0].shape == ("N", 3)
    for level in ("none", "all"):
        _close(InferenceSession(path, optimization=level).run(x), want)


def test_two_input_model_exports_and_reimports(layers: Any, tmp_path: Any,
                                               rng: np.random.Generator) -> None:
    model = layers[1]()
    a, b = rng.standard_normal((5, 4)).astype(F32), rng.standard_normal((5, 2)).astype(F32)
    want = model(a, b).data
    nnf = tmp_path / "pair.nnf"
    nf.save(model, nnf, input_shape=[(4,), (2,)])
    # from the Module with one shape per input, and from the saved file's manifest
    for src, kwargs in ((model, {"input_shape": [(4,), (2,)]}), (nnf, {})):
        path = tmp_path / "pair.onnx"
        export(src, path, **kwargs)
        oracle = _ort(path)
        assert [(i.name, i.shape) for i in oracle.get_inputs()] == [("input_0", ["N", 4]),
                                                                     ("input_1", ["N", 2])]
        _close(oracle.run(None, {"input_0": a, "input_1": b})[0], want)
        graph = load(path)
        assert graph.input_names == ["input_0", "input_1"]
        _close(InferenceSession(graph).run([a, b]), want)
