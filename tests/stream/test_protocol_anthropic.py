"""Anthropic's Messages protocol: request bodies, and event streams (as the API
reference publishes them) split at every byte through the SSE decoder."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.stream.errors import MalformedResponse, RequestError, ResponseTooLarge, StreamErrorEvent
from runner.stream.paths import InvalidRequestLine
from runner.stream.protocol import MAX_TOOL_CALLS, StreamState
from runner.stream.protocol_anthropic import (
    DEFAULT_VERSION,
    PATH,
    EventStreamState,
    apply_whole,
    build_body,
    handle_event,
    normalise_usage,
    paths,
)
from tests.helpers import check_named_events_typed, feed_named, json_values, named_outcome, sse_decode, sse_splits

START_USAGE = {"input_tokens": 25, "cache_creation_input_tokens": 0, "cache_read_input_tokens": 5,
               "output_tokens": 1}
MESSAGE = {"id": "msg_01", "type": "message", "role": "assistant", "content": [], "model": "claude-x",
           "stop_reason": None, "stop_sequence": None, "usage": START_USAGE}


def sse(events: list[tuple[str, dict]]) -> bytes:
    """Events as Anthropic writes them: `event:` line, `data:` line (with its `type`), blank line."""
    return "".join(f"event: {name}\ndata: {json.dumps({'type': name, **data}, ensure_ascii=False)}\n\n"
                   for name, data in events).encode()


def delta(index: int, **d) -> tuple[str, dict]:
    return "content_block_delta", {"index": index, "delta": d}


def finish_and_stop(reason: str, output_tokens: int = 15) -> list[tuple[str, dict]]:
    return [("message_delta", {"delta": {"stop_reason": reason, "stop_sequence": None},
                               "usage": {"output_tokens": output_tokens}}),
            ("message_stop", {})]


TEXT_STREAM = [
    ("message_start", {"message": MESSAGE}),
    ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
    ("ping", {}),
    delta(0, type="text_delta", text="Hé"),
    delta(0, type="text_delta", text="llo 🙂"),
    ("content_block_stop", {"index": 0}),
    *finish_and_stop("end_turn"),
]
THINKING_STREAM = [
    ("message_start", {"message": MESSAGE}),
    ("content_block_start", {"index": 0, "content_block": {"type": "thinking", "thinking": "", "signature": ""}}),
    delta(0, type="thinking_delta", thinking="Let me"),
    delta(0, type="thinking_delta", thinking=" think"),
    delta(0, type="signature_delta", signature="EqQBCgIYAhIM"),
    ("content_block_stop", {"index": 0}),
    ("content_block_start", {"index": 1, "content_block": {"type": "text", "text": ""}}),
    delta(1, type="text_delta", text="Answer"),
    ("content_block_stop", {"index": 1}),
    *finish_and_stop("max_tokens"),
]
TOOL_STREAM = [
    ("message_start", {"message": MESSAGE}),
    ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
    delta(0, type="text_delta", text="Checking"),
    ("content_block_stop", {"index": 0}),
    ("content_block_start", {"index": 1, "content_block": {"type": "tool_use", "id": "toolu_A",
                                                           "name": "get_weather", "input": {}}}),
    delta(1, type="input_json_delta", partial_json=""),
    delta(1, type="input_json_delta", partial_json='{"city": "Zü'),
    delta(1, type="input_json_delta", partial_json='rich"}'),
    ("content_block_stop", {"index": 1}),
    ("content_block_start", {"index": 2, "content_block": {"type": "tool_use", "id": "toolu_B", "name": "now",
                                                           "input": {}}}),
    delta(2, type="input_json_delta", partial_json="{}"),
    ("content_block_stop", {"index": 2}),
    *finish_and_stop("tool_use"),
]
ERROR_STREAM = [
    ("message_start", {"message": MESSAGE}),
    ("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}),
    delta(0, type="text_delta", text="Par"),
    ("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}}),
]
STREAMS = {"text": TEXT_STREAM, "thinking": THINKING_STREAM, "tools": TOOL_STREAM, "error": ERROR_STREAM}


def decode(chunks) -> list:
    return sse_decode(chunks)


splits = sse_splits


def run(events):
    return feed_named(handle_event, events)


outcome = named_outcome


@pytest.mark.parametrize("name", sorted(STREAMS))
def test_same_outcome_at_every_split(name):
    data = sse(STREAMS[name])
    reference = outcome(*run(decode([data]))[:2])
    for chunks in splits(data):
        assert outcome(*run(decode(chunks))[:2]) == reference, [len(c) for c in chunks][:3]


def test_text_stream():
    state, err, carried = run(decode([sse(TEXT_STREAM)]))
    assert err is None
    assert state.text == "Héllo 🙂" and state.reasoning is None and state.tool_calls is None
    assert state.finish_reason == "stop" and state.done
    assert state.model == "claude-x" and state.response_id == "msg_01"
    assert carried == [False, False, False, True, True, False, False, False]
    assert state.first_answer_event == 4 and state.text_events == 2
    assert state.usage == {**START_USAGE, "output_tokens": 15, "prompt_tokens": 30, "completion_tokens": 15,
                           "total_tokens": 45, "prompt_tokens_details": {"cached_tokens": 5}}


def test_thinking_kept_apart_and_first_answer_after_it():
    state, err, carried = run(decode([sse(THINKING_STREAM)]))
    assert err is None
    assert state.reasoning == "Let me think" and state.text == "Answer"
    assert carried.index(True) == 2  # TTFT: the first thinking delta
    assert state.first_answer_event == 8  # TTFAT: the first text delta
    assert state.finish_reason == "length"


def test_tool_use_assembled_by_block_index():
    state, err, _ = run(decode([sse(TOOL_STREAM)]))
    assert err is None
    assert state.text == "Checking"
    assert state.tool_calls == [
        {"id": "toolu_A", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'}},
        {"id": "toolu_B", "type": "function", "function": {"name": "now", "arguments": "{}"}},
    ]
    assert state.finish_reason == "tool_calls"


@pytest.mark.parametrize("reason,finish_reason", [("end_turn", "stop"), ("stop_sequence", "stop"),
                                                  ("max_tokens", "length"), ("tool_use", "tool_calls"),
                                                  ("pause_turn", "pause_turn")])
def test_stop_reasons(reason, finish_reason):
    state, _, _ = run(decode([sse([("message_start", {"message": MESSAGE}), *finish_and_stop(reason)])]))
    assert state.finish_reason == finish_reason


def test_error_event_is_a_retryable_stream_error():
    state, err, _ = run(decode([sse(ERROR_STREAM)]))
    assert isinstance(err, StreamErrorEvent) and err.retryable
    assert str(err) == "overloaded_error: Overloaded"
    assert state.text == "Par"


@pytest.mark.parametrize("data", ["", "not json", "[1]", '{"message": "plain"}'])
def test_error_event_with_any_data_is_a_stream_error(data):
    with pytest.raises(StreamErrorEvent):
        handle_event(EventStreamState(), "error", data)


def test_unnamed_events_use_the_data_type():
    data = sse(TEXT_STREAM).replace(b"event: ", b": was event ")
    state, err, _ = run(decode([data]))
    assert err is None and state.text == "Héllo 🙂" and state.done and state.finish_reason == "stop"


def test_usage_before_the_final_count_has_no_completion_tokens():
    state = EventStreamState()
    handle_event(state, "message_start", json.dumps({"message": MESSAGE}))
    assert state.usage["prompt_tokens"] == 30 and "completion_tokens" not in state.usage


def test_message_delta_usage_overrides_cumulatively():
    state = EventStreamState()
    handle_event(state, "message_start", json.dumps({"message": MESSAGE}))
    handle_event(state, "message_delta", json.dumps({"delta": {"stop_reason": "end_turn"},
                                                      "usage": {"input_tokens": 40, "output_tokens": 9,
                                                                "cache_read_input_tokens": None}}))
    assert state.usage["input_tokens"] == 40 and state.usage["cache_read_input_tokens"] == 5
    assert state.usage["prompt_tokens"] == 45 and state.usage["completion_tokens"] == 9
    assert state.usage["total_tokens"] == 54


def test_server_tool_input_is_output_but_no_tool_call():
    state = EventStreamState()
    handle_event(state, "content_block_start", json.dumps(
        {"index": 0, "content_block": {"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search",
                                       "input": {}}}))
    assert handle_event(state, "content_block_delta", json.dumps(
        {"index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"q":'}})) is True
    assert state.tool_calls is None


def test_tool_use_with_its_input_given_at_start():
    state = EventStreamState()
    handle_event(state, "content_block_start", json.dumps(
        {"index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {"a": 1}}}))
    assert state.tool_calls[0]["function"]["arguments"] == '{"a":1}'


def test_ping_and_unknown_events_ignored():
    state = EventStreamState()
    assert handle_event(state, "ping", '{"type": "ping"}') is False
    assert handle_event(state, "something_new", '{"x": 1}') is False
    assert handle_event(state, "content_block_delta", '{"index": 0, "delta": {"type": "citations_delta"}}') is False
    assert state.events == 3 and not state.done


@pytest.mark.parametrize("event,data", [
    ("content_block_delta", '{"index": 0, "delta": {"type": "text_delta", "text": 5}}'),
    ("content_block_delta", '{"index": 0, "delta": "x"}'),
    ("content_block_delta", '{"index": -1, "delta": {"type": "input_json_delta", "partial_json": "{"}}'),
    ("content_block_delta", '{"index": "0", "delta": {"type": "input_json_delta", "partial_json": "{"}}'),
    ("content_block_start", '{"index": 0, "content_block": []}'),
    ("content_block_start", '{"index": 0, "content_block": {"type": "tool_use", "name": 1}}'),
    ("content_block_start", '{"content_block": {"type": "text"}}'),
    ("message_start", '{"message": "m"}'),
    ("message_start", '{"message": {"usage": {"input_tokens": 1.5}}}'),
    ("message_delta", '{"delta": {"stop_reason": 1}}'),
    ("message_delta", '{"delta": {}, "usage": {"output_tokens": -3}}'),
    ("message_delta", '{"usage": {}}'),
    ("content_block_delta", "{not json"),
])
def test_wrong_shapes_are_malformed(event, data):
    with pytest.raises(MalformedResponse):
        handle_event(EventStreamState(), event, data)


def test_tool_call_bound():
    state = EventStreamState()
    block = {"type": "tool_use", "id": "t", "name": "f", "input": {}}
    for i in range(MAX_TOOL_CALLS):
        handle_event(state, "content_block_start", json.dumps({"index": i, "content_block": block}))
    with pytest.raises(ResponseTooLarge):
        handle_event(state, "content_block_start", json.dumps({"index": MAX_TOOL_CALLS, "content_block": block}))


def test_a_plain_stream_state_is_refused_loudly():
    with pytest.raises(TypeError):
        handle_event(StreamState(), "message_stop", "{}")


def test_deeply_nested_error_is_still_typed():
    nested = "[" * 1000 + "]" * 1000
    with pytest.raises(RequestError):
        handle_event(EventStreamState(), "error", '{"error": {"type": "x", "message": ' + nested + '}}')
    with pytest.raises(RequestError):
        handle_event(EventStreamState(), "content_block_start",
                     '{"index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "f", "input": {"a": '
                     + nested + '}}}')


EVENT_NAMES = ["message_start", "content_block_start", "content_block_delta", "content_block_stop",
               "message_delta", "message_stop", "ping", "error", "message", "", "anything"]
JSON = json_values()
KEYS = st.sampled_from(["type", "index", "delta", "content_block", "message", "usage", "text", "thinking",
                        "partial_json", "id", "name", "input", "stop_reason", "input_tokens", "output_tokens",
                        "cache_read_input_tokens", "error", "model"])
TYPES = st.sampled_from(["text", "thinking", "tool_use", "text_delta", "thinking_delta", "input_json_delta"])
SHAPED = st.recursive(JSON | TYPES, lambda inner: st.dictionaries(KEYS, inner, max_size=4), max_leaves=16)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(EVENT_NAMES), SHAPED), max_size=6))
def test_arbitrary_json_raises_only_typed_errors(events):
    check_named_events_typed(handle_event, events)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(EVENT_NAMES), st.text(max_size=40))
def test_arbitrary_text_raises_only_typed_errors(name, data):
    check_named_events_typed(handle_event, [(name, data)])


# -------------------------------------------------------------------- bodies


def test_constants():
    assert paths == (PATH,) == ("/v1/messages",)
    assert DEFAULT_VERSION == "2023-06-01"


def test_build_body_needs_max_tokens():
    line = {"messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(InvalidRequestLine, match="max_tokens"):
        build_body(line, defaults={}, model="m", include_usage=True)
    body = build_body(line, defaults={"max_tokens": 64}, model="m", include_usage=True)
    assert body == {**line, "max_tokens": 64, "model": "m", "stream": True}
    body = build_body(line, defaults={"max_completion_tokens": 32}, model=None, include_usage=False)
    assert body["max_tokens"] == 32 and "model" not in body
    assert build_body({**line, "max_tokens": 5}, defaults={"max_tokens": 64}, model="m",
                      include_usage=True)["max_tokens"] == 5
    for bad in (0, "10", 2.5, True):
        with pytest.raises(InvalidRequestLine, match="integer"):
            build_body({**line, "max_tokens": bad}, defaults={}, model="m", include_usage=True)


def test_defaults_translated():
    defaults = {"max_tokens": 100, "temperature": 0.5, "stream_options": {"include_usage": True}, "n": 2,
                "stop": "END", "seed": 1, "logprobs": True, "user": "u", "metadata": {"a": "b"},
                "tools": [{"type": "function", "function": {"name": "f", "description": "d",
                                                            "parameters": {"type": "object"}}}],
                "tool_choice": "required"}
    line = {"messages": [{"role": "user", "content": "hi"}], "top_k": 3}
    dropped = []
    body = build_body(line, defaults=defaults, model="m", include_usage=True,
                      on_drop=lambda key, why: dropped.append(key))
    assert body == {**line, "max_tokens": 100, "temperature": 0.5, "stop_sequences": ["END"],
                    "tools": [{"name": "f", "input_schema": {"type": "object"}, "description": "d"}],
                    "tool_choice": {"type": "any"}, "metadata": {"user_id": "u"}, "model": "m", "stream": True}
    assert sorted(dropped) == ["logprobs", "metadata", "n", "seed"]  # a default meets every API: never refused
    body = build_body({**line, "stop_sequences": ["x"], "tool_choice": {"type": "auto"}},
                      defaults={**defaults, "tool_choice": {"type": "function", "function": {"name": "f"}}},
                      model="m", include_usage=True)
    assert body["stop_sequences"] == ["x"] and body["tool_choice"] == {"type": "auto"}


def test_normalise_usage():
    assert normalise_usage({"input_tokens": 3, "output_tokens": 4, "cache_creation_input_tokens": 2}) == {
        "input_tokens": 3, "output_tokens": 4, "cache_creation_input_tokens": 2, "prompt_tokens": 5,
        "completion_tokens": 4, "total_tokens": 9}


# -------------------------------------------------------------------- a whole Message (stream ignored)

def whole(content: list, stop_reason: str, output_tokens: int = 15) -> dict:
    return {**MESSAGE, "content": content, "stop_reason": stop_reason,
            "usage": {**START_USAGE, "output_tokens": output_tokens}}


WHOLE = {
    "text": whole([{"type": "text", "text": "Héllo 🙂"}], "end_turn"),
    "thinking": whole([{"type": "thinking", "thinking": "Let me think", "signature": "EqQBCgIYAhIM"},
                       {"type": "text", "text": "Answer"}], "max_tokens"),
    "tools": whole([{"type": "text", "text": "Checking"},
                    {"type": "tool_use", "id": "toolu_A", "name": "get_weather", "input": {"city": "Zürich"}},
                    {"type": "tool_use", "id": "toolu_B", "name": "now", "input": {}}], "tool_use"),
}


def record_view(state) -> tuple:
    """What a record keeps of a reply (tool arguments as JSON values: a stream's spacing is the server's)."""
    calls = [{**c, "function": {**c["function"], "arguments": json.loads(c["function"]["arguments"])}}
             for c in state.tool_calls or []]
    return (state.text, state.reasoning, calls, state.finish_reason, state.usage, state.model, state.response_id)


@pytest.mark.parametrize("name", sorted(WHOLE))
def test_a_whole_message_gives_what_its_stream_gives(name):
    streamed, err, _ = run(decode([sse(STREAMS[name])]))
    assert err is None
    state = EventStreamState()
    apply_whole(state, json.loads(json.dumps(WHOLE[name])))
    assert record_view(state) == record_view(streamed) and state.done


def test_a_whole_answer_that_is_no_message_is_malformed():
    with pytest.raises(MalformedResponse):
        apply_whole(EventStreamState(), {"object": "chat.completion", "choices": []})
    with pytest.raises(MalformedResponse):
        apply_whole(EventStreamState(), whole([{"type": "text", "text": 5}], "end_turn"))


@given(json_values())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_a_whole_message_of_any_shape_raises_only_typed_errors(value):
    try:
        apply_whole(EventStreamState(), {"type": "message", "content": value, "usage": value, "stop_reason": value})
    except RequestError:
        pass
