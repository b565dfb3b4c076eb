"""The loop: pull inputs, shape the load, run requests, hand records to the writer.

A fixed pool of worker tasks (one per concurrency slot) pulls from a small
bounded queue, so memory is flat however long the input is: never one task
per line.  With a rate, a producer releases items at Poisson (or gamma)
arrival times computed on an absolute schedule (open loop: slow responses do
not slow arrivals; the lag shows up as `queue_s`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, Protocol

import aiohttp

from ..config.run_config import ChecksConfig, LoadConfig, RequestConfig, Stage, TransportConfig
from ..errors import AuthRejected, RunError, Unreachable
from ..inputs.items import InputItem, aiter_items
from ..outputs.writer import Prior
from ..record import Record
from ..stream.connection import session_connector
from ..stream.endpoints import EndpointPool
from ..stream.errors import PastDeadline
from ..stream.headers import Credentials
from ..stream.network import Network
from .answers import Answers
from .guards import ConnectGuard, RejectionGuard
from .hooks import EngineHooks
from .quota import AdaptiveFigures
from .result import EngineResult
from .schedule import arrival_gaps, ramped_gaps, replay_offset, sweep_rates, worker_start_offsets
from .send import Sender
from .session import run_session

_STOP = object()
log = logging.getLogger("streamrun")

Items = Iterator[InputItem] | AsyncIterator[InputItem]  # a file's lines, or a pipe's as they come


class RecordSink(Protocol):
    """Where the engine's records go: the results file's writer, or a worker's pipe to its parent.
    `line`: the record as its results line, when the caller has it already."""

    def put(self, record: Record, line: bytes | None = None) -> None: ...


class Engine:
    """Sends the stages of a load and hands each record to its writer.

    Built in one step with everything it works with: the settings of the
    transport, the requests and their checks; the credentials, the hooks, the
    writer, the answers (the response cache), what the output held before this
    run (`prior`: --num-prompts and --duration count the whole output), the
    guards, and the random numbers of the arrival times (`rng`, seeded by
    --seed).  `run` is given the load to send: a run's whole load, or a
    worker's share of one stage (runner/workers/child.py).  `connections`
    caps the connections a run may open (the open-file limit); `on_abort`
    hears the first run-level error as it happens; `network` is how the
    servers are reached (TLS settings and proxies: runner/stream/network.py).
    """

    def __init__(self, transport: TransportConfig, request: RequestConfig, checks: ChecksConfig, *,
                 creds: Credentials, hooks: EngineHooks, writer: RecordSink, answers: Answers, prior: Prior,
                 guard: RejectionGuard | None = None, reach: ConnectGuard | None = None,
                 connections: int | None = None, on_abort: Callable[[RunError], None] | None = None,
                 rng: random.Random | None = None, network: Network | None = None) -> None:
        self.transport = transport
        self.request = request
        self.checks = checks
        self.creds = creds
        self.hooks = hooks
        self.writer = writer
        self.answers = answers
        self.prior = prior
        self.pool = EndpointPool(list(transport.base_urls))
        self.guard = guard if guard is not None else RejectionGuard()
        # Was the server ever reachable?
        self.reach = reach if reach is not None else ConnectGuard(tuple(e.url for e in self.pool.endpoints))
        self.connections = connections
        self.on_abort = on_abort
        self.rng = rng if rng is not None else random.Random()  # the arrival times', seeded by --seed
        # TLS settings and proxies (runner/stream/network.py): the run's, or else the transport's own
        self.network = network if network is not None else Network.from_config(transport)
        self.stopping = asyncio.Event()
        self.in_flight = 0
        self._busy: set[asyncio.Task] = set()  # workers with a request in flight
        self.result = EngineResult()
        self.fatal: RunError | None = None  # why the run stopped on its own, with its exit code
        self.sender: Sender | None = None  # once the session is open

    @property
    def adaptive(self) -> AdaptiveFigures | None:
        """The adaptive concurrency the progress display and the summary show (None: --no-adaptive)."""
        return self.hooks.adaptive

    def stop(self) -> None:
        """First signal: stop reading, let in-flight requests drain."""
        self.stopping.set()

    def abort(self, error: RunError) -> None:
        """Stop sending because the run as a whole cannot succeed; in-flight requests drain."""
        first = self.fatal is None
        if first:
            self.fatal = error
        self.stopping.set()
        if first and self.on_abort is not None:
            self.on_abort(error)

    async def run(self, load: LoadConfig, stage_items: Callable[[Stage], Items], warmup_items: Items | None = None,
                  *, deadline: float | None = None) -> EngineResult:
        """Send `load`'s stages (its warm-up first), each stage's items from `stage_items`.

        `deadline`: a time.perf_counter value from which no stage starts a
        request, the same for every worker (the parent's --duration); None:
        each stage's own, from the load's --duration.
        """
        # Fewer connections than -c when the open-file limit allows no more (runner/workers/openfiles.py).
        capped = self.connections is not None and self.connections < load.max_concurrency
        limit = self.connections if capped else load.max_concurrency
        # A connector that times the connections it opens (metrics.connect_s) without aiohttp's
        # per-request tracing (about 20 us a request); plain tracing where it cannot.
        connector, traces = session_connector(limit=limit, limit_per_host=0,
                                              ttl_dns_cache=300, enable_cleanup_closed=True,
                                              ssl=self.network.connector_ssl())
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.transport.timeouts.connect)
        try:
            async with aiohttp.ClientSession(connector=connector, timeout=timeout, headers=self.creds.headers,
                                             auto_decompress=True, trace_configs=traces) as session:
                self.sender = Sender(session, self.transport, self.request, self.checks, creds=self.creds,
                                     hooks=self.hooks, pool=self.pool, answers=self.answers, result=self.result,
                                     reach=self.reach, network=self.network, abort=self.abort,
                                     connections=limit if capped else None,
                                     replay_speed=load.replay_speed if load.replay else None)
                first = load.stages[0]
                if warmup_items is not None and load.warmup:
                    await self._run_stage(load, first, warmup_items, True, deadline)
                stages = list(load.stages)
                while stages:
                    stage = stages.pop(0)
                    if self.stopping.is_set():
                        break
                    await self._run_stage(load, stage, stage_items(stage), False, deadline)
                    if load.sweep and stage.index == 1:  # both ends measured: the rates between them
                        stages = self._sweep_stages(load, stage)
        finally:
            never = self.reach.finish()  # nothing ever connected: what failed to connect is not written
            if never is not None:
                self.abort(Unreachable(never))
            for record in self.reach.release():
                self._emit(record)
            for record in self.guard.release():
                self._write(record)
            self.result.endpoints = self.pool.stats()
        self.result.interrupted = self.stopping.is_set()
        return self.result

    def _sweep_stages(self, load: LoadConfig, throughput: Stage) -> list[Stage]:
        """--rate sweep: the constant-rate stages between the synchronous and the maximum rate just measured."""
        sync, peak = (self.result.stage_rates.get(i, 0.0) for i in (0, 1))
        rates = sweep_rates(sync, peak, load.sweep_points)
        self.result.sweep = {"synchronous_rps": sync, "max_rps": peak, "rates": rates}
        log.info("sweep: synchronous %.3g req/s, maximum %.3g req/s; running %d rates between them",
                 sync, peak, len(rates))
        return [Stage(2 + i, throughput.concurrency, r, f"rate={r:g}") for i, r in enumerate(rates)]

    async def _run_stage(self, load: LoadConfig, stage: Stage, items: Items, warmup: bool,
                         deadline: float | None) -> None:
        started, done_before = time.perf_counter(), self.result.completed
        self.hooks.on_stage(stage, warmup, True)
        await self._run_stage_inner(load, stage, items, warmup, deadline)
        self.hooks.on_stage(stage, warmup, False)
        elapsed = time.perf_counter() - started
        if not warmup and elapsed > 0:
            self.result.stage_rates[stage.index] = (self.result.completed - done_before) / elapsed

    def _open_sender(self) -> Sender:
        """The sender of the session `run` opened: the stages are sent inside it."""
        if self.sender is None:
            raise RuntimeError("a stage is sent only inside Engine.run")
        return self.sender

    def stage_deadline(self, load: LoadConfig, stage: Stage, warmup: bool, start: float) -> float | None:
        """--duration: the time.perf_counter value from which the stage starts no request; None without one.

        --duration counts the whole output: what earlier runs spent on this
        stage (outputs.Prior, on --resume) is taken off.
        """
        if warmup or load.duration_s is None:
            return None
        return start + max(0.0, load.duration_s - self.prior.elapsed(stage.label))

    async def _run_stage_inner(self, load: LoadConfig, stage: Stage, items: Items, warmup: bool,
                               deadline: float | None) -> None:
        """The stage until its items end, a stop, or --duration's deadline.

        At the deadline no request starts any more, wherever it waits (the
        producer's schedule, the queue, quota, a retry's back-off: see
        runner/engine/send.py), and nothing is written for what did not start, so a
        rerun can send it; what is in flight drains as on a stop, cut at
        --drain-timeout.
        """
        queue: asyncio.Queue = asyncio.Queue(maxsize=max(2 * stage.concurrency, 64))
        # the concurrency ramps up (a rate, when there is one, ramps instead: _gaps)
        ramp = None if warmup or (stage.rate and not math.isinf(stage.rate)) else _ramp(load)
        offsets = (worker_start_offsets(stage.concurrency, load.ramp_up_start or 1.0, ramp[1], ramp[0])
                   if ramp is not None else [0.0] * stage.concurrency)
        begin = time.perf_counter()
        if deadline is None or warmup:
            deadline = self.stage_deadline(load, stage, warmup, begin)
        sender = self._open_sender()
        sender.start_stage(deadline)
        workers = [asyncio.create_task(self._worker(sender, queue, stage, warmup, begin + offset, deadline))
                   for offset in offsets]
        producer = asyncio.create_task(self._produce(sender, load, queue, items, stage, warmup, deadline))
        stop_wait = asyncio.create_task(self.stopping.wait())
        everything = asyncio.gather(producer, *workers)
        either: list[asyncio.Future[Any]] = [everything, stop_wait]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED,
                               timeout=None if deadline is None else max(0.0, deadline - time.perf_counter()))
            if everything.done():
                everything.result()  # re-raise a crash
                return
            producer.cancel()  # a stop, or the deadline
            for w in workers:  # idle workers wait for input that will not come: only busy ones drain
                if w not in self._busy:
                    w.cancel()
            pending = await self._drain(workers, load.drain_timeout_s)
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

    async def _drain(self, workers: list[asyncio.Task], timeout_s: float) -> set[asyncio.Task]:
        """The busy workers finish, for up to `timeout_s` (--drain-timeout); the ones still running are returned.

        A server never reached has nothing in flight worth waiting for: no backoff is waited out,
        and the guard may come to say so during the drain (a worker process stopped because
        another one's guard tripped, its own attempts failing as they end), so it is asked again
        as the drain goes on.
        """
        end = time.perf_counter() + timeout_s
        pending = set(workers)
        while pending and not self.reach.nothing_to_drain():
            left = end - time.perf_counter()
            if left <= 0:
                break
            _, pending = await asyncio.wait(pending, timeout=min(left, 0.1))
        return {w for w in pending if not w.done()}

    async def _produce(self, sender: Sender, load: LoadConfig, queue: asyncio.Queue, items: Items, stage: Stage,
                       warmup: bool, deadline: float | None) -> None:
        gaps = self._gaps(load, stage, warmup)
        replay = load.replay and not warmup
        start = time.perf_counter()
        due = start
        sent = 0
        limit = load.warmup if warmup else load.num_prompts
        if not warmup and limit is not None:  # --num-prompts counts the whole output, earlier runs included
            limit = max(0, limit - self.prior.sent(stage.label))
        source = items if hasattr(items, "__aiter__") else aiter_items(items)  # live inputs come async
        async for item in source:
            if self.stopping.is_set():
                break
            if item.error is not None:  # invalid lines are answered at once, no request
                self._emit(sender.invalid_record(item, stage))
                continue
            if limit is not None and sent >= limit:
                break
            if replay:  # at the trace's own time, open loop
                due = start + replay_offset(item.timestamp_ms, due - start, load.replay_speed)
            elif sent:  # the first request goes at once, then the gaps (as vLLM's benchmark does)
                due += next(gaps)
            if deadline is not None and max(due, time.perf_counter()) >= deadline:
                break  # it would start after --duration's deadline
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent += 1
            await queue.put((item, due if (stage.rate or replay) else None))
        for _ in range(stage.concurrency):
            await queue.put(_STOP)

    def _gaps(self, load: LoadConfig, stage: Stage, warmup: bool) -> Iterator[float]:
        rate = None if warmup else stage.rate
        ramp = _ramp(load)
        if ramp is not None and rate is not None and not math.isinf(rate):
            return ramped_gaps(rate, load.ramp_up_start or 1.0, ramp[1], ramp[0], load.burstiness, self.rng)
        return arrival_gaps(rate, load.burstiness, self.rng)

    async def _worker(self, sender: Sender, queue: asyncio.Queue, stage: Stage, warmup: bool, start_at: float = 0.0,
                      deadline: float | None = None) -> None:
        task = asyncio.current_task()
        if task is None:  # it runs as a task of _run_stage_inner's
            raise RuntimeError("a worker runs in a task")
        delay = start_at - time.perf_counter()
        if delay > 0:  # a concurrency ramp-up: this worker joins later
            await asyncio.sleep(delay)
        while True:
            if self.stopping.is_set() or (deadline is not None and time.perf_counter() >= deadline):
                return  # (an item it would take now would not be sent: it stays for a rerun)
            entry = await queue.get()
            if entry is _STOP or self.stopping.is_set() or (deadline is not None and time.perf_counter() >= deadline):
                return
            item, due = entry
            self._busy.add(task)
            self.in_flight += 1
            try:
                if item.session is not None:
                    record = await run_session(sender, item, due, stage, warmup)
                else:
                    record = await sender.process(item, due, stage, warmup)
            except RunError as exc:  # e.g. no model could be found: nothing was sent for this item
                self.abort(exc)
                return
            except PastDeadline:  # the deadline came while it waited for quota or a slot: not sent, no record
                return
            finally:
                self.in_flight -= 1
                self._busy.discard(task)
            self._emit(record)

    def _emit(self, record: Record) -> None:
        for connected in self.reach.offer(record):  # held while no attempt has connected yet
            self._emit_answered(connected)

    def _emit_answered(self, record: Record) -> None:
        ready, tripped = self.guard.offer(record)
        for r in ready:
            self._write(r)
        if tripped is not None:
            self.abort(AuthRejected(
                f"stopped: the first {self.guard.limit} answers were all HTTP 401/403/404 or web pages ({tripped}); "
                f"check the key (${self.transport.key_env}), --base-url and --model. Nothing was written "
                "for those requests, so a rerun sends them again"))

    def _write(self, record: Record) -> None:
        self.result.completed += 1
        self._put(record)
        if self.hooks.on_record is not None:
            self.hooks.on_record(record)

    def _put(self, record: Record) -> None:
        self.writer.put(record)


def _ramp(load: LoadConfig) -> tuple[str, float] | None:
    """--ramp-up's kind and --ramp-up-duration (LoadConfig takes them only together); None without a ramp."""
    if load.ramp_up is None or load.ramp_up_duration_s is None:
        return None
    return load.ramp_up, load.ramp_up_duration_s
