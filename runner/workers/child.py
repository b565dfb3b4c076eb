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
gave, under the parent's --duration deadline.  The engine's own rejection
guard is off: the parent's sees every answer.  A run-level error (no
--model and several served) is told to the parent at once, which stops
every worker.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import random
import signal
import socket
import sys
import time

import anyio

from ..aio import loop_factory
from ..config.run_config import RunConfig
from ..engine.answers import Answers
from ..engine.guards import RejectionGuard
from ..engine.hooks import engine_hooks, open_answers
from ..engine.loop import Engine
from ..errors import EXIT_ORPHANED, RunError
from ..observe.client_timing import LagMonitor, StageTimer
from ..observe.tracing import RequestTracer
from ..outputs.writer import Prior
from ..record import Record
from ..stream.network import Network
from .quota import QuotaClient
from .wire import Kind, Link, item_of, record_bytes, unpack

HEARTBEAT_S = 0.25  # how often the parent hears what is in flight (the progress display, the drain log)
_END = object()


class RecordPipe:
    """The worker's writer: each record to the parent, which alone writes the results file.

    A record's `stage` is the whole stage's (the parent's, from PHASE), not
    this worker's share of it: the parent writes the line as it comes.
    """

    def __init__(self, link: Link) -> None:
        self.link = link
        self.stage_record: dict | None = None

    def put(self, record: Record, line: bytes | None = None) -> None:
        if record.stage is not None:
            record.stage = self.stage_record
        self.link.send(Kind.RECORD, record_bytes(record))


class Worker:
    """One worker process: its engine, fed by the parent's socket, and what it tells the parent."""

    def __init__(self, link: Link, init: dict, answers: Answers) -> None:
        self.link = link
        self.cfg: RunConfig = init["cfg"]
        load = self.cfg.load
        # --otlp-endpoint: this process's spans, exported by it under the parent's service name (same environment)
        self.tracer = RequestTracer.from_config(self.cfg.observe)
        # Token counting and adaptive concurrency as the parent's would be; one RPM/TPM budget for all
        # workers: the parent grants.
        hooks = engine_hooks(load, self.cfg.request.model, tracer=self.tracer)
        self.quota = QuotaClient(link, load.tpm) if hooks.quota is not None else None
        hooks = dataclasses.replace(hooks, quota=self.quota)
        self.answers = answers
        self.pipe = RecordPipe(link)
        self.engine = Engine(self.cfg.transport, self.cfg.request, self.cfg.checks, creds=init["creds"], hooks=hooks,
                             writer=self.pipe, answers=answers, prior=Prior(),
                             guard=RejectionGuard(armed=False),  # the parent's guard sees every answer
                             connections=init.get("connections"), on_abort=self._tell_fatal,
                             rng=random.Random(load.seed),
                             network=Network.from_config(self.cfg.transport))  # its own TLS context, proxies
        self.timer = StageTimer()  # its loop lag and CPU per stage, told to the parent with PHASE_DONE
        self.lag = LagMonitor(on_sample=self.timer.sample)
        self.items: asyncio.Queue = asyncio.Queue()  # bounded by the parent's window
        self.control: asyncio.Queue = asyncio.Queue()  # PHASE messages; None: EXIT
        self._ended = True  # the current stage's END was read

    async def run(self) -> None:
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
            if self.tracer is not None:  # before DONE: the parent ends this process once it has it
                await self.tracer.aclose()

    def done(self) -> None:
        """Its last word, once its cache is closed: what it sent, its loop's lag, its cache's counts."""
        cache = self.answers.cache
        self.link.send_json(Kind.DONE, {**self._counters(), "lag": self.lag.summary(),
                                        "cache": cache.stats.as_dict() if cache is not None else None})

    async def _phase(self, phase: dict) -> None:
        """Its share of one stage, from the common start, until its items end or the parent says STOP."""
        stage = phase["stage"]
        # After another worker died its share may be larger than the one it started for: the load is the
        # share (its connections follow), and adaptive concurrency grows to it.
        load = dataclasses.replace(self.cfg.load, stages=(stage,), concurrency=(stage.concurrency,),
                                   ramp_up_start=phase["ramp_up_start"])
        if self.engine.hooks.adaptive is not None:
            self.engine.hooks.adaptive.grow(stage.concurrency)
        self.pipe.stage_record = phase["stage_record"]
        self._ended = False
        delay = phase["start_at"] - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        items = self._stage_items()
        if phase["warmup"]:
            await self.engine.run(load, lambda _: _no_items(), items)
        else:
            self.timer.on_stage(stage, False, True)
            await self.engine.run(load, lambda _: items, None, deadline=phase["deadline"])
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
            elif kind is Kind.GRANT and self.quota is not None:
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
    _setup_logging(init["log"], init["creds"].secrets, init["index"])  # the parent's secrets_of
    async with open_answers(init["cfg"].checks) as answers:
        worker = Worker(link, init, answers)
        await worker.run()
    worker.done()
    await link.close()


def main(argv: list[str] | None = None) -> None:
    fd, _index = (int(a) for a in (argv or sys.argv[1:])[:2])
    for sig in (signal.SIGINT, signal.SIGTERM):  # the parent decides: STOP drains, EXIT ends
        signal.signal(sig, signal.SIG_IGN)
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(serve(socket.socket(fileno=fd)))


if __name__ == "__main__":
    main()
