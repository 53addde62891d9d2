"""The server serves .onnx files found in the model repository like native models."""

from __future__ import annotations

import httpx
import numpy as np

import nnforge as nf
import nnforge.onnx as nfonnx
from nnforge import nn
from nnforge.serve.testing import ServerProcess


def test_repository_serves_an_onnx_version_like_the_session(tmp_path):
    nf.manual_seed(3)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    native = tmp_path / "clf.nnf"
    nf.save(model, native, task="multiclass", labels=["a", "b", "c"])
    version = tmp_path / "repo" / "clf" / "2"
    version.mkdir(parents=True)
    nfonnx.export(native, version / "model.onnx")
    rows = np.random.default_rng(0).standard_normal((5, 8)).astype(np.float32)
    want = nf.InferenceSession(version / "model.onnx").predict(rows)
    np.testing.assert_allclose(want.probabilities,
                               nf.InferenceSession(native).predict(rows).probabilities,
                               rtol=1e-5)
    with ServerProcess([str(tmp_path / "repo"), "--no-grpc"]) as srv:
        meta = httpx.get(f"{srv.url}/v2/models/clf", timeout=30).json()
        assert meta["versions"] == ["2"]
        r = httpx.post(f"{srv.url}/v1/models/clf:predict",
                       json={"instances": rows.tolist()}, timeout=30)
        assert r.status_code == 200, r.text
        preds = r.json()["predictions"]
    assert [p["class"] for p in preds] == want.classes.tolist()
    assert [p["label"] for p in preds] == want.labels
    np.testing.assert_allclose([p["probabilities"] for p in preds], want.probabilities,
                               rtol=1e-5)
