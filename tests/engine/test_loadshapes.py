"""Load shapes: arrival gaps, open-loop rate, num-prompts, duration, warm-up, sweeps (synth: tests/inputs/test_synth.py)."""

from __future__ import annotations

import math
import random
import statistics
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from runner.config.run_config import Stage, make_stages
from runner.engine.schedule import arrival_gaps
from runner.engine.send import NOT_RETRIED
from runner.record import Metrics, Record, RecordError
from tests.helpers import amock_stats, chat, read_jsonl, run_rows, streamrun, write_jsonl


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


def started(record: dict) -> float:
    return datetime.fromisoformat(record["metrics"]["started_at"]).timestamp()


def assert_started_by_the_deadline(records: list[dict], duration: float) -> None:
    """Every record's request started within `duration` of the first one (which starts at the stage's start,
    or after it: a bound that holds however slow the machine), give or take scheduling."""
    first = min(started(r) for r in records)
    assert all(started(r) <= first + duration + 0.05 for r in records), [started(r) - first for r in records]


async def test_duration_starts_nothing_after_its_deadline_and_lets_the_started_finish(tmp_path, mock_server):
    # Each request holds its slot for 3 s, so only the first 4 can start within the 1 s.  The deadline was
    # checked only as items entered the queue: those queued by then were all sent afterwards.
    url = await mock_server(ttft=3.0, output_tokens=2)
    code, records = await run_rows(tmp_path, url, [chat(f"r{i}") for i in range(20)], stages=(Stage(0, 4),),
                                   duration_s=1.0)
    requests = (await amock_stats(url))["requests"]
    assert code == 0 and 1 <= requests <= 4
    assert len(records) == requests and all(r["status"] == "ok" for r in records)  # in flight: finished
    assert_started_by_the_deadline(records, 1.0)


async def test_duration_sends_nothing_still_waiting_for_quota(tmp_path, mock_server):
    # --rpm 60: one request a second.  Requests queued for quota at the deadline were all sent after it.
    url = await mock_server(output_tokens=2)
    code, records = await run_rows(tmp_path, url, [chat(f"r{i}") for i in range(12)], stages=(Stage(0, 8),),
                                   duration_s=1.5, rpm=60)
    requests = (await amock_stats(url))["requests"]
    assert code == 0 and 1 <= requests <= 3 and len(records) == requests  # at 0 s and 1 s (one more of slack)
    assert_started_by_the_deadline(records, 1.5)


async def test_a_retry_that_would_start_after_the_deadline_is_not_made(tmp_path, mock_server):
    url = await mock_server(output_tokens=2)
    rows = [chat("r0", {"key": "r0", "faults": ["429"], "retry_after": 5})]
    code, (record,) = await run_rows(tmp_path, url, rows, duration_s=1.0)
    assert code == 1 and record["status"] == "error" and record["attempts"] == 1  # the 429 stands
    assert record["error"]["status_code"] == 429
    assert record["error"]["message"].endswith(" " + NOT_RETRIED)  # and says why it is the record's last word
    assert (await amock_stats(url))["requests"] == 1
    # Its type is a retryable one: a rerun sends it again (the mock's fault is used up: this time it is answered).
    code, records = await run_rows(tmp_path, url, rows, duration_s=1.0, resume=True, overwrite=False)
    assert code == 0 and [r["status"] for r in records] == ["error", "ok"]


async def test_a_retry_still_waiting_for_quota_at_the_deadline_says_why_it_was_not_made(tmp_path, mock_server):
    # --rpm 20: the retry's turn comes 3 s after the first request, after the 1 s deadline.
    url = await mock_server(output_tokens=2)
    rows = [chat("r0", {"key": "r0", "faults": ["500"]})]
    code, (record,) = await run_rows(tmp_path, url, rows, duration_s=1.0, rpm=20)
    assert code == 1 and record["attempts"] == 1 and record["error"]["status_code"] == 500
    assert record["error"]["message"].endswith(" " + NOT_RETRIED)
    assert (await amock_stats(url))["requests"] == 1


async def test_retries_used_up_under_duration_say_nothing_of_the_deadline(tmp_path, mock_server):
    url = await mock_server(output_tokens=2)
    rows = [chat("r0", {"key": "r0", "faults": ["500"] * 4}), chat("r1", {"key": "r1", "faults": ["400"]})]
    code, records = await run_rows(tmp_path, url, rows, duration_s=30.0)
    assert code == 1 and sorted((r["custom_id"], r["attempts"]) for r in records) == [("r0", 4), ("r1", 1)]
    assert not any("--duration" in r["error"]["message"] for r in records)


async def test_a_session_ends_at_the_deadline_with_the_turns_it_had(tmp_path, mock_server):
    url = await mock_server(output_tokens=2)
    rows = [{"custom_id": "s", "turns": ["a", "b", "c"], "think_time_s": 2.0}]
    code, (record,) = await run_rows(tmp_path, url, rows, duration_s=1.0)
    assert code == 0 and record["status"] == "ok" and len(record["turns"]) == 1  # turn 1 would start at 2 s
    assert (await amock_stats(url))["requests"] == 1


async def test_duration_starts_nothing_after_its_deadline_with_workers(tmp_path, mock_server):
    url = await mock_server(ttft=3.0, output_tokens=2)
    code, records = await run_rows(tmp_path, url, [chat(f"r{i}") for i in range(20)], stages=(Stage(0, 4),),
                                   duration_s=1.0, workers=2)
    requests = (await amock_stats(url))["requests"]
    assert code == 0 and 1 <= requests <= 4 and len(records) == requests
    assert_started_by_the_deadline(records, 1.0)


async def test_duration_counts_the_whole_output_across_resumes(tmp_path, mock_server):
    # The first run's records span over 1 s (its last request started before 1 s and took 0.4 s), so a
    # rerun of the same command has no time left: it sends nothing, with one process or several.
    url = await mock_server(ttft=0.4, output_tokens=2)
    rows = [chat(f"r{i}") for i in range(40)]
    code, records = await run_rows(tmp_path, url, rows, stages=(Stage(0, 2),), duration_s=1.0)
    sent = (await amock_stats(url))["requests"]
    assert code == 0 and len(records) == sent
    for workers in (1, 2):
        code, again = await run_rows(tmp_path, url, rows, stages=(Stage(0, 2),), duration_s=1.0, resume=True,
                                     overwrite=False, workers=workers)
        assert code == 0 and len(again) == len(records) and (await amock_stats(url))["requests"] == sent


async def test_duration_counts_the_time_of_a_failed_record_that_a_rerun_sends_again(tmp_path, mock_server):
    # The output's stage spans 1.5 s of the 2 s: r0 answered at its start, r1 failed 1.5 s later (a 500: a rerun
    # sends its line again). The rerun has 0.5 s: it resends r1 (1 s at c=1) and starts nothing more; counting
    # only r0's time it had 2 s, and sent r2 at 1 s. For --num-prompts r1 is no prompt done: it is sent again.
    url = await mock_server(ttft=1.0, output_tokens=2)
    begin = datetime.now(UTC) - timedelta(minutes=5)
    done = Record("r0", "ok", "hi", metrics=Metrics(e2e_s=0.0, started_at=begin))
    failed = Record("r1", "error", error=RecordError("http_error", 500, None, "HTTP 500"),
                    metrics=Metrics(started_at=begin + timedelta(seconds=1.5)))
    (tmp_path / "out.jsonl").write_bytes(orjson.dumps(done) + b"\n" + orjson.dumps(failed) + b"\n")
    code, records = await run_rows(tmp_path, url, [chat(f"r{i}") for i in range(4)], stages=(Stage(0, 1),),
                                   duration_s=2.0, resume=True, overwrite=False)
    assert code == 0 and [(r["custom_id"], r["status"]) for r in records[2:]] == [("r1", "ok")]
    assert (await amock_stats(url))["requests"] == 1
    code, records = await run_rows(tmp_path, url, [chat(f"r{i}") for i in range(4)], stages=(Stage(0, 4),),
                                   num_prompts=2, resume=True, overwrite=False)
    assert code == 0 and len(records) == 3  # r0 and r1 are the 2 prompts: nothing more


def test_duration_cuts_what_is_in_flight_at_the_drain_timeout(tmp_path, mock_process):
    # A 30 s TTFT: what started before the deadline is cut 1 s after it, as on a stop, instead of
    # holding the run for 30 s; it has no record, so a rerun sends it.
    url = mock_process("--ttft", "30", "--output-tokens", "2")
    inp = write_jsonl(tmp_path / "in.jsonl", [chat(f"r{i}") for i in range(10)])
    began = time.monotonic()
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--base-url", url, "--model", "mock-model", "-c", "2",
                    "--duration", "0.5s", "--drain-timeout", "1s", "--workers", "2", timeout=60)
    assert res.returncode == 0, res.stderr
    assert time.monotonic() - began < 20  # 30 s when the drain waited for the replies
    assert read_jsonl(tmp_path / "out.jsonl") == []
    summary = orjson.loads((tmp_path / "out.summary.json").read_bytes())
    assert 1 <= summary["cancelled_in_flight"] <= 2


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
