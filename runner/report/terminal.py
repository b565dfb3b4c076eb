"""The report on the terminal: tables of counts, throughput and latency.

Also what ``streamrun run`` prints when a sweep ends. The tables are built
as :class:`~runner.report.grids.Grid` rows (the same ones ``--markdown``
writes) and drawn with rich, imported inside the drawing functions: the CLI
imports this package, and ``streamrun --help`` must stay fast.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .degraded import note as degraded_note
from .degraded import shown as degraded_shown
from .grids import Grid
from .knee import knee_line
from .labels import FOOTNOTE, SWEEP_LATENCIES, pair_keys, percentile_columns, shown_latencies, stage_label, stat_columns
from .timing import KEY as CLIENT_TIMING
from .timing import cell as client_cell
from .timing import note as client_note

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table


#: Rows of the per-window table on a terminal; longer runs show evenly spaced windows (all are in --json / --csv).
WINDOW_ROWS = 60


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.2f}"


def _num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _slo_text(slos: dict[str, float]) -> str:
    """``ttft<=500ms, tpot<=50ms``."""
    return ", ".join(f"{k}<={v * 1000:g}ms" for k, v in slos.items())


def _reasoning(summaries: list[dict[str, Any]]) -> bool:
    return any((s.get("tokens") or {}).get("reasoning") for s in summaries)


def throughput_grid(summaries: list[dict[str, Any]], slos: dict[str, float]) -> Grid:
    """A row per stage: counts, duration, rates, goodput when SLOs are set;
    output and reasoning token totals when the model reasoned."""
    reasoning = _reasoning(summaries)
    headers = ["stage", "ok", "errors", "retried", "new conns", "duration s", "req/s", "output tok/s",
               "total tok/s"]
    if reasoning:
        headers += ["output tok", "reasoning tok"]
    if slos:
        headers.append("goodput req/s")
    timed = any(s.get(CLIENT_TIMING) for s in summaries)  # the run summary said how far the client kept up
    if timed:
        headers.append("client")
    grid = Grid("Requests and throughput", headers)
    for i, s in enumerate(summaries):
        c = s["counts"]
        row = [
            degraded_shown(stage_label(s, i), s),
            str(c["ok"]),
            str(c["error"]),
            str(c["retried"]),
            str(c.get("connections_opened", 0)),
            _num(s["duration_s"]),
            _num(s["request_throughput"]),
            _num(s["output_token_throughput"]),
            _num(s["total_token_throughput"]),
        ]
        if reasoning:
            row += [str(s["tokens"].get("output", 0)), str(s["tokens"].get("reasoning", 0))]
        if slos:
            row.append(f"{_num(s['goodput'])} ({s['good_requests']}/{c['ok']})")
        if timed:
            row.append(client_cell(s))
        grid.rows.append(row)
    return grid


def _cells(d: dict[str, Any], columns: tuple[str, ...]) -> list[str]:
    return [str(d["count"]), *(_ms(d.get(stat)) for stat in columns)]


def latency_grids(summaries: list[dict[str, Any]]) -> list[Grid]:
    """A row per metric for a single stage; for a sweep, a table per metric
    with a row per stage."""
    columns = stat_columns(summaries)
    if len(summaries) == 1:
        grid = Grid("Latency (ms)", ["metric", "count", *columns])
        for key, short, _ in shown_latencies(summaries):
            grid.rows.append([short, *_cells(summaries[0]["metrics"][key], columns)])
        return [grid]
    grids = []
    for key, short, long in shown_latencies(summaries, SWEEP_LATENCIES):
        grid = Grid(f"{short} (ms): {long}", ["stage", "count", *columns])
        for i, s in enumerate(summaries):
            grid.rows.append([stage_label(s, i), *_cells(s["metrics"][key], columns)])
        grids.append(grid)
    return grids


def _every(n: int, limit: int) -> list[int]:
    """At most ``limit`` evenly spaced indexes of ``n``, the first and the last included."""
    if n <= limit:
        return list(range(n))
    return sorted({round(i * (n - 1) / (limit - 1)) for i in range(limit)})


def _names(summaries: list[dict[str, Any]], names: list[str] | None) -> list[str]:
    return names if names is not None else [stage_label(s, i) for i, s in enumerate(summaries)]


def window_grid(summaries: list[dict[str, Any]], names: list[str] | None = None, first: str = "stage"
                ) -> tuple[Grid | None, list[str]]:
    """The per-window table (``--window``): throughput and two percentiles of
    TTFT, ITL and E2E per window, so drift over a long run shows. ``names``
    label the summaries' rows (default: their stage labels)."""
    staged = [(i, s) for i, s in enumerate(summaries) if s.get("windows")]
    if not staged:
        return None, []
    names = _names(summaries, names)
    lo, hi = pair_keys(stat_columns(summaries))
    many = len(summaries) > 1
    width = staged[0][1].get("window_s")
    headers = ([first] if many else []) + ["window s", "ok", "errors", "req/s", "output tok/s"]
    for short in ("TTFT", "ITL", "E2E"):
        headers += [f"{short} {lo}", f"{short} {hi}"]
    grid = Grid(f"Per window of {width:g} s, by completion time (latencies in ms)", headers)
    notes = []
    for i, s in staged:
        windows = s["windows"]
        shown = _every(len(windows), WINDOW_ROWS)
        if len(shown) < len(windows):
            prefix = f"{names[i]}: " if many else ""
            notes.append(f"{prefix}{len(shown)} of {len(windows)} windows shown, evenly spaced "
                         "(all of them: --json, --csv)")
        for k in shown:
            w = windows[k]
            row = ([names[i]] if many else []) + [
                f"{w['start_s']:.1f}-{w['end_s']:.1f}", str(w["ok"]), str(w["error"]),
                _num(w["request_throughput"]), _num(w["output_token_throughput"])]
            for key in ("ttft_s", "itl_s", "e2e_s"):
                row += [_ms(w[key].get(lo)), _ms(w[key].get(hi))]
            grid.rows.append(row)
    return grid, notes


def turn_label(entry: dict[str, Any]) -> str:
    """Turns are numbered from 1 on screen (records index them from 0)."""
    return f"{entry['index'] + 1}+" if entry.get("and_later") else str(entry["index"] + 1)


def turn_grid(summaries: list[dict[str, Any]], names: list[str] | None = None, first: str = "stage") -> Grid | None:
    """TTFT percentiles by turn number, when the records hold sessions."""
    staged = [(i, s) for i, s in enumerate(summaries) if s.get("ttft_by_turn")]
    if not staged:
        return None
    names = _names(summaries, names)
    columns = stat_columns(summaries)
    many = len(summaries) > 1
    grid = Grid("TTFT by turn (ms): each turn of a session is one request",
                ([first] if many else []) + ["turn", "count", *columns])
    for i, s in staged:
        for entry in s["ttft_by_turn"]:
            grid.rows.append(([names[i]] if many else []) + [turn_label(entry), *_cells(entry, columns)])
    return grid


def notes(summaries: list[dict[str, Any]], names: list[str] | None = None) -> list[str]:
    """Per stage: errors by type, warm-ups left out, sampled percentiles, sessions, a client-bound or degraded
    stage."""
    names = _names(summaries, names)
    lines = []
    for i, s in enumerate(summaries):
        warm = s["counts"]["warmup"]
        errors = s["counts"]["errors_by_type"]
        turns = s["counts"].get("turns", 0)
        found = []
        if errors:
            found.append("errors: " + ", ".join(f"{k} {v}" for k, v in errors.items()))
        if warm:
            found.append(f"{warm} warm-up requests excluded")
        if turns:
            found.append(f"{turns} turns of sessions counted as requests in the latencies")
        if s["sampled"]:
            found.append("percentiles from a uniform sample (run larger than max_exact)")
        bound = client_note(s)
        if bound:
            found.append(bound)
        degraded = degraded_note(s)
        if degraded:
            found.append(degraded)
        if found:
            prefix = f"{names[i]}: " if len(summaries) > 1 else ""
            lines.append(f"{prefix}{'; '.join(found)}")
    return lines


def summary_grids(summaries: list[dict[str, Any]]) -> tuple[list[Grid], list[str]]:
    """Every table of a run and the lines printed under them (the footnote last)."""
    slos: dict[str, float] = next((s["slos"] for s in summaries if s.get("slos")), {})
    grids = [throughput_grid(summaries, slos), *latency_grids(summaries)]
    windows, window_notes = window_grid(summaries)
    turns = turn_grid(summaries)
    grids += [g for g in (turns, windows) if g is not None]
    knee = knee_line(summaries)
    lines = ([knee] if knee else []) + notes(summaries) + window_notes
    if slos:
        lines.append(f"goodput SLOs: {_slo_text(slos)} (itl = max gap of a request)")
    extra = [q for q in percentile_columns(stat_columns(summaries)) if q not in ("p50", "p90", "p95", "p99")]
    if extra:
        lines.append("percentiles: " + ", ".join(percentile_columns(stat_columns(summaries))))
    return grids, [*lines, FOOTNOTE]


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
    # rich types Console.color_system as str | None, though it is one of the names its constructor takes
    wide = Console(file=console.file, width=needed, force_terminal=console.is_terminal,
                   color_system=console.color_system, highlight=False)  # type: ignore[arg-type]
    wide.print(table)


def draw(grids: list[Grid], lines: list[str], console: Console | None) -> None:
    from rich.console import Console
    from rich.markup import escape

    console = console or Console()
    for grid in grids:
        print_whole(console, grid.to_rich())
    *body, footnote = lines
    for line in body:
        console.print(escape(line), highlight=False)
    console.print(escape(footnote), style="dim", highlight=False)


def render_table(summaries: list[dict[str, Any]], console: Console | None = None) -> None:
    """Print the summaries as rich tables: throughput and counts (a row per
    stage), then latencies in ms: a row per metric for a single stage, or a
    table per metric with a row per stage for a sweep; TTFT by turn and the
    per-window table when the summaries hold them."""
    draw(*summary_grids(summaries), console)
