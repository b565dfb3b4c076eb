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
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Iterator

import anyio

from .config import FsyncPolicy, RunConfig, Stage
from .dataset import Answers
from .endpoints import check_base_url, is_loopback, url_secrets
from .engine import Engine, EngineHooks
from .errors import UsageError
from .stream.headers import Credentials, HeaderError, check_env_name, resolve_headers
from .ids import SeenIds, line_hash, resume_key
from .inputs import STDIN, InputItem, aiter_live, expand_inputs, is_regular, iter_items, scan_inputs
from .outputs import Prior, ResultWriter, lock_output, open_output, prepare_resume
from .record import Record
from .schedule import TraceTimes
from .summary import RunFacts, build_document, render, summary_path_for, write_document
from .servermetrics import scraper_for
from .trust import ClientTiming, LagMonitor

log = logging.getLogger("streamrun")
STDOUT = "-"  # -o -: records to stdout

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_OUTPUT = 4
EXIT_CLIENT_BOUND = 5  # --strict-timing: a stage's numbers were client-bound (runner/trust.py)
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

# The end-of-run summary keeps at most this many values per metric (exact up to
# it, a uniform sample beyond), so a run of millions of prompts stays flat in
# memory; `streamrun report` recomputes exact figures from the results file.
SUMMARY_MAX_EXACT = 200_000
DEFAULT_OUTPUT_ESTIMATE = 256  # completion tokens assumed for TPM when a request sets no max_tokens


@dataclass
class Plan:
    """What is known before the first request: the inputs, the shard, what is done already, the total."""

    paths: list[str]
    owns: Callable[[str], bool] | None
    done: object | None  # outputs.DoneIds on resume
    total: int | None
    prior: Prior  # what the output held already: --num-prompts and --duration count the whole output
    stats: object  # stats.StatsAccumulator, already holding the records of earlier runs on resume


async def _execute(cfg: RunConfig, mock, show_progress: bool | None) -> int:
    return (await run_document(cfg, mock=mock, show_progress=show_progress))["exit_code"]


async def run_document(cfg: RunConfig, *, mock=None, show_progress: bool | None = None,
                       on_record: Callable[[Record], None] | None = None) -> dict:
    """The run, start to end; its summary document (with `exit_code`). RunError for a run that cannot start.

    `on_record` sees every record as it is written (the Python API's stream).
    """
    creds = preflight(cfg, local=mock is not None)
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
        plan = _plan(cfg, paths)
        if lock_fd is not None:
            try:
                fd = open_output(cfg.output, resume=cfg.resume, overwrite=cfg.overwrite)
            except OSError as exc:
                raise UsageError(f"cannot open {cfg.output}: {exc.strerror}") from None
        if mock is None:
            return await Run(cfg, plan, fd, creds, show_progress, on_record=on_record).execute()
        from .mock import serve

        async with serve(mock) as url:
            log.info("embedded mock server at %s", url)
            return await Run(dataclasses.replace(cfg, base_urls=(url,)), plan, fd, creds, show_progress,
                             on_record=on_record).execute()
    finally:
        if lock_fd is not None:
            os.close(lock_fd)


def _changed_lines(cfg: RunConfig, paths: list[str], owns, done) -> dict[str, tuple[str, str]]:
    """Records whose input line changed since: default ids (`file:line`) would answer the wrong prompts.

    Only regular files can be read ahead; a pipe is not checked.
    """
    if not all(is_regular(p) for p in paths):
        return {}
    labels = [s.label for s in cfg.stages]
    changed: dict[str, tuple[str, str]] = {}
    for item in iter_items(paths, cfg.limits.max_line_bytes):
        if item.error is not None or (owns is not None and not owns(item.custom_id)):
            continue
        request_hash = line_hash(item.raw)
        for label in labels:
            key = resume_key(label, item.custom_id)
            if done.changed(key, request_hash):
                changed[key] = (item.custom_id, item.place)
    return changed


def _refuse_output_over_input(cfg: RunConfig, paths: list[str]) -> None:
    """`-o in.jsonl --overwrite` would truncate the input; `--resume` would append into it."""
    inputs = {os.path.realpath(p) for p in paths if p != STDIN}
    for what, path in (("output", cfg.output), ("summary", summary_path_for(cfg))):
        if path not in (None, STDOUT) and os.path.realpath(path) in inputs:
            raise UsageError(f"the {what} {path} is one of the input files: choose another -o")


def _plan(cfg: RunConfig, paths: list[str]) -> Plan:
    """Scan the inputs and the existing output; an unreadable file is a usage error, before anything is sent."""
    from .stats import StatsAccumulator

    owns = _shard_filter(cfg.shard)
    prior = Prior()
    # the summary covers the whole output, across runs
    stats = StatsAccumulator(max_exact=SUMMARY_MAX_EXACT, percentiles=cfg.percentiles, window_s=cfg.window_s)

    def earlier(record) -> None:
        prior.add(record)
        stats.add(record)

    try:
        done = prepare_resume(cfg.output, cfg.retry_failed, log.warning, earlier) if (
            cfg.resume and os.path.exists(cfg.output)) else None
        changed = _changed_lines(cfg, paths, owns, done) if done is not None and len(done) else {}
        if changed and not cfg.resume_changed:
            places = "; ".join(f"{cid!r} at {place}" for cid, place in list(changed.values())[:5])
            raise UsageError(f"{len(changed)} records answer input lines that have changed since they were sent "
                             f"({places}{' ...' if len(changed) > 5 else ''}): pass --resume-changed to drop "
                             "those records and send the lines again, or restore the inputs")
        if changed:  # drop them, and count again what stays
            prior = Prior()
            stats = StatsAccumulator(max_exact=SUMMARY_MAX_EXACT, percentiles=cfg.percentiles, window_s=cfg.window_s)
            done = prepare_resume(cfg.output, False, log.warning, earlier, drop=lambda r: r.key in changed)
        total = None
        if all(is_regular(p) for p in paths):  # a pipe would be used up by the scan
            scan = scan_inputs(paths, owns=owns)
            if scan.duplicates:
                shown = "; ".join(f"{cid!r} at {a} and {b}" for cid, a, b in scan.duplicates[:5])
                more = f" (and {len(scan.duplicates) - 5} more)" if len(scan.duplicates) > 5 else ""
                raise UsageError(f"duplicate custom_id: {shown}{more}")
            lines = scan.lines if cfg.num_prompts is None else min(scan.lines, cfg.num_prompts)
            total = max(0, lines * len(cfg.stages) - (len(done) if done is not None else 0))
    except OSError as exc:
        raise UsageError(f"cannot read {exc.filename}: {exc.strerror}") from None
    if done is not None and len(done):
        log.info("resuming %s: %d records already done are skipped", cfg.output, len(done))
    return Plan(paths, owns, done, total, prior, stats)


def preflight(cfg: RunConfig, *, local: bool) -> Credentials:
    """Misconfiguration caught before anything is sent or any input is read: exit 2, with the fix.

    `local` is a run against the embedded mock, whose URL is known to be loopback.
    """
    try:
        if not local:
            for url in cfg.base_urls:
                check_base_url(url)
        check_env_name(cfg.api_key_env)
        creds = resolve_headers(cfg.headers, api_key_env=cfg.key_env, environ=os.environ, auth=cfg.auth_scheme)
        passwords = tuple(p for url in cfg.base_urls for p in url_secrets(url))
        if passwords:
            if "Authorization" in creds.headers or "x-api-key" in creds.headers:
                raise UsageError("a base URL with user:password@ and an API key cannot both be sent: pass "
                                 "--no-auth to use the URL's credentials, or remove them from the URL")
            creds = Credentials(creds.headers, creds.secrets + passwords)
    except (ValueError, HeaderError) as exc:
        raise UsageError(str(exc)) from None
    if cfg.auth and not local and not os.environ.get(cfg.key_env):
        remote = [u for u in cfg.base_urls if not is_loopback(u)]
        if remote:
            raise UsageError(
                f"the environment variable {cfg.key_env} is not set, and {remote[0]} is not on this machine: "
                f"export {cfg.key_env}=..., name another variable with --api-key-env, "
                "or pass --no-auth for a server that needs no key")
    return creds


def _shard_filter(shard: str | None):
    if not shard:
        return None
    from .ids import parse_shard

    return parse_shard(shard).owns


class Run:
    """One run's parts and their lifetimes.

    The engine sends; the writer, the progress display and the event-loop
    lag monitor run beside it in one task group, so none of them can die
    unseen: a crash in any cancels the run and surfaces.  A writer that
    cannot write (a full disk) stops new requests at once and lets those in
    flight drain, then the run exits 4.
    """

    def __init__(self, cfg: RunConfig, plan: Plan, fd: int, creds: Credentials, show_progress: bool | None,
                 *, log_json: bool | None = None, on_record: Callable[[Record], None] | None = None) -> None:
        from .progress import LiveCounters, ProgressLog, json_logs

        self._listener = on_record
        self.cfg = cfg
        self.plan = plan
        self.stats = plan.stats
        self.counters = LiveCounters()
        self.timing = ClientTiming(cfg)  # each stage's loop lag, CPU and TTFT: may its numbers be trusted?
        self.hooks = EngineHooks(on_record=self._on_record, on_stage=self.timing.on_stage)
        quota_hooks(cfg, self.hooks)
        encode = None
        if cfg.output_format == "openai-batch":
            from .batchfmt import encode_batch

            encode = encode_batch
        engine = Engine
        if cfg.workers > 1:  # worker processes send; this one still reads the inputs and writes (runner/workers)
            from .workers.pool import WorkerPool as engine
        self.engine = engine(cfg, headers=creds.headers, writer=None, hooks=self.hooks, secrets=creds.secrets)
        self.writer = ResultWriter(fd, cfg.fsync, encode=encode, name=cfg.output, on_failure=self.engine.abort)
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

    def _on_record(self, record: Record) -> None:
        self.stats.add(record)
        self.timing.observe(record)
        self.counters.on_record(record)
        if self._listener is not None:
            self._listener(record)
        err = record.error
        if err is not None and err.type == "invalid_input":
            log.error("%s", err.message)

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
        self._signals = _install_signals(self.engine, self.writer)
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
                with self.display if self.display is not None else _nothing():
                    result = await self.engine.run(self.stage_items, self._warmup_items())
                await self.writer.close()
                tg.cancel_scope.cancel()
        finally:
            _remove_signals()
            if cache is not None:
                await cache.aclose()
        facts = RunFacts(
            started_at=started, ended_at=datetime.now(timezone.utc), duration_s=time.perf_counter() - t0,
            exit_code=0, interrupted=result.interrupted, requests_sent=result.sent,
            cancelled_in_flight=result.cancelled, records_written=self.writer.written,
            records_not_written=self.engine.guard.dropped + self.writer.pending,
            event_loop_lag=self.lag.summary() if self.cfg.workers == 1 else self.engine.lag_summary(),
            endpoints=result.endpoints, extra=self._extra())
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


async def open_cache(cfg: RunConfig):
    """--cache: opened before the first request (it may wait on another process's setup)."""
    if not cfg.cache:
        return None
    from .cache import ResponseCache

    return await asyncio.to_thread(ResponseCache.open, cfg.cache, cfg.cache_mode)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def quota_hooks(cfg: RunConfig, hooks: EngineHooks) -> None:
    """Wire RPM/TPM limits, adaptive concurrency and token counting (runner/quota.py, runner/tokens.py)."""
    from .tokens import count_text_tokens, estimate_prompt_tokens, requested_output_tokens

    hooks.count_tokens = lambda text: count_text_tokens(text, cfg.model)
    if cfg.rpm or cfg.tpm:
        from .quota import QuotaLimiter

        hooks.quota = QuotaLimiter(cfg.rpm, cfg.tpm, now=time.perf_counter, burst_s=cfg.burst_s)
        hooks.estimate_tokens = lambda body: (estimate_prompt_tokens(body, body.get("model"))
                                              + requested_output_tokens(body, DEFAULT_OUTPUT_ESTIMATE))
    if cfg.adaptive:
        from .quota import AdaptiveConcurrency

        hooks.adaptive = AdaptiveConcurrency(cfg.max_concurrency, now=time.perf_counter)


def _cost(cfg: RunConfig, summary: dict, doc: dict) -> None:
    """Token totals are in the summary already; add the price when one was given."""
    if cfg.price_input is None and cfg.price_output is None:
        return
    from .tokens import Pricing, cost

    tokens = summary.get("tokens") or {}
    pricing = Pricing(cfg.price_input or 0.0, cfg.price_output or 0.0)
    doc["cost_usd"] = cost(tokens.get("prompt", 0), tokens.get("completion", 0), pricing)
    doc["pricing"] = {"input_per_m": pricing.input_per_m, "output_per_m": pricing.output_per_m}


def _exit_code(cfg: RunConfig, summary: dict, interrupted: bool, signal_code: list[int], client_bound: bool) -> int:
    if interrupted and signal_code:
        return signal_code[0]
    counts = summary["counts"]
    failed = counts.get("error", 0)
    total = counts.get("total", 0)
    budget = cfg.max_failed or 0
    allowed = budget * total if budget < 1 else budget
    if failed > allowed:
        return EXIT_FAILED
    return EXIT_CLIENT_BOUND if cfg.strict_timing and client_bound else EXIT_OK


def _progress(show: bool | None, counters, total, engine, hooks):
    if show is False or (show is None and not sys.stderr.isatty()):
        return None
    from .progress import ProgressDisplay

    adaptive = hooks.adaptive
    conc = (lambda: str(adaptive.limit)) if adaptive is not None else (lambda: str(engine.cfg.max_concurrency))
    return ProgressDisplay(counters, total, lambda: engine.in_flight, conc)


_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def _install_signals(engine: Engine, writer: ResultWriter) -> list[int]:
    """First SIGINT/SIGTERM drains; a second one exits at once after writing what is queued."""
    loop = asyncio.get_running_loop()
    received: list[int] = []

    def handler(signum: int) -> None:
        code = EXIT_SIGINT if signum == signal.SIGINT else EXIT_SIGTERM
        if received:
            try:
                writer.flush_now()
            except OSError:
                pass
            log.error("second signal: exiting now")
            os._exit(code)
        received.append(code)
        log.warning("%s: no new requests; draining %d in flight for up to %gs (signal again to exit now)",
                    signal.Signals(signum).name, engine.in_flight, engine.cfg.drain_timeout_s)
        engine.stop()

    try:
        for sig in _SIGNALS:
            loop.add_signal_handler(sig, handler, sig)
    except (ValueError, RuntimeError, NotImplementedError):  # not the main thread (a notebook's worker, say)
        log.debug("signals stay with the caller: not on the main thread")
    return received


def _remove_signals() -> None:
    loop = asyncio.get_running_loop()
    for sig in _SIGNALS:
        try:
            loop.remove_signal_handler(sig)
        except (ValueError, RuntimeError, NotImplementedError):
            pass
