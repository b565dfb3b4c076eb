"""The report as a JSON document, schema ``streamrun.report/1``.

The schema is a contract with scripts and dashboards (docs/REPORT.md): it is
assembled here only, from the :class:`~runner.report.build.Report`, so no
other output can change it by accident.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
import orjson

from .build import Report

SCHEMA = "streamrun.report/1"


def report_document(report: Report) -> dict[str, Any]:
    """The JSON document (schema ``streamrun.report/1``, docs/REPORT.md)."""
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
