"""runner/batchapi and runner/mock's Batch APIs: `streamrun batch` against the strict mock, for both providers.

What is checked, against the mock in its own process (so that killing the
run leaves it up) with an API key it requires: one record per input line,
the text a live run gets for the same prompt, typed errors for the lines
that fail; every line submitted exactly once (the mock counts submissions
per custom_id) across `kill -9` at every step boundary, SIGTERM, `--no-wait`
and `--cancel`; the limits that split batches; the key in no file and no
stream.  The mock's responses are parsed with the official `openai` and
`anthropic` SDKs.  No test waits for a time: batches move on by polls
(`--batch-polls`) or at once (`--batch-delay 0`), and waits poll for a state
under the hang guard.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from runner.batchapi.plan import Planner, anthropic_id, wire_request
from runner.batchapi.settings import ANTHROPIC_LIMITS, OPENAI_LIMITS, BatchSettings, ProviderLimits, \
    refuse_batch_options
from runner.config.run_config import RunConfig
from runner.errors import UsageError
from runner.inputs.items import parse_item
from runner.stream import protocol_anthropic
from runner.stream.paths import InvalidRequestLine
from tests.conftest import HANG_GUARD_S, STREAMRUN, by_id, mock_stats, read_jsonl, read_stderr_until, streamrun, \
    write_jsonl

SECRET = "sk-batch-5d1e9a-never-written"
ENV = {"OPENAI_API_KEY": SECRET, "ANTHROPIC_API_KEY": SECRET, "MOCK_KEY": SECRET, "OPENAI_BASE_URL": "",
       "OPENAI_MODEL": ""}
FAILING = (3, 13, 23, 33)  # the lines the mock answers 400 (its `mock` field)
APIS = ("openai", "anthropic")


# ---- helpers


@pytest.fixture
def batch_mock(mock_process):
    """A strict mock in its own process that requires the key; batches end at once unless told otherwise."""
    def start(*args) -> str:
        return mock_process("--ttft", "0", "--tokens-per-s", "0", "--api-key-env", "MOCK_KEY", *args, env=ENV)
    return start


def rows(n: int = 40, *, ids: bool = True, faults: bool = True, key: str = "k") -> list[dict]:
    """n chat lines; the FAILING ones carry the mock's 400 fault (their own key, so each fault is used once)."""
    out = []
    for i in range(n):
        row: dict = {"messages": [{"role": "system", "content": "Answer in one line."},
                                  {"role": "user", "content": f"question {i}"}]}
        if ids:
            row = {"custom_id": f"p{i:02d}", **row}
        if faults and i in FAILING:
            row["mock"] = {"key": f"{key}/{i}", "faults": ["400"]}
        out.append(row)
    return out


def batch(inp: Path, out: Path, url: str, api: str, *extra, **kwargs) -> subprocess.CompletedProcess:
    return streamrun("batch", inp, "-o", out, "--base-url", url, "--api", api, "--model", "mock-model",
                     "--max-tokens", "16", "--poll-interval", "10ms", *extra, env=ENV, **kwargs)


def start_batch(inp: Path, out: Path, url: str, api: str, *extra) -> subprocess.Popen:
    return subprocess.Popen([*STREAMRUN, "batch", str(inp), "-o", str(out), "--base-url", url, "--api", api,
                             "--model", "mock-model", "--max-tokens", "16", *map(str, extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **ENV})


def state_of(out: Path) -> dict:
    return json.loads(out.with_name(out.name.removesuffix(".jsonl") + ".batch.json").read_text())


def no_secret_anywhere(tmp_path: Path, *texts: str) -> None:
    """The key is in no file the runs left and in nothing they printed."""
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert SECRET.encode() not in p.read_bytes(), f"the key was written to {p.name}"
    for text in texts:
        assert SECRET not in text, "the key was printed"


def assert_submitted_once(url: str, n: int) -> dict:
    stats = mock_stats(url)
    assert len(stats["batch_lines"]) == n, stats["batch_lines"]
    assert set(stats["batch_lines"].values()) == {1}, {k: v for k, v in stats["batch_lines"].items() if v != 1}
    return stats


def live_texts(tmp_path: Path, url: str, api: str, n: int = 40) -> dict[str, str]:
    """What a live run gets for the same prompts (the mock's text is a function of the prompt)."""
    inp = write_jsonl(tmp_path / "live.jsonl", rows(n, faults=False))
    res = streamrun("run", inp, "-o", tmp_path / "live-out.jsonl", "--base-url", url, "--model", "mock-model",
                    "--max-tokens", "16", "--api", "anthropic" if api == "anthropic" else "chat", env=ENV)
    assert res.returncode == 0, res.stderr
    return {r["custom_id"]: r["text"] for r in read_jsonl(tmp_path / "live-out.jsonl")}


# ---- done when: 40 lines (some failing), one record per line, the right text; --max-lines-per-batch 15: 3 batches


@pytest.mark.parametrize("api", APIS)
def test_forty_lines_give_one_record_each_with_the_live_text_and_errors_for_the_failing(tmp_path, batch_mock, api):
    url = batch_mock()
    inp = write_jsonl(tmp_path / "in.jsonl", rows())
    out = tmp_path / "out.jsonl"
    res = batch(inp, out, url, api, "--max-lines-per-batch", "15")
    assert res.returncode == 1, res.stderr  # 4 failed lines, no failure budget: as `run`
    records = read_jsonl(out)
    assert sorted(r["custom_id"] for r in records) == [f"p{i:02d}" for i in range(40)]
    live = live_texts(tmp_path, url, api)
    for r in records:
        i = int(r["custom_id"][1:])
        assert r["batch_id"] and r["metrics"]["ttft_s"] is None and r["metrics"]["e2e_s"] is None
        if i in FAILING:
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
    state = state_of(out)
    assert [p["lines"] for p in state["parts"]] == [15, 15, 10]
    assert {r["batch_id"] for r in records} == {p["batch_id"] for p in state["parts"]}
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["summary"]["counts"]["ok"] == 36 and summary["summary"]["counts"]["error"] == 4
    assert summary["exit_code"] == 1 and summary["requests_sent"] == 40 and summary["batch"]["in_progress"] == 0
    assert "40 records: 36 ok, 4 error (batch_errored 4)" in res.stderr
    no_secret_anywhere(tmp_path, res.stdout, res.stderr)


def test_anthropic_custom_ids_that_do_not_conform_are_mapped_on_the_wire_and_back(tmp_path, batch_mock):
    """Lines without an id are `in.jsonl:N`, which Anthropic refuses: sent as sr-<hash>, recorded as they were."""
    url = batch_mock()
    inp = write_jsonl(tmp_path / "in.jsonl", rows(5, ids=False, faults=False) + [
        {"custom_id": "ok_id-1", "messages": [{"role": "user", "content": "x"}]}])
    res = batch(inp, tmp_path / "out.jsonl", url, "anthropic")
    assert res.returncode == 0, res.stderr
    records = by_id(read_jsonl(tmp_path / "out.jsonl"))
    assert sorted(records) == sorted([f"in.jsonl:{i}" for i in range(1, 6)] + ["ok_id-1"])
    assert all(r["status"] == "ok" for r in records.values())
    wire = mock_stats(url)["batch_lines"]
    assert sorted(wire) == sorted([anthropic_id(f"in.jsonl:{i}") for i in range(1, 6)] + ["ok_id-1"])
    assert all(w == "ok_id-1" or w.startswith("sr-") and len(w) == 35 for w in wire)


def test_duplicate_custom_ids_are_refused_before_any_upload(tmp_path, batch_mock):
    url = batch_mock()
    inp = write_jsonl(tmp_path / "in.jsonl", rows(3, faults=False) + rows(1, faults=False))
    res = batch(inp, tmp_path / "out.jsonl", url, "openai")
    assert res.returncode == 2 and "duplicate custom_id: 'p00' at" in res.stderr
    assert mock_stats(url)["files_uploaded"] == 0 and not (tmp_path / "out.jsonl").exists()
    assert not (tmp_path / "out.batch.json").exists()


# ---- never pay twice


@pytest.mark.parametrize("api, how", [("openai", "kill"), ("anthropic", "kill"), ("openai", "sigterm")])
def test_kill_9_or_sigterm_while_polling_and_a_rerun_submit_every_line_exactly_once(tmp_path, batch_mock, api, how):
    """A batch ends at its 6th poll; the first run polls once, then waits (1s, 2s, ...) and is killed meanwhile."""
    url = batch_mock("--batch-polls", "6", "--batch-delay", "0")
    inp = write_jsonl(tmp_path / "in.jsonl", rows())
    out = tmp_path / "out.jsonl"
    proc = start_batch(inp, out, url, api, "--max-lines-per-batch", "15", "--poll-interval", "1h")
    try:
        read_stderr_until(proc, "3 batches still in progress")
        assert all(p["step"] == "submitted" for p in state_of(out)["parts"])
        if how == "kill":
            proc.kill()
            assert proc.wait(HANG_GUARD_S) == -signal.SIGKILL
        else:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(HANG_GUARD_S) == 143
            summary = json.loads((tmp_path / "out.summary.json").read_text())
            assert summary["interrupted"] and summary["batch"]["in_progress"] == 3
    finally:
        proc.kill()
    assert not out.exists() or not read_jsonl(out)
    res = batch(inp, out, url, api, "--max-lines-per-batch", "15")
    assert res.returncode == 1, res.stderr
    assert sorted(r["custom_id"] for r in read_jsonl(out)) == [f"p{i:02d}" for i in range(40)]
    assert_submitted_once(url, 40)["batches_created"] == 3
    no_secret_anywhere(tmp_path, res.stderr)


# Run the CLI with one provider call wrapped: the process kills itself (SIGKILL) right at a step boundary.
CRASH = """
import os, signal, sys
import runner.batchapi.{module} as target
cls = getattr(target, "{cls}")
real = getattr(cls, "{method}")
async def crashing(self, *args, **kwargs):
    if "{when}" == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = await real(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
setattr(cls, "{method}", crashing)
from runner.cli.main import main
main(sys.argv[1:], prog_name="streamrun")
"""
CRASH_ON_COLLECT = """
import os, signal, sys
import runner.batchapi.driver as driver
real = driver.save_state
def crashing(path, state):
    if any(p.step == "collected" for p in state.parts):
        os.kill(os.getpid(), signal.SIGKILL)  # its records are written and fsynced, the state not yet
    real(path, state)
driver.save_state = crashing
from runner.cli.main import main
main(sys.argv[1:], prog_name="streamrun")
"""


@pytest.mark.parametrize("api, boundary", [
    ("openai", "after the upload, before the create"),
    ("openai", "before the create is sent"),
    ("openai", "after the create, before the state write"),
    ("anthropic", "after the create, before the state write"),
    ("anthropic", "after the records, before the state says collected"),
])
def test_kill_9_at_a_step_boundary_and_a_rerun_submit_every_line_exactly_once(tmp_path, batch_mock, api, boundary):
    url = batch_mock("--batch-delay", "0")
    inp = write_jsonl(tmp_path / "in.jsonl", rows())
    out = tmp_path / "out.jsonl"
    module, cls = ("openai", "OpenAIBatches") if api == "openai" else ("anthropic", "AnthropicBatches")
    method, when = {"after the upload, before the create": ("upload", "after"),
                    "before the create is sent": ("create", "before")}.get(boundary, ("create", "after"))
    script = CRASH_ON_COLLECT if "records" in boundary else CRASH.format(module=module, cls=cls, method=method,
                                                                         when=when)
    args = ["batch", str(inp), "-o", str(out), "--base-url", url, "--api", api, "--model", "mock-model",
            "--max-tokens", "16", "--poll-interval", "10ms", "--max-lines-per-batch", "15"]
    crashed = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                             env={**os.environ, **ENV}, timeout=120)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    written = len(read_jsonl(out)) if out.exists() else 0
    assert written == (15 if "records" in boundary else 0)
    res = batch(inp, out, url, api, "--max-lines-per-batch", "15")
    assert res.returncode == 1, res.stderr
    records = read_jsonl(out)
    assert sorted(r["custom_id"] for r in records) == [f"p{i:02d}" for i in range(40)]  # none twice
    stats = assert_submitted_once(url, 40)
    assert stats["batches_created"] == 3
    if api == "openai":
        assert stats["files_uploaded"] == 3  # the file uploaded before the crash was found by its name
    if boundary.startswith("after the create"):
        assert "found " in res.stderr and "created before the last run stopped" in res.stderr


def test_no_wait_submits_and_exits_0_and_a_rerun_collects_what_has_finished(tmp_path, batch_mock):
    url = batch_mock("--batch-polls", "2", "--batch-delay", "0")
    inp = write_jsonl(tmp_path / "in.jsonl", rows(10))
    out = tmp_path / "out.jsonl"
    first = batch(inp, out, url, "openai", "--no-wait")
    assert first.returncode == 0, first.stderr
    assert "1 batches (10 lines) still in progress: run the same command again to collect them" in first.stderr
    assert not read_jsonl(out)
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["exit_code"] == 0 and summary["batch"]["in_progress"] == 1
    second = batch(inp, out, url, "openai", "--no-wait")  # its one poll is the batch's second: it ends
    assert second.returncode == 1, second.stderr  # one failed line, no budget
    assert len(read_jsonl(out)) == 10
    third = batch(inp, out, url, "openai", "--max-failed", "1")  # nothing left to do; the budget as `run`'s
    assert third.returncode == 0, third.stderr
    assert len(read_jsonl(out)) == 10
    assert_submitted_once(url, 10)


@pytest.mark.parametrize("api", APIS)
def test_cancel_cancels_the_batches_and_writes_batch_cancelled_for_lines_never_answered(tmp_path, batch_mock, api):
    """20 lines over 10 polls: after the first poll, 2 are answered; --cancel ends the batch there."""
    url = batch_mock("--batch-polls", "10", "--batch-delay", "0")
    inp = write_jsonl(tmp_path / "in.jsonl", rows(20, faults=False))
    out = tmp_path / "out.jsonl"
    assert batch(inp, out, url, api, "--no-wait").returncode == 0
    res = batch(inp, out, url, api, "--cancel")
    assert res.returncode == 1, res.stderr
    records = by_id(read_jsonl(out))
    assert sorted(records) == [f"p{i:02d}" for i in range(20)]
    ok = [cid for cid, r in records.items() if r["status"] == "ok"]
    cancelled = [cid for cid, r in records.items() if r["status"] == "error"]
    assert ok == ["p00", "p01"] and len(cancelled) == 18
    assert {records[c]["error"]["type"] for c in cancelled} == {"batch_cancelled"}
    assert {records[c]["attempts"] for c in cancelled} == {0}
    assert state_of(out)["parts"][0]["end"] == "cancelled"
    assert_submitted_once(url, 20)


@pytest.mark.parametrize("api", APIS)
def test_expired_lines_are_submitted_again_only_with_resubmit_failed(tmp_path, batch_mock, api):
    url = batch_mock("--batch-expire-at", "0.5", "--batch-delay", "0")
    inp = write_jsonl(tmp_path / "in.jsonl", rows(8, faults=False))
    out = tmp_path / "out.jsonl"
    assert batch(inp, out, url, api).returncode == 1
    first = by_id(read_jsonl(out))
    expired = sorted(c for c, r in first.items() if r["status"] == "error")
    assert len(expired) == 4 and {first[c]["error"]["type"] for c in expired} == {"batch_expired"}
    again = batch(inp, out, url, api)  # nothing to submit: the expired lines stay as they are
    assert again.returncode == 1 and set(mock_stats(url)["batch_lines"].values()) == {1}
    res = batch(inp, out, url, api, "--resubmit-failed")
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
    res = batch(inp, tmp_path / "out.jsonl", url, "openai")
    assert res.returncode == 1, res.stderr
    records = by_id(read_jsonl(tmp_path / "out.jsonl"))
    parts = state_of(tmp_path / "out.jsonl")["parts"]
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


def _item(obj: dict, api: str = "anthropic"):
    return parse_item("in.jsonl", 7, orjson.dumps(obj), api)


def test_anthropic_lines_are_translated_as_the_live_path_translates_them():
    settings = BatchSettings.from_config(RunConfig(inputs=(), output="o.jsonl", api="anthropic", batch=True))
    item = _item({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
                  "stop": "END", "temperature": 0.2})
    wire = wire_request(item, settings, {"max_tokens": 64}, "claude-x")
    live = protocol_anthropic.build_body(item.body, defaults={"max_tokens": 64}, model="claude-x", include_usage=True)
    assert wire.request == {k: v for k, v in live.items() if k != "stream"}
    assert wire.request["system"] == "Be brief." and wire.request["stop_sequences"] == ["END"]
    assert orjson.loads(wire.data) == {"custom_id": anthropic_id("in.jsonl:7"), "params": wire.request}
    with pytest.raises(InvalidRequestLine, match="requires 'max_tokens'"):  # the live rule: no default, no line's
        wire_request(item, settings, {}, "claude-x")
    batch_line = _item({"custom_id": "c", "method": "POST", "url": "/v1/chat/completions",
                        "body": {"model": "m", "messages": [{"role": "user", "content": "x"}]}})
    with pytest.raises(InvalidRequestLine, match="Anthropic's Message Batches"):
        wire_request(batch_line, settings, {"max_tokens": 5}, "m")
    assert anthropic_id("a-B_9") == "a-B_9" and anthropic_id("x" * 65).startswith("sr-")


def test_parts_stay_within_each_providers_limits_and_max_lines():
    def planned(settings: BatchSettings, items: list[tuple[str, dict]]) -> list[tuple[int, str]]:
        planner = Planner(settings, 0)
        for n, (cid, body) in enumerate(items):
            item = parse_item("in.jsonl", n + 1, orjson.dumps({"custom_id": cid, **body}),
                              "anthropic" if settings.provider == "anthropic" else "chat")
            planner.add(n, cid, wire_request(item, settings, {"max_tokens": 5}, "m"))
        return [(p.lines, p.endpoint) for p in planner.finish()]

    chat = {"messages": [{"role": "user", "content": "x"}]}
    openai = BatchSettings.from_config(RunConfig(inputs=(), output="o.jsonl", batch=True, batch_max_lines=15))
    assert planned(openai, [(f"c{i}", chat) for i in range(40)]) == [(15, "/v1/chat/completions")] * 2 + [
        (10, "/v1/chat/completions")]
    unbounded = BatchSettings.from_config(RunConfig(inputs=(), output="o.jsonl", batch=True, batch_max_lines=10**9))
    assert openai.max_lines == 15 and unbounded.max_lines == OPENAI_LIMITS.max_requests
    small = dataclasses.replace(openai, limits=ProviderLimits("small", 1000, 430, 5, 0.5), max_lines=1000)
    mixed = [("a", chat), ("e1", {"method": "POST", "url": "/v1/embeddings", "body": {"input": ["1", "2", "3"]}}),
             ("b", chat), ("e2", {"method": "POST", "url": "/v1/embeddings", "body": {"input": ["4", "5", "6"]}}),
             ("c", chat), ("d", chat), ("e", chat), ("f", chat)]
    # embeddings: 5 inputs a batch at most (3 + 3 > 5); chat: 430 bytes a file, three of its 142-byte lines
    assert planned(small, mixed) == [(3, "/v1/chat/completions"), (1, "/v1/embeddings"), (1, "/v1/embeddings"),
                                     (3, "/v1/chat/completions")]
    anthropic = BatchSettings.from_config(RunConfig(inputs=(), output="o.jsonl", api="anthropic", batch=True))
    assert anthropic.limits == ANTHROPIC_LIMITS and anthropic.max_lines == 100_000


def test_live_options_are_refused_on_a_batch_run_and_batch_keys_on_a_live_one():
    for changes, word in ((dict(concurrency=(8,)), "--concurrency"), (dict(workers=2), "--workers"),
                          (dict(cache="c.db"), "--cache"), (dict(duration_s=5.0), "--duration")):
        with pytest.raises(UsageError, match=f"^{word} is an option of live runs"):
            BatchSettings.from_config(RunConfig(inputs=(), output="o.jsonl", batch=True, **changes))
    assert BatchSettings.from_config(RunConfig(inputs=(), output="o.jsonl", batch=True, resume=True))  # always resumes
    with pytest.raises(UsageError, match="max_lines_per_batch: keys of a batch run; add batch = true"):
        refuse_batch_options(RunConfig(inputs=(), output="o.jsonl", batch_max_lines=5))
    with pytest.raises(UsageError, match="give a file to -o"):
        BatchSettings.from_config(RunConfig(inputs=(), output="-", batch=True))


# ---- the job-file form, the other readers, the summary


def test_a_job_with_batch_true_runs_the_batch_path_under_its_failure_budget(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", rows(10))
    job = tmp_path / "nightly.toml"
    job.write_text(f'inputs = ["in.jsonl"]\noutput = "out/{{job}}.jsonl"\nbatch = true\nmax_failed = 0.2\n'
                   f'max_lines_per_batch = 4\npoll_interval = "10ms"\nmodel = "mock-model"\n'
                   f'output_format = "openai-batch"\n[params]\nmax_tokens = 8\n[mock]\nttft = 0\n'
                   f'tokens_per_s = 0\nbatch_delay = 0\n')
    res = streamrun("--log-format", "json", "job", job, env=ENV)
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
    refused = streamrun("job", bad, env=ENV)
    assert refused.returncode == 2 and "batch = true" in refused.stderr


def test_batch_records_are_read_by_report_export_merge_and_convert(tmp_path, batch_mock):
    url = batch_mock()
    inp = write_jsonl(tmp_path / "in.jsonl", rows(6))
    out = tmp_path / "out.jsonl"
    assert batch(inp, out, url, "openai").returncode == 1
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
    inp = write_jsonl(tmp_path / "in.jsonl", rows(3))
    res = streamrun("batch", inp, "-o", tmp_path / "out.jsonl", "--base-url", url, "--model", "mock-model",
                    env={**ENV, "OPENAI_API_KEY": "sk-wrong-key-123456"})
    assert res.returncode == 2 and "HTTP 401" in res.stderr and "check the key" in res.stderr
    assert "sk-wrong-key-123456" not in res.stderr
    assert mock_stats(url)["batches_created"] == 0


# ---- the mock, read with the official SDKs


async def test_the_mock_batch_api_parses_with_the_openai_sdk(mock_server):
    url = await mock_server(batch_delay=0, batch_polls=2)  # a batch ends at its second retrieval
    client = AsyncOpenAI(base_url=url, api_key="sk-test", max_retries=0)
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "mock-model", "max_tokens": 4, "messages": [{"role": "user", "content": f"hi {i}"}],
                       **({"mock": {"key": "sdk", "faults": ["400"]}} if i == 1 else {})}} for i in range(3)]
    data = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    f = await client.files.create(file=("in.jsonl", data), purpose="batch")
    assert f.purpose == "batch" and f.bytes == len(data) and f.filename == "in.jsonl"
    b = await client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                                    metadata={"run": "x"})
    assert b.status == "validating" and b.metadata == {"run": "x"}
    for _ in range(1000):
        b = await client.batches.retrieve(b.id)
        if b.status == "completed":
            break
    assert b.request_counts.total == 3 and b.request_counts.completed == 2 and b.request_counts.failed == 1
    output = [json.loads(line) for line in (await client.files.content(b.output_file_id)).text.splitlines()]
    errors = [json.loads(line) for line in (await client.files.content(b.error_file_id)).text.splitlines()]
    assert [o["custom_id"] for o in output] == ["r0", "r2"] and output[0]["response"]["status_code"] == 200
    assert output[0]["response"]["body"]["object"] == "chat.completion"
    assert errors[0]["custom_id"] == "r1" and errors[0]["response"]["status_code"] == 400
    assert [x.id for x in (await client.batches.list()).data] == [b.id]
    assert [x.id for x in (await client.files.list(purpose="batch")).data] == [f.id]
    c = await client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    c = await client.batches.cancel(c.id)
    assert c.status == "cancelling"
    for _ in range(1000):
        c = await client.batches.retrieve(c.id)
        if c.status == "cancelled":
            break
    assert c.status == "cancelled" and c.cancelled_at


async def test_the_mock_message_batches_parse_with_the_anthropic_sdk(mock_server):
    url = await mock_server(batch_delay=0, batch_polls=2)  # a batch ends at its second retrieval
    client = AsyncAnthropic(base_url=url.removesuffix("/v1"), api_key="sk-ant", max_retries=0)
    requests = [{"custom_id": f"q{i}", "params": {"model": "mock-model", "max_tokens": 4,
                                                  "messages": [{"role": "user", "content": f"hi {i}"}],
                                                  **({"mock": {"key": "a", "faults": ["400"]}} if i == 1 else {})}}
                for i in range(3)]
    b = await client.messages.batches.create(requests=requests)
    assert b.processing_status == "in_progress" and b.request_counts.processing == 3 and b.results_url is None
    for _ in range(1000):
        b = await client.messages.batches.retrieve(b.id)
        if b.processing_status == "ended":
            break
    assert b.request_counts.succeeded == 2 and b.request_counts.errored == 1 and b.results_url
    results = {r.custom_id: r.result async for r in await client.messages.batches.results(b.id)}
    assert results["q0"].type == "succeeded" and results["q0"].message.stop_reason == "max_tokens"
    assert results["q1"].type == "errored" and results["q1"].error.error.type == "invalid_request_error"
    assert [x.id for x in (await client.messages.batches.list()).data] == [b.id]
    c = await client.messages.batches.create(requests=requests[:1])
    c = await client.messages.batches.cancel(c.id)
    assert c.processing_status in ("canceling", "ended") and c.cancel_initiated_at
    for _ in range(1000):
        c = await client.messages.batches.retrieve(c.id)
        if c.processing_status == "ended":
            break
    assert c.request_counts.canceled == 1
    assert [r.result.type async for r in await client.messages.batches.results(c.id)] == ["canceled"]


async def test_the_mock_refuses_what_the_batch_apis_refuse(mock_server):
    import aiohttp

    url = await mock_server(batch_delay=0)
    openai = AsyncOpenAI(base_url=url, api_key="x", max_retries=0)
    from openai import BadRequestError, NotFoundError

    with pytest.raises(BadRequestError, match="Must be .jsonl"):
        await openai.files.create(file=("in.txt", b"{}\n"), purpose="batch")
    good = await openai.files.create(file=("in.jsonl", b"{}\n"), purpose="batch")
    with pytest.raises(BadRequestError, match="Unrecognized request argument supplied: priority"):
        await openai.batches.create(input_file_id=good.id, endpoint="/v1/chat/completions", completion_window="24h",
                                    extra_body={"priority": 1})
    with pytest.raises(BadRequestError, match="completion_window"):
        await openai.batches.create(input_file_id=good.id, endpoint="/v1/chat/completions", completion_window="1h")
    with pytest.raises(NotFoundError):
        await openai.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")

    async def failed_with(lines: list) -> list:
        data = b"".join((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines)
        f = await openai.files.create(file=("x.jsonl", data), purpose="batch")
        b = await openai.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        b = await openai.batches.retrieve(b.id)
        assert b.status == "failed" and b.errors is not None
        return [(e.code, e.line) for e in b.errors.data]

    body = {"model": "mock-model", "messages": [{"role": "user", "content": "x"}]}
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}
    assert await failed_with([line, {**line, "url": "/v1/completions", "custom_id": "b"}]) == [("mismatched_url", 2)]
    assert await failed_with([line, line]) == [("duplicate_custom_id", 2)]
    assert await failed_with([line, {**line, "custom_id": "b", "body": {**body, "model": "m2"}}]) == [
        ("mixed_models", 0)]
    assert await failed_with([b"not json", {**line, "extra": 1}]) == [("invalid_json_line", 1), ("invalid_request", 2)]

    headers = {"x-api-key": "x", "anthropic-version": "2023-06-01"}
    params = {"model": "mock-model", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as session:
        async def create(body, hdrs=headers):
            async with session.post(url + "/messages/batches", json=body, headers=hdrs) as resp:
                return resp.status, await resp.json()

        assert (await create({"requests": [{"custom_id": "in.jsonl:3", "params": params}]}))[0] == 400
        assert (await create({"requests": [{"custom_id": "a", "params": params}] * 2}))[0] == 400
        assert (await create({"requests": []}))[0] == 400
        status, error = await create({"requests": [{"custom_id": "a", "params": params}]}, {"x-api-key": "x"})
        assert status == 400 and error["error"]["type"] == "invalid_request_error"
        status, created = await create({"requests": [{"custom_id": "a", "params": {**params, "stream": True}}]})
        assert status == 200
        async with session.get(f"{url}/messages/batches/{created['id']}/results", headers=headers) as resp:
            assert resp.status in (200, 404)  # 404 until it has ended


async def test_the_mock_moves_a_batch_on_by_polls_and_expires_it(mock_server):
    url = await mock_server(batch_delay=0, batch_polls=3, batch_expire_at=0.5)
    openai = AsyncOpenAI(base_url=url, api_key="x", max_retries=0)
    body = {"model": "mock-model", "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]}
    data = b"".join(orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                  "body": body}) + b"\n" for i in range(4))
    f = await openai.files.create(file=("x.jsonl", data), purpose="batch")
    b = await openai.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    seen = [(await openai.batches.retrieve(b.id)).status for _ in range(2)]
    assert seen == ["in_progress", "in_progress"]
    deadline = time.monotonic() + HANG_GUARD_S
    while (b := await openai.batches.retrieve(b.id)).status == "in_progress":
        assert time.monotonic() < deadline, "hang guard"
    assert b.status == "expired" and b.request_counts.completed == 2 and b.request_counts.failed == 2
    errors = [json.loads(x) for x in (await openai.files.content(b.error_file_id)).text.splitlines()]
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [("r2", "batch_expired"), ("r3", "batch_expired")]


def test_an_input_changed_under_a_running_batch_is_refused_not_misread(tmp_path, batch_mock):
    url = batch_mock("--batch-polls", "3", "--batch-delay", "0")
    inp = write_jsonl(tmp_path / "in.jsonl", rows(4, faults=False))
    out = tmp_path / "out.jsonl"
    assert batch(inp, out, url, "openai", "--no-wait").returncode == 0
    write_jsonl(inp, rows(4, faults=False)[::-1])  # the same lines, in another order: other lines at those places
    res = batch(inp, out, url, "openai")
    assert res.returncode == 2 and "have changed since it was planned" in res.stderr
    assert not read_jsonl(out) and state_of(out)["parts"][0]["step"] == "submitted"
    write_jsonl(inp, rows(4, faults=False))  # restored: the batch is collected
    assert batch(inp, out, url, "openai").returncode == 0 and len(read_jsonl(out)) == 4


def test_results_become_typed_records_whatever_the_batch_came_to():
    from runner.batchapi import collect
    from runner.batchapi.anthropic import AnthropicBatches
    from runner.batchapi.openai import OpenAIBatches

    settings = BatchSettings.from_config(RunConfig(inputs=(), output="o.jsonl", api="anthropic", batch=True))
    item = _item({"custom_id": "a:1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9})
    member = collect.Member(item, wire_request(item, settings, {}, "claude-x"))
    ctx = collect.Context("claude-x", (SECRET,), "https://api.anthropic.com/v1")
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "stop_reason": "end_turn",
               "content": [{"type": "text", "text": "Hello"}], "usage": {"input_tokens": 5, "output_tokens": 2}}
    ok = collect.answered(member, AnthropicBatches.outcome({"custom_id": member.wire.wire_id, "result": {
        "type": "succeeded", "message": message}}), "msgbatch_1", ctx)
    assert (ok.status, ok.text, ok.finish_reason, ok.batch_id, ok.request_id) == ("ok", "Hello", "stop", "msgbatch_1",
                                                                                   "msg_1")
    assert ok.usage["prompt_tokens"] == 5 and ok.usage["completion_tokens"] == 2 and ok.metrics.output_tokens == 2
    assert ok.custom_id == "a:1" and ok.source == {"file": "in.jsonl", "line": 7} and ok.request_hash
    errored = collect.answered(member, AnthropicBatches.outcome({"custom_id": "x", "result": {
        "type": "errored", "error": {"type": "error", "error": {"type": "overloaded_error",
                                                                 "message": f"busy {SECRET}"}}}}), "msgbatch_1", ctx)
    assert (errored.error.type, errored.error.code, errored.error.message) == ("batch_errored", "overloaded_error",
                                                                              "busy ***")
    expired = collect.answered(member, AnthropicBatches.outcome({"custom_id": "x", "result": {"type": "expired"}}),
                               "b", ctx)
    assert expired.error.type == "batch_expired" and expired.attempts == 0
    assert collect.missing(member, "failed", "b", ctx, "line 3: invalid_json_line").error.message.endswith(
        "the batch failed: line 3: invalid_json_line")
    assert collect.missing(member, "failed", "b", ctx, None).error.type == "batch_failed"
    assert collect.missing(member, "completed", "b", ctx, None).error.type == "batch_errored"
    line = {"custom_id": "c", "response": None, "error": {"code": "batch_cancelled", "message": "cancelled"}}
    assert OpenAIBatches.outcome(line).kind == "cancelled"
    line = {"custom_id": "c", "response": {"status_code": 429, "request_id": "r", "body": {"error": {
        "message": "slow down", "type": "rate_limit", "code": "rate_limit_exceeded"}}}, "error": None}
    assert (OpenAIBatches.outcome(line).status_code, OpenAIBatches.outcome(line).code) == (429, "rate_limit_exceeded")
    with pytest.raises(ValueError):
        OpenAIBatches.outcome({"custom_id": "c"})


def test_the_python_api_runs_batch_true_through_the_batch_api(tmp_path):
    import streamrun
    from runner.mock import MockConfig
    from runner.run import run_document

    inp = write_jsonl(tmp_path / "in.jsonl", rows(5, faults=False))
    doc = streamrun.run(str(inp), output=str(tmp_path / "out.jsonl"), batch=True, poll_interval="10ms",
                        params={"max_tokens": 8}, mock=MockConfig(ttft=0, tokens_per_s=0, batch_delay=0))
    assert doc["exit_code"] == 0 and doc["batch"]["lines_submitted"] == 5
    assert all(r["status"] == "ok" and r["batch_id"] for r in read_jsonl(tmp_path / "out.jsonl"))
    with pytest.raises(UsageError, match="not a live run"):  # never a live run that looks like a batch one
        asyncio.run(run_document(RunConfig(inputs=(str(inp),), output=str(tmp_path / "x.jsonl"), batch=True)))
