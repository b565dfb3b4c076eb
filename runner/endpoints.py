"""Several base URLs behind one run: least-in-flight choice, back-off of failing ones.

Replicas of a model server (several vLLM instances, say) rarely need a load
balancer in front of a batch client: the client knows exactly how many
requests each one is serving, which is the best balancing signal there is.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable


@dataclass(slots=True)
class Endpoint:
    url: str
    in_flight: int = 0
    streak: int = 0  # consecutive failures
    down_until: float = 0.0
    requests: int = 0
    failures: int = 0


class EndpointPool:
    """Picks the healthy endpoint with the fewest requests in flight.

    After `threshold` consecutive failures an endpoint is skipped for a
    back-off that doubles per further failure (capped); when every endpoint
    is backed off, the one that comes back soonest is used, so a run never
    stalls on its own bookkeeping.
    """

    def __init__(self, urls: list[str] | tuple[str, ...], *, threshold: int = 3, base_backoff: float = 2.0,
                 max_backoff: float = 60.0, now: Callable[[], float] = time.monotonic) -> None:
        if not urls:
            raise ValueError("at least one base URL is needed")
        self.endpoints = [Endpoint(u) for u in urls]
        self.threshold = threshold
        self.base_backoff = base_backoff
        self.max_backoff = max_backoff
        self.now = now
        self._turn = 0

    def acquire(self) -> Endpoint:
        eps = self.endpoints
        if len(eps) == 1:
            best = eps[0]
        else:
            t = self.now()
            healthy = [e for e in eps if e.down_until <= t]
            if healthy:
                self._turn = (self._turn + 1) % len(healthy)
                rotated = healthy[self._turn:] + healthy[:self._turn]  # fair among ties
                best = min(rotated, key=lambda e: e.in_flight)
            else:
                best = min(eps, key=lambda e: e.down_until)
        best.in_flight += 1
        best.requests += 1
        return best

    def release(self, ep: Endpoint, failed: bool) -> None:
        """`failed` means the endpoint's fault (connect, timeout, 5xx, 429, cut stream), not the request's."""
        ep.in_flight -= 1
        if not failed:
            ep.streak = 0
            return
        ep.failures += 1
        ep.streak += 1
        if ep.streak >= self.threshold and len(self.endpoints) > 1:
            backoff = min(self.max_backoff, self.base_backoff * 2 ** (ep.streak - self.threshold))
            ep.down_until = self.now() + backoff

    def stats(self) -> list[dict]:
        return [{"url": e.url, "requests": e.requests, "failures": e.failures} for e in self.endpoints]
