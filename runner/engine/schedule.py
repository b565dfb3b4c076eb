"""When each request is due: arrival gaps, ramp-ups, trace replay, and the rates of a sweep.

Why a module: the engine's producer only sleeps until the next due time;
what that time is (a Poisson process, a ramp, a trace's timestamps, a rate
the sweep chose) is arithmetic that tests can check without a clock.  Every
schedule is absolute (offsets from the stage's start), so a late wake-up
never shifts the arrivals after it: the lag shows up as `queue_s`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator

LINEAR = "linear"
EXPONENTIAL = "exponential"


def arrival_gaps(rate: float | None, burstiness: float, rng: random.Random) -> Iterator[float]:
    """Gaps between arrivals: exponential (Poisson process) or gamma with shape=burstiness.

    Same convention as vLLM's benchmark_serving: mean gap 1/rate whatever the
    burstiness; burstiness < 1 is burstier, > 1 more regular.
    """
    if rate is None or math.isinf(rate) or rate <= 0:
        while True:
            yield 0.0
    theta = 1.0 / (rate * burstiness)
    while True:
        yield rng.gammavariate(burstiness, theta)


def ramped(start: float, target: float, elapsed: float, duration: float, kind: str) -> float:
    """The value a ramp has reached `elapsed` seconds in: `start` at 0, `target` from `duration` on.

    linear: evenly; exponential: by the same factor each second (vLLM's
    `--ramp-up-strategy`), which spends longer at the low end.
    """
    if elapsed >= duration or start == target:
        return target
    share = max(0.0, elapsed) / duration
    if kind == EXPONENTIAL:
        return start * (target / start) ** share
    return start + (target - start) * share


def ramp_area(start: float, target: float, duration: float, kind: str) -> float:
    """Arrivals a ramp's rate adds up to over the ramp: the integral of `ramped` from 0 to `duration`."""
    if start == target:
        return start * duration
    if kind == EXPONENTIAL:
        return start * duration * (target / start - 1.0) / math.log(target / start)
    return (start + target) * duration / 2.0


def ramp_time(arrivals: float, start: float, target: float, duration: float, kind: str) -> float:
    """When a ramp's integrated rate, from 0, reaches `arrivals`: the inverse of the rate's integral.

    The integral is a*t + (b - a)*t^2/(2D) for a linear ramp and
    a*D*(r^(t/D) - 1)/ln r (r = b/a) for an exponential one, then grows by
    the target rate after the ramp; each is inverted in closed form.
    """
    whole = ramp_area(start, target, duration, kind)
    if arrivals >= whole:
        return duration + (arrivals - whole) / target
    if start == target:
        return arrivals / target
    if kind == EXPONENTIAL:
        log_ratio = math.log(target / start)
        return duration * math.log1p(arrivals * log_ratio / (start * duration)) / log_ratio
    slope = (target - start) / duration
    # the root of slope/2 t^2 + start t - arrivals written without the cancellation of -start + sqrt(...)
    return 2.0 * arrivals / (start + math.sqrt(start * start + 2.0 * slope * arrivals))


def ramped_gaps(target: float, start: float, duration: float, kind: str, burstiness: float,
                rng: random.Random) -> Iterator[float]:
    """Arrival gaps whose rate rises from `start` to `target` req/s over `duration`, then holds.

    Time rescaling: a renewal process of rate 1 (gamma gaps of mean 1 and
    shape `burstiness`; exponential, i.e. Poisson, at 1) counted in the
    ramp's integrated rate, each arrival mapped back to the time at which
    the integral reaches it (`ramp_time`).  So the expected arrivals follow
    the rate curve (by any time t, the integral of the rate up to t), and a
    gamma's burstiness is kept.  Drawing each gap at the rate reached at the
    previous arrival would not: a long first gap drawn at the slow start
    rate skips the part of the ramp where the rate has already risen.
    Seeded by `rng` and independent of the wall clock: the same seed gives
    the same arrivals.
    """
    arrivals = now = 0.0
    while True:
        arrivals += rng.gammavariate(burstiness, 1.0 / burstiness)
        then = ramp_time(arrivals, start, target, duration, kind)
        yield then - now
        now = then


def worker_start_offsets(concurrency: int, start: float, duration: float, kind: str) -> list[float]:
    """When each of `concurrency` workers joins, for a concurrency that ramps from `start` to the cap.

    Worker i (0-based) starts once the ramp reaches i + 1; the first
    `start` workers start at once.
    """
    start = max(1.0, min(start, concurrency))
    offsets = []
    for i in range(concurrency):
        level = i + 1
        if level <= start or concurrency == start:
            offsets.append(0.0)
        elif kind == EXPONENTIAL:
            offsets.append(duration * math.log(level / start) / math.log(concurrency / start))
        else:
            offsets.append(duration * (level - start) / (concurrency - start))
    return offsets


class TraceTimes:
    """--replay: each line's time as milliseconds from the trace's first line, never before the line before it.

    Why relative: traces stamp lines in whatever clock they were captured
    with (ms from the start, as Mooncake's; or epoch milliseconds, as a
    gateway log), and only the spacing matters.  The first timestamp read
    is the trace's start, 0.  A line stamped earlier than the line before it
    goes right after that line (the schedule never runs backwards, so the
    reordering does not show as the client's lag in `queue_s`); `place`
    says so, for a warning.  Every line of the input is read through one
    instance in file order, whichever lines this process then sends (a
    shard's, those --resume has not answered), so every shard, every worker
    and every rerun gives a line the same time.
    """

    def __init__(self) -> None:
        self.origin: float | None = None
        self.latest = 0.0  # the latest time given so far, ms from the origin

    def place(self, timestamp_ms: float) -> tuple[float, bool]:
        """(this line's time, ms from the trace's start; whether it was stamped before the line before it)."""
        if self.origin is None:
            self.origin = timestamp_ms
        offset = timestamp_ms - self.origin
        if offset < self.latest:
            return self.latest, True
        self.latest = offset
        return offset, False


def replay_offset(timestamp_ms: float | None, previous: float, speed: float) -> float:
    """A trace line's send time, seconds from the replay's start; a line without one goes with the previous."""
    if timestamp_ms is None:
        return previous
    return timestamp_ms / 1000.0 / speed


def sweep_rates(synchronous: float, maximum: float, points: int) -> list[float]:
    """The constant rates a sweep runs: `points` rates evenly between the measured ends, both excluded.

    As guidellm's sweep: the synchronous rate (one request at a time) and the
    maximum throughput bound the useful range; the rates between them show
    where latency starts to climb (the knee).
    """
    if not (synchronous > 0 and maximum > 0):
        return []
    low, high = min(synchronous, maximum), max(synchronous, maximum)
    step = (high - low) / (points + 1)
    return [round(low + step * i, 6) for i in range(1, points + 1)]
