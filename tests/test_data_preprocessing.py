"""Preprocessing: fitted on training data only, float32 out, feature checks, config round trip."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import preprocessing as skp

from nnforge.data import (
    LabelEncoder,
    MinMaxScaler,
    OneHotEncoder,
    Pipeline,
    Standardizer,
    one_hot,
    preprocessing_from_config,
)
from nnforge.errors import ConfigError, DataError, DTypeError, ShapeError


def _split_data(seed: int = 0):
    rng = np.random.default_rng(seed)
    train = rng.standard_normal((200, 5)) * [1, 10, 0.1, 3, 1] + [0, 5, -2, 100, 7]
    train[:, 4] = 7.0  # a constant feature
    test = rng.standard_normal((50, 5)) * 4 + 1  # a different distribution
    return train, test


def _round_trip(p):
    """Through JSON text, as the model file stores it."""
    return preprocessing_from_config(json.loads(json.dumps(p.get_config())))


def test_standardizer_uses_training_statistics_only():
    train, test = _split_data()
    s = Standardizer().fit(train)
    mean, scale = s.mean.copy(), s.scale.copy()
    out = s.transform(test)
    np.testing.assert_array_equal(s.mean, mean)  # transforming other data changes nothing
    expected = (test - train.mean(0)) / np.where(train.std(0) == 0, 1, train.std(0))
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert out.dtype == np.float32
    z = s.transform(train)
    np.testing.assert_allclose(z[:, :4].mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(z[:, :4].std(0), 1, atol=1e-5)
    assert scale[4] == 1 and np.all(z[:, 4] == 0)  # zero variance: scale 1, no NaN
    sk = skp.StandardScaler().fit(train)
    np.testing.assert_allclose(out, sk.transform(test), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(s.inverse_transform(out), test, rtol=1e-5, atol=1e-4)


def test_standardizer_config_round_trip_and_images():
    train, test = _split_data(1)
    s = Standardizer().fit(train.astype(np.float32))
    cfg = s.get_config()
    assert cfg["type"] == "standardize" and len(cfg["mean"]) == 5 and len(cfg["scale"]) == 5
    np.testing.assert_array_equal(_round_trip(s).transform(test), s.transform(test))
    images = np.random.default_rng(0).random((10, 1, 4, 4))
    si = Standardizer().fit(images)
    assert si.transform(images).shape == (10, 1, 4, 4)
    np.testing.assert_array_equal(_round_trip(si).transform(images), si.transform(images))
    with pytest.raises(ShapeError, match=r"samples of shape \(1, 4, 4\), found \(4, 4\)"):
        si.transform(images[:, 0])


def test_feature_checks():
    s = Standardizer().fit(np.ones((3, 64)))
    with pytest.raises(ShapeError, match="expected 64 features, found 63"):
        s.transform(np.ones((2, 63)))
    with pytest.raises(ShapeError, match="2-D array"):
        s.transform(np.ones(64))
    with pytest.raises(DTypeError, match="numeric features"):
        s.transform(np.array([["a"] * 64]))
    with pytest.raises(ConfigError, match="unfitted"):
        Standardizer().transform(np.ones((2, 3)))
    with pytest.raises(ConfigError, match="unfitted"):
        MinMaxScaler().get_config()
    with pytest.raises(DataError, match="finite"):
        Standardizer().fit(np.array([[1.0, np.nan]]))
    with pytest.raises(DataError, match="at least one sample"):
        MinMaxScaler().fit(np.zeros((0, 3)))


def test_minmax_scaler():
    train, test = _split_data(2)
    m = MinMaxScaler(feature_range=(-1, 1)).fit(train)
    z = m.transform(train)
    np.testing.assert_allclose(z[:, :4].min(0), -1, atol=1e-6)
    np.testing.assert_allclose(z[:, :4].max(0), 1, atol=1e-6)
    sk = skp.MinMaxScaler(feature_range=(-1, 1)).fit(train)
    np.testing.assert_allclose(m.transform(test), sk.transform(test), rtol=1e-5, atol=1e-4)
    assert m.transform(test).dtype == np.float32
    np.testing.assert_allclose(m.inverse_transform(m.transform(test)), test, rtol=1e-5, atol=1e-3)
    cfg = m.get_config()
    assert cfg["type"] == "minmax" and cfg["feature_range"] == [-1.0, 1.0]
    np.testing.assert_array_equal(_round_trip(m).transform(test), m.transform(test))
    with pytest.raises(ConfigError, match="low < high"):
        MinMaxScaler((1, 0))


def test_one_hot():
    out = one_hot(np.array([2, 0, 1]), 4)
    np.testing.assert_array_equal(out, np.eye(4, dtype=np.float32)[[2, 0, 1]])
    assert out.dtype == np.float32 and one_hot(np.array([0, 3])).shape == (2, 4)
    with pytest.raises(DataError, match=r"in \[0, 2\], found range \[0, 3\]"):
        one_hot(np.array([0, 3]), 3)
    with pytest.raises(DataError, match="integer class indices"):
        one_hot(np.array([0.0, 1.0]), 2)


def test_one_hot_encoder():
    enc = OneHotEncoder().fit(np.array(["b", "a", "c", "a"]))
    assert enc.classes_.tolist() == ["a", "b", "c"]
    out = enc.transform(np.array(["c", "a"]))
    np.testing.assert_array_equal(out, [[0, 0, 1], [1, 0, 0]])
    assert enc.inverse_transform(np.array([[0.1, 0.7, 0.2]])).tolist() == ["b"]
    with pytest.raises(DataError, match=r"expected labels in \['a', 'b', 'c'\], found 'z'"):
        enc.transform(np.array(["a", "z"]))
    with pytest.raises(ShapeError, match=r"\(n, 3\)"):
        enc.inverse_transform(np.ones((2, 4)))
    fixed = OneHotEncoder(num_classes=5)
    assert fixed.fitted and fixed.transform(np.array([4])).shape == (1, 5)
    with pytest.raises(DataError):
        fixed.fit(np.array([5]))
    back = _round_trip(enc)
    np.testing.assert_array_equal(back.transform(np.array(["b"])), enc.transform(np.array(["b"])))


def test_label_encoder():
    enc = LabelEncoder()
    idx = enc.fit_transform(["virginica", "setosa", "versicolor", "setosa"])
    assert enc.classes_.tolist() == ["setosa", "versicolor", "virginica"]
    assert idx.tolist() == [2, 0, 1, 0] and idx.dtype == np.int64
    assert enc.inverse_transform(np.array([1, 2])).tolist() == ["versicolor", "virginica"]
    back = _round_trip(enc)
    assert back.get_config() == {"type": "label",
                                 "classes": ["setosa", "versicolor", "virginica"]}
    assert back.transform(["setosa"]).tolist() == [0]
    with pytest.raises(DataError, match="found 'rose'"):
        enc.transform(["rose"])
    with pytest.raises(DataError, match=r"in \[0, 2\], found range \[0, 3\]"):
        enc.inverse_transform(np.array([0, 3]))
    with pytest.raises(DataError, match="integer class indices"):
        enc.inverse_transform(np.array([0.5]))
    ints = LabelEncoder().fit(np.array([10, 30, 20]))
    assert _round_trip(ints).transform([30]).tolist() == [2]
    with pytest.raises(DataError, match="found 'a'"):
        ints.transform(np.array(["a"]))


def test_pipeline_and_list_config():
    train, test = _split_data(3)
    pipe = Pipeline([Standardizer(), MinMaxScaler()])
    z = pipe.fit_transform(train)
    np.testing.assert_allclose(z[:, :4].min(0), 0, atol=1e-6)
    cfg = json.loads(json.dumps(pipe.get_config()))
    assert isinstance(cfg, list) and [c["type"] for c in cfg] == ["standardize", "minmax"]
    back = preprocessing_from_config(cfg)
    assert isinstance(back, Pipeline) and len(back) == 2
    np.testing.assert_array_equal(back.transform(test), pipe.transform(test))
    np.testing.assert_allclose(back.inverse_transform(back.transform(test)), test,
                               rtol=1e-4, atol=1e-3)
    with pytest.raises(ConfigError, match="Preprocessor steps"):
        Pipeline([Standardizer(), "minmax"])


@pytest.mark.parametrize("cfg,match", [
    ({"type": "pca"}, r"type in \['impute', 'label', 'minmax', 'one_hot', 'standardize'\], "
                      r"found 'pca'"),
    ({"mean": [0]}, "found None"),
    ("standardize", "config dict or list, found str"),
    ({"type": "standardize", "mean": [0, 1]}, "expected key 'scale'"),
    ({"type": "standardize", "mean": [0, 1], "scale": [1]}, "one shape"),
    ({"type": "standardize", "mean": [0], "scale": [0]}, "positive 'scale'"),
    ({"type": "standardize", "mean": ["a"], "scale": [1]}, "valid 'mean'"),
    ({"type": "standardize", "mean": [], "scale": []}, "valid 'mean'"),
    ({"type": "minmax", "feature_range": [0, 1, 2], "data_min": [0], "data_max": [1]},
     "feature_range"),
    ({"type": "minmax", "feature_range": [0, 1], "data_min": [2], "data_max": [1]},
     "data_min <= data_max"),
    ({"type": "label", "classes": ["b", "a"]}, "sorted list of distinct"),
    ({"type": "one_hot", "classes": []}, "non-empty"),
    ([{"type": "standardize"}], "expected key 'mean'"),
])
def test_bad_configs(cfg, match):
    with pytest.raises(ConfigError, match=match):
        preprocessing_from_config(cfg)


@pytest.mark.parametrize("cfg", [
    {"type": ["standardize"]}, {"type": {}},
    {"type": "label", "classes": [None, None]}, {"type": "label", "classes": 5},
    {"type": "one_hot", "classes": [{"a": 1}]},
    {"type": "standardize", "mean": [1e39], "scale": [1.0]},
])
def test_hostile_configs_are_config_errors(cfg, recwarn):
    with pytest.raises(ConfigError):
        preprocessing_from_config(cfg)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


@pytest.mark.parametrize("rng", [(0, 1, 2), "ab", (0, float("inf"))])
def test_minmax_bad_feature_range(rng):
    with pytest.raises(ConfigError, match="feature_range"):
        MinMaxScaler(rng)


def test_minmax_subnormal_span_is_treated_as_constant():
    # (hi - lo) / 1e-45 overflows float32: the scale would be inf and transform NaN
    s = MinMaxScaler().fit(np.array([[0.0], [1e-45]], np.float32))
    assert np.all(np.isfinite(s.transform([[0.0], [1.0]])))


@pytest.mark.parametrize("scaler", [Standardizer, MinMaxScaler])
def test_fit_data_beyond_float32_is_refused_not_turned_into_nan(scaler):
    with pytest.raises(DataError, match="finite"):
        scaler().fit(np.array([[1e300, 1.0], [-1e300, 2.0]]))


def test_feature_range_wider_than_float32_is_refused():
    with pytest.raises(ConfigError, match="feature_range"):
        MinMaxScaler((-3e38, 3e38))


def test_nan_labels_are_refused_at_fit():
    # NaN != NaN: a NaN class could be learnt but never matched by transform
    with pytest.raises(DataError, match="NaN"):
        OneHotEncoder().fit([1.0, np.nan])


def test_class_counts_are_checked():
    for bad in ([3], "3", 2.5, 0):
        with pytest.raises(ConfigError, match="num_classes"):
            OneHotEncoder(bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="num_classes"):
        one_hot([0, 1], "x")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="num_classes"):
        one_hot([0, 1], -1)
    with pytest.raises(DataError, match="do not fit in memory"):
        one_hot([0], 2**62)


def test_deeply_nested_config_and_non_list_pipeline_are_config_errors():
    deep: list = []
    cur = deep
    for _ in range(3000):
        cur.append([])
        cur = cur[0]
    with pytest.raises(ConfigError, match="nested too deeply"):
        preprocessing_from_config(deep)
    with pytest.raises(ConfigError, match="list of Preprocessor steps"):
        Pipeline(5)  # type: ignore[arg-type]


@pytest.mark.parametrize("make", [lambda d: Standardizer(dtype=d),
                                  lambda d: MinMaxScaler((-1, 1), dtype=d)])
def test_float64_scalers_keep_float64_precision_through_their_config(make):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((50, 4)) * 1e5 + 1 / 3
    scaler = make("float64").fit(X)
    out = scaler.transform(X)
    assert out.dtype == np.float64 and scaler.inverse_transform(out).dtype == np.float64
    np.testing.assert_allclose(scaler.inverse_transform(out), X, rtol=1e-12)
    cfg = json.loads(json.dumps(scaler.get_config()))
    assert cfg["dtype"] == "float64"
    again = preprocessing_from_config(cfg)
    assert np.array_equal(again.transform(X), out)  # bit-exact after a JSON round trip
    # float32 stays as it was: no dtype key, float32 out, coarser than float64
    single = make("float32").fit(X)
    assert "dtype" not in single.get_config() and single.transform(X).dtype == np.float32
    assert not np.allclose(single.inverse_transform(single.transform(X)), X, rtol=1e-12)
    with pytest.raises(ConfigError, match=r"dtype one of \['float32', 'float64'\]"):
        make("int8")
    with pytest.raises(ConfigError, match="'dtype'"):
        preprocessing_from_config({**cfg, "dtype": "float16"})
