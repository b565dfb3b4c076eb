"""runner.stream.retry: which failures retry and how long to wait (no sleeping: the wait function is called directly).

Parsing Retry-After is the client's job (tests/stream/test_client.py); this module only uses the parsed value.
"""

from __future__ import annotations

import pytest
from tenacity import RetryCallState

from runner.stream.config import RetryPolicy
from runner.stream.errors import ConnectError, HTTPStatusError
from runner.stream.retry import is_retryable, wait_retry_after_or_backoff


def test_which_status_codes_retry():
    for code in (408, 409, 429, 500, 502, 503, 504):
        assert is_retryable(HTTPStatusError(code, "x"))
    for code in (400, 401, 403, 404, 422):
        assert not is_retryable(HTTPStatusError(code, "x"))
    assert is_retryable(ConnectError("x"))
    assert not is_retryable(ValueError("x"))


def _state(exc: BaseException, attempt: int) -> RetryCallState:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.set_exception((type(exc), exc, None))
    return state


def test_wait_prefers_retry_after_capped():
    wait = wait_retry_after_or_backoff(RetryPolicy(retry_after_max=60))
    assert wait(_state(HTTPStatusError(429, "x", retry_after=3.0), 1)) == 3.0
    assert wait(_state(HTTPStatusError(429, "x", retry_after=3600.0), 1)) == 60.0


def test_wait_backoff_is_jittered_and_capped():
    wait = wait_retry_after_or_backoff(RetryPolicy(backoff_initial=0.5, backoff_max=4))
    for attempt in range(1, 12):
        values = [wait(_state(ConnectError("x"), attempt)) for _ in range(50)]
        assert all(0 <= v <= 4 for v in values)
        assert len(set(values)) > 1  # jitter


async def test_first_failure_is_replayed_into_tenacity():
    from runner.stream.retry import call_with_retries

    calls = []

    async def attempt():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectError("down")
        return "ok"

    assert await call_with_retries(RetryPolicy(max_attempts=3, backoff_initial=0.001), attempt) == "ok"
    assert len(calls) == 3
    calls.clear()
    with pytest.raises(ConnectError):
        await call_with_retries(RetryPolicy(max_attempts=2, backoff_initial=0.001), attempt)
    assert len(calls) == 2  # max_attempts counts the bare first try
    with pytest.raises(HTTPStatusError):
        async def bad():
            calls.append(1)
            raise HTTPStatusError(400, "no")
        calls.clear()
        await call_with_retries(RetryPolicy(max_attempts=5), bad)
    assert len(calls) == 1
