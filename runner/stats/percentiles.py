"""Percentiles: the one implementation, numpy's "linear" method to the last bit.

vLLM's ``benchmark_serving`` calls ``numpy.percentile(..., method="linear")``;
users hold our p99 up against theirs, so the arithmetic is numpy's: linear
interpolation between closest ranks, with numpy's two-sided ``_lerp``. The
benchmarks in bench/ import :func:`percentile` from here too.

Values are read from :class:`SortedRuns` (chunk-sorted ``array('d')``) by
bisection instead of from a sorted Python list, which would cost 32 bytes a
value on top of the 8 the array holds.
"""

from __future__ import annotations

import bisect
import heapq
import math
import struct
from array import array
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

#: The percentiles a summary describes unless told otherwise (``--percentiles``).
PERCENTILES: tuple[float, ...] = (50, 90, 95, 99)

# Values sorted per chunk: bounds the transient list of Python floats that
# sorted() builds to ~1 MiB; a million values make 31 runs to bisect.
_RUN = 1 << 15

def _lerp(a: float, b: float, t: float) -> float:
    """numpy's ``_lerp``: the two-sided form keeps results monotonic in ``t``
    and bit-identical to ``np.percentile``."""
    diff = b - a
    if t >= 0.5:
        return b - diff * (1.0 - t)
    return a + diff * t


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) of ascending ``sorted_values``.

    Linear interpolation between closest ranks, the same arithmetic as
    ``numpy.percentile(values, q)`` (method "linear"), so a p99 here matches
    vLLM's to the last bit. Returns None for an empty sequence.
    """
    n = len(sorted_values)
    if n == 0:
        return None
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    virtual = (n - 1) * (q / 100.0)
    lo = math.floor(virtual)
    hi = min(lo + 1, n - 1)
    a = float(sorted_values[lo])
    b = float(sorted_values[hi])
    return _lerp(a, b, virtual - lo)


def percentile_key(q: float) -> str:
    """The summary key of the ``q``-th percentile: ``p50``, ``p99.9``.

    Whole numbers drop their ``.0`` so the default keys stay ``p50`` ...
    ``p99`` (the schema scripts already read); others keep Python's shortest
    round-trip spelling, so ``99.9`` is ``p99.9`` and never ``p99.90000001``.
    """
    q = float(q)
    return f"p{int(q)}" if q.is_integer() else f"p{q!r}"


def empty_description(percentiles: Sequence[float] = PERCENTILES) -> dict[str, Any]:
    out: dict[str, Any] = {"count": 0, "mean": None}
    out.update((percentile_key(q), None) for q in percentiles)
    out.update(min=None, max=None)
    return out


def describe_sorted(values: Sequence[float], mean: float, percentiles: Sequence[float] = PERCENTILES
                    ) -> dict[str, Any]:
    out: dict[str, Any] = {"count": len(values), "mean": mean}
    for q in percentiles:
        out[percentile_key(q)] = percentile(values, q)
    out["min"] = float(values[0])
    out["max"] = float(values[-1])
    return out


def describe(values: Iterable[float | None], percentiles: Sequence[float] = PERCENTILES) -> dict[str, Any]:
    """count, mean, the ``percentiles`` (p50, p90, p95, p99 by default), min,
    max of ``values`` (any order; None and NaN are ignored). Every statistic
    is None when nothing is left."""
    arr = array("d", (v for v in values if v is not None and v == v))
    if not arr:
        return empty_description(percentiles)
    runs = SortedRuns.sort_in_place(arr)
    return describe_sorted(runs, math.fsum(arr) / len(arr), percentiles)


class SortedRuns(Sequence[float]):
    """An ``array('d')`` whose chunks of ``_RUN`` values are each sorted,
    read as one ascending sequence.

    Why not ``sorted(values)``: that builds a list of Python floats, 32 bytes
    a value, so two million ITL gaps would cost 64 MB just to take a p99.
    Sorting chunk by chunk in place costs a few MB, and the k-th smallest
    value is then found by a binary search over the float number line, each
    probe counting ``<=`` by bisecting every run (64 probes at most).
    """

    def __init__(self, arr: array, run: int = _RUN) -> None:
        self._arr = arr
        self._bounds = [(i, min(i + run, len(arr))) for i in range(0, len(arr), run)]

    @classmethod
    def sort_in_place(cls, arr: array, run: int = _RUN) -> SortedRuns:
        """Sort each chunk of ``arr`` in place (the order of ``arr`` is lost)."""
        for i in range(0, len(arr), run):
            arr[i : i + run] = array("d", sorted(arr[i : i + run]))
        return cls(arr, run)

    def __len__(self) -> int:
        return len(self._arr)

    def rank(self, x: float) -> int:
        """How many values are ``<= x``."""
        arr = self._arr
        return sum(bisect.bisect_right(arr, x, lo, hi) - lo for lo, hi in self._bounds)

    def count_below(self, x: float) -> int:
        """How many values are ``< x``."""
        arr = self._arr
        return sum(bisect.bisect_left(arr, x, lo, hi) - lo for lo, hi in self._bounds)

    def __getitem__(self, k: int) -> float:  # type: ignore[override]
        n = len(self._arr)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(k)
        arr = self._arr
        if len(self._bounds) == 1:
            return arr[k]
        if k == 0:
            return min(arr[lo] for lo, _ in self._bounds)
        if k == n - 1:
            return max(arr[hi - 1] for _, hi in self._bounds)
        # Smallest float v with rank(v) >= k + 1 is the k-th smallest value.
        lo_key = _float_key(min(arr[lo] for lo, _ in self._bounds))
        hi_key = _float_key(max(arr[hi - 1] for _, hi in self._bounds))
        while lo_key < hi_key:
            mid = (lo_key + hi_key) // 2
            if self.rank(_key_float(mid)) >= k + 1:
                hi_key = mid
            else:
                lo_key = mid + 1
        return _key_float(lo_key)

    def __iter__(self) -> Iterator[float]:
        view = memoryview(self._arr)
        return heapq.merge(*(view[lo:hi] for lo, hi in self._bounds))


_SIGN = 1 << 63


def _float_key(x: float) -> int:
    """Map a float to an int with the same order (IEEE 754 bit trick)."""
    (i,) = struct.unpack("<q", struct.pack("<d", x))
    return i if i >= 0 else -(i & (_SIGN - 1)) - 1


def _key_float(k: int) -> float:
    i = k if k >= 0 else -(k + 1) | _SIGN
    (x,) = struct.unpack("<d", struct.pack("<Q", i & ((1 << 64) - 1)))
    return x

