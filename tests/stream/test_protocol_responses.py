"""The OpenAI Responses protocol: request bodies, and event streams (as the API
reference publishes them) split at every byte through the SSE decoder."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.stream.errors import MalformedResponse, ResponseTooLarge, StreamErrorEvent
from runner.stream.protocol import MAX_TOOL_CALLS, StreamState
from runner.stream.protocol_responses import (
    PATH,
    EventStreamState,
    apply_whole,
    build_body,
    handle_event,
    normalise_usage,
    paths,
)
from tests.helpers import check_named_events_typed, feed_named, json_values, named_outcome, sse_decode, sse_splits

RESPONSE = {"id": "resp_1", "object": "response", "created_at": 1, "status": "in_progress", "model": "gpt-x",
            "output": [], "usage": None, "error": None, "incomplete_details": None}
USAGE = {"input_tokens": 11, "input_tokens_details": {"cached_tokens": 3}, "output_tokens": 7,
         "output_tokens_details": {"reasoning_tokens": 4}, "total_tokens": 18}


def sse(events: list[tuple[str, dict]]) -> bytes:
    """Events as a Responses server writes them: `event:` line, `data:` line, blank line; numbered."""
    out = []
    for seq, (name, data) in enumerate(events):
        obj = {"type": name, "sequence_number": seq, **data}
        out.append(f"event: {name}\ndata: {json.dumps(obj, ensure_ascii=False)}\n\n")
    return "".join(out).encode()


def response(**fields) -> dict:
    return {"response": {**RESPONSE, **fields}}


MSG = {"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant", "content": []}
PART = {"type": "output_text", "text": "", "annotations": []}
TEXT_STREAM = [
    ("response.created", response()),
    ("response.in_progress", response()),
    ("response.output_item.added", {"output_index": 0, "item": MSG}),
    ("response.content_part.added", {"item_id": "msg_1", "output_index": 0, "content_index": 0, "part": PART}),
    ("response.output_text.delta", {"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Hé",
                                    "logprobs": []}),
    ("response.output_text.delta", {"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "llo 🙂",
                                    "logprobs": []}),
    ("response.output_text.done", {"item_id": "msg_1", "output_index": 0, "content_index": 0, "text": "Héllo 🙂"}),
    ("response.content_part.done", {"item_id": "msg_1", "output_index": 0, "content_index": 0,
                                    "part": {**PART, "text": "Héllo 🙂"}}),
    ("response.output_item.done", {"output_index": 0, "item": {**MSG, "status": "completed"}}),
    ("response.completed", response(status="completed", usage=USAGE)),
]
REASONING_STREAM = [
    ("response.created", response()),
    ("response.output_item.added", {"output_index": 0, "item": {"id": "rs_1", "type": "reasoning", "summary": []}}),
    ("response.reasoning_summary_part.added", {"item_id": "rs_1", "output_index": 0, "summary_index": 0,
                                               "part": {"type": "summary_text", "text": ""}}),
    ("response.reasoning_summary_text.delta", {"item_id": "rs_1", "output_index": 0, "summary_index": 0,
                                               "delta": "Think"}),
    ("response.reasoning_text.delta", {"item_id": "rs_1", "output_index": 0, "content_index": 0, "delta": "ing"}),
    ("response.output_item.done", {"output_index": 0, "item": {"id": "rs_1", "type": "reasoning", "summary": []}}),
    ("response.output_item.added", {"output_index": 1, "item": MSG}),
    ("response.output_text.delta", {"item_id": "msg_1", "output_index": 1, "content_index": 0, "delta": "Answer"}),
    ("response.completed", response(status="completed", usage=USAGE)),
]
CALL = {"id": "fc_1", "type": "function_call", "call_id": "call_A", "name": "get_weather", "arguments": "",
        "status": "in_progress"}
TOOL_STREAM = [
    ("response.created", response()),
    ("response.output_item.added", {"output_index": 0, "item": CALL}),
    ("response.function_call_arguments.delta", {"item_id": "fc_1", "output_index": 0, "delta": '{"city":'}),
    ("response.function_call_arguments.delta", {"item_id": "fc_1", "output_index": 0, "delta": ' "Zürich"}'}),
    ("response.function_call_arguments.done", {"item_id": "fc_1", "output_index": 0,
                                               "arguments": '{"city": "Zürich"}'}),
    ("response.output_item.done", {"output_index": 0,
                                   "item": {**CALL, "arguments": '{"city": "Zürich"}', "status": "completed"}}),
    ("response.output_item.added", {"output_index": 1, "item": {**CALL, "id": "fc_2", "call_id": "call_B",
                                                                "name": "get_time"}}),
    ("response.function_call_arguments.delta", {"item_id": "fc_2", "output_index": 1, "delta": "{}"}),
    ("response.completed", response(status="completed", usage=USAGE)),
]
INCOMPLETE_STREAM = [
    ("response.created", response()),
    ("response.output_text.delta", {"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Cut"}),
    ("response.incomplete", response(status="incomplete", incomplete_details={"reason": "max_output_tokens"},
                                     usage=USAGE)),
]
FAILED_STREAM = [
    ("response.created", response()),
    ("response.output_text.delta", {"item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Par"}),
    ("response.failed", response(status="failed", error={"code": "server_error", "message": "The model broke"})),
]
ERROR_STREAM = [
    ("response.created", response()),
    ("error", {"code": "rate_limit_exceeded", "message": "Slow down", "param": None}),
]


def decode(chunks) -> list:
    return sse_decode(chunks)


splits = sse_splits


def run(events):
    return feed_named(handle_event, events)


outcome = named_outcome


STREAMS = {"text": TEXT_STREAM, "reasoning": REASONING_STREAM, "tools": TOOL_STREAM, "incomplete": INCOMPLETE_STREAM,
           "failed": FAILED_STREAM, "error": ERROR_STREAM}


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
    assert state.model == "gpt-x" and state.response_id == "resp_1"
    assert carried == [False, False, False, False, True, True, False, False, False, False]
    assert state.events == 10 and state.text_events == 2
    assert state.first_answer_event == 5  # the first output_text.delta
    assert state.usage["prompt_tokens"] == 11 and state.usage["completion_tokens"] == 7
    assert state.usage["total_tokens"] == 18 and state.usage["input_tokens"] == 11  # the original kept
    assert state.usage["prompt_tokens_details"] == {"cached_tokens": 3}
    assert state.usage["completion_tokens_details"] == {"reasoning_tokens": 4}


def test_reasoning_kept_apart_and_first_answer_after_it():
    state, err, carried = run(decode([sse(REASONING_STREAM)]))
    assert err is None
    assert state.reasoning == "Thinking" and state.text == "Answer"
    assert carried.index(True) == 3  # TTFT: the first reasoning delta (0-based)
    assert state.first_answer_event == 8  # TTFAT: the first answer delta (1-based ordinal of state.events)
    assert state.text_events == 3


def test_tool_calls_assembled():
    state, err, carried = run(decode([sse(TOOL_STREAM)]))
    assert err is None
    assert state.tool_calls == [
        {"id": "call_A", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Zürich"}'}},
        {"id": "call_B", "type": "function", "function": {"name": "get_time", "arguments": "{}"}},
    ]
    assert state.finish_reason == "tool_calls" and state.text == "" and state.first_answer_event is None
    assert carried[:4] == [False, True, True, True]


def test_arguments_done_and_item_done_are_authoritative():
    events = [("response.output_item.added", {"output_index": 0, "item": CALL}),
              ("response.function_call_arguments.delta", {"item_id": "fc_1", "output_index": 0, "delta": '{"a'}),
              ("response.function_call_arguments.done", {"item_id": "fc_1", "output_index": 0, "arguments": '{"a":1}'}),
              ("response.output_item.done", {"output_index": 0, "item": {**CALL, "name": "renamed"}})]
    state, err, _ = run(decode([sse(events)]))
    assert err is None
    assert state.tool_calls == [{"id": "call_A", "type": "function",
                                 "function": {"name": "renamed", "arguments": '{"a":1}'}}]


def test_call_matched_by_output_index_and_done_only_calls():
    events = [("response.output_item.added", {"output_index": 0, "item": {**CALL, "id": None}}),
              ("response.function_call_arguments.delta", {"output_index": 0, "delta": "{}"}),
              ("response.output_item.done", {"output_index": 1, "item": {**CALL, "id": "fc_9", "call_id": "call_Z",
                                                                         "arguments": "[1]"}})]
    state, err, _ = run(decode([sse(events)]))
    assert err is None
    assert [c["id"] for c in state.tool_calls] == ["call_A", "call_Z"]
    assert [c["function"]["arguments"] for c in state.tool_calls] == ["{}", "[1]"]


def test_incomplete_is_length():
    state, err, _ = run(decode([sse(INCOMPLETE_STREAM)]))
    assert err is None and state.done
    assert state.finish_reason == "length" and state.text == "Cut"


def test_incomplete_other_reason_is_kept():
    events = [("response.incomplete", response(incomplete_details={"reason": "content_filter"}))]
    state, err, _ = run(decode([sse(events)]))
    assert state.finish_reason == "content_filter" and state.done
    state, err, _ = run(decode([sse([("response.incomplete", response())])]))
    assert state.finish_reason == "incomplete"


def test_failed_and_error_events_raise_stream_errors():
    state, err, _ = run(decode([sse(FAILED_STREAM)]))
    assert isinstance(err, StreamErrorEvent) and err.retryable
    assert "server_error" in str(err) and "The model broke" in str(err)
    assert state.text == "Par"  # kept as the partial answer
    _, err, _ = run(decode([sse(ERROR_STREAM)]))
    assert isinstance(err, StreamErrorEvent) and "rate_limit_exceeded: Slow down" in str(err)


@pytest.mark.parametrize("data", ["", "not json", "[1]", '{"error": {"message": "nested"}}'])
def test_error_event_with_any_data_is_a_stream_error(data):
    with pytest.raises(StreamErrorEvent):
        handle_event(EventStreamState(), "error", data)


def test_chat_style_error_object_in_any_event():
    with pytest.raises(StreamErrorEvent, match="overloaded"):
        handle_event(EventStreamState(), "message", '{"error": {"message": "overloaded"}}')


def test_unnamed_events_use_the_data_type():
    """A proxy that drops `event:` lines still works: the data's `type` names the event."""
    data = sse(TEXT_STREAM).replace(b"event: ", b": was event ")
    state, err, _ = run(decode([data]))
    assert err is None and state.text == "Héllo 🙂" and state.done and state.finish_reason == "stop"


def test_done_marker_tolerated_and_unknown_events_ignored():
    state = EventStreamState()
    assert handle_event(state, "response.web_search_call.searching", '{"item_id": "ws_1"}') is False
    assert handle_event(state, "keepalive", "") is False
    assert handle_event(state, "message", "[DONE]") is False
    assert state.done and state.events == 3


def test_refusal_counts_as_the_answer():
    state = EventStreamState()
    assert handle_event(state, "response.refusal.delta", '{"delta": "I can\'t"}') is True
    assert state.text == "I can't" and state.first_answer_event == 1


def test_logprobs_collected_unless_dropped():
    data = json.dumps({"delta": "a", "logprobs": [{"token": "a", "logprob": -0.1, "top_logprobs": []}]})
    state = EventStreamState()
    handle_event(state, "response.output_text.delta", data)
    assert state.logprobs == [{"token": "a", "logprob": -0.1, "top_logprobs": []}]
    state = EventStreamState(keep_logprobs=False)
    handle_event(state, "response.output_text.delta", data)
    assert state.logprobs is None


@pytest.mark.parametrize("event,data", [
    ("response.output_text.delta", '{"delta": 5}'),
    ("response.output_text.delta", '{"delta": "a", "logprobs": {"x": 1}}'),
    ("response.reasoning_summary_text.delta", '{"delta": ["a"]}'),
    ("response.function_call_arguments.delta", '{"delta": {}}'),
    ("response.output_item.added", '{"item": "x"}'),
    ("response.output_item.added", '{"item": {"type": "function_call", "name": 3}}'),
    ("response.completed", '{"response": []}'),
    ("response.completed", '{"response": {"usage": {"input_tokens": "many"}}}'),
    ("response.completed", '{"response": {"usage": [1]}}'),
    ("response.incomplete", '{"response": {"incomplete_details": "x"}}'),
    ("response.incomplete", '{"response": {"incomplete_details": {"reason": 7}}}'),
    ("response.output_text.delta", "{not json"),
    ("response.output_text.delta", '"a string"'),
])
def test_wrong_shapes_are_malformed(event, data):
    with pytest.raises(MalformedResponse):
        handle_event(EventStreamState(), event, data)


def test_tool_call_bound():
    state = EventStreamState()
    for i in range(MAX_TOOL_CALLS):
        handle_event(state, "response.output_item.added",
                     json.dumps({"output_index": i, "item": {**CALL, "id": f"fc_{i}"}}))
    with pytest.raises(ResponseTooLarge):
        handle_event(state, "response.output_item.added",
                     json.dumps({"output_index": MAX_TOOL_CALLS, "item": {**CALL, "id": "fc_x"}}))


def test_a_plain_stream_state_is_refused_loudly():
    with pytest.raises(TypeError):
        handle_event(StreamState(), "response.output_text.delta", '{"delta": "a"}')


EVENT_NAMES = ["response.created", "response.in_progress", "response.output_item.added",
               "response.output_item.done", "response.content_part.added", "response.output_text.delta",
               "response.reasoning_summary_text.delta", "response.reasoning_text.delta",
               "response.function_call_arguments.delta", "response.function_call_arguments.done",
               "response.output_text.done", "response.completed", "response.incomplete", "response.failed",
               "response.refusal.delta", "error", "message", "", "anything"]
JSON = json_values()
KEYS = st.sampled_from(["type", "delta", "item", "item_id", "output_index", "response", "usage", "arguments",
                        "logprobs", "error", "incomplete_details", "reason", "call_id", "name", "id", "status",
                        "input_tokens", "output_tokens", "message", "code"])
SHAPED = st.recursive(JSON, lambda inner: st.dictionaries(KEYS, inner, max_size=4), max_leaves=16)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.sampled_from(EVENT_NAMES), SHAPED), max_size=6))
def test_arbitrary_json_raises_only_typed_errors(events):
    check_named_events_typed(handle_event, events)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(EVENT_NAMES), st.text(max_size=40))
def test_arbitrary_text_raises_only_typed_errors(name, data):
    check_named_events_typed(handle_event, [(name, data)])


# -------------------------------------------------------------------- bodies


def test_paths():
    assert paths == (PATH,) == ("/v1/responses",)


def test_build_body_forces_stream_and_model_and_no_include_usage():
    body = build_body({"input": "hi", "stream": False}, defaults={}, model="m", include_usage=True)
    assert body == {"input": "hi", "stream": True, "model": "m"}
    body = build_body({"input": "hi", "model": "own"}, defaults={}, model="m", include_usage=False)
    assert body["model"] == "own"


def test_defaults_translated_and_the_line_wins():
    defaults = {"max_completion_tokens": 100, "temperature": 0.5, "stream_options": {"include_usage": True},
                "n": 2, "stop": ["x"], "reasoning_effort": "low", "logprobs": True, "top_logprobs": 2,
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
                "tool_choice": {"type": "function", "function": {"name": "f"}}, "verbosity": "low"}
    body = build_body({"input": "hi"}, defaults=defaults, model=None, include_usage=True)
    assert body == {
        "input": "hi", "stream": True, "temperature": 0.5, "max_output_tokens": 100,
        "reasoning": {"effort": "low"}, "include": ["message.output_text.logprobs"], "top_logprobs": 2,
        "tools": [{"type": "function", "name": "f", "parameters": {}}],
        "tool_choice": {"type": "function", "name": "f"}, "text": {"verbosity": "low"},
    }
    line = {"input": "hi", "max_output_tokens": 7, "reasoning": {"effort": "high"}}
    body = build_body(line, defaults=defaults, model=None, include_usage=False)
    assert body["max_output_tokens"] == 7 and body["reasoning"] == {"effort": "high"}


def test_normalise_usage_keeps_its_own_keys():
    assert normalise_usage({"input_tokens": 2, "output_tokens": 3}) == {
        "input_tokens": 2, "output_tokens": 3, "prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    with pytest.raises(MalformedResponse):
        normalise_usage({"input_tokens": -1})


# -------------------------------------------------------------------- a whole Response (stream ignored)

def whole(status: str = "completed", output: list | None = None, **fields) -> dict:
    return {**RESPONSE, "status": status, "output": output or [], "usage": USAGE, **fields}


def message(text: str) -> dict:
    return {**MSG, "status": "completed", "content": [{**PART, "text": text, "logprobs": []}]}


WHOLE = {
    "text": whole(output=[message("Héllo 🙂")]),
    "reasoning": whole(output=[{"id": "rs_1", "type": "reasoning", "summary": [{"type": "summary_text",
                                                                                 "text": "Think"}],
                                "content": [{"type": "reasoning_text", "text": "ing"}]}, message("Answer")]),
    "tools": whole(output=[{**CALL, "arguments": '{"city": "Zürich"}', "status": "completed"},
                           {**CALL, "id": "fc_2", "call_id": "call_B", "name": "get_time", "arguments": "{}",
                            "status": "completed"}]),
    "incomplete": whole("incomplete", [message("Cut")], incomplete_details={"reason": "max_output_tokens"}),
}


def record_view(state) -> tuple:
    """What a record keeps of a reply."""
    return (state.text, state.reasoning, state.tool_calls, state.finish_reason, state.usage, state.model,
            state.response_id)


@pytest.mark.parametrize("name", sorted(WHOLE))
def test_a_whole_response_gives_what_its_stream_gives(name):
    streamed, err, _ = run(decode([sse(STREAMS[name])]))
    assert err is None
    state = EventStreamState()
    apply_whole(state, json.loads(json.dumps(WHOLE[name])))
    assert record_view(state) == record_view(streamed) and state.done


def test_a_whole_failed_response_is_a_stream_error_and_other_json_is_malformed():
    with pytest.raises(StreamErrorEvent, match="The model broke"):
        apply_whole(EventStreamState(), whole("failed", error={"code": "server_error", "message": "The model broke"}))
    with pytest.raises(MalformedResponse):
        apply_whole(EventStreamState(), {"object": "chat.completion", "choices": []})
    with pytest.raises(MalformedResponse):
        apply_whole(EventStreamState(), whole(output=[{"type": "message", "content": "not a list"}]))


@given(json_values())
@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
def test_a_whole_response_of_any_shape_raises_only_typed_errors(value):
    from runner.stream.errors import RequestError

    try:
        apply_whole(EventStreamState(), {"object": "response", "output": value, "usage": value, "status": value})
    except RequestError:
        pass
