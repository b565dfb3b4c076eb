"""What one mock app remembers between requests: counters, quotas, faults.

Why it exists: the handlers in ``app`` are stateless recipes; everything
that changes from one request to the next (stats, the quota windows, the
per-key fault counters, the random stream, the script's arrival order)
lives here, with the decisions made from it (which fault, admitted or not).

Quotas are fixed one-second windows, one limiter per limit, written apart
from the client's token buckets (``runner.engine.quota``) so that the tests check
the client against a second, independent reading of "N per minute": each
clock second (``floor(clock())``) grants ``limit / 60`` (a fraction is
carried exactly, in sixtieths, so that 60 seconds grant exactly the limit),
at the start of that second; what a second leaves unspent carries over, up
to the per-minute limit.  A limiter starts ``quota_fill`` full, plus the
current second's share.  Under steady demand a limiter therefore admits
``limit / 60`` per clock second; after an idle spell, a burst of up to one
minute's limit.  A request costs 1 request and ``prompt estimate +
(max_completion_tokens or max_tokens or output_tokens)`` tokens, taken only
when both fit; one that exceeds a whole minute's limit waits 60 s.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any

import orjson
from aiohttp import web

from .config import MockConfig, finite_nonneg
from .request import bad_request

__all__ = [
    "FAULTS",
    "STATE_KEY",
    "STATUS_FAULTS",
    "MockState",
    "MockStats",
    "admit",
    "format_reset",
    "random_fault",
    "script_index",
    "scripted_fault",
    "seconds_header",
    "WindowQuota",
]

#: Names accepted in ``body["mock"]["faults"]``.
FAULTS = frozenset({"ok", "400", "429", "500", "503", "drop", "error_event", "no_done", "stall"})
STATUS_FAULTS = frozenset({"400", "429", "500", "503"})
#: How many W3C ``traceparent`` headers ``GET /mock/traceparents`` remembers (the latest).
TRACEPARENTS_KEPT = 10_000


@dataclass
class MockStats:
    """Counters served by ``GET /mock/stats``.

    ``requests`` counts completion requests (not /v1/models or /mock/*);
    ``by_status`` the status codes answered (keys are strings for JSON);
    ``status_429`` every 429, scripted, random or quota;
    ``streams_dropped`` connections the mock cut on purpose (streaming or
    not); ``streams_cancelled`` streams the client abandoned;
    ``tokens_sent`` content tokens written; ``batch_lines`` how often each
    custom_id was submitted in a batch (the Batch APIs, ``batches``)."""

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
    prompt_tokens: int = 0  # of the requests answered (admitted, not refused): /metrics' vllm:prompt_tokens_total
    active_streams: int = 0
    max_active_streams: int = 0
    files_uploaded: int = 0  # POST /v1/files
    batches_created: int = 0  # OpenAI batches and Anthropic Message Batches accepted
    batch_lines: dict[str, int] = field(default_factory=dict)  # custom_id -> times submitted in a batch

    def count_status(self, status: int) -> None:
        key = str(status)
        self.by_status[key] = self.by_status.get(key, 0) + 1
        if status == 429:
            self.status_429 += 1

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["by_status"] = dict(self.by_status)
        d["batch_lines"] = dict(self.batch_lines)
        d["pid"] = os.getpid()
        return d


@dataclass
class MockState:
    """Everything mutable about one app.  ``clock`` feeds the quota windows
    only; tests may replace it with a fake to make quotas time-independent."""

    config: MockConfig
    stats: MockStats = field(default_factory=MockStats)
    rng: random.Random = field(init=False)
    key_counts: dict[str, int] = field(default_factory=dict)
    script_arrivals: int = 0
    clock: Callable[[], float] = time.monotonic
    rpm: WindowQuota | None = None
    tpm: WindowQuota | None = None
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    model_json: bytes = b""
    script_offsets: tuple[tuple[float, ...], ...] = ()
    ids: Iterator[int] = field(default_factory=itertools.count)
    #: the ``traceparent`` header of each request that had one, oldest first (``GET /mock/traceparents``)
    traceparents: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=TRACEPARENTS_KEPT))

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
        self.traceparents.clear()
        now = self.clock()
        c = self.config
        self.rpm = WindowQuota(c.rpm_limit, c.quota_fill, now) if c.rpm_limit else None
        self.tpm = WindowQuota(c.tpm_limit, c.quota_fill, now) if c.tpm_limit else None

    def next_id(self) -> str:
        return f"{os.getpid():x}{next(self.ids):010x}"


STATE_KEY: web.AppKey[MockState] = web.AppKey("streamrun_mock_state", MockState)


# --------------------------------------------------------------------------
# Faults


def scripted_fault(state: MockState, mock: dict[str, Any]) -> tuple[str | None, float]:
    """The fault ``body["mock"]`` asks for (None when it names no key),
    and the Retry-After to use.  Raises ``Refusal`` for a malformed field."""
    retry_after = mock.get("retry_after", state.config.retry_after)
    if not finite_nonneg(retry_after):
        raise bad_request("mock.retry_after must be a number >= 0")
    key = mock.get("key")
    if key is None:
        return None, retry_after
    faults = mock.get("faults", [])
    if not isinstance(key, str) or not isinstance(faults, list):
        raise bad_request("mock.key must be a string and mock.faults a list")
    bad = [f for f in faults if f not in FAULTS]
    if bad:
        raise bad_request(f"unknown mock faults {bad}; known: {sorted(FAULTS)}")
    n = state.key_counts.get(key, 0)
    state.key_counts[key] = n + 1
    return (faults[n] if n < len(faults) else "ok"), retry_after


def script_index(state: MockState, mock: dict[str, Any]) -> int | None:
    """Which script entry times this reply (None without a script): the one
    ``mock.script`` names, else the next in arrival order."""
    script = state.config.script
    if not script:
        if "script" in mock:
            raise bad_request("mock.script given but the server has no --script")
        return None
    index = mock.get("script")
    if index is None:
        index = state.script_arrivals % len(script)
        state.script_arrivals += 1
    elif not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(script):
        raise bad_request(f"mock.script must be an index in [0, {len(script)})")
    return index


def random_fault(state: MockState) -> str:
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


# --------------------------------------------------------------------------
# Quotas


class WindowQuota:
    """One per-minute limit, granted per fixed one-second window.

    Amounts are kept in sixtieths (integers), so a second's share of
    ``limit / 60`` is exact for any limit: every second adds ``limit``
    sixtieths, a request of ``n`` costs ``60 n``, and the level never
    exceeds ``60 * limit`` (one minute's worth)."""

    __slots__ = ("limit", "level", "second")

    def __init__(self, limit: int, fill: float, now: float) -> None:
        self.limit = int(limit)
        self.second = math.floor(now)
        # quota_fill of the minute, plus the share of the second in progress
        self.level = min(60 * self.limit, round(fill * 60 * self.limit) + self.limit)

    def advance(self, now: float) -> None:
        """Grant the shares of the clock seconds that began since the last call."""
        second = math.floor(now)
        if second > self.second:
            self.level = min(60 * self.limit, self.level + (second - self.second) * self.limit)
            self.second = second

    def take(self, amount: int) -> None:
        self.level -= 60 * amount

    @property
    def remaining(self) -> int:
        """Whole requests (or tokens) that would be admitted now."""
        return max(0, self.level // 60)

    def wait_for(self, amount: int, now: float) -> float:
        """Seconds from ``now`` until ``amount`` fits: the start of the second
        whose share completes it (0 when it fits now; 60 when it never can)."""
        if amount > self.limit:
            return 60.0
        return self._until(60 * amount, now)

    def reset_in(self, now: float) -> float:
        """Seconds until the limit is whole again (OpenAI's x-ratelimit-reset-*)."""
        return self._until(60 * self.limit, now)

    def _until(self, level: int, now: float) -> float:
        deficit = level - self.level
        if deficit <= 0:
            return 0.0
        seconds = -(-deficit // self.limit)  # whole windows still to start
        return max(0.0, self.second + seconds - now)


def admit(state: MockState, cost: int) -> tuple[float, str | None, dict[str, str]]:
    """Quota check: (seconds to wait or 0 when admitted, 'requests'/'tokens'
    naming the exhausted limit, x-ratelimit headers).  Takes the quota only
    when both limits fit; a request larger than the TPM limit waits 60 s."""
    now = state.clock()
    wait, which = 0.0, None
    for name, quota, amount in (("requests", state.rpm, 1), ("tokens", state.tpm, cost)):
        if quota is None:
            continue
        quota.advance(now)
        need = quota.wait_for(amount, now)
        if need > wait:
            wait, which = need, name
    if wait == 0.0:
        if state.rpm:
            state.rpm.take(1)
        if state.tpm:
            state.tpm.take(cost)
    headers: dict[str, str] = {}
    for name, quota in (("requests", state.rpm), ("tokens", state.tpm)):
        if quota is not None:
            headers[f"x-ratelimit-limit-{name}"] = str(quota.limit)
            headers[f"x-ratelimit-remaining-{name}"] = str(quota.remaining)
            headers[f"x-ratelimit-reset-{name}"] = format_reset(quota.reset_in(now))
    return wait, which, headers


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


def seconds_header(seconds: float) -> dict[str, str]:
    """``Retry-After`` (integer when whole, else up to ms precision; clients
    parse it as a float) plus OpenAI's ``retry-after-ms``."""
    s = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return {"Retry-After": s, "retry-after-ms": str(round(seconds * 1000))}
