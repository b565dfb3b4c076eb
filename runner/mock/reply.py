"""How the mock sends a reply: a refusal, a paced SSE stream, a held JSON reply, a cut.

Why it exists: the timing of a reply is what the client's latency
measurements are checked against, so it is written once, here, for every
endpoint: ``endpoint`` sends /v1/responses and /v1/messages through it,
and ``app`` sends chat and completions through it, its ``frames.Frames``
wrapped as a ``StreamFrames``.  It knows nothing of any API's bytes, which come from
that object: no parsing, no validation, no choice of fault, only the
writing and the stats that count it.

Timing
    The opening events go out at once; content event ``j`` is due at
    ``t0 + schedule.offset(j)``, ``t0`` being when the handler started, so
    oversleeping never accumulates.  Every event already due goes out in the
    same write; anything due later is flushed before sleeping, and a sleep
    is repeated until the event's time (a timer may fire a tick early).  The
    closing events follow the last content event without delay.  A JSON
    reply is sent when the last token would have been.

Faults
    ``drop`` and ``error_event`` send a few content events (half the
    reply, at most ``FEW_EVENTS``, at least one); ``drop`` then cuts the connection, leaving
    the chunked body unended, and ``error_event`` sends the API's error
    event and ends it.  ``no_done`` leaves out the terminal event.  ``stall``
    sends the opening events (and the headers, at once) and then nothing
    for ``STALL_S``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

import orjson
from aiohttp import web

from .frames import Schedule
from .state import STATE_KEY, MockState
from .validate import Refusal

__all__ = ["STALL_S", "FEW_EVENTS", "SSEResponse", "StreamFrames", "answer", "cut", "hold", "stream", "tracked"]

STALL_S = 3600.0
FEW_EVENTS = 3  # content events sent before a drop / error_event


class StreamFrames(Protocol):
    """One reply's SSE events, as an API words them."""

    def opening(self) -> list[bytes]:
        """The events sent at once."""
        ...

    def events(self, a: int, b: int) -> list[bytes]:
        """Content events ``a`` to ``b`` (exclusive)."""
        ...

    def sent_tokens(self, n_events: int) -> int:
        """Tokens in the first ``n_events`` content events."""
        ...

    def closing(self, terminal: bool) -> list[bytes]:
        """The events after the last content event (``terminal``: with the one that ends the reply)."""
        ...

    def error(self) -> bytes:
        """The API's mid-stream error event."""
        ...


def answer(state: MockState, refusal: Refusal, headers: dict[str, str] | None = None) -> web.Response:
    """A refusal as JSON, counted in the stats."""
    state.stats.count_status(refusal.status)
    return web.Response(status=refusal.status, body=orjson.dumps(refusal.payload), content_type="application/json",
                        headers=headers)


def bearer_refusal(request: web.Request, key: str | None) -> Refusal | None:
    """The 401 unless the request has the mock's key as ``Authorization: Bearer`` (None: let it through).

    The OpenAI-shaped endpoints (chat, completions, models, embeddings, responses) check it alike.
    """
    if key is None or request.headers.get("Authorization") == f"Bearer {key}":
        return None
    return Refusal.error(401, "mock: incorrect or missing API key", code="invalid_api_key")


def bearer_refused(request: web.Request, state: MockState) -> web.Response | None:
    """`bearer_refusal` answered (and counted)."""
    refusal = bearer_refusal(request, state.config.api_key)
    return None if refusal is None else answer(state, refusal)


async def tracked(request: web.Request,
                  serve: Callable[[MockState, float], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """``serve(state, t0)``, counted as a request and cancelled on shutdown
    (``state.tasks``); ``t0`` is when the handler started."""
    t0 = time.perf_counter()  # not loop.time(): uvloop's clock ticks in whole milliseconds
    state = request.app[STATE_KEY]
    state.stats.requests += 1
    traceparent = request.headers.get("traceparent")
    if traceparent is not None:  # as a traced server would join its spans to the client's
        state.traceparents.append(traceparent)
    task = asyncio.current_task()
    if task is not None:
        state.tasks.add(task)
    try:
        return await serve(state, t0)
    finally:
        if task is not None:
            state.tasks.discard(task)


class SSEResponse(web.StreamResponse):
    """A StreamResponse whose headers go out with the first body write
    instead of in a send of their own (one syscall less per stream; a
    private aiohttp switch, harmless where it does not exist)."""

    _send_headers_immediately = False


def cut(request: web.Request, resp: web.StreamResponse) -> None:
    """Close the connection without ending the chunked body: the client
    sees a truncated stream (aiohttp then skips write_eof quietly)."""
    resp.force_close()
    if request.transport is not None:
        request.transport.close()


async def stream(request: web.Request, state: MockState, frames: StreamFrames, schedule: Schedule, t0: float,
                 fault: str, headers: dict[str, str]) -> web.StreamResponse:
    """The SSE reply: opening events at once, content events on the schedule
    (every already-due event in one write), then the closing events."""
    stats = state.stats
    headers.update({"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    # A stall may write nothing (completions have no role chunk): send its
    # headers at once so the client sees a response that then goes silent.
    resp = (web.StreamResponse if fault == "stall" else SSEResponse)(status=200, headers=headers)
    await resp.prepare(request)
    stats.count_status(200)
    stats.streams_started += 1
    stats.active_streams += 1
    stats.max_active_streams = max(stats.max_active_streams, stats.active_streams)
    n_events = schedule.n
    if fault in ("drop", "error_event"):
        n_events = min(n_events, max(1, min(FEW_EVENTS, n_events // 2)))
    pending: list[bytes] = frames.opening()
    try:
        if fault == "stall":
            await resp.write(b"".join(pending))
            await asyncio.sleep(STALL_S)
            cut(request, resp)
            stats.streams_dropped += 1
            return resp
        j = 0
        while j < n_events:
            due = min(n_events, schedule.due(time.perf_counter() - t0, j))
            if due == j:
                # Nothing due yet: flush what is, then sleep until event j
                # (an absolute target, so oversleeping never accumulates).
                if pending:
                    await resp.write(b"".join(pending))
                    pending.clear()
                # Loop: a timer may fire up to a clock tick early (uvloop rounds to 1 ms),
                # and an event must never leave before its scripted time.
                while (delay := t0 + schedule.offset(j) - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                due = min(n_events, max(j + 1, schedule.due(time.perf_counter() - t0, j)))
            # Every event already due goes out in the same write.
            pending += frames.events(j, due)
            j = due
        stats.tokens_sent += frames.sent_tokens(n_events)
        if fault == "drop":
            if pending:
                await resp.write(b"".join(pending))
            cut(request, resp)
            stats.streams_dropped += 1
            return resp
        if fault == "error_event":
            pending.append(frames.error())
            stats.streams_errored += 1
        else:
            pending += frames.closing(terminal=fault != "no_done")
            stats.streams_completed += 1
        await resp.write_eof(b"".join(pending))
        return resp
    except ConnectionError:  # the client went away; aiohttp closes quietly
        stats.streams_cancelled += 1
        return resp
    except asyncio.CancelledError:
        stats.streams_cancelled += 1
        raise
    finally:
        stats.active_streams -= 1


async def hold(request: web.Request, state: MockState, schedule: Schedule, t0: float,
               fault: str) -> web.StreamResponse | None:
    """Wait until the last token of a non-streaming reply would have been
    sent (a stall first sleeps ``STALL_S``).  On ``drop``, cut the connection
    and return the response that stands for it; else None: send the reply."""
    if fault == "stall":
        await asyncio.sleep(STALL_S)
    end = t0 + schedule.offset(max(0, schedule.n - 1))
    while (delay := end - time.perf_counter()) > 0:
        await asyncio.sleep(delay)
    if fault == "drop":
        state.stats.streams_dropped += 1
        resp = web.Response()
        cut(request, resp)
        return resp
    return None
