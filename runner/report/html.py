"""The report as one self-contained HTML page: tiles, tables and charts.

This module turns the :class:`~runner.report.build.Report` into plain values
for the page (numbers formatted, nothing marked up) and renders them with
the Jinja2 template ``template.html.j2`` beside it, with autoescaping on:
every model name, stage label, endpoint and file name is data, escaped by
the template, never pasted into markup. The charts are plotly's own markup
(:mod:`runner.report.figures`), plotly.js inlined once, so the page loads
nothing from the network. jinja2 and plotly (the ``report`` extra) are
imported only when a page is written.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any

from runner.stats import format_time

from . import figures
from . import server as server_panel
from .build import Report
from .degraded import note as degraded_note
from .document import SCHEMA
from .figures_knee import knee_figure
from .figures_turns import turn_figure
from .figures_windows import window_figure
from .html_compare import compare_tables, compare_tiles
from .knee import FACTOR, find_knee
from .labels import (
    FOOTNOTE,
    STAT_COLUMNS,
    SWEEP_LATENCIES,
    duration,
    pair_keys,
    shown_latencies,
    stat_columns,
    sweep_axis,
)
from .terminal import turn_label
from .timing import KEY as CLIENT_TIMING
from .timing import detail as client_detail

TEMPLATE = "template.html.j2"


def _ms(value: float | None) -> str:
    """Readable precision: 3 significant digits past 10 ms, 2 decimals below."""
    if value is None:
        return "–"
    ms = value * 1000
    if ms >= 1000:
        return f"{ms:,.0f}"
    if ms >= 10:
        return f"{ms:.1f}"
    return f"{ms:.2f}"


def _rate(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def _tokens(value: float | None) -> str:
    return "–" if value is None else f"{value:,.0f}"


@dataclass
class Tile:
    """A big number at the top: ``value``, or ``pair`` (p50, p99) when set;
    ``bad`` is shown after ``sub``, in red."""

    key: str
    value: str
    sub: str
    pair: tuple[str, str] | None = None
    bad: str = ""


@dataclass
class Row:
    """A row of a statistics table: a name and its cells."""

    name: str
    cells: list[str]
    title: str = ""  # the long name, shown beside the short one
    badge: str = ""  # shown in red after the name: "client-bound"


@dataclass
class StageDetail:
    """A line of facts about a stage and, in a sweep, its full statistics."""

    label: str
    facts: str
    sampled: bool
    rows: list[Row] = field(default_factory=list)
    client: str = ""  # the client's loop lag and CPU while the stage ran (from the run summary)
    client_bound: bool = False


def _stat_rows(metrics: dict[str, Any], *, long_names: bool, columns: tuple[str, ...] = STAT_COLUMNS) -> list[Row]:
    """A row per latency metric: its statistics in ms, then its count."""
    return [Row(short, [*(_ms(metrics[key].get(c)) for c in columns), f"{metrics[key]['count']:,}"],
                long if long_names else "")
            for key, short, long in shown_latencies([{"metrics": metrics}])]


def _pair_keys(report: Report) -> tuple[str, str]:
    """The two percentiles of compact views: p50 and p99, or the lowest and highest of --percentiles."""
    return pair_keys(stat_columns(report.summaries))


def _sweep_rows(report: Report) -> list[Row]:
    """A row per stage with the numbers people compare across loads."""
    lo, hi = _pair_keys(report)
    rows = []
    for i, s in enumerate(report.summaries):
        c = s["counts"]
        cells = [f"{c['ok']:,}", f"{c['error']:,}", _rate(s["request_throughput"]), _rate(s["output_token_throughput"])]
        if report.slos:
            cells.append(_rate(s["goodput"]))
        for key, _, _ in shown_latencies(report.summaries, SWEEP_LATENCIES):
            cells += [_ms(s["metrics"][key].get(lo)), _ms(s["metrics"][key].get(hi))]
        rows.append(Row(report.label(i), cells, badge="client-bound" if _bound(s) else ""))
    return rows


def _pair(d: dict[str, Any], keys: tuple[str, str]) -> tuple[str, str]:
    return _ms(d.get(keys[0])), _ms(d.get(keys[1]))


def _tiles(report: Report) -> list[Tile]:
    """The few numbers a reader looks for first."""
    sums = report.summaries
    ok = sum(s["counts"]["ok"] for s in sums)
    err = sum(s["counts"]["error"] for s in sums)
    total = ok + err
    first = Tile("requests ok", f"{ok:,}", f"of {total:,} · ")
    if err:
        first.bad = f"{err:,} failed ({100 * err / total:.1f}%)"
    else:
        first.sub += "none failed"
    tiles = [first]
    keys = _pair_keys(report)
    if report.compare:
        return tiles + [Tile(key, value, sub) for key, value, sub in compare_tiles(report, keys[1])]
    if len(sums) == 1:
        s = sums[0]
        m = s["metrics"]
        tiles += [
            Tile("request throughput", _rate(s["request_throughput"]), "req/s"),
            Tile("output throughput", _rate(s["output_token_throughput"]), "tok/s"),
            Tile("TTFT", "", f"ms, {keys[0]} · {keys[1]}", pair=_pair(m["ttft_s"], keys)),
            Tile("TPOT", "", f"ms, {keys[0]} · {keys[1]}", pair=_pair(m["tpot_s"], keys)),
        ]
        if report.slos:
            share = f" · {100 * s['good_requests'] / s['counts']['ok']:.1f}% of ok met all SLOs" if s["counts"]["ok"] else ""
            tiles.append(Tile("goodput", _rate(s["goodput"]), f"req/s{share}"))
        return tiles

    def peak(key: str) -> tuple[str, str]:
        best = max(sums, key=lambda s: s[key] or 0)
        return _rate(best[key]), report.label(sums.index(best))

    tput, where = peak("output_token_throughput")
    tiles += [Tile("stages", str(len(sums)), sweep_axis(sums)[0] + " sweep"),
              Tile("peak output throughput", tput, f"tok/s at {where}")]
    rate, where = peak("request_throughput")
    tiles.append(Tile("peak request throughput", rate, f"req/s at {where}"))
    knee, _ = find_knee(sums)
    if knee is not None:
        tiles.append(Tile("knee", _rate(knee.throughput_rps), f"req/s at {knee.label} · {knee.stat} E2E "
                                                              f"{_ms(knee.latency_s)} ms"))
    if report.slos:
        good, where = peak("goodput")
        tiles.append(Tile("peak goodput", good, f"req/s at {where}"))
    return tiles


def _details(report: Report) -> list[StageDetail]:
    """A line of facts per stage; in a sweep, each stage's full statistics
    (folded away under the comparison table)."""
    out = []
    many = len(report.summaries) > 1
    columns = stat_columns(report.summaries)
    lo, hi = pair_keys(columns)
    for i, s in enumerate(report.summaries):
        c = s["counts"]
        tok = s["metrics"]["output_tokens"]
        reasoning = (s.get("tokens") or {}).get("reasoning")
        facts = (f"duration {duration(s['duration_s'])} · {c['ok']:,} ok · {c['error']:,} errors · "
                 f"{c['retried']:,} retried · {c.get('connections_opened', 0):,} connections opened · "
                 f"{c['warmup']:,} warm-up excluded · "
                 f"total {_rate(s['total_token_throughput'])} tok/s · output tokens per request: "
                 f"mean {_tokens(tok['mean'])}, {lo} {_tokens(tok.get(lo))}, {hi} {_tokens(tok.get(hi))}"
                 + (f" · {s['tokens']['output']:,} output tokens, {reasoning:,} of them reasoning"
                    if reasoning else "")
                 + (f" · {c['turns']:,} turns of sessions, each a request in the latencies" if c.get("turns") else "")
                 + (f" · {degraded_note(s)}" if degraded_note(s) else ""))
        rows = _stat_rows(s["metrics"], long_names=False, columns=columns) if many else []
        out.append(StageDetail(report.label(i), facts, s["sampled"], rows, client_detail(s), _bound(s)))
    return out


def _bound(summary: dict[str, Any]) -> bool:
    """The run summary said the client's own lag or CPU made this stage's numbers untrustworthy."""
    return bool((summary.get(CLIENT_TIMING) or {}).get("client_bound"))


def _chips(report: Report) -> list[tuple[str, bool]]:
    """``(text, bad)``: the SLOs applied, lines skipped, sampling."""
    chips = [(f"SLO {k} ≤ {v * 1000:g} ms", False) for k, v in report.slos.items()]
    skipped = sum(i.skipped_lines for i in report.inputs)
    if skipped:
        chips.append((f"{skipped} unreadable line{'s' if skipped != 1 else ''} skipped", True))
    if any(s["sampled"] for s in report.summaries):
        chips.append(("percentiles from a uniform sample", False))
    bound = [i for i, s in enumerate(report.summaries) if _bound(s)]
    if bound:
        where = "" if len(report.summaries) == 1 else ": " + ", ".join(report.label(i) for i in bound)
        chips.append((f"client-bound{where} (the client's own delays inflate these latencies)", True))
    return chips


def _meta(report: Report) -> list[str]:
    """The line under the title: stages, endpoints, start, wall time, inputs."""
    sums = report.summaries
    endpoints = sorted({e for s in sums for e in s["endpoints"]})
    start, end = report.run_start, report.run_end
    meta = [
        f"{len(report.runs)} runs: " + ", ".join(r.label for r in report.runs) if report.compare
        else f"{len(sums)} stages" if len(sums) > 1 else "",
        ", ".join(endpoints),
        f"started {format_time(start)[:19].replace('T', ' ')} UTC" if start is not None else "",
        f"wall time {duration(end - start)}" if start is not None and end is not None else "",
        "inputs: " + ", ".join(Path(i.path).name for i in report.inputs),
    ]
    return [m for m in meta if m]


def _charts(report: Report) -> list[dict[str, Any]]:
    """The chart sections: anchor, title, explanation, plotly's markup."""
    sums = report.summaries
    colors = figures.stage_colors(len(sums))
    sections: list[tuple[str, str, str, Any]] = []
    lo, hi = _pair_keys(report)
    if any(run.count > 1 for run in report.runs):
        sections.append(("sweep", "Load sweep", f"{lo} and {hi} latency and throughput per stage"
                         + (", a line per run" if report.compare else "") + ". Dashed red lines: SLOs.",
                         figures.sweep_figure(report)))
        sections.append(("knee", "Latency against throughput", _knee_explain(report, lo, hi), knee_figure(report)))
    tl = report.timeline
    sections += [
        ("ttft", "Time to first token", "Request sent to the first event carrying generated text.",
         figures.distribution_figure(report, "ttft_s", "TTFT", colors, "ttft")),
        ("e2e", "End-to-end latency", "Request sent to the end of the stream.",
         figures.distribution_figure(report, "e2e_s", "E2E", colors, "e2e")),
        ("tpot", "Time per output token", "(E2E − TTFT) / (output tokens − 1): AIPerf's and guidellm's “ITL”.",
         figures.distribution_figure(report, "tpot_s", "TPOT", colors, "tpot")),
        ("itl", "Inter-chunk gaps over time",
         "Every gap between text-carrying chunks (vLLM's ITL), against time since the run started"
         + (f"; a uniform sample of {len(tl.times):,} of {tl.total:,} gaps" if tl.sampled else "")
         + ". Black: rolling median and p90.",
         figures.itl_figure(report, colors)),
        ("turns", "TTFT by turn", f"{lo} and {hi} TTFT of each turn of multi-turn sessions: each turn resends the "
         "conversation so far, which a prefix cache should answer without a climb.", turn_figure(report, colors)),
        ("windows", "Over time, per window",
         f"Per {report.window_s or 0:g} s window of completion time"
         + (", each run from its own start" if report.compare else "") + f": throughput, errors, {lo} (solid) and "
         f"{hi} (dotted) latencies. A drift shows as a slope.", window_figure(report, colors)),
    ]
    charts: list[dict[str, Any]] = []
    for anchor, title, explain, fig in sections:
        if fig is not None:
            div = figures.embed(fig, include_plotlyjs=not charts)  # the template inserts it unescaped
            charts.append({"anchor": anchor, "title": title, "explain": explain, "div": div})
            if anchor == "turns":
                charts[-1]["table"] = _turn_table(report)
    charts += server_panel.html_charts(report, include_plotlyjs=not charts)  # the server's /metrics
    return charts


def _knee_explain(report: Report, lo: str, hi: str) -> str:
    """What the knee chart shows, the rule, and each run's knee in words."""
    found = []
    for run in report.runs:
        knee, why = find_knee(report.run_summaries(run)) if run.count > 1 else (None, "")
        name = f"{run.label}: " if report.compare else ""
        if knee is not None:
            found.append(f"{name}{knee.label}, {_rate(knee.throughput_rps)} req/s, {knee.stat} E2E "
                         f"{_ms(knee.latency_s)} ms")
        elif why:
            found.append(f"{name}none ({why})")
    return (f"{lo} (solid) and {hi} (dotted) latency of each stage against the request rate it achieved, from the "
            f"lightest load to the heaviest. ★ the knee: the stage with the most req/s whose {hi} E2E stays within "
            f"{FACTOR:g}× the lowest load's (dashed line). Knee: " + "; ".join(found) + ".")


def _turn_table(report: Report) -> dict[str, Any]:
    """The numbers under the TTFT-by-turn chart (ms)."""
    columns = stat_columns(report.summaries)
    rows = [Row((f"{report.label(i)} · " if len(report.summaries) > 1 else "") + f"turn {turn_label(e)}",
                [f"{e['count']:,}", *(_ms(e.get(c)) for c in columns)])
            for i, s in enumerate(report.summaries) for e in s.get("ttft_by_turn") or []]
    return {"heads": ["turn", "count", *columns], "rows": rows}


def render_html(report: Report) -> str:
    """The page, as text."""
    import jinja2

    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True,
                             trim_blocks=True, lstrip_blocks=True)
    template = env.from_string(files(__package__).joinpath(TEMPLATE).read_text(encoding="utf-8"))
    sums = report.summaries
    return template.render(
        schema=SCHEMA,
        title=" · ".join(sorted({m for s in sums for m in s["models"]})) or "streamrun run",
        meta=_meta(report),
        tiles=_tiles(report),
        chips=_chips(report),
        single=len(sums) == 1,
        stat_columns=stat_columns(sums),
        latency_rows=_stat_rows(sums[0]["metrics"], long_names=True, columns=stat_columns(sums))
        if len(sums) == 1 else [],
        sweep_heads=[short for _, short, _ in shown_latencies(sums, SWEEP_LATENCIES)],
        pair=_pair_keys(report),
        tables=compare_tables(report) if report.compare else [],
        sweep_rows=_sweep_rows(report) if len(sums) > 1 else [],
        goodput=bool(report.slos),
        details=_details(report),
        charts=_charts(report),
        footnote=FOOTNOTE,
        generated_at=report.generated_at,
    )


def write_html(report: Report, path: str | Path) -> int:
    """Write one self-contained HTML page (plotly.js inlined once, no
    network needed) and return its size in bytes."""
    data = render_html(report).encode()
    Path(path).write_bytes(data)
    return len(data)
