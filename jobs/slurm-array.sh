#!/usr/bin/env bash
# N shards of jobs/sharded.toml as a Slurm job array.  From the checkout's root:
#   sbatch jobs/slurm-array.sh
# Slurm sets SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT; streamrun maps them to
# shard I of N and writes out/sample-<date>-<I>of4.jsonl.  When every task has finished:
#   streamrun merge out/sample-*of4.jsonl -o out/all.jsonl --inputs sample_inputs/prompts.jsonl
# `make test-slurm` runs exactly this on a one-node cluster (deploy/slurm-up.sh).
#
# The log goes to the submit directory, which always exists: Slurm does not
# create directories, and a log path under a missing one (out/ in a fresh
# clone) fails every task at launch.  streamrun itself creates out/.
#SBATCH --job-name=streamrun-sample
#SBATCH --array=0-3
#SBATCH --cpus-per-task=2
#SBATCH --mem=1G
#SBATCH --time=02:00:00
#SBATCH --signal=B:TERM@60          # SIGTERM 60 s before the time limit: drain, then exit 143
#SBATCH --output=%x-%A_%a.log
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
if [[ ! -f jobs/sharded.toml ]]; then
    echo "slurm-array.sh: no jobs/sharded.toml in $PWD: submit from the checkout's root (sbatch jobs/slurm-array.sh)" >&2
    exit 2
fi
# The checkout's venv (make creates it), else streamrun on PATH; STREAMRUN=... overrides.
STREAMRUN="${STREAMRUN:-$(test -x .venv/bin/streamrun && echo .venv/bin/streamrun || echo streamrun)}"
exec "$STREAMRUN" --log-format json job jobs/sharded.toml
