"""What the page shows of a comparison of runs beyond a single run's page.

The tables a column per run (the terminal's, :mod:`.compare_tables`) as
plain rows for the template, and the tiles: per run its output throughput
and TTFT, each against the first run. Plain values only; the template
escapes them.
"""

from __future__ import annotations

from typing import Any

from .build import Report
from .compare import difference
from .compare_tables import latency_grids, stage_rows, throughput_grid


def compare_tables(report: Report) -> list[dict[str, Any]]:
    """``{"title", "heads", "rows": [{"name", "cells"}]}`` per table (throughput, then each latency; the
    per-turn and per-window numbers are charts on the page), the naming columns joined in one."""
    rows = stage_rows(report)
    grids = [throughput_grid(report, rows), *latency_grids(report, rows)]
    out = []
    for g in grids:
        heads = [" · ".join(h for h in g.headers[: g.left] if h) or "", *g.headers[g.left :]]
        body = [{"name": " · ".join(c for c in row[: g.left] if c), "cells": row[g.left :]} for row in g.rows]
        out.append({"title": g.title, "heads": heads, "rows": body})
    return out


def _pct(value: float | None, base: float | None) -> str:
    d = difference(value, base)
    return "" if d is None or d["pct"] is None else f" ({d['pct']:+.1f}%)"


def compare_tiles(report: Report, hi: str) -> list[tuple[str, str, str]]:
    """``(key, value, sub)`` per run: output tok/s (total over its stages' peak), TTFT of its first stage."""
    out = []
    base_tput = base_ttft = None
    for k, run in enumerate(report.runs):
        sums = report.run_summaries(run)
        tput = max((s["output_token_throughput"] or 0 for s in sums), default=0) if sums else None
        ttft = sums[0]["metrics"]["ttft_s"].get(hi) if sums else None
        if k == 0:
            base_tput, base_ttft = tput, ttft
        value = "–" if tput is None else (f"{tput:,.0f}" if tput >= 100 else f"{tput:.2f}")
        sub = "output tok/s" + ("" if k == 0 else _pct(tput, base_tput))
        if ttft is not None:
            sub += f" · TTFT {hi} {ttft * 1000:.1f} ms" + ("" if k == 0 else _pct(ttft, base_ttft))
        out.append((run.label, value, sub))
    return out
