"""The client's verdict on its own numbers, per stage, read from each run's summary sidecar.

`streamrun run` writes into `<base>.summary.json`, per stage, the loop lag
and CPU of the client while the stage ran and whether that made the
stage's latencies untrustworthy (`timing.stages`, :mod:`runner.observe.client_timing`).
The records cannot say it, so the report reads the sidecar, matches its
entries to the report's stages (by stage index; a run of one unnamed stage
to its one entry) and puts each under its stage's summary as
``client_timing``: the terminal table, the JSON and the page then mark a
client-bound stage.  The shards of one run (several sidecars): a stage
takes the worst of its entries.
"""

from __future__ import annotations

from typing import Any

from runner.observe.client_timing import figures

from .runs import read_sidecar

KEY = "client_timing"


def sidecar_entries(paths: list[str]) -> list[dict[str, Any]]:
    """The `timing.stages` entries of the sidecars of `paths` (none for a file without one)."""
    out = []
    for path in paths:
        timing = (read_sidecar(path) or {}).get("timing")
        stages = timing.get("stages") if isinstance(timing, dict) else None
        out += [e for e in stages or [] if isinstance(e, dict) and isinstance(e.get("client_bound"), bool)]
    return out


def _worst(entries: list[dict[str, Any]]) -> dict[str, Any]:
    return max(entries, key=lambda e: (e["client_bound"], e.get("lag_p99_s") or 0.0))


def mark_stages(summaries: list[dict[str, Any]], entries: list[dict[str, Any]]) -> int:
    """Put each stage's entry under its summary as ``client_timing``; how many stages got one."""
    by_index: dict[Any, list[dict[str, Any]]] = {}
    for e in entries:
        by_index.setdefault(e.get("index"), []).append(e)
    unnamed = [e for e in entries if e.get("stage") is None]
    marked = 0
    for s in summaries:
        stage = s.get("stage")
        found = by_index.get(stage.get("index")) if isinstance(stage, dict) else unnamed
        if found:
            s[KEY] = _worst(found)
            marked += 1
    return marked


def attach_timing(report: Any) -> None:
    """Every run's sidecar timing onto its stages (a report of files without sidecars is left as it is)."""
    for run in report.runs:
        entries = sidecar_entries(run.paths)
        if entries:
            mark_stages(report.run_summaries(run), entries)


def client_bound(summaries: list[dict[str, Any]]) -> bool | None:
    """Whether some stage was client-bound; None when no stage has the client's timing."""
    found = [s[KEY]["client_bound"] for s in summaries if s.get(KEY)]
    return any(found) if found else None


def cell(summary: dict[str, Any]) -> str:
    """The terminal table's `client` cell: client-bound, ok, or - (no timing)."""
    entry = summary.get(KEY)
    if not entry:
        return "-"
    return "client-bound" if entry["client_bound"] else "ok"


def note(summary: dict[str, Any]) -> str | None:
    """The line under the tables of a client-bound stage (no stage name: the caller prefixes it)."""
    entry = summary.get(KEY)
    if not entry or not entry["client_bound"]:
        return None
    return f"client-bound: {figures(entry)}"


def detail(summary: dict[str, Any]) -> str:
    """The page's line about the client while the stage ran ('' without timing)."""
    entry = summary.get(KEY)
    return f"client: {figures(entry)}" if entry else ""
