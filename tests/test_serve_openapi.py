"""/openapi.json is a document clients can resolve: every $ref names a schema it defines."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, Iterator

import httpx

import nnforge as nf
from nnforge import nn
from nnforge.serve.batcher import BatchingConfig
from nnforge.serve.config import ServeConfig
from nnforge.serve.core import InferenceServer
from nnforge.serve.http_app import ServeApp
from nnforge.serve.logs import AccessLog
from nnforge.serve.metrics import ServerMetrics
from nnforge.serve.repository import ModelRepository


def _refs(node: Any) -> Iterator[str]:
    """Every $ref value anywhere in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _refs(value)


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    """The target of a local JSON pointer (#/a/b), or KeyError."""
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    return node


def _openapi(root: Path) -> dict[str, Any]:
    async def main() -> dict[str, Any]:
        repo = ModelRepository(root, ServerMetrics(), BatchingConfig(max_batch_size=4))
        await repo.sync()
        server = InferenceServer(ServeConfig(path=str(root)), repo, repo.metrics,
                                 AccessLog(enabled=False))
        try:
            transport = httpx.ASGITransport(app=ServeApp(server))
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                r = await c.get("/openapi.json")
                assert r.status_code == 200, r.text
                return r.json()
        finally:
            await repo.close()
    return asyncio.run(main())


def test_every_ref_in_openapi_resolves(tmp_path: Path) -> None:
    (tmp_path / "m" / "1").mkdir(parents=True)
    nf.save(nn.Sequential(nn.Linear(3, 2)), tmp_path / "m" / "1" / "model.nnf",
            task="regression")
    doc = _openapi(tmp_path)
    refs = sorted(set(_refs(doc)))
    missing = []
    for ref in refs:
        try:
            _resolve(doc, ref)
        except (KeyError, TypeError):
            missing.append(ref)
    assert not missing, f"unresolved $refs: {missing}"
    # the inference bodies were the ones left undefined
    assert {"#/components/schemas/SimpleRequest", "#/components/schemas/V2InferRequest"} <= \
        set(refs)
    body = doc["paths"]["/v2/models/{model}/infer"]["post"]["requestBody"]
    target = _resolve(doc, body["content"]["application/json"]["schema"]["$ref"])
    assert target["required"] == ["inputs"]
