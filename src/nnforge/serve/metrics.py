"""Prometheus metrics of the server, cheap on the request path.

prometheus_client's own Counter/Histogram take a lock and walk label dicts on every call,
several microseconds each; a request touches half a dozen of them. Here the hot path only
bumps plain Python numbers (all updates come from the event loop thread, so no lock is
needed) and prometheus_client formats them when /metrics is scraped.
"""

from __future__ import annotations

import os
import resource
from bisect import bisect_left
from typing import Any, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.process_collector import ProcessCollector

LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                   0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
OUTCOMES = ("success", "invalid_input", "rejected_queue_full", "timeout", "cancelled",
            "unauthorized", "error")
#: label used for requests naming a model that does not exist, so that clients sending random
#: names cannot grow the number of series without bound
UNKNOWN = "_unknown"
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Histogram:
    """Bucket counts and sum of one label set."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one value (bucket `le=b` holds values <= b)."""
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def add(self, counts: list[int], total: float) -> None:
        """Add another process's bucket counts and sum (same bounds)."""
        self.counts = [a + b for a, b in zip(self.counts, counts)]
        self.sum += total

    def cumulative(self) -> list[tuple[str, float]]:
        """(le, cumulative count) pairs in Prometheus order."""
        out, total = [], 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts):
            total += count
            out.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
        return out


class ModelMetrics:
    """Everything counted for one (model, version)."""

    __slots__ = ("outcomes", "queue", "compute", "total", "batch", "inflight", "queued",
                 "load_seconds", "labels", "failed_seconds", "last_inference_ms", "by_batch")

    def __init__(self, model: str, version: str) -> None:
        self.labels = (model, version)
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.queue = Histogram(LATENCY_BUCKETS)
        self.compute = Histogram(LATENCY_BUCKETS)
        self.total = Histogram(LATENCY_BUCKETS)
        self.batch = Histogram(BATCH_BUCKETS)
        self.inflight = 0  # requests between arrival and answer
        self.queued = 0  # samples waiting in the batcher
        self.load_seconds: float | None = None
        self.failed_seconds = 0.0  # summed latency of the requests that did not succeed
        self.last_inference_ms = 0  # wall-clock time of the last batch, ms since the epoch
        self.by_batch: dict[int, list[float]] = {}  # batch size -> [batches, compute seconds]

    def record_batch(self, size: int, seconds: float, now_ms: int) -> None:
        """Count one forward pass of `size` samples that took `seconds`."""
        self.compute.observe(seconds)
        self.batch.observe(size)
        entry = self.by_batch.get(size)
        if entry is None:
            entry = self.by_batch[size] = [0, 0.0]
        entry[0] += 1
        entry[1] += seconds
        self.last_inference_ms = now_ms

    def snapshot(self) -> dict[str, Any]:
        """Every number, JSON-serialisable (what a worker sends its peers)."""
        return {"labels": self.labels, "outcomes": self.outcomes,
                **{k: [getattr(self, k).counts, getattr(self, k).sum] for k in _HISTOGRAMS},
                "inflight": self.inflight, "queued": self.queued,
                "load_seconds": self.load_seconds, "failed_seconds": self.failed_seconds,
                "last_inference_ms": self.last_inference_ms,
                "by_batch": [[size, *entry] for size, entry in self.by_batch.items()]}

    def add(self, snap: dict[str, Any]) -> None:
        """Add the numbers of another worker's snapshot of the same version."""
        for outcome, count in snap["outcomes"].items():
            self.outcomes[outcome] = self.outcomes.get(outcome, 0) + count
        for key in _HISTOGRAMS:
            getattr(self, key).add(*snap[key])
        self.inflight += snap["inflight"]
        self.queued += snap["queued"]
        if snap["load_seconds"] is not None:  # each worker loads its own copy: the slowest
            self.load_seconds = max(self.load_seconds or 0.0, snap["load_seconds"])
        self.failed_seconds += snap["failed_seconds"]
        self.last_inference_ms = max(self.last_inference_ms, snap["last_inference_ms"])
        for size, count, seconds in snap["by_batch"]:
            entry = self.by_batch.setdefault(int(size), [0, 0.0])
            entry[0] += count
            entry[1] += seconds


_HISTOGRAMS = ("queue", "compute", "total", "batch")


class ServerMetrics:
    """All series of one server, and their Prometheus text form.

    With several worker processes each counts its own requests; `merged` sums the workers'
    snapshots into one ServerMetrics whose exposition shows the whole server, plus each
    worker's CPU time and memory in place of the process_* series of a single process.
    """

    def __init__(self, workers: list[dict[str, Any]] | None = None) -> None:
        self._models: dict[tuple[str, str], ModelMetrics] = {}
        self.load_failures: dict[str, int] = {}
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        if workers is None:
            ProcessCollector(registry=self.registry)  # memory and CPU of the server process
        else:
            self.registry.register(_WorkerCollector(workers))

    def snapshot(self) -> dict[str, Any]:
        """This process's numbers, JSON-serialisable (see `merged`)."""
        return {"models": [m.snapshot() for m in self.items()],
                "load_failures": self.load_failures, "process": process_usage()}

    @classmethod
    def merged(cls, snapshots: list[dict[str, Any]]) -> ServerMetrics:
        """The sum of several workers' snapshots."""
        out = cls(workers=[s["process"] for s in snapshots])
        for snap in snapshots:
            for m in snap["models"]:
                out.model(*m["labels"]).add(m)
            for model, count in snap["load_failures"].items():  # each worker tries each
                out.load_failures[model] = max(out.load_failures.get(model, 0), count)
        return out

    def model(self, model: str, version: str) -> ModelMetrics:
        """The series of one model version, created on first use."""
        key = (model, version)
        m = self._models.get(key)
        if m is None:
            m = self._models[key] = ModelMetrics(model, version)
        return m

    def items(self) -> Iterable[ModelMetrics]:
        """Every model version seen so far."""
        return list(self._models.values())

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


class _Collector:
    """Turns the plain numbers into metric families when scraped."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        """Yield every family (called by prometheus_client)."""
        mv = ["model", "version"]
        requests = CounterMetricFamily("nnforge_requests", "Inference requests by outcome",
                                       labels=[*mv, "outcome"])
        hists = {
            "queue": HistogramMetricFamily("nnforge_queue_duration_seconds",
                                           "Time a request waited in the batcher queue",
                                           labels=mv),
            "compute": HistogramMetricFamily("nnforge_compute_duration_seconds",
                                             "Time of one batched forward pass", labels=mv),
            "total": HistogramMetricFamily("nnforge_request_duration_seconds",
                                           "Time from a request's arrival to its answer",
                                           labels=mv),
            "batch": HistogramMetricFamily("nnforge_batch_size",
                                           "Samples per batched forward pass", labels=mv),
        }
        inflight = GaugeMetricFamily("nnforge_inflight_requests",
                                     "Inference requests being handled", labels=mv)
        queued = GaugeMetricFamily("nnforge_queue_samples", "Samples waiting in the batcher",
                                   labels=mv)
        load = GaugeMetricFamily("nnforge_model_load_duration_seconds",
                                 "Time to load and warm up a model version", labels=mv)
        failures = CounterMetricFamily("nnforge_model_load_failures",
                                       "Model versions that failed to load", labels=["model"])
        for m in self.metrics.items():
            labels = list(m.labels)
            for outcome, count in m.outcomes.items():
                requests.add_metric([*labels, outcome], count)
            for key, family in hists.items():
                h = getattr(m, key)
                family.add_metric(labels, h.cumulative(), h.sum)
            inflight.add_metric(labels, m.inflight)
            queued.add_metric(labels, m.queued)
            if m.load_seconds is not None:
                load.add_metric(labels, m.load_seconds)
        for model, count in self.metrics.load_failures.items():
            failures.add_metric([model], count)
        yield requests
        yield from hists.values()
        yield from (inflight, queued, load, failures)


def process_usage() -> dict[str, Any]:
    """This process's id, CPU seconds and resident memory (for the per-worker series)."""
    usage = os.times()
    try:
        with open("/proc/self/statm", "rb") as f:
            rss = int(f.read().split()[1]) * resource.getpagesize()
    except OSError:  # not Linux: the peak is what the standard library offers
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"pid": os.getpid(), "cpu_seconds": usage.user + usage.system, "rss_bytes": rss}


class _WorkerCollector:
    """CPU time and memory of each worker process, and how many there are."""

    def __init__(self, workers: list[dict[str, Any]]) -> None:
        self.workers = workers

    def collect(self) -> Iterator[Metric]:
        """Yield the per-worker families (called by prometheus_client)."""
        count = GaugeMetricFamily("nnforge_workers", "Worker processes that answered this scrape")
        count.add_metric([], len(self.workers))
        cpu = CounterMetricFamily("nnforge_worker_cpu_seconds", "CPU time of a worker process",
                                  labels=["pid"])
        rss = GaugeMetricFamily("nnforge_worker_resident_memory_bytes",
                                "Resident memory of a worker process", labels=["pid"])
        for w in self.workers:
            cpu.add_metric([str(w["pid"])], w["cpu_seconds"])
            rss.add_metric([str(w["pid"])], w["rss_bytes"])
        yield from (count, cpu, rss)
