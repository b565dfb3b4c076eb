"""Several base URLs behind one run: least-in-flight choice, back-off of failing ones.

Replicas of a model server (several vLLM instances, say) rarely need a load
balancer in front of a batch client: the client knows exactly how many
requests each one is serving, which is the best balancing signal there is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


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

    def stats(self) -> list[dict[str, Any]]:
        return [{"url": public_url(e.url), "requests": e.requests, "failures": e.failures} for e in self.endpoints]


_API_SUFFIXES = ("/chat/completions", "/completions", "/responses", "/messages", "/embeddings")


def check_base_url(url: str) -> str:
    """A base URL as OpenAI clients take it (`http://host:8000/v1`); raises ValueError with the fix.

    The two mistakes new users make: no scheme (`localhost:8000/v1`, which
    aiohttp reads as a relative URL) and a full endpoint URL pasted from a
    curl example (`.../v1/chat/completions`), which would be doubled.
    """
    from yarl import URL

    text = url.strip()
    if "://" not in text:
        raise ValueError(f"base URL {url!r} has no scheme: did you mean --base-url http://{text}?")
    parsed = URL(text)
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise ValueError(f"base URL {url!r} must be http:// or https:// with a host, like http://127.0.0.1:8000/v1")
    path = parsed.path.rstrip("/")
    for suffix in _API_SUFFIXES:
        if path.endswith(suffix):
            fixed = str(parsed.with_path(path[: -len(suffix)] or "/").with_query(None)).rstrip("/")
            raise ValueError(f"base URL {url!r} ends in {suffix}: give the base, --base-url {fixed}; "
                             "the API path comes from each input line")
    return text


def public_url(url: str) -> str:
    """The URL as it may be written to records, logs and the summary: without `user:password@`."""
    from yarl import URL

    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        return url
    if parsed.user is None and parsed.password is None:
        return url
    return str(parsed.with_user(None))


def url_secrets(url: str) -> tuple[str, ...]:
    """A password in a base URL is a secret like the key: redacted wherever it might be echoed.

    In every form it can take: as decoded and as written in the URL
    (`p%40ss`), and as the `Authorization: Basic` token aiohttp sends for it,
    which a gateway that echoes the request's headers in its error hands back.
    """
    import base64

    from yarl import URL

    try:
        parsed = URL(url)
        password, raw = parsed.password, parsed.raw_password
    except (ValueError, TypeError):
        return ()
    if not password:
        return ()
    token = base64.b64encode(f"{parsed.user or ''}:{password}".encode("latin1", "replace")).decode()
    return tuple(dict.fromkeys((password, raw or password, token)))


def is_loopback(url: str) -> bool:
    """A server on this machine: the only kind streamrun calls without a key by default."""
    import ipaddress

    from yarl import URL

    host = (URL(url).host or "").strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)
