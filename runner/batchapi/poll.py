"""Waiting for the run's batches, and collecting each that ended: its results, one record per line.

Why apart from submitting: polling spends nothing and may go on for a day;
what it must keep is the order of the crash model.  A batch's records are
written and fsynced before the state marks its part collected, and a
collection that a crash cut short is finished without writing a line
twice (the output's `Found.wrote`).

Polls wait from 1 s, doubling up to --poll-interval; each batch is logged
whenever its status or counts change, and the batches still in progress
every --log-every.
"""

from __future__ import annotations

import asyncio
import logging
import tempfile
import time

from ..io.jsonl import JsonlReader
from . import collect
from .remote import FAILED, Remote
from .state import COLLECTED, SUBMITTED, Part
from .work import BatchWork

log = logging.getLogger("streamrun")

FIRST_POLL_S = 1.0  # the first wait between polls; it doubles up to --poll-interval
CANCEL_WAIT_S = 600.0  # --cancel waits this long at most for the batches to end
RESULT_LINE_BYTES = 256 << 20  # the longest result line read (a whole reply with its logprobs)


class Poller:
    """The submitted parts, polled until each has ended and been collected (or, --no-wait, polled once).

    `work`: what it shares with the Submitter (runner/batchapi/work.py); the first signal ends the poll.
    """

    def __init__(self, work: BatchWork, log_every_s: float) -> None:
        self.work = work
        self.log_every_s = log_every_s
        self._last_log = float("-inf")

    async def poll(self) -> None:
        settings, ledger = self.work.settings, self.work.ledger
        wait = min(FIRST_POLL_S, settings.poll_interval_s)
        deadline = time.monotonic() + CANCEL_WAIT_S if settings.cancel else None
        while True:
            ended: list[tuple[Part, Remote]] = []
            for part in [p for p in ledger.state.parts if p.step == SUBMITTED]:
                remote = await self.work.provider.get(part.batch_id)
                ledger.seen(part, remote)
                if remote.end is not None:
                    ended.append((part, remote))
            ledger.save()
            if ended:
                await self._collect(ended)
            running = [p for p in ledger.state.parts if p.step == SUBMITTED]
            if not running:
                return
            self._log_waiting(running, force=not settings.wait)
            if self.work.stopping.is_set() or (not settings.wait and not settings.cancel):
                return
            if deadline is not None and time.monotonic() >= deadline:
                log.warning("%d batches are still being cancelled after %.0fs: rerun with --cancel to collect "
                            "them", len(running), CANCEL_WAIT_S)
                return
            try:
                await asyncio.wait_for(self.work.stopping.wait(), wait)
                return
            except TimeoutError:
                pass
            wait = min(wait * 2, settings.poll_interval_s)

    def _log_waiting(self, running: list[Part], force: bool) -> None:
        """The batches still in progress: at once (`force`), else every --log-every (never with 0)."""
        now = time.monotonic()
        every = self.log_every_s
        if not force and (every <= 0 or now - self._last_log < every):
            return
        self._last_log = now
        lines = sum(p.lines for p in running)
        log.info("%d batches still in progress (%d lines): %s", len(running), lines,
                 "; ".join(f"{p.batch_id} {p.status}" for p in running[:5]) + (" ..." if len(running) > 5 else ""),
                 extra={"data": {"in_progress": len(running), "lines": lines}})

    async def _collect(self, ended: list[tuple[Part, Remote]]) -> None:
        """The ended batches' records, one per line, written and fsynced before the parts count as collected."""
        parts = [p for p, _ in ended]
        members: dict[int, dict[str, collect.Member]] = {p.index: {} for p in parts}
        for part, member in self.work.lines.members(parts):
            members[part.index][member.wire.wire_id] = member
        for part, remote in ended:
            await self._collect_one(part, remote, members.pop(part.index))
            part.step = COLLECTED
            self.work.ledger.save()

    async def _collect_one(self, part: Part, remote: Remote, members: dict[str, collect.Member]) -> None:
        batch_id, ctx, records = remote.id, self.work.lines.ctx, self.work.records
        if remote.end != FAILED or remote.files:
            with tempfile.TemporaryFile() as results:
                await self.work.provider.results(remote, results)
                results.seek(0)
                with JsonlReader(results, name=f"the results of {batch_id}", max_line=RESULT_LINE_BYTES) as reader:
                    for outcome in collect.outcomes(((n, o) for n, _, o in reader.objects()),
                                                    self.work.provider.outcome, log.warning):
                        member = members.pop(outcome.wire_id, None)
                        if member is None:
                            log.warning("the results of %s name a request it does not hold (%r): skipped", batch_id,
                                        outcome.wire_id)
                            continue
                        if not self.work.found.wrote(member.item.custom_id, batch_id):
                            records.put(collect.answered(member, outcome, batch_id, ctx))
        for member in members.values():
            if not self.work.found.wrote(member.item.custom_id, batch_id):
                records.put(collect.missing(member, remote.end, batch_id, ctx, remote.problem))
        records.flush()
        log.info("batch %s %s: records written for its %d lines", batch_id, remote.end, part.lines)
