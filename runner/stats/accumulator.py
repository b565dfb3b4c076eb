"""The run summary, computed from result records one at a time.

The numbers here are the ones users hold up against vLLM's
``benchmark_serving`` and NVIDIA AIPerf, so the conventions follow them:

* percentiles as ``numpy.percentile(..., method="linear")`` (see
  :mod:`runner.stats.percentiles`);
* ITL pools every gap of every successful request (vLLM), it is not a
  per-request mean;
* goodput counts successful requests that meet *every* SLO given, per second
  of wall time (vLLM's "request goodput");
* ``connect_s`` has a value only for requests that opened a connection, so
  its ``count`` is how many of the ok requests did (``connections_opened``
  counts every record, errors included).

Memory stays bounded for very long runs: values live in ``array('d')``
(8 bytes each, no Python float objects), each metric is exact up to
``max_exact`` values and becomes a seeded uniform reservoir sample beyond
that (:mod:`runner.stats.reservoir`).

Records are typed (:class:`runner.record.Record`): whatever came from a file
was type-checked when it was decoded, so only ``usage``, which is kept as
the server sent it, is checked here.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from operator import attrgetter
from typing import Any

from ..record import OK, REQUEST_METRICS, SUMMARY_METRICS, Metrics, Record, posix_time
from .percentiles import SortedRuns, describe_sorted, empty_description
from .reservoir import Reservoir

#: SLO names accepted by :meth:`StatsAccumulator.summary`, all in seconds.
SLO_KEYS: tuple[str, ...] = ("ttft", "tpot", "e2e", "itl")

DEFAULT_MAX_EXACT = 2_000_000
_NAN = float("nan")
_request_values = attrgetter(*REQUEST_METRICS)


def format_time(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat()


def _num(value: Any) -> float | None:
    """A finite number, else None: ``usage`` is kept as the server sent it,
    and a string or a NaN must not poison a sum."""
    t = type(value)
    if t is float:
        return value if value - value == 0.0 else None  # inf - inf and nan are nan
    if t is int:
        return float(value)
    return None


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

    def add_many(self, xs: Sequence[float]) -> None:
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
    cached: int = 0  # answered from --cache: ok, but no latency or tokens
    warmup: int = 0
    connections_opened: int = 0  # records whose request opened a connection (metrics.connect_s set)
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

    def add(self, record: Record) -> None:
        """Account for one result record (see docs/FORMATS.md)."""
        if record.warmup:
            self.warmup += 1
            return
        self.total += 1
        if record.cached:  # answered from the cache: counted, but nothing was measured or paid
            self.ok += 1
            self.cached += 1
            return
        if record.attempts > 1:
            self.retried += 1
        metrics = record.metrics
        if metrics.connect_s is not None:
            self.connections_opened += 1
        self._track_span(metrics)
        _remember(self.models, record.model)
        _remember(self.endpoints, record.endpoint)
        if record.status != OK:
            self.error += 1
            err = record.error
            etype = (err.type if err is not None else None) or "unknown"
            self.errors_by_type[etype] = self.errors_by_type.get(etype, 0) + 1
            key = (etype, ((err.message if err is not None else None) or "")[:_MESSAGE_CHARS])
            if key in self.error_messages or len(self.error_messages) < _MAX_MESSAGES:
                self.error_messages[key] = self.error_messages.get(key, 0) + 1
            return
        self.ok += 1
        self._add_tokens(record.usage, metrics)
        self._add_metrics(metrics)

    def _track_span(self, metrics: Metrics) -> None:
        start = posix_time(metrics.started_at)
        if start is None:
            return
        end = start + (metrics.e2e_s or 0.0)
        if self.first_start is None or start < self.first_start:
            self.first_start = start
        if self.last_end is None or end > self.last_end:
            self.last_end = end

    def _add_tokens(self, usage: dict | None, metrics: Metrics) -> None:
        if metrics.output_tokens is not None:
            self.output_tokens += metrics.output_tokens
        if usage is None:
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

    def _add_metrics(self, metrics: Metrics) -> None:
        gaps = metrics.itl_s
        row = [_NAN if v is None else v for v in _request_values(metrics)]
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
        """:func:`~runner.stats.percentiles.describe` of one metric, plus ``"sampled"``. When sampled,
        count, mean, min and max are still exact; only percentiles are
        estimates."""
        values = self.sorted_values(metric)
        running = self._running[metric]
        if not values:
            out = empty_description()
        elif self.sampled(metric):
            out = describe_sorted(values, running.mean or 0.0)
            out.update(count=running.count, min=running.min, max=running.max)
        else:
            col = self._itl if metric == "itl_s" else self._cols[metric]
            out = describe_sorted(values, math.fsum(v for v in col if v == v) / len(values))
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
                "cached": self.cached,
                "warmup": self.warmup,
                "connections_opened": self.connections_opened,
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

