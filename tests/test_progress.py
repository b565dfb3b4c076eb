"""runner.progress: the live bar on stderr, its counters, and no bar when stderr is not a TTY."""

from __future__ import annotations

import io

from rich.console import Console

from runner.progress import LiveCounters, ProgressDisplay
from runner.record import Metrics, Record
from tests.conftest import streamrun, write_jsonl


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
