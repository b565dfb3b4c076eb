"""Statistics of result records: percentiles, reservoir samples, the per-stage summary.

    percentiles   percentile / describe, numpy's "linear" method (the one copy)
    reservoir     uniform sampling that keeps long runs in bounded memory
    accumulator   StatsAccumulator: one stage's summary, fed record by record
    stages        records of a sweep grouped and summarised by stage
"""

from __future__ import annotations

from .accumulator import DEFAULT_MAX_EXACT, SLO_KEYS, StatsAccumulator, format_time, validate_slos
from .percentiles import PERCENTILES, SortedRuns, describe, percentile
from .reservoir import Reservoir
from .stages import accumulate_by_stage, stage_key, summarize_by_stage

__all__ = [
    "DEFAULT_MAX_EXACT",
    "PERCENTILES",
    "SLO_KEYS",
    "Reservoir",
    "SortedRuns",
    "StatsAccumulator",
    "accumulate_by_stage",
    "describe",
    "format_time",
    "percentile",
    "stage_key",
    "summarize_by_stage",
    "validate_slos",
]
