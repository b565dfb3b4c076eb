"""Statistics per time window (``--window 10s``), so a long run shows drift.

A request belongs to the window in which it *completed* (``started_at +
e2e_s``; an error without ``e2e_s`` at its start): that is when the server
delivered it, so a window's requests/s is what the server completed in that
span, and a slowdown late in a run shows in the windows it happened in,
not in the ones where the slow requests were sent.

Why this shape, and what it costs:

* counts (ok, errors, output tokens) are exact, kept per window in a dict
  of three numbers, so they stay exact however long the run;
* latency percentiles per window are read, when the summary is asked for,
  from the values the stage's accumulator stores anyway (exact up to its
  ``max_exact``, the same uniform sample beyond), plus one completion time
  per stored value: 8 bytes a request and a gap, and only with a window;
* windows lie on a grid that starts at the first request the accumulator
  sees (in a run the first one to finish, normally sent at the run's start);
  the first and last windows are clipped to the stage's span and their
  rates divided by their own length;
* at most :data:`MAX_WINDOWS` windows are listed: a run longer than that
  many windows gets windows a whole multiple of the width asked for
  (``window_s`` says which), so the summary stays small.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, Sequence
from typing import Any

from .percentiles import describe

#: The most windows a summary lists; longer runs get wider windows.
MAX_WINDOWS = 500
# Distinct windows counted before neighbours are merged (exact: counts add up).
_MAX_BUCKETS = 4 * MAX_WINDOWS
#: The latencies described per window.
WINDOW_METRICS: tuple[str, ...] = ("ttft_s", "itl_s", "e2e_s")


class WindowCounts:
    """Exact counts per window of ``width`` seconds, fed record by record."""

    __slots__ = ("width", "factor", "anchor", "counts")

    def __init__(self, width: float) -> None:
        if not (width > 0 and math.isfinite(width)):
            raise ValueError(f"a window must be a positive number of seconds, got {width!r}")
        self.width = width
        self.factor = 1  # windows merged so far: each bucket spans width * factor
        self.anchor: float | None = None  # POSIX time the grid starts at
        self.counts: dict[int, list[float]] = {}  # bucket -> [ok, error, output tokens]

    def base(self, t: float) -> int:
        """The grid cell of ``t`` at the width asked for. Coarser buckets are
        whole multiples of it (integer division), so a request's counts and
        its latencies always land in the same window."""
        return math.floor((t - self.anchor) / self.width)  # type: ignore[operator]

    def add(self, start: float, done: float, ok: bool, tokens: int | None) -> None:
        """One request (ok) or one error record that completed at ``done``."""
        if self.anchor is None:
            self.anchor = start
        key = self.base(done) // self.factor
        cell = self.counts.get(key)
        if cell is None:
            cell = self.counts[key] = [0, 0, 0]
            if len(self.counts) > _MAX_BUCKETS:
                self._merge()
                cell = self.counts.setdefault(self.base(done) // self.factor, [0, 0, 0])
        if ok:
            cell[0] += 1
            cell[2] += tokens or 0
        else:
            cell[1] += 1

    def _merge(self) -> None:
        """Halve the number of buckets: neighbours add up, nothing is lost."""
        merged: dict[int, list[float]] = {}
        for key, (ok, err, tok) in self.counts.items():
            cell = merged.setdefault(key // 2, [0, 0, 0])
            cell[0] += ok
            cell[1] += err
            cell[2] += tok
        self.counts = merged
        self.factor *= 2


def _group(times: Sequence[float], values: Sequence[float], key_of: Any) -> dict[int, list[float]]:
    """Values by window; a value or a time that is NaN (unknown) is left out."""
    out: dict[int, list[float]] = {}
    for t, v in zip(times, values, strict=True):
        if t == t and v == v:
            out.setdefault(key_of(t), []).append(v)
    return out


def build_windows(
    counts: WindowCounts,
    first_start: float | None,
    last_end: float | None,
    done: array,
    columns: Mapping[str, Sequence[float]],
    itl: Sequence[float],
    itl_done: array,
    percentiles: Sequence[float],
) -> tuple[float | None, list[dict[str, Any]]]:
    """``(window_s, windows)``: the width used and one entry per window from
    the first to the last in which something completed (empty ones too: a
    stall shows as a window with nothing done).

    ``done`` is the completion time of each stored request row, aligned with
    ``columns`` (``ttft_s``, ``e2e_s``); ``itl_done`` that of each stored gap.
    """
    if counts.anchor is None or not counts.counts or first_start is None or last_end is None:
        return counts.width * counts.factor, []
    keys = counts.counts.keys()
    span = max(keys) - min(keys) + 1
    extra = -(-span // MAX_WINDOWS)  # ceil: whole multiples, so counts merge exactly
    while max(keys) // extra - min(keys) // extra >= MAX_WINDOWS:  # the grid may straddle one more
        extra += 1
    factor = counts.factor * extra
    width = counts.width * factor
    cells: dict[int, list[float]] = {}
    for key, (ok, err, tok) in counts.counts.items():
        cell = cells.setdefault(key // extra, [0, 0, 0])
        cell[0] += ok
        cell[1] += err
        cell[2] += tok

    def key_of(t: float) -> int:
        return counts.base(t) // factor

    grouped = {name: _group(done, columns[name], key_of) for name in WINDOW_METRICS if name != "itl_s"}
    grouped["itl_s"] = _group(itl_done, itl, key_of)
    duration = last_end - first_start
    offset = counts.anchor - first_start
    out = []
    lo, hi = min(cells), max(cells)
    for key in range(lo, hi + 1):
        ok, err, tok = cells.get(key, (0, 0, 0))
        start = min(max(0.0, offset + key * width), duration)
        end = min(max(0.0, offset + (key + 1) * width), duration)
        length = end - start
        entry: dict[str, Any] = {
            "start_s": start,
            "end_s": end,
            "ok": int(ok),
            "error": int(err),
            "output_tokens": int(tok),
            "request_throughput": ok / length if length > 0 else None,
            "output_token_throughput": tok / length if length > 0 else None,
        }
        for name in WINDOW_METRICS:
            entry[name] = describe(grouped[name].get(key, ()), percentiles)
        out.append(entry)
    return width, out
