"""The dynamic batcher: concurrent requests of one model version share one forward pass.

It lives on the server's event loop. A request's samples join a bounded queue; a worker task
takes everything queued (up to `max_batch_size` samples, after waiting at most
`max_queue_delay` for the batch to fill), runs one forward pass, and hands each request its
rows. Requests already in the loop's ready queue join the same batch without any wait,
because the worker is woken by a callback scheduled after them. A request larger than
`max_batch_size` runs alone, in passes of at most `max_batch_size` rows (so memory per pass
stays bounded, as /v2/models/<m>/config promises), each counted as one batch.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import (
    ClientGoneError,
    QueueFullError,
    RequestTimeoutError,
    UnavailableError,
    model_error,
)
from .metrics import ModelMetrics

Outputs = dict[str, np.ndarray]


@dataclass
class BatchingConfig:
    """How one model version batches."""

    max_batch_size: int = 64
    max_queue_delay_ms: float = 0.0  # 0: batch whatever is waiting, never hold a request back
    max_queue_size: int = 2048  # samples waiting; beyond it requests are refused with 503
    timeout_ms: float = 30000.0  # per request, from arrival to answer
    # "thread": forward passes on a worker thread; "inline": on the loop (but for a request
    # larger than max_batch_size); "auto": a thread for a model that is slow (see model.py)
    compute: str = "auto"
    # threads one forward pass may use; more than one competes with the event loop for the GIL
    threads: int = 1
    # the largest input sample (one row) a served model may declare, in bytes; a bigger one
    # fails to load (see model.py: max_sample_bytes)
    max_sample_bytes: int = 256 * 2**20


class _Item:
    __slots__ = ("x", "n", "future", "arrived", "gone", "deadline")

    def __init__(self, x: np.ndarray, future: asyncio.Future, arrived: float,
                 gone: Callable[[], bool] | None, deadline: float) -> None:
        self.x, self.n, self.future, self.arrived, self.gone = x, len(x), future, arrived, gone
        self.deadline = deadline

    @property
    def timeout_ms(self) -> float:
        """The request's timeout (the server's, or the shorter one it asked for)."""
        return (self.deadline - self.arrived) * 1000


def _wake(future: asyncio.Future) -> None:
    if not future.done():
        future.set_result(None)


class DynamicBatcher:
    """Collects concurrent requests into batched calls of `compute` (rows in, rows out)."""

    def __init__(self, compute: Callable[[np.ndarray], Outputs], config: BatchingConfig,
                 metrics: ModelMetrics, threaded: bool = False, name: str = "model") -> None:
        self.compute, self.config, self.metrics = compute, config, metrics
        self._loop = asyncio.get_running_loop()
        self._queue: list[_Item] = []
        self._queued = 0  # samples in _queue
        self._running: list[_Item] = []  # the batch being computed
        self._watchdog: asyncio.TimerHandle | None = None  # fires at the earliest deadline
        self._wakeup: asyncio.Future | None = None
        self._wake_at = 1  # queued samples that end the worker's current wait
        self._closing = False
        self._executor = (ThreadPoolExecutor(1, thread_name_prefix=f"nnforge-{name}")
                          if threaded else None)
        self._worker = self._loop.create_task(self._run(), name=f"batcher-{name}")

    @property
    def threaded(self) -> bool:
        """Whether forward passes run on a worker thread instead of the event loop."""
        return self._executor is not None

    async def infer(self, x: np.ndarray, arrived: float | None = None,
                    gone: Callable[[], bool] | None = None,
                    timeout_s: float | None = None) -> Outputs:
        """The model's outputs for the rows of x (computed in a batch with other requests)."""
        return await self.submit(x, arrived, gone, timeout_s)

    def submit(self, x: np.ndarray, arrived: float | None = None,
               gone: Callable[[], bool] | None = None,
               timeout_s: float | None = None) -> asyncio.Future:
        """Queue the rows of x; a future of their outputs. Raises QueueFullError at once when
        the queue is full. `gone()` tells that nobody waits for the answer any more;
        `timeout_s` is the request's own timeout (it may shorten the configured one, never
        lengthen it: that one bounds what a client can make the server hold)."""
        cfg = self.config
        if self._closing:
            raise UnavailableError("the model version is being unloaded; retry")
        n = len(x)
        if self._queued + n > cfg.max_queue_size and self._queued:
            raise QueueFullError(f"the queue of this model holds {self._queued} samples and admits "
                                 f"at most {cfg.max_queue_size}; retry later")
        if arrived is None:
            arrived = time.perf_counter()
        limit = cfg.timeout_ms / 1000 if cfg.timeout_ms > 0 else math.inf
        if timeout_s is not None and timeout_s > 0:
            limit = min(limit, timeout_s)
        deadline = arrived + limit
        item = _Item(x, self._loop.create_future(), arrived, gone, deadline)
        self._queue.append(item)
        self._queued += n
        self.metrics.queued = self._queued
        if self._wakeup is not None and self._queued >= self._wake_at:
            _wake(self._wakeup)
        if self._watchdog is None and deadline != math.inf:
            self._arm(deadline)
        return item.future

    def _arm(self, deadline: float) -> None:
        # one timer for all requests instead of one each: it fires at the earliest deadline
        self._watchdog = self._loop.call_later(max(deadline - time.perf_counter(), 0.0),
                                               self._expire_due)

    def _expire_due(self) -> None:
        """Answer every request past its deadline with a timeout; re-arm for the next one."""
        self._watchdog = None
        now, upcoming = time.perf_counter(), math.inf
        for item in itertools.chain(self._running, self._queue):
            if item.future.done():
                continue
            if item.deadline <= now:
                item.future.set_exception(RequestTimeoutError(
                    f"no answer within the request timeout of {item.timeout_ms:g} ms"))
            else:
                upcoming = min(upcoming, item.deadline)
        if upcoming != math.inf:
            self._arm(upcoming)

    async def close(self) -> None:
        """Stop taking requests, finish the queued ones, stop the worker."""
        self._closing = True
        if self._wakeup is not None:
            _wake(self._wakeup)
        await asyncio.shield(self._worker)
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    async def _wait(self, wake_at: int, timeout: float | None) -> None:
        self._wakeup, self._wake_at = self._loop.create_future(), wake_at
        handle = self._loop.call_later(timeout, _wake, self._wakeup) if timeout else None
        try:
            await self._wakeup
        finally:
            self._wakeup = None
            if handle is not None:
                handle.cancel()

    async def _run(self) -> None:
        cfg = self.config
        while True:
            if not self._queue:
                if self._closing:
                    return
                await self._wait(1, None)
                continue
            if self._queued < cfg.max_batch_size and not self._closing:
                if cfg.max_queue_delay_ms > 0:
                    left = self._queue[0].arrived + cfg.max_queue_delay_ms / 1000 \
                        - time.perf_counter()
                    if left > 0:
                        await self._wait(cfg.max_batch_size, left)
                else:
                    # one more pass of the event loop: requests whose bytes arrived while the
                    # last batch ran join this one, at the cost of one loop iteration
                    await asyncio.sleep(0)
            batch = self._take()
            if batch:
                await self._compute(batch)

    def _take(self) -> list[_Item]:
        """Pop the requests of the next batch, dropping the ones nobody waits for any more."""
        limit, taken, total, used = self.config.max_batch_size, [], 0, 0
        queue = self._queue
        for item in queue:
            if not item.future.done() and item.gone is not None and item.gone():
                item.future.set_exception(ClientGoneError("the client disconnected"))
            # a done future: timed out, client gone, or its task was cancelled (gRPC cancel)
            if not item.future.done():
                # one forward pass needs one sample shape (models with free dimensions)
                if total and (total + item.n > limit
                              or item.x.shape[1:] != taken[0].x.shape[1:]):
                    break
                taken.append(item)
                total += item.n
            self._queued -= item.n
            used += 1
        del queue[:used]
        self.metrics.queued = self._queued
        return taken

    async def _compute(self, batch: list[_Item]) -> None:
        m = self.metrics
        start = time.perf_counter()
        for item in batch:
            m.queue.observe(start - item.arrived)
        self._running = batch
        try:
            x = batch[0].x if len(batch) == 1 else np.concatenate([it.x for it in batch])
            out = await self._passes(x, batch)
        except Exception as exc:  # noqa: BLE001 - every waiting request must get an answer
            await self._isolate(batch, exc)
            return
        finally:
            self._running = []
        if out is None:  # nobody waits any more (timed out, gone)
            return
        offset = 0
        for item in batch:
            if not item.future.done():
                end = offset + item.n
                item.future.set_result({k: v[offset:end] for k, v in out.items()})
            offset += item.n

    async def _passes(self, x: np.ndarray, batch: list[_Item]) -> Outputs | None:
        """The outputs of x in forward passes of at most max_batch_size rows, each counted
        as one batch; None when every request of the batch was answered meanwhile."""
        limit, m = self.config.max_batch_size, self.metrics
        if len(x) <= limit:
            start = time.perf_counter()
            out = await self._call(x)
            m.record_batch(len(x), time.perf_counter() - start, int(time.time() * 1000))
            return out
        # only a single request larger than max_batch_size gets here (_take cuts batches
        # there): its passes run on a thread even for a fast model, since on the event loop
        # they would stall every other request and the health probes for as long
        parts = []
        for i in range(0, len(x), limit):
            if all(item.future.done() for item in batch):
                return None  # timed out or gone: the remaining passes would be wasted
            start = time.perf_counter()
            parts.append(await self._loop.run_in_executor(self._executor, self.compute,
                                                          x[i:i + limit]))
            m.record_batch(len(x[i:i + limit]), time.perf_counter() - start,
                           int(time.time() * 1000))
        return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}

    async def _call(self, x: np.ndarray) -> Outputs:
        if self._executor is None:
            return self.compute(x)
        return await self._loop.run_in_executor(self._executor, self.compute, x)

    async def _isolate(self, batch: list[_Item], exc: Exception) -> None:
        """A failed batch is rerun request by request, so one bad request fails alone."""
        if len(batch) == 1:
            item = batch[0]
            if not item.future.done():
                item.future.set_exception(model_error(exc))
            return
        for item in batch:
            if item.future.done():
                continue
            try:
                out = await self._call(item.x)
            except Exception as err:  # noqa: BLE001
                await self._isolate([item], err)
            else:
                if not item.future.done():
                    item.future.set_result(out)
