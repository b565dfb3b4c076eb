"""SIGINT and SIGTERM during a batch run, as `run` takes them: the first stops after the step in progress.

Why that is enough: the state file is whole at every moment (each step's
outcome is written before the next starts), and the batches run on at the
provider; the same command collects them.  From the command line (`cli`) a
second signal exits at once; from Python the caller's own handlers are
back after the first, as `run` does it.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from ..aio import install_stop_signals

log = logging.getLogger("streamrun")


def install_signals(stopping: asyncio.Event, *, cli: bool) -> tuple[list[int], Callable[[], None]]:
    """Handlers that set `stopping`: the exit codes of the signals received, and what puts the caller's
    handlers back (runner/aio.py, the same mechanism as a live run's)."""
    def stop(signum: int) -> None:
        log.warning("%s: stopping after the step in progress; the batches run on at the provider, and the "
                    "same command collects them", signal.Signals(signum).name)
        stopping.set()

    return install_stop_signals(stop, cli=cli)
