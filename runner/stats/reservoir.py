"""Uniform reservoir sampling (Li's Algorithm L), for summaries that must stay
bounded in memory however long the run."""

from __future__ import annotations

import math
import random


class Reservoir:
    """Decides which items of a stream to keep in ``capacity`` slots so that
    the kept ones are a uniform sample of everything offered (Li's
    "Algorithm L"). It stores nothing itself: callers keep their own columns,
    which lets several aligned columns share one decision per item.

    Algorithm L draws a random number per *kept* item, not per item seen, so
    pooling hundreds of millions of ITL gaps costs little. Seeded, so a
    report is reproducible.
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError("reservoir capacity must be >= 1")
        self.capacity = capacity
        self.seen = 0
        self._rng = random.Random(seed)
        self._w = 1.0
        self._next = -1  # stream index of the next item to keep, once full

    @property
    def sampled(self) -> bool:
        """True once more items were offered than fit: results are estimates."""
        return self.seen > self.capacity

    def offer(self, m: int) -> tuple[int, list[tuple[int, int]]]:
        """Offer the next ``m`` items. Returns ``(n_append, replacements)``:
        append the first ``n_append`` items, then write item ``i`` of this
        batch into slot ``s`` for each ``(i, s)`` in ``replacements``."""
        start = self.seen
        k = self.capacity
        end = self.seen = start + m
        if end <= k:
            return m, []
        n_append = max(0, k - start)
        if self._next < 0:  # the reservoir just filled: start skipping
            self._w = math.exp(math.log(self._rng.random() or _TINY) / k)
            self._next = k - 1
            self._skip()
        replacements: list[tuple[int, int]] = []
        # The hot loop of long runs: locals and inlined _skip() on purpose.
        random_ = self._rng.random
        log, log1p, exp = math.log, math.log1p, math.exp
        nxt, w = self._next, self._w
        while nxt < end:
            replacements.append((nxt - start, int(random_() * k)))
            nxt += (int(log(random_() or _TINY) / log1p(-w)) if w < 1.0 else 0) + 1
            w *= exp(log(random_() or _TINY) / k)
        self._next, self._w = nxt, w
        return n_append, replacements

    def _skip(self) -> None:
        """Move ``_next`` past the items Algorithm L skips; shrink ``_w``."""
        rnd = self._rng.random
        w = self._w
        self._next += (int(math.log(rnd() or _TINY) / math.log1p(-w)) if w < 1.0 else 0) + 1
        self._w = w * math.exp(math.log(rnd() or _TINY) / self.capacity)


_TINY = 5e-324  # random() may return 0.0; log() needs (0, 1)
