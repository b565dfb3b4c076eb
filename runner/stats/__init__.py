"""Statistics of result records: percentiles, reservoir samples, the per-stage summary.

    percentiles   percentile / describe, numpy's "linear" method (the one copy)
    reservoir     uniform sampling that keeps long runs in bounded memory
    running       exact running count/sum/min/max; the finite-number check
    accumulator   StatsAccumulator: one stage's summary, fed record by record
    windows       statistics per time window (--window), from the accumulator's rows
    turns         TTFT by turn index of multi-turn sessions
    stages        records of a sweep grouped and summarised by stage
"""

from __future__ import annotations

from .accumulator import DEFAULT_MAX_EXACT, StatsAccumulator, format_time, validate_percentiles, validate_slos
from .percentiles import PERCENTILES, SortedRuns, describe, percentile, percentile_key
from .reservoir import Reservoir
from .stages import accumulate_by_stage, stage_key, summarize_by_stage
from .turns import MAX_TURNS
from .windows import MAX_WINDOWS

__all__ = [
    "DEFAULT_MAX_EXACT",
    "MAX_TURNS",
    "MAX_WINDOWS",
    "PERCENTILES",
    "Reservoir",
    "SortedRuns",
    "StatsAccumulator",
    "accumulate_by_stage",
    "describe",
    "format_time",
    "percentile",
    "percentile_key",
    "stage_key",
    "summarize_by_stage",
    "validate_percentiles",
    "validate_slos",
]
