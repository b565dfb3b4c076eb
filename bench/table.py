"""`make bench`'s table, scaling lines and JSON (used by bench/bench.py)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runner, when not installed
sys.path.insert(0, str(Path(__file__).resolve().parent))  # clients, when imported from elsewhere
from runner.stats import percentile  # noqa: E402  the one implementation (numpy's "linear")

from clients import Result  # noqa: E402

SCALING_GOAL = 0.8  # --workers N should reach this x N x one worker's events/s ...
SCALING_UP_TO = 8  # ... up to this many workers


def fmt(x, spec: str, none: str = "-") -> str:
    return none if x is None else format(x, spec)


def _by_conc(results: list[Result], pick) -> dict[int, float]:
    return {r.concurrency: r.events_s for r in results if pick(r) and not r.failure and r.events_s}


def one_worker(results: list[Result]) -> dict[int, float]:
    """streamrun --workers 1 events/s per concurrency: the base of "vs w=1"."""
    return _by_conc(results, lambda r: r.client == "streamrun" and r.workers == 1)


def print_table(results: list[Result], notes: list[str], file=sys.stdout) -> None:
    header = ("conc", "client", "workers", "CPUs", "req/s", "events/s", "vs ceiling", "vs parse", "vs w=1",
              "CPU s/1k ev", "peak RSS MiB", "TTFT p50 ms", "TTFT p99 ms", "errors", "wall s",
              "server CPU avg/peak")
    rows = []
    ceilings = _by_conc(results, lambda r: r.client == "ceiling")
    parsed = _by_conc(results, lambda r: r.client == "parse")
    single = one_worker(results)
    for r in results:
        workers = str(r.workers) if r.client == "streamrun" else "-"
        cpus = str(r.client_cpus) if r.client_cpus else "all"
        if r.failure:
            rows.append((str(r.concurrency), r.label, workers, cpus, "FAILED: " + r.failure.splitlines()[0][:90],
                         *[""] * 11))
            continue
        ceiling, parse = ceilings.get(r.concurrency), parsed.get(r.concurrency)
        base = single.get(r.concurrency) if r.client == "streamrun" else None
        ttfts = sorted(r.ttfts)
        p50, p99 = percentile(ttfts, 50), percentile(ttfts, 99)
        rows.append((
            f"{r.concurrency:,}", r.label, workers, cpus, f"{r.req_s:,.0f}", f"{r.events_s:,.0f}",
            f"{100 * r.events_s / ceiling:.0f} %" if ceiling else "-",
            f"{r.events_s / parse:.2f}x" if parse else "-",
            f"{r.events_s / base:.2f}x" if base else "-",
            fmt(r.cpu_per_1k_events, ".4f"), f"{r.peak_rss_mib:.0f}",
            fmt(p50 and 1000 * p50, ".1f"), fmt(p99 and 1000 * p99, ".1f"),
            f"{r.errors:,}", f"{r.wall_s:.1f}",
            f"{100 * r.server_cpu_avg:.0f} % / {100 * r.server_cpu_peak:.0f} %",
        ))
    failed = 4  # the column a failed row's message starts in
    ok_rows = [row for row in rows if not row[failed].startswith("FAILED")]
    widths = [max(len(h), *(len(row[i]) for row in ok_rows)) if ok_rows else len(h) for i, h in enumerate(header)]
    left = {1}

    def line(cells) -> str:
        if cells[failed].startswith("FAILED"):
            return "  ".join([cells[0].rjust(widths[0]), cells[1].ljust(widths[1]), cells[2].rjust(widths[2]),
                              cells[3].rjust(widths[3]), cells[failed]])
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    print(line(header), file=file)
    print("  ".join("-" * w for w in widths), file=file)
    last = None
    for row in rows:
        if last is not None and row[0] != last:
            print(file=file)
        last = row[0]
        print(line(row), file=file)
    for note in notes:
        print(note, file=file)


def scaling_notes(results: list[Result]) -> list[str]:
    """One line per concurrency with streamrun at several --workers: each N's
    events/s over N x one worker's, against the goal."""
    single = one_worker(results)
    notes = []
    for conc, base in single.items():
        parts = []
        for r in results:
            if r.client == "streamrun" and r.concurrency == conc and r.workers > 1 and not r.failure:
                per = r.events_s / base / r.workers
                goal = "" if r.workers > SCALING_UP_TO else (" ok" if per >= SCALING_GOAL else " below goal")
                cpus = f" on {r.client_cpus} CPU(s)" if r.client_cpus else ""
                parts.append(f"w={r.workers} {r.events_s / base:.2f}x = {per:.2f} per worker{cpus}{goal}")
        if parts:
            notes.append(f"scaling at c={conc:,} (streamrun events/s over N x w=1's {base:,.0f}; goal >= "
                         f"{SCALING_GOAL} per worker up to {SCALING_UP_TO} workers, given N+1 CPUs): " + "; ".join(parts))
    return notes


def tracing_notes(results: list[Result], spans: int | None) -> list[str]:
    """What --otlp-endpoint costs: streamrun+otlp against streamrun w=1 at each concurrency."""
    if spans is None:
        return []
    plain = {r.concurrency: r for r in results if r.client == "streamrun" and r.workers == 1 and not r.failure}
    notes = []
    for r in results:
        base = plain.get(r.concurrency)
        if r.client != "streamrun-otlp" or r.failure or base is None or not base.events_s \
                or not r.cpu_per_1k_events or not base.cpu_per_1k_events:
            continue
        notes.append(f"tracing at c={r.concurrency:,}: streamrun+otlp {r.events_s / base.events_s:.2f}x the events/s "
                     f"of streamrun w=1, CPU s/1k ev {fmt(r.cpu_per_1k_events, '.4f')} vs "
                     f"{fmt(base.cpu_per_1k_events, '.4f')} "
                     f"({100 * (r.cpu_per_1k_events / base.cpu_per_1k_events - 1):+.0f} %), "
                     f"TTFT p50 {fmt(1000 * (percentile(sorted(r.ttfts), 50) or 0), '.1f')} ms vs "
                     f"{fmt(1000 * (percentile(sorted(base.ttfts), 50) or 0), '.1f')} ms.")
    notes.append(f"tracing: the OTLP sink received {spans:,} spans in all (one per streamrun+otlp request).")
    return notes


def as_json(results: list[Result]) -> list[dict]:
    single = one_worker(results)
    out = []
    for r in results:
        base = single.get(r.concurrency) if r.client == "streamrun" else None
        out.append({**{k: v for k, v in r.__dict__.items() if k != "ttfts"}, "label": r.label,
                    "server_cpu_avg": r.server_cpu_avg, "req_s": r.req_s, "events_s": r.events_s,
                    "vs_one_worker": r.events_s / base if base and not r.failure else None,
                    "cpu_per_1k_events": r.cpu_per_1k_events,
                    "ttft_p50_s": percentile(sorted(r.ttfts), 50),
                    "ttft_p99_s": percentile(sorted(r.ttfts), 99)})
    return out
