"""Turning raw model outputs into answers for the model's task: the `Prediction` result type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ConfigError, check_float
from ..ops.activation import sigmoid_array

TASKS = ("multiclass", "binary", "multilabel", "regression")


@dataclass
class Prediction:
    """The post-processed result of `InferenceSession.predict`.

    * multiclass: `classes` (int64, n), `probabilities` (n, k), `labels` (class names per row,
      or None when the model has no label names);
    * binary: `probabilities` (n,) of the positive class, `classes` (0/1 int64, n) by
      `threshold`, `labels` (the names of the chosen classes, or None);
    * multilabel: `probabilities` (n, k) per label, `classes` (0/1 int64, n x k), `labels`
      (for each row the list of names of the labels that are on, or None);
    * regression (and models without a task): `values`, the raw outputs ((n,) for one target).
    """

    task: str | None
    values: np.ndarray | None = None
    classes: np.ndarray | None = None
    probabilities: np.ndarray | None = None
    labels: list[Any] | None = None
    threshold: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        for a in (self.classes, self.values, self.probabilities):
            if a is not None:
                return len(a)
        return 0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (lists instead of arrays), without the fields that are None."""
        out: dict[str, Any] = {"task": self.task}
        for key in ("classes", "labels", "probabilities", "values", "threshold"):
            v = getattr(self, key)
            if v is not None:
                out[key] = v.tolist() if isinstance(v, np.ndarray) else v
        return out


class PostProcessor:
    """Fills preallocated result arrays chunk by chunk from raw model outputs."""

    def __init__(self, task: str | None, labels: list[Any] | None, final_op: str | None,
                 threshold: float = 0.5) -> None:
        if task is not None and task not in TASKS:
            raise ConfigError(f"expected task one of {list(TASKS)} or None, found {task!r}")
        # a probability cut: outside [0, 1] (or NaN) every row gets the same class
        threshold = check_float("threshold", threshold, 0.0, 1.0)
        self.task, self.labels, self.final_op, self.threshold = task, labels, final_op, threshold

    def allocate(self, n: int, out_shape: tuple[int, ...], dtype: Any) -> Prediction:
        """Empty result arrays for n rows."""
        width = int(np.prod(out_shape)) if out_shape else 1
        t = self.task
        self._check_labels(width)
        if t == "multiclass":
            if width < 2:
                raise ConfigError(f"a multiclass model needs at least 2 outputs, found {width}")
            return Prediction(t, classes=np.empty(n, np.int64),
                              probabilities=np.empty((n, width), dtype))
        if t == "binary":
            if width not in (1, 2):
                raise ConfigError(f"a binary model needs 1 output (a logit) or 2 (class "
                                  f"scores), found {width}")
            return Prediction(t, classes=np.empty(n, np.int64), probabilities=np.empty(n, dtype),
                              threshold=self.threshold)
        if t == "multilabel":
            return Prediction(t, classes=np.empty((n, width), np.int64),
                              probabilities=np.empty((n, width), dtype), threshold=self.threshold)
        shape = (n,) if width == 1 else (n, *out_shape)
        return Prediction(t, values=np.empty(shape, dtype))

    def _check_labels(self, width: int) -> None:
        """ConfigError when the label names do not fit the model's outputs (else IndexError
        later, or silently unused names)."""
        if self.labels is None or self.task not in ("multiclass", "binary", "multilabel"):
            return
        expected = 2 if self.task == "binary" else width
        if len(self.labels) != expected:
            what = ("(negative, positive)" if self.task == "binary"
                    else f"(the model has {width} outputs)")
            raise ConfigError(f"a {self.task} model needs {expected} labels {what}, found "
                              f"{len(self.labels)}")

    def fill(self, pred: Prediction, start: int, raw: np.ndarray) -> None:
        """Write the post-processed rows for raw (a chunk starting at row start)."""
        stop = start + len(raw)
        t = self.task
        if t == "multiclass":
            probs = raw.reshape(len(raw), -1)
            if self.final_op == "LogSoftmax":
                probs = np.exp(probs)
            elif self.final_op != "Softmax":
                probs = _softmax(probs)
            pred.probabilities[start:stop] = probs
            pred.classes[start:stop] = np.argmax(probs, axis=1)
        elif t == "binary":
            scores = raw.reshape(len(raw), -1)
            if scores.shape[1] == 2:  # two class scores: the positive class's softmax share
                p = scores[:, 1] if self.final_op == "Softmax" else _softmax(scores)[:, 1]
            else:
                p = scores[:, 0] if self.final_op == "Sigmoid" else sigmoid_array(scores[:, 0])
            pred.probabilities[start:stop] = p
            pred.classes[start:stop] = p >= self.threshold
        elif t == "multilabel":
            p = raw.reshape(len(raw), -1)
            p = p if self.final_op == "Sigmoid" else sigmoid_array(p)
            pred.probabilities[start:stop] = p
            pred.classes[start:stop] = p >= self.threshold
        else:
            pred.values[start:stop] = raw.reshape(pred.values[start:stop].shape)

    def finish(self, pred: Prediction) -> Prediction:
        """Attach label names once all rows are in."""
        if self.labels is None or pred.classes is None:
            return pred
        names = np.empty(len(self.labels), dtype=object)
        names[:] = self.labels
        if self.task == "multilabel":
            pred.labels = [names[row.astype(bool)].tolist() for row in pred.classes]
        else:
            pred.labels = names[pred.classes].tolist()
        return pred


def _softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=1, keepdims=True)
    return z
