"""One input line to one record: the body, the cache, the attempts with their retries, the record.

Why apart from the engine: the engine decides *when* a line goes (stages,
arrival times, concurrency, drains); this decides *what* goes and what comes
back.  Sessions (`runner.engine.session`) send each turn through `Sender.request`,
so a turn is retried, checked and measured exactly like a single prompt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from ..config.run_config import ChecksConfig, RequestConfig, Stage, TransportConfig
from ..errors import OutOfFiles, RunError, Unreachable, UsageError
from ..inputs.ids import line_hash
from ..inputs.items import InputItem
from ..inputs.tokens import reasoning_tokens
from ..record import ERROR, OK, Choice, Metrics, Record, RecordError
from ..stream import embeddings, protocol, protocol_anthropic, protocol_responses
from ..stream.client import Attempt, endpoint_url, list_models, request_id, stream_once
from ..stream.endpoints import EndpointPool, public_url
from ..stream.errors import (
    NOT_THE_API,
    ConnectError,
    HTTPStatusError,
    InvalidInput,
    PastDeadline,
    RequestError,
    TooManyOpenFiles,
    UnwantedFinish,
    redact,
)
from ..stream.headers import ANTHROPIC, OPENAI, Credentials
from ..stream.network import Network
from ..stream.paths import CHAT_PATH, COMPLETIONS_PATH, MESSAGES_PATH, RESPONSES_PATH, InvalidRequestLine, key_api
from ..stream.protocol import StreamState
from ..stream.protocol_responses import EventStreamState
from ..stream.retry import call_with_retries
from ..stream.timing import Timing
from ..stream.tls import TlsProblem
from .answers import Answers, checked, response_format
from .guards import ConnectGuard
from .hooks import EngineHooks
from .result import EngineResult
from .structured import format_problem

if TYPE_CHECKING:  # OpenTelemetry's side is loaded only when --otlp-endpoint asks for it
    from ..observe.tracing import RequestSpan, RequestTracer

log = logging.getLogger("streamrun")
OUT_OF_FILES_PATIENCE_S = 60.0  # EMFILE this long for one request: the open-file limit leaves no room at all
#: The end of the error message of a request whose retry --duration's deadline stopped: the failure is one a
#: retry could have mended (its type says so, and a rerun sends the line again), not the request's last word.
NOT_RETRIED = "(not retried: the retry would have started after --duration's deadline)"

# Each API path's wire protocol; the APIs that name their events stream through their handle_event, and
# read a whole JSON answer (a server that ignored "stream": true) with their apply_whole.
PROTOCOLS = {CHAT_PATH: protocol, COMPLETIONS_PATH: protocol, RESPONSES_PATH: protocol_responses,
             MESSAGES_PATH: protocol_anthropic, embeddings.PATH: embeddings}
NAMED_EVENTS = {RESPONSES_PATH: protocol_responses.handle_event, MESSAGES_PATH: protocol_anthropic.handle_event}
WHOLE = {RESPONSES_PATH: protocol_responses.apply_whole, MESSAGES_PATH: protocol_anthropic.apply_whole}


# What a reply is read into: chat/completions' stream, the Responses and Messages APIs' named events, embeddings.
ReplyState = StreamState | EventStreamState | embeddings.Result


@dataclass
class Reply:
    """What one request (with its retries) came to: the stream's state or the error, and its stamps."""

    state: ReplyState | None  # None when nothing came back
    timing: Timing | None
    attempts: int
    error: RequestError | None
    request_id: str | None
    parsed: Any = None


class Sender:
    """What sending needs, shared by every request of one session: the settings of the transport, the
    requests and the checks of their answers; the session, the endpoints, the credentials and the hooks.

    `result` is the engine's: the Sender counts the requests it sends there.
    `reach` (runner/engine/guards.ConnectGuard) hears whether any attempt
    connected; `abort` (the engine's) stops the run when the guard's patience
    runs out between failures.  `network`: how the servers are reached, their
    TLS settings and proxies (runner/stream/network.py).  `connections`: fewer connections than requests in flight, when
    the open-file limit allows no more (runner/workers/openfiles.py): a request
    waits for one before it is sent, so the wait shows as queue_s, never in
    TTFT.  `replay_speed`: --replay's time scale (None without --replay), for
    each record's scheduled time.
    """

    def __init__(self, session: aiohttp.ClientSession, transport: TransportConfig, request: RequestConfig,
                 checks: ChecksConfig, *, creds: Credentials, hooks: EngineHooks, pool: EndpointPool,
                 answers: Answers, result: EngineResult, reach: ConnectGuard, network: Network | None = None,
                 abort: Callable[[RunError], None] | None = None, connections: int | None = None,
                 replay_speed: float | None = None) -> None:
        self.session = session
        self.transport = transport
        self.request_defaults = request
        self.hooks = hooks
        self.pool = pool
        self.secrets = creds.secrets
        self.answers = answers
        self.counters = result
        self.reach = reach
        self.replay_speed = replay_speed
        self.network = network if network is not None else Network()
        # Each base URL's proxy (--proxy, else the environment's but for loopback) is resolved once
        # here, not per request as trust_env=True would (two thread hops per request).
        self.proxies = {e.url: self.network.proxy_for(e.url) for e in pool.endpoints}
        self.public_urls = {e.url: public_url(e.url) for e in pool.endpoints}
        self._tls_said: dict[str, TlsProblem | None] = {}  # base URL -> what its TLS server objects to, asked once
        self._tls_asking = asyncio.Lock()
        self._abort = abort  # the connect guard's patience, run out between failures, stops the run
        self._patience: asyncio.TimerHandle | None = None
        self.tracer = hooks.tracer  # --otlp-endpoint: a span per request (runner.observe.tracing); or None
        # The line's API decides how it is authenticated: each path's own headers, sent with its requests.
        openai = creds.auth.get(OPENAI) or None
        anthropic = {**creds.auth.get(ANTHROPIC, {}), "anthropic-version": transport.anthropic_version}
        self._headers = {path: anthropic if key_api(path) == ANTHROPIC else openai for path in PROTOCOLS}
        self._dropped: set[tuple[str, str]] = set()  # (parameter, why) already warned of
        self._retry_finish = frozenset(checks.retry_finish_reasons)
        self.model: str | None = request.model or request.params.get("model")
        self._model_lock = asyncio.Lock()
        self._connections = asyncio.Semaphore(connections) if connections is not None else None
        self._out_of_files_said = False
        self.deadline: float | None = None  # --duration's, for the stage running (`start_stage`)

    def start_stage(self, deadline: float | None) -> None:
        """A stage begins: from `deadline` (a time.perf_counter value; None: none) no attempt starts."""
        self.deadline = deadline

    async def default_model(self) -> str:
        """The model for lines that name none and a run without --model: the server's only one.

        Asked once (GET /models); a server with several models, or none, stops
        the run with exit 2 before anything is spent, listing what it serves.
        """
        if self.model is not None:
            return self.model
        async with self._model_lock:
            if self.model is None:
                own = MESSAGES_PATH if self.transport.key_api == ANTHROPIC else CHAT_PATH
                self.model = await only_model(self.session, [e.url for e in self.pool.endpoints], self.proxies,
                                              self.secrets, headers=self._headers[own], network=self.network,
                                              timeout=self.transport.timeouts.connect)
        return self.model

    async def model_for(self, body: dict) -> str | None:
        return self.model if ("model" in body or self.model is not None) else await self.default_model()

    def build(self, path: str, body: dict, model: str | None) -> dict:
        """The request as sent: the run's defaults under the line's own keys. InvalidRequestLine if it cannot be.

        A response_format whose schema is itself invalid is such a request: no
        reply could pass it, so it is the line's fault, not worth an attempt.
        """
        defaults = self.request_defaults
        request = PROTOCOLS[path].build_body(body, path=path, defaults=defaults.params, model=model,
                                             include_usage=defaults.include_usage, on_drop=self._warn)
        problem = format_problem(response_format(request))
        if problem is not None:
            raise InvalidRequestLine(problem)
        return request

    def _warn(self, key: str, why: str) -> None:
        """A parameter the line's API has no place for, left out (runner.stream.params): said once a run."""
        if (key, why) not in self._dropped:
            self._dropped.add((key, why))
            log.warning("%s (said once)", why)

    async def process(self, item: InputItem, due: float | None, stage: Stage, warmup: bool) -> Record:
        """A single-request line: from the cache, else sent (with retries); always a record."""
        body = item.body or {}
        model = await self.model_for(body)
        try:
            request = self.build(sent_path(item), body, model)
        except InvalidRequestLine as exc:  # e.g. Anthropic without max_tokens: answered at once, nothing sent
            return self.record(item, stage, warmup, Reply(None, None, 0, InvalidInput(f"{item.place}: {exc}"), None))
        return await self.answer(item, request, due, stage, warmup)

    async def answer(self, item: InputItem, request: dict, due: float | None, stage: Stage, warmup: bool) -> Record:
        """One request's record: a cached answer this run accepts, else sent (with retries) and stored.

        Sessions answer each turn here too: a turn's body carries the actual
        history, so its cache key does, and a rerun of the same session is
        answered turn by turn from the cache.
        """
        path = sent_path(item)
        key = self.answers.key(path, request)
        if key is not None:
            fresh = self.record(item, stage, warmup, Reply(None, None, 0, None, None))
            fmt = response_format(request)
            cached = await self.answers.lookup(key, fresh, lambda answer: self.accept(fmt, answer))
            if cached is not None:
                return cached
        tracer = self.tracer
        if tracer is None:  # the one test tracing costs when it is off
            reply = await self.request(path, request, due)
            record = self.record(item, stage, warmup, reply)
        else:
            record = await self._traced(tracer, item, path, request, due, stage, warmup)
        await self.answers.store(key, record)
        return record

    async def _traced(self, tracer: RequestTracer, item: InputItem, path: str, request: dict, due: float | None,
                      stage: Stage, warmup: bool) -> Record:
        """`answer`'s request in a span of its own, which every attempt names in its traceparent header."""
        trace = tracer.start(path, request)
        try:
            reply = await self.request(path, request, due, trace)
        except PastDeadline:  # nothing was sent: no span either
            raise
        except BaseException as exc:  # cancelled in flight (the drain's end), a run-level stop
            trace.abandon(exc)
            raise
        record = self.record(item, stage, warmup, reply)
        trace.end(record, reply.timing)
        return record

    async def request(self, path: str, request: dict, due: float | None, trace: RequestSpan | None = None) -> Reply:
        """Send one request until it succeeds, fails for good, or the attempts run out.

        `trace`: its span (runner.observe.tracing.RequestSpan), named by every
        attempt's traceparent header; each retry is an event on it.
        """
        fmt = response_format(request)
        body = orjson.dumps(request)
        headers = self._headers[path] if trace is None else trace.headers(self._headers[path])
        hooks = self.hooks
        estimate = hooks.estimate_tokens(request) if hooks.estimate_tokens and hooks.quota else 0
        attempts = 0
        timing: Timing | None = None
        failure: RequestError | None = None  # the last attempt's, should a retry come too late
        self.counters.sent += 1

        async def one_attempt():
            nonlocal attempts, timing, failure
            previous, attempts = timing, attempts + 1
            timing = Timing(due=due if (due is not None and attempts == 1) else time.perf_counter())
            if trace is not None and attempts > 1:
                trace.retry(attempts, self.record_error(failure))
            try:
                done = await self._attempt(path, body, timing, estimate, headers)
                return done, self.accept(fmt, done.state)  # a reply the run does not accept is retried
            except PastDeadline:  # this attempt never started
                attempts, timing = attempts - 1, previous
                raise
            except RequestError as exc:
                failure = exc
                raise

        try:
            attempt, parsed = await call_with_retries(self.transport.retry, one_attempt, self.deadline)
        except (RequestError, PastDeadline) as exc:
            if isinstance(exc, PastDeadline):
                if failure is None:  # nothing was sent: no record
                    self.counters.sent -= 1
                    raise
                exc = failure  # the retry would have started after the deadline: the failure before it stands
            if exc.retryable and attempts < self.transport.retry.max_attempts and self.deadline is not None:
                # Only the deadline stops a retryable failure with attempts left (its wait would end after
                # it, or the retry, once due, found it passed): the record says so.
                exc.message = f"{exc.message} {NOT_RETRIED}"
            state = exc.partial
            return Reply(state, timing, attempts, exc, request_id(getattr(exc, "headers", None), state))
        return Reply(attempt.state, timing, attempts, None, attempt.request_id, parsed)

    def accept(self, fmt: dict | None, answer) -> Any:
        """Every check this run makes of an answer: its parsed JSON (None when none was asked for), or it raises.

        The one judge of live replies (a stream's state) and cached answers (a
        record) alike, so a check added here can be forgotten for neither.
        It raises the retryable RequestError the answer fails with:
        UnwantedFinish (--retry-finish-reason), InvalidOutput (not the JSON the
        response_format asked for).
        """
        self._check_finish(answer)
        return checked(fmt, answer)

    def _check_finish(self, answer) -> None:
        """--retry-finish-reason: a reply that ended for one of those reasons is tried again."""
        reason = getattr(answer, "finish_reason", None)
        if reason is not None and reason in self._retry_finish:
            err = UnwantedFinish(f"the reply ended with finish_reason {reason!r} (--retry-finish-reason)")
            err.partial = answer
            raise err

    async def _attempt(self, path: str, body: bytes, timing: Timing, estimate: int,
                       headers: Mapping[str, str] | None) -> Attempt:
        """One try: wait for quota and a slot, pick an endpoint, send; feed back what was learnt."""
        hooks = self.hooks
        if hooks.quota is not None:
            await self._by_deadline(hooks.quota.acquire(estimate))  # ExceedsTPM is a RequestError: an error record
        attempt = None
        try:
            async with (hooks.adaptive.slot() if hooks.adaptive is not None else nullcontext()), \
                    (self._connections or nullcontext()):
                if self.too_late():
                    raise PastDeadline
                endpoint = self.pool.acquire()
                timing.endpoint = self.public_urls[endpoint.url]
                failed = True
                reach = self.reach if self.reach.armed else None  # until the first connection
                if reach is not None:
                    reach.begin(timing)
                try:
                    attempt = await self._send_when_possible(path, endpoint.url, body, timing, headers)
                    failed = False
                    if reach is not None:
                        reach.connected()
                except RequestError as exc:
                    failed = exc.retryable
                    self._learn_from_failure(exc, timing)
                    if reach is not None:
                        await self._watch_reach(exc, endpoint.url, timing)
                    raise
                finally:
                    if reach is not None:
                        reach.end(timing)
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

    async def _watch_reach(self, exc: RequestError, url: str, timing: Timing) -> None:
        """Before any attempt connected: a failure to connect may show the server was never reachable.

        A TLS server that refuses this client (no client certificate) drops the connection in a
        way aiohttp reports as a reset: the server is asked once what it objects to, and a
        conclusive answer stops the run at once."""
        if not isinstance(exc, ConnectError):
            self.reach.connected()  # an answer of any kind: the server is there
            return
        reason, conclusive = exc.reason, exc.conclusive
        if self.network.may_explain(url, exc):
            async with self._tls_asking:
                if url not in self._tls_said:
                    self._tls_said[url] = await self.network.explain(url, self.transport.timeouts.connect)
            problem = self._tls_said[url]
            if problem is not None:
                reason, conclusive = str(problem), problem.conclusive
        # Its own connection may have opened and been lost before any answer: no sign that a server is there.
        self.reach.end(timing)
        stop = self.reach.failed(url, reason, timing.sent, time.perf_counter(), conclusive)
        if stop is not None:
            raise Unreachable(redact(stop, self.secrets))
        if self._patience is None and self.reach.since is not None:  # the guard's patience, if no failure ends it
            delay = self.reach.since + self.reach.patience_s - time.perf_counter()
            self._patience = asyncio.get_running_loop().call_later(max(0.0, delay) + 0.01, self._out_of_patience)

    def _out_of_patience(self) -> None:
        stop = self.reach.overdue(time.perf_counter())
        if stop is not None and self._abort is not None:
            self._abort(Unreachable(redact(stop, self.secrets)))

    async def _send_when_possible(self, path: str, base_url: str, body: bytes, timing: Timing,
                                  headers: Mapping[str, str] | None) -> Attempt:
        """`_send`, waiting out EMFILE: out of file descriptors is this process's limit, not the server's
        answer, so it never fails an attempt; a descriptor frees up as other requests end."""
        wait, waited = 0.05, 0.0
        while True:
            try:
                return await self._send(path, base_url, body, timing, headers)
            except TooManyOpenFiles as exc:
                if waited >= OUT_OF_FILES_PATIENCE_S:
                    raise OutOfFiles(f"no file descriptor came free for a connection in {waited:.0f}s "
                                     f"({exc.message}): raise the open-file limit (ulimit -n) or lower -c; "
                                     "--resume sends what was not written") from None
                if not self._out_of_files_said:
                    self._out_of_files_said = True
                    log.warning("out of file descriptors (ulimit -n): requests wait for one to free up")
            await asyncio.sleep(wait)
            waited += wait
            wait = min(1.0, wait * 2)

    def too_late(self, after: float = 0.0) -> bool:
        """Whether a request started `after` seconds from now would start at or after --duration's deadline."""
        return self.deadline is not None and time.perf_counter() + after >= self.deadline

    async def _by_deadline(self, waiting: Awaitable) -> None:
        """Wait for quota, but not past --duration's deadline (PastDeadline; the waiter takes nothing)."""
        if self.deadline is None:
            await waiting
            return
        try:
            await asyncio.wait_for(waiting, self.deadline - time.perf_counter())
        except TimeoutError:
            raise PastDeadline from None

    async def _send(self, path: str, base_url: str, body: bytes, timing: Timing,
                    headers: Mapping[str, str] | None) -> Attempt:
        """One attempt over the wire; `headers`: the line's API's key (and the traceparent), with it only."""
        url = endpoint_url(base_url, path)
        proxy = self.proxies[base_url]
        transport = self.transport
        if path == embeddings.PATH:
            return await embeddings.post(self.session, url, body, transport.timeouts, timing, proxy, transport.limits,
                                         headers)
        named = NAMED_EVENTS.get(path)
        keep = not self.request_defaults.drop_logprobs
        if named is not None:  # Responses, Messages: their readers read into the EventStreamState they are given
            return await stream_once(self.session, url, body, transport.timeouts, timing, proxy, transport.limits,
                                     EventStreamState(keep_logprobs=keep), named, headers, WHOLE[path])
        return await stream_once(self.session, url, body, transport.timeouts, timing, proxy, transport.limits,
                                 None if keep else StreamState(keep_logprobs=False), None, headers, None)

    def _learn_from_failure(self, exc: RequestError, timing: Timing) -> None:
        if not isinstance(exc, HTTPStatusError):
            return
        if self.hooks.quota is not None:
            self.hooks.quota.observe_headers(exc.headers)
            if exc.status_code == 429:
                self.hooks.quota.throttled()
        if exc.status_code in (429, 503) and self.hooks.adaptive is not None:
            self.hooks.adaptive.on_throttle(exc.retry_after, sent_at=timing.sent)

    def record(self, item: InputItem, stage: Stage, warmup: bool, reply: Reply) -> Record:
        return make_record(item, reply, stage=stage, warmup=warmup, model=self.model,
                           count_tokens=self.hooks.count_tokens, secrets=self.secrets,
                           scheduled_s=scheduled(item, self.replay_speed))

    def record_error(self, error: RequestError | None) -> RecordError | None:
        return record_error(error, self.secrets)

    def invalid_record(self, item: InputItem, stage: Stage, why: str | None = None) -> Record:
        return self.record(item, stage, False,
                           Reply(None, None, 0, InvalidInput(f"{item.place}: {why or item.error}"), None))


def make_record(item: InputItem, reply: Reply, *, stage: Stage, warmup: bool, model: str | None,
                count_tokens: Callable[[str], tuple[int, str]] | None, secrets: tuple[str, ...],
                scheduled_s: float | None) -> Record:
    """One line's record from what its request came to: the one place a reply becomes a Record.

    Live requests (`Sender.record`) and the answers of a provider's Batch API
    (runner/batchapi/collect.py, a `reply` without timing) are normalised
    alike: usage, finish reasons, choices, the output token count.
    """
    state, timing, error = reply.state, reply.timing, reply.error
    if isinstance(state, embeddings.Result):
        return _embedding_record(item, stage, warmup, reply, state, model, secrets, scheduled_s)
    usage = state.usage if state is not None else None
    text = state.text if state is not None else ""
    choices = _choices(state, text) if state is not None and state.others else None
    tokens, source = output_tokens(state, text, choices, count_tokens)
    if state is not None:
        reasoning, tool_calls, finish_reason = state.reasoning, state.tool_calls, state.finish_reason
        logprobs = state.logprobs
        model = state.model or (item.body or {}).get("model") or model
    else:
        reasoning = tool_calls = finish_reason = logprobs = None
        model = (item.body or {}).get("model") or model
    metrics = Metrics.from_timing(timing, tokens, source)
    metrics.reasoning_tokens = reasoning_tokens(usage, missing=None)
    metrics.scheduled_s = scheduled_s
    return Record(
        ("warmup:" + item.custom_id) if warmup else item.custom_id,
        OK if error is None else ERROR,
        text,
        reasoning,
        tool_calls,
        finish_reason,
        model,
        usage,
        metrics,
        reply.attempts,
        record_error(error, secrets),
        {"file": item.file, "line": item.line},
        timing.endpoint if timing is not None else None,
        stage.to_record(),
        warmup,
        item.path,
        reply.request_id,
        logprobs,
        choices,
        line_hash(item.raw) if item.raw else None,
        reply.parsed,
    )


def record_error(error: RequestError | None, secrets: tuple[str, ...]) -> RecordError | None:
    if error is None:
        return None
    return RecordError(error.type, error.status_code, getattr(error, "code", None), redact(error.message, secrets))


def _embedding_record(item: InputItem, stage: Stage, warmup: bool, reply: Reply, result: embeddings.Result,
                      model: str | None, secrets: tuple[str, ...], scheduled_s: float | None) -> Record:
    """Embeddings are not streamed: e2e only, the vectors and the usage kept (`result`: the reply's state)."""
    one = isinstance((item.body or {}).get("input"), str)
    metrics = Metrics.from_timing(reply.timing, None, None)
    metrics.ttft_s = metrics.ttfb_s = metrics.ttfat_s = None  # no stream: nothing comes first
    metrics.itl_s = []
    metrics.scheduled_s = scheduled_s
    return Record(
        ("warmup:" + item.custom_id) if warmup else item.custom_id,
        OK if reply.error is None else ERROR,
        model=result.model or (item.body or {}).get("model") or model,
        usage=result.usage,
        metrics=metrics,
        attempts=reply.attempts,
        error=record_error(reply.error, secrets),
        source={"file": item.file, "line": item.line},
        endpoint=reply.timing.endpoint if reply.timing is not None else None,
        stage=stage.to_record(),
        warmup=warmup,
        request_url=item.path,
        request_id=reply.request_id,
        request_hash=line_hash(item.raw) if item.raw else None,
        embedding=result.vectors[0] if one and result.vectors else None,
        embeddings=None if one else result.vectors,
    )


async def only_model(session: aiohttp.ClientSession, urls: list[str], proxies: dict[str, str | None],
                     secrets: tuple[str, ...], headers: Mapping[str, str] | None = None,
                     network: Network | None = None, timeout: float | None = None) -> str:
    """The model of a run that names none: the server's only one (GET /models, the first base URL that answers).

    A server with several models, or none, stops the run with exit 2 before
    anything is spent, listing what it serves; one that cannot be reached,
    or answers with a web page instead of the API, says so in one line (a
    TLS server that refused this client, as it says: `Network.explain`).
    """
    unreachable = []
    for url in urls:
        shown = public_url(url)
        try:
            models = await list_models(session, url, proxy=proxies.get(url), headers=headers)
        except ConnectError as exc:
            problem = await network.explain(url, timeout) if network and network.may_explain(url, exc) else None
            unreachable.append(f"{shown}: {redact(str(problem) if problem else exc.reason, secrets)}")
            continue
        except RequestError as exc:
            message = redact(exc.message, secrets)
            if message.endswith(NOT_THE_API):
                raise UsageError(f"GET /models at {shown}: {message}") from None
            raise UsageError(f"no --model given, and {shown} did not list its models ({message}): "
                             "pass --model") from None
        if len(models) != 1:
            listed = ", ".join(models[:20]) + (" ..." if len(models) > 20 else "") if models else "none"
            raise UsageError(f"no --model given, and {shown} serves {len(models)} models ({listed}): "
                             "pass --model NAME")
        log.info("no --model given: using %s, the one model %s serves", models[0], shown)
        return models[0]
    raise UsageError("cannot connect to " + "; nor to ".join(unreachable))


def sent_path(item: InputItem) -> str:
    """The API path a line is sent to; an invalid line has none and is answered at once, never sent (the loop)."""
    if item.path is None:
        raise ValueError(f"{item.place}: an invalid line is not sent ({item.error})")
    return item.path


def scheduled(item: InputItem, replay_speed: float | None) -> float | None:
    """--replay: when the trace sent this line, in this run's time (seconds from the stage's start)."""
    if item.timestamp_ms is None or replay_speed is None:
        return None
    return item.timestamp_ms / 1000.0 / replay_speed


def output_tokens(state: StreamState | None, text: str, choices: list[Choice] | None,
                  count: Callable[[str], tuple[int, str]] | None) -> tuple[int | None, str | None]:
    """The output's token count and where it came from: usage, else the tokenizer, else the events."""
    usage = state.usage if state is not None else None
    completion = usage.get("completion_tokens") if usage else None
    if type(completion) is int:  # usage counts every choice
        return completion, "usage"
    if state is not None and state.text_events:  # so do the events: any choice's output
        counted = _tokenizer_count(count, text, choices)
        if counted is not None and counted[1] == "tokenizer":
            return counted
        return state.text_events, "events"
    return None, None


def _choices(state: StreamState, text: str) -> list[Choice]:
    """Every choice of an `n > 1` reply, in index order; choice 0 is the state's own fields (`text`: its text)."""
    others = state.others or {}
    return [Choice(0, text, state.reasoning, state.tool_calls, state.finish_reason, state.logprobs),
            *(Choice(c.index, c.text, c.reasoning, c.tool_calls, c.finish_reason, c.logprobs)
              for c in (others[i] for i in sorted(others)))]


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
