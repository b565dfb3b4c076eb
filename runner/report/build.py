"""Result records → the report's data model: per-stage statistics, gathered
in one pass.

One streaming pass over the records feeds one
:class:`~runner.stats.StatsAccumulator` per stage plus a small ITL timeline
sample, so a report of a million-request run needs no more memory than the
statistics themselves. Every output (terminal tables, JSON, HTML) reads the
:class:`Report` built here and computes nothing from the files itself.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from runner.record import OK, Record, posix_time
from runner.stats import (
    DEFAULT_MAX_EXACT,
    Reservoir,
    StatsAccumulator,
    accumulate_by_stage,
    validate_slos,
)

from .read import InputFile, load_records, warn_stderr

#: ITL points drawn in the HTML timeline, at most.
TIMELINE_POINTS = 20_000


class Timeline:
    """A uniform sample of ITL gaps placed in time, for the "ITL over time"
    chart: gap ``i`` of a request ends at ``started_at + ttft + sum(gaps[:i+1])``.
    At most ``capacity`` points, however long the run."""

    def __init__(self, capacity: int = TIMELINE_POINTS, seed: int = 0) -> None:
        self._res = Reservoir(capacity, seed + 7)
        self.times = array("d")  # POSIX seconds
        self.gaps = array("d")  # seconds
        self.stages = array("i")  # stage position

    def observe(self, record: Record, stage: int) -> None:
        if record.warmup or record.status != OK:
            return
        metrics = record.metrics
        gaps = metrics.itl_s
        ttft = metrics.ttft_s
        if not gaps or ttft is None:
            return
        start = posix_time(metrics.started_at)
        if start is None:
            return
        n_append, replace = self._res.offer(len(gaps))
        if not (n_append or replace):  # the common case once sampling: skip the sums
            return
        ends = list(itertools.accumulate(gaps, initial=start + ttft))
        for i in range(n_append):
            self.times.append(ends[i + 1])
            self.gaps.append(gaps[i])
            self.stages.append(stage)
        for i, slot in replace:
            self.times[slot], self.gaps[slot], self.stages[slot] = ends[i + 1], gaps[i], stage

    @property
    def sampled(self) -> bool:
        return self._res.sampled

    @property
    def total(self) -> int:
        return self._res.seen


@dataclass
class Report:
    """Everything a report shows, gathered in one pass over the inputs."""

    inputs: list[InputFile]
    slos: dict[str, float]
    stages: list[StatsAccumulator]
    summaries: list[dict[str, Any]]
    timeline: Timeline
    generated_at: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    @property
    def run_start(self) -> float | None:
        """POSIX time the first request of any stage was sent, if known."""
        starts = [acc.first_start for acc in self.stages if acc.first_start is not None]
        return min(starts) if starts else None

    @property
    def run_end(self) -> float | None:
        """POSIX time the last request of any stage ended, if known."""
        ends = [acc.last_end for acc in self.stages if acc.last_end is not None]
        return max(ends) if ends else None


def build_report(
    paths: Iterable[str | Path],
    slos: dict[str, float] | None = None,
    *,
    max_exact: int = DEFAULT_MAX_EXACT,
    seed: int = 0,
    warn: Callable[[str], None] = warn_stderr,
) -> Report:
    """Read ``paths`` once and summarise them per stage."""
    slos = validate_slos(slos)
    inputs: list[InputFile] = []
    timeline = Timeline(seed=seed)
    stages = accumulate_by_stage(
        load_records(paths, inputs=inputs, warn=warn), max_exact=max_exact, seed=seed, observe=timeline.observe
    )
    return Report(inputs, slos, stages, [acc.summary(slos) for acc in stages], timeline)
