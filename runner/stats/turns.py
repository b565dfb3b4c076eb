"""TTFT by turn number, for multi-turn sessions.

Why: in a session each turn resends the conversation so far, so a server
with prefix caching should answer later turns' first token sooner (or, without
it, later and later). The percentiles of TTFT per turn index show which.

Each turn of a session is one request in the latency statistics
(:class:`~runner.stats.StatsAccumulator` stores it as a row, with its turn
index beside it), so these come from the same values, exact or sampled alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .percentiles import describe

#: Turn indexes listed one by one; later turns share the last entry (``and_later``).
MAX_TURNS = 50


def ttft_by_turn(turns: Sequence[float], ttft: Sequence[float], percentiles: Sequence[float]
                 ) -> list[dict[str, Any]]:
    """One entry per turn index seen (0-based, as in records), ascending:
    ``{"index", "and_later", <describe of TTFT>}``. ``turns`` holds NaN for
    rows that are not a session's turn."""
    groups: dict[int, list[float]] = {}
    later = False
    for t, v in zip(turns, ttft, strict=True):
        if t == t and v == v:
            index = int(t)
            if index >= MAX_TURNS - 1:
                later = later or index > MAX_TURNS - 1
                index = MAX_TURNS - 1
            groups.setdefault(index, []).append(v)
    return [{"index": i, "and_later": later and i == MAX_TURNS - 1, **describe(groups[i], percentiles)}
            for i in sorted(groups)]
