"""The hot path of chat/completions streams: the usual content chunk, in a few checks.

Nearly every event of a chat stream is one shape (completions: `"text"` in
place of the delta)::

    {"id": ..., "model": ..., "choices": [{"index": 0, "delta": {"content": "text"},
     "finish_reason": null, "logprobs": null}], ...}

`apply_plain` applies a run of such events (their data, undecoded bytes, as
`SSEDecoder.feed_data` hands them over for one network read) and stops at the
first one that is anything else: the role chunk, finish_reason, usage, tool
calls, reasoning, logprobs, an error, malformed data.  That one goes to
`protocol.handle_data`, the reference, which the client calls for it; then
the run goes on.  What `apply_plain` applies is exactly what `handle_data`
would make of those events (tests/stream/test_plain.py compares the two on
arbitrary JSON), so the state, the records and the errors never depend on
which path an event took.

Chunks are decoded straight into typed msgspec structs that keep only the
fields read here (the others are skipped, not built: 0.66 against 1.13 us an
event for `orjson.loads` and dict lookups, measured on the mock's chunks, and
no garbage for the cyclic GC).  msgspec skips an unread field without
converting its numbers, so a number beyond a double's range (1e999) there
passes, where a full parse would refuse the whole chunk; `handle_data` reads
such a chunk as Python's json does (inf), so both paths agree.  Nesting is
kept far from the parsers' depth limits by a bound on the size of what
msgspec gets.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .protocol import StreamState

__all__ = ["apply_plain"]

# Only the fields _apply_chunk reads; any other is skipped unbuilt.  `Any` where a wrong
# type must reach the check below (and then handle_data) rather than fail the decode.
# gc=False: these hold no reference cycles, so the cyclic GC need not track them.


class _Delta(msgspec.Struct, gc=False):
    content: Any = None
    reasoning_content: Any = None
    reasoning: Any = None
    tool_calls: Any = None


class _Choice(msgspec.Struct, gc=False):
    delta: _Delta | None = None
    text: Any = None
    index: Any = 0
    finish_reason: Any = None
    logprobs: Any = None


class _Chunk(msgspec.Struct, gc=False):
    choices: list[_Choice] | None = None
    usage: Any = None
    error: Any = None


_decode = msgspec.json.Decoder(_Chunk).decode
# Longer data goes to handle_data.  The bound keeps nesting (2 bytes a level) far below
# where msgspec and handle_data's parser stop: msgspec at the interpreter's recursion
# limit (less the frames in use), orjson at 1024 levels, so they agree on what is too
# deep.  Content chunks are a few hundred bytes.
MAX_PLAIN_BYTES = 1536
# A chunk that is not valid JSON of that shape: DecodeError (ValidationError is one);
# invalid UTF-8 in a decoded string: UnicodeDecodeError (a ValueError); deep nesting:
# RecursionError.  The rest are the checks below meeting another shape.
_NOT_PLAIN = (msgspec.DecodeError, ValueError, TypeError, AttributeError, RecursionError)


def apply_plain(state: StreamState, datas: list[bytes], start: int = 0) -> int:
    """Apply `datas[start:]` (events' data) while each is a plain content chunk or `[DONE]`.

    Plain: what `_apply_chunk` does with it is append one text (choice 0's
    delta content, or completions' text) and count the event, nothing else.

    Returns the index of the first one that is not, left untouched for
    `handle_data`; `len(datas)` when all were, or one past `[DONE]`.  Until
    the first chunk told the model, nothing is plain (`handle_data` takes the
    model and id from that chunk).
    """
    if state.model is None:
        return start
    decode = _decode
    parts = state.text_parts
    end = len(datas)
    i = start
    done = False
    try:
        while i < end:
            data = datas[i]
            if data == b"[DONE]":
                state.done = done = True
                i += 1
                break
            if len(data) > MAX_PLAIN_BYTES:
                break
            chunk = decode(data)
            (choice,) = chunk.choices or []  # None or not one choice: ValueError
            delta = choice.delta
            if delta is None:  # completions: the text is the choice's own
                content = choice.text
            else:
                content = delta.content
                if delta.reasoning_content or delta.reasoning or delta.tool_calls:
                    break
            if (type(content) is not str or not content or chunk.usage or chunk.error
                    or choice.finish_reason or choice.logprobs or choice.index != 0):
                break
            parts.append(content)
            i += 1
    except _NOT_PLAIN:
        pass
    n = i - start
    state.events += n
    state.text_events += n - done
    return i
