"""Tests for the embedded mock server (runner/mock/); its refusals are in tests/mock/test_strict.py.

Most run with ttft=0 and tokens_per_s=0 (no sleeps); timing checks only
assert lower bounds, never that something was fast."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import aiohttp
import pytest

from runner.mock import (
    STATE_KEY,
    MockConfig,
    ScriptEntry,
    build_app,
    format_reset,
    load_script,
    prompt_tokens_estimate,
    serve,
)
from tests.helpers import ROOT, read_jsonl, run_rows, streamrun, write_jsonl

FAST = dict(ttft=0.0, tokens_per_s=0.0)
CHAT = {"model": "mock-model", "messages": [{"role": "user", "content": "Say hello"}], "stream": True}
COMPLETION = {"model": "mock-model", "prompt": "Say hello", "stream": True}


def parse_sse(raw: bytes) -> list[object]:
    """Split an SSE body on blank lines; 'data: [DONE]' -> '[DONE]', else JSON."""
    text = raw.decode("utf-8")
    events: list[object] = []
    for block in text.split("\n\n"):
        if not block.strip():
            continue
        assert block.startswith("data: "), block
        data = block[len("data: "):]
        events.append(data if data == "[DONE]" else json.loads(data))
    return events


def content_of(chunks: list[object]) -> list[str]:
    """The non-empty delta.content pieces of chat chunks, in order."""
    out = []
    for c in chunks:
        if isinstance(c, dict) and c.get("choices"):
            piece = c["choices"][0]["delta"].get("content")
            if piece:
                out.append(piece)
    return out


async def client_for(aiohttp_client, **config):
    return await aiohttp_client(build_app(MockConfig(**config)))


async def post(client, body, path="/v1/chat/completions", **kwargs):
    resp = await client.post(path, json=body, **kwargs)
    return resp, await resp.read()


# ----------------------------------------------------------------- stream shape


async def test_chat_stream_shape(aiohttp_client):
    client = await client_for(aiohttp_client, output_tokens=7, **FAST)
    resp, raw = await post(client, CHAT)
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    assert resp.headers["Cache-Control"] == "no-cache"
    assert raw.endswith(b"\n\ndata: [DONE]\n\n")
    events = parse_sse(raw)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    for c in chunks:
        assert c["object"] == "chat.completion.chunk"
        assert c["model"] == "mock-model"
        assert isinstance(c["created"], int)
        assert "usage" not in c  # only with include_usage
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    middle = chunks[1:-1]
    assert len(middle) == 7
    for c in middle:
        assert set(c["choices"][0]["delta"]) == {"content"}
        assert c["choices"][0]["finish_reason"] is None
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}


async def test_completions_stream_shape(aiohttp_client):
    client = await client_for(aiohttp_client, output_tokens=5, **FAST)
    resp, raw = await post(client, COMPLETION, "/v1/completions")
    assert resp.status == 200
    events = parse_sse(raw)
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "text_completion" and c["id"].startswith("cmpl-") for c in chunks)
    # Like OpenAI's legacy endpoint: no role chunk, text in choices[0].text.
    assert len(chunks) == 6
    assert all(c["choices"][0]["text"] and c["choices"][0]["finish_reason"] is None for c in chunks[:5])
    assert chunks[-1]["choices"][0]["text"] == ""
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_text_is_deterministic_and_multibyte(aiohttp_client):
    client = await client_for(aiohttp_client, output_tokens=200, **FAST)
    _, a = await post(client, CHAT)
    _, b = await post(client, CHAT)
    other = {**CHAT, "messages": [{"role": "user", "content": "Something else entirely"}]}
    _, c = await post(client, other)
    text_a = "".join(content_of(parse_sse(a)))
    assert text_a == "".join(content_of(parse_sse(b)))
    assert text_a != "".join(content_of(parse_sse(c)))
    assert any(len(ch.encode()) > 1 for ch in text_a)  # multi-byte UTF-8 present
    assert not text_a.startswith(" ")


async def test_usage_only_when_asked(aiohttp_client):
    client = await client_for(aiohttp_client, output_tokens=4, **FAST)
    body = {**CHAT, "stream_options": {"include_usage": True}}
    _, raw = await post(client, body)
    events = parse_sse(raw)
    assert events[-1] == "[DONE]"
    usage_chunk = events[-2]
    assert usage_chunk["choices"] == []
    expected_prompt = prompt_tokens_estimate(body)
    assert usage_chunk["usage"] == {
        "prompt_tokens": expected_prompt,
        "completion_tokens": 4,
        "total_tokens": expected_prompt + 4,
    }
    # Like OpenAI: every other chunk carries "usage": null.
    assert all(e["usage"] is None for e in events[:-2])
    assert events[-3]["choices"][0]["finish_reason"] == "stop"

    _, raw = await post(client, {**CHAT, "stream_options": {"include_usage": False}})
    assert not any(isinstance(e, dict) and "usage" in e for e in parse_sse(raw))


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
async def test_max_tokens_gives_length(aiohttp_client, field):
    client = await client_for(aiohttp_client, output_tokens=50, **FAST)
    body = {**CHAT, field: 9, "stream_options": {"include_usage": True}}
    _, raw = await post(client, body)
    events = parse_sse(raw)
    assert len(content_of(events)) == 9
    assert events[-3]["choices"][0]["finish_reason"] == "length"
    assert events[-2]["usage"]["completion_tokens"] == 9


async def test_tokens_per_chunk(aiohttp_client):
    client = await client_for(aiohttp_client, tokens_per_chunk=3, **FAST)
    body = {**CHAT, "max_tokens": 10, "stream_options": {"include_usage": True}}
    _, raw = await post(client, body)
    events = parse_sse(raw)
    assert len(content_of(events)) == 4  # 3 + 3 + 3 + 1
    assert events[-2]["usage"]["completion_tokens"] == 10
    # Same text as one token per chunk: batching only regroups it.
    single = await client_for(aiohttp_client, **FAST)
    _, raw1 = await post(single, body)
    assert "".join(content_of(events)) == "".join(content_of(parse_sse(raw1)))


async def test_non_streaming_json(aiohttp_client):
    client = await client_for(aiohttp_client, output_tokens=6, **FAST)
    resp = await client.post("/v1/chat/completions", json={**CHAT, "stream": False})
    assert resp.status == 200
    data = await resp.json()
    assert data["object"] == "chat.completion"
    choice = data["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] == "stop"
    assert data["usage"]["completion_tokens"] == 6
    # Same text as the streamed reply to the same prompt.
    _, raw = await post(client, {**CHAT, "max_tokens": 6})
    assert "".join(content_of(parse_sse(raw))) == choice["message"]["content"]

    resp = await client.post("/v1/completions", json={"model": "mock-model", "prompt": "x", "max_tokens": 2})
    data = await resp.json()
    assert data["object"] == "text_completion"
    assert data["choices"][0]["finish_reason"] == "length"
    assert data["usage"]["completion_tokens"] == 2


async def test_models(aiohttp_client):
    client = await client_for(aiohttp_client, model="my-model")
    resp = await client.get("/v1/models")
    assert resp.status == 200
    data = await resp.json()
    assert data["object"] == "list"
    assert [m["id"] for m in data["data"]] == ["my-model"]


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/chat/completions", b"not json"),
        ("/v1/chat/completions", b"[1, 2]"),
        ("/v1/chat/completions", b'{"model": "mock-model"}'),
        ("/v1/chat/completions", b'{"model": "mock-model", "messages": []}'),
        ("/v1/completions", b'{"model": "mock-model"}'),
        ("/v1/chat/completions", b'{"model": "mock-model", "messages": [{"role": "user", "content": "x"}], "max_tokens": -1}'),
        ("/v1/chat/completions",
         b'{"model": "mock-model", "messages": [{"role": "user", "content": "x"}], "mock": {"key": "k", "faults": ["nope"]}}'),
    ],
)
async def test_malformed_body_is_400(aiohttp_client, path, body):
    client = await client_for(aiohttp_client, **FAST)
    resp = await client.post(path, data=body, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    err = (await resp.json())["error"]
    assert set(err) >= {"message", "type", "code"}
    assert err["type"] == "invalid_request_error"


# ----------------------------------------------------------------- faults


async def test_per_key_faults_in_order(aiohttp_client):
    client = await client_for(aiohttp_client, output_tokens=8, retry_after=2.0, **FAST)
    faults = ["429", "500", "503", "400", "drop", "error_event", "no_done", "ok"]
    body = {**CHAT, "mock": {"key": "abc", "faults": faults}}

    resp, raw = await post(client, body)
    assert resp.status == 429 and resp.headers["Retry-After"] == "2"
    assert json.loads(raw)["error"]["code"] == "rate_limit_exceeded"
    for status in (500, 503, 400):
        resp, raw = await post(client, body)
        assert resp.status == status
        assert set(json.loads(raw)["error"]) >= {"message", "type", "code"}

    # drop: a few content chunks, then the connection is cut mid-body.
    resp = await client.post("/v1/chat/completions", json=body)
    assert resp.status == 200
    received = b""
    with pytest.raises(aiohttp.ClientPayloadError):
        async for piece in resp.content.iter_any():
            received += piece
    assert b"finish_reason\":\"" not in received and b"[DONE]" not in received
    complete_events = received[: received.rfind(b"\n\n") + 2]
    assert 1 <= len(content_of(parse_sse(complete_events))) < 8

    # error_event: a few chunks, then an {"error": ...} event, then the end.
    resp, raw = await post(client, body)
    events = parse_sse(raw)
    assert events[-1]["error"]["type"] == "server_error"
    assert "[DONE]" not in events
    assert 1 <= len(content_of(events)) < 8

    # no_done: a complete stream without the [DONE] sentinel.
    resp, raw = await post(client, body)
    events = parse_sse(raw)
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    assert "[DONE]" not in events

    # "ok" and then beyond the list: normal streams.
    for _ in range(2):
        resp, raw = await post(client, body)
        assert parse_sse(raw)[-1] == "[DONE]"

    # Another key has its own counter.
    resp, _ = await post(client, {**CHAT, "mock": {"key": "other", "faults": ["500"]}})
    assert resp.status == 500

    stats = await (await client.get("/mock/stats")).json()
    assert stats["requests"] == 10
    assert stats["by_status"] == {"429": 1, "500": 2, "503": 1, "400": 1, "200": 5}
    assert stats["status_429"] == 1
    assert stats["streams_dropped"] == 1
    assert stats["streams_errored"] == 1


async def test_retry_after_override(aiohttp_client):
    client = await client_for(aiohttp_client, **FAST)
    resp, _ = await post(client, {**CHAT, "mock": {"key": "k", "faults": ["429"], "retry_after": 0}})
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "0"
    resp, _ = await post(client, {**CHAT, "mock": {"key": "k2", "faults": ["429"], "retry_after": 0.25}})
    assert resp.headers["Retry-After"] == "0.25"
    assert resp.headers["retry-after-ms"] == "250"


async def test_stall_sends_role_then_nothing(aiohttp_client):
    client = await client_for(aiohttp_client, **FAST)
    body = {**CHAT, "mock": {"key": "s", "faults": ["stall"]}}
    timeout = aiohttp.ClientTimeout(sock_read=0.3)
    resp = await client.post("/v1/chat/completions", json=body, timeout=timeout)
    assert resp.status == 200
    first = await resp.content.readuntil(b"\n\n")
    assert parse_sse(first)[0]["choices"][0]["delta"]["role"] == "assistant"
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await resp.content.read()
    assert time.monotonic() - started >= 0.25


async def test_drop_non_streaming_closes_connection(aiohttp_client):
    client = await client_for(aiohttp_client, **FAST)
    body = {**CHAT, "stream": False, "mock": {"key": "d", "faults": ["drop"]}}
    with pytest.raises(aiohttp.ClientConnectionError):
        resp = await client.post("/v1/chat/completions", json=body)
        await resp.read()


async def outcomes(config: MockConfig, n: int) -> list[str]:
    """Status of n sequential non-streaming requests ('drop' when cut)."""
    seen = []
    async with serve(config) as url, aiohttp.ClientSession() as session:
        for _ in range(n):
            try:
                async with session.post(url + "/chat/completions", json={**CHAT, "stream": False}) as resp:
                    await resp.read()
                    seen.append(str(resp.status))
            except aiohttp.ClientConnectionError:
                seen.append("drop")
    return seen


async def test_seeded_random_faults_reproducible():
    config = MockConfig(error_rate=0.2, status_429_rate=0.2, drop_rate=0.2, seed=7, **FAST)
    first = await outcomes(config, 40)
    assert first == await outcomes(config, 40)
    assert set(first) == {"200", "500", "429", "drop"}
    assert first != await outcomes(MockConfig(error_rate=0.2, status_429_rate=0.2, drop_rate=0.2, seed=8, **FAST), 40)


async def test_api_key_required(aiohttp_client):
    client = await client_for(aiohttp_client, api_key="sekrit", **FAST)
    resp, raw = await post(client, CHAT)
    assert resp.status == 401
    assert json.loads(raw)["error"]["code"] == "invalid_api_key"
    resp, _ = await post(client, CHAT, headers={"Authorization": "Bearer wrong"})
    assert resp.status == 401
    assert (await client.get("/v1/models")).status == 401
    resp, raw = await post(client, CHAT, headers={"Authorization": "Bearer sekrit"})
    assert resp.status == 200 and parse_sse(raw)[-1] == "[DONE]"
    assert (await client.get("/v1/models", headers={"Authorization": "Bearer sekrit"})).status == 200


# ----------------------------------------------------------------- script mode


def test_load_script_jsonl_and_list(tmp_path):
    jsonl = tmp_path / "s.jsonl"
    jsonl.write_text('{"ttft": 0.1, "gaps": [0.01, 0.02]}\n\n{"ttft": 0, "gaps": []}\n')
    assert load_script(jsonl) == (ScriptEntry(0.1, (0.01, 0.02)), ScriptEntry(0.0, ()))
    as_list = tmp_path / "s.json"
    as_list.write_text('[{"ttft": 0.5, "gaps": [1]}]')
    assert load_script(as_list) == (ScriptEntry(0.5, (1,)),)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"ttft": 0.1}\n{"gaps": []}\n')
    with pytest.raises(ValueError, match="line 2"):
        load_script(bad)
    negative = tmp_path / "neg.jsonl"
    negative.write_text('{"ttft": 0.1, "gaps": [-1]}\n')
    with pytest.raises(ValueError):
        load_script(negative)
    # Read as every JSONL file is (runner/io/jsonl): a BOM and CRLF line ends from Windows tools, and a
    # line that is not JSON named by its number.
    windows = tmp_path / "win.jsonl"
    windows.write_bytes(b'\xef\xbb\xbf{"ttft": 0.2, "gaps": [0.5]}\r\n{"ttft": 0}\r\n')
    assert load_script(windows) == (ScriptEntry(0.2, (0.5,)), ScriptEntry(0.0, ()))
    torn = tmp_path / "torn.jsonl"
    torn.write_text('{"ttft": 0.1}\n{"ttft": 0.')
    with pytest.raises(ValueError, match=r"torn.jsonl: line 2: a torn last line"):
        load_script(torn)


async def test_script_mode_event_counts(aiohttp_client):
    script = (ScriptEntry(0.0, (0.0, 0.0)), ScriptEntry(0.0, ()), ScriptEntry(0.0, (0.0,) * 4))
    client = await client_for(aiohttp_client, script=script, output_tokens=50)
    counts = []
    for _ in range(4):  # arrival order, modulo the script's length
        _, raw = await post(client, CHAT)
        events = parse_sse(raw)
        assert events[-2]["choices"][0]["finish_reason"] == "stop"
        counts.append(len(content_of(events)))
    assert counts == [3, 1, 5, 3]
    _, raw = await post(client, {**CHAT, "mock": {"script": 2}})
    assert len(content_of(parse_sse(raw))) == 5
    resp, _ = await post(client, {**CHAT, "mock": {"script": 3}})
    assert resp.status == 400


async def test_script_timing_lower_bound(aiohttp_client):
    client = await client_for(aiohttp_client, script=(ScriptEntry(0.05, (0.03, 0.02)),))
    resp = await client.post("/v1/chat/completions", json=CHAT)
    started = time.monotonic()
    arrivals = []
    buf = b""
    async for piece in resp.content.iter_any():
        buf += piece
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            if b'"content":"' in block and b'"content":""' not in block:
                arrivals.append(time.monotonic())
    assert len(arrivals) == 3
    # Offsets are absolute from arrival, so each event is at least this late.
    assert arrivals[0] - started >= 0.05 - 0.01
    assert arrivals[1] - started >= 0.08 - 0.01
    assert arrivals[2] - started >= 0.10 - 0.01


async def test_ttft_and_rate_lower_bound(aiohttp_client):
    client = await client_for(aiohttp_client, ttft=0.05, tokens_per_s=100.0)
    started = time.monotonic()
    _, raw = await post(client, {**CHAT, "max_tokens": 4})
    assert len(content_of(parse_sse(raw))) == 4
    assert time.monotonic() - started >= 0.05 + 3 / 100.0


# ----------------------------------------------------------------- quotas


async def test_rpm_limit_429_and_headers(aiohttp_client):
    app = build_app(MockConfig(rpm_limit=2, **FAST))
    state = app[STATE_KEY]
    now = [1000.0]
    state.clock = lambda: now[0]
    state.reset()  # buckets restart on the fake clock
    client = await aiohttp_client(app)

    remaining = []
    for _ in range(2):
        resp, raw = await post(client, CHAT)
        assert resp.status == 200 and parse_sse(raw)[-1] == "[DONE]"
        assert resp.headers["x-ratelimit-limit-requests"] == "2"
        remaining.append(resp.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["1", "0"]
    assert "x-ratelimit-limit-tokens" not in resp.headers

    resp, raw = await post(client, CHAT)
    assert resp.status == 429
    assert json.loads(raw)["error"]["code"] == "rate_limit_exceeded"
    assert resp.headers["x-ratelimit-remaining-requests"] == "0"
    assert resp.headers["x-ratelimit-reset-requests"] == "1m0s"  # 2 requests at 2/60 per s
    assert float(resp.headers["Retry-After"]) == pytest.approx(30.0)

    stats = await (await client.get("/mock/stats")).json()
    assert stats["status_429"] == 1 and stats["by_status"] == {"200": 2, "429": 1}

    now[0] += 30.0  # one request's worth refilled
    resp, _ = await post(client, CHAT)
    assert resp.status == 200
    assert resp.headers["x-ratelimit-remaining-requests"] == "0"


async def test_tpm_limit(aiohttp_client):
    app = build_app(MockConfig(tpm_limit=100, **FAST))
    state = app[STATE_KEY]
    state.clock = lambda: 5.0
    state.reset()
    client = await aiohttp_client(app)
    body = {**CHAT, "max_tokens": 40}
    cost = prompt_tokens_estimate(body) + 40
    resp, _ = await post(client, body)
    assert resp.status == 200
    assert resp.headers["x-ratelimit-remaining-tokens"] == str(100 - cost)
    assert "x-ratelimit-limit-requests" not in resp.headers
    resp, _ = await post(client, body)
    assert resp.status == 200
    resp, raw = await post(client, body)
    assert resp.status == 429
    assert json.loads(raw)["error"]["type"] == "tokens"
    # Enough tokens return at 100/60 per second.
    missing = cost - (100 - 2 * cost)
    assert float(resp.headers["Retry-After"]) == pytest.approx(missing * 0.6, abs=0.002)


async def test_stats_and_reset(aiohttp_client):
    client = await client_for(aiohttp_client, output_tokens=3, **FAST)
    await post(client, CHAT)
    await post(client, {**CHAT, "mock": {"key": "r", "faults": ["500"]}})
    stats = await (await client.get("/mock/stats")).json()
    assert stats["requests"] == 2
    assert stats["streams_completed"] == 1
    assert stats["tokens_sent"] == 3
    assert stats["by_status"] == {"200": 1, "500": 1}
    assert (await client.post("/mock/reset")).status == 200
    stats = await (await client.get("/mock/stats")).json()
    assert stats["requests"] == 0 and stats["by_status"] == {} and stats["tokens_sent"] == 0
    # Per-key state is reset too: the key's first fault applies again.
    resp, _ = await post(client, {**CHAT, "mock": {"key": "r", "faults": ["500"]}})
    assert resp.status == 500


# ----------------------------------------------------------------- helpers


def test_format_reset():
    assert format_reset(0) == "0s"
    assert format_reset(0.02) == "20ms"
    assert format_reset(1) == "1s"
    assert format_reset(1.5) == "1.5s"
    assert format_reset(360) == "6m0s"
    assert format_reset(3723) == "1h2m3s"


def test_prompt_tokens_estimate_matches_cookbook_shape():
    body = {"messages": [{"role": "user", "content": "abcdefgh"}, {"role": "system", "content": [{"type": "text", "text": "abc"}]}]}
    # 3 priming + (3 + ceil(4/4) + 2) + (3 + ceil(6/4) + 1)
    assert prompt_tokens_estimate(body) == 3 + 6 + 6
    assert prompt_tokens_estimate({"prompt": "abcde"}) == 2
    assert prompt_tokens_estimate({"prompt": [1, 2, 3]}) == 3


def test_config_validation():
    with pytest.raises(ValueError):
        MockConfig(error_rate=0.7, drop_rate=0.7)
    with pytest.raises(ValueError):
        MockConfig(tokens_per_chunk=0)
    with pytest.raises(ValueError):
        MockConfig(ttft=-1)
    assert MockConfig(tokens_per_s=float("inf")).token_interval == 0.0


async def test_serve_yields_base_url():
    async with serve(MockConfig(output_tokens=2, **FAST)) as url:
        assert url.startswith("http://127.0.0.1:") and url.endswith("/v1")
        async with aiohttp.ClientSession() as session:
            async with session.post(url + "/completions", json=COMPLETION) as resp:
                assert parse_sse(await resp.read())[-1] == "[DONE]"


async def test_serve_exits_with_a_stalled_stream_in_flight():
    async with serve(MockConfig(**FAST)) as url:
        session = aiohttp.ClientSession()
        resp = await session.post(url + "/chat/completions", json={**CHAT, "mock": {"key": "s", "faults": ["stall"]}})
        await resp.content.readuntil(b"\n\n")
    # Leaving serve() cancelled the stalled handler: the body ends (cut).
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.content.read()
    resp.release()
    await session.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_cli_announces_and_serves(workers):
    """`python -m runner.cli mock` prints the listening line, then serves."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner.cli", "mock", "--port", "0", "--ttft", "0", "--tokens-per-s", "0", "--workers", str(workers)],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        line = proc.stderr.readline()
        assert line.startswith("mock server listening on http://127.0.0.1:"), line
        url = line.split()[-1]
        assert url.endswith("/v1")

        async def one() -> list[object]:
            async with aiohttp.ClientSession() as session:
                async with session.post(url + "/chat/completions", json=CHAT) as resp:
                    return parse_sse(await resp.read())

        assert asyncio.run(one())[-1] == "[DONE]"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        proc.stderr.close()


# ---- `run --mock` is the dry run of the user's own file: any model; `streamrun mock` stays strict

REAL_MODELS = [{"custom_id": "c", "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
               {"custom_id": "b", "method": "POST", "url": "/v1/messages",
                "body": {"model": "claude-sonnet-4-5", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}},
               {"custom_id": "r", "method": "POST", "url": "/v1/responses", "body": {"model": "gpt-5", "input": "x"}},
               {"custom_id": "e", "method": "POST", "url": "/v1/embeddings",
                "body": {"model": "text-embedding-3-small", "input": "x"}}]


def test_run_mock_serves_the_models_the_lines_name(tmp_path):
    inp = write_jsonl(tmp_path / "my_prompts.jsonl", REAL_MODELS)
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock")
    assert res.returncode == 0, res.stderr
    assert all(r["status"] == "ok" for r in read_jsonl(tmp_path / "out.jsonl"))
    job = tmp_path / "job.toml"  # a job's [mock], with the job's own model for a line that names none
    write_jsonl(tmp_path / "plain.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])
    job.write_text('inputs = ["plain.jsonl"]\noutput = "job-out.jsonl"\nmodel = "gpt-4o-mini"\n[mock]\nttft = 0\n')
    res = streamrun("job", job)
    assert res.returncode == 0, res.stderr
    (r,) = read_jsonl(tmp_path / "job-out.jsonl")
    assert r["status"] == "ok"


async def test_the_standalone_mock_still_refuses_a_model_it_does_not_serve(tmp_path, mock_server):
    url = await mock_server()
    code, records = await run_rows(tmp_path, url, REAL_MODELS[:1])
    assert code == 1 and records[0]["error"]["status_code"] == 404 and records[0]["error"]["code"] == "model_not_found"
