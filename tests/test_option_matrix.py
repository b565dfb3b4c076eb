"""The option matrix: the options users combine, run pairwise through the CLI against the strict mock.

Why: each option has tests of its own, but users run them together (a nightly job resumes a
`--workers 2 --cache` run written as `--output-format openai-batch`; a benchmark sweeps `-c` under
`--duration` against `--api anthropic`), and bugs live in the combinations.  Every combination would
be 6,912 runs; the cases listed below hold every *pair* of levels, chosen by a small greedy
covering-array generator (`pairwise`).  Each goes through `python -m runner.cli run` as users run
it (exit codes, stderr and worker processes are part of what is checked) against one mock in its
own process (`streamrun mock`, strict; no delays unless a line asks for slow replies), with faults.

Factors (levels), and what each level passes
    workers   1 | 2                    --workers; -c is 2 per worker (one slot may stall, the other works)
    cache     off | warm               --cache FILE, filled first by a run of half the lines without faults
    resume    no | after-sigterm | keep-failed
                                       SIGTERM once p01's error record is on disk (p00 stalls in flight,
                                       so something is always cut off), then the same command + --resume
                                       | the same, the rerun with --resume --keep-failed
    budget    none | duration | num-prompts   --duration 0.5s, 24 lines and 0.4 s replies to those
                                       without faults (the deadline cuts every stage) | --num-prompts 8
    load      c | c-sweep | rate-sweep | auto-sweep
                                       -c 2w | -c 2w,3w | --rate 20,inf | --rate sweep --sweep-points 1
    api       chat | responses | anthropic     --api (the lines are shorthand {"messages": ...})
    sessions  no | yes                 p06 and p07 are two-turn sessions (p07 with a system prefix)
    format    streamrun | openai-batch         --output-format
    sink      file | stdout            -o FILE | -o -
    failures  recovered | permanent | budgeted
                                       p04 fails once with a 500 (retried) | with a 400 | with a 400
                                       under --max-failed 1
Every run also passes --max-tokens 16 (Responses' minimum), --max-attempts 2 and --drain-timeout 0.5,
and has API keys in its environment, which must appear nowhere.

Faults, by line (the mock's `mock.key`/`faults`: the n-th request of a key gets the n-th fault)
    p00  429 with Retry-After 0; with resume: a stall (headers, then nothing), cut off by the SIGTERM
    p01  503 (with --api anthropic a 529, Anthropic's overloaded_error); with resume: 500 twice, so
         the interrupted run writes a retryable error, which the rerun must send again (the last
         record per key is the final one)
    p02  a stream cut mid-way;  p03  an error event mid-stream;  p04  see `failures`
    p05  a system message (a plain line);  p07, a session: a 500 on its first turn;  the rest: none
A fault list is used up across stages: a sweep's later stages get plain answers.  Resume cases have
no 429 or 503: an adaptive cut to one slot while p00's stall holds it would wait for the idle timeout.

Constraints (pairs never generated; each is a refusal checked in `test_a_refused_combination_...`)
    sink=stdout x resume        --resume reads the output it continues; stdout cannot be read back
    load=auto-sweep x resume    --rate sweep measures its rates afresh each run
    (resume: both after-sigterm and keep-failed)
Refusals outside the factors: --workers 2 with -c 1 (each worker needs a slot; here -c is 2 per
worker), and a sweep reading stdin (it reads its input once per stage).  `streamrun batch` (a job's
batch = true) sends nothing live: with it, each live factor's level (--workers 2, --cache,
--duration, --num-prompts, -c 2,4, --rate sweep; from a job file), -o - and stdin are refused, and
its own keys (wait, poll_interval, cancel, max_lines_per_batch, resubmit_failed) on a live run; its
own runs are tests/batchapi's.  A refusal is exit 2, its reason on one line, no traceback, nothing
written, nothing sent.

Cases (`pairwise`'s, in its order; a test checks this list against it and prints a new one to paste)
       workers cache resume        budget      load       api       sessions format       sink   failures
    00 1       off   no            none        c          chat      no       streamrun    file   recovered
    01 2       warm  no            duration    c-sweep    responses yes      openai-batch stdout permanent
    02 1       warm  after-sigterm num-prompts rate-sweep anthropic no       openai-batch file   budgeted
    03 2       off   keep-failed   num-prompts c          responses yes      streamrun    file   budgeted
    04 1       off   no            duration    auto-sweep anthropic no       streamrun    stdout permanent
    05 1       warm  keep-failed   none        c-sweep    chat      yes      openai-batch file   recovered
    06 2       off   after-sigterm none        rate-sweep chat      yes      streamrun    file   permanent
    07 2       warm  no            num-prompts auto-sweep chat      no       streamrun    stdout recovered
    08 1       off   after-sigterm duration    c-sweep    responses no       streamrun    file   recovered
    09 1       off   no            none        auto-sweep responses yes      openai-batch stdout budgeted
    10 2       off   keep-failed   none        c          anthropic no       openai-batch file   permanent
    11 1       warm  after-sigterm duration    c          chat      no       streamrun    file   budgeted
    12 1       off   no            duration    rate-sweep responses no       streamrun    stdout recovered
    13 1       off   no            num-prompts c-sweep    anthropic yes      streamrun    file   recovered
    14 1       off   keep-failed   duration    rate-sweep chat      no       streamrun    file   recovered
    15 1       off   no            num-prompts c          chat      no       streamrun    stdout permanent
    16 1       off   no            none        c-sweep    chat      no       streamrun    file   budgeted
    17 1       off   no            none        auto-sweep chat      no       streamrun    file   recovered

Invariants, checked after every invocation (the interrupted one too) on the output so far; a case
reports every one it breaks
    final records   the last record per key (custom_id + stage label), in file order
    one per input   each stage holds every input (no budget), the first 8 (--num-prompts), or a
                    non-empty subset (--duration); nothing else, every line a record
    deadline        with --duration, no request sent after its stage's deadline: a record sent once
                    (attempts 1; a session: its first turn) started within the time its stage had
                    left (--duration less the span of the stage's earlier records) + 0.2 s
    summary         counts (total, ok, error, cached) equal the final records; exit_code,
                    records_written, requests_sent (after SIGTERM: at least) and cache hits (a
                    session: each cached turn), what the invocation did; the end-of-run line on
                    stderr agrees (the only summary with -o -)
    statuses        every final record ok but the failures its line's faults explain: p04's 400, in
                    the first record of the first stage that sent p04, unless the request the mock
                    answered with it was cut off in flight (a drain's end: no record holds it, and
                    the mock's 400 is not in any record); with --duration, a recoverable
                    fault whose retry the deadline stopped (that fault's error type and status after
                    one attempt, a session's in its failing turn, the message saying --duration's
                    deadline stopped the retry); p01's two 500s, from the interrupted run, when the
                    rerun keeps that record (--keep-failed, or a --duration rerun with no time left
                    to send it again); with a warm cache, every record of a line the cache held is
                    answered from it (cached)
    rerun           --resume sends every line whose final record failed again (a rerun resends each
                    error type the faults leave; a --duration rerun left without time may not get to
                    it); --resume --keep-failed sends none of them, their records stay final
    exit code       from the final records: 1 when errors exceed --max-failed, else 0; 143 after SIGTERM
    hygiene         no traceback or asyncio complaint on stderr, nothing but records on stdout
                    (nothing at all with -o FILE), the API key in no stream and no file
A new option joins the matrix in the same change: `test_every_option_has_a_place_in_the_matrix`
fails until it is a factor's level, set by every run, refused (`REFUSED`), or listed as outside with
the reason.

Run it alone: `pytest tests/test_option_matrix.py` or `pytest -m matrix`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import pytest

from runner.config.options import OPTIONS
from runner.engine.send import NOT_RETRIED
from runner.outputs.batch import decode_result
from runner.record import Record, posix_time
from tests.helpers import HANG_GUARD_S, STREAMRUN, mock_stats, write_jsonl

pytestmark = pytest.mark.matrix

# ---- the factors and the pairs that exclude each other

FACTORS: dict[str, tuple[str, ...]] = {
    "workers": ("1", "2"),
    "cache": ("off", "warm"),
    "resume": ("no", "after-sigterm", "keep-failed"),
    "budget": ("none", "duration", "num-prompts"),
    "load": ("c", "c-sweep", "rate-sweep", "auto-sweep"),
    "api": ("chat", "responses", "anthropic"),
    "sessions": ("no", "yes"),
    "format": ("streamrun", "openai-batch"),
    "sink": ("file", "stdout"),
    "failures": ("recovered", "permanent", "budgeted"),
}


@dataclass(frozen=True)
class Refusal:
    """A combination the CLI refuses (exit 2): never generated, checked as a refusal instead."""

    name: str
    why: str
    excludes: tuple[tuple[str, str], ...]  # the factor levels that cannot meet; () when outside the factors
    args: tuple[str, ...]  # what the refused command adds to a plain run (a job: the keys it adds)
    says: tuple[str, ...]  # words its one-line reason holds
    stdin: bool = False  # the input is `-`
    command: str = "run"  # run | batch: `streamrun run/batch` + args | job: a job file, `args` its extra keys


REFUSALS = (
    Refusal("stdout-resume", "--resume reads the output it continues, and stdout cannot be read back",
            (("sink", "stdout"), ("resume", "after-sigterm")), ("-o", "-", "--resume"), ("--resume", "-o -")),
    Refusal("auto-sweep-resume", "--rate sweep measures its rates afresh each run",
            (("load", "auto-sweep"), ("resume", "after-sigterm")),
            ("--rate", "sweep", "--resume"), ("--rate sweep", "--resume")),
    Refusal("stdout-keep-failed", "--resume reads the output it continues, and stdout cannot be read back",
            (("sink", "stdout"), ("resume", "keep-failed")), ("-o", "-", "--resume", "--keep-failed"),
            ("--resume", "-o -")),
    Refusal("auto-sweep-keep-failed", "--rate sweep measures its rates afresh each run",
            (("load", "auto-sweep"), ("resume", "keep-failed")),
            ("--rate", "sweep", "--resume", "--keep-failed"), ("--rate sweep", "--resume")),
    Refusal("workers-over-c", "each worker keeps a request in flight (the matrix gives every worker 2 slots)",
            (), ("--workers", "2", "-c", "1"), ("--workers 2", "-c")),
    Refusal("sweep-stdin", "a sweep reads its input once per stage; stdin can be read only once",
            (), ("-c", "2,4"), ("sweep", "stdin"), stdin=True),
    # streamrun batch (and a job's batch = true) sends nothing live: the factors of a live run are refused there
    Refusal("batch-keys-on-a-live-run", "the batch keys shape a batch run, and would do nothing on a live one",
            (), ("wait = false", 'poll_interval = "1s"', "cancel = true", "max_lines_per_batch = 4",
                 "resubmit_failed = true"),
            ("wait, poll_interval, cancel, max_lines_per_batch, resubmit_failed: keys of a batch run",
             "batch = true"), command="job"),
    *(Refusal(f"batch-{name}", "a batch run sends its lines in the provider's batches: no load, no cache",
              (), ("batch = true", key), (f"{flag} is an option of live runs",), command="job")
      for name, key, flag in (("workers", "workers = 2", "--workers"), ("cache", 'cache = "c.sqlite"', "--cache"),
                              ("duration", 'duration = "1s"', "--duration"),
                              ("num-prompts", "num_prompts = 8", "--num-prompts"),
                              ("c-sweep", "concurrency = [2, 4]", "--concurrency"),
                              ("rate-sweep", 'rate = "sweep"', "--rate"))),
    Refusal("batch-stdout", "a batch run keeps its state file beside the output, which stdout has not",
            (), ("-o", "-"), ("give a file to -o",), command="batch"),
    Refusal("batch-stdin", "a batch run reads its inputs again to match the results; stdin can be read only once",
            (), (), ("stdin can be read only once",), stdin=True, command="batch"),
)


def allowed(case: dict[str, str]) -> bool:
    """False when `case` (complete or not) holds a pair that a refusal excludes."""
    return not any(r.excludes and all(case.get(f) == v for f, v in r.excludes) for r in REFUSALS)


# ---- the covering array


def pairs_of(case: dict[str, str]) -> set[tuple[tuple[str, str], tuple[str, str]]]:
    names = [n for n in FACTORS if n in case]
    return {((a, case[a]), (b, case[b])) for a, b in combinations(names, 2)}


def pairwise(factors: dict[str, tuple[str, ...]], ok: Callable[[dict[str, str]], bool]) -> list[dict[str, str]]:
    """Cases in which every allowed pair of levels of two factors occurs at least once.

    Greedy and deterministic (AETG-like): each next case is the best of one candidate per pair not
    yet covered, grown from that pair by taking, factor by factor, the allowed level that covers the
    most new pairs with the levels already chosen (the first such level, or candidate, on a tie).
    """
    names = list(factors)
    todo = {p for a, b in combinations(names, 2) for va in factors[a] for vb in factors[b]
            for p in pairs_of({a: va, b: vb}) if ok({a: va, b: vb})}
    rank = {(n, v): (i, j) for i, n in enumerate(names) for j, v in enumerate(factors[n])}

    def grow(seed: dict[str, str]) -> dict[str, str]:
        case = dict(seed)
        for name in names:
            if name not in case:
                options = [v for v in factors[name] if ok({**case, name: v})]
                assert options, f"no level of {name} fits {case}"
                case[name] = max(options, key=lambda v: (len(pairs_of({**case, name: v}) & todo),
                                                         -factors[name].index(v)))
        return {n: case[n] for n in names}

    cases = []
    while todo:
        seeds = sorted(todo, key=lambda p: (rank[p[0]], rank[p[1]]))
        candidates = [grow(dict(seed)) for seed in seeds]
        _, _, best = max((len(pairs_of(c) & todo), -i, c) for i, c in enumerate(candidates))
        cases.append(best)
        todo -= pairs_of(best)
    return cases


CASES = pairwise(FACTORS, allowed)


def case_id(case: dict[str, str]) -> str:
    return "-".join(f"{name[0]}{value}" if name == "workers" else value for name, value in case.items()
                    if value not in ("no", "off", "none", "c", "streamrun", "file", "recovered"))


def case_table(cases: list[dict[str, str]]) -> list[str]:
    """The cases as the module docstring lists them, one line each under a header of the factors."""
    widths = {n: max(len(n), *map(len, levels)) for n, levels in FACTORS.items()}
    rows = [["  "] + list(FACTORS)] + [[f"{i:02d}"] + [c[n] for n in FACTORS] for i, c in enumerate(cases)]
    return ["    " + " ".join(row[0:1] + [v.ljust(widths[n]) for n, v in zip(FACTORS, row[1:], strict=True)]).rstrip()
            for row in rows]


def test_the_cases_cover_every_allowed_pair_and_are_the_ones_listed_above():
    allowed_pairs = {p for a, b in combinations(FACTORS, 2) for va in FACTORS[a] for vb in FACTORS[b]
                     for p in pairs_of({a: va, b: vb}) if allowed({a: va, b: vb})}
    covered = set().union(*(pairs_of(c) for c in CASES))
    assert covered == allowed_pairs, f"pairs no case covers: {sorted(allowed_pairs - covered)}"
    assert all(allowed(c) for c in CASES)
    assert pairwise(FACTORS, allowed) == CASES  # deterministic
    table = case_table(CASES)
    listed = __doc__.split("Cases (")[1].split("\n\n")[0].splitlines()[1:]
    assert listed == table, ("the module docstring's cases are not the generated ones; paste these:\n"
                             + "\n".join(table))


# ---- every option has a place

FIXED = {  # set by every run of the matrix, to one value
    "inputs": "the case's lines", "transport.base_urls": "the mock",
    "request.model": "the mock's", "request.max_tokens": "16 (Responses' minimum; Anthropic needs one)",
    "transport.retry.max_attempts": "2: one retry recovers a fault, two faults fail a line",
    "load.drain_timeout_s": "0.5 s: what SIGTERM waits for before cutting the stall off",
}
IN_MATRIX = {  # option -> the factor that sets it
    "output.path": "sink", "load.workers": "workers", "checks.cache": "cache", "output.resume": "resume",
    "output.keep_failed": "resume", "load.duration_s": "budget", "load.num_prompts": "budget",
    "load.concurrency": "load", "load.rate": "load", "load.sweep_points": "load", "transport.api": "api",
    "output.format": "format", "checks.max_failed": "failures",
}
OUTSIDE = {  # option -> why the matrix leaves it to its own tests
    **dict.fromkeys(("job", "label", "base_dir", "output.summary_path"), "names and places; no effect on records"),
    **dict.fromkeys(("transport.api_key_env", "transport.auth", "transport.headers", "transport.anthropic_version"),
                    "credentials and headers: test_headers, test_apis (the matrix keeps a key in the environment)"),
    **dict.fromkeys(("request.params", "request.include_usage", "request.drop_logprobs",
                     "checks.retry_finish_reasons", "transport.limits.max_event_bytes",
                     "transport.limits.max_response_bytes", "transport.limits.max_line_bytes"),
                    "what one request holds: the protocols' and the records' tests"),
    **dict.fromkeys(("transport.timeouts.total", "transport.timeouts.connect", "transport.timeouts.first_byte",
                     "transport.timeouts.idle"),
                    "per-request limits: test_client, test_retry"),
    **dict.fromkeys(("load.ramp_up", "load.ramp_up_duration_s", "load.ramp_up_start", "load.replay",
                     "load.replay_speed", "load.burstiness", "load.seed", "load.warmup", "load.rpm", "load.tpm",
                     "load.burst_s", "load.adaptive"),
                    "load shapes and quotas: test_loadshapes, test_quota_run (timing, not record accounting)"),
    "sharegpt": "an input format: test_session",
    **dict.fromkeys(("transport.ca_cert", "transport.insecure", "transport.client_cert", "transport.client_key",
                     "transport.proxy"),
                    "how connections are made (TLS, proxies), not what is sent or written: tests/stream/test_tls and "
                    "test_proxy run --ca-cert and --proxy with --workers 2, --resume, --cache, --duration and --api "
                    "anthropic/responses, mutual TLS with --workers 2"),
    **dict.fromkeys(("output.retry_failed", "output.resume_changed", "output.overwrite", "output.fsync",
                     "checks.cache_mode"),
                    "variants of resume and cache with tests of their own: test_unattended, test_cache"),
    **dict.fromkeys(("observe.push_gateway", "observe.otlp_endpoint"),
                    "what the run tells outside, not what it sends: test_pushgateway and test_tracing run each with "
                    "--workers, --resume, --cache, --duration, sessions and every --api"),
    **dict.fromkeys(("observe.log_every_s", "observe.server_metrics", "observe.server_metrics_interval_s",
                     "observe.price_input", "observe.price_output", "observe.slos", "observe.percentiles",
                     "observe.window_s", "observe.strict_timing", "shard"),
                    "what is reported or which share is run, not what is sent: their own tests"),
}
REFUSED = {  # option -> the refusals (above) that keep it out of the matrix's runs
    # streamrun batch's own runs (both APIs, --output-format openai-batch, sessions, --max-failed, always resuming,
    # after kill -9 and SIGTERM, from a job file): tests/batchapi
    "batch.enabled": ("batch-workers", "batch-cache", "batch-duration", "batch-num-prompts", "batch-c-sweep",
                      "batch-rate-sweep", "batch-stdout", "batch-stdin"),
    **dict.fromkeys(("batch.wait", "batch.poll_interval_s", "batch.cancel", "batch.max_lines",
                     "batch.resubmit_failed"), ("batch-keys-on-a-live-run",)),
}


def test_every_option_has_a_place_in_the_matrix():
    """A new option joins the matrix in the same change: as a factor level, fixed, refused, or outside with a
    reason."""
    placed = set(FIXED) | set(IN_MATRIX) | set(OUTSIDE) | set(REFUSED)
    options = {o.field for o in OPTIONS}
    assert not options - placed, (f"options without a place in tests/test_option_matrix.py: {sorted(options - placed)}"
                                  ": add a level to a factor, a refusal (REFUSED), or list them in OUTSIDE with "
                                  "the reason")
    assert not placed - options, f"no longer options: {sorted(placed - options)}"
    assert set(IN_MATRIX.values()) <= set(FACTORS)
    assert all(names and set(names) <= {r.name for r in REFUSALS} for names in REFUSED.values())


# ---- the mock, the lines, the runs

N_LINES = 12
N_DURATION_LINES = 24  # with 0.4 s replies at -c 4, six rounds: a stage that overshoots its deadline shows it
NUM_PROMPTS = 8
DURATION_S = 0.5
SLOW_S = 0.4  # the reply time of every line in --duration cases (the mock's script entry 1)
DEADLINE_SLACK_S = 0.2  # between the producer's check and the request's send stamp, on a loaded machine
SECRET = "sk-matrix-8f3e1c-never-printed"
SUSPECT = ("Traceback", "Exception ignored", "never retrieved", "Unclosed client session", "Unclosed connector",
           "Task was destroyed")


@pytest.fixture(scope="module")
def mock_url(tmp_path_factory):
    """One mock for every case (fault keys carry the case's name): script entry 0 fast, 1 slow."""
    script = write_jsonl(tmp_path_factory.mktemp("mock") / "script.jsonl",
                         [{"ttft": 0, "gaps": [0, 0, 0]}, {"ttft": SLOW_S, "gaps": [0, 0, 0]}])
    proc = subprocess.Popen([*STREAMRUN, "mock", "--port", "0", "--ttft", "0", "--tokens-per-s", "0",
                             "--script", str(script)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    line = proc.stderr.readline()
    match = re.search(r"(http://\S+)", line)
    assert match, f"mock did not start: {line!r}"
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # whatever it logs later never blocks it
    yield match.group(1)
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()


def faults(case: dict[str, str], i: int) -> list[str]:
    resume = case["resume"] != "no"
    by_line = {0: ["stall"] if resume else ["429"], 1: ["500", "500"] if resume else ["503"], 2: ["drop"],
               3: ["error_event"], 4: ["500"] if case["failures"] == "recovered" else ["400"]}
    if case["sessions"] == "yes":
        by_line[7] = ["500"]
    return by_line.get(i, [])


def lines(case: dict[str, str], name: str) -> list[dict]:
    n = N_DURATION_LINES if case["budget"] == "duration" else N_LINES
    rows = []
    for i in range(n):
        cid = f"p{i:02d}"
        mock: dict = {"script": 1 if case["budget"] == "duration" and not faults(case, i) else 0}
        if faults(case, i):
            mock.update(key=f"{name}/{cid}", faults=faults(case, i), retry_after=0)
        row: dict = {"custom_id": cid, "messages": [{"role": "user", "content": f"question {i} of {name}"}]}
        if i == 5:
            row["messages"].insert(0, {"role": "system", "content": "Answer in one line."})
        if case["sessions"] == "yes" and i in (6, 7):
            row = {"custom_id": cid, "turns": [f"first turn {i} of {name}", "and the second"]}
            if i == 7:
                row["messages"] = [{"role": "system", "content": "Answer in one line."}]
        rows.append({**row, "mock": mock})
    return rows


def run_args(case: dict[str, str], inp: Path, out: str, url: str) -> list[str]:
    w = int(case["workers"])
    load = {"c": ["-c", str(2 * w)], "c-sweep": ["-c", f"{2 * w},{3 * w}"],
            "rate-sweep": ["-c", str(2 * w), "--rate", "20,inf"],
            "auto-sweep": ["-c", str(2 * w), "--rate", "sweep", "--sweep-points", "1"]}[case["load"]]
    budget = {"none": [], "duration": ["--duration", f"{DURATION_S}s"],
              "num-prompts": ["--num-prompts", str(NUM_PROMPTS)]}[case["budget"]]
    args = ["run", str(inp), "-o", out, "--base-url", url, "--model", "mock-model", "--api", case["api"],
            "--max-tokens", "16", "--max-attempts", "2", "--drain-timeout", "0.5", *load, *budget]
    if w > 1:
        args += ["--workers", str(w)]
    if case["format"] != "streamrun":
        args += ["--output-format", case["format"]]
    if case["failures"] == "budgeted":
        args += ["--max-failed", "1"]
    return args


ENV = {**os.environ, "OPENAI_API_KEY": SECRET, "ANTHROPIC_API_KEY": SECRET}


def cli(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*STREAMRUN, *args], capture_output=True, text=True, env=ENV, timeout=120, **kwargs)


def wait_for_record(path: Path, cid: str, proc: subprocess.Popen) -> None:
    """Until a record of `cid` is on disk; fails at once if the run ends first."""
    needle = f'"custom_id":"{cid}"'.encode()
    end = time.monotonic() + HANG_GUARD_S
    while not (path.exists() and needle in path.read_bytes()):
        assert proc.poll() is None, f"run ended (exit {proc.returncode}) before {cid} was written"
        assert time.monotonic() < end, "hang guard"
        time.sleep(0.02)


@dataclass
class Invocation:
    """One `streamrun run` of a case and what it left."""

    code: int
    stdout: str
    stderr: str
    before: list[Record]  # the output's records before it ran
    written: list[Record]  # the records it wrote
    summary: dict | None  # the summary file (None with -o -)
    interrupted: bool = False
    label: str = "run"


def decode_lines(data: str | bytes, where: str) -> list[Record]:
    out = []
    for n, line in enumerate(data.splitlines() if isinstance(data, str) else data.decode().splitlines(), 1):
        try:
            out.append(decode_result(json.loads(line)))
        except ValueError as exc:
            raise AssertionError(f"{where}:{n} is no record ({exc}): {line[:200]!r}") from None
    return out


def invoke(args: list[str], out: Path | None, *, interrupt: Callable[[subprocess.Popen], None] | None = None,
           label: str = "run") -> Invocation:
    before = decode_lines(out.read_bytes(), str(out)) if out is not None and out.exists() else []
    if out is not None:  # an earlier run's summary must not stand in for this one's
        sidecar = out.with_name(out.name.removesuffix(".jsonl") + ".summary.json")
        sidecar.unlink(missing_ok=True)
    if interrupt is None:
        res = cli(args)
        code, stdout, stderr = res.returncode, res.stdout, res.stderr
    else:  # into files: a pipe nobody reads while the run waits for its signal could fill up
        assert out is not None, "-o - cannot be resumed"
        stem = label.replace(" ", "-")
        streams = out.with_name(f"{stem}.stdout"), out.with_name(f"{stem}.stderr")
        with open(streams[0], "w") as stdout_file, open(streams[1], "w") as stderr_file:
            proc = subprocess.Popen([*STREAMRUN, *args], stdout=stdout_file, stderr=stderr_file, env=ENV)
            interrupt(proc)
            code = proc.wait(timeout=HANG_GUARD_S)
        stdout, stderr = (p.read_text() for p in streams)
    if out is None:
        return Invocation(code, stdout, stderr, before, decode_lines(stdout, "stdout"), None, False, label)
    everything = decode_lines(out.read_bytes(), str(out)) if out.exists() else []
    assert everything[:len(before)] == before, f"{label}: records already on disk changed"
    summary = json.loads(sidecar.read_text()) if sidecar.exists() else None
    return Invocation(code, stdout, stderr, before, everything[len(before):], summary, interrupt is not None, label)


# ---- the invariants: each check returns what it found wrong, so that a case reports every broken invariant


def final_records(records: list[Record]) -> dict[tuple[str | None, str], Record]:
    """The last record per key (stage label, custom_id), in file order."""
    final: dict[tuple[str | None, str], Record] = {}
    for r in records:
        if not r.warmup:
            final[(r.label, r.custom_id)] = r
    return final


def stage_labels(case: dict[str, str]) -> list[str | None] | None:
    """The stages' labels in order; None for --rate sweep, whose rates are measured (checked by shape)."""
    w = int(case["workers"])
    return {"c": [None], "c-sweep": [f"c={2 * w}", f"c={3 * w}"], "rate-sweep": ["rate=20", "rate=inf"],
            "auto-sweep": None}[case["load"]]


def stage_order(case: dict[str, str], label: str | None) -> int:
    labels = stage_labels(case)
    if labels is not None:
        return labels.index(label) if label in labels else len(labels)
    return {"synchronous": 0, "throughput": 1}.get(str(label), 2)


def first_start(r: Record) -> tuple[float | None, int]:
    """When the request (a session: its first turn) was sent, and in how many attempts."""
    if r.turns:
        return posix_time(r.turns[0].metrics.started_at), r.turns[0].attempts
    return posix_time(r.metrics.started_at), r.attempts


def elapsed_before(records: list[Record], label: str | None) -> float:
    """The span of a stage's earlier records: what --duration counted already (it counts the whole output)."""
    spans = [(s, s + (r.metrics.e2e_s or 0.0)) for r in records if r.label == label and not r.warmup and r.attempts
             for s in [posix_time(r.metrics.started_at)] if s is not None]
    return max(e for _, e in spans) - min(s for s, _ in spans) if spans else 0.0


def requests_in(r: Record) -> int:
    """Requests a record stands for: none when cached or never sent, a session's turns sent, else one."""
    if r.cached or not r.attempts:
        return 0
    return sum(t.attempts > 0 for t in r.turns) if r.turns else 1


def hits_in(r: Record) -> int:
    """Cache hits a record stands for: a session's cached turns (0 attempts: each is a lookup of its own), else
    one when it is cached."""
    if r.turns:
        return sum(t.attempts == 0 for t in r.turns)
    return 1 if r.cached else 0


def check_hygiene(inv: Invocation, out: Path | None, tmp: Path) -> list[str]:
    """No traceback or asyncio complaint, stdout for records only, the key nowhere (streams, files, cache)."""
    found = [f"{bad!r} on {where}: ...{text[max(0, text.find(bad) - 300):text.find(bad) + 700]!r}"
             for text, where in ((inv.stderr, "stderr"), (inv.stdout, "stdout")) for bad in SUSPECT if bad in text]
    if out is not None and inv.stdout:
        found.append(f"-o FILE, and on stdout: {inv.stdout[:300]!r}")
    leaked = [where for where, text in [("stdout", inv.stdout.encode()), ("stderr", inv.stderr.encode())]
              + [(p.name, p.read_bytes()) for p in tmp.rglob("*") if p.is_file()] if SECRET.encode() in text]
    if leaked:
        found.append(f"the API key was printed or written: {leaked}")
    return found


def check_keys(case: dict[str, str], final: dict, ids: list[str], complete: bool) -> list[str]:
    """One final record per input in each stage (or per budget), and none for anything else."""
    by_stage: dict[str | None, set[str]] = {}
    for label, cid in final:
        by_stage.setdefault(label, set()).add(cid)
    found = []
    labels = stage_labels(case)
    if labels is None:  # --rate sweep: synchronous, throughput, then --sweep-points measured rates
        odd = [x for x in by_stage if x not in ("synchronous", "throughput")
               and not re.fullmatch(r"rate=[\d.e+-]+", str(x))]
        if odd or (complete and (len(by_stage) != 3 or not {"synchronous", "throughput"} <= set(by_stage))):
            found.append(f"stages {sorted(map(str, by_stage))}, not synchronous, throughput and one rate")
    elif not set(by_stage) <= set(labels) or (complete and set(by_stage) != set(labels)):
        found.append(f"stages {sorted(map(str, by_stage))}, not {labels}")
    for label, got in sorted(by_stage.items(), key=lambda kv: str(kv[0])):
        if not got <= set(ids):
            found.append(f"stage {label}: records for no input: {sorted(got - set(ids))}")
        if not complete:
            continue
        if case["budget"] == "none" and got != set(ids):
            found.append(f"stage {label}: no final record for {sorted(set(ids) - got)}")
        elif case["budget"] == "num-prompts" and got != set(ids[:NUM_PROMPTS]):
            found.append(f"stage {label}: records for {sorted(got)}, not for the first {NUM_PROMPTS} lines")
        elif case["budget"] == "duration" and not got:
            found.append(f"stage {label} sent nothing")
    return found


def check_deadline(case: dict[str, str], inv: Invocation) -> list[str]:
    """With --duration, no request of this invocation was sent after its stage's deadline."""
    if case["budget"] != "duration":
        return []
    found = []
    for label in sorted({r.label for r in inv.written}, key=str):
        starts = [(first_start(r), r.custom_id) for r in inv.written if r.label == label and not r.cached]
        sent = [s for (s, _), _ in starts if s is not None]
        if not sent:
            continue
        begin = min(sent)
        left = max(0.0, DURATION_S - elapsed_before(inv.before, label))
        late = [(cid, round(s - begin, 2)) for (s, attempts), cid in starts
                if s is not None and attempts == 1 and s - begin > left + DEADLINE_SLACK_S]
        if late:
            found.append(f"stage {label}: sent after its deadline ({left:.2f}s after its first request; "
                         f"line, seconds): {late}")
    return found


def check_summary(case: dict[str, str], inv: Invocation, final: dict) -> list[str]:
    """The summary (file, and the end-of-run line on stderr) counts the final records; its totals, this run."""
    records = list(final.values())
    ok = sum(r.ok for r in records)
    want = {"total": len(records), "ok": ok, "error": len(records) - ok, "cached": sum(r.cached for r in records)}
    found = []
    line = re.search(r"streamrun: (\d+) records?: (\d+) ok, (\d+) error", inv.stderr)
    if not line:
        found.append(f"no end-of-run line on stderr: {inv.stderr[-1500:]!r}")
    elif tuple(map(int, line.groups())) != (want["total"], want["ok"], want["error"]):
        found.append(f"stderr says {line.group(0)!r}; the final records: {want}")
    if case["sink"] == "stdout":
        return found
    doc = inv.summary
    if doc is None:
        return found + ["no summary file"]
    counts = {k: doc["summary"]["counts"].get(k) for k in want}
    if counts != want:
        found.append(f"summary counts {counts}, the final records {want}")
    if doc["exit_code"] != inv.code:
        found.append(f"summary exit_code {doc['exit_code']}, the process's {inv.code}")
    if doc["records_written"] != len(inv.written):
        found.append(f"summary records_written {doc['records_written']}, lines written {len(inv.written)}")
    sent = sum(requests_in(r) for r in inv.written)  # after a signal, also those cut off in flight
    if doc["requests_sent"] != sent and not (inv.interrupted and doc["requests_sent"] > sent):
        found.append(f"summary requests_sent {doc['requests_sent']}, requests in the records written {sent}")
    hits = sum(hits_in(r) for r in inv.written)
    if case["cache"] != "off" and (doc.get("cache") or {}).get("hits") != hits:
        found.append(f"summary cache hits {(doc.get('cache') or {}).get('hits')}, cached requests written {hits}")
    return found


RERUN_TIME_S = 0.3  # a --duration rerun with less time left than this may not get to send a failed line again
# The recoverable faults (a retry mends them) and the error (type, status) each leaves when it is not retried.
FAULT_ERRORS = {"429": ("http_error", 429), "503": ("http_error", 503), "500": ("http_error", 500),
                "drop": ("incomplete_stream", None), "error_event": ("stream_error", None)}
# ... where the API has words of its own: Anthropic's overloaded is 529 (runner/mock/anthropic.py answers so).
API_FAULT_ERRORS = {"anthropic": {"503": ("http_error", 529)}}


def fault_error(case: dict[str, str], fault: str) -> tuple[str, int | None] | None:
    """The error (type, status) a recoverable fault leaves in the case's API when it is not retried."""
    return API_FAULT_ERRORS.get(case["api"], {}).get(fault) or FAULT_ERRORS.get(fault)


def left_without_time(case: dict[str, str], inv: Invocation, label: str | None) -> bool:
    """A --duration rerun whose stage had too little time left to be sure to send its failed lines again."""
    return case["budget"] == "duration" and DURATION_S - elapsed_before(inv.before, label) < RERUN_TIME_S


def injected_400(case: dict[str, str], inv: Invocation, final: dict, answered_400: int) -> tuple[Record | None,
                                                                                                   list[str]]:
    """p04's 400 (failures permanent or budgeted) goes to the first request of p04 the mock gets (the mock's fault
    list is the line's): the first record of that key, in whichever run and stage sent it. That record, and what
    is wrong.

    `answered_400`: the 400s the mock answered in this case's runs. The request the 400 answered may have been
    cut off in flight at a drain's end (--duration's, SIGTERM's): a request cut off leaves no record, so the
    mock answered a 400 that no record holds, and p04's records are all answers after its fault list ran out.
    """
    p04 = [key for key in final if key[1] == "p04"]
    if case["failures"] == "recovered" or not p04:
        return None, []
    first = min(p04, key=lambda key: stage_order(case, key[0]))
    records = [r for r in inv.before + inv.written if not r.warmup and r.custom_id == "p04"]
    record = next(r for r in records if r.label == first[0])
    if not record.ok and record.error is not None and record.error.status_code == 400:
        return record, []
    held = sum(1 for r in records if r.error is not None and r.error.status_code == 400)
    if answered_400 > held:  # its 400 answered a request that was cut off: no record could hold it
        return None, []
    return None, [f"p04's first record {first} is no 400 ({record.error}), and the mock answered {answered_400} "
                  f"400s, {held} of them in records: its 400 was not injected"]


def unexplained(case: dict[str, str], cid: str, r: Record, kept: bool) -> str | None:
    """Why the faults of the line do not explain this failed record; None when they do.

    `kept`: an earlier run wrote it (and this rerun left it final). p04's 400 is `injected_400`'s."""
    err = r.error
    if err is None:
        return "an error record without an error"
    attempts = r.turns[-1].attempts if r.turns else r.attempts  # a session: its failing turn's
    if kept and cid == "p01" and case["resume"] != "no" and (err.type, err.status_code, attempts) == (
            "http_error", 500, 2):
        return None  # its two 500s, both attempts of the interrupted run (whose SIGTERM waited for this record)
    kinds = {fault_error(case, f) for f in faults(case, int(cid[1:]))}
    if case["budget"] != "duration" or not kinds or None in kinds:
        return "its line has no fault that fails it"
    if (err.type, err.status_code) not in kinds:
        return f"not its fault's error {sorted(kinds, key=str)}"
    if attempts != 1:
        return f"its fault failed it after {attempts} attempts, not once"
    if not (err.message or "").endswith(" " + NOT_RETRIED):
        return "its retry was not made, and its message does not say --duration's deadline stopped it"
    return None


def check_statuses(case: dict[str, str], inv: Invocation, final: dict, warm: set[str],
                   answered_400: int) -> list[str]:
    """Every final record ok but the failures its line's faults explain; with a warm cache, the lines it held
    answered from it. `answered_400`: the 400s the mock answered (`injected_400`)."""
    p04, found = injected_400(case, inv, final, answered_400)
    earlier = {id(r) for r in inv.before}
    failed = []
    for (label, cid), r in sorted(final.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        if r.ok or r is p04:
            continue
        why = unexplained(case, cid, r, id(r) in earlier)
        if why is not None:
            failed.append((label, cid, (r.error.type, r.error.message) if r.error else None, why))
    if failed:
        found.append(f"final records failed (stage, line, error, why unexplained): {failed}")
    again = sorted((str(label), cid) for (label, cid), r in final.items() if cid in warm and not r.cached)
    if again:
        found.append(f"in the cache, but not answered from it (stage, line): {again}")
    return found


def check_rerun(case: dict[str, str], inv: Invocation) -> list[str]:
    """A rerun sends every failed line again (every error the faults leave is of a type a rerun resends:
    runner/outputs/writer.py RESENT_ONLY_IF_CHANGED), or with --keep-failed none of them."""
    if case["resume"] == "no" or inv.interrupted or not inv.before:
        return []
    failed = {key for key, r in final_records(inv.before).items() if not r.ok}
    sent = {(r.label, r.custom_id) for r in inv.written if not r.warmup}
    if case["resume"] == "keep-failed":
        again = sorted(failed & sent, key=str)
        return [f"--keep-failed, and these failed lines were sent again (stage, line): {again}"] if again else []
    missed = sorted((key for key in failed - sent if not left_without_time(case, inv, key[0])), key=str)
    return [f"failed lines not sent again (stage, line): {missed}"] if missed else []


def expected_exit(case: dict[str, str], final: dict) -> int:
    errors = sum(not r.ok for r in final.values())
    return 1 if errors > (1 if case["failures"] == "budgeted" else 0) else 0


def check_invocation(case: dict[str, str], inv: Invocation, out: Path | None, tmp: Path, ids: list[str],
                     warm: set[str], answered_400: int) -> list[str]:
    """Every invariant of one invocation, on the output as it left it; `answered_400`: the 400s the mock
    answered in the case's runs up to its end."""
    final = final_records(inv.before + inv.written)
    found = check_hygiene(inv, out, tmp) + check_keys(case, final, ids, complete=not inv.interrupted)
    found += check_deadline(case, inv) + check_summary(case, inv, final)
    if inv.interrupted:
        if inv.code != 143:
            found.append(f"exit {inv.code} after SIGTERM, not 143: {inv.stderr[-1500:]!r}")
        return found
    found += check_statuses(case, inv, final, warm, answered_400) + check_rerun(case, inv)
    if inv.code != expected_exit(case, final):
        found.append(f"exit {inv.code}; the final records say {expected_exit(case, final)}: "
                     f"{inv.stderr[-1500:]!r}")
    return found


# ---- the matrix


@pytest.mark.parametrize("case", CASES, ids=[f"{i:02d}-{case_id(c) or 'defaults'}" for i, c in enumerate(CASES)])
def test_option_matrix(case, tmp_path, mock_url):
    name = tmp_path.name  # the mock's fault keys are the case's own
    rows = lines(case, name)
    ids = [r["custom_id"] for r in rows]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = None if case["sink"] == "stdout" else tmp_path / "out.jsonl"
    args = run_args(case, inp, "-" if out is None else str(out), mock_url)

    warm: set[str] = set()
    if case["cache"] == "warm":  # half the lines without faults, answered once into the cache
        cache = tmp_path / "cache.sqlite"
        (tmp_path / "warm").mkdir()
        held = [r for i, r in enumerate(rows) if "key" not in r["mock"] and i % 2 == 0]  # half: some are sent
        pre = write_jsonl(tmp_path / "warm" / "in.jsonl", held)
        plain = {**case, "workers": "1", "load": "c", "budget": "none", "format": "streamrun"}
        res = cli(run_args(plain, pre, str(tmp_path / "warm" / "out.jsonl"), mock_url)
                  + ["-c", "32", "--cache", str(cache)])
        assert res.returncode in (0, 1) and "Traceback" not in res.stderr, res.stderr
        warm = {r.custom_id for r in decode_lines((tmp_path / "warm" / "out.jsonl").read_bytes(), "warm") if r.ok}
        args += ["--cache", str(cache)]

    runs = []
    before_400 = mock_stats(mock_url)["by_status"].get("400", 0)  # the mock's count; its cases run one by one
    if case["resume"] != "no":
        def sigterm_once_p01_failed(proc: subprocess.Popen) -> None:
            wait_for_record(out, "p01", proc)
            proc.send_signal(signal.SIGTERM)

        rerun = ["--resume"] + (["--keep-failed"] if case["resume"] == "keep-failed" else [])
        runs.append(invoke(args, out, interrupt=sigterm_once_p01_failed, label="interrupted run"))
        runs.append(invoke(args + rerun, out, label=" ".join(rerun)))
    else:
        runs.append(invoke(args, out))
    answered_400 = mock_stats(mock_url)["by_status"].get("400", 0) - before_400
    found = [f"{inv.label}: {problem}" for inv in runs
             for problem in check_invocation(case, inv, out, tmp_path, ids, warm, answered_400)]
    assert not found, f"{case_id(case)}:\n" + "\n".join(found)


@pytest.mark.parametrize("refusal", REFUSALS, ids=[r.name for r in REFUSALS])
def test_a_refused_combination_exits_2_with_one_line_and_sends_nothing(refusal, tmp_path, mock_url):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": f"p{i}", "messages": [{"role": "user", "content": "q"}]}
                                              for i in range(3)])
    files = ["in.jsonl"]
    if refusal.command == "job":
        (tmp_path / "job.toml").write_text("\n".join([
            'inputs = ["in.jsonl"]', 'output = "out.jsonl"', f'base_url = "{mock_url}"', 'model = "mock-model"',
            *refusal.args]) + "\n")
        files.append("job.toml")
        args = ["job", str(tmp_path / "job.toml")]
    else:
        output = [] if "-o" in refusal.args else ["-o", str(tmp_path / "out.jsonl")]
        args = [refusal.command, "-" if refusal.stdin else str(inp), *output, "--base-url", mock_url, "--model",
                "mock-model", *refusal.args]
    seen = mock_stats(mock_url)["requests"]
    with open(inp) as stdin:
        res = cli(args, stdin=stdin if refusal.stdin else subprocess.DEVNULL)
    assert res.returncode == 2, (refusal.why, res.returncode, res.stderr)
    reasons = [line for line in res.stderr.splitlines() if line.startswith(("Error:", "streamrun:"))]
    assert len(reasons) == 1 and all(word in reasons[0] for word in refusal.says), res.stderr
    assert not any(bad in res.stderr for bad in SUSPECT), res.stderr
    assert res.stdout == "" and sorted(p.name for p in tmp_path.iterdir()) == files
    assert mock_stats(mock_url)["requests"] == seen
