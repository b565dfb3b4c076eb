"""The mock's /v1/responses and /v1/messages: the official SDKs stream from it,
its streams read back through the runner's own decoder and protocols, and it
refuses what the real APIs refuse, in their shapes."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import anthropic
import pytest
from anthropic import APIStatusError as AnthropicStatusError
from anthropic import AsyncAnthropic
from openai import APIStatusError as OpenAIStatusError
from openai import AsyncOpenAI

from runner.mock import STATE_KEY, MockConfig, ScriptEntry, build_app, serve
from runner.stream import protocol_anthropic, protocol_responses
from runner.stream.errors import RequestError, StreamErrorEvent
from runner.stream.sse import SSEDecoder

FAST = dict(ttft=0.0, tokens_per_s=0.0)
MODEL = "mock-model"
RESPONSES, MESSAGES = "/v1/responses", "/v1/messages"
VERSION = {"anthropic-version": "2023-06-01"}
RESP_BODY = {"model": MODEL, "input": "Say hello", "stream": True}
USER = {"role": "user", "content": "Say hello"}
MSG_BODY = {"model": MODEL, "messages": [USER], "max_tokens": 256, "stream": True}


async def client_for(aiohttp_client, **config):
    return await aiohttp_client(build_app(MockConfig(**{**FAST, **config})))


async def post(client, path, body, headers=None):
    if path == MESSAGES:
        headers = {**VERSION, **(headers or {})}
    resp = await client.post(path, json=body, headers=headers)
    return resp, await resp.read()


def events_of(raw: bytes) -> list:
    decoder = SSEDecoder()
    return [*decoder.feed(raw), *decoder.close()]


def read_back(path: str, raw: bytes):
    """The stream as the runner reads it: (state, error or None)."""
    proto = protocol_responses if path == RESPONSES else protocol_anthropic
    state = proto.EventStreamState()
    for event in events_of(raw):
        try:
            proto.handle_event(state, event.event, event.data)
        except RequestError as exc:
            return state, exc
    return state, None


def resp_body(**fields):
    return {k: v for k, v in {**RESP_BODY, **fields}.items() if v is not ...}


def msg_body(**fields):
    return {k: v for k, v in {**MSG_BODY, **fields}.items() if v is not ...}


# ------------------------------------------------------------- the official SDKs

needs_responses = pytest.mark.skipif(not hasattr(AsyncOpenAI, "responses"), reason="openai < 1.66: no Responses API")
HAS_THINKING = hasattr(anthropic.types, "ThinkingBlock")  # anthropic >= 0.47


@needs_responses

async def test_openai_sdk_streams_responses():
    async with serve(MockConfig(output_tokens=12, api_key="sk-test", **FAST)) as url:
        client = AsyncOpenAI(base_url=url, api_key="sk-test", max_retries=0)
        stream = await client.responses.create(model=MODEL, input="Say hello", stream=True)
        kinds, deltas, final = [], [], None
        async for event in stream:
            kinds.append(event.type)
            if event.type == "response.output_text.delta":
                deltas.append(event.delta)
            if event.type == "response.completed":
                final = event.response
        assert kinds[:4] == ["response.created", "response.in_progress", "response.output_item.added",
                             "response.content_part.added"]
        assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                              "response.output_item.done", "response.completed"]
        assert len(deltas) == 12
        assert final.output_text == "".join(deltas) and final.status == "completed"
        assert final.usage.output_tokens == 12 and final.usage.total_tokens == final.usage.input_tokens + 12
        assert final.model == MODEL

        # The SDK's accumulating helper checks item identities and ordering.
        async with client.responses.stream(model=MODEL, input=[{"role": "user", "content": "Say hello"}],
                                           reasoning={"effort": "low", "summary": "auto"}) as helper:
            async for _ in helper:
                pass
            whole = await helper.get_final_response()
        assert [item.type for item in whole.output] == ["reasoning", "message"]
        assert whole.output_text == "".join(deltas)  # same prompt text, same reply
        assert whole.usage.output_tokens_details.reasoning_tokens == 6

        plain = await client.responses.create(model=MODEL, input="Say hello")
        assert plain.output_text == "".join(deltas) and plain.status == "completed"

        with pytest.raises(OpenAIStatusError) as info:
            await client.responses.create(model="gpt-nope", input="Say hello", stream=True)
        assert info.value.status_code == 404 and info.value.code == "model_not_found"


async def test_anthropic_sdk_streams_messages():
    async with serve(MockConfig(output_tokens=12, api_key="sk-ant", **FAST)) as url:
        client = AsyncAnthropic(base_url=url.removesuffix("/v1"), api_key="sk-ant", max_retries=0)
        async with client.messages.stream(model=MODEL, max_tokens=256, messages=[USER]) as stream:
            pieces = [text async for text in stream.text_stream]
            message = await stream.get_final_message()
        assert len(pieces) == 12 and message.content[0].text == "".join(pieces)
        assert message.stop_reason == "end_turn" and message.usage.output_tokens == 12
        assert message.model == MODEL and message.id.startswith("msg_")

        raw = await client.messages.create(model=MODEL, max_tokens=5, messages=[USER], stream=True,
                                           system=[{"type": "text", "text": "Be brief"}])
        kinds = [event.type async for event in raw]
        assert kinds[:3] == ["message_start", "content_block_start", "content_block_delta"]
        assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
        assert kinds.count("content_block_delta") == 5

        if HAS_THINKING:
            async with client.messages.stream(model=MODEL, max_tokens=2048, messages=[USER],
                                              thinking={"type": "enabled", "budget_tokens": 1024}) as stream:
                message = await stream.get_final_message()
            assert [b.type for b in message.content] == ["thinking", "text"]
            assert message.content[0].signature and message.usage.output_tokens == 18

        whole = await client.messages.create(model=MODEL, max_tokens=256, messages=[USER])
        assert whole.content[0].text == "".join(pieces) and whole.stop_reason == "end_turn"


async def test_anthropic_sdk_key_in_x_api_key_too():
    async with serve(MockConfig(output_tokens=2, api_key="sk-ant", **FAST)) as url:
        client = AsyncAnthropic(base_url=url.removesuffix("/v1"), api_key=None, auth_token=None,
                                default_headers={"x-api-key": "sk-ant"}, max_retries=0)
        message = await client.messages.create(model=MODEL, max_tokens=16, messages=[USER])
        assert message.stop_reason == "end_turn"
        wrong = AsyncAnthropic(base_url=url.removesuffix("/v1"), api_key="nope", max_retries=0)
        with pytest.raises(AnthropicStatusError) as info:
            await wrong.messages.create(model=MODEL, max_tokens=16, messages=[USER])
        assert info.value.status_code == 401
        assert info.value.body["error"]["type"] == "authentication_error"


@needs_responses
async def test_sdks_see_mid_stream_errors():
    async with serve(MockConfig(output_tokens=12, **FAST)) as url:
        openai = AsyncOpenAI(base_url=url, api_key="x", max_retries=0)
        stream = await openai.responses.create(model=MODEL, input="hi", stream=True,
                                               extra_body={"mock": {"key": "e", "faults": ["error_event"]}})
        kinds = [event.type async for event in stream]
        assert kinds[-1] == "error" and "response.completed" not in kinds
        anthropic = AsyncAnthropic(base_url=url.removesuffix("/v1"), api_key="x", max_retries=0)
        with pytest.raises(AnthropicStatusError, match="overloaded_error"):
            async with anthropic.messages.stream(model=MODEL, max_tokens=64, messages=[USER],
                                                 extra_body={"mock": {"key": "e2", "faults": ["error_event"]}}) as s:
                async for _ in s:
                    pass


# --------------------------------------------------------- read back by the runner


@pytest.mark.parametrize("path,body", [(RESPONSES, RESP_BODY), (MESSAGES, MSG_BODY)])
async def test_runner_reads_what_the_mock_sends(aiohttp_client, path, body):
    client = await client_for(aiohttp_client, output_tokens=9, tokens_per_chunk=2)
    resp, raw = await post(client, path, body)
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    state, err = read_back(path, raw)
    assert err is None and state.done and state.finish_reason == "stop"
    assert state.text_events == 5  # 9 tokens, 2 per event
    assert state.usage["completion_tokens"] == 9 and state.usage["prompt_tokens"] > 0
    assert state.usage["total_tokens"] == state.usage["prompt_tokens"] + 9
    assert state.model == MODEL and state.response_id
    assert state.first_answer_event is not None
    # Every event is named, and named as its data says.
    for event in events_of(raw):
        assert event.event != "message" and json.loads(event.data)["type"] == event.event


@pytest.mark.parametrize("path,body", [(RESPONSES, resp_body(max_output_tokens=16)),
                                       (MESSAGES, msg_body(max_tokens=16))])
async def test_output_limit_cuts_to_length(aiohttp_client, path, body):
    client = await client_for(aiohttp_client, output_tokens=40)
    resp, raw = await post(client, path, body)
    state, err = read_back(path, raw)
    assert err is None and state.finish_reason == "length" and state.text_events == 16
    assert state.usage["completion_tokens"] == 16
    if path == RESPONSES:
        assert events_of(raw)[-1].event == "response.incomplete"
        assert json.loads(events_of(raw)[-1].data)["response"]["incomplete_details"] == {
            "reason": "max_output_tokens"}


@pytest.mark.parametrize("path,body", [
    (RESPONSES, resp_body(reasoning={"summary": "auto"}, mock={"reasoning_tokens": 5})),
    (MESSAGES, msg_body(max_tokens=2048, thinking={"type": "enabled", "budget_tokens": 1024},
                        mock={"reasoning_tokens": 5})),
])
async def test_reasoning_then_answer(aiohttp_client, path, body):
    client = await client_for(aiohttp_client, output_tokens=4)
    resp, raw = await post(client, path, body)
    state, err = read_back(path, raw)
    assert err is None and state.finish_reason == "stop"
    assert len(state.reasoning.split()) == 5 and state.text_events == 9
    names = [e.event for e in events_of(raw)]
    first_output = next(i for i, e in enumerate(events_of(raw))
                        if "delta" in e.event and "summary_part" not in e.event) + 1
    assert state.first_answer_event > first_output + 4  # five reasoning events before the first answer
    assert state.usage["completion_tokens"] == 9
    if path == RESPONSES:
        assert state.usage["completion_tokens_details"]["reasoning_tokens"] == 5
    else:
        assert names.count("content_block_start") == 2


async def test_reasoning_budget_caps_thinking(aiohttp_client):
    client = await client_for(aiohttp_client, output_tokens=4)
    body = msg_body(max_tokens=1030, thinking={"type": "enabled", "budget_tokens": 1024},
                    mock={"reasoning_tokens": 5000})
    resp, raw = await post(client, MESSAGES, body)
    state, _ = read_back(MESSAGES, raw)
    assert len(state.reasoning_parts) == 1024 and len(state.text_parts) == 4


async def test_ttft_and_rate_lower_bound(aiohttp_client):
    client = await client_for(aiohttp_client, ttft=0.1, tokens_per_s=50.0, output_tokens=5)
    for path, body in ((RESPONSES, RESP_BODY), (MESSAGES, MSG_BODY)):
        started = time.perf_counter()
        resp = await client.post(path, json=body, headers=VERSION)
        arrivals = []
        decoder = SSEDecoder()
        async for chunk in resp.content.iter_any():
            for event in decoder.feed(chunk):
                if event.event in ("response.output_text.delta", "content_block_delta"):
                    arrivals.append(time.perf_counter() - started)
        assert len(arrivals) == 5
        assert arrivals[0] >= 0.1 and arrivals[-1] >= 0.1 + 4 / 50.0 - 1e-3


@pytest.mark.parametrize("path,body", [(RESPONSES, RESP_BODY), (MESSAGES, MSG_BODY)])
async def test_script_sets_the_event_count(aiohttp_client, path, body):
    client = await client_for(aiohttp_client, script=(ScriptEntry(0.0, (0.0, 0.0)),))
    resp, raw = await post(client, path, body)
    state, err = read_back(path, raw)
    assert err is None and state.text_events == 3 and state.finish_reason == "stop"


# ------------------------------------------------------------------- faults


async def test_status_faults_in_each_shape(aiohttp_client):
    client = await client_for(aiohttp_client)
    faults = {"key": "k", "faults": ["429", "500", "503", "400", "ok"], "retry_after": 0.25}
    seen = []
    for _ in range(5):
        resp, raw = await post(client, RESPONSES, resp_body(mock=faults))
        seen.append((resp.status, json.loads(raw).get("error", {}).get("type") if resp.status != 200 else None))
        if resp.status == 429:
            assert resp.headers["Retry-After"] == "0.25" and resp.headers["retry-after-ms"] == "250"
    assert seen == [(429, "requests"), (500, "server_error"), (503, "server_error"),
                    (400, "invalid_request_error"), (200, None)]
    seen = []
    for _ in range(5):
        resp, raw = await post(client, MESSAGES, msg_body(mock={**faults, "key": "k2"}))
        obj = json.loads(raw) if resp.status != 200 else None
        if obj is not None:
            assert obj["type"] == "error"
        seen.append((resp.status, obj["error"]["type"] if obj else None))
    assert seen == [(429, "rate_limit_error"), (500, "api_error"), (529, "overloaded_error"),
                    (400, "invalid_request_error"), (200, None)]


@pytest.mark.parametrize("path,body", [(RESPONSES, RESP_BODY), (MESSAGES, MSG_BODY)])
async def test_error_event_fault(aiohttp_client, path, body):
    client = await client_for(aiohttp_client, output_tokens=20)
    resp, raw = await post(client, path, {**body, "mock": {"key": "e", "faults": ["error_event"]}})
    assert resp.status == 200
    state, err = read_back(path, raw)
    assert isinstance(err, StreamErrorEvent) and err.retryable
    assert 1 <= state.text_events <= 3 and not state.done
    stats = client.server.app[STATE_KEY].stats
    assert stats.streams_errored == 1


@pytest.mark.parametrize("path,body", [(RESPONSES, RESP_BODY), (MESSAGES, MSG_BODY)])
async def test_drop_cuts_the_stream(aiohttp_client, path, body):
    client = await client_for(aiohttp_client, output_tokens=20)
    with pytest.raises(aiohttp.ClientPayloadError):
        resp = await client.post(path, json={**body, "mock": {"key": "d", "faults": ["drop"]}}, headers=VERSION)
        await resp.read()
    assert client.server.app[STATE_KEY].stats.streams_dropped == 1


@pytest.mark.parametrize("path,body,terminal", [(RESPONSES, RESP_BODY, "response.completed"),
                                                (MESSAGES, MSG_BODY, "message_stop")])
async def test_no_done_leaves_out_the_terminal_event(aiohttp_client, path, body, terminal):
    client = await client_for(aiohttp_client, output_tokens=3)
    resp, raw = await post(client, path, {**body, "mock": {"key": "n", "faults": ["no_done"]}})
    names = [e.event for e in events_of(raw)]
    assert terminal not in names and not read_back(path, raw)[0].done


@pytest.mark.parametrize("path,body,first", [(RESPONSES, RESP_BODY, "response.created"),
                                             (MESSAGES, MSG_BODY, "message_start")])
async def test_stall_sends_the_opening_then_nothing(aiohttp_client, path, body, first):
    client = await client_for(aiohttp_client)
    resp = await client.post(path, json={**body, "mock": {"key": "s", "faults": ["stall"]}}, headers=VERSION,
                             timeout=aiohttp.ClientTimeout(sock_read=0.3))
    assert resp.status == 200
    opening = await resp.content.readuntil(b"\n\n")
    assert opening.startswith(b"event: " + first.encode())
    with pytest.raises(asyncio.TimeoutError):
        await resp.content.read()


async def test_quota_429_in_each_shape(aiohttp_client):
    client = await client_for(aiohttp_client, rpm_limit=1)  # one request a minute, the first admitted
    assert (await post(client, RESPONSES, RESP_BODY))[0].status == 200
    resp, raw = await post(client, RESPONSES, RESP_BODY)
    assert resp.status == 429 and json.loads(raw)["error"]["code"] == "rate_limit_exceeded"
    assert "Retry-After" in resp.headers
    resp, raw = await post(client, MESSAGES, MSG_BODY)
    assert resp.status == 429 and json.loads(raw)["error"]["type"] == "rate_limit_error"


async def test_malformed_mock_field_in_each_shape(aiohttp_client):
    client = await client_for(aiohttp_client)
    resp, raw = await post(client, RESPONSES, resp_body(mock={"key": "x", "faults": ["nope"]}))
    assert resp.status == 400 and "unknown mock faults" in json.loads(raw)["error"]["message"]
    resp, raw = await post(client, MESSAGES, msg_body(mock={"key": "x", "faults": ["nope"]}))
    assert resp.status == 400 and json.loads(raw)["error"]["type"] == "invalid_request_error"
    resp, raw = await post(client, MESSAGES, msg_body(mock={"reasoning_tokens": -1},
                                                      thinking={"type": "adaptive"}))
    assert resp.status == 400 and "reasoning_tokens" in json.loads(raw)["error"]["message"]


# ----------------------------------------------------------------- strictness

BAD_RESPONSES = [
    ("no model", resp_body(model=...), "missing_required_parameter", "model"),
    ("model not a string", resp_body(model=5), "invalid_type", "model"),
    ("no input", resp_body(input=...), "missing_required_parameter", "input"),
    ("input a number", resp_body(input=5), "invalid_type", "input"),
    ("item not an object", resp_body(input=["hi"]), "invalid_type", "input[0]"),
    ("item without role", resp_body(input=[{"content": "hi"}]), "missing_required_parameter", "input[0].role"),
    ("bad role", resp_body(input=[{"role": "tool", "content": "hi"}]), "invalid_value", "input[0].role"),
    ("no content", resp_body(input=[{"role": "user"}]), "missing_required_parameter", "input[0].content"),
    ("chat text part", resp_body(input=[{"role": "user", "content": [{"type": "text", "text": "hi"}]}]),
     "invalid_value", "input[0].content[0].type"),
    ("chat messages", {**RESP_BODY, "messages": [USER]}, "unsupported_parameter", "messages"),
    ("chat max_tokens", resp_body(max_tokens=10), "unsupported_parameter", "max_tokens"),
    ("chat n", resp_body(n=2), "unknown_parameter", "n"),
    ("include_usage", resp_body(stream_options={"include_usage": True}), "unknown_parameter",
     "stream_options.include_usage"),
    ("max_output_tokens below 16", resp_body(max_output_tokens=8), "integer_below_min_value", "max_output_tokens"),
    ("max_output_tokens a string", resp_body(max_output_tokens="9"), "invalid_type", "max_output_tokens"),
    ("temperature above 2", resp_body(temperature=2.5), "decimal_above_max_value", "temperature"),
    ("stream not a bool", resp_body(stream="yes"), "invalid_type", "stream"),
    ("chat-shaped tool", resp_body(tools=[{"type": "function", "function": {"name": "f"}}]),
     "missing_required_parameter", "tools[0].name"),
    ("function output without call_id", resp_body(input=[{"type": "function_call_output", "output": "x"}]),
     "missing_required_parameter", "input[0].call_id"),
]


@pytest.mark.parametrize("name,body,code,param", BAD_RESPONSES, ids=[b[0] for b in BAD_RESPONSES])
async def test_responses_refusals(aiohttp_client, name, body, code, param):
    client = await client_for(aiohttp_client)
    resp, raw = await post(client, RESPONSES, body)
    assert resp.status == 400, raw
    error = json.loads(raw)["error"]
    assert (error["code"], error["param"], error["type"]) == (code, param, "invalid_request_error")
    assert client.server.app[STATE_KEY].stats.streams_started == 0


BAD_MESSAGES = [
    ("no model", msg_body(model=...), "model: Field required"),
    ("no messages", msg_body(messages=...), "messages: Field required"),
    ("empty messages", msg_body(messages=[]), "at least one message"),
    ("messages not a list", msg_body(messages="hi"), "messages: Input should be a valid list"),
    ("system role", msg_body(messages=[{"role": "system", "content": "x"}, USER]), "messages.0.role"),
    ("no content", msg_body(messages=[{"role": "user"}]), "messages.0.content: Field required"),
    ("extra message key", msg_body(messages=[{**USER, "name": "bob"}]), "messages.0.name: Extra inputs"),
    ("block without type", msg_body(messages=[{"role": "user", "content": [{"text": "x"}]}]),
     "messages.0.content.0.type: Field required"),
    ("no max_tokens", msg_body(max_tokens=...), "max_tokens: Field required"),
    ("max_tokens 0", msg_body(max_tokens=0), "greater than or equal to 1"),
    ("max_tokens a string", msg_body(max_tokens="5"), "max_tokens: Input should be a valid integer"),
    ("system a number", msg_body(system=5), "system: Input should be a valid string"),
    ("system image block", msg_body(system=[{"type": "image"}]), "system.0.type"),
    ("unknown field", msg_body(stream_options={"include_usage": True}), "stream_options: Extra inputs"),
    ("chat n", msg_body(n=2), "n: Extra inputs"),
    ("temperature above 1", msg_body(temperature=1.5), "temperature"),
    ("thinking budget small", msg_body(thinking={"type": "enabled", "budget_tokens": 100}), "budget_tokens"),
    ("thinking budget over max", msg_body(max_tokens=2000, thinking={"type": "enabled", "budget_tokens": 2000}),
     "greater than `thinking.budget_tokens`"),
    ("chat-shaped tool", msg_body(tools=[{"type": "function", "function": {"name": "f"}}]), "tools.0.name"),
]


@pytest.mark.parametrize("name,body,message", BAD_MESSAGES, ids=[b[0] for b in BAD_MESSAGES])
async def test_messages_refusals(aiohttp_client, name, body, message):
    client = await client_for(aiohttp_client)
    resp, raw = await post(client, MESSAGES, body)
    assert resp.status == 400, raw
    obj = json.loads(raw)
    assert obj["type"] == "error" and obj["error"]["type"] == "invalid_request_error"
    assert message in obj["error"]["message"]


async def test_unknown_model_404_in_each_shape(aiohttp_client):
    client = await client_for(aiohttp_client, aliases=("other",))
    resp, raw = await post(client, RESPONSES, resp_body(model="gpt-nope"))
    assert resp.status == 404 and json.loads(raw)["error"]["code"] == "model_not_found"
    resp, raw = await post(client, MESSAGES, msg_body(model="claude-nope"))
    assert resp.status == 404 and json.loads(raw)["error"] == {"type": "not_found_error",
                                                               "message": "model: claude-nope"}
    assert (await post(client, MESSAGES, msg_body(model="other")))[0].status == 200


async def test_anthropic_headers(aiohttp_client):
    client = await client_for(aiohttp_client, api_key="sk-ant")
    resp = await client.post(MESSAGES, json=MSG_BODY, headers={"x-api-key": "sk-ant"})
    assert resp.status == 400
    assert json.loads(await resp.read())["error"]["message"] == "anthropic-version: header is required"
    resp, raw = await post(client, MESSAGES, MSG_BODY)
    assert resp.status == 401 and json.loads(raw)["error"]["type"] == "authentication_error"
    resp, raw = await post(client, MESSAGES, MSG_BODY, headers={"x-api-key": "wrong"})
    assert resp.status == 401
    resp, raw = await post(client, MESSAGES, MSG_BODY, headers={"x-api-key": "sk-ant"})
    assert resp.status == 200 and resp.headers["request-id"]
    resp, raw = await post(client, RESPONSES, RESP_BODY)
    assert resp.status == 401 and json.loads(raw)["error"]["code"] == "invalid_api_key"
    resp, raw = await post(client, RESPONSES, RESP_BODY, headers={"Authorization": "Bearer sk-ant"})
    assert resp.status == 200 and resp.headers["x-request-id"]


async def test_context_window(aiohttp_client):
    client = await client_for(aiohttp_client, max_context=100)
    long = "word " * 200
    resp, raw = await post(client, RESPONSES, resp_body(input=long))
    assert resp.status == 400 and json.loads(raw)["error"]["code"] == "context_length_exceeded"
    resp, raw = await post(client, MESSAGES, msg_body(messages=[{"role": "user", "content": long}]))
    assert resp.status == 400 and "prompt is too long" in json.loads(raw)["error"]["message"]
    resp, raw = await post(client, MESSAGES, msg_body(max_tokens=95))
    assert resp.status == 400 and "exceed context limit" in json.loads(raw)["error"]["message"]


async def test_bodies_that_are_not_json(aiohttp_client):
    client = await client_for(aiohttp_client)
    for path in (RESPONSES, MESSAGES):
        resp = await client.post(path, data=b"{nope", headers={"Content-Type": "application/json", **VERSION})
        assert resp.status == 400
        resp = await client.post(path, data=b"hello", headers={"Content-Type": "text/plain", **VERSION})
        assert resp.status == 400
    obj = json.loads(await resp.read())
    assert obj["type"] == "error"


async def test_lenient_serves_what_strict_refuses(aiohttp_client):
    client = await client_for(aiohttp_client, lenient=True, output_tokens=3)
    resp, raw = await post(client, RESPONSES, resp_body(model="anything", max_tokens=3, n=2))
    assert resp.status == 200 and read_back(RESPONSES, raw)[0].text_events == 3
    resp, raw = await post(client, MESSAGES, msg_body(model="anything", max_tokens=..., extra=1))
    assert resp.status == 200 and read_back(MESSAGES, raw)[0].text_events == 3
    resp, raw = await post(client, MESSAGES, msg_body(messages=[]))
    assert resp.status == 400


async def test_stats_count_the_new_endpoints(aiohttp_client):
    client = await client_for(aiohttp_client, output_tokens=4)
    await post(client, RESPONSES, RESP_BODY)
    await post(client, MESSAGES, MSG_BODY)
    await post(client, MESSAGES, msg_body(stream=False))
    await post(client, MESSAGES, msg_body(model=...))
    stats = client.server.app[STATE_KEY].stats
    assert stats.requests == 4 and stats.streams_completed == 2 and stats.non_stream_completed == 1
    assert stats.tokens_sent == 12 and stats.by_status == {"200": 3, "400": 1}
