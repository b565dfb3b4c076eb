"""The end-of-run lines on stderr (or one JSON log record), and after a sweep the per-stage table.

Why in the report: they are the summary document shown to a person, with
the same tables `streamrun report` draws; the summary document itself is
`runner.outputs.summary`'s.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from ..config.run_config import ObserveConfig


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x * 1000:.1f}"


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


_LOG_PERCENTILES = ("p50", "p90", "p99")  # the end-of-run lines' percentiles unless --percentiles chose others


def _shown(doc: dict[str, Any]) -> tuple[str, ...]:
    """The percentile keys of the end-of-run lines: the run's --percentiles, or p50/p90/p99 by default."""
    from ..stats import percentile_key

    chosen = (doc.get("config") or {}).get("percentiles")
    if not chosen or tuple(chosen) == ObserveConfig.percentiles:
        return _LOG_PERCENTILES
    return tuple(percentile_key(q) for q in chosen)


def _quantiles(d: dict | None, keys: tuple[str, ...] = _LOG_PERCENTILES) -> dict[str, float | None]:
    d = d or {}
    return {q: d.get(q) for q in keys}


def log_fields(doc: dict[str, Any], path: str) -> dict[str, Any]:
    """The numbers of the end-of-run lines as one JSON object (`--log-format json`); times in seconds."""
    summary = doc["summary"]
    counts = summary["counts"]
    m = summary["metrics"]
    shown = _shown(doc)
    out: dict[str, Any] = {
        "exit_code": doc["exit_code"],
        "interrupted": doc["interrupted"],
        "stopped": doc["stopped"],
        "records": counts.get("total", 0),
        "ok": counts.get("ok", 0),
        "error": counts.get("error", 0),
        "retried": counts.get("retried", 0),
        "errors_by_type": counts.get("errors_by_type", {}),
        "top_errors": counts.get("top_errors", [])[:3],
        "ttft_s": _quantiles(m.get("ttft_s"), shown),
        "e2e_s": _quantiles(m.get("e2e_s"), shown),
        "request_throughput": summary.get("request_throughput") or 0,
        "output_token_throughput": summary.get("output_token_throughput") or 0,
        "duration_s": summary.get("duration_s") or 0,
        "requests_sent": doc.get("requests_sent", 0),
    }
    if doc.get("cache") is not None:
        out["cached"] = doc["cache"]["hits"]
    if summary.get("goodput") is not None:
        out.update(goodput=summary["goodput"], good_requests=summary["good_requests"],
                   slos=summary.get("slos") or {})
    tokens = summary.get("tokens") or {}
    if tokens.get("total"):
        out["tokens"] = tokens
    if "cost_usd" in doc:
        out["cost_usd"] = doc["cost_usd"]
    adaptive = doc.get("adaptive_concurrency")
    if adaptive and adaptive["throttles"]:
        out["adaptive_concurrency"] = adaptive
    out["output"] = doc["output"]
    out["summary_path"] = path
    return out


def _warnings(doc: dict[str, Any]) -> list[str]:
    """The warnings of the end-of-run lines: a line per stage a worker died in (--workers), a line per
    client-bound stage (runner/observe/client_timing.py) and what to do, else the run-wide event-loop lag warning, if any
    (and if there were latencies to inflate)."""
    from ..observe.client_timing import bound_lines

    lag = _lag_warning(doc)
    return _degraded_lines(doc) + (bound_lines(doc) or ([lag.removeprefix("warning: ")] if lag else []))


def _degraded_lines(doc: dict[str, Any]) -> list[str]:
    """A line per stage that a worker died in: from then on it ran short of its load (runner/workers/pool.py)."""
    lines = []
    for entry in (doc.get("workers") or {}).get("degraded_stages") or []:
        name = f"stage {entry['label']}" if entry.get("label") else "the run"
        died = ", ".join(str(i) for i in entry["workers_died"])
        marked = " (its records from then on carry \"degraded\": true in their stage)" if entry.get("label") else ""
        lines.append(f"{name} ran degraded: worker {died} died during it, and it went on short of its load{marked}")
    return lines


def _lag_warning(doc: dict[str, Any]) -> str | None:
    from ..observe.client_timing import measured_enough

    if not measured_enough(doc):
        return None
    lag = doc.get("event_loop_lag") or {}
    if lag.get("samples", 0) >= 20 and lag.get("share_over_10ms", 0) > 0.05:
        return (f"warning: the client's event loop lagged over 10 ms in {lag['share_over_10ms']:.0%} of checks "
                f"(max {lag['max_s'] * 1000:.0f} ms): latencies include client overhead; lower -c")
    return None


def _log_json(doc: dict[str, Any], path: str) -> None:
    """Under `--log-format json`: the summary as one log record, `{"msg": "run finished", "summary": {...}}`.

    Under -q only its warnings, as in text.
    """
    import logging

    from ..observe.progress import quiet_logs

    log = logging.getLogger("streamrun")
    for warning in _warnings(doc):
        log.warning("%s", warning)
    if quiet_logs(log):
        return
    record = log.makeRecord(log.name, logging.INFO, __file__, 0, "run finished", (), None,
                            extra={"data": {"summary": log_fields(doc, path)}})
    log.handle(record)


def render(doc: dict[str, Any], path: str, stage_table: bool = False, out: TextIO | None = None, *,
           as_json: bool = False) -> None:
    """The end-of-run lines on stderr; after a sweep, the per-stage table as well.

    Each line says what happened: how many records, how many of them came from the cache and how
    many requests were sent; latencies only where some request was measured; one line for a run
    that wrote no record. Under -q (warnings and errors only) just the warnings.

    `as_json` (`--log-format json`): one JSON log record instead, and no table (its numbers are in
    the summary file), so that every line on stderr stays one JSON object.
    """
    from ..observe.progress import quiet_logs

    if as_json:
        _log_json(doc, path)
        return
    out = out or sys.stderr
    if quiet_logs():
        lines = [f"streamrun: warning: {warning}" for warning in _warnings(doc)]
        if lines:
            print("\n".join(lines), file=out, flush=True)
        return
    summary = doc["summary"]
    counts = summary["counts"]
    m = summary["metrics"]
    if not counts.get("total"):
        print(_nothing_written(doc, path), file=out, flush=True)
        return
    by_type = ", ".join(f"{k} {v}" for k, v in sorted(counts.get("errors_by_type", {}).items()))
    lines = [
        f"streamrun: {plural(counts.get('total', 0), 'record')}: {counts.get('ok', 0)} ok, "
        f"{counts.get('error', 0)} error" + (f" ({by_type})" if by_type else "")
        + f", {counts.get('retried', 0)} retried",
    ]
    for top in counts.get("top_errors", [])[:3]:
        lines.append(f"  {top['count']:>6} x {top['type']}: {top['message']}")
    if doc.get("cache") is not None:  # this run's answers: from the cache, or sent
        lines.append(f"  {doc['cache']['hits']} answered from the cache, {doc.get('requests_sent', 0)} sent")
    shown = _shown(doc)
    latencies = _end_latencies(m)
    measured = any((m.get(key) or {}).get(q) is not None for _, key in latencies for q in shown)  # else dashes
    if measured:
        width = max(len(name) for name, _ in latencies)
        for name, key in latencies:
            d = m.get(key) or {}
            lines.append(f"  {name:<{width}} ms  " + "  ".join(f"{q} {_ms(d.get(q))}" for q in shown))
        lines.append(f"  {summary.get('request_throughput') or 0:.2f} req/s, "
                     f"{summary.get('output_token_throughput') or 0:.1f} output tokens/s "
                     f"over {summary.get('duration_s') or 0:.2f}s")
    if measured and summary.get("goodput") is not None:
        slos = ", ".join(f"{k}<={v:g}s" for k, v in (summary.get("slos") or {}).items())
        lines.append(f"  goodput {summary['goodput']:.2f} req/s ({summary['good_requests']} requests met {slos})")
    tokens = summary.get("tokens") or {}
    if tokens.get("total"):
        lines.append(f"  tokens: {tokens.get('prompt', 0)} prompt, {tokens.get('completion', 0)} completion"
                     f" ({tokens.get('reasoning', 0)} reasoning)"
                     + (f", cost ${doc['cost_usd']:.4f}" if "cost_usd" in doc else ""))
    adaptive = doc.get("adaptive_concurrency")
    if adaptive and adaptive["throttles"]:
        lines.append(f"  throttled {adaptive['throttles']} times (429/503): concurrency cut {adaptive['decreases']}"
                     f" times, lowest {adaptive['min_seen']}, final {adaptive['final_limit']} of {adaptive['max']}")
    lines += [f"  warning: {warning}" for warning in _warnings(doc)]
    lines.append(f"  results: {doc['output']}  summary: {path}")
    print("\n".join(lines), file=out, flush=True)
    if stage_table:
        from rich.console import Console

        from .build import build_report
        from .degraded import mark_stages as mark_degraded
        from .terminal import render_table
        from .timing import mark_stages

        config = doc.get("config") or {}
        report = build_report([doc["output"]], doc["summary"].get("slos") or None,
                              percentiles=config.get("percentiles") or ObserveConfig.percentiles)
        mark_stages(report.summaries, (doc.get("timing") or {}).get("stages") or [])  # this run's client timing
        mark_degraded(report.summaries, (doc.get("workers") or {}).get("degraded_stages") or [])
        render_table(report.summaries, Console(file=out))


def _nothing_written(doc: dict[str, Any], path: str) -> str:
    """The one end-of-run line of a run whose output holds no record: no table of dashes."""
    why = (" (stopped by the error above)" if doc.get("stopped") else " (interrupted)" if doc.get("interrupted")
           else "")
    output = "stdout" if doc["output"] == "-" else doc["output"]
    return f"streamrun: 0 records written to {output}{why}; summary: {path}"


def _end_latencies(m: dict[str, Any]) -> list[tuple[str, str]]:
    """TTFT and E2E; TTFAT between them when reasoning put it apart from TTFT."""
    ttft, ttfat = m.get("ttft_s") or {}, m.get("ttfat_s") or {}
    apart = ttfat.get("count") and ttfat.get("p50") != ttft.get("p50")
    return [("TTFT", "ttft_s"), *([("TTFAT", "ttfat_s")] if apart else []), ("E2E", "e2e_s")]
