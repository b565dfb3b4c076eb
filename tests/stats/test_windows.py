"""Statistics per time window (runner/stats/windows.py): `run --window`, `report --window`."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from runner.cli.report import report_command
from runner.record import Record, decode_native
from runner.stats import MAX_WINDOWS, StatsAccumulator
from tests.helpers import streamrun, write_jsonl

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def line(at: float, e2e: float, ttft: float, *, ok: bool = True, out: int = 5, gaps: list[float] | None = None
         ) -> dict[str, Any]:
    """A result line sent ``at`` seconds after T0 that completed ``e2e`` later."""
    return {"custom_id": f"r{at}", "status": "ok" if ok else "error", "model": "m",
            "usage": {"prompt_tokens": 1, "completion_tokens": out} if ok else None,
            "metrics": {"ttft_s": ttft if ok else None, "e2e_s": e2e, "itl_s": gaps or [], "output_tokens": out,
                        "started_at": (T0 + timedelta(seconds=at)).isoformat()},
            "error": None if ok else {"type": "timeout", "message": "slow"}}


def record(*args: Any, **kwargs: Any) -> Record:
    return decode_native(line(*args, **kwargs))


# (start, e2e, ttft): completions at 1, 8 (window 0), 11 (1), 15 error (1), 26 (2), none in 3, 42 (4)
RUN = [(0.0, 1.0, 0.1, True, [0.01, 0.02]), (2.0, 9.0, 0.5, True, None), (5.0, 3.0, 0.3, True, [0.03]),
       (12.0, 3.0, 0.0, False, None), (25.0, 1.0, 0.2, True, None), (40.0, 2.0, 0.9, True, None)]


def windowed(rows=RUN, width: float = 10.0) -> dict[str, Any]:
    acc = StatsAccumulator(window_s=width)
    for at, e2e, ttft, ok, gaps in rows:
        acc.add(record(at, e2e, ttft, ok=ok, gaps=gaps))
    return acc.summary()


def test_windows_partition_requests_by_completion_time() -> None:
    s = windowed()
    assert s["window_s"] == 10.0
    w = s["windows"]
    assert [(x["start_s"], x["end_s"]) for x in w] == [(0, 10), (10, 20), (20, 30), (30, 40), (40, 42)]
    assert [x["ok"] for x in w] == [2, 1, 1, 0, 1]  # r2 was sent in window 0 but completed in 1
    assert [x["error"] for x in w] == [0, 1, 0, 0, 0]
    assert [x["output_tokens"] for x in w] == [10, 5, 5, 0, 5]
    assert [x["request_throughput"] for x in w] == pytest.approx([0.2, 0.1, 0.1, 0.0, 0.5])  # last: 1 over 2 s
    assert w[0]["ttft_s"]["count"] == 2 and w[0]["ttft_s"]["p50"] == pytest.approx(0.2)
    assert (w[1]["ttft_s"]["min"], w[4]["e2e_s"]["max"]) == (0.5, 2.0)
    assert w[0]["itl_s"]["count"] == 3 and w[0]["itl_s"]["max"] == 0.03
    assert w[3]["ttft_s"]["count"] == 0 and w[3]["ttft_s"]["p50"] is None  # a stall is a window too
    assert sum(x["ok"] for x in w) == s["counts"]["ok"]
    assert sum(x["error"] for x in w) == s["counts"]["error"]
    # the ITL pool is still whole after windows were drawn from it
    assert s["metrics"]["itl_s"]["count"] == 3 and StatsAccumulator().summary()["windows"] is None


def test_any_order_of_records_keeps_every_count() -> None:
    rows = [(i * 0.7, 0.5 + (i % 7) * 0.3, 0.1 + (i % 5) / 100, i % 9 != 0, [0.01] * 3) for i in range(400)]
    random.Random(5).shuffle(rows)  # merged shards: records in no order at all
    s = windowed(rows, width=5.0)
    w = s["windows"]
    assert sum(x["ok"] for x in w) == s["counts"]["ok"] and sum(x["error"] for x in w) == s["counts"]["error"]
    assert all(x["ttft_s"]["count"] == x["ok"] for x in w)  # a request's latency lands where it is counted
    assert all(0 <= x["start_s"] <= x["end_s"] <= s["duration_s"] for x in w)


@pytest.mark.parametrize("n", [1201, 2100])  # past the list's cap; past the counters' own cap too
def test_a_long_run_gets_wider_windows_and_loses_nothing(n: int) -> None:
    s = windowed([(10.0 * i, 0.5, 0.1, True, None) for i in range(n)], width=10.0)
    w = s["windows"]
    assert len(w) <= MAX_WINDOWS
    assert s["window_s"] > 10.0 and (s["window_s"] / 10.0).is_integer()  # a whole multiple of the width asked
    assert sum(x["ok"] for x in w) == n
    assert all(x["ttft_s"]["count"] == x["ok"] for x in w)
    assert w[0]["ok"] == s["window_s"] / 10.0  # one request every 10 s


def test_report_window_and_percentiles(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "r.jsonl", [line(at, e2e, ttft, ok=ok, gaps=gaps) for at, e2e, ttft, ok, gaps in RUN])
    r = CliRunner().invoke(report_command, [str(path), "--window", "10s", "--percentiles", "50,99.9", "--json"])
    assert r.exit_code == 0, r.output
    (stage,) = orjson.loads(r.stdout)["stages"]
    assert stage["window_s"] == 10.0 and [x["ok"] for x in stage["windows"]] == [2, 1, 1, 0, 1]
    assert set(stage["windows"][0]["ttft_s"]) == {"count", "mean", "p50", "p99.9", "min", "max"}
    table = CliRunner().invoke(report_command, [str(path), "--window", "10s"]).stdout
    assert "Per window of 10 s" in table and "TTFT p50" in table and "TTFT p99" in table
    assert CliRunner().invoke(report_command, [str(path), "--window", "soon"]).exit_code == 2
    assert CliRunner().invoke(report_command, [str(path), "--percentiles", "50,100"]).exit_code == 2


def test_a_run_with_window_percentiles_and_label(tmp_path: Path) -> None:
    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{i}", "max_tokens": 4} for i in range(12)])
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock", "--window", "1s",
                    "--percentiles", "50,99.9", "--label", "baseline")
    assert res.returncode == 0, res.stderr
    doc = orjson.loads((tmp_path / "out.summary.json").read_bytes())
    assert doc["label"] == "baseline" and doc["config"]["percentiles"] == [50, 99.9]
    s = doc["summary"]
    assert set(s["metrics"]["ttft_s"]) == {"count", "mean", "p50", "p99.9", "min", "max", "sampled"}
    assert s["window_s"] >= 1.0 and sum(w["ok"] for w in s["windows"]) == s["counts"]["ok"] == 12
    assert "p99.9" in res.stderr  # the end-of-run lines show the percentiles asked for
