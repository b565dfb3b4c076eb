"""The server's own view in the report: its /metrics samples on the client's timeline.

A run with ``--server-metrics`` leaves ``<output base>.server_metrics.jsonl``
beside its results (``runner.observe.server_metrics``); ``streamrun report`` finds it
there (or takes ``--server-metrics FILE``) and shows the known gauges
(``runner.observe.prometheus.KNOWN``: running and waiting requests, KV-cache usage,
prefix-cache hit rate) over time, under the client's own requests in flight
and TTFT, all against seconds since the run started, so a TTFT that climbs
can be read against the queue that made it.  Samples are placed by their
wall time ``at`` and records by their ``started_at``: the same clock.

What is held is bounded: of each sample only the known gauges are kept, and
the client's side is binned (``BINS`` bins over the run; a sample of at most
``PER_BIN`` TTFTs per bin), which needs a second pass over the results files,
made only when a page is drawn.  plotly is imported inside the functions.
"""

from __future__ import annotations

import random
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from runner.io.jsonl import JsonlReader
from runner.observe.prometheus import BY_NAME, PREFIX_HIT_RATE, counter_delta, known_values, prefix_counts
from runner.record import OK, posix_time
from runner.stats import percentile

SUFFIX = ".server_metrics.jsonl"
BINS = 300
PER_BIN = 200
MAX_POINTS = 2000  # per drawn server series; longer ones are averaged down
_PERCENT = ("kv_cache", "prefix_hit")


@dataclass
class Series:
    """One known gauge of one server over time (POSIX seconds)."""

    url: str
    name: str
    kind: str
    times: array = field(default_factory=lambda: array("d"))
    values: array = field(default_factory=lambda: array("d"))


@dataclass
class ServerView:
    """What the side files hold that the report shows."""

    files: list[str]
    series: list[Series]
    scrapes: int = 0
    failures: int = 0

    @property
    def urls(self) -> list[str]:
        return list(dict.fromkeys(s.url for s in self.series))


def side_file_for(results: str | Path) -> Path:
    """``results.jsonl`` → ``results.server_metrics.jsonl``, where the run wrote it."""
    name = str(results)
    return Path((name[:-6] if name.endswith(".jsonl") else name) + SUFFIX)


def find_side_files(results: Iterable[str | Path], named: Iterable[str | Path] = ()) -> list[Path]:
    """The files named with ``--server-metrics``, else those beside the results files that exist."""
    given = [Path(p) for p in named]
    if given:
        return given
    return [p for p in dict.fromkeys(side_file_for(r) for r in results) if p.is_file()]


def load_server_view(files: list[Path], warn: Callable[[str], None]) -> ServerView | None:
    """Read the side files one line at a time; None when there are none."""
    if not files:
        return None
    view = ServerView([str(f) for f in files], [])
    by_key: dict[tuple[str, str], Series] = {}
    last_counts: dict[str, tuple[float, float]] = {}

    def add(url: str, name: str, kind: str, at: float, value: float) -> None:
        series = by_key.get((url, name))
        if series is None:
            series = by_key[(url, name)] = Series(url, name, kind)
            view.series.append(series)
        series.times.append(at)
        series.values.append(value)

    for path in files:
        with JsonlReader(path, warn=warn, prefix="warning: ", verb="skipped unreadable sample line: ") as reader:
            for _, _, obj in reader.objects():
                if not isinstance(obj, dict) or not isinstance(obj.get("url"), str):
                    continue
                at = _posix(obj.get("at"))
                metrics = obj.get("metrics")
                if at is None or not isinstance(metrics, dict):
                    view.failures += "error" in obj
                    continue
                view.scrapes += 1
                url = obj["url"]
                series = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
                for name, value in known_values(series).items():
                    add(url, name, BY_NAME[name].kind, at, value)
                counts = prefix_counts(series)
                if counts is not None:
                    before = last_counts.get(url)
                    last_counts[url] = counts
                    if before is not None:
                        queries = counter_delta(before[1], counts[1])
                        if queries > 0:
                            add(url, PREFIX_HIT_RATE, "prefix_hit", at, counter_delta(before[0], counts[0]) / queries)
    return view


def _posix(text: Any) -> float | None:
    if not isinstance(text, str):
        return None
    try:
        return posix_time(datetime.fromisoformat(text))
    except ValueError:
        return None


# ---- figures of a gauge: over the run, per stage


def _label(series: Series, many_urls: bool) -> str:
    host = series.url.split("//", 1)[-1].split("/", 1)[0]
    return f"{series.name} · {host}" if many_urls else series.name


def _shown(series: Series, value: float | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if series.kind in _PERCENT:
        return f"{100 * value:.1f}%"
    return f"{value:.{digits}g}"


def _mean_max(series: Series, lo: float | None = None, hi: float | None = None) -> tuple[float | None, float | None]:
    values = [v for t, v in zip(series.times, series.values, strict=True)
              if (lo is None or t >= lo) and (hi is None or t <= hi)]
    if not values:
        return None, None
    return sum(values) / len(values), max(values)


def _stage_windows(report: Any) -> list[tuple[str, float | None, float | None]]:
    """``(name, first send, last end)`` per stage, named as on the page: in a comparison the run's label
    comes first, so two runs' ``c=4`` stay two."""
    return [(report.label(i), acc.first_start, acc.last_end) for i, acc in enumerate(report.stages)]


@dataclass
class TableRow:
    """A row of the per-stage table: the gauge, then ``mean / max`` for the run and each stage."""

    name: str
    cells: list[str]


def stage_table(view: ServerView, report: Any) -> dict[str, Any]:
    """Mean and max of each gauge over the whole run and within each stage's span (first send to last end)."""
    windows = _stage_windows(report)
    heads = ["gauge (mean / max)", "whole run"] + ([w[0] for w in windows] if len(windows) > 1 else [])
    many = len(view.urls) > 1
    rows = []
    for s in view.series:
        figures = [_mean_max(s)]
        if len(windows) > 1:  # a stage with no timed record has no span: nothing to say of it
            figures += [_mean_max(s, lo, hi) if lo is not None and hi is not None else (None, None)
                        for _, lo, hi in windows]
        cells = [f"{_shown(s, mean)} / {_shown(s, top)}" if mean is not None else "–" for mean, top in figures]
        rows.append(TableRow(_label(s, many), cells))
    return {"heads": heads, "rows": rows}


def server_document(view: ServerView, report: Any) -> dict[str, Any]:
    """The report JSON's ``server_metrics`` (docs/REPORT.md): what the page's table shows, as numbers
    (fractions 0..1 for the cache gauges) rather than text."""
    windows = _stage_windows(report)
    gauges = []
    for s in view.series:
        mean, top = _mean_max(s)
        stages = []
        for name, lo, hi in windows:
            m, x = _mean_max(s, lo, hi) if lo is not None and hi is not None else (None, None)
            stages.append({"stage": name, "mean": m, "max": x})
        gauges.append({"url": s.url, "name": s.name, "kind": s.kind, "mean": mean, "max": top, "stages": stages})
    return {"files": list(view.files), "servers": view.urls, "scrapes": view.scrapes, "failures": view.failures,
            "gauges": gauges}


def terminal_lines(view: ServerView, report: Any) -> list[str]:
    """One line per gauge: mean and max over the run, and per stage in a sweep."""
    table = stage_table(view, report)
    lines = [f"Server metrics ({', '.join(Path(f).name for f in view.files)}: {_plural(view.scrapes, 'scrape')} of "
             f"{_plural(len(view.urls), 'server')}, {view.failures} failed)"]
    if not table["rows"]:
        lines.append("  no known gauge (vLLM, SGLang, TGI) in the samples")
    width = max((len(r.name) for r in table["rows"]), default=0)
    stages = table["heads"][2:]
    for row in table["rows"]:
        line = f"  {row.name:<{width}}  mean / max {row.cells[0]}"
        if stages:
            line += "   " + "  ".join(f"{label}: {cell}" for label, cell in zip(stages, row.cells[1:], strict=True))
        lines.append(line)
    return lines


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}" if n == 1 else f"{n:,} {word}s"


# ---- the client's side, binned over the run (a second pass over the results)


@dataclass
class ClientBins:
    """Per time bin: the mean number of requests in flight and a TTFT sample."""

    start: float
    width: float
    in_flight: list[float]
    ttfts: list[list[float]]

    def centers(self) -> list[float]:
        return [self.start + (i + 0.5) * self.width for i in range(len(self.in_flight))]


def client_bins(paths: list[str], lo: float, hi: float, load: Callable[..., Iterable[Any]], bins: int = BINS,
                seed: int = 0) -> ClientBins:
    """Every record's [started_at, started_at + e2e) spread over the bins it covers (time-weighted, so a
    bin's value is its mean concurrency); ok, non-warm-up TTFTs sampled by start time."""
    width = max((hi - lo) / bins, 1e-6)
    flight = [0.0] * bins
    ttfts: list[list[float]] = [[] for _ in range(bins)]
    seen = [0] * bins
    rng = random.Random(seed)
    for record in load(paths, warn=lambda _message: None):
        m = record.metrics
        start = posix_time(m.started_at)
        if start is None or m.e2e_s is None:
            continue
        end = start + m.e2e_s
        first, last = max(0, int((start - lo) / width)), min(bins - 1, int((end - lo) / width))
        for b in range(first, last + 1):
            b0 = lo + b * width
            flight[b] += max(0.0, min(end, b0 + width) - max(start, b0)) / width
        if record.status == OK and not record.warmup and m.ttft_s is not None and 0 <= first < bins:
            seen[first] += 1
            if len(ttfts[first]) < PER_BIN:
                ttfts[first].append(m.ttft_s)
            else:  # a uniform sample of the bin's TTFTs
                j = rng.randrange(seen[first])
                if j < PER_BIN:
                    ttfts[first][j] = m.ttft_s
    return ClientBins(lo, width, flight, ttfts)


def _thin(times: array, values: array, limit: int = MAX_POINTS) -> tuple[list[float], list[float]]:
    """At most ``limit`` points: consecutive runs averaged."""
    n = len(times)
    step = max(1, -(-n // limit))
    xs, ys = [], []
    for i in range(0, n, step):
        chunk_t, chunk_v = times[i:i + step], values[i:i + step]
        xs.append(sum(chunk_t) / len(chunk_t))
        ys.append(sum(chunk_v) / len(chunk_v))
    return xs, ys


# ---- the HTML panel

_CLIENT = "#111827"
_SERVER_COLORS = ("#3867d6", "#e8590c", "#2b8a3e", "#ae3ec9", "#c92a2a", "#1098ad", "#f08c00", "#5c7cfa")
_ROWS = {"requests": "requests", "cache": "% (KV cache, prefix hits)", "ttft": "TTFT (ms)"}


def _span(view: ServerView, report: Any) -> tuple[float, float] | None:
    times = [t for s in view.series for t in (s.times[0], s.times[-1]) if len(s.times)]
    times += [t for t in (report.run_start, report.run_end) if t is not None]
    return (min(times), max(times)) if times else None


def server_figure(view: ServerView, report: Any, bins: ClientBins | None) -> Any:
    """Stacked panels on one time axis: requests (client in flight, server running and waiting), cache
    use and hit rates in %, the client's TTFT; a sweep's stages as shaded bands."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    from .figures import _layout, _round

    span = _span(view, report)
    if span is None:
        return None
    t0 = report.run_start if report.run_start is not None else span[0]
    requests = [s for s in view.series if s.kind in ("running", "waiting")]
    cache = [s for s in view.series if s.kind in _PERCENT]
    has_ttft = bins is not None and any(bins.ttfts)
    rows = [r for r, present in (("requests", requests or bins is not None), ("cache", cache), ("ttft", has_ttft))
            if present]
    fig = make_subplots(rows=len(rows), cols=1, shared_xaxes=True, vertical_spacing=0.07)
    row_of = {name: i + 1 for i, name in enumerate(rows)}
    many = len(view.urls) > 1
    hover = "t=%{x:.1f} s: %{y:.4g}<extra>%{fullData.name}</extra>"
    if bins is not None and "requests" in row_of:
        fig.add_trace(go.Scatter(x=_round((x - t0 for x in bins.centers()), 5), y=_round(bins.in_flight),
                                 name="in flight (client)", mode="lines", line={"color": _CLIENT, "width": 2},
                                 hovertemplate=hover), row=row_of["requests"], col=1)
    for i, s in enumerate(view.series):
        row = row_of.get("requests" if s.kind in ("running", "waiting") else "cache")
        if row is None:
            continue
        xs, ys = _thin(s.times, s.values)
        scale = 100.0 if s.kind in _PERCENT else 1.0
        fig.add_trace(go.Scatter(x=_round((x - t0 for x in xs), 5), y=_round(y * scale for y in ys),
                                 name=_label(s, many), mode="lines",
                                 line={"color": _SERVER_COLORS[i % len(_SERVER_COLORS)], "width": 1.8,
                                       "dash": "dot" if s.kind == "waiting" else "solid"},
                                 hovertemplate=hover), row=row, col=1)
    if bins is not None and has_ttft:
        xs, p50s, p90s = [], [], []
        for x, chunk in zip(bins.centers(), bins.ttfts, strict=True):
            if chunk:
                values = sorted(chunk)
                xs.append(x - t0)
                p50s.append((percentile(values, 50) or 0.0) * 1000)
                p90s.append((percentile(values, 90) or 0.0) * 1000)
        for name, ys, dash in (("TTFT p50 (client)", p50s, "solid"), ("TTFT p90 (client)", p90s, "dot")):
            fig.add_trace(go.Scatter(x=_round(xs, 5), y=_round(ys), name=name, mode="lines",
                                     line={"color": _CLIENT, "width": 1.8, "dash": dash}, hovertemplate=hover),
                          row=row_of["ttft"], col=1)
    windows = _stage_windows(report)
    if len(windows) > 1:
        for i, (label, lo, hi) in enumerate(windows):
            if lo is None or hi is None:
                continue
            fig.add_vrect(x0=lo - t0, x1=hi - t0, fillcolor="#3867d6" if i % 2 else "#adb5bd", opacity=0.08,
                          line_width=0, row="all", col=1)
            fig.add_annotation(x=(lo + hi) / 2 - t0, y=1, xref="x", yref="paper", text=label, showarrow=False,
                               yanchor="bottom", font={"size": 11, "color": "#616e7c"})
    _layout(fig, 220 + 190 * len(rows))
    for name, row in row_of.items():
        fig.update_yaxes(title_text=_ROWS[name], rangemode="tozero", row=row, col=1)
    fig.update_xaxes(title_text="time since run start (s)", row=len(rows), col=1)
    fig.update_layout(legend={"y": 1.06 + 0.1 * (len(windows) > 1)})
    return fig


def html_charts(report: Any, *, include_plotlyjs: bool) -> list[dict[str, Any]]:
    """The page's server section (empty without side files): the panel, and the per-stage table."""
    from . import figures
    from .read import load_records

    view: ServerView | None = getattr(report, "server", None)
    if view is None:
        return []
    span = _span(view, report)
    bins = None
    if span is not None and report.run_start is not None:
        bins = client_bins([i.path for i in report.inputs], span[0], span[1], load_records)
    fig = server_figure(view, report, bins)
    names = ", ".join(Path(f).name for f in view.files)
    explain = (f"The server's own /metrics ({names}: {view.scrapes:,} scrapes, {view.failures:,} failed), on the "
               "client's timeline: requests in flight as the client counts them beside those the server runs and "
               "queues (dotted), KV-cache usage and prefix-cache hit rate, and the client's TTFT by start time.")
    if not view.series:
        explain += " The samples hold no known gauge (vLLM, SGLang, TGI); they are all in the file."
    chart: dict[str, Any] = {"anchor": "server", "title": "Server metrics", "explain": explain,
                             "div": figures.embed(fig, include_plotlyjs=include_plotlyjs) if fig is not None else ""}
    if view.series:
        chart["table"] = stage_table(view, report)
    return [chart]
