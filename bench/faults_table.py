"""The table of faults on the wire in docs/networks.md, made by running the fault tests (``make fault-table``).

tests/engine/test_faults.py puts a fault-injecting TCP proxy between streamrun and the mock and checks each
fault's outcome; with STREAMRUN_FAULT_TABLE set, each test also appends what it saw (records ok, retried,
errors by type, the run's time, the lowest TTFT) to that file.  This runs those tests once and prints
the rows as the page's Markdown table, to paste there.

Usage: python bench/faults_table.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        rows_file = Path(tmp) / "faults.jsonl"
        # pytest's own lines go to stderr: stdout is the table alone, to paste
        res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                              "tests/engine/test_faults.py"], cwd=ROOT, stdout=sys.stderr,
                             env={**os.environ, "STREAMRUN_FAULT_TABLE": str(rows_file)})
        if res.returncode != 0:
            print("the fault tests failed: no table", file=sys.stderr)
            return res.returncode
        rows = [json.loads(line) for line in rows_file.read_text().splitlines()]
    print("| fault | what the link did | records ok | retried | errors | run time | lowest TTFT (link's delay) "
          "| ok after --resume |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        errors = ", ".join(f"{n} {kind}" for kind, n in sorted(r["errors"].items())) or "none"
        ttft = "-" if r["ttft_min_s"] is None else f"{r['ttft_min_s'] * 1000:.0f} ms"
        if r["added_delay_s"]:
            ttft += f" (≥ {r['added_delay_s'] * 1000:.0f} ms)"
        ok = f"{r['ok']} of {r['records']}" if r["records"] else "none written (exit 2)"
        resumed = "-" if r["resumed_ok"] is None else f"{r['resumed_ok']} of {r['records']}, none twice"
        print(f"| {r['fault']} | {r['how']} | {ok} | {r['retried']} | {errors} | {r['seconds']:.1f} s | {ttft} "
              f"| {resumed} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
