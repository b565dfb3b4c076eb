"""Runs against the first run: the differences a comparison shows.

Every later run's stage is set against the first run's stage of the same
key (its index, else its label; two runs of one stage each are matched
whatever their stages), and each statistic is given as ``{"abs": later -
first, "pct": 100 * (later - first) / first}`` (``pct`` null when the first
is 0). The tables, the JSON document and the page all read these, so a
difference reads the same everywhere.
"""

from __future__ import annotations

from typing import Any, TypedDict

from runner.stats import stage_key

from .build import Report, RunPart
from .labels import percentile_columns, stat_columns

#: Stage-level rates compared.
RATES: tuple[str, ...] = ("request_throughput", "output_token_throughput", "total_token_throughput", "goodput")


class Difference(TypedDict):
    abs: float
    pct: float | None


def difference(value: float | None, base: float | None) -> Difference | None:
    """``{"abs", "pct"}`` of ``value`` against ``base``; None when either is unknown."""
    if value is None or base is None:
        return None
    delta = value - base
    return {"abs": delta, "pct": 100.0 * delta / base if base else None}


def compared_stats(summaries: list[dict[str, Any]]) -> tuple[str, ...]:
    """mean and the percentiles: what is set against the first run."""
    return ("mean", *percentile_columns(stat_columns(summaries)))


def matched_stages(report: Report, run: RunPart) -> list[tuple[int, int | None]]:
    """``(position, position in the first run or None)`` for each stage of ``run``."""
    base = report.runs[0]
    if run.count == 1 and base.count == 1:
        return [(run.first, base.first)]
    keys = {stage_key(report.summaries[p]["stage"]): p for p in range(base.first, base.first + base.count)}
    return [(p, keys.get(stage_key(report.summaries[p]["stage"]))) for p in range(run.first, run.first + run.count)]


def stage_difference(summary: dict[str, Any], base: dict[str, Any], stats: tuple[str, ...]) -> dict[str, Any]:
    """One stage against the first run's: its rates and every metric's statistics."""
    out: dict[str, Any] = {"stage": summary["stage"]}
    for key in RATES:
        out[key] = difference(summary.get(key), base.get(key))
    out["metrics"] = {
        name: {stat: difference(d.get(stat), base["metrics"][name].get(stat)) for stat in stats}
        for name, d in summary["metrics"].items() if name in base["metrics"]
    }
    return out


def comparison(report: Report) -> list[list[dict[str, Any]] | None]:
    """Per run, the differences of its stages from the first run's (None
    for the first run); a stage the first run lacks is left out."""
    stats = compared_stats(report.summaries)
    out: list[list[dict[str, Any]] | None] = [None]
    for run in report.runs[1:]:
        out.append([stage_difference(report.summaries[p], report.summaries[b], stats)
                    for p, b in matched_stages(report, run) if b is not None])
    return out
