"""What the provider holds of the run: the lines planned into parts, each part submitted once, or cancelled.

Why here, together: these are the steps that cost or commit something, and
each is written into the state file before the next starts:

- plan: the lines to submit, into parts within the provider's limits (a
  line no batch can take is an `invalid_input` record at once); the state
  names the parts before anything is sent;
- reconcile: a part whose create was sent but whose batch id was never
  kept (a crash) is looked for among the provider's batches (its metadata,
  or for Anthropic its size and time) before anything is submitted;
- submit: upload (OpenAI), state, create, state; an upload a crash did not
  keep is found by its name, a create that may have arrived is looked up,
  never sent again blindly;
- cancel: the submitted parts cancelled; the lines of parts never
  submitted get `batch_cancelled` records at once.
"""

from __future__ import annotations

import logging
import tempfile
import time
from array import array

from ..engine.send import only_model
from ..errors import UsageError
from ..stream.paths import InvalidRequestLine
from . import collect
from .http import ProviderError, Unsure
from .openai import file_name, metadata
from .plan import Planner, wire_request
from .remote import CANCELLED, Remote
from .state import COLLECTED, PLANNED, SUBMITTED, SUBMITTING, UPLOADED, Part, shown_ids
from .work import BatchWork

log = logging.getLogger("streamrun")

CREATE_TRIES = 3  # creates that may not have arrived, each looked for before the next
PAYLOADS_AT_ONCE = 8  # parts whose upload is written to disk in one reading of the inputs


class Submitter:
    """The run's parts at the provider: planned, found again after a crash, submitted, cancelled.

    `work`: what it shares with the Poller (runner/batchapi/work.py); no part is submitted after the first
    signal.  `output`: the output as configured (each OpenAI batch's metadata names it).
    """

    def __init__(self, work: BatchWork, output: str) -> None:
        self.work = work
        self.output = output
        self.submitted_lines = 0  # by this invocation
        self.planned_now: set[int] = set()  # parts planned by this invocation: no earlier upload to look for

    # ---- plan

    async def plan(self, pending: array) -> None:
        """The lines to submit, into parts within the limits; the state names them before anything is sent."""
        state, lines, ctx = self.work.ledger.state, self.work.lines, self.work.lines.ctx
        if ctx.model is None and lines.needs_model(pending):
            ctx.model = state.model = await self._default_model()
        planner = Planner(self.work.settings, len(state.parts))
        dropped: set[tuple[str, str]] = set()

        def on_drop(key: str, why: str) -> None:
            if (key, why) not in dropped:
                dropped.add((key, why))
                log.warning("%s (said once)", why)

        for ordinal, item in lines.wanted(pending):
            try:
                wire = wire_request(item, self.work.settings, lines.params, ctx.model, on_drop)
                if not planner.fits_alone(wire):
                    raise InvalidRequestLine(f"{len(wire.data)} bytes: over {self.work.settings.limits.name}'s "
                                             f"{self.work.settings.limits.max_bytes} bytes a batch")
            except InvalidRequestLine as exc:
                if not self.work.found.has_final(item.custom_id):
                    self.work.records.put(collect.invalid(item, str(exc), ctx))
                continue
            planner.add(ordinal, item.custom_id, wire)
        parts = planner.finish()
        state.parts.extend(parts)
        self.planned_now.update(p.index for p in parts)
        self.work.records.flush()
        self.work.ledger.save()
        if parts:
            log.info("%d lines in %d batches for %s (%s)", sum(p.lines for p in parts), len(parts),
                     self.work.settings.limits.name, ", ".join(f"{p.lines} {p.endpoint}" for p in parts))

    async def _default_model(self) -> str:
        client = self.work.provider.client
        return await only_model(client.session, [client.base_url], {client.base_url: client.proxy},
                                client.secrets, headers=client.headers)

    # ---- what a crash left unknown

    async def reconcile(self) -> None:
        """Parts whose create was sent but whose batch id was never kept: found at the provider, or not sent."""
        for part in [p for p in self.work.ledger.state.parts if p.step == SUBMITTING]:
            remote = await self._find(part)
            if remote is not None:
                log.info("batch part %d: found %s, created before the last run stopped", part.index, remote.id)
                self.work.ledger.adopt(part, remote)
            else:
                part.step = UPLOADED if part.file_id else PLANNED
                part.since = None
            self.work.ledger.save()

    async def _find(self, part: Part) -> Remote | None:
        state = self.work.ledger.state
        assert part.since is not None
        if not self.work.provider.uploads:
            known = {p.batch_id for p in state.parts if p.batch_id}
            found = await self.work.provider.find(part.lines, part.since, known)
            if len(found) > 1:
                raise UsageError(
                    f"batch part {part.index} ({part.lines} requests) was being created when the last run stopped, "
                    f"and {len(found)} Message Batches of that size were created since: {shown_ids(found)}; "
                    "Anthropic's batches carry no metadata to tell them apart: cancel the ones that are not this "
                    "run's, then rerun")
            return found[0] if found else None
        return await self.work.provider.find(state.run, part.index, part.since)

    # ---- submit

    async def submit(self) -> None:
        state, provider = self.work.ledger.state, self.work.provider
        todo = [p for p in state.parts if p.step in (PLANNED, UPLOADED)]
        if not todo:
            return
        if provider.uploads:  # an upload a crash did not keep is found by its name
            for part in todo:
                if part.step == PLANNED and part.index not in self.planned_now:
                    file_id = await provider.find_file(file_name(state.run, part.index, part.fingerprint))
                    if file_id is not None:
                        part.file_id, part.step = file_id, UPLOADED
                        self.work.ledger.save()
        for at in range(0, len(todo), PAYLOADS_AT_ONCE):  # a few parts' uploads on disk at a time
            some = todo[at:at + PAYLOADS_AT_ONCE]
            needs_payload = [p for p in some if p.step == PLANNED or not provider.uploads]
            with tempfile.TemporaryDirectory(prefix="streamrun-batch-") as folder:
                payloads = self.work.lines.payloads(needs_payload, folder) if needs_payload else {}
                for part in some:
                    if self.work.stopping.is_set():
                        return
                    await self._submit_part(part, payloads.get(part.index))

    async def _submit_part(self, part: Part, payload: str | None) -> None:
        provider, ledger = self.work.provider, self.work.ledger
        state = ledger.state
        if provider.uploads and part.step == PLANNED:
            assert payload is not None
            name = file_name(state.run, part.index, part.fingerprint)
            try:
                part.file_id = await provider.upload(name, payload)
            except Unsure:
                part.file_id = await provider.find_file(name)
                if part.file_id is None:
                    raise
            part.step = UPLOADED
            ledger.save()
        for _ in range(CREATE_TRIES):
            part.step, part.since = SUBMITTING, time.time()
            ledger.save()  # before the create: a crash from here on is looked up, not sent again
            try:
                if provider.uploads:
                    remote = await provider.create(part.file_id, part.endpoint, metadata(
                        state.run, part.index, part.lines, part.fingerprint, self.output))
                else:
                    assert payload is not None
                    remote = await provider.create(payload)
            except Unsure as exc:
                log.warning("batch part %d: %s: looking for it before trying again", part.index, exc)
                remote = await self._find(part)
                if remote is None:
                    continue
            ledger.adopt(part, remote)
            self.submitted_lines += part.lines
            ledger.save()
            log.info("batch part %d/%d submitted: %s (%d lines, %s%s)", part.index + 1, len(state.parts),
                     remote.id, part.lines, part.endpoint, f", {part.model}" if part.model else "")
            return
        raise ProviderError(f"batch part {part.index}: the create failed {CREATE_TRIES} times and no batch of it "
                            "exists: rerun the same command to try again")

    # ---- cancel

    async def cancel(self) -> None:
        """Cancel the submitted parts (the poll then waits for them); the parts never submitted end at once."""
        ledger = self.work.ledger
        never = [p for p in ledger.state.parts if p.step in (PLANNED, UPLOADED)]
        if never:
            for _part, member in self.work.lines.members(never):
                self.work.records.put(collect.never_ran(member, CANCELLED, None, self.work.lines.ctx))
            self.work.records.flush()
            for part in never:
                part.step, part.end, part.status = COLLECTED, CANCELLED, "not submitted"
            ledger.save()
            log.info("cancelled %d batch parts that were never submitted (%d lines)", len(never),
                     sum(p.lines for p in never))
        for part in [p for p in ledger.state.parts if p.step == SUBMITTED and p.end is None]:
            try:
                remote = await self.work.provider.cancel(part.batch_id)
            except ProviderError as exc:  # it ended meanwhile (409), say: the poll sees how
                log.warning("batch part %d: %s", part.index, exc)
                continue
            ledger.seen(part, remote)
            log.info("batch %s: cancelling", part.batch_id)
        ledger.save()
