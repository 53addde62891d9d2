"""Missing values: CSV cells read as NaN, the Imputer (checked against scikit-learn's
SimpleImputer), its place in the model file, and InferenceSession.predict filling NaN in."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from sklearn.impute import SimpleImputer

import nnforge as nf
from nnforge import nn
from nnforge.data import (
    Imputer,
    MissingValueError,
    Pipeline,
    Standardizer,
    iter_csv,
    preprocessing_from_config,
    read_csv,
)
from nnforge.errors import ConfigError, DataError, ModelFileError
from nnforge.io import read_manifest


def _with_gaps(rng: np.random.Generator, discrete: bool) -> np.ndarray:
    """50 x 5 float64 values, a fifth of them NaN, column 3 NaN throughout."""
    x = rng.integers(0, 4, (50, 5)).astype(float) if discrete else rng.normal(size=(50, 5))
    x[rng.random(x.shape) < 0.2] = np.nan
    x[:, 3] = np.nan
    return x


@pytest.mark.parametrize("strategy", ["mean", "median", "most_frequent", "constant"])
def test_imputer_equals_scikit_learns_simple_imputer(strategy: str) -> None:
    rng = np.random.default_rng(0)
    discrete = strategy == "most_frequent"  # ties decide the mode: several equal counts
    x_train, x_new = _with_gaps(rng, discrete), _with_gaps(rng, discrete)
    fill = 2.5 if strategy == "constant" else 0.0
    # keep_empty_features: the all-NaN column is filled (with 0), not dropped
    ref = SimpleImputer(strategy=strategy, fill_value=fill, keep_empty_features=True)
    ours = Imputer(strategy, fill_value=fill, dtype="float64").fit(x_train)
    ref.fit(x_train)
    np.testing.assert_allclose(ours.statistics, ref.statistics_.astype(float), rtol=0, atol=1e-12)
    np.testing.assert_allclose(ours.transform(x_new), ref.transform(x_new), rtol=0, atol=1e-12)
    assert ours.empty_features.tolist() == [False, False, False, True, False]


def test_imputer_config_round_trip_keeps_inf_and_the_callers_array() -> None:
    x = np.array([[1.0, np.nan], [3.0, 4.0], [np.nan, 8.0]], dtype=np.float32)
    imp = Imputer("median").fit(x)
    cfg = json.loads(json.dumps(imp.get_config()))
    assert cfg == {"type": "impute", "strategy": "median", "fill_value": 0.0,
                   "statistics": [2.0, 6.0]}
    back = preprocessing_from_config(cfg)
    new = np.array([[np.nan, np.inf], [5, np.nan]], dtype=np.float32)
    out = back.transform(new)
    assert out.dtype == np.float32 and out.tolist() == [[2.0, np.inf], [5.0, 6.0]]
    assert np.isnan(new[0, 0])  # filled in a copy
    assert back.inverse_transform(out).tolist() == out.tolist()


def test_imputer_refuses_inf_to_fit_on_and_standardizer_points_to_it() -> None:
    with pytest.raises(DataError, match="or NaN for missing ones to fit on, found inf"):
        Imputer().fit([[1.0, np.inf]])
    with pytest.raises(DataError, match="fill missing values first, e.g. with an Imputer"):
        Standardizer().fit([[1.0, np.nan]])
    with pytest.raises(ConfigError, match="strategy one of"):
        Imputer("mode")
    with pytest.raises(ConfigError, match="fill_value"):
        Imputer(fill_value=np.nan)


@pytest.mark.parametrize("cfg,match", [
    ({"type": "impute", "strategy": "mean", "fill_value": 0}, "expected key 'statistics'"),
    ({"type": "impute", "strategy": "mode", "fill_value": 0, "statistics": [1]}, "strategy"),
    ({"type": "impute", "strategy": "mean", "fill_value": "x", "statistics": [1]},
     "'fill_value'"),
    ({"type": "impute", "strategy": "mean", "fill_value": 0, "statistics": [None]},
     "'statistics'"),
    ({"type": "impute", "strategy": "constant", "fill_value": 0, "statistics": [1]},
     "all equal to fill_value"),
])
def test_bad_imputer_configs(cfg: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        preprocessing_from_config(cfg)


# -- CSV readers -------------------------------------------------------------------------------
def test_csv_missing_cells_read_as_nan_in_every_chunk(tmp_path: Path) -> None:
    p = tmp_path / "gaps.csv"
    p.write_text('a,b,y\n1,2,0\n3,,1\nNA, 4 ,0\n" ",N/A,1\n5,6,0\n')
    with pytest.raises(MissingValueError, match=r"line 3, column 2 \('b'\): expected a number, "
                                                r"found an empty cell") as info:
        read_csv(p, label_column="y")
    assert info.value.cell == "" and info.value.where.endswith("line 3, column 2 ('b')")
    x, y = read_csv(p, label_column="y", missing="nan")
    want = [[1, 2], [3, np.nan], [np.nan, 4], [np.nan, np.nan], [5, 6]]
    np.testing.assert_array_equal(x, np.array(want, dtype=np.float32))
    assert y.tolist() == [0, 1, 0, 1, 0]
    chunks = list(iter_csv(p, label_column="y", missing="nan", chunk_rows=2))
    assert [len(c[0]) for c in chunks] == [2, 2, 1]
    np.testing.assert_array_equal(np.concatenate([c[0] for c in chunks]), x)
    # by name, reordered: the slow path picks the same columns
    np.testing.assert_array_equal(read_csv(p, missing="nan", columns=["b", "a"])[0], x[:, ::-1])


def test_csv_missing_label_and_bad_cells_stay_errors(tmp_path: Path) -> None:
    p = tmp_path / "l.csv"
    p.write_text("a,b,y\n1,,0\n3,4,\n")
    with pytest.raises(DataError, match=r"line 3, column 3 \('y'\): expected a number, found "
                                        r"an empty cell$"):
        read_csv(p, label_column="y", missing="nan")
    p.write_text("a,b\n1,\nx,4\n")
    with pytest.raises(DataError, match=r"line 3, column 1 \('a'\): expected a number, "
                                        r"found 'x'$"):
        read_csv(p, missing="nan")
    with pytest.raises(DataError, match="missing to be one of"):
        read_csv(p, missing="zero")


def test_a_first_row_with_a_gap_is_no_header(tmp_path: Path) -> None:
    """It was taken for a header: its row silently lost, its values used as names."""
    p = tmp_path / "h.csv"
    p.write_text("1,,3\n4,5,6\n")
    x, _ = read_csv(p, missing="nan")
    np.testing.assert_array_equal(x, [[1, np.nan, 3], [4, 5, 6]])


# -- model file and session ----------------------------------------------------------------
def _model() -> nn.Sequential:
    nf.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 2))


def _fitted(rng: np.random.Generator) -> tuple[Pipeline, np.ndarray]:
    x = rng.normal(size=(40, 3)).astype(np.float32)
    x[rng.random(x.shape) < 0.2] = np.nan
    return Pipeline([Imputer("median"), Standardizer()]).fit(x), x


def test_imputer_round_trips_in_the_model_file_and_predict_fills_nan(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pre, x = _fitted(rng)
    path = tmp_path / "m.nnf"
    nf.save(_model(), path, task="regression", preprocessing=pre)
    steps = read_manifest(path)["preprocessing"]
    assert [s["type"] for s in steps] == ["impute", "standardize"]
    assert steps[0]["statistics"] == pre[0].statistics.tolist()
    session = nf.InferenceSession(path)
    got = session.predict(x, batch_size=7).values
    want = session.run(pre.transform(x))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    bad = x.copy()
    bad[9, 2] = np.inf  # inf is no missing value: still refused, naming the row
    with pytest.raises(DataError, match="found inf at row 9, position 2"):
        session.predict(bad, batch_size=4)


def test_without_an_imputer_nan_is_refused_and_files_keep_their_form(tmp_path: Path) -> None:
    path = tmp_path / "old.nnf"
    x = np.random.default_rng(2).normal(size=(10, 3))
    nf.save(_model(), path, task="regression", preprocessing=Standardizer().fit(x))
    assert read_manifest(path)["preprocessing"]["type"] == "standardize"  # one dict, as before
    x[4, 1] = np.nan
    with pytest.raises(DataError, match="found nan at row 4, position 1"):
        nf.InferenceSession(path).predict(x)


def test_float64_model_keeps_a_float64_imputer(tmp_path: Path) -> None:
    model = _model().to(np.float64)
    imp = Imputer("mean").fit(np.array([[0.1, np.nan, 1.0], [0.2, 3.0, np.nan]]))
    nf.save(model, tmp_path / "m.nnf", preprocessing=imp)
    back = preprocessing_from_config(read_manifest(tmp_path / "m.nnf")["preprocessing"])
    # marked float64, so that it feeds the float64 model float64 values
    assert back.dtype == np.float64 and back.transform([[np.nan] * 3]).dtype == np.float64


def _edit_manifest(path: Path, edit) -> None:
    with zipfile.ZipFile(path) as zf:
        entries = {i.filename: zf.read(i) for i in zf.infolist()}
    manifest = json.loads(entries["manifest.json"])
    edit(manifest)
    entries["manifest.json"] = json.dumps(manifest).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)


@pytest.mark.parametrize("damage,words", [
    (lambda s: s.update(statistics=[1.0, "x", 2.0]), "'statistics'"),
    (lambda s: s.update(strategy="guess"), "strategy"),
    (lambda s: s.pop("fill_value"), "'fill_value'"),
])
def test_damaged_imputer_entries_are_refused_on_load(tmp_path: Path, damage, words) -> None:
    pre, _ = _fitted(np.random.default_rng(3))
    path = tmp_path / "m.nnf"
    nf.save(_model(), path, preprocessing=pre)
    _edit_manifest(path, lambda m: damage(m["preprocessing"][0]))
    for reader in (read_manifest, nf.load):
        with pytest.raises(ModelFileError, match="preprocessing step 1 \\('impute'\\) is "
                                                 "damaged") as info:
            reader(path)
        assert words in str(info.value)


def test_imputer_zero_is_constant_zero() -> None:
    x = np.array([[1.0, np.nan], [np.nan, 4.0]], np.float32)
    imp = Imputer("zero").fit(x)  # the CLI's name for it
    assert imp.strategy == "constant"
    np.testing.assert_array_equal(imp.transform(x), [[1.0, 0.0], [0.0, 4.0]])
    with pytest.raises(ConfigError, match="strategy='constant'"):
        Imputer("zero", fill_value=2.0)
