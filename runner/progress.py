"""Live progress on stderr (rich): done/total, in flight, rate, running TTFT p50, errors.

Shown only on a TTY.  A task on the loop copies a few counters into the bar
4 times a second, so the streams pay nothing per event for it.
"""

from __future__ import annotations

import statistics
import time
from collections import deque
from typing import Callable

from .record import OK, Record


class LiveCounters:
    """Counters the engine bumps per record; cheap enough for every record."""

    def __init__(self) -> None:
        self.done = 0
        self.errors = 0
        self.recent_ttft: deque[float] = deque(maxlen=2000)
        self.started = time.monotonic()

    def on_record(self, record: Record) -> None:
        self.done += 1
        if record.status != OK:
            self.errors += 1
        ttft = record.metrics.ttft_s
        if ttft is not None:
            self.recent_ttft.append(ttft)

    def ttft_p50(self) -> float | None:
        return statistics.median(self.recent_ttft) if self.recent_ttft else None


class ProgressDisplay:
    def __init__(self, counters: LiveCounters, total: int | None, in_flight: Callable[[], int],
                 concurrency: Callable[[], str], console=None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.counters = counters
        self.in_flight = in_flight
        self.concurrency = concurrency
        self.progress = Progress(
            TextColumn("[bold]streamrun"), BarColumn(bar_width=24), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.fields[info]}"),
            console=console or Console(stderr=True), transient=True, refresh_per_second=4,
        )
        self.task = self.progress.add_task("run", total=total, info="")

    async def run(self) -> None:
        import asyncio

        while True:
            self.tick()
            await asyncio.sleep(0.25)

    def tick(self) -> None:
        c = self.counters
        elapsed = max(1e-9, time.monotonic() - c.started)
        p50 = c.ttft_p50()
        ttft = f"{p50 * 1000:.0f} ms" if p50 is not None else "-"
        info = (f"in flight {self.in_flight()}/{self.concurrency()}  {c.done / elapsed:.1f} req/s  "
                f"TTFT p50 {ttft}  err {c.errors}")
        self.progress.update(self.task, completed=c.done, info=info)

    def __enter__(self) -> "ProgressDisplay":
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()
