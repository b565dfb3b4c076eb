"""runner.stream.client: one request over a shared session, against small aiohttp test servers.

Headers and body as sent, a stream split across reads, events after [DONE]
ignored and the body drained (so the connection is reused), the JSON
(non-stream) answer, typed errors for non-200 answers, GET /models, and the
Retry-After forms.  No assertion depends on how the bytes happen to be
grouped into reads, or on how fast anything runs.
"""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import orjson
import pytest
from aiohttp import web

from runner.stream import client, connection
from runner.stream.client import endpoint_url, list_models, parse_retry_after, status_error, stream_once
from runner.stream.config import Timeouts
from runner.stream.errors import (
    ConnectError,
    ContextLengthExceeded,
    EmptyResponse,
    HTTPStatusError,
    IncompleteStream,
    MalformedResponse,
    RequestTimeout,
    StreamErrorEvent,
)
from runner.stream.headers import OPENAI, resolve_credentials
from runner.stream.timing import Timing
from tests.helpers import freeze_now

BODY = orjson.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True})
TIMEOUTS = Timeouts(connect=10, first_byte=30, idle=30)


def chunk(delta: dict | None = None, finish: str | None = None, **top) -> bytes:
    obj = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m",
           "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish}], **top}
    return b"data: " + orjson.dumps(obj) + b"\n\n"


DONE = b"data: [DONE]\n\n"
HELLO = (chunk({"role": "assistant", "content": ""}) + chunk({"content": "Hel"}) + chunk({"content": "lo, "})
         + chunk({"content": "wörld"}) + chunk(finish="stop")
         + b'data: {"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 3}}\n\n'
         + DONE)


class Server:
    """An aiohttp test server whose POST handler streams `pieces` (a float among them is a pause);
    it records what it received and from which client socket."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict, bytes]] = []
        self.peers: list[object] = []
        self.after_done = asyncio.Event()  # set once the handler has written everything
        self.hold = None  # an Event the handler waits on before ending the body

    async def stream(self, request: web.Request, pieces: list[bytes], headers: dict | None = None):
        self.requests.append((request.method, request.path, dict(request.headers), await request.read()))
        self.peers.append(request.transport.get_extra_info("peername"))
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **(headers or {})})
        await resp.prepare(request)
        for piece in pieces:
            if isinstance(piece, float):  # a pause: what follows arrives in a later read
                await asyncio.sleep(piece)
            else:
                await resp.write(piece)
        self.after_done.set()
        if self.hold is not None:
            await self.hold.wait()
        await resp.write_eof()
        return resp


async def serve(aiohttp_server, handler, path: str = "/v1/chat/completions") -> str:
    app = web.Application()
    app.router.add_post(path, handler)
    app.router.add_get("/v1/models", handler)
    server = await aiohttp_server(app)
    return str(server.make_url("/v1"))


async def attempt(base: str, session: aiohttp.ClientSession | None = None, **kw):
    own = session is None
    session = session or aiohttp.ClientSession()
    try:
        return await stream_once(session, endpoint_url(base, "/v1/chat/completions"), BODY, kw.pop("timeouts", TIMEOUTS),
                                 Timing(due=0.0), **kw)
    finally:
        if own:
            await session.close()


def test_endpoint_url_joins_base_with_or_without_v1():
    assert endpoint_url("http://h:1/v1", "/v1/chat/completions") == "http://h:1/v1/chat/completions"
    assert endpoint_url("http://h:1/v1/", "/v1/completions") == "http://h:1/v1/completions"
    assert endpoint_url("http://h:1", "/v1/completions") == "http://h:1/v1/completions"
    assert endpoint_url("https://gw/openai/v1", "/v1/completions") == "https://gw/openai/v1/completions"


async def test_headers_and_body_are_sent_as_given(aiohttp_server):
    server = Server()
    base = await serve(aiohttp_server, lambda r: server.stream(r, [HELLO]))
    creds = resolve_credentials(("X-Team: ${TEAM}",), key_envs={OPENAI: "KEY"}, environ={"KEY": "sk-abc", "TEAM": "blue"})
    async with aiohttp.ClientSession(headers=creds.for_api(OPENAI)) as session:
        result = await attempt(base, session)
    ((method, path, headers, body),) = server.requests
    assert (method, path, body) == ("POST", "/v1/chat/completions", BODY)
    assert headers["Authorization"] == "Bearer sk-abc" and headers["X-Team"] == "blue"
    assert headers["Content-Type"] == "application/json" and headers["Accept"] == "text/event-stream"
    assert headers["User-Agent"].startswith("streamrun/")
    assert result.state.text == "Hello, wörld" and result.state.finish_reason == "stop"
    assert result.state.usage == {"prompt_tokens": 3, "completion_tokens": 3}


@pytest.mark.parametrize("size", [1, 2, 7, 64, len(HELLO)])
async def test_a_stream_split_anywhere_reads_the_same(aiohttp_server, size):
    # pieces cut through events, lines, "\n\n" and the two bytes of "ö"; each piece is its own HTTP chunk
    pieces = [HELLO[i:i + size] for i in range(0, len(HELLO), size)]
    server = Server()
    base = await serve(aiohttp_server, lambda r: server.stream(r, pieces))
    result = await attempt(base)
    s, t = result.state, result.timing
    assert (s.text, s.finish_reason, s.text_events) == ("Hello, wörld", "stop", 3)
    assert s.response_id == "chatcmpl-1" and s.model == "m" and s.done
    assert t.sent <= t.first_event <= t.first_text <= t.last_text <= t.end
    assert len(t.itl) == 2 and all(g >= 0 for g in t.itl)  # three text events, two gaps


async def test_events_after_done_are_ignored_and_the_body_is_drained(aiohttp_server):
    late = chunk({"content": " LATE"}) + chunk(finish="length")
    server = Server()
    # the rest of the body comes after a pause, well within the client's drain time after [DONE]
    base = await serve(aiohttp_server, lambda r: server.stream(r, [HELLO, 0.05, late, b": trailing comment\n\n"]))
    connector = aiohttp.TCPConnector(limit=1)
    async with aiohttp.ClientSession(connector=connector) as session:
        first = await attempt(base, session)
        second = await attempt(base, session)
    for result in (first, second):
        assert result.state.text == "Hello, wörld" and result.state.finish_reason == "stop"
    # the rest of the body was read after [DONE], so the one pooled connection was reused
    assert len(server.peers) == 2 and server.peers[0] == server.peers[1]


async def test_a_body_that_never_ends_after_done_costs_only_the_drain_timeout(aiohttp_server, monkeypatch):
    monkeypatch.setattr(client, "_DRAIN_AFTER_DONE_S", 0.05)
    server = Server()
    server.hold = asyncio.Event()  # never set while the client waits
    base = await serve(aiohttp_server, lambda r: server.stream(r, [HELLO]))
    result = await attempt(base, timeouts=Timeouts(connect=10, first_byte=300, idle=300))
    assert result.state.text == "Hello, wörld" and result.timing.end is not None
    server.hold.set()


async def test_the_idle_timeout_counts_from_the_last_read(aiohttp_server):
    # gaps far shorter than idle, adding up to more than idle, then one longer than idle
    pieces = [chunk({"role": "assistant", "content": ""}), *[p for _ in range(12) for p in (0.05, chunk({"content": "x"}))],
              2.0, chunk(finish="stop"), DONE]
    server = Server()
    base = await serve(aiohttp_server, lambda r: server.stream(r, pieces))
    with pytest.raises(RequestTimeout, match="idle for more than 0.5s") as info:
        await attempt(base, timeouts=Timeouts(connect=10, first_byte=30, idle=0.5))
    assert info.value.partial.text == "x" * 12  # the reads before the stall count


async def test_a_read_is_stamped_when_aiohttp_received_it_not_when_the_task_ran(aiohttp_server, monkeypatch):
    # Every network read is followed by 50 ms of other work in the same loop turn (as with many
    # streams); the stamp is from before that work, so TTFT does not contain it.
    handed_over: list[float] = []
    base_received = client.StampingHandler.data_received

    def busy(self, data):
        base_received(self, data)
        time.sleep(0.05)
        handed_over.append(time.perf_counter())  # the task can run no earlier than this

    monkeypatch.setattr(client.StampingHandler, "data_received", busy)
    server = Server()
    base = await serve(aiohttp_server, lambda r: server.stream(r, [HELLO[:40], 0.1, HELLO[40:]]))
    async with aiohttp.ClientSession() as session:
        await attempt(base, session)  # opens the connection: stamps start with the next request
        handed_over.clear()
        result = await attempt(base, session)
    t = result.timing
    assert t.sent < t.first_event <= t.first_text <= t.end
    assert t.first_text < handed_over[-1] - 0.04  # the read of "Hel...": its bytes came before the 50 ms
    assert result.state.text == "Hello, wörld"


async def test_the_timed_connector_times_the_connections_it_opens_and_stamps_from_the_first_read(
        aiohttp_server, monkeypatch):
    handed_over: list[float] = []
    base_received = client.StampingHandler.data_received

    def busy(self, data):
        base_received(self, data)
        time.sleep(0.05)
        handed_over.append(time.perf_counter())

    monkeypatch.setattr(client.StampingHandler, "data_received", busy)
    server = Server()
    base = await serve(aiohttp_server, lambda r: server.stream(r, [HELLO[:40], 0.1, HELLO[40:]]))
    connector, traces = connection.session_connector(limit=1)
    assert isinstance(connector, connection.TimedConnector) and traces == []
    async with aiohttp.ClientSession(connector=connector) as session:
        first = await attempt(base, session)
        second = await attempt(base, session)
    assert first.timing.connect_s is not None and 0 < first.timing.connect_s < first.timing.first_event - first.timing.sent
    assert second.timing.connect_s is None  # the pooled connection
    assert first.timing.first_text < handed_over[-1] - 0.04  # stamped on arrival on a new connection too
    assert first.state.text == second.state.text == "Hello, wörld"


async def test_session_connector_falls_back_on_tracing(monkeypatch):
    monkeypatch.setattr(aiohttp.TCPConnector, "_create_connection", None)
    connector, traces = connection.session_connector()
    assert type(connector) is aiohttp.TCPConnector and len(traces) == 1
    await connector.close()


async def test_the_hot_path_and_the_general_one_read_a_stream_alike(aiohttp_server, monkeypatch):
    """The same stream, one event per read (the hot path takes each) and one byte per read (it takes
    none): the same state and the same number of stamps."""
    pieces = [p for e in HELLO.split(b"\n\n")[:-1] for p in (e + b"\n\n", 0.001)]
    results = []
    for split in (pieces, [HELLO[i:i + 1] for i in range(len(HELLO))]):
        server = Server()
        base = await serve(aiohttp_server, lambda r, split=split, server=server: server.stream(r, split))
        results.append(await attempt(base))
    (a, b) = results
    assert (a.state.text_parts, a.state.events, a.state.text_events, a.state.usage, a.state.done) == \
           (b.state.text_parts, b.state.events, b.state.text_events, b.state.usage, b.state.done)
    assert len(a.timing.itl) == len(b.timing.itl) == 2 and a.timing.first_answer is not None


async def test_a_json_answer_to_a_stream_request(aiohttp_server):
    answer = {"id": "chatcmpl-9", "object": "chat.completion", "model": "m",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "whole", "reasoning_content": "r"},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 2, "completion_tokens": 1}}

    async def handler(request):
        return web.json_response(answer, headers={"x-request-id": "req-42"})

    result = await attempt(await serve(aiohttp_server, handler))
    s, t = result.state, result.timing
    assert (s.text, s.reasoning, s.finish_reason, s.usage) == ("whole", "r", "stop", answer["usage"])
    assert (s.response_id, s.model, s.text_events, s.done) == ("chatcmpl-9", "m", 1, True)
    assert t.first_text == t.first_event == t.end and t.itl == []
    assert result.request_id == "req-42"  # the server's header wins over the body's id


@pytest.mark.parametrize("payload, error", [
    ({"error": {"message": "overloaded", "type": "server_error"}}, StreamErrorEvent),
    ({"choices": [{"index": 0, "message": {"role": "assistant", "content": ""}, "finish_reason": None}]},
     EmptyResponse),
    ([1, 2], IncompleteStream),
])
async def test_a_json_answer_that_is_not_an_answer(aiohttp_server, payload, error):
    async def handler(request):
        return web.json_response(payload)

    with pytest.raises(error):
        await attempt(await serve(aiohttp_server, handler))


@pytest.mark.parametrize("pieces, error, message", [
    ([chunk({"content": "Par"}), chunk({"content": "tial"})], IncompleteStream, "without finish_reason or [DONE]"),
    ([chunk({"content": "Par"}), DONE], IncompleteStream, "cut short"),
    ([chunk({"role": "assistant"}), DONE], EmptyResponse, "no content"),
    ([chunk({"content": "x"}), b'event: error\ndata: {"error": {"message": "upstream died"}}\n\n'],
     StreamErrorEvent, "upstream died"),
])
async def test_streams_that_do_not_finish(aiohttp_server, pieces, error, message):
    server = Server()
    base = await serve(aiohttp_server, lambda r: server.stream(r, pieces))
    with pytest.raises(error, match=re.escape(message)) as info:
        await attempt(base)
    assert info.value.partial is not None  # partial text is kept for the record
    assert info.value.retryable


async def test_an_html_page_is_malformed(aiohttp_server):
    async def handler(request):
        return web.Response(text="<html>Sign in</html>", content_type="text/html")

    with pytest.raises(MalformedResponse, match="text/html"):
        await attempt(await serve(aiohttp_server, handler))


async def test_non_200_answers_raise_typed_errors(aiohttp_server):
    answers = iter([
        (429, {"error": {"message": "slow down", "code": "rate_limit_exceeded"}}, {"Retry-After": "3"}),
        (400, {"error": {"message": "This model's maximum context length is 8 tokens",
                         "code": "context_length_exceeded"}}, {}),
        (401, {"error": {"message": "bad key"}}, {}),
        (503, {"detail": "warming up"}, {"retry-after-ms": "250"}),
    ])

    async def handler(request):
        status, body, headers = next(answers)
        return web.json_response(body, status=status, headers=headers)

    base = await serve(aiohttp_server, handler)
    with pytest.raises(HTTPStatusError) as info:
        await attempt(base)
    e = info.value
    assert (e.status_code, e.retryable, e.retry_after, e.code) == (429, True, 3.0, "rate_limit_exceeded")
    assert e.message.startswith("HTTP 429: ") and "slow down" in e.message and e.headers["Retry-After"] == "3"
    with pytest.raises(ContextLengthExceeded) as info:
        await attempt(base)
    assert (info.value.status_code, info.value.retryable) == (400, False)
    with pytest.raises(HTTPStatusError) as info:
        await attempt(base)
    assert (info.value.status_code, info.value.retryable) == (401, False)
    with pytest.raises(HTTPStatusError) as info:
        await attempt(base)
    assert (info.value.status_code, info.value.retryable, info.value.retry_after) == (503, True, 0.25)
    assert info.value.message == "HTTP 503: warming up"


@pytest.mark.parametrize("status, raw, kind, retryable", [
    (400, b'{"error": {"message": "x", "code": "context_length_exceeded"}}', ContextLengthExceeded, False),
    (413, b"prompt has too many tokens", ContextLengthExceeded, False),
    (422, b'{"detail": "exceeds the context window"}', ContextLengthExceeded, False),
    (500, b'{"error": {"message": "maximum context length"}}', HTTPStatusError, True),  # a 5xx is never that
    (400, b'{"error": {"message": "bad temperature"}}', HTTPStatusError, False),
    (408, b"", HTTPStatusError, True),
    (409, b"", HTTPStatusError, True),
    (404, b'{"error": {"message": "no such model", "code": "model_not_found"}}', HTTPStatusError, False),
])
def test_status_error_classification(status, raw, kind, retryable):
    e = status_error(status, raw, {})
    assert type(e) is kind and e.retryable is retryable and e.status_code == status
    assert e.message.startswith(f"HTTP {status}: ")


async def test_connection_refused_is_a_connect_error():
    with pytest.raises(ConnectError, match="cannot connect"):
        await attempt("http://127.0.0.1:9/v1")


async def test_an_apis_own_readers_need_the_state_they_read_into():
    # named events and a whole answer are read into the API's own kind of state: without it nothing is sent
    with pytest.raises(TypeError, match="pass `state`"):
        await attempt("http://127.0.0.1:9/v1", named=lambda state, name, data: False)


async def test_list_models(aiohttp_server):
    answers = iter([
        (200, b'{"object": "list", "data": [{"id": "a"}, {"id": "b"}, {"id": 5}, "junk"]}'),
        (401, b'{"error": {"message": "bad key"}}'),
        (200, b"<html>not a list</html>"),
    ])

    async def handler(request):
        status, body = next(answers)
        return web.Response(body=body, status=status, content_type="application/json")

    base = await serve(aiohttp_server, handler)
    async with aiohttp.ClientSession() as session:
        assert await list_models(session, base) == ["a", "b"]
        with pytest.raises(HTTPStatusError) as info:
            await list_models(session, base)
        assert info.value.status_code == 401
        with pytest.raises(IncompleteStream, match="not a model list"):
            await list_models(session, base)
        with pytest.raises(ConnectError, match="GET /models"):
            await list_models(session, "http://127.0.0.1:9/v1")


def test_retry_after_forms(monkeypatch):
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"Retry-After": " 1.5 "}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25  # OpenAI's, in ms, wins
    assert parse_retry_after({"retry-after-ms": "soon", "Retry-After": "9"}) == 9.0
    assert parse_retry_after({"Retry-After": "-5"}) == 0.0
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "soon"}) is None
    now = freeze_now(monkeypatch, datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC))
    assert parse_retry_after({"Retry-After": format_datetime(now + timedelta(seconds=30), usegmt=True)}) == 30.0
    assert parse_retry_after({"Retry-After": format_datetime(now - timedelta(seconds=30), usegmt=True)}) == 0.0
    assert parse_retry_after({"Retry-After": "Wed, 01 May 2024 12:01:00"}) == 60.0  # no zone: taken as UTC
