"""Retry-After parsing and the wait policy (no sleeping: the wait function is called directly)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

from tenacity import RetryCallState

from runner.stream.client import endpoint_url, parse_retry_after
from runner.config import RetryPolicy
from runner.stream.errors import ConnectError, HTTPStatusError
from runner.stream.retry import is_retryable, wait_retry_after_or_backoff


def test_retry_after_forms():
    assert parse_retry_after({"Retry-After": "7"}) == 7.0
    assert parse_retry_after({"Retry-After": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "9"}) == 0.25
    assert parse_retry_after({}) is None
    assert parse_retry_after({"Retry-After": "soon"}) is None
    when = datetime.now(timezone.utc) + timedelta(seconds=30)
    got = parse_retry_after({"Retry-After": format_datetime(when, usegmt=True)})
    assert 25 <= got <= 30
    past = datetime.now(timezone.utc) - timedelta(seconds=30)
    assert parse_retry_after({"Retry-After": format_datetime(past, usegmt=True)}) == 0.0


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


def test_endpoint_url_joins_base_with_or_without_v1():
    assert endpoint_url("http://h:1/v1", "/v1/chat/completions") == "http://h:1/v1/chat/completions"
    assert endpoint_url("http://h:1/v1/", "/v1/completions") == "http://h:1/v1/completions"
    assert endpoint_url("http://h:1", "/v1/completions") == "http://h:1/v1/completions"
    assert endpoint_url("https://gw/openai/v1", "/v1/completions") == "https://gw/openai/v1/completions"


def test_proxy_from_environment_is_resolved_once_per_endpoint(monkeypatch):
    from runner.engine import env_proxy

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert env_proxy("https://api.example.com/v1") == "http://proxy.internal:3128"
    assert env_proxy("http://127.0.0.1:8000/v1") is None


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
    import pytest

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
