"""`streamrun batch`: the inputs through a provider's Batch API, into the same output and summary as `run`.

Why a driver of its own: a batch run has no engine (nothing is sent
live); it has steps that each cost or commit something, and a state file
that must say how far each got before the next one starts.  The same
command, run again after a crash, a signal or `kill -9`, picks up where
the state file says, and never submits a line twice:

1. lock the output (exit 3 when another run holds it); read its final
   records (`output`): a line with one is done, unless `--resubmit-failed`
   and it failed; duplicate custom_ids stop the run (exit 2) before
   anything is uploaded;
2. read the inputs once (`lines`): the lines of parts not yet collected are
   checked against their fingerprints, a line no batch can take is an
   `invalid_input` record, every other line without a final record is to
   be submitted;
3. find what a crash left unknown (`submit`): a part whose create was sent
   but whose batch id was not kept is looked for among the provider's
   batches before anything is submitted;
4. plan the lines into parts and write the state, then submit each part:
   upload (OpenAI), state, create, state (`submit`);
5. poll, and collect each batch that ended: its results become one record
   per line, fsynced, then the part is marked collected (`poll`);
6. the summary document and the exit code (`summary`): 0 while batches are
   still running (`--no-wait`), else the failure budget over the final
   records, as `run`.

`--cancel` submits nothing: it cancels the parts that were submitted, waits
(at most `poll.CANCEL_WAIT_S`) for them to end, and collects them; lines of
parts never submitted get `batch_cancelled` records at once.  The first
SIGINT or SIGTERM stops after the step in progress (`signals`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from datetime import UTC, datetime
from typing import Any

import aiohttp

from ..config.run_config import RunConfig
from ..errors import OutputFailed, RunError, UsageError
from ..inputs.items import expand_inputs, is_regular, scan_inputs
from ..outputs.writer import lock_output, unlock_output
from ..preflight import check_keys, credentials
from ..stream.endpoints import public_url
from ..stream.headers import ANTHROPIC, Credentials
from ..stream.network import Network
from . import collect
from .anthropic import AnthropicBatches
from .http import Client
from .lines import InputLines
from .openai import OpenAIBatches
from .output import Found, Records, prepare_output
from .poll import Poller
from .settings import BatchSettings
from .signals import install_signals
from .state import Ledger, State, shown_ids, state_path_for
from .submit import Submitter
from .summary import Ending, finish
from .work import BatchWork

log = logging.getLogger("streamrun")


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


class BatchRun:
    """One invocation: the output and its state file, the input lines, the provider, and the steps in order."""

    def __init__(self, cfg: RunConfig, settings: BatchSettings, creds: Credentials, paths: list[str],
                 base_url: str, *, local: bool, cli: bool = False) -> None:
        self.cfg, self.settings, self.creds, self.paths = cfg, settings, creds, paths
        self.base_url, self.local, self.cli = base_url, local, cli
        self.state_path = state_path_for(cfg.output.path)
        self.ledger: Ledger | None = None
        request = cfg.request
        self.ctx = collect.Context(request.model or request.params.get("model"), creds.secrets, public_url(base_url))
        self.lines = InputLines(paths, cfg.transport, cfg.sharegpt, request.params, settings, self.ctx,
                                self.state_path)
        self.signals: list[int] = []
        self.stopping = asyncio.Event()
        self.submitter: Submitter | None = None

    async def execute(self) -> dict:
        started, t0 = datetime.now(UTC), time.perf_counter()
        cfg = self.cfg
        scan = scan_inputs(self.paths, api=cfg.transport.api, sharegpt=cfg.sharegpt)
        if scan.duplicates:
            shown = "; ".join(f"{cid!r} at {a} and {b}" for cid, a, b in scan.duplicates[:5])
            more = f" (and {len(scan.duplicates) - 5} more)" if len(scan.duplicates) > 5 else ""
            raise UsageError(f"duplicate custom_id: {shown}{more}: each line of a batch needs an id of its own")
        check_keys(cfg, self.creds, frozenset({self.settings.provider}), local=self.local)
        loaded, found = prepare_output(cfg.output, self.state_path)
        records = Records(cfg.output)
        self.signals, restore = install_signals(self.stopping, cli=self.cli)
        stopped: RunError | None = None
        try:
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=cfg.transport.timeouts.connect,
                                            sock_read=cfg.transport.timeouts.total or 300.0)
            # --ca-cert, --client-cert, --insecure and --proxy hold for the provider's Batch API as for a live run
            network = Network.from_config(cfg.transport)
            connector = aiohttp.TCPConnector(ssl=network.connector_ssl())
            async with aiohttp.ClientSession(timeout=timeout, auto_decompress=True, connector=connector) as session:
                await self._steps(self._provider(session, network), loaded, found, records)
        except RunError as exc:  # the provider refused, the output failed, an input changed: said, summarised
            stopped = exc
        finally:
            restore()
            try:
                records.flush()
            except OutputFailed as exc:
                stopped = stopped or exc
            finally:
                records.close()
        assert self.ledger is not None
        submitted = self.submitter.submitted_lines if self.submitter is not None else 0
        return finish(cfg, self.settings, self.ledger, Ending(started, time.perf_counter() - t0, stopped,
                                                              self.signals, submitted, records.written))

    async def _steps(self, provider: Any, loaded: State | None, found: Found, records: Records) -> None:
        ledger = self.ledger = self._start_state(loaded)
        settings = self.settings
        pending = self.lines.to_submit(ledger.state.parts, found, settings.resubmit_failed,
                                       lambda item, why: records.put(collect.invalid(item, why, self.ctx)))
        records.flush()
        if not pending and not any(p.pending for p in ledger.state.parts):
            failed = len(found.failed)
            log.info("nothing to submit: every line of the inputs has its final record in %s%s",
                     self.cfg.output.path, f"; {failed} failed (--resubmit-failed submits them again)" if failed
                     else "")
        work = BatchWork(provider, ledger, self.lines, records, found, settings, self.stopping)
        submitter = self.submitter = Submitter(work, self.cfg.output.path)
        await submitter.reconcile()
        if settings.cancel:
            await submitter.cancel()
        else:
            if pending:
                await submitter.plan(pending)
            await submitter.submit()
        if not self.stopping.is_set():
            await Poller(work, self.cfg.observe.log_every_s).poll()

    def _start_state(self, loaded: State | None) -> Ledger:
        """The state file's run, or a new one saved before anything is sent (every batch carries its id);
        UsageError when its batches are another API's or at another URL."""
        shown = public_url(self.base_url)
        if loaded is None:
            self.ledger = Ledger(self.state_path, State.new(self.settings.provider, shown, self.cfg.output.path))
            self.ledger.save()
            return self.ledger
        self.ledger = Ledger(self.state_path, loaded)
        pending = self.ledger.running()
        if loaded.provider != self.settings.provider and loaded.parts:
            raise UsageError(f"{self.state_path} holds {loaded.provider}'s batches: rerun with the same --api")
        if loaded.base_url != shown and pending:
            raise UsageError(f"{self.state_path}: its batches ({shown_ids(pending)}) are at {loaded.base_url}, not "
                             f"{shown}: rerun with that --base-url")
        if loaded.model is not None and self.ctx.model is None:
            self.ctx.model = loaded.model
        return self.ledger

    def _provider(self, session: aiohttp.ClientSession, network: Network) -> Any:
        transport = self.cfg.transport
        headers = {k: v for k, v in self.creds.for_api(self.settings.provider).items()
                   if k.lower() not in ("content-type", "accept")}
        if self.settings.provider == ANTHROPIC:
            headers["anthropic-version"] = transport.anthropic_version
        client = Client(session, self.base_url, headers, self.creds.secrets, transport.retry,
                        network.proxy_for(self.base_url))
        return AnthropicBatches(client) if self.settings.provider == ANTHROPIC else OpenAIBatches(client)
