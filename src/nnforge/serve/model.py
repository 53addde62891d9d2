"""One served model version: its InferenceSession, its tensors on the wire, its answers.

The server speaks task-level outputs, the same numbers as `InferenceSession.predict`:
multiclass and binary models answer `classes`, `probabilities` and, when the model has label
names, `labels`; multilabel models `classes` and `probabilities` per label; regression models
(and models without a task) `values`.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any

import numpy as np

from ..errors import ConfigError
from ..runtime.session import InferenceSession
from .errors import InvalidInputError
from .tensors import TensorSpec, datatype_of

Outputs = dict[str, np.ndarray]
PLATFORM = "nnforge"
#: a full batch slower than this runs on a worker thread (compute="auto"): the event loop
#: would otherwise stop reading requests for that long
SLOW_BATCH_SECONDS = 0.002
#: warm-up runs a bucket only while its zero input fits in this many bytes: the declared
#: sample shape comes from the model file, and 64 buckets of a 1 GiB sample would take the
#: server's memory before it answers anything (batch 1 always runs)
WARM_UP_BYTES = 64 * 2**20
#: the largest sample (one input row) a served model may declare by default, in bytes
#: (BatchingConfig.max_sample_bytes). Why 256 MiB: a sample has to arrive in one request,
#: and requests are capped by max_body_bytes (16 MiB by default, 2 GiB at most); a model whose
#: sample is far beyond that could never be sent one, and would only cost memory per batch.
MAX_SAMPLE_BYTES = 256 * 2**20


def _dims(shape: Any) -> tuple[int, ...]:
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in shape)


class ServedModel:
    """A loaded model version, ready to compute batches and describe itself."""

    def __init__(self, name: str, version: str, session: InferenceSession,
                 path: str | None = None, max_batch_size: int = 64,
                 max_sample_bytes: int = MAX_SAMPLE_BYTES) -> None:
        self.name, self.version, self.session, self.path = name, version, session, path
        self.manifest = session.manifest
        self.task = session.task
        names = session.input_names
        if len(names) != 1:
            raise ConfigError(f"a served model must have one input, found {len(names)} "
                              f"({names})")
        self.input = TensorSpec(names[0], datatype_of(session.graph.inputs[0].dtype),
                                _dims(session.input_shape), session.fills_missing)
        self.sample_bytes = _sample_bytes(self.input.shape, session.graph.inputs[0].dtype)
        if self.sample_bytes > max_sample_bytes:
            raise ConfigError(f"the model's input sample of shape {list(self.input.shape)} "
                              f"takes {self.sample_bytes} bytes, more than the server's "
                              f"max_sample_bytes ({max_sample_bytes}); raise max_sample_bytes "
                              f"in [batching] to serve it")
        labels = self.manifest.get("labels") if self.task in ("multiclass", "binary") else None
        self.labels = None  # label names by class index, as the manifest has them
        if labels is not None:
            self.labels = np.empty(len(labels), object)
            self.labels[:] = labels
        self.outputs = self._output_specs()
        self.buckets = batch_buckets(max_batch_size)
        self.load_seconds = 0.0
        self.slow = False  # whether a full batch takes long enough to deserve its own thread

    @classmethod
    def load(cls, name: str, version: str, path: str | os.PathLike,
             max_batch_size: int = 64, threads: int = 1,
             max_sample_bytes: int = MAX_SAMPLE_BYTES) -> ServedModel:
        """Open a `.nnf` file as a served model version."""
        return cls(name, version, InferenceSession(path, threads=threads), os.fspath(path),
                   max_batch_size, max_sample_bytes)

    def _output_specs(self) -> list[TensorSpec]:
        out_shape = _dims(self.session.output_shape)
        width = int(np.prod(out_shape)) if out_shape and min(out_shape) > 0 else -1
        t = self.task
        if t == "multiclass":
            specs = [TensorSpec("classes", "INT64", ()),
                     TensorSpec("probabilities", "FP32", (width,))]
        elif t == "binary":
            specs = [TensorSpec("classes", "INT64", ()), TensorSpec("probabilities", "FP32", ())]
        elif t == "multilabel":
            specs = [TensorSpec("classes", "INT64", (width,)),
                     TensorSpec("probabilities", "FP32", (width,))]
        else:
            specs = [TensorSpec("values", "FP32", () if width == 1 else out_shape)]
        if self.labels is not None:
            specs.append(TensorSpec("labels", "BYTES", ()))
        return specs

    # -- computing ---------------------------------------------------------------------------
    def compute(self, x: np.ndarray) -> Outputs:
        """Task outputs for a batch of rows (what the batcher runs).

        The batch is padded with zero rows up to the next bucket size: the session compiles
        one plan per input shape and keeps a bounded number of them, so a server that ran
        every batch size from 1 to max_batch_size would keep compiling. A request larger than
        max_batch_size runs in passes of max_batch_size rows (padded to a multiple of it):
        one forward pass of all its rows would take memory in proportion to the request, and
        a plan per request size.
        """
        n, limit = len(x), self.buckets[-1]
        size = next((b for b in self.buckets if b >= n), -(-n // limit) * limit)
        if size != n:
            x = np.concatenate([x, np.zeros((size - n, *x.shape[1:]), x.dtype)])
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is refused below
            pred = self.session.predict(x, batch_size=min(size, limit))
        if self.task in ("multiclass", "binary", "multilabel"):
            out = {"classes": pred.classes, "probabilities": pred.probabilities}
        else:
            out = {"values": pred.values}
        result = {k: (v[:n] if v.dtype.kind != "f" else v[:n].astype(np.float32, copy=False))
                  for k, v in out.items()}
        for name, v in result.items():
            # an input that overflows the model gives nan/inf: JSON would carry them as null
            # and argmax would answer class 0; refuse instead (the batcher then reruns the
            # batch request by request, so only the request at fault fails)
            if v.dtype.kind == "f" and not math.isfinite(np.add.reduce(v, None, np.float64)) \
                    and not np.isfinite(v).all():
                row = int(np.argwhere(~np.isfinite(v))[0][0])
                raise InvalidInputError(f"the model's {name} are not finite numbers for sample "
                                        f"{row}: its input values are probably too large for "
                                        f"the model")
        return result

    def warm_up(self) -> None:
        """Run each bucket size once, so that requests find compiled plans; time the largest.

        Only buckets whose input fits in WARM_UP_BYTES run (batch 1 always does): the
        others compile on their first request instead.
        """
        shape = tuple(d if d > 0 else 1 for d in self.input.shape)
        per_row = math.prod(shape) * 4
        sizes = [n for n in self.buckets if n == 1 or n * per_row <= WARM_UP_BYTES]
        for n in sizes:
            self.compute(np.zeros((n, *shape), np.float32))
        x = np.zeros((sizes[-1], *shape), np.float32)
        start = time.perf_counter()
        self.compute(x)
        # a model whose full batch was too big to warm up is slow by any measure
        self.slow = (sizes[-1] < self.buckets[-1]
                     or time.perf_counter() - start > SLOW_BATCH_SECONDS)

    def label_array(self, classes: np.ndarray) -> np.ndarray:
        """The label name of each class index."""
        assert self.labels is not None
        return self.labels[classes]

    def top_classes(self, out: Outputs, k: int) -> np.ndarray:
        """Triton's classification of the probabilities: for each sample the k best classes
        as "score:index[:label]" strings, best first (k capped at the number of classes)."""
        scores = out["probabilities"]
        if self.task == "binary":  # one probability of class 1: the scores of both classes
            scores = np.stack([1 - scores, scores], axis=1)
        scores = scores.reshape(len(scores), -1)
        k = min(k, scores.shape[1])
        # a stable sort of the negated scores: ties keep the lower index first
        best = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        names = self.manifest.get("labels")
        if names is not None and len(names) != scores.shape[1]:
            names = None
        top = np.empty(best.shape, object)
        for i, row in enumerate(best.tolist()):
            for j, c in enumerate(row):
                text = f"{scores[i, c]}:{c}"
                top[i, j] = text if names is None else f"{text}:{names[c]}"
        return top

    def rows(self, out: Outputs) -> list[dict[str, Any]]:
        """One JSON-ready answer per sample (NumPy values; orjson writes them natively)."""
        t = self.task
        if t == "multiclass":
            classes, probs = out["classes"].tolist(), out["probabilities"]
            if self.labels is None:
                return [{"class": c, "probabilities": probs[i]} for i, c in enumerate(classes)]
            labels = self.labels[classes]
            return [{"class": c, "label": labels[i], "probabilities": probs[i]}
                    for i, c in enumerate(classes)]
        if t == "binary":
            classes, probs = out["classes"].tolist(), out["probabilities"].tolist()
            rows = [{"class": c, "probability": p} for c, p in zip(classes, probs)]
            if self.labels is not None:
                for row, name in zip(rows, self.labels[classes]):
                    row["label"] = name
            return rows
        if t == "multilabel":
            classes, probs = out["classes"], out["probabilities"]
            names = self.manifest.get("labels")
            rows = [{"classes": classes[i], "probabilities": probs[i]}
                    for i in range(len(classes))]
            if names is not None:
                for row, on in zip(rows, classes.astype(bool)):
                    row["labels"] = [n for n, flag in zip(names, on.tolist()) if flag]
            return rows
        values = out["values"]
        if values.ndim == 1:
            return [{"value": v} for v in values.tolist()]
        return [{"values": values[i]} for i in range(len(values))]

    # -- describing --------------------------------------------------------------------------
    def metadata(self, versions: list[str]) -> dict[str, Any]:
        """The V2 model metadata document."""
        return {"name": self.name, "versions": versions, "platform": PLATFORM,
                "inputs": [self.input.metadata()],
                "outputs": [s.metadata() for s in self.outputs]}

    def describe(self) -> dict[str, Any]:
        """What /v1/models/{name} tells about this version: task, labels, tensors."""
        return {"name": self.name, "version": self.version, "task": self.task,
                "labels": self.manifest.get("labels"), "input": self.input.metadata(),
                "outputs": [s.metadata() for s in self.outputs],
                "created": self.manifest.get("created"),
                "metrics": self.manifest.get("metrics")}


def batch_buckets(max_batch_size: int) -> list[int]:
    """Batch sizes the model runs at: steps of about 1.5x up to max_batch_size (at most 12
    sizes, else powers of two), so padding wastes at most a third of a batch."""
    fine = sorted({b for k in range(max_batch_size.bit_length() + 1)
                   for b in (2 ** k, 3 * 2 ** k // 2) if 1 <= b < max_batch_size})
    steps = fine if len(fine) < 12 else [2 ** k for k in range(max_batch_size.bit_length())
                                          if 2 ** k < max_batch_size]
    return [*steps, max_batch_size]


def _sample_bytes(shape: tuple[int, ...], dtype: Any) -> int:
    """Bytes of one input row (unknown dims count as 1; warm-up feeds float32)."""
    try:
        size = max(np.dtype(dtype).itemsize, 4)
    except TypeError:
        size = 4
    return math.prod(d if d > 0 else 1 for d in shape) * size


def timed_load(name: str, version: str, path: str | os.PathLike, max_batch_size: int,
               threads: int = 1, max_sample_bytes: int = MAX_SAMPLE_BYTES) -> ServedModel:
    """Load and warm up a version, recording how long it took."""
    start = time.perf_counter()
    model = ServedModel.load(name, version, path, max_batch_size, threads, max_sample_bytes)
    model.warm_up()
    model.load_seconds = time.perf_counter() - start
    return model
