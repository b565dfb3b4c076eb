"""The report as a JSON document, schema ``streamrun.report/1``.

The schema is a contract with scripts and dashboards (docs/REPORT.md): it is
assembled here only, from the :class:`~runner.report.build.Report`, so no
other output can change it by accident. A comparison of runs has ``runs``
(each with its stages and its differences from the first run) where a
single run has ``stages``. A sweep's load order and knee (:mod:`.knee`) are
under ``sweep``; the server's gauges, when a side file was read, under
``server_metrics``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from .build import Report
from .compare import comparison
from .knee import sweep_section
from .server import server_document
from .timing import client_bound

SCHEMA = "streamrun.report/1"


def report_document(report: Report) -> dict[str, Any]:
    """The JSON document (schema ``streamrun.report/1``, docs/REPORT.md)."""
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "generated_at": report.generated_at,
        "inputs": [i.as_dict() for i in report.inputs],
        "slos": dict(report.slos),
    }
    # A sweep's "sweep" (load order, knee) only where a run has several stages: one stage reads as before.
    if not report.compare:
        doc["stages"] = report.summaries
        if len(report.summaries) > 1:
            doc["sweep"] = sweep_section(report.summaries)
    else:
        doc["runs"] = []
        for run, diff in zip(report.runs, comparison(report), strict=True):
            entry: dict[str, Any] = {"label": run.label, "inputs": list(run.paths), "stages": report.run_summaries(run)}
            if run.count > 1:
                entry["sweep"] = sweep_section(report.run_summaries(run))
            doc["runs"].append({**entry, "vs_first": diff})
    bound = client_bound(report.summaries)
    if bound is not None:  # only when a run summary gave the client's timing (stages[].client_timing)
        doc["client_bound"] = bound
    if report.server is not None:  # only when a side file was read: scripts test for the key
        doc["server_metrics"] = server_document(report.server, report)
    return doc


def write_json(report: Report, path: str | Path) -> None:
    """Write :func:`report_document` to ``path`` (``"-"`` = stdout)."""
    data = orjson.dumps(report_document(report), option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE)
    if str(path) == "-":
        sys.stdout.write(data.decode())
        sys.stdout.flush()
    else:
        Path(path).write_bytes(data)
