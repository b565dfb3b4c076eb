"""Tables are never cut: at 80 columns, piped, or in a log, every number is whole."""

from __future__ import annotations

import io

from rich.console import Console

from runner.report.terminal import render_table
from tests.helpers import streamrun, write_jsonl


def summary(label: str) -> dict:
    d = {"count": 8, "mean": 0.05141, "p50": 0.05149, "p90": 0.05153, "p95": 0.05153, "p99": 0.05153,
         "min": 0.05119, "max": 0.05153, "sampled": False}
    return {"stage": {"label": label, "index": 0, "concurrency": 1, "rate": None},
            "counts": {"total": 8, "ok": 8, "error": 0, "errors_by_type": {}, "retried": 0, "warmup": 0},
            "duration_s": 2.6912, "request_throughput": 2.9734, "output_token_throughput": 172.3712,
            "total_token_throughput": 221.0412, "slos": {"ttft": 0.1}, "good_requests": 8, "goodput": 2.9734,
            "sampled": False,
            "metrics": {m: d for m in ("ttft_s", "ttfb_s", "tpot_s", "itl_s", "e2e_s", "queue_s", "output_tokens")}}


def test_a_sweep_table_at_80_columns_keeps_every_number():
    buf = io.StringIO()
    render_table([summary("c=1"), summary("c=64")], Console(file=buf, width=80))
    text = buf.getvalue()
    assert "…" not in text
    for number in ("2.69", "2.97", "172.37", "221.04", "2.97 (8/8)", "51.41", "c=64"):
        assert number in text, number
    for header in ("stage", "ok", "errors", "retried", "req/s", "goodput req/s"):
        assert header in text


def test_a_piped_report_is_whole_too(tmp_path):
    rows = []
    for i in range(6):
        rows.append({"custom_id": f"r{i}", "status": "ok", "text": "x", "model": "m", "attempts": 1, "error": None,
                     "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8},
                     "stage": {"index": 0, "label": "c=1", "concurrency": 1, "rate": None},
                     "metrics": {"ttft_s": 0.05 + i / 1000, "ttfb_s": 0.01, "e2e_s": 0.3, "tpot_s": 0.005,
                                 "itl_s": [0.005] * 4, "queue_s": 0.0, "output_tokens": 5,
                                 "output_tokens_source": "usage", "started_at": f"2026-11-26T00:00:0{i}+00:00"}})
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    res = streamrun("report", path, "--slo", "ttft=100ms", env={"COLUMNS": "80"})
    assert res.returncode == 0, res.stderr
    assert "…" not in res.stdout and "goodput req/s" in res.stdout


def test_chosen_percentiles_turns_windows_and_reasoning_are_shown_whole():
    s = summary("c=1")
    d = {"count": 8, "mean": 0.05, "p50": 0.051, "p99.9": 0.0999, "min": 0.04, "max": 0.1, "sampled": False}
    s["metrics"] = {m: d for m in ("ttft_s", "ttfat_s", "ttfb_s", "tpot_s", "itl_s", "e2e_s", "queue_s",
                                   "output_tokens")}
    s["stage"] = None
    s["tokens"] = {"output": 400, "reasoning": 123}
    s["counts"]["turns"] = 16
    s["ttft_by_turn"] = [{"index": 0, "and_later": False, **d}, {"index": 49, "and_later": True, **d}]
    s["window_s"] = 10.0
    s["windows"] = [{"start_s": 0.0, "end_s": 10.0, "ok": 8, "error": 0, "output_tokens": 40,
                     "request_throughput": 0.8, "output_token_throughput": 4.0,
                     "ttft_s": d, "itl_s": d, "e2e_s": d}]
    buf = io.StringIO()
    render_table([s], Console(file=buf, width=80))
    text = buf.getvalue()
    assert "…" not in text
    assert "p99.9" in text and "99.90" in text and "p95" not in text  # the chosen columns, nothing else
    assert "TTFAT" in text and "reasoning tok" in text and "123" in text
    assert "TTFT by turn" in text and "50+" in text  # turns from 1; the capped last entry
    assert "Per window of 10 s" in text and "TTFT p50" in text and "TTFT p99.9" in text and "0.0-10.0" in text
    assert "16 turns of sessions" in text
