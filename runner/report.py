"""``streamrun report``: read result files, print tables, write JSON and HTML.

One streaming pass over the JSONL (orjson, a line at a time) feeds one
:class:`~runner.stats.StatsAccumulator` per stage plus a small ITL timeline
sample, so a report of a million-request run needs no more memory than the
statistics themselves. rich and plotly are imported inside the functions that
use them: the CLI imports this module, and ``streamrun --help`` must stay fast.
"""

from __future__ import annotations

import itertools
import math
import sys
from array import array
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from runner.stats import (
    DEFAULT_MAX_EXACT,
    SLO_KEYS,
    Reservoir,
    StatsAccumulator,
    accumulate_by_stage,
    format_time,
    gap_array,
    parse_time,
    percentile,
    validate_slos,
)

if TYPE_CHECKING:
    from rich.console import Console

SCHEMA = "streamrun.report/1"
FOOTNOTE = "ITL here = per-chunk gap (vLLM's ITL); AIPerf/guidellm 'ITL' = our TPOT; ttfb = vLLM's TTFT"
#: ITL points drawn in the HTML timeline, at most.
TIMELINE_POINTS = 20_000

# (summary key, short name, long name) of the latency metrics shown.
LATENCIES: tuple[tuple[str, str, str], ...] = (
    ("ttft_s", "TTFT", "time to first token"),
    ("ttfb_s", "TTFB", "time to first byte (vLLM's TTFT)"),
    ("tpot_s", "TPOT", "time per output token"),
    ("itl_s", "ITL", "inter-chunk gap"),
    ("e2e_s", "E2E", "end-to-end latency"),
    ("queue_s", "Queue", "due to sent"),
)
SWEEP_LATENCIES = ("ttft_s", "tpot_s", "itl_s", "e2e_s")
STAT_COLUMNS = ("mean", "p50", "p90", "p95", "p99", "min", "max")


# --------------------------------------------------------------------------
# reading


@dataclass
class InputFile:
    """What was read from one results file (reported under ``inputs``)."""

    path: str
    records: int = 0
    skipped_lines: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "records": self.records, "skipped_lines": self.skipped_lines}


def _warn_stderr(message: str) -> None:
    click.echo(message, err=True)


#: Warnings about unreadable lines per file, before they are only counted.
MAX_LINE_WARNINGS = 20


def load_records(
    paths: Iterable[str | Path],
    *,
    inputs: list[InputFile] | None = None,
    warn: Callable[[str], None] = _warn_stderr,
) -> Iterator[dict[str, Any]]:
    """Yield the result records of ``paths``, one line at a time.

    A line that is not a JSON object (a torn last line after a crash, a
    garbled write) is skipped with a one-line warning naming ``file:line``:
    the rest of a long run is still worth a report. After
    ``MAX_LINE_WARNINGS`` in a file (the wrong file given?) the rest are only
    counted. Pass ``inputs`` to get per-file counts appended to it.
    """
    for path in paths:
        info = InputFile(str(path))
        if inputs is not None:
            inputs.append(info)
        with open(path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    reason = f"not JSON ({exc.msg})"
                else:
                    if isinstance(record, dict):
                        info.records += 1
                        yield record
                        continue
                    reason = f"a JSON {type(record).__name__}, not an object"
                info.skipped_lines += 1
                if info.skipped_lines <= MAX_LINE_WARNINGS:
                    warn(f"warning: {path}:{lineno}: skipped unreadable result line: {reason}")
        if info.skipped_lines > MAX_LINE_WARNINGS:
            warn(f"warning: {path}: {info.skipped_lines} unreadable lines skipped in all")


class Timeline:
    """A uniform sample of ITL gaps placed in time, for the "ITL over time"
    chart: gap ``i`` of a request ends at ``started_at + ttft + sum(gaps[:i+1])``.
    At most ``capacity`` points, however long the run."""

    def __init__(self, capacity: int = TIMELINE_POINTS, seed: int = 0) -> None:
        self._res = Reservoir(capacity, seed + 7)
        self.times = array("d")  # POSIX seconds
        self.gaps = array("d")  # seconds
        self.stages = array("i")  # stage position

    def observe(self, record: dict[str, Any], stage: int) -> None:
        if record.get("warmup") or record.get("status") != "ok":
            return
        metrics = record.get("metrics") or {}
        gaps = gap_array(metrics.get("itl_s"))
        start = parse_time(metrics.get("started_at"))
        ttft = metrics.get("ttft_s")
        if not gaps or start is None or not isinstance(ttft, (int, float)):
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


def build_report(
    paths: Iterable[str | Path],
    slos: dict[str, float] | None = None,
    *,
    max_exact: int = DEFAULT_MAX_EXACT,
    seed: int = 0,
    warn: Callable[[str], None] = _warn_stderr,
) -> Report:
    """Read ``paths`` once and summarise them per stage."""
    slos = validate_slos(slos)
    inputs: list[InputFile] = []
    timeline = Timeline(seed=seed)
    stages = accumulate_by_stage(
        load_records(paths, inputs=inputs, warn=warn), max_exact=max_exact, seed=seed, observe=timeline.observe
    )
    return Report(inputs, slos, stages, [acc.summary(slos) for acc in stages], timeline)


# --------------------------------------------------------------------------
# formatting helpers


def stage_label(summary: dict[str, Any], position: int = 0) -> str:
    """A short name for a stage: its label, else its load, else its index."""
    stage = summary.get("stage")
    if not isinstance(stage, dict):
        return "all"
    if stage.get("label"):
        return str(stage["label"])
    parts = []
    if stage.get("concurrency") is not None:
        parts.append(f"c={stage['concurrency']}")
    if stage.get("rate") is not None:
        parts.append(f"rate={stage['rate']}")
    return " ".join(parts) or f"stage {stage.get('index', position)}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.2f}"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{int(minutes)}m {sec:04.1f}s"
    hours, minutes = divmod(minutes, 60)
    return f"{int(hours)}h {int(minutes):02d}m"


def _slo_text(slos: dict[str, float]) -> str:
    return ", ".join(f"{k}<={v * 1000:g}ms" for k, v in slos.items())


# --------------------------------------------------------------------------
# terminal


def render_table(summaries: list[dict[str, Any]], console: Console | None = None) -> None:
    """Print the summaries as rich tables: throughput and counts (a row per
    stage), then latencies in ms: a row per metric for a single stage, or a
    table per metric with a row per stage for a sweep."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = console or Console()
    slos = next((s["slos"] for s in summaries if s.get("slos")), {})

    tput = Table(title="Requests and throughput", title_justify="left", header_style="bold")
    tput.add_column("stage", no_wrap=True)
    for name in ("ok", "errors", "retried", "duration s", "req/s", "output tok/s", "total tok/s"):
        tput.add_column(name, justify="right", no_wrap=True)
    if slos:
        tput.add_column("goodput req/s", justify="right", no_wrap=True)
    for i, s in enumerate(summaries):
        c = s["counts"]
        row = [
            escape(stage_label(s, i)),
            str(c["ok"]),
            str(c["error"]),
            str(c["retried"]),
            _num(s["duration_s"]),
            _num(s["request_throughput"]),
            _num(s["output_token_throughput"]),
            _num(s["total_token_throughput"]),
        ]
        if slos:
            row.append(f"{_num(s['goodput'])} ({s['good_requests']}/{c['ok']})")
        tput.add_row(*row)
    console.print(tput)

    def latency_table(title: str, first: str) -> Table:
        table = Table(title=title, title_justify="left", header_style="bold")
        table.add_column(first, no_wrap=True)
        table.add_column("count", justify="right", no_wrap=True)
        for stat in STAT_COLUMNS:
            table.add_column(stat, justify="right", no_wrap=True)
        return table

    def cells(d: dict[str, Any]) -> list[str]:
        return [str(d["count"]), *(_ms(d[stat]) for stat in STAT_COLUMNS)]

    if len(summaries) == 1:
        s = summaries[0]
        table = latency_table("Latency (ms)", "metric")
        for key, short, _ in LATENCIES:
            table.add_row(short, *cells(s["metrics"][key]))
        console.print(table)
    else:
        for key, short, long in LATENCIES:
            if key not in SWEEP_LATENCIES:
                continue
            table = latency_table(f"{short} (ms): {long}", "stage")
            for i, s in enumerate(summaries):
                table.add_row(escape(stage_label(s, i)), *cells(s["metrics"][key]))
            console.print(table)

    for i, s in enumerate(summaries):
        warm = s["counts"]["warmup"]
        errors = s["counts"]["errors_by_type"]
        notes = []
        if errors:
            notes.append("errors: " + ", ".join(f"{k} {v}" for k, v in errors.items()))
        if warm:
            notes.append(f"{warm} warm-up requests excluded")
        if s["sampled"]:
            notes.append("percentiles from a uniform sample (run larger than max_exact)")
        if notes:
            prefix = f"{stage_label(s, i)}: " if len(summaries) > 1 else ""
            console.print(escape(f"{prefix}{'; '.join(notes)}"), highlight=False)
    if slos:
        console.print(f"goodput SLOs: {_slo_text(slos)} (itl = max gap of a request)", highlight=False)
    console.print(FOOTNOTE, style="dim", highlight=False)


# --------------------------------------------------------------------------
# JSON


def report_document(report: Report) -> dict[str, Any]:
    """The ``--json`` document (schema ``streamrun.report/1``, docs/REPORT.md)."""
    return {
        "schema": SCHEMA,
        "generated_at": report.generated_at,
        "inputs": [i.as_dict() for i in report.inputs],
        "slos": dict(report.slos),
        "stages": report.summaries,
    }


def write_json(report: Report, path: str | Path) -> None:
    """Write :func:`report_document` to ``path`` (``"-"`` = stdout)."""
    data = orjson.dumps(report_document(report), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    if str(path) == "-":
        click.echo(data.decode(), nl=False)
    else:
        Path(path).write_bytes(data)


# --------------------------------------------------------------------------
# HTML

_SLO_COLOR = "#c92a2a"
_P50_COLOR = "#3867d6"
_P99_COLOR = "#e8590c"
_TPUT_COLOR = "#2b8a3e"
_CDF_QS = [i / 2 for i in range(201)]  # 0, 0.5, ..., 100 %
_PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}


def _stage_colors(n: int) -> list[str]:
    """One colour per stage. A single stage gets the accent colour; a sweep
    gets an ordered palette, dark to warm, because stages are ordered loads."""
    if n == 1:
        return ["#3867d6"]
    from plotly.colors import sample_colorscale

    if n == 2:
        return ["#3867d6", "#e8590c"]
    return sample_colorscale("Plasma", [0.05 + 0.78 * i / (n - 1) for i in range(n)])


def _round(values: Iterable[float], digits: int = 4) -> list[float]:
    """Trim floats to what a chart can show: keeps the inlined data small."""
    return [float(f"{v:.{digits}g}") for v in values]


@dataclass
class _Dist:
    """Histogram and CDF of one metric for one stage, in ms."""

    label: str
    color: str
    centers: list[float]
    edges: list[float]
    share: list[float]  # % of the stage's requests in each bin
    counts: list[int]
    cdf_x: list[float]
    cdf_y: list[float]
    beyond: int  # values right of the clipped axis


def _distributions(report: Report, metric: str, colors: list[str]) -> tuple[list[_Dist], bool, float]:
    """Exact histograms (counts read off the sorted values by bisection) and
    exact CDF points, so what is drawn is bounded however big the run.

    Shares a bin grid across stages; log-spaced when the largest value is
    over 4x the smallest (latency tails are long). The axis stops at the largest p99.5 so one
    straggler does not squash the chart; what lies beyond is counted.
    """
    sorted_sets = [acc.sorted_values(metric) for acc in report.stages]
    present = [v for v in sorted_sets if len(v)]
    if not present:
        return [], False, 0.0
    lo = min(v[0] for v in present)
    hi_max = max(v[-1] for v in present)
    hi = max(percentile(v, 99.5) or 0.0 for v in present)
    if hi_max <= hi * 1.25:
        hi = hi_max
    use_log = lo > 0 and hi / lo > 4
    if hi <= lo:
        hi = lo * 1.01 + 1e-9
    # Rice's rule on the median stage size: smooth for 500 requests, fine
    # grained (up to 60 bins) for big runs; more for sweeps, whose stages
    # each occupy a part of the shared axis.
    sizes = sorted(len(v) for v in present)
    rice = 2 * sizes[len(sizes) // 2] ** (1 / 3)
    bins = max(12, min(60, int(rice * (1 + 0.5 * min(len(present) - 1, 2)))))
    if use_log:
        llo, lhi = math.log10(lo), math.log10(hi)
        edges = [10 ** (llo + (lhi - llo) * i / bins) for i in range(bins + 1)]
        centers = [math.sqrt(a * b) for a, b in zip(edges, edges[1:])]
    else:
        edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
        centers = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    edges[0], edges[-1] = lo, hi
    out = []
    for i, (values, summary) in enumerate(zip(sorted_sets, report.summaries)):
        n = len(values)
        if not n:
            continue
        below = [values.count_below(e) for e in edges[:-1]] + [values.rank(hi)]
        counts = [b - a for a, b in zip(below, below[1:])]
        cdf_x = [percentile(values, q) or 0.0 for q in _CDF_QS]
        out.append(
            _Dist(
                label=stage_label(summary, i),
                color=colors[i],
                centers=_round(c * 1000 for c in centers),
                edges=_round((e * 1000 for e in edges), 6),
                share=_round(100 * c / n for c in counts),
                counts=counts,
                cdf_x=_round(x * 1000 for x in cdf_x),
                cdf_y=_CDF_QS,
                beyond=n - below[-1],
            )
        )
    return out, use_log, hi * 1000


def _layout(fig: Any, height: int) -> None:
    fig.update_layout(
        template="plotly_white",
        height=height,
        margin={"l": 64, "r": 24, "t": 76, "b": 52},
        font={"family": "Inter, system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", "size": 13, "color": "#1f2933"},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.1, "xanchor": "left", "x": 0},
        hoverlabel={"font_size": 12},
        paper_bgcolor="rgba(0,0,0,0)",
    )
    fig.update_xaxes(gridcolor="#edf0f4", zeroline=False, linecolor="#c3cad3", showline=True)
    fig.update_yaxes(gridcolor="#edf0f4", zerolinecolor="#d5dae1", linecolor="#c3cad3", showline=True)


def _slo_vline(fig: Any, slo_ms: float | None, cols: Iterable[int], log_x: bool) -> None:
    """A dashed red line at the SLO on each distribution panel. The label is
    placed by hand: annotations on a log axis take log10 coordinates, which
    ``add_vline``'s own label does not do."""
    if slo_ms is None:
        return
    for col in cols:
        fig.add_vline(x=slo_ms, line_dash="dash", line_color=_SLO_COLOR, line_width=1.5, row=1, col=col)
        suffix = "" if col == 1 else str(col)
        fig.add_annotation(
            x=math.log10(slo_ms) if log_x else slo_ms, y=1, xref=f"x{suffix}", yref=f"y{suffix} domain",
            text=f"SLO {slo_ms:g} ms", showarrow=False, xanchor="left", yanchor="top", xshift=4,
            font={"color": _SLO_COLOR, "size": 11},
        )


def _distribution_figure(report: Report, metric: str, name: str, colors: list[str], slo_key: str | None) -> Any:
    """Histogram (share of requests) beside the CDF, one trace per stage."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    dists, use_log, axis_max = _distributions(report, metric, colors)
    if not dists:
        return None
    beyond = sum(d.beyond for d in dists)
    total = sum(sum(d.counts) + d.beyond for d in dists)
    left = "Distribution" + (f"  (axis cut at {axis_max:.4g} ms: {100 * beyond / total:.2g}% beyond)" if beyond else "")
    fig = make_subplots(rows=1, cols=2, subplot_titles=(left, "Cumulative"), horizontal_spacing=0.09)
    many = len(dists) > 1
    for d in dists:
        hover = "%{x:.4g} ms: %{y:.3g}% (%{customdata} requests)<extra>%{fullData.name}</extra>"
        if many:
            fig.add_trace(
                go.Scatter(x=d.centers, y=d.share, customdata=d.counts, name=d.label, legendgroup=d.label,
                           mode="lines", line={"color": d.color, "width": 2, "shape": "spline", "smoothing": 0.4},
                           fill="tozeroy", fillcolor=_alpha(d.color, 0.10), hovertemplate=hover),
                row=1, col=1,
            )
        else:
            fig.add_trace(
                # offset/width in data units: each bar spans its bin exactly,
                # on a log axis too
                go.Bar(x=d.centers, y=d.share, customdata=d.counts, name=d.label, legendgroup=d.label,
                       offset=[a - c for a, c in zip(d.edges, d.centers)],
                       width=[b - a for a, b in zip(d.edges, d.edges[1:])],
                       marker={"color": d.color, "line": {"width": 1, "color": "#ffffff"}}, opacity=0.9,
                       hovertemplate=hover),
                row=1, col=1,
            )
        fig.add_trace(
            go.Scatter(x=d.cdf_x, y=d.cdf_y, name=d.label, legendgroup=d.label, showlegend=False, mode="lines",
                       line={"color": d.color, "width": 2.5},
                       hovertemplate="p%{y:g}: %{x:.4g} ms<extra>%{fullData.name}</extra>"),
            row=1, col=2,
        )
    _layout(fig, 380)
    fig.update_layout(bargap=0.04, showlegend=many)
    fig.update_xaxes(title_text=f"{name} (ms)")
    if use_log:
        _log_axis(fig, "x", min(d.cdf_x[0] for d in dists), max(d.cdf_x[-1] for d in dists))
    fig.update_yaxes(title_text="% of requests", row=1, col=1, rangemode="tozero")
    fig.update_yaxes(title_text="percentile", row=1, col=2, range=[0, 100.5], ticksuffix="%")
    for q in (50, 99):
        fig.add_hline(y=q, line_dash="dot", line_color="#adb5bd", line_width=1, row=1, col=2)
    slo = report.slos.get(slo_key) if slo_key else None
    _slo_vline(fig, slo * 1000 if slo else None, (1, 2), use_log)
    return fig


def _alpha(color: str, a: float) -> str:
    """``#rrggbb`` or ``rgb(r, g, b)`` -> ``rgba(r, g, b, a)``."""
    if color.startswith("#"):
        r, g, b = (int(color[i : i + 2], 16) for i in (1, 3, 5))
    else:
        r, g, b = (int(float(x)) for x in color[color.index("(") + 1 : color.index(")")].split(","))
    return f"rgba({r}, {g}, {b}, {a})"


def _run_start(report: Report) -> float | None:
    starts = [acc.first_start for acc in report.stages if acc.first_start is not None]
    return min(starts) if starts else None


def _run_end(report: Report) -> float | None:
    ends = [acc.last_end for acc in report.stages if acc.last_end is not None]
    return max(ends) if ends else None


def _itl_figure(report: Report, colors: list[str]) -> Any:
    """ITL gaps against time since the run started, a rolling median on top:
    stalls (prefill of new arrivals, preemption) show as spikes and bands."""
    import plotly.graph_objects as go

    tl = report.timeline
    t0 = _run_start(report)
    if not len(tl.times) or t0 is None:
        return None
    fig = go.Figure()
    labels = [stage_label(s, i) for i, s in enumerate(report.summaries)]
    by_stage: dict[int, tuple[list[float], list[float]]] = {}
    for t, g, st in zip(tl.times, tl.gaps, tl.stages):
        xs, ys = by_stage.setdefault(st, ([], []))
        xs.append(t - t0)
        ys.append(g * 1000)
    many = len(report.stages) > 1
    for st in sorted(by_stage):
        xs, ys = by_stage[st]
        fig.add_trace(
            go.Scatter(x=_round(xs, 5), y=_round(ys, 4), mode="markers", name=labels[st],
                       marker={"color": colors[st], "size": 4, "opacity": 0.35, "line": {"width": 0}},
                       hovertemplate="t=%{x:.2f} s: %{y:.3g} ms<extra>%{fullData.name}</extra>")
        )
    # Rolling median and p90 over time bins of ~150 gaps (at most 100 bins),
    # on top. Not p99: from a sample of a bin it would be mostly noise.
    points = sorted(zip(tl.times, tl.gaps))
    bins = max(1, min(100, len(points) // 150))
    first_t = points[0][0]
    span = (points[-1][0] - first_t) or 1.0
    mx: list[float] = []
    p50s: list[float] = []
    p90s: list[float] = []
    for b, group in itertools.groupby(points, key=lambda p: min(bins - 1, int((p[0] - first_t) / span * bins))):
        chunk = sorted(g for _, g in group)
        if len(chunk) >= 10:
            mx.append(first_t - t0 + (b + 0.5) * span / bins)
            p50s.append((percentile(chunk, 50) or 0.0) * 1000)
            p90s.append((percentile(chunk, 90) or 0.0) * 1000)
    for name, ys, dash in (("rolling median", p50s, "solid"), ("rolling p90", p90s, "dot")):
        fig.add_trace(
            go.Scatter(x=_round(mx, 5), y=_round(ys, 4), mode="lines", name=name,
                       line={"color": "#111827", "width": 2, "dash": dash, "shape": "spline", "smoothing": 0.6},
                       hovertemplate="t=%{x:.1f} s: " + name[8:] + " %{y:.3g} ms<extra></extra>")
        )
    _layout(fig, 440)
    gaps_sorted = sorted(tl.gaps)
    p50 = percentile(gaps_sorted, 50) or 0.0
    # A log axis when stalls reach far above the typical gap: on a linear
    # one the bulk of the gaps would be a flat line at the bottom.
    log_y = p50 > 0 and gaps_sorted[-1] / p50 > 8
    fig.update_xaxes(title_text="time since run start (s)", zeroline=False)
    fig.update_yaxes(title_text="gap between chunks (ms)")
    if log_y:
        _log_axis(fig, "y", gaps_sorted[0] * 1000, gaps_sorted[-1] * 1000)
    fig.update_layout(showlegend=True, legend_itemsizing="constant")
    if not many:
        fig.data[0].showlegend = False
    slo = report.slos.get("itl")
    if slo:
        _slo_hline(fig, slo * 1000, log_y=log_y, text=f"SLO: max gap {slo * 1000:g} ms")
    return fig


def _log_axis(fig: Any, which: str, lo: float, hi: float, **selector: Any) -> None:
    """Log scale with ticks at 1-2-5 steps, labelled plainly ("20", "500",
    "2k"): plotly's own log ticks label every digit and crowd the axis."""
    ticks: list[float] = []
    for mantissas in ((1, 2, 5), (1, 1.5, 2, 3, 5, 7)):  # finer when the range is narrow
        ticks = []
        decade = 10 ** math.floor(math.log10(max(lo, 1e-9)))
        while decade <= hi * 10:
            ticks += [m * decade for m in mantissas if lo / 1.2 <= m * decade <= hi * 1.2]
            decade *= 10
        if len(ticks) >= 4:
            break
    ticks = [float(f"{v:.6g}") for v in ticks]
    text = [f"{v / 1000:g}k" if v >= 1000 else f"{v:g}" for v in ticks]
    update = fig.update_xaxes if which == "x" else fig.update_yaxes
    update(type="log", tickvals=ticks, ticktext=text, **selector)


def _sweep_axis(summaries: list[dict[str, Any]]) -> tuple[str, list[Any], bool]:
    """What the sweep varied: concurrency or rate when every stage has a
    number for it and they differ; else the stage labels as categories."""
    for key, title in (("concurrency", "concurrency"), ("rate", "request rate (req/s)")):
        xs = [s["stage"].get(key) if isinstance(s.get("stage"), dict) else None for s in summaries]
        if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in xs) and len(set(xs)) > 1:
            return title, xs, True
    return "stage", [stage_label(s, i) for i, s in enumerate(summaries)], False


def _slo_hline(fig: Any, slo_ms: float, *, log_y: bool = False, row: int | None = None, col: int | None = None,
               text: str | None = None) -> None:
    """A dashed red line at an SLO, labelled at its right end (by hand, so
    the label also lands right on a log axis)."""
    fig.add_hline(y=slo_ms, line_dash="dash", line_color=_SLO_COLOR, line_width=1.5, row=row, col=col)
    axis = 1 if row is None else (row - 1) * 3 + col  # sweep grid is 2x3; single plots use axis 1
    suffix = "" if axis == 1 else str(axis)
    fig.add_annotation(
        x=0, y=math.log10(slo_ms) if log_y else slo_ms, xref=f"x{suffix} domain", yref=f"y{suffix}",
        text=text or f"SLO {slo_ms:g} ms", showarrow=False, xanchor="left", yanchor="bottom", xshift=4,
        font={"color": _SLO_COLOR, "size": 11},
    )


def _sweep_figure(report: Report) -> Any:
    """p50/p99 latencies and throughput against the swept load, one panel
    each, SLOs as dashed lines."""
    from plotly.subplots import make_subplots
    import plotly.graph_objects as go

    summaries = report.summaries
    title, xs, numeric = _sweep_axis(summaries)
    fig = make_subplots(
        rows=2, cols=3, vertical_spacing=0.2, horizontal_spacing=0.08,
        subplot_titles=("TTFT (ms)", "TPOT (ms)", "E2E latency (ms)", "ITL, gap between chunks (ms)",
                        "Output throughput (tok/s)", "Request throughput (req/s)"),
    )
    panels = (("ttft_s", "ttft", 1, 1), ("tpot_s", "tpot", 1, 2), ("e2e_s", "e2e", 1, 3), ("itl_s", None, 2, 1))
    for metric, slo_key, row, col in panels:
        for stat, color, dash in (("p50", _P50_COLOR, "solid"), ("p99", _P99_COLOR, "dot")):
            ys = [s["metrics"][metric][stat] for s in summaries]
            fig.add_trace(
                go.Scatter(x=xs, y=_round_opt(None if y is None else y * 1000 for y in ys), name=stat,
                           legendgroup=stat, showlegend=(row, col) == (1, 1), mode="lines+markers",
                           line={"color": color, "width": 2.5, "dash": dash}, marker={"size": 7},
                           hovertemplate=f"{title} %{{x}}: {stat} %{{y:.4g}} ms<extra></extra>"),
                row=row, col=col,
            )
        slo = report.slos.get(slo_key) if slo_key else None
        if slo:
            _slo_hline(fig, slo * 1000, row=row, col=col)
    line = {"width": 2.5}
    fig.add_trace(
        go.Scatter(x=xs, y=_round_opt(s["output_token_throughput"] for s in summaries), name="output tok/s",
                   showlegend=False, mode="lines+markers", line={**line, "color": _TPUT_COLOR}, marker={"size": 7},
                   hovertemplate=f"{title} %{{x}}: %{{y:.4g}} output tok/s<extra></extra>"),
        row=2, col=2,
    )
    fig.add_trace(
        go.Scatter(x=xs, y=_round_opt(s["request_throughput"] for s in summaries), name="completed req/s",
                   mode="lines+markers", line={**line, "color": _TPUT_COLOR}, marker={"size": 7},
                   hovertemplate=f"{title} %{{x}}: %{{y:.4g}} req/s<extra></extra>"),
        row=2, col=3,
    )
    if report.slos:
        fig.add_trace(
            go.Scatter(x=xs, y=_round_opt(s["goodput"] for s in summaries), name="goodput req/s (met every SLO)",
                       mode="lines+markers", line={**line, "color": _SLO_COLOR, "dash": "dash"}, marker={"size": 7},
                       hovertemplate=f"{title} %{{x}}: goodput %{{y:.4g}} req/s<extra></extra>"),
            row=2, col=3,
        )
    _layout(fig, 700)
    # Loads usually double from stage to stage (1, 2, 4, ... 64): a log axis
    # spaces them evenly instead of crowding the low ones into a corner.
    spread = numeric and min(xs) > 0 and max(xs) / min(xs) >= 8
    fig.update_xaxes(title_text=title, type=("log" if spread else "linear") if numeric else "category")
    if numeric:
        fig.update_xaxes(tickvals=xs, ticktext=[f"{x:g}" for x in xs])
    fig.update_yaxes(rangemode="tozero")
    return fig


def _round_opt(values: Iterable[float | None]) -> list[float | None]:
    """Like :func:`_round`, keeping None (a stage with no data) as a gap."""
    return [None if v is None else float(f"{v:.5g}") for v in values]


_CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --bg:#f4f6f9; --card:#fff; --accent:#3867d6; --bad:#c92a2a; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
  font:14px/1.5 Inter, system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; }
.wrap { max-width:1240px; margin:0 auto; padding:0 28px 48px; }
header.hero { background:linear-gradient(120deg,#1b2a4a 0%,#2c4a8a 60%,#3867d6 100%); color:#fff; margin-bottom:-56px; }
header.hero .wrap { padding-top:28px; padding-bottom:88px; }
.brand { font-size:12px; letter-spacing:.14em; text-transform:uppercase; opacity:.75; }
h1 { font-size:26px; font-weight:650; margin:6px 0 6px; }
.meta { opacity:.85; font-size:13px; }
.meta span + span::before { content:"·"; margin:0 8px; opacity:.6; }
.tiles { display:grid; grid-template-columns:repeat(auto-fit,minmax(150px,1fr)); gap:14px; margin-bottom:20px; }
.tile { background:var(--card); border-radius:12px; padding:14px 16px; box-shadow:0 1px 2px rgba(16,24,40,.06),0 4px 12px rgba(16,24,40,.06); }
.tile .k { color:var(--muted); font-size:12px; text-transform:uppercase; letter-spacing:.06em; }
.tile .v { font-size:24px; font-weight:650; margin-top:2px; font-variant-numeric:tabular-nums; }
.tile .s { color:var(--muted); font-size:12px; }
.tile .s .bad { color:var(--bad); font-weight:600; }
.tile .v .sep { color:#9aa5b1; margin:0 6px; font-weight:400; }
.card { background:var(--card); border-radius:12px; padding:18px 20px 10px; margin-bottom:20px;
  box-shadow:0 1px 2px rgba(16,24,40,.06),0 4px 12px rgba(16,24,40,.06); }
.card h2 { font-size:17px; margin:0 0 2px; font-weight:650; }
.card p.explain { margin:0 0 6px; color:var(--muted); font-size:13px; }
.scroll { overflow-x:auto; }
table.stats { border-collapse:collapse; width:100%; font-variant-numeric:tabular-nums; margin:8px 0 12px; font-size:13px; }
table.stats th, table.stats td { padding:6px 10px; text-align:right; white-space:nowrap; }
table.stats th:first-child, table.stats td:first-child { text-align:left; }
table.stats thead th { color:var(--muted); font-weight:600; font-size:12px; text-transform:uppercase; letter-spacing:.04em;
  border-bottom:2px solid var(--line); }
table.stats tbody tr:nth-child(even) { background:#f8f9fb; }
table.stats tbody td { border-bottom:1px solid var(--line); }
table.stats td.name { font-weight:600; }
table.stats th.group { text-align:center; border-bottom:1px solid var(--line); }
.chips { display:flex; flex-wrap:wrap; gap:8px; margin:4px 0 10px; }
.chip { background:#eef2fb; color:#27408b; border-radius:999px; padding:2px 10px; font-size:12px; }
.chip.bad { background:#fdecec; color:var(--bad); }
.note { color:var(--muted); font-size:12px; margin:6px 0 10px; }
details summary { cursor:pointer; color:var(--accent); font-weight:600; margin:6px 0; }
footer { color:var(--muted); font-size:12px; padding-top:8px; }
footer code { background:#e9edf3; padding:1px 5px; border-radius:4px; }
"""


def _esc(value: Any) -> str:
    import html

    return html.escape(str(value), quote=True)


def _fmt_ms_html(value: float | None) -> str:
    """Readable precision: 3 significant digits past 10 ms, 2 decimals below."""
    if value is None:
        return "–"
    ms = value * 1000
    if ms >= 1000:
        return f"{ms:,.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    return f"{ms:.2f}"


def _fmt_rate(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def _summary_table_html(report: Report) -> str:
    """Single stage: latency metrics as rows. Sweep: a row per stage with
    the numbers people compare across loads."""
    rows = []
    sums = report.summaries
    if len(sums) == 1:
        m = sums[0]["metrics"]
        head = "".join(f"<th>{c}</th>" for c in ("metric (ms)", *STAT_COLUMNS, "count"))
        for key, short, long in LATENCIES:
            d = m[key]
            tds = "".join(f"<td>{_fmt_ms_html(d[c])}</td>" for c in STAT_COLUMNS)
            rows.append(f"<tr><td class='name' title='{_esc(long)}'>{short} <span class='note'>{_esc(long)}</span></td>{tds}<td>{d['count']:,}</td></tr>")
        return f"<div class='scroll'><table class='stats'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    slos = bool(report.slos)
    lat_heads = "".join(f"<th class='group' colspan='2'>{short}</th>" for key, short, _ in LATENCIES if key in SWEEP_LATENCIES)
    top = (f"<tr><th rowspan='2'>stage</th><th rowspan='2'>ok</th><th rowspan='2'>errors</th><th rowspan='2'>req/s</th>"
           f"<th rowspan='2'>output tok/s</th>{'<th rowspan=2>goodput</th>' if slos else ''}{lat_heads}</tr>")
    sub = "<tr>" + "<th>p50</th><th>p99</th>" * len(SWEEP_LATENCIES) + "</tr>"
    for i, s in enumerate(sums):
        c = s["counts"]
        cells = [f"<td class='name'>{_esc(stage_label(s, i))}</td>", f"<td>{c['ok']:,}</td>",
                 f"<td>{c['error']:,}</td>", f"<td>{_fmt_rate(s['request_throughput'])}</td>",
                 f"<td>{_fmt_rate(s['output_token_throughput'])}</td>"]
        if slos:
            cells.append(f"<td>{_fmt_rate(s['goodput'])}</td>")
        for key in SWEEP_LATENCIES:
            d = s["metrics"][key]
            cells.append(f"<td>{_fmt_ms_html(d['p50'])}</td><td>{_fmt_ms_html(d['p99'])}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return (f"<div class='scroll'><table class='stats'><thead>{top}{sub}</thead><tbody>{''.join(rows)}</tbody></table></div>"
            "<p class='note'>latencies in ms</p>")


def _tiles_html(report: Report) -> str:
    """The few numbers a reader looks for first, as big tiles."""
    sums = report.summaries
    ok = sum(s["counts"]["ok"] for s in sums)
    err = sum(s["counts"]["error"] for s in sums)
    total = ok + err
    failed = f"<span class='bad'>{err:,} failed ({100 * err / total:.1f}%)</span>" if err else "none failed"
    tiles = [("requests ok", f"{ok:,}", f"of {total:,} · {failed}")]
    if len(sums) == 1:
        s = sums[0]
        m = s["metrics"]
        tiles += [
            ("request throughput", _fmt_rate(s["request_throughput"]), "req/s"),
            ("output throughput", _fmt_rate(s["output_token_throughput"]), "tok/s"),
            ("TTFT", _pair(m["ttft_s"]), "ms, p50 · p99"),
            ("TPOT", _pair(m["tpot_s"]), "ms, p50 · p99"),
        ]
        if report.slos:
            share = f" · {100 * s['good_requests'] / s['counts']['ok']:.1f}% of ok met all SLOs" if s["counts"]["ok"] else ""
            tiles.append(("goodput", _fmt_rate(s["goodput"]), f"req/s{share}"))
    else:
        def at(key: str) -> tuple[str, str]:
            best = max(sums, key=lambda s: s[key] or 0)
            return _fmt_rate(best[key]), _esc(stage_label(best, sums.index(best)))

        tput, where = at("output_token_throughput")
        tiles += [("stages", str(len(sums)), _esc(_sweep_axis(sums)[0]) + " sweep"),
                  ("peak output throughput", tput, f"tok/s at {where}")]
        rate, where = at("request_throughput")
        tiles.append(("peak request throughput", rate, f"req/s at {where}"))
        if report.slos:
            good, where = at("goodput")
            tiles.append(("peak goodput", good, f"req/s at {where}"))
    return "<div class='tiles'>" + "".join(
        f"<div class='tile'><div class='k'>{_esc(k)}</div><div class='v'>{v}</div><div class='s'>{sub}</div></div>"
        for k, v, sub in tiles
    ) + "</div>"


def _pair(d: dict[str, Any]) -> str:
    return f"{_fmt_ms_html(d['p50'])}<span class='sep'>·</span>{_fmt_ms_html(d['p99'])}"


def _error_totals(summaries: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in summaries:
        for k, v in s["counts"]["errors_by_type"].items():
            out[k] = out.get(k, 0) + v
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _stage_facts(s: dict[str, Any]) -> str:
    c = s["counts"]
    tok = s["metrics"]["output_tokens"]
    return (f"duration {_duration(s['duration_s'])} · {c['ok']:,} ok · {c['error']:,} errors · {c['retried']:,} retried · "
            f"{c['warmup']:,} warm-up excluded · total {_fmt_rate(s['total_token_throughput'])} tok/s · "
            f"output tokens per request: mean {_fmt_tokens(tok['mean'])}, p50 {_fmt_tokens(tok['p50'])}, "
            f"p99 {_fmt_tokens(tok['p99'])}"
            + (" · <b>percentiles from a uniform sample</b>" if s["sampled"] else ""))


def _fmt_tokens(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


def _details_html(report: Report) -> str:
    """One stage: a line of facts. A sweep: full statistics per stage,
    folded away under the comparison table."""
    if len(report.summaries) == 1:
        return f"<p class='note'>{_stage_facts(report.summaries[0])}</p>"
    parts = []
    head = "".join(f"<th>{c}</th>" for c in ("metric (ms)", *STAT_COLUMNS, "count"))
    for i, s in enumerate(report.summaries):
        rows = []
        for key, short, _ in LATENCIES:
            d = s["metrics"][key]
            rows.append(f"<tr><td class='name'>{short}</td>"
                        + "".join(f"<td>{_fmt_ms_html(d[c])}</td>" for c in STAT_COLUMNS)
                        + f"<td>{d['count']:,}</td></tr>")
        parts.append(f"<details><summary>{_esc(stage_label(s, i))}: all statistics</summary>"
                     f"<p class='note'>{_stage_facts(s)}</p><div class='scroll'><table class='stats'>"
                     f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div></details>")
    return "".join(parts)


def write_html(report: Report, path: str | Path) -> int:
    """Write one self-contained HTML page (plotly.js inlined once, no
    network needed) and return its size in bytes."""
    import plotly.io as pio

    sums = report.summaries
    colors = _stage_colors(len(sums))
    figures: list[tuple[str, str, str, Any]] = []
    if len(sums) > 1:
        figures.append(("sweep", "Load sweep", "p50 and p99 latency and throughput per stage. Dashed red lines: SLOs.",
                        _sweep_figure(report)))
    figures += [
        ("ttft", "Time to first token", "Request sent to the first event carrying generated text.",
         _distribution_figure(report, "ttft_s", "TTFT", colors, "ttft")),
        ("e2e", "End-to-end latency", "Request sent to the end of the stream.",
         _distribution_figure(report, "e2e_s", "E2E", colors, "e2e")),
        ("tpot", "Time per output token", "(E2E − TTFT) / (output tokens − 1): AIPerf's and guidellm's “ITL”.",
         _distribution_figure(report, "tpot_s", "TPOT", colors, "tpot")),
        ("itl", "Inter-chunk gaps over time",
         "Every gap between text-carrying chunks (vLLM's ITL), against time since the run started"
         + (f"; a uniform sample of {len(report.timeline.times):,} of {report.timeline.total:,} gaps"
            if report.timeline.sampled else "") + ". Black: rolling median and p90.",
         _itl_figure(report, colors)),
    ]
    chart_html = []
    first = True
    for anchor, title, explain, fig in figures:
        if fig is None:
            continue
        div = pio.to_html(fig, full_html=False, include_plotlyjs=first, config=_PLOTLY_CONFIG,
                          default_width="100%", default_height=f"{fig.layout.height}px")
        first = False
        chart_html.append(f"<section class='card' id='{anchor}'><h2>{_esc(title)}</h2><p class='explain'>{_esc(explain)}</p>{div}</section>")

    models = sorted({m for s in sums for m in s["models"]})
    endpoints = sorted({e for s in sums for e in s["endpoints"]})
    start, end = _run_start(report), _run_end(report)
    title = " · ".join(models) or "streamrun run"
    meta = [
        f"{len(sums)} stage{'s' if len(sums) != 1 else ''}" if len(sums) > 1 else "",
        ", ".join(endpoints),
        f"started {format_time(start)[:19].replace('T', ' ')} UTC" if start is not None else "",
        f"wall time {_duration(end - start)}" if start is not None and end is not None else "",
        "inputs: " + ", ".join(Path(i.path).name for i in report.inputs),
    ]
    chips = "".join(f"<span class='chip'>SLO {_esc(k)} ≤ {v * 1000:g} ms</span>" for k, v in report.slos.items())
    skipped = sum(i.skipped_lines for i in report.inputs)
    if skipped:
        chips += f"<span class='chip bad'>{skipped} unreadable line{'s' if skipped != 1 else ''} skipped</span>"
    if any(s["sampled"] for s in sums):
        chips += "<span class='chip'>percentiles from a uniform sample</span>"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="streamrun {SCHEMA}">
<title>streamrun report · {_esc(title)}</title>
<style>{_CSS}</style></head>
<body>
<header class="hero"><div class="wrap">
<div class="brand">streamrun · latency report</div>
<h1>{_esc(title)}</h1>
<div class="meta">{''.join(f'<span>{_esc(m)}</span>' for m in meta if m)}</div>
</div></header>
<main class="wrap">
{_tiles_html(report)}
<section class="card" id="summary"><h2>Summary</h2>
<p class="explain">Successful, non-warm-up requests. TTFT: first text; TPOT: per output token after the first; ITL: gaps between chunks, pooled over all requests; E2E: whole request.</p>
<div class="chips">{chips}</div>
{_summary_table_html(report)}
{_details_html(report)}
</section>
{''.join(chart_html)}
<footer><p>{_esc(FOOTNOTE)}.</p>
<p>Generated {_esc(report.generated_at)} by <code>streamrun report</code> · percentiles interpolate linearly between ranks (numpy's default, as vLLM) · schema <code>{SCHEMA}</code>.</p></footer>
</main></body></html>
"""
    data = page.encode()
    Path(path).write_bytes(data)
    return len(data)


# --------------------------------------------------------------------------
# CLI


def parse_slo(spec: str) -> tuple[str, float]:
    """``ttft=0.5`` / ``ttft=500ms`` / ``tpot=0.05s`` -> ``("ttft", 0.5)``."""
    name, sep, value = spec.partition("=")
    name, value = name.strip().lower(), value.strip().lower()
    if not sep or name not in SLO_KEYS:
        raise click.BadParameter(f"{spec!r}: expected NAME=SECONDS with NAME one of {', '.join(SLO_KEYS)}")
    scale = 1.0
    if value.endswith("ms"):
        value, scale = value[:-2], 1e-3
    elif value.endswith("s"):
        value = value[:-1]
    try:
        seconds = float(value) * scale
    except ValueError:
        raise click.BadParameter(f"{spec!r}: {value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise click.BadParameter(f"{spec!r}: an SLO must be a positive time")
    return name, seconds


def _console() -> Console:
    from rich.console import Console

    # Piped or captured output gets a fixed comfortable width rather than
    # rich's 80 columns, which would wrap the wider tables.
    return Console() if sys.stdout.isatty() else Console(width=140)


@click.command("report")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--slo", "slo_specs", multiple=True, metavar="NAME=SECONDS",
              help="Goodput SLO, repeatable: ttft, tpot, e2e, itl (max gap of a request); "
                   "seconds, or with an ms suffix (ttft=500ms).")
@click.option("--json", "json_path", is_flag=False, flag_value="-", default=None, metavar="[PATH|-]",
              help="Write the summary as JSON (schema streamrun.report/1, docs/REPORT.md); bare --json or - "
                   "prints it to stdout instead of the tables.")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None, metavar="PATH",
              help="Write a self-contained HTML report with charts (needs plotly).")
def report_command(paths: tuple[str, ...], slo_specs: tuple[str, ...], json_path: str | None,
                   html_path: str | None) -> None:
    """Summarise results.jsonl files: percentiles, throughput, goodput, per stage."""
    slos = dict(parse_slo(s) for s in slo_specs)
    inputs_resolved = {Path(p).resolve() for p in paths}
    for opt, out in (("--json", json_path), ("--html", html_path)):
        if out and out != "-" and (Path(out).resolve() in inputs_resolved or out.endswith(".jsonl")):
            raise click.BadParameter(f"{out!r} looks like a results file; refusing to overwrite it "
                                     f"(write {opt}=PATH with a .json/.html name)", param_hint=opt)
    report = build_report(paths, slos)
    if not report.stages:
        raise click.ClickException("no result records found in " + ", ".join(paths))
    if json_path != "-":
        render_table(report.summaries, _console())
    if json_path:
        write_json(report, json_path)
        if json_path != "-":
            click.echo(f"wrote {json_path}", err=True)
    if html_path:
        try:
            size = write_html(report, html_path)
        except ImportError:
            raise click.ClickException("--html needs plotly: pip install 'streamrun[report]'") from None
        click.echo(f"wrote {html_path} ({size / 1e6:.1f} MB)", err=True)
