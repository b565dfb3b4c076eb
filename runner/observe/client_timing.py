"""Whether the client's own numbers can be trusted, stage by stage.

A latency is two timestamps taken on the client's event loop.  When that
loop is busy (decoding SSE for a thousand streams, the embedded mock, the
statistics), a chunk that arrived on time is stamped when the loop gets to
it: late by the loop's lag at that moment.  So the client measures its own
lag (`LagMonitor`: how late a 50 ms sleep wakes up) and its CPU time, per
stage, and says of each stage whether its numbers are the server's:

    client-bound  when  loop lag p99 > max(5 ms, 5 % of the stage's TTFT p50)
                  or    CPU >= 90 % of one core, over a stage of 1 s or more

judged only for a stage of 20 measured requests or more (ok, sent by this
run): with fewer there are too few latencies to speak of (a run whose every
request failed has none), and such a stage is mostly start-up.  And by how
much: a TTFT is inflated by at most the loop lag when its first token came,
so the lag p99 bounds the inflation of 99 % of the TTFTs (the max bounds
them all).  The rule is `RULE`; the summary writes it beside the
figures (`timing.rule`), docs/SUMMARY.md explains it.

Each lag sample carries the time the loop woke up (time.perf_counter) and
goes to the stage running then (`StageTimer`: the engine says when a stage
begins and ends, `EngineHooks.on_stage`).  With --workers the workers time
the requests: each measures its own loop and CPU per stage and sends the
figures with the stage's end (PHASE_DONE); the parent pools them
(`ClientTiming.document`), and falls back to its own figures, saying so,
for a stage no worker reported.
"""

from __future__ import annotations

import asyncio
import time
from array import array
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from ..stats.percentiles import percentile
from ..stats.reservoir import Reservoir

if TYPE_CHECKING:
    from ..config.run_config import Stage
    from ..record import Record

LAG_INTERVAL_S = 0.05  # how often the loop's lag is sampled
KEEP = 10_000  # lag samples and TTFTs kept per stage: all of them up to this, a uniform sample beyond


@dataclass(frozen=True)
class Rule:
    """When a stage's numbers are the client's rather than the server's."""

    lag_floor_s: float = 0.005  # a loop lag p99 above this ...
    ttft_share: float = 0.05  # ... and above this share of the stage's TTFT p50 is client-bound
    cpu_share: float = 0.90  # so is a process busy this share of one core or more ...
    min_cpu_wall_s: float = 1.0  # ... over a stage at least this long (shorter ones are start-up noise)
    min_lag_samples: int = 10  # fewer lag samples than this judge nothing (a stage under half a second)
    min_requests: int = 20  # fewer measured requests (ok, sent by this run) than this judge nothing

    def as_dict(self) -> dict[str, float]:
        return {**asdict(self), "lag_interval_s": LAG_INTERVAL_S}


RULE = Rule()


@dataclass
class LagMonitor:
    """How late the event loop wakes up: a saturated client inflates every latency.

    `on_sample(woke_at, lag)` sees each sample (the run's `StageTimer.sample`).
    """

    interval: float = LAG_INTERVAL_S
    on_sample: Callable[[float, float], None] | None = None
    samples: int = 0
    total: float = 0.0
    max: float = 0.0
    over_10ms: int = 0

    async def run(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(self.interval)
            now = time.perf_counter()
            self.add(now, now - t - self.interval)

    def add(self, woke_at: float, lag: float) -> None:
        self.samples += 1
        self.total += lag
        self.max = max(self.max, lag)
        self.over_10ms += lag > 0.010
        if self.on_sample is not None:
            self.on_sample(woke_at, lag)

    def summary(self) -> dict:
        mean = self.total / self.samples if self.samples else 0.0
        share = self.over_10ms / self.samples if self.samples else 0.0
        return {"samples": self.samples, "mean_s": mean, "max_s": self.max, "share_over_10ms": share}


class Kept:
    """The values of a stream: all of them up to `capacity`, a uniform sample beyond (flat memory)."""

    def __init__(self, capacity: int = KEEP, seed: int = 0) -> None:
        self.values = array("d")
        self._reservoir = Reservoir(capacity, seed)

    def add(self, value: float) -> None:
        append, replace = self._reservoir.offer(1)
        if append:
            self.values.append(value)
        for _, slot in replace:
            self.values[slot] = value


@dataclass
class StageRun:
    """One stage as this process saw it: its wall span, its CPU time, the lag samples taken while it ran."""

    index: int
    label: str | None
    start: float
    cpu_start: float
    end: float | None = None
    cpu_s: float | None = None
    lags: Kept = field(default_factory=Kept)
    samples: int = 0
    max_s: float = 0.0
    over_10ms: int = 0

    def add_lag(self, lag: float) -> None:
        lag = max(0.0, lag)  # a timer may fire a hair early
        self.lags.add(lag)
        self.samples += 1
        self.max_s = max(self.max_s, lag)
        self.over_10ms += lag > 0.010

    def wire(self) -> dict[str, Any]:
        """What a worker tells the parent of its part of the stage."""
        return {"index": self.index, "wall_s": (self.end or self.start) - self.start, "cpu_s": self.cpu_s,
                "lags": list(self.lags.values), "samples": self.samples, "max_s": self.max_s,
                "over_10ms": self.over_10ms}


class StageTimer:
    """Stage spans and CPU from the engine's `on_stage` hook; each lag sample to the stage running when it woke.

    Warm-ups are not stages here (nothing of theirs is reported).  `clock`
    and `cpu` are time.perf_counter and time.process_time; tests pass their own.
    """

    def __init__(self, clock: Callable[[], float] = time.perf_counter,
                 cpu: Callable[[], float] = time.process_time) -> None:
        self.clock, self.cpu = clock, cpu
        self.stages: list[StageRun] = []
        self._open: StageRun | None = None
        self._sent = 0

    def on_stage(self, stage: Stage, warmup: bool, begin: bool) -> None:
        if warmup:
            return
        if begin:
            self._open = StageRun(stage.index, stage.label, self.clock(), self.cpu())
            self.stages.append(self._open)
        elif self._open is not None:
            self._open.end, self._open.cpu_s = self.clock(), self.cpu() - self._open.cpu_start
            self._open = None

    def sample(self, woke_at: float, lag: float) -> None:
        run = self._open
        if run is not None and woke_at >= run.start:  # woke before the stage began: the gap before it
            run.add_lag(lag)

    def wire(self) -> list[dict[str, Any]]:
        """The stages that ended since the last call (a worker's PHASE_DONE)."""
        done = [s for s in self.stages[self._sent:] if s.end is not None]
        self._sent += len(done)
        return [s.wire() for s in done]


def describe_lags(values: Iterable[float], samples: int | None = None, max_s: float | None = None,
                  over_10ms: int | None = None) -> dict[str, Any]:
    """p50, p99, max and the share over 10 ms of lag samples; counts and max exact when given
    (the values may be a sample of them)."""
    ordered = sorted(values)
    n = len(ordered) if samples is None else samples
    over = sum(v > 0.010 for v in ordered) if over_10ms is None else over_10ms
    top = (ordered[-1] if ordered else None) if max_s is None else max_s
    return {"samples": n, "p50_s": percentile(ordered, 50), "p99_s": percentile(ordered, 99),
            "max_s": top if n else None, "share_over_10ms": over / n if n else None}


def lag_limit(ttft_p50_s: float | None, rule: Rule) -> float:
    """The loop lag p99 a stage may have: 5 ms, or 5 % of its TTFT p50 when that is more."""
    return max(rule.lag_floor_s, rule.ttft_share * (ttft_p50_s or 0.0))


def judge(lag: dict[str, Any], cpu_share: float | None, wall_s: float, ttft_p50_s: float | None,
          rule: Rule = RULE, *, requests: int | None = None) -> tuple[bool, str]:
    """(client-bound, why) of one stage, from `describe_lags`, its CPU share of one core, its length and TTFT p50;
    and its measured requests, when counted: too few judge nothing."""
    if requests is not None and requests < rule.min_requests:
        return False, (f"{requests} measured request{'' if requests == 1 else 's'}, too few to judge "
                       f"({rule.min_requests} needed)")
    limit = lag_limit(ttft_p50_s, rule)
    p99 = lag["p99_s"]
    lag_judged = lag["samples"] >= rule.min_lag_samples and p99 is not None
    judged_share = cpu_share if cpu_share is not None and wall_s >= rule.min_cpu_wall_s else None
    lag_bound = lag_judged and p99 > limit
    cpu_bound = judged_share is not None and judged_share >= rule.cpu_share
    basis = f"{ms(limit)} ms limit" + (f" ({pct(rule.ttft_share)} of TTFT p50 {ms(ttft_p50_s)} ms)"
                                       if limit > rule.lag_floor_s else "")
    parts = []
    if lag_judged:
        parts.append(f"loop lag p99 {ms(p99)} ms over the {basis}: TTFT may be inflated by up to that"
                     if lag_bound else f"loop lag p99 {ms(p99)} ms within the {basis}")
    else:
        parts.append(f"{lag['samples']} loop-lag samples, too few to judge ({rule.min_lag_samples} needed)")
    if judged_share is not None:
        parts.append(f"CPU {pct(judged_share)} of one core" + (" (limit " if cpu_bound else " (under ")
                     + f"{pct(rule.cpu_share)})")
    elif cpu_share is not None:
        parts.append(f"stage too short ({wall_s:.2f} s) to judge its CPU {pct(cpu_share)}")
    return lag_bound or cpu_bound, "; ".join(parts)


def ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    v = seconds * 1000
    return f"{v:.1f}" if v < 10 else f"{v:.0f}"


def pct(share: float) -> str:
    return f"{share * 100:.0f} %"


class ClientTiming:
    """The run's timing section: its StageTimer (fed by the engine and the lag monitor) and each stage's TTFTs."""

    def __init__(self, stages: Sequence[Stage], clock: Callable[[], float] = time.perf_counter,
                 cpu: Callable[[], float] = time.process_time) -> None:
        self.timer = StageTimer(clock, cpu)
        self.on_stage, self.sample = self.timer.on_stage, self.timer.sample
        self._unnamed = stages[0].index  # records of a single unnamed stage carry no stage
        self._ttft: dict[int, Kept] = {}
        self._measured: dict[int, int] = {}  # stage index -> ok requests this run sent (not warm-ups, not cached)

    def observe(self, record: Record) -> None:
        """A record of this run: a measured request of its stage, and its TTFT for the stage's p50."""
        if record.warmup or record.cached or record.status != "ok":
            return
        index = record.stage.get("index", self._unnamed) if isinstance(record.stage, dict) else self._unnamed
        self._measured[index] = self._measured.get(index, 0) + 1
        ttft = record.metrics.ttft_s if record.metrics is not None else None
        if ttft is None:
            return
        kept = self._ttft.get(index)
        if kept is None:  # not setdefault(index, Kept()): that would build (and seed) a Kept per record
            kept = self._ttft[index] = Kept()
        kept.add(ttft)

    def ttft_p50(self, index: int) -> float | None:
        kept = self._ttft.get(index)
        return percentile(sorted(kept.values), 50) if kept is not None else None

    def document(self, workers: Sequence[Sequence[dict]] | None = None, rule: Rule | None = None) -> dict:
        """`client_bound` and `timing` of the summary; `workers`: each worker's stage reports (--workers)."""
        rule = rule or RULE
        stages = [self.entry(run, workers, rule) for run in self.timer.stages]
        return {"client_bound": any(s["client_bound"] for s in stages),
                "timing": {"rule": rule.as_dict(), "stages": stages}}

    def entry(self, run: StageRun, workers: Sequence[Sequence[dict]] | None, rule: Rule) -> dict[str, Any]:
        end = run.end if run.end is not None else self.timer.clock()
        wall = end - run.start
        cpu_s = run.cpu_s if run.cpu_s is not None else self.timer.cpu() - run.cpu_start
        reports = [r for per in workers or () for r in per if r.get("index") == run.index]
        if reports:  # the workers stamped the requests: their loops and their CPU
            source = "workers"
            lag = describe_lags([v for r in reports for v in r["lags"]], sum(r["samples"] for r in reports),
                                max(r["max_s"] for r in reports), sum(r["over_10ms"] for r in reports))
            shares = [r["cpu_s"] / r["wall_s"] for r in reports if r.get("cpu_s") is not None and r["wall_s"] > 0]
            cpu_share = max(shares) if shares else None
        else:
            source = "process" if workers is None else "parent"
            lag = describe_lags(run.lags.values, run.samples, run.max_s, run.over_10ms)
            cpu_share = cpu_s / wall if wall > 0 else None
        ttft = self.ttft_p50(run.index)
        requests = self._measured.get(run.index, 0)
        bound, reason = judge(lag, cpu_share, wall, ttft, rule, requests=requests)
        if source == "parent":
            reason += " (this process's figures: no worker reported this stage)"
        return {"stage": run.label, "index": run.index, "duration_s": wall, "source": source, "requests": requests,
                "lag_samples": lag["samples"], "lag_p50_s": lag["p50_s"], "lag_p99_s": lag["p99_s"],
                "lag_max_s": lag["max_s"], "share_over_10ms": lag["share_over_10ms"], "cpu_share": cpu_share,
                "ttft_p50_s": ttft, "lag_limit_s": lag_limit(ttft, rule), "ttft_inflation_s": lag["p99_s"],
                "client_bound": bound, "reason": reason}


def figures(entry: dict[str, Any]) -> str:
    """`loop lag p99 23 ms (TTFT may be inflated by up to that), max 80 ms, CPU 98 %`."""
    parts = []
    if entry.get("lag_p99_s") is not None:
        parts.append(f"loop lag p99 {ms(entry['lag_p99_s'])} ms (TTFT may be inflated by up to that), "
                     f"max {ms(entry.get('lag_max_s'))} ms")
    if entry.get("cpu_share") is not None:
        parts.append(f"CPU {pct(entry['cpu_share'])}")
    return ", ".join(parts) or "no figures"


def bound_line(entry: dict[str, Any]) -> str:
    """`stage c=64: client-bound: loop lag p99 23 ms (TTFT may be inflated by up to that), max 80 ms, CPU 98 %`."""
    name = f"stage {entry['stage']}" if entry.get("stage") else "the run"
    return f"{name}: client-bound: {figures(entry)}"


def measured_enough(doc: dict[str, Any]) -> bool:
    """Whether a run summary's stages together hold the measured requests the rule needs to judge a stage:
    a run-wide warning about the client's delays needs latencies to speak of too."""
    timing = doc.get("timing") or {}
    need = (timing.get("rule") or {}).get("min_requests", 0)
    return sum(s.get("requests", 0) for s in timing.get("stages") or []) >= need


def bound_lines(doc: dict[str, Any]) -> list[str]:
    """A line per client-bound stage of a run summary, then what to do about it; [] when none."""
    stages = ((doc.get("timing") or {}).get("stages")) or []
    lines = [bound_line(s) for s in stages if s.get("client_bound")]
    if lines:
        lines.append("these numbers include the client's own delays: lower -c, add --workers, or run the "
                     "client on a less busy machine")
    return lines
