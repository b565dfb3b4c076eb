"""Request lines to bodies, and stream chunks to text/finish/usage/errors."""

from __future__ import annotations

import orjson
import pytest

from runner.inputs.lines import parse_line
from runner.stream.errors import MalformedResponse, StreamErrorEvent
from runner.stream.paths import CHAT_PATH, COMPLETIONS_PATH, InvalidRequestLine
from runner.stream.protocol import StreamState, build_body, handle_data


def test_three_line_forms():
    assert parse_line({"messages": [{"role": "user", "content": "hi"}]}, file="f", line=1)[:2] == (None, CHAT_PATH)
    assert parse_line({"custom_id": "a", "prompt": "x"}, file="f", line=1)[:2] == ("a", COMPLETIONS_PATH)
    cid, path, body = parse_line({"custom_id": "b", "method": "POST", "url": "/v1/completions",
                                  "body": {"prompt": "p", "max_tokens": 3}}, file="f", line=1)
    assert (cid, path, body) == ("b", COMPLETIONS_PATH, {"prompt": "p", "max_tokens": 3})


def test_embeddings_batch_lines_parse_as_they_are():
    cid, path, body = parse_line({"custom_id": "e", "method": "POST", "url": "/v1/embeddings",
                                  "body": {"model": "m", "input": ["a", "b"]}}, file="f", line=1)
    assert (cid, path, body) == ("e", "/v1/embeddings", {"model": "m", "input": ["a", "b"]})


@pytest.mark.parametrize("obj, message", [
    ([1, 2], "JSON object"),
    ({"foo": 1}, "no 'messages'"),
    ({"messages": []}, "non-empty list"),
    ({"custom_id": 5, "prompt": "x"}, "custom_id"),
    ({"custom_id": "x", "method": "GET", "url": "/v1/chat/completions", "body": {"messages": [{}]}}, "POST"),
    ({"custom_id": "x", "url": "/v1/moderations", "body": {"input": "x"}}, "/v1/moderations"),
    ({"custom_id": "x", "url": "/v1/embeddings", "body": {"input": []}}, "non-empty string or list"),
    ({"custom_id": "x", "body": "nope"}, "'body'"),
])
def test_invalid_lines(obj, message):
    with pytest.raises(InvalidRequestLine, match=message):
        parse_line(obj, file="f", line=1)


def test_build_body_precedence_and_streaming():
    body = (build_body({"messages": [], "temperature": 0.1}, defaults={"temperature": 1, "max_tokens": 9},
                                   model="m", include_usage=True))
    assert body["temperature"] == 0.1 and body["max_tokens"] == 9 and body["model"] == "m"
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    body = (build_body({"model": "own", "stream": False, "stream_options": {"include_usage": True}},
                                   defaults={}, model="m", include_usage=False))
    assert body["model"] == "own" and body["stream"] is True and "stream_options" not in body


def chunk(**choice) -> str:
    return orjson.dumps({"id": "c1", "model": "m", "choices": [{"index": 0, **choice}]}).decode()


def test_chunks_assemble_text_reasoning_usage():
    s = StreamState()
    assert handle_data(s, chunk(delta={"role": "assistant", "content": ""})) is False  # role-only
    assert handle_data(s, chunk(delta={"reasoning_content": "think"})) is True
    assert handle_data(s, chunk(delta={"reasoning": " more"})) is True
    assert handle_data(s, chunk(delta={"content": "Hi"})) is True
    assert handle_data(s, chunk(delta={}, finish_reason="stop")) is False
    assert handle_data(s, orjson.dumps({"choices": [], "usage": {"completion_tokens": 3}}).decode()) is False
    assert handle_data(s, "[DONE]") is False
    assert (s.text, s.reasoning, s.finish_reason, s.usage, s.model, s.done) == (
        "Hi", "think more", "stop", {"completion_tokens": 3}, "m", True)
    assert s.text_events == 3


def test_other_choices_are_assembled_apart_and_empty_data_is_ignored():
    s = StreamState()
    assert handle_data(s, orjson.dumps({"choices": [{"index": 1, "delta": {"content": "other"}}]}).decode()) is True
    assert handle_data(s, "") is False
    assert s.text == "" and s.others[1].text == "other"  # choice 0 (the record's top level) is untouched


def test_error_object_and_malformed_data_raise():
    with pytest.raises(StreamErrorEvent, match="server_error"):
        handle_data(StreamState(), '{"error": {"message": "boom", "type": "server_error"}}')
    with pytest.raises(MalformedResponse, match="malformed"):
        handle_data(StreamState(), '{"choices": [')


def test_streamed_tool_calls_are_assembled_and_count_as_output():
    s = StreamState()
    frags = [
        {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                         "function": {"name": "get_weather", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]},
        {"tool_calls": [{"index": 1, "id": "call_2", "type": "function", "function": {"name": "now", "arguments": "{}"}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]},
    ]
    assert all(handle_data(s, chunk(delta={"role": "assistant", **f})) for f in frags)
    handle_data(s, chunk(delta={}, finish_reason="tool_calls"))
    assert s.tool_calls == [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}},
        {"id": "call_2", "type": "function", "function": {"name": "now", "arguments": "{}"}},
    ]
    assert s.text == "" and s.finish_reason == "tool_calls" and s.text_events == 4


def interleaved_n2_chat() -> list[dict]:
    """vLLM's shape for n=2 with logprobs: one choice per chunk, interleaved."""
    def c(i, content=None, finish=None, lp=None, role=False):
        delta = {"role": "assistant", "content": ""} if role else ({"content": content} if content else {})
        choice = {"index": i, "delta": delta, "finish_reason": finish,
                  "logprobs": {"content": lp} if lp else None}
        return {"id": "c", "object": "chat.completion.chunk", "model": "m", "choices": [choice]}
    e = lambda tok: [{"token": tok, "logprob": -0.5, "bytes": list(tok.encode()), "top_logprobs": []}]
    return [c(0, role=True), c(1, role=True), c(0, "Hel", lp=e("Hel")), c(1, "Bon", lp=e("Bon")),
            c(1, "jour", lp=e("jour")), c(0, "lo", lp=e("lo")), c(0, finish="stop"), c(1, finish="length"),
            {"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}]


def test_n_greater_than_1_assembles_each_choice_with_its_logprobs():
    s = StreamState()
    carried = [handle_data(s, orjson.dumps(chunk).decode()) for chunk in interleaved_n2_chat()]
    assert carried == [False, False, True, True, True, True, False, False, False]
    assert (s.text, s.finish_reason, [e["token"] for e in s.logprobs]) == ("Hello", "stop", ["Hel", "lo"])
    one = s.others[1]
    assert (one.text, one.finish_reason, [e["token"] for e in one.logprobs]) == ("Bonjour", "length", ["Bon", "jour"])
    assert s.text_events == 4 and s.usage["completion_tokens"] == 4


def test_interleaved_choices_survive_every_split_of_the_stream():
    from runner.stream.sse import SSEDecoder

    body = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in interleaved_n2_chat()) + b"data: [DONE]\n\n"
    for cut in range(1, len(body)):
        s, d = StreamState(), SSEDecoder()
        for part in (body[:cut], body[cut:]):
            for event in d.feed(part):
                handle_data(s, event.data)
        assert (s.text, s.others[1].text, len(s.logprobs), s.done) == ("Hello", "Bonjour", 2, True), cut


def test_completions_logprobs_lists_are_concatenated_and_can_be_dropped():
    chunks = [{"choices": [{"index": 0, "text": t, "logprobs": {"tokens": [t], "token_logprobs": [-0.1],
                                                                 "top_logprobs": [{t: -0.1}], "text_offset": [i]}}]}
              for i, t in enumerate(["Once", " upon"])]
    s = StreamState()
    for chunk in chunks:
        handle_data(s, orjson.dumps(chunk).decode())
    assert s.logprobs == {"tokens": ["Once", " upon"], "token_logprobs": [-0.1, -0.1],
                          "top_logprobs": [{"Once": -0.1}, {" upon": -0.1}], "text_offset": [0, 1]}
    dropped = StreamState(keep_logprobs=False)
    for chunk in chunks:
        handle_data(dropped, orjson.dumps(chunk).decode())
    assert dropped.logprobs is None and dropped.text == "Once upon"


@pytest.mark.parametrize("data, text", [
    ('{"created": 1e999, "model": "m", "choices": [{"delta": {"content": "a"}}]}', "a"),  # unread, beyond a double
    ('{"created": -' + "9" * 400 + ', "choices": [{"delta": {"content": "a"}}]}', "a"),
    ('{"x": ["\\ud83d\\ude00"], "y": 1e999, "choices": [{"delta": {"content": "a"}}]}', "a"),
    ('{"x": "\\ud800", "y": 1e999, "choices": [{"delta": {"content": "a"}}]}', None),  # a lone surrogate still is not
    ('{"x": NaN, "y": 1e999, "choices": [{"delta": {"content": "a"}}]}', None),
    ('{"y": 1e999, "choices": [{"delta": {"content": "a"}}]', None),
])
def test_a_number_beyond_a_double_costs_nothing_where_nothing_reads_it(data, text):
    """orjson refuses 1e999; the hot path (runner.stream.plain) skips unread fields unconverted, so
    handle_data takes such a chunk too (json's reading: inf) and the two paths agree."""
    state = StreamState()
    if text is None:
        with pytest.raises(MalformedResponse, match="malformed event data"):
            handle_data(state, data)
    else:
        assert handle_data(state, data) is True and state.text == text
