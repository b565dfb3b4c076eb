"""The mock's `n` and `logprobs`: several choices, interleaved one per chunk as
vLLM sends them, and deterministic fake logprobs, streamed and not, chat and
completions; read by the official `openai` SDK and by streamrun's own parser.

Also pinned: a reply with one choice and no logprobs is byte for byte what it
was before either existed, and the same request always gets the same bytes."""

from __future__ import annotations

import json
import re
import time

import aiohttp
import pytest

from runner.mock import MockConfig, build_app, serve
from runner.stream.protocol import StreamState, handle_data
from runner.stream.sse import SSEDecoder

openai = pytest.importorskip("openai")
from openai.types import Completion  # noqa: E402
from openai.types.chat import ChatCompletion, ChatCompletionChunk  # noqa: E402

FAST = dict(ttft=0.0, tokens_per_s=0.0)
MODEL = "mock-model"
USER = {"role": "user", "content": "Say hello"}
CHAT_PATH, COMPLETIONS_PATH = "/v1/chat/completions", "/v1/completions"


def sse(raw: bytes) -> list[object]:
    """An SSE body's data: JSON objects, and '[DONE]'."""
    out: list[object] = []
    for block in raw.decode("utf-8").split("\n\n"):
        if block:
            assert block.startswith("data: "), block
            data = block[len("data: "):]
            out.append(data if data == "[DONE]" else json.loads(data))
    return out


def normalize(raw: bytes) -> bytes:
    """Ids and the creation time aside."""
    raw = re.sub(rb'"id":"[^"]*"', b'"id":"X"', raw)
    return re.sub(rb'"created":\d+', b'"created":0', raw)


async def client_for(aiohttp_client, **config):
    return await aiohttp_client(build_app(MockConfig(**{**FAST, **config})))


async def post(client, body, path=CHAT_PATH):
    resp = await client.post(path, json=body)
    return resp, await resp.read()


@pytest.fixture
async def sdk():
    """An AsyncOpenAI client on a fresh mock in this event loop."""
    async with serve(MockConfig(**FAST)) as url:
        client = openai.AsyncOpenAI(base_url=url, api_key="x", max_retries=0, timeout=30)
        try:
            yield client
        finally:
            await client.close()


def check_chat_entry(entry, top: int) -> None:
    """One chat logprobs entry as the SDK parsed it."""
    assert entry.token and entry.logprob <= 0
    assert entry.bytes == list(entry.token.encode("utf-8"))
    assert len(entry.top_logprobs) == top
    lps = [t.logprob for t in entry.top_logprobs]
    assert lps == sorted(lps, reverse=True) and all(lp <= 0 for lp in lps)
    assert len({t.token for t in entry.top_logprobs}) == top
    for t in entry.top_logprobs:
        assert t.bytes == list(t.token.encode("utf-8"))
    if top:
        assert (entry.token, entry.logprob) in [(t.token, t.logprob) for t in entry.top_logprobs]


# ----------------------------------------------------------------- the openai SDK, streamed


async def test_sdk_streams_chat_n2_with_logprobs(sdk):
    stream = await sdk.chat.completions.create(
        model=MODEL, messages=[USER], stream=True, n=2, logprobs=True, top_logprobs=2, max_tokens=12,
        stream_options={"include_usage": True},
    )
    texts, tokens, finish, roles, order, usage = {}, {}, {}, [], [], None
    async for chunk in stream:
        assert isinstance(chunk, ChatCompletionChunk)
        if not chunk.choices:
            usage = chunk.usage
            continue
        assert len(chunk.choices) == 1  # one choice per chunk, as vLLM sends them
        choice = chunk.choices[0]
        i = choice.index
        if choice.delta.role:
            assert choice.delta.role == "assistant" and choice.delta.content == ""
            roles.append(i)
        elif choice.finish_reason:
            assert i not in finish and choice.logprobs is None
            finish[i] = choice.finish_reason
        else:
            assert choice.delta.content and choice.finish_reason is None
            texts[i] = texts.get(i, "") + choice.delta.content
            entries = choice.logprobs.content
            assert len(entries) == 1 and choice.logprobs.refusal is None
            check_chat_entry(entries[0], 2)
            assert entries[0].token == choice.delta.content
            tokens[i] = tokens.get(i, 0) + 1
            order.append(i)
    assert roles == [0, 1]
    assert set(texts) == {0, 1} and texts[0] != texts[1] and all(texts.values())
    assert set(finish) == {0, 1} and finish[0] == "length"
    assert order[:2] == [0, 1] and order[2:4] == [0, 1]  # interleaved, choice 0 first
    assert tokens[0] == 12
    assert usage is not None and usage.completion_tokens == tokens[0] + tokens[1]
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


async def test_sdk_streams_completions_n2_with_logprobs(sdk):
    stream = await sdk.completions.create(
        model=MODEL, prompt="Say hello", stream=True, n=2, logprobs=2, max_tokens=10,
        stream_options={"include_usage": True},
    )
    texts, tokens, finish, usage = {}, {}, {}, None
    async for chunk in stream:
        assert isinstance(chunk, Completion)
        if not chunk.choices:
            usage = chunk.usage
            continue
        assert len(chunk.choices) == 1
        choice = chunk.choices[0]
        i = choice.index
        if choice.finish_reason:
            assert choice.text == "" and choice.logprobs is None
            finish[i] = choice.finish_reason
            continue
        lp = choice.logprobs
        assert lp.tokens == [choice.text] and len(lp.token_logprobs) == 1 and lp.token_logprobs[0] <= 0
        assert len(lp.top_logprobs) == 1 and len(lp.top_logprobs[0]) == 2
        assert lp.top_logprobs[0].get(choice.text) == lp.token_logprobs[0]
        assert list(lp.top_logprobs[0].values()) == sorted(lp.top_logprobs[0].values(), reverse=True)
        assert lp.text_offset == [len(texts.get(i, ""))]
        texts[i] = texts.get(i, "") + choice.text
        tokens[i] = tokens.get(i, 0) + 1
    assert set(texts) == {0, 1} and texts[0] != texts[1]
    assert set(finish) == {0, 1}
    assert usage.completion_tokens == sum(tokens.values())


# ----------------------------------------------------------------- the openai SDK, not streamed


async def test_sdk_chat_not_streamed_n2_matches_the_stream(sdk):
    kwargs = dict(model=MODEL, messages=[USER], n=2, logprobs=True, top_logprobs=3, max_tokens=20)
    reply = await sdk.chat.completions.create(**kwargs)
    assert isinstance(reply, ChatCompletion)
    assert [c.index for c in reply.choices] == [0, 1]
    for c in reply.choices:
        assert c.message.role == "assistant" and c.message.content
        assert c.finish_reason in ("stop", "length")
        assert "".join(e.token for e in c.logprobs.content) == c.message.content
        for entry in c.logprobs.content:
            check_chat_entry(entry, 3)
    assert reply.usage.completion_tokens == sum(len(c.logprobs.content) for c in reply.choices)

    streamed: dict[int, list] = {0: [], 1: []}
    async for chunk in await sdk.chat.completions.create(**kwargs, stream=True):
        for c in chunk.choices:
            if c.logprobs:
                streamed[c.index] += c.logprobs.content
    for c in reply.choices:  # the same text and the same logprobs, streamed or not
        assert [e.model_dump() for e in streamed[c.index]] == [e.model_dump() for e in c.logprobs.content]


async def test_sdk_completions_not_streamed_n2(sdk):
    reply = await sdk.completions.create(model=MODEL, prompt="Say hello", n=2, logprobs=1, max_tokens=8)
    assert [c.index for c in reply.choices] == [0, 1]
    for c in reply.choices:
        lp = c.logprobs
        assert "".join(lp.tokens) == c.text
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == len(lp.text_offset)
        for tok, off, top in zip(lp.tokens, lp.text_offset, lp.top_logprobs, strict=True):
            assert c.text[off:off + len(tok)] == tok and len(top) == 1
    assert reply.usage.completion_tokens == sum(len(c.logprobs.tokens) for c in reply.choices)
    plain = await sdk.completions.create(model=MODEL, prompt="Say hello", n=2, max_tokens=8)
    assert [c.logprobs for c in plain.choices] == [None, None]
    assert [c.text for c in plain.choices] == [c.text for c in reply.choices]


# ----------------------------------------------------------------- the wire, without the SDK


async def test_choices_have_their_own_lengths_and_finish_reasons(aiohttp_client):
    client = await client_for(aiohttp_client)
    body = {"model": MODEL, "messages": [USER], "stream": True, "n": 4, "max_tokens": 40,
            "stream_options": {"include_usage": True}}
    _, raw = await post(client, body)
    events = sse(raw)
    assert events[-1] == "[DONE]"
    usage = events[-2]["usage"]
    chunks = events[:-2]
    counts, finish = {}, {}
    for c in chunks:
        (choice,) = c["choices"]
        if choice["delta"].get("content"):
            counts[choice["index"]] = counts.get(choice["index"], 0) + 1
        if choice["finish_reason"]:
            finish[choice["index"]] = choice["finish_reason"]
    # Role chunks first, then content, then the finish chunks in index order.
    assert [c["choices"][0]["index"] for c in chunks[:4]] == [0, 1, 2, 3]
    assert all("role" in c["choices"][0]["delta"] for c in chunks[:4])
    assert [c["choices"][0]["index"] for c in chunks[-4:]] == [0, 1, 2, 3]
    assert counts[0] == 40 and finish[0] == "length"
    assert all(counts[i] <= 40 and (finish[i] == "length") == (counts[i] == 40) for i in range(4))
    assert set(finish.values()) == {"length", "stop"}  # this prompt's choices differ
    assert usage["completion_tokens"] == sum(counts.values())
    # Event j of every choice follows event j of choice 0, before event j + 1 of any.
    content = [c["choices"][0]["index"] for c in chunks[4:-4]]
    position, seen = [], {}
    for i in content:
        seen[i] = seen.get(i, 0) + 1
        position.append(seen[i])
    assert position == sorted(position)
    assert all(content[k] == 0 for k in range(len(content)) if k == 0 or position[k] != position[k - 1])
    stats = await (await client.get("/mock/stats")).json()
    assert stats["tokens_sent"] == usage["completion_tokens"]


async def test_streamrun_parser_assembles_the_choices(aiohttp_client):
    client = await client_for(aiohttp_client, tokens_per_chunk=3)
    body = {"model": MODEL, "messages": [USER], "stream": True, "n": 3, "max_tokens": 16, "logprobs": True,
            "top_logprobs": 1, "stream_options": {"include_usage": True}}
    _, raw = await post(client, body)
    state, decoder = StreamState(), SSEDecoder()
    for event in decoder.feed(raw):
        handle_data(state, event.data)
    assert state.done
    json_reply = json.loads((await post(client, {**body, "stream": False, "stream_options": None}))[1])
    got = [state, *(state.others[i] for i in sorted(state.others))]  # choice 0 is the state's own fields
    assert [c.text for c in got] == [c["message"]["content"] for c in json_reply["choices"]]
    assert [c.finish_reason for c in got] == [c["finish_reason"] for c in json_reply["choices"]]
    assert [c.logprobs for c in got] == [c["logprobs"]["content"] for c in json_reply["choices"]]
    assert state.usage["completion_tokens"] == sum(len(c.logprobs) for c in got)
    # Three tokens per chunk: each content chunk lists one logprobs entry per token.
    for e in sse(raw)[:-2]:
        choice = e["choices"][0]
        if choice["delta"].get("content"):
            entries = choice["logprobs"]["content"]
            assert 1 <= len(entries) <= 3 and "".join(x["token"] for x in entries) == choice["delta"]["content"]


async def test_completions_tokens_per_chunk_offsets(aiohttp_client):
    client = await client_for(aiohttp_client, tokens_per_chunk=4)
    body = {"model": MODEL, "prompt": "Once", "stream": True, "n": 2, "max_tokens": 10, "logprobs": 0}
    _, raw = await post(client, body, COMPLETIONS_PATH)
    texts: dict[int, str] = {}
    for e in sse(raw)[:-1]:
        (choice,) = e["choices"]
        if choice["finish_reason"]:
            continue
        lp, i = choice["logprobs"], choice["index"]
        before = texts.get(i, "")
        assert "".join(lp["tokens"]) == choice["text"] and lp["top_logprobs"] == [{}] * len(lp["tokens"])
        assert lp["text_offset"][0] == len(before)
        texts[i] = before + choice["text"]
        for tok, off in zip(lp["tokens"], lp["text_offset"], strict=True):
            assert texts[i][off:off + len(tok)] == tok


async def test_n_and_logprobs_timing_follows_choice_0(aiohttp_client):
    """Choice 1's token j leaves with choice 0's, never before its due time
    (lower bounds only: nothing here assumes a speed)."""
    client = await client_for(aiohttp_client, ttft=0.05, tokens_per_s=50.0)
    body = {"model": MODEL, "messages": [USER], "stream": True, "n": 2, "max_tokens": 3, "logprobs": True}
    resp = await client.post(CHAT_PATH, json=body)
    started = time.monotonic()
    arrivals: dict[int, list[float]] = {0: [], 1: []}
    buf = b""
    async for piece in resp.content.iter_any():
        now = time.monotonic()
        buf += piece
        while b"\n\n" in buf:
            block, buf = buf.split(b"\n\n", 1)
            if block != b"data: [DONE]":
                (choice,) = json.loads(block[6:])["choices"]
                if choice["delta"].get("content"):
                    arrivals[choice["index"]].append(now - started)
    assert len(arrivals[0]) == len(arrivals[1]) == 3
    for i in (0, 1):
        for j, t in enumerate(arrivals[i]):
            assert t >= 0.05 + j * 0.02 - 0.01
    assert all(a <= b for a, b in zip(arrivals[0], arrivals[1], strict=True))


# ----------------------------------------------------------------- n = 1 unchanged, determinism

HEAD = '{"id":"X","object":"%s","created":0,"model":"mock-model","system_fingerprint":"fp_mock","choices":['


def frame(obj: str, choice: str, tail: str = "]}") -> str:
    return "data: " + HEAD % obj + choice + tail + "\n\n"


def chat_content(text: str) -> str:
    return '{"index":0,"delta":{"content":"' + text + '"},"logprobs":null,"finish_reason":null}'


# Captured from the mock before n and logprobs existed.
CHAT_ONE = "".join([
    frame("chat.completion.chunk", '{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,'
                                   '"finish_reason":null}'),
    *(frame("chat.completion.chunk", chat_content(t)) for t in ("queue latency data", " limit naïve server",
                                                                " مرحبا 日本語 async", " €")),
    frame("chat.completion.chunk", '{"index":0,"delta":{},"logprobs":null,"finish_reason":"length"}'),
    "data: [DONE]\n\n",
])
COMPLETION_ONE = "".join([
    *(frame("text_completion", '{"index":0,"text":"' + t + '","logprobs":null,"finish_reason":null}', '],"usage":null}')
      for t in ("queue", " latency", " data", " limit", " naïve")),
    frame("text_completion", '{"index":0,"text":"","logprobs":null,"finish_reason":"length"}', '],"usage":null}'),
    frame("text_completion", "", '],"usage":{"prompt_tokens":3,"completion_tokens":5,"total_tokens":8}}'),
    "data: [DONE]\n\n",
])


@pytest.mark.parametrize("extra", [{}, {"n": 1}, {"n": 1, "logprobs": False}, {"n": None, "logprobs": None}])
async def test_one_choice_without_logprobs_is_byte_for_byte_unchanged(aiohttp_client, extra):
    client = await client_for(aiohttp_client, tokens_per_chunk=3)
    _, raw = await post(client, {"model": MODEL, "messages": [USER], "stream": True, "max_tokens": 10, **extra})
    assert normalize(raw).decode() == CHAT_ONE
    client = await client_for(aiohttp_client)
    body = {"model": MODEL, "prompt": "Say hello", "stream": True, "max_tokens": 5,
            "stream_options": {"include_usage": True}, **extra}
    if extra.get("logprobs") is False:
        del body["logprobs"]  # a boolean is no completions logprobs
    _, raw = await post(client, body, COMPLETIONS_PATH)
    assert normalize(raw).decode() == COMPLETION_ONE


@pytest.mark.parametrize("path, body", [
    (CHAT_PATH, {"messages": [USER], "n": 3, "logprobs": True, "top_logprobs": 5}),
    (CHAT_PATH, {"messages": [USER], "n": 2}),
    (COMPLETIONS_PATH, {"prompt": "Say hello", "n": 3, "logprobs": 5}),
    (COMPLETIONS_PATH, {"prompt": ["a", "b"], "logprobs": 2}),
])
@pytest.mark.parametrize("stream", [True, False])
async def test_same_request_same_bytes(aiohttp_client, path, body, stream):
    client = await client_for(aiohttp_client, output_tokens=24)
    body = {"model": MODEL, "stream": stream, **body}
    first = normalize((await post(client, body, path))[1])
    again = normalize((await post(client, body, path))[1])
    other = await client_for(aiohttp_client, output_tokens=24)  # a fresh server, too
    assert first == again == normalize((await post(other, body, path))[1])
    if "messages" in body:  # another prompt, other text
        changed = {**body, "messages": [{"role": "user", "content": "Something else"}]}
        assert normalize((await post(client, changed, path))[1]) != first


# ----------------------------------------------------------------- refusals

MISSING, TYPE, VALUE = "missing_required_parameter", "invalid_type", "invalid_value"
ABOVE, BELOW = "integer_above_max_value", "integer_below_min_value"
CHAT = {"model": MODEL, "messages": [USER], "stream": True}
COMPLETION = {"model": MODEL, "prompt": "Say hello", "stream": True}
BAD = [
    ("n above 8", CHAT_PATH, {**CHAT, "n": 9}, ABOVE, "n"),
    ("completions n above 8", COMPLETIONS_PATH, {**COMPLETION, "n": 100}, ABOVE, "n"),
    ("chat logprobs an integer", CHAT_PATH, {**CHAT, "logprobs": 1}, TYPE, "logprobs"),
    ("chat logprobs a string", CHAT_PATH, {**CHAT, "logprobs": "true"}, TYPE, "logprobs"),
    ("top_logprobs 21", CHAT_PATH, {**CHAT, "logprobs": True, "top_logprobs": 21}, ABOVE, "top_logprobs"),
    ("top_logprobs -1", CHAT_PATH, {**CHAT, "logprobs": True, "top_logprobs": -1}, BELOW, "top_logprobs"),
    ("top_logprobs a float", CHAT_PATH, {**CHAT, "logprobs": True, "top_logprobs": 1.5}, TYPE, "top_logprobs"),
    ("top_logprobs a boolean", CHAT_PATH, {**CHAT, "logprobs": True, "top_logprobs": True}, TYPE, "top_logprobs"),
    ("top_logprobs without logprobs", CHAT_PATH, {**CHAT, "top_logprobs": 2}, VALUE, "top_logprobs"),
    ("top_logprobs with logprobs false", CHAT_PATH, {**CHAT, "logprobs": False, "top_logprobs": 0}, VALUE,
     "top_logprobs"),
    ("completions logprobs 6", COMPLETIONS_PATH, {**COMPLETION, "logprobs": 6}, ABOVE, "logprobs"),
    ("completions logprobs -1", COMPLETIONS_PATH, {**COMPLETION, "logprobs": -1}, BELOW, "logprobs"),
    ("completions logprobs a boolean", COMPLETIONS_PATH, {**COMPLETION, "logprobs": True}, TYPE, "logprobs"),
    ("completions logprobs a float", COMPLETIONS_PATH, {**COMPLETION, "logprobs": 2.0}, TYPE, "logprobs"),
]


@pytest.mark.parametrize("path, body, code, param", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
async def test_bad_n_and_logprobs_are_400(aiohttp_client, path, body, code, param):
    client = await client_for(aiohttp_client)
    resp, raw = await post(client, body, path)
    assert resp.status == 400, raw
    error = json.loads(raw)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    assert f"'{param}'" in error["message"]


@pytest.mark.parametrize("path, body", [
    (CHAT_PATH, {**CHAT, "n": 8, "logprobs": True, "top_logprobs": 20}),
    (CHAT_PATH, {**CHAT, "logprobs": True, "top_logprobs": None}),
    (CHAT_PATH, {**CHAT, "logprobs": False, "top_logprobs": None}),
    (COMPLETIONS_PATH, {**COMPLETION, "n": 8, "logprobs": 5}),
    (COMPLETIONS_PATH, {**COMPLETION, "logprobs": 0, "top_logprobs": 99}),  # not a completions field: ignored
])
async def test_good_n_and_logprobs_pass(aiohttp_client, path, body):
    client = await client_for(aiohttp_client, output_tokens=3)
    resp, raw = await post(client, body, path)
    assert resp.status == 200, raw
    assert sse(raw)[-1] == "[DONE]"


async def test_lenient_serves_what_it_can(aiohttp_client):
    client = await client_for(aiohttp_client, lenient=True, output_tokens=2)
    resp, raw = await post(client, {**CHAT, "n": 0, "logprobs": 1, "top_logprobs": 50})
    assert resp.status == 200
    choices = {e["choices"][0]["index"] for e in sse(raw)[:-1]}
    assert choices == {0}
    assert all(e["choices"][0]["logprobs"] is None for e in sse(raw)[:-1])
    resp, raw = await post(client, {**COMPLETION, "logprobs": 9}, COMPLETIONS_PATH)
    assert resp.status == 200
    assert len(sse(raw)[0]["choices"][0]["logprobs"]["top_logprobs"][0]) == 5  # clamped to 5
    resp, raw = await post(client, {**CHAT, "n": 9})  # more choices than the mock serves
    assert resp.status == 400


# ----------------------------------------------------------------- faults with several choices


async def test_error_event_and_drop_cut_every_choice(aiohttp_client):
    client = await client_for(aiohttp_client, output_tokens=8)
    body = {**CHAT, "n": 2, "logprobs": True, "mock": {"key": "f", "faults": ["error_event", "drop"]}}
    _, raw = await post(client, body)
    events = sse(raw)
    assert events[-1]["error"]["type"] == "server_error" and "[DONE]" not in events
    content = [e["choices"][0]["index"] for e in events[:-1] if e["choices"][0]["delta"].get("content")]
    assert content and content.count(0) == content.count(1) < 8
    resp = await client.post(CHAT_PATH, json=body)
    with pytest.raises(aiohttp.ClientPayloadError):
        await resp.read()
    stats = await (await client.get("/mock/stats")).json()
    assert (stats["streams_errored"], stats["streams_dropped"]) == (1, 1)
