"""How accurately does streamrun measure TTFT and ITL?  (``make bench-accuracy``)

The mock server is run in script mode: every request gets its own, seeded,
known timing (first content event ``ttft`` seconds after the request
arrived, then one event after each of ``gaps``, on an absolute schedule).
streamrun then measures the same requests, and this script joins its
records to the script by ``custom_id`` and reports the per-request errors:

    TTFT error = measured ttft_s - scripted ttft
    ITL error  = measured itl_s[k] - scripted gaps[k]

at 1 stream (sequential requests), 100 and 1000 concurrent streams.

The invariant that must hold exactly: a client can never see bytes before
they were sent, so the time from "request sent" to event k is at least the
scripted offset of event k (``ttft + sum(itl[:k]) >= ttft* + sum(gaps[:k])``).
A single ITL gap can come out *shorter* than scripted (the event before it
arrived late, the one after it on time), so per-gap "measured < scripted"
is counted separately and is not an error.

The mock runs in its own process(es) (``streamrun mock --workers W``) so
that server and client never share an event loop; on a small machine they
still share CPU cores, which is part of what the error contains.

Each level runs two clients, one after the other, against the same mock
process and script: ``bench/bare.py`` (bare aiohttp, stamps when ``iter_any()``
returns) and streamrun; after the table, "streamrun - bare" gives the TTFT
error streamrun adds beyond the bare client's, p50 and p99.  ``--warm`` opens
the connections first (streamrun ``--warmup N``), ``--repeat`` pools runs.

Usage: python bench/accuracy.py [--seed S] [--workers W] [--levels 1,100,1000]
                                [--clients bare,streamrun] [--repeat R] [--warm] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runner, when not installed
from runner.stats import percentile  # noqa: E402  the one implementation (numpy's "linear")

REPO = Path(__file__).resolve().parents[1]
STREAMRUN = [sys.executable, "-m", "runner.cli"]

TTFT_RANGE_S = (0.050, 0.500)
GAPS_RANGE = (16, 32)
GAP_RANGE_S = (0.005, 0.050)
SEQUENTIAL_REQUESTS = 20  # for the 1-stream level
RUN_TIMEOUT_S = 120


# --------------------------------------------------------------------------
# Script and inputs


def make_script(rng: random.Random, n: int) -> list[dict]:
    """n seeded timing entries: TTFT uniform in 50-500 ms, 16-32 gaps of 5-50 ms."""
    script = []
    for _ in range(n):
        ttft = round(rng.uniform(*TTFT_RANGE_S), 6)
        gaps = [round(rng.uniform(*GAP_RANGE_S), 6) for _ in range(rng.randint(*GAPS_RANGE))]
        script.append({"ttft": ttft, "gaps": gaps})
    return script


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row))
            f.write("\n")


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def input_rows(n: int) -> list[dict]:
    """One chat line per request, each pointing at its own script entry."""
    return [
        {"custom_id": f"r{i}", "messages": [{"role": "user", "content": f"accuracy probe {i}"}],
         "mock": {"script": i}}
        for i in range(n)
    ]


# --------------------------------------------------------------------------
# The mock in its own process


class MockProcess:
    """``streamrun mock --port 0 --script FILE --workers W`` in a subprocess."""

    def __init__(self, script_path: Path, workers: int) -> None:
        self.proc = subprocess.Popen(
            [*STREAMRUN, "mock", "--port", "0", "--script", str(script_path), "--workers", str(workers)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO,
        )
        self.stderr: list[str] = []
        self.url = self._wait_for_url()
        # Keep draining stderr so a chatty server never blocks on a full pipe.
        threading.Thread(target=self._drain, daemon=True).start()

    def _wait_for_url(self) -> str:
        assert self.proc.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.stderr.append(line)
            match = re.search(r"listening on (http://\S+)", line)
            if match:
                return match.group(1)
        self.close()
        raise RuntimeError("mock server did not start:\n" + "".join(self.stderr))

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.stderr.append(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def __enter__(self) -> MockProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------
# Statistics


@dataclass
class LevelResult:
    client: str  # streamrun, or bare (bench/bare.py: the least any client does)
    concurrency: int
    requests: int
    ok: int
    ttft_err_ms: list[float]
    ttfb_ms: list[float]  # send -> role chunk, which the mock sends at once: the bare round trip
    itl_err_ms: list[float]
    ttft_below: int  # measured TTFT < scripted: must be 0
    cumulative_below: int  # send -> event k < scripted offset of event k: must be 0
    cumulative_events: int
    itl_below: int  # single gaps shorter than scripted (allowed, see module doc)
    shape_mismatch: int  # records whose number of ITL gaps differs from the script
    lag: dict
    wall_s: float


# Float slack for "measured < scripted": the mock's and client's clocks are
# both CLOCK_MONOTONIC, so anything beyond rounding would be a real violation.
EPS_S = 1e-6


def analyse(records: list[dict], script: list[dict], concurrency: int, lag: dict, wall_s: float,
            client: str = "streamrun") -> LevelResult:
    by_id = {r["custom_id"]: r for r in records if not r.get("warmup")}
    ttft_err, itl_err, ttfb = [], [], []
    ttft_below = cumulative_below = cumulative_events = itl_below = shape_mismatch = ok = 0
    for i, entry in enumerate(script):
        rec = by_id.get(f"r{i}")
        if rec is None or rec.get("status") != "ok":
            continue
        m = rec["metrics"]
        if m.get("ttft_s") is None:
            continue
        ok += 1
        ttft, itl = m["ttft_s"], m["itl_s"] or []
        ttft_err.append((ttft - entry["ttft"]) * 1000.0)
        if m.get("ttfb_s") is not None:
            ttfb.append(m["ttfb_s"] * 1000.0)
        ttft_below += ttft < entry["ttft"] - EPS_S
        gaps = entry["gaps"]
        if len(itl) != len(gaps):
            shape_mismatch += 1
        measured_t, scripted_t = ttft, entry["ttft"]
        for got, want in zip(itl, gaps):
            itl_err.append((got - want) * 1000.0)
            itl_below += got < want
            measured_t += got
            scripted_t += want
            cumulative_events += 1
            cumulative_below += measured_t < scripted_t - EPS_S
    return LevelResult(
        client=client, concurrency=concurrency, requests=len(script), ok=ok,
        ttft_err_ms=sorted(ttft_err), ttfb_ms=sorted(ttfb), itl_err_ms=sorted(itl_err),
        ttft_below=ttft_below, cumulative_below=cumulative_below, cumulative_events=cumulative_events,
        itl_below=itl_below, shape_mismatch=shape_mismatch, lag=lag, wall_s=wall_s,
    )


# --------------------------------------------------------------------------
# One level


def run_level(workdir: Path, rng: random.Random, concurrency: int, requests: int, workers: int,
              clients: list[str], run: int = 0, warm: bool = False, client_workers: int = 1) -> list[LevelResult]:
    """Each client in turn against one mock process with one script (the same scripted timings)."""
    tag = f"c{concurrency}" + (f".{run}" if run else "")
    script = make_script(rng, requests)
    script_path = workdir / f"{tag}.script.jsonl"
    inputs_path = workdir / f"{tag}.inputs.jsonl"
    write_jsonl(script_path, script)
    write_jsonl(inputs_path, input_rows(requests))
    results = []
    with MockProcess(script_path, workers) as mock:
        for client in clients:
            out_path = workdir / f"{tag}.{client}.out.jsonl"
            summary_path = workdir / f"{tag}.{client}.out.summary.json"
            if client == "bare":
                cmd = [sys.executable, str(REPO / "bench" / "bare.py"), str(inputs_path), mock.url,
                       str(concurrency), str(out_path), *(["warm"] if warm else [])]
            else:
                cmd = [*STREAMRUN, "run", str(inputs_path), "-o", str(out_path), "--base-url", mock.url,
                       "-c", str(concurrency), "--no-progress", "--summary", str(summary_path), "--max-attempts", "1",
                       *(["--warmup", str(concurrency)] if warm else []),
                       *(["--workers", str(client_workers)] if client_workers > 1 else [])]
            t = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=RUN_TIMEOUT_S)
            wall_s = time.perf_counter() - t
            if proc.returncode != 0:
                sys.stderr.write(f"[{tag} {client}] exited {proc.returncode}\n{proc.stderr[-4000:]}\n")
            records = read_jsonl(out_path) if out_path.exists() else []
            lag = {}
            if summary_path.exists():
                lag = json.loads(summary_path.read_text(encoding="utf-8")).get("event_loop_lag") or {}
            results.append(analyse(records, script, concurrency, lag, wall_s, client))
    return results


# --------------------------------------------------------------------------
# Output


def _ms(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.2f}"


def _share(n: int, d: int) -> str:
    return "n/a" if not d else (f"{n / d:.1%}" if n else "0")


def rows_for(results: list[LevelResult]) -> tuple[list[str], list[list[str]]]:
    header = ["streams", "client", "requests", "ok",
              "TTFT err\np50", "\np99", "\nmax",
              "ITL err\np50", "\np99",
              "measured <\nscripted", "single gaps\n< scripted",
              "TTFB\np50", "loop lag\nmean/max", "wall\ns"]
    rows = []
    for r in results:
        t, g = r.ttft_err_ms, r.itl_err_ms
        below = r.ttft_below + r.cumulative_below
        checks = r.ok + r.cumulative_events
        lag = (f"{r.lag.get('mean_s', math.nan) * 1000:.1f}/{r.lag.get('max_s', math.nan) * 1000:.1f}"
               if r.lag else "n/a")
        rows.append([
            str(r.concurrency), r.client, str(r.requests), str(r.ok),
            _ms(percentile(t, 50)), _ms(percentile(t, 99)), _ms(t[-1] if t else math.nan),
            _ms(percentile(g, 50)), _ms(percentile(g, 99)),
            f"{below} of {checks}" if checks else "n/a",
            _share(r.itl_below, len(g)),
            _ms(percentile(r.ttfb_ms, 50)), lag, f"{r.wall_s:.1f}",
        ])
    return header, rows


FOOTER = """\
All times in ms.  Errors are measured - scripted (TTFT per request, ITL per gap).
"measured < scripted" counts TTFTs and cumulative send->event-k times (ttft + sum of
the first k ITLs) below the scripted ones, out of all checked: a timestamp can never
precede the bytes, so it must be 0.  A single ITL gap can come out shorter than
scripted when the event before it arrived late ("single gaps < scripted"): expected.
What the error contains: the loopback network stack, the mock's scheduling (asyncio
sleeps overshoot; events go out on an absolute schedule, so overshoot never adds
up), connection setup (TTFT starts before connecting; the pool is cold), and the
client's own overhead (event-loop wakeups, parsing, the other streams).  TTFB is the
time to the role chunk, which the mock sends at once: the bare round trip.  At 100
and 1000 streams it dominates the TTFT error: N connections are opened at once.
Server and client are separate processes but share this machine's {cores} CPU
core(s): at 1000 streams they compete, so that row shows contention of both sides,
not the client alone (see the client's loop lag, from OUT.summary.json
event_loop_lag).  A pure client error would need the server on a separate machine."""


def print_table(results: list[LevelResult], total_s: float, seed: int, workers: int, client_workers: int = 1) -> None:
    header, rows = rows_for(results)
    title = (f"streamrun measurement accuracy (seed {seed}, mock --workers {workers}, streamrun --workers {client_workers}, "
             f"TTFT {TTFT_RANGE_S[0] * 1000:.0f}-{TTFT_RANGE_S[1] * 1000:.0f} ms, "
             f"{GAPS_RANGE[0]}-{GAPS_RANGE[1]} gaps of {GAP_RANGE_S[0] * 1000:.0f}-{GAP_RANGE_S[1] * 1000:.0f} ms)")
    footer = FOOTER.format(cores=os.cpu_count() or "?") + f"\nTotal runtime {total_s:.1f} s."
    mismatched = sum(r.shape_mismatch for r in results)
    failed = sum(r.requests - r.ok for r in results)
    violations = sum(r.ttft_below + r.cumulative_below for r in results)
    if violations:
        footer += (f"\nWARNING: {violations} measured time(s) came out below the scripted ones: "
                   "a clock or stamping bug (see bench/accuracy.py's module doc).")
    if mismatched or failed:
        footer += (f"\nWARNING: {failed} request(s) failed or had no TTFT, {mismatched} record(s) had a "
                   "different number of ITL gaps than scripted.")
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:  # plain text fallback
        flat = [h.replace("\n", " ").strip() for h in header]
        widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(flat)]
        print(title)
        print("  ".join(h.rjust(w) for h, w in zip(flat, widths)))
        for row in rows:
            print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        print(footer)
        return
    table = Table(title=title, caption=footer, caption_justify="left")
    for h in header:
        table.add_column(h, justify="right", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    # At least wide enough for the whole table (piped output defaults to 80 columns).
    Console(width=max(Console().width, 150)).print(table)


# --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--workers", type=int, default=2, help="mock server processes (SO_REUSEPORT)")
    ap.add_argument("--levels", default="1,100,1000", help="concurrency levels, comma-separated")
    ap.add_argument("--sequential-requests", type=int, default=SEQUENTIAL_REQUESTS,
                    help="requests for the 1-stream level (others send one per stream)")
    ap.add_argument("--clients", default="bare,streamrun",
                    help="bare (bench/bare.py, the reference) and/or streamrun, comma-separated")
    ap.add_argument("--repeat", type=int, default=1, help="runs per level, pooled (p99 of 100 requests is their max)")
    ap.add_argument("--warm", action="store_true",
                    help="open the connections first (streamrun --warmup N; bare: N GET /models), so that "
                         "the N streams start at once on open connections")
    ap.add_argument("--client-workers", type=int, default=1,
                    help="streamrun --workers N (default 1): the streams spread over N sending processes")
    ap.add_argument("--keep", metavar="DIR", help="keep the script, input and result files in DIR")
    args = ap.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",") if x.strip()]
    clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    if not clients or set(clients) - {"bare", "streamrun"}:
        ap.error("--clients: bare and/or streamrun")

    rng = random.Random(args.seed)
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory(prefix="streamrun-accuracy-") as tmp:
        workdir = Path(args.keep) if args.keep else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        for c in levels:
            n = args.sequential_requests if c == 1 else c
            runs = []
            for i in range(args.repeat):
                print(f"running {n} request(s) at concurrency {c} ({', '.join(clients)}; run {i + 1} of "
                      f"{args.repeat}) ...", file=sys.stderr, flush=True)
                runs.append(run_level(workdir, rng, c, n, args.workers, clients, i, args.warm, args.client_workers))
            results.extend(pooled(list(same)) for same in zip(*runs))
    print_table(results, time.perf_counter() - started, args.seed, args.workers, args.client_workers)
    for line in versus_bare(results):
        print(line)
    return 0


def pooled(runs: list[LevelResult]) -> LevelResult:
    """Several runs of one client at one level as one result (lists merged, counts added)."""
    first = runs[0]
    if len(runs) == 1:
        return first
    merged = {k: (sorted(x for r in runs for x in getattr(r, k)) if isinstance(v, list)
                  else sum(getattr(r, k) for r in runs) if isinstance(v, (int, float)) else v)
              for k, v in first.__dict__.items()}
    merged["concurrency"], merged["lag"] = first.concurrency, max((r.lag for r in runs), key=lambda x: x.get("max_s", 0))
    return LevelResult(**merged)


def versus_bare(results: list[LevelResult]) -> list[str]:
    """streamrun's TTFT error beyond the bare client's, per level (what streamrun itself adds)."""
    bare = {r.concurrency: r for r in results if r.client == "bare"}
    lines = []
    for r in results:
        b = bare.get(r.concurrency)
        if r.client != "streamrun" or b is None or not r.ttft_err_ms or not b.ttft_err_ms:
            continue
        d = [percentile(r.ttft_err_ms, q) - percentile(b.ttft_err_ms, q) for q in (50, 99)]
        lines.append(f"streamrun - bare at {r.concurrency:,} stream(s): TTFT error p50 {d[0]:+.2f} ms, "
                     f"p99 {d[1]:+.2f} ms")
    return lines


if __name__ == "__main__":
    sys.exit(main())
