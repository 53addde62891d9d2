"""Damaged, truncated, tampered and hostile `.nnf` files each fail with one clear ModelFileError."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from nnforge import nn
from nnforge.errors import ModelFileError
from nnforge.io import load, load_checkpoint, read_manifest, read_weights, save
from nnforge.io import model_file as mf
from nnforge.io.safetensors_format import serialize
from nnforge.nn.module import LAYER_REGISTRY, register_layer


def _model() -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, 6), nn.ReLU(), nn.Linear(6, 3))


@pytest.fixture
def good(tmp_path) -> Path:
    path = tmp_path / "good.nnf"
    save(_model(), path, task="multiclass", labels=["a", "b", "c"])
    return path


def _entries(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


def _write_zip(path: Path, entries: dict[str, bytes] | list[tuple[str, bytes]],
               method: int = zipfile.ZIP_STORED) -> Path:
    items = entries.items() if isinstance(entries, dict) else entries
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate names we craft
        with zipfile.ZipFile(path, "w", method) as zf:
            for name, data in items:
                zf.writestr(zipfile.ZipInfo(name), data, compress_type=method)
    return path


def _rewrite(path: Path, changes: dict[str, bytes | None] | None = None,
             manifest_edit: Callable[[dict[str, Any]], None] | None = None) -> Path:
    """Apply entry changes (None deletes) and recompute the manifest's checksums honestly."""
    entries = _entries(path)
    for name, data in (changes or {}).items():
        if data is None:
            entries.pop(name)
        else:
            entries[name] = data
    manifest = json.loads(entries["manifest.json"])
    manifest["checksums"] = {n: "sha256:" + hashlib.sha256(d).hexdigest()
                             for n, d in entries.items() if n != "manifest.json"}
    if manifest_edit:
        manifest_edit(manifest)
    entries["manifest.json"] = json.dumps(manifest).encode()
    return _write_zip(path, entries)


def _error(path: Path, reader: Callable[[Path], Any] = load) -> str:
    """The message of the one ModelFileError reading `path` raises (no chained low-level error)."""
    with pytest.raises(ModelFileError) as info:
        reader(path)
    exc = info.value
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)
    assert "\n" not in str(exc)
    return str(exc)


def _data_span(path: Path, name: str) -> tuple[int, int]:
    """(start, end) of an entry's bytes inside the file."""
    raw = path.read_bytes()
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(name)
    off = info.header_offset
    n, m = struct.unpack("<2H", raw[off + 26:off + 30])
    return off + 30 + n + m, off + 30 + n + m + info.file_size


def _flip(path: Path, pos: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[pos] ^= 0x01
    path.write_bytes(bytes(raw))


def _patch_central(path: Path, name: str, fmt: str, at: int, value: int) -> None:
    """Overwrite one field of an entry's central directory record."""
    raw = bytearray(path.read_bytes())
    pos = raw.index(b"PK\x01\x02")
    while raw[pos + 46:pos + 46 + len(name)] != name.encode():
        pos = raw.index(b"PK\x01\x02", pos + 4)
    struct.pack_into(fmt, raw, pos + at, value)
    path.write_bytes(bytes(raw))


# -- not a model file at all -------------------------------------------------------------------
def test_missing_file(tmp_path):
    assert "not found" in _error(tmp_path / "nope.nnf")


def test_directory_empty_file_and_device(tmp_path):
    assert "is a directory" in _error(tmp_path)
    (tmp_path / "empty.nnf").write_bytes(b"")
    assert "is empty" in _error(tmp_path / "empty.nnf")
    assert "not a regular file" in _error(Path(os.devnull))


def test_not_a_path(good):
    with open(good, "rb") as f:
        assert "expected the path of an nnforge model file, found BufferedReader" in _error(f)


def test_garbage_bytes(tmp_path, rng):
    path = tmp_path / "junk.nnf"
    path.write_bytes(rng.bytes(5000))
    assert "is not an nnforge model file (not a zip archive)" in _error(path)


def test_a_zip_without_manifest(tmp_path):
    path = _write_zip(tmp_path / "other.zip", {"readme.txt": b"hello"})
    assert "is not an nnforge model file (it has no manifest.json)" in _error(path)


@pytest.mark.parametrize("keep", [0.05, 0.5, 0.95, -1])
def test_truncated_file(good, keep):
    raw = good.read_bytes()
    good.write_bytes(raw[:len(raw) - 1] if keep == -1 else raw[:int(len(raw) * keep)])
    assert "truncated or damaged" in _error(good)


# -- damaged or tampered entries ---------------------------------------------------------------
@pytest.mark.parametrize("entry", ["weights.safetensors", "architecture.json"])
def test_flipped_byte_is_a_checksum_mismatch_naming_the_entry(good, entry):
    start, end = _data_span(good, entry)
    _flip(good, (start + end) // 2)
    msg = _error(good)
    assert "checksum mismatch" in msg and repr(entry) in msg


def test_flipped_byte_in_the_manifest_is_caught_by_its_crc(good):
    start, end = _data_span(good, "manifest.json")
    _flip(good, (start + end) // 2)
    msg = _error(good, read_manifest)
    assert "'manifest.json'" in msg and "CRC mismatch" in msg


def test_read_manifest_does_not_touch_the_weights(good):
    start, end = _data_span(good, "weights.safetensors")
    _flip(good, start + 100)
    assert read_manifest(good)["task"] == "multiclass"
    assert "checksum mismatch" in _error(good, read_weights)


def test_newer_format_version(good):
    _rewrite(good, manifest_edit=lambda m: m.update(format_version=2, new_field={"x": 1}))
    msg = _error(good, read_manifest)
    assert "written by format version 2" in msg and "reads up to 1; upgrade nnforge" in msg


@pytest.mark.parametrize("edit, words", [
    (lambda m: m.update(format_version="1"), "format_version '1'"),
    (lambda m: m.pop("checksums"), "'checksums'"),
    (lambda m: m.update(task="ranking"), "'task'"),
    (lambda m: m.update(inputs=[]), "'inputs'"),
    # the session indexes labels by class and traces with the input spec: checked at load
    (lambda m: m.update(labels=["a", "b"]), "needs 3 labels"),
    (lambda m: m.update(labels=[None, "b", "c"]), "strings or integers"),
    (lambda m: m.update(labels=["a", "a", "b"]), "distinct"),
    (lambda m: m["inputs"][0].update(name=""), "'inputs'"),
    (lambda m: m["inputs"][0].update(shape=[None, -8]), "'inputs'"),
    (lambda m: m["inputs"][0].update(shape=[None, "8"]), "'inputs'"),
    (lambda m: m["outputs"][0].update(dtype=None), "'outputs'"),
    (lambda m: m.update(preprocessing=5), "'preprocessing'"),
    # nnforge info and the server look inside these: a wrong type used to crash them there
    (lambda m: m.update(metrics="x"), "'metrics'"),
    (lambda m: m.update(metrics={"accuracy": "high"}), "'metrics'"),
    (lambda m: m.update(extra="x"), "'extra'"),
    (lambda m: m.update(num_parameters="x"), "'num_parameters'"),
    (lambda m: m["inputs"][0].update(shape=[None, 10**20]), "'inputs'"),
])
def test_malformed_manifest_fields(good, edit, words):
    _rewrite(good, manifest_edit=edit)
    assert words in _error(good)


def test_architecture_too_big_for_memory_is_a_model_file_error(good, monkeypatch):
    def huge(arch):  # what a Linear of 10**12 features does: no real allocation needed
        raise MemoryError
    monkeypatch.setattr(mf, "layer_from_architecture", huge)
    assert "more memory than there is" in _error(good)


def test_a_huge_declared_layer_fails_on_its_shape_without_touching_the_memory(good):
    # a Linear declaring 20000 x 20000 weights against the file's (6, 8): the layers are built
    # uninitialized, so nothing is drawn or written before the shape check (drawing them
    # used to fill 3.2 GB). Measured in a fresh process, whose peak memory is its own.
    arch = json.loads(_entries(good)["architecture.json"])
    arch["config"]["layers"][0]["config"].update(in_features=20_000, out_features=20_000)
    _rewrite(good, {"architecture.json": json.dumps(arch).encode()})
    code = ("import resource, sys\n"
            "from nnforge.errors import ModelFileError\n"
            "from nnforge.io import load\n"
            "try:\n    load(sys.argv[1])\nexcept ModelFileError as e:\n    print(e)\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)\n")
    out = subprocess.run([sys.executable, "-c", code, str(good)], capture_output=True,
                         text=True, check=True).stdout.splitlines()
    assert "the architecture needs (20000" in out[0]
    assert int(out[1]) < 400, f"peak memory {out[1]} MiB"


def test_manifest_that_is_not_json_or_not_an_object(good):
    entries = _entries(good)
    _write_zip(good, {**entries, "manifest.json": b'{"format_version": 1,'})
    assert "manifest.json" in (msg := _error(good)) and "not valid JSON" in msg
    _write_zip(good, {**entries, "manifest.json": b"[1, 2]"})
    assert "must be a JSON object" in _error(good)
    _write_zip(good, {**entries, "manifest.json": b'{"a": 1, "a": 2}'})
    assert "duplicate key 'a'" in _error(good)


@pytest.mark.parametrize("entry", ["architecture.json", "weights.safetensors"])
def test_missing_entry(good, entry):
    _rewrite(good, {entry: None})
    assert f"missing the entry {entry!r}" in _error(good)


def test_entry_listed_in_the_manifest_but_absent(good):
    entries = _entries(good)
    del entries["weights.safetensors"]
    _write_zip(good, entries)  # manifest still lists it
    assert "missing the entry 'weights.safetensors'" in _error(good)


@pytest.mark.parametrize("name", ["../x.txt", "/etc/evil", "a/../../b", "C:/evil", "..\\evil"])
def test_path_traversal_entry_names_are_refused(good, name):
    _rewrite(good, {name: b"owned"})
    assert "unsafe entry name" in _error(good) and repr(name) in _error(good)
    assert not (good.parent.parent / "x.txt").exists()


def test_duplicate_entry_names_are_refused(good):
    entries = list(_entries(good).items())
    _write_zip(good, [*entries, ("architecture.json", b'{"type": "Identity"}')])
    assert "contains the entry 'architecture.json' twice" in _error(good)


def test_compressed_entries_are_refused(good):
    _write_zip(good, _entries(good), method=zipfile.ZIP_DEFLATED)
    assert "is compressed (zip method 8)" in _error(good)


def test_absurd_declared_sizes_are_refused(good):
    size = good.stat().st_size
    _patch_central(good, "manifest.json", "<L", 20, 2**31 - 16)
    _patch_central(good, "manifest.json", "<L", 24, 2**31 - 16)
    msg = _error(good)
    assert "declares 2,147,483,632 bytes" in msg and f"holds {size:,}" in msg


def test_json_entries_over_the_size_limit_are_refused(good, monkeypatch):
    monkeypatch.setattr(mf, "MAX_JSON_BYTES", 100)
    assert "expected at most 100" in _error(good)


def test_encrypted_entries_are_refused(good):
    _patch_central(good, "weights.safetensors", "<H", 8, 0x1)
    assert "is encrypted" in _error(good)


# -- content that passes the checksums but is still wrong --------------------------------------
def _safetensors(header: dict[str, Any], data: bytes) -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def test_safetensors_header_claiming_too_many_bytes(good):
    weights = _entries(good)["weights.safetensors"]
    _rewrite(good, {"weights.safetensors": struct.pack("<Q", 1_000_000) + weights[8:]})
    msg = _error(good)
    assert "weights.safetensors" in msg and "header claims 1,000,000 bytes" in msg
    spec = {"dtype": "F32", "shape": [1024], "data_offsets": [0, 4096]}
    _rewrite(good, {"weights.safetensors": _safetensors({"0.weight": spec}, bytes(8))})
    assert "claims 4,096 bytes of tensor data but the file holds 8" in _error(good)


def test_safetensors_dtype_that_is_not_a_string(good):
    spec = {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}
    _rewrite(good, {"weights.safetensors": _safetensors({"0.weight": spec}, bytes(4))})
    assert "unsupported dtype ['F32']" in _error(good)


def test_weights_that_do_not_fit_the_architecture(good):
    arch = json.loads(_entries(good)["architecture.json"])
    arch["config"]["layers"][0]["config"]["in_features"] = 9
    _rewrite(good, {"architecture.json": json.dumps(arch).encode()})
    msg = _error(good)
    assert "'0.weight'" in msg and "(6, 8)" in msg and "(6, 9)" in msg


def test_missing_and_unexpected_weights(good):
    state = _model().state_dict()
    _rewrite(good, {"weights.safetensors": serialize({k: v for k, v in state.items()
                                                      if k != "2.bias"})})
    assert "lacks the weight '2.bias'" in _error(good)
    _rewrite(good, {"weights.safetensors": serialize({**state, "9.weight": np.ones(2)})})
    assert "'9.weight' that the architecture has no place for" in _error(good)


def test_unknown_layer_type_in_the_architecture(good):
    evil = {"type": "Sequential", "config": {"layers": [
        {"type": "os.system", "config": {"command": "touch pwned"}}]}}
    _rewrite(good, {"architecture.json": json.dumps(evil).encode()})
    msg = _error(good)
    assert "unknown layer type 'os.system'" in msg and not Path("pwned").exists()
    assert "loads once the module defining it (with @nn.register_layer) is imported" in msg


def test_bad_layer_config_and_bad_architecture_json(good):
    arch = json.loads(_entries(good)["architecture.json"])
    arch["config"]["layers"][0]["config"]["in_features"] = -1
    _rewrite(good, {"architecture.json": json.dumps(arch).encode()})
    assert "cannot rebuild the model" in (msg := _error(good)) and "in_features" in msg
    _rewrite(good, {"architecture.json": b"\xff\xfe"})
    assert "architecture.json" in (msg := _error(good)) and "UTF-8" in msg


def test_layer_registered_at_save_but_not_at_load(tmp_path):
    @register_layer
    class Doubler(nn.Module):
        def forward(self, x):
            return x * 2.0

    try:
        save(nn.Sequential(nn.Linear(4, 2), Doubler()), tmp_path / "d.nnf")
    finally:
        LAYER_REGISTRY.pop("Doubler")
    assert "unknown layer type 'Doubler'" in _error(tmp_path / "d.nnf")


# -- loading never executes code from the file -------------------------------------------------
class _Payload:
    """Unpickling this creates a marker directory: proof that code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_pickle_payloads_are_never_unpickled(good, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    payload = pickle.dumps(_Payload(marker))
    pickle.loads(payload)  # the payload really does run code when unpickled...
    assert marker.exists()
    marker.rmdir()

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used while loading a model file")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, forbidden)
    entries = _entries(good)
    _write_zip(good, {**entries, "model.pkl": payload})  # not listed in the manifest: refused
    assert "'model.pkl' that its manifest does not list" in _error(good)
    _rewrite(good)  # listed with an honest checksum: ignored, never read as code
    assert load(good).num_parameters() == _model().num_parameters()
    assert load_checkpoint(good).optimizer_state is None
    assert not marker.exists()


# -- exhaustive damage: every byte flipped, every length truncated -----------------------------
def _load_or_refuse(path: Path, reference: dict[str, np.ndarray]) -> bool:
    """True when loading refused; a load that succeeds must give exactly the saved weights."""
    try:
        state = load(path).state_dict()
    except ModelFileError:
        return True
    # only bytes that carry no meaning (timestamps, local copies of directory fields) may
    # change without a refusal
    assert all(np.array_equal(state[k], v) for k, v in reference.items())
    return False


def test_every_single_byte_flip_or_truncation_fails_cleanly_or_changes_nothing(tmp_path):
    model = nn.Sequential(nn.Linear(2, 2))
    path = tmp_path / "tiny.nnf"
    save(model, path)
    raw, reference = path.read_bytes(), model.state_dict()
    refused_flips = refused_cuts = 0
    # damage the file in place and repair it after each load: rewriting it whole is slower
    with open(path, "r+b", buffering=0) as f:
        for i in range(len(raw)):
            f.seek(i)
            f.write(bytes([raw[i] ^ 0x10]))
            refused_flips += _load_or_refuse(path, reference)
            f.seek(i)
            f.write(raw[i:i + 1])
        for n in range(len(raw)):
            f.truncate(n)
            refused_cuts += _load_or_refuse(path, reference)
            f.seek(n)
            f.write(raw[n:])
    assert refused_cuts == len(raw)
    assert refused_flips > 0.75 * len(raw)


@pytest.mark.parametrize("entry", ["weights.safetensors", "architecture.json"])
def test_damage_is_caught_when_weights_are_hashed_on_a_second_thread(good, monkeypatch, entry):
    monkeypatch.setattr(mf, "THREADED_HASH_BYTES", 0)  # the path big files take
    assert load(good).num_parameters() == _model().num_parameters()
    start, end = _data_span(good, entry)
    _flip(good, (start + end) // 2)
    assert f"checksum mismatch for entry {entry!r}" in _error(good)


def test_architecture_with_too_many_layers_fails_before_building(good, monkeypatch):
    # millions of {"type": "ReLU"} entries fit the JSON cap; building them took 38 s and 2 GB
    monkeypatch.setattr(mf, "MAX_MODULES", 50)
    built = []
    monkeypatch.setattr(mf, "layer_from_architecture", lambda arch: built.append(arch))
    arch = {"type": "Sequential", "config": {"layers": [{"type": "ReLU"}] * 60}}
    _rewrite(good, {"architecture.json": json.dumps(arch).encode()})
    assert "more than 50 layers" in _error(good)
    assert not built  # refused before any module was made
