"""Saving and loading `.nnf` model files: round trips, manifest, layout, validation, atomicity."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import warnings
import zipfile
from datetime import datetime

import numpy as np
import pytest

import nnforge as nf
from nnforge import nn
from nnforge.data import MinMaxScaler, Pipeline, Standardizer, preprocessing_from_config
from nnforge.errors import ConfigError, ModelFileError
from nnforge.io import load, model_file, read_manifest, read_weights, save
from nnforge.io.archive import ALIGNMENT
from nnforge.nn.module import LAYER_REGISTRY, Parameter, register_layer
from nnforge.random import get_rng, get_rng_state


def _mlp() -> nn.Sequential:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Dropout(0.1), nn.Linear(32, 10))


def _outputs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with nf.no_grad():
        return model(x).data


@pytest.fixture
def custom_layer():
    """A registered layer with weights, a float and an integer buffer; unregistered after."""

    class ChannelScale(nn.Module):
        """Scales each channel of (N, C, H, W) by a learned factor, plus a fixed offset."""

        def __init__(self, channels: int) -> None:
            super().__init__()
            self.channels = channels
            self.weight = Parameter(get_rng().standard_normal((channels, 1, 1)).astype(np.float32))
            self.register_buffer("offset", np.full((channels, 1, 1), 0.5, np.float32))
            self.register_buffer("calls", np.array(3, np.int64))

        def forward(self, x):
            return x * self.weight + nf.Tensor(self.offset)

        def get_config(self):
            return {"channels": self.channels}

    register_layer(ChannelScale)
    yield ChannelScale
    LAYER_REGISTRY.pop("ChannelScale", None)


def _custom_model(layer_cls) -> nn.Sequential:
    return nn.Sequential(layer_cls(2), nn.Flatten(), nn.Linear(2 * 8 * 8, 3))


@pytest.mark.parametrize("threaded", [False, True])
def test_mlp_round_trip_is_bitwise(tmp_path, rng, monkeypatch, threaded):
    if threaded:  # big files hash their weights on a second thread while layers are built
        monkeypatch.setattr(model_file, "THREADED_HASH_BYTES", 0)
    model = _mlp()
    path = tmp_path / "mlp.nnf"
    save(model, path)
    loaded = load(path)
    x = rng.standard_normal((7, 64)).astype(np.float32)
    model.eval()
    assert np.array_equal(_outputs(model, x), _outputs(loaded, x))
    assert not loaded.training and all(not m.training for m in loaded.modules())
    for (k, a), (k2, b) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and a.dtype == b.dtype and np.array_equal(a, b)
    assert isinstance(loaded.manifest, dict)
    assert "manifest" not in loaded._modules and "manifest" not in loaded._parameters
    assert "manifest" not in loaded.state_dict()


def test_manifest_contents(tmp_path):
    model = _mlp()
    path = tmp_path / "m.nnf"
    labels = [f"digit {i}" for i in range(10)]
    save(model, path, task="multiclass", labels=labels, metrics={"accuracy": np.float32(0.75)},
         extra={"dataset": "digits"})
    m = read_manifest(path)
    assert m["format"] == "nnforge-model" and m["format_version"] == 1
    assert m["library"] == "nnforge" and m["library_version"] == nf.__version__
    assert datetime.fromisoformat(m["created"].replace("Z", "+00:00")).utcoffset().seconds == 0
    assert m["kind"] == "model" and m["task"] == "multiclass" and m["labels"] == labels
    assert m["inputs"] == [{"name": "input", "shape": [None, 64], "dtype": "float32"}]
    assert m["outputs"] == [{"name": "output", "shape": [None, 10], "dtype": "float32"}]
    assert m["metrics"] == {"accuracy": 0.75} and m["extra"] == {"dataset": "digits"}
    assert m["num_parameters"] == 64 * 32 + 32 + 32 * 10 + 10 == model.num_parameters()
    with zipfile.ZipFile(path) as zf:
        assert zf.namelist()[0] == "manifest.json"
        assert set(m["checksums"]) == set(zf.namelist()) - {"manifest.json"}
        for name, digest in m["checksums"].items():
            assert digest == "sha256:" + hashlib.sha256(zf.read(name)).hexdigest()
        assert json.loads(zf.read("architecture.json")) == model.to_architecture()
    assert load(path).manifest == m


def test_entries_are_stored_and_weights_map_aligned_without_copy(tmp_path):
    model = _mlp()
    path = tmp_path / "m.nnf"
    save(model, path)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    assert infos and all(i.compress_type == zipfile.ZIP_STORED for i in infos)
    weights = read_weights(path)
    for k, v in model.state_dict().items():
        w = weights[k]
        assert np.array_equal(w, v) and w.dtype == np.float32
        assert not w.flags.owndata and not w.flags.writeable and w.flags.aligned
    # the weights entry's data starts on an ALIGNMENT boundary inside the file
    raw = path.read_bytes()
    info = next(i for i in infos if i.filename == "weights.safetensors")
    start = raw.index(b"PK\x03\x04", info.header_offset)
    n, m = int.from_bytes(raw[start + 26:start + 28], "little"), int.from_bytes(
        raw[start + 28:start + 30], "little")
    assert (start + 30 + n + m) % ALIGNMENT == 0


def test_save_restores_each_module_mode(tmp_path):
    model = _mlp()
    model.train()
    model[2].eval()
    save(model, tmp_path / "m.nnf")
    assert [m.training for m in model.modules()] == [True, True, True, False, True]


def test_input_shape_sources(tmp_path, custom_layer):
    conv_like = _custom_model(custom_layer)
    with pytest.raises(ConfigError, match="input_shape="):
        save(conv_like, tmp_path / "a.nnf")
    save(conv_like, tmp_path / "a.nnf", input_shape=(2, 8, 8))
    assert read_manifest(tmp_path / "a.nnf")["inputs"][0]["shape"] == [None, 2, 8, 8]
    loaded = load(tmp_path / "a.nnf")
    assert loaded.input_shape == (2, 8, 8)
    save(loaded, tmp_path / "b.nnf")  # a loaded model remembers its input shape
    assert read_manifest(tmp_path / "b.nnf")["outputs"][0]["shape"] == [None, 3]
    attr_model = _custom_model(custom_layer)
    attr_model.input_shape = (2, 8, 8)
    save(attr_model, tmp_path / "c.nnf")
    with pytest.raises(ConfigError, match=r"zero batch of shape \(2, 65\)"):
        save(_mlp(), tmp_path / "d.nnf", input_shape=(65,))
    with pytest.raises(ConfigError, match="positive integers"):
        save(_mlp(), tmp_path / "d.nnf", input_shape=(0,))
    assert not (tmp_path / "d.nnf").exists()


@pytest.mark.parametrize("kwargs, words", [
    ({"task": "classification"}, "task must be one of"),
    ({"task": "multiclass", "labels": ["a", "b"]}, "needs 10 labels .the model has 10 outputs., "
                                                    "found 2"),
    ({"task": "binary", "labels": ["no", "yes", "maybe"]}, "needs 2 labels"),
    ({"labels": ["a", "a"]}, "distinct"),
    ({"labels": [1.5]}, "strings or integers"),
    ({"metrics": {"acc": "high"}}, "names to numbers"),
    ({"preprocessing": 42}, "get_config"),
    ({"extra": {"f": open}}, "JSON-serialisable"),
])
def test_bad_metadata_is_refused(tmp_path, kwargs, words):
    with pytest.raises(ConfigError, match=words):
        save(_mlp(), tmp_path / "m.nnf", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_tied_weights_are_refused_rather_than_silently_untied(tmp_path):
    shared = nn.Linear(4, 4)
    with pytest.raises(ConfigError, match="'0.weight' is shared with '2.weight'"):
        save(nn.Sequential(shared, nn.ReLU(), shared), tmp_path / "t.nnf")
    assert list(tmp_path.iterdir()) == []


def test_preprocessing_metrics_and_label_forms(tmp_path):
    class Scaler:
        def get_config(self):
            return {"type": "StandardScaler", "mean": np.arange(3, dtype=np.float32)}

    path = tmp_path / "m.nnf"
    save(_mlp(), path, task="multiclass", labels=np.arange(10),
         preprocessing=[Scaler(), {"type": "Clip", "low": 0}], metrics={"f1": float("nan")})
    m = read_manifest(path)
    assert m["preprocessing"] == [{"type": "StandardScaler", "mean": [0.0, 1.0, 2.0]},
                                  {"type": "Clip", "low": 0}]
    assert m["labels"] == list(range(10)) and m["metrics"] == {"f1": None}
    binary = nn.Sequential(nn.Linear(64, 1))  # binary needs 1 output (or 2 class scores)
    save(binary, path, preprocessing=Scaler(), task="binary", labels=["neg", "pos"])
    assert read_manifest(path)["preprocessing"]["type"] == "StandardScaler"


def test_float64_model_saves_and_loads_bit_exactly_as_float64(tmp_path, rng):
    X = rng.standard_normal((40, 64)) * 1e4 + 1 / 3  # float32 would round these visibly
    model = _mlp().double()
    model.eval()
    pre = Pipeline([Standardizer("float64"), MinMaxScaler((-1, 1))]).fit(X)
    save(model, tmp_path / "m.nnf", task="multiclass", labels=list(range(10)),
         preprocessing=pre)
    header = read_weights(tmp_path / "m.nnf")
    assert all(w.dtype == np.float64 for w in header.values())
    loaded = load(tmp_path / "m.nnf")
    for k, v in model.state_dict().items():
        w = loaded.state_dict()[k]
        assert w.dtype == np.float64 and np.array_equal(w, v), k
    m = read_manifest(tmp_path / "m.nnf")
    assert m["inputs"][0]["dtype"] == m["outputs"][0]["dtype"] == "float64"
    # the float32 min-max step is marked float64 too: it feeds a float64 model
    assert [c["dtype"] for c in m["preprocessing"]] == ["float64", "float64"]
    assert m["preprocessing"][0]["mean"] == pre[0].mean.tolist()  # full float64 precision
    session = nf.InferenceSession(tmp_path / "m.nnf")
    x = preprocessing_from_config(m["preprocessing"]).transform(X)  # as the session does
    assert x.dtype == np.float64
    eager = _outputs(model, x)
    for got in (session.run(x), _outputs(loaded, x)):
        assert got.dtype == np.float64 and np.array_equal(got, eager)
    probs = session.predict(X).probabilities
    assert probs.dtype == np.float64
    eager_probs = nf.InferenceSession(model, task="multiclass").predict(x).probabilities
    np.testing.assert_allclose(probs, eager_probs, rtol=1e-12)


def test_float32_models_keep_float32_files(tmp_path):
    save(_mlp(), tmp_path / "m.nnf", preprocessing=Standardizer().fit(np.ones((3, 64))))
    m = read_manifest(tmp_path / "m.nnf")
    assert m["inputs"][0]["dtype"] == "float32" and "dtype" not in m["preprocessing"]
    assert all(w.dtype == np.float32 for w in read_weights(tmp_path / "m.nnf").values())


def test_loading_does_not_move_the_random_stream(tmp_path):
    save(_mlp(), tmp_path / "m.nnf")
    before = get_rng_state()
    load(tmp_path / "m.nnf")
    assert get_rng_state() == before


def test_custom_registered_layer_round_trips(tmp_path, rng, custom_layer):
    model = _custom_model(custom_layer)
    model[0].offset = np.full((2, 1, 1), -1.25, np.float32)
    model[0].calls = np.array(11, np.int64)
    save(model, tmp_path / "c.nnf", input_shape=(2, 8, 8), task="multiclass",
         labels=["a", "b", "c"])
    loaded = load(tmp_path / "c.nnf")
    assert isinstance(loaded[0], custom_layer)
    assert loaded[0].calls.dtype == np.int64 and int(loaded[0].calls) == 11
    x = rng.standard_normal((4, 2, 8, 8)).astype(np.float32)
    model.eval()
    assert np.array_equal(_outputs(model, x), _outputs(loaded, x))


# -- atomic writing ----------------------------------------------------------------------------
def _leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_failed_save_leaves_the_existing_file_untouched(tmp_path):
    class Unregistered(nn.Module):
        def forward(self, x):
            return x

    path = tmp_path / "m.nnf"
    save(_mlp(), path)
    before = path.read_bytes()
    with pytest.raises(ConfigError, match="Unregistered is not registered"):
        save(nn.Sequential(nn.Linear(64, 4), Unregistered()), path)
    assert path.read_bytes() == before and _leftovers(tmp_path) == []


@pytest.mark.parametrize("victim", ["fsync", "replace"])
def test_save_failing_mid_write_removes_the_temp_file(tmp_path, monkeypatch, victim):
    path = tmp_path / "m.nnf"
    save(_mlp(), path)
    before = path.read_bytes()

    def broken(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, victim, broken)
    with pytest.raises(ModelFileError, match="cannot write model file .*No space left"):
        save(nn.Sequential(nn.Linear(64, 4)), path)
    monkeypatch.undo()
    assert path.read_bytes() == before and _leftovers(tmp_path) == []
    assert load(path).num_parameters() == _mlp().num_parameters()


def test_unwritable_destinations_fail_with_a_model_file_error(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(ModelFileError, match="cannot write model file .*directory"):
        save(_mlp(), tmp_path / "taken")
    (tmp_path / "plain").write_text("x")
    with pytest.raises(ModelFileError, match="cannot write model file .*: expected '.*plain' to "
                                             "be a directory, found a file"):
        save(_mlp(), tmp_path / "plain" / "m.nnf")
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "taken") == []


def test_save_creates_parent_directories_and_leaves_no_temp_files(tmp_path):
    path = tmp_path / "a" / "b" / "m.nnf"
    save(_mlp(), path)
    assert path.is_file() and _leftovers(path.parent) == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    path.chmod(0o600)
    save(_mlp(), path)  # overwriting keeps the file's permissions
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_a_model_on_batch_statistics_saves(tmp_path):
    """BatchNorm1d without running stats on (N, C) needs two rows: save probes with two."""
    nf.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3, track_running_stats=False))
    nf.save(model, tmp_path / "bn.nnf", input_shape=(4,))
    assert read_manifest(tmp_path / "bn.nnf")["outputs"][0]["shape"] == [None, 3]


@pytest.mark.parametrize("get_config", [None, lambda self: {"channels": 1}])
def test_a_custom_layer_whose_config_does_not_rebuild_it_is_refused_at_save(
        tmp_path, get_config):
    class Gain(nn.Module):
        def __init__(self, channels: int) -> None:
            super().__init__()
            self.channels = channels
            self.weight = Parameter(np.ones(channels, np.float32))

        def forward(self, x):
            return x * self.weight

    if get_config is not None:  # stale: the constructor argument is not what it returns
        Gain.get_config = get_config
    register_layer(Gain)
    try:
        model = nn.Sequential(nn.Linear(4, 3), Gain(3))
        path = tmp_path / "g.nnf"
        says = ("missing 1 required positional argument: 'channels'" if get_config is None
                else r"gives weight '1.weight' the shape \(1,\) where the model has \(3,\)")
        with pytest.raises(ConfigError, match=rf"layer '1' \(Gain\) would not load back .*"
                                              rf"{says}.*implement get_config"):
            save(model, path)
        assert not path.exists()
        Gain.get_config = lambda self: {"channels": self.channels}
        save(model, path)
        np.testing.assert_array_equal(load(path)[1].weight.data, model[1].weight.data)
    finally:
        LAYER_REGISTRY.pop("Gain", None)


@pytest.mark.parametrize("outputs,task,says", [
    (10, "binary", "a binary model needs 1 output .* or 2 .*found 10"),
    (1, "multiclass", "a multiclass model needs at least 2 outputs, found 1"),
])
def test_a_task_that_contradicts_the_outputs_is_refused(tmp_path, outputs, task, says):
    with pytest.raises(ConfigError, match=rf"task='{task}' does not fit the model .*{says}"):
        save(nn.Sequential(nn.Linear(64, outputs)), tmp_path / "m.nnf", task=task)
    assert not (tmp_path / "m.nnf").exists()
    for width, ok in ((1, "binary"), (2, "binary"), (3, "multiclass"), (5, "multilabel"),
                      (4, "regression"), (1, "regression")):  # the widths predict accepts
        save(nn.Sequential(nn.Linear(64, width)), tmp_path / "m.nnf", task=ok)


def test_preprocessing_fitted_on_other_features_is_refused(tmp_path, rng):
    small = Standardizer().fit(rng.standard_normal((20, 10)))
    for pre in (small, Pipeline([MinMaxScaler(), small]).fit(rng.standard_normal((20, 10))),
                small.get_config()):
        with pytest.raises(ConfigError, match="the model takes 64 features, the "
                                              "preprocessing was fitted on 10"):
            save(_mlp(), tmp_path / "m.nnf", preprocessing=pre)
    assert not (tmp_path / "m.nnf").exists()
    conv = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten())
    with pytest.raises(ConfigError, match=r"takes samples of shape \(1, 8, 8\), the "
                                          r"preprocessing was fitted on samples of shape \(10,\)"):
        save(conv, tmp_path / "m.nnf", input_shape=(1, 8, 8), preprocessing=small)


def test_feature_names_are_stored_checked_and_optional(tmp_path):
    """A model trained on a CSV keeps its column names, so readers can match by name."""
    model = nn.Sequential(nn.Linear(3, 2))
    save(model, tmp_path / "m.nnf", feature_names=["a", "b", "c"])
    assert read_manifest(tmp_path / "m.nnf")["inputs"][0]["names"] == ["a", "b", "c"]
    save(model, tmp_path / "plain.nnf")  # files without names (and older ones) stay valid
    assert "names" not in load(tmp_path / "plain.nnf").manifest["inputs"][0]
    for bad, says in ((["a", "b"], "expected 3 distinct"), (["a", "a", "b"], "distinct"),
                      ([1, 2, 3], "non-empty strings")):
        with pytest.raises(ConfigError, match=says):
            save(model, tmp_path / "x.nnf", feature_names=bad)
    # a damaged manifest is refused on load, naming the field
    with zipfile.ZipFile(tmp_path / "m.nnf") as z:
        entries = {n: z.read(n) for n in z.namelist()}
    manifest = json.loads(entries["manifest.json"])
    manifest["inputs"][0]["names"] = ["a"]
    entries["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(tmp_path / "bad.nnf", "w") as z:
        for n, data in entries.items():
            z.writestr(n, data)
    with pytest.raises(ModelFileError, match="input 'names'"):
        read_manifest(tmp_path / "bad.nnf")


def test_loading_a_float64_model_casts_no_uninitialised_memory(tmp_path, monkeypatch):
    # layers built under skip_init() hold np.empty float32 memory, which loading cast to
    # float64 before the file's weights replaced it: "invalid value encountered in cast"
    nf.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(4 * 6 * 6, 16), nn.BatchNorm1d(16), nn.Linear(16, 3)).double()
    save(model, tmp_path / "f64.nnf", input_shape=(1, 8, 8))
    empty = np.empty

    def garbage(shape, dtype=float, order="C", **kw):  # what np.empty may hand out: NaN bits
        out = empty(shape, dtype, order, **kw)
        if out.dtype == np.float32:
            out.view(np.uint32)[...] = 0x7FA00000  # a signalling NaN: casting it warns
        return out

    x = np.random.default_rng(0).standard_normal((2, 1, 8, 8))
    model.eval()
    want = _outputs(model, x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        for _ in range(3):
            loaded = load(tmp_path / "f64.nnf")
        monkeypatch.setattr(np, "empty", garbage)
        loaded = load(tmp_path / "f64.nnf")
        monkeypatch.undo()
    assert loaded.dtype == np.float64
    np.testing.assert_array_equal(_outputs(loaded, x), want)


def test_input_shape_guess_names_the_first_module_with_weights(tmp_path):
    """A root Parameter before a Linear child: the message names what came first."""
    class Scaled(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.temp = Parameter(np.ones(1, np.float32))
            self.body = nn.Sequential(nn.Linear(6, 2))

        def forward(self, x):
            return self.body(x) * self.temp

    register_layer(Scaled)
    try:
        with pytest.raises(ConfigError, match="first module holding weights is a Scaled, "
                                              "not a Linear"):
            nf.save(Scaled(), tmp_path / "m.nnf")
        assert not (tmp_path / "m.nnf").exists()
    finally:
        LAYER_REGISTRY.pop("Scaled", None)
