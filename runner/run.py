"""One run from config to exit code: checks, lock, resume, engine, summary, signals.

The CLI, job files and the Python API all end here, so they behave the same.
Exit codes are the contract cron and CI rely on; each run-level failure is a
`RunError` that carries its own, and `execute` maps that alone.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from typing import Callable, Iterator

import anyio

from .config.run_config import FsyncPolicy, RunConfig, Stage
from .engine.answers import Answers
from .engine.hooks import open_cache, quota_hooks
from .engine.loop import Engine, EngineHooks
from .workers.openfiles import fit_connections
from .engine.schedule import TraceTimes
from .errors import (EXIT_CLIENT_BOUND, EXIT_FAILED, EXIT_OK, EXIT_OUTPUT, EXIT_SIGINT, EXIT_SIGTERM,
                     UsageError)
from .inputs.ids import SeenIds, resume_key
from .inputs.items import STDIN, InputItem, aiter_live, expand_inputs, is_regular, iter_items
from .observe.client_timing import ClientTiming, LagMonitor
from .observe.server_metrics import scraper_for
from .outputs.summary import RunFacts, build_document, summary_path_for, write_document
from .report.end_of_run import render
from .outputs.writer import ResultWriter, lock_output, open_output, unlock_output
from .batchapi.settings import refuse_batch_options
from .plan import Plan, make_plan
from .preflight import check_keys, credentials
from .record import Record
from .stream.headers import Credentials

log = logging.getLogger("streamrun")
STDOUT = "-"  # -o -: records to stdout


async def run_document(cfg: RunConfig, *, mock=None, show_progress: bool | None = None,
                       on_record: Callable[[Record], None] | None = None, cli: bool = False) -> dict:
    """The run, start to end; its summary document (with `exit_code`). RunError for a run that cannot start.

    `on_record` sees every record as it is written (the Python API's stream).
    `cli`: the command line runs it (its messages name flags; a second
    signal exits the process), not Python (see `_install_signals`).
    """
    if cfg.batch:
        raise UsageError("batch = true runs through the provider's Batch API: streamrun batch, streamrun job or "
                         "streamrun.run(..., batch=True), not a live run")
    refuse_batch_options(cfg)
    creds = credentials(cfg, local=mock is not None)  # the keys are checked once the inputs say whose they need
    paths = expand_inputs(cfg.inputs)
    live = [p for p in paths if not is_regular(p)]
    if live and len(cfg.stages) > 1:
        shown = "stdin" if live[0] == STDIN else live[0]
        raise UsageError(f"a sweep reads its inputs once per stage, so it cannot read {shown} "
                         "(a pipe, FIFO or stdin can be read only once): write it to a file first")
    _refuse_output_over_input(cfg, paths)
    if cfg.output == STDOUT:  # records to stdout for a pipe; logs and the summary stay on stderr
        if cfg.resume:
            raise UsageError("--resume needs an output file to read, not -o -")
        cfg = dataclasses.replace(cfg, fsync=FsyncPolicy("never"))  # a pipe cannot be fsynced
        lock_fd, fd = None, os.dup(sys.stdout.fileno())
    else:
        try:
            lock_fd = lock_output(os.path.realpath(cfg.output))  # a symlink to a locked output is the same one
        except OSError as exc:
            raise UsageError(f"cannot create {cfg.output}: {exc.strerror}") from None
    try:
        plan = make_plan(cfg, paths)
        check_keys(cfg, creds, plan.apis, local=mock is not None)
        if lock_fd is not None:
            try:
                fd = open_output(cfg.output, resume=cfg.resume, overwrite=cfg.overwrite, cli=cli)
            except OSError as exc:
                raise UsageError(f"cannot open {cfg.output}: {exc.strerror}") from None
        connections = fit_connections(cfg, in_process_server=mock is not None)  # the open-file limit
        if mock is None:
            return await Run(cfg, plan, fd, creds, show_progress, on_record=on_record, cli=cli,
                             connections=connections).execute()
        from .mock import serve

        # the dry run of the user's own file: the mock answers whatever model its lines or --model name
        async with serve(dataclasses.replace(mock, any_model=True)) as url:
            log.info("embedded mock server at %s", url)
            return await Run(dataclasses.replace(cfg, base_urls=(url,)), plan, fd, creds, show_progress,
                             on_record=on_record, cli=cli, connections=connections).execute()
    finally:
        if lock_fd is not None:
            unlock_output(os.path.realpath(cfg.output), lock_fd)


def _refuse_output_over_input(cfg: RunConfig, paths: list[str]) -> None:
    """`-o in.jsonl --overwrite` would truncate the input; `--resume` would append into it."""
    inputs = {os.path.realpath(p) for p in paths if p != STDIN}
    for what, path in (("output", cfg.output), ("summary", summary_path_for(cfg))):
        if path not in (None, STDOUT) and os.path.realpath(path) in inputs:
            raise UsageError(f"the {what} {path} is one of the input files: choose another -o")


class Run:
    """One run's parts and their lifetimes.

    The engine sends; the writer, the progress display and the event-loop
    lag monitor run beside it in one task group, so none of them can die
    unseen: a crash in any cancels the run and surfaces.  A writer that
    cannot write (a full disk) stops new requests at once and lets those in
    flight drain, then the run exits 4.
    """

    def __init__(self, cfg: RunConfig, plan: Plan, fd: int, creds: Credentials, show_progress: bool | None,
                 *, log_json: bool | None = None, on_record: Callable[[Record], None] | None = None,
                 cli: bool = False, connections: int | None = None) -> None:
        from .observe.progress import LiveCounters, ProgressLog, json_logs

        self._listener = on_record
        self.cli = cli
        self.cfg = cfg
        self.plan = plan
        self.stats = plan.stats
        self.counters = LiveCounters()
        self.timing = ClientTiming(cfg)  # each stage's loop lag, CPU and TTFT: may its numbers be trusted?
        self.hooks = EngineHooks(on_record=self._on_record, on_stage=self.timing.on_stage)
        quota_hooks(cfg, self.hooks)
        encode = None
        if cfg.output_format == "openai-batch":
            from .outputs.batch import encode_batch

            encode = encode_batch
        engine = Engine
        if cfg.workers > 1:  # worker processes send; this one still reads the inputs and writes (runner/workers)
            from .workers.pool import WorkerPool as engine
        # connections: fewer than -c allows (per worker with --workers) when the open-file limit is low
        self.engine = engine(cfg, headers=creds.headers, writer=None, hooks=self.hooks, secrets=creds.secrets,
                             auth=creds.auth, connector_limit=connections)
        self.writer = ResultWriter(fd, cfg.fsync, encode=encode, name=cfg.output, on_failure=self.engine.abort,
                                   on_written=self._on_written)
        self.engine.writer = self.writer
        self.engine.prior = plan.prior
        self.lag = LagMonitor(on_sample=self.timing.sample)
        # log_json: --log-format json (None: read from the configured log handler). Then no bar unless asked
        # for, since its escape codes are no JSON lines; progress and the summary are logged as JSON.
        self.log_json = json_logs() if log_json is None else log_json
        if show_progress is None and self.log_json:
            show_progress = False
        self.display = _progress(show_progress, self.counters, plan.total, self.engine, self.hooks)
        self.ticker = None  # without a bar, a progress log line every --log-every seconds
        if self.display is None and cfg.log_every_s > 0:
            adaptive = self.hooks.adaptive
            self.ticker = ProgressLog(
                self.counters, plan.total, lambda: self.engine.in_flight,
                (lambda: adaptive.limit) if adaptive is not None else (lambda: cfg.max_concurrency),
                cfg.log_every_s, as_json=self.log_json)
        self.scraper = scraper_for(cfg)  # --server-metrics: the server's /metrics, sampled beside the run
        self._live = not all(is_regular(p) for p in plan.paths)  # stdin, FIFOs, <(process substitution)
        self._seen_stdin = SeenIds() if self._live else None
        self._signals: list[int] = []
        self._lines_read = 0  # input lines read, in every stage: none at all is worth a warning

    def _on_record(self, record: Record) -> None:
        self.timing.observe(record)
        self.counters.on_record(record)
        if self._listener is not None:
            self._listener(record)
        err = record.error
        if err is not None and err.type == "invalid_input":
            log.error("%s", err.message)

    def _on_written(self, record: Record) -> None:
        """The summary counts the records that reached the output (not those a failed write lost)."""
        self.stats.add(record)
        if self.plan.held is not None:
            self.plan.held.written(record)

    def _count_held(self) -> None:
        """The failed records of earlier runs that no record of this run superseded stay final: count them."""
        if self.plan.held is None:
            return
        try:
            for record in self.plan.held.left():
                self.stats.add(record)
        except OSError as exc:
            log.error("cannot read %s again: %s; the summary leaves out its failed records", self.cfg.output,
                      exc.strerror)

    def stage_items(self, stage: Stage):
        """The stage's inputs: a blocking iterator for files, or, for pipes, an async one fed as lines arrive."""
        items = self._stage_items(stage)
        return aiter_live(items) if self._live else items

    def _stage_items(self, stage: Stage) -> Iterator[InputItem]:
        plan = self.plan
        trace = TraceTimes() if self.cfg.replay else None
        resumed = trace is not None and plan.done is not None and len(plan.done) > 0
        skip: float | None = None  # --resume: the time of the first line still to send, not waited for again
        late = 0
        for item in iter_items(plan.paths, self.cfg.limits.max_line_bytes, self.cfg.api, self.cfg.sharegpt):
            self._lines_read += 1
            if trace is not None and item.timestamp_ms is not None:  # every line, before any is left out
                item.timestamp_ms, backwards = trace.place(item.timestamp_ms)
                if backwards and not late:
                    log.warning("%s: its timestamp is before the line before it: sent right after that line "
                                "(--replay keeps file order; sort the trace by timestamp)", item.place)
                late += backwards
            if self._seen_stdin is not None:
                earlier = self._seen_stdin.check(item.custom_id, item.place)
                if earlier is not None:
                    log.error("duplicate custom_id %r at %s and %s: skipped", item.custom_id, earlier, item.place)
                    continue
            if plan.owns is not None and not plan.owns(item.custom_id):
                continue
            if plan.done is not None and resume_key(stage.label, item.custom_id) in plan.done:
                continue
            if resumed and item.timestamp_ms is not None:
                skip = item.timestamp_ms if skip is None else skip
                item.timestamp_ms -= skip
            yield item
        if late > 1:
            log.warning("--replay: %d lines were stamped before the line before them; each went right after it", late)

    def _warmup_items(self) -> Iterator[InputItem] | None:
        if not self.cfg.warmup or self._live:
            return None
        return (i for i in iter_items(self.plan.paths, self.cfg.limits.max_line_bytes, self.cfg.api, self.cfg.sharegpt)
                if i.error is None)

    async def execute(self) -> dict:
        started = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        cache = await open_cache(self.cfg)
        self.engine.answers = Answers(cache)
        self._signals, restore_signals = _install_signals(self.engine, self.writer, cli=self.cli)
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self.writer.run)
                tg.start_soon(self.lag.run)
                if self.display is not None:
                    tg.start_soon(self.display.run)
                if self.ticker is not None:
                    tg.start_soon(self.ticker.run)
                if self.scraper is not None:
                    tg.start_soon(self.scraper.run, started, t0)
                with self.display if self.display is not None else nullcontext():
                    result = await self.engine.run(self.stage_items, self._warmup_items())
                await self.writer.close()
                tg.cancel_scope.cancel()
        except asyncio.CancelledError:  # the caller stopped the run (a second Ctrl-C under the Python API, say)
            try:
                self.writer.flush_now()  # what is answered and queued is not lost
            except OSError:
                pass
            raise
        finally:
            restore_signals()
            if cache is not None:
                await cache.aclose()
        facts = RunFacts(
            started_at=started, ended_at=datetime.now(timezone.utc), duration_s=time.perf_counter() - t0,
            exit_code=0, interrupted=result.interrupted, requests_sent=result.sent,
            cancelled_in_flight=result.cancelled, records_written=self.writer.written,
            records_not_written=self.engine.guard.dropped + self.engine.reach.dropped + self.writer.pending,
            event_loop_lag=self.lag.summary() if self.cfg.workers == 1 else self.engine.lag_summary(),
            endpoints=result.endpoints, extra=self._extra())
        self._count_held()
        summary = self.stats.summary(self.cfg.slos or None)
        facts.exit_code = _exit_code(self.cfg, summary, result.interrupted, self._signals,
                                     facts.extra["client_bound"])
        fatal = self.writer.failed or self.engine.fatal
        if fatal is not None and not self._signals:
            log.error("%s", fatal)
            if self.writer.pending:
                log.error("%d records could not be written; their requests are sent again by --resume",
                          self.writer.pending)
            facts.exit_code, facts.stopped = fatal.exit_code, str(fatal)
        if not self._lines_read and fatal is None and not result.interrupted:
            log.warning("no input lines in %s", ", ".join("stdin" if p == STDIN else p for p in self.plan.paths))
        doc = build_document(self.cfg, summary, facts)
        _cost(self.cfg, summary, doc)
        path = summary_path_for(self.cfg)
        try:
            if path is not None:
                write_document(path, doc)
        except OSError as exc:
            log.error("cannot write the summary %s: %s", path, exc.strerror)
            facts.exit_code = doc["exit_code"] = EXIT_OUTPUT
        render(doc, path or "(stderr only)", stage_table=len(self.cfg.stages) > 1 and self.writer.failed is None
               and self.cfg.output_format == "streamrun" and self.cfg.output != STDOUT, as_json=self.log_json)
        return doc

    def _extra(self) -> dict:
        extra: dict = self.timing.document(self.engine.worker_timing() if self.cfg.workers > 1 else None)
        if self.hooks.adaptive is not None:
            a = self.hooks.adaptive
            extra["adaptive_concurrency"] = {"final_limit": a.limit, "max": self.cfg.max_concurrency,
                                             "min_seen": a.min_limit_seen, "throttles": a.throttles,
                                             "decreases": a.decreases}
        if self.engine.answers.cache is not None:
            extra["cache"] = {"path": self.cfg.cache, "mode": self.cfg.cache_mode,
                              **self.engine.answers.cache.stats.as_dict()}
        if self.engine.result.sweep is not None:
            extra["sweep"] = self.engine.result.sweep
        if self.hooks.quota is not None:
            extra["quota"] = {"rpm": self.cfg.rpm, "tpm": self.cfg.tpm, "burst_s": self.cfg.burst_s,
                              "waits": self.hooks.quota.waits, "wait_s": self.hooks.quota.wait_s,
                              "throttles": self.hooks.quota.throttles}
        if self.scraper is not None:
            extra["server_metrics"] = self.scraper.section()
        if self.cfg.workers > 1:
            extra["workers"] = self.engine.section(parent_lag=self.lag.summary())
        return extra


def _cost(cfg: RunConfig, summary: dict, doc: dict) -> None:
    """Token totals are in the summary already; add the price when one was given."""
    if cfg.price_input is None and cfg.price_output is None:
        return
    from .inputs.tokens import Pricing, cost

    tokens = summary.get("tokens") or {}
    pricing = Pricing(cfg.price_input or 0.0, cfg.price_output or 0.0)
    doc["cost_usd"] = cost(tokens.get("prompt", 0), tokens.get("completion", 0), pricing)
    doc["pricing"] = {"input_per_m": pricing.input_per_m, "output_per_m": pricing.output_per_m}


def _exit_code(cfg: RunConfig, summary: dict, interrupted: bool, signal_code: list[int], client_bound: bool) -> int:
    if interrupted and signal_code:
        return signal_code[0]
    counts = summary["counts"]
    if over_budget(cfg.max_failed, counts.get("error", 0), counts.get("total", 0)):
        return EXIT_FAILED
    return EXIT_CLIENT_BOUND if cfg.strict_timing and client_bound else EXIT_OK


def over_budget(max_failed: float | None, failed: int, total: int) -> bool:
    """--max-failed: more failed records than a fraction (< 1) of them all, or than a count; none by default."""
    budget = max_failed or 0
    allowed = budget * total if budget < 1 else budget
    return failed > allowed


def _progress(show: bool | None, counters, total, engine, hooks):
    if show is False or (show is None and not sys.stderr.isatty()):
        return None
    from .observe.progress import ProgressDisplay

    adaptive = hooks.adaptive
    conc = (lambda: str(adaptive.limit)) if adaptive is not None else (lambda: str(engine.cfg.max_concurrency))
    return ProgressDisplay(counters, total, lambda: engine.in_flight, conc)


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _install_signals(engine: Engine, writer: ResultWriter, *, cli: bool) -> tuple[list[int], Callable[[], None]]:
    """The first SIGINT/SIGTERM drains: no new requests, those in flight finish, the summary is written.

    From the command line (`cli`) a second one exits at once after writing
    what is queued.  From Python the caller's own handlers are back after
    the first, so a second one does what the caller set up, never ends the
    process under it: Python's default and asyncio.run raise
    KeyboardInterrupt in the caller; a notebook interrupts the cell.
    Returns the exit codes of the signals received, and the function that
    puts the caller's handlers back (the run calls it when it ends, whatever
    happened; it may be called again).
    """
    loop = asyncio.get_running_loop()
    received: list[int] = []
    previous: dict[int, object] = {}

    def restore() -> None:
        while previous:
            sig, old = previous.popitem()
            signal.signal(sig, old)

    def handler(signum: int) -> None:
        code = EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM
        if received:  # only the command line's handlers are still in place for a second signal
            try:
                writer.flush_now()
            except OSError:
                pass
            log.error("second signal: exiting now")
            os._exit(code)
        received.append(code)
        if not cli:
            restore()
        log.warning("%s: no new requests; draining %d in flight for up to %gs (%s)",
                    signal.Signals(signum).name, engine.in_flight, engine.cfg.drain_timeout_s,
                    "signal again to exit now" if cli else "signal again to interrupt")
        engine.stop()

    def on_signal(signum: int, frame) -> None:  # between two bytecodes of the main thread: hand it to the loop
        loop.call_soon_threadsafe(handler, signum)

    try:
        for sig in _SIGNALS:
            if signal.getsignal(sig) is None:  # a handler not set from Python could not be put back: leave it
                continue
            previous[sig] = signal.signal(sig, on_signal)
    except ValueError:  # not the main thread (a notebook's worker, say)
        log.debug("signals stay with the caller: not on the main thread")
    return received, restore
