"""Property-based tests: whatever JSON a server or an input file holds, only our typed errors come out.

hypothesis generates arbitrary JSON values and puts them where the API has
objects, lists, strings and numbers.  A crash here is what used to kill a
run (and every --resume after it) on one bad chunk or one odd line.
"""

from __future__ import annotations

import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.inputs.items import parse_item
from runner.inputs.lines import parse_line
from runner.stream.errors import RequestError
from runner.stream.paths import CHAT_PATH, InvalidRequestLine
from runner.stream.protocol import StreamState, build_body, handle_data
from tests.helpers import json_values as json_values_strategy

json_values = json_values_strategy(finite=True)
keys = st.sampled_from(["id", "model", "choices", "usage", "error", "index", "delta", "text", "content",
                        "finish_reason", "reasoning_content", "tool_calls", "function", "arguments", "name",
                        "completion_tokens", "prompt_tokens", "role"])


def shaped(depth: int = 3):
    """Objects with the API's keys and arbitrary values, nested like real chunks."""
    if depth == 0:
        return json_values
    return st.dictionaries(keys, json_values | shaped(depth - 1) | st.lists(shaped(depth - 1), max_size=3),
                           max_size=5)


FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(st.lists(shaped() | json_values, min_size=1, max_size=6))
def test_stream_chunks_raise_only_typed_errors(chunks):
    state = StreamState()
    for chunk in chunks:
        try:
            carried = handle_data(state, orjson.dumps(chunk).decode())
        except RequestError:
            continue
        assert carried in (True, False)
    # whatever got through is what a record can hold
    assert isinstance(state.text, str)
    assert state.reasoning is None or isinstance(state.reasoning, str)
    assert state.finish_reason is None or isinstance(state.finish_reason, str)
    assert state.usage is None or isinstance(state.usage, dict)
    assert state.tool_calls is None or len(state.tool_calls) <= 128
    orjson.dumps({"text": state.text, "usage": state.usage, "tool_calls": state.tool_calls})


@FAST
@given(st.text(max_size=40))
def test_event_data_that_is_not_json_is_a_typed_error(data):
    try:
        handle_data(StreamState(), data)
    except RequestError:
        pass


line_keys = st.sampled_from(["custom_id", "messages", "prompt", "body", "method", "url", "model", "stream",
                             "stream_options", "max_tokens", "temperature", "role", "content"])
lines = st.dictionaries(line_keys, json_values | st.dictionaries(line_keys, json_values, max_size=4)
                        | st.lists(st.dictionaries(line_keys, json_values, max_size=3), max_size=3), max_size=6)


@FAST
@given(lines | json_values)
def test_input_lines_become_a_request_or_an_invalid_line(obj):
    try:
        _cid, path, body = parse_line(obj, file="in.jsonl", line=1)
    except InvalidRequestLine:
        return
    for include_usage in (True, False):
        request = build_body(body, path=path, defaults={"max_tokens": 8}, model="m", include_usage=include_usage)
        assert request["stream"] is True
        orjson.dumps(request)


@FAST
@given(st.binary(max_size=60))
def test_any_bytes_on_a_line_parse_to_an_item(raw):
    item = parse_item("in.jsonl", 7, raw)
    assert item.line == 7 and item.custom_id
    assert (item.error is None) == (item.body is not None)
    if item.error is None:
        assert item.path is not None


def test_deep_nesting_is_an_invalid_line_not_a_crash():
    deep = b"[" * 300 + b"]" * 300
    item = parse_item("in.jsonl", 1, b'{"messages": [{"role": "user", "content": "x"}], "extra": ' + deep + b"}")
    assert item.error is not None and "nest" in item.error


def test_chat_path_constant_is_the_openai_one():
    assert CHAT_PATH == "/v1/chat/completions"
