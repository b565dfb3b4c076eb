"""`streamrun batch` end to end against the strict mock, for both providers (runner/batchapi).

What is checked, against the mock in its own process with an API key it
requires (the `batch_mock` fixture): one record per input line, the text a
live run gets for the same prompt, typed errors for the lines that fail;
every line submitted once (the mock counts submissions per custom_id)
across `--no-wait`, `--cancel` and `--resubmit-failed`; the endpoints each
batch holds; the job-file and Python forms; the records read by `report`,
`export`, `merge` and `convert`; the key in no file and no stream.  No test
waits for a time: batches move on by polls (`--batch-polls`) or at once
(`--batch-delay 0`).  Crashes and signals: test_never_pay_twice.py.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import orjson
import pytest

from runner.batchapi.plan import anthropic_id
from runner.config.run_config import BatchConfig, OutputConfig, RunConfig
from runner.errors import UsageError
from tests.helpers import (
    BATCH_ENV,
    BATCH_FAILING,
    assert_submitted_once,
    batch_cli,
    batch_rows,
    batch_state,
    by_id,
    forward_proxy,
    mock_stats,
    no_batch_key_anywhere,
    read_jsonl,
    streamrun,
    write_jsonl,
)

APIS = ("openai", "anthropic")


def live_texts(tmp_path: Path, url: str, api: str, n: int = 40) -> dict[str, str]:
    """What a live run gets for the same prompts (the mock's text is a function of the prompt)."""
    inp = write_jsonl(tmp_path / "live.jsonl", batch_rows(n, faults=False))
    res = streamrun("run", inp, "-o", tmp_path / "live-out.jsonl", "--base-url", url, "--model", "mock-model",
                    "--max-tokens", "16", "--api", "anthropic" if api == "anthropic" else "chat", env=BATCH_ENV)
    assert res.returncode == 0, res.stderr
    return {r["custom_id"]: r["text"] for r in read_jsonl(tmp_path / "live-out.jsonl")}



# ---- done when: 40 lines (some failing), one record per line, the right text; --max-lines-per-batch 15: 3 batches


@pytest.mark.parametrize("api", APIS)
def test_forty_lines_give_one_record_each_with_the_live_text_and_errors_for_the_failing(tmp_path, batch_mock, api):
    url = batch_mock()
    inp = write_jsonl(tmp_path / "in.jsonl", batch_rows())
    out = tmp_path / "out.jsonl"
    res = batch_cli(inp, out, url, api, "--max-lines-per-batch", "15")
    assert res.returncode == 1, res.stderr  # 4 failed lines, no failure budget: as `run`
    records = read_jsonl(out)
    assert sorted(r["custom_id"] for r in records) == [f"p{i:02d}" for i in range(40)]
    live = live_texts(tmp_path, url, api)
    for r in records:
        i = int(r["custom_id"][1:])
        assert r["batch_id"] and r["metrics"]["ttft_s"] is None and r["metrics"]["e2e_s"] is None
        if i in BATCH_FAILING:
            assert r["status"] == "error" and r["attempts"] == 1
            assert r["error"]["type"] == "batch_errored" and r["error"]["message"] == "mock: invalid request (injected)"
            assert r["error"]["status_code"] == (400 if api == "openai" else None)
        else:
            assert r["status"] == "ok" and r["text"] == live[r["custom_id"]]
            assert r["finish_reason"] == "length"  # max_tokens 16 of the mock's 64 (Anthropic's max_tokens too)
            assert r["usage"]["prompt_tokens"] > 0 and r["usage"]["completion_tokens"] == 16
            assert r["metrics"]["output_tokens"] == 16 and r["request_url"] in ("/v1/chat/completions", "/v1/messages")
    stats = assert_submitted_once(url, 40)
    assert stats["batches_created"] == 3
    state = batch_state(out)
    assert [p["lines"] for p in state["parts"]] == [15, 15, 10]
    assert {r["batch_id"] for r in records} == {p["batch_id"] for p in state["parts"]}
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["summary"]["counts"]["ok"] == 36 and summary["summary"]["counts"]["error"] == 4
    assert summary["exit_code"] == 1 and summary["requests_sent"] == 40 and summary["batch"]["in_progress"] == 0
    assert "40 records: 36 ok, 4 error (batch_errored 4)" in res.stderr
    no_batch_key_anywhere(tmp_path, res.stdout, res.stderr)


def test_anthropic_custom_ids_that_do_not_conform_are_mapped_on_the_wire_and_back(tmp_path, batch_mock):
    """Lines without an id are `in.jsonl:N`, which Anthropic refuses: sent as sr-<hash>, recorded as they were."""
    url = batch_mock()
    inp = write_jsonl(tmp_path / "in.jsonl", batch_rows(5, ids=False, faults=False) + [
        {"custom_id": "ok_id-1", "messages": [{"role": "user", "content": "x"}]}])
    res = batch_cli(inp, tmp_path / "out.jsonl", url, "anthropic")
    assert res.returncode == 0, res.stderr
    records = by_id(read_jsonl(tmp_path / "out.jsonl"))
    assert sorted(records) == sorted([f"in.jsonl:{i}" for i in range(1, 6)] + ["ok_id-1"])
    assert all(r["status"] == "ok" for r in records.values())
    wire = mock_stats(url)["batch_lines"]
    assert sorted(wire) == sorted([anthropic_id(f"in.jsonl:{i}") for i in range(1, 6)] + ["ok_id-1"])
    assert all(w == "ok_id-1" or w.startswith("sr-") and len(w) == 35 for w in wire)


def test_duplicate_custom_ids_are_refused_before_any_upload(tmp_path, batch_mock):
    url = batch_mock()
    inp = write_jsonl(tmp_path / "in.jsonl", batch_rows(3, faults=False) + batch_rows(1, faults=False))
    res = batch_cli(inp, tmp_path / "out.jsonl", url, "openai")
    assert res.returncode == 2 and "duplicate custom_id: 'p00' at" in res.stderr
    assert mock_stats(url)["files_uploaded"] == 0 and not (tmp_path / "out.jsonl").exists()
    assert not (tmp_path / "out.batch.json").exists()

def test_no_wait_submits_and_exits_0_and_a_rerun_collects_what_has_finished(tmp_path, batch_mock):
    url = batch_mock("--batch-polls", "2", "--batch-delay", "0")
    inp = write_jsonl(tmp_path / "in.jsonl", batch_rows(10))
    out = tmp_path / "out.jsonl"
    first = batch_cli(inp, out, url, "openai", "--no-wait")
    assert first.returncode == 0, first.stderr
    assert "1 batches (10 lines) still in progress: run the same command again to collect them" in first.stderr
    assert not read_jsonl(out)
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["exit_code"] == 0 and summary["batch"]["in_progress"] == 1
    second = batch_cli(inp, out, url, "openai", "--no-wait")  # its one poll is the batch's second: it ends
    assert second.returncode == 1, second.stderr  # one failed line, no budget
    assert len(read_jsonl(out)) == 10
    third = batch_cli(inp, out, url, "openai", "--max-failed", "1")  # nothing left to do; the budget as `run`'s
    assert third.returncode == 0, third.stderr
    assert len(read_jsonl(out)) == 10
    assert_submitted_once(url, 10)


@pytest.mark.parametrize("api", APIS)
def test_cancel_cancels_the_batches_and_writes_batch_cancelled_for_lines_never_answered(tmp_path, batch_mock, api):
    """20 lines over 10 polls: after the first poll, 2 are answered; --cancel ends the batch there."""
    url = batch_mock("--batch-polls", "10", "--batch-delay", "0")
    inp = write_jsonl(tmp_path / "in.jsonl", batch_rows(20, faults=False))
    out = tmp_path / "out.jsonl"
    assert batch_cli(inp, out, url, api, "--no-wait").returncode == 0
    res = batch_cli(inp, out, url, api, "--cancel")
    assert res.returncode == 1, res.stderr
    records = by_id(read_jsonl(out))
    assert sorted(records) == [f"p{i:02d}" for i in range(20)]
    ok = [cid for cid, r in records.items() if r["status"] == "ok"]
    cancelled = [cid for cid, r in records.items() if r["status"] == "error"]
    assert ok == ["p00", "p01"] and len(cancelled) == 18
    assert {records[c]["error"]["type"] for c in cancelled} == {"batch_cancelled"}
    assert {records[c]["attempts"] for c in cancelled} == {0}
    assert batch_state(out)["parts"][0]["end"] == "cancelled"
    assert_submitted_once(url, 20)


@pytest.mark.parametrize("api", APIS)
def test_expired_lines_are_submitted_again_only_with_resubmit_failed(tmp_path, batch_mock, api):
    url = batch_mock("--batch-expire-at", "0.5", "--batch-delay", "0")
    inp = write_jsonl(tmp_path / "in.jsonl", batch_rows(8, faults=False))
    out = tmp_path / "out.jsonl"
    assert batch_cli(inp, out, url, api).returncode == 1
    first = by_id(read_jsonl(out))
    expired = sorted(c for c, r in first.items() if r["status"] == "error")
    assert len(expired) == 4 and {first[c]["error"]["type"] for c in expired} == {"batch_expired"}
    again = batch_cli(inp, out, url, api)  # nothing to submit: the expired lines stay as they are
    assert again.returncode == 1 and set(mock_stats(url)["batch_lines"].values()) == {1}
    res = batch_cli(inp, out, url, api, "--resubmit-failed")
    assert res.returncode == 1, res.stderr
    submitted = mock_stats(url)["batch_lines"]
    wire = {c: anthropic_id(c) for c in first} if api == "anthropic" else {c: c for c in first}
    assert {c for c in first if submitted[wire[c]] == 2} == set(expired)  # only they went again
    final = {}
    for r in read_jsonl(out):
        final[r["custom_id"]] = r
    assert sum(r["status"] == "ok" for r in final.values()) == 6  # half of the 4 expired made it this time


# ---- what each API batches


def test_openai_batches_group_lines_by_endpoint_and_model(tmp_path, batch_mock):
    url = batch_mock("--alias", "other-model")
    lines = [
        {"custom_id": "chat", "messages": [{"role": "user", "content": "hi"}]},
        {"custom_id": "chat2", "model": "other-model", "messages": [{"role": "user", "content": "hi"}]},
        {"custom_id": "cmpl", "prompt": "once upon"},
        {"custom_id": "resp", "input": "hello"},
        {"custom_id": "emb", "method": "POST", "url": "/v1/embeddings", "body": {"model": "mock-model",
                                                                                  "input": ["a", "b"]}},
        {"custom_id": "msg", "method": "POST", "url": "/v1/messages",
         "body": {"model": "mock-model", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}},
        {"custom_id": "sess", "turns": ["one", "two"]},
    ]
    inp = write_jsonl(tmp_path / "in.jsonl", lines)
    res = batch_cli(inp, tmp_path / "out.jsonl", url, "openai")
    assert res.returncode == 1, res.stderr
    records = by_id(read_jsonl(tmp_path / "out.jsonl"))
    parts = batch_state(tmp_path / "out.jsonl")["parts"]
    assert sorted((p["endpoint"], p["model"]) for p in parts) == [
        ("/v1/chat/completions", "mock-model"), ("/v1/chat/completions", "other-model"),
        ("/v1/completions", "mock-model"), ("/v1/embeddings", "mock-model"), ("/v1/responses", "mock-model")]
    for cid in ("chat", "chat2", "cmpl", "resp"):
        assert records[cid]["status"] == "ok" and records[cid]["text"], records[cid]
    assert records["resp"]["request_url"] == "/v1/responses" and records["resp"]["usage"]["completion_tokens"] == 16
    assert records["emb"]["status"] == "ok" and len(records["emb"]["embeddings"]) == 2
    assert records["msg"]["error"]["type"] == "invalid_input" and "OpenAI's Batch API" in records["msg"]["error"][
        "message"]
    assert records["sess"]["error"]["type"] == "invalid_input" and "session" in records["sess"]["error"]["message"]
    assert "msg" not in mock_stats(url)["batch_lines"]


# ---- the job-file form, the other readers, the summary


def test_a_job_with_batch_true_runs_the_batch_path_under_its_failure_budget(tmp_path):
    write_jsonl(tmp_path / "in.jsonl", batch_rows(10))
    job = tmp_path / "nightly.toml"
    job.write_text('inputs = ["in.jsonl"]\noutput = "out/{job}.jsonl"\nbatch = true\nmax_failed = 0.2\n'
                   'max_lines_per_batch = 4\npoll_interval = "10ms"\nmodel = "mock-model"\n'
                   'output_format = "openai-batch"\n[params]\nmax_tokens = 8\n[mock]\nttft = 0\n'
                   'tokens_per_s = 0\nbatch_delay = 0\n')
    res = streamrun("--log-format", "json", "job", job, env=BATCH_ENV)
    assert res.returncode == 0, res.stderr  # 1 failed of 10: within 20 %
    lines = read_jsonl(tmp_path / "out" / "nightly.jsonl")
    assert len(lines) == 10 and all("response" in line and line["streamrun"]["batch_id"] for line in lines)
    summary = json.loads((tmp_path / "out" / "nightly.summary.json").read_text())
    assert summary["job"] == "nightly" and [b["lines"] for b in summary["batch"]["batches"]] == [4, 4, 2]
    assert all(json.loads(line) for line in res.stderr.splitlines())  # every log line JSON
    progress = [json.loads(line) for line in res.stderr.splitlines() if '"batch"' in line and '"status"' in line]
    assert progress and {"batch", "status", "counts"} <= set(progress[0])
    bad = tmp_path / "live.toml"
    bad.write_text('inputs = ["in.jsonl"]\noutput = "o.jsonl"\nmax_lines_per_batch = 4\n')
    refused = streamrun("job", bad, env=BATCH_ENV)
    assert refused.returncode == 2 and "batch = true" in refused.stderr


def test_batch_records_are_read_by_report_export_merge_and_convert(tmp_path, batch_mock):
    url = batch_mock()
    inp = write_jsonl(tmp_path / "in.jsonl", batch_rows(6))
    out = tmp_path / "out.jsonl"
    assert batch_cli(inp, out, url, "openai").returncode == 1
    report = streamrun("report", out, "--json")
    assert report.returncode == 0, report.stderr
    assert orjson.loads(report.stdout)
    conv = streamrun("convert", out, "-o", tmp_path / "b.jsonl", "--to", "openai-batch")
    back = streamrun("convert", tmp_path / "b.jsonl", "-o", tmp_path / "n.jsonl", "--to", "streamrun")
    assert conv.returncode == 0 and back.returncode == 0, conv.stderr + back.stderr
    assert read_jsonl(tmp_path / "n.jsonl") == read_jsonl(out)  # batch_id and all
    merged = streamrun("merge", out, "-o", tmp_path / "m.jsonl", "--inputs", inp)
    assert merged.returncode == 0 and len(read_jsonl(tmp_path / "m.jsonl")) == 6, merged.stderr
    pq = pytest.importorskip("pyarrow.parquet")
    exported = streamrun("export", out, "--to", "parquet", tmp_path / "x.parquet")
    assert exported.returncode == 0, exported.stderr
    table = pq.read_table(tmp_path / "x.parquet")
    assert set(table.column("batch_id").to_pylist()) == {r["batch_id"] for r in read_jsonl(out)}


def test_a_provider_that_refuses_the_key_stops_the_run_with_exit_2_and_nothing_written(tmp_path, batch_mock):
    url = batch_mock()
    inp = write_jsonl(tmp_path / "in.jsonl", batch_rows(3))
    res = streamrun("batch", inp, "-o", tmp_path / "out.jsonl", "--base-url", url, "--model", "mock-model",
                    env={**BATCH_ENV, "OPENAI_API_KEY": "sk-wrong-key-123456"})
    assert res.returncode == 2 and "HTTP 401" in res.stderr and "check the key" in res.stderr
    assert "sk-wrong-key-123456" not in res.stderr
    assert mock_stats(url)["batches_created"] == 0


def test_an_input_changed_under_a_running_batch_is_refused_not_misread(tmp_path, batch_mock):
    url = batch_mock("--batch-polls", "3", "--batch-delay", "0")
    inp = write_jsonl(tmp_path / "in.jsonl", batch_rows(4, faults=False))
    out = tmp_path / "out.jsonl"
    assert batch_cli(inp, out, url, "openai", "--no-wait").returncode == 0
    write_jsonl(inp, batch_rows(4, faults=False)[::-1])  # the same lines, in another order: other lines at those places
    res = batch_cli(inp, out, url, "openai")
    assert res.returncode == 2 and "have changed since it was planned" in res.stderr
    assert not read_jsonl(out) and batch_state(out)["parts"][0]["step"] == "submitted"
    write_jsonl(inp, batch_rows(4, faults=False))  # restored: the batch is collected
    assert batch_cli(inp, out, url, "openai").returncode == 0 and len(read_jsonl(out)) == 4



def test_the_python_api_runs_batch_true_through_the_batch_api(tmp_path):
    import streamrun
    from runner.mock import MockConfig
    from runner.run import run_document

    inp = write_jsonl(tmp_path / "in.jsonl", batch_rows(5, faults=False))
    doc = streamrun.run(str(inp), output=str(tmp_path / "out.jsonl"), batch=True, poll_interval="10ms",
                        params={"max_tokens": 8}, mock=MockConfig(ttft=0, tokens_per_s=0, batch_delay=0))
    assert doc["exit_code"] == 0 and doc["batch"]["lines_submitted"] == 5
    assert all(r["status"] == "ok" and r["batch_id"] for r in read_jsonl(tmp_path / "out.jsonl"))
    with pytest.raises(UsageError, match="not a live run"):  # never a live run that looks like a batch one
        asyncio.run(run_document(RunConfig(inputs=(str(inp),), output=OutputConfig(str(tmp_path / "x.jsonl")),
                                           batch=BatchConfig(enabled=True))))


# ---- the network options hold for the Batch API too (docs/networks.md)


@pytest.mark.parametrize("api", APIS)
def test_proxy_carries_every_batch_request_to_a_host_only_the_proxy_knows(tmp_path, batch_mock, threaded, api):
    url = batch_mock()
    name = "streamrun-batch.test"  # resolves nowhere but in the test's proxy: a direct request cannot reach it
    proxy, log = threaded.start(forward_proxy({name: "127.0.0.1"}))
    inp = write_jsonl(tmp_path / "in.jsonl", batch_rows(6, faults=False))
    out = tmp_path / "out.jsonl"
    res = batch_cli(inp, out, url.replace("127.0.0.1", name), api, "--proxy", proxy)
    assert res.returncode == 0, res.stderr
    assert sorted(r["custom_id"] for r in read_jsonl(out)) == [f"p{i:02d}" for i in range(6)]
    assert log.lines and all(name in line for line in log.lines)
    batches = "/v1/batches" if api == "openai" else "/v1/messages/batches"
    assert any(line.startswith("POST ") and batches in line for line in log.lines), log.lines
    assert_submitted_once(url, 6)


@pytest.mark.parametrize("api", APIS)
def test_a_private_ca_given_with_ca_cert_is_trusted_by_the_batch_api_client(tmp_path, tls_mock, pki, api):
    url = tls_mock()  # the mock over TLS, its certificate signed by the test's own CA: unknown to the system
    inp = write_jsonl(tmp_path / "in.jsonl", batch_rows(4, faults=False))
    out = tmp_path / "out.jsonl"
    res = batch_cli(inp, out, url, api)
    assert res.returncode == 2 and "not trusted" in res.stderr and "pass --ca-cert" in res.stderr, res.stderr
    assert res.stderr.count("not trusted") == 1  # said once, not tried again: every attempt would fail alike
    assert not out.exists() or read_jsonl(out) == []
    res = batch_cli(inp, out, url, api, "--ca-cert", pki.cert("ca"))
    assert res.returncode == 0, res.stderr
    assert sorted(r["custom_id"] for r in read_jsonl(out)) == [f"p{i:02d}" for i in range(4)]
