"""The small data sets that ship inside scikit-learn (no download): digits, iris, wine, ..."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ..errors import DataError

#: name -> task; the loader is sklearn.datasets.load_<name>.
BUNDLED_DATASETS: dict[str, str] = {
    "digits": "multiclass",
    "iris": "multiclass",
    "wine": "multiclass",
    "breast_cancer": "binary",
    "diabetes": "regression",
}


@dataclass
class DatasetBundle:
    """A loaded data set; unpacks as `X, y = load_dataset(...)`."""

    X: Any
    y: Any
    feature_names: list[str]
    target_names: list[str]  # class names by class index; empty for regression
    task: str
    name: str = ""

    def __iter__(self) -> Iterator[Any]:
        return iter((self.X, self.y))

    @property
    def num_classes(self) -> int:
        """Number of classes (0 for regression)."""
        return len(self.target_names)


def load_dataset(name: str, as_frame: bool = False) -> DatasetBundle:
    """Load a scikit-learn bundled set: X float32, y int64 (classes) or float32 (regression).

    Needs scikit-learn (the `train` extra); `as_frame=True` also needs pandas, which no
    extra installs.
    """
    if not isinstance(name, str) or name not in BUNDLED_DATASETS:
        raise DataError(f"expected a data set name in {sorted(BUNDLED_DATASETS)}, found {name!r}")
    try:
        from sklearn import datasets  # noqa: PLC0415 - optional dependency, loaded on use
    except ImportError as e:
        raise DataError(f"expected scikit-learn to be installed to load {name!r} "
                        f"(pip install 'nnforge[train]'), found it missing") from e
    bunch = getattr(datasets, f"load_{name}")()
    task = BUNDLED_DATASETS[name]
    x = np.ascontiguousarray(bunch.data, dtype=np.float32)
    y = np.asarray(bunch.target, dtype=np.float32 if task == "regression" else np.int64)
    features = [str(f) for f in bunch.feature_names]
    targets = [] if task == "regression" else [str(t) for t in bunch.target_names]
    if as_frame:
        try:
            import pandas as pd  # noqa: PLC0415 - optional dependency, loaded on use
        except ImportError as e:
            raise DataError("expected pandas to be installed for as_frame=True, "
                            "found it missing") from e
        x = pd.DataFrame(x, columns=features)
        y = pd.Series(y, name="target")
    return DatasetBundle(X=x, y=y, feature_names=features, target_names=targets, task=task,
                         name=name)
