"""Runs side by side: the comparison's tables, a column per run.

``streamrun report a.jsonl b.jsonl`` shows each statistic of each run in
its own column; every run after the first also shows its difference from
the first, absolute and in percent (:mod:`.compare`), so "is B faster than
A, and by how much" reads off one row. Built as
:class:`~runner.report.grids.Grid` rows, drawn by rich or written as
Markdown.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runner.stats import stage_key

from .build import Report
from .compare import compared_stats, difference
from .grids import Grid
from .knee import knee_line
from .labels import COMPARED_LATENCIES, FOOTNOTE, shown_latencies, stage_label
from .terminal import notes, turn_grid, window_grid


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.2f}"


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _int(value: float | None) -> str:
    return "-" if value is None else str(int(value))


def _with_difference(value: float | None, base: float | None, fmt: Callable[[float | None], str],
                     scale: float = 1.0) -> str:
    """``53.20 (+1.79, +3.5%)``: the value, then its difference from the first run's."""
    text = fmt(value)
    d = difference(value, base)
    if d is None:
        return text
    pct = "" if d["pct"] is None else f", {d['pct']:+.1f}%"
    return f"{text} ({d['abs'] * scale:+.2f}{pct})"


def stage_rows(report: Report) -> list[tuple[str, list[int | None]]]:
    """The stages of all runs, matched by key (first-seen order): a name and
    each run's position of that stage (None where a run lacks it). Runs of
    one stage each are one row, whatever their stages."""
    if all(r.count == 1 for r in report.runs):
        return [("all", [r.first for r in report.runs])]
    order: dict[Any, tuple[str, list[int | None]]] = {}
    for k, run in enumerate(report.runs):
        for p in range(run.first, run.first + run.count):
            s = report.summaries[p]
            key = stage_key(s["stage"])
            if key not in order:
                order[key] = (stage_label(s, p - run.first), [None] * len(report.runs))
            order[key][1][k] = p
    return list(order.values())


def _row(report: Report, places: list[int | None], get: Callable[[dict[str, Any]], float | None],
         fmt: Callable[[float | None], str], scale: float = 1.0, diff: bool = True) -> list[str]:
    values = [get(report.summaries[p]) if p is not None else None for p in places]
    base = values[0]
    return [fmt(values[0]), *(_with_difference(v, base, fmt, scale) if diff else fmt(v) for v in values[1:])]


def throughput_grid(report: Report, rows: list[tuple[str, list[int | None]]]) -> Grid:
    """Counts and rates, a column per run."""
    staged = len(rows) > 1
    quantities: list[tuple[str, Callable[[dict[str, Any]], Any], Callable[[float | None], str], bool]] = [
        ("ok", lambda s: s["counts"]["ok"], _int, False),
        ("errors", lambda s: s["counts"]["error"], _int, False),
        ("duration s", lambda s: s["duration_s"], _num, False),
        ("req/s", lambda s: s["request_throughput"], _num, True),
        ("output tok/s", lambda s: s["output_token_throughput"], _num, True),
        ("total tok/s", lambda s: s["total_token_throughput"], _num, True),
    ]
    if any((s.get("tokens") or {}).get("reasoning") for s in report.summaries):
        quantities.append(("reasoning tok", lambda s: s["tokens"].get("reasoning"), _int, True))
    if report.slos:
        quantities.append(("goodput req/s", lambda s: s["goodput"], _num, True))
    grid = Grid("Requests and throughput", (["stage"] if staged else []) + ["", *(r.label for r in report.runs)],
                left=2 if staged else 1)
    for name, places in rows:
        for label, get, fmt, diff in quantities:
            grid.rows.append(([name] if staged else []) + [label, *_row(report, places, get, fmt, diff=diff)])
    return grid


def _stat_of(key: str, stat: str) -> Callable[[dict[str, Any]], float | None]:
    """A stage's ``stat`` of the latency ``key``."""
    return lambda s: s["metrics"][key].get(stat)


def latency_grids(report: Report, rows: list[tuple[str, list[int | None]]]) -> list[Grid]:
    """A table per latency, a row per statistic (per stage), a column per run."""
    staged = len(rows) > 1
    stats = compared_stats(report.summaries)
    grids = []
    for key, short, long in shown_latencies(report.summaries, COMPARED_LATENCIES):
        grid = Grid(f"{short} (ms): {long}", (["stage"] if staged else []) + ["", *(r.label for r in report.runs)],
                    left=2 if staged else 1)
        for name, places in rows:
            for stat in stats:
                cells = _row(report, places, _stat_of(key, stat), _ms, scale=1000)
                grid.rows.append(([name] if staged else []) + [stat, *cells])
        grids.append(grid)
    return grids


def comparison_grids(report: Report) -> tuple[list[Grid], list[str]]:
    """Every table of a comparison and the lines printed under them (the footnote last)."""
    rows = stage_rows(report)
    names = [report.label(i) for i in range(len(report.summaries))]
    grids = [throughput_grid(report, rows), *latency_grids(report, rows)]
    turns = turn_grid(report.summaries, names, "run")
    windows, window_notes = window_grid(report.summaries, names, "run")
    grids += [g for g in (turns, windows) if g is not None]
    first = report.runs[0].label
    knees = [line for run in report.runs if (line := knee_line(report.run_summaries(run), f"{run.label}: "))]
    lines = ["runs: " + "; ".join(f"{r.label} = {', '.join(r.paths)}" for r in report.runs),
             f"in brackets: the difference from the first run, {first} (absolute, then %)",
             *knees, *notes(report.summaries, names), *window_notes]
    if report.slos:
        lines.append("goodput SLOs: " + ", ".join(f"{k}<={v * 1000:g}ms" for k, v in report.slos.items()))
    return grids, [*lines, FOOTNOTE]
