"""runner/engine/send.py in process: one input line to one record.

A `Sender` is driven directly (no engine loop, no run, no subprocess)
against a small gateway served by the test: it records every request it
gets (path, headers, body) and answers from a script, so each test says
exactly what the server did and checks what was sent and what the record
holds: the body (the run's defaults under the line's own keys), the cache
(an answer served without sending, a new one stored), retries and the
attempt count, --duration's deadline, each API's own auth headers, and
typed errors with no secret in them.

Nothing here waits for a time: Retry-After is 0 where a retry is wanted,
and the deadline test uses a wait far past it.
"""

from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager

import aiohttp
import orjson
import pytest
from aiohttp import web

from runner import api
from runner.config.run_config import Stage
from runner.engine.answers import Answers
from runner.engine.cache import ResponseCache
from runner.engine.guards import ConnectGuard
from runner.engine.hooks import EngineHooks
from runner.engine.result import EngineResult
from runner.engine.send import Sender
from runner.inputs.items import parse_item
from runner.preflight import credentials
from runner.record import Record
from runner.stream.endpoints import EndpointPool
from runner.stream.errors import PastDeadline
from tests.helpers import HANG_GUARD_S

STAGE = Stage(0, 1)
OPENAI_KEY = "sk-openai-SECRET-0123456789"
ANTHROPIC_KEY = "sk-ant-SECRET-9876543210"


# -- the gateway -----------------------------------------------------------------


def chat_stream(text: str = "Hello") -> bytes:
    """An OpenAI chat stream: role, the text in two pieces, finish, usage, [DONE]."""
    def chunk(**fields) -> bytes:
        return b"data: " + orjson.dumps({"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m",
                                         **fields}) + b"\n\n"

    half = len(text) // 2
    return (chunk(choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}])
            + chunk(choices=[{"index": 0, "delta": {"content": text[:half]}, "finish_reason": None}])
            + chunk(choices=[{"index": 0, "delta": {"content": text[half:]}, "finish_reason": None}])
            + chunk(choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])
            + chunk(choices=[], usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
            + b"data: [DONE]\n\n")


def anthropic_stream(text: str = "Hello") -> bytes:
    """An Anthropic Messages stream, as the API reference shows it."""
    events = [
        ("message_start", {"message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [],
                                       "model": "claude-x", "stop_reason": None, "stop_sequence": None,
                                       "usage": {"input_tokens": 3, "output_tokens": 1}}}),
        ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
        ("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": text}}),
        ("content_block_stop", {"index": 0}),
        ("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                           "usage": {"output_tokens": 2}}),
        ("message_stop", {}),
    ]
    return "".join(f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n" for name, data in events).encode()


OK = "ok"  # a script step: the API's own stream for the request's path


class Gateway:
    """Answers each request with the next step of `script` (OK, or (status, JSON body, headers)); records all."""

    def __init__(self) -> None:
        self.script: list = []
        self.requests: list[tuple[str, dict[str, str], dict]] = []  # (path, headers, body)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append((request.path, dict(request.headers), orjson.loads(await request.read())))
        step = self.script.pop(0) if self.script else OK
        if step != OK:
            status, body, headers = step
            return web.json_response(body, status=status, headers=headers)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(anthropic_stream() if request.path.endswith("/messages") else chat_stream())
        await resp.write_eof()
        return resp


@pytest.fixture
async def gateway(aiohttp_server):
    gw = Gateway()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", gw.handle)
    app.router.add_post("/v1/messages", gw.handle)
    server = await aiohttp_server(app)
    gw.url = str(server.make_url("/v1"))
    return gw


# -- the sender --------------------------------------------------------------------


@asynccontextmanager
async def sending(url: str, cache: ResponseCache | None = None, **keys):
    """A Sender as a run makes one: the run's config (from job keys) and credentials, over one session.

    The one place that knows how a Sender is put together.
    """
    cfg = api.config("in.jsonl", output="out.jsonl", base_url=url, **{"model": "m", "max_attempts": 3, **keys})
    creds = credentials(cfg, local=True)
    pool = EndpointPool(list(cfg.transport.base_urls))
    async with aiohttp.ClientSession(headers=creds.headers) as session:
        yield Sender(session, cfg.transport, cfg.request, cfg.checks, creds=creds, hooks=EngineHooks(), pool=pool,
                     answers=Answers(cache), result=EngineResult(),
                     reach=ConnectGuard(tuple(e.url for e in pool.endpoints)))


def line(row: dict, number: int = 1):
    """An input line as the run reads it from in.jsonl."""
    return parse_item("in.jsonl", number, orjson.dumps(row), "chat", "prompts")


def chat(cid: str = "a", **extra) -> dict:
    return {"custom_id": cid, "messages": [{"role": "user", "content": f"prompt {cid}"}], **extra}


async def send(sender: Sender, row: dict, number: int = 1) -> Record:
    return await sender.process(line(row, number), None, STAGE, False)


@pytest.fixture(autouse=True)
def keys(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    monkeypatch.setenv("ANTHROPIC_API_KEY", ANTHROPIC_KEY)


# -- the body ----------------------------------------------------------------------------


async def test_the_body_is_the_runs_defaults_under_the_lines_own_keys(gateway):
    async with sending(gateway.url, params={"temperature": 0.0, "max_tokens": 7, "top_p": 0.5}) as sender:
        record = await send(sender, chat("a", temperature=0.9), number=4)
    ((path, _, body),) = gateway.requests
    assert path == "/v1/chat/completions"
    assert body == {"model": "m", "messages": [{"role": "user", "content": "prompt a"}], "temperature": 0.9,
                    "max_tokens": 7, "top_p": 0.5, "stream": True, "stream_options": {"include_usage": True}}
    assert (record.custom_id, record.status, record.text, record.attempts) == ("a", "ok", "Hello", 1)
    assert record.source == {"file": "in.jsonl", "line": 4} and record.request_url == "/v1/chat/completions"
    assert record.usage["completion_tokens"] == 2 and record.metrics.output_tokens == 2


async def test_a_line_that_cannot_become_a_request_is_answered_at_once_and_nothing_is_sent(gateway):
    async with sending(gateway.url) as sender:  # Anthropic's API needs max_tokens; none is given
        record = await send(sender, {"custom_id": "x", "method": "POST", "url": "/v1/messages",
                                     "body": {"model": "claude-x", "messages": [{"role": "user", "content": "hi"}]}})
    assert gateway.requests == []
    assert (record.status, record.attempts, record.error.type) == ("error", 0, "invalid_input")
    assert "in.jsonl:1" in record.error.message and "max_tokens" in record.error.message


# -- the cache ------------------------------------------------------------------------------


async def test_a_cached_answer_is_served_without_sending_and_a_new_answer_is_stored(gateway, tmp_path):
    async with ResponseCache.open(tmp_path / "cache.sqlite") as cache:
        async with sending(gateway.url, cache) as sender:
            sent = await send(sender, chat("first"))
            again = await send(sender, {**chat("first"), "custom_id": "twin"}, number=2)  # the same request
            other = await send(sender, chat("other"), number=3)
    assert [body["messages"][0]["content"] for _, _, body in gateway.requests] == ["prompt first", "prompt other"]
    assert (sent.cached, sent.attempts) == (False, 1)
    assert (again.custom_id, again.status, again.text, again.cached, again.attempts) == ("twin", "ok", "Hello",
                                                                                           True, 0)
    assert again.source == {"file": "in.jsonl", "line": 2} and again.endpoint is None
    assert again.cached_metrics == sent.metrics  # the metrics of the request that was sent, kept apart
    assert not other.cached
    assert cache.stats.as_dict() == {"hits": 1, "misses": 2, "writes": 2}


# -- retries ----------------------------------------------------------------------------------

RETRY_NOW = {"Retry-After": "0"}
OVERLOADED = {"error": {"message": "overloaded", "type": "server_error", "code": None}}


async def test_retryable_failures_are_retried_and_each_attempt_counted(gateway):
    gateway.script = [(500, OVERLOADED, RETRY_NOW), (429, OVERLOADED, RETRY_NOW), OK]
    async with sending(gateway.url, max_attempts=3) as sender:
        record = await send(sender, chat("a"))
    assert len(gateway.requests) == 3
    assert (record.status, record.attempts, record.text, record.error) == ("ok", 3, "Hello", None)
    assert sender.counters.sent == 1  # one request, however many attempts


async def test_the_last_failure_stands_when_the_attempts_run_out(gateway):
    gateway.script = [(500, OVERLOADED, RETRY_NOW), (503, OVERLOADED, RETRY_NOW), OK]
    async with sending(gateway.url, max_attempts=2) as sender:
        record = await send(sender, chat("a"))
    assert len(gateway.requests) == 2
    assert (record.status, record.attempts) == ("error", 2)
    assert (record.error.type, record.error.status_code) == ("http_error", 503)


async def test_a_client_error_is_not_retried(gateway):
    gateway.script = [(400, {"error": {"message": "bad temperature", "type": "invalid_request_error",
                                       "param": "temperature", "code": None}}, RETRY_NOW), OK]
    async with sending(gateway.url, max_attempts=3) as sender:
        record = await send(sender, chat("a"))
    assert len(gateway.requests) == 1
    assert (record.status, record.attempts, record.error.status_code) == ("error", 1, 400)
    assert "bad temperature" in record.error.message


# -- the deadline (--duration) ------------------------------------------------------------------


async def test_nothing_starts_at_or_after_the_deadline(gateway):
    async with sending(gateway.url) as sender:
        sender.start_stage(time.perf_counter())
        with pytest.raises(PastDeadline):
            await send(sender, chat("a"))
    assert gateway.requests == [] and sender.counters.sent == 0  # no record: a rerun sends it


async def test_a_retry_that_would_start_after_the_deadline_leaves_the_failure_before_it_at_once(gateway):
    """The wait is not taken: Retry-After (capped at 120 s) ends past the deadline, so the request ends now;
    waiting it out would overrun the hang guard (60 s), many seconds apart from ending at once."""
    gateway.script = [(503, OVERLOADED, {"Retry-After": "3600"}), OK]
    async with sending(gateway.url, max_attempts=3) as sender:
        sender.start_stage(time.perf_counter() + 100)
        record = await asyncio.wait_for(send(sender, chat("a")), HANG_GUARD_S)
    assert len(gateway.requests) == 1
    assert (record.status, record.attempts, record.error.status_code) == ("error", 1, 503)


# -- auth, per API ------------------------------------------------------------------------------------


async def test_each_api_gets_its_own_key_header_and_no_other(gateway):
    messages = {"custom_id": "m", "method": "POST", "url": "/v1/messages",
                "body": {"model": "claude-x", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}}
    async with sending(gateway.url, anthropic_version="2023-06-01") as sender:
        chat_record = await send(sender, chat("c"))
        messages_record = await send(sender, messages, number=2)
    assert chat_record.status == messages_record.status == "ok"
    assert messages_record.text == "Hello" and messages_record.finish_reason == "stop"  # end_turn, as chat names it
    (chat_path, chat_headers, _), (messages_path, messages_headers, _) = gateway.requests
    chat_headers = {k.lower(): v for k, v in chat_headers.items()}
    messages_headers = {k.lower(): v for k, v in messages_headers.items()}
    assert (chat_path, messages_path) == ("/v1/chat/completions", "/v1/messages")
    assert chat_headers["authorization"] == f"Bearer {OPENAI_KEY}" and "x-api-key" not in chat_headers
    assert "anthropic-version" not in chat_headers
    assert messages_headers["x-api-key"] == ANTHROPIC_KEY and "authorization" not in messages_headers
    assert messages_headers["anthropic-version"] == "2023-06-01"


# -- errors ---------------------------------------------------------------------------------------------


async def test_an_error_is_typed_and_the_key_it_echoes_never_reaches_the_record(gateway):
    gateway.script = [(401, {"error": {"message": f"Incorrect API key provided: {OPENAI_KEY}.",
                                       "type": "invalid_request_error", "param": None,
                                       "code": "invalid_api_key"}}, {})]
    async with sending(gateway.url) as sender:
        record = await send(sender, chat("a"))
    assert (record.status, record.attempts) == ("error", 1)
    assert (record.error.type, record.error.status_code, record.error.code) == ("http_error", 401,
                                                                                "invalid_api_key")
    assert "Incorrect API key provided" in record.error.message
    assert OPENAI_KEY not in orjson.dumps(record).decode()


async def test_an_error_event_in_the_stream_is_a_stream_error_and_is_retried(gateway, aiohttp_server):
    async def error_event(request: web.Request) -> web.StreamResponse:
        gateway.requests.append((request.path, dict(request.headers), orjson.loads(await request.read())))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b'data: {"error": {"message": "the model crashed", "type": "server_error"}}\n\n')
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", error_event)
    url = str((await aiohttp_server(app)).make_url("/v1"))
    async with sending(url, max_attempts=2) as sender:
        record = await send(sender, chat("a"))
    assert len(gateway.requests) == 2
    assert (record.status, record.attempts, record.error.type) == ("error", 2, "stream_error")
    assert "the model crashed" in record.error.message
