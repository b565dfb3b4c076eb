"""How `make bench` runs and measures each client (used by bench/bench.py).

* `Mock`: `streamrun mock --workers W` in its own session, pinned to its CPUs,
  with the CPU time of its whole process tree.
* `bench_one`: one client run (ceiling, parse, streamrun at --workers N,
  streamrun-otlp: streamrun with --otlp-endpoint, naive) as its own process, pinned to its CPUs; wall time, CPU time (wait4:
  the process and every child it reaped, so streamrun's worker processes
  count), peak RSS (VmHWM, summed over the process tree), the mock's CPU
  during the run, and the client's own counts and TTFTs.
* `OtlpSink`: the collector streamrun-otlp exports its spans to (it counts them).
* `startup_ms`: `streamrun --help` timing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

try:
    import psutil
except ImportError:  # pragma: no cover - the bench extra installs it
    sys.exit("bench: psutil is missing: pip install -e '.[bench]' (make bench does)")

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
PY = sys.executable
CLIENTS = ("ceiling", "parse", "streamrun", "streamrun-otlp", "naive")
STREAMRUNS = ("streamrun", "streamrun-otlp")  # the real CLI; -otlp: with tracing on (a span per request)


def streamrun_cmd() -> list[str]:
    """The console script next to this interpreter when installed, else the module."""
    script = Path(PY).parent / "streamrun"
    return [str(script)] if script.exists() else [PY, "-m", "runner.cli"]


def client_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENAI_")}  # never send a real key
    for key in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "all_proxy"):
        env.pop(key, None)
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


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
    workers: int = 1  # streamrun --workers; 1 for the other clients (one process each)
    client_cpus: int = 0  # CPUs the client process(es) were pinned to; 0 = not pinned
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
    def label(self) -> str:
        if self.client == "streamrun-otlp":
            return "streamrun+otlp"
        return f"streamrun w={self.workers}" if self.client == "streamrun" else self.client

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


def run_client(cmd: list[str], env: dict, mock: Mock, cpus: set[int] | None, timeout: float,
               stdout_path: Path, stderr_path: Path, res: Result, tree: bool = False) -> int:
    """Run one client process to its end; fill wall, CPU, peak RSS, server CPU.

    `tree`: the client starts processes of its own (streamrun --workers);
    its peak RSS is then the sum of each process's VmHWM (the processes live
    side by side), found every 0.5 s.  Its CPU time always includes them:
    wait4 counts every child the client reaped."""
    stop = threading.Event()
    samples: list[float] = []
    hwm: dict[int, float] = {}  # pid -> VmHWM MiB
    children: set[int] = set()

    def note_hwm(pids) -> None:
        for pid in pids:
            h = _vm_hwm_mib(pid)
            if h:
                hwm[pid] = max(hwm.get(pid, 0.0), h)

    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        server_before = mock.cpu_seconds()
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, cwd=ROOT)
        if cpus:
            try:
                os.sched_setaffinity(proc.pid, cpus)  # before it starts any worker: they inherit it
            except ProcessLookupError:
                pass

        def sample() -> None:
            last_t, last_cpu = time.perf_counter(), mock.cpu_seconds()
            while not stop.wait(0.5):
                now, cpu = time.perf_counter(), mock.cpu_seconds()
                samples.append((cpu - last_cpu) / (now - last_t))
                last_t, last_cpu = now, cpu
                if tree:
                    try:
                        children.update(c.pid for c in psutil.Process(proc.pid).children(recursive=True))
                    except psutil.NoSuchProcess:
                        pass
                note_hwm([proc.pid, *children])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        deadline = time.monotonic() + timeout
        status = rusage = None
        while True:  # wait4 for the rusage; poll so the time limit holds
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            note_hwm([proc.pid, *children])
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
    res.peak_rss_mib = sum(hwm.values()) or rusage.ru_maxrss / 1024
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


def bench_one(client: str, concurrency: int, prompts: Path, n_requests: int, events_per_request: int,
              mock: Mock, cpus: set[int] | None, tmp: Path, timeout: float, workers: int = 1,
              otlp: str | None = None) -> Result:
    """One client run: `client` at `concurrency` (streamrun at `--workers workers`), pinned to `cpus`;
    streamrun-otlp exports its spans to `otlp` (an OtlpSink's URL)."""
    res = Result(client, concurrency, n_requests, workers=workers, client_cpus=len(cpus) if cpus else 0)
    tag = f"{client}-w{workers}-c{concurrency}" if client == "streamrun" else f"{client}-c{concurrency}"
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
        if workers > 1:  # --workers 1 is the default: the command stays exactly what users run
            cmd += ["--workers", str(workers)]
        if client == "streamrun-otlp":
            cmd += ["--otlp-endpoint", otlp]
    code = run_client(cmd, env, mock, cpus, timeout, stdout, stderr, res, tree=workers > 1)
    if res.failure:
        return res
    if client in STREAMRUNS:
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
# the OTLP collector of streamrun-otlp


class OtlpSink:
    """An OTLP/HTTP collector on 127.0.0.1 that answers every export at once and counts its spans
    (decoded with opentelemetry-proto): what tracing costs the client, not a collector's speed."""

    def __init__(self) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        sink = self
        self.spans = 0
        self._lock = threading.Lock()

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                request = ExportTraceServiceRequest()
                request.ParseFromString(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                n = sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)
                with sink._lock:
                    sink.spans += n
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


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
