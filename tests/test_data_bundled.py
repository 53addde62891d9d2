"""load_dataset: shapes, dtypes and metadata of scikit-learn's five bundled sets."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from nnforge.data import BUNDLED_DATASETS, load_dataset
from nnforge.errors import DataError

EXPECTED = {  # name: (samples, features, task, classes)
    "digits": (1797, 64, "multiclass", 10),
    "iris": (150, 4, "multiclass", 3),
    "wine": (178, 13, "multiclass", 3),
    "breast_cancer": (569, 30, "binary", 2),
    "diabetes": (442, 10, "regression", 0),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_shapes_dtypes_and_metadata(name):
    n, f, task, k = EXPECTED[name]
    ds = load_dataset(name)
    x, y = ds  # unpacks like a tuple
    assert x.shape == (n, f) and x.dtype == np.float32 and x.flags.c_contiguous
    assert y.shape == (n,)
    assert ds.task == task == BUNDLED_DATASETS[name] and ds.name == name
    assert len(ds.feature_names) == f and all(isinstance(s, str) for s in ds.feature_names)
    assert ds.num_classes == k == len(ds.target_names)
    if task == "regression":
        assert y.dtype == np.float32 and len(np.unique(y)) > 100
    else:
        assert y.dtype == np.int64
        np.testing.assert_array_equal(np.unique(y), np.arange(k))
        assert all(isinstance(s, str) for s in ds.target_names)


def test_labels_names():
    assert load_dataset("iris").target_names == ["setosa", "versicolor", "virginica"]
    assert load_dataset("digits").target_names == [str(i) for i in range(10)]


def test_unknown_name_lists_choices():
    with pytest.raises(DataError, match=r"\['breast_cancer', 'diabetes', 'digits', 'iris', "
                                        r"'wine'\], found 'mnist'"):
        load_dataset("mnist")


def test_missing_optional_dependencies(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)  # import pandas now fails
    with pytest.raises(DataError, match="pandas"):
        load_dataset("iris", as_frame=True)
    monkeypatch.setitem(sys.modules, "sklearn", None)
    with pytest.raises(DataError, match="scikit-learn"):
        load_dataset("iris")


def test_core_imports_without_sklearn():
    """nnforge.data and the metrics must not need scikit-learn until a bundled set is loaded."""
    code = ("import sys; sys.modules['sklearn'] = None; "
            "import nnforge.data, nnforge.train.metrics; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ok"


def test_unhashable_name_is_a_data_error():
    with pytest.raises(DataError, match="data set name"):
        load_dataset(["digits"])  # type: ignore[arg-type]
