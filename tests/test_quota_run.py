"""Quotas end to end against a rate-limited mock: RPM limits, adaptive concurrency, TPM, cost.

Compares 429 counts, never durations.
"""

from __future__ import annotations

import aiohttp
import orjson

from runner.config import RetryPolicy, Stage
from tests.conftest import streamrun, write_jsonl
from tests.test_engine import chat, run_rows

PATIENT = RetryPolicy(max_attempts=100, backoff_initial=0.05, backoff_max=0.5)


async def mock_429s(url: str) -> int:
    async with aiohttp.ClientSession() as s:
        async with s.get(url.removesuffix("/v1") + "/mock/stats") as resp:
            return (await resp.json())["status_429"]


async def quota_run(tmp_path, mock_server, n=90, **overrides):
    # 600 RPM = 10/s, starting with 60 in the bucket: a burst of 90 trips it
    url = await mock_server(rpm_limit=600, quota_fill=0.1, output_tokens=4)
    code, records = await run_rows(tmp_path, url, [chat(f"r{i}") for i in range(n)],
                                   stages=(Stage(0, 16),), retry=PATIENT, **overrides)
    assert code == 0 and len(records) == n and all(r["status"] == "ok" for r in records)
    summary = orjson.loads((tmp_path / "out.summary.json").read_bytes())
    return await mock_429s(url), summary


async def test_matching_rpm_gets_no_429s(tmp_path, mock_server):
    throttled, summary = await quota_run(tmp_path, mock_server, rpm=600, adaptive=False)
    assert throttled == 0
    assert summary["quota"]["rpm"] == 600 and summary["quota"]["waits"] > 0


async def test_adaptive_gets_far_fewer_429s_than_fixed_concurrency(tmp_path, mock_server):
    fixed, _ = await quota_run(tmp_path / "a" if (tmp_path / "a").mkdir() is None else tmp_path, mock_server,
                               adaptive=False)
    adaptive, summary = await quota_run(tmp_path / "b" if (tmp_path / "b").mkdir() is None else tmp_path,
                                        mock_server, adaptive=True)
    print(f"429s: fixed concurrency {fixed}, adaptive {adaptive}")
    assert fixed > 0
    assert adaptive * 2 <= fixed
    a = summary["adaptive_concurrency"]
    assert a["throttles"] >= 1 and a["decreases"] >= 1 and a["min_seen"] < 16


async def test_request_over_tpm_is_an_error_record_not_a_hang(tmp_path, mock_server):
    url = await mock_server()
    rows = [chat("small", max_tokens=10), chat("huge", max_tokens=50_000)]
    code, records = await run_rows(tmp_path, url, rows, tpm=10_000)
    by = {r["custom_id"]: r for r in records}
    assert code == 1 and by["small"]["status"] == "ok"
    assert by["huge"]["error"]["type"] == "exceeds_tpm" and by["huge"]["attempts"] == 1


async def test_cost_and_token_totals_in_summary(tmp_path, mock_server):
    url = await mock_server(output_tokens=10)
    rows = [chat(f"r{i}", max_tokens=10) for i in range(4)]
    code, records = await run_rows(tmp_path, url, rows, price_input=2.5, price_output=10.0)
    summary = orjson.loads((tmp_path / "out.summary.json").read_bytes())
    prompt = sum(r["usage"]["prompt_tokens"] for r in records)
    tokens = summary["summary"]["tokens"]
    assert tokens["completion"] == 40 and tokens["prompt"] == prompt
    assert summary["cost_usd"] == (prompt * 2.5 + 40 * 10.0) / 1_000_000


def test_estimate_counts_without_sending(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [
        {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 100},
        {"prompt": "y" * 40},
        "{bad",
    ])
    res = streamrun("estimate", inp, "--price-input", "1", "--price-output", "2", "--default-output-tokens", "50",
                    "--json", env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1"})
    assert res.returncode == 0, res.stderr
    doc = orjson.loads(res.stdout)
    assert doc["requests"] == 2 and doc["invalid"] == 1
    # chat: 3 + (3 + 1 role + 100 content) = 107 (chars/4, cookbook overheads); completion: 10
    assert doc["prompt_tokens"] == 117 and doc["max_output_tokens"] == 150
    assert doc["cost_usd_min"] == 117 / 1e6 and doc["cost_usd_max"] == (117 + 300) / 1e6
