"""TTFT by turn number of multi-turn sessions: a figure and its table.

Later turns resend the whole conversation: a prefix cache should keep
their TTFT flat, without one it climbs with the history. One line per stage
(per run, overlaid, in a comparison), two percentiles each, from the
summaries' ``ttft_by_turn``. plotly is imported inside the function.
"""

from __future__ import annotations

from typing import Any

from .build import Report
from .figures import _layout
from .labels import pair_keys, stat_columns
from .terminal import turn_label


def turn_figure(report: Report, colors: list[str]) -> Any:
    """TTFT (ms) against turn number; None when no record had turns."""
    import plotly.graph_objects as go

    parts = [i for i, s in enumerate(report.summaries) if s.get("ttft_by_turn")]
    if not parts:
        return None
    lo, hi = pair_keys(stat_columns(report.summaries))
    fig = go.Figure()
    for i in parts:
        entries = report.summaries[i]["ttft_by_turn"]
        xs = [turn_label(e) for e in entries]
        name = report.label(i)
        for stat, dash in ((lo, "solid"), (hi, "dot")):
            ys = [None if e.get(stat) is None else float(f"{e[stat] * 1000:.5g}") for e in entries]
            fig.add_trace(go.Scatter(x=xs, y=ys, name=f"{name} {stat}" if len(parts) > 1 else stat,
                                     mode="lines+markers", line={"color": colors[i], "width": 2.5, "dash": dash},
                                     marker={"size": 7},
                                     hovertemplate=f"turn %{{x}}: {stat} %{{y:.4g}} ms"
                                                   "<extra>%{fullData.name}</extra>"))
    _layout(fig, 420)
    fig.update_xaxes(title_text="turn", type="category")
    fig.update_yaxes(title_text="TTFT (ms)", rangemode="tozero")
    return fig
