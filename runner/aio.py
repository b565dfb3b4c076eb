"""The event loop a process runs on: uvloop where the `speed` extra installed it, else asyncio's.

One definition for the runner and the mock server alike, so both measure
and serve on the same kind of loop.
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
