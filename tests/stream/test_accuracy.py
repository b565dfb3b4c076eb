"""Measured latencies are never below the truth (lower bounds only).

The mock (its own process, script mode) sends every request's content
events at known offsets after the request arrived.  The client stamps
"sent" before the request leaves and each event when its bytes arrive, so
for every request and every event k, exactly:

    ttft + sum(itl[:k])  >=  scripted ttft + sum(gaps[:k])

A single ITL gap has no such bound on its own: when event k arrived late
and event k+1 on time, the measured gap is shorter than scripted.  It is
bounded below by the scripted gap minus event k's lateness, which is the
same inequality rearranged.  No upper bounds: a slow or busy machine only
makes the measurements later, and that is not what this test checks.
"""

from __future__ import annotations

import random

from tests.helpers import read_jsonl, streamrun, write_jsonl

# Float rounding only: the mock schedules on perf_counter() and never sends an
# event before its time (it re-sleeps when a timer fires early, as uvloop's may).
SLACK_S = 1e-6


def make_script(n: int, seed: int = 7) -> list[dict]:
    rng = random.Random(seed)
    return [{"ttft": round(rng.uniform(0.050, 0.150), 6),
             "gaps": [round(rng.uniform(0.020, 0.040), 6) for _ in range(3)]} for _ in range(n)]


def test_measured_latency_never_below_scripted(tmp_path, mock_process):
    n = 5
    script = make_script(n)
    script_path = write_jsonl(tmp_path / "script.jsonl", script)
    inputs = write_jsonl(tmp_path / "in.jsonl", [
        {"custom_id": f"r{i}", "messages": [{"role": "user", "content": f"probe {i}"}], "mock": {"script": i}}
        for i in range(n)
    ])
    url = mock_process("--script", script_path)
    out = tmp_path / "out.jsonl"
    proc = streamrun("run", inputs, "-o", out, "--base-url", url, "-c", n, "--no-progress", "--max-attempts", 1)
    assert proc.returncode == 0, proc.stderr

    records = {r["custom_id"]: r for r in read_jsonl(out)}
    assert sorted(records) == [f"r{i}" for i in range(n)]
    for i, entry in enumerate(script):
        rec = records[f"r{i}"]
        assert rec["status"] == "ok", rec["error"]
        m = rec["metrics"]
        ttft, itl, gaps = m["ttft_s"], m["itl_s"], entry["gaps"]
        assert len(itl) == len(gaps), (rec["custom_id"], itl)  # one gap per scripted gap

        assert ttft >= entry["ttft"] - SLACK_S, (rec["custom_id"], ttft, entry["ttft"])
        assert m["ttfb_s"] <= ttft  # the role chunk comes first

        measured, scripted = ttft, entry["ttft"]  # send -> event k, measured and scripted
        for k, (got, want) in enumerate(zip(itl, gaps, strict=True)):
            late = measured - scripted  # how late event k arrived (>= 0)
            assert got >= want - late - SLACK_S, (rec["custom_id"], k, got, want, late)
            measured += got
            scripted += want
            assert measured >= scripted - SLACK_S, (rec["custom_id"], k + 1, measured, scripted)
