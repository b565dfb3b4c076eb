"""``streamrun report``: result files in; terminal tables, JSON and an HTML
page out.

The package follows the data, one module a step::

    read      result files → result records (streamrun or OpenAI Batch lines)
    build     records → Report: per-stage statistics, ITL timeline (one pass)
    labels    the names every output shares (metrics, stages, sweep axis)
    terminal  Report → rich tables          (rich, imported when drawing)
    document  Report → JSON, schema streamrun.report/1
    figures   Report → plotly figures       (plotly, imported when drawing)
    html      Report → one page, template.html.j2 (jinja2, autoescaped)
    command   the click command wiring them

This module re-exports what the rest of streamrun and its users import.
Importing it loads neither rich, plotly nor jinja2: the CLI imports it, and
``streamrun --help`` must stay fast.
"""

from __future__ import annotations

from .build import TIMELINE_POINTS, Report, Timeline, build_report
from .command import parse_slo, report_command
from .document import SCHEMA, report_document, write_json
from .html import render_html, write_html
from .labels import FOOTNOTE, LATENCIES, STAT_COLUMNS, SWEEP_LATENCIES, stage_label
from .read import InputFile, load_records
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
    "Timeline",
    "build_report",
    "load_records",
    "parse_slo",
    "render_html",
    "render_table",
    "report_command",
    "report_document",
    "stage_label",
    "write_html",
    "write_json",
]
