"""Small helpers shared by several test files (import: `from helpers import ...`)."""

from __future__ import annotations

import threading
from typing import Any, Callable

import numpy as np

import nnforge as nf
from nnforge import nn


def eager(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """The model's eval-mode forward on x, as a plain array."""
    model.eval()
    with nf.no_grad():
        return model(x).data


def assert_close(got: np.ndarray, expected: np.ndarray, rtol: float) -> None:
    """Equal to rtol, relative to each value or to the output's scale (float32 sums)."""
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=rtol,
                               atol=rtol * max(1.0, float(np.abs(expected).max())))


def check_everywhere(model: nn.Module, sample: tuple[int, ...], tmp_path: Any,
                     input_shape: tuple[int, ...] | None = None) -> None:
    """Sessions at every level (one trace each) and ONNX Runtime equal the eager forward at
    batch sizes 1, 3 and 17."""
    import onnxruntime as ort  # noqa: PLC0415 - only the tests that export pay for it

    from nnforge.onnx import export  # noqa: PLC0415

    rng = np.random.default_rng(7)
    xs = [rng.standard_normal((n, *sample)).astype(np.float32) for n in (1, 3, 17)]
    for level in ("none", "basic", "all"):
        session = nf.InferenceSession(model, optimization=level, input_shape=input_shape)
        for x in xs:
            assert_close(session.run(x), eager(model, x), 1e-6)
    path = tmp_path / "model.onnx"
    export(model, path, input_shape=input_shape)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for x in xs:
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
        assert_close(got, eager(model, x).astype(got.dtype), 1e-5)


def stats_bn(cls: type, c: int, rng: np.random.Generator) -> nn.Module:
    """A batch-norm layer with non-trivial running statistics and affine parameters."""
    bn = cls(c, eps=1e-3)
    bn.weight.data[...] = rng.random(c) + 0.5
    bn.bias.data[...] = rng.standard_normal(c)
    bn.running_mean = rng.standard_normal(c).astype(np.float32)
    bn.running_var = (rng.random(c) + 0.5).astype(np.float32)
    return bn


def run_in_threads(target: Callable[[int], None], n: int) -> None:
    """Run target(0) .. target(n - 1) on n threads at once and wait for them all."""
    threads = [threading.Thread(target=target, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class GatedPair(nn.Module):
    """forward(a, b): features of two widths, one gating the other."""

    def __init__(self) -> None:
        super().__init__()
        self.fa, self.fb = nn.Linear(4, 3), nn.Linear(2, 3)

    def forward(self, a: nf.Tensor, b: nf.Tensor) -> nf.Tensor:
        return self.fa(a) * self.fb(b).sigmoid()

    def get_config(self) -> dict[str, Any]:
        return {}


def run_cli(capsys: Any, *args: object) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `nnforge ARGS`, run in-process."""
    from nnforge.cli import main  # noqa: PLC0415

    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def serve_in_process(root: Any, check: Callable[..., Any], max_batch_size: int = 4,
                     log_failures: bool = True, **config: Any) -> None:
    """Load a model repository, await check(client, server) against the ASGI app in this
    process (no socket), then close the repository; config: ServeConfig settings."""
    import asyncio  # noqa: PLC0415 - the serving stack loads only for tests that serve

    import httpx  # noqa: PLC0415

    from nnforge.serve.batcher import BatchingConfig  # noqa: PLC0415
    from nnforge.serve.config import ServeConfig  # noqa: PLC0415
    from nnforge.serve.core import InferenceServer  # noqa: PLC0415
    from nnforge.serve.http_app import ServeApp  # noqa: PLC0415
    from nnforge.serve.logs import AccessLog  # noqa: PLC0415
    from nnforge.serve.metrics import ServerMetrics  # noqa: PLC0415
    from nnforge.serve.repository import ModelRepository  # noqa: PLC0415

    async def main() -> None:
        repo = ModelRepository(root, ServerMetrics(), BatchingConfig(max_batch_size=max_batch_size))
        await repo.sync(log_failures=log_failures)
        server = InferenceServer(ServeConfig(path=str(root), **config), repo, repo.metrics,
                                 AccessLog(enabled=False))
        transport = httpx.ASGITransport(app=ServeApp(server))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                await check(c, server)
        finally:
            await repo.close()
    asyncio.run(main())
