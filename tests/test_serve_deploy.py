"""deploy/: the Dockerfile and the Kubernetes manifests, checked without Docker or a cluster."""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

import pytest
import yaml

import nnforge as nf
from nnforge import nn
from nnforge.serve import cli as serve_cli
from nnforge.serve.api import build_api
from nnforge.serve.batcher import BatchingConfig
from nnforge.serve.config import ServeConfig
from nnforge.serve.core import InferenceServer
from nnforge.serve.logs import AccessLog
from nnforge.serve.metrics import ServerMetrics
from nnforge.serve.repository import ModelRepository

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
KEYWORDS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
            "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}


def dockerfile() -> list[tuple[str, str]]:
    """(instruction, arguments) with continuation lines joined and comments dropped."""
    lines, current = [], ""
    for raw in (DEPLOY / "Dockerfile").read_text().splitlines():
        if not current and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        current += raw.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        word, _, rest = current.strip().partition(" ")
        lines.append((word, rest.strip()))
        current = ""
    assert not current, "a continuation line runs off the end"
    return lines


def manifests() -> dict[str, dict]:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / "nnforge-serve.yaml").read_text()))
    return {d["kind"]: d for d in docs if d}


@pytest.fixture(scope="module")
def routes(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    path = tmp_path_factory.mktemp("deploy") / "m.nnf"
    nf.save(nn.Sequential(nn.Linear(2, 2)), path, task="multiclass")
    cfg = ServeConfig(path=str(path))
    server = InferenceServer(cfg, ModelRepository(path, ServerMetrics(), BatchingConfig()),
                             ServerMetrics(), AccessLog(enabled=False))

    async def unused(*_: object) -> None:
        raise AssertionError

    return set(build_api(server, unused).openapi()["paths"])


def serve_args(args: list[str]) -> ServeConfig:
    parser = argparse.ArgumentParser()
    serve_cli.add_arguments(parser)
    return serve_cli.build_config(parser.parse_args(args))


def test_dockerfile_is_slim_non_root_and_checks_readiness(routes: set[str]) -> None:
    lines = dockerfile()
    assert all(word in KEYWORDS for word, _ in lines), [w for w, _ in lines if w not in KEYWORDS]
    assert lines[0][0] == "FROM"
    stages = [rest for word, rest in lines if word == "FROM"]
    assert all("slim" in s for s in stages), stages
    final = lines[max(i for i, (w, _) in enumerate(lines) if w == "FROM"):]
    users = [rest for word, rest in final if word == "USER"]
    assert users and users[-1] not in ("root", "0"), "the server must not run as root"
    (check,) = [rest for word, rest in final if word == "HEALTHCHECK"]
    assert "--interval=" in check and "CMD" in check
    assert "/v2/health/ready" in check and "/v2/health/ready" in routes
    exposed = {p for word, rest in final if word == "EXPOSE" for p in rest.split()}
    assert exposed == {"8000", "8001"}
    (entry,) = [json.loads(rest) for word, rest in final if word == "ENTRYPOINT"]
    (cmd,) = [json.loads(rest) for word, rest in final if word == "CMD"]
    assert entry == ["nnforge", "serve"]
    cfg = serve_args(cmd)
    assert (cfg.host, cfg.port, cfg.grpc_port) == ("0.0.0.0", 8000, 8001)
    for word, rest in final:
        if word == "RUN":
            shlex.split(rest)  # balanced quotes


def test_kubernetes_manifests(routes: set[str]) -> None:
    docs = manifests()
    assert set(docs) == {"Deployment", "Service", "HorizontalPodAutoscaler"}
    for doc in docs.values():
        assert doc["apiVersion"] and doc["metadata"]["name"] == "nnforge-serve"
    deploy = docs["Deployment"]
    assert deploy["apiVersion"] == "apps/v1"
    pod = deploy["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    notes = pod["metadata"]["annotations"]
    assert notes["prometheus.io/scrape"] == "true" and notes["prometheus.io/path"] == "/metrics"
    assert "/metrics" in routes
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    (container,) = spec["containers"]
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    cfg = serve_args(container["args"])
    assert (cfg.port, cfg.grpc_port, cfg.host) == (ports["http"], ports["grpc"], "0.0.0.0")
    assert cfg.shutdown_grace_s < spec["terminationGracePeriodSeconds"]
    for probe, path in (("readinessProbe", "/v2/health/ready"),
                        ("livenessProbe", "/v2/health/live"),
                        ("startupProbe", "/v2/health/ready")):
        get = container[probe]["httpGet"]
        assert get["path"] == path and path in routes and get["port"] in ports
    assert container["resources"]["requests"] and container["resources"]["limits"]
    mounts = {m["name"] for m in container["volumeMounts"]}
    assert mounts <= {v["name"] for v in spec["volumes"]}
    service = docs["Service"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert {p["targetPort"] for p in service["spec"]["ports"]} <= set(ports)
    hpa = docs["HorizontalPodAutoscaler"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deploy["metadata"]["name"])
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
