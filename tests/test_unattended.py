"""Long runs and cron: kill -9 and resume, SIGTERM drain, second signal, torn lines, locks, exit codes.

The CLI runs as a real subprocess against a mock in its own process.  Waits
poll for a state (records on disk, requests seen, a line on stderr) with a
generous hang guard, never a speed; mock timings leave the interrupted runs
many seconds of work past the point where the signal is sent.  Job files are
in tests/test_jobfile.py.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal

from tests.conftest import (assert_one_ok_record_per_input, count_lines, prompts, read_jsonl, read_stderr_until,
                            start_run, streamrun, wait_for_lines, wait_for_requests, write_jsonl)


def test_kill_9_then_resume_gives_exactly_one_ok_record_each(tmp_path, mock_process):
    # 0.34 s a request at -c 16: the 40 lines come after 3 rounds, the whole run would need 19,
    # so the kill lands mid-run however slowly this test process gets to send it
    url = mock_process("--ttft", "0.3", "--tokens-per-s", "400", "--output-tokens", "16")
    n = 300
    inp, out = prompts(tmp_path / "in.jsonl", n), tmp_path / "out.jsonl"
    proc = start_run(inp, "-o", out, "--base-url", url, "-c", "16", "--fsync", "never")
    wait_for_lines(out, 40, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    written = read_jsonl(out)  # every line whole and readable
    assert 40 <= len(written) < n
    res = streamrun("run", inp, "-o", out, "--base-url", url, "-c", n, "--resume")
    assert res.returncode == 0, res.stderr
    assert f"{len(written)} records already done" in res.stderr
    assert_one_ok_record_per_input(out, n)
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["summary"]["counts"]["total"] == n  # the summary covers the whole output, across runs
    assert summary["requests_sent"] == n - len(written)


def test_sigterm_drains_in_flight_exits_143_and_resume_completes(tmp_path, mock_process):
    # 0.4 s a request at -c 8: the 16 lines come after 2 rounds, the whole run would need 25
    url = mock_process("--ttft", "0.3", "--tokens-per-s", "200", "--output-tokens", "20")
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
    res = streamrun("run", inp, "-o", out, "--base-url", url, "-c", n, "--resume")
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
    read_stderr_until(proc, "draining")  # the first signal was handled: the drain has begun
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)  # not 300 s: the second signal does not wait for the drain
    assert proc.returncode == 143
    assert count_lines(out) == 0  # the three requests were still waiting for their first token


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
    assert again.returncode == 1  # nothing left to send; the old error is kept, and the summary counts it
    assert sorted((r["custom_id"], r["status"]) for r in read_jsonl(out)) == [("a", "ok"), ("b", "error")]
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
