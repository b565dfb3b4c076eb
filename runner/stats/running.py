"""Exact running totals and number checks, shared by the summary's accumulators.

Why a module: :class:`Running` keeps count, sum, min and max exact once the
values themselves are only sampled, and :func:`finite` guards the sums
against what a server may send; both are small and used by the accumulator
and the per-window counts alike.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def finite(value: Any) -> float | None:
    """A finite number, else None: ``usage`` is kept as the server sent it,
    and a string or a NaN must not poison a sum."""
    t = type(value)
    if t is float:
        return value if value - value == 0.0 else None  # inf - inf and nan are nan
    if t is int:
        return float(value)
    return None


class Running:
    """count / sum / min / max seen so far, kept exactly even once the values
    themselves are only sampled (Neumaier-compensated sum)."""

    __slots__ = ("count", "_sum", "_comp", "min", "max")

    def __init__(self) -> None:
        self.count = 0
        self._sum = 0.0
        self._comp = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, x: float) -> None:
        self.count += 1
        t = self._sum + x
        if abs(self._sum) >= abs(x):
            self._comp += (self._sum - t) + x
        else:
            self._comp += (x - t) + self._sum
        self._sum = t
        if x < self.min:
            self.min = x
        if x > self.max:
            self.max = x

    def add_many(self, xs: Sequence[float]) -> None:
        """Fold in a batch at C speed (one exactly rounded sum per batch)."""
        if not xs:
            return
        self.count += len(xs) - 1
        lo, hi = min(xs), max(xs)
        self.add(math.fsum(xs))
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)

    @property
    def mean(self) -> float | None:
        return (self._sum + self._comp) / self.count if self.count else None
