"""The event loop a process runs on: uvloop where the `speed` extra installed it, else asyncio's.

One definition for the runner and the mock server alike, so both measure
and serve on the same kind of loop; and how SIGINT/SIGTERM reach a run on it
(`install_stop_signals`), one mechanism for a live run and a batch run.
"""

from __future__ import annotations

from collections.abc import Callable


def loop_factory() -> Callable | None:
    """For `asyncio.Runner(loop_factory=...)`: None means asyncio's default loop."""
    try:
        import uvloop  # optional extra: a faster loop where installed
    except ImportError:
        return None
    return uvloop.new_event_loop


def install_stop_signals(on_first: Callable[[int], None], *, cli: bool,
                         before_exit: Callable[[], None] | None = None) -> tuple[list[int], Callable[[], None]]:
    """SIGINT/SIGTERM for a run that stops in steps: the first calls `on_first(signum)` on the running loop.

    From the command line (`cli`) a second one exits at once (after
    `before_exit`, e.g. flushing what is queued).  From Python the caller's
    own handlers are back after the first, so a second one does what the
    caller set up (Python's default and asyncio.run raise KeyboardInterrupt;
    a notebook interrupts the cell), never ends the process under it.
    Returns the exit codes of the signals received, and the function that
    puts the caller's handlers back (call it when the run ends; it may be
    called again).  Off the main thread the signals stay with the caller.
    """
    import asyncio
    import logging
    import os
    import signal
    from types import FrameType
    from typing import Any

    from .errors import EXIT_SIGINT, EXIT_SIGTERM

    log = logging.getLogger("streamrun")
    loop = asyncio.get_running_loop()
    received: list[int] = []
    previous: dict[int, Callable[[int, FrameType | None], Any] | int | signal.Handlers | None] = {}

    def restore() -> None:
        while previous:
            sig, old = previous.popitem()
            signal.signal(sig, old)

    def handler(signum: int) -> None:
        code = EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM
        if received:  # only the command line's handlers are still in place for a second signal
            if before_exit is not None:
                before_exit()
            log.error("second signal: exiting now")
            os._exit(code)
        received.append(code)
        if not cli:
            restore()
        on_first(signum)

    def on_signal(signum: int, frame: FrameType | None) -> None:  # between two bytecodes: hand it to the loop
        loop.call_soon_threadsafe(handler, signum)

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            if signal.getsignal(sig) is None:  # a handler not set from Python could not be put back: leave it
                continue
            previous[sig] = signal.signal(sig, on_signal)
    except ValueError:  # not the main thread (a notebook's worker, say)
        log.debug("signals stay with the caller: not on the main thread")
    return received, restore
