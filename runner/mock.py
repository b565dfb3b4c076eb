"""Embedded mock of an OpenAI-compatible streaming server (aiohttp.web).

Why it exists: ``make run`` needs an endpoint without an API key or a
network, the tests need one whose faults they can script, and the
benchmarks need one that can push thousands of concurrent streams without
itself being the bottleneck, with timing precise enough to check the
client's latency measurements against.

What it serves
    ``POST /v1/chat/completions`` and ``POST /v1/completions`` (an SSE
    stream when the body has ``"stream": true``, else one JSON object),
    ``GET /v1/models``, ``GET /mock/stats`` (counters) and
    ``POST /mock/reset``.

Stream shape (byte-for-byte what OpenAI sends; chat shown)::

    data: {"id":...,"object":"chat.completion.chunk",...,"choices":[{"index":0,"delta":{"role":"assistant","content":""},...}]}
    data: {... "delta":{"content":" word"} ...}        x N events
    data: {... "delta":{},"logprobs":null,"finish_reason":"stop"}]}
    data: {... "choices":[],"usage":{...}}              only with stream_options.include_usage
    data: [DONE]

``/v1/completions`` streams carry ``choices[0].text`` and, like OpenAI's
legacy endpoint, have no role chunk.  With ``include_usage`` every other
chunk also carries ``"usage":null``, as OpenAI's do.

Timing
    The role chunk goes out as soon as the request arrives (so a client's
    time-to-first-byte and time-to-first-token differ by ``ttft``).  Content
    event ``j`` is due at ``t0 + ttft + j * tokens_per_chunk / tokens_per_s``,
    ``t0`` being the loop time when the handler started: every target is
    absolute, so sleep overshoot never accumulates.  Events already due are
    written together in one write (only when there is nothing to wait for),
    anything due later is flushed before sleeping, so the client sees the
    real gaps.  The finish/usage/[DONE] chunks follow the last content event
    without delay.

Text and token counts
    Tokens are words from a fixed list (including multi-byte UTF-8, a
    quoted word and a newline, to exercise clients' decoding), picked by a
    walk seeded by the CRC32 of the prompt text: the same prompt always
    gets the same text.  ``prompt_tokens`` uses the same chars/4 cookbook
    estimate as the client's fallback (``runner.tokens`` without tiktoken),
    so TPM quota tests agree with the client's own accounting.

Faults (see ``MockConfig`` and the ``"mock"`` request-body field)
    Per-request scripted faults keyed by ``body["mock"]["key"]``; seeded
    random 500/429/drop rates; RPM/TPM quotas; an API key check.

Quotas are token buckets, one per limit, holding up to the per-minute limit
and refilling at limit/60 per second, i.e. what OpenAI describes and what
``runner.quota`` implements on the client side.  A bucket starts full.  A
request costs 1 request and ``prompt estimate + (max_completion_tokens or
max_tokens or output_tokens)`` tokens, taken only when both fit.

``workers > 1`` in ``run_server`` starts that many processes sharing the
port (SO_REUSEPORT); each has its own counters, quotas, fault-key state and
random stream, so ``/mock/stats`` reports one process.  Use one worker when
a test depends on those.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import math
import multiprocessing
import os
import random
import signal
import socket
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import click
import orjson
from aiohttp import web

from .quota import TokenBucket
from .tokens import content_text

__all__ = [
    "MockConfig",
    "ScriptEntry",
    "MockStats",
    "MockState",
    "STATE_KEY",
    "FAULTS",
    "build_app",
    "serve",
    "run_server",
    "load_script",
    "mock_command",
    "prompt_tokens_estimate",
    "format_reset",
]


# --------------------------------------------------------------------------
# Configuration


@dataclass(frozen=True)
class ScriptEntry:
    """One scripted response timing: the first content event at ``ttft``
    seconds, then one more event after each gap (``len(gaps) + 1`` events)."""

    ttft: float
    gaps: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not _finite_nonneg(self.ttft) or not all(_finite_nonneg(g) for g in self.gaps):
            raise ValueError("script ttft and gaps must be finite numbers >= 0")


@dataclass(frozen=True)
class MockConfig:
    """How the mock behaves.  See the module docstring for the semantics."""

    ttft: float = 0.05
    tokens_per_s: float = 200.0  # 0 or inf: no sleeps between events
    output_tokens: int = 64  # the request's max_(completion_)tokens overrides it
    tokens_per_chunk: int = 1
    error_rate: float = 0.0
    status_429_rate: float = 0.0
    drop_rate: float = 0.0
    retry_after: float = 1.0
    seed: int | None = None
    script: tuple[ScriptEntry, ...] = ()
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    quota_fill: float = 1.0  # how full the quota buckets start (0..1); below 1, a burst at start trips them
    model: str = "mock-model"
    api_key: str | None = None

    def __post_init__(self) -> None:
        if not _finite_nonneg(self.ttft):
            raise ValueError("ttft must be a finite number >= 0")
        if not self.tokens_per_s >= 0:  # also rejects NaN
            raise ValueError("tokens_per_s must be >= 0 (0 or inf: as fast as possible)")
        if self.output_tokens < 0:
            raise ValueError("output_tokens must be >= 0")
        if self.tokens_per_chunk < 1:
            raise ValueError("tokens_per_chunk must be >= 1")
        rates = (self.error_rate, self.status_429_rate, self.drop_rate)
        if not all(0.0 <= r <= 1.0 for r in rates) or sum(rates) > 1.0 + 1e-9:
            raise ValueError("error/429/drop rates must be in [0, 1] and sum to at most 1")
        if not _finite_nonneg(self.retry_after):
            raise ValueError("retry_after must be a finite number >= 0")
        for name in ("rpm_limit", "tpm_limit"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive")
        if not 0.0 <= self.quota_fill <= 1.0:
            raise ValueError("quota_fill must be in [0, 1]")
        if not isinstance(self.script, tuple):
            object.__setattr__(self, "script", tuple(self.script))

    @property
    def token_interval(self) -> float:
        """Seconds between tokens after the first (0 = no sleeping)."""
        rate = self.tokens_per_s
        return 0.0 if rate == 0 or math.isinf(rate) else 1.0 / rate


def _finite_nonneg(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0


def load_script(path: str | os.PathLike[str]) -> tuple[ScriptEntry, ...]:
    """Read timing entries from a JSONL file (one object per line) or a
    JSON list of objects: ``{"ttft": 0.1, "gaps": [0.01, 0.02]}``.
    Raises ValueError naming the bad entry."""
    text = Path(path).read_text(encoding="utf-8")
    stripped = text.lstrip()
    items: list[tuple[str, Any]] = []
    try:
        if stripped.startswith("["):
            items = [(f"item {i}", obj) for i, obj in enumerate(orjson.loads(stripped))]
        else:
            for lineno, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    items.append((f"line {lineno}", orjson.loads(line)))
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON/JSONL: {exc}") from None
    entries = []
    for where, obj in items:
        try:
            if not isinstance(obj, dict) or "ttft" not in obj:
                raise ValueError('expected an object with "ttft" and "gaps"')
            gaps = obj.get("gaps", [])
            if not isinstance(gaps, list):
                raise ValueError('"gaps" must be a list of seconds')
            entries.append(ScriptEntry(obj["ttft"], tuple(gaps)))
        except ValueError as exc:
            raise ValueError(f"{path}: {where}: {exc}") from None
    if not entries:
        raise ValueError(f"{path}: no script entries")
    return tuple(entries)


# --------------------------------------------------------------------------
# Text: a fixed vocabulary, pre-encoded once as JSON-escaped bytes.

# 61 (a prime) tokens, so every step 1..60 of the walk visits all of them.
_TOKENS: tuple[str, ...] = (
    " the", " quick", " brown", " fox", " jumps", " over", " lazy", " dog",
    " stream", " token", " latency", " café", " naïve", " über", " 日本語",
    " 模型", " 🙂", " 🚀", " Ωmega", " résumé", " straße", " ñandú", " δ",
    " \"quoted\"", "\n", " and", " of", " to", " in", " is", " a", " data",
    " model", " server", " client", " async", " batch", " event", " chunk",
    " reply", " prompt", " measure", " time", " first", " byte", " each",
    " word", " runs", " fast", " slow", " queue", " retry", " limit",
    " Привет", " مرحبا", " ✓", " €", " naïveté", " 😀👍", " end", ".",
)
_NT = len(_TOKENS)
# JSON-escaped UTF-8 without the surrounding quotes: concatenating them is
# still a valid JSON string body, which lets a chunk carry several tokens.
_ESC: tuple[bytes, ...] = tuple(orjson.dumps(t)[1:-1] for t in _TOKENS)
_ESC_FIRST: tuple[bytes, ...] = tuple(orjson.dumps(t.lstrip(" "))[1:-1] for t in _TOKENS)
_TEXT_FIRST: tuple[str, ...] = tuple(t.lstrip(" ") for t in _TOKENS)


def _token_index(seed: int, i: int) -> int:
    """Vocabulary index of token ``i`` of the reply to a prompt with this
    seed: a walk with a prompt-dependent start and stride (deterministic)."""
    return (seed + i * (1 + (seed >> 8) % (_NT - 1))) % _NT


def _text(seed: int, n: int) -> str:
    """The whole reply text (non-streaming responses)."""
    if n == 0:
        return ""
    return _TEXT_FIRST[_token_index(seed, 0)] + "".join(_TOKENS[_token_index(seed, i)] for i in range(1, n))


def _content_events(pre: bytes, post: bytes, seed: int, k: int, n_tokens: int, a: int, b: int) -> list[bytes]:
    """Content events ``a`` to ``b`` (exclusive), ``k`` tokens each, as
    complete SSE frames: ``pre + escaped text + post``."""
    start = seed % _NT
    stride = 1 + (seed >> 8) % (_NT - 1)
    esc = _ESC
    if k == 1:  # the hot path: one table lookup and two concatenations each
        events = [pre + esc[(start + j * stride) % _NT] + post for j in range(max(a, 1), b)]
        if a == 0 and b > 0:
            events.insert(0, pre + _ESC_FIRST[start] + post)
        return events
    events = []
    for j in range(a, b):
        first, last = j * k, min(n_tokens, (j + 1) * k)
        parts = [esc[(start + i * stride) % _NT] for i in range(first, last)]
        if first == 0 and parts:
            parts[0] = _ESC_FIRST[start]
        events.append(pre + b"".join(parts) + post)
    return events


@dataclass(frozen=True, slots=True)
class _Schedule:
    """When each content event is due, in seconds after the request arrived:
    ``ttft + j * step`` or, for a script entry, its cumulative offsets."""

    n: int
    ttft: float = 0.0
    step: float = 0.0
    offsets: tuple[float, ...] | None = None

    def offset(self, j: int) -> float:
        return self.offsets[j] if self.offsets is not None else self.ttft + j * self.step

    def due(self, elapsed: float, j: int) -> int:
        """How many events (at least ``j``) are due ``elapsed`` s after arrival."""
        if self.offsets is not None:
            return bisect.bisect_right(self.offsets, elapsed, j, self.n)
        if elapsed < self.ttft:
            return j
        if self.step == 0.0:
            return self.n
        return max(j, min(self.n, int((elapsed - self.ttft) / self.step) + 1))


def prompt_tokens_estimate(body: dict[str, Any]) -> int:
    """The mock's ``prompt_tokens``: OpenAI-cookbook style with chars/4 text.

    Chat: 3 per message + ceil(len/4) of its role, each text content part
    and name (+1 for a name) + 3 for reply priming.  Completions: ceil(len/4)
    per prompt string, or the number of ids in a pre-tokenized prompt.
    Identical to the client's estimate when tiktoken is not installed, so
    TPM accounting agrees on both sides."""

    def est(s: str) -> int:
        return -(-len(s) // 4)

    messages = body.get("messages")
    if isinstance(messages, list):
        total = 3
        for m in messages:
            if not isinstance(m, dict):
                continue
            total += 3
            for key in ("role", "name"):
                if isinstance(m.get(key), str):
                    total += est(m[key]) + (1 if key == "name" else 0)
            total += sum(est(p) for p in content_text(m.get("content")))
        return total
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return est(prompt)
    if isinstance(prompt, list):
        if prompt and all(isinstance(t, int) for t in prompt):
            return len(prompt)
        return sum(est(p) if isinstance(p, str) else len(p) if isinstance(p, list) else 0 for p in prompt)
    return 0


def _prompt_text(body: dict[str, Any]) -> str:
    """All prompt text, used only to seed the reply text."""
    messages = body.get("messages")
    if isinstance(messages, list):
        return "\x00".join(
            p for m in messages if isinstance(m, dict) for p in content_text(m.get("content"))
        )
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        return "\x00".join(str(p) for p in prompt)
    return str(prompt)


# --------------------------------------------------------------------------
# Stream frames: per-request byte templates, so an event is two concatenations.


_DONE = b"data: [DONE]\n\n"
_ERROR_EVENT = (
    b'data: {"error":{"message":"mock: injected mid-stream error","type":"server_error",'
    b'"param":null,"code":"internal_error"}}\n\n'
)


@dataclass(slots=True)
class _Frames:
    """Byte templates of one response's SSE chunks."""

    head: bytes  # 'data: {"id":...,"choices":['
    tail: bytes  # ']}\n\n' or '],"usage":null}\n\n'
    role: bytes | None
    content_pre: bytes
    content_post: bytes
    chat: bool

    def finish(self, reason: str) -> bytes:
        if self.chat:
            choice = b'{"index":0,"delta":{},"logprobs":null,"finish_reason":"%s"}' % reason.encode()
        else:
            choice = b'{"index":0,"text":"","logprobs":null,"finish_reason":"%s"}' % reason.encode()
        return self.head + choice + self.tail

    def usage(self, usage: dict[str, int]) -> bytes:
        return self.head + b'],"usage":' + orjson.dumps(usage) + b"}\n\n"


def _frames(chat: bool, rid: str, created: int, model_json: bytes, usage_null: bool) -> _Frames:
    obj = b"chat.completion.chunk" if chat else b"text_completion"
    head = b'data: {"id":"%s","object":"%s","created":%d,"model":%s,"system_fingerprint":"fp_mock","choices":[' % (
        rid.encode(),
        obj,
        created,
        model_json,
    )
    tail = b'],"usage":null}\n\n' if usage_null else b"]}\n\n"
    if chat:
        role = head + b'{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}' + tail
        pre = head + b'{"index":0,"delta":{"content":"'
        post = b'"},"logprobs":null,"finish_reason":null}' + tail
    else:
        role = None
        pre = head + b'{"index":0,"text":"'
        post = b'","logprobs":null,"finish_reason":null}' + tail
    return _Frames(head, tail, role, pre, post, chat)


# --------------------------------------------------------------------------
# Server state


@dataclass
class MockStats:
    """Counters served by ``GET /mock/stats``.

    ``requests`` counts completion requests (not /v1/models or /mock/*);
    ``by_status`` the status codes answered (keys are strings for JSON);
    ``status_429`` every 429, scripted, random or quota;
    ``streams_dropped`` connections the mock cut on purpose (streaming or
    not); ``streams_cancelled`` streams the client abandoned;
    ``tokens_sent`` content tokens written."""

    requests: int = 0
    by_status: dict[str, int] = field(default_factory=dict)
    streams_started: int = 0
    streams_completed: int = 0
    streams_dropped: int = 0
    streams_errored: int = 0
    streams_cancelled: int = 0
    non_stream_completed: int = 0
    status_429: int = 0
    tokens_sent: int = 0
    active_streams: int = 0
    max_active_streams: int = 0

    def count_status(self, status: int) -> None:
        key = str(status)
        self.by_status[key] = self.by_status.get(key, 0) + 1
        if status == 429:
            self.status_429 += 1

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["by_status"] = dict(self.by_status)
        d["pid"] = os.getpid()
        return d


@dataclass
class MockState:
    """Everything mutable about one app.  ``clock`` feeds the quota buckets
    only; tests may replace it with a fake to make quotas time-independent."""

    config: MockConfig
    stats: MockStats = field(default_factory=MockStats)
    rng: random.Random = field(init=False)
    key_counts: dict[str, int] = field(default_factory=dict)
    script_arrivals: int = 0
    clock: Callable[[], float] = time.monotonic
    rpm: TokenBucket | None = None
    tpm: TokenBucket | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    model_json: bytes = b""
    script_offsets: tuple[tuple[float, ...], ...] = ()
    ids: Iterator[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self.model_json = orjson.dumps(self.config.model)
        self.script_offsets = tuple(
            tuple(itertools.accumulate(e.gaps, initial=e.ttft)) for e in self.config.script
        )
        self.reset()

    def reset(self) -> None:
        """Zero counters and per-key state, refill quotas, restart the RNG."""
        self.stats = MockStats()
        self.rng = random.Random(self.config.seed)
        self.key_counts.clear()
        self.script_arrivals = 0
        now = self.clock()
        c = self.config
        self.rpm = TokenBucket(c.rpm_limit, c.rpm_limit / 60.0, c.rpm_limit * c.quota_fill, now) if c.rpm_limit else None
        self.tpm = TokenBucket(c.tpm_limit, c.tpm_limit / 60.0, c.tpm_limit * c.quota_fill, now) if c.tpm_limit else None

    def next_id(self) -> str:
        return f"{os.getpid():x}{next(self.ids):010x}"


STATE_KEY: web.AppKey[MockState] = web.AppKey("streamrun_mock_state", MockState)

#: Names accepted in ``body["mock"]["faults"]``.
FAULTS = frozenset({"ok", "400", "429", "500", "503", "drop", "error_event", "no_done", "stall"})
_STATUS_FAULTS = {"400", "429", "500", "503"}
_STALL_S = 3600.0
_FEW_EVENTS = 3  # content events sent before a drop / error_event


# --------------------------------------------------------------------------
# Helpers for responses


def format_reset(seconds: float) -> str:
    """A duration the way OpenAI writes ``x-ratelimit-reset-*`` (Go style):
    "20ms", "1s", "1.5s", "6m0s", "1h2m3s"."""
    ms = max(0, round(seconds * 1000))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    h, rem = divmod(ms, 3_600_000)
    m, rem = divmod(rem, 60_000)
    s = f"{rem / 1000:.3f}".rstrip("0").rstrip(".")
    if h:
        return f"{h}h{m}m{s}s"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


def _seconds_header(seconds: float) -> dict[str, str]:
    """``Retry-After`` (integer when whole, else up to ms precision; clients
    parse it as a float) plus OpenAI's ``retry-after-ms``."""
    s = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return {"Retry-After": s, "retry-after-ms": str(round(seconds * 1000))}


class _BadRequest(Exception):
    pass


def _error(
    state: MockState,
    status: int,
    message: str,
    etype: str,
    code: str | None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An OpenAI-style JSON error, counted in the stats."""
    state.stats.count_status(status)
    body = {"error": {"message": message, "type": etype, "param": None, "code": code}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json", headers=headers)


def _fault_response(state: MockState, fault: str, retry_after: float) -> web.Response:
    if fault == "429":
        return _error(
            state, 429, "mock: rate limit reached (injected)", "requests", "rate_limit_exceeded",
            _seconds_header(retry_after),
        )
    if fault == "500":
        return _error(state, 500, "mock: the server had an error (injected)", "server_error", "internal_error")
    if fault == "503":
        return _error(state, 503, "mock: the engine is overloaded (injected)", "server_error", "service_unavailable")
    return _error(state, 400, "mock: invalid request (injected)", "invalid_request_error", "invalid_request")


def _auth_error(request: web.Request, state: MockState) -> web.Response | None:
    key = state.config.api_key
    if key is None or request.headers.get("Authorization") == f"Bearer {key}":
        return None
    return _error(
        state, 401, "mock: incorrect or missing API key", "invalid_request_error", "invalid_api_key"
    )


@dataclass(slots=True)
class _Request:
    """The parts of a completion request the mock acts on."""

    body: dict[str, Any]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    prompt_tokens: int
    seed: int


def _parse(raw: bytes, chat: bool) -> _Request:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _BadRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _BadRequest("request body must be a JSON object")
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise _BadRequest("'messages' must be a non-empty list")
    elif not isinstance(body.get("prompt"), (str, list)):
        raise _BadRequest("'prompt' must be a string or a list")
    max_tokens = None
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise _BadRequest(f"'{key}' must be an integer >= 0")
        max_tokens = value
        break
    mock = body.get("mock")
    if mock is not None and not isinstance(mock, dict):
        raise _BadRequest("'mock' must be an object")
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    seed = zlib.crc32(_prompt_text(body).encode("utf-8", "surrogatepass"))
    return _Request(body, body.get("stream") is True, include_usage, max_tokens, prompt_tokens_estimate(body), seed)


def _scripted_fault(state: MockState, mock: dict[str, Any]) -> tuple[str | None, float]:
    """The fault ``body["mock"]`` asks for (None when it names no key),
    and the Retry-After to use."""
    retry_after = mock.get("retry_after", state.config.retry_after)
    if not _finite_nonneg(retry_after):
        raise _BadRequest("mock.retry_after must be a number >= 0")
    key = mock.get("key")
    if key is None:
        return None, retry_after
    faults = mock.get("faults", [])
    if not isinstance(key, str) or not isinstance(faults, list):
        raise _BadRequest("mock.key must be a string and mock.faults a list")
    bad = [f for f in faults if f not in FAULTS]
    if bad:
        raise _BadRequest(f"unknown mock faults {bad}; known: {sorted(FAULTS)}")
    n = state.key_counts.get(key, 0)
    state.key_counts[key] = n + 1
    return (faults[n] if n < len(faults) else "ok"), retry_after


def _random_fault(state: MockState) -> str:
    c = state.config
    if not (c.error_rate or c.status_429_rate or c.drop_rate):
        return "ok"
    r = state.rng.random()
    if r < c.error_rate:
        return "500"
    if r < c.error_rate + c.status_429_rate:
        return "429"
    if r < c.error_rate + c.status_429_rate + c.drop_rate:
        return "drop"
    return "ok"


def _admit(state: MockState, cost: int) -> tuple[float, str | None, dict[str, str]]:
    """Quota check: (seconds to wait or 0 when admitted, 'requests'/'tokens'
    naming the exhausted limit, x-ratelimit headers).  Takes the quota only
    when both limits fit; a request larger than the TPM limit waits 60 s."""
    now = state.clock()
    wait, which = 0.0, None
    for name, bucket, amount in (("requests", state.rpm, 1), ("tokens", state.tpm, cost)):
        if bucket is None:
            continue
        bucket.refill(now)
        need = 60.0 if amount > bucket.capacity else bucket.wait_for(amount)
        if need > wait:
            wait, which = need, name
    if wait == 0.0:
        if state.rpm:
            state.rpm.level -= 1
        if state.tpm:
            state.tpm.level -= cost
    headers: dict[str, str] = {}
    for name, bucket in (("requests", state.rpm), ("tokens", state.tpm)):
        if bucket is not None:
            headers[f"x-ratelimit-limit-{name}"] = str(int(bucket.capacity))
            headers[f"x-ratelimit-remaining-{name}"] = str(max(0, math.floor(bucket.level + 1e-9)))
            headers[f"x-ratelimit-reset-{name}"] = format_reset(bucket.reset_in())
    return wait, which, headers


# --------------------------------------------------------------------------
# Handlers


async def _completion(request: web.Request, chat: bool) -> web.StreamResponse:
    t0 = time.perf_counter()  # not loop.time(): uvloop's clock ticks in whole milliseconds
    state = request.app[STATE_KEY]
    state.stats.requests += 1
    task = asyncio.current_task()
    if task is not None:
        state.tasks.add(task)
    try:
        return await _completion_inner(request, state, chat, t0)
    finally:
        if task is not None:
            state.tasks.discard(task)


async def _completion_inner(request: web.Request, state: MockState, chat: bool, t0: float) -> web.StreamResponse:
    denied = _auth_error(request, state)
    if denied is not None:
        return denied
    config = state.config
    script_index: int | None = None
    try:
        req = _parse(await request.read(), chat)
        mock = req.body.get("mock") or {}
        fault, retry_after = _scripted_fault(state, mock)
        if config.script:
            index = mock.get("script")
            if index is None:
                index = state.script_arrivals % len(config.script)
                state.script_arrivals += 1
            elif not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(config.script):
                raise _BadRequest(f"mock.script must be an index in [0, {len(config.script)})")
            script_index = index
        elif "script" in mock:
            raise _BadRequest("mock.script given but the server has no --script")
    except _BadRequest as exc:
        return _error(state, 400, str(exc), "invalid_request_error", "invalid_request")

    if fault in _STATUS_FAULTS:
        return _fault_response(state, fault, retry_after)

    headers: dict[str, str] = {}
    n_tokens = req.max_tokens if req.max_tokens is not None else config.output_tokens
    if state.rpm or state.tpm:
        wait, which, headers = _admit(state, req.prompt_tokens + n_tokens)
        if wait > 0:
            headers.update(_seconds_header(math.ceil(wait * 1000) / 1000))
            return _error(
                state, 429, f"mock: rate limit reached for {which} per min", which or "requests",
                "rate_limit_exceeded", headers,
            )

    if fault is None:
        fault = _random_fault(state)
        if fault in _STATUS_FAULTS:
            return _fault_response(state, fault, retry_after)

    k = config.tokens_per_chunk
    if script_index is not None:
        offsets = state.script_offsets[script_index]
        schedule = _Schedule(len(offsets), offsets=offsets)
        n_tokens = len(offsets) * k
        finish_reason = "stop"
    else:
        schedule = _Schedule(-(-n_tokens // k), config.ttft, k * config.token_interval)
        finish_reason = "stop" if req.max_tokens is None else "length"

    rid = state.next_id()
    if req.stream:
        return await _stream(request, state, req, chat, rid, t0, schedule, n_tokens, finish_reason, fault, headers)
    return await _respond_json(request, state, req, chat, rid, t0, schedule, n_tokens, finish_reason, fault, headers)


class _SSEResponse(web.StreamResponse):
    """A StreamResponse whose headers go out with the first body write
    instead of in a send of their own (one syscall less per stream; a
    private aiohttp switch, harmless where it does not exist)."""

    _send_headers_immediately = False


async def _stream(
    request: web.Request,
    state: MockState,
    req: _Request,
    chat: bool,
    rid: str,
    t0: float,
    schedule: _Schedule,
    n_tokens: int,
    finish_reason: str,
    fault: str,
    headers: dict[str, str],
) -> web.StreamResponse:
    stats = state.stats
    headers.update({"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "x-request-id": rid})
    # A stall may write nothing (completions have no role chunk): send its
    # headers at once so the client sees a response that then goes silent.
    resp = (web.StreamResponse if fault == "stall" else _SSEResponse)(status=200, headers=headers)
    await resp.prepare(request)
    stats.count_status(200)
    stats.streams_started += 1
    stats.active_streams += 1
    if stats.active_streams > stats.max_active_streams:
        stats.max_active_streams = stats.active_streams
    frames = _frames(chat, ("chatcmpl-" if chat else "cmpl-") + rid, int(time.time()), state.model_json, req.include_usage)
    k = state.config.tokens_per_chunk
    n_events = schedule.n
    if fault in ("drop", "error_event"):
        n_events = min(n_events, max(1, min(_FEW_EVENTS, n_events // 2)))
        schedule = _Schedule(n_events, schedule.ttft, schedule.step, schedule.offsets)
    pending: list[bytes] = [frames.role] if frames.role is not None else []
    pre, post, seed = frames.content_pre, frames.content_post, req.seed
    try:
        if fault == "stall":
            await resp.write(b"".join(pending))
            await asyncio.sleep(_STALL_S)
            _cut(request, resp)
            stats.streams_dropped += 1
            return resp
        j = 0
        while j < n_events:
            due = schedule.due(time.perf_counter() - t0, j)
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
                due = max(j + 1, schedule.due(time.perf_counter() - t0, j))
            # Every event already due goes out in the same write.
            pending += _content_events(pre, post, seed, k, n_tokens, j, due)
            j = due
        sent_tokens = min(n_events * k, n_tokens)
        stats.tokens_sent += sent_tokens
        if fault == "drop":
            if pending:
                await resp.write(b"".join(pending))
            _cut(request, resp)
            stats.streams_dropped += 1
            return resp
        if fault == "error_event":
            pending.append(_ERROR_EVENT)
            stats.streams_errored += 1
        else:
            pending.append(frames.finish(finish_reason))
            if req.include_usage:
                pending.append(frames.usage(_usage(req.prompt_tokens, sent_tokens)))
            if fault != "no_done":
                pending.append(_DONE)
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


def _cut(request: web.Request, resp: web.StreamResponse) -> None:
    """Close the connection without ending the chunked body: the client
    sees a truncated stream (aiohttp then skips write_eof quietly)."""
    resp.force_close()
    if request.transport is not None:
        request.transport.close()


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


async def _respond_json(
    request: web.Request,
    state: MockState,
    req: _Request,
    chat: bool,
    rid: str,
    t0: float,
    schedule: _Schedule,
    n_tokens: int,
    finish_reason: str,
    fault: str,
    headers: dict[str, str],
) -> web.StreamResponse:
    """A non-streaming reply, sent when the last token would have been."""
    if fault == "stall":
        await asyncio.sleep(_STALL_S)
    end = t0 + schedule.offset(max(0, schedule.n - 1))
    while (delay := end - time.perf_counter()) > 0:
        await asyncio.sleep(delay)
    if fault == "drop":
        state.stats.streams_dropped += 1
        resp = web.Response()
        _cut(request, resp)
        return resp
    if fault == "error_event":
        return _fault_response(state, "500", 0)
    text = _text(req.seed, n_tokens)
    common = {
        "id": ("chatcmpl-" if chat else "cmpl-") + rid,
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": state.config.model,
        "system_fingerprint": "fp_mock",
    }
    if chat:
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": None,
            "finish_reason": finish_reason,
        }
    else:
        choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}
    payload = {**common, "choices": [choice], "usage": _usage(req.prompt_tokens, n_tokens)}
    state.stats.count_status(200)
    state.stats.non_stream_completed += 1
    state.stats.tokens_sent += n_tokens
    headers["x-request-id"] = rid
    return web.Response(body=orjson.dumps(payload), content_type="application/json", headers=headers)


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    return await _completion(request, chat=True)


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _completion(request, chat=False)


async def _models(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    denied = _auth_error(request, state)
    if denied is not None:
        return denied
    model = {"id": state.config.model, "object": "model", "created": 0, "owned_by": "streamrun-mock"}
    return web.Response(body=orjson.dumps({"object": "list", "data": [model]}), content_type="application/json")


async def _stats(request: web.Request) -> web.Response:
    stats = request.app[STATE_KEY].stats
    return web.Response(body=orjson.dumps(stats.to_dict()), content_type="application/json")


async def _reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    return web.Response(body=b'{"reset":true}', content_type="application/json")


async def _cancel_in_flight(app: web.Application) -> None:
    """On shutdown, end in-flight completions (stalls sleep for an hour)
    instead of letting the runner wait out its shutdown timeout."""
    for task in list(app[STATE_KEY].tasks):
        task.cancel()


def build_app(config: MockConfig) -> web.Application:
    """The mock as an aiohttp application; its state is ``app[STATE_KEY]``."""
    app = web.Application()
    app[STATE_KEY] = MockState(config)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_get("/v1/models", _models)
    app.router.add_get("/mock/stats", _stats)
    app.router.add_post("/mock/reset", _reset)
    app.on_shutdown.append(_cancel_in_flight)
    return app


# --------------------------------------------------------------------------
# Running it


def _runner(config: MockConfig) -> web.AppRunner:
    # handler_cancellation: a client that hangs up stops its stream's work at
    # once, even while it sleeps; no access log: it costs CPU per request.
    return web.AppRunner(build_app(config), handler_cancellation=True, access_log=None, shutdown_timeout=1.0)


@asynccontextmanager
async def serve(config: MockConfig, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Run the mock in the current event loop; yields its base URL
    (``http://HOST:PORT/v1``).  In-flight requests are cancelled on exit."""
    runner = _runner(config)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=4096)
        await site.start()
        bound_port = runner.addresses[0][1]
        yield f"http://{_url_host(host)}:{bound_port}/v1"
    finally:
        await runner.cleanup()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _serve_until_signalled(
    config: MockConfig, host: str, port: int, reuse_port: bool, on_ready: Callable[[int], None]
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not on Unix main thread
            pass
    runner = _runner(config)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=4096, reuse_port=reuse_port or None)
        await site.start()
        on_ready(runner.addresses[0][1])
        parent = os.getppid()
        while not stop.is_set():
            # A worker whose parent died (killed without cleanup) exits too.
            if reuse_port and os.getppid() != parent:
                break
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass
    finally:
        await runner.cleanup()


def _run_loop(coro_factory: Callable[[], Any]) -> None:
    """Run with uvloop when installed (the ``speed`` extra), else asyncio."""
    try:
        import uvloop  # type: ignore[import-not-found]

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(coro_factory())


def _announce(host: str, port: int) -> None:
    print(f"mock server listening on http://{_url_host(host)}:{port}/v1", file=sys.stderr, flush=True)


def _worker(config: MockConfig, host: str, port: int, ready: Any) -> None:
    """One of several processes sharing the port (run via multiprocessing)."""
    _run_loop(lambda: _serve_until_signalled(config, host, port, True, lambda p: ready.put(p)))


def run_server(config: MockConfig, host: str, port: int, workers: int = 1) -> None:
    """Serve until SIGINT/SIGTERM, announcing the URL on stderr once listening.

    ``workers > 1`` runs that many processes on one port with SO_REUSEPORT
    (the kernel spreads connections), so the mock is never the bottleneck
    of a client benchmark.  Port 0 then picks one free port for all."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    if workers == 1:
        _run_loop(lambda: _serve_until_signalled(config, host, port, False, lambda p: _announce(host, p)))
        return
    if port == 0:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(config, host, port, ready), daemon=True) for _ in range(workers)]
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        for p in procs:
            p.start()
        for _ in procs:
            ready.get()
        _announce(host, port)
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(5)
        signal.signal(signal.SIGTERM, previous)


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@click.command("mock")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int, help="0 picks a free port.")
@click.option("--ttft", default=0.05, show_default=True, type=float, help="Seconds before the first content token.")
@click.option("--tokens-per-s", default=200.0, show_default=True, type=float, help="Token rate after the first; 0 or inf = no sleeps.")
@click.option("--output-tokens", default=64, show_default=True, type=int, help="Reply length unless the request sets max_tokens.")
@click.option("--tokens-per-chunk", default=1, show_default=True, type=int, help="Tokens per SSE event.")
@click.option("--error-rate", default=0.0, show_default=True, type=float, help="Fraction answered 500.")
@click.option("--status-429-rate", default=0.0, show_default=True, type=float, help="Fraction answered 429.")
@click.option("--drop-rate", default=0.0, show_default=True, type=float, help="Fraction whose connection is cut mid-stream.")
@click.option("--retry-after", default=1.0, show_default=True, type=float, help="Seconds put in Retry-After.")
@click.option("--seed", default=None, type=int, help="Seed for the random faults.")
@click.option("--script", "script_path", default=None, type=click.Path(exists=True, dir_okay=False), help="JSONL of {ttft, gaps} timings.")
@click.option("--rpm-limit", default=None, type=int, help="Requests per minute before 429.")
@click.option("--tpm-limit", default=None, type=int, help="Tokens per minute before 429.")
@click.option("--quota-fill", default=1.0, show_default=True, type=float,
              help="How full the RPM/TPM buckets start (0..1).")
@click.option("--model", default="mock-model", show_default=True)
@click.option("--api-key-env", default=None, metavar="NAME", help="Require 'Bearer $NAME' on /v1 requests.")
@click.option("--workers", default=1, show_default=True, type=int, help="Processes sharing the port (SO_REUSEPORT).")
def mock_command(
    host: str,
    port: int,
    ttft: float,
    tokens_per_s: float,
    output_tokens: int,
    tokens_per_chunk: int,
    error_rate: float,
    status_429_rate: float,
    drop_rate: float,
    retry_after: float,
    seed: int | None,
    script_path: str | None,
    rpm_limit: int | None,
    tpm_limit: int | None,
    quota_fill: float,
    model: str,
    api_key_env: str | None,
    workers: int,
) -> None:
    """Run the mock OpenAI-compatible streaming server."""
    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise click.UsageError(f"--api-key-env: environment variable {api_key_env} is not set")
    try:
        script = load_script(script_path) if script_path else ()
        config = MockConfig(
            ttft=ttft,
            tokens_per_s=tokens_per_s,
            output_tokens=output_tokens,
            tokens_per_chunk=tokens_per_chunk,
            error_rate=error_rate,
            status_429_rate=status_429_rate,
            drop_rate=drop_rate,
            retry_after=retry_after,
            seed=seed,
            script=script,
            rpm_limit=rpm_limit,
            tpm_limit=tpm_limit,
            quota_fill=quota_fill,
            model=model,
            api_key=api_key,
        )
        if workers < 1:
            raise ValueError("--workers must be >= 1")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    run_server(config, host, port, workers)


if __name__ == "__main__":  # python -m runner.mock ...
    mock_command()
