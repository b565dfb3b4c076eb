"""The session's connections: timing the ones a request opens, stamping when each read arrived.

`connection_trace` (aiohttp's tracing) and `TimedConnector` (a connector
that times what it opens itself, far cheaper) both set `Timing.connect_s`;
`session_connector` picks the connector for a session.  `StampingHandler`
is aiohttp's protocol noting the time of every network read, which
`client._read_stream` uses as the arrival time of the bytes it reads.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp.client_proto import ResponseHandler

if TYPE_CHECKING:
    from aiohttp.tracing import Trace

from .timing import Timing

__all__ = ["StampingHandler", "TimedConnector", "attempt_context", "connection_trace", "reset_attempt_context",
           "session_connector", "stamping"]


class StampingHandler(ResponseHandler):
    """aiohttp's protocol, noting when each network read was handed to it (`received_at`).

    The event loop calls `data_received` as soon as it has read the socket; the
    task waiting in `readany()` runs later, after everything else that became
    ready in the same loop turn (other streams' reads, their parsing, records).
    With many streams that wait is what a stamp taken when `readany()` returns
    adds to TTFT; the time of `data_received` does not contain it.
    """

    received_at = 0.0

    def data_received(self, data: bytes, _now: Callable[[], float] = time.perf_counter,
                      _base: Callable[[ResponseHandler, bytes], None] = ResponseHandler.data_received) -> None:
        self.received_at = _now()
        _base(self, data)


def stamping(resp: aiohttp.ClientResponse) -> StampingHandler | None:
    """The response's connection protocol as a `StampingHandler`, None when it is something else.

    A `TimedConnector`'s are from the start; aiohttp's plain ResponseHandler is
    made one here, in place (`__class__`, once per connection; the object stays
    aiohttp's), so its stamps start with the reads after this one.  uvloop binds
    `data_received` when a connection opens: there only a `TimedConnector`'s
    protocols stamp, and for the others every read falls back to the time
    `readany()` returned (the stamps never move, see `client._read_stream`)."""
    conn = resp.connection
    proto = conn.protocol if conn is not None else None
    if type(proto) is ResponseHandler:
        proto.__class__ = StampingHandler
    return proto if type(proto) is StampingHandler else None


async def _on_connect_start(session: aiohttp.ClientSession, ctx: SimpleNamespace,
                            params: aiohttp.TraceConnectionCreateStartParams) -> None:
    ctx.connect_start = time.perf_counter()


async def _on_connect_end(session: aiohttp.ClientSession, ctx: SimpleNamespace,
                          params: aiohttp.TraceConnectionCreateEndParams) -> None:
    timing = ctx.trace_request_ctx
    if timing is not None:
        timing.connect_s = time.perf_counter() - ctx.connect_start


def connection_trace() -> aiohttp.TraceConfig:
    """The session's tracing of new connections: a request whose `trace_request_ctx` is its
    `Timing` gets `connect_s` set when it opened one (DNS, TCP, TLS); one that reused a pooled
    connection never fires these signals and keeps None.

    Only these two signals have receivers; `on_connection_reuseconn` is left
    out, since reuse is the absence of a create.  The cost is aiohttp's: once a
    session has any trace config it builds a Trace per request and sends its
    other signals (request start/headers/chunk/end, reuse) to no one, about
    13-20 us of CPU a request (measured against the mock; bench/ceiling.py
    parse at 200 streams: 240 -> 262 us a request).  `TimedConnector` does
    the same without it.
    """
    trace = aiohttp.TraceConfig()
    trace.on_connection_create_start.append(_on_connect_start)
    trace.on_connection_create_end.append(_on_connect_end)
    return trace


#: The Timing of the attempt this task is running (set by stream_once), for TimedConnector.
_ATTEMPT: ContextVar[Timing | None] = ContextVar("streamrun_attempt", default=None)


class TimedConnector(aiohttp.TCPConnector):
    """aiohttp's TCPConnector, timing the connections it opens without aiohttp's tracing.

    `connect_s` is set on the `Timing` of the attempt that opened the connection
    (the one `stream_once` is running in this task), around the same call the
    tracing signals wrap.  The tracing, once a session has any trace config,
    builds a Trace and sends its signals for every request: about 20 us of CPU
    a request (measured: bench/ceiling.py parse at 200 streams, 240 -> 262 us),
    where this costs one context variable set per request.  Its connections'
    protocols are `StampingHandler`s from the start, so every read is stamped
    when it arrived, the first request's included (and with uvloop too).
    Overrides aiohttp's `_create_connection` (there since 3.0): `session_connector`
    falls back on `connection_trace` where an aiohttp lacks it.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        factory = getattr(self, "_factory", None)
        if isinstance(factory, functools.partial) and factory.func is ResponseHandler:
            # typeshed's partial is invariant in what it makes; one making the subclass is the factory aiohttp wants
            self._factory = functools.partial(  # type: ignore[assignment]
                StampingHandler, *factory.args, **factory.keywords)

    async def _create_connection(self, req: aiohttp.ClientRequest, traces: list[Trace],
                                 timeout: aiohttp.ClientTimeout) -> ResponseHandler:
        start = time.perf_counter()
        proto = await super()._create_connection(req, traces, timeout)
        timing = _ATTEMPT.get()
        if timing is not None:
            timing.connect_s = time.perf_counter() - start
        return proto


def session_connector(**kwargs: Any) -> tuple[aiohttp.TCPConnector, list[aiohttp.TraceConfig]]:
    """The connector and trace configs for a session: `TimedConnector` and no tracing, or,
    where this aiohttp has no `_create_connection` to wrap, a plain one with `connection_trace`."""
    if callable(getattr(aiohttp.TCPConnector, "_create_connection", None)):
        return TimedConnector(**kwargs), []
    return aiohttp.TCPConnector(**kwargs), [connection_trace()]


def attempt_context(timing: Timing) -> Token[Timing | None]:
    """Make `timing` the running attempt's, for `TimedConnector`; returns the token to reset."""
    return _ATTEMPT.set(timing)


def reset_attempt_context(token: Token[Timing | None]) -> None:
    _ATTEMPT.reset(token)
