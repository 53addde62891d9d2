"""`nnforge --import MODULE`: commands and the server use models with a user's custom layers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from nnforge.serve.testing import ServerProcess

LAYERS = '''
from nnforge import nn


@nn.register_layer
class Double(nn.Module):
    """Doubles its input: a layer only this module registers."""

    def forward(self, x):
        return x * 2

    def get_config(self):
        return {}
'''

SAVE = '''
import nnforge as nf
from nnforge import nn
import mylayers

nf.save(nn.Sequential(nn.Linear(3, 2), mylayers.Double()), "custom.nnf")
'''


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with mylayers.py under plug/ (not the cwd) and custom.nnf using its layer."""
    root = tmp_path_factory.mktemp("plugins")
    (root / "plug").mkdir()
    (root / "plug" / "mylayers.py").write_text(LAYERS)
    (root / "rows.csv").write_text("a,b,c\n1,2,3\n0,0,0\n")
    subprocess.run([sys.executable, "-c", SAVE], cwd=root, check=True,
                   env={**os.environ, "PYTHONPATH": str(root / "plug")})
    return root


def _nnforge(work: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(work / "plug")}
    return subprocess.run([sys.executable, "-m", "nnforge", *args], cwd=work, env=env,
                          capture_output=True, text=True, timeout=120)


def test_without_import_the_error_names_the_option(work: Path) -> None:
    r = _nnforge(work, "info", "custom.nnf")
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1
    assert "unknown layer type 'Double'" in r.stderr
    assert "nnforge --import MODULE COMMAND" in r.stderr and "ONNX" in r.stderr


def test_import_registers_the_layers_for_info_and_predict(work: Path) -> None:
    r = _nnforge(work, "--import", "mylayers", "info", "custom.nnf")
    assert r.returncode == 0, r.stderr
    assert "Double" in r.stdout
    r = _nnforge(work, "--import=mylayers", "--import", "json", "predict", "custom.nnf",
                 "--input", "rows.csv", "--output", "out.csv")
    assert r.returncode == 0, r.stderr
    assert len((work / "out.csv").read_text().splitlines()) == 3


@pytest.mark.parametrize("args, message", [
    (["--import", "no_such_module", "info", "custom.nnf"],
     "--import no_such_module: cannot import it (ModuleNotFoundError: No module named "
     "'no_such_module')"),
    (["--import"], "--import: expected a module name"),
    (["--import", "--version"], "--import: expected a module name"),
])
def test_a_module_that_fails_to_import_is_one_line_exit_2(work: Path, args: list[str],
                                                         message: str) -> None:
    r = _nnforge(work, *args)
    assert r.returncode == 2
    assert r.stderr.count("\n") == 1 and message in r.stderr


@pytest.mark.parametrize("workers", [[], ["--workers", "2"]])
def test_serve_imports_the_module_in_every_worker(work: Path, workers: list[str]) -> None:
    env = {"PYTHONPATH": str(work / "plug")}
    argv = ["--import", "mylayers", str(work / "custom.nnf"), *workers, "--no-grpc"]
    with ServerProcess(argv, env=env) as srv:
        body = json.dumps({"data": [[1, 2, 3]]}).encode()
        for _ in range(4):  # several requests: each worker answers some
            with urllib.request.urlopen(f"{srv.url}/predict", body, timeout=30) as resp:
                assert resp.status == 200
                assert len(json.loads(resp.read())["predictions"][0]["values"]) == 2
