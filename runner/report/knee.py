"""The knee of a load sweep: the most throughput had before latency climbs.

A sweep (``-c 1,4,16,64``, ``--rate 1,5,10``, ``--rate sweep``) is run to
answer one question: how much load does the server take before its requests
get slow? The answer is read off latency against achieved throughput, and
named here once, so the page, the terminal and the JSON give the same one.

The rule (docs/REPORT.md, "Sweeps: the knee"): stages in load order; the
*baseline* is the lowest load's p99 E2E; a stage is *within budget* when its
p99 E2E is at most ``FACTOR`` (2) times the baseline; the knee is the stage
within budget with the highest achieved request throughput, provided some
stage went over budget (else latency never climbed, and there is no knee).

Why this rule and not the point of maximum curvature (Kneedle): a sweep has
3 to 7 points. Curvature over so few points depends on every one of them
(one more stage at high load moves the knee), on how the axes are scaled,
and finds a "knee" in a flat, noisy curve too. The budget rule compares each
stage with the baseline alone: a noisy stage moves nothing but itself, a
stage added beyond the knee changes nothing, and the answer reads plainly:
"up to 12 req/s, requests take at most twice as long as alone".

Pure functions of stage summaries (``StatsAccumulator.summary()``), so
``streamrun run``'s end-of-sweep table uses them as the report does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .labels import is_number, is_rate_sweep, offered_rates, pair_keys, stage_field, stage_label, stat_columns

#: A stage is within budget while its p99 E2E is at most this many times the lowest load's.
FACTOR = 2.0
#: The latency the rule reads (E2E: what a request of a batch waits for, queueing and decoding both).
METRIC = "e2e_s"
#: Fewer stages than this make no curve to find a knee on.
MIN_STAGES = 3


@dataclass
class Knee:
    """The knee of one run's sweep, ``position`` indexing its summaries."""

    position: int
    label: str
    throughput_rps: float
    latency_s: float
    baseline_position: int
    baseline_label: str
    baseline_s: float
    stat: str
    factor: float = FACTOR
    metric: str = METRIC


def load_order(summaries: Sequence[dict[str, Any]]) -> tuple[str, list[int]]:
    """``(axis, positions)``: the stages from the lightest load to the heaviest.

    A rate sweep (``rate``) goes by each stage's rate; its ``synchronous`` and
    ``throughput`` stages have none (the latter's is infinite) and go by the
    request rate they achieved, which lies below and above the rates between by
    construction. A concurrency sweep goes by concurrency. Otherwise
    (``stage``) the stages are not loads, and keep their first-seen order.
    Stages without a number go last, in their order.
    """
    summaries = list(summaries)
    if is_rate_sweep(summaries):
        axis, keys = "rate", offered_rates(summaries)
    else:
        keys = [stage_field(s, "concurrency") for s in summaries]
        if len(summaries) < 2 or not all(is_number(k) for k in keys) or len(set(keys)) < 2:
            return "stage", list(range(len(summaries)))
        axis = "concurrency"
    return axis, sorted(range(len(summaries)),
                        key=lambda i: (not is_number(keys[i]), keys[i] if is_number(keys[i]) else 0.0, i))


def knee_stat(summaries: Sequence[dict[str, Any]]) -> str:
    """p99, else the highest percentile the summaries were made with (``--percentiles``)."""
    return pair_keys(stat_columns(list(summaries)))[1]


def _point(summary: dict[str, Any], stat: str, metric: str = METRIC) -> tuple[float, float] | None:
    """``(req/s, latency s)`` of a stage, when it has both."""
    x = summary.get("request_throughput")
    y = ((summary.get("metrics") or {}).get(metric) or {}).get(stat)
    return (x, y) if is_number(x) and is_number(y) else None


def _points(summaries: list[dict[str, Any]], stat: str) -> list[tuple[int, tuple[float, float]]]:
    """``(position, (req/s, latency s))`` of the stages with both, lightest load first; none when the
    stages are not loads."""
    axis, order = load_order(summaries)
    if axis == "stage":
        return []
    return [(i, p) for i in order if (p := _point(summaries[i], stat)) is not None]


def find_knee(summaries: Sequence[dict[str, Any]], factor: float = FACTOR) -> tuple[Knee | None, str]:
    """The knee, or None and why not (a sentence for people, also in the JSON)."""
    summaries = list(summaries)
    stat = knee_stat(summaries)
    name = f"{stat} {METRIC.removesuffix('_s').upper()}"
    few = f"fewer than {MIN_STAGES} stages with a throughput and a {name}"
    if len(summaries) < MIN_STAGES:
        return None, few
    if load_order(summaries)[0] == "stage":
        return None, "the stages are not loads (neither rates nor concurrencies that differ)"
    points = _points(summaries, stat)
    if len(points) < MIN_STAGES:
        return None, few
    base, (_, baseline) = points[0]
    if baseline <= 0:
        return None, f"the lowest load's {name} is 0"
    within = [(i, p) for i, p in points if p[1] <= factor * baseline]
    if len(within) == len(points):
        top = max(points, key=lambda ip: ip[1][0])
        return None, (f"{name} stayed within {factor:g}x the lowest load's ({stage_label(summaries[base], base)}) "
                      f"up to {top[1][0]:.2f} req/s ({stage_label(summaries[top[0]], top[0])})")
    pos, (rps, latency) = max(within, key=lambda ip: ip[1][0])  # the first of equals: the lighter load
    return Knee(pos, stage_label(summaries[pos], pos), rps, latency, base, stage_label(summaries[base], base),
                baseline, stat, factor), ""


def sweep_section(summaries: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The JSON's ``sweep`` of a run: its load order, the baseline and the knee; None for a single stage."""
    summaries = list(summaries)
    if len(summaries) < 2:
        return None
    axis, order = load_order(summaries)
    stat = knee_stat(summaries)
    points = _points(summaries, stat)
    knee, why = find_knee(summaries)
    base = points[0] if points else None
    return {
        "axis": axis,
        "order": [stage_label(summaries[i], i) for i in order],
        "knee_rule": {"metric": METRIC, "stat": stat, "factor": FACTOR},
        "baseline_stage": stage_label(summaries[base[0]], base[0]) if base else None,
        "baseline_s": base[1][1] if base else None,
        "knee_stage": knee.label if knee else None,
        "knee_index": knee.position if knee else None,
        "knee_throughput_rps": knee.throughput_rps if knee else None,
        "knee_latency_s": knee.latency_s if knee else None,
        "note": why or None,
    }


def knee_line(summaries: Sequence[dict[str, Any]], prefix: str = "") -> str | None:
    """One line for the terminal: the knee stage, its throughput and latencies;
    or why there is none. None for a run that is not a sweep of loads."""
    summaries = list(summaries)
    if len(summaries) < 2 or load_order(summaries)[0] == "stage":
        return None
    knee, why = find_knee(summaries)
    if knee is None:
        return f"{prefix}knee: none, {why}"
    ttft = (summaries[knee.position].get("metrics") or {}).get("ttft_s", {}).get(knee.stat)
    metric = knee.metric.removesuffix("_s").upper()
    return (f"{prefix}knee: {knee.label} at {knee.throughput_rps:.2f} req/s, {knee.stat} {metric} "
            f"{knee.latency_s * 1000:.2f} ms" + (f", {knee.stat} TTFT {ttft * 1000:.2f} ms" if is_number(ttft) else "")
            + f" (the most req/s with {knee.stat} {metric} within {knee.factor:g}x the lowest load's, "
              f"{knee.baseline_label}: {knee.baseline_s * 1000:.2f} ms)")
