#!/usr/bin/env bash
# The 16-core tables of docs/performance.md: `make bench` with --workers 1..15, the single-process
# parse-ceiling ratio at 200 streams with the client alone on its core, and
# `make bench-accuracy` at 100 and 1,000 streams (one and four sending processes).
# Usage: bench/scaling.sh OUTDIR [PYTHON] [SCALE]  (SCALE 1 = docs/performance.md's sizes; 0.05 for a smoke run)
set -u
out=${1:?OUTDIR}; py=${2:-python3}; scale=${3:-1}
mkdir -p "$out"
n() { "$py" -c "print(max(200, int($1 * $scale)))"; }
{
  echo "cpus: $(nproc)"; lscpu 2>/dev/null | grep -E "^(Model name|Socket|Core|Thread|CPU max MHz|NUMA node\(s\))"
  "$py" -c "import sys, platform, aiohttp, msgspec, orjson; print(sys.version.split()[0], platform.machine(), 'aiohttp', aiohttp.__version__, 'msgspec', msgspec.__version__)"
  "$py" -c "import uvloop; print('uvloop', uvloop.__version__)" 2>/dev/null || echo "uvloop: not installed"
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"
run() {  # name, limit in seconds, command...
  local name=$1 limit=$2; shift 2
  echo "== $name: $*"; local t=$SECONDS
  timeout -k 5 "$limit" "$@" > "$out/$name.txt" 2>&1; echo "== $name: exit $? in $((SECONDS - t)) s"
  tail -n 25 "$out/$name.txt"
}
run scaling 330 "$py" bench/bench.py --workers 1,2,4,8,15 --concurrency 1000 --requests "$(n 100000)" \
  --clients ceiling,parse,streamrun --client-cpus 9 --server-cpus 7 --server-workers 7 --no-startup \
  --client-timeout 150 --json "$out/scaling.json"
run single 120 "$py" bench/bench.py --workers 1 --concurrency 200 --requests "$(n 40000)" \
  --clients ceiling,parse,streamrun --client-cpus 1 --server-cpus 6 --server-workers 6 --no-startup \
  --client-timeout 60 --json "$out/single.json"
run accuracy 150 "$py" bench/accuracy.py --levels 100,1000 --workers 6 --warm --repeat 3
run accuracy_w4 90 "$py" bench/accuracy.py --levels 1000 --workers 6 --warm --repeat 3 --client-workers 4 --clients streamrun
