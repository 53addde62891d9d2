"""`nnforge predict` on hostile input files: one clear line, no traceback, nothing read whole
that would not fit (audit finding F6)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli

import nnforge as nf
from nnforge import nn
from nnforge.cli import inputlimits
from nnforge.data import write_idx


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("limits") / "m.nnf"
    nf.manual_seed(0)
    nf.save(nn.Sequential(nn.Linear(4, 3)), path, task="multiclass")
    return path


def fails_with(capsys: pytest.CaptureFixture, model: Path, path: Path, *pattern: str) -> None:
    code, out, err = run_cli(capsys, "predict", model, "--input", path)
    assert code != 0 and out == ""
    line = err.strip()
    assert "\n" not in line and "internal error" not in line and "Traceback" not in err
    for p in pattern:
        assert p in line, line


@pytest.mark.parametrize("text, words", [
    ("[" * 100_000 + "]" * 100_000, ("nested too deeply",)),
    ("[[" + "9" * 4000 + ", 1, 2, 3]]", ("too large",)),
    ("[[" + "9" * 5000 + ", 1, 2, 3]]", ("a number JSON cannot be read",)),
])
def test_json_inputs_that_break_the_parser_get_one_line(
        capsys: pytest.CaptureFixture, model: Path, tmp_path: Path, text: str,
        words: tuple[str, ...]) -> None:
    path = tmp_path / "in.json"
    path.write_text(text)
    fails_with(capsys, model, path, str(path), *words)


def test_npz_members_over_the_budget_are_refused_before_reading(
        capsys: pytest.CaptureFixture, model: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the audit's bomb: 2.9 MB deflated to 3 GB of zeros; here 64 KiB over a 16 KiB budget
    monkeypatch.setattr(inputlimits, "MAX_WHOLE_INPUT_BYTES", 2**14)
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, X=np.zeros((4096, 4), np.float32))
    assert path.stat().st_size < 2**12
    fails_with(capsys, model, path, "member 'X' declares shape (4096, 4)", ".npy or CSV")


def test_gzip_idx_over_the_budget_is_refused_before_reading(
        capsys: pytest.CaptureFixture, model: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inputlimits, "MAX_WHOLE_INPUT_BYTES", 2**14)
    path = tmp_path / "bomb.idx.gz"
    write_idx(path, np.zeros((4096, 4), np.uint8))
    fails_with(capsys, model, path, "IDX header declares shape (4096, 4)")


def test_an_npz_member_claiming_more_than_it_holds_is_called_truncated(
        capsys: pytest.CaptureFixture, model: Path, tmp_path: Path) -> None:
    # the audit's 184-byte file claimed 4 GB and was reported as "out of memory"
    head = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        head, {"descr": "<f4", "fortran_order": False, "shape": (1000, 4)})
    path = tmp_path / "short.npz"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("X.npy", head.getvalue() + bytes(16))
    fails_with(capsys, model, path, "more data than the file holds", "truncated")


def test_inputs_within_the_budget_still_predict(capsys: pytest.CaptureFixture, model: Path,
                                                tmp_path: Path) -> None:
    path = tmp_path / "ok.npz"
    np.savez_compressed(path, X=np.ones((3, 4), np.float32))
    code, out, _ = run_cli(capsys, "predict", model, "--input", path)
    assert code == 0 and len(out.strip().splitlines()) == 4  # header and 3 rows


# -- F7: `nnforge info` warns of weights that are not numbers -----------------------------------
def test_info_warns_of_nan_weights(capsys: pytest.CaptureFixture, tmp_path: Path) -> None:
    net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    net[2].weight.data[0, 0] = np.nan
    path = tmp_path / "nan.nnf"
    nf.save(net, path, task="multiclass")
    code, out, _ = run_cli(capsys, "info", path)
    assert code == 0 and "weights hold NaN/Inf (layer 2)" in out
    code, out, _ = run_cli(capsys, "info", path, "--json")
    assert code == 0 and '"weights hold NaN/Inf' in out
    clean = tmp_path / "ok.nnf"
    nf.save(nn.Sequential(nn.Linear(4, 3)), clean, task="multiclass")
    assert "NaN/Inf" not in run_cli(capsys, "info", clean)[1]


def test_the_whole_input_budget_follows_the_machine_and_train_gets_no_predict_hint(
        capsys: pytest.CaptureFixture, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A fixed 2 GiB refused honest 2.2 GiB (as float32) training sets that used to train, and
    told train to use .npy, which train does not read."""
    assert inputlimits.whole_input_budget() >= 2 * 2**30
    monkeypatch.setattr(inputlimits, "MAX_WHOLE_INPUT_BYTES", 2**14)
    path = tmp_path / "big.npz"
    np.savez_compressed(path, X=np.zeros((4096, 4), np.float32), y=np.zeros(4096, np.int64))
    code, _, err = run_cli(capsys, "train", "--data", path, "-o", tmp_path / "m.nnf")
    assert code == 1 and "read whole" in err and ".npy" not in err, err
