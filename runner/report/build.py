"""Result records → the report's data model: per-stage statistics, gathered
in one pass.

One streaming pass over the records feeds one
:class:`~runner.stats.StatsAccumulator` per stage plus a small ITL timeline
sample, so a report of a million-request run needs no more memory than the
statistics themselves. Every output (terminal tables, JSON, HTML) reads the
:class:`Report` built here and computes nothing from the files itself.

Several runs (a comparison, :mod:`.runs`) are read one after the other into
one Report: their stages follow each other in ``stages``, and ``runs`` says
which belong to which run.
"""

from __future__ import annotations

import itertools
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runner.record import OK, Record, posix_time
from runner.stats import (
    DEFAULT_MAX_EXACT,
    PERCENTILES,
    Reservoir,
    StatsAccumulator,
    accumulate_by_stage,
    validate_percentiles,
    validate_slos,
)

from .labels import stage_label
from .read import InputFile, load_records, warn_stderr
from .runs import group_runs, pooled

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

    @classmethod
    def merged(cls, parts: Sequence[tuple[Timeline, float, int]]) -> Timeline:
        """The timelines of several runs in one, each ``(timeline, shift,
        first stage)``: times moved by ``shift`` (so every run starts at the
        same moment) and stage positions by ``first``."""
        out = cls(capacity=max(1, sum(len(t.times) for t, _, _ in parts)))
        for tl, shift, first in parts:
            out.times.extend(t + shift for t in tl.times)
            out.gaps.extend(tl.gaps)
            out.stages.extend(s + first for s in tl.stages)
        out._res.seen = sum(t.total for t, _, _ in parts)  # sampled when any part was
        return out


@dataclass
class RunPart:
    """One run of a report: its label, files, and its stages' place in ``Report.stages``."""

    label: str
    paths: list[str]
    first: int
    count: int


@dataclass
class Report:
    """Everything a report shows, gathered in one pass over the inputs."""

    inputs: list[InputFile]
    slos: dict[str, float]
    stages: list[StatsAccumulator]
    summaries: list[dict[str, Any]]
    timeline: Timeline
    generated_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    server: Any = None  # server.ServerView: the run's /metrics samples (--server-metrics), when found
    percentiles: tuple[float, ...] = PERCENTILES
    window_s: float | None = None
    runs: list[RunPart] = field(default_factory=list)  # one entry per run; several: a comparison

    def __post_init__(self) -> None:
        if not self.runs:
            self.runs = [RunPart("", [i.path for i in self.inputs], 0, len(self.stages))]

    @property
    def compare(self) -> bool:
        """Several runs side by side (``streamrun report a.jsonl b.jsonl``)."""
        return len(self.runs) > 1

    def run_of(self, position: int) -> RunPart:
        """The run that stage ``position`` belongs to."""
        return next(r for r in self.runs if r.first <= position < r.first + r.count)

    def label(self, position: int) -> str:
        """How stage ``position`` is named on the page: its stage label, in a
        comparison prefixed by its run's (``base · c=4``; ``base`` alone for a
        run of one unnamed stage)."""
        name = stage_label(self.summaries[position], position - self.run_of(position).first)
        if not self.compare:
            return name
        run = self.run_of(position)
        return run.label if run.count == 1 and name == "all" else f"{run.label} · {name}"

    def run_summaries(self, run: RunPart) -> list[dict[str, Any]]:
        return self.summaries[run.first : run.first + run.count]

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
    percentiles: Sequence[float] = PERCENTILES,
    window_s: float | None = None,
    by_run: bool = False,
) -> Report:
    """Read ``paths`` once and summarise them per stage.

    By default every file is pooled into one run (the shards of a run, say).
    ``by_run``: each run (:func:`~runner.report.runs.group_runs`: by sidecar
    label, else file) is summarised on its own, for a comparison.
    """
    slos = validate_slos(slos)
    percentiles = validate_percentiles(percentiles)
    names = [str(p) for p in paths]
    groups = group_runs(names, warn) if by_run else [pooled(names)]
    inputs: list[InputFile] = []
    stages: list[StatsAccumulator] = []
    runs: list[RunPart] = []
    timelines: list[Timeline] = []
    for group in groups:
        timeline = Timeline(capacity=max(1, TIMELINE_POINTS // len(groups)), seed=seed)
        accs = accumulate_by_stage(load_records(group.paths, inputs=inputs, warn=warn), max_exact=max_exact,
                                   seed=seed, observe=timeline.observe, percentiles=percentiles,
                                   window_s=window_s)
        runs.append(RunPart(group.label, group.paths, len(stages), len(accs)))
        stages += accs
        timelines.append(timeline)
    if len(runs) == 1:
        timeline = timelines[0]
    else:  # each run's ITL gaps on a clock that starts when the earliest run started
        starts = [min((a.first_start for a in stages[r.first : r.first + r.count] if a.first_start is not None),
                      default=None) for r in runs]
        origin = min((s for s in starts if s is not None), default=0.0)
        timeline = Timeline.merged([(tl, origin - (s if s is not None else origin), r.first)
                                    for tl, s, r in zip(timelines, starts, runs, strict=True)])
    summaries = [acc.summary(slos) for acc in stages]
    return Report(inputs, slos, stages, summaries, timeline, percentiles=percentiles, window_s=window_s,
                  runs=runs)
