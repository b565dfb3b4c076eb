"""Failures of a run as a whole: each carries the exit code the CLI returns.

Per-request failures are in `runner/stream/errors.py`: they become error
records and the run goes on.  These stop the run; `run.execute` maps them,
and nothing else maps exceptions to exit codes.
"""

from __future__ import annotations

# The exit codes: cron, CI and the Python API read them; every command returns one of these names.
EXIT_OK = 0
EXIT_FAILED = 1  # a run: failures over budget; merge, convert, export, synth: some lines were skipped
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_OUTPUT = 4
EXIT_CLIENT_BOUND = 5
EXIT_SIGINT = 130
EXIT_SIGTERM = 143
EXIT_ORPHANED = 70  # a --workers process whose parent is gone (the parent's run is over: no command returns it)

# The run's exit codes as its --help shows them (runner/cli/help.py makes the table from these rows).
EXIT_CODES: tuple[tuple[str, str], ...] = (
    (str(EXIT_OK), "every record ok, or failures within the failure budget"),
    (str(EXIT_FAILED), "failures over the budget (default budget: none), counted by final records"),
    (str(EXIT_USAGE), "usage or configuration error (nothing sent), or the first 20 answers were all 401/403/404 "
                      "(wrong key, URL or model), or the server was never reachable (nothing written for those "
                      "prompts)"),
    (str(EXIT_LOCKED), "the output is locked by another run"),
    (str(EXIT_OUTPUT), "the output could not be written (full disk): sending stopped, in-flight requests drained; "
                       "--resume completes the file"),
    (str(EXIT_CLIENT_BOUND), "--strict-timing and a stage was client-bound: the client's own event-loop lag or CPU "
                             "made its latencies untrustworthy"),
    (str(EXIT_SIGINT), f"interrupted by SIGINT (Ctrl-C); {EXIT_SIGTERM} by SIGTERM"),
)


class RunError(Exception):
    """A failure of the run as a whole, not of one request: it carries the exit code the CLI returns."""

    exit_code = EXIT_USAGE


class UsageError(RunError):
    """A configuration problem, found before anything is sent (exit 2)."""


class OutputLocked(RunError):
    """Another run holds the lock of this output (exit 3)."""

    exit_code = EXIT_LOCKED


class OutputFailed(RunError):
    """The results file could not be written (a full disk, a lost mount): exit 4.

    New requests stop at once; what is in flight drains and is written if
    the disk takes it, so as little paid work as possible is lost.
    """

    exit_code = EXIT_OUTPUT


class AuthRejected(RunError):
    """The server refused the first answers wholesale (401/403/404): a wrong key, URL or model (exit 2)."""


class Unreachable(RunError):
    """No attempt of the run ever connected: a wrong host or port, a server not up, DNS, TLS (exit 2)."""


class OutOfFiles(RunError):
    """No file descriptor came free for a connection for a long while: the open-file limit is too low (exit 2)."""
