"""Quotas end to end against the mock's rate limits: RPM, adaptive concurrency, TPM, cost.

The mock's limiter (fixed one-second windows, runner/mock/state.py) is a
second implementation, apart from the client's token buckets
(runner/engine/quota.py), so these tests check the client against an independent
reading of "N per minute".  No assertion depends on this machine's speed:
a client that paces itself must get no 429 at all, whatever the timing;
where 429s do happen, the tests check what holds for any number of them.
"""

from __future__ import annotations

import orjson

from runner.config.run_config import Stage
from runner.stream.config import RetryPolicy
from tests.helpers import amock_stats, by_id, chat, run_rows

PATIENT = RetryPolicy(max_attempts=100, backoff_initial=0.05, backoff_max=0.5)


async def quota_run(tmp_path, url: str, rows, **overrides) -> tuple[list[dict], dict, dict]:
    """Run rows at -c 16, every record ok: (records, summary document, the mock's stats)."""
    code, records = await run_rows(tmp_path, url, rows, stages=(Stage(0, 16),), retry=PATIENT, **overrides)
    assert code == 0 and len(records) == len(rows) and all(r["status"] == "ok" for r in records)
    summary = orjson.loads((tmp_path / "out.summary.json").read_bytes())
    return records, summary, await amock_stats(url)


async def test_matching_rpm_never_trips_the_mock_limiter(tmp_path, mock_server):
    # 600 RPM: the mock grants 10 per clock second, at the second's start, and holds one second's
    # worth more at start (quota_fill 1/60): the burst the client's bucket starts with.  The client
    # refills continuously, so in any stretch it gains at most what the mock's seconds grant it, and
    # the mock's store covers the second the client starts in.  So however fast or slow the requests
    # go, the client never holds more than the mock would admit, and none may be refused; a client
    # 25 % too fast would drain that one second's slack within these 4 seconds.
    url = await mock_server(rpm_limit=600, quota_fill=1 / 60, output_tokens=4)
    rows = [chat(f"r{i}") for i in range(40)]
    records, summary, stats = await quota_run(tmp_path, url, rows, rpm=600, adaptive=False)
    assert stats["status_429"] == 0 and stats["requests"] == 40
    assert all(r["attempts"] == 1 for r in records)
    assert summary["quota"]["rpm"] == 600
    assert summary["quota"]["waits"] > 0  # 40 requests are 4 seconds' worth: the client waited


async def test_every_quota_429_is_seen_retried_and_counted(tmp_path, mock_server):
    # No client quota: a burst of 90 at -c 16 runs into the mock's 70 at start.  How many 429s that
    # takes depends on speed, so only what holds for any number is checked.
    url = await mock_server(rpm_limit=600, quota_fill=0.1, output_tokens=4)
    records, summary, stats = await quota_run(tmp_path, url, [chat(f"r{i}") for i in range(90)], adaptive=True)
    refused = stats["status_429"]
    assert stats["requests"] == 90 + refused
    assert sum(r["attempts"] - 1 for r in records) == refused  # each 429 cost one more attempt, nothing else did
    a = summary["adaptive_concurrency"]
    assert a["throttles"] == refused  # the adaptive limiter heard of every one
    assert (a["decreases"] >= 1) == (refused >= 1)
    assert 1 <= a["min_seen"] <= (8 if refused else 16)  # the first halving takes it to 8 at most


async def test_adaptive_halves_concurrency_on_a_throttle(tmp_path, mock_server):
    # one scripted 429, independent of timing: exactly one throttle, one halving
    url = await mock_server(output_tokens=4)
    rows = [chat("r0", {"key": "r0", "faults": ["429"], "retry_after": 0.01})] + [chat(f"r{i}") for i in range(1, 40)]
    records, summary, stats = await quota_run(tmp_path, url, rows, adaptive=True)
    assert stats["status_429"] == 1 and by_id(records)["r0"]["attempts"] == 2
    a = summary["adaptive_concurrency"]
    assert (a["throttles"], a["decreases"], a["min_seen"], a["max"]) == (1, 1, 8, 16)
    assert a["final_limit"] >= 8  # and it recovers, never past -c


async def test_fixed_concurrency_hears_of_throttles_but_keeps_its_limit(tmp_path, mock_server):
    url = await mock_server(output_tokens=4)
    rows = [chat("r0", {"key": "r0", "faults": ["429"], "retry_after": 0.01})] + [chat(f"r{i}") for i in range(1, 10)]
    records, summary, stats = await quota_run(tmp_path, url, rows, adaptive=False)
    assert stats["status_429"] == 1 and by_id(records)["r0"]["attempts"] == 2
    assert "adaptive_concurrency" not in summary


async def test_request_over_tpm_is_an_error_record_not_a_hang(tmp_path, mock_server):
    url = await mock_server()
    rows = [chat("small", max_tokens=10), chat("huge", max_tokens=50_000)]
    code, records = await run_rows(tmp_path, url, rows, tpm=10_000)
    by = by_id(records)
    assert code == 1 and by["small"]["status"] == "ok"
    assert by["huge"]["error"]["type"] == "exceeds_tpm" and by["huge"]["attempts"] == 1


async def test_cost_and_token_totals_in_summary(tmp_path, mock_server):
    url = await mock_server(output_tokens=10)
    rows = [chat(f"r{i}", max_tokens=10) for i in range(4)]
    code, records = await run_rows(tmp_path, url, rows, price_input=2.5, price_output=10.0)
    summary = orjson.loads((tmp_path / "out.summary.json").read_bytes())
    prompt = sum(r["usage"]["prompt_tokens"] for r in records)
    tokens = summary["summary"]["tokens"]
    assert code == 0
    assert tokens["completion"] == 40 and tokens["prompt"] == prompt
    assert summary["cost_usd"] == (prompt * 2.5 + 40 * 10.0) / 1_000_000
