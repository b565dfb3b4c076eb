"""One run from config to exit code: checks, lock, resume, engine, summary, signals.

The CLI and job files both end here, so `streamrun run` and `streamrun job`
behave the same.  Exit codes are the contract cron and CI rely on.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import signal
import sys
import time
from datetime import datetime, timezone
from typing import Iterator

import orjson

from .config import RunConfig, Stage
from .engine import Engine, EngineHooks
from .endpoints import check_base_url, is_loopback
from .errors import RunError, UsageError
from .headers import Credentials, HeaderError, check_env_name, resolve_headers
from .inputs import STDIN, InputError, InputItem, SeenIds, expand_inputs, iter_items, scan_inputs
from .outputs import (OutputExists, OutputLocked, ResultWriter, lock_output, open_output, prepare_resume,
                      resume_key)

log = logging.getLogger("streamrun")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_LOCKED = 3
EXIT_SIGINT = 130
EXIT_SIGTERM = 143

# The end-of-run summary keeps at most this many values per metric (exact up to
# it, a uniform sample beyond), so a run of millions of prompts stays flat in
# memory; `streamrun report` recomputes exact figures from the results file.
SUMMARY_MAX_EXACT = 200_000


def summary_path_for(cfg: RunConfig) -> str:
    if cfg.summary_path:
        return cfg.summary_path
    base = cfg.output[:-6] if cfg.output.endswith(".jsonl") else cfg.output
    return base + ".summary.json"


def execute(cfg: RunConfig, *, mock=None, show_progress: bool | None = None) -> int:
    """Run synchronously and return the exit code (see EXIT_CODES_HELP)."""
    try:
        runner = asyncio.Runner(loop_factory=_loop_factory())
        with runner:
            return runner.run(_execute(cfg, mock, show_progress))
    except RunError as exc:
        log.error("%s", exc)
        return exc.exit_code
    except (InputError, OutputExists, ValueError) as exc:
        log.error("%s", exc)
        return EXIT_USAGE
    except OutputLocked as exc:
        log.error("%s", exc)
        return EXIT_LOCKED
    except OSError as exc:  # unreadable input, unwritable output directory, ...
        log.error("%s", exc)
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C before the run started (while scanning the inputs)
        log.error("interrupted before any request was sent")
        return EXIT_SIGINT


def _loop_factory():
    try:
        import uvloop  # optional extra: a faster loop where installed
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _execute(cfg: RunConfig, mock, show_progress: bool | None) -> int:
    creds = preflight(cfg, local=mock is not None)
    paths = expand_inputs(cfg.inputs)
    if STDIN in paths and len(cfg.stages) > 1:
        raise UsageError("a sweep reads its inputs once per stage, so it cannot read stdin")
    headers, secrets = creds.headers, creds.secrets
    owns = _shard_filter(cfg.shard)

    lock_fd = lock_output(cfg.output)
    try:
        done = prepare_resume(cfg.output, cfg.retry_failed, log.warning) if (
            cfg.resume and os.path.exists(cfg.output)) else None
        total = None
        if STDIN not in paths:
            scan = scan_inputs(paths, owns=owns)
            if scan.duplicates:
                shown = "; ".join(f"{cid!r} at {a} and {b}" for cid, a, b in scan.duplicates[:5])
                more = f" (and {len(scan.duplicates) - 5} more)" if len(scan.duplicates) > 5 else ""
                raise UsageError(f"duplicate custom_id: {shown}{more}")
            total = scan.lines * len(cfg.stages)
            if cfg.num_prompts is not None:
                total = min(scan.lines, cfg.num_prompts) * len(cfg.stages)
            if done is not None:
                total = max(0, total - len(done))
        fd = open_output(cfg.output, resume=cfg.resume, overwrite=cfg.overwrite)
        if done is not None and len(done):
            log.info("resuming %s: %d records already done are skipped", cfg.output, len(done))
        if mock is not None:
            from .mock import serve

            async with serve(mock) as url:
                log.info("embedded mock server at %s", url)
                cfg = dataclasses.replace(cfg, base_urls=(url,))
                return await _run(cfg, paths, fd, done, owns, headers, secrets, total, show_progress)
        return await _run(cfg, paths, fd, done, owns, headers, secrets, total, show_progress)
    finally:
        os.close(lock_fd)


def preflight(cfg: RunConfig, *, local: bool) -> Credentials:
    """Misconfiguration caught before anything is sent or any input is read: exit 2, with the fix.

    `local` is a run against the embedded mock, whose URL is known to be loopback.
    """
    try:
        if not local:
            for url in cfg.base_urls:
                check_base_url(url)
        check_env_name(cfg.api_key_env)
        creds = resolve_headers(cfg.headers, api_key_env=cfg.api_key_env, environ=os.environ,
                                auth="bearer" if cfg.auth else "none")
    except (ValueError, HeaderError) as exc:
        raise UsageError(str(exc)) from None
    if cfg.auth and not local and not os.environ.get(cfg.api_key_env):
        remote = [u for u in cfg.base_urls if not is_loopback(u)]
        if remote:
            raise UsageError(
                f"the environment variable {cfg.api_key_env} is not set, and {remote[0]} is not on this machine: "
                f"export {cfg.api_key_env}=..., name another variable with --api-key-env, "
                "or pass --no-auth for a server that needs no key")
    return creds


def _shard_filter(shard: str | None):
    if not shard:
        return None
    from .shard import parse_shard

    return parse_shard(shard).owns


async def _run(cfg, paths, fd, done, owns, headers, secrets, total, show_progress) -> int:
    from .progress import LiveCounters
    from .stats import StatsAccumulator

    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    stats = StatsAccumulator(max_exact=SUMMARY_MAX_EXACT)
    counters = LiveCounters()
    encode = None
    if cfg.output_format == "openai-batch":
        from .batchfmt import to_batch_output

        encode = to_batch_output
    writer = ResultWriter(fd, cfg.fsync, encode=encode)
    seen_stdin = SeenIds() if STDIN in paths else None

    def on_record(record: dict) -> None:
        stats.add(record)
        counters.on_record(record)
        err = record["error"]
        if err and err["type"] == "invalid_input":
            log.error("%s", err["message"])

    hooks = EngineHooks(on_record=on_record)
    _quota_hooks(cfg, hooks)
    engine = Engine(cfg, headers=headers, writer=writer, hooks=hooks, secrets=secrets)

    def stage_items(stage: Stage) -> Iterator[InputItem]:
        for item in iter_items(paths):
            if seen_stdin is not None:
                earlier = seen_stdin.check(item.custom_id, item.place)
                if earlier is not None:
                    log.error("duplicate custom_id %r at %s and %s: skipped", item.custom_id, earlier, item.place)
                    continue
            if owns is not None and not owns(item.custom_id):
                continue
            if done is not None and resume_key(stage.label, item.custom_id) in done:
                continue
            yield item

    def warmup_items() -> Iterator[InputItem]:
        return (i for i in iter_items(paths) if i.error is None)

    signal_code = _install_signals(engine, writer)
    writer_task = asyncio.create_task(writer.run())
    display = _progress(show_progress, counters, total, engine, hooks)
    display_task = asyncio.create_task(display.run()) if display else None
    try:
        if display:
            display.__enter__()
        result = await engine.run(stage_items, warmup_items() if (cfg.warmup and STDIN not in paths) else None)
    finally:
        if display_task:
            display_task.cancel()
        if display:
            display.__exit__(None, None, None)
        await writer.close()
        writer_task.cancel()
        _remove_signals()
    ended = datetime.now(timezone.utc)
    summary = stats.summary(cfg.slos or None)
    code = _exit_code(cfg, summary, result.interrupted, signal_code)
    if engine.fatal is not None and not signal_code:
        log.error("%s", engine.fatal)
        code = engine.fatal.exit_code
    doc = {
        "schema": "streamrun.summary/1",
        "job": cfg.job,
        "output": cfg.output,
        "started_at": started.isoformat(),
        "ended_at": ended.isoformat(),
        "duration_s": time.perf_counter() - t0,
        "exit_code": code,
        "interrupted": result.interrupted,
        "requests_sent": result.sent,
        "cancelled_in_flight": result.cancelled,
        "records_written": writer.written,
        "stopped": str(engine.fatal) if engine.fatal is not None else None,
        "records_not_written": engine.guard.dropped,
        "summary": summary,
        "event_loop_lag": result.lag,
        "endpoints": result.endpoints,
        "config": cfg.public(),
    }
    if hooks.adaptive is not None:
        a = hooks.adaptive
        doc["adaptive_concurrency"] = {"final_limit": a.limit, "max": cfg.max_concurrency,
                                       "min_seen": a.min_limit_seen, "throttles": a.throttles,
                                       "decreases": a.decreases}
    if hooks.quota is not None:
        doc["quota"] = {"rpm": cfg.rpm, "tpm": cfg.tpm, "waits": hooks.quota.waits,
                        "wait_s": hooks.quota.wait_s}
    _cost(cfg, summary, doc)
    path = summary_path_for(cfg)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY))
    os.replace(tmp, path)
    _print_summary(summary, doc, result, path)
    if len(cfg.stages) > 1 and cfg.output_format == "streamrun":
        _print_stage_table(cfg)
    return code


def _print_stage_table(cfg: RunConfig) -> None:
    """A sweep's one-line summary mixes its stages; the per-stage table is what a reader wants."""
    from rich.console import Console

    from .report import build_report, render_table

    render_table(build_report([cfg.output], cfg.slos or None).summaries, Console(stderr=True))


def _quota_hooks(cfg: RunConfig, hooks: EngineHooks) -> None:
    """Wire RPM/TPM limits, adaptive concurrency and token counting (runner/quota.py, runner/tokens.py)."""
    from .tokens import count_text_tokens, estimate_prompt_tokens, requested_output_tokens

    hooks.count_tokens = lambda text: count_text_tokens(text, cfg.model)
    if cfg.rpm or cfg.tpm:
        from .quota import QuotaLimiter

        hooks.quota = QuotaLimiter(cfg.rpm, cfg.tpm, now=time.perf_counter)
        hooks.estimate_tokens = lambda body: (estimate_prompt_tokens(body, body.get("model"))
                                              + requested_output_tokens(body, DEFAULT_OUTPUT_ESTIMATE))
    if cfg.adaptive:
        from .quota import AdaptiveConcurrency

        hooks.adaptive = AdaptiveConcurrency(cfg.max_concurrency, now=time.perf_counter)


DEFAULT_OUTPUT_ESTIMATE = 256  # completion tokens assumed for TPM when a request sets no max_tokens


def _cost(cfg: RunConfig, summary: dict, doc: dict) -> None:
    """Token totals are in the summary already; add the price when one was given."""
    if cfg.price_input is None and cfg.price_output is None:
        return
    from .tokens import Pricing, cost

    tokens = summary.get("tokens") or {}
    pricing = Pricing(cfg.price_input or 0.0, cfg.price_output or 0.0)
    doc["cost_usd"] = cost(tokens.get("prompt", 0), tokens.get("completion", 0), pricing)
    doc["pricing"] = {"input_per_m": pricing.input_per_m, "output_per_m": pricing.output_per_m}


def _exit_code(cfg: RunConfig, summary: dict, interrupted: bool, signal_code: list[int]) -> int:
    if interrupted:
        return signal_code[0] if signal_code else EXIT_SIGINT
    counts = summary["counts"]
    failed = counts.get("error", 0)
    total = counts.get("total", 0)
    budget = cfg.max_failed or 0
    allowed = budget * total if budget < 1 else budget
    return EXIT_FAILED if failed > allowed else EXIT_OK


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
            writer.flush_now()
            log.error("second signal: exiting now")
            os._exit(code)
        received.append(code)
        log.warning("%s: no new requests; draining %d in flight for up to %gs (signal again to exit now)",
                    signal.Signals(signum).name, engine.in_flight, engine.cfg.drain_timeout_s)
        engine.stop()

    for sig in _SIGNALS:
        loop.add_signal_handler(sig, handler, sig)
    return received


def _remove_signals() -> None:
    loop = asyncio.get_running_loop()
    for sig in _SIGNALS:
        loop.remove_signal_handler(sig)


def _ms(x) -> str:
    return "-" if x is None else f"{x * 1000:.1f}"


def _print_summary(summary: dict, doc: dict, result, path: str) -> None:
    counts = summary["counts"]
    m = summary["metrics"]
    by_type = ", ".join(f"{k} {v}" for k, v in sorted(counts.get("errors_by_type", {}).items()))
    lines = [
        f"streamrun: {counts.get('total', 0)} records: {counts.get('ok', 0)} ok, {counts.get('error', 0)} error"
        + (f" ({by_type})" if by_type else "") + f", {counts.get('retried', 0)} retried",
    ]
    for top in counts.get("top_errors", [])[:3]:
        lines.append(f"  {top['count']:>6} x {top['type']}: {top['message']}")
    for name, key in (("TTFT", "ttft_s"), ("E2E", "e2e_s")):
        d = m.get(key) or {}
        lines.append(f"  {name:<4} ms  p50 {_ms(d.get('p50'))}  p90 {_ms(d.get('p90'))}  p99 {_ms(d.get('p99'))}")
    lines.append(f"  {summary.get('request_throughput') or 0:.2f} req/s, "
                 f"{summary.get('output_token_throughput') or 0:.1f} output tokens/s "
                 f"over {summary.get('duration_s') or 0:.2f}s")
    tokens = summary.get("tokens") or {}
    if tokens.get("total"):
        lines.append(f"  tokens: {tokens.get('prompt', 0)} prompt, {tokens.get('completion', 0)} completion"
                     f" ({tokens.get('reasoning', 0)} reasoning)"
                     + (f", cost ${doc['cost_usd']:.4f}" if "cost_usd" in doc else ""))
    adaptive = doc.get("adaptive_concurrency")
    if adaptive and adaptive["throttles"]:
        lines.append(f"  throttled {adaptive['throttles']} times (429/503): concurrency cut {adaptive['decreases']}"
                     f" times, lowest {adaptive['min_seen']}, final {adaptive['final_limit']} of {adaptive['max']}")
    lag = result.lag or {}
    if lag.get("samples", 0) >= 20 and lag.get("share_over_10ms", 0) > 0.05:
        lines.append(f"  warning: the client's event loop lagged over 10 ms in {lag['share_over_10ms']:.0%} of checks "
                     f"(max {lag['max_s'] * 1000:.0f} ms): latencies include client overhead; lower -c")
    lines.append(f"  results: {doc['output']}  summary: {path}")
    print("\n".join(lines), file=sys.stderr, flush=True)
