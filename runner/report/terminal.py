"""The report on the terminal: rich tables of counts, throughput and latency.

Also what ``streamrun run`` prints when a run ends. rich is imported inside
:func:`render_table`: the CLI imports this package, and ``streamrun --help``
must stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .labels import FOOTNOTE, STAT_COLUMNS, SWEEP_LATENCIES, shown_latencies, stage_label

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.2f}"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _slo_text(slos: dict[str, float]) -> str:
    """``ttft<=500ms, tpot<=50ms``."""
    return ", ".join(f"{k}<={v * 1000:g}ms" for k, v in slos.items())


def _throughput_table(summaries: list[dict[str, Any]], slos: dict[str, float]) -> Table:
    """A row per stage: counts, duration, rates, goodput when SLOs are set."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="Requests and throughput", title_justify="left", header_style="bold")
    table.add_column("stage", no_wrap=True)
    for name in ("ok", "errors", "retried", "new conns", "duration s", "req/s", "output tok/s", "total tok/s"):
        table.add_column(name, justify="right", no_wrap=True)
    if slos:
        table.add_column("goodput req/s", justify="right", no_wrap=True)
    for i, s in enumerate(summaries):
        c = s["counts"]
        row = [
            escape(stage_label(s, i)),
            str(c["ok"]),
            str(c["error"]),
            str(c["retried"]),
            str(c.get("connections_opened", 0)),
            _num(s["duration_s"]),
            _num(s["request_throughput"]),
            _num(s["output_token_throughput"]),
            _num(s["total_token_throughput"]),
        ]
        if slos:
            row.append(f"{_num(s['goodput'])} ({s['good_requests']}/{c['ok']})")
        table.add_row(*row)
    return table


def _latency_table(title: str, first: str) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    table.add_column(first, no_wrap=True)
    table.add_column("count", justify="right", no_wrap=True)
    for stat in STAT_COLUMNS:
        table.add_column(stat, justify="right", no_wrap=True)
    return table


def _cells(d: dict[str, Any]) -> list[str]:
    return [str(d["count"]), *(_ms(d[stat]) for stat in STAT_COLUMNS)]


def _latency_tables(summaries: list[dict[str, Any]]) -> list[Table]:
    """A row per metric for a single stage; for a sweep, a table per metric
    with a row per stage."""
    from rich.markup import escape

    if len(summaries) == 1:
        table = _latency_table("Latency (ms)", "metric")
        for key, short, _ in shown_latencies(summaries):
            table.add_row(short, *_cells(summaries[0]["metrics"][key]))
        return [table]
    tables = []
    for key, short, long in shown_latencies(summaries, SWEEP_LATENCIES):
        table = _latency_table(f"{short} (ms): {long}", "stage")
        for i, s in enumerate(summaries):
            table.add_row(escape(stage_label(s, i)), *_cells(s["metrics"][key]))
        tables.append(table)
    return tables


def _notes(summaries: list[dict[str, Any]]) -> list[str]:
    """Per stage: errors by type, warm-ups left out, sampled percentiles."""
    lines = []
    for i, s in enumerate(summaries):
        warm = s["counts"]["warmup"]
        errors = s["counts"]["errors_by_type"]
        notes = []
        if errors:
            notes.append("errors: " + ", ".join(f"{k} {v}" for k, v in errors.items()))
        if warm:
            notes.append(f"{warm} warm-up requests excluded")
        if s["sampled"]:
            notes.append("percentiles from a uniform sample (run larger than max_exact)")
        if notes:
            prefix = f"{stage_label(s, i)}: " if len(summaries) > 1 else ""
            lines.append(f"{prefix}{'; '.join(notes)}")
    return lines


def print_whole(console: Console, table: Table) -> None:
    """Print a table at its natural width, never squeezed to the console's.

    rich fits a table to the terminal by cutting cells to "4.…"; a number
    cut is worse than a line that wraps, so a table wider than the console
    is printed at its own width (piped output, logs and narrow terminals
    alike keep every digit).
    """
    from rich.console import Console
    from rich.measure import Measurement

    needed = Measurement.get(console, console.options.update(width=10_000), table).maximum
    if needed <= console.width:
        console.print(table)
        return
    wide = Console(file=console.file, width=needed, force_terminal=console.is_terminal,
                   color_system=console.color_system, highlight=False)
    wide.print(table)


def render_table(summaries: list[dict[str, Any]], console: Console | None = None) -> None:
    """Print the summaries as rich tables: throughput and counts (a row per
    stage), then latencies in ms: a row per metric for a single stage, or a
    table per metric with a row per stage for a sweep."""
    from rich.console import Console
    from rich.markup import escape

    console = console or Console()
    slos = next((s["slos"] for s in summaries if s.get("slos")), {})
    print_whole(console, _throughput_table(summaries, slos))
    for table in _latency_tables(summaries):
        print_whole(console, table)
    for line in _notes(summaries):
        console.print(escape(line), highlight=False)
    if slos:
        console.print(f"goodput SLOs: {_slo_text(slos)} (itl = max gap of a request)", highlight=False)
    console.print(FOOTNOTE, style="dim", highlight=False)
