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
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from typing import Any, overload

from ..config.parsers import SLO_METRICS
from ..record import OK, REQUEST_METRICS, SUMMARY_METRICS, Metrics, Record, posix_time
from .percentiles import PERCENTILES, SortedRuns, describe_sorted, empty_description
from .reservoir import Reservoir
from .running import Running, finite
from .turns import ttft_by_turn
from .windows import WindowCounts, build_windows

DEFAULT_MAX_EXACT = 2_000_000
_NAN = float("nan")
_request_values = attrgetter(*REQUEST_METRICS)


@overload
def format_time(ts: float) -> str: ...
@overload
def format_time(ts: float | None) -> str | None: ...
def format_time(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=UTC).isoformat()


_num = finite  # the name this module has always used


def validate_slos(slos: dict[str, float] | None) -> dict[str, float]:
    """Check SLO names and values; returns a plain dict (empty for None)."""
    out: dict[str, float] = {}
    for key, value in (slos or {}).items():
        if key not in SLO_METRICS:  # the SLO names of runner/config/parsers.py, all in seconds
            raise ValueError(f"unknown SLO {key!r}: expected one of {', '.join(SLO_METRICS)}")
        v = _num(value)
        if v is None or v <= 0:
            raise ValueError(f"SLO {key} must be a positive number of seconds, got {value!r}")
        out[key] = v
    return out


def validate_percentiles(percentiles: Any) -> tuple[float, ...]:
    """Percentiles as a tuple of numbers strictly between 0 and 100 (min and
    max are always described), ascending and without repeats."""
    out = set()
    for q in percentiles:
        v = _num(q)
        if v is None or not 0 < v < 100:
            raise ValueError(f"a percentile must be a number between 0 and 100 (exclusive), got {q!r}")
        out.add(int(v) if v.is_integer() else v)
    if not out:
        raise ValueError("at least one percentile is needed")
    return tuple(sorted(out))


@dataclass
class StatsAccumulator:
    """Summary statistics of one stage, fed one result record at a time.

    Only successful, non-warm-up requests feed the latency metrics (the
    reference's "over the requests that succeeded"); warm-up records are
    counted and otherwise ignored, errors are counted by type. A session
    (a record with ``turns``) is one record in the counts, and each of its
    turns that succeeded is one request in the latency statistics and the
    token sums: a turn is what the server answered (a turn answered from
    --cache was not sent this run: it is in neither).

    Per-request metrics are stored as aligned columns (one row per ok
    request, NaN where a value is missing) because goodput needs a request's
    TTFT, TPOT, E2E and max ITL together, for SLOs that are only known when
    :meth:`summary` is called. Rows and pooled ITL gaps each switch to a
    reservoir sample past ``max_exact``. With ``window_s`` a row also keeps
    its completion time (statistics per window, :mod:`.windows`); a session's
    turn keeps its index (TTFT by turn, :mod:`.turns`).
    """

    stage: dict[str, Any] | None = None
    max_exact: int = DEFAULT_MAX_EXACT
    seed: int = 0
    percentiles: tuple[float, ...] = PERCENTILES
    window_s: float | None = None

    total: int = 0
    ok: int = 0
    error: int = 0
    retried: int = 0
    cached: int = 0  # answered from --cache: ok, but no latency or tokens
    warmup: int = 0
    turns: int = 0  # turns of sessions fed as requests
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
        self.percentiles = validate_percentiles(self.percentiles)
        self._cols: dict[str, array] = {name: array("d") for name in (*REQUEST_METRICS, "itl_max")}
        self._itl = array("d")
        self._itl_sorted = False
        self._rows = Reservoir(self.max_exact, self.seed)
        self._itl_res = Reservoir(self.max_exact, self.seed + 1)
        self._running: dict[str, Running] = {name: Running() for name in SUMMARY_METRICS}
        self._windows = WindowCounts(self.window_s) if self.window_s is not None else None
        self._itl_done: array | None = None  # with windows: the completion time of each stored gap
        if self._windows is not None:
            self._cols["done"] = array("d")
            self._itl_done = array("d")
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
        metrics = record.metrics
        turns = record.turns
        if turns:  # a session's attempts add up its turns': retried means a turn was
            self.retried += any(t.attempts > 1 for t in turns)
            self.connections_opened += sum(t.metrics.connect_s is not None for t in turns)
        else:
            self.retried += record.attempts > 1
            self.connections_opened += metrics.connect_s is not None
        self._track_span(metrics)
        _remember(self.models, record.model)
        _remember(self.endpoints, record.endpoint)
        if turns:  # a session: each turn that succeeded is a request (one from --cache, 0 attempts, is none)
            for turn in turns:
                if turn.error is None and turn.attempts:
                    self._track_span(turn.metrics)
                    self._add_tokens(turn.usage, turn.metrics)
                    self._add_metrics(turn.metrics, turn.index)
                    self.turns += 1
        if record.status != OK:
            self.error += 1
            err = record.error
            etype = (err.type if err is not None else None) or "unknown"
            self.errors_by_type[etype] = self.errors_by_type.get(etype, 0) + 1
            key = (etype, ((err.message if err is not None else None) or "")[:_MESSAGE_CHARS])
            if key in self.error_messages or len(self.error_messages) < _MAX_MESSAGES:
                self.error_messages[key] = self.error_messages.get(key, 0) + 1
            if self._windows is not None:
                start = posix_time(metrics.started_at)
                if start is not None:
                    self._windows.add(start, start + (metrics.e2e_s or 0.0), False, None)
            return
        self.ok += 1
        if not turns:
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
        reasoning = metrics.reasoning_tokens  # the record's own count (any API), else usage's details below
        if reasoning is not None:
            self.reasoning_tokens += reasoning
        if usage is None:
            return
        prompt = _num(usage.get("prompt_tokens")) or 0
        completion = _num(usage.get("completion_tokens")) or 0
        self.prompt_tokens += int(prompt)
        self.completion_tokens += int(completion)
        total = _num(usage.get("total_tokens"))
        self.total_tokens += int(total if total is not None else prompt + completion)
        details = usage.get("completion_tokens_details")
        if reasoning is None and isinstance(details, dict):
            self.reasoning_tokens += int(_num(details.get("reasoning_tokens")) or 0)

    def _add_metrics(self, metrics: Metrics, turn: int | None = None) -> None:
        gaps = metrics.itl_s
        row = [_NAN if v is None else v for v in _request_values(metrics)]
        row.append(max(gaps) if gaps else _NAN)
        done = _NAN
        if self._windows is not None:
            start = posix_time(metrics.started_at)
            if start is not None:
                done = start + (metrics.e2e_s or 0.0)
                self._windows.add(start, done, True, metrics.output_tokens)
            row.append(done)
        if turn is not None and "turn" not in self._cols:
            self._add_column("turn")
        if "turn" in self._cols:
            row.append(_NAN if turn is None else float(turn))
        rows = self._rows
        if rows.seen >= rows.capacity:  # this row is not stored for sure
            self._start_running("rows")
            # the row goes on past REQUEST_METRICS (itl_max, done, turn), which keep no running totals
            for running, v in zip(self._running_list, row, strict=False):
                if v == v:
                    running.add(v)
        n_append, replace = rows.offer(1)
        if n_append:
            for col, v in zip(self._col_list, row, strict=True):
                col.append(v)
        elif replace:
            slot = replace[0][1]
            for col, v in zip(self._col_list, row, strict=True):
                col[slot] = v
        if gaps:
            res = self._itl_res
            if res.seen + len(gaps) > res.capacity:
                self._start_running("itl")
                self._running["itl_s"].add_many(gaps)
            n_append, replace = res.offer(len(gaps))
            itl, itl_done = self._itl, self._itl_done
            if n_append:
                itl.extend(gaps[:n_append])
                if itl_done is not None:
                    itl_done.extend([done] * n_append)
            for i, slot in replace:
                itl[slot] = gaps[i]
                if itl_done is not None:
                    itl_done[slot] = done
            self._itl_sorted = False

    def _add_column(self, name: str) -> None:
        """A column that starts mid-run (the first session's turn index):
        NaN for the rows stored before it, so rows stay aligned."""
        self._cols[name] = array("d", [_NAN]) * len(self._cols["e2e_s"])
        self._col_list = list(self._cols.values())

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
        for name, running in zip(REQUEST_METRICS, self._running_list, strict=True):
            running.add_many(array("d", (v for v in self._cols[name] if v == v)))

    # ---- reading

    def sampled(self, metric: str) -> bool:
        """Whether ``metric``'s percentiles come from a reservoir sample."""
        return (self._itl_res if metric == "itl_s" else self._rows).sampled

    def sorted_values(self, metric: str) -> SortedRuns:
        """The stored values of ``metric`` (all of them, or the sample), as an
        ascending sequence. Costs one 8-byte copy per value, except for ITL
        whose pool is sorted in place (its order carries no meaning, except
        with windows, where each gap's completion time sits beside it)."""
        if metric == "itl_s":
            if self._itl_done is not None:
                return SortedRuns.sort_in_place(array("d", self._itl))
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
            out = empty_description(self.percentiles)
        elif self.sampled(metric):
            out = describe_sorted(values, running.mean or 0.0, self.percentiles)
            out.update(count=running.count, min=running.min, max=running.max)
        else:
            col = self._itl if metric == "itl_s" else self._cols[metric]
            out = describe_sorted(values, math.fsum(v for v in col if v == v) / len(values), self.percentiles)
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
        fails. From a sample, the count is scaled up to all ok requests. A
        session's turns are requests here, as in the latency statistics.
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
            return round(good * self._rows.seen / n_rows)
        return good

    def ttft_by_turn(self) -> list[dict[str, Any]] | None:
        """TTFT percentiles per turn index (:mod:`.turns`); None without sessions."""
        if "turn" not in self._cols:
            return None
        return ttft_by_turn(self._cols["turn"], self._cols["ttft_s"], self.percentiles)

    def windows(self) -> tuple[float | None, list[dict[str, Any]] | None]:
        """``(window_s, windows)`` (:mod:`.windows`); ``(None, None)`` without ``window_s``."""
        if self._windows is None or self._itl_done is None:
            return None, None
        return build_windows(self._windows, self.first_start, self.last_end, self._cols["done"], self._cols,
                             self._itl, self._itl_done, self.percentiles)

    def summary(self, slos: dict[str, float] | None = None) -> dict[str, Any]:
        """The stage's summary (schema in docs/REPORT.md)."""
        slos = validate_slos(slos)
        duration = self.duration_s
        rate_ok = duration is not None and duration > 0

        def per_s(x: float) -> float | None:
            return x / duration if rate_ok else None  # type: ignore[operator]

        good = self.good_requests(slos) if slos else None
        window_s, windows = self.windows()  # before describe(): that may sort the ITL pool
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
                "turns": self.turns,
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
            "ttft_by_turn": self.ttft_by_turn(),
            "window_s": window_s,
            "windows": windows,
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

