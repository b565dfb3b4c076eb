"""Live progress on stderr: a bar (rich) on a terminal, log lines when nobody watches.

On a TTY a task on the loop copies a few counters into the bar 4 times a
second, so the streams pay nothing per event for it.  Without one (cron,
systemd, Kubernetes, CI) or under `--log-format json`, `ProgressLog` logs
one line every `--log-every` seconds from the same counters instead.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..record import OK, Record

if TYPE_CHECKING:  # rich is imported when the display starts
    from rich.console import JustifyMethod
    from rich.progress import ProgressColumn, TextColumn

LOGGER = "streamrun"


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


def json_logs(logger: logging.Logger | None = None) -> bool:
    """Whether the streamrun logger writes JSON lines (`--log-format json`).

    The CLI's JSON formatter says so with a class attribute `emits_json`; a
    program using the Python API may mark its own formatter the same way.
    Read from the configured handler, so the run needs no extra parameter.
    """
    logger = logger or logging.getLogger(LOGGER)
    return any(getattr(h.formatter, "emits_json", False) for h in logger.handlers)


def quiet_logs(logger: logging.Logger | None = None) -> bool:
    """Whether the streamrun logger was set to warnings and errors only (`-q`): then the end-of-run
    summary is not shown (its file is written all the same), only its warnings.

    Read from the logger's own level, as `json_logs` reads its handler: a program using the Python
    API that configures no logging still gets the summary.
    """
    logger = logger or logging.getLogger(LOGGER)
    return logger.level > logging.INFO


def _rate_text(rate: float) -> str:
    """At most 11 characters, the width the bar keeps for it."""
    if rate < 100:
        return f"{rate:.1f} req/s"
    if rate < 100_000:
        return f"{rate:.0f} req/s"
    return f"{min(rate / 1000, 99_999):.0f}k req/s"


def _duration_text(seconds: float) -> str:
    """4m35s, 1h02m, 12s: short enough for a log line."""
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class ProgressDisplay:
    """The bar: label, bar, done/total, elapsed, ETA, in flight, rate, TTFT p50, errors.

    The columns are chosen from the console's width: each has a fixed width
    for its widest value, and the least useful are left out until the row
    fits, so an 80-column terminal gets fewer columns rather than cut ones.
    """

    BAR_MIN, BAR_MAX = 16, 24

    def __init__(self, counters: LiveCounters, total: int | None, in_flight: Callable[[], int],
                 concurrency: Callable[[], str], console=None) -> None:
        from rich.console import Console
        from rich.progress import Progress

        self.counters = counters
        self.total = total
        self.in_flight = in_flight
        self.concurrency = concurrency
        self.console = console or Console(stderr=True)
        self._width = self.console.width
        self.progress = Progress(*self._columns(self._width), console=self.console, transient=True,
                                 refresh_per_second=4)
        self.task = self.progress.add_task("run", total=total, info="", inflight="", rate="", ttft="", errors="")

    def _columns(self, width: int) -> list[ProgressColumn]:
        """The columns that fit `width`, in display order; the bar takes what is left, up to BAR_MAX."""
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
        from rich.table import Column

        def text(fmt: str, w: int, justify: JustifyMethod = "left") -> TextColumn:
            return TextColumn(fmt, table_column=Column(no_wrap=True, min_width=w, justify=justify))

        digits = len(str(self.total)) if self.total is not None else 7
        conc = len(self.concurrency())  # the limit never grows past its start (adaptive only lowers it)
        # name -> width of its widest value; "eta" is two cells ("ETA" and the time)
        widths = {"label": 9, "bar": self.BAR_MIN, "mofn": 2 * digits + 1 if self.total is not None else 9,
                  "elapsed": 8, "eta": 3 + 1 + 8, "inflight": 10 + 2 * conc + 1, "rate": 11, "ttft": 17,
                  "errors": 4 + digits}
        priority = ["mofn", "bar", "eta", "errors", "rate", "inflight", "ttft", "elapsed", "label"]
        if self.total is None:
            priority.remove("eta")  # nothing to count down to (stdin)
        budget = width - 1  # one column spare: some terminals wrap a line that fills the width
        chosen: set[str] = set()
        used = -1  # n cells have n - 1 one-space gaps
        for name in priority:
            cost = widths[name] + 1
            if used + cost <= budget:
                chosen.add(name)
                used += cost
        bar = self.BAR_MIN + min(self.BAR_MAX - self.BAR_MIN, max(0, budget - used))
        make: dict[str, Callable[[], list[ProgressColumn]]] = {
            "label": lambda: [text("[bold]streamrun", 9)],
            "bar": lambda: [BarColumn(bar_width=bar, table_column=Column(no_wrap=True, width=bar))],
            "mofn": lambda: [MofNCompleteColumn(table_column=Column(no_wrap=True, min_width=widths["mofn"],
                                                                    justify="right"))],
            "elapsed": lambda: [TimeElapsedColumn(table_column=Column(no_wrap=True, min_width=7))],
            "eta": lambda: [text("ETA", 3), TimeRemainingColumn(table_column=Column(no_wrap=True, min_width=7))],
            "inflight": lambda: [text("{task.fields[inflight]}", widths["inflight"])],
            "rate": lambda: [text("{task.fields[rate]}", widths["rate"], "right")],
            "ttft": lambda: [text("{task.fields[ttft]}", widths["ttft"])],
            "errors": lambda: [text("{task.fields[errors]}", widths["errors"])],
        }
        order = ["label", "bar", "mofn", "elapsed", "eta", "inflight", "rate", "ttft", "errors"]
        return [column for name in order if name in chosen for column in make[name]()]

    async def run(self) -> None:
        import asyncio

        while True:
            self.tick()
            await asyncio.sleep(0.25)

    def tick(self) -> None:
        width = self.console.width
        if width != self._width:  # the terminal was resized
            self._width = width
            self.progress.columns = tuple(self._columns(width))
        c = self.counters
        elapsed = max(1e-9, time.monotonic() - c.started)
        p50 = c.ttft_p50()
        fields: dict[str, Any] = {  # rich's task fields
            "inflight": f"in flight {self.in_flight()}/{self.concurrency()}",
            "rate": _rate_text(c.done / elapsed),
            "ttft": f"TTFT p50 {p50 * 1000:.0f} ms" if p50 is not None else "TTFT p50 -",
            "errors": f"err {c.errors}",
        }
        info = "  ".join(fields.values())
        self.progress.update(self.task, completed=c.done, info=info, **fields)

    def __enter__(self) -> ProgressDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()


class ProgressLog:
    """Progress as a log line every `every_s` seconds, for runs that nobody watches.

    Text: `streamrun: progress 120/1000 (12%): 118 ok, 2 errors, 3.2 req/s, in flight 16/16, ETA 4m35s`.
    JSON (`as_json`): `{"msg": "progress", "done", "total", "ok", "errors", "rate", "in_flight",
    "concurrency", "elapsed_s", "eta_s", "ttft_p50_s"}`.  The rate is taken over the last minute, so
    the ETA follows a load that changes (a sweep's stages, a throttled API).
    """

    WINDOW_S = 60.0

    def __init__(self, counters: LiveCounters, total: int | None, in_flight: Callable[[], int],
                 concurrency: Callable[[], int], every_s: float, *, as_json: bool = False,
                 logger: logging.Logger | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.counters = counters
        self.total = total
        self.in_flight = in_flight
        self.concurrency = concurrency
        self.every_s = every_s
        self.as_json = as_json
        self.log = logger or logging.getLogger(LOGGER)
        self.clock = clock
        self._samples: deque[tuple[float, int]] = deque([(counters.started, 0)])

    async def run(self) -> None:
        import asyncio

        while True:
            await asyncio.sleep(self.every_s)
            self.tick()

    def snapshot(self) -> dict:
        """The numbers of one progress line (None where not known yet)."""
        c = self.counters
        now = self.clock()
        samples = self._samples
        samples.append((now, c.done))
        while len(samples) > 2 and samples[1][0] <= now - self.WINDOW_S:
            samples.popleft()
        t0, done0 = samples[0]
        rate = (c.done - done0) / (now - t0) if now > t0 else 0.0
        eta = None
        if self.total is not None and rate > 0:
            eta = max(0, self.total - c.done) / rate
        p50 = c.ttft_p50()
        return {"done": c.done, "total": self.total, "ok": c.done - c.errors, "errors": c.errors,
                "rate": round(rate, 3), "in_flight": self.in_flight(), "concurrency": self.concurrency(),
                "elapsed_s": round(now - c.started, 1), "eta_s": None if eta is None else round(eta, 1),
                "ttft_p50_s": None if p50 is None else round(p50, 4)}

    def line(self, d: dict) -> str:
        if d["total"]:
            head = f"progress {d['done']}/{d['total']} ({min(100, 100 * d['done'] // d['total'])}%)"
        else:
            head = f"progress {d['done']} done"
        errors = "1 error" if d["errors"] == 1 else f"{d['errors']} errors"
        text = (f"{head}: {d['ok']} ok, {errors}, {_rate_text(d['rate'])}, "
                f"in flight {d['in_flight']}/{d['concurrency']}")
        if d["eta_s"] is not None:
            text += f", ETA {_duration_text(d['eta_s'])}"
        return text

    def tick(self) -> None:
        d = self.snapshot()
        if self.as_json:
            self.log.info("progress", extra={"data": d})
        else:
            self.log.info("%s", self.line(d))
