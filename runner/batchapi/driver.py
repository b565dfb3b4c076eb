"""`streamrun batch`: the inputs through a provider's Batch API, into the same output and summary as `run`.

Why a driver of its own: a batch run has no engine (nothing is sent
live); it has steps that each cost or commit something, and a state file
that must say how far each got before the next one starts.  The same
command, run again after a crash, a signal or `kill -9`, picks up where
the state file says, and never submits a line twice:

1. lock the output (exit 3 when another run holds it); read its final
   records (`runner.outputs.finals`): a line with one is done, unless
   `--resubmit-failed` and it failed; duplicate custom_ids stop the run
   (exit 2) before anything is uploaded;
2. read the inputs once: the lines of parts not yet collected are checked
   against their fingerprints, a line no batch can take is an
   `invalid_input` record, every other line without a final record is to
   be submitted; plan those into parts (`plan`) and write the state;
3. find what a crash left unknown: a part whose create was sent but whose
   batch id was not kept is looked for among the provider's batches (its
   metadata, or for Anthropic its size and time) before anything is
   submitted; OpenAI files uploaded but not kept are found by name;
4. submit each part: upload (OpenAI), state, create, state;
5. poll (from 1 s, doubling up to `--poll-interval`), logging each batch's
   status and counts as they change; collect each batch that ended: its
   results become one record per line (`collect`), fsynced, then the part
   is marked collected in the state;
6. the summary document (`<output>.summary.json`, as `run` writes it, with
   a `batch` section) and the exit code: 0 while batches are still running
   (`--no-wait`), else the failure budget over the final records, as `run`.

`--cancel` submits nothing: it cancels the parts that were submitted, waits
(at most `CANCEL_WAIT_S`) for them to end, and collects them; lines of parts
never submitted get `batch_cancelled` records at once.  The first SIGINT or
SIGTERM stops after the step in progress (the batches run on at the
provider; the same command collects them); a second exits at once.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import tempfile
import time
from array import array
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import aiohttp

from ..config.run_config import RunConfig
from ..engine.send import env_proxy, only_model
from ..errors import EXIT_FAILED, EXIT_OK, EXIT_SIGINT, EXIT_SIGTERM, OutputFailed, RunError, UsageError
from ..inputs.ids import HashSorter, id_hash, sorted_has
from ..inputs.items import InputItem, expand_inputs, is_regular, iter_items, scan_inputs
from ..io.jsonl import JsonlReader
from ..outputs.finals import FinalRecords
from ..outputs.summary import RunFacts, build_document, summary_path_for, write_document
from ..outputs.writer import ResultWriter, lock_output, repair_torn_tail, unlock_output
from ..preflight import check_keys, credentials
from ..record import Record
from ..stream.endpoints import public_url
from ..stream.headers import ANTHROPIC, Credentials
from ..stream.paths import InvalidRequestLine
from . import collect
from .anthropic import AnthropicBatches
from .http import Client, ProviderError, Unsure
from .openai import OpenAIBatches, file_name, metadata
from .plan import Fingerprint, Membership, Planner, wire_request
from .remote import CANCELLED, FAILED, Remote
from .settings import BatchSettings
from .state import COLLECTED, PLANNED, SUBMITTED, SUBMITTING, UPLOADED, Part, State, load_state, remove_state, \
    save_state, state_path_for

log = logging.getLogger("streamrun")

FIRST_POLL_S = 1.0  # the first wait between polls; it doubles up to --poll-interval
CANCEL_WAIT_S = 600.0  # --cancel waits this long at most for the batches to end
CREATE_TRIES = 3  # creates that may not have arrived, each looked for before the next
PAYLOADS_AT_ONCE = 8  # parts whose upload is written to disk in one reading of the inputs
RESULT_LINE_BYTES = 256 << 20  # the longest result line read (a whole reply with its logprobs)


async def run_batch(cfg: RunConfig, *, mock: Any = None, cli: bool = False) -> dict:
    """The batch run of `cfg` start to end; its summary document (with `exit_code`).

    RunError (exit 2 or 3) for a run that cannot start.  `mock`: a
    MockConfig to run against the embedded mock.  `cli`: the command line
    runs it (a second signal exits the process), not Python.
    """
    settings = BatchSettings.from_config(cfg)
    creds = credentials(cfg, local=mock is not None)
    paths = expand_inputs(cfg.inputs)
    for path in paths:
        if not is_regular(path):
            raise UsageError(f"streamrun batch reads its inputs again to match the results to them: "
                             f"{'stdin' if path == '-' else path} can be read only once: write it to a file first")
    if len(cfg.transport.base_urls) > 1 and mock is None:
        raise UsageError("streamrun batch sends each batch to one provider: give one --base-url")
    output = os.path.realpath(cfg.output.path)
    if output in {os.path.realpath(p) for p in paths}:
        raise UsageError(f"the output {cfg.output.path} is one of the input files: choose another -o")
    try:
        lock_fd = lock_output(output)
    except OSError as exc:
        raise UsageError(f"cannot create {cfg.output.path}: {exc.strerror}") from None
    try:
        if mock is None:
            return await BatchRun(cfg, settings, creds, paths, cfg.transport.base_urls[0], local=False,
                                  cli=cli).execute()
        from ..mock import serve

        async with serve(dataclasses.replace(mock, any_model=True)) as url:
            log.info("embedded mock server at %s", url)
            return await BatchRun(cfg, settings, creds, paths, url, local=True, cli=cli).execute()
    finally:
        unlock_output(output, lock_fd)


@dataclasses.dataclass
class Found:
    """What the output holds: the keys of its final records, those that failed, and the records each batch wrote."""

    final: array
    failed: array
    written: array  # hashes of custom_id + batch_id, for every record a batch wrote (superseded or not)


class BatchRun:
    """One invocation: the state, the output's writer, the provider, and the steps."""

    def __init__(self, cfg: RunConfig, settings: BatchSettings, creds: Credentials, paths: list[str],
                 base_url: str, *, local: bool, cli: bool = False) -> None:
        self.cfg, self.settings, self.creds, self.paths = cfg, settings, creds, paths
        self.base_url, self.local, self.cli = base_url, local, cli
        self.state_path = state_path_for(cfg.output.path)
        self.state: State | None = None
        self.model: str | None = cfg.request.model or cfg.request.params.get("model")
        self.ctx = collect.Context(self.model, creds.secrets, public_url(base_url))
        self.writer: ResultWriter | None = None
        self.provider: Any = None
        self.found = Found(array("Q"), array("Q"), array("Q"))
        self.submitted_lines = 0
        self.planned_now: set[int] = set()  # parts planned by this invocation: no earlier upload to look for
        self.written = 0
        self.signals: list[int] = []
        self.stopping = asyncio.Event()
        self._last_log = float("-inf")

    # ---- the run

    async def execute(self) -> dict:
        started, t0 = datetime.now(timezone.utc), time.perf_counter()
        cfg = self.cfg
        scan = scan_inputs(self.paths, api=cfg.transport.api, sharegpt=cfg.sharegpt)
        if scan.duplicates:
            shown = "; ".join(f"{cid!r} at {a} and {b}" for cid, a, b in scan.duplicates[:5])
            more = f" (and {len(scan.duplicates) - 5} more)" if len(scan.duplicates) > 5 else ""
            raise UsageError(f"duplicate custom_id: {shown}{more}: each line of a batch needs an id of its own")
        check_keys(cfg, self.creds, frozenset({self.settings.provider}), local=self.local)
        self.state = self._prepare_output()
        fd = os.open(cfg.output.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        encode = None
        if cfg.output.format == "openai-batch":
            from ..outputs.batch import encode_batch

            encode = encode_batch
        self.writer = ResultWriter(fd, cfg.output.fsync, encode, name=cfg.output.path)
        restore = self._install_signals()
        stopped: RunError | None = None
        try:
            timeouts = cfg.transport.timeouts
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=timeouts.connect,
                                            sock_read=timeouts.total or 300.0)
            async with aiohttp.ClientSession(timeout=timeout, auto_decompress=True) as session:
                self.provider = self._provider(session)
                await self._steps()
        except RunError as exc:  # the provider refused, the output failed, an input changed: said, summarised
            stopped = exc
        finally:
            restore()
            try:
                self._flush()
            except OutputFailed as exc:
                stopped = stopped or exc
            finally:
                os.close(fd)
        return self._finish(started, time.perf_counter() - t0, stopped)

    async def _steps(self) -> None:
        state = self._start_state()
        pending = self._read_inputs(state)
        if not pending and not any(p.pending for p in state.parts):
            failed = len(self.found.failed)
            log.info("nothing to submit: every line of the inputs has its final record in %s%s", self.cfg.output.path,
                     f"; {failed} failed (--resubmit-failed submits them again)" if failed else "")
        await self._reconcile(state)
        if self.settings.cancel:
            await self._cancel(state)
        else:
            if pending:
                await self._plan(state, pending)
            await self._submit(state)
        if not self.stopping.is_set():
            await self._poll(state)

    # ---- 1. the output and the state

    def _prepare_output(self) -> State | None:
        cfg = self.cfg
        state = load_state(self.state_path)
        output = cfg.output
        has_records = os.path.exists(output.path) and os.path.getsize(output.path) > 0
        if output.overwrite:
            running = [p for p in state.parts if p.step in (SUBMITTING, SUBMITTED)] if state else []
            if running:
                raise UsageError(f"{self.state_path} has batches not yet collected ({_ids(running)}): --overwrite "
                                 "would lose them and submit their lines again; --cancel them (or let them end) "
                                 "first")
            remove_state(self.state_path)
            if os.path.exists(output.path):
                os.truncate(output.path, 0)
            return None
        if state is None and has_records:
            raise UsageError(f"{output.path} already exists and has no batch state file ({self.state_path}): pass "
                             "--overwrite to replace it, or choose another -o")
        if os.path.exists(output.path):
            cut = repair_torn_tail(output.path)
            if cut:
                log.warning("%s: cut a torn last line (%d bytes) left by an interrupted run", output.path, cut)
        self.found = self._read_output() if has_records else self.found
        return state

    def _read_output(self) -> Found:
        final, failed, written = HashSorter(), HashSorter(), HashSorter()
        with FinalRecords(self.cfg.output.path, warn=log.warning, verb="unreadable record skipped: ") as records:
            for number, _, record, final_line in records.every():
                if record.batch_id is not None:
                    written.add(id_hash(record.custom_id + "\0" + record.batch_id))
                if final_line == number and not record.warmup:
                    final.add(id_hash(record.custom_id))
                    if not record.ok:
                        failed.add(id_hash(record.custom_id))
        return Found(final.sorted(), failed.sorted(), written.sorted())

    def _start_state(self) -> State:
        shown = public_url(self.base_url)
        state = self.state
        if state is None:
            state = self.state = State.new(self.settings.provider, shown, self.cfg.output.path)
            self._save()  # before anything is sent: every batch carries this run's id
            return state
        pending = [p for p in state.parts if p.step in (SUBMITTING, SUBMITTED)]
        if state.provider != self.settings.provider and state.parts:
            raise UsageError(f"{self.state_path} holds {state.provider}'s batches: rerun with the same --api")
        if state.base_url != shown and pending:
            raise UsageError(f"{self.state_path}: its batches ({_ids(pending)}) are at {state.base_url}, not {shown}: "
                             "rerun with that --base-url")
        if state.model is not None and self.model is None:
            self.model = state.model
            self.ctx = dataclasses.replace(self.ctx, model=state.model)
        return state

    def _save(self) -> None:
        assert self.state is not None
        save_state(self.state_path, self.state)

    # ---- 2. the inputs

    def _items(self) -> Iterator[tuple[int, InputItem]]:
        transport = self.cfg.transport
        return enumerate(iter_items(self.paths, transport.limits.max_line_bytes, transport.api, self.cfg.sharegpt))

    def _read_inputs(self, state: State) -> array:
        """The input lines to submit (by number); invalid lines' records; the open parts' lines checked."""
        open_parts = [p for p in state.parts if p.pending]
        owners = Membership(open_parts)
        prints = {p.index: Fingerprint() for p in open_parts}
        found, resubmit = self.found, self.settings.resubmit_failed
        pending = array("Q")
        for ordinal, item in self._items():
            part = owners.owner(ordinal) if owners else None
            if part is not None:
                prints[part.index].add(item.custom_id)
                continue
            h = id_hash(item.custom_id)
            if sorted_has(found.final, h) and not (resubmit and sorted_has(found.failed, h)):
                continue
            if item.error is not None:
                if not sorted_has(found.final, h):
                    self._put(collect.invalid(item, item.error, self.ctx))
                continue
            pending.append(ordinal)
        for part in open_parts:
            self._check_fingerprint(part, prints[part.index])
        self._flush()
        return pending

    def _check_fingerprint(self, part: Part, found: Fingerprint) -> None:
        if found.hexdigest() != part.fingerprint:
            raise self._changed(part)

    def _changed(self, part: Part) -> UsageError:
        return UsageError(
            f"the input lines of batch part {part.index} ({part.batch_id or 'not yet submitted'}) have changed "
            f"since it was planned: restore the inputs of {self.state_path}'s run, or let it end and start "
            "another output")

    async def _plan(self, state: State, pending: array) -> None:
        """The lines to submit, into parts within the limits; the state names them before anything is sent."""
        if self.model is None and self._needs_model(pending):
            self.model = await self._default_model()
            state.model = self.model
            self.ctx = dataclasses.replace(self.ctx, model=self.model)
        planner = Planner(self.settings, len(state.parts))
        wanted, at = pending, 0
        dropped: set[tuple[str, str]] = set()

        def on_drop(key: str, why: str) -> None:
            if (key, why) not in dropped:
                dropped.add((key, why))
                log.warning("%s (said once)", why)

        for ordinal, item in self._items():
            if at == len(wanted):
                break
            if ordinal != wanted[at]:
                continue
            at += 1
            try:
                wire = wire_request(item, self.settings, self.cfg.request.params, self.model, on_drop)
                if not planner.fits_alone(wire):
                    raise InvalidRequestLine(f"{len(wire.data)} bytes: over {self.settings.limits.name}'s "
                                             f"{self.settings.limits.max_bytes} bytes a batch")
            except InvalidRequestLine as exc:
                if not sorted_has(self.found.final, id_hash(item.custom_id)):
                    self._put(collect.invalid(item, str(exc), self.ctx))
                continue
            planner.add(ordinal, item.custom_id, wire)
        parts = planner.finish()
        state.parts.extend(parts)
        self.planned_now.update(p.index for p in parts)
        self._flush()
        self._save()
        if parts:
            log.info("%d lines in %d batches for %s (%s)", sum(p.lines for p in parts), len(parts),
                     self.settings.limits.name, ", ".join(f"{p.lines} {p.endpoint}" for p in parts))

    def _needs_model(self, pending: array) -> bool:
        """Whether a line to submit names no model (then the server is asked for its only one, as `run` does)."""
        wanted, at = pending, 0
        for ordinal, item in self._items():
            if at == len(wanted):
                return False
            if ordinal == wanted[at]:
                at += 1
                if "model" not in (item.body or {}):
                    return True
        return False

    async def _default_model(self) -> str:
        headers = self.provider.client.headers
        proxy = self.provider.client.proxy
        return await only_model(self.provider.client.session, [self.base_url], {self.base_url: proxy},
                                self.creds.secrets, headers=headers)

    # ---- 3. what a crash left unknown

    async def _reconcile(self, state: State) -> None:
        """Parts whose create was sent but whose batch id was never kept: found at the provider, or not sent."""
        unsure = [p for p in state.parts if p.step == SUBMITTING]
        for part in unsure:
            remote = await self._find(part)
            if remote is not None:
                log.info("batch part %d: found %s, created before the last run stopped", part.index, remote.id)
                self._adopt(part, remote)
            else:
                part.step = UPLOADED if part.file_id else PLANNED
                part.since = None
            self._save()

    async def _find(self, part: Part) -> Remote | None:
        assert self.state is not None and part.since is not None
        if not self.provider.uploads:
            known = {p.batch_id for p in self.state.parts if p.batch_id}
            found = await self.provider.find(part.lines, part.since, known)
            if len(found) > 1:
                raise UsageError(
                    f"batch part {part.index} ({part.lines} requests) was being created when the last run stopped, "
                    f"and {len(found)} Message Batches of that size were created since: {_ids(found)}; Anthropic's "
                    "batches carry no metadata to tell them apart: cancel the ones that are not this run's, then "
                    "rerun")
            return found[0] if found else None
        return await self.provider.find(self.state.run, part.index, part.since)

    def _adopt(self, part: Part, remote: Remote) -> None:
        part.batch_id, part.step, part.since = remote.id, SUBMITTED, None
        self._seen(part, remote, quiet=True)

    # ---- 4. submitting

    async def _submit(self, state: State) -> None:
        todo = [p for p in state.parts if p.step in (PLANNED, UPLOADED)]
        if not todo:
            return
        if self.provider.uploads:  # an upload a crash did not keep is found by its name
            for part in todo:
                if part.step == PLANNED and part.index not in self.planned_now:
                    file_id = await self.provider.find_file(file_name(state.run, part.index, part.fingerprint))
                    if file_id is not None:
                        part.file_id, part.step = file_id, UPLOADED
                        self._save()
        for at in range(0, len(todo), PAYLOADS_AT_ONCE):  # a few parts' uploads on disk at a time
            some = todo[at:at + PAYLOADS_AT_ONCE]
            needs_payload = [p for p in some if p.step == PLANNED or not self.provider.uploads]
            with tempfile.TemporaryDirectory(prefix="streamrun-batch-") as folder:
                payloads = self._payloads(needs_payload, folder) if needs_payload else {}
                for part in some:
                    if self.stopping.is_set():
                        return
                    await self._submit_part(state, part, payloads.get(part.index))

    def _payloads(self, parts: list[Part], folder: str) -> dict[int, str]:
        """Each part's upload (OpenAI's JSONL file, Anthropic's create body), written from its input lines."""
        anthropic = self.settings.provider == ANTHROPIC
        paths = {p.index: os.path.join(folder, f"part{p.index}.json{'' if anthropic else 'l'}") for p in parts}
        files = {i: open(path, "wb") for i, path in paths.items()}
        first = dict.fromkeys(paths, True)
        try:
            if anthropic:
                for f in files.values():
                    f.write(b'{"requests":[')
            for part, member in self._members(parts):
                f = files[part.index]
                if anthropic and not first[part.index]:
                    f.write(b",")
                first[part.index] = False
                f.write(member.wire.data if anthropic else member.wire.data + b"\n")
            if anthropic:
                for f in files.values():
                    f.write(b"]}")
        finally:
            for f in files.values():
                f.close()
        return paths

    def _members(self, parts: list[Part]) -> Iterator[tuple[Part, collect.Member]]:
        """The parts' lines read back, as submitted; UsageError once the scan shows an input changed."""
        owners = Membership(parts)
        prints = {p.index: Fingerprint() for p in parts}
        for ordinal, item in self._items():
            part = owners.owner(ordinal)
            if part is None:
                continue
            prints[part.index].add(item.custom_id)
            try:
                if item.error is not None:
                    raise InvalidRequestLine(item.error)
                wire = wire_request(item, self.settings, self.cfg.request.params, self.model)
            except InvalidRequestLine:  # a line that was valid when planned is no longer
                raise self._changed(part) from None
            yield part, collect.Member(item, wire)
        for part in parts:
            self._check_fingerprint(part, prints[part.index])

    async def _submit_part(self, state: State, part: Part, payload: str | None) -> None:
        provider = self.provider
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
            self._save()
        for _ in range(CREATE_TRIES):
            part.step, part.since = SUBMITTING, time.time()
            self._save()  # before the create: a crash from here on is looked up, not sent again
            try:
                if provider.uploads:
                    remote = await provider.create(part.file_id, part.endpoint, metadata(
                        state.run, part.index, part.lines, part.fingerprint, self.cfg.output.path))
                else:
                    assert payload is not None
                    remote = await provider.create(payload)
            except Unsure as exc:
                log.warning("batch part %d: %s: looking for it before trying again", part.index, exc)
                remote = await self._find(part)
                if remote is None:
                    continue
            self._adopt(part, remote)
            self.submitted_lines += part.lines
            self._save()
            log.info("batch part %d/%d submitted: %s (%d lines, %s%s)", part.index + 1, len(state.parts),
                     remote.id, part.lines, part.endpoint, f", {part.model}" if part.model else "")
            return
        raise ProviderError(f"batch part {part.index}: the create failed {CREATE_TRIES} times and no batch of it "
                            "exists: rerun the same command to try again")

    # ---- cancelling

    async def _cancel(self, state: State) -> None:
        never = [p for p in state.parts if p.step in (PLANNED, UPLOADED)]
        if never:
            for part, member in self._members(never):
                self._put(collect.never_ran(member, CANCELLED, None, self.ctx))
            self._flush()
            for part in never:
                part.step, part.end, part.status = COLLECTED, CANCELLED, "not submitted"
            self._save()
            log.info("cancelled %d batch parts that were never submitted (%d lines)", len(never),
                     sum(p.lines for p in never))
        for part in [p for p in state.parts if p.step == SUBMITTED and p.end is None]:
            try:
                remote = await self.provider.cancel(part.batch_id)
            except ProviderError as exc:  # it ended meanwhile (409), say: the poll sees how
                log.warning("batch part %d: %s", part.index, exc)
                continue
            self._seen(part, remote)
            log.info("batch %s: cancelling", part.batch_id)
        self._save()

    # ---- 5. polling and collecting

    async def _poll(self, state: State) -> None:
        wait = min(FIRST_POLL_S, self.settings.poll_interval_s)
        deadline = time.monotonic() + CANCEL_WAIT_S if self.settings.cancel else None
        while True:
            ended: list[tuple[Part, Remote]] = []
            for part in [p for p in state.parts if p.step == SUBMITTED]:
                remote = await self.provider.get(part.batch_id)
                self._seen(part, remote)
                if remote.end is not None:
                    ended.append((part, remote))
            self._save()
            if ended:
                await self._collect(ended)
            running = [p for p in state.parts if p.step == SUBMITTED]
            if not running:
                return
            self._log_waiting(running, force=not self.settings.wait)
            if self.stopping.is_set() or (not self.settings.wait and not self.settings.cancel):
                return
            if deadline is not None and time.monotonic() >= deadline:
                log.warning("%d batches are still being cancelled after %.0fs: rerun with --cancel to collect "
                            "them", len(running), CANCEL_WAIT_S)
                return
            try:
                await asyncio.wait_for(self.stopping.wait(), wait)
                return
            except TimeoutError:
                pass
            wait = min(wait * 2, self.settings.poll_interval_s)

    def _seen(self, part: Part, remote: Remote, quiet: bool = False) -> None:
        """A batch as last seen: kept in the state, and logged when its status or counts changed."""
        changed = (remote.status, remote.counts) != (part.status, part.counts)
        part.status, part.counts = remote.status, remote.counts
        if remote.end is not None:
            part.end, part.problem = remote.end, remote.problem
        if changed and not quiet:
            assert self.state is not None
            log.info("batch %d/%d %s: %s, %s", part.index + 1, len(self.state.parts), remote.id, remote.status,
                     remote.progress(), extra={"data": {"batch": remote.id, "part": part.index,
                                                        "status": remote.status, "counts": remote.counts}})

    def _log_waiting(self, running: list[Part], force: bool) -> None:
        """The batches still in progress: at once (`force`), else every --log-every (never with 0)."""
        now = time.monotonic()
        every = self.cfg.observe.log_every_s
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
        for part, member in self._members(parts):
            members[part.index][member.wire.wire_id] = member
        for part, remote in ended:
            await self._collect_one(part, remote, members.pop(part.index))
            part.step = COLLECTED
            self._save()

    async def _collect_one(self, part: Part, remote: Remote, members: dict[str, collect.Member]) -> None:
        batch_id = remote.id
        if remote.end != FAILED or remote.files:
            with tempfile.TemporaryFile() as results:
                await self.provider.results(remote, results)
                results.seek(0)
                with JsonlReader(results, name=f"the results of {batch_id}", max_line=RESULT_LINE_BYTES) as reader:
                    for outcome in collect.outcomes(((n, o) for n, _, o in reader.objects()),
                                                    self.provider.outcome, log.warning):
                        member = members.pop(outcome.wire_id, None)
                        if member is None:
                            log.warning("the results of %s name a request it does not hold (%r): skipped", batch_id,
                                        outcome.wire_id)
                            continue
                        if not self._written(member, batch_id):
                            self._put(collect.answered(member, outcome, batch_id, self.ctx))
        for member in members.values():
            if not self._written(member, batch_id):
                self._put(collect.missing(member, remote.end, batch_id, self.ctx, remote.problem))
        self._flush()
        log.info("batch %s %s: records written for its %d lines", batch_id, remote.end, part.lines)

    def _written(self, member: collect.Member, batch_id: str) -> bool:
        """Whether a collection the last run did not finish wrote this line's record already."""
        return sorted_has(self.found.written, id_hash(member.item.custom_id + "\0" + batch_id))

    # ---- writing

    def _put(self, record: Record) -> None:
        assert self.writer is not None
        self.writer.put(record)
        self.written += 1

    def _flush(self) -> None:
        """What is queued, written and fsynced (before the state says it is: the crash model's order)."""
        writer = self.writer
        if writer is None or not writer.pending:
            return
        try:
            writer.flush_now()
            if writer.fsync.mode != "never":
                os.fsync(writer.fd)
        except OSError as exc:
            raise OutputFailed(f"cannot write {self.cfg.output.path}: {exc.strerror or exc}; the state file keeps the "
                               "batches: the same command collects them again") from None

    # ---- the provider and the signals

    def _provider(self, session: aiohttp.ClientSession) -> Any:
        transport = self.cfg.transport
        headers = {k: v for k, v in self.creds.for_api(self.settings.provider).items()
                   if k.lower() not in ("content-type", "accept")}
        if self.settings.provider == ANTHROPIC:
            headers["anthropic-version"] = transport.anthropic_version
        client = Client(session, self.base_url, headers, self.creds.secrets, transport.retry,
                        env_proxy(self.base_url))
        return AnthropicBatches(client) if self.settings.provider == ANTHROPIC else OpenAIBatches(client)

    def _install_signals(self) -> Callable[[], None]:
        """The first SIGINT/SIGTERM stops after the step in progress. From the command line (`cli`) a second
        exits at once (the state file is whole at every moment: each step's outcome is written before the
        next starts); from Python the caller's handlers are back after the first, as `run` does it."""
        loop = asyncio.get_running_loop()
        previous: dict[int, Any] = {}

        def restore() -> None:
            while previous:
                sig, old = previous.popitem()
                signal.signal(sig, old)

        def handler(signum: int) -> None:
            code = EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM
            if self.signals:
                log.error("second signal: exiting now")
                os._exit(code)
            self.signals.append(code)
            if not self.cli:
                restore()
            log.warning("%s: stopping after the step in progress; the batches run on at the provider, and the "
                        "same command collects them", signal.Signals(signum).name)
            self.stopping.set()

        def on_signal(signum: int, frame: Any) -> None:  # between two bytecodes: hand it to the loop
            loop.call_soon_threadsafe(handler, signum)

        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                if signal.getsignal(sig) is not None:  # one not set from Python could not be put back
                    previous[sig] = signal.signal(sig, on_signal)
        except ValueError:  # not the main thread: signals stay with the caller
            pass
        return restore

    # ---- 6. the summary

    def _finish(self, started: datetime, duration: float, stopped: RunError | None) -> dict:
        from ..observe.progress import json_logs
        from ..plan import SUMMARY_MAX_EXACT
        from ..report.end_of_run import render
        from ..run import over_budget
        from ..stats import StatsAccumulator

        cfg, state = self.cfg, self.state
        assert state is not None
        stats = StatsAccumulator(max_exact=SUMMARY_MAX_EXACT, percentiles=cfg.observe.percentiles,
                                 window_s=cfg.observe.window_s)
        try:
            with FinalRecords(cfg.output.path, warn=lambda m: None) as records:
                for _, _, record in records:
                    stats.add(record)
        except OSError as exc:
            log.error("cannot read %s again: %s; the summary leaves its records out", cfg.output.path,
                      exc.strerror)
        summary = stats.summary(None)
        running = [p for p in state.parts if p.step in (SUBMITTING, SUBMITTED)]
        counts = summary["counts"]
        if stopped is not None:
            log.error("%s", stopped)
            code = stopped.exit_code
        elif self.signals:
            code = self.signals[0]
        elif running:
            code = EXIT_OK
            log.info("%d batches (%d lines) still in progress: run the same command again to collect them",
                     len(running), sum(p.lines for p in running))
        else:
            code = EXIT_FAILED if over_budget(cfg.checks.max_failed, counts.get("error", 0), counts.get("total", 0)) \
                else EXIT_OK
        section = {
            "state": self.state_path, "run": state.run, "api": state.provider, "in_progress": len(running),
            "lines_submitted": self.submitted_lines,
            "batches": [{"part": p.index, "id": p.batch_id, "endpoint": p.endpoint, "model": p.model,
                         "lines": p.lines, "status": p.status, "end": p.end, "collected": p.step == COLLECTED,
                         "counts": p.counts} for p in state.parts],
        }
        facts = RunFacts(started_at=started, ended_at=datetime.now(timezone.utc), duration_s=duration, exit_code=code,
                         interrupted=bool(self.signals) or stopped is not None, requests_sent=self.submitted_lines,
                         cancelled_in_flight=0, records_written=self.written,
                         stopped=str(stopped) if stopped is not None else None, extra={"batch": section})
        doc = build_document(cfg, summary, facts)
        self._cost(summary, doc)
        path = summary_path_for(cfg.output)
        try:
            if path is not None:
                write_document(path, doc)
        except OSError as exc:
            log.error("cannot write the summary %s: %s", path, exc.strerror)
        render(doc, path or "(stderr only)", as_json=json_logs())
        return doc

    def _cost(self, summary: dict, doc: dict) -> None:
        """With --price-input/--price-output (the live prices): the cost at the provider's batch price."""
        observe = self.cfg.observe
        if observe.price_input is None and observe.price_output is None:
            return
        from ..inputs.tokens import Pricing, cost

        factor = self.settings.limits.price_factor
        tokens = summary.get("tokens") or {}
        pricing = Pricing((observe.price_input or 0.0) * factor, (observe.price_output or 0.0) * factor)
        doc["cost_usd"] = cost(tokens.get("prompt", 0), tokens.get("completion", 0), pricing)
        doc["pricing"] = {"input_per_m": pricing.input_per_m, "output_per_m": pricing.output_per_m,
                          "batch_price_factor": factor}


def _ids(items: list[Any]) -> str:
    ids = [getattr(i, "batch_id", None) or getattr(i, "id", None) or f"part {getattr(i, 'index', '?')}"
           for i in items]
    return ", ".join(str(i) for i in ids[:5]) + (" ..." if len(ids) > 5 else "")
