"""What dataset builders add around a request (runner/engine/answers.py): the response cache, validated JSON replies."""

from __future__ import annotations

import orjson
import pytest
from aiohttp import web

from runner.config.run_config import RunConfig, Stage
from runner.errors import UsageError
from runner.stream.config import RetryPolicy
from tests.helpers import amock_stats, execute, mock_stats, read_jsonl, replace_fields, run_rows, streamrun, write_jsonl

SCHEMA = {"type": "json_schema", "json_schema": {"name": "person", "schema": {
    "type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}}


def test_a_second_run_with_the_cache_sends_nothing(tmp_path, mock_process):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    inp = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": f"p{i}", "prompt": f"q{i}", "max_tokens": 4}
                                              for i in range(5)])
    cache = tmp_path / "answers.db"
    first = streamrun("run", inp, "-o", tmp_path / "a.jsonl", "--base-url", url, "--model", "mock-model",
                      "--cache", cache)
    assert first.returncode == 0, first.stderr
    sent = mock_stats(url)["requests"]
    second = streamrun("run", inp, "-o", tmp_path / "b.jsonl", "--base-url", url, "--model", "mock-model",
                       "--cache", cache)
    assert second.returncode == 0, second.stderr
    assert mock_stats(url)["requests"] == sent  # nothing was sent
    old = {r["custom_id"]: r for r in read_jsonl(tmp_path / "a.jsonl")}
    for r in read_jsonl(tmp_path / "b.jsonl"):
        assert r["cached"] is True and r["attempts"] == 0 and r["text"] == old[r["custom_id"]]["text"]
        assert r["cached_metrics"]["ttft_s"] == old[r["custom_id"]]["metrics"]["ttft_s"]
        assert r["metrics"]["ttft_s"] is None
    summary = orjson.loads((tmp_path / "b.summary.json").read_bytes())
    assert summary["cache"]["hits"] == 5 and summary["requests_sent"] == 0
    assert summary["summary"]["counts"]["cached"] == 5 and summary["summary"]["metrics"]["ttft_s"]["count"] == 0
    refresh = streamrun("run", inp, "-o", tmp_path / "c.jsonl", "--base-url", url, "--model", "mock-model",
                        "--cache", cache, "--cache-mode", "refresh")
    assert refresh.returncode == 0 and mock_stats(url)["requests"] == sent + 5


def sse_text(text: str) -> bytes:
    chunks = [{"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]},
              {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}]
    return b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks) + b"data: [DONE]\n\n"


async def json_server(aiohttp_server, replies: list[str], seen: list) -> str:
    """A chat server answering the replies in turn (the last one from then on); keeps every body in `seen`."""

    async def handler(request):
        seen.append(await request.json())
        return web.Response(body=sse_text(replies[min(len(seen), len(replies)) - 1]),
                            content_type="text/event-stream")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    server = await aiohttp_server(app)
    return str(server.make_url("/v1"))


async def run_once(tmp_path, url: str, attempts: int, line: dict | None = None, **overrides):
    inp = write_jsonl(tmp_path / "in.jsonl", [line or {"custom_id": "p", "messages": [{"role": "user", "content": "x"}],
                                                       "response_format": SCHEMA}])
    cfg = replace_fields(RunConfig(inputs=(str(inp),)), path=str(tmp_path / "out.jsonl"), model="m",
                         stages=(Stage(0, 1),), base_urls=(url,), overwrite=True,
                         retry=RetryPolicy(max_attempts=attempts, backoff_initial=0.001, backoff_max=0.01), **overrides)
    code = await execute(cfg, None, False)
    return code, read_jsonl(tmp_path / "out.jsonl")


async def run_against(tmp_path, aiohttp_server, replies: list[str], attempts: int):
    seen = []
    url = await json_server(aiohttp_server, replies, seen)
    code, records = await run_once(tmp_path, url, attempts)
    return code, records, seen


async def test_a_reply_that_fails_its_schema_once_then_validates_is_ok_after_2_attempts(tmp_path, aiohttp_server):
    code, (r,), seen = await run_against(tmp_path, aiohttp_server, ['{"nom": 1}', '{"name": "Ada"}'], 3)
    assert code == 0 and len(seen) == 2
    assert r["status"] == "ok" and r["attempts"] == 2 and r["parsed"] == {"name": "Ada"}


async def test_a_reply_that_never_validates_is_invalid_output_with_its_text(tmp_path, aiohttp_server):
    code, (r,), seen = await run_against(tmp_path, aiohttp_server, ["not json at all"], 2)
    assert code == 1 and len(seen) == 2
    assert r["status"] == "error" and r["error"]["type"] == "invalid_output"
    assert r["text"] == "not json at all" and r["parsed"] is None and r["attempts"] == 2


# -- a cached answer passes the checks a live one does (one judge: Sender.accept)


async def test_a_cached_answer_cut_by_length_is_sent_again_under_retry_finish_reason(tmp_path, mock_server):
    url = await mock_server()
    rows = [{"custom_id": "a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}]
    cache = str(tmp_path / "answers.db")
    code, (first,) = await run_rows(tmp_path, url, rows, cache=cache)  # no --retry-finish-reason: kept as ok
    assert code == 0 and first["finish_reason"] == "length" and not first["cached"]
    assert (await amock_stats(url))["requests"] == 1
    code, (again,) = await run_rows(tmp_path, url, rows, cache=cache)
    assert again["cached"] and (await amock_stats(url))["requests"] == 1  # the cache serves it to a like run
    code, (r,) = await run_rows(tmp_path, url, rows, cache=cache, retry_finish_reasons=("length",))
    assert (await amock_stats(url))["requests"] == 1 + 4  # sent again, FAST_RETRY's 4 attempts
    assert code == 1 and not r["cached"] and r["error"]["type"] == "unwanted_finish_reason" and r["attempts"] == 4
    summary = orjson.loads((tmp_path / "out.summary.json").read_bytes())
    assert summary["cache"]["hits"] == 0 and summary["cache"]["misses"] == 1


async def test_a_cached_answer_its_schema_refuses_is_sent_again(tmp_path, aiohttp_server, monkeypatch):
    import runner.engine.answers

    seen: list = []
    url = await json_server(aiohttp_server, ['{"nom": 1}', '{"name": "Ada"}'], seen)
    cache = str(tmp_path / "answers.db")
    with monkeypatch.context() as m:  # a looser check (an older streamrun's, say) let a bad answer into the cache
        m.setattr(runner.engine.answers, "check_output", lambda fmt, text: (None, None))
        code, (r,) = await run_once(tmp_path, url, 3, cache=cache)
    assert code == 0 and r["text"] == '{"nom": 1}' and len(seen) == 1
    code, (r,) = await run_once(tmp_path, url, 3, cache=cache)
    assert len(seen) == 2, "the cached answer that fails the schema was served"
    assert code == 0 and not r["cached"] and r["parsed"] == {"name": "Ada"}
    code, (r,) = await run_once(tmp_path, url, 3, cache=cache)  # the good answer replaced the bad one
    assert len(seen) == 2 and r["cached"] and r["parsed"] == {"name": "Ada"} and r["status"] == "ok"


# -- a response_format that no reply could pass is the line's fault


BAD_SCHEMA = {"type": "json_schema", "json_schema": {"name": "person", "schema": {
    "type": "object", "properties": {"name": {"type": "strin"}}}}}


async def test_an_invalid_schema_is_invalid_input_at_once_naming_the_schema_error(tmp_path, aiohttp_server):
    seen: list = []
    url = await json_server(aiohttp_server, ['{"name": "Ada"}'], seen)
    line = {"custom_id": "p", "messages": [{"role": "user", "content": "x"}], "response_format": BAD_SCHEMA}
    code, (r,) = await run_once(tmp_path, url, 5, line)
    assert seen == [] and code == 1 and r["attempts"] == 0
    assert r["status"] == "error" and r["error"]["type"] == "invalid_input"
    message = r["error"]["message"]
    assert message.startswith(f"{tmp_path / 'in.jsonl'}:1: response_format schema 'person' is invalid: "
                              "at $.properties.name.type: "), message
    session = {"custom_id": "s", "turns": ["a", "b"], "response_format": BAD_SCHEMA}
    code, (r,) = await run_once(tmp_path, url, 5, session)  # a session's turns carry it too
    assert seen == [] and r["error"]["type"] == "invalid_input" and "turn 0: response_format schema" in \
        r["error"]["message"]
    with pytest.raises(UsageError, match=r"--param: response_format schema 'person' is invalid: at \$.properties"):
        await run_once(tmp_path, url, 5, params={"response_format": BAD_SCHEMA})  # the run's default: exit 2
    assert seen == []
