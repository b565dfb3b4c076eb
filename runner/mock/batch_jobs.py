"""The batches behind the mock's Batch APIs: their lines answered over time, their end.

Why it exists: OpenAI's Batch API (``batches``) and Anthropic's Message
Batches (``message_batches``) differ in their routes and shapes, not in what
a batch does: it holds requests, answers them one by one as the matching
live endpoint would, and ends (completed, expired, cancelled).  That is
written once, here.

How a line is answered
    By the mock itself, over HTTP: each request is POSTed (``stream``
    false) to the mock's own endpoint for its path, on the address the
    batch was created through, with the mock's key.  So a batch line is
    validated, faulted (the ``mock`` field: a ``400`` or ``500`` fault gives
    a failed line) and answered exactly as that request sent live would be,
    and the mock's stats count those requests as any others.

How a batch moves on (``MockConfig``)
    Its lines are answered in order, evenly over ``batch_delay`` seconds
    from its creation and, with ``batch_polls``, over that many retrievals
    of it (the slower of the two rules); it ends once every line is
    answered and both are used up.  ``batch_expire_at`` (a fault) stops the
    answering once that fraction of the lines is answered: the batch then
    ends as expired, its unanswered lines expired.  A cancel stops the
    answering at once; the batch ends (cancelled) when the lines in flight
    are answered.  Nothing runs between requests but the answering task:
    the status is worked out when a request looks at the batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from .config import MockConfig

__all__ = ["Answer", "BatchStore", "Job", "STORE_KEY", "loopback_target", "read_limited"]

ANSWERING = 16  # lines of one batch answered at a time
LINE_TIMEOUT_S = 60.0  # a line whose answer takes longer (a "stall" fault) fails


@dataclass(slots=True)
class Answer:
    """How one line was answered: the HTTP status and JSON body, or why there was none."""

    status: int | None
    body: Any = None
    request_id: str | None = None
    failure: str | None = None  # no HTTP answer (the connection was cut, a timeout)


@dataclass
class Job:
    """One batch: its requests, their answers so far, and what was asked of it."""

    id: str
    api: str  # "openai" | "anthropic"
    requests: list[tuple[str, str, dict[str, Any]]]  # (custom_id, API path, body)
    created: float  # time.time()
    target: str  # http(s)://host:port the mock answers its lines on
    headers: dict[str, str]  # what the lines are sent with (the mock's key, anthropic-version)
    answers: list[Answer | None] = field(default_factory=list)
    answered: int = 0  # lines answered, in order
    polls: int = 0
    cancel_requested: float | None = None  # time.time() of the cancel
    ended_at: float | None = None
    end: str | None = None  # "completed" | "expired" | "cancelled" | "failed"
    info: dict[str, Any] = field(default_factory=dict)  # the API's own fields (endpoint, metadata, files)
    task: asyncio.Task | None = None
    wake: asyncio.Event = field(default_factory=asyncio.Event)  # a poll or a cancel: the answering looks again
    progressed: asyncio.Event = field(default_factory=asyncio.Event)  # more lines were answered

    def __post_init__(self) -> None:
        self.answers = [None] * len(self.requests)

    @property
    def n(self) -> int:
        return len(self.requests)

    def fraction(self, config: MockConfig, now: float) -> float:
        """How far along the batch is by ``batch_delay`` and ``batch_polls`` (1: both used up)."""
        parts = []
        if config.batch_delay > 0:
            parts.append((now - self.created) / config.batch_delay)
        if config.batch_polls > 0:
            parts.append(self.polls / config.batch_polls)
        return max(0.0, min([1.0, *parts]))

    def allowed(self, config: MockConfig, now: float) -> int:
        """Lines that may be answered by now."""
        share = self.fraction(config, now)
        count = self.n if share >= 1.0 else int(self.n * share)
        if config.batch_expire_at is not None:
            count = min(count, int(self.n * config.batch_expire_at))
        return count

    def settle(self, config: MockConfig, now: float) -> str | None:
        """The batch's end, once it has one (worked out when a request looks at the batch)."""
        if self.end is None:
            idle = self.task is None or self.task.done()
            if self.cancel_requested is not None:
                if idle:
                    self.end = "cancelled"
            elif idle and self.fraction(config, now) >= 1.0 and self.answered >= self.allowed(config, now):
                self.end = "completed" if self.answered == self.n else "expired"
            if self.end is not None:
                self.ended_at = now
        return self.end


class BatchStore:
    """Every batch and file of one mock app, and the session its lines are answered through."""

    def __init__(self, config: MockConfig) -> None:
        self.config = config
        self.jobs: dict[str, Job] = {}
        self.files: dict[str, dict[str, Any]] = {}  # OpenAI file id -> its object, with "data" (bytes)
        self._session: aiohttp.ClientSession | None = None

    def start(self, job: Job, count: Callable[[Job], None]) -> None:
        """Keep the batch and start answering it (``count`` tells the stats of its lines)."""
        self.jobs[job.id] = job
        count(job)
        job.task = asyncio.get_running_loop().create_task(self._work(job))

    async def look(self, job: Job, poll: bool, catch_up: bool = True) -> str | None:
        """A request looks at the batch: a retrieval counts as a poll; its end, if it has one.

        The lines due by now are answered before the batch is shown, so what
        a poll sees depends on the polls and the delay only, never on how fast
        this machine answered them (`catch_up` False: a create, which shows the
        batch as it starts)."""
        if poll:
            job.polls += 1
        job.wake.set()
        target = job.allowed(self.config, time.time()) if catch_up else 0
        while job.answered < target and job.cancel_requested is None and job.task is not None \
                and not job.task.done():
            job.progressed.clear()
            try:
                await asyncio.wait_for(job.progressed.wait(), LINE_TIMEOUT_S)
            except TimeoutError:
                break
        return job.settle(self.config, time.time())

    def cancel(self, job: Job) -> None:
        if job.end is None and job.cancel_requested is None:
            job.cancel_requested = time.time()
            job.wake.set()

    async def _work(self, job: Job) -> None:
        config = self.config
        while job.cancel_requested is None and job.answered < job.n:
            target = job.allowed(config, time.time())
            if target > job.answered:
                await self._answer(job, job.answered, min(target, job.answered + ANSWERING))
                continue
            if config.batch_expire_at is not None and target >= int(job.n * config.batch_expire_at) \
                    and job.fraction(config, time.time()) >= 1.0:
                return  # expired: nothing more is answered
            job.wake.clear()
            step = config.batch_delay / max(job.n, 1) if config.batch_delay > 0 else None
            try:
                await asyncio.wait_for(job.wake.wait(), step if step is not None else 3600.0)
            except TimeoutError:
                pass

    async def _answer(self, job: Job, a: int, b: int) -> None:
        answers = await asyncio.gather(*(self._one(job, *job.requests[i][1:]) for i in range(a, b)))
        for i, answer in zip(range(a, b), answers, strict=True):
            job.answers[i] = answer
        job.answered = b
        job.progressed.set()

    async def _one(self, job: Job, path: str, body: dict[str, Any]) -> Answer:
        if body.get("stream") is True:  # a batch answers whole replies: both APIs refuse a stream
            message = "stream is not supported in a batch"
            return Answer(400, {"type": "error", "error": {"type": "invalid_request_error", "message": message}}
                          if job.api == "anthropic" else
                          {"error": {"message": message, "type": "invalid_request_error", "param": "stream",
                                     "code": None}})
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=LINE_TIMEOUT_S))
        try:
            # ssl=False: over TLS the mock calls itself, by address, whatever name its certificate bears
            async with self._session.post(job.target + path, data=orjson.dumps(body), ssl=False,
                                          headers={**job.headers, "Content-Type": "application/json"}) as resp:
                raw = await resp.read()
                rid = resp.headers.get("x-request-id") or resp.headers.get("request-id")
                try:
                    payload = orjson.loads(raw)
                except orjson.JSONDecodeError:
                    payload = {"error": {"message": raw[:500].decode("utf-8", "replace"), "type": "server_error"}}
                return Answer(resp.status, payload, rid)
        except (aiohttp.ClientError, TimeoutError) as exc:
            return Answer(None, failure=f"the request failed: {type(exc).__name__}: {exc}"[:500])

    async def close(self) -> None:
        for job in self.jobs.values():
            if job.task is not None:
                job.task.cancel()
        if self._session is not None:
            await self._session.close()


STORE_KEY: web.AppKey[BatchStore] = web.AppKey("streamrun_mock_batches", BatchStore)


def loopback_target(request: web.Request) -> str:
    """Where the mock reaches itself: the local address of the connection the request came in on."""
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    if not sockname:
        return f"{request.scheme}://{request.host}"
    host, port, scheme = sockname[0], sockname[1], request.scheme  # https: a mock served over TLS
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


async def read_limited(request: web.Request, limit: int, too_large: Callable[[], Exception]) -> bytes:
    """The body, read in chunks up to ``limit`` bytes (``too_large()`` is raised beyond): batch bodies
    are far over aiohttp's 1 MiB ``client_max_size``."""
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise too_large()
        chunks.append(chunk)
