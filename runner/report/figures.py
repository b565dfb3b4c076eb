"""The report's charts, as plotly figures.

Histograms and CDFs of TTFT, TPOT and E2E per stage, ITL gaps over time,
and for a sweep the latencies and throughput against the load. Each figure
is computed from the :class:`~runner.report.build.Report` and bounded in
size however big the run (at most 60 bins, 201 CDF points per stage, a
sample of the ITL gaps). plotly is imported inside the functions: the CLI
imports this package, and ``streamrun --help`` must stay fast.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from runner.stats import percentile

from .build import Report
from .knee import load_order
from .labels import pair_keys, stat_columns, sweep_axis

_SLO_COLOR = "#c92a2a"
_P50_COLOR = "#3867d6"
_P99_COLOR = "#e8590c"
_TPUT_COLOR = "#2b8a3e"
_CDF_QS = [i / 2 for i in range(201)]  # 0, 0.5, ..., 100 %
_PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "modeBarButtonsToRemove": ["lasso2d", "select2d"]}


def stage_colors(n: int) -> list[str]:
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
        centers = [math.sqrt(a * b) for a, b in itertools.pairwise(edges)]
    else:
        edges = [lo + (hi - lo) * i / bins for i in range(bins + 1)]
        centers = [(a + b) / 2 for a, b in itertools.pairwise(edges)]
    edges[0], edges[-1] = lo, hi
    out = []
    for i, values in enumerate(sorted_sets):
        n = len(values)
        if not n:
            continue
        below = [values.count_below(e) for e in edges[:-1]] + [values.rank(hi)]
        counts = [b - a for a, b in itertools.pairwise(below)]
        cdf_x = [percentile(values, q) or 0.0 for q in _CDF_QS]
        out.append(
            _Dist(
                label=report.label(i),
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


def distribution_figure(report: Report, metric: str, name: str, colors: list[str], slo_key: str | None) -> Any:
    """Histogram (share of requests) beside the CDF, one trace per stage."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

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
                       offset=[a - c for a, c in zip(d.edges[:-1], d.centers, strict=True)],
                       width=[b - a for a, b in itertools.pairwise(d.edges)],
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


def itl_figure(report: Report, colors: list[str]) -> Any:
    """ITL gaps against time since the run started, a rolling median on top:
    stalls (prefill of new arrivals, preemption) show as spikes and bands."""
    import plotly.graph_objects as go

    tl = report.timeline
    t0 = report.run_start
    if not len(tl.times) or t0 is None:
        return None
    fig = go.Figure()
    labels = [report.label(i) for i in range(len(report.summaries))]
    by_stage: dict[int, tuple[list[float], list[float]]] = {}
    for t, g, st in zip(tl.times, tl.gaps, tl.stages, strict=True):
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
    points = sorted(zip(tl.times, tl.gaps, strict=True))
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


def _slo_hline(fig: Any, slo_ms: float, *, log_y: bool = False, row: int | None = None, col: int | None = None,
               text: str | None = None) -> None:
    """A dashed red line at an SLO, labelled at its right end (by hand, so
    the label also lands right on a log axis)."""
    fig.add_hline(y=slo_ms, line_dash="dash", line_color=_SLO_COLOR, line_width=1.5, row=row, col=col)
    axis = 1 if row is None or col is None else (row - 1) * 3 + col  # sweep grid is 2x3; single plots use axis 1
    suffix = "" if axis == 1 else str(axis)
    fig.add_annotation(
        x=0, y=math.log10(slo_ms) if log_y else slo_ms, xref=f"x{suffix} domain", yref=f"y{suffix}",
        text=text or f"SLO {slo_ms:g} ms", showarrow=False, xanchor="left", yanchor="bottom", xshift=4,
        font={"color": _SLO_COLOR, "size": 11},
    )


def sweep_figure(report: Report) -> Any:
    """Two percentiles (p50 and p99 by default) of the latencies and the
    throughput against the swept load, one panel each, SLOs as dashed lines;
    in a comparison, a line per run (its colour) for each."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    lo, hi = pair_keys(stat_columns(report.summaries))
    groups = []
    for run in (r for r in report.runs if r.count):  # lightest load first (a rate sweep's ends by their req/s)
        sums = report.run_summaries(run)
        groups.append((run, [sums[i] for i in load_order(sums)[1]]))
    many = len(groups) > 1
    run_colors = stage_colors(len(groups)) if many else []
    axes = [sweep_axis(sums) for _, sums in groups]
    title = next((t for (t, _, _), (run, _) in zip(axes, groups, strict=True) if run.count > 1), axes[0][0])
    numeric = all(n for _, _, n in axes)
    every_x = [x for _, xs, _ in axes for x in xs]
    fig = make_subplots(
        rows=2, cols=3, vertical_spacing=0.2, horizontal_spacing=0.08,
        subplot_titles=("TTFT (ms)", "TPOT (ms)", "E2E latency (ms)", "ITL, gap between chunks (ms)",
                        "Output throughput (tok/s)", "Request throughput (req/s)"),
    )
    panels = (("ttft_s", "ttft", 1, 1), ("tpot_s", "tpot", 1, 2), ("e2e_s", "e2e", 1, 3), ("itl_s", None, 2, 1))
    line = {"width": 2.5}
    for k, ((run, summaries), (_, xs, _)) in enumerate(zip(groups, axes, strict=True)):
        prefix = f"{run.label} " if many else ""
        for metric, _, row, col in panels:
            for stat, color, dash in ((lo, _P50_COLOR, "solid"), (hi, _P99_COLOR, "dot")):
                ys = [s["metrics"][metric].get(stat) for s in summaries]
                fig.add_trace(
                    go.Scatter(x=xs, y=_round_opt(None if y is None else y * 1000 for y in ys), name=prefix + stat,
                               legendgroup=prefix + stat, showlegend=(row, col) == (1, 1), mode="lines+markers",
                               line={"color": run_colors[k] if many else color, "width": 2.5, "dash": dash},
                               marker={"size": 7},
                               hovertemplate=f"{title} %{{x}}: {stat} %{{y:.4g}} ms<extra>%{{fullData.name}}</extra>"),
                    row=row, col=col,
                )
        tput = run_colors[k] if many else _TPUT_COLOR
        fig.add_trace(
            go.Scatter(x=xs, y=_round_opt(s["output_token_throughput"] for s in summaries),
                       name=prefix + "output tok/s", showlegend=False, mode="lines+markers",
                       line={**line, "color": tput}, marker={"size": 7},
                       hovertemplate=f"{title} %{{x}}: %{{y:.4g}} output tok/s<extra></extra>"),
            row=2, col=2,
        )
        fig.add_trace(
            go.Scatter(x=xs, y=_round_opt(s["request_throughput"] for s in summaries), name=prefix + "completed req/s",
                       showlegend=not many, mode="lines+markers", line={**line, "color": tput}, marker={"size": 7},
                       hovertemplate=f"{title} %{{x}}: %{{y:.4g}} req/s<extra></extra>"),
            row=2, col=3,
        )
        if report.slos:
            fig.add_trace(
                go.Scatter(x=xs, y=_round_opt(s["goodput"] for s in summaries),
                           name=prefix + "goodput req/s (met every SLO)", mode="lines+markers",
                           line={**line, "color": run_colors[k] if many else _SLO_COLOR, "dash": "dash"},
                           marker={"size": 7},
                           hovertemplate=f"{title} %{{x}}: goodput %{{y:.4g}} req/s<extra></extra>"),
                row=2, col=3,
            )
    for _, slo_key, row, col in panels:
        slo = report.slos.get(slo_key) if slo_key else None
        if slo:
            _slo_hline(fig, slo * 1000, row=row, col=col)
    xs = sorted(set(every_x)) if numeric else every_x
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


def embed(fig: Any, *, include_plotlyjs: bool) -> str:
    """``fig`` as an HTML ``<div>`` and its script, plotly.js inlined when
    ``include_plotlyjs`` (once per page: the page loads nothing)."""
    import plotly.io as pio

    return pio.to_html(fig, full_html=False, include_plotlyjs=include_plotlyjs, config=_PLOTLY_CONFIG,
                       default_width="100%", default_height=f"{fig.layout.height}px")
