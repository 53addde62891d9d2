"""Data: datasets and batch loaders, file readers (CSV, NPZ, IDX), bundled sets, splits,
scaling and imputing."""

from __future__ import annotations

from .bundled import BUNDLED_DATASETS, DatasetBundle, load_dataset
from .dataset import ArrayDataset, DataLoader, Dataset
from .idx import read_idx, write_idx
from .preprocessing import (
    IMPUTE_STRATEGIES,
    PREPROCESSORS,
    Imputer,
    LabelEncoder,
    MinMaxScaler,
    OneHotEncoder,
    Pipeline,
    Preprocessor,
    Standardizer,
    one_hot,
    preprocessing_from_config,
)
from .split import split_indices, train_test_split, train_val_test_split
from .tabular import MISSING_MARKERS, MissingValueError, iter_csv, read_csv, read_npz

__all__ = [
    "BUNDLED_DATASETS", "IMPUTE_STRATEGIES", "MISSING_MARKERS", "PREPROCESSORS", "ArrayDataset",
    "DataLoader", "Dataset", "DatasetBundle", "Imputer", "LabelEncoder", "MinMaxScaler",
    "MissingValueError", "OneHotEncoder", "Pipeline", "Preprocessor", "Standardizer",
    "iter_csv", "load_dataset", "one_hot", "preprocessing_from_config", "read_csv", "read_idx",
    "read_npz", "split_indices", "train_test_split", "train_val_test_split", "write_idx",
]
