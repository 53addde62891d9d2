"""Op-level tracing of forwards that call the functional conv, pool and batch-norm ops: the
same nodes as the layers, the same optimizations, the same numbers as eager and ONNX Runtime."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from helpers import check_everywhere, eager, stats_bn

import nnforge as nf
from nnforge import nn
from nnforge.errors import ConfigError
from nnforge.graph.trace import lowered_layers, trace
from nnforge.nn.module import Parameter
from nnforge.ops import conv as C
from nnforge.ops import pool as P
from nnforge.ops.conv_pool import conv_max_pool2d
from nnforge.ops.linear import linear
from nnforge.ops.loss import mse_loss
from nnforge.ops.norm import batch_norm
from nnforge.ops.shape import flatten

LEVELS = ("none", "basic", "all")


class _Functional(nn.Module):
    """Holds a layer twin's weights as its own parameters and buffers (the same values)."""

    def __init__(self, twin: nn.Sequential) -> None:
        super().__init__()
        for i, layer in enumerate(twin):
            for k in ("weight", "bias"):
                p = getattr(layer, k, None)
                if p is not None:
                    setattr(self, f"{k}{i}", Parameter(p.data.copy()))
            if getattr(layer, "running_mean", None) is not None:
                self.register_buffer(f"mean{i}", layer.running_mean.copy())
                self.register_buffer(f"var{i}", layer.running_var.copy())

    def p(self, k: str, i: int) -> Any:
        return getattr(self, f"{k}{i}", None)


class CNN(_Functional):
    """conv2d, batch_norm (running statistics), relu, max_pool2d, conv2d (stride 2), relu,
    avg_pool2d (padded, ceil_mode), flatten, linear."""

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        p = self.p
        h = C.conv2d(x, p("weight", 0), p("bias", 0), padding=1)
        h = batch_norm(h, p("weight", 1), p("bias", 1), self.mean1, self.var1, training=False,
                       eps=1e-3)
        h = P.max_pool2d(h.relu(), 2)
        h = C.conv2d(h, p("weight", 4), None, stride=2, padding=1).relu()
        h = P.avg_pool2d(h, 2, 1, 1, count_include_pad=False, ceil_mode=True)
        return linear(flatten(h, 1), p("weight", 8), p("bias", 8))


def cnn_twin(rng: np.random.Generator) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), stats_bn(nn.BatchNorm2d, 4, rng),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 5, 3, 2, 1, bias=False),
                         nn.ReLU(), nn.AvgPool2d(2, 1, 1, True, False), nn.Flatten(),
                         nn.Linear(5 * 4 * 4, 3))


class CNN1d(_Functional):
    """conv1d ("same", even kernel: pads 1 + 2), batch_norm, relu, max_pool1d (ceil_mode),
    conv1d (stride 2, dilation 2), avg_pool1d (padded), flatten, linear."""

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        p = self.p
        h = C.conv1d(x, p("weight", 0), p("bias", 0), padding="same")
        h = batch_norm(h, p("weight", 1), p("bias", 1), self.mean1, self.var1, training=False,
                       eps=1e-3)
        h = P.max_pool1d(h.relu(), 2, ceil_mode=True)
        h = C.conv1d(h, p("weight", 4), p("bias", 4), stride=2, padding=1, dilation=2)
        h = P.avg_pool1d(h, 3, 1, 1, count_include_pad=False)
        return linear(flatten(h, 1), p("weight", 7), p("bias", 7))


def cnn1d_twin(rng: np.random.Generator) -> nn.Sequential:
    return nn.Sequential(nn.Conv1d(2, 4, 4, padding="same"), stats_bn(nn.BatchNorm1d, 4, rng),
                         nn.ReLU(), nn.MaxPool1d(2, ceil_mode=True),
                         nn.Conv1d(4, 3, 3, stride=2, padding=1, dilation=2),
                         nn.AvgPool1d(3, 1, 1, count_include_pad=False), nn.Flatten(),
                         nn.Linear(3 * 2, 2))


CASES = {"2d": (CNN, cnn_twin, (3, 10, 10)), "1d": (CNN1d, cnn1d_twin, (2, 11))}


@pytest.mark.parametrize("case", CASES)
def test_functional_forward_matches_eager_everywhere(case: str, tmp_path: Any) -> None:
    make, twin, sample = CASES[case]
    check_everywhere(make(twin(np.random.default_rng(0))), sample, tmp_path,
                     input_shape=sample)


@pytest.mark.parametrize("case", CASES)
def test_functional_ops_lower_as_the_layers_and_optimize_alike(case: str) -> None:
    make, twin_of, sample = CASES[case]
    twin = twin_of(np.random.default_rng(0))
    model = make(twin)
    x = np.random.default_rng(1).standard_normal((4, *sample)).astype(np.float32)
    np.testing.assert_allclose(eager(model, x), eager(twin, x), rtol=1e-5, atol=1e-5)
    # the same ONNX nodes with the same attributes (Conv, BatchNormalization, pools, ...)
    assert [(n.op, n.attrs) for n in trace(model, (None, *sample)).nodes] == \
        [(n.op, n.attrs) for n in trace(twin, (None, *sample)).nodes]
    for level in LEVELS:  # so BatchNorm folding and Conv + Relu fusion fire in both
        ops = nf.InferenceSession(model, optimization=level, input_shape=sample).graph
        want = nf.InferenceSession(twin, optimization=level, input_shape=sample).graph
        assert ops.count_ops() == want.count_ops(), level
    assert "BatchNormalization" not in ops.count_ops()


class Head(nn.Module):
    """conv2d, global_avg_pool2d, flatten, linear; and the fused conv + max pool op."""

    def __init__(self, fused: bool) -> None:
        super().__init__()
        self.fused = fused
        rng = np.random.default_rng(2)
        self.conv = Parameter(rng.standard_normal((4, 3, 3, 3)).astype(np.float32))
        self.fc = Parameter(rng.standard_normal((2, 4)).astype(np.float32))

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        if self.fused:
            h = conv_max_pool2d(x, self.conv, None, (2, 2), padding=1)
        else:
            h = C.conv2d(x, self.conv, padding=1)
        return linear(flatten(P.global_avg_pool2d(h), 1), self.fc)


@pytest.mark.parametrize("fused", [False, True])
def test_global_average_pool_and_fused_conv_pool_are_traced(fused: bool, tmp_path: Any) -> None:
    model = Head(fused)
    pool = ["MaxPool"] if fused else []
    assert [n.op for n in trace(model, (None, 3, 6, 6)).nodes] == \
        ["Conv", *pool, "GlobalAveragePool", "Flatten", "Gemm"]
    check_everywhere(model, (3, 6, 6), tmp_path, input_shape=(3, 6, 6))


class BatchStatistics(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.g, self.b = Parameter(np.ones(3, np.float32)), Parameter(np.zeros(3, np.float32))

    def forward(self, x: nf.Tensor) -> nf.Tensor:
        mean, var = x.data.mean(axis=0), x.data.var(axis=0)
        return batch_norm(x, self.g, self.b, mean, var, training=True)


class WithLoss(nn.Module):
    def forward(self, x: nf.Tensor) -> nf.Tensor:
        return mse_loss(x * 2.0, x)


def test_batch_statistics_and_losses_are_refused_by_name() -> None:
    with pytest.raises(ConfigError, match=r"op BatchNorm in module <root>: batch normalisation "
                                          r"on the statistics of the batch.*training=False"):
        trace(BatchStatistics(), (None, 3))
    with pytest.raises(ConfigError, match=r"op MSE in module <root>: a loss belongs to "
                                          r"training.*outside"):
        trace(WithLoss(), (None, 3))


def test_layers_lowered_by_their_op_name_their_output_after_the_layer() -> None:
    model = nn.Sequential(nn.Conv1d(2, 3, 3), nn.MaxPool1d(2), nn.SiLU(), nn.LayerNorm(3))
    graph = trace(model, (None, 2, 9))
    assert [(n.op, n.name) for n in graph.nodes] == [
        ("Conv", "0"), ("MaxPool", "1"), ("Sigmoid", "2/sigmoid1"), ("Mul", "2"),
        ("LayerNormalization", "3")]
    assert sorted(graph.initializers) == ["0.bias", "0.weight", "3.bias", "3.weight"]
    assert {"Conv1d", "MaxPool1d", "AvgPool2d", "SiLU", "LayerNorm", "Linear"} <= \
        set(lowered_layers())  # what an unknown layer's error lists
