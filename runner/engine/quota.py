"""Client-side rate limiting: RPM/TPM quotas and adaptive concurrency.

Two independent mechanisms, both with an injectable clock (``now``) and
``sleep`` so tests run on fake time:

``QuotaLimiter``
    Paces request *starts* to a hosted API's per-minute quotas (requests
    and tokens) with two token buckets, and tightens itself from the
    server's ``x-ratelimit-*`` headers so we slow down before a 429.

``AdaptiveConcurrency``
    Bounds how many requests are in flight, like a semaphore whose size
    follows AIMD: +1 per round trip of successes, halved on a throttle
    (429/503), never above ``-c``.  It is ON by default because without
    throttles it *is* a FIFO semaphore of size ``-c`` (the limit starts at
    the maximum and can only go down after a throttle), so it costs
    nothing when nothing goes wrong; ``--no-adaptive`` (``adaptive=False``)
    freezes the limit for benchmarks that want an exact closed loop.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from ..stream.errors import ExceedsTPM

Clock = Callable[[], float]
Sleep = Callable[[float], Awaitable[object]]


class Quota(Protocol):
    """What sending asks of the RPM/TPM budget: `QuotaLimiter` in one process; in a worker process, its
    stand-in that asks the parent's limiter (runner/workers/quota.py)."""

    async def acquire(self, tokens: int = 0) -> None: ...
    def settle(self, estimated: int, actual: int) -> None: ...
    def observe_headers(self, headers: Mapping[str, str]) -> None: ...
    def throttled(self) -> None: ...
    def succeeded(self) -> None: ...


class AdaptiveFigures(Protocol):
    """What the progress display and the summary read of adaptive concurrency: one process's
    `AdaptiveConcurrency`, or the workers' added up (runner/workers/pool.py)."""

    @property
    def limit(self) -> int: ...
    @property
    def min_limit_seen(self) -> int: ...
    @property
    def throttles(self) -> int: ...
    @property
    def decreases(self) -> int: ...

#: Float slack when comparing bucket levels, so a refill that lands at
#: 0.9999999 instead of 1.0 does not cost another sleep round.
_EPS = 1e-9

#: How long a "remaining: 0" hint blocks when the server sent no reset time.
DEFAULT_HINT_RESET_S = 1.0
#: The longest wait a server's header can impose (as Retry-After is capped by
#: RetryPolicy.retry_after_max): a reset of "1000h" must not freeze the run.
MAX_SERVER_WAIT_S = 120.0


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_reset_duration(s: str) -> float:
    """Seconds in an ``x-ratelimit-reset-*`` value.

    OpenAI sends Go-style durations ("1s", "6m0s", "20ms", "1m30.5s",
    "2h0m0s"); some compatible servers send a bare number of seconds
    ("0.5").  Raises ValueError for anything else."""
    text = s.strip()
    if not text:
        raise ValueError("empty duration")
    try:
        seconds = float(text)
    except ValueError:
        pos, seconds = 0, 0.0
        for match in _DURATION_PART.finditer(text):
            if match.start() != pos:
                break
            seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos != len(text):
            raise ValueError(f"not a duration: {s!r}") from None
    if seconds < 0 or seconds != seconds or seconds == float("inf"):
        raise ValueError(f"not a duration: {s!r}")
    return seconds


@dataclass
class TokenBucket:
    """A token bucket refilled continuously at ``rate`` per second up to
    ``capacity``.  ``level`` may go negative after ``settle`` charges more
    than was estimated; that debt is paid back by waiting.  The mock server
    uses the same bucket for its own quotas."""

    capacity: float
    rate: float
    level: float
    stamp: float

    def refill(self, now: float) -> None:
        if now > self.stamp:
            self.level = min(self.capacity, self.level + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_for(self, amount: float) -> float:
        deficit = amount - self.level
        return deficit / self.rate if deficit > _EPS else 0.0

    def reset_in(self) -> float:
        """Seconds until the bucket is full again (OpenAI's x-ratelimit-reset-*)."""
        return max(0.0, (self.capacity - self.level) / self.rate)


@dataclass
class _Hint:
    """The server's word for a dimension we have no configured limit for:
    ``remaining`` left until ``until`` (our clock), when it resets."""

    remaining: float
    until: float


class QuotaLimiter:
    """Paces requests to ``rpm`` requests and ``tpm`` tokens per minute.

    Each limit is a token bucket of capacity = the per-minute limit,
    refilled continuously at limit/60 per second.  A fresh bucket starts
    only ``initial_fill`` full (default 10%, i.e. 6 seconds' worth, and at
    least one request): providers enforce per-minute quotas on finer
    windows (OpenAI documents e.g. 60 RPM being applied as 1 per second),
    so firing a whole minute's quota at t=0 would trip the server's
    limiter.  After an idle period the bucket does refill to capacity;
    under sustained load it runs at the steady rate.

    Token counts are estimates (prompt estimate + requested max output,
    which is what OpenAI charges on admission); ``settle`` corrects the
    bucket once the real usage is known.

    A limit left as None is not enforced locally; that dimension then
    follows the server's ``x-ratelimit-remaining-*`` hints only (see
    ``observe_headers``).  With neither limits nor hints ``acquire`` is a
    no-op.
    """

    def __init__(
        self,
        rpm: int | None = None,
        tpm: int | None = None,
        *,
        now: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        initial_fill: float = 0.1,
        burst_s: float | None = None,
    ) -> None:
        """``burst_s``: the bucket holds that many seconds' worth, for servers
        that enforce a per-minute quota per second, as OpenAI documents; it
        starts with just the first request's worth at the first ``acquire``,
        so pacing starts from the first request (see ``_start_pacing``).
        None keeps a whole minute, ``initial_fill`` full at start."""
        for name, value in (("rpm", rpm), ("tpm", tpm)):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, got {value}")
        if not 0.0 <= initial_fill <= 1.0:
            raise ValueError("initial_fill must be within [0, 1]")
        if burst_s is not None and not burst_s > 0:
            raise ValueError("burst_s must be positive")
        self.rpm = rpm
        self.tpm = tpm
        self._now = now
        self._sleep = sleep
        t = now()
        self._requests = self._tokens = None
        if burst_s is not None:  # empty until the first acquire (_start_pacing)
            if rpm:
                self._requests = TokenBucket(max(1.0, rpm / 60.0 * burst_s), rpm / 60.0, 0.0, t)
            if tpm:
                self._tokens = TokenBucket(max(1.0, tpm / 60.0 * burst_s), tpm / 60.0, 0.0, t)
        else:
            if rpm:
                self._requests = TokenBucket(rpm, rpm / 60.0, max(min(1.0, rpm), rpm * initial_fill), t)
            if tpm:
                self._tokens = TokenBucket(tpm, tpm / 60.0, tpm * initial_fill, t)
        self._base_rates = tuple(b.rate if b else 0.0 for b in (self._requests, self._tokens))
        #: 429s answered while a configured limit was in force; each lowers the rates.
        self.throttles = 0
        self._request_hint: _Hint | None = None
        self._token_hint: _Hint | None = None
        self._unstarted = burst_s is not None  # the buckets start at the first acquire
        self._lock = asyncio.Lock()  # FIFO: one waiter computes/sleeps at a time
        #: Summary counters: acquires that had to wait, and total seconds waited.
        self.waits = 0
        self.wait_s = 0.0

    async def acquire(self, tokens: int = 0) -> None:
        """Wait until one request of ``tokens`` tokens fits both quotas, then
        take it.  FIFO: callers are served in arrival order, so a large
        request is not starved by a stream of small ones (it holds the line
        while its bucket refills).  Cancelling a waiter takes nothing.

        Raises ExceedsTPM at once when ``tokens`` alone exceeds ``tpm``."""
        if tokens < 0:
            raise ValueError("tokens must be >= 0")
        if self.tpm is not None and tokens > self.tpm:
            raise ExceedsTPM(tokens, self.tpm)
        if (
            self._requests is None
            and self._tokens is None
            and self._request_hint is None
            and self._token_hint is None
        ):
            return
        async with self._lock:
            if self._unstarted:
                self._start_pacing(tokens)
            start = None
            while True:
                now = self._now()
                wait = self._wait_time(tokens, now)
                if wait <= 0.0:
                    self._take(tokens)
                    if start is not None:
                        self.waits += 1
                        self.wait_s += now - start
                    return
                if start is None:
                    start = now
                # Re-check after sleeping: headers may have lowered a level
                # meanwhile, or an earlier settle() may have refunded tokens.
                await self._sleep(wait)

    def _start_pacing(self, tokens: int) -> None:
        """The first request's worth, no more, at the first acquire: pacing starts with it.

        A bucket that started full would send a whole burst at once and then
        refill at the steady rate: against a server that counts requests in
        fixed one-second windows, the burst's window gets a burst's worth
        on top of the window's own refill (up to twice the limit with a
        one-second burst).  Starting from the first request, the sends of any
        window of length T are at most 1 + T * rate.  The bucket still fills
        up to ``burst_s`` when the run sends less than the limit, and that
        fill may then go at once (what ``--burst`` allows).
        """
        self._unstarted = False
        now = self._now()
        for bucket, first in ((self._requests, 1.0), (self._tokens, float(tokens))):
            if bucket is not None:
                bucket.level, bucket.stamp = min(bucket.capacity, first), now

    def _wait_time(self, tokens: int, now: float) -> float:
        """Seconds until ``tokens`` (and one request) fit; 0 when they do now."""
        wait = 0.0
        if self._requests is not None:
            self._requests.refill(now)
            wait = self._requests.wait_for(1)
        elif self._request_hint is not None:
            wait = self._hint_wait("_request_hint", 1, now)
        if self._tokens is not None:
            self._tokens.refill(now)
            # A request larger than the bucket waits for a full bucket and runs
            # into debt: with a one-second burst, long prompts are the rule.
            wait = max(wait, self._tokens.wait_for(min(tokens, self._tokens.capacity)))
        elif self._token_hint is not None:
            wait = max(wait, self._hint_wait("_token_hint", tokens, now))
        return wait

    def _hint_wait(self, attr: str, amount: float, now: float) -> float:
        hint: _Hint = getattr(self, attr)
        if now >= hint.until:
            setattr(self, attr, None)  # reset time passed: assume a full quota again
            return 0.0
        return hint.until - now if amount > hint.remaining + _EPS else 0.0

    def _take(self, tokens: int) -> None:
        if self._requests is not None:
            self._requests.level -= 1
        elif self._request_hint is not None:
            self._request_hint.remaining -= 1
        if self._tokens is not None:
            self._tokens.level -= tokens
        elif self._token_hint is not None:
            self._token_hint.remaining -= tokens

    # The server is the judge: a 429 while we keep our own limit means the
    # limit (or its window) is not what we were told.  Slow down by a fifth
    # per 429, to a quarter at most; recover a fiftieth of the gap per success.
    THROTTLE_FACTOR = 0.8
    MIN_RATE_SHARE = 0.25
    RECOVERY = 0.02

    def throttled(self) -> None:
        """A 429 under a configured limit: lower the buckets' rates, not only retry."""
        if self._requests is None and self._tokens is None:
            return
        self.throttles += 1
        for bucket, base in zip((self._requests, self._tokens), self._base_rates, strict=True):
            if bucket is not None:
                bucket.refill(self._now())
                bucket.rate = max(base * self.MIN_RATE_SHARE, bucket.rate * self.THROTTLE_FACTOR)

    def succeeded(self) -> None:
        for bucket, base in zip((self._requests, self._tokens), self._base_rates, strict=True):
            if bucket is not None and bucket.rate < base:
                bucket.refill(self._now())
                bucket.rate = min(base, bucket.rate + (base - bucket.rate) * self.RECOVERY)

    def settle(self, estimated: int, actual: int) -> None:
        """Correct the token bucket once a response's usage is known: refund
        ``estimated - actual`` when we over-charged (usual: the estimate
        includes max output), charge the difference when we under-charged
        (the level may go negative; later requests wait the debt off)."""
        if self._tokens is not None:
            self._tokens.refill(self._now())
            self._tokens.level = min(self._tokens.capacity, self._tokens.level + (estimated - actual))

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        """Tighten our state from OpenAI-style rate-limit headers.

        ``x-ratelimit-remaining-{requests,tokens}`` below our bucket level
        lowers the level to match: the server knows about traffic we do not
        (other clients on the same key, a mis-set limit).  We never *raise*
        a level from headers; a header describes the server's state when it
        answered, before requests we have sent since, so trusting a higher
        number would overshoot.

        For a dimension with no configured limit, the header becomes a hint:
        once fewer than a request's worth remain, acquires wait until
        ``x-ratelimit-reset-*`` (when the server's quota is full again;
        ``DEFAULT_HINT_RESET_S`` when missing).  Unparseable values are
        ignored."""
        if not headers:
            return
        lowered = {k.lower(): v for k, v in headers.items()}
        now = self._now()
        for dim, bucket, hint_attr in (
            ("requests", self._requests, "_request_hint"),
            ("tokens", self._tokens, "_token_hint"),
        ):
            raw = lowered.get(f"x-ratelimit-remaining-{dim}")
            if raw is None:
                continue
            try:
                remaining = float(raw)
            except ValueError:
                continue
            if remaining != remaining or remaining < 0:  # NaN / negative
                continue
            if bucket is not None:
                bucket.refill(now)
                if remaining < bucket.level:
                    bucket.level = remaining
                continue
            reset = DEFAULT_HINT_RESET_S
            raw_reset = lowered.get(f"x-ratelimit-reset-{dim}")
            if raw_reset is not None:
                try:
                    reset = min(parse_reset_duration(raw_reset), MAX_SERVER_WAIT_S)
                except ValueError:
                    pass
            setattr(self, hint_attr, _Hint(remaining, now + reset))


class AdaptiveConcurrency:
    """AIMD concurrency limit, used in place of ``asyncio.Semaphore(-c)``.

    * Starts at ``max_concurrency`` and never exceeds it, so with no
      throttles it behaves exactly like a FIFO semaphore of that size.
    * ``on_success()``: additive increase of 1/limit, i.e. about +1 per
      round trip's worth of successes, capped at the maximum.
    * ``on_throttle(retry_after, sent_at)``: multiplicative decrease (x0.5,
      floored at ``min_concurrency``) at most once per window: a throttle
      from a request sent before the last decrease says nothing about the
      new limit and is ignored.  Without ``sent_at`` the window is
      ``max(1 s, retry_after)`` after the last decrease.  A ``retry_after``
      also pauses *all* new acquires until ``now + retry_after`` (capped at
      ``max_pause``) so the whole run backs off together instead of each
      task discovering the 429 on its own.
    * Requests already in flight when the limit drops are not interrupted;
      new slots are granted only while ``in_flight < limit``.

    ``adaptive=False`` (``--no-adaptive``) keeps the limit fixed and ignores
    pauses (a fixed closed loop), while still counting throttles.

    Hot path (no waiters, no pause): ``acquire`` is a couple of comparisons
    and one clock read; ``on_success`` is one float update.
    """

    def __init__(
        self,
        max_concurrency: int,
        min_concurrency: int = 1,
        *,
        now: Clock = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        adaptive: bool = True,
        max_pause: float = 60.0,
    ) -> None:
        if min_concurrency < 1 or max_concurrency < min_concurrency:
            raise ValueError("need 1 <= min_concurrency <= max_concurrency")
        self.max_concurrency = max_concurrency
        self.min_concurrency = min_concurrency
        self.adaptive = adaptive
        self.max_pause = max_pause
        self._now = now
        self._sleep = sleep
        self._limit = float(max_concurrency)
        self.in_flight = 0
        #: Monotonic time before which no new slot is granted.
        self.paused_until = float("-inf")
        self._last_decrease = float("-inf")
        self._decrease_window_until = float("-inf")
        self._waiters: deque[asyncio.Event] = deque()
        #: Summary counters.
        self.throttles = 0
        self.decreases = 0
        self.min_limit_seen = max_concurrency

    @property
    def limit(self) -> int:
        """Current effective concurrency (the float AIMD state, floored)."""
        return int(self._limit)

    def _paused(self) -> bool:
        return self.paused_until > self._now()

    async def acquire(self) -> None:
        """Wait for a slot (FIFO), honouring the global pause."""
        if not self._waiters and self.in_flight < int(self._limit) and not self._paused():
            self.in_flight += 1
            return
        event = asyncio.Event()
        self._waiters.append(event)
        try:
            while True:
                if self._waiters[0] is event:
                    pause = self.paused_until - self._now()
                    if pause > 0:
                        # Only the head sleeps; the rest queue behind it.
                        await self._sleep(pause)
                        continue
                    if self.in_flight < int(self._limit):
                        self.in_flight += 1
                        return
                event.clear()
                await event.wait()
        finally:
            was_head = self._waiters[0] is event
            self._waiters.remove(event)
            if was_head:
                self._wake_head()  # it may be grantable too, or we left the line

    def release(self) -> None:
        """Give a slot back (call exactly once per successful acquire)."""
        if self.in_flight <= 0:
            raise RuntimeError("release() without acquire()")
        self.in_flight -= 1
        self._wake_head()

    def _wake_head(self) -> None:
        if self._waiters:
            self._waiters[0].set()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """``async with limiter.slot(): ...`` acquires and always releases."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    async def __aenter__(self) -> None:
        await self.acquire()

    async def __aexit__(self, *exc: object) -> None:
        self.release()

    def grow(self, max_concurrency: int) -> None:
        """A larger cap (a --workers worker taking over a dead one's share of -c): the limit
        rises by as much, so a limit no throttle has cut stays at the cap."""
        if max_concurrency > self.max_concurrency:
            self._limit += max_concurrency - self.max_concurrency
            self.max_concurrency = max_concurrency
            self._wake_head()

    def on_success(self) -> None:
        """Additive increase: +1/limit, capped at ``max_concurrency``."""
        if self.adaptive and self._limit < self.max_concurrency:
            before = int(self._limit)
            self._limit = min(float(self.max_concurrency), self._limit + 1.0 / self._limit)
            if int(self._limit) > before:
                self._wake_head()

    def on_throttle(self, retry_after: float | None = None, sent_at: float | None = None) -> bool:
        """Record a throttle (429, or 503 with back-off).  ``sent_at`` is the
        clock value (same ``now``) when the throttled request was sent.
        Returns True when the limit was decreased."""
        self.throttles += 1
        if not self.adaptive:
            return False
        now = self._now()
        if retry_after is not None and retry_after > 0:
            self.paused_until = max(self.paused_until, now + min(retry_after, self.max_pause))
        if sent_at is not None:
            if sent_at < self._last_decrease:
                return False
        elif now < self._decrease_window_until:
            return False
        self._limit = max(float(self.min_concurrency), self._limit * 0.5)
        self._last_decrease = now
        self._decrease_window_until = now + max(1.0, min(retry_after or 0.0, self.max_pause))
        self.decreases += 1
        self.min_limit_seen = min(self.min_limit_seen, int(self._limit))
        return True
