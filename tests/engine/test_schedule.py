"""Arrival schedules without a clock: ramps, trace replay, sweep rates; and replay runs keep their schedule."""

from __future__ import annotations

import itertools
import random
import statistics
from datetime import datetime
from itertools import islice

import pytest

from runner.engine.schedule import (
    EXPONENTIAL,
    LINEAR,
    TraceTimes,
    ramp_area,
    ramp_time,
    ramped,
    ramped_gaps,
    replay_offset,
    sweep_rates,
    worker_start_offsets,
)
from tests.helpers import read_jsonl, streamrun, write_jsonl


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


def arrival_times(gaps, until: float) -> list[float]:
    """The schedule's arrival times (the gaps added up) before `until`."""
    times, t = [], 0.0
    for gap in gaps:
        t += gap
        if t >= until:
            return times
        times.append(t)


def test_the_ramp_integral_inverts_the_rate_curve():
    for kind in (LINEAR, EXPONENTIAL):
        for start, target in ((1, 40), (40, 1), (5, 5)):
            for t in (0.3, 2.0, 4.99, 7.5):
                steps = 4000  # the rate integrated by the midpoint rule
                area = sum(ramped(start, target, (i + 0.5) * t / steps, 5, kind) for i in range(steps)) * t / steps
                assert ramp_time(area, start, target, 5, kind) == pytest.approx(t, rel=1e-5)
    assert ramp_area(1, 40, 5, LINEAR) == 102.5


@pytest.mark.parametrize("kind", [LINEAR, EXPONENTIAL])
def test_ramped_arrivals_follow_the_rate_curve_over_many_seeds(kind):
    # 1 -> 40 req/s over 5 s: the expected arrivals by time t are the rate's integral up to t.  Gaps drawn at
    # the rate of the previous arrival fell 9 % short (93 of 102.5) and left some seeds silent for 2 s.
    seeds = range(1000)
    runs = [arrival_times(ramped_gaps(40, 1, 5, kind, 1.0, random.Random(s)), 5.0) for s in seeds]
    whole, early = ramp_area(1, 40, 5, kind), ramp_time(10.0, 1, 40, 5, kind)
    assert statistics.fmean(len(r) for r in runs) == pytest.approx(whole, rel=0.02)
    assert statistics.fmean(sum(t < early for t in r) for r in runs) == pytest.approx(10.0, rel=0.03)
    assert all(r and r[0] < early for r in runs)  # 10 arrivals expected by then: none silent so long


@pytest.mark.parametrize("burstiness", [0.25, 4.0])
def test_a_bursty_ramp_keeps_its_mean_and_its_spread(burstiness):
    # Gamma gaps of shape k, time-rescaled: a renewal process started at an arrival counts
    # (1/k - 1)/2 more than the integral on average (its start-up), whatever the ramp.
    runs = [arrival_times(ramped_gaps(40, 1, 5, LINEAR, burstiness, random.Random(s)), 30.0) for s in range(300)]
    expected = ramp_area(1, 40, 5, LINEAR) + 25 * 40 + (1 / burstiness - 1) / 2
    assert statistics.fmean(len(r) for r in runs) == pytest.approx(expected, rel=0.02)
    late = [b - a for r in runs for a, b in itertools.pairwise(r) if a > 5]  # at the target rate: gamma gaps
    assert statistics.fmean(late) == pytest.approx(1 / 40, rel=0.03)
    assert statistics.pstdev(late) / statistics.fmean(late) == pytest.approx(burstiness ** -0.5, rel=0.05)


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


def test_trace_times_count_from_the_first_line_and_never_run_backwards():
    times = TraceTimes()
    epoch = 1_700_000_000_000.0  # epoch milliseconds, as a gateway log stamps its lines
    placed = [times.place(epoch + ms) for ms in (0, 150, 100, 400, 400)]
    assert placed == [(0.0, False), (150.0, False), (150.0, True), (400.0, False), (400.0, False)]


EPOCH_MS = 1_700_000_000_000


def replay_rows(stamps) -> list[dict]:
    return [{"custom_id": f"r{i}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
             "timestamp": ts} for i, ts in enumerate(stamps)]


def test_replay_of_epoch_milliseconds_counts_from_the_first_line_in_every_worker(tmp_path):
    # It slept ~55 years, showing progress 0/4.  Line 3 is stamped before line 2: it goes right after it.
    stamps = [EPOCH_MS, EPOCH_MS + 150, EPOCH_MS + 100, EPOCH_MS + 300]
    inp = write_jsonl(tmp_path / "in.jsonl", replay_rows(stamps))
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock", "--replay", "-c", "4", "--workers", "2",
                    timeout=60)
    assert res.returncode == 0, res.stderr
    assert f"{inp}:3: its timestamp is before the line before it" in res.stderr
    records = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert [records[f"r{i}"]["metrics"]["scheduled_s"] for i in range(4)] == [0.0, 0.15, 0.15, 0.3]
    due = {k: datetime.fromisoformat(r["metrics"]["started_at"]).timestamp() - r["metrics"]["queue_s"]
           for k, r in records.items()}
    for i, offset in enumerate([0.0, 0.15, 0.15, 0.3]):  # one schedule, whichever worker sent the line
        # (loosely: started_at is read just after the send's stamp, by as much as a loaded machine makes it;
        # a worker counting from its own first line would be 150 ms off)
        assert due[f"r{i}"] - due["r0"] == pytest.approx(offset, abs=0.05)


def test_a_resumed_replay_starts_from_the_first_line_still_to_send(tmp_path):
    stamps = [EPOCH_MS, EPOCH_MS + 100, EPOCH_MS + 20_000, EPOCH_MS + 20_100]
    inp = write_jsonl(tmp_path / "in.jsonl", replay_rows(stamps))
    out = tmp_path / "out.jsonl"
    res = streamrun("run", inp, "-o", out, "--mock", "--replay", "--num-prompts", "2")
    assert res.returncode == 0, res.stderr
    res = streamrun("run", inp, "-o", out, "--mock", "--replay", "--resume", timeout=60)
    assert res.returncode == 0, res.stderr
    records = {r["custom_id"]: r for r in read_jsonl(out)}
    assert len(records) == 4  # the 20 s already past in the trace are not waited for again; the spacing stays
    assert [records[k]["metrics"]["scheduled_s"] for k in ("r2", "r3")] == [0.0, 0.1]


def test_replay_answers_a_negative_or_non_numeric_timestamp_with_an_error_record(tmp_path):
    rows = replay_rows([0, -5, "soon", 100])
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock", "--replay")
    assert res.returncode == 1, res.stderr  # two failed records, over the default budget of none
    records = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    for cid, line in (("r1", 2), ("r2", 3)):
        assert records[cid]["error"]["type"] == "invalid_input" and records[cid]["attempts"] == 0
        assert f"{inp}:{line}: 'timestamp' must be a number of milliseconds" in res.stderr
    assert records["r3"]["status"] == "ok" and records["r3"]["metrics"]["scheduled_s"] == 0.1


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
