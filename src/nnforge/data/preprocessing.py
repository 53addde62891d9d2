"""Preprocessing fitted on training data and saved with the model as JSON configs."""

from __future__ import annotations

from numbers import Integral
from typing import Any, Callable, ClassVar, Iterator

import numpy as np

from ..errors import ConfigError, DataError, DTypeError, ShapeError, check_float, out_of_memory

#: The closed registry of preprocessing types a saved config may name.
PREPROCESSORS: dict[str, type[Preprocessor]] = {}


def _register(cls: type[Preprocessor]) -> type[Preprocessor]:
    PREPROCESSORS[cls.type_name] = cls
    return cls


def _field(cfg: dict[str, Any], key: str, convert: Callable[[Any], Any]) -> Any:
    """cfg[key] through convert, with a ConfigError naming the key when absent or invalid."""
    if key not in cfg:
        raise ConfigError(f"expected key {key!r} in a {cfg.get('type')!r} preprocessing config, "
                          f"found keys {sorted(cfg)}")
    try:
        return convert(cfg[key])
    except (TypeError, ValueError) as e:
        raise ConfigError(f"expected a valid {key!r} in a {cfg.get('type')!r} preprocessing "
                          f"config, found {cfg[key]!r} ({e})") from None


#: the dtypes a scaler computes and outputs in: float32 (the default), float64 when asked
SCALER_DTYPES = ("float32", "float64")


def _scaler_dtype(dtype: Any) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt is None or dt.name not in SCALER_DTYPES:
        raise ConfigError(f"expected dtype one of {list(SCALER_DTYPES)}, found {dtype!r:.40}")
    return dt


def _floats_as(dtype: np.dtype) -> Callable[[Any], np.ndarray]:
    """A converter of a config's number list to a finite array of dtype."""
    def convert(value: Any) -> np.ndarray:
        with np.errstate(over="ignore"):  # beyond the dtype's range becomes inf, refused below
            a = np.asarray(value, dtype=dtype)
        if a.ndim == 0 or a.size == 0 or not np.all(np.isfinite(a)):
            raise ValueError("expected a non-empty list of finite numbers")
        return a
    return convert


def _config_dtype(cfg: dict[str, Any]) -> np.dtype:
    """A scaler config's dtype: float32 when absent (every config written before float64)."""
    return _field({"dtype": "float32", **cfg}, "dtype", _scaler_dtype)


def _dtype_entry(dtype: np.dtype) -> dict[str, str]:
    """float32 configs stay as they always were; others say their dtype."""
    return {} if dtype == np.float32 else {"dtype": dtype.name}


class Preprocessor:
    """Base: fit on training data, transform any data, describe itself as a JSON config."""

    type_name: ClassVar[str] = ""

    def fit(self, x: Any) -> Preprocessor:
        """Learn the parameters from training data; returns self."""
        raise NotImplementedError

    def transform(self, x: Any) -> np.ndarray:
        """Apply the fitted transformation."""
        raise NotImplementedError

    def inverse_transform(self, x: Any) -> np.ndarray:
        """Undo transform()."""
        raise NotImplementedError

    def fit_transform(self, x: Any) -> np.ndarray:
        """fit(x) then transform(x)."""
        return self.fit(x).transform(x)

    @property
    def fitted(self) -> bool:
        """True once fit() ran or the parameters came from a config."""
        raise NotImplementedError

    def _require_fitted(self) -> None:
        if not self.fitted:
            raise ConfigError(f"expected a fitted {type(self).__name__}, found an unfitted one "
                              f"(call fit() on the training data first)")

    def get_config(self) -> dict[str, Any]:
        """A JSON-serialisable dict with "type" and the fitted parameters."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Preprocessor:
        """Rebuild a fitted preprocessor from get_config()."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(fitted={self.fitted})"


class _FeatureScaler(Preprocessor):
    """Shared input checks of per-feature scalers: float32 (or float64) out, fixed sample
    shape."""

    sample_shape: tuple[int, ...] | None = None
    dtype: np.dtype = np.dtype(np.float32)
    #: whether fit() takes NaN (missing values): only a step that fills them does
    fit_allows_nan: ClassVar[bool] = False

    @property
    def fitted(self) -> bool:
        return self.sample_shape is not None

    def _check(self, x: Any, fitting: bool = False) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype.kind not in "biuf":
            raise DTypeError(f"expected numeric features, found dtype {x.dtype}")
        if x.ndim < 2:
            raise ShapeError(f"expected a 2-D array (samples, features), found shape {x.shape}")
        if fitting:
            if x.shape[0] == 0:
                raise DataError("expected at least one sample to fit on, found 0")
            with np.errstate(over="ignore"):  # beyond the dtype becomes inf, refused below
                x = x.astype(self.dtype, copy=False)
            if self.fit_allows_nan:  # NaN marks a missing value; inf is no value at all
                if np.any(np.isinf(x)):
                    raise DataError(f"expected finite feature values (within "
                                    f"{self.dtype.name}'s range) or NaN for missing ones to "
                                    f"fit on, found inf")
            elif not np.all(np.isfinite(x)):
                raise DataError(f"expected finite feature values (within {self.dtype.name}'s "
                                f"range) to fit on, found NaN or inf (fill missing values "
                                f"first, e.g. with an Imputer)")
        elif x.shape[1:] != self.sample_shape:
            self._require_fitted()
            assert self.sample_shape is not None
            if x.ndim == 2 and len(self.sample_shape) == 1:
                raise ShapeError(f"expected {self.sample_shape[0]} features, found {x.shape[1]}")
            raise ShapeError(f"expected samples of shape {self.sample_shape}, "
                             f"found {x.shape[1:]}")
        return x.astype(self.dtype, copy=False)


@_register
class Standardizer(_FeatureScaler):
    """(x - mean) / std per feature; a feature with zero variance gets scale 1."""

    type_name = "standardize"

    def __init__(self, dtype: Any = "float32") -> None:
        self.dtype = _scaler_dtype(dtype)
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None

    def _set(self, mean: np.ndarray, scale: np.ndarray) -> Standardizer:
        self.mean, self.scale = mean.astype(self.dtype), scale.astype(self.dtype)
        self.sample_shape = self.mean.shape
        return self

    def fit(self, x: Any) -> Standardizer:
        """Learn mean and standard deviation (accumulated in float64)."""
        x = self._check(x, fitting=True)
        mean = x.mean(axis=0, dtype=np.float64)
        std = x.std(axis=0, dtype=np.float64)
        # A constant feature's computed std is rounding noise, not a scale to divide by.
        constant = std <= 10 * np.finfo(self.dtype).eps * np.abs(mean)
        return self._set(mean, np.where(constant | (std == 0), 1.0, std))

    def transform(self, x: Any) -> np.ndarray:
        """Standardize: float32 out (float64 for a float64 scaler)."""
        x = self._check(x)
        out = np.subtract(x, self.mean, dtype=self.dtype)
        return np.divide(out, self.scale, out=out)

    def inverse_transform(self, x: Any) -> np.ndarray:
        """Back to the original units."""
        x = self._check(x)
        out = np.multiply(x, self.scale, dtype=self.dtype)
        return np.add(out, self.mean, out=out)

    def get_config(self) -> dict[str, Any]:
        self._require_fitted()
        assert self.mean is not None and self.scale is not None
        return {"type": self.type_name, "mean": self.mean.tolist(), "scale": self.scale.tolist(),
                **_dtype_entry(self.dtype)}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Standardizer:
        dtype = _config_dtype(cfg)
        floats = _floats_as(dtype)
        mean, scale = _field(cfg, "mean", floats), _field(cfg, "scale", floats)
        if mean.shape != scale.shape or np.any(scale <= 0):
            raise ConfigError(f"expected 'mean' and positive 'scale' of one shape, found shapes "
                              f"{mean.shape} and {scale.shape}, min scale {scale.min()}")
        return cls(dtype)._set(mean, scale)


@_register
class MinMaxScaler(_FeatureScaler):
    """Map each feature's training [min, max] onto feature_range; a constant feature shifts only."""

    type_name = "minmax"

    def __init__(self, feature_range: tuple[float, float] = (0.0, 1.0),
                 dtype: Any = "float32") -> None:
        self.dtype = _scaler_dtype(dtype)
        try:
            lo, hi = (float(v) for v in feature_range)
        except (TypeError, ValueError):
            raise ConfigError(f"expected feature_range (low, high) of two numbers, found "
                              f"{feature_range!r}") from None
        with np.errstate(over="ignore"):  # the range is in the scaled values' dtype
            span = self.dtype.type(hi) - self.dtype.type(lo)
        if not (lo < hi and np.isfinite(span)):
            raise ConfigError(f"expected feature_range (low, high) with low < high and "
                              f"high - low within {self.dtype.name}, found "
                              f"{tuple(feature_range)}")
        self.feature_range = (lo, hi)
        self.data_min: np.ndarray | None = None
        self.data_max: np.ndarray | None = None

    def _set(self, dmin: np.ndarray, dmax: np.ndarray) -> MinMaxScaler:
        lo, hi = self.feature_range
        span = dmax.astype(np.float64) - dmin
        # a span too small for a finite scale (subnormal) is a constant feature, like span 0
        with np.errstate(over="ignore"):
            span[(span == 0) | ((hi - lo) / np.where(span == 0, 1.0, span)
                                > np.finfo(self.dtype).max)] = 1.0
        scale = (hi - lo) / span
        self.data_min, self.data_max = dmin.astype(self.dtype), dmax.astype(self.dtype)
        self._scale = scale.astype(self.dtype)
        self._offset = (lo - dmin * scale).astype(self.dtype)
        self.sample_shape = self.data_min.shape
        return self

    def fit(self, x: Any) -> MinMaxScaler:
        """Learn each feature's minimum and maximum."""
        x = self._check(x, fitting=True)
        return self._set(x.min(axis=0), x.max(axis=0))

    def transform(self, x: Any) -> np.ndarray:
        """Scale into feature_range (training range; new data may fall outside)."""
        x = self._check(x)
        out = np.multiply(x, self._scale, dtype=self.dtype)
        return np.add(out, self._offset, out=out)

    def inverse_transform(self, x: Any) -> np.ndarray:
        """Back to the original units."""
        x = self._check(x)
        out = np.subtract(x, self._offset, dtype=self.dtype)
        return np.divide(out, self._scale, out=out)

    def get_config(self) -> dict[str, Any]:
        self._require_fitted()
        assert self.data_min is not None and self.data_max is not None
        return {"type": self.type_name, "feature_range": list(self.feature_range),
                "data_min": self.data_min.tolist(), "data_max": self.data_max.tolist(),
                **_dtype_entry(self.dtype)}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> MinMaxScaler:
        rng = _field(cfg, "feature_range", lambda v: tuple(float(x) for x in v))
        if len(rng) != 2:
            raise ConfigError(f"expected feature_range [low, high], found {list(rng)}")
        dtype = _config_dtype(cfg)
        floats = _floats_as(dtype)
        dmin, dmax = _field(cfg, "data_min", floats), _field(cfg, "data_max", floats)
        if dmin.shape != dmax.shape or np.any(dmin > dmax):
            raise ConfigError(f"expected data_min <= data_max of one shape, found shapes "
                              f"{dmin.shape} and {dmax.shape}")
        return cls(rng, dtype)._set(dmin, dmax)


#: Imputer strategies, as scikit-learn's SimpleImputer names them
IMPUTE_STRATEGIES = ("mean", "median", "most_frequent", "constant")


def _column_statistics(x: np.ndarray, strategy: str) -> np.ndarray:
    """Per-column statistic of the non-NaN values of a 2-D float64 array (NaN where a column
    has none)."""
    missing = np.isnan(x)
    count = x.shape[0] - missing.sum(axis=0)
    out = np.full(x.shape[1], np.nan)
    seen = count > 0
    if strategy == "mean":
        out[seen] = np.where(missing, 0.0, x).sum(axis=0)[seen] / count[seen]
    elif strategy == "median":  # sort puts NaN last: the middle of each column's count values
        s = np.sort(x, axis=0)
        cols = np.arange(x.shape[1])[seen]
        k = count[seen]
        out[seen] = (s[(k - 1) // 2, cols] + s[k // 2, cols]) / 2
    else:  # most_frequent: the smallest of the most frequent values, as scikit-learn picks
        for j in np.flatnonzero(seen):
            values, counts = np.unique(x[~missing[:, j], j], return_counts=True)
            out[j] = values[np.argmax(counts)]
    return out


@_register
class Imputer(_FeatureScaler):
    """Fill missing values (NaN) per feature with a statistic of the training data.

    strategy: "mean", "median", "most_frequent" (the smallest on ties) or "constant"
    (fill_value), as scikit-learn's SimpleImputer; "zero" is "constant" with 0. A feature
    with no value in the training data is filled with fill_value
    (SimpleImputer(keep_empty_features=True) with fill_value 0): dropping it, as
    SimpleImputer does by default, would change the model's input width.
    Infinities are refused by fit() and left in place by transform().
    """

    type_name = "impute"
    fit_allows_nan = True

    def __init__(self, strategy: str = "mean", fill_value: float = 0.0,
                 dtype: Any = "float32") -> None:
        if strategy == "zero":  # the CLI's word for it: constant 0
            if fill_value != 0:
                raise ConfigError(f"strategy 'zero' fills with 0, found fill_value="
                                  f"{fill_value!r}: use strategy='constant' for another value")
            strategy = "constant"
        if strategy not in IMPUTE_STRATEGIES:
            raise ConfigError(f"expected strategy one of {[*IMPUTE_STRATEGIES, 'zero']}, found "
                              f"{strategy!r:.40}")
        self.dtype = _scaler_dtype(dtype)
        self.strategy = strategy
        self.fill_value = check_float("fill_value", fill_value)
        with np.errstate(over="ignore"):
            if not np.isfinite(self.dtype.type(self.fill_value)):
                raise ConfigError(f"expected fill_value within {self.dtype.name}'s range, "
                                  f"found {fill_value!r}")
        self.statistics: np.ndarray | None = None
        #: after fit(): True for each feature that had no value in the training data
        self.empty_features: np.ndarray | None = None

    def _set(self, statistics: np.ndarray) -> Imputer:
        self.statistics = statistics.astype(self.dtype)
        self.sample_shape = self.statistics.shape
        return self

    def fit(self, x: Any) -> Imputer:
        """Learn each feature's fill value from its non-missing training values."""
        x = self._check(x, fitting=True)
        flat = x.reshape(len(x), -1).astype(np.float64)
        if self.strategy == "constant":
            stats = np.full(flat.shape[1], self.fill_value)
        else:
            stats = _column_statistics(flat, self.strategy)
        empty = np.isnan(flat).all(axis=0)
        stats[empty] = self.fill_value
        self.empty_features = empty.reshape(x.shape[1:])
        return self._set(stats.reshape(x.shape[1:]))

    def transform(self, x: Any) -> np.ndarray:
        """NaN replaced by the feature's fill value: float32 out (float64 for float64)."""
        x = self._check(x)
        missing = np.isnan(x)
        if not missing.any():
            return x
        out = np.array(x, dtype=self.dtype)  # a copy: the caller's array stays as it was
        np.copyto(out, np.broadcast_to(self.statistics, out.shape), where=missing)
        return out

    def inverse_transform(self, x: Any) -> np.ndarray:
        """The values as they are: which of them were filled in is not kept."""
        return self._check(x)

    def get_config(self) -> dict[str, Any]:
        self._require_fitted()
        assert self.statistics is not None
        return {"type": self.type_name, "strategy": self.strategy,
                "fill_value": self.fill_value, "statistics": self.statistics.tolist(),
                **_dtype_entry(self.dtype)}

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> Imputer:
        dtype = _config_dtype(cfg)
        strategy = _field(cfg, "strategy", str)
        fill = _field(cfg, "fill_value", lambda v: check_float("fill_value", v))
        stats = _field(cfg, "statistics", _floats_as(dtype))
        imputer = cls(strategy, fill, dtype)
        if strategy == "constant" and np.any(stats != dtype.type(fill)):
            raise ConfigError(f"expected 'statistics' all equal to fill_value {fill:g} for "
                              f"strategy 'constant', found {stats.ravel()[:5].tolist()}")
        return imputer._set(stats)


class _ClassCoder(Preprocessor):
    """Shared label handling: classes_ is the sorted array of known labels."""

    classes_: np.ndarray | None = None

    @property
    def fitted(self) -> bool:
        return self.classes_ is not None

    def _learn(self, y: Any) -> None:
        y = np.asarray(y)
        if y.ndim != 1 or y.size == 0:
            raise ShapeError(f"expected a non-empty 1-D array of labels, found shape {y.shape}")
        if y.dtype.kind in "fc" and np.any(np.isnan(y)):  # NaN != NaN: transform could not match it
            raise DataError("expected labels without NaN, found NaN")
        try:
            self.classes_ = np.unique(y)
        except TypeError as e:
            raise DataError(f"expected labels of one sortable type, found: {e}") from None

    def _indices(self, y: Any) -> np.ndarray:
        """Class index of every label; DataError naming the first unknown one."""
        self._require_fitted()
        assert self.classes_ is not None
        y = np.asarray(y)
        if y.ndim != 1:
            raise ShapeError(f"expected a 1-D array of labels, found shape {y.shape}")
        try:
            idx = np.searchsorted(self.classes_, y)
        except TypeError:
            raise DataError(f"expected labels like {self.classes_[:5].tolist()}, found dtype "
                            f"{y.dtype}") from None
        idx = np.minimum(idx, len(self.classes_) - 1)
        bad = self.classes_[idx] != y
        if np.any(bad):
            shown = self.classes_.tolist()[:20]
            raise DataError(f"expected labels in {shown}{' ...' if len(self.classes_) > 20 else ''}"
                            f", found {y[np.argmax(bad)].tolist()!r}")
        return idx.astype(np.int64)

    def _classes_config(self) -> dict[str, Any]:
        self._require_fitted()
        assert self.classes_ is not None
        return {"type": self.type_name, "classes": self.classes_.tolist()}

    @staticmethod
    def _classes_from(cfg: dict[str, Any]) -> np.ndarray:
        classes = _field(cfg, "classes", np.asarray)
        try:  # JSON can hold labels that do not compare (null, objects): refuse, don't crash
            ordered = (classes.ndim == 1 and classes.dtype.kind in "biufU"
                       and not np.any(classes[1:] <= classes[:-1]))
        except TypeError:
            ordered = False
        if classes.ndim != 1 or classes.size == 0 or not ordered:
            raise ConfigError(f"expected 'classes' as a non-empty sorted list of distinct "
                              f"numbers or strings, found {cfg['classes']!r:.120}")
        return classes


@_register
class LabelEncoder(_ClassCoder):
    """Labels of any sortable type (e.g. strings) <-> class indices 0..K-1 (int64)."""

    type_name = "label"

    def fit(self, y: Any) -> LabelEncoder:
        """Learn the sorted distinct labels as classes_."""
        self._learn(y)
        return self

    def transform(self, y: Any) -> np.ndarray:
        """Labels -> int64 class indices."""
        return self._indices(y)

    def inverse_transform(self, indices: Any) -> np.ndarray:
        """Class indices -> labels."""
        self._require_fitted()
        assert self.classes_ is not None
        idx = np.asarray(indices)
        k = len(self.classes_)
        if idx.dtype.kind not in "iu":
            raise DataError(f"expected integer class indices, found dtype {idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= k):
            raise DataError(f"expected class indices in [0, {k - 1}], found range "
                            f"[{idx.min()}, {idx.max()}]")
        return self.classes_[idx]

    def get_config(self) -> dict[str, Any]:
        return self._classes_config()

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> LabelEncoder:
        enc = cls()
        enc.classes_ = cls._classes_from(cfg)
        return enc


def _class_count(num_classes: Any, low: int) -> int:
    if isinstance(num_classes, bool) or not isinstance(num_classes, Integral) \
            or num_classes < low:
        raise ConfigError(f"expected num_classes to be an integer >= {low}, found "
                          f"{num_classes!r:.40}")
    return int(num_classes)


def one_hot(y: Any, num_classes: int | None = None) -> np.ndarray:
    """Integer class indices (n,) -> float32 one-hot rows (n, num_classes)."""
    y = np.asarray(y)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise DataError(f"expected a 1-D array of integer class indices, found dtype {y.dtype} "
                        f"and shape {y.shape}")
    if num_classes is None:
        k = int(y.max()) + 1 if y.size else 0
    else:
        k = _class_count(num_classes, 0)
    if y.size and (y.min() < 0 or y.max() >= k):
        raise DataError(f"expected class indices in [0, {k - 1}], found range "
                        f"[{y.min()}, {y.max()}]")
    try:
        out = np.zeros((y.shape[0], k), dtype=np.float32)
    except MemoryError:  # a size this machine lacks, unlike the ValueError's below
        raise out_of_memory(f"allocating one-hot rows of shape ({y.shape[0]}, {k})",
                            nbytes=y.shape[0] * k * 4,
                            hint=f"encode fewer labels at a time, or check the class count "
                                 f"{k:,}") from None
    except ValueError:  # more bytes than an array can address: the labels ask the impossible
        raise DataError(f"one-hot rows of shape ({y.shape[0]}, {k}) do not fit in "
                        f"memory") from None
    out[np.arange(y.shape[0]), y] = 1.0
    return out


@_register
class OneHotEncoder(_ClassCoder):
    """Labels -> float32 one-hot rows; num_classes=K fixes the classes to 0..K-1 without fitting."""

    type_name = "one_hot"

    def __init__(self, num_classes: int | None = None) -> None:
        if num_classes is not None:
            num_classes = _class_count(num_classes, 1)
            try:
                self.classes_ = np.arange(num_classes)
            except (MemoryError, ValueError):
                raise ConfigError(f"expected num_classes whose labels fit in memory, found "
                                  f"{num_classes:,}") from None
        self.num_classes = num_classes

    def fit(self, y: Any) -> OneHotEncoder:
        """Learn the classes (unless num_classes fixed them); checks the labels either way."""
        if self.num_classes is None:
            self._learn(y)
        else:
            self._indices(y)
        return self

    def transform(self, y: Any) -> np.ndarray:
        """Labels -> (n, K) float32."""
        idx = self._indices(y)
        return one_hot(idx, len(self.classes_))

    def inverse_transform(self, x: Any) -> np.ndarray:
        """One-hot rows or scores -> the label of each row's largest entry."""
        self._require_fitted()
        assert self.classes_ is not None
        x = np.asarray(x)
        if x.ndim != 2 or x.shape[1] != len(self.classes_):
            raise ShapeError(f"expected shape (n, {len(self.classes_)}), found {x.shape}")
        return self.classes_[np.argmax(x, axis=1)]

    def get_config(self) -> dict[str, Any]:
        return self._classes_config()

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> OneHotEncoder:
        enc = cls()
        enc.classes_ = cls._classes_from(cfg)
        return enc


class Pipeline(Preprocessor):
    """Steps applied in order (fit: each step fits on the previous step's output)."""

    type_name = "pipeline"

    def __init__(self, steps: list[Preprocessor]) -> None:
        if not isinstance(steps, (list, tuple)):
            raise ConfigError(f"expected a list of Preprocessor steps, found "
                              f"{type(steps).__name__}")
        for s in steps:
            if not isinstance(s, Preprocessor):
                raise ConfigError(f"expected Preprocessor steps, found {type(s).__name__}")
        self.steps = list(steps)

    def __len__(self) -> int:
        return len(self.steps)

    def __iter__(self) -> Iterator[Preprocessor]:
        return iter(self.steps)

    def __getitem__(self, i: int) -> Preprocessor:
        return self.steps[i]

    @property
    def fitted(self) -> bool:
        return all(s.fitted for s in self.steps)

    def fit(self, x: Any) -> Pipeline:
        """Fit each step on the output of the steps before it."""
        self.fit_transform(x)
        return self

    def fit_transform(self, x: Any) -> np.ndarray:
        for s in self.steps:
            x = s.fit_transform(x)
        return np.asarray(x)

    def transform(self, x: Any) -> np.ndarray:
        """Every step in order."""
        for s in self.steps:
            x = s.transform(x)
        return np.asarray(x)

    def inverse_transform(self, x: Any) -> np.ndarray:
        """Every step's inverse, last step first."""
        for s in reversed(self.steps):
            x = s.inverse_transform(x)
        return np.asarray(x)

    def get_config(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """The list of the steps' configs."""
        return [s.get_config() for s in self.steps]

    @classmethod
    def from_config(cls, cfg: list[dict[str, Any]]) -> Pipeline:  # type: ignore[override]
        return cls([preprocessing_from_config(c) for c in cfg])


def preprocessing_from_config(cfg: dict[str, Any] | list[dict[str, Any]]) -> Preprocessor:
    """Rebuild a fitted preprocessor (dict) or Pipeline (list) from its JSON config."""
    if isinstance(cfg, list):
        try:
            return Pipeline.from_config(cfg)
        except RecursionError:  # lists nested deeper than Python recurses (a damaged file)
            raise ConfigError("expected a preprocessing config, found lists nested too "
                              "deeply") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"expected a preprocessing config dict or list, found "
                          f"{type(cfg).__name__}")
    kind = cfg.get("type")
    if not isinstance(kind, str) or kind not in PREPROCESSORS:  # a list or dict is unhashable
        raise ConfigError(f"expected a preprocessing type in {sorted(PREPROCESSORS)}, "
                          f"found {kind!r}")
    return PREPROCESSORS[kind].from_config(cfg)
