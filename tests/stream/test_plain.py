"""The chat hot path (runner.stream.plain) against the reference (protocol.handle_data).

`apply_plain` takes runs of plain content chunks and hands every other event
to `handle_data`, as the client does; whatever the events, the outcome must
be the one `handle_data` alone gives: the same state (text parts, reasoning,
tool calls, finish_reason, usage, model, counters), the same per-event
"carried text" flags (TTFT and ITL come from them) and the same error.
"""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.stream import plain
from runner.stream.errors import RequestError
from runner.stream.protocol import StreamState, handle_data
from tests.helpers import json_values


def snapshot(state: StreamState) -> tuple:
    others = {i: (c.text_parts, c.reasoning_parts, c.tool_calls, c.finish_reason, c.logprobs)
              for i, c in (state.others or {}).items()}
    return (state.text_parts, state.reasoning_parts, state.tool_calls, state.finish_reason, state.logprobs,
            state.usage, state.model, state.response_id, state.done, state.events, state.text_events, others)


def reference(datas: list[bytes]) -> tuple:
    """Every event through handle_data, as the decoder's text (what the client did before)."""
    state, carried, error = StreamState(), [], None
    try:
        for data in datas:
            carried.append(handle_data(state, data.decode("utf-8", "replace")))
            if state.done:
                break
    except RequestError as exc:
        error = (type(exc), str(exc))
    return snapshot(state), carried, error


def hot(apply, datas: list[bytes]) -> tuple:
    """The client's loop over one read's events: runs of the hot path, handle_data for the rest."""
    state, carried, error = StreamState(), [], None
    i, end = 0, len(datas)
    try:
        while True:
            events0, text0 = state.events, state.text_events
            j = apply(state, datas, i)
            assert i <= j <= end
            texts = state.text_events - text0
            assert state.events - events0 == j - i == texts + (1 if state.done else 0)
            carried += [True] * texts + ([False] if state.done else [])
            if j == end or state.done:
                break
            carried.append(handle_data(state, datas[j].decode("utf-8", "replace")))
            if state.done:
                break
            i = j + 1
    except RequestError as exc:
        error = (type(exc), str(exc))
    return snapshot(state), carried, error


def check(datas: list[bytes]) -> None:
    assert hot(plain.apply_plain, datas) == reference(datas)


def chunk(content="x", **top) -> dict:
    return {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"content": content}, "logprobs": None, "finish_reason": None}],
            **top}


PLAIN = orjson.dumps(chunk("hello"))
ROLE = orjson.dumps(chunk("", choices=[{"index": 0, "delta": {"role": "assistant", "content": ""}}]))


def test_a_usual_stream_takes_the_hot_path_after_the_first_chunk():
    datas = [ROLE, *(orjson.dumps(chunk(t)) for t in ("Hel", "lo", " wörld 🙂")),
             orjson.dumps(chunk(None, choices=[{"index": 0, "delta": {}, "finish_reason": "stop"}])),
             b'{"id":"c1","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":3}}', b"[DONE]", PLAIN]
    check(datas)
    apply, state = plain.apply_plain, StreamState()
    assert apply(state, datas) == 0  # no model yet: the first chunk is handle_data's
    handle_data(state, ROLE.decode())
    assert apply(state, datas, 1) == 4  # three plain chunks, then finish_reason
    assert state.text == "Hello wörld 🙂" and state.text_events == 3 and state.events == 4
    assert apply(state, datas, 6) == 7 and state.done and state.events == 5  # [DONE], and no further


# Edge payloads spliced in where a plain chunk would be: each must come out as handle_data says.
EDGES = [
    b'{"id":"c1","model":"m","choices":[{"delta":{"content":"a","content":"b"}}]}',  # duplicate keys: last wins
    b'{"choices":[{"delta":{"content":"a"}}],"choices":[]}',
    b'{"created":1e999,"model":"m","choices":[{"delta":{"content":"a"}}]}',  # out of double range, unread
    b'{"created":-1e400,"choices":[{"delta":{"content":"a"}}]}',
    b'{"created":' + b"9" * 400 + b',"choices":[{"delta":{"content":"a"}}]}',
    b'{"created":' + b"9" * 5000 + b',"choices":[{"delta":{"content":"a"}}]}',
    b'{"created":1e-400,"choices":[{"delta":{"content":"a"}}]}',
    b'{"created":18446744073709551616,"choices":[{"delta":{"content":"a"}}]}',
    b'{"x":"\\ud800","choices":[{"delta":{"content":"a"}}]}',  # lone surrogate: malformed
    b'{"choices":[{"delta":{"content":"\\udc00"}}]}',
    b'{"choices":[{"delta":{"content":"\\ud83d\\ude00"}}]}',
    b'{"x":NaN,"choices":[{"delta":{"content":"a"}}]}',
    b'{"x":"\xff","choices":[{"delta":{"content":"a"}}]}',  # invalid UTF-8: replaced, not refused
    b'{"choices":[{"delta":{"content":"a\xe4\xb8"}}]}',
    b'\xef\xbb\xbf{"choices":[{"delta":{"content":"a"}}]}',
    b'{"x":' + b"[" * 600 + b"]" * 600 + b',"y":1e999,"choices":[{"delta":{"content":"a"}}]}',
    b'{"x":[[{"k":"\\ud800"}]],"y":1e999,"choices":[{"delta":{"content":"a"}}]}',
    b'{"x":["\\ud83d\\ude00"],"y":1e999,"choices":[{"delta":{"content":"a"}}]}',
    b'{"choices":[{"delta":{"content":"' + b"long " * 600 + b'"}}]}',
    b'{"x":' + b"[" * 990 + b"]" * 990 + b',"choices":[{"delta":{"content":"a"}}]}',
    b'{"x":' + b"[" * 1030 + b"]" * 1030 + b',"choices":[{"delta":{"content":"a"}}]}',
    b' {"choices":[{"delta":{"content":"a"}}]} ',
    b'{"choices":[{"delta":{"content":"a"}}]}x',
    b'{"choices":[{"delta":{"content":"a"},"index":false}]}',
    b'{"choices":[{"delta":{"content":"a"},"index":0.0}]}',
    b'{"choices":[{"delta":{"content":"a"},"index":"0"}]}',
    b'{"choices":[{"delta":{"content":"a"},"index":1}]}',
    b'{"choices":[{"delta":{"content":"a","role":"assistant"}}]}',
    b'{"choices":[{"delta":{"content":"a","reasoning_content":"r"}}]}',
    b'{"choices":[{"delta":{"content":"a","reasoning_content":5}}]}',
    b'{"choices":[{"delta":{"content":"a","reasoning":""}}]}',
    b'{"choices":[{"delta":{"content":"a","tool_calls":[]}}]}',
    b'{"choices":[{"delta":{"content":"a","tool_calls":[{"index":0,"function":{"name":"f"}}]}}]}',
    b'{"choices":[{"delta":{"content":5}}]}',
    b'{"choices":[{"delta":{"content":""}}]}',
    b'{"choices":[{"delta":null,"text":"t"}]}',
    b'{"choices":[{"text":"t","logprobs":{"tokens":["t"]}}]}',
    b'{"choices":[{"text":""}]}',
    b'{"choices":[{"delta":"x"}]}',
    b'{"choices":[["x"]]}',
    b'{"choices":["x"]}',
    b'{"choices":{"a":1}}',
    b'{"choices":"x"}',
    b'{"choices":[{"delta":{"content":"a"},"finish_reason":"stop"}]}',
    b'{"choices":[{"delta":{"content":"a"},"finish_reason":5}]}',
    b'{"choices":[{"delta":{"content":"a"},"logprobs":{"content":[{"token":"a"}]}}]}',
    b'{"choices":[{"delta":{"content":"a"},"logprobs":{}}]}',
    b'{"choices":[{"delta":{"content":"a"}}],"usage":{"completion_tokens":1}}',
    b'{"choices":[{"delta":{"content":"a"}}],"usage":{}}',
    b'{"choices":[{"delta":{"content":"a"}}],"error":{"message":"boom"}}',
    b'{"choices":[{"delta":{"content":"a"}}],"error":""}',
    b'{"choices":[{"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}}]}',
    b'{"choices":[]}', b"[]", b"[1]", b'"x"', b"5", b"null", b"", b"[DONE]", b"[DONE] ", b"data: x",
]


@pytest.mark.parametrize("edge", EDGES, ids=range(len(EDGES)))
def test_edge_payloads_between_plain_chunks(edge):
    check([ROLE, PLAIN, edge, PLAIN, b"[DONE]"])
    check([edge, PLAIN])  # before any model is known


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

absent = object()
texts = st.sampled_from(["x", "", " ", "日本", "🙂"]) | st.text(max_size=6)
values = st.sampled_from([None, 0, 1, False, True, "", "x", [], {}, 0.0, -1]) | json_values(max_leaves=4, finite=True)


def maybe(strategy):
    return st.just(absent) | strategy


@st.composite
def chunks(draw) -> bytes:
    """Chat and completions chunks near the plain shape, each field perturbed at times."""
    fields = {"id": maybe(st.sampled_from(["c1", "c2"]) | values), "model": maybe(st.sampled_from(["m"]) | values),
              "created": maybe(st.integers(-2**63, 2**64 - 1) | st.floats(allow_nan=False, allow_infinity=False)),
              "usage": maybe(values | st.fixed_dictionaries({"completion_tokens": st.integers(-1, 9)})),
              "error": maybe(values)}
    delta = draw(maybe(values | st.fixed_dictionaries(
        {"content": texts | values},
        optional={"role": st.just("assistant"), "reasoning_content": texts | values, "reasoning": texts | values,
                  "tool_calls": values | st.just([{"index": 0, "function": {"name": "f", "arguments": "{}"}}])})))
    choice = {"index": draw(maybe(st.sampled_from([0, 1, 0.0, False, "0", None]))), "delta": delta,
              "text": draw(maybe(texts | values)), "finish_reason": draw(maybe(st.sampled_from([None, "stop", "", 5]))),
              "logprobs": draw(maybe(st.sampled_from([None, {}, {"content": [{"token": "x"}]}, 5])))}
    choice = {k: v for k, v in choice.items() if v is not absent}
    choices = draw(st.sampled_from(["one", "one", "one", "none", "two", "other"]))
    obj = {k: v for k, v in ((k, draw(s)) for k, s in fields.items()) if v is not absent}
    obj["choices"] = {"one": [choice], "none": [], "two": [choice, choice], "other": draw(values)}[choices]
    return orjson.dumps(obj)


events = chunks() | st.sampled_from([PLAIN, ROLE, b"[DONE]", *EDGES]) | json_values(finite=True).map(orjson.dumps)


@FAST
@given(st.lists(events, max_size=8))
def test_any_events_come_out_as_handle_data_says(datas):
    check([ROLE, *datas])
    check(datas)


@FAST
@given(st.lists(st.tuples(st.integers(0, len(PLAIN)), st.binary(min_size=0, max_size=3)), min_size=1, max_size=3))
def test_a_plain_chunk_with_bytes_spliced_in(edits):
    data = PLAIN
    for at, insert in edits:  # insert, or overwrite as many bytes as inserted
        data = data[:at] + insert + data[at + (len(insert) if at % 2 else 0):]
    check([ROLE, PLAIN, data, PLAIN])


@FAST
@given(st.binary(max_size=40))
def test_arbitrary_bytes(data):
    check([ROLE, data, PLAIN])
