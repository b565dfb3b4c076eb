"""Arrival schedules without a clock: ramps, trace replay, sweep rates; and replay runs keep their schedule."""

from __future__ import annotations

import random
import statistics
from datetime import datetime
from itertools import islice

import pytest

from runner.schedule import (EXPONENTIAL, LINEAR, ramped, ramped_gaps, replay_offset, sweep_rates,
                             worker_start_offsets)
from tests.conftest import read_jsonl, streamrun, write_jsonl


def test_ramps_start_at_the_start_and_hold_the_target():
    for kind in (LINEAR, EXPONENTIAL):
        assert ramped(1, 16, 0, 10, kind) == 1
        assert ramped(1, 16, 10, 10, kind) == ramped(1, 16, 99, 10, kind) == 16
    assert ramped(1, 17, 5, 10, LINEAR) == 9
    assert ramped(1, 16, 5, 10, EXPONENTIAL) == pytest.approx(4)  # the same factor each second


def test_a_ramped_rate_is_seeded_and_its_gaps_shrink_until_the_target():
    gaps = list(islice(ramped_gaps(50, 1, 20, LINEAR, 1.0, random.Random(3)), 3000))
    assert gaps == list(islice(ramped_gaps(50, 1, 20, LINEAR, 1.0, random.Random(3)), 3000))
    t, early, late = 0.0, [], []
    for g in gaps:
        (early if t < 5 else late if t > 20 else []).append(g)
        t += g
    assert statistics.mean(early) > 3 * statistics.mean(late)
    assert statistics.mean(late) == pytest.approx(1 / 50, rel=0.15)


def test_workers_join_as_a_concurrency_ramp_reaches_them():
    assert worker_start_offsets(4, 1, 30, LINEAR) == [0.0, 10.0, 20.0, 30.0]
    assert worker_start_offsets(3, 3, 30, LINEAR) == [0.0, 0.0, 0.0]
    exp = worker_start_offsets(8, 1, 30, EXPONENTIAL)
    assert exp[0] == 0 and exp[1] == pytest.approx(10) and exp[3] == pytest.approx(20) and exp[7] == pytest.approx(30)


def test_replay_times_come_from_the_timestamps_scaled_by_the_speed():
    assert replay_offset(1500, 0.0, 1.0) == 1.5
    assert replay_offset(1500, 0.0, 3.0) == 0.5
    assert replay_offset(None, 0.7, 2.0) == 0.7  # a line without one goes with the previous


def test_sweep_rates_lie_strictly_between_the_measured_ends():
    assert sweep_rates(2.0, 12.0, 4) == [4.0, 6.0, 8.0, 10.0]
    assert sweep_rates(12.0, 2.0, 1) == [7.0]
    assert sweep_rates(0.0, 5.0, 3) == []


def test_replay_sends_no_line_before_its_time_and_keeps_the_schedule(tmp_path):
    rows = [{"custom_id": f"r{i}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
             "timestamp": ts} for i, ts in enumerate([0, 150, 300, 600])]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock", "--replay", "--replay-speed", "2",
                    "-c", "8")
    assert res.returncode == 0, res.stderr  # the strict mock would refuse an unknown "timestamp" key
    records = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    # When each was due, on the wall clock: sent (started_at) less how late it went (queue_s).
    due = {k: datetime.fromisoformat(r["metrics"]["started_at"]).timestamp() - r["metrics"]["queue_s"]
           for k, r in records.items()}
    for i, ts in enumerate([0, 150, 300, 600]):
        r = records[f"r{i}"]
        assert r["metrics"]["scheduled_s"] == ts / 1000 / 2
        assert r["metrics"]["queue_s"] >= 0  # never early; how late depends on the machine, not asserted
        assert due[f"r{i}"] - due["r0"] == pytest.approx(ts / 1000 / 2, abs=0.002)  # the trace's spacing
    summary = (tmp_path / "out.summary.json").read_text()
    assert '"queue_s"' in summary  # the schedule lag's percentiles


def test_replay_refuses_a_rate(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"messages": [{"role": "user", "content": "x"}], "timestamp": 0}])
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock", "--replay", "--rate", "5")
    assert res.returncode == 2 and "--replay" in res.stderr


def test_a_rate_sweep_measures_both_ends_then_runs_rates_between(tmp_path):
    rows = [{"custom_id": f"p{i}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
            for i in range(6)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock", "--rate", "sweep", "--sweep-points", "2",
                    "-c", "4", "--num-prompts", "3")
    assert res.returncode == 0, res.stderr
    labels = [r["stage"]["label"] for r in read_jsonl(tmp_path / "out.jsonl")]
    assert labels.count("synchronous") == 3 and labels.count("throughput") == 3
    rate_labels = sorted({x for x in labels if x.startswith("rate=")})
    assert len(rate_labels) == 2 and len(labels) == 12
    import json

    sweep = json.loads((tmp_path / "out.summary.json").read_text())["sweep"]
    low, high = sorted((sweep["synchronous_rps"], sweep["max_rps"]))
    assert len(sweep["rates"]) == 2 and all(low < r < high for r in sweep["rates"])
    assert rate_labels == sorted(f"rate={r:g}" for r in sweep["rates"])


def test_a_ramp_up_needs_its_duration(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"messages": [{"role": "user", "content": "x"}]}])
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock", "--ramp-up", "linear")
    assert res.returncode == 2 and "--ramp-up-duration" in res.stderr
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock", "--ramp-up", "linear",
                    "--ramp-up-duration", "0.2", "-c", "3")
    assert res.returncode == 0, res.stderr
