"""``streamrun report``: result files in; terminal tables, JSON and an HTML
page out.

The package follows the data, one module a step::

    read      result files → result records (streamrun or OpenAI Batch lines)
    runs      which files make one run, and its label (summary sidecar, else file name)
    build     records → Report: per-stage statistics, ITL timeline (one pass; a run after another)
    labels    the names every output shares (metrics, stages, sweep axis, percentile columns)
    compare   runs against the first run: the differences every output shows
    knee      a sweep's load order and its knee (latency against throughput), for every output
    grids     a table as rows of strings, drawn by rich or written as Markdown
    terminal  Report → tables of a run      (rich, imported when drawing)
    compare_tables  Report → tables of runs side by side, a column per run
    document  Report → JSON, schema streamrun.report/1
    csvout    Report → CSV, a row per run, stage and metric
    figures   Report → plotly figures       (plotly, imported when drawing)
    figures_windows / figures_turns / figures_knee   the per-window curves, TTFT by turn, latency vs req/s
    html      Report → one page, template.html.j2 (jinja2, autoescaped); html_compare its comparison parts
    command   the click command wiring them

This module re-exports what the rest of streamrun and its users import.
Importing it loads neither rich, plotly nor jinja2: the CLI imports it, and
``streamrun --help`` must stay fast.
"""

from __future__ import annotations

from .build import TIMELINE_POINTS, Report, RunPart, Timeline, build_report
from .csvout import csv_rows, write_csv
from .document import SCHEMA, report_document, write_json
from .html import render_html, write_html
from .labels import FOOTNOTE, LATENCIES, STAT_COLUMNS, SWEEP_LATENCIES, stage_label
from .read import InputFile, load_records
from .tables import render_report
from .terminal import render_table

__all__ = [
    "FOOTNOTE",
    "LATENCIES",
    "SCHEMA",
    "STAT_COLUMNS",
    "SWEEP_LATENCIES",
    "TIMELINE_POINTS",
    "InputFile",
    "Report",
    "RunPart",
    "Timeline",
    "build_report",
    "csv_rows",
    "load_records",
    "render_html",
    "render_report",
    "render_table",
    "report_document",
    "stage_label",
    "write_csv",
    "write_html",
    "write_json",
]
