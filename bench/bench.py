"""`make bench`: streamrun against bare-aiohttp ceilings and a naive requests client.

One mock server (several worker processes, SO_REUSEPORT) on 127.0.0.1
serves every client, one after the other, at each concurrency; all
figures in the table come from this one run.  Each client runs as its own
process, so its CPU time and peak RSS are its own:

* ceiling   bench/ceiling.py: one aiohttp session, N tasks, raw chunks,
            `data:` counted with bytes.count (no SSE decoding, no JSON).
* parse     bench/ceiling.py parse: the same, but every read split into
            lines and every event's JSON parsed with orjson: the least a
            client that reads the answers does ("vs parse").
* streamrun the real CLI (`streamrun run ... --no-progress`) writing a
            results file; TTFT read back from that file.  One row per
            `--workers` value (default 1 and 2: `streamrun w=2`), its
            processes given N+1 CPUs where there are ("vs w=1": scaling).
* streamrun+otlp  the same at --workers 1 with --otlp-endpoint: a span per
            request exported to an OTLP/HTTP sink in this process (the
            cost of tracing: the footer compares it with streamrun w=1).
* naive     bench/naive.py: requests + iter_lines + json.loads per event in
            a ThreadPoolExecutor of N threads.

See bench/README.md for what the columns mean, how to run 1 to 2,000
streams, and the --workers scaling table on a machine with more cores.
This file is the command line and the order of the runs; bench/clients.py
runs and measures each client, bench/table.py prints the table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # clients, table: when imported from elsewhere

from clients import (  # noqa: E402,F401  (bench/memory.py uses these through this module)
    BENCH, CLIENTS, PY, ROOT, Mock, OtlpSink, Result, _vm_hwm_mib, bench_one, client_env, probe_events, startup_ms,
    streamrun_cmd,
)
from table import as_json, fmt, print_table, scaling_notes, tracing_notes  # noqa: E402

FD_MARGIN = 256  # descriptors beyond one socket per stream: files, pipes, the loop's own


# --------------------------------------------------------------------------
# descriptors


def ensure_nofile(concurrency: int) -> tuple[bool, str]:
    """Raise RLIMIT_NOFILE's soft limit (inherited by every process started
    afterwards) so one client can hold `concurrency` sockets; say why not."""
    need = concurrency + FD_MARGIN
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return True, ""
    if hard != resource.RLIM_INFINITY and hard < need:
        return False, (f"concurrency {concurrency} needs about {need} open files, but the hard limit "
                       f"(ulimit -Hn) is {hard}: raise it (e.g. `ulimit -Hn {need}` as root, "
                       f"or LimitNOFILE= / nofile in /etc/security/limits.conf) and run again")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (need if hard == resource.RLIM_INFINITY else hard, hard))
    except (ValueError, OSError) as exc:
        return False, f"cannot raise the open-file limit from {soft} to {need}: {exc}"
    return True, f"raised the open-file soft limit from {soft} to {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}"


# --------------------------------------------------------------------------
# CPU placement


def _cpu_list(cpus) -> str:
    """0,1,2,3,7 -> '0-3,7'."""
    cpus, parts, i = sorted(cpus), [], 0
    while i < len(cpus):
        j = i
        while j + 1 < len(cpus) and cpus[j + 1] == cpus[j] + 1:
            j += 1
        parts.append(str(cpus[i]) if i == j else f"{cpus[i]}-{cpus[j]}")
        i = j + 1
    return ",".join(parts)


def cpu_plan(pin: str, client_n: int = 1, server_n: int | None = None) -> tuple[set[int] | None, set[int] | None, str]:
    """(client CPUs, server CPUs, a line that says what was done).

    split: the clients get the first `client_n` allowed CPUs, the mock the
    last `server_n` (default: every CPU the clients do not get)."""
    avail = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if pin == "split" and len(avail) >= 2:
        client_n = max(1, min(client_n, len(avail) - 1))
        server_n = len(avail) - client_n if server_n is None else max(1, min(server_n, len(avail) - client_n))
        client, server = set(avail[:client_n]), set(avail[len(avail) - server_n:])
        return client, server, (f"CPUs: {len(avail)}; clients pinned to CPU {_cpu_list(client)}, mock server to "
                                f"CPU {_cpu_list(server)} (sched_setaffinity)")
    why = " (fewer than 2 CPUs: nothing to split)" if pin == "split" else ""
    return None, None, f"CPUs: {len(avail) or os.cpu_count()}; no pinning{why}: client and server share every CPU"


def procs(client: str, workers: int) -> int:
    """Processes a client run keeps busy: streamrun --workers N is N workers and the parent."""
    return workers + 1 if client == "streamrun" and workers > 1 else 1


def row_cpus(client_cpus: set[int] | None, n_procs: int) -> set[int] | None:
    """The first n_procs client CPUs (all of them when there are fewer): every
    one-process client gets the same single CPU, streamrun w=N gets N+1."""
    return set(sorted(client_cpus)[:n_procs]) if client_cpus else None


# --------------------------------------------------------------------------


def _int_list(ap: argparse.ArgumentParser, flag: str, value: str) -> list[int]:
    try:
        out = [int(x) for x in str(value).split(",") if x.strip()]
    except ValueError:
        ap.error(f"{flag}: a comma list of integers")
    if not out or min(out) < 1:
        ap.error(f"{flag}: positive integers")
    return out


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", default="100,1000",
                    help="concurrent streams, a comma list (default: 100,1000)")
    ap.add_argument("--requests", type=int, default=None,
                    help="requests per client run (default: max(10000, 10 x concurrency))")
    ap.add_argument("--output-tokens", type=int, default=64, help="content events per response (default 64)")
    ap.add_argument("--input-tokens", type=int, default=32, help="prompt words per request (default 32)")
    ap.add_argument("--clients", default=",".join(CLIENTS), help="comma list of " + ",".join(CLIENTS))
    ap.add_argument("--workers", default="1,2",
                    help="streamrun --workers values, a comma list: one streamrun row each (default: 1,2)")
    ap.add_argument("--pin", choices=("split", "none"), default="split",
                    help="split: clients on the first CPUs, server on the others (default); none: let the kernel place them")
    ap.add_argument("--client-cpus", type=int, default=None, metavar="K",
                    help="with --pin split: CPUs for the clients, the first K allowed (default: the most "
                         "`streamrun --workers` needs, N+1, but at most half the CPUs; 1 with --workers 1)")
    ap.add_argument("--server-cpus", type=int, default=None, metavar="M",
                    help="with --pin split: CPUs for the mock, the last M allowed (default: all the clients do not get)")
    ap.add_argument("--server-workers", type=int, default=None,
                    help="mock server processes (default: one per mock CPU, at least 2)")
    ap.add_argument("--ttft", type=float, default=0.0, help="mock TTFT in seconds (default 0)")
    ap.add_argument("--tokens-per-s", type=float, default=0.0,
                    help="mock token rate per stream, 0 = as fast as possible (default 0)")
    ap.add_argument("--client-timeout", type=float, default=300.0, help="kill a client run after this many seconds")
    ap.add_argument("--no-startup", action="store_true", help="skip the `streamrun --help` timing")
    ap.add_argument("--memory", nargs="?", type=int, const=1_000_000, default=None, metavar="LINES",
                    help="also run bench/memory.py (default 1,000,000 lines: about 8 min on 2 cores)")
    ap.add_argument("--json", metavar="PATH", help="also write every figure as JSON to PATH")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (prompts, results, logs)")
    args = ap.parse_args(argv)
    args.concurrency = _int_list(ap, "--concurrency", args.concurrency)
    args.workers = sorted(set(_int_list(ap, "--workers", args.workers)))
    args.clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    unknown = set(args.clients) - set(CLIENTS)
    if unknown or not args.clients:
        ap.error(f"--clients: choose from {','.join(CLIENTS)}")
    if args.requests is not None and args.requests < 1:
        ap.error("--requests must be positive")
    for flag in ("client_cpus", "server_cpus", "server_workers"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            ap.error(f"--{flag.replace('_', '-')} must be positive")
    return args


def runs(clients_: list[str], workers: list[int]) -> list[tuple[str, int]]:
    """(client, workers) in table order: streamrun once per --workers value."""
    return [(c, w) for c in clients_ for w in (workers if c == "streamrun" else [1])]


def _sigterm(signum, frame):
    raise SystemExit(128 + signum)  # run the finally blocks: stop the server, remove the temp dir


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    started = time.perf_counter()
    notes: list[str] = []
    plan = runs(args.clients, args.workers)
    most = max(procs(c, w) for c, w in plan)
    n_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    client_n = args.client_cpus or min(most, max(1, n_cpus // 2))
    if args.pin == "split" and n_cpus >= 2 and client_n + (args.server_cpus or 1) > n_cpus:
        print(f"bench: --client-cpus {client_n} and --server-cpus {args.server_cpus or 1} need more than the "
              f"{n_cpus} CPUs this process may use", file=sys.stderr)
        return 2
    client_cpus, server_cpus, cpu_line = cpu_plan(args.pin, client_n, args.server_cpus)
    server_workers = args.server_workers or max(2, len(server_cpus) if server_cpus else 2)
    runnable = []
    for c in args.concurrency:
        ok, msg = ensure_nofile(c)
        if msg:
            print(f"bench: {msg}", file=sys.stderr)
        if ok:
            runnable.append(c)
        else:
            notes.append(f"skipped concurrency {c}: {msg}")
    results: list[Result] = []
    tmp = Path(tempfile.mkdtemp(prefix="streamrun-bench-"))
    mock = sink = None
    try:
        if "streamrun-otlp" in args.clients:
            sink = OtlpSink()
        lifetime = 600 + len(runnable) * len(plan) * args.client_timeout
        mock = Mock(server_workers, args.output_tokens, args.ttft, args.tokens_per_s, server_cpus, lifetime)
        print(f"bench: mock server {mock.url} ({mock.workers} worker process(es)); {cpu_line}", file=sys.stderr)
        for c in runnable:
            n = args.requests or max(10000, 10 * c)
            prompts = tmp / f"prompts-{n}.jsonl"
            if not prompts.exists():
                with open(prompts, "wb") as f:
                    subprocess.run([*streamrun_cmd(), "synth", "--n", str(n), "--input-tokens", str(args.input_tokens),
                                    "--output-tokens", str(args.output_tokens), "--model", "mock-model"],
                                   stdout=f, check=True, cwd=ROOT)
            per_request = probe_events(mock.url, prompts)
            for client, w in plan:
                if w > c:
                    notes.append(f"skipped streamrun w={w} at c={c:,}: --workers above -c is refused")
                    continue
                cpus = row_cpus(client_cpus, procs(client, w))
                label = f"streamrun w={w}" if client == "streamrun" else client
                print(f"bench: c={c:,} {label}: {n:,} requests ...", file=sys.stderr, flush=True)
                r = bench_one(client, c, prompts, n, per_request, mock, cpus, tmp, args.client_timeout, workers=w,
                              otlp=sink.url if sink is not None else None)
                results.append(r)
                state = r.failure or f"{r.events_s:,.0f} events/s, {r.errors} errors, {r.wall_s:.1f}s"
                print(f"bench:   {state}", file=sys.stderr, flush=True)
    finally:
        if mock is not None:
            mock.stop()
        if sink is not None:
            sink.stop()

    notes.append("")
    notes.append(f"mock: ttft {args.ttft:g}s, tokens/s {args.tokens_per_s:g} (0 = no pacing), "
                 f"{args.output_tokens} content tokens + role, finish, usage and [DONE] = "
                 f"{args.output_tokens + 4} SSE events per request; {server_workers} worker processes.")
    notes.append(f"{cpu_line}: every one-process client on CPU {min(client_cpus)}, streamrun w=N on the first "
                 f"N+1 of the clients' CPUs (its parent and N workers; 'CPUs' column)." if client_cpus else f"{cpu_line}.")
    for r in results:
        if not r.failure and r.client_cpus and procs(r.client, r.workers) > r.client_cpus:
            notes.append(f"note: {r.label} at c={r.concurrency:,} had {r.client_cpus} CPU(s) for "
                         f"{procs(r.client, r.workers)} processes: it cannot scale here (raise --client-cpus).")
    notes.append("The machine's cores are shared by client and server: 'server CPU' is the mock's busy share of "
                 "its own CPU(s) while that client streamed (average over the streaming span / highest 0.5 s sample); well under 100 % means the "
                 "server had headroom and the client was the bottleneck.")
    for r in results:
        if not r.failure and r.server_cpu_avg > 0.8:
            notes.append(f"warning: the mock averaged {100 * r.server_cpu_avg:.0f} % of its CPU during {r.label} at "
                         f"c={r.concurrency:,}: that row may be server-bound (a ceiling row is then a lower bound; "
                         f"give the mock more --server-cpus / --server-workers).")
    notes.append("req/s and events/s: over the streaming span each client measured (first request sent -> last "
                 "response read; streamrun: its summary's duration_s, worker start-up excluded); 'wall s' is the whole "
                 "process (imports, reading inputs, starting workers, writing the summary). CPU = user+sys of the whole "
                 "client process and every process it started (all threads, imports included); peak RSS = its VmHWM "
                 "(streamrun w>1: summed over the parent and its workers). events/s for streamrun = ok records x events "
                 "per response.")
    notes.append("vs ceiling: events/s over the ceiling's (counts data: lines, parses nothing); vs parse: over the "
                 "parse ceiling's (bench/ceiling.py parse: splits every read into lines, orjson.loads on every event), "
                 "the least a client that reads the answers does; vs w=1: streamrun's events/s over its own at "
                 "--workers 1.  streamrun TTFT comes from its results file "
                 "(request sent -> first content event); the others time the first chunk/line with content.")
    notes.extend(scaling_notes(results))
    notes.extend(tracing_notes(results, sink.spans if sink is not None else None))
    if not args.no_startup:
        help_ms, bare_ms = startup_ms()
        notes.append(f"startup: `streamrun --help` {help_ms:.0f} ms (median of 5; `python -c pass` {bare_ms:.0f} ms).")
    mem = None
    if args.memory:
        mem_cmd = [PY, str(BENCH / "memory.py"), "--lines", str(args.memory), "--json", str(tmp / "memory.json")]
        print(f"bench: memory run ({args.memory:,} lines) ...", file=sys.stderr, flush=True)
        subprocess.run(mem_cmd, check=False)
        if (tmp / "memory.json").exists():
            mem = json.loads((tmp / "memory.json").read_text())
            rss = mem["rss_mib"]
            notes.append(f"memory: {mem['written']:,}/{mem['lines']:,} records in {mem['duration_s']:.0f} s, RSS MiB at "
                         f"10/50/100 % of records " + " / ".join(fmt(rss[k], ".0f") for k in ("10%", "50%", "100%"))
                         + f", peak {mem['peak_rss_mib']:.0f} MiB (bench/memory.py, -c {mem['concurrency']}).")
    notes.append(f"bench wall time: {time.perf_counter() - started:.0f} s.")
    print_table(results, notes)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": as_json(results), "memory": mem, "notes": notes}, indent=2))
    if args.keep:
        print(f"bench: kept {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if any(r.failure or r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
