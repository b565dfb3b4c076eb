"""Long runs and cron: kill -9 and resume, SIGTERM drain, torn lines, locks, job files, exit codes.

The CLI runs as a real subprocess against a mock in its own process.  Waits
poll for a state (records on disk) with a generous hang guard, never a speed.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import STREAMRUN, read_jsonl, streamrun, write_jsonl


def prompts(path: Path, n: int, bad_at: int | None = None) -> Path:
    rows = [{"custom_id": f"p{i}", "messages": [{"role": "user", "content": f"question {i}"}]} for i in range(n)]
    if bad_at is not None:
        rows[bad_at] = "{this is not json"
    return write_jsonl(path, rows)


def count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def wait_for_lines(path: Path, n: int, proc: subprocess.Popen, guard: float = 60) -> None:
    end = time.monotonic() + guard
    while count_lines(path) < n:
        assert proc.poll() is None, f"run ended early: {proc.stderr.read()}"
        assert time.monotonic() < end, "hang guard"
        time.sleep(0.02)


def wait_for_requests(url: str, n: int, guard: float = 60) -> None:
    """Wait until the mock has received n requests: the run is then past start-up, signal handlers in place."""
    import urllib.request

    end = time.monotonic() + guard
    while True:
        with urllib.request.urlopen(url.removesuffix("/v1") + "/mock/stats") as resp:
            if json.load(resp)["requests"] >= n:
                return
        assert time.monotonic() < end, "hang guard"
        time.sleep(0.02)


def start_run(*args) -> subprocess.Popen:
    return subprocess.Popen([*STREAMRUN, "run", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def assert_one_ok_record_per_input(out: Path, n: int) -> None:
    records = read_jsonl(out)
    ids = Counter(r["custom_id"] for r in records)
    assert ids.most_common(1)[0][1] == 1, "duplicated record"
    assert sorted(ids) == sorted(f"p{i}" for i in range(n))
    assert all(r["status"] == "ok" for r in records)


def test_kill_9_then_resume_gives_exactly_one_ok_record_each(tmp_path, mock_process):
    url = mock_process("--ttft", "0.02", "--tokens-per-s", "400", "--output-tokens", "16")
    n = 300
    inp, out = prompts(tmp_path / "in.jsonl", n), tmp_path / "out.jsonl"
    proc = start_run(inp, "-o", out, "--base-url", url, "-c", "16", "--fsync", "never")
    wait_for_lines(out, 40, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = read_jsonl(out)  # every line whole and readable
    assert 40 <= len(written) < n
    res = streamrun("run", inp, "-o", out, "--base-url", url, "-c", "16", "--resume")
    assert res.returncode == 0, res.stderr
    assert f"{len(written)} records already done" in res.stderr
    assert_one_ok_record_per_input(out, n)
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["summary"]["counts"]["total"] == n - len(written)


def test_sigterm_drains_in_flight_exits_143_and_resume_completes(tmp_path, mock_process):
    url = mock_process("--ttft", "0.05", "--tokens-per-s", "200", "--output-tokens", "20")
    n = 200
    inp, out = prompts(tmp_path / "in.jsonl", n), tmp_path / "out.jsonl"
    proc = start_run(inp, "-o", out, "--base-url", url, "-c", "8")
    wait_for_lines(out, 16, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    assert "draining" in stderr
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["interrupted"] is True and summary["exit_code"] == 143
    assert summary["cancelled_in_flight"] == 0
    assert summary["records_written"] == summary["requests_sent"]  # every in-flight request was drained
    assert summary["records_written"] < n
    res = streamrun("run", inp, "-o", out, "--base-url", url, "-c", "8", "--resume")
    assert res.returncode == 0, res.stderr
    assert_one_ok_record_per_input(out, n)


def test_sigint_with_short_drain_cancels_without_records(tmp_path, mock_process):
    url = mock_process("--ttft", "30", "--tokens-per-s", "200")
    inp, out = prompts(tmp_path / "in.jsonl", 5), tmp_path / "out.jsonl"
    proc = start_run(inp, "-o", out, "--base-url", url, "-c", "5", "--drain-timeout", "0.2")
    wait_for_requests(url, 5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert count_lines(out) == 0  # cancelled requests leave no record, so --resume sends them again
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["cancelled_in_flight"] == 5


def test_second_signal_exits_at_once(tmp_path, mock_process):
    url = mock_process("--ttft", "30")
    inp, out = prompts(tmp_path / "in.jsonl", 3), tmp_path / "out.jsonl"
    proc = start_run(inp, "-o", out, "--base-url", url, "-c", "3", "--drain-timeout", "300")
    wait_for_requests(url, 3)
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)  # not 300 s: the second signal does not wait for the drain
    assert proc.returncode == 143


def test_torn_last_line_is_cut_on_resume(tmp_path, mock_process):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    inp, out = prompts(tmp_path / "in.jsonl", 6), tmp_path / "out.jsonl"
    assert streamrun("run", inp, "-o", out, "--base-url", url).returncode == 0
    lines = out.read_bytes().splitlines(keepends=True)
    out.write_bytes(b"".join(lines[:3]) + lines[3][:25])  # a crash mid-write
    res = streamrun("run", inp, "-o", out, "--base-url", url, "--resume")
    assert res.returncode == 0, res.stderr
    assert "torn last line" in res.stderr
    assert_one_ok_record_per_input(out, 6)


def test_resume_keeps_errors_unless_retry_failed(tmp_path, mock_process):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    rows = [{"custom_id": "a", "prompt": "x"},
            {"custom_id": "b", "prompt": "y", "mock": {"key": "b", "faults": ["400"]}}]
    inp, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    assert streamrun("run", inp, "-o", out, "--base-url", url).returncode == 1
    again = streamrun("run", inp, "-o", out, "--base-url", url, "--resume")
    assert again.returncode == 0  # nothing left to do; the old error is kept
    assert [r["status"] for r in read_jsonl(out)] == ["ok", "error"] or len(read_jsonl(out)) == 2
    retried = streamrun("run", inp, "-o", out, "--base-url", url, "--resume", "--retry-failed")
    assert retried.returncode == 0, retried.stderr  # the mock's fault list is used up: now ok
    records = read_jsonl(out)
    assert sorted(r["custom_id"] for r in records) == ["a", "b"] and all(r["status"] == "ok" for r in records)


def test_locked_output_exits_3(tmp_path):
    inp, out = prompts(tmp_path / "in.jsonl", 1), tmp_path / "out.jsonl"
    fd = os.open(str(out) + ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        res = streamrun("run", inp, "-o", out, "--base-url", "http://127.0.0.1:9/v1")
    finally:
        os.close(fd)
    assert res.returncode == 3 and "another streamrun run" in res.stderr


def test_duplicate_ids_exit_2_naming_both_places(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"custom_id": "x", "prompt": "1"}, {"custom_id": "y", "prompt": "2"}])
    b = write_jsonl(tmp_path / "b.jsonl", [{"custom_id": "z", "prompt": "3"}, {"custom_id": "x", "prompt": "4"}])
    res = streamrun("run", a, b, "-o", tmp_path / "o.jsonl", "--base-url", "http://127.0.0.1:9/v1")
    assert res.returncode == 2
    assert "a.jsonl:1" in res.stderr and "b.jsonl:2" in res.stderr
    assert not (tmp_path / "o.jsonl").exists() or (tmp_path / "o.jsonl").stat().st_size == 0


JOB = """
name = "nightly"
inputs = ["in.jsonl"]
output = "out/{job}-{date}.jsonl"
summary = "out/{job}-{date}.summary.json"
concurrency = 4
max_attempts = 1
{extra}
[params]
max_tokens = 8
"""


def job_file(tmp_path: Path, extra: str = "", n: int = 10, bad_at: int | None = None) -> Path:
    prompts(tmp_path / "in.jsonl", n, bad_at)
    path = tmp_path / "job.toml"
    path.write_text(JOB.replace("{extra}", extra))
    return path


@pytest.mark.parametrize("extra, message", [
    ("concurency = 4", "unknown key 'concurency' (did you mean 'concurrency'?)"),
    ("max_attempts = 0", "key 'max_attempts' must be a positive integer"),
    ("rate = \"fast\"", "key 'rate' must be a positive number"),
    ("[timeouts]\nfirst_bite = 3", "unknown key 'timeouts.first_bite'"),
    ("fsync = \"sometimes\"", "fsync must be"),
    ("resume = true\noverwrite = true", "exclude each other"),
])
def test_job_file_errors_are_one_line_naming_file_and_key(tmp_path, extra, message):
    if extra.startswith("max_attempts"):
        path = tmp_path / "job.toml"
        prompts(tmp_path / "in.jsonl", 1)
        path.write_text(JOB.replace("max_attempts = 1\n", "").replace("{extra}", extra))
    else:
        path = job_file(tmp_path, extra)
    res = streamrun("job", path)
    assert res.returncode == 2
    assert message in res.stderr and "job.toml" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_job_runs_with_templates_summary_and_failure_budget(tmp_path, mock_process):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    # 1 bad line of 10: over a zero budget (exit 1), within 20 % or a count of 1 (exit 0)
    for extra, code in (("max_failed = 0", 1), ("max_failed = 0.2", 0), ("max_failed = 1", 0),
                        ("max_failed = 0.05", 1)):
        path = job_file(tmp_path, f'base_url = "{url}"\noverwrite = true\n{extra}', bad_at=3)
        res = streamrun("job", path)
        assert res.returncode == code, (extra, res.stderr)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    out = tmp_path / "out" / f"nightly-{day}.jsonl"
    summary = json.loads((tmp_path / "out" / f"nightly-{day}.summary.json").read_text())
    assert len(read_jsonl(out)) == 10
    assert summary["job"] == "nightly" and summary["exit_code"] == 1
    assert summary["summary"]["counts"]["errors_by_type"] == {"invalid_input": 1}
    assert summary["config"]["api_key_env"] == "OPENAI_API_KEY"
    assert summary["summary"]["metrics"]["ttft_s"]["p50"] is not None


def test_shipped_job_files_validate():
    from runner.jobfile import load_job

    for path in Path(__file__).parent.parent.joinpath("jobs").glob("*.toml"):
        cfg, _ = load_job(str(path))
        assert cfg.inputs and cfg.output


def test_hash_sorter_and_done_ids_agree_with_a_plain_sort():
    import random

    from runner.ids import HashSorter, id_hash
    from runner.ids import DoneIds

    rng = random.Random(5)
    values = [rng.getrandbits(64) for _ in range(5000)] + [0, 2**64 - 1]
    sorter = HashSorter()
    for v in values:
        sorter.add(v)
    assert list(sorter.sorted()) == sorted(values)
    ids = HashSorter()
    for i in range(100):
        ids.add(id_hash(f"id-{i}"))
    done = DoneIds(ids)
    assert len(done) == 100 and "id-7" in done and "id-100" not in done
