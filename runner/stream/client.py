"""One streamed request over a shared aiohttp session.

Sends the body, feeds raw chunks to the SSE decoder, stamps arrival times
with `time.perf_counter()` (when aiohttp's protocol received the bytes, see
`connection.StampingHandler`, else when `readany()` returned; before decoding
or JSON parsing either way), and raises typed errors.  Chat streams take the
hot path (`SSEDecoder.feed_data` and `plain.apply_plain`) wherever a read
allows it.  Knows nothing of files or the CLI.
"""

from __future__ import annotations

import asyncio
import errno
import html
import re
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Generic, Protocol, TypeVar

import aiohttp
import orjson

from .config import Limits, Timeouts
from .connection import StampingHandler, attempt_context, reset_attempt_context, stamping
from .connection import connection_trace as connection_trace  # the session's, from here as before
from .connection import session_connector as session_connector
from .errors import (
    NOT_THE_API,
    ConnectError,
    ContextLengthExceeded,
    EmptyResponse,
    HTTPStatusError,
    IncompleteStream,
    MalformedResponse,
    RequestError,
    RequestTimeout,
    ResponseTooLarge,
    StreamErrorEvent,
    TooManyOpenFiles,
)
from .plain import apply_plain
from .protocol import StreamState, apply_whole, error_body, error_body_message, handle_data, is_context_length_error
from .sse import Event, EventTooLarge, SSEDecoder
from .timing import Timing
from .tls import tls_problem

_DRAIN_AFTER_DONE_S = 2.0  # read the body to its end after [DONE] so the connection is reused
# aiohttp's --connect-timeout error (3.10+); older ones raise a plain ServerTimeoutError, a TimeoutError too
CONNECT_TIMEOUTS = tuple(c for c in [getattr(aiohttp, "ConnectionTimeoutError", None)] if c is not None)


def endpoint_url(base_url: str, path: str) -> str:
    """Join an OpenAI-style base URL (usually ending in /v1) and an API path."""
    base = base_url.rstrip("/")
    if base.endswith("/v1"):
        return base + path.removeprefix("/v1")
    return base + path


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from `retry-after-ms` (OpenAI) or `Retry-After` (seconds or HTTP date)."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("Retry-After")
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    from datetime import UTC, datetime

    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


class Answer(Protocol):
    """What an attempt's answer is read into: a stream's StreamState, or an embeddings.Result."""

    @property
    def response_id(self) -> str | None: ...

    @property
    def usage(self) -> dict[str, Any] | None: ...


A_co = TypeVar("A_co", bound=Answer, covariant=True)


@dataclass(slots=True, frozen=True)
class Attempt(Generic[A_co]):
    """One attempt that succeeded: its answer (Attempt[StreamState] from `stream_once`, Attempt[Result] from
    `embeddings.post`), its stamps and the response's headers."""

    state: A_co
    timing: Timing
    headers: Mapping[str, str]

    @property
    def request_id(self) -> str | None:
        return request_id(self.headers, self.state)


def request_id(headers: Mapping[str, str] | None, state: Answer | None) -> str | None:
    """The server's id for this request, to find it in the server's logs: x-request-id, else the stream's id."""
    rid = headers.get("x-request-id") if headers else None
    return rid or (state.response_id if state is not None else None)


def connect_failure(exc: aiohttp.ClientError, what: str = "cannot connect", timeout: float | None = None
                    ) -> RequestError:
    """The typed error of an attempt that got no connection; `reason` says why in a few words.

    Out of file descriptors (EMFILE) is this process's limit, not the server's
    fault: `TooManyOpenFiles`, which the sender never lets fail a prompt.
    """
    if CONNECT_TIMEOUTS and isinstance(exc, CONNECT_TIMEOUTS):
        within = f" within {timeout:g}s" if timeout else ""
        reason = f"no connection{within} (--connect-timeout)"
        return ConnectError(f"{what}: {reason}", reason=reason)
    os_error = getattr(exc, "os_error", None)
    if getattr(os_error, "errno", None) in (errno.EMFILE, errno.ENFILE):
        return TooManyOpenFiles(f"{what}: {exc}", reason="this process has too many open files (ulimit -n)")
    return _connect_error(f"{what}: {exc}", exc, os_error)


def _connect_error(message: str, exc: BaseException, os_error: OSError | None) -> ConnectError:
    """A ConnectError with its reason; a TLS failure (runner/stream/tls.py) is named with the flag that fixes
    it, and is `conclusive` when every attempt would fail the same way."""
    problem = tls_problem(exc)
    if problem is not None:
        return ConnectError(message, reason=str(problem), conclusive=problem.conclusive)
    return ConnectError(message, reason=_connect_reason(exc, os_error))


def _connect_reason(exc: BaseException, os_error: OSError | None) -> str:
    """"connection refused", "cannot resolve host gpu-box", "the proxy ...": a stop line's words."""
    if isinstance(exc, aiohttp.ClientSSLError):
        return f"TLS handshake failed ({getattr(os_error, 'reason', None) or os_error or exc})"
    if isinstance(exc, aiohttp.ClientHttpProxyError):  # the proxy answered CONNECT with an error
        why = f"the proxy refused the tunnel: HTTP {exc.status} {exc.message}".rstrip()
        return f"{why}: {PROXY_CREDENTIALS}" if exc.status == 407 else why
    if isinstance(exc, aiohttp.ClientProxyConnectionError):
        return f"cannot reach the proxy {exc.host}:{exc.port} ({_connect_reason(OSError(), os_error)})"
    host = getattr(exc, "host", None)
    if isinstance(os_error, socket.gaierror):
        return f"cannot resolve host {host}" if host else "cannot resolve the host"
    if getattr(os_error, "errno", None) == errno.ECONNREFUSED:
        return "connection refused"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection without answering"
    strerror = getattr(os_error, "strerror", None) or getattr(exc, "strerror", None)
    return strerror.lower() if strerror else f"{type(exc).__name__}: {exc}".rstrip(": ")


PROXY_CREDENTIALS = ("the proxy wants credentials: give them in --proxy or HTTP(S)_PROXY as "
                     "http://USER:PASSWORD@HOST:PORT")
_TITLE = re.compile(rb"<title[^>]*>(.*?)</title", re.I | re.S)


def html_page(raw: bytes, headers: Mapping[str, str] | None = None) -> str | None:
    """'an HTML page ("Title")' when a body is a web page (a web server's, a proxy's), not an API answer."""
    kind = (headers or {}).get("Content-Type") or ""
    start = raw.lstrip()[:15].lower()
    if "html" not in kind.lower() and not start.startswith((b"<!doctype html", b"<html")):
        return None
    found = _TITLE.search(raw)
    title = " ".join(html.unescape(found.group(1).decode("utf-8", "replace")).split())[:120] if found else ""
    return f'an HTML page ("{title}")' if title else "an HTML page"


def status_error(status: int, raw: bytes, headers: Mapping[str, str]) -> HTTPStatusError:
    """The typed error for a non-200 answer, with the server's message and code.

    A web page (a web server's 404, a proxy's login page) is named by its
    title in one line, not dumped: it says the base URL is not the API's.
    """
    if status == 407:  # the proxy's answer, not the server's (plain http through a proxy)
        return HTTPStatusError(status, f"HTTP 407 Proxy Authentication Required: {PROXY_CREDENTIALS}",
                               headers=headers)
    page = html_page(raw, headers)
    if page is not None:  # a 5xx or 429 page is a proxy's passing fault; any other, a wrong URL
        wrong_url = status < 500 and status not in (408, 409, 429)
        return HTTPStatusError(status, f"HTTP {status}: {page}" + (f", not an API answer: {NOT_THE_API}"
                                                                   if wrong_url else ""),
                               retry_after=parse_retry_after(headers), headers=headers)
    message, code = error_body(raw)
    text = f"HTTP {status}: {message}"
    if status in (400, 413, 422) and is_context_length_error(message, code):
        return ContextLengthExceeded(status, text, headers=headers, code=code)
    return HTTPStatusError(status, text, retry_after=parse_retry_after(headers), headers=headers, code=code)


async def list_models(session: aiohttp.ClientSession, base_url: str, timeout: float = 30.0,
                      proxy: str | None = None, headers: Mapping[str, str] | None = None) -> list[str]:
    """GET {base}/models once: the ids a server serves (raises RequestError when it cannot say).

    `headers`: the key's, beside the session's."""
    try:
        async with asyncio.timeout(timeout):
            async with session.get(endpoint_url(base_url, "/v1/models"), proxy=proxy,
                                   headers={**(headers or {}), "Accept": "application/json"}) as resp:
                raw = await resp.content.read(1 << 20)
                if resp.status != 200:
                    raise status_error(resp.status, raw, resp.headers)
                page = html_page(raw, resp.headers)
                if page is not None:
                    raise IncompleteStream(f"HTTP 200: {page}, not a model list: {NOT_THE_API}")
    except CONNECT_TIMEOUTS as exc:
        raise connect_failure(exc, "GET /models", session.timeout.sock_connect) from exc
    except TimeoutError as exc:
        raise RequestTimeout(f"GET /models: no answer within {timeout:g}s") from exc
    except aiohttp.ClientConnectorError as exc:
        raise connect_failure(exc, "GET /models") from exc
    except aiohttp.ClientError as exc:
        raise _connect_error(f"GET /models: {type(exc).__name__}: {exc}", exc,
                             exc if isinstance(exc, OSError) else None) from exc
    try:
        data = orjson.loads(raw).get("data")
        return [m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)]
    except (orjson.JSONDecodeError, AttributeError, TypeError) as exc:
        raise IncompleteStream(f"GET /models: not a model list: {raw[:200]!r}") from exc


class _Deadline:
    """One asyncio timeout rescheduled per stage, cheaper than a new one per read."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeouts: Timeouts) -> None:
        self.loop = loop
        self.timeouts = timeouts
        start = loop.time()
        self.total_at = start + timeouts.total if timeouts.total else None
        self.stage = "first_byte"

    def at(self, seconds: float | None) -> float | None:
        """The loop time `seconds` from now, but never past the total deadline (None: no limit)."""
        when = self.loop.time() + seconds if seconds else None
        if self.total_at is None:
            return when
        return self.total_at if when is None else min(when, self.total_at)

    def describe(self) -> str:
        t = self.timeouts
        if self.total_at is not None and self.loop.time() >= self.total_at - 1e-3:
            return f"total timeout of {t.total}s exceeded"
        if self.stage == "first_byte":
            return f"no response within {(t.connect or 0) + (t.first_byte or 0):g}s (connect + first byte)"
        return f"stream idle for more than {t.idle}s"


S = TypeVar("S", bound=StreamState)  # what a stream is read into: a StreamState, or an API's own kind of one


async def stream_once(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    timeouts: Timeouts,
    timing: Timing,
    proxy: str | None = None,
    limits: Limits = Limits(),
    state: S | None = None,
    named: Callable[[S, str, str], bool] | None = None,
    headers: Mapping[str, str] | None = None,
    whole: Callable[[S, dict[str, Any]], None] | None = None,
) -> Attempt[S] | Attempt[StreamState]:
    """Run one attempt; return when the stream finished, raise RequestError otherwise.

    `state` may be given to watch the text as it is assembled (`streamrun stream`).
    `named` and `whole` are the API's readers of its named events and of a
    whole JSON answer (None: chat/completions'), into the `state` of the
    kind they read (an EventStreamState).  `headers` go with this request
    only (the key of the line's API).
    """
    if state is None:
        if named is not None or whole is not None:
            raise TypeError("an API's own readers read into the state they are given: pass `state`")
        return await _stream_into(session, url, body, timeouts, timing, proxy, limits, StreamState(), None, headers,
                                  None)
    return await _stream_into(session, url, body, timeouts, timing, proxy, limits, state, named, headers, whole)


async def _stream_into(session: aiohttp.ClientSession, url: str, body: bytes, timeouts: Timeouts, timing: Timing,
                       proxy: str | None, limits: Limits, state: S, named: Callable[[S, str, str], bool] | None,
                       headers: Mapping[str, str] | None, whole: Callable[[S, dict[str, Any]], None] | None
                       ) -> Attempt[S]:
    loop = asyncio.get_running_loop()
    now = time.perf_counter
    deadline = _Deadline(loop, timeouts)
    first = (timeouts.connect or 0) + (timeouts.first_byte or 0) if (timeouts.connect or timeouts.first_byte) else None
    attempt = attempt_context(timing)  # for TimedConnector, should this request open a connection
    try:
        async with asyncio.timeout(deadline.at(first)) as cm:
            timing.mark_sent(now())
            async with session.post(url, data=body, proxy=proxy, trace_request_ctx=timing, headers=headers) as resp:
                if resp.status != 200:
                    raise status_error(resp.status, await resp.content.read(65536), resp.headers)
                if resp.content_type == "application/json":
                    # A server that ignored "stream": true answered in one piece.
                    raw = await read_bounded(resp.content, limits.max_response_bytes)
                    _apply_whole_response(state, timing, raw, now(), whole)
                    return Attempt(state, timing, resp.headers)
                if resp.content_type == "text/html":  # a proxy's or login page's 200, not an API answer
                    page = html_page(await resp.content.read(4096), resp.headers)
                    raise MalformedResponse(f"HTTP 200: {page} instead of an event stream (text/html): "
                                            f"{NOT_THE_API}")
                deadline.stage = "stream"
                await _read_stream(resp.content, state, timing, cm, deadline, now, limits,
                                   _chat_event if named is None else _named(named),
                                   apply_plain if named is None else None, stamping(resp))
                return Attempt(state, timing, resp.headers)
    except RequestError as exc:
        _keep_partial(exc, state)
        raise  # the same error, its cause kept
    except CONNECT_TIMEOUTS as exc:
        raise _keep_partial(connect_failure(exc, timeout=timeouts.connect), state) from exc
    except TimeoutError as exc:
        if state.finished and timing.end is not None:
            return Attempt(state, timing, {})  # only the drain after [DONE] timed out
        raise _keep_partial(RequestTimeout(deadline.describe()), state) from exc
    except aiohttp.ClientConnectorError as exc:
        raise _keep_partial(connect_failure(exc), state) from exc
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError, aiohttp.ClientOSError,
            ConnectionError) as exc:
        if state.finished:
            timing.end = timing.end or now()
            return Attempt(state, timing, {})
        message = f"connection lost: {type(exc).__name__}: {exc}".rstrip(": ")
        if deadline.stage == "stream":  # the 200 had arrived
            raise _keep_partial(IncompleteStream(message), state) from exc
        raise _keep_partial(_connect_error(message, exc, exc if isinstance(exc, OSError) else None),
                            state) from exc
    except aiohttp.ClientError as exc:
        raise _keep_partial(_connect_error(f"{type(exc).__name__}: {exc}", exc, None), state) from exc
    finally:
        reset_attempt_context(attempt)


def _keep_partial(err: RequestError, state: StreamState) -> RequestError:
    """The record of a failed request keeps the text streamed before the failure."""
    err.partial = state
    return err


async def read_bounded(content: aiohttp.StreamReader, limit: int) -> bytes:
    """A whole body, refused past `limit` bytes (after decompression: a 2 MB gzip can inflate to GBs)."""
    parts: list[bytes] = []
    total = 0
    while chunk := await content.readany():
        total += len(chunk)
        if total > limit:
            raise ResponseTooLarge(f"the response body grew past {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


def _chat_event(state: StreamState, event: Event) -> bool:
    """chat/completions: data carries everything; `event: error` is an error whatever its data."""
    if event.event != "message":
        _check_event_type(event.event, event.data)
    return handle_data(state, event.data)


def _named(handle_event: Callable[[S, str, str], bool]) -> Callable[[S, Event], bool]:
    """APIs that name their events (Responses, Anthropic): the name says what the data is."""
    return lambda state, event: handle_event(state, event.event, event.data)


class _IdleWatch:
    """The idle timeout without a timer per read: a read only notes its time (`last`); one
    timer checks, when `idle` seconds may have passed, whether they did, and otherwise looks
    again `idle` after the last read.  When they did, the attempt's timeout expires now."""

    __slots__ = ("loop", "cm", "idle", "last", "handle")

    def __init__(self, loop: asyncio.AbstractEventLoop, cm: asyncio.Timeout, idle: float, last: float) -> None:
        self.loop, self.cm, self.idle, self.last = loop, cm, idle, last
        self.handle = loop.call_later(idle, self.check)

    def check(self) -> None:
        left = self.last + self.idle - time.perf_counter()
        if left > 0:
            self.handle = self.loop.call_later(left, self.check)
        elif not self.cm.expired():
            self.cm.reschedule(self.loop.time())  # expires: the read in progress raises TimeoutError

    def cancel(self) -> None:
        self.handle.cancel()


async def _read_stream(content: aiohttp.StreamReader, state: S, timing: Timing,
                       cm: asyncio.Timeout, deadline: _Deadline, now: Callable[[], float], limits: Limits,
                       apply: Callable[[S, Event], bool],
                       plain: Callable[[S, list[bytes], int], int] | None = None,
                       proto: StampingHandler | None = None) -> None:
    """Read and apply the events to the end of the stream (or [DONE]), stamping each read's arrival.

    The stamp of a read is when its last bytes reached aiohttp (`proto.received_at`, when the
    connection's protocol stamps its reads and did since the last read), else when `readany()`
    returned: never before the bytes were there, so a measured time is never below the truth.

    `plain` (chat/completions: `plain.apply_plain`) is the hot path: a read that is nothing
    but whole `data:` events (`SSEDecoder.feed_data`) goes to it as a list, and only the events
    it leaves (the first chunk, finish_reason, usage, anything unusual) take the general path,
    one by one, as every event of every other read does.  The stamps are the same either way.
    """
    decoder = SSEDecoder(limits.max_event_bytes)
    idle = deadline.timeouts.idle
    watch: _IdleWatch | None = None
    budget = limits.max_response_bytes
    arrived = returned = timing.sent
    on_event = timing.on_event
    feed_data = decoder.feed_data if plain is not None else None
    started = armed = False
    try:
        while True:
            if started and not armed:  # past the first bytes: the idle timeout and the total one apply
                armed = True  # (set only now: a stream that came whole in its first read needs no timer)
                cm.reschedule(deadline.total_at)
                if idle:
                    watch = _IdleWatch(deadline.loop, cm, idle, returned)
            chunk = await content.readany()
            last, returned = returned, now()
            arrived = returned
            if proto is not None and proto.received_at > last:
                arrived = proto.received_at
            if watch is not None:
                watch.last = returned
            if not chunk:
                break
            started = True
            budget -= len(chunk)
            if budget < 0:
                raise ResponseTooLarge(f"the response grew past {limits.max_response_bytes} bytes")
            try:
                datas = feed_data(chunk) if feed_data is not None else None
                events = decoder.feed(chunk) if datas is None else ()
            except EventTooLarge as exc:
                raise ResponseTooLarge(str(exc)) from None
            if datas and plain is not None:  # (datas come only with plain)
                i, end = 0, len(datas)
                while True:
                    events0, text0 = state.events, state.text_events
                    j = plain(state, datas, i)
                    if j > i:
                        timing.on_read(arrived, state.events - events0, state.text_events - text0)
                        if timing.first_answer is None and state.text_parts:
                            timing.on_answer(arrived)
                    if j == end or state.done:
                        break
                    # the one event the hot path left: the general path, as in any other read
                    on_event(arrived, handle_data(state, datas[j].decode("utf-8", "replace")))
                    if timing.first_answer is None and state.text_parts:
                        timing.on_answer(arrived)
                    if state.done:
                        break
                    i = j + 1
            else:
                for event in events:
                    on_event(arrived, apply(state, event))
                    if timing.first_answer is None and state.text_parts:
                        timing.on_answer(arrived)
                    if state.done:
                        break
            if state.done:
                timing.end = arrived
                _check_not_empty(state)
                if watch is not None:
                    watch.cancel()
                    watch = None
                await _drain(content, cm, deadline)
                return
    finally:
        if watch is not None:
            watch.cancel()
    for event in decoder.close():
        on_event(arrived, apply(state, event))
    if timing.first_answer is None and state.text_parts:
        timing.on_answer(arrived)
    timing.end = arrived
    if not state.finished:
        raise IncompleteStream(
            f"stream ended after {state.events} events without finish_reason or [DONE]")
    _check_not_empty(state)


def _check_not_empty(state: StreamState) -> None:
    """A stream that ends without a finish_reason was not finished by the model.

    With no content it generated nothing (`empty_response`); with content it
    was cut short: llama.cpp's server, for one, ends a stream with
    `data: [DONE]` and no finish_reason when it interrupts a request for
    another (`incomplete_stream`).  Both are retried; neither is an ok record.
    """
    if state.finish_reason is not None:
        return
    if not (state.text_events or state.tool_calls):
        raise EmptyResponse(f"the stream ended after {state.events} events with no content and no finish_reason")
    raise IncompleteStream(f"the stream ended after {state.events} events without a finish_reason: "
                           "the answer was cut short")


def _check_event_type(event: str, data: str) -> None:
    """`event: error` carries an error whatever its data looks like."""
    if event == "error":
        raise StreamErrorEvent(error_body_message(data.encode()) or "error event")


async def _drain(content: aiohttp.StreamReader, cm: asyncio.Timeout, deadline: _Deadline) -> None:
    """Read to the end of the body so aiohttp can put the connection back in the pool."""
    if content.at_eof():
        return  # the end came with [DONE] (the usual case): no timer to set
    cm.reschedule(deadline.at(_DRAIN_AFTER_DONE_S))
    try:
        while await content.readany():
            pass
    except (aiohttp.ClientError, ConnectionError):
        pass


def _apply_whole_response(state: S, timing: Timing, raw: bytes, arrived: float,
                          whole: Callable[[S, dict[str, Any]], None] | None = None) -> None:
    """A server that ignored `"stream": true` answered in one piece; take what a stream would have given.

    `whole` is the API's reader of its whole answer (a Response, an Anthropic
    Message); chat/completions' by default.  The reply counts as one event.
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise IncompleteStream(f"unreadable JSON response: {raw[:200]!r}") from exc
    if not isinstance(obj, dict):
        raise IncompleteStream(f"the JSON response is not an object: {raw[:200]!r}")
    if obj.get("error"):  # a 200 that carries an error is an error
        raise StreamErrorEvent(error_body_message(raw))
    state.events = 1
    (whole or apply_whole)(state, obj)
    state.done = True
    text = state.text
    carried = bool(text or state.tool_calls)
    state.text_events = int(carried)
    timing.on_event(arrived, carried)
    if text:
        timing.on_answer(arrived)
    timing.end = arrived
    if not carried and state.finish_reason is None:
        raise EmptyResponse("the JSON response had no content and no finish_reason")
