"""One RPM/TPM budget for all workers: the parent's limiter grants, each worker asks.

Why not limit/N per worker: a hosted API's quota is one budget, and
splitting it would refuse a request that fits the whole TPM limit but not
a worker's share (`exceeds_tpm`), and idle a worker's share while another
waits.  So the parent keeps the run's one `runner.engine.quota.QuotaLimiter` (as a
single-process run does: its waits and throttles are the summary's), and a
worker's `QuotaClient` stands in for it in the worker's engine: `acquire`
is a round trip to the parent (only when --rpm or --tpm is set, i.e. for
hosted APIs, whose rates make a round trip of well under a millisecond
nothing); what the worker learns (usage, rate-limit headers, 429s) goes
back to the same limiter.  The sum of the grants never exceeds the limit.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Mapping

import anyio

from ..stream.errors import ExceedsTPM
from .wire import Kind, Link, message


class QuotaClient:
    """The worker's side: the QuotaLimiter calls the engine makes, forwarded to the parent."""

    def __init__(self, link: Link, tpm: int | None) -> None:
        self._link = link
        self._tpm = tpm
        self._ids = itertools.count()
        self._waiting: dict[int, asyncio.Future] = {}

    async def acquire(self, tokens: int = 0) -> None:
        if self._tpm is not None and tokens > self._tpm:  # waiting would never help: no round trip
            raise ExceedsTPM(tokens, self._tpm)
        ident = next(self._ids)
        granted = asyncio.get_running_loop().create_future()
        self._waiting[ident] = granted
        self._link.send_json(Kind.QUOTA, {"op": "acquire", "id": ident, "tokens": tokens})
        try:
            error = await granted
        except asyncio.CancelledError:  # a drained request: the parent's waiter takes nothing
            self._link.send_json(Kind.QUOTA, {"op": "cancel", "id": ident})
            raise
        finally:
            self._waiting.pop(ident, None)
        if error is not None:
            raise ExceedsTPM(tokens, error["tpm"])

    def granted(self, payload: bytes) -> None:
        msg = message(payload)
        waiter = self._waiting.get(msg["id"])
        if waiter is not None and not waiter.done():
            waiter.set_result(msg.get("error"))

    def settle(self, estimated: int, actual: int) -> None:
        self._link.send_json(Kind.QUOTA, {"op": "settle", "estimated": estimated, "actual": actual})

    def observe_headers(self, headers: Mapping[str, str]) -> None:
        limits = {str(k): str(v) for k, v in (headers or {}).items() if k.lower().startswith("x-ratelimit-")}
        if limits:
            self._link.send_json(Kind.QUOTA, {"op": "headers", "headers": limits})

    def throttled(self) -> None:
        self._link.send_json(Kind.QUOTA, {"op": "throttled"})

    def succeeded(self) -> None:
        self._link.send_json(Kind.QUOTA, {"op": "succeeded"})


class QuotaGrants:
    """The parent's side: one worker's QUOTA messages applied to the run's limiter, grants sent back."""

    def __init__(self, limiter, link: Link, tg: anyio.abc.TaskGroup) -> None:
        self._limiter = limiter
        self._link = link
        self._tg = tg
        self._pending: dict[int, anyio.CancelScope] = {}

    def handle(self, payload: bytes) -> None:
        msg = message(payload)
        op, limiter = msg["op"], self._limiter
        if op == "acquire":
            scope = anyio.CancelScope()
            self._pending[msg["id"]] = scope
            self._tg.start_soon(self._grant, msg["id"], msg["tokens"], scope)
        elif op == "cancel":
            waiting = self._pending.pop(msg["id"], None)
            if waiting is not None:
                waiting.cancel()
        elif op == "settle":
            limiter.settle(msg["estimated"], msg["actual"])
        elif op == "headers":
            limiter.observe_headers(msg["headers"])
        elif op == "throttled":
            limiter.throttled()
        elif op == "succeeded":
            limiter.succeeded()

    def cancel_all(self) -> None:
        """The worker is gone: its waiters take nothing more."""
        for scope in self._pending.values():
            scope.cancel()
        self._pending.clear()

    async def _grant(self, ident: int, tokens: int, scope: anyio.CancelScope) -> None:
        with scope:
            try:
                await self._limiter.acquire(tokens)
                error = None
            except ExceedsTPM as exc:
                error = {"tpm": exc.tpm}
            self._pending.pop(ident, None)
            self._link.send_json(Kind.GRANT, {"id": ident, "error": error})
