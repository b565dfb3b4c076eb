"""Which failures are retried and how long to wait, expressed with tenacity.

Retry-After from the server wins (capped, so a hostile value cannot park a
worker for an hour); otherwise exponential backoff, random so that a burst
of failures does not come back as a synchronized burst of retries.  The
first retry comes within half the first step (0.5 s: a passing blip costs
little, and a short --duration still has room for it); each later wait is
between half and all of its step (2, 4, 8 ... s, capped), so the waits of
one request add up to a known minimum: at the defaults (5 attempts) 7 s,
and a network outage of up to 5 s costs no record.  Full jitter on every
wait (anything from 0 up) could add up to nothing: five attempts inside a
five-second outage, the record lost.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.stop import stop_base
from tenacity.wait import wait_base, wait_exponential

from .config import RetryPolicy
from .errors import RequestError

T = TypeVar("T")


class wait_retry_after_or_backoff(wait_base):
    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.backoff = wait_exponential(multiplier=policy.backoff_initial, max=policy.backoff_max)

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        retry_after = exc.retry_after if isinstance(exc, RequestError) else None  # only these are retried
        if retry_after is not None:
            return min(max(0.0, retry_after), self.policy.retry_after_max)
        high = self.backoff(retry_state)
        if retry_state.attempt_number <= 1:
            return random.uniform(0.0, high / 2)
        return random.uniform(high / 2, high)


class stop_at_deadline(stop_base):
    """No retry whose wait would end at or after `deadline` (time.perf_counter): --duration's end.

    Tenacity computes the wait before it asks the stop, so a Retry-After of
    two minutes ten seconds before the deadline ends the request at once
    with its last error instead of parking the worker past the deadline.
    """

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: RetryCallState) -> bool:
        return time.perf_counter() + (retry_state.upcoming_sleep or 0.0) >= self.deadline


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, RequestError) and exc.retryable


def retrying(policy: RetryPolicy, before_sleep: Callable[[RetryCallState], Awaitable[None] | None] | None = None,
             deadline: float | None = None) -> AsyncRetrying:
    """A fresh tenacity loop for one request; the last error is re-raised as is."""
    stop = stop_after_attempt(max(1, policy.max_attempts))
    return AsyncRetrying(
        stop=stop if deadline is None else stop | stop_at_deadline(deadline),
        wait=wait_retry_after_or_backoff(policy),
        retry=retry_if_exception(is_retryable),
        before_sleep=before_sleep,
        reraise=True,
    )


async def call_with_retries(policy: RetryPolicy, attempt: Callable[[], Awaitable[T]],
                            deadline: float | None = None) -> T:
    """Run `attempt` until it succeeds, fails for good, or the attempts run out (or the
    next would start at or after `deadline`, a time.perf_counter value: --duration's end).

    The first try runs bare and tenacity takes over only after a retryable
    failure: the retry loop costs about as much CPU as a short stream, and
    most requests never need it.  The first failure is replayed into
    tenacity as its attempt 1, so waits and attempt counts are unchanged.
    """
    try:
        return await attempt()
    except RequestError as exc:
        if not exc.retryable or policy.max_attempts <= 1:
            raise
        replay = [exc]

    async def again() -> T:
        if replay:
            raise replay.pop()
        return await attempt()

    return await retrying(policy, deadline=deadline)(again)
