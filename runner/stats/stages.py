"""Records of several stages (a sweep) summarised stage by stage, in one pass."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..record import Record
from .accumulator import DEFAULT_MAX_EXACT, StatsAccumulator, validate_percentiles, validate_slos
from .percentiles import PERCENTILES


def stage_key(stage: Any) -> Any:
    """Records of one stage share this key: the stage index when present,
    else its label, else the whole dict (None = the single unnamed stage)."""
    if not isinstance(stage, dict):
        return None
    if stage.get("index") is not None:
        return ("index", stage["index"])
    if stage.get("label") is not None:
        return ("label", stage["label"])
    return ("dict", tuple(sorted((k, repr(v)) for k, v in stage.items())))


def accumulate_by_stage(
    records: Iterable[Record],
    *,
    max_exact: int = DEFAULT_MAX_EXACT,
    seed: int = 0,
    observe: Callable[[Record, int], None] | None = None,
    percentiles: Sequence[float] = PERCENTILES,
    window_s: float | None = None,
) -> list[StatsAccumulator]:
    """One accumulator per stage, in the order stages are first seen.

    ``observe(record, stage_position)`` sees every record on the way through,
    so a caller can collect more (the report's ITL timeline) in the same
    single pass over a file that may not fit in memory.
    """
    stages: dict[Any, StatsAccumulator] = {}
    positions: dict[Any, int] = {}
    for record in records:
        raw = record.stage
        key = stage_key(raw)
        acc = stages.get(key)
        if acc is None:
            info = dict(raw) if isinstance(raw, dict) else None
            acc = stages[key] = StatsAccumulator(stage=info, max_exact=max_exact, seed=seed,
                                                 percentiles=tuple(percentiles), window_s=window_s)
            positions[key] = len(positions)
        elif isinstance(raw, dict) and raw.get("degraded") is True and acc.stage is not None:
            acc.stage["degraded"] = True  # records written after a worker died in the stage say so (--workers)
        acc.add(record)
        if observe is not None:
            observe(record, positions[key])
    return list(stages.values())


def summarize_by_stage(
    records: Iterable[Record],
    slos: dict[str, float] | None = None,
    *,
    max_exact: int = DEFAULT_MAX_EXACT,
    seed: int = 0,
    percentiles: Sequence[float] = PERCENTILES,
    window_s: float | None = None,
) -> list[dict[str, Any]]:
    """:meth:`StatsAccumulator.summary` per stage, in first-seen order."""
    slos = validate_slos(slos)  # fail before reading a million lines
    percentiles = validate_percentiles(percentiles)
    return [acc.summary(slos) for acc in accumulate_by_stage(records, max_exact=max_exact, seed=seed,
                                                             percentiles=percentiles, window_s=window_s)]
