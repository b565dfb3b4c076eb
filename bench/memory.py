"""Memory over a long input: is streamrun's RSS flat from the first record to the last?

Writes an N-line input into a temporary directory (never into the repo),
runs `streamrun run` against a fast mock (no TTFT, no pacing, 4 tokens per
reply, several worker processes), samples the streamrun process's RSS every
0.5 s with psutil and counts the result lines written so far, then prints
RSS at 10 %, 50 % and 100 % of the records, the peak (VmHWM) and the times.

    python bench/memory.py                 # 1,000,000 lines (a few minutes)
    python bench/memory.py --lines 200000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench as harness  # noqa: E402  (bench/bench.py: the mock, pinning, descriptors)

WORDS = (b"alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike november oscar papa "
         b"quebec romeo sierra tango uniform victor whiskey xray yankee zulu").split()


def write_input(path: Path, lines: int, output_tokens: int) -> None:
    """Chat lines with unique ids and a short varied prompt; ~1 s per million lines."""
    n = len(WORDS)
    with open(path, "wb", buffering=1 << 20) as f:
        batch = []
        for i in range(lines):
            prompt = b" ".join((WORDS[i % n], WORDS[(i // n) % n], WORDS[(i // (n * n)) % n], b"once more"))
            batch.append(b'{"custom_id":"m-%d","messages":[{"role":"user","content":"%s"}],"max_tokens":%d}\n'
                         % (i, prompt, output_tokens))
            if len(batch) == 10000:
                f.write(b"".join(batch))
                batch.clear()
        f.write(b"".join(batch))


class LineCounter:
    """Counts newlines appended to a file since the last call (reads only the new bytes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.count = 0

    def update(self) -> int:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                while chunk := f.read(1 << 22):
                    self.count += chunk.count(b"\n")
                    self.offset += len(chunk)
        except FileNotFoundError:
            pass
        return self.count


def run(args) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="streamrun-memory-"))
    client_cpus, server_cpus, cpu_line = harness.cpu_plan(args.pin)
    ok, msg = harness.ensure_nofile(args.concurrency)
    if not ok:
        sys.exit(f"memory: {msg}")
    mock = None
    try:
        t = time.perf_counter()
        inp = tmp / "input.jsonl"
        write_input(inp, args.lines, args.output_tokens)
        gen_s = time.perf_counter() - t
        print(f"memory: wrote {args.lines:,} lines ({inp.stat().st_size / 2**20:.0f} MiB) in {gen_s:.1f}s",
              file=sys.stderr, flush=True)
        mock = harness.Mock(args.server_workers, args.output_tokens, 0.0, 0.0, server_cpus,
                            lifetime_s=args.timeout + 120)
        out = tmp / "results.jsonl"
        cmd = [*harness.streamrun_cmd(), "run", str(inp), "-o", str(out), "--base-url", mock.url,
               "-c", str(args.concurrency), "--fsync", "never", "--no-progress", "--overwrite"]
        env = harness.client_env()
        samples: list[tuple[float, float, int]] = []  # (seconds since start, RSS MiB, lines written)
        counter = LineCounter(out)
        err_path = tmp / "streamrun.err"
        with open(err_path, "wb") as err:
            t0 = time.perf_counter()
            proc = psutil.Popen(cmd, stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=env,
                                cwd=harness.ROOT)
            if client_cpus:
                try:
                    os.sched_setaffinity(proc.pid, client_cpus)
                except ProcessLookupError:
                    pass
            hwm = 0.0
            deadline = time.monotonic() + args.timeout
            while proc.poll() is None:
                try:
                    rss = proc.memory_info().rss / 2**20
                except psutil.NoSuchProcess:
                    break
                hwm = max(hwm, harness._vm_hwm_mib(proc.pid) or 0.0)
                samples.append((time.perf_counter() - t0, rss, counter.update()))
                if time.monotonic() > deadline:
                    proc.kill()
                    break
                time.sleep(args.interval)
            code = proc.wait()
            duration = time.perf_counter() - t0
        written = counter.update()
        stderr_tail = err_path.read_text(errors="replace")[-2000:]
    finally:
        if mock is not None:
            mock.stop()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    def at(fraction: float):
        target = fraction * args.lines
        for s in samples:
            if s[2] >= target:
                return s
        return samples[-1] if samples else None

    first = next((s for s in samples if s[2] > 0), None)
    top = max(samples, key=lambda s: s[1], default=None)
    report = {
        "lines": args.lines, "written": written, "exit_code": code, "duration_s": duration,
        "records_per_s": written / duration if duration else None,
        "first_record_s": first[0] if first else None,
        "rss_mib": {f"{int(f * 100)}%": (at(f)[1] if at(f) else None) for f in (0.10, 0.50, 1.0)},
        "peak_rss_mib": max(hwm, max((s[1] for s in samples), default=0.0)),
        "input_gen_s": gen_s, "concurrency": args.concurrency, "cpus": cpu_line,
        "peak_sample": {"t_s": top[0], "rss_mib": top[1], "records": top[2]} if top else None,
        "samples": [[round(t, 2), round(m, 1), n] for t, m, n in samples], "stderr_tail": stderr_tail,
    }
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--lines", type=int, default=1_000_000)
    ap.add_argument("--concurrency", type=int, default=256)
    ap.add_argument("--output-tokens", type=int, default=4)
    ap.add_argument("--server-workers", type=int, default=2)
    ap.add_argument("--pin", choices=("split", "none"), default="split")
    ap.add_argument("--interval", type=float, default=0.5, help="seconds between RSS samples")
    ap.add_argument("--timeout", type=float, default=3600.0, help="kill streamrun after this many seconds")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = ap.parse_args(argv)
    if args.lines < 1:
        ap.error("--lines must be positive")
    r = run(args)
    rss = r["rss_mib"]
    growth = (rss["100%"] - rss["10%"]) if rss["100%"] is not None and rss["10%"] is not None else None
    print(f"memory: {r['written']:,} of {r['lines']:,} records written, exit {r['exit_code']}, "
          f"in {r['duration_s']:.1f}s ({r['records_per_s']:,.0f} records/s; first record after "
          f"{r['first_record_s'] or 0:.1f}s), -c {r['concurrency']}, --fsync never")
    print("memory: RSS MiB at 10 % / 50 % / 100 % of records: "
          + " / ".join("-" if rss[k] is None else f"{rss[k]:.0f}" for k in ("10%", "50%", "100%"))
          + f"; peak {r['peak_rss_mib']:.0f} MiB"
          + ("" if growth is None else f"; growth 10 %->100 %: {growth:+.0f} MiB"))
    top = r["peak_sample"]
    if top:
        print(f"memory: highest RSS sample {top['rss_mib']:.0f} MiB at {top['t_s']:.1f}s, "
              f"{top['records']:,} records written ({100 * top['records'] / r['lines']:.0f} %)")
    print(f"memory: {r['cpus']}")
    if r["exit_code"] != 0:
        print("memory: streamrun's stderr ends with:\n" + r["stderr_tail"], file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=2))
    return 0 if r["exit_code"] == 0 and r["written"] == r["lines"] else 1


if __name__ == "__main__":
    sys.exit(main())
