"""Percentiles and the run summary, computed from result records.

The numbers here are the ones users hold up against vLLM's
``benchmark_serving`` and NVIDIA AIPerf, so the conventions follow them:

* percentiles interpolate linearly between closest ranks, exactly like
  ``numpy.percentile(..., method="linear")`` (what vLLM calls);
* ITL pools every gap of every successful request (vLLM), it is not a
  per-request mean;
* goodput counts successful requests that meet *every* SLO given, per second
  of wall time (vLLM's "request goodput").

Memory stays bounded for very long runs: values live in ``array('d')``
(8 bytes each, no Python float objects), each metric is exact up to
``max_exact`` values and becomes a seeded uniform reservoir sample beyond
that, and percentiles are read from sorted runs by bisection instead of from
a sorted Python list (which would cost 32 bytes a value on top).
"""

from __future__ import annotations

import bisect
import heapq
import math
import random
import struct
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

PERCENTILES: tuple[int, ...] = (50, 90, 95, 99)

#: Per-request metrics: summary key -> key in ``record["metrics"]``.
REQUEST_METRICS: tuple[str, ...] = ("ttft_s", "ttfb_s", "tpot_s", "e2e_s", "queue_s", "output_tokens")
#: Every metric a summary describes, in display order.
SUMMARY_METRICS: tuple[str, ...] = ("ttft_s", "ttfb_s", "tpot_s", "itl_s", "e2e_s", "queue_s", "output_tokens")
#: SLO names accepted by :meth:`StatsAccumulator.summary`, all in seconds.
SLO_KEYS: tuple[str, ...] = ("ttft", "tpot", "e2e", "itl")

DEFAULT_MAX_EXACT = 2_000_000
# Values sorted per chunk: bounds the transient list of Python floats that
# sorted() builds to ~1 MiB; a million values make 31 runs to bisect.
_RUN = 1 << 15
_NAN = float("nan")


# --------------------------------------------------------------------------
# percentiles


def _lerp(a: float, b: float, t: float) -> float:
    """numpy's ``_lerp``: the two-sided form keeps results monotonic in ``t``
    and bit-identical to ``np.percentile``."""
    diff = b - a
    if t >= 0.5:
        return b - diff * (1.0 - t)
    return a + diff * t


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) of ascending ``sorted_values``.

    Linear interpolation between closest ranks, the same arithmetic as
    ``numpy.percentile(values, q)`` (method "linear"), so a p99 here matches
    vLLM's to the last bit. Returns None for an empty sequence.
    """
    n = len(sorted_values)
    if n == 0:
        return None
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile q must be within 0..100, got {q}")
    virtual = (n - 1) * (q / 100.0)
    lo = math.floor(virtual)
    hi = min(lo + 1, n - 1)
    a = float(sorted_values[lo])
    b = float(sorted_values[hi])
    return _lerp(a, b, virtual - lo)


def _empty_description() -> dict[str, Any]:
    return {"count": 0, "mean": None, "p50": None, "p90": None, "p95": None, "p99": None, "min": None, "max": None}


def _describe_sorted(values: Sequence[float], mean: float) -> dict[str, Any]:
    out: dict[str, Any] = {"count": len(values), "mean": mean}
    for q in PERCENTILES:
        out[f"p{q}"] = percentile(values, q)
    out["min"] = float(values[0])
    out["max"] = float(values[-1])
    return out


def describe(values: Iterable[float | None]) -> dict[str, Any]:
    """count, mean, p50, p90, p95, p99, min, max of ``values`` (any order;
    None and NaN are ignored). Every statistic is None when nothing is left."""
    arr = array("d", (v for v in values if v is not None and v == v))
    if not arr:
        return _empty_description()
    runs = SortedRuns.sort_in_place(arr)
    return _describe_sorted(runs, math.fsum(arr) / len(arr))


class SortedRuns(Sequence[float]):
    """An ``array('d')`` whose chunks of ``_RUN`` values are each sorted,
    read as one ascending sequence.

    Why not ``sorted(values)``: that builds a list of Python floats, 32 bytes
    a value, so two million ITL gaps would cost 64 MB just to take a p99.
    Sorting chunk by chunk in place costs a few MB, and the k-th smallest
    value is then found by a binary search over the float number line, each
    probe counting ``<=`` by bisecting every run (64 probes at most).
    """

    def __init__(self, arr: array, run: int = _RUN) -> None:
        self._arr = arr
        self._bounds = [(i, min(i + run, len(arr))) for i in range(0, len(arr), run)]

    @classmethod
    def sort_in_place(cls, arr: array, run: int = _RUN) -> SortedRuns:
        """Sort each chunk of ``arr`` in place (the order of ``arr`` is lost)."""
        for i in range(0, len(arr), run):
            arr[i : i + run] = array("d", sorted(arr[i : i + run]))
        return cls(arr, run)

    def __len__(self) -> int:
        return len(self._arr)

    def rank(self, x: float) -> int:
        """How many values are ``<= x``."""
        arr = self._arr
        return sum(bisect.bisect_right(arr, x, lo, hi) - lo for lo, hi in self._bounds)

    def count_below(self, x: float) -> int:
        """How many values are ``< x``."""
        arr = self._arr
        return sum(bisect.bisect_left(arr, x, lo, hi) - lo for lo, hi in self._bounds)

    def __getitem__(self, k: int) -> float:  # type: ignore[override]
        n = len(self._arr)
        if k < 0:
            k += n
        if not 0 <= k < n:
            raise IndexError(k)
        arr = self._arr
        if len(self._bounds) == 1:
            return arr[k]
        if k == 0:
            return min(arr[lo] for lo, _ in self._bounds)
        if k == n - 1:
            return max(arr[hi - 1] for _, hi in self._bounds)
        # Smallest float v with rank(v) >= k + 1 is the k-th smallest value.
        lo_key = _float_key(min(arr[lo] for lo, _ in self._bounds))
        hi_key = _float_key(max(arr[hi - 1] for _, hi in self._bounds))
        while lo_key < hi_key:
            mid = (lo_key + hi_key) // 2
            if self.rank(_key_float(mid)) >= k + 1:
                hi_key = mid
            else:
                lo_key = mid + 1
        return _key_float(lo_key)

    def __iter__(self) -> Iterator[float]:
        view = memoryview(self._arr)
        return heapq.merge(*(view[lo:hi] for lo, hi in self._bounds))


_SIGN = 1 << 63


def _float_key(x: float) -> int:
    """Map a float to an int with the same order (IEEE 754 bit trick)."""
    (i,) = struct.unpack("<q", struct.pack("<d", x))
    return i if i >= 0 else -(i & (_SIGN - 1)) - 1


def _key_float(k: int) -> float:
    i = k if k >= 0 else -(k + 1) | _SIGN
    (x,) = struct.unpack("<d", struct.pack("<Q", i & ((1 << 64) - 1)))
    return x


# --------------------------------------------------------------------------
# reservoir sampling


class Reservoir:
    """Decides which items of a stream to keep in ``capacity`` slots so that
    the kept ones are a uniform sample of everything offered (Li's
    "Algorithm L"). It stores nothing itself: callers keep their own columns,
    which lets several aligned columns share one decision per item.

    Algorithm L draws a random number per *kept* item, not per item seen, so
    pooling hundreds of millions of ITL gaps costs little. Seeded, so a
    report is reproducible.
    """

    def __init__(self, capacity: int, seed: int = 0) -> None:
        if capacity < 1:
            raise ValueError("reservoir capacity must be >= 1")
        self.capacity = capacity
        self.seen = 0
        self._rng = random.Random(seed)
        self._w = 1.0
        self._next = -1  # stream index of the next item to keep, once full

    @property
    def sampled(self) -> bool:
        """True once more items were offered than fit: results are estimates."""
        return self.seen > self.capacity

    def offer(self, m: int) -> tuple[int, list[tuple[int, int]]]:
        """Offer the next ``m`` items. Returns ``(n_append, replacements)``:
        append the first ``n_append`` items, then write item ``i`` of this
        batch into slot ``s`` for each ``(i, s)`` in ``replacements``."""
        start = self.seen
        k = self.capacity
        end = self.seen = start + m
        if end <= k:
            return m, []
        n_append = max(0, k - start)
        if self._next < 0:  # the reservoir just filled: start skipping
            self._w = math.exp(math.log(self._rng.random() or _TINY) / k)
            self._next = k - 1
            self._skip()
        replacements: list[tuple[int, int]] = []
        # The hot loop of long runs: locals and inlined _skip() on purpose.
        random_ = self._rng.random
        log, log1p, exp = math.log, math.log1p, math.exp
        nxt, w = self._next, self._w
        while nxt < end:
            replacements.append((nxt - start, int(random_() * k)))
            nxt += (int(log(random_() or _TINY) / log1p(-w)) if w < 1.0 else 0) + 1
            w *= exp(log(random_() or _TINY) / k)
        self._next, self._w = nxt, w
        return n_append, replacements

    def _skip(self) -> None:
        """Move ``_next`` past the items Algorithm L skips; shrink ``_w``."""
        rnd = self._rng.random
        w = self._w
        self._next += (int(math.log(rnd() or _TINY) / math.log1p(-w)) if w < 1.0 else 0) + 1
        self._w = w * math.exp(math.log(rnd() or _TINY) / self.capacity)


_TINY = 5e-324  # random() may return 0.0; log() needs (0, 1)


# --------------------------------------------------------------------------
# the accumulator


def parse_time(value: Any) -> float | None:
    """ISO 8601 timestamp -> POSIX seconds (naive = UTC); None if unreadable."""
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def format_time(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def _num(value: Any) -> float | None:
    """A finite number from a record field, else None (records are data
    from disk: a string or a NaN must not poison a sum). Called ~10 times a
    record, hence the exact-type fast paths."""
    t = type(value)
    if t is float:
        return value if value - value == 0.0 else None  # inf - inf and nan are nan
    if t is int:
        return float(value)
    return None


def gap_array(raw: Any) -> array:
    """A request's ITL gaps as ``array('d')``: converted in C when they are
    all numbers (the common case), filtered one by one otherwise."""
    if not isinstance(raw, list) or not raw:
        return array("d")
    try:
        arr = array("d", raw)
    except TypeError:
        return array("d", (g for g in map(_num, raw) if g is not None))
    if math.isfinite(math.fsum(arr)):
        return arr
    return array("d", (g for g in arr if math.isfinite(g)))


class _Running:
    """count / sum / min / max seen so far, kept exactly even once the values
    themselves are only sampled (Neumaier-compensated sum)."""

    __slots__ = ("count", "_sum", "_comp", "min", "max")

    def __init__(self) -> None:
        self.count = 0
        self._sum = 0.0
        self._comp = 0.0
        self.min = math.inf
        self.max = -math.inf

    def add(self, x: float) -> None:
        self.count += 1
        t = self._sum + x
        if abs(self._sum) >= abs(x):
            self._comp += (self._sum - t) + x
        else:
            self._comp += (x - t) + self._sum
        self._sum = t
        if x < self.min:
            self.min = x
        if x > self.max:
            self.max = x

    def add_many(self, xs: array) -> None:
        """Fold in a batch at C speed (one exactly rounded sum per batch)."""
        if not xs:
            return
        self.count += len(xs) - 1
        lo, hi = min(xs), max(xs)
        self.add(math.fsum(xs))
        self.min = min(self.min, lo)
        self.max = max(self.max, hi)

    @property
    def mean(self) -> float | None:
        return (self._sum + self._comp) / self.count if self.count else None


def validate_slos(slos: dict[str, float] | None) -> dict[str, float]:
    """Check SLO names and values; returns a plain dict (empty for None)."""
    out: dict[str, float] = {}
    for key, value in (slos or {}).items():
        if key not in SLO_KEYS:
            raise ValueError(f"unknown SLO {key!r}: expected one of {', '.join(SLO_KEYS)}")
        v = _num(value)
        if v is None or v <= 0:
            raise ValueError(f"SLO {key} must be a positive number of seconds, got {value!r}")
        out[key] = v
    return out


@dataclass
class StatsAccumulator:
    """Summary statistics of one stage, fed one result record at a time.

    Only successful, non-warm-up requests feed the latency metrics (the
    reference's "over the requests that succeeded"); warm-up records are
    counted and otherwise ignored, errors are counted by type.

    Per-request metrics are stored as aligned columns (one row per ok
    request, NaN where a value is missing) because goodput needs a request's
    TTFT, TPOT, E2E and max ITL together, for SLOs that are only known when
    :meth:`summary` is called. Rows and pooled ITL gaps each switch to a
    reservoir sample past ``max_exact``.
    """

    stage: dict[str, Any] | None = None
    max_exact: int = DEFAULT_MAX_EXACT
    seed: int = 0

    total: int = 0
    ok: int = 0
    error: int = 0
    retried: int = 0
    warmup: int = 0
    errors_by_type: dict[str, int] = field(default_factory=dict)
    error_messages: dict[tuple[str, str], int] = field(default_factory=dict)  # (type, message) -> count
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    output_tokens: int = 0
    first_start: float | None = None
    last_end: float | None = None
    models: list[str] = field(default_factory=list)
    endpoints: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._cols: dict[str, array] = {name: array("d") for name in (*REQUEST_METRICS, "itl_max")}
        self._itl = array("d")
        self._itl_sorted = False
        self._rows = Reservoir(self.max_exact, self.seed)
        self._itl_res = Reservoir(self.max_exact, self.seed + 1)
        self._running: dict[str, _Running] = {name: _Running() for name in SUMMARY_METRICS}
        # The same objects in row order, for the per-record hot path.
        self._col_list = list(self._cols.values())
        self._running_list = [self._running[name] for name in REQUEST_METRICS]
        self._running_started: set[str] = set()

    # ---- feeding

    def add(self, record: dict[str, Any]) -> None:
        """Account for one result record (see docs/FORMATS.md)."""
        if record.get("warmup"):
            self.warmup += 1
            return
        self.total += 1
        attempts = _num(record.get("attempts"))
        if attempts is not None and attempts > 1:
            self.retried += 1
        metrics = record.get("metrics") or {}
        self._track_span(metrics)
        _remember(self.models, record.get("model"))
        _remember(self.endpoints, record.get("endpoint"))
        if record.get("status") != "ok":
            self.error += 1
            err = record.get("error")
            etype = err.get("type") if isinstance(err, dict) else None
            etype = str(etype) if etype else "unknown"
            self.errors_by_type[etype] = self.errors_by_type.get(etype, 0) + 1
            message = err.get("message") if isinstance(err, dict) else None
            key = (etype, str(message or "")[:_MESSAGE_CHARS])
            if key in self.error_messages or len(self.error_messages) < _MAX_MESSAGES:
                self.error_messages[key] = self.error_messages.get(key, 0) + 1
            return
        self.ok += 1
        self._add_tokens(record.get("usage"), metrics)
        self._add_metrics(metrics)

    def _track_span(self, metrics: dict[str, Any]) -> None:
        start = parse_time(metrics.get("started_at"))
        if start is None:
            return
        end = start + (_num(metrics.get("e2e_s")) or 0.0)
        if self.first_start is None or start < self.first_start:
            self.first_start = start
        if self.last_end is None or end > self.last_end:
            self.last_end = end

    def _add_tokens(self, usage: Any, metrics: dict[str, Any]) -> None:
        out = _num(metrics.get("output_tokens"))
        if out is not None:
            self.output_tokens += int(out)
        if not isinstance(usage, dict):
            return
        prompt = _num(usage.get("prompt_tokens")) or 0
        completion = _num(usage.get("completion_tokens")) or 0
        self.prompt_tokens += int(prompt)
        self.completion_tokens += int(completion)
        total = _num(usage.get("total_tokens"))
        self.total_tokens += int(total if total is not None else prompt + completion)
        details = usage.get("completion_tokens_details")
        if isinstance(details, dict):
            self.reasoning_tokens += int(_num(details.get("reasoning_tokens")) or 0)

    def _add_metrics(self, metrics: dict[str, Any]) -> None:
        gaps = gap_array(metrics.get("itl_s"))
        row = [_NAN if v is None else v for v in map(_num, map(metrics.get, REQUEST_METRICS))]
        row.append(max(gaps) if gaps else _NAN)
        rows = self._rows
        if rows.seen >= rows.capacity:  # this row is not stored for sure
            self._start_running("rows")
            for running, v in zip(self._running_list, row):
                if v == v:
                    running.add(v)
        n_append, replace = rows.offer(1)
        if n_append:
            for col, v in zip(self._col_list, row):
                col.append(v)
        elif replace:
            slot = replace[0][1]
            for col, v in zip(self._col_list, row):
                col[slot] = v
        if gaps:
            res = self._itl_res
            if res.seen + len(gaps) > res.capacity:
                self._start_running("itl")
                self._running["itl_s"].add_many(gaps)
            n_append, replace = res.offer(len(gaps))
            if n_append:
                self._itl.extend(gaps[:n_append])
            itl = self._itl
            for i, slot in replace:
                itl[slot] = gaps[i]
            self._itl_sorted = False

    def _start_running(self, which: str) -> None:
        """Exact count/sum/min/max are only needed once values get sampled
        out; until then the stored values are all of them. So start the
        running totals from the store at the moment sampling begins."""
        if which in self._running_started:
            return
        self._running_started.add(which)
        if which == "itl":
            self._running["itl_s"].add_many(self._itl)
            return
        for name, running in zip(REQUEST_METRICS, self._running_list):
            running.add_many(array("d", (v for v in self._cols[name] if v == v)))

    # ---- reading

    def sampled(self, metric: str) -> bool:
        """Whether ``metric``'s percentiles come from a reservoir sample."""
        return (self._itl_res if metric == "itl_s" else self._rows).sampled

    def sorted_values(self, metric: str) -> SortedRuns:
        """The stored values of ``metric`` (all of them, or the sample), as an
        ascending sequence. Costs one 8-byte copy per value, except for ITL
        whose pool is sorted in place (its order carries no meaning)."""
        if metric == "itl_s":
            if not self._itl_sorted:
                runs = SortedRuns.sort_in_place(self._itl)
                self._itl_sorted = True
                return runs
            return SortedRuns(self._itl)
        if metric not in self._cols:
            raise KeyError(metric)
        return SortedRuns.sort_in_place(array("d", (v for v in self._cols[metric] if v == v)))

    def describe(self, metric: str) -> dict[str, Any]:
        """:func:`describe` of one metric, plus ``"sampled"``. When sampled,
        count, mean, min and max are still exact; only percentiles are
        estimates."""
        values = self.sorted_values(metric)
        running = self._running[metric]
        if not values:
            out = _empty_description()
        elif self.sampled(metric):
            out = _describe_sorted(values, running.mean or 0.0)
            out.update(count=running.count, min=running.min, max=running.max)
        else:
            col = self._itl if metric == "itl_s" else self._cols[metric]
            out = _describe_sorted(values, math.fsum(v for v in col if v == v) / len(values))
        out["sampled"] = self.sampled(metric)
        return out

    @property
    def duration_s(self) -> float | None:
        """Wall span: earliest start to latest start + e2e (non-warm-up)."""
        if self.first_start is None or self.last_end is None:
            return None
        return self.last_end - self.first_start

    def good_requests(self, slos: dict[str, float]) -> int:
        """How many ok requests meet every SLO (``<=``).

        A request with no TPOT (one output token) or no ITL gap passes those
        SLOs, as in vLLM (which counts its TPOT as 0); a missing TTFT or E2E
        fails. From a sample, the count is scaled up to all ok requests.
        """
        slos = validate_slos(slos)
        cols = {"ttft": self._cols["ttft_s"], "tpot": self._cols["tpot_s"],
                "e2e": self._cols["e2e_s"], "itl": self._cols["itl_max"]}
        checks = [(cols[k], v, k in ("tpot", "itl")) for k, v in slos.items()]
        n_rows = len(self._cols["e2e_s"])
        good = 0
        for i in range(n_rows):
            for col, limit, missing_ok in checks:
                x = col[i]
                if x != x:
                    if missing_ok:
                        continue
                    break
                if x > limit:
                    break
            else:
                good += 1
        if self._rows.sampled and n_rows:
            return round(good * self.ok / n_rows)
        return good

    def summary(self, slos: dict[str, float] | None = None) -> dict[str, Any]:
        """The stage's summary (schema in docs/REPORT.md)."""
        slos = validate_slos(slos)
        duration = self.duration_s
        rate_ok = duration is not None and duration > 0

        def per_s(x: float) -> float | None:
            return x / duration if rate_ok else None  # type: ignore[operator]

        good = self.good_requests(slos) if slos else None
        metrics = {name: self.describe(name) for name in SUMMARY_METRICS}
        return {
            "stage": self.stage,
            "counts": {
                "total": self.total,
                "ok": self.ok,
                "error": self.error,
                "errors_by_type": dict(sorted(self.errors_by_type.items(), key=lambda kv: (-kv[1], kv[0]))),
                "top_errors": [{"type": t, "message": m, "count": n} for (t, m), n in
                               sorted(self.error_messages.items(), key=lambda kv: (-kv[1], kv[0]))[:_TOP_ERRORS]],
                "retried": self.retried,
                "warmup": self.warmup,
            },
            "started_at": format_time(self.first_start),
            "ended_at": format_time(self.last_end),
            "duration_s": duration,
            "tokens": {
                "prompt": self.prompt_tokens,
                "completion": self.completion_tokens,
                "reasoning": self.reasoning_tokens,
                "total": self.total_tokens,
                "output": self.output_tokens,
            },
            "request_throughput": per_s(self.ok),
            "output_token_throughput": per_s(self.output_tokens),
            "total_token_throughput": per_s(self.prompt_tokens + self.completion_tokens),
            "slos": slos,
            "good_requests": good,
            "goodput": per_s(good) if good is not None else None,
            "models": list(self.models),
            "endpoints": list(self.endpoints),
            "sampled": any(m["sampled"] for m in metrics.values()),
            "metrics": metrics,
        }


_MAX_REMEMBERED = 16
# Error messages are counted to show the most common ones (records hold them
# already redacted); distinct messages are capped so a run whose every error
# names its own request id cannot grow the summary without bound.
_MAX_MESSAGES = 1000
_MESSAGE_CHARS = 200
_TOP_ERRORS = 5


def _remember(seen: list[str], value: Any) -> None:
    """Keep the first few distinct models/endpoints for the report header."""
    if isinstance(value, str) and value and value not in seen and len(seen) < _MAX_REMEMBERED:
        seen.append(value)


# --------------------------------------------------------------------------
# stages


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
    records: Iterable[dict[str, Any]],
    *,
    max_exact: int = DEFAULT_MAX_EXACT,
    seed: int = 0,
    observe: Callable[[dict[str, Any], int], None] | None = None,
) -> list[StatsAccumulator]:
    """One accumulator per stage, in the order stages are first seen.

    ``observe(record, stage_position)`` sees every record on the way through,
    so a caller can collect more (the report's ITL timeline) in the same
    single pass over a file that may not fit in memory.
    """
    stages: dict[Any, StatsAccumulator] = {}
    positions: dict[Any, int] = {}
    for record in records:
        raw = record.get("stage")
        key = stage_key(raw)
        acc = stages.get(key)
        if acc is None:
            info = dict(raw) if isinstance(raw, dict) else None
            acc = stages[key] = StatsAccumulator(stage=info, max_exact=max_exact, seed=seed)
            positions[key] = len(positions)
        acc.add(record)
        if observe is not None:
            observe(record, positions[key])
    return list(stages.values())


def summarize_by_stage(
    records: Iterable[dict[str, Any]],
    slos: dict[str, float] | None = None,
    *,
    max_exact: int = DEFAULT_MAX_EXACT,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """:meth:`StatsAccumulator.summary` per stage, in first-seen order."""
    slos = validate_slos(slos)  # fail before reading a million lines
    return [acc.summary(slos) for acc in accumulate_by_stage(records, max_exact=max_exact, seed=seed)]
