"""Load shapes: arrival gaps, open-loop rate, num-prompts, duration, warm-up, sweeps (synth: test_synth.py)."""

from __future__ import annotations

import math
import random
import statistics
from collections import Counter

import orjson
import pytest

from runner.config import Stage, make_stages
from runner.schedule import arrival_gaps
from tests.conftest import amock_stats, chat, run_rows, write_jsonl


def take(gen, n):
    return [next(gen) for _ in range(n)]


def test_poisson_gaps_have_mean_one_over_rate():
    gaps = take(arrival_gaps(10.0, 1.0, random.Random(1)), 20000)
    assert statistics.fmean(gaps) == pytest.approx(0.1, rel=0.03)
    assert statistics.pstdev(gaps) == pytest.approx(0.1, rel=0.05)  # exponential: sd == mean


def test_burstiness_keeps_the_mean_and_changes_the_spread():
    bursty = take(arrival_gaps(10.0, 0.25, random.Random(2)), 20000)
    regular = take(arrival_gaps(10.0, 4.0, random.Random(2)), 20000)
    assert statistics.fmean(bursty) == pytest.approx(0.1, rel=0.05)
    assert statistics.fmean(regular) == pytest.approx(0.1, rel=0.05)
    # gamma(k, 1/(rate k)): cv = 1/sqrt(k)
    assert statistics.pstdev(bursty) / 0.1 == pytest.approx(2.0, rel=0.1)
    assert statistics.pstdev(regular) / 0.1 == pytest.approx(0.5, rel=0.1)


def test_infinite_or_no_rate_means_no_gaps():
    assert take(arrival_gaps(math.inf, 1.0, random.Random()), 3) == [0.0, 0.0, 0.0]
    assert take(arrival_gaps(None, 1.0, random.Random()), 3) == [0.0, 0.0, 0.0]


async def test_rate_is_open_loop_and_queue_time_shows_the_wait(tmp_path, mock_server):
    url = await mock_server(ttft=0.3, tokens_per_s=0, output_tokens=2)
    rows = [chat(f"r{i}") for i in range(8)]
    code, records = await run_rows(tmp_path, url, rows, stages=(Stage(0, 2, 200.0),), seed=3)
    assert code == 0 and len(records) == 8
    queued = sorted(r["metrics"]["queue_s"] for r in records)
    # only 2 slots and a slow server: arrivals kept coming, so later requests waited for a slot
    assert queued[-1] >= 0.3
    assert all(r["metrics"]["ttft_s"] >= 0.3 for r in records)


async def test_num_prompts_and_duration_stop_sending(tmp_path, mock_server):
    url = await mock_server()
    code, records = await run_rows(tmp_path, url, [chat(f"r{i}") for i in range(10)], num_prompts=3)
    assert code == 0 and sorted(r["custom_id"] for r in records) == ["r0", "r1", "r2"]  # the first three lines
    code, records = await run_rows(tmp_path, url, [chat(f"r{i}") for i in range(50)],
                                   stages=(Stage(0, 4, 2.0),), duration_s=0.2, overwrite=True)
    assert code == 0 and 1 <= len(records) < 50  # at 2 req/s, 0.2 s leaves room for a handful at most


async def test_warmup_records_are_marked_and_excluded_from_stats(tmp_path, mock_server):
    url = await mock_server()
    code, records = await run_rows(tmp_path, url, [chat(f"r{i}") for i in range(5)], warmup=2)
    warm = [r for r in records if r["warmup"]]
    assert sorted(r["custom_id"] for r in warm) == ["warmup:r0", "warmup:r1"]  # the first lines, marked
    assert code == 0 and len(records) == 7
    assert sorted(r["custom_id"] for r in records if not r["warmup"]) == [f"r{i}" for i in range(5)]
    summary = orjson.loads((tmp_path / "out.summary.json").read_bytes())["summary"]
    assert summary["counts"]["total"] == 5 and summary["counts"]["warmup"] == 2


async def test_sweep_writes_each_stage_and_resume_is_per_stage(tmp_path, mock_server):
    url = await mock_server()
    rows = [chat(f"r{i}") for i in range(4)]
    code, records = await run_rows(tmp_path, url, rows, stages=make_stages([1, 2, 4], [None]))
    assert code == 0
    per_stage = Counter(r["stage"]["label"] for r in records)
    assert per_stage == {"c=1": 4, "c=2": 4, "c=4": 4}
    assert {r["stage"]["concurrency"] for r in records} == {1, 2, 4}
    # kill the last stage's records and resume: only they are sent again
    kept = [r for r in records if r["stage"]["label"] != "c=4"]
    write_jsonl(tmp_path / "out.jsonl", kept)
    code, records = await run_rows(tmp_path, url, rows, stages=make_stages([1, 2, 4], [None]),
                                   resume=True, overwrite=False)
    assert code == 0
    assert Counter(r["stage"]["label"] for r in records) == {"c=1": 4, "c=2": 4, "c=4": 4}
    assert (await amock_stats(url))["requests"] == 12 + 4
