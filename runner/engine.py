"""The loop: pull inputs, shape the load, run requests, hand records to the writer.

A fixed pool of worker tasks (one per concurrency slot) pulls from a small
bounded queue, so memory is flat however long the input is: never one task
per line.  With a rate, a producer releases items at Poisson (or gamma)
arrival times computed on an absolute schedule (open loop: slow responses do
not slow arrivals; the lag shows up as `queue_s`).
"""

from __future__ import annotations

import asyncio
import math
import random
from contextlib import nullcontext
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import logging

import aiohttp
import orjson

from .stream.client import Attempt, connection_trace, endpoint_url, list_models, request_id, stream_once
from .config import RunConfig, Stage
from .endpoints import EndpointPool, public_url
from .stream.errors import HTTPStatusError, InvalidInput, RequestError, redact
from .errors import AuthRejected, RunError, UsageError
from .inputs import InputItem, aiter_items
from .dataset import Answers, checked, response_format
from .ids import line_hash
from .rejections import RejectionGuard
from .outputs import Prior
from .record import ERROR, OK, Choice, Metrics, Record, RecordError
from .stream.timing import Timing
from .stream import protocol, protocol_anthropic, protocol_responses
from .stream.protocol import (CHAT_PATH, COMPLETIONS_PATH, MESSAGES_PATH, RESPONSES_PATH, InvalidRequestLine,
                              StreamState)
from .stream.protocol_responses import EventStreamState
from .stream.retry import call_with_retries

_STOP = object()
# Each API path's wire protocol; the APIs that name their events stream through their handle_event.
PROTOCOLS = {CHAT_PATH: protocol, COMPLETIONS_PATH: protocol, RESPONSES_PATH: protocol_responses,
             MESSAGES_PATH: protocol_anthropic}
NAMED_EVENTS = {RESPONSES_PATH: protocol_responses.handle_event, MESSAGES_PATH: protocol_anthropic.handle_event}
log = logging.getLogger("streamrun")


@dataclass
class EngineHooks:
    """Optional collaborators; each is None when the run does not use it."""

    quota: Any = None  # runner.quota.QuotaLimiter
    adaptive: Any = None  # runner.quota.AdaptiveConcurrency
    estimate_tokens: Callable[[dict], int] | None = None  # request body -> tokens for TPM
    count_tokens: Callable[[str], tuple[int, str]] | None = None  # text -> (tokens, source)
    on_record: Callable[[Record], None] | None = None  # stats, progress
    on_start: Callable[[], None] | None = None
    on_finish: Callable[[], None] | None = None


@dataclass
class LagMonitor:
    """How late the event loop wakes up: a saturated client inflates every latency."""

    interval: float = 0.05
    samples: int = 0
    total: float = 0.0
    max: float = 0.0
    over_10ms: int = 0

    async def run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(self.interval)
            lag = time.perf_counter() - t - self.interval
            self.samples += 1
            self.total += lag
            self.max = max(self.max, lag)
            self.over_10ms += lag > 0.010

    def summary(self) -> dict:
        mean = self.total / self.samples if self.samples else 0.0
        share = self.over_10ms / self.samples if self.samples else 0.0
        return {"samples": self.samples, "mean_s": mean, "max_s": self.max, "share_over_10ms": share}


@dataclass
class EngineResult:
    interrupted: bool = False
    sent: int = 0
    skipped: int = 0
    cancelled: int = 0
    endpoints: list = field(default_factory=list)


def env_proxy(url: str) -> str | None:
    """HTTP(S)_PROXY / NO_PROXY for this URL, as aiohttp's trust_env would find it."""
    from aiohttp.helpers import get_env_proxy_for_url
    from yarl import URL

    try:
        return str(get_env_proxy_for_url(URL(url))[0])
    except LookupError:
        return None


def arrival_gaps(rate: float | None, burstiness: float, rng: random.Random) -> Iterator[float]:
    """Gaps between arrivals: exponential (Poisson process) or gamma with shape=burstiness.

    Same convention as vLLM's benchmark_serving: mean gap 1/rate whatever the
    burstiness; burstiness < 1 is burstier, > 1 more regular.
    """
    if rate is None or math.isinf(rate) or rate <= 0:
        while True:
            yield 0.0
    theta = 1.0 / (rate * burstiness)
    while True:
        yield rng.gammavariate(burstiness, theta)


class Engine:
    def __init__(self, cfg: RunConfig, *, headers: dict[str, str], writer: Any, hooks: EngineHooks,
                 secrets: tuple[str, ...] = (), connector_limit: int | None = None) -> None:
        self.cfg = cfg
        self.headers = headers
        self.writer = writer
        self.hooks = hooks
        self.secrets = secrets
        self.pool = EndpointPool(list(cfg.base_urls))
        self.connector_limit = connector_limit or cfg.max_concurrency
        self.stopping = asyncio.Event()
        self.in_flight = 0
        self._busy: set[asyncio.Task] = set()  # workers with a request in flight
        self.result = EngineResult()
        self._rng = random.Random(cfg.seed)
        self.guard = RejectionGuard()
        self._anthropic_headers = {"anthropic-version": cfg.anthropic_version}
        self.answers = Answers(None)  # the response cache, set by the run with --cache
        self.prior = Prior()  # what the output held before this run (set by the run on --resume)
        self.fatal: RunError | None = None  # why the run stopped on its own, with its exit code
        self._model: str | None = cfg.model or cfg.params.get("model")
        self._model_lock = asyncio.Lock()

    def stop(self) -> None:
        """First signal: stop reading, let in-flight requests drain."""
        self.stopping.set()

    def abort(self, error: RunError) -> None:
        """Stop sending because the run as a whole cannot succeed; in-flight requests drain."""
        if self.fatal is None:
            self.fatal = error
        self.stopping.set()

    async def default_model(self) -> str:
        """The model for lines that name none and a run without --model: the server's only one.

        Asked once (GET /models); a server with several models, or none, stops
        the run with exit 2 before anything is spent, listing what it serves.
        """
        if self._model is not None:
            return self._model
        async with self._model_lock:
            if self._model is None:
                url = self.pool.endpoints[0].url
                try:
                    models = await list_models(self.session, url, proxy=self._proxies.get(url))
                except RequestError as exc:
                    raise UsageError(f"no --model given, and {url} did not list its models "
                                     f"({redact(exc.message, self.secrets)}): pass --model") from None
                if len(models) != 1:
                    listed = ", ".join(models[:20]) + (" ..." if len(models) > 20 else "") if models else "none"
                    raise UsageError(f"no --model given, and {url} serves {len(models)} models ({listed}): "
                                     "pass --model NAME")
                self._model = models[0]
                log.info("no --model given: using %s, the one model %s serves", self._model, url)
        return self._model

    async def run(self, stage_items: Callable[[Stage], Iterator[InputItem]],
                  warmup_items: Iterator[InputItem] | None = None) -> EngineResult:
        connector = aiohttp.TCPConnector(limit=self.connector_limit, limit_per_host=0,
                                         ttl_dns_cache=300, enable_cleanup_closed=True)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.cfg.timeouts.connect)
        # Proxies from the environment are resolved once here, not per request
        # as trust_env=True would (two thread hops per request).
        self._proxies = {e.url: env_proxy(e.url) for e in self.pool.endpoints}
        self._public_urls = {e.url: public_url(e.url) for e in self.pool.endpoints}
        try:
            # connection_trace: metrics.connect_s of the requests that open a connection.
            async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self.headers,
                                             auto_decompress=True, trace_configs=[connection_trace()]) as session:
                self.session = session
                first = self.cfg.stages[0]
                if warmup_items is not None and self.cfg.warmup:
                    await self._run_stage(first, warmup_items, warmup=True)
                for stage in self.cfg.stages:
                    if self.stopping.is_set():
                        break
                    await self._run_stage(stage, stage_items(stage), warmup=False)
        finally:
            for record in self.guard.release():
                self._write(record)
            self.result.endpoints = self.pool.stats()
        self.result.interrupted = self.stopping.is_set()
        return self.result

    async def _run_stage(self, stage: Stage, items: Iterator[InputItem], warmup: bool) -> None:
        queue: asyncio.Queue = asyncio.Queue(maxsize=max(2 * stage.concurrency, 64))
        workers = [asyncio.create_task(self._worker(queue, stage, warmup)) for _ in range(stage.concurrency)]
        producer = asyncio.create_task(self._produce(queue, items, stage, warmup))
        stop_wait = asyncio.create_task(self.stopping.wait())
        everything = asyncio.gather(producer, *workers)
        try:
            await asyncio.wait([everything, stop_wait], return_when=asyncio.FIRST_COMPLETED)
            if everything.done():
                everything.result()  # re-raise a crash
                return
            producer.cancel()
            for w in workers:  # idle workers wait for input that will not come: only busy ones drain
                if w not in self._busy:
                    w.cancel()
            _, pending = await asyncio.wait(workers, timeout=self.cfg.drain_timeout_s)
            self.result.cancelled += sum(1 for w in pending if w in self._busy)
            for w in pending:
                w.cancel()
            await asyncio.gather(*workers, producer, return_exceptions=True)
        finally:
            stop_wait.cancel()
            if not everything.done():
                everything.cancel()
            # Retrieve its outcome even when done: a gather whose children were
            # cancelled holds a CancelledError that asyncio would otherwise
            # print as "exception was never retrieved" on every drain.
            await asyncio.gather(everything, return_exceptions=True)

    async def _produce(self, queue: asyncio.Queue, items: Iterator[InputItem], stage: Stage, warmup: bool) -> None:
        cfg = self.cfg
        gaps = arrival_gaps(None if warmup else stage.rate, cfg.burstiness, self._rng)
        start = time.perf_counter()
        due = start
        sent = 0
        limit = cfg.warmup if warmup else cfg.num_prompts
        duration = cfg.duration_s
        if not warmup:  # --num-prompts and --duration count the whole output, earlier runs included
            if limit is not None:
                limit = max(0, limit - self.prior.sent(stage.label))
            if duration is not None:
                duration = max(0.0, duration - self.prior.elapsed(stage.label))
        source = items if hasattr(items, "__aiter__") else aiter_items(items)  # live inputs come async
        async for item in source:
            if self.stopping.is_set():
                break
            if item.error is not None:  # invalid lines are answered at once, no request
                self._emit(self._invalid_record(item, stage))
                continue
            if limit is not None and sent >= limit:
                break
            if not warmup and duration is not None and time.perf_counter() - start >= duration:
                break
            if sent:  # the first request goes at once, then the gaps (as vLLM's benchmark does)
                due += next(gaps)
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent += 1
            await queue.put((item, due if stage.rate else None))
        for _ in range(stage.concurrency):
            await queue.put(_STOP)

    async def _worker(self, queue: asyncio.Queue, stage: Stage, warmup: bool) -> None:
        task = asyncio.current_task()
        while True:
            entry = await queue.get()
            if entry is _STOP or self.stopping.is_set():
                return
            item, due = entry
            self._busy.add(task)
            self.in_flight += 1
            try:
                record = await self._process(item, due, stage, warmup)
            except RunError as exc:  # e.g. no model could be found: nothing was sent for this item
                self.abort(exc)
                return
            finally:
                self.in_flight -= 1
                self._busy.discard(task)
            self._emit(record)

    def _emit(self, record: Record) -> None:
        ready, tripped = self.guard.offer(record)
        for r in ready:
            self._write(r)
        if tripped is not None:
            self.abort(AuthRejected(
                f"stopped: the first {self.guard.limit} answers were all HTTP 401/403/404 ({tripped}); "
                f"check the key (${self.cfg.api_key_env}), --base-url and --model. Nothing was written "
                "for those requests, so a rerun sends them again"))

    def _write(self, record: Record) -> None:
        self.writer.put(record)
        if self.hooks.on_record is not None:
            self.hooks.on_record(record)

    async def _process(self, item: InputItem, due: float | None, stage: Stage, warmup: bool) -> Record:
        cfg = self.cfg
        hooks = self.hooks
        body = item.body or {}
        model = self._model if ("model" in body or self._model is not None) else await self.default_model()
        try:
            request = PROTOCOLS[item.path].build_body(body, path=item.path, defaults=cfg.params, model=model,
                                                      include_usage=cfg.include_usage)
        except InvalidRequestLine as exc:  # e.g. Anthropic without max_tokens: answered at once, nothing sent
            return self._record(item, stage, warmup, None, None, 0, InvalidInput(f"{item.place}: {exc}"))
        key = self.answers.key(item.path, request)
        if key is not None:
            cached = await self.answers.lookup(key, self._record(item, stage, warmup, None, None, 0, None))
            if cached is not None:
                return cached
        fmt = response_format(request)
        body = orjson.dumps(request)
        estimate = hooks.estimate_tokens(request) if hooks.estimate_tokens and hooks.quota else 0
        attempts = 0
        attempt: Attempt | None = None
        error: RequestError | None = None
        timing: Timing | None = None
        self.result.sent += 1

        async def one_attempt():
            nonlocal attempts, timing
            attempts += 1
            timing = Timing(due=due if (due is not None and attempts == 1) else time.perf_counter())
            done = await self._attempt(item, body, timing, estimate)
            return done, checked(fmt, done)  # a reply that is not the JSON asked for is retried

        parsed = None
        try:
            attempt, parsed = await call_with_retries(cfg.retry, one_attempt)
        except RequestError as exc:
            error = exc
        if attempt is not None:
            state, rid = attempt.state, attempt.request_id
        else:
            state = error.partial if error is not None else None
            rid = request_id(getattr(error, "headers", None), state)
        record = self._record(item, stage, warmup, state, timing, attempts, error, rid)
        record.parsed = parsed
        await self.answers.store(key, record)
        return record

    async def _attempt(self, item: InputItem, body: bytes, timing: Timing, estimate: int):
        """One try: wait for quota and a slot, pick an endpoint, stream; feed back what was learnt."""
        hooks = self.hooks
        if hooks.quota is not None:
            await hooks.quota.acquire(estimate)  # ExceedsTPM is a RequestError: an error record
        attempt = None
        try:
            async with (hooks.adaptive.slot() if hooks.adaptive is not None else nullcontext()):
                endpoint = self.pool.acquire()
                timing.endpoint = self._public_urls[endpoint.url]
                failed = True
                try:
                    named = NAMED_EVENTS.get(item.path)
                    state = (EventStreamState(keep_logprobs=not self.cfg.drop_logprobs) if named is not None else
                             StreamState(keep_logprobs=False) if self.cfg.drop_logprobs else None)
                    attempt = await stream_once(self.session, endpoint_url(endpoint.url, item.path),
                                                body, self.cfg.timeouts, timing, self._proxies[endpoint.url],
                                                self.cfg.limits, state, named,
                                                self._anthropic_headers if item.path == MESSAGES_PATH else None)
                    failed = False
                except RequestError as exc:
                    failed = exc.retryable
                    self._learn_from_failure(exc, timing)
                    raise
                finally:
                    self.pool.release(endpoint, failed)
            if hooks.adaptive is not None:
                hooks.adaptive.on_success()
            if hooks.quota is not None:
                hooks.quota.observe_headers(attempt.headers)
                hooks.quota.succeeded()
            return attempt
        finally:
            if hooks.quota is not None and estimate:
                usage = (attempt.state.usage if attempt is not None else None) or {}
                hooks.quota.settle(estimate, int(usage.get("total_tokens") or (estimate if attempt else 0)))

    def _learn_from_failure(self, exc: RequestError, timing: Timing) -> None:
        if not isinstance(exc, HTTPStatusError):
            return
        if self.hooks.quota is not None:
            self.hooks.quota.observe_headers(exc.headers)
            if exc.status_code == 429:
                self.hooks.quota.throttled()
        if exc.status_code in (429, 503) and self.hooks.adaptive is not None:
            self.hooks.adaptive.on_throttle(exc.retry_after, sent_at=timing.sent)

    def _record(self, item: InputItem, stage: Stage, warmup: bool, state, timing: Timing | None,
                attempts: int, error: RequestError | None, rid: str | None = None) -> Record:
        usage = state.usage if state is not None else None
        text = state.text if state is not None else ""
        others = state.others if state is not None else None
        choices = _choices(state, text) if others else None
        tokens, source = None, None
        completion = usage.get("completion_tokens") if usage else None
        if type(completion) is int:  # usage counts every choice
            tokens, source = completion, "usage"
        elif state is not None and state.text_events:  # so do the events: any choice's output
            counted = _tokenizer_count(self.hooks.count_tokens, text, choices)
            if counted is not None and counted[1] == "tokenizer":
                tokens, source = counted
            else:
                tokens, source = state.text_events, "events"
        if state is not None:
            reasoning, tool_calls, finish_reason = state.reasoning, state.tool_calls, state.finish_reason
            logprobs = state.logprobs
            model = state.model or (item.body or {}).get("model") or self._model
        else:
            reasoning = tool_calls = finish_reason = logprobs = None
            model = (item.body or {}).get("model") or self._model
        return Record(
            ("warmup:" + item.custom_id) if warmup else item.custom_id,
            OK if error is None else ERROR,
            text,
            reasoning,
            tool_calls,
            finish_reason,
            model,
            usage,
            Metrics.from_timing(timing, tokens, source),
            attempts,
            None if error is None else RecordError(
                error.type, error.status_code, getattr(error, "code", None), redact(error.message, self.secrets)),
            {"file": item.file, "line": item.line},
            timing.endpoint if timing is not None else None,
            stage.to_record(),
            warmup,
            item.path,
            rid,
            logprobs,
            choices,
            line_hash(item.raw) if item.raw else None,
        )

    def _invalid_record(self, item: InputItem, stage: Stage) -> Record:
        return self._record(item, stage, False, None, None, 0, InvalidInput(f"{item.place}: {item.error}"))


def _choices(state: StreamState, text: str) -> list[Choice]:
    """Every choice of an `n > 1` reply, in index order; choice 0 is the state's own fields (`text`: its text)."""
    return [Choice(0, text, state.reasoning, state.tool_calls, state.finish_reason, state.logprobs),
            *(Choice(c.index, c.text, c.reasoning, c.tool_calls, c.finish_reason, c.logprobs)
              for c in (state.others[i] for i in sorted(state.others)))]


def _tokenizer_count(count: Callable[[str], tuple[int, str]] | None, text: str,
                     choices: list[Choice] | None) -> tuple[int, str] | None:
    """The tokenizer's count of the output (each choice's text counted on its own), if it has one."""
    if count is None:
        return None
    if choices is None:
        return count(text)
    total = 0
    for choice in choices:
        n, source = count(choice.text)
        if source != "tokenizer":
            return None
        total += n
    return total, "tokenizer"
