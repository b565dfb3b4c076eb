#!/usr/bin/env bash
# `make test-slurm`: the Slurm example as a user runs it, on a real one-node cluster.
#   1. deploy/slurm-up.sh brings the cluster up if none answers;
#   2. the checkout's files (tracked and new, not the ignored ones: no out/, as in
#      a fresh clone) are copied to a scratch directory, with .venv linked in;
#   3. there, `sbatch jobs/slurm-array.sh` submits the array as written (the
#      sample job against the embedded mock, in 4 shards) and waits for it;
#   4. every task must end COMPLETED with exit 0 and leave its log;
#   5. `streamrun merge` joins the shard outputs against the inputs (exit 0: no
#      duplicate, missing or extra id), and every input line must have exactly
#      one record, with status ok, in exactly one shard.
# Environment: SLURM_TEST_TIMEOUT (seconds, default 600); KEEP=1 keeps the scratch dir.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY="$ROOT/.venv/bin/python"
TIMEOUT="${SLURM_TEST_TIMEOUT:-600}"
say() { echo "test-slurm: $*"; }

bash deploy/slurm-up.sh

work=$(mktemp -d "${TMPDIR:-/tmp}/streamrun-slurm.XXXXXX")
chmod 0755 "$work"       # tasks run as the submitting user; the spool copy of the script reads nothing here
cleanup() { if [[ "${KEEP:-0}" == 1 ]]; then say "kept $work"; else rm -rf "$work"; fi; }
trap cleanup EXIT
if git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$ROOT" ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done \
        | xargs -0 cp --parents -t "$work"
else
    tar -C "$ROOT" --exclude=./.venv --exclude=./out --exclude=./.git -cf - . | tar -C "$work" -xf -
fi
ln -s "$ROOT/.venv" "$work/.venv"
[[ ! -e "$work/out" ]] || { say "the scratch copy has out/ (it must not, as in a fresh clone)"; exit 1; }
cd "$work"
say "fresh copy in $work (no out/ directory)"

# 3. As written: the directives in the script decide array, log path, resources.
say "sbatch jobs/slurm-array.sh"
set +e
jobid=$(sbatch --parsable jobs/slurm-array.sh)
rc=$?
set -e
[[ $rc -eq 0 && -n "$jobid" ]] || { say "sbatch failed ($rc)"; exit 1; }
jobid=${jobid%%;*}
say "submitted array job $jobid; waiting (at most ${TIMEOUT}s)"
deadline=$((SECONDS + TIMEOUT))
while squeue -h -j "$jobid" 2>/dev/null | grep -q .; do
    if (( SECONDS > deadline )); then
        say "timed out: cancelling $jobid"; scancel "$jobid" || true
        squeue -j "$jobid" || true
        exit 1
    fi
    sleep 1
done

# 4. Each task's end state (kept by slurmctld for MinJobAge, 300 s by default).
fail=0
scontrol -o show job "$jobid" >tasks.txt || { say "scontrol show job $jobid failed"; exit 1; }
tasks=0
while read -r line; do
    task=$(grep -o 'ArrayTaskId=[^ ]*' <<<"$line" | cut -d= -f2)
    state=$(grep -o 'JobState=[^ ]*' <<<"$line" | cut -d= -f2)
    code=$(grep -o ' ExitCode=[^ ]*' <<<"$line" | cut -d= -f2)
    reason=$(grep -o 'Reason=[^ ]*' <<<"$line" | cut -d= -f2)
    say "task $task: $state exit $code ($reason)"
    tasks=$((tasks + 1))
    [[ "$state" == COMPLETED && "$code" == 0:0 ]] || fail=1
done <tasks.txt
(( tasks == 4 )) || { say "expected 4 array tasks, found $tasks"; fail=1; }
for i in 0 1 2 3; do
    log="streamrun-sample-${jobid}_$i.log"
    if [[ -s "$log" ]]; then
        say "$log: $(wc -l <"$log") lines, last: $(tail -n1 "$log" | cut -c1-160)"
    else
        say "no log $log"; fail=1
    fi
done
if (( fail )); then
    for f in streamrun-sample-*.log; do [[ -e "$f" ]] && { echo "--- $f"; cat "$f"; }; done
    say "FAILED: an array task did not complete"
    exit 1
fi

# 5. Merge, then check the result against the inputs independently of merge.
shards=(out/sample-*of4.jsonl)
say "shard outputs: ${shards[*]}"
say "streamrun merge ${shards[*]} -o out/all.jsonl --inputs sample_inputs/prompts.jsonl --missing out/missing.jsonl"
.venv/bin/streamrun merge "${shards[@]}" -o out/all.jsonl \
    --inputs sample_inputs/prompts.jsonl --missing out/missing.jsonl
"$PY" - "${shards[@]}" <<'EOF'
import collections, json, sys
from runner.inputs.items import iter_items

expected = [item.custom_id for item in iter_items(["sample_inputs/prompts.jsonl"])]
assert len(expected) == len(set(expected)), "the inputs repeat an id"
merged = [json.loads(line) for line in open("out/all.jsonl", encoding="utf-8")]
per_id = collections.Counter(r["custom_id"] for r in merged)
ok = collections.Counter(r["custom_id"] for r in merged if r.get("status") == "ok")
problems = [f"{i}: {per_id[i]} records, {ok[i]} ok" for i in expected if per_id[i] != 1 or ok[i] != 1]
problems += [f"extra id {i}" for i in per_id if i not in set(expected)]
in_shards = collections.Counter()
for path in sys.argv[1:]:
    ids = [json.loads(line)["custom_id"] for line in open(path, encoding="utf-8")]
    print(f"test-slurm: {path}: {len(ids)} records")
    in_shards.update(ids)
problems += [f"{i} is in {n} shards" for i, n in in_shards.items() if n != 1]
problems += [f"{i} is in no shard" for i in expected if i not in in_shards]
if len(sys.argv) - 1 != 4:
    problems.append(f"{len(sys.argv) - 1} shard files, expected 4")
if problems:
    sys.exit("test-slurm: FAILED:\n  " + "\n  ".join(problems))
print(f"test-slurm: OK: {len(expected)} inputs, each with exactly one ok record, over 4 shards")
EOF
