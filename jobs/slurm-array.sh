#!/usr/bin/env bash
# N shards of jobs/sharded.toml as a Slurm job array: sbatch jobs/slurm-array.sh
# Slurm sets SLURM_ARRAY_TASK_ID / SLURM_ARRAY_TASK_COUNT; streamrun maps them to
# shard I of N.  When every task has finished:
#   streamrun merge out/sample-*of4.jsonl -o out/all.jsonl --inputs sample_inputs/prompts.jsonl
#SBATCH --job-name=streamrun-sample
#SBATCH --array=0-3
#SBATCH --cpus-per-task=2
#SBATCH --mem=1G
#SBATCH --time=02:00:00
#SBATCH --signal=B:TERM@60          # SIGTERM 60 s before the time limit: drain, then exit 143
#SBATCH --output=out/slurm-%A_%a.log
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
exec .venv/bin/streamrun --log-format json job jobs/sharded.toml
