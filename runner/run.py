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
import random
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, nullcontext
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from .aio import install_stop_signals
from .config.run_config import (
    BatchConfig,
    FsyncPolicy,
    LoadConfig,
    ObserveConfig,
    OutputConfig,
    RunConfig,
    Stage,
    TransportConfig,
)
from .engine.answers import Answers
from .engine.hooks import engine_hooks, open_answers
from .engine.loop import Engine, Items
from .engine.quota import QuotaLimiter
from .engine.schedule import TraceTimes
from .errors import (
    EXIT_CLIENT_BOUND,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_OUTPUT,
    EXIT_SIGINT,
    RunError,
    UsageError,
)
from .inputs.ids import SeenIds, resume_key
from .inputs.items import STDIN, InputItem, aiter_live, expand_inputs, is_regular, iter_items
from .observe.client_timing import ClientTiming, LagMonitor
from .observe.pushgateway import Outcome, PushSettings, apush
from .observe.server_metrics import scraper_for
from .observe.tracing import RequestTracer, TraceSettings
from .outputs.summary import RunFacts, build_document, summary_path_for, write_document
from .outputs.writer import ResultWriter, lock_output, open_output, unlock_output
from .plan import Plan, make_plan
from .preflight import check_keys, credentials
from .record import Record
from .report.end_of_run import render
from .stream.headers import Credentials
from .stream.network import Network
from .workers.openfiles import fit_connections

if TYPE_CHECKING:  # the mock only for a dry run, the progress display only for a run
    from .mock import MockConfig
    from .observe.progress import LiveCounters, ProgressDisplay

log = logging.getLogger("streamrun")
STDOUT = "-"  # -o -: records to stdout


async def run_document(cfg: RunConfig, *, mock: MockConfig | None = None, show_progress: bool | None = None,
                       on_record: Callable[[Record], None] | None = None, cli: bool = False) -> dict:
    """The run, start to end; its summary document (with `exit_code`). RunError for a run that cannot start.

    `mock`: the embedded mock answers (a dry run of the user's own file).
    `on_record` sees every record as it is written (the Python API's stream).
    `cli`: the command line runs it (its messages name flags; a second
    signal exits the process), not Python (see `_install_signals`).

    Every ending passes here, so --push-gateway pushes from here: the
    summary's numbers, or the exit code of a run that could not start.
    """
    t0 = time.perf_counter()
    run = Run(cfg, mock=mock, show_progress=show_progress, on_record=on_record, cli=cli)
    push = PushSettings.from_config(cfg.observe, cfg.job)
    if push is None:
        return await run.execute()
    try:
        doc = await run.execute()
    except RunError as exc:
        await apush(push, Outcome.of_failure(exc.exit_code, time.perf_counter() - t0))
        raise
    except KeyboardInterrupt:  # Ctrl-C before the run's own handlers were in place
        await apush(push, Outcome.of_failure(EXIT_SIGINT, time.perf_counter() - t0))
        raise
    await apush(push, Outcome.of_summary(doc))
    return doc


class Run:
    """One run, from its config to its summary document.

    Why one object: the run takes its config once, here, and each phase
    hands on the group it concerns.  First what can be known before the
    first request, each failure exit 2 with nothing sent: the credentials,
    the inputs, the output (locked), the plan (resume, the total), the keys
    the lines need, the open-file limit.  Then the run's parts, built in one
    step (`Running`), send and write; last the summary.
    """

    def __init__(self, cfg: RunConfig, *, mock: MockConfig | None = None, show_progress: bool | None = None,
                 on_record: Callable[[Record], None] | None = None, cli: bool = False) -> None:
        self.cfg = cfg
        self.mock = mock
        self.show_progress = show_progress
        self.on_record = on_record
        self.cli = cli

    async def execute(self) -> dict:
        cfg, local = self.cfg, self.mock is not None
        _not_a_batch_run(cfg.batch)
        tracing = TraceSettings.from_config(cfg.observe)  # asked for and not installed: exit 2 before anything
        creds = credentials(cfg, local=local)  # the keys are checked once the inputs say whose they need
        paths = _input_paths(cfg.inputs, cfg.load)
        output = _checked_output(cfg.output, paths)
        lock_fd = None if output.path == STDOUT else _lock(output)
        try:
            plan = make_plan(cfg, paths)
            check_keys(cfg, creds, plan.apis, local=local)
            fd = os.dup(sys.stdout.fileno()) if lock_fd is None else _open(output, cli=self.cli)
            connections = fit_connections(cfg.load, in_process_server=local)  # the open-file limit
            async with open_answers(cfg.checks) as answers, self._serving(cfg.transport) as transport:
                cfg = dataclasses.replace(cfg, output=output, transport=transport)
                return await Running(cfg, plan, fd, creds, answers, self.show_progress, on_record=self.on_record,
                                     cli=self.cli, connections=connections, tracing=tracing).execute()
        finally:
            if lock_fd is not None:
                unlock_output(os.path.realpath(output.path), lock_fd)

    @asynccontextmanager
    async def _serving(self, transport: TransportConfig) -> AsyncIterator[TransportConfig]:
        """The transport as given; with `mock`, to the embedded mock, which answers whatever model the
        lines or --model name (the dry run of the user's own file), for as long as the run."""
        if self.mock is None:
            yield transport
            return
        from .mock import serve

        async with serve(dataclasses.replace(self.mock, any_model=True)) as url:
            log.info("embedded mock server at %s", url)
            yield dataclasses.replace(transport, base_urls=(url,))


def _not_a_batch_run(batch: BatchConfig) -> None:
    """A batch run's settings on a live run are a usage error (they would do nothing here): `batch = true`
    runs through runner/batchapi, and its other keys (--no-wait, ...) go with it, never alone."""
    if batch.enabled:
        raise UsageError("batch = true runs through the provider's Batch API: streamrun batch, streamrun job or "
                         "streamrun.run(..., batch=True), not a live run")
    from .config.options import BY_FIELD

    unset = BatchConfig()
    given = [BY_FIELD[f"batch.{f.name}"].key for f in dataclasses.fields(batch)
             if getattr(batch, f.name) != getattr(unset, f.name)]
    if given:
        raise UsageError(f"{', '.join(str(k) for k in given)}: keys of a batch run; add batch = true (or run "
                         "streamrun batch), or remove them")


def _input_paths(inputs: tuple[str, ...], load: LoadConfig) -> list[str]:
    """The input files the globs name; a sweep reads them once per stage, which a pipe cannot give."""
    paths = expand_inputs(inputs)
    live = [p for p in paths if not is_regular(p)]
    if live and len(load.stages) > 1:
        shown = "stdin" if live[0] == STDIN else live[0]
        raise UsageError(f"a sweep reads its inputs once per stage, so it cannot read {shown} "
                         "(a pipe, FIFO or stdin can be read only once): write it to a file first")
    return paths


def _checked_output(output: OutputConfig, paths: list[str]) -> OutputConfig:
    """The output as the run writes it: never over an input; `-o -` (records to stdout for a pipe; logs and
    the summary stay on stderr) is not fsynced, and has nothing to resume."""
    _refuse_output_over_input(output, paths)
    if output.path != STDOUT:
        return output
    if output.resume:
        raise UsageError("--resume needs an output file to read, not -o -")
    return dataclasses.replace(output, fsync=FsyncPolicy("never"))  # a pipe cannot be fsynced


def _lock(output: OutputConfig) -> int:
    try:
        return lock_output(os.path.realpath(output.path))  # a symlink to a locked output is the same one
    except OSError as exc:
        raise UsageError(f"cannot create {output.path}: {exc.strerror}") from None


def _open(output: OutputConfig, *, cli: bool) -> int:
    try:
        return open_output(output.path, resume=output.resume, overwrite=output.overwrite, cli=cli)
    except OSError as exc:
        raise UsageError(f"cannot open {output.path}: {exc.strerror}") from None


def _refuse_output_over_input(output: OutputConfig, paths: list[str]) -> None:
    """`-o in.jsonl --overwrite` would truncate the input; `--resume` would append into it."""
    inputs = {os.path.realpath(p) for p in paths if p != STDIN}
    for what, path in (("output", output.path), ("summary", summary_path_for(output))):
        if path not in (None, STDOUT) and os.path.realpath(path) in inputs:
            raise UsageError(f"the {what} {path} is one of the input files: choose another -o")


class Running:
    """One run's parts and their lifetimes, built in one step.

    The engine sends; the writer, the progress display and the event-loop
    lag monitor run beside it in one task group, so none of them can die
    unseen: a crash in any cancels the run and surfaces.  A writer that
    cannot write (a full disk) stops new requests at once and lets those in
    flight drain, then the run exits 4.
    """

    def __init__(self, cfg: RunConfig, plan: Plan, fd: int, creds: Credentials, answers: Answers,
                 show_progress: bool | None, *, log_json: bool | None = None,
                 on_record: Callable[[Record], None] | None = None, cli: bool = False,
                 connections: int | None = None, tracing: TraceSettings | None = None) -> None:
        from .observe.progress import LiveCounters, ProgressLog, json_logs

        self._listener = on_record
        self.cli = cli
        self.cfg = cfg
        self.plan = plan
        self.stats = plan.stats
        self.answers = answers
        self.counters = LiveCounters()
        self.timing = ClientTiming(cfg.load.stages)  # each stage's loop lag, CPU and TTFT: may they be trusted?
        # --otlp-endpoint: spans are made where requests are sent, here or in each worker process
        self.tracer = RequestTracer(tracing) if tracing is not None and cfg.load.workers == 1 else None
        self.hooks = engine_hooks(cfg.load, cfg.request.model, on_record=self._on_record,
                                  on_stage=self.timing.on_stage, tracer=self.tracer)
        encode = None
        if cfg.output.format == "openai-batch":
            from .outputs.batch import encode_batch

            encode = encode_batch
        self.writer = ResultWriter(fd, cfg.output.fsync, encode=encode, name=cfg.output.path,
                                   on_failure=self._cannot_write, on_written=self._on_written)
        # connections: fewer than -c allows (per worker with --workers) when the open-file limit is low
        self.engine, self.workers = _engine(cfg, creds=creds, hooks=self.hooks, writer=self.writer, answers=answers,
                                            prior=plan.prior, connections=connections,
                                            network=Network.from_config(cfg.transport))  # TLS settings and proxies
        self.lag = LagMonitor(on_sample=self.timing.sample)
        # log_json: --log-format json (None: read from the configured log handler). Then no bar unless asked
        # for, since its escape codes are no JSON lines; progress and the summary are logged as JSON.
        self.log_json = json_logs() if log_json is None else log_json
        if show_progress is None and self.log_json:
            show_progress = False
        concurrency = _concurrency(self.engine, cfg.load.max_concurrency)
        self.display = _progress(show_progress, self.counters, plan.total, self.engine, concurrency)
        self.ticker = None  # without a bar, a progress log line every --log-every seconds
        if self.display is None and cfg.observe.log_every_s > 0:
            self.ticker = ProgressLog(self.counters, plan.total, lambda: self.engine.in_flight, concurrency,
                                      cfg.observe.log_every_s, as_json=self.log_json)
        self.scraper = scraper_for(cfg)  # --server-metrics: the server's /metrics, sampled beside the run
        self._live = not all(is_regular(p) for p in plan.paths)  # stdin, FIFOs, <(process substitution)
        self._seen_stdin = SeenIds() if self._live else None
        self._signals: list[int] = []
        self._lines_read = 0  # input lines read, in every stage: none at all is worth a warning

    def _cannot_write(self, error: RunError) -> None:
        """The writer failed (a full disk): no new requests; those in flight drain (exit 4)."""
        self.engine.abort(error)

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
            log.error("cannot read %s again: %s; the summary leaves out its failed records", self.cfg.output.path,
                      exc.strerror)

    def stage_items(self, stage: Stage) -> Items:
        """The stage's inputs: a blocking iterator for files, or, for pipes, an async one fed as lines arrive."""
        items = self._stage_items(stage)
        return aiter_live(items) if self._live else items

    def _stage_items(self, stage: Stage) -> Iterator[InputItem]:
        plan = self.plan
        trace = TraceTimes() if self.cfg.load.replay else None
        resumed = trace is not None and plan.done is not None and len(plan.done) > 0
        skip: float | None = None  # --resume: the time of the first line still to send, not waited for again
        late = 0
        for item in self._items():
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
        if not self.cfg.load.warmup or self._live:
            return None
        return (i for i in self._items() if i.error is None)

    def _items(self) -> Iterator[InputItem]:
        """The input lines, read as the plan read them."""
        cfg = self.cfg
        return iter_items(self.plan.paths, cfg.transport.limits.max_line_bytes, cfg.transport.api, cfg.sharegpt)

    async def execute(self) -> dict:
        started = datetime.now(UTC)
        t0 = time.perf_counter()
        self._signals, restore_signals = _install_signals(self.engine, self.writer, self.cfg.load.drain_timeout_s,
                                                          cli=self.cli)
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
                    result = await self.engine.run(self.cfg.load, self.stage_items, self._warmup_items())
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
            if self.tracer is not None:  # the last spans exported, on every ending (a SIGTERM's drain too)
                await self.tracer.aclose()
        facts = RunFacts(
            started_at=started, ended_at=datetime.now(UTC), duration_s=time.perf_counter() - t0,
            exit_code=EXIT_OK, interrupted=result.interrupted, requests_sent=result.sent,
            cancelled_in_flight=result.cancelled, records_written=self.writer.written,
            records_not_written=self.engine.guard.dropped + self.engine.reach.dropped + self.writer.pending,
            event_loop_lag=self.lag.summary() if self.workers is None else self.workers.lag_summary(),
            endpoints=result.endpoints, extra=self._extra())
        self._count_held()
        summary = self.stats.summary(self.cfg.observe.slos or None)
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
        _cost(self.cfg.observe, summary, doc)
        path = summary_path_for(self.cfg.output)
        try:
            if path is not None:
                write_document(path, doc)
        except OSError as exc:
            log.error("cannot write the summary %s: %s", path, exc.strerror)
            facts.exit_code = doc["exit_code"] = EXIT_OUTPUT
        stages = self.cfg.load.stages
        render(doc, path or "(stderr only)", stage_table=len(stages) > 1 and self.writer.failed is None
               and self.cfg.output.format == "streamrun" and self.cfg.output.path != STDOUT, as_json=self.log_json)
        return doc

    def _extra(self) -> dict:
        load, workers = self.cfg.load, self.workers
        extra: dict = self.timing.document(workers.worker_timing() if workers is not None else None)
        adaptive = self.engine.adaptive
        if adaptive is not None:
            extra["adaptive_concurrency"] = {"final_limit": adaptive.limit, "max": load.max_concurrency,
                                             "min_seen": adaptive.min_limit_seen, "throttles": adaptive.throttles,
                                             "decreases": adaptive.decreases}
        cache = self.answers.cache
        if cache is not None:
            extra["cache"] = {"path": self.cfg.checks.cache, "mode": self.cfg.checks.cache_mode,
                              **cache.stats.as_dict()}
        if self.engine.result.sweep is not None:
            extra["sweep"] = self.engine.result.sweep
        quota = self.hooks.quota
        if isinstance(quota, QuotaLimiter):  # this process's limiter (with --workers too: the workers ask it)
            extra["quota"] = {"rpm": load.rpm, "tpm": load.tpm, "burst_s": load.burst_s, "waits": quota.waits,
                              "wait_s": quota.wait_s, "throttles": quota.throttles}
        if self.scraper is not None:
            extra["server_metrics"] = self.scraper.section()
        if workers is not None:
            extra["workers"] = workers.section(parent_lag=self.lag.summary())
        return extra


class WorkerReports(Protocol):
    """What worker processes report beside the Engine they send for (runner/workers/pool.py's WorkerPool):
    their loops' lag taken together, each one's timing per stage, and the summary's `workers` section."""

    def lag_summary(self) -> dict[str, Any]: ...

    def worker_timing(self) -> list[list[dict[str, Any]]]: ...

    def section(self, parent_lag: dict[str, Any]) -> dict[str, Any]: ...


def _engine(cfg: RunConfig, **collaborators: Any) -> tuple[Engine, WorkerReports | None]:
    """The run's engine, built in one step: this process sends, or worker processes do (--workers N; this
    one still reads the inputs and writes the records: runner/workers).  With workers, the engine is
    their pool, which also reports for them (the second of the pair; None without workers)."""
    if cfg.load.workers > 1:
        from .workers.pool import WorkerPool

        pool = WorkerPool(cfg, **collaborators)
        return pool, pool
    return Engine(cfg.transport, cfg.request, cfg.checks, rng=random.Random(cfg.load.seed), **collaborators), None


def _cost(observe: ObserveConfig, summary: dict, doc: dict) -> None:
    """Token totals are in the summary already; add the price when one was given."""
    if observe.price_input is None and observe.price_output is None:
        return
    from .inputs.tokens import Pricing, cost

    tokens = summary.get("tokens") or {}
    pricing = Pricing(observe.price_input or 0.0, observe.price_output or 0.0)
    doc["cost_usd"] = cost(tokens.get("prompt", 0), tokens.get("completion", 0), pricing)
    doc["pricing"] = {"input_per_m": pricing.input_per_m, "output_per_m": pricing.output_per_m}


def _exit_code(cfg: RunConfig, summary: dict, interrupted: bool, signal_code: list[int], client_bound: bool) -> int:
    if interrupted and signal_code:
        return signal_code[0]
    counts = summary["counts"]
    if over_budget(cfg.checks.max_failed, counts.get("error", 0), counts.get("total", 0)):
        return EXIT_FAILED
    return EXIT_CLIENT_BOUND if cfg.observe.strict_timing and client_bound else EXIT_OK


def over_budget(max_failed: float | None, failed: int, total: int) -> bool:
    """--max-failed: more failed records than a fraction (< 1) of them all, or than a count; none by default
    (`streamrun batch` holds its records to the same budget: runner/batchapi)."""
    budget = max_failed or 0
    allowed = budget * total if budget < 1 else budget
    return failed > allowed


def _concurrency(engine: Engine, most: int) -> Callable[[], int]:
    """The concurrency the progress shows: adaptive concurrency's limit as it moves, else -c."""
    adaptive = engine.adaptive
    return (lambda: adaptive.limit) if adaptive is not None else (lambda: most)


def _progress(show: bool | None, counters: LiveCounters, total: int | None, engine: Engine,
              concurrency: Callable[[], int]) -> ProgressDisplay | None:
    if show is False or (show is None and not sys.stderr.isatty()):
        return None
    from .observe.progress import ProgressDisplay

    return ProgressDisplay(counters, total, lambda: engine.in_flight, lambda: str(concurrency()))


def _install_signals(engine: Engine, writer: ResultWriter, drain_timeout_s: float, *,
                     cli: bool) -> tuple[list[int], Callable[[], None]]:
    """The first SIGINT/SIGTERM drains: no new requests, those in flight finish, the summary is written; from
    the command line a second one exits at once after writing what is queued (runner/aio.py has the rest)."""
    def drain(signum: int) -> None:
        log.warning("%s: no new requests; draining %d in flight for up to %gs (%s)",
                    signal.Signals(signum).name, engine.in_flight, drain_timeout_s,
                    "signal again to exit now" if cli else "signal again to interrupt")
        engine.stop()

    def flush() -> None:
        try:
            writer.flush_now()
        except OSError:
            pass

    return install_stop_signals(drain, cli=cli, before_exit=flush)
