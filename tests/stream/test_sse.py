"""The SSE decoder against WHATWG rules and real captured streams, split at every byte."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.stream.errors import StreamErrorEvent
from runner.stream.protocol import StreamState, handle_data
from runner.stream.sse import Event, EventTooLarge, SSEDecoder
from tests.helpers import DATA, sse_decode

CAPTURES = DATA / "sse"
CHINESE = "你好！我是一个流式输出的示例。"

# file -> (text, finish_reason, usage, error substring or None)
EXPECTED = {
    "chat_basic.sse": (CHINESE, "stop", {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}, None),
    "chat_crlf.sse": (CHINESE, "stop", {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}, None),
    "chat_cr_only.sse": (CHINESE, "stop", {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}, None),
    "chat_no_done.sse": (CHINESE, "stop", None, None),
    "chat_fields_comments.sse": ("Hello world", "stop", None, None),
    "chat_error_midstream.sse": ("Partial", None, None, "server_error"),
    "completions_basic.sse": ("Once upon a time", "length", None, None),
}


def decode(chunks) -> list[Event]:
    return sse_decode(chunks)


def interpret(events: list[Event]):
    """What the runner makes of the events: (state, error message, index of the first text event)."""
    state = StreamState()
    first_text = None
    for i, event in enumerate(events):
        try:
            if handle_data(state, event.data) and first_text is None:
                first_text = i
        except StreamErrorEvent as exc:
            return state, str(exc), first_text
        if state.done:
            break
    return state, None, first_text


def splits(data: bytes):
    yield [data]
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]
    yield [data[i:i + 1] for i in range(len(data))]


def test_all_shared_captures_are_covered():
    assert sorted(p.name for p in CAPTURES.glob("*.sse")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_decodes_identically_at_every_split(name):
    data = (CAPTURES / name).read_bytes()
    reference = decode([data])
    assert reference, "no events decoded"
    for chunks in splits(data):
        assert decode(chunks) == reference, f"split {[len(c) for c in chunks][:3]} differs"


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_outcome(name):
    text, finish, usage, error = EXPECTED[name]
    state, err, first_text = interpret(decode([(CAPTURES / name).read_bytes()]))
    assert state.text == text
    assert state.finish_reason == finish
    assert state.usage == usage
    if error:
        assert err is not None and error in err
        assert not state.finished
    else:
        assert err is None and state.finished
    # TTFT is at the first event with text, not the role-only first chunk
    if name.startswith("chat_"):
        assert first_text == 1


def test_fields_comments_capture_events():
    events = decode([(CAPTURES / "chat_fields_comments.sse").read_bytes()])
    assert [e.id for e in events] == ["1", "2", "3", "3", "3"]  # id persists until changed
    assert all(e.retry == 3000 for e in events)
    assert events[0].event == "message"
    assert '"choices": [{"index": 0, "delta": {"content": " world"}' in events[2].data
    assert "\n" in events[2].data  # two data lines joined with LF


def test_line_endings_mixed_and_split_crlf():
    raw = b"data: a\r\n\r\ndata: b\r\rdata: c\n\ndata: d\r\n\n"
    expected = ["a", "b", "c", "d"]
    for chunks in splits(raw):
        assert [e.data for e in decode(chunks)] == expected


def test_cr_then_lf_in_next_chunk_is_one_line_end():
    d = SSEDecoder()
    assert d.feed(b"data: x\r") == []
    assert d.feed(b"\n") == []  # the LF pairs with the CR: no blank line yet
    assert [e.data for e in d.feed(b"\r\n")] == ["x"]


def test_multibyte_utf8_split_inside_character():
    raw = "data: 你好🙂\n\n".encode()
    for chunks in splits(raw):
        assert [e.data for e in decode(chunks)] == ["你好🙂"]


def test_field_parsing_rules():
    raw = (b": comment\n"
           b"data\n"              # field with no colon: empty value
           b"data:  two spaces\n"  # only one space is stripped
           b"event: custom\n"
           b"unknown: ignored\n"
           b"retry: 12x\n"         # not all digits: ignored
           b"id: 7\n\n")
    (event,) = decode([raw])
    assert event.data == "\n two spaces"
    assert event.event == "custom"
    assert event.id == "7"
    assert event.retry is None


def test_empty_data_buffer_dispatches_nothing_and_resets_event_type():
    events = decode([b"event: foo\n\ndata: x\n\n"])
    assert [(e.event, e.data) for e in events] == [("message", "x")]


def test_id_with_null_is_ignored_and_bom_is_stripped():
    events = decode([b"\xef\xbb\xbfid: a\0b\ndata: x\n\n"])
    assert events == [Event("message", "x", "", None)]
    # a BOM split across chunks
    assert decode([b"\xef", b"\xbb", b"\xbfdata: y\n\n"]) == [Event("message", "y", "", None)]


def test_huge_line_beyond_64k():
    payload = "x" * 300_000
    raw = f"data: {payload}\n\n".encode()
    chunks = [raw[i:i + 8192] for i in range(0, len(raw), 8192)]
    assert [len(e.data) for e in decode(chunks)] == [300_000]


def test_eof_without_blank_line_dispatches_complete_last_line_only():
    assert [e.data for e in decode([b"data: a\n\ndata: b\n"])] == ["a", "b"]
    assert [e.data for e in decode([b"data: a\n\ndata: trunc"])] == ["a"]  # a cut partial line is dropped


def test_several_events_in_one_read_and_event_split_across_reads():
    d = SSEDecoder()
    assert [e.data for e in d.feed(b"data: 1\n\ndata: 2\n\ndata: 3")] == ["1", "2"]
    assert [e.data for e in d.feed(b"\n\n")] == ["3"]


def test_events_made_by_the_fast_path_are_real_events():
    (event,) = decode([b"event: x\nid: 3\nretry: 5\ndata: y\n\n"])
    assert isinstance(event, Event) and event == Event("x", "y", "3", 5)
    assert (event.event, event.data, event.id, event.retry) == ("x", "y", "3", 5)


# ---- feed_data, the client's hot path, against feed

def hot_decode(chunks, max_event_bytes: int | None = None) -> list[Event]:
    """As the client reads: feed_data where it takes the read (its events are all "message"
    ones, with the id and retry in force before the read), feed where it does not; then close."""
    d = SSEDecoder() if max_event_bytes is None else SSEDecoder(max_event_bytes)
    events = []
    for chunk in chunks:
        in_force = d._last_id, d._retry  # a read's id: lines come after its whole events, if at all
        datas = d.feed_data(chunk)
        if datas is None:
            events.extend(d.feed(chunk))
        else:
            assert datas, "feed_data takes a read only with a whole event in it"
            events.extend(Event("message", x.decode("utf-8", "replace"), *in_force) for x in datas)
    events.extend(d.close())
    return events


def test_feed_data_takes_whole_plain_events_and_nothing_else():
    d = SSEDecoder()
    assert d.feed_data(b'data: {"a": 1}\n\ndata: [DONE]\n\n') == [b'{"a": 1}', b"[DONE]"]
    assert d.feed_data(b"data:x\n\ndata:\n\n") == [b"x", b""]  # no space after the colon, and an empty one
    assert d.feed_data(b"data: 1\n\ndata: 2") == [b"1"]  # the partial line waits ...
    assert d.feed_data(b"\n\n") == [b"2"]  # ... for the read that ends it
    assert d.feed_data(b"data: 3") is None and d.feed(b"data: 3") == []  # no whole event: feed() holds it
    assert d.feed_data(b"\n\ndata: 4\n\n") == [b"3", b"4"]
    assert d.feed_data(b"data: 5\n") is None and d.feed(b"data: 5\n") == []  # a whole line, no event yet
    assert d.feed_data(b"\ndata: 6\n\n") is None  # an event is open: its end is feed()'s
    for read in (b"data: a\r\n\r\n", b"event: x\ndata: a\n\n", b"data: a\nid: 1\n\n", b": c\n\ndata: a\n\n",
                 b"data: a\ndata: b\n\n", b"data: a\n\n\n", b"\xef\xbb\xbfdata: a\n\n", b"data:a\n\ndata: b\n\n",
                 b"retry: 5\n\n", b"", b"\n"):
        assert SSEDecoder().feed_data(read) is None, read


def test_feed_data_keeps_the_rest_after_the_last_whole_event():
    d = SSEDecoder()
    assert d.feed_data(b"data: 1\n\nid: 7\ndata: 2\n") == [b"1"]  # the rest is buffered by feed()
    assert d.feed(b"\n") == [Event("message", "2", "7", None)]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_capture_decodes_identically_through_the_hot_path_at_every_split(name):
    data = (CAPTURES / name).read_bytes()
    reference = decode([data])
    for chunks in splits(data):
        assert hot_decode(chunks) == reference, f"split {[len(c) for c in chunks][:3]} differs"


LINES = [b"data: {\"a\": 1}", b"data: x", b"data:y", b"data: ", b"data:", b"data:  two", b"data", b"",
         b"event: e", b"event:", b"id: 1", b"id: 2\x00", b"retry: 30", b"retry: x", b": comment", b":",
         b"other: z", "data: 你好🙂".encode(), b"data: \xff\xe4\xb8", b"data: [DONE]"]
streams = st.lists(st.tuples(st.sampled_from(LINES), st.sampled_from([b"\n"] * 6 + [b"\r\n", b"\r"])),
                   max_size=16).map(lambda lines: b"".join(line + end for line, end in lines))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans(), streams, st.lists(st.integers(0, 400), max_size=5))
def test_hot_path_decodes_any_stream_split_anywhere_as_feed_does(bom, body, cuts):
    body = (b"\xef\xbb\xbf" if bom else b"") + body
    points = sorted({min(c, len(body)) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    assert hot_decode(chunks) == decode(chunks) == decode([body])


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(streams, st.lists(st.integers(0, 400), max_size=4), st.integers(1, 40))
def test_hot_path_bounds_events_as_feed_does(body, cuts, bound):
    points = sorted({min(c, len(body)) for c in cuts})
    chunks = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]

    def outcome(decoder_run):
        try:
            return decoder_run(chunks, bound)
        except EventTooLarge as exc:
            return type(exc)

    def plain(chunks, bound):
        d = SSEDecoder(bound)
        return [e for c in chunks for e in d.feed(c)] + d.close()

    assert outcome(hot_decode) == outcome(plain)
