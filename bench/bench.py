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
            results file; TTFT read back from that file.
* naive     bench/naive.py: requests + iter_lines + json.loads per event in
            a ThreadPoolExecutor of N threads.

See bench/README.md for what the columns mean and how to run 1 to 2,000
streams.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # runner, when not installed
from runner.stats import percentile  # noqa: E402  the one implementation (numpy's "linear")

try:
    import psutil
except ImportError:  # pragma: no cover - the bench extra installs it
    sys.exit("bench: psutil is missing: pip install -e '.[bench]' (make bench does)")

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable
CLIENTS = ("ceiling", "parse", "streamrun", "naive")
FD_MARGIN = 256  # descriptors beyond one socket per stream: files, pipes, the loop's own


def streamrun_cmd() -> list[str]:
    """The console script next to this interpreter when installed, else the module."""
    script = Path(PY).parent / "streamrun"
    return [str(script)] if script.exists() else [PY, "-m", "runner.cli"]


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
# the mock server


class Mock:
    """`streamrun mock --workers W` in its own session, pinned to `cpus`."""

    def __init__(self, workers: int, output_tokens: int, ttft: float, tokens_per_s: float,
                 cpus: set[int] | None, lifetime_s: float, startup_timeout: float = 60.0) -> None:
        cmd = [*streamrun_cmd(), "mock", "--host", "127.0.0.1", "--port", "0", "--ttft", str(ttft),
               "--tokens-per-s", str(tokens_per_s), "--output-tokens", str(output_tokens),
               "--workers", str(workers)]
        if shutil.which("timeout"):  # bounded even if this harness is killed -9
            cmd = ["timeout", "-k", "5", f"{lifetime_s:.0f}", *cmd]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True, cwd=ROOT,
                                     preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
        self.cpus = cpus
        self.url = None
        lines: list[str] = []
        ready = threading.Event()

        def read() -> None:
            for raw in self.proc.stderr:
                line = raw.decode(errors="replace").rstrip()
                lines.append(line)
                if "listening on " in line and self.url is None:
                    self.url = line.split("listening on ", 1)[1].strip()
                    ready.set()
            ready.set()

        threading.Thread(target=read, daemon=True).start()
        if not ready.wait(startup_timeout) or self.url is None:
            self.stop()
            raise RuntimeError("mock server did not start:\n" + "\n".join(lines[-20:]))
        self.procs = self.tree()
        self.workers = workers

    def tree(self) -> list[psutil.Process]:
        try:
            parent = psutil.Process(self.proc.pid)
            return [parent, *parent.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        total = 0.0
        for p in self.procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.NoSuchProcess:
                pass
        return total

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # `timeout` passes it on; the mock's parent terminates its workers
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the session we created for it
                self.proc.wait(5)


# --------------------------------------------------------------------------
# one client run


@dataclass
class Result:
    client: str
    concurrency: int
    requests: int
    ok: int = 0
    errors: int = 0
    events: int = 0
    wall_s: float = 0.0  # process start to exit
    active_s: float = 0.0  # first request sent to last response read, as the client measured it
    cpu_s: float = 0.0
    peak_rss_mib: float = 0.0
    ttfts: list[float] = field(default_factory=list)
    server_cpu_s: float = 0.0  # the mock's CPU seconds during this client's run
    server_cpus: int = 1  # CPUs the mock may use
    server_cpu_peak: float = 0.0  # highest 0.5 s sample, as a share of server_cpus
    failure: str = ""

    @property
    def span_s(self) -> float:
        return self.active_s or self.wall_s

    @property
    def req_s(self) -> float:
        return self.ok / self.span_s if self.span_s else 0.0

    @property
    def events_s(self) -> float:
        return self.events / self.span_s if self.span_s else 0.0

    @property
    def server_cpu_avg(self) -> float:
        """The mock's busy share of its CPUs while this client streamed."""
        return self.server_cpu_s / self.span_s / self.server_cpus if self.span_s else 0.0

    @property
    def cpu_per_1k_events(self) -> float | None:
        return 1000 * self.cpu_s / self.events if self.events else None


def _vm_hwm_mib(pid: int) -> float | None:
    """The process's own peak RSS (VmHWM), read while it lives.

    Not ru_maxrss from wait4: on Linux that also counts the memory of the
    forking parent at exec time, i.e. this harness."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_client(name: str, cmd: list[str], env: dict, mock: Mock, cpus: set[int] | None, timeout: float,
               stdout_path: Path, stderr_path: Path, res: Result) -> int:
    """Run one client process to its end; fill wall, CPU, peak RSS, server CPU."""
    stop = threading.Event()
    samples: list[float] = []
    hwm = [0.0]

    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        server_before = mock.cpu_seconds()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=ROOT)
        if cpus:
            try:
                os.sched_setaffinity(proc.pid, cpus)
            except ProcessLookupError:
                pass

        def sample() -> None:
            last_t, last_cpu = time.perf_counter(), mock.cpu_seconds()
            while not stop.wait(0.5):
                now, cpu = time.perf_counter(), mock.cpu_seconds()
                samples.append((cpu - last_cpu) / (now - last_t))
                last_t, last_cpu = now, cpu
                h = _vm_hwm_mib(proc.pid)
                if h:
                    hwm[0] = max(hwm[0], h)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        deadline = time.monotonic() + timeout
        status = rusage = None
        while True:  # wait4 for the rusage; poll so the time limit holds
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            h = _vm_hwm_mib(proc.pid)
            if h:
                hwm[0] = max(hwm[0], h)
            if time.monotonic() > deadline:
                proc.kill()
                pid, status, rusage = os.wait4(proc.pid, 0)
                res.failure = f"killed after {timeout:.0f}s (--client-timeout)"
                break
            time.sleep(0.05)
        res.wall_s = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        stop.set()
        sampler.join()
        server_cpu = mock.cpu_seconds() - server_before
    n_server_cpus = len(mock.cpus) if mock.cpus else os.cpu_count() or 1
    res.cpu_s = rusage.ru_utime + rusage.ru_stime
    res.peak_rss_mib = hwm[0] or rusage.ru_maxrss / 1024
    res.server_cpu_s = server_cpu
    res.server_cpus = n_server_cpus
    res.server_cpu_peak = max(samples, default=0.0) / n_server_cpus
    return proc.returncode


def probe_events(url: str, prompts: Path) -> int:
    """SSE events the server sends for one of these prompts (all are the same length)."""
    with open(prompts, "rb") as f:
        line = json.loads(f.readline())
    line.pop("custom_id", None)
    body = {**line, "stream": True, "stream_options": {"include_usage": True}}
    req = urllib.request.Request(url.rstrip("/") + "/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(req, timeout=30) as resp:
        return sum(1 for raw in resp.read().split(b"\n") if raw.startswith(b"data:"))


def client_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}  # never send a real key
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        env.pop(key, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def bench_one(client: str, concurrency: int, prompts: Path, n_requests: int, events_per_request: int,
              mock: Mock, cpus: set[int] | None, tmp: Path, timeout: float) -> Result:
    res = Result(client, concurrency, n_requests)
    tag = f"{client}-c{concurrency}"
    stdout, stderr = tmp / f"{tag}.out", tmp / f"{tag}.err"
    env = client_env()
    if client in ("ceiling", "parse"):
        cmd = [PY, str(BENCH / "ceiling.py"), str(prompts), mock.url, str(concurrency),
               "parse" if client == "parse" else "count"]
    elif client == "naive":
        cmd = [PY, str(BENCH / "naive.py"), str(prompts), mock.url, str(concurrency)]
    else:
        results = tmp / f"{tag}.jsonl"
        cmd = [*streamrun_cmd(), "run", str(prompts), "-o", str(results), "--base-url", mock.url,
               "-c", str(concurrency), "--no-progress", "--overwrite"]
    code = run_client(client, cmd, env, mock, cpus, timeout, stdout, stderr, res)
    if res.failure:
        return res
    if client == "streamrun":
        if code not in (0, 1):
            res.failure = f"exit {code}: " + stderr.read_text(errors="replace")[-500:]
            return res
        with open(results, "rb") as f:
            for raw in f:
                rec = json.loads(raw)
                if rec.get("status") == "ok":
                    res.ok += 1
                    ttft = rec["metrics"].get("ttft_s")
                    if ttft is not None:
                        res.ttfts.append(ttft)
                else:
                    res.errors += 1
        res.errors += max(0, n_requests - res.ok - res.errors)  # records never written
        res.events = res.ok * events_per_request
        try:  # first request sent -> last response ended, from the records' own stamps
            summary = json.loads(results.with_name(results.stem + ".summary.json").read_text())
            res.active_s = float(summary["summary"]["duration_s"] or 0.0)
        except (OSError, ValueError, KeyError, TypeError):
            pass
    else:
        if code != 0:
            res.failure = f"exit {code}: " + stderr.read_text(errors="replace")[-500:]
            return res
        data = json.loads(stdout.read_text())
        res.ok, res.errors, res.events, res.ttfts = data["ok"], data["errors"], data["events"], data["ttft_s"]
        res.active_s = data["run_s"]
    return res


# --------------------------------------------------------------------------
# startup


def startup_ms(runs: int = 5) -> tuple[float, float]:
    """Median wall time of `streamrun --help` (and of `python -c pass`, for scale)."""
    def median_of(cmd: list[str]) -> float:
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # warm the page cache
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
            times.append(time.perf_counter() - t)
        return 1000 * statistics.median(times)

    return median_of([*streamrun_cmd(), "--help"]), median_of([PY, "-c", "pass"])


# --------------------------------------------------------------------------
# output


def fmt(x, spec: str, none: str = "-") -> str:
    return none if x is None else format(x, spec)


def print_table(results: list[Result], notes: list[str], file=sys.stdout) -> None:
    header = ("conc", "client", "req/s", "events/s", "vs ceiling", "vs parse", "CPU s/1k ev", "peak RSS MiB",
              "TTFT p50 ms", "TTFT p99 ms", "errors", "wall s", "server CPU avg/peak")
    rows = []
    ceilings = {r.concurrency: r.events_s for r in results if r.client == "ceiling" and not r.failure}
    parsed = {r.concurrency: r.events_s for r in results if r.client == "parse" and not r.failure}
    for r in results:
        if r.failure:
            rows.append((str(r.concurrency), r.client, "FAILED: " + r.failure.splitlines()[0][:90], *[""] * 10))
            continue
        ceiling, parse = ceilings.get(r.concurrency), parsed.get(r.concurrency)
        ttfts = sorted(r.ttfts)
        p50, p99 = percentile(ttfts, 50), percentile(ttfts, 99)
        rows.append((
            f"{r.concurrency:,}", r.client, f"{r.req_s:,.0f}", f"{r.events_s:,.0f}",
            f"{100 * r.events_s / ceiling:.0f} %" if ceiling else "-",
            f"{r.events_s / parse:.2f}x" if parse else "-",
            fmt(r.cpu_per_1k_events, ".4f"), f"{r.peak_rss_mib:.0f}",
            fmt(p50 and 1000 * p50, ".1f"), fmt(p99 and 1000 * p99, ".1f"),
            f"{r.errors:,}", f"{r.wall_s:.1f}",
            f"{100 * r.server_cpu_avg:.0f} % / {100 * r.server_cpu_peak:.0f} %",
        ))
    widths = [max(len(h), *(len(row[i]) for row in rows if not row[2].startswith("FAILED"))) if rows else len(h)
              for i, h in enumerate(header)]
    left = {1}

    def line(cells) -> str:
        if cells[2].startswith("FAILED"):
            return "  ".join([cells[0].rjust(widths[0]), cells[1].ljust(widths[1]), cells[2]])
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


# --------------------------------------------------------------------------


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
    ap.add_argument("--server-workers", type=int, default=2, help="mock server processes (default 2)")
    ap.add_argument("--pin", choices=("split", "none"), default="split",
                    help="split: clients on one CPU, server on the others (default); none: let the kernel place them")
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
    try:
        args.concurrency = [int(x) for x in str(args.concurrency).split(",") if x.strip()]
    except ValueError:
        ap.error("--concurrency: a comma list of integers")
    if not args.concurrency or min(args.concurrency) < 1:
        ap.error("--concurrency: positive integers")
    args.clients = [c.strip() for c in args.clients.split(",") if c.strip()]
    unknown = set(args.clients) - set(CLIENTS)
    if unknown or not args.clients:
        ap.error(f"--clients: choose from {','.join(CLIENTS)}")
    if args.requests is not None and args.requests < 1:
        ap.error("--requests must be positive")
    return args


def cpu_plan(pin: str) -> tuple[set[int] | None, set[int] | None, str]:
    """(client CPUs, server CPUs, a line that says what was done)."""
    avail = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if pin == "split" and len(avail) >= 2:
        client, server = {avail[0]}, set(avail[1:])
        return client, server, (f"CPUs: {len(avail)}; client pinned to CPU {avail[0]}, mock server to CPU "
                                f"{','.join(map(str, avail[1:]))} (sched_setaffinity), for every client alike")
    why = " (fewer than 2 CPUs: nothing to split)" if pin == "split" else ""
    return None, None, f"CPUs: {len(avail) or os.cpu_count()}; no pinning{why}: client and server share every CPU"


def _sigterm(signum, frame):
    raise SystemExit(128 + signum)  # run the finally blocks: stop the server, remove the temp dir


def main(argv=None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _sigterm)
    started = time.perf_counter()
    notes: list[str] = []
    client_cpus, server_cpus, cpu_line = cpu_plan(args.pin)
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
    mock = None
    try:
        lifetime = 600 + len(runnable) * len(args.clients) * args.client_timeout
        mock = Mock(args.server_workers, args.output_tokens, args.ttft, args.tokens_per_s, server_cpus, lifetime)
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
            for client in args.clients:
                print(f"bench: c={c:,} {client}: {n:,} requests ...", file=sys.stderr, flush=True)
                r = bench_one(client, c, prompts, n, per_request, mock, client_cpus, tmp, args.client_timeout)
                results.append(r)
                state = r.failure or f"{r.events_s:,.0f} events/s, {r.errors} errors, {r.wall_s:.1f}s"
                print(f"bench:   {state}", file=sys.stderr, flush=True)
    finally:
        if mock is not None:
            mock.stop()

    notes.append("")
    notes.append(f"mock: ttft {args.ttft:g}s, tokens/s {args.tokens_per_s:g} (0 = no pacing), "
                 f"{args.output_tokens} content tokens + role, finish, usage and [DONE] = "
                 f"{args.output_tokens + 4} SSE events per request; {args.server_workers} worker processes.")
    notes.append(f"{cpu_line}.")
    notes.append("The machine's cores are shared by client and server: 'server CPU' is the mock's busy share of "
                 "its own CPU(s) while that client streamed (average over the streaming span / highest 0.5 s sample); well under 100 % means the "
                 "server had headroom and the client was the bottleneck.")
    for r in results:
        if not r.failure and r.server_cpu_avg > 0.8:
            notes.append(f"warning: the mock averaged {100 * r.server_cpu_avg:.0f} % of its CPU during {r.client} at "
                         f"c={r.concurrency:,}: that row may be server-bound (a ceiling row is then a lower bound).")
    notes.append("req/s and events/s: over the streaming span each client measured (first request sent -> last "
                 "response read; streamrun: its summary's duration_s); 'wall s' is the whole process (imports, "
                 "reading inputs, writing the summary). CPU = user+sys of the whole client process (all threads, "
                 "imports included); peak RSS = its VmHWM. events/s for streamrun = ok records x events per response.")
    notes.append("vs ceiling: events/s over the ceiling's (counts data: lines, parses nothing); vs parse: over the "
                 "parse ceiling's (bench/ceiling.py parse: splits every read into lines, orjson.loads on every event), "
                 "the least a client that reads the answers does.  streamrun TTFT comes from its results file "
                 "(request sent -> first content event); the others time the first chunk/line with content.")
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
        Path(args.json).write_text(json.dumps({
            "results": [{**{k: v for k, v in r.__dict__.items() if k != "ttfts"}, "server_cpu_avg": r.server_cpu_avg,
                         "req_s": r.req_s, "events_s": r.events_s, "cpu_per_1k_events": r.cpu_per_1k_events,
                         "ttft_p50_s": percentile(sorted(r.ttfts), 50),
                         "ttft_p99_s": percentile(sorted(r.ttfts), 99)}
                        for r in results],
            "memory": mem, "notes": notes}, indent=2))
    if args.keep:
        print(f"bench: kept {tmp}", file=sys.stderr)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if any(r.failure or r.errors for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
