"""runner.observe.progress: the live bar on stderr, its counters, no bar when stderr is not a TTY, and the log ticker."""

from __future__ import annotations

import io
import logging

import pytest
from rich.console import Console
from rich.progress import TimeRemainingColumn

from runner.observe.progress import LiveCounters, ProgressDisplay, ProgressLog, json_logs
from runner.record import Metrics, Record
from tests.helpers import streamrun, write_jsonl


def test_progress_bar_ticks_and_only_on_a_tty(tmp_path, mock_process):
    counters = LiveCounters()
    for i, ttft in enumerate((0.1, 0.2, 0.3)):
        counters.on_record(Record(f"r{i}", "ok", metrics=Metrics(ttft_s=ttft)))
    counters.on_record(Record("r3", "error", metrics=Metrics(ttft_s=None)))
    buf = io.StringIO()
    display = ProgressDisplay(counters, 10, lambda: 3, lambda: "8",
                              console=Console(file=buf, force_terminal=True, width=120))
    with display:
        display.tick()
    task = display.progress.tasks[0]
    assert task.completed == 4 and "in flight 3/8" in task.fields["info"]
    assert "TTFT p50 200 ms" in task.fields["info"] and "err 1" in task.fields["info"]
    assert task.fields["inflight"] == "in flight 3/8" and task.fields["errors"] == "err 1"
    # stderr is a pipe here: no bar, no escape codes
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "x"}])
    res = streamrun("run", inp, "-o", tmp_path / "o.jsonl", "--base-url", url)
    assert res.returncode == 0, res.stderr
    assert "\x1b[" not in res.stderr


def test_counters_before_any_record():
    counters = LiveCounters()
    assert (counters.done, counters.errors, counters.ttft_p50()) == (0, 0, None)
    display = ProgressDisplay(counters, None, lambda: 0, lambda: "4",
                              console=Console(file=io.StringIO(), force_terminal=True, width=120))
    display.tick()
    info = display.progress.tasks[0].fields["info"]
    assert "TTFT p50 -" in info and "err 0" in info and "in flight 0/4" in info


def _busy_counters(done: int, errors: int) -> LiveCounters:
    counters = LiveCounters()
    counters.done, counters.errors = done, errors
    counters.recent_ttft.append(12.3456)  # "TTFT p50 12346 ms": a wide value
    return counters


def _render(display: ProgressDisplay) -> str:
    display.tick()
    display.console.print(display.progress.get_renderable())
    return display.console.file.getvalue()


def test_the_bar_shows_an_eta_when_the_total_is_known():
    for width in (120, 80):
        display = ProgressDisplay(_busy_counters(969, 3), 1000, lambda: 16, lambda: "16",
                                  console=Console(file=io.StringIO(), width=width))
        assert any(isinstance(c, TimeRemainingColumn) for c in display.progress.columns), width
        assert "ETA" in _render(display)
    unknown = ProgressDisplay(_busy_counters(969, 3), None, lambda: 16, lambda: "16",
                              console=Console(file=io.StringIO(), width=120))
    assert not any(isinstance(c, TimeRemainingColumn) for c in unknown.progress.columns)  # stdin: no total


@pytest.mark.parametrize("total,done,errors,conc", [
    (1000, 969, 0, "16"),
    (1_000_000, 999_999, 999_999, "1024"),
    (None, 123_456, 7, "64"),
])
@pytest.mark.parametrize("width", [200, 120, 100, 80, 60, 40])
def test_no_cell_is_cut_at_any_width(total, done, errors, conc, width):
    """Columns are dropped to fit, never squeezed into `969…` and `0:00:…`."""
    display = ProgressDisplay(_busy_counters(done, errors), total, lambda: int(conc), lambda: conc,
                              console=Console(file=io.StringIO(), width=width))
    out = _render(display)
    assert "…" not in out, out
    assert all(len(line) <= width for line in out.splitlines()), out
    assert f"{done}/" in out  # done/total is the last column to go
    if width >= 120:
        assert "in flight" in out and "req/s" in out and f"err {errors}" in out


def test_the_columns_follow_a_resized_terminal():
    console = Console(file=io.StringIO(), width=160)
    display = ProgressDisplay(_busy_counters(969, 3), 1000, lambda: 16, lambda: "16", console=console)
    assert "TTFT p50" in _render(display)
    console.width = 80
    console.file = io.StringIO()
    out = _render(display)
    assert "…" not in out and all(len(line) <= 80 for line in out.splitlines()), out


# -- the log ticker (no terminal) ------------------------------------------------


class _Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def _records(counters: LiveCounters, ok: int, errors: int) -> None:
    for i in range(ok):
        counters.on_record(Record(f"ok{i}", "ok", metrics=Metrics(ttft_s=0.2)))
    for i in range(errors):
        counters.on_record(Record(f"e{i}", "error"))


def test_progress_log_line_counts_rate_and_eta():
    counters = LiveCounters()
    clock = _Clock(counters.started)
    ticker = ProgressLog(counters, 1000, lambda: 16, lambda: 16, 30.0, clock=clock)
    clock.t += 30
    _records(counters, 118, 2)
    d = ticker.snapshot()
    assert d == {"done": 120, "total": 1000, "ok": 118, "errors": 2, "rate": 4.0, "in_flight": 16,
                 "concurrency": 16, "elapsed_s": 30.0, "eta_s": 220.0, "ttft_p50_s": 0.2}
    assert ticker.line(d) == "progress 120/1000 (12%): 118 ok, 2 errors, 4.0 req/s, in flight 16/16, ETA 3m40s"


def test_progress_log_rate_follows_the_last_minute():
    counters = LiveCounters()
    clock = _Clock(counters.started)
    ticker = ProgressLog(counters, 10_000, lambda: 1, lambda: 4, 30.0, clock=clock)
    for _ in range(4):  # 2 minutes at 10 req/s
        clock.t += 30
        _records(counters, 300, 0)
        ticker.snapshot()
    for _ in range(3):  # then 1 req/s
        clock.t += 30
        _records(counters, 30, 0)
        d = ticker.snapshot()
    assert d["rate"] == pytest.approx(1.0, rel=0.01)  # not the run's average
    assert d["eta_s"] == pytest.approx((10_000 - d["done"]) / d["rate"], rel=0.01)


def test_progress_log_before_any_record_and_without_a_total():
    counters = LiveCounters()
    clock = _Clock(counters.started + 5)
    ticker = ProgressLog(counters, None, lambda: 3, lambda: 8, 5.0, clock=clock)
    d = ticker.snapshot()
    assert (d["done"], d["total"], d["rate"], d["eta_s"], d["ttft_p50_s"]) == (0, None, 0.0, None, None)
    assert ticker.line(d) == "progress 0 done: 0 ok, 0 errors, 0.0 req/s, in flight 3/8"
    _records(counters, 0, 1)
    clock.t += 5
    assert "1 error," in ticker.line(ticker.snapshot())


def test_progress_log_records_text_or_json():
    counters = LiveCounters()
    logger = logging.getLogger("streamrun.test_progress_log")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    logger.addHandler(Keep())
    try:
        ProgressLog(counters, 10, lambda: 1, lambda: 1, 1.0, logger=logger).tick()
        ProgressLog(counters, 10, lambda: 1, lambda: 1, 1.0, logger=logger, as_json=True).tick()
    finally:
        logger.handlers.clear()
    assert seen[0].getMessage().startswith("progress 0/10 (0%): 0 ok, 0 errors")
    assert seen[1].getMessage() == "progress" and seen[1].data["total"] == 10  # type: ignore[attr-defined]


def test_json_logs_reads_the_handler():
    from runner.logs import JsonFormatter

    logger = logging.getLogger("streamrun.test_json_logs")
    handler = logging.StreamHandler(io.StringIO())
    logger.addHandler(handler)
    try:
        assert not json_logs(logger)
        handler.setFormatter(JsonFormatter())
        assert json_logs(logger)
    finally:
        logger.handlers.clear()
