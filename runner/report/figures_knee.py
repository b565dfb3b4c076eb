"""Latency against achieved throughput, the knee marked: the chart a sweep is run for.

Each stage is a point: the request rate it achieved (x) against its p50
(solid) and p99 (dotted) TTFT, E2E, TPOT and ITL, joined from the lightest
load to the heaviest (:func:`~runner.report.knee.load_order`). Past
saturation more load buys no throughput, only latency: the line turns
upward, and the knee (:func:`~runner.report.knee.find_knee`) is the last
stage before it, starred, with the budget it was held to drawn as a dashed
line on the E2E panel. Achieved throughput, not the configured load, is the
x: a ``--rate sweep``'s ``throughput`` stage has an infinite rate, and a
concurrency says nothing of the req/s it gave. plotly is imported inside
the function.
"""

from __future__ import annotations

from typing import Any

from .build import Report
from .figures import _P50_COLOR, _P99_COLOR, _layout, _round_opt, stage_colors
from .knee import find_knee, load_order
from .labels import is_number, pair_keys, stage_label, stat_columns

_KNEE_COLOR = "#111827"
# (metric, panel title, row, col); E2E beside TTFT, where the knee's budget is drawn.
PANELS = (("ttft_s", "TTFT (ms)", 1, 1), ("e2e_s", "E2E latency (ms)", 1, 2),
          ("tpot_s", "TPOT (ms): per output token, others' “ITL”", 2, 1),
          ("itl_s", "ITL, gap between chunks (ms)", 2, 2))


def _ms(summary: dict[str, Any], metric: str, stat: str) -> float | None:
    value = ((summary.get("metrics") or {}).get(metric) or {}).get(stat)
    return value * 1000 if is_number(value) else None


def knee_figure(report: Report) -> Any:
    """The four latency panels against req/s, a line per run; None when no run has two stages with a
    throughput."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    lo, hi = pair_keys(stat_columns(report.summaries))
    groups = []
    for run in report.runs:
        sums = report.run_summaries(run)
        order = [i for i in load_order(sums)[1] if is_number(sums[i].get("request_throughput"))]
        if len(order) >= 2:
            groups.append((run, sums, order))
    if not groups:
        return None
    many = len(groups) > 1
    run_colors = stage_colors(len(groups)) if many else []
    fig = make_subplots(rows=2, cols=2, vertical_spacing=0.16, horizontal_spacing=0.08,
                        subplot_titles=[title for _, title, _, _ in PANELS])
    for k, (run, sums, order) in enumerate(groups):
        prefix = f"{run.label} " if many else ""
        xs = _round_opt(sums[i]["request_throughput"] for i in order)
        names = [stage_label(sums[i], i) for i in order]
        for metric, _, row, col in PANELS:
            for stat, color, dash in ((lo, _P50_COLOR, "solid"), (hi, _P99_COLOR, "dot")):
                fig.add_trace(
                    go.Scatter(x=xs, y=_round_opt(_ms(sums[i], metric, stat) for i in order), customdata=names,
                               name=prefix + stat, legendgroup=prefix + stat, showlegend=(row, col) == (1, 1),
                               mode="lines+markers", marker={"size": 7},
                               line={"color": run_colors[k] if many else color, "width": 2.5, "dash": dash},
                               hovertemplate=f"%{{customdata}}: %{{x:.4g}} req/s, {stat} %{{y:.4g}} ms"
                                             "<extra>%{fullData.name}</extra>"),
                    row=row, col=col,
                )
        _mark_knee(fig, go, sums, prefix, run_colors[k] if many else _KNEE_COLOR, first=k == 0)
    _layout(fig, 720)
    fig.update_xaxes(title_text="achieved request throughput (req/s)", rangemode="tozero")
    fig.update_yaxes(rangemode="tozero")
    return fig


def _mark_knee(fig: Any, go: Any, sums: list[dict[str, Any]], prefix: str, color: str, *, first: bool) -> None:
    """A star at the knee on each panel (on the line of the percentile the rule reads), a dotted line at
    its throughput, its name on the E2E panel, and there the budget as a dashed line."""
    knee, _ = find_knee(sums)
    if knee is None:
        return
    s = sums[knee.position]
    x = float(f"{knee.throughput_rps:.5g}")
    for metric, _, row, col in PANELS:
        y = _ms(s, metric, knee.stat)
        if y is None:
            continue
        fig.add_trace(
            go.Scatter(x=[x], y=[float(f"{y:.5g}")], mode="markers", name=f"{prefix}knee",
                       legendgroup=f"{prefix}knee", showlegend=(row, col) == (1, 1),
                       marker={"symbol": "star", "size": 17, "color": color, "line": {"width": 1, "color": "#fff"}},
                       hovertemplate=f"knee: {knee.label}, %{{x:.4g}} req/s, {knee.stat} %{{y:.4g}} ms<extra></extra>"),
            row=row, col=col,
        )
        fig.add_vline(x=x, line_dash="dot", line_color=color, line_width=1, opacity=0.6, row=row, col=col)
    e2e = _ms(s, "e2e_s", knee.stat)
    if e2e is not None:
        fig.add_annotation(x=x, y=e2e, row=1, col=2, showarrow=True,
                           text=f"{prefix}knee: {knee.label}<br>{knee.throughput_rps:.3g} req/s", arrowhead=2,
                           ax=-48, ay=-36, font={"size": 11, "color": color}, bgcolor="rgba(255,255,255,0.85)")
    budget = knee.factor * knee.baseline_s * 1000
    fig.add_hline(y=budget, line_dash="dash", line_color=color, line_width=1, opacity=0.7, row=1, col=2)
    if first:
        fig.add_annotation(x=0, y=budget, xref="x2 domain", yref="y2", xanchor="left", yanchor="bottom",
                           showarrow=False, text=f"{knee.factor:g}× the lowest load's {knee.stat}",
                           font={"size": 11, "color": "#616e7c"})
