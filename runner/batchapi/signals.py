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
import os
import signal
from collections.abc import Callable
from typing import Any

from ..errors import EXIT_SIGINT, EXIT_SIGTERM

log = logging.getLogger("streamrun")


def install_signals(stopping: asyncio.Event, received: list[int], *, cli: bool) -> Callable[[], None]:
    """Handlers that set `stopping` and append the signal's exit code to `received`; what puts the caller's
    handlers back."""
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def restore() -> None:
        while previous:
            sig, old = previous.popitem()
            signal.signal(sig, old)

    def handler(signum: int) -> None:
        code = EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM
        if received:
            log.error("second signal: exiting now")
            os._exit(code)
        received.append(code)
        if not cli:
            restore()
        log.warning("%s: stopping after the step in progress; the batches run on at the provider, and the "
                    "same command collects them", signal.Signals(signum).name)
        stopping.set()

    def on_signal(signum: int, frame: Any) -> None:  # between two bytecodes: hand it to the loop
        loop.call_soon_threadsafe(handler, signum)

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is not None:  # one not set from Python could not be put back
                previous[sig] = signal.signal(sig, on_signal)
    except ValueError:  # not the main thread: signals stay with the caller
        pass
    return restore
