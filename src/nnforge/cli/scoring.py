"""The metrics `train` and `evaluate` report, computed the same way for both."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .common import fmt_number, print_table

METRICS_BY_TASK: dict[str, tuple[str, ...]] = {
    "multiclass": ("accuracy", "precision_macro", "recall_macro", "f1_macro"),
    "binary": ("accuracy", "precision", "recall", "f1"),
    "regression": ("mse", "rmse", "mae", "r2"),
}

#: Per-epoch metrics the Trainer tracks (train and validation) for the curves.
TRAINER_METRICS: dict[str, list[str]] = {
    "multiclass": ["accuracy", "f1_macro"], "binary": ["accuracy", "f1"],
    "multilabel": ["accuracy"], "regression": ["mae", "r2"],
}


def compute_metrics(task: str, y_true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """Task metrics of predicted classes (classification) or values (regression)."""
    from ..train.metrics import accuracy, f1, get_metric  # noqa: PLC0415

    if task == "multilabel":
        t, p = y_true.astype(np.int64), predicted.astype(np.int64)
        # micro F1 over every (sample, label) position, positive meaning "label on"
        return {"subset_accuracy": accuracy(t, p), "f1_micro": f1(t.ravel(), p.ravel())}
    names = METRICS_BY_TASK.get(task, METRICS_BY_TASK["regression"])
    return {name: float(get_metric(name).fn(y_true, predicted)) for name in names}


def confusion(y_true: np.ndarray, predicted: np.ndarray, n_classes: int) -> np.ndarray:
    """(classes, classes) counts, rows the true class."""
    from ..train.metrics import confusion_matrix  # noqa: PLC0415

    return confusion_matrix(y_true.astype(np.int64), predicted.astype(np.int64), n_classes)


def print_metrics(metrics: dict[str, Any], title: str) -> None:
    """A metric | value table."""
    print_table(["metric", "value"], [(k, fmt_number(v)) for k, v in metrics.items()], title)


def print_confusion(matrix: np.ndarray, labels: Sequence[Any]) -> None:
    """The confusion matrix with true classes as rows."""
    names = [str(v) for v in labels] if len(labels) == len(matrix) else \
        [str(i) for i in range(len(matrix))]
    rows = [[f"{name}", *(f"{int(c)}" for c in row)] for name, row in zip(names, matrix)]
    print_table(["true \\ predicted", *names], rows, "confusion matrix")
