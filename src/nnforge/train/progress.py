"""Per-epoch progress display: a rich bar on a terminal, one line per epoch otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any


def _fmt(logs: dict[str, float]) -> str:
    return "  ".join(f"{k} {v:.4f}" for k, v in logs.items() if isinstance(v, float))


class ProgressDisplay:
    """Shows training progress; verbose: 0 silent, 1 per-epoch lines (bar on a tty), "auto"."""

    def __init__(self, verbose: Any, epochs: int, batches: int) -> None:
        tty = sys.stdout.isatty()
        if verbose == "auto":
            verbose = 1 if tty else 0
        self.enabled = bool(verbose)
        self.use_bar = self.enabled and tty
        self.epochs, self.batches = epochs, batches
        self._progress: Any = None
        self._task: Any = None
        self._every = max(1, batches // 50)  # redraw ~50 times an epoch: cheap next to a batch

    def epoch_begin(self, epoch: int) -> None:
        """Start the bar for one epoch."""
        self._t0 = time.perf_counter()
        if not self.use_bar:
            return
        from rich.progress import (  # noqa: PLC0415
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        self._progress = Progress(
            TextColumn(f"epoch {epoch + 1}/{self.epochs}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeRemainingColumn(), transient=False)
        self._progress.start()
        self._task = self._progress.add_task("train", total=self.batches, info="")

    def batch_end(self, batch: int, loss: float, samples: int) -> None:
        """Advance the bar; loss is the running mean, samples the count seen this epoch."""
        if self._progress is None or (batch + 1) % self._every and batch + 1 != self.batches:
            return
        rate = samples / max(time.perf_counter() - self._t0, 1e-9)
        self._progress.update(self._task, completed=batch + 1,
                              info=f"loss {loss:.4f}  {rate:,.0f} samples/s")

    def close(self) -> None:
        """Stop a bar still drawing (fit() interrupted mid-epoch); nothing otherwise."""
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def epoch_end(self, epoch: int, logs: dict[str, float], samples: int) -> None:
        """Finish the epoch: final metrics on the bar, or one printed line."""
        elapsed = time.perf_counter() - self._t0
        rate = samples / max(elapsed, 1e-9)
        if self._progress is not None:
            self._progress.update(self._task, completed=self.batches,
                                  info=f"{rate:,.0f} samples/s  {elapsed:.2f}s")
            self._progress.stop()
            # metrics on a line of their own: a narrow terminal would truncate them on the bar
            self._progress.console.print(f"  {_fmt(logs)}", highlight=False)
            self._progress = None
        elif self.enabled:
            print(f"epoch {epoch + 1}/{self.epochs}  {_fmt(logs)}  {rate:,.0f} samples/s  "
                  f"{elapsed:.2f}s", flush=True)
