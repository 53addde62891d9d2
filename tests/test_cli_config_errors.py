"""Every mistake in a config file (`nnforge train --config`, `nnforge serve --config`) names
the file and the setting it came from, on one line."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from nnforge.cli import main
from nnforge.cli.config import DEFAULTS, resolve_settings
from nnforge.errors import ConfigError
from nnforge.serve import cli as serve_cli

FLAGS = {k: None for k in DEFAULTS}


def _serve_config(path: Path) -> object:
    parser = argparse.ArgumentParser()
    serve_cli.add_arguments(parser)
    return serve_cli.build_config(parser.parse_args(["m.nnf", "--config", str(path)]))


@pytest.mark.parametrize("name, text, words", [
    ("serve.yaml", "version_policy: newest\n",
     ["version_policy: expected a version policy", "'newest'"]),
    ("serve.toml", 'version_policy = "latest:0"\n', ["version_policy", "'latest:0'"]),
    ("serve.json", '{"log_level": "loud"}', ["log_level", "'loud'"]),
    ("serve.json", '{"port": "http"}', ["port", "'http'"]),
    ("serve.yaml", "imports: pkg.layers\n", ["imports", "pkg.layers"]),
    ("serve.yaml", "batching:\n  compute: gpu\n", ["batching.compute", "'gpu'"]),
])
def test_serve_config_errors_name_the_file_and_the_setting(tmp_path: Path, name: str,
                                                           text: str, words: list[str]
                                                           ) -> None:
    """validate()'s messages named the setting at most, never the file it came from."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        _serve_config(path)
    assert str(err.value).startswith(f"'{path}': "), err.value
    for word in words:
        assert word in str(err.value), err.value


def test_a_config_files_import_that_fails_names_the_file(tmp_path: Path, capsys,  # noqa: ANN001
                                                         monkeypatch: pytest.MonkeyPatch
                                                         ) -> None:
    """It said '--import no_such_mod' (a flag nobody gave) and exited 2 as for a usage error."""
    from nnforge.serve import server  # noqa: PLC0415

    def never(*_: object) -> None:
        raise AssertionError("the server must not start")

    monkeypatch.setattr(server, "run", never)
    path = tmp_path / "serve.yaml"
    path.write_text("imports: [nnforge_no_such_module_here]\n")
    code = main(["serve", str(tmp_path), "--config", str(path), "--port", "0", "--no-grpc"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert f"'{path}': imports: nnforge_no_such_module_here: cannot import it" in err


def test_train_config_errors_name_the_file_and_the_nested_key(tmp_path: Path) -> None:
    path = tmp_path / "train.yaml"
    for text, words in (
            ("dataset: iris\noptimizer: {name: newest}\n",
             ["setting 'optimizer.name'", "'newest'"]),
            ("dataset: iris\noptimizer: {type: sgd, lr: -1}\n", ["setting 'optimizer.lr'"]),
            ("dataset: iris\nepochs: many\n", ["setting 'epochs'", "'many'"])):
        path.write_text(text)
        with pytest.raises(ConfigError) as err:
            resolve_settings(FLAGS, str(path))
        assert str(err.value).startswith(f"{path}: "), err.value
        for word in words:
            assert word in str(err.value), err.value


def test_a_config_files_architecture_errors_name_the_file(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    """The layer registry's errors named the layer but not the config file holding it."""
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"dataset": "iris", "architecture": {"type": "Nope"}}))
    with pytest.raises(ConfigError, match=r"train.json: setting 'architecture': unknown layer "
                                          r"type 'Nope'"):
        resolve_settings(FLAGS, str(path))
    path.write_text(json.dumps({"dataset": "iris", "architecture": "missing.json"}))
    assert main(["train", "--config", str(path), "-o", str(tmp_path / "m.nnf")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.json: setting 'architecture': expected an " \
        "architecture JSON file at 'missing.json'" in err, err
