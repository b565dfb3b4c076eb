"""The stream package's own settings: timeouts, limits on what a server may send, the retry policy.

Why here and not in the run's config: a request over a shared session needs
exactly these, and `runner.stream` knows nothing of runs, files or the CLI;
`RunConfig` holds one of each.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Timeouts:
    """Each stage of a request has its own limit; None disables one.

    connect: TCP/TLS connect.  first_byte: from sending until the first body
    bytes (prefill of a long prompt lives here).  idle: the longest gap
    between two chunks once streaming.  total: the whole attempt.
    """

    connect: float | None = 10.0
    first_byte: float | None = 300.0
    idle: float | None = 120.0
    total: float | None = None


MiB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """Bounds on what a server or an input may make this process hold.

    Over a bound, the request (or the input line) becomes an error record and
    the run goes on: a hostile server or a broken file costs one record, not
    the run's memory.
    """

    max_event_bytes: int = 16 * MiB  # one SSE line, and one event's data
    max_response_bytes: int = 256 * MiB  # one response body, after decompression
    max_line_bytes: int = 32 * MiB  # one input line


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 5
    backoff_initial: float = 1.0  # the backoff's first step (runner/stream/retry.py: waits of up to 0.5, 1-2, 2-4 s...)
    backoff_max: float = 30.0
    retry_after_max: float = 120.0
