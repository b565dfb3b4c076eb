"""How the report names things, shared by every way it shows them.

The terminal tables, the charts and the HTML page all show the same metrics
under the same names, the same stage labels and the same sweep axis. They
are defined here once, so that a stage or a metric reads the same in each.
"""

from __future__ import annotations

import math
from typing import Any, TypeGuard

FOOTNOTE = "ITL here = per-chunk gap (vLLM's ITL); AIPerf/guidellm 'ITL' = our TPOT; ttfb = vLLM's TTFT"

# (summary key, short name, long name) of the latency metrics shown.
LATENCIES: tuple[tuple[str, str, str], ...] = (
    ("ttft_s", "TTFT", "time to first token"),
    ("ttfat_s", "TTFAT", "time to first answer token, after any reasoning"),
    ("connect_s", "Connect", "opening a connection (requests that opened one; count = how many)"),
    ("ttfb_s", "TTFB", "time to first byte (vLLM's TTFT)"),
    ("tpot_s", "TPOT", "time per output token"),
    ("itl_s", "ITL", "inter-chunk gap"),
    ("e2e_s", "E2E", "end-to-end latency"),
    ("queue_s", "Queue", "due to sent"),
)
#: The latencies compared across the stages of a sweep.
SWEEP_LATENCIES = ("ttft_s", "ttfat_s", "connect_s", "tpot_s", "itl_s", "e2e_s")
#: The latencies compared between runs (``streamrun report a.jsonl b.jsonl``).
COMPARED_LATENCIES = ("ttft_s", "ttfat_s", "tpot_s", "itl_s", "e2e_s")
#: The statistic columns of the default percentiles; :func:`stat_columns` gives those of a summary.
STAT_COLUMNS = ("mean", "p50", "p90", "p95", "p99", "min", "max")
# Metrics shown only where some request has a value: records written before them have none.
_ONLY_WITH_VALUES = ("ttfat_s",)


def shown_latencies(summaries: list[dict[str, Any]], keys: tuple[str, ...] | None = None
                    ) -> list[tuple[str, str, str]]:
    """The LATENCIES (of ``keys``, when given) that every summary describes: a summary
    written before a metric existed (``connect_s``) shows the others, and TTFAT shows
    only where some request has one (records written before it have none)."""
    return [lat for lat in LATENCIES if (keys is None or lat[0] in keys)
            and all(lat[0] in s.get("metrics", {}) for s in summaries)
            and (lat[0] not in _ONLY_WITH_VALUES or any(s["metrics"][lat[0]]["count"] for s in summaries))]


def stat_columns(summaries: list[dict[str, Any]]) -> tuple[str, ...]:
    """mean, the percentiles the summaries were made with (``--percentiles``), min, max:
    read off a metric's keys, so a summary from a file shows what it holds."""
    for s in summaries:
        for d in s.get("metrics", {}).values():
            return tuple(k for k in d if k not in ("count", "sampled"))
    return STAT_COLUMNS


def percentile_columns(columns: tuple[str, ...]) -> tuple[str, ...]:
    """The percentile keys among ``columns`` (``p50`` ... ``p99.9``)."""
    return tuple(c for c in columns if c.startswith("p"))


def pair_keys(columns: tuple[str, ...]) -> tuple[str, str]:
    """The two percentiles of a compact view: p50 and p99 when chosen, else the
    lowest and the highest chosen."""
    qs = percentile_columns(columns) or ("p50", "p99")
    return ("p50" if "p50" in qs else qs[0]), ("p99" if "p99" in qs else qs[-1])


def stage_label(summary: dict[str, Any], position: int = 0) -> str:
    """A short name for a stage: its label, else its load, else its index."""
    stage = summary.get("stage")
    if not isinstance(stage, dict):
        return "all"
    if stage.get("label"):
        return str(stage["label"])
    parts = []
    if stage.get("concurrency") is not None:
        parts.append(f"c={stage['concurrency']}")
    if stage.get("rate") is not None:
        parts.append(f"rate={stage['rate']}")
    return " ".join(parts) or f"stage {stage.get('index', position)}"


#: The stages ``--rate sweep`` measures before its constant rates (runner/config/run_config.py).
SWEEP_ENDS = ("synchronous", "throughput")


def is_number(value: Any) -> TypeGuard[float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def stage_field(summary: dict[str, Any], key: str) -> Any:
    stage = summary.get("stage")
    return stage.get(key) if isinstance(stage, dict) else None


def is_rate_sweep(summaries: list[dict[str, Any]]) -> bool:
    """Stages told apart by their request rate: constant rates that differ, or
    ``--rate sweep``'s own stages (``synchronous`` has no rate, ``throughput``
    an infinite one, written as null), which have a rate only once measured."""
    rates = [r for r in (stage_field(s, "rate") for s in summaries) if is_number(r)]
    labels = {stage_field(s, "label") for s in summaries}
    return len(summaries) > 1 and (len(set(rates)) > 1 or 0 < len(rates) < len(summaries)
                                   or all(end in labels for end in SWEEP_ENDS))


def offered_rates(summaries: list[dict[str, Any]]) -> list[float | None]:
    """A rate sweep's x: each stage's constant rate, else (``synchronous``,
    ``throughput``) the request rate it achieved: the load it stood for."""
    out = []
    for s in summaries:
        rate = stage_field(s, "rate")
        out.append(rate if is_number(rate) else s.get("request_throughput"))
    return out


def sweep_axis(summaries: list[dict[str, Any]]) -> tuple[str, list[Any], bool]:
    """What the sweep varied: the rate in a rate sweep (:func:`offered_rates`),
    else concurrency or rate when every stage has a number for it and they
    differ; else the stage labels as categories."""
    if is_rate_sweep(summaries):
        xs = offered_rates(summaries)
        if all(is_number(x) for x in xs):
            return "request rate (req/s)", xs, True
    for key, title in (("concurrency", "concurrency"), ("rate", "request rate (req/s)")):
        xs = [s["stage"].get(key) if isinstance(s.get("stage"), dict) else None for s in summaries]
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs) and len(set(xs)) > 1:
            return title, xs, True
    return "stage", [stage_label(s, i) for i, s in enumerate(summaries)], False


def duration(seconds: float | None) -> str:
    """``12.3 s``, ``4m 05.0s``, ``2h 03m``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)}m {sec:04.1f}s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)}h {int(minutes):02d}m"
