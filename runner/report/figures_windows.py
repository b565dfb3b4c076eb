"""The per-window curves (``--window``): does the run drift?

Throughput, errors and two percentiles of TTFT, ITL and E2E per window
against time since the run started, one line per stage (per run, overlaid,
in a comparison: each run's clock starts at its own first request). Drawn
from the summaries' ``windows``, so the page holds a few numbers per window
however long the run. plotly is imported inside the function.
"""

from __future__ import annotations

from typing import Any

from .build import Report
from .figures import _layout
from .labels import pair_keys, stat_columns


def _round(v: float | None) -> float | None:
    return None if v is None else float(f"{v:.5g}")


def _origin(report: Report, position: int) -> float | None:
    """When the run of stage ``position`` started (POSIX seconds)."""
    run = report.run_of(position)
    starts = [a.first_start for a in report.stages[run.first : run.first + run.count] if a.first_start is not None]
    return min(starts) if starts else None


def window_figure(report: Report, colors: list[str]) -> Any:
    """A 2×3 grid of panels, x = seconds since the run started; None without windows."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    parts = [i for i, s in enumerate(report.summaries) if s.get("windows")]
    if not parts:
        return None
    lo, hi = pair_keys(stat_columns(report.summaries))
    fig = make_subplots(rows=2, cols=3, vertical_spacing=0.2, horizontal_spacing=0.08, subplot_titles=(
        "Completed requests/s", "Output tokens/s", "Errors per window",
        f"TTFT {lo} · {hi} (ms)", f"ITL {lo} · {hi} (ms)", f"E2E {lo} · {hi} (ms)"))
    for i in parts:
        s, acc = report.summaries[i], report.stages[i]
        origin = _origin(report, i)
        if origin is None or acc.first_start is None:
            continue
        shift = acc.first_start - origin
        windows = s["windows"]
        xs = [_round(shift + (w["start_s"] + w["end_s"]) / 2) for w in windows]
        name, color = report.label(i), colors[i]
        line = {"color": color, "width": 2}

        def add(ys: list[float | None], row: int, col: int, dash: str = "solid", legend: bool = False,
                what: str = "", xs: list[float | None] = xs, name: str = name, line: dict = line) -> None:
            fig.add_trace(go.Scatter(x=xs, y=[_round(y) for y in ys], name=name, legendgroup=name,
                                     showlegend=legend, mode="lines+markers", marker={"size": 4},
                                     line={**line, "dash": dash},
                                     hovertemplate=f"t=%{{x:.1f}} s: {what}%{{y:.4g}}"
                                                   "<extra>%{fullData.name}</extra>"),
                          row=row, col=col)

        add([w["request_throughput"] for w in windows], 1, 1, legend=True, what="req/s ")
        add([w["output_token_throughput"] for w in windows], 1, 2, what="tok/s ")
        add([w["error"] for w in windows], 1, 3, what="errors ")
        for col, key in ((1, "ttft_s"), (2, "itl_s"), (3, "e2e_s")):
            for stat, dash in ((lo, "solid"), (hi, "dot")):
                add([None if w[key].get(stat) is None else w[key][stat] * 1000 for w in windows], 2, col, dash,
                    what=f"{stat} ")
    _layout(fig, 700)
    fig.update_xaxes(title_text="time since run start (s)", row=2)
    fig.update_yaxes(rangemode="tozero")
    return fig
