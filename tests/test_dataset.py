"""What dataset builders add around a request (runner/dataset.py): the response cache, validated JSON replies."""

from __future__ import annotations

import orjson
from aiohttp import web

from runner.config import RetryPolicy, RunConfig, Stage
from runner.run import _execute
from tests.conftest import mock_stats, read_jsonl, streamrun, write_jsonl

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


async def run_against(tmp_path, aiohttp_server, replies: list[str], attempts: int):
    seen = []

    async def handler(request):
        seen.append(await request.json())
        return web.Response(body=sse_text(replies[min(len(seen), len(replies)) - 1]),
                            content_type="text/event-stream")

    app = web.Application()
    app.router.add_post("/v1/chat/completions", handler)
    server = await aiohttp_server(app)
    inp = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": "p", "messages": [{"role": "user", "content": "x"}],
                                               "response_format": SCHEMA}])
    cfg = RunConfig(inputs=(str(inp),), output=str(tmp_path / "out.jsonl"), model="m", stages=(Stage(0, 1),),
                    base_urls=(str(server.make_url("/v1")),),
                    retry=RetryPolicy(max_attempts=attempts, backoff_initial=0.001, backoff_max=0.01))
    code = await _execute(cfg, None, False)
    return code, read_jsonl(tmp_path / "out.jsonl"), seen


async def test_a_reply_that_fails_its_schema_once_then_validates_is_ok_after_2_attempts(tmp_path, aiohttp_server):
    code, (r,), seen = await run_against(tmp_path, aiohttp_server, ['{"nom": 1}', '{"name": "Ada"}'], 3)
    assert code == 0 and len(seen) == 2
    assert r["status"] == "ok" and r["attempts"] == 2 and r["parsed"] == {"name": "Ada"}


async def test_a_reply_that_never_validates_is_invalid_output_with_its_text(tmp_path, aiohttp_server):
    code, (r,), seen = await run_against(tmp_path, aiohttp_server, ["not json at all"], 2)
    assert code == 1 and len(seen) == 2
    assert r["status"] == "error" and r["error"]["type"] == "invalid_output"
    assert r["text"] == "not json at all" and r["parsed"] is None and r["attempts"] == 2
