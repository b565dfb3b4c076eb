"""The parent's engine for --workers N: it reads and writes; worker processes send.

Why an Engine subclass: the run (`runner.run.Run`) keeps everything it does
with one process (preflight, lock, plan and resume, the one ResultWriter,
statistics, progress, summary, signals) and talks to its engine only
through the Engine's surface.  `WorkerPool` keeps that surface and the
Engine's own stage loop (warm-up, stages, the sweep's rates, the
rejection guard, the write path `_emit`/`_write`); what differs is one
stage (`_run_stage_inner`), which here is a *phase* across workers:

1. every worker that has a share of the stage (`shapes.worker_stage`) is
   told its share and a common start a moment ahead (time.perf_counter is
   CLOCK_MONOTONIC, the same clock in every process), so arrivals and
   `--replay` timestamps count from one start;
2. the parent feeds the stage's items, each to the worker with the most
   room (at most `shapes.window` items held per worker: memory stays
   flat), applying --num-prompts and --duration as the engine would
   (--duration's deadline is one time.perf_counter value, which every
   worker's engine keeps as well: no request starts after it);
3. each record that comes back goes through the Engine's own `_emit`:
   the rejection guard, the writer, the statistics and progress hooks;
4. the stage ends when every worker has finished its part (a barrier), so
   a sweep's stages never overlap.

A worker that dies (kill -9, OOM) costs only what it held: the parent sees
its socket close, logs it, counts the items it held as unanswered (no
record: `--resume` sends them again), and the run goes on with the others
and ends with exit 1.  The stage it died in runs short of its load from
then on, and is marked degraded (`degraded_stages` in the summary's
`workers`; `"degraded": true` in the stage of the records written after
the death; the report's tables); every later stage splits over the
workers left, so it runs at its whole load under its label.  On SIGINT/SIGTERM (`stop`) every worker drains as a
single-process run does; one that outlives the drain timeout by
`KILL_GRACE_S` is killed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import anyio

from ..config.run_config import LoadConfig, RunConfig, Stage
from ..engine.answers import Answers
from ..engine.guards import ConnectGuard, RejectionGuard
from ..engine.hooks import EngineHooks
from ..engine.loop import Engine, Items, RecordSink
from ..engine.result import EngineResult
from ..errors import EXIT_FAILED, RunError
from ..inputs.items import aiter_items
from ..outputs.writer import Prior
from ..record import Record
from ..stream.headers import Credentials
from ..stream.network import Network
from .handle import WorkerHandle
from .quota import QuotaGrants
from .shapes import ramp_start, worker_config, worker_stage
from .wire import record_of

log = logging.getLogger("streamrun")

PHASE_LEAD_S = 0.05  # a stage's common start, this far ahead: time for every worker to hear of it
START_TIMEOUT_S = 120.0  # a worker that is not ready by then (imports on a loaded machine) failed to start
EXIT_TIMEOUT_S = 60.0  # after the last stage: time to close the response cache and report
KILL_GRACE_S = 10.0  # past the drain timeout, a worker still draining is killed


class WorkerFailed(RunError):
    """A worker could not start; nothing was sent (exit 2)."""


class WorkerDied(RunError):
    """A worker ended before its work did: what it held has no record, and --resume sends it again (exit 1)."""

    exit_code = EXIT_FAILED


class WorkerPool(Engine):
    """Engine's surface and stage loop; each stage's requests sent by `cfg.load.workers` processes.

    Built as the Engine is, from the whole run's config (each worker is sent
    its own, `shapes.worker_config`); `connections` is each worker's cap.
    """

    def __init__(self, cfg: RunConfig, *, creds: Credentials, hooks: EngineHooks, writer: RecordSink,
                 answers: Answers, prior: Prior, connections: int | None = None, network: Network | None = None
                 ) -> None:
        # The parent sends nothing: one connection for its session, and no guard on connections of its own
        # (each worker's watches its own attempts); the rejection guard sees every answer, as in one process.
        # Each worker builds its own network (TLS context, proxies) from the transport settings it is sent.
        super().__init__(cfg.transport, cfg.request, cfg.checks, creds=creds, hooks=hooks, writer=writer,
                         answers=answers, prior=prior, guard=RejectionGuard(), reach=ConnectGuard(armed=False),
                         connections=1, network=network)
        self.cfg = cfg
        self.worker_connections = connections
        self.handles = [WorkerHandle(i) for i in range(cfg.load.workers)]
        self.lost_in_flight = 0  # requests that workers which died had in flight (their last report)
        self._changed = asyncio.Event()  # any worker's state changed: a record, a stage done, a death
        self._stage_record: dict | None = None
        self._stage: Stage | None = None  # the stage of the phase running (None: none, or the warm-up)
        self._degraded_record: dict | None = None  # the stage's record once a worker died in it
        self.degraded: list[dict] = []  # the stages a worker died in (the summary's workers.degraded_stages)
        self._lines: dict[int, bytes] = {}  # id(record) -> its results line, until `_put` writes it
        self._stopped_at: float | None = None
        self._adaptive = AdaptiveTotals(self.handles) if hooks.adaptive is not None else None

    @property
    def adaptive(self) -> AdaptiveTotals | None:
        """The workers' adaptive concurrency added up, for the display and the summary."""
        return self._adaptive

    # -- Engine's surface

    def stop(self) -> None:
        """First signal, a failed disk, a tripped guard: every worker stops taking items and drains."""
        if self._stopped_at is None:
            self._stopped_at = time.perf_counter()
        super().stop()
        for handle in self.handles:
            handle.stop()
        self._changed.set()

    def abort(self, error: RunError) -> None:
        if self.fatal is None:
            self.fatal = error
        self.stop()

    async def run(self, load: LoadConfig, stage_items: Callable[[Stage], Items], warmup_items: Items | None = None,
                  *, deadline: float | None = None) -> EngineResult:
        try:
            async with anyio.create_task_group() as tg:
                await self._start(tg)
                await super().run(load, stage_items, warmup_items)  # the stages, each a phase (_run_stage_inner)
                await self._shutdown()
                tg.cancel_scope.cancel()  # quota grants still waiting
        finally:
            for handle in self.handles:  # a crash or a cancelled run: no worker outlives it
                handle.kill()
        self._totals()
        return self.result

    def section(self, parent_lag: dict) -> dict:
        """The summary's `workers`: per worker, what it sent and answered, how it ended, its event-loop lag;
        and this process's lag (it feeds and writes: a busy parent slows every worker)."""
        return {"count": len(self.handles), "parent_event_loop_lag": parent_lag,
                "processes": [h.section() for h in self.handles], "degraded_stages": self.degraded}

    def worker_timing(self) -> list[list[dict]]:
        """Each worker's loop lag and CPU per stage (runner/observe/client_timing.py): they stamped the requests."""
        return [h.timing for h in self.handles]

    def lag_summary(self) -> dict:
        """The summary's `event_loop_lag`: the workers' loops, which timed the requests, taken together."""
        lags = [h.lag for h in self.handles if h.lag and h.lag.get("samples")]
        samples = sum(lag["samples"] for lag in lags)
        if not samples:
            return {"samples": 0, "mean_s": 0.0, "max_s": 0.0, "share_over_10ms": 0.0}
        return {"samples": samples, "mean_s": sum(lag["mean_s"] * lag["samples"] for lag in lags) / samples,
                "max_s": max(lag["max_s"] for lag in lags),
                "share_over_10ms": sum(lag["share_over_10ms"] * lag["samples"] for lag in lags) / samples}

    # -- start and end

    async def _start(self, tg) -> None:
        """Start every worker and wait until each is ready; one that cannot start stops the run before any request."""
        settings = _log_settings()
        for h in self.handles:
            try:
                await h.spawn()
            except OSError as exc:
                self.abort(WorkerFailed(f"cannot start worker {h.index}: {exc}"))
                break
            tg.start_soon(h.read, self)
            if self.hooks.quota is not None:
                h.quota = QuotaGrants(self.hooks.quota, h.linked(), tg)
            h.init({"index": h.index, "cfg": worker_config(self.cfg, h.index, len(self.handles)),
                    "creds": self.creds, "log": settings, "connections": self.worker_connections})
        spawned = [h for h in self.handles if h.proc is not None]
        started = await self._until(lambda: all(h.ready.is_set() or h.gone.is_set() for h in spawned),
                                    START_TIMEOUT_S)
        late = [h for h in spawned if not h.ready.is_set()]
        for h in late:
            h.kill()
        if late:
            why = "did not start in time" if not started else "ended before it was ready"
            self.abort(WorkerFailed(f"worker {late[0].index} {why}: see its error above"))
        if self.fatal is None:
            log.info("%d workers sending (pids %s); this process reads the inputs and writes the records",
                     len(self.handles), ", ".join(str(h.pid) for h in self.handles))

    async def _shutdown(self) -> None:
        for h in self.handles:
            h.exit()
        if not await self._until(lambda: all(h.gone.is_set() for h in self.handles if h.proc), EXIT_TIMEOUT_S):
            for h in self.handles:
                if not h.gone.is_set():
                    log.error("worker %d did not end when told: killed", h.index)
                    h.kill()
            await self._until(lambda: all(h.gone.is_set() for h in self.handles if h.proc), None)

    def _totals(self) -> None:
        """The run's counters from the workers' last reports."""
        result = self.result
        result.sent = sum(h.counters.get("sent", 0) for h in self.handles)
        result.cancelled = sum(h.counters.get("cancelled", 0) for h in self.handles) + self.lost_in_flight
        self.reach.dropped = sum(h.counters.get("unreached", 0) for h in self.handles)
        merged = _merged_endpoints([h.counters.get("endpoints") or [] for h in self.handles])
        result.endpoints = merged or result.endpoints  # none reported: the parent's list, all zero
        cache = self.answers.cache
        if cache is not None:
            for h in self.handles:
                for name, n in (h.cache or {}).items():
                    setattr(cache.stats, name, getattr(cache.stats, name) + n)

    # -- one stage across the workers

    async def _run_stage_inner(self, load: LoadConfig, stage: Stage, items: Items, warmup: bool,
                               deadline: float | None) -> None:
        alive = [h for h in self.handles if h.alive]  # a dead worker's share goes to those left
        phase = [(h, s) for i, h in enumerate(alive) for s in [worker_stage(stage, i, len(alive))] if s is not None]
        if self.stopping.is_set() or not phase:
            return
        if len(alive) < len(self.handles) and not warmup:
            log.warning("%s runs on the %d workers left of %d, each with a larger share", _named(stage),
                        len(alive), len(self.handles))
        self._stage_record = stage.to_record()  # records carry the stage, not a worker's share of it
        self._stage, self._degraded_record = (None if warmup else stage), None
        limit = load.warmup if warmup else load.num_prompts
        if not warmup and limit is not None:  # --num-prompts counts the whole output, earlier runs included
            limit = max(0, limit - self.prior.sent(stage.label))
        start = time.perf_counter() + PHASE_LEAD_S
        deadline = self.stage_deadline(load, stage, warmup, start)  # one deadline, the same in every worker
        handles = [h for h, _ in phase]
        ramp = ramp_start(load, len(alive))
        for h, share in phase:
            h.begin_phase(share, warmup, start, deadline, self._stage_record, ramp)
        feeder = asyncio.ensure_future(self._feed(handles, items, limit, deadline))
        stopped = asyncio.ensure_future(self.stopping.wait())
        try:  # a stop or the deadline ends the feeding at once, even while a pipe's next line has not come
            await asyncio.wait([feeder, stopped], return_when=asyncio.FIRST_COMPLETED,
                               timeout=None if deadline is None else max(0.0, deadline - time.perf_counter()))
            if feeder.done():
                feeder.result()  # re-raise a crash
        finally:
            stopped.cancel()
            feeder.cancel()
            await asyncio.gather(feeder, stopped, return_exceptions=True)
            for h in handles:
                h.end_items()
        await self._phase_over(handles, load.drain_timeout_s)

    async def _feed(self, handles: list[WorkerHandle], items, limit: int | None, deadline: float | None) -> None:
        """Each item to the worker with the most room, as the engine's producer takes them."""
        source = items if hasattr(items, "__aiter__") else aiter_items(items)
        sent = 0
        async for item in source:
            if self.stopping.is_set():
                break
            if item.error is None:  # invalid lines are answered (by a worker) without a request
                if limit is not None and sent >= limit:
                    break
                if deadline is not None and time.perf_counter() >= deadline:
                    break
                sent += 1
            handle = await self._room(handles)
            if handle is None:
                break
            handle.send_item(item)
            await handle.linked().drain()

    async def _room(self, handles: list[WorkerHandle]) -> WorkerHandle | None:
        """The worker holding the least for its share; None when none takes items any more."""
        while not self.stopping.is_set():
            open_ = [h for h in handles if h.accepting]
            if not open_:
                return None
            best = min(open_, key=lambda h: h.outstanding / h.window)
            if best.outstanding < best.window:
                return best
            await self._next_change(None)
        return None

    async def _phase_over(self, handles: list[WorkerHandle], drain_timeout_s: float) -> None:
        """Until every worker finished its part; after a stop, one that outlives the drain is killed."""
        killed = False
        while not all(h.phase_over.is_set() for h in handles):
            timeout = None
            if self._stopped_at is not None and not killed:
                timeout = self._stopped_at + drain_timeout_s + KILL_GRACE_S - time.perf_counter()
                if timeout <= 0:
                    for h in handles:
                        if not h.phase_over.is_set():
                            log.error("worker %d still busy %gs after the drain timeout: killed", h.index, KILL_GRACE_S)
                            h.kill()
                    killed, timeout = True, None
            await self._next_change(timeout)

    async def _until(self, condition: Callable[[], bool], timeout: float | None) -> bool:
        """Wait for `condition` (checked again at each change) at most `timeout` seconds; whether it holds."""
        deadline = None if timeout is None else time.perf_counter() + timeout
        while not condition():
            left = None if deadline is None else deadline - time.perf_counter()
            if left is not None and left <= 0:
                return False
            await self._next_change(left)
        return True

    async def _next_change(self, timeout: float | None) -> None:
        """Until a worker's state changes (or `timeout`); callers check what they wait for again."""
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            pass

    # -- what the workers say (handle.Listener)

    def on_record(self, handle: WorkerHandle, payload: bytes) -> None:
        record = record_of(payload)  # it carries the stage, not the worker's share of it (child.RecordPipe)
        if self._degraded_record is not None and record.stage is not None:
            record.stage = self._degraded_record  # encoded again: the line as it came does not say so
        else:
            self._lines[id(record)] = payload  # written as the worker encoded it: one encode per record, not two
        handle.outstanding = max(0, handle.outstanding - 1)
        handle.records += 1
        self._emit(record)  # the guard, the writer, stats and progress: as with one process
        self._changed.set()

    def _put(self, record: Record) -> None:
        self.writer.put(record, self._lines.pop(id(record), None))

    def on_change(self) -> None:
        self.in_flight = sum(h.counters.get("in_flight", 0) for h in self.handles if h.alive)
        self._changed.set()

    def on_fatal(self, handle: WorkerHandle, msg: dict) -> None:
        error = RunError(msg["message"])
        error.exit_code = msg["exit_code"]
        self.abort(error)

    def on_gone(self, handle: WorkerHandle) -> None:
        if handle.quota is not None:
            handle.quota.cancel_all()
        if not handle.finished and handle.ready.is_set():
            handle.unanswered, handle.outstanding = handle.outstanding, 0
            self.lost_in_flight += handle.counters.get("in_flight", 0)
            left = sum(h.alive for h in self.handles)
            log.error("worker %d (pid %s) %s; the run goes on with %d", handle.index, handle.pid,
                      handle.how_it_ended(), left)
            if self.fatal is None:
                self.fatal = WorkerDied(f"worker {handle.index} {handle.how_it_ended()}: the {handle.unanswered} "
                                        "items it held have no record, and --resume sends them again")
            if handle.in_phase and self._stage is not None:
                self._degrade(handle, self._stage, left)
            if not left:
                self.stop()
        self.on_change()

    def _degrade(self, handle: WorkerHandle, stage: Stage, left: int) -> None:
        """A worker died mid-stage: the stage runs short of its load from now on; say so wherever it is reported."""
        if self.degraded and self.degraded[-1]["index"] == stage.index:
            self.degraded[-1]["workers_died"].append(handle.index)
        else:
            self.degraded.append({"index": stage.index, "label": stage.label, "workers_died": [handle.index]})
        if self._stage_record is not None:
            self._degraded_record = {**self._stage_record, "degraded": True}
        log.warning("%s is degraded: it goes on with %d of its %d workers, short of its load; later stages split "
                    "over the workers left", _named(stage), left, len(self.handles))


class AdaptiveTotals:
    """The workers' adaptive concurrency added up: each adapts its share of -c to the 429s it sees."""

    def __init__(self, handles: list[WorkerHandle]) -> None:
        self._handles = handles

    def _sum(self, key: str) -> int:
        return sum((h.counters.get("adaptive") or {}).get(key, 0) for h in self._handles)

    @property
    def limit(self) -> int:
        return sum((h.counters.get("adaptive") or {}).get("limit", 0) for h in self._handles
                   if h.alive or h.finished)

    @property
    def min_limit_seen(self) -> int:
        return self._sum("min_seen")

    @property
    def throttles(self) -> int:
        return self._sum("throttles")

    @property
    def decreases(self) -> int:
        return self._sum("decreases")


def _named(stage: Stage) -> str:
    return f"stage {stage.label}" if stage.label else "the run"


def _merged_endpoints(reports: list[list[dict]]) -> list[dict]:
    """Each endpoint's requests and failures added up over the workers, in the run's order."""
    merged: dict[str, dict] = {}
    for report in reports:
        for e in report:
            m = merged.setdefault(e["url"], {"url": e["url"], "requests": 0, "failures": 0})
            m["requests"] += e["requests"]
            m["failures"] += e["failures"]
    return list(merged.values())


def _log_settings() -> dict:
    """How the parent logs, for the workers to log the same way (to the same stderr)."""
    from ..observe.progress import json_logs

    return {"json": json_logs(), "level": log.getEffectiveLevel()}
