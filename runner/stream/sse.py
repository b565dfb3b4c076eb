"""Incremental Server-Sent Events decoder (WHATWG HTML, "event stream interpretation").

Fed raw bytes exactly as the network delivers them, it yields whole events.
It knows nothing of HTTP, JSON or OpenAI, so it can be tested byte by byte.

Why bytes and not text: the only line terminators are CR and LF, which never
occur inside a multi-byte UTF-8 sequence, so splitting the byte stream at them
is safe and each complete line decodes on its own.  A chunk boundary inside a
character therefore needs no incremental decoder: the partial line simply
waits in the buffer.  Why our own splitter: aiohttp's line reader caps lines at
64 KiB, and real streams (long contexts, logprobs) exceed that.

Two ways in.  `feed()` is the whole state machine and returns `Event`s.
`feed_data()` is the client's hot path: nearly every network read of an
OpenAI-style stream is a run of whole one-line `data: ...` events, LF-ended,
which need no state machine: one `bytes.split` turns the read into the
events' data, as bytes (JSON parsers take bytes; nothing is decoded twice).
Anything else (CR line endings, `event:`/`id:`/`retry:` fields, comments,
data spread over several lines, a BOM, an event still open from the previous
read) makes it return None with the decoder untouched, and the caller feeds
the read to `feed()`; tests check that both paths agree on any split.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Event", "EventTooLarge", "SSEDecoder", "DEFAULT_MAX_EVENT_BYTES"]

DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024


class EventTooLarge(ValueError):
    """A line or an event grew past the bound: a server that never ends a line would fill memory."""

_BOM = b"\xef\xbb\xbf"


class Event(NamedTuple):
    """One dispatched event.  A tuple: thousands are made per second per stream."""

    event: str = "message"
    data: str = ""
    id: str = ""
    retry: int | None = None


_new_event = tuple.__new__


class SSEDecoder:
    """Turns a byte stream into `Event`s; call `feed()` per chunk, `close()` at EOF."""

    __slots__ = ("_parts", "_pending_cr", "_started", "_data", "_event", "_last_id", "_retry", "_tail", "_size",
                 "max_event_bytes")

    def __init__(self, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self.max_event_bytes = max_event_bytes  # one line, and one event's data, at most
        self._tail = 0  # bytes in _parts
        self._size = 0  # bytes of data buffered for the event being read
        self._parts: list[bytes] = []  # the unterminated tail of the stream
        self._pending_cr = False  # last chunk ended in CR: a leading LF next is its pair
        self._started = False  # the BOM may only appear at the very start
        self._data: list[str] = []
        self._event = ""
        self._last_id = ""  # persists across events, per the spec
        self._retry: int | None = None

    def feed_data(self, chunk: bytes) -> list[bytes] | None:
        """The data of each whole event in `chunk` (plus a partial line held from the last read),
        when all of them are plain one-line `data:` events ending in LF: the same events `feed()`
        would give, all of type "message", data undecoded.  None when anything else is there (the
        decoder is then untouched: call `feed(chunk)`).  A partial event after the last blank line
        is kept for the next read, as `feed()` keeps it.  The events' id and retry are those in
        force before the call (an `id:` line after the last whole event applies to later ones).
        """
        if self._data or self._event:
            return None  # an event is open: its lines came in an earlier read
        parts = self._parts
        if parts:
            if b"\r" in chunk:
                return None
            chunk = b"".join(parts) + chunk
        elif b"\r" in chunk:
            return None
        if chunk[:5] != b"data:":
            return None  # also a BOM, a comment, another field, an empty line: all for feed()
        end = chunk.rfind(b"\n\n") + 2
        if end < 2 or end > self.max_event_bytes:
            return None  # no whole event yet, or maybe one too large: feed() says which
        if chunk[5:6] == b" ":
            sep = b"\n\ndata: "
            body = chunk[6:end - 2]
        elif b"\n\ndata: " in chunk:
            return None  # mixed "data:" and "data: ": the space must go from some only
        else:
            sep = b"\n\ndata:"
            body = chunk[5:end - 2]
        datas = body.split(sep)
        # Each event is one line "data:[ ]D" and a blank line; an LF in some D is a second line
        # or a blank line too many.  (A CR was ruled out above.)  join + `in`: memcpy and memchr.
        if b"\n" in b"".join(datas):
            return None
        self._started = True  # began with "data:": no BOM can come
        self._pending_cr = False  # no CR in this read: a pending one ended a line already
        if parts:
            self._parts = []
            self._tail = 0
        if end < len(chunk):
            # no blank line in the rest (rfind), so feed() only buffers it (a partial line, or whole
            # lines of the next event): it dispatches nothing
            self.feed(chunk[end:])
        return datas

    def feed(self, chunk: bytes) -> list[Event]:
        if not chunk:
            return []
        if self._pending_cr:
            self._pending_cr = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
                if not chunk:
                    return []
        if not self._started:
            if self._parts:
                chunk = self._parts.pop() + chunk
            if len(chunk) < 3 and _BOM.startswith(chunk):
                self._parts.append(chunk)  # could still become a BOM
                return []
            self._started = True
            if chunk.startswith(_BOM):
                chunk = chunk[3:]
        if b"\n" not in chunk and b"\r" not in chunk:
            self._parts.append(chunk)
            self._tail += len(chunk)
            if self._tail > self.max_event_bytes:
                raise EventTooLarge(f"an SSE line grew past {self.max_event_bytes} bytes without ending")
            return []
        if self._parts:
            self._parts.append(chunk)
            chunk = b"".join(self._parts)
            self._parts = []
        lines = chunk.splitlines(keepends=True)  # bytes.splitlines: only CR, LF, CRLF
        tail = lines[-1]
        if tail[-1:] not in (b"\n", b"\r"):
            self._parts.append(tail)
            self._tail = len(tail)
            lines.pop()
        else:
            self._tail = 0
            if tail[-1:] == b"\r":
                self._pending_cr = True
        events: list[Event] = []
        data = self._data
        size = self._size
        for raw in lines:
            line = raw.rstrip(b"\r\n")
            # The two lines of nearly every event, handled inline: this loop is
            # the client's hot path at thousands of events per second.
            if not line:
                if data:
                    events.append(self._dispatch())
                    data = self._data
                    size = 0
                self._event = ""
            elif line[:5] == b"data:":
                value = line[5:]
                if value[:1] == b" ":
                    value = value[1:]
                size += len(value)
                if size > self.max_event_bytes:
                    raise EventTooLarge(f"an SSE event grew past {self.max_event_bytes} bytes")
                data.append(value.decode("utf-8", "replace"))
            else:
                self._line(line)
        self._size = size
        if self._tail > self.max_event_bytes:
            raise EventTooLarge(f"an SSE line grew past {self.max_event_bytes} bytes without ending")
        return events

    def close(self) -> list[Event]:
        """End of stream.

        The spec drops an event whose closing blank line never came.  We are
        lenient where the last line itself was complete (some gateways end the
        body right after the final `data:` line) but still drop an unterminated
        partial line, which is what a cut connection leaves behind.
        """
        self._parts = []
        self._tail = 0
        return [self._dispatch()] if self._data else []

    def _line(self, line: bytes) -> None:
        """Any non-empty line other than `data:` (the fast path in `feed`)."""
        if line[:1] == b":":
            return  # comment / keep-alive
        field, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._data.append(value.decode("utf-8", "replace"))
        elif field == b"event":
            self._event = value.decode("utf-8", "replace")
        elif field == b"id":
            if b"\0" not in value:
                self._last_id = value.decode("utf-8", "replace")
        elif field == b"retry":
            if value.isdigit():
                self._retry = int(value)
        # any other field is ignored, per the spec

    def _dispatch(self) -> Event:
        """Called only with data buffered; an empty data buffer dispatches nothing (spec)."""
        # tuple.__new__ skips NamedTuple's Python-level __new__: half the cost, once per event
        event = _new_event(Event, (self._event or "message", "\n".join(self._data), self._last_id, self._retry))
        self._data = []
        self._size = 0
        self._event = ""
        return event
