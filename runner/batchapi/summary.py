"""A batch run's summary document and exit code: `run`'s document (docs/SUMMARY.md), with a `batch` section.

Why the same document: cron jobs and CI read one contract whichever way the
lines went.  Its statistics are over the output's final records; nothing is
timed (no `client_bound` or `timing`).  The exit code is `run`'s: the
error of a run that stopped, the signal's, else the failure budget
(--max-failed) over the final records; 0 while batches are still running
(--no-wait).  With prices, the cost is at the provider's batch price.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from ..config.run_config import ObserveConfig, RunConfig
from ..errors import EXIT_FAILED, EXIT_OK, RunError
from ..outputs.finals import FinalRecords
from ..outputs.summary import RunFacts, build_document, summary_path_for, write_document
from .settings import BatchSettings
from .state import COLLECTED, Ledger

log = logging.getLogger("streamrun")


@dataclass
class Ending:
    """How this invocation went, beyond what the output and the state file say."""

    started: datetime
    duration_s: float
    stopped: RunError | None  # the error that stopped it
    signals: list[int]  # the exit codes of the signals received
    submitted_lines: int
    written: int  # records written


def finish(cfg: RunConfig, settings: BatchSettings, ledger: Ledger, ending: Ending) -> dict:
    """The summary document, written beside the output (or where --summary says) and drawn on stderr."""
    from ..observe.progress import json_logs
    from ..plan import SUMMARY_MAX_EXACT
    from ..report.end_of_run import render
    from ..run import over_budget
    from ..stats import StatsAccumulator

    state, observe = ledger.state, cfg.observe
    stats = StatsAccumulator(max_exact=SUMMARY_MAX_EXACT, percentiles=observe.percentiles, window_s=observe.window_s)
    try:
        with FinalRecords(cfg.output.path, warn=lambda m: None) as records:
            for _, _, record in records:
                stats.add(record)
    except OSError as exc:
        log.error("cannot read %s again: %s; the summary leaves its records out", cfg.output.path, exc.strerror)
    summary = stats.summary(None)
    running = ledger.running()
    counts = summary["counts"]
    stopped = ending.stopped
    if stopped is not None:
        log.error("%s", stopped)
        code = stopped.exit_code
    elif ending.signals:
        code = ending.signals[0]
    elif running:
        code = EXIT_OK
        log.info("%d batches (%d lines) still in progress: run the same command again to collect them",
                 len(running), sum(p.lines for p in running))
    else:
        code = EXIT_FAILED if over_budget(cfg.checks.max_failed, counts.get("error", 0), counts.get("total", 0)) \
            else EXIT_OK
    section = {
        "state": ledger.path, "run": state.run, "api": state.provider, "in_progress": len(running),
        "lines_submitted": ending.submitted_lines,
        "batches": [{"part": p.index, "id": p.batch_id, "endpoint": p.endpoint, "model": p.model,
                     "lines": p.lines, "status": p.status, "end": p.end, "collected": p.step == COLLECTED,
                     "counts": p.counts} for p in state.parts],
    }
    facts = RunFacts(started_at=ending.started, ended_at=datetime.now(UTC), duration_s=ending.duration_s,
                     exit_code=code, interrupted=bool(ending.signals) or stopped is not None,
                     requests_sent=ending.submitted_lines, cancelled_in_flight=0, records_written=ending.written,
                     stopped=str(stopped) if stopped is not None else None, extra={"batch": section})
    doc = build_document(cfg, summary, facts)
    _cost(observe, settings, summary, doc)
    path = summary_path_for(cfg.output)
    try:
        if path is not None:
            write_document(path, doc)
    except OSError as exc:
        log.error("cannot write the summary %s: %s", path, exc.strerror)
    render(doc, path or "(stderr only)", as_json=json_logs())
    return doc


def _cost(observe: ObserveConfig, settings: BatchSettings, summary: dict, doc: dict) -> None:
    """With --price-input/--price-output (the live prices): the cost at the provider's batch price."""
    if observe.price_input is None and observe.price_output is None:
        return
    from ..inputs.tokens import Pricing, cost

    factor = settings.limits.price_factor
    tokens = summary.get("tokens") or {}
    pricing = Pricing((observe.price_input or 0.0) * factor, (observe.price_output or 0.0) * factor)
    doc["cost_usd"] = cost(tokens.get("prompt", 0), tokens.get("completion", 0), pricing)
    doc["pricing"] = {"input_per_m": pricing.input_per_m, "output_per_m": pricing.output_per_m,
                      "batch_price_factor": factor}
