"""``--csv``: the per-stage metric table as CSV, for a spreadsheet.

One row per run × stage × metric, the statistics as columns (count, mean,
the percentiles, min, max), then the stage's own numbers repeated on each of
its rows (ok, errors, duration, throughputs, goodput): a filter on
``metric`` gives a complete table, and a pivot on ``run`` or ``stage`` needs
nothing else. Values are the summary's own, in its units (seconds, tokens,
per second), written in full precision, so the CSV and ``--json`` agree to
the last digit.
"""

from __future__ import annotations

import csv
import io
import sys
from pathlib import Path
from typing import Any

from .build import Report
from .labels import stage_label, stat_columns

STAGE_COLUMNS: tuple[str, ...] = ("ok", "error", "duration_s", "request_throughput", "output_token_throughput",
                                  "total_token_throughput", "goodput")
UNITS = {"output_tokens": "tokens", "reasoning_tokens": "tokens"}


def _cell(value: Any) -> Any:
    return "" if value is None else value


def csv_rows(report: Report) -> list[list[Any]]:
    """The header, then a row per run, stage and metric."""
    stats = stat_columns(report.summaries)
    header = ["run", "stage", "concurrency", "rate", "metric", "unit", "count", *stats, *STAGE_COLUMNS]
    rows: list[list[Any]] = [header]
    for i, s in enumerate(report.summaries):
        run = report.run_of(i)
        stage = s["stage"] if isinstance(s.get("stage"), dict) else {}
        label = stage_label(s, i - run.first)
        context = [s["counts"]["ok"], s["counts"]["error"], *(s.get(k) for k in STAGE_COLUMNS[2:])]
        for metric, d in s["metrics"].items():
            rows.append([run.label, label, stage.get("concurrency"), stage.get("rate"),
                         metric, UNITS.get(metric, "s"), d["count"], *(d.get(k) for k in stats), *context])
    return [[_cell(v) for v in row] for row in rows]


def write_csv(report: Report, path: str | Path) -> None:
    """Write :func:`csv_rows` to ``path`` (``"-"`` = stdout)."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(csv_rows(report))
    if str(path) == "-":
        sys.stdout.write(buf.getvalue())
        sys.stdout.flush()
    else:
        Path(path).write_text(buf.getvalue(), encoding="utf-8")
