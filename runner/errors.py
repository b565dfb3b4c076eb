"""Failures of a run as a whole: each carries the exit code the CLI returns.

Per-request failures are in `runner/stream/errors.py`: they become error
records and the run goes on.  These stop the run; `run.execute` maps them,
and nothing else maps exceptions to exit codes.
"""

from __future__ import annotations


class RunError(Exception):
    """A failure of the run as a whole, not of one request: it carries the exit code the CLI returns."""

    exit_code = 2


class UsageError(RunError):
    """A configuration problem, found before anything is sent (exit 2)."""


class OutputLocked(RunError):
    """Another run holds the lock of this output (exit 3)."""

    exit_code = 3


class OutputFailed(RunError):
    """The results file could not be written (a full disk, a lost mount): exit 4.

    New requests stop at once; what is in flight drains and is written if
    the disk takes it, so as little paid work as possible is lost.
    """

    exit_code = 4


class AuthRejected(RunError):
    """The server refused the first answers wholesale (401/403/404): a wrong key, URL or model (exit 2)."""


class Unreachable(RunError):
    """No attempt of the run ever connected: a wrong host or port, a server not up, DNS, TLS (exit 2)."""


class OutOfFiles(RunError):
    """No file descriptor came free for a connection for a long while: the open-file limit is too low (exit 2)."""
