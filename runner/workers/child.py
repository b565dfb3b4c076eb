"""A worker's main: the unchanged Engine, fed items from the parent's socket, its records sent back.

Started by the parent (`handle.py`) as `python -m runner.workers.child FD
INDEX`, with its own event loop (uvloop where installed) and its own
aiohttp connection pool.  It reads nothing and writes no file: its writer
sends each record to the parent, which alone writes the results.  It
ignores SIGINT and SIGTERM (Ctrl-C reaches the whole process group, and
systemd signals the whole unit): it drains when the parent says STOP and
exits when the parent says EXIT, or at once when the parent's end of the
socket closes (the parent died: nobody would write its records).

Each stage is one `Engine.run` with the worker's share of the stage (a
fresh connection pool per stage), started at the common start the parent
gave.  The engine's own rejection guard is off: the parent's sees every
answer.  A run-level error (no --model and several served) is told to the
parent at once, which stops every worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import socket
import sys
import time

import anyio

from ..aio import loop_factory
from ..engine.answers import Answers
from ..engine.loop import Engine, EngineHooks
from ..errors import RunError
from ..engine.guards import RejectionGuard
from ..observe.client_timing import LagMonitor, StageTimer
from ..observe.tracing import RequestTracer
from ..engine.hooks import open_cache, quota_hooks
from .quota import QuotaClient
from .wire import Kind, Link, item_of, record_bytes, unpack

HEARTBEAT_S = 0.25  # how often the parent hears what is in flight (the progress display, the drain log)
EXIT_ORPHANED = 70  # the parent is gone
_END = object()


class RecordPipe:
    """The worker's writer: each record to the parent, which alone writes the results file.

    A record's `stage` is the whole stage's (the parent's, from PHASE), not
    this worker's share of it: the parent writes the line as it comes.
    """

    def __init__(self, link: Link) -> None:
        self.link = link
        self.stage_record: dict | None = None

    def put(self, record) -> None:
        if record.stage is not None:
            record.stage = self.stage_record
        self.link.send(Kind.RECORD, record_bytes(record))


class WorkerEngine(Engine):
    """The Engine, except that a run-level failure is told to the parent at once, and the stage's
    --duration deadline is the parent's (one time.perf_counter value for every worker)."""

    def __init__(self, *args, on_abort, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.on_abort = on_abort
        self.phase_deadline: float | None = None

    def stage_deadline(self, stage, warmup: bool, start: float) -> float | None:
        return None if warmup else self.phase_deadline

    def abort(self, error: RunError) -> None:
        first = self.fatal is None
        super().abort(error)
        if first:
            self.on_abort(error)


class Worker:
    def __init__(self, link: Link, init: dict) -> None:
        self.link = link
        self.cfg = init["cfg"]
        hooks = EngineHooks()
        quota_hooks(self.cfg, hooks)  # token counting and adaptive concurrency as the parent's would be
        # --otlp-endpoint: this process's spans, exported by it under the parent's service name (same environment)
        self.tracer = hooks.tracer = RequestTracer.from_config(self.cfg)
        self.quota = None
        if hooks.quota is not None:  # one budget for all workers: the parent grants
            self.quota = hooks.quota = QuotaClient(link, self.cfg.tpm)
        self.pipe = RecordPipe(link)
        self.engine = WorkerEngine(self.cfg, headers=init["headers"], writer=self.pipe, hooks=hooks,
                                   secrets=init["secrets"], auth=init["auth"], on_abort=self._tell_fatal,
                                   connector_limit=init.get("connections"))
        self.engine.guard = RejectionGuard(armed=False)  # the parent's guard sees every answer
        self.timer = StageTimer()  # its loop lag and CPU per stage, told to the parent with PHASE_DONE
        self.lag = LagMonitor(on_sample=self.timer.sample)
        self.items: asyncio.Queue = asyncio.Queue()  # bounded by the parent's window
        self.control: asyncio.Queue = asyncio.Queue()  # PHASE messages; None: EXIT
        self._ended = True  # the current stage's END was read

    async def run(self) -> None:
        cache = await open_cache(self.cfg)
        self.engine.answers = Answers(cache)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._listen)
                tg.start_soon(self.lag.run)
                tg.start_soon(self._heartbeat)
                self.link.send(Kind.READY)
                while (phase := await self.control.get()) is not None:
                    await self._phase(phase)
                    self.link.send_json(Kind.PHASE_DONE, {**self._counters(), "timing": self.timer.wire()})
                    await self._skip_to_end()
                tg.cancel_scope.cancel()
        finally:
            if cache is not None:
                await cache.aclose()
            if self.tracer is not None:  # before DONE: the parent ends this process once it has it
                await self.tracer.aclose()
        self.link.send_json(Kind.DONE, {**self._counters(), "lag": self.lag.summary(),
                                        "cache": cache.stats.as_dict() if cache is not None else None})
        await self.link.close()

    async def _phase(self, phase: dict) -> None:
        """Its share of one stage, from the common start, until its items end or the parent says STOP."""
        stage = phase["stage"]
        self.engine.cfg = dataclasses.replace(self.cfg, stages=(stage,), concurrency=(stage.concurrency,),
                                              ramp_up_start=phase["ramp_up_start"])
        self.engine.phase_deadline = phase["deadline"]
        # After another worker died its share may be larger than the one it started for: room for it.
        self.engine.connector_limit = max(self.engine.connector_limit, stage.concurrency)
        if self.engine.hooks.adaptive is not None:
            self.engine.hooks.adaptive.grow(stage.concurrency)
        self.pipe.stage_record = phase["stage_record"]
        self._ended = False
        delay = phase["start_at"] - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        items = self._stage_items()
        if phase["warmup"]:
            await self.engine.run(lambda _: _no_items(), items)
        else:
            self.timer.on_stage(stage, False, True)
            await self.engine.run(lambda _: items, None)
            self.timer.on_stage(stage, False, False)

    async def _stage_items(self):
        while (item := await self.items.get()) is not _END:
            yield item
        self._ended = True

    async def _skip_to_end(self) -> None:
        """Items the engine did not take (a stop, --duration) were never sent: dropped, up to the stage's END."""
        while not self._ended:
            self._ended = await self.items.get() is _END

    async def _listen(self) -> None:
        while (frame := await self.link.receive()) is not None:
            kind, payload = frame
            if kind is Kind.ITEM:
                self.items.put_nowait(item_of(payload))
            elif kind is Kind.END:
                self.items.put_nowait(_END)
            elif kind is Kind.GRANT:
                self.quota.granted(payload)
            elif kind is Kind.PHASE:
                self.control.put_nowait(unpack(payload))
            elif kind is Kind.STOP:
                self.engine.stop()
            elif kind is Kind.EXIT:
                self.control.put_nowait(None)
        os._exit(EXIT_ORPHANED)  # the parent is gone: its requests are abandoned, as its own would be

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            self.link.send_json(Kind.STATUS, self._counters())

    def _counters(self) -> dict:
        engine, adaptive = self.engine, self.engine.hooks.adaptive
        return {"in_flight": engine.in_flight, "sent": engine.result.sent, "cancelled": engine.result.cancelled,
                "endpoints": engine.pool.stats(), "unreached": engine.reach.dropped,
                "adaptive": None if adaptive is None else {
                    "limit": adaptive.limit, "min_seen": adaptive.min_limit_seen, "throttles": adaptive.throttles,
                    "decreases": adaptive.decreases}}

    def _tell_fatal(self, error: RunError) -> None:
        self.link.send_json(Kind.FATAL, {"message": str(error), "exit_code": error.exit_code})


async def _no_items():
    return
    yield


def _setup_logging(settings: dict, secrets: tuple[str, ...], index: int) -> None:
    """Log as the parent does, to the same stderr, each line naming the worker."""
    from ..logs import setup_logging

    level = settings["level"]
    setup_logging("json" if settings["json"] else "text",
                  1 if level <= logging.DEBUG else 0 if level <= logging.INFO else -1, secrets)
    if not settings["json"]:
        for handler in logging.getLogger("streamrun").handlers:
            handler.setFormatter(logging.Formatter(f"streamrun worker {index}: %(message)s"))


async def serve(sock: socket.socket) -> None:
    link = await Link.open(sock)
    frame = await link.receive()
    if frame is None or frame[0] is not Kind.INIT:
        return
    init = unpack(frame[1])
    _setup_logging(init["log"], init["secrets"], init["index"])
    await Worker(link, init).run()


def main(argv: list[str] | None = None) -> None:
    fd, _index = (int(a) for a in (argv or sys.argv[1:])[:2])
    for sig in (signal.SIGINT, signal.SIGTERM):  # the parent decides: STOP drains, EXIT ends
        signal.signal(sig, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(socket.socket(fileno=fd)))


if __name__ == "__main__":
    main()
