"""Stages that ran short of their load: a --workers worker died during them (runner/workers/pool.py).

Two witnesses, either enough: a sweep's records written after the death
carry `"degraded": true` in their stage (the accumulator keeps it on the
stage, runner/stats/stages.py), and the run's summary beside the results
lists the stages under `workers.degraded_stages` (the only witness for a
run of one unnamed stage, whose records carry no stage).  A degraded stage
gets `"degraded": true` in its summary, its name in the throughput table
says so, and a note under the tables says why.
"""

from __future__ import annotations

from typing import Any

from .runs import read_sidecar

KEY = "degraded"


def sidecar_entries(paths: list[str]) -> list[dict[str, Any]]:
    """The `workers.degraded_stages` entries of the summaries beside `paths`."""
    out = []
    for path in paths:
        workers = (read_sidecar(path) or {}).get("workers")
        entries = workers.get("degraded_stages") if isinstance(workers, dict) else None
        out += [e for e in entries or [] if isinstance(e, dict)]
    return out


def mark_stages(summaries: list[dict[str, Any]], entries: list[dict[str, Any]]) -> None:
    """Mark each stage that its records or an entry (by stage index; no label: the unnamed stage) call degraded."""
    named = {e.get("index") for e in entries if e.get("label")}
    unnamed = any(not e.get("label") for e in entries)
    for s in summaries:
        stage = s.get("stage")
        if isinstance(stage, dict) and (stage.get(KEY) is True or stage.get("index") in named):
            s[KEY] = True
        elif not isinstance(stage, dict) and unnamed:
            s[KEY] = True


def attach_degraded(report: Any) -> None:
    """Every run's degraded stages onto its summaries (its records' word, and its summary file's)."""
    for run in report.runs:
        mark_stages(report.run_summaries(run), sidecar_entries(run.paths))


def shown(name: str, summary: dict[str, Any]) -> str:
    """A stage's name in a table: marked when it ran degraded."""
    return f"{name} (degraded)" if summary.get(KEY) else name


def note(summary: dict[str, Any]) -> str | None:
    """The line under the tables of a degraded stage (no stage name: the caller prefixes it)."""
    if not summary.get(KEY):
        return None
    return "degraded: a worker died during it, and it went on short of its load"
