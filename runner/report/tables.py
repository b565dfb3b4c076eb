"""The report's tables, whichever they are: one run's (:mod:`.terminal`), or runs side by side
(:mod:`.compare_tables`); drawn on the terminal or written as Markdown by the CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .compare_tables import comparison_grids
from .grids import Grid
from .terminal import draw, summary_grids

if TYPE_CHECKING:
    from rich.console import Console

    from .build import Report


def report_grids(report: Report) -> tuple[list[Grid], list[str]]:
    """The tables of a report: a run's, or runs side by side (:mod:`.compare_tables`)."""
    if report.compare:
        return comparison_grids(report)
    return summary_grids(report.summaries)


def render_report(report: Report, console: Console | None = None) -> None:
    """Print a report: :func:`render_table` of its run, or its runs side by side."""
    draw(*report_grids(report), console)
