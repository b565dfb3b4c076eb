"""The run summary: the document cron jobs and CI read, its atomic write, and its one terminal rendering.

Why a module: the summary is a contract (`streamrun.summary/1`, documented in
docs/SUMMARY.md); building it, writing it so that a reader never sees half a
file, and showing it to a person are three views of one thing, kept together
and away from the run's machinery.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from ..config.options import summary_config
from ..config.run_config import OutputConfig, RunConfig

SCHEMA = "streamrun.summary/1"


def summary_path_for(output: OutputConfig) -> str | None:
    """Beside the output; None for `-o -` (records on stdout) unless --summary names a file."""
    if output.summary_path:
        return output.summary_path
    if output.path == "-":
        return None
    return sidecar_path(output.path)


def sidecar_path(output: str) -> str:
    """`<base>.summary.json` beside a results file: where a run writes its summary by default, and where
    `streamrun report` looks for the run's label."""
    base = output[:-6] if output.endswith(".jsonl") else output
    return base + ".summary.json"


@dataclass
class RunFacts:
    """What the run itself knows beyond the records' statistics."""

    started_at: datetime
    ended_at: datetime
    duration_s: float
    exit_code: int
    interrupted: bool
    requests_sent: int
    cancelled_in_flight: int
    records_written: int
    stopped: str | None = None  # why the run stopped on its own (a run-level error), or None
    records_not_written: int = 0
    event_loop_lag: dict = field(default_factory=dict)
    endpoints: list = field(default_factory=list)
    extra: dict = field(default_factory=dict)  # adaptive concurrency, quota, cost


def build_document(cfg: RunConfig, stats: dict, facts: RunFacts) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "job": cfg.job,
        "label": cfg.label,
        "output": cfg.output.path,
        "started_at": facts.started_at.isoformat(),
        "ended_at": facts.ended_at.isoformat(),
        "duration_s": facts.duration_s,
        "exit_code": facts.exit_code,
        "interrupted": facts.interrupted,
        "stopped": facts.stopped,
        "requests_sent": facts.requests_sent,
        "cancelled_in_flight": facts.cancelled_in_flight,
        "records_written": facts.records_written,
        "records_not_written": facts.records_not_written,
        "summary": stats,
        "event_loop_lag": facts.event_loop_lag,
        "endpoints": facts.endpoints,
        "config": summary_config(cfg),
        **facts.extra,
    }


def write_document(path: str, doc: dict[str, Any]) -> None:
    """Write to a temporary file, then rename: a reader sees the old summary or the new one, never half."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    os.replace(tmp, path)
