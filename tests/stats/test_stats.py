"""Percentile math and the run summary (runner/stats/)."""

from __future__ import annotations

import random
import tracemalloc
from array import array
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from runner.config.parsers import OptionError, percentile_list
from runner.record import Record, decode_native
from runner.stats import (
    MAX_TURNS,
    Reservoir,
    SortedRuns,
    StatsAccumulator,
    describe,
    percentile,
    percentile_key,
    summarize_by_stage,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def rec(
    *,
    ttft: float | None = 0.1,
    e2e: float | None = 1.0,
    tpot: float | None = 0.01,
    itl: list[float] | None = None,
    out: int | None = 10,
    at: float = 0.0,
    status: str = "ok",
    error: str | None = None,
    attempts: int = 1,
    warmup: bool = False,
    stage: dict[str, Any] | None = None,
    usage: Any = "default",
) -> Record:
    """A result record as docs/FORMATS.md describes, started ``at`` seconds after T0."""
    return decode_native({
        "custom_id": "x",
        "status": status,
        "usage": {"prompt_tokens": 5, "completion_tokens": out, "total_tokens": 5 + (out or 0)}
        if usage == "default" else usage,
        "metrics": {
            "ttft_s": ttft,
            "ttfb_s": None if ttft is None else ttft - 0.01,
            "e2e_s": e2e,
            "tpot_s": tpot,
            "itl_s": itl if itl is not None else [],
            "queue_s": 0.001,
            "output_tokens": out,
            "started_at": (T0 + timedelta(seconds=at)).isoformat(),
        },
        "attempts": attempts,
        "error": {"type": error, "message": "m"} if error else None,
        "stage": stage,
        "warmup": warmup,
        "model": "m",
        "endpoint": "http://e/v1",
    })


# ---------------------------------------------------------------- percentile


def test_percentile_hand_computed() -> None:
    v = [1.0, 2.0, 3.0, 4.0]
    assert percentile(v, 50) == 2.5
    assert percentile(v, 90) == pytest.approx(3.7)
    assert percentile(v, 99) == pytest.approx(3.97)
    assert percentile(v, 0) == 1.0
    assert percentile(v, 100) == 4.0


def test_percentile_single_and_empty() -> None:
    assert percentile([7.5], 0) == 7.5
    assert percentile([7.5], 99) == 7.5
    assert percentile([], 50) is None
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_percentile_matches_numpy_bit_for_bit() -> None:
    # Expected values computed with numpy 2.4: np.percentile(values, q).
    values = sorted([0.051, 0.0502, 0.3, 0.12, 0.0999, 0.07, 1.5, 0.066, 0.081, 0.2])
    expected = {0: 0.0502, 10: 0.05092, 33: 0.06988000000000001, 50: 0.09045, 90: 0.41999999999999954,
                95: 0.9599999999999987, 99: 1.3920000000000001, 99.9: 1.4892000000000016, 100: 1.5}
    for q, want in expected.items():
        assert percentile(values, q) == want, q
    assert percentile([1.0, 2.0, 3.0, 4.0], 99) == 3.9699999999999998


def test_describe() -> None:
    d = describe([4.0, None, 1.0, 3.0, float("nan"), 2.0])
    assert d["count"] == 4
    assert d["mean"] == 2.5
    assert (d["p50"], d["min"], d["max"]) == (2.5, 1.0, 4.0)
    assert d["p90"] == pytest.approx(3.7)
    assert d["p99"] == pytest.approx(3.97)
    assert d["p95"] == pytest.approx(3.85)
    empty = describe([])
    assert empty == {"count": 0, "mean": None, "p50": None, "p90": None, "p95": None, "p99": None,
                     "min": None, "max": None}


def test_sorted_runs_reads_like_a_sorted_list() -> None:
    """Percentiles are read off chunk-sorted runs by bisection (no big
    sorted list): it must agree with sorted() at every rank."""
    rng = random.Random(3)
    for _ in range(30):
        n = rng.randint(1, 700)
        values = [rng.choice([rng.random(), -rng.random(), rng.expovariate(2) * 100, 0.0, 1.0]) for _ in range(n)]
        runs = SortedRuns.sort_in_place(array("d", values), run=rng.randint(5, 97))
        want = sorted(values)
        for k in {0, n - 1, *(rng.randrange(n) for _ in range(15))}:
            assert runs[k] == want[k]
        assert list(runs) == want
        assert runs.rank(want[n // 2]) == sum(1 for v in values if v <= want[n // 2])
        for q in (50, 90, 99):
            assert percentile(runs, q) == percentile(want, q)


# ---------------------------------------------------------------- summary


def test_throughput_over_a_hand_made_span() -> None:
    acc = StatsAccumulator()
    acc.add(rec(at=0.0, e2e=1.0, out=10))
    acc.add(rec(at=2.0, e2e=1.0, out=20))
    acc.add(rec(at=4.0, e2e=6.0, out=30))  # ends at 10 s: the span is 0..10
    acc.add(rec(at=5.0, e2e=0.5, status="error", error="timeout", out=None, ttft=None, tpot=None, usage={}))
    s = acc.summary()
    assert s["duration_s"] == pytest.approx(10.0)
    assert s["request_throughput"] == pytest.approx(0.3)  # 3 ok / 10 s
    assert s["output_token_throughput"] == pytest.approx(6.0)  # 60 / 10
    assert s["total_token_throughput"] == pytest.approx(7.5)  # (15 prompt + 60 completion) / 10
    assert s["tokens"] == {"prompt": 15, "completion": 60, "reasoning": 0, "total": 75, "output": 60}
    assert s["started_at"] == "2026-01-01T00:00:00+00:00"
    assert s["ended_at"] == "2026-01-01T00:00:10+00:00"
    assert s["goodput"] is None and s["good_requests"] is None  # no SLOs given


def test_goodput_with_slos_by_hand() -> None:
    acc = StatsAccumulator()
    acc.add(rec(at=0, ttft=0.2, tpot=0.02, e2e=1.0, itl=[0.02, 0.03]))  # meets all
    acc.add(rec(at=1, ttft=0.6, tpot=0.02, e2e=1.0, itl=[0.02]))  # ttft too slow
    acc.add(rec(at=2, ttft=0.5, tpot=0.05, e2e=2.0, itl=[0.05]))  # exactly on both limits: meets (<=)
    acc.add(rec(at=3, ttft=0.1, tpot=0.06, e2e=1.0, itl=[0.01]))  # tpot too slow
    acc.add(rec(at=4, ttft=0.1, tpot=None, e2e=0.2, out=1))  # one token: no TPOT, passes (vLLM counts 0)
    acc.add(rec(at=5, ttft=0.1, tpot=0.01, e2e=5.0, itl=[0.01, 0.4]))  # ends at 10 s; one gap of 400 ms
    s = acc.summary({"ttft": 0.5, "tpot": 0.05})
    assert s["duration_s"] == pytest.approx(10.0)
    assert s["good_requests"] == 4
    assert s["goodput"] == pytest.approx(0.4)
    assert s["slos"] == {"ttft": 0.5, "tpot": 0.05}
    # itl is the max gap of a request: the 400 ms gap fails the 6th request
    assert acc.summary({"ttft": 0.5, "tpot": 0.05, "itl": 0.1})["good_requests"] == 3
    assert acc.summary({"e2e": 1.0})["good_requests"] == 4
    with pytest.raises(ValueError):
        acc.summary({"latency": 1.0})
    with pytest.raises(ValueError):
        acc.summary({"ttft": -1})


def test_itl_pools_every_gap_of_ok_requests() -> None:
    acc = StatsAccumulator()
    acc.add(rec(itl=[0.01, 0.02, 0.03]))
    acc.add(rec(itl=[0.04]))
    acc.add(rec(itl=[9.0], status="error", error="stream_error"))  # errors never count
    d = acc.summary()["metrics"]["itl_s"]
    assert d["count"] == 4
    assert d["p50"] == pytest.approx(0.025)
    assert d["max"] == 0.04
    assert d["sampled"] is False


def test_warmup_records_are_counted_but_excluded() -> None:
    acc = StatsAccumulator()
    acc.add(rec(ttft=0.1, at=10))
    acc.add(rec(ttft=0.3, at=11))
    acc.add(rec(ttft=50.0, at=0, e2e=100.0, warmup=True, error="timeout", status="error"))
    s = acc.summary()
    assert s["counts"]["warmup"] == 1
    assert s["counts"]["total"] == 2
    assert s["counts"]["error"] == 0
    assert s["metrics"]["ttft_s"]["max"] == 0.3
    assert s["duration_s"] == pytest.approx(2.0)  # 10 s .. 11 s + 1 s: the warm-up's span is ignored


def test_error_types_and_retries_are_counted() -> None:
    acc = StatsAccumulator()
    acc.add(rec(attempts=2))
    for etype in ("timeout", "http_error", "timeout", None):
        acc.add(rec(status="error", error=etype, ttft=None, tpot=None, attempts=3 if etype == "http_error" else 1))
    s = acc.summary()
    c = s["counts"]
    assert (c["total"], c["ok"], c["error"], c["retried"]) == (5, 1, 4, 2)
    assert c["errors_by_type"] == {"timeout": 2, "http_error": 1, "unknown": 1}
    assert list(c["errors_by_type"]) == ["timeout", "http_error", "unknown"]  # most frequent first
    assert s["metrics"]["ttft_s"]["count"] == 1


def test_reasoning_tokens_and_missing_usage() -> None:
    acc = StatsAccumulator()
    acc.add(rec(usage={"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10,
                       "completion_tokens_details": {"reasoning_tokens": 4}}, out=7))
    acc.add(rec(usage=None, out=5))  # no usage sent: output_tokens still count
    t = acc.summary()["tokens"]
    assert t == {"prompt": 3, "completion": 7, "reasoning": 4, "total": 10, "output": 12}


def test_no_start_times_means_no_rates() -> None:
    acc = StatsAccumulator()
    r = rec()
    r.metrics.started_at = None
    acc.add(r)
    s = acc.summary({"ttft": 1.0})
    assert s["duration_s"] is None
    assert s["request_throughput"] is None and s["goodput"] is None
    assert s["good_requests"] == 1


def test_empty_accumulator_summarises() -> None:
    s = StatsAccumulator().summary()
    assert s["counts"]["total"] == 0
    assert s["metrics"]["ttft_s"]["p99"] is None
    assert s["sampled"] is False


# ---------------------------------------------------------------- bounded memory


def test_reservoir_kicks_in_past_max_exact() -> None:
    acc = StatsAccumulator(max_exact=50, seed=1)
    for i in range(2000):
        acc.add(rec(ttft=i / 1000, at=i, itl=[i / 1000, i / 1000 + 0.0005]))
    s = acc.summary({"ttft": 1.0})
    ttft, itl = s["metrics"]["ttft_s"], s["metrics"]["itl_s"]
    assert s["sampled"] is True and ttft["sampled"] is True and itl["sampled"] is True
    assert len(acc.sorted_values("ttft_s")) == 50
    assert len(acc.sorted_values("itl_s")) == 50
    # count, mean, min and max stay exact; percentiles are estimates
    assert ttft["count"] == 2000 and itl["count"] == 4000
    assert ttft["mean"] == pytest.approx(0.9995)
    assert (ttft["min"], ttft["max"]) == (0.0, 1.999)
    assert ttft["p50"] == pytest.approx(1.0, abs=0.35)
    assert itl["p50"] == pytest.approx(1.0, abs=0.35)
    # goodput from the sample, scaled to every ok request (1001 really meet ttft <= 1.0)
    assert s["good_requests"] == pytest.approx(1001, abs=300)
    # seeded: the same input gives the same numbers
    again = StatsAccumulator(max_exact=50, seed=1)
    for i in range(2000):
        again.add(rec(ttft=i / 1000, at=i, itl=[i / 1000, i / 1000 + 0.0005]))
    assert again.summary({"ttft": 1.0}) == s


def test_memory_stays_flat_once_sampling() -> None:
    acc = StatsAccumulator(max_exact=500, seed=0)
    r = rec(itl=[0.01] * 20)
    for _ in range(1500):
        acc.add(r)
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for _ in range(5000):
            acc.add(r)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert after - before < 32 * 1024  # 5000 more records, 100k more gaps: nothing kept
    assert acc.summary()["metrics"]["itl_s"]["count"] == 6500 * 20


def test_reservoir_is_uniform_and_accepts_batches() -> None:
    res = Reservoir(200, seed=5)
    kept: list[int] = []
    item = 0
    rng = random.Random(0)
    while item < 20000:
        m = rng.randint(1, 40)
        n_append, replacements = res.offer(m)
        kept.extend(range(item, item + n_append))
        for i, slot in replacements:
            assert 0 <= i < m and 0 <= slot < 200
            kept[slot] = item + i
        item += m
    assert len(kept) == 200 and res.sampled and res.seen == item
    mean = sum(kept) / len(kept)
    assert mean == pytest.approx(item / 2, rel=0.15)
    assert sum(1 for k in kept if k < item / 2) == pytest.approx(100, abs=30)


# ---------------------------------------------------------------- stages


def test_stage_grouping_keeps_first_seen_order() -> None:
    def st(i: int) -> dict[str, Any]:
        return {"index": i, "label": f"c={2 ** i}", "concurrency": 2 ** i, "rate": None}

    records = [rec(stage=st(2), ttft=0.4), rec(stage=st(0), ttft=0.1), rec(stage=st(2), ttft=0.6),
               rec(stage=None, ttft=0.9), rec(stage=st(1), ttft=0.2), rec(stage=st(0), ttft=0.3)]
    out = summarize_by_stage(iter(records), {"ttft": 0.35})
    assert [s["stage"] and s["stage"]["index"] for s in out] == [2, 0, None, 1]
    assert out[0]["stage"] == st(2)
    assert [s["counts"]["ok"] for s in out] == [2, 2, 1, 1]
    assert out[0]["metrics"]["ttft_s"]["mean"] == pytest.approx(0.5)
    assert [s["good_requests"] for s in out] == [0, 2, 0, 1]


def test_stages_without_index_group_by_label() -> None:
    out = summarize_by_stage([rec(stage={"label": "a"}), rec(stage={"label": "b"}), rec(stage={"label": "a"})])
    assert [(s["stage"]["label"], s["counts"]["ok"]) for s in out] == [("a", 2), ("b", 1)]


# ---------------------------------------------------------------- --percentiles


def test_chosen_percentiles_name_the_keys_and_match_numpy() -> None:
    """p99.9 of 1..1000 by numpy's linear rule: rank 999 * 0.999 = 998.001 -> 999 + 0.001 * (1000 - 999)."""
    values = [float(v) for v in range(1000, 0, -1)]
    d = describe(values, (50, 99.9))
    assert list(d) == ["count", "mean", "p50", "p99.9", "min", "max"]
    assert d["p50"] == 500.5
    assert d["p99.9"] == pytest.approx(999.001, abs=1e-9)
    assert d["p99.9"] == percentile(sorted(values), 99.9)
    assert [percentile_key(q) for q in (50, 50.0, 99.9, 99.99, 0.1)] == ["p50", "p50", "p99.9", "p99.99", "p0.1"]

    acc = StatsAccumulator(percentiles=(99.9, 50))  # any order, kept ascending
    for i, v in enumerate(values):
        acc.add(rec(ttft=v / 1000, e2e=v / 100, at=i))
    s = acc.summary()
    assert list(s["metrics"]["ttft_s"]) == ["count", "mean", "p50", "p99.9", "min", "max", "sampled"]
    assert s["metrics"]["ttft_s"]["p99.9"] == pytest.approx(0.999001)
    assert "p95" not in s["metrics"]["e2e_s"]
    empty = StatsAccumulator(percentiles=(99.9,)).summary()["metrics"]["itl_s"]
    assert empty == {"count": 0, "mean": None, "p99.9": None, "min": None, "max": None, "sampled": False}


def test_percentile_lists_are_checked() -> None:
    assert percentile_list("50,90,99.9") == (50, 90, 99.9)
    assert percentile_list([99, 50, 50.0]) == (50, 99)
    assert isinstance(percentile_list("50")[0], int)
    for bad in ("", "0", "100", "50,abc", "-1", "101", ",".join(str(q) for q in range(1, 30))):
        with pytest.raises(OptionError):
            percentile_list(bad)
    with pytest.raises(ValueError):
        StatsAccumulator(percentiles=(100,))


# ---------------------------------------------------------------- TTFAT, reasoning tokens


def test_ttfat_and_reasoning_tokens_are_summarised() -> None:
    acc = StatsAccumulator()
    a = rec(ttft=0.1, at=0)
    a.metrics.ttfat_s, a.metrics.reasoning_tokens = 0.4, 30  # the record's own count wins over usage's
    a.usage["completion_tokens_details"] = {"reasoning_tokens": 999}
    b = rec(ttft=0.2, at=1)
    b.usage["completion_tokens_details"] = {"reasoning_tokens": 5}  # an older record: usage only
    b.metrics.ttfat_s = 0.2
    for r in (a, b):
        acc.add(r)
    s = acc.summary()
    assert s["tokens"]["reasoning"] == 35
    assert s["metrics"]["ttfat_s"]["count"] == 2 and s["metrics"]["ttfat_s"]["max"] == 0.4
    assert s["metrics"]["ttfat_s"]["p50"] == pytest.approx(0.3)
    assert s["metrics"]["reasoning_tokens"]["count"] == 1 and s["metrics"]["reasoning_tokens"]["mean"] == 30


# ---------------------------------------------------------------- sessions


def session(turn_ttfts: list[float], *, failed_at: int | None = None, at: float = 0.0) -> Record:
    """A session record as runner/engine/session.py writes it: the turns, the top level = the last turn's."""
    turns = []
    for k, ttft in enumerate(turn_ttfts):
        turns.append({"index": k, "text": "t", "usage": {"prompt_tokens": 10 * (k + 1), "completion_tokens": 4},
                      "metrics": {"ttft_s": ttft, "e2e_s": ttft + 0.5, "itl_s": [0.1, 0.1, 0.1], "output_tokens": 4,
                                  "started_at": (T0 + timedelta(seconds=at + k)).isoformat()},
                      "attempts": 2 if k == 1 else 1,
                      "error": {"type": "timeout", "message": "slow"} if k == failed_at else None})
    last = turns[-1]
    return decode_native({"custom_id": "s", "status": "error" if failed_at is not None else "ok",
                          "usage": {"prompt_tokens": 60, "completion_tokens": 12},  # summed: not counted again
                          "metrics": last["metrics"], "attempts": len(turns) + 1, "turns": turns,
                          "error": last["error"], "model": "m"})


def test_each_turn_of_a_session_is_a_request_in_the_latencies() -> None:
    acc = StatsAccumulator()
    acc.add(session([0.1, 0.2, 0.3]))
    acc.add(session([0.4, 0.6], at=10))
    acc.add(session([0.5, 0.7, 9.9], failed_at=2, at=20))  # its first two turns succeeded
    acc.add(rec(ttft=0.05, at=30))  # a plain request beside them
    s = acc.summary({"ttft": 0.45})
    c = s["counts"]
    assert (c["total"], c["ok"], c["error"], c["turns"]) == (4, 3, 1, 7)  # records; turns fed as requests
    assert c["retried"] == 3  # sessions whose turn was retried (each has turn 1 with 2 attempts); not the plain one
    ttft = s["metrics"]["ttft_s"]
    assert ttft["count"] == 8 and ttft["max"] == 0.7  # the failed turn's 9.9 is not a latency
    assert s["metrics"]["itl_s"]["count"] == 7 * 3 + 0
    assert s["tokens"]["prompt"] == (10 + 20 + 30) + (10 + 20) + (10 + 20) + 5
    assert s["good_requests"] == 5  # TTFT <= 0.45: turns 0.1, 0.2, 0.3, 0.4 and the plain request's 0.05
    by_turn = s["ttft_by_turn"]
    assert [(e["index"], e["count"], e["p50"]) for e in by_turn] == [(0, 3, 0.4), (1, 3, 0.6), (2, 1, 0.3)]
    assert not any(e["and_later"] for e in by_turn)
    assert StatsAccumulator().summary()["ttft_by_turn"] is None  # no sessions, no table


def test_turns_past_the_cap_share_the_last_entry() -> None:
    acc = StatsAccumulator()
    acc.add(session([0.01 * (k + 1) for k in range(MAX_TURNS + 5)]))
    by_turn = acc.summary()["ttft_by_turn"]
    assert len(by_turn) == MAX_TURNS
    last = by_turn[-1]
    assert last["index"] == MAX_TURNS - 1 and last["and_later"] and last["count"] == 6
