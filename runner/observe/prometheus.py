"""Prometheus text → flat series, the serving gauges worth naming, and their running figures.

Why a module of its own: the scraper (``runner.observe.server_metrics``) writes what
this parses, and the report (``runner.report.server``) reads what the scraper
wrote; both must agree on what a series is called and which series are the
known gauges of vLLM, SGLang and TGI, and neither should know the other.

Parsing is prometheus_client's own (``text_string_to_metric_families``), not
a hand-written one: the exposition format has escapes, comments, types and
suffixes that a regex gets wrong.  What is kept of a scrape:

- gauges, counters and untyped samples, as ``name{label="value",...}`` →
  float (labels sorted, so one series has one key in every scrape);
- of histograms and summaries only ``_sum`` and ``_count`` (their buckets and
  quantiles would be most of the text and say little over time);
- nothing of ``_created`` samples (creation timestamps, not measurements),
  info or state sets, and no NaN or infinity (JSON has none);
- at most ``MAX_SERIES`` series a scrape: a server exporting per-adapter or
  per-user series cannot grow a long run's memory or side file without
  bound.  The known gauges below are kept whatever the cap; the rest, in the
  order the server lists them, until it; the others are counted as dropped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_SERIES = 2000

#: How the value of one scrape is made from several series of one name
#: (label sets: one per model, engine or data-parallel rank).
SUM, MEAN = "sum", "mean"


@dataclass(frozen=True)
class Known:
    """A gauge the summary and the report name: what it measures (``kind``), and how label sets combine."""

    name: str
    kind: str  # running | waiting | kv_cache | prefix_hit: the report draws one panel per group
    agg: str


KNOWN: tuple[Known, ...] = (
    Known("vllm:num_requests_running", "running", SUM),
    Known("vllm:num_requests_waiting", "waiting", SUM),
    Known("vllm:gpu_cache_usage_perc", "kv_cache", MEAN),  # a fraction 0..1 despite the name
    Known("vllm:kv_cache_usage_perc", "kv_cache", MEAN),  # its newer name
    Known("sglang:num_running_reqs", "running", SUM),
    Known("sglang:num_queue_reqs", "waiting", SUM),
    Known("sglang:token_usage", "kv_cache", MEAN),
    Known("sglang:cache_hit_rate", "prefix_hit", MEAN),
    Known("tgi_batch_current_size", "running", SUM),
    Known("tgi_queue_size", "waiting", SUM),
)
BY_NAME = {k.name: k for k in KNOWN}

#: vLLM counts prefix-cache lookups as two counters, hits and queries (in
#: tokens); their rate of change is the hit rate.  Older and newer names.
PREFIX_COUNTERS = (("vllm:prefix_cache_hits", "vllm:prefix_cache_queries"),
                   ("vllm:gpu_prefix_cache_hits", "vllm:gpu_prefix_cache_queries"))
PREFIX_HIT_RATE = "prefix_cache_hit_rate"  # the derived figure's name in the summary and the report
_COUNTER_NAMES = {n for pair in PREFIX_COUNTERS for n in pair}
_KEEP_ALWAYS = set(BY_NAME) | _COUNTER_NAMES | {n + "_total" for n in _COUNTER_NAMES}
_AGGREGATES = ("histogram", "gaugehistogram", "summary")


@dataclass
class Scrape:
    """One parsed scrape: series → value, and how many series the cap left out."""

    series: dict[str, float]
    dropped: int = 0


def series_key(name: str, labels: Mapping[str, str]) -> str:
    """``name{a="x",b="y"}`` with labels sorted and escaped as the exposition format escapes them."""
    if not labels:
        return name
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def base_name(key: str) -> str:
    """The metric name of a series key (``vllm:x{model_name="m"}`` → ``vllm:x``)."""
    return key.split("{", 1)[0]


def parse(text: str, max_series: int = MAX_SERIES) -> Scrape:
    """A /metrics body as flat series (see the module docstring); ValueError when it is not Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    out = Scrape({})
    try:
        for family in text_string_to_metric_families(text):
            if family.type in ("info", "stateset"):
                continue
            aggregate = family.type in _AGGREGATES
            for sample in family.samples:
                name = sample.name
                if name.endswith("_created") or (aggregate and not name.endswith(("_sum", "_count"))):
                    continue
                value = float(sample.value)
                if not math.isfinite(value):
                    continue
                if len(out.series) >= max_series and name not in _KEEP_ALWAYS:
                    out.dropped += 1
                    continue
                out.series[series_key(name, sample.labels)] = value
    except ValueError:
        raise
    except Exception as exc:  # the parser raises what it meets (IndexError, TypeError) on garbage
        raise ValueError(f"not Prometheus text ({type(exc).__name__}: {exc})") from None
    return out


def known_values(series: Mapping[str, float]) -> dict[str, float]:
    """Each known gauge present in one scrape → its value (label sets summed, or averaged: ``Known.agg``)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for key, value in series.items():
        name = base_name(key)
        if name in BY_NAME:
            sums[name] = sums.get(name, 0.0) + value
            counts[name] = counts.get(name, 0) + 1
    return {name: (total / counts[name] if BY_NAME[name].agg == MEAN else total) for name, total in sums.items()}


def prefix_counts(series: Mapping[str, float]) -> tuple[float, float] | None:
    """vLLM's prefix-cache (hits, queries) counters in one scrape, summed over label sets; None without them."""
    totals: dict[str, float] = {}
    for key, value in series.items():
        name = base_name(key).removesuffix("_total")
        if name in _COUNTER_NAMES:
            totals[name] = totals.get(name, 0.0) + value
    for hits, queries in PREFIX_COUNTERS:
        if hits in totals and queries in totals:
            return totals[hits], totals[queries]
    return None


def counter_delta(previous: float | None, current: float) -> float:
    """How much a counter grew since the previous scrape; a counter that fell was reset (a restart)."""
    if previous is None:
        return 0.0
    return current - previous if current >= previous else current


@dataclass
class GaugeFigures:
    """Running mean and max of one gauge: constant memory however long the run."""

    samples: int = 0
    total: float = 0.0
    max: float | None = None

    def add(self, value: float) -> None:
        self.samples += 1
        self.total += value
        self.max = value if self.max is None else max(self.max, value)

    def as_dict(self) -> dict[str, Any]:
        return {"mean": self.total / self.samples if self.samples else None, "max": self.max,
                "samples": self.samples}


@dataclass
class HitRate:
    """A hit rate from two counters: the sum of their growth between scrapes, reset-safe."""

    hits: float = 0.0
    queries: float = 0.0
    _last: tuple[float, float] | None = None

    def add(self, counts: tuple[float, float]) -> None:
        if self._last is not None:
            self.hits += counter_delta(self._last[0], counts[0])
            self.queries += counter_delta(self._last[1], counts[1])
        self._last = counts

    @property
    def rate(self) -> float | None:
        return self.hits / self.queries if self.queries > 0 else None


@dataclass
class ServerFigures:
    """What the summary says of one scraped endpoint: counts, each known gauge's mean and max, the hit rate."""

    url: str  # public: without credentials
    scrapes: int = 0
    failures: int = 0
    gauges: dict[str, GaugeFigures] = field(default_factory=dict)
    prefix: HitRate = field(default_factory=HitRate)

    def add(self, series: Mapping[str, float]) -> None:
        self.scrapes += 1
        for name, value in known_values(series).items():
            self.gauges.setdefault(name, GaugeFigures()).add(value)
        counts = prefix_counts(series)
        if counts is not None:
            self.prefix.add(counts)

    def as_dict(self) -> dict[str, Any]:
        return {"url": self.url, "scrapes": self.scrapes, "failures": self.failures,
                "gauges": {name: g.as_dict() for name, g in self.gauges.items()},
                PREFIX_HIT_RATE: self.prefix.rate}
