"""One worker process as the parent sees it: its process, its socket, what it holds, what it said.

Why apart from the pool: starting a process, reading its frames and
noticing its death are the same for every worker and every stage; the pool
(`pool.py`) decides what to send and when.

A worker is started as `python -m runner.workers.child FD INDEX`: a fresh
interpreter (as multiprocessing's "spawn" would start, without importing
the caller's `__main__` again), with one end of a socket pair as its only
inherited descriptor, so it holds neither the output nor its lock: a
`--resume` after the parent dies is never refused because of a worker.
Its death shows as the end of its socket (EOF), whatever killed it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Protocol

from ..config.run_config import Stage
from .quota import QuotaGrants
from .shapes import window
from .wire import Kind, Link, item_frame, message, pack

CHILD = "runner.workers.child"  # the worker's main module, run with -m
REAP_TIMEOUT_S = 5.0  # after its socket closed, how long a worker may take to exit before it is killed


class Listener(Protocol):
    """What the pool does with what a worker says (pool.WorkerPool)."""

    def on_record(self, handle: WorkerHandle, payload: bytes) -> None: ...
    def on_fatal(self, handle: WorkerHandle, msg: dict) -> None: ...
    def on_change(self) -> None: ...
    def on_gone(self, handle: WorkerHandle) -> None: ...


class WorkerHandle:
    """One worker: spawn it, feed it, read it until its socket closes."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: asyncio.subprocess.Process | None = None
        self.link: Link | None = None
        self.pid: int | None = None
        self.quota: QuotaGrants | None = None  # with --rpm/--tpm
        self.ready = asyncio.Event()
        self.phase_over = asyncio.Event()  # its part of the current stage is done (or it died)
        self.in_phase = False  # between its PHASE and its PHASE_DONE: a death now leaves the stage short
        self.finished = False  # it sent DONE: it ended as told
        self.gone = asyncio.Event()  # its process has exited
        self.exit_code: int | None = None
        # what it holds and what it reported
        self.accepting = False  # in the current stage, and its engine has not finished it
        self.window = 0
        self.outstanding = 0  # items sent to it that have no record yet
        self.records = 0
        self.unanswered = 0  # items it held when it died: no record, so --resume sends them again
        self.counters: dict[str, Any] = {}
        self.lag: dict | None = None
        self.timing: list[dict] = []  # its loop lag and CPU per stage (runner/observe/client_timing.py), one entry per PHASE_DONE
        self.cache: dict | None = None
        self._eof = False  # its socket closed: it is gone, or going

    @property
    def alive(self) -> bool:
        return self.ready.is_set() and not self._eof

    def linked(self) -> Link:
        """Its socket, there from `spawn` on."""
        if self.link is None:
            raise RuntimeError(f"worker {self.index} has not been spawned")
        return self.link

    async def spawn(self) -> None:
        mine, theirs = socket.socketpair()
        try:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", CHILD, str(theirs.fileno()), str(self.index),
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, env=_child_env())
        finally:
            theirs.close()
        self.pid = self.proc.pid
        self.link = await Link.open(mine)

    # -- to the worker

    def init(self, settings: dict) -> None:
        """Its config, headers (the key among them) and log settings: over the socket, never on a command line."""
        self.linked().send(Kind.INIT, pack(settings))

    def begin_phase(self, stage: Stage, warmup: bool, start_at: float, deadline: float | None,
                    stage_record: dict[str, Any] | None, ramp_up_start: float | None) -> None:
        self.phase_over.clear()
        self.in_phase = self.accepting = True
        self.window = window(stage.concurrency)
        self.outstanding = 0
        self.linked().send(Kind.PHASE, pack({"stage": stage, "warmup": warmup, "start_at": start_at,
                                         "deadline": deadline, "stage_record": stage_record,
                                         "ramp_up_start": ramp_up_start}))

    def send_item(self, item) -> None:
        self.outstanding += 1
        self.linked().send(Kind.ITEM, item_frame(item))

    def end_items(self) -> None:
        if self.link is not None and not self._eof:
            self.link.send(Kind.END)

    def stop(self) -> None:
        if self.link is not None and not self._eof:
            self.link.send(Kind.STOP)

    def exit(self) -> None:
        if self.link is not None and not self._eof:
            self.link.send(Kind.EXIT)

    def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass

    # -- from the worker

    async def read(self, pool: Listener) -> None:
        """Every frame until the socket closes, then the process's end: a death unless it sent DONE."""
        link = self.linked()
        while (frame := await link.receive()) is not None:
            self._dispatch(pool, *frame)
        self._eof = True
        self.accepting = False
        self.phase_over.set()
        self.exit_code = await self._reap()
        self.gone.set()
        pool.on_gone(self)
        await link.close()

    def _dispatch(self, pool: Listener, kind: Kind, payload: bytes) -> None:
        if kind is Kind.RECORD:
            pool.on_record(self, payload)
            return
        if kind is Kind.STATUS:
            self.counters = message(payload)
            pool.on_change()
        elif kind is Kind.QUOTA and self.quota is not None:  # without --rpm/--tpm it is unexpected
            self.quota.handle(payload)
        elif kind is Kind.READY:
            self.ready.set()
            pool.on_change()
        elif kind is Kind.PHASE_DONE:
            self.counters = message(payload)
            self.timing += self.counters.pop("timing", None) or []
            self.in_phase = self.accepting = False
            self.outstanding = 0  # what it still held was never sent: no record will come for it
            self.phase_over.set()
            pool.on_change()
        elif kind is Kind.FATAL:
            pool.on_fatal(self, message(payload))
        elif kind is Kind.DONE:
            done = message(payload)
            self.lag, self.cache = done.pop("lag"), done.pop("cache")
            self.counters = done
            self.finished = True
        else:
            raise ValueError(f"worker {self.index} sent an unexpected frame: {kind!r}")

    async def _reap(self) -> int | None:
        if self.proc is None:
            return None
        try:
            return await asyncio.wait_for(self.proc.wait(), REAP_TIMEOUT_S)
        except TimeoutError:
            self.kill()
            return await self.proc.wait()

    def how_it_ended(self) -> str:
        code = self.exit_code
        if code is None:
            return "ended"
        if code < 0:
            try:
                return f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"was killed by signal {-code}"
        return f"exited with code {code}"

    def section(self) -> dict:
        """Its line of the summary's `workers` list."""
        return {"index": self.index, "pid": self.pid, "requests_sent": self.counters.get("sent", 0),
                "records": self.records, "unanswered": self.unanswered, "exit_code": self.exit_code,
                "event_loop_lag": self.lag}


def _child_env() -> dict[str, str]:
    """The parent's environment (the key is read there, as in the parent), with this `runner` importable."""
    root = str(Path(__file__).resolve().parents[2])
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root if not path else root + os.pathsep + path}
