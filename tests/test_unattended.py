"""Long runs and cron: kill -9 and resume, SIGTERM drain, second signal, torn lines, locks, exit codes.

The CLI runs as a real subprocess against a mock in its own process.  Waits
poll for a state (records on disk, requests seen, a line on stderr) with a
generous hang guard, never a speed; mock timings leave the interrupted runs
many seconds of work past the point where the signal is sent.  Job files are
in tests/config/test_jobfile.py.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal

from tests.helpers import (
    assert_one_ok_record_per_input,
    by_id,
    chat,
    count_lines,
    prompts,
    read_jsonl,
    read_stderr_until,
    start_run,
    streamrun,
    wait_for_lines,
    wait_for_requests,
    write_jsonl,
)


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
    assert f"{len(written)} records done are skipped" in res.stderr
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


def test_resume_sends_failed_lines_again_unless_keep_failed(tmp_path, mock_process):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    rows = [{"custom_id": "a", "prompt": "x"},
            {"custom_id": "b", "prompt": "y", "mock": {"key": "b", "faults": ["400"]}}]
    inp, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    assert streamrun("run", inp, "-o", out, "--base-url", url).returncode == 1
    kept = streamrun("run", inp, "-o", out, "--base-url", url, "--resume", "--keep-failed")
    assert kept.returncode == 1  # nothing sent; the old error is kept, and the summary counts it
    assert "nothing to send: all 2 lines of" in kept.stderr and "; 1 failed" in kept.stderr
    assert sorted((r["custom_id"], r["status"]) for r in read_jsonl(out)) == [("a", "ok"), ("b", "error")]
    again = streamrun("run", inp, "-o", out, "--base-url", url, "--resume")
    assert again.returncode == 0, again.stderr  # the mock's fault list is used up: now ok
    assert "1 records done are skipped, 1 failed lines are sent again (--keep-failed to keep them)" in again.stderr
    assert [(r["custom_id"], r["status"]) for r in read_jsonl(out)] == [("a", "ok"), ("b", "error"), ("b", "ok")]


def test_a_rerun_after_a_wrong_key_sends_the_failed_lines_again(tmp_path, mock_process):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0", "--api-key-env", "MOCK_KEY", env={"MOCK_KEY": "right"})
    inp, out = prompts(tmp_path / "in.jsonl", 8), tmp_path / "out.jsonl"
    run = ("run", inp, "-o", out, "--base-url", url, "--model", "mock-model")
    first = streamrun(*run, env={"OPENAI_API_KEY": "wrong"})
    assert first.returncode == 1 and count_lines(out) == 8  # fewer than 20: no early stop, 8 error records
    again = streamrun(*run, "--resume", env={"OPENAI_API_KEY": "right"})  # cron's rerun, the key fixed
    assert again.returncode == 0, again.stderr
    assert "0 records done are skipped, 8 failed lines are sent again (--keep-failed to keep them)" in again.stderr
    assert count_lines(out) == 16  # appended: the error records stay in the file, superseded
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["requests_sent"] == 8 and summary["exit_code"] == 0
    assert (summary["summary"]["counts"]["total"], summary["summary"]["counts"]["ok"]) == (8, 8)
    report = json.loads(streamrun("report", out, "--json").stdout)
    assert report["inputs"][0]["records"] == 8 and report["inputs"][0]["superseded"] == 8
    assert (report["stages"][0]["counts"]["total"], report["stages"][0]["counts"]["error"]) == (8, 0)
    merged = streamrun("merge", out, "-o", tmp_path / "all.jsonl", "--inputs", inp)
    assert merged.returncode == 0, merged.stderr
    assert_one_ok_record_per_input(tmp_path / "all.jsonl", 8)
    last = streamrun(*run, "--resume", env={"OPENAI_API_KEY": "right"})
    assert last.returncode == 0, last.stderr
    assert f"nothing to send: all 8 lines of {inp} have final records in {out}; 0 failed" in last.stderr
    assert count_lines(out) == 16


def test_a_fixed_malformed_line_supersedes_its_invalid_record_and_the_exit_code_follows(tmp_path, mock_process):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    good = [json.dumps(chat(f"p{i}")) for i in range(6)]
    broken = list(good)
    broken[2] = good[2][:-1]  # not JSON: no id of its own, its record is keyed in.jsonl:3
    broken[4] = json.dumps({"custom_id": "p4", "mesages": []})  # the wrong shape: its record keeps the id
    inp, out = write_jsonl(tmp_path / "in.jsonl", broken), tmp_path / "out.jsonl"
    run = ("run", inp, "-o", out, "--base-url", url)
    first = streamrun(*run)
    assert first.returncode == 1
    assert sorted(r["custom_id"] for r in read_jsonl(out) if r["status"] == "error") == ["in.jsonl:3", "p4"]
    write_jsonl(inp, good)  # both lines fixed; no --resume-changed needed
    fixed = streamrun(*run, "--resume")
    assert fixed.returncode == 0, fixed.stderr  # the exit code follows the final records only
    assert "4 records done are skipped" in fixed.stderr
    assert len(read_jsonl(out)) == 8  # 6 + the two fixed lines' records, appended
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert (summary["summary"]["counts"]["total"], summary["summary"]["counts"]["ok"]) == (6, 6)
    report = json.loads(streamrun("report", out, "--json").stdout)
    assert report["inputs"][0]["records"] == 6 and report["inputs"][0]["superseded"] == 2
    last = streamrun(*run, "--resume")
    assert last.returncode == 0 and "nothing to send: all 6 lines" in last.stderr and "; 0 failed" in last.stderr


def test_failures_that_only_a_changed_line_changes_are_kept_until_it_changes(tmp_path, mock_process):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")  # its context window: 4096 tokens
    rows = [chat("a", max_tokens=3), chat("long", max_tokens=100_000)]
    inp, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    run = ("run", inp, "-o", out, "--base-url", url)
    assert streamrun(*run).returncode == 1
    assert by_id(read_jsonl(out))["long"]["error"]["type"] == "context_length_exceeded"
    kept = streamrun(*run, "--resume")  # the same request would fail the same way: not sent
    assert kept.returncode == 1 and count_lines(out) == 2
    assert "nothing to send: all 2 lines" in kept.stderr and "1 failed (--retry-failed sends them again)" in kept.stderr
    retried = streamrun(*run, "--resume", "--retry-failed")  # sent anyway: fails again, one record left
    assert retried.returncode == 1
    assert json.loads((tmp_path / "out.summary.json").read_text())["requests_sent"] == 1 and count_lines(out) == 2
    rows[1]["max_tokens"] = 3
    write_jsonl(inp, rows)
    fixed = streamrun(*run, "--resume")  # a changed line is sent again, no --resume-changed needed
    assert fixed.returncode == 0, fixed.stderr
    assert "1 failed lines are sent again" in fixed.stderr
    assert [(r["custom_id"], r["status"]) for r in read_jsonl(out)][-1] == ("long", "ok")


def test_a_failed_line_that_the_rerun_does_not_reach_keeps_its_record_in_the_summary(tmp_path, mock_process):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    rows = [chat("a"), chat("b", mock={"key": "b", "faults": ["500"]}), chat("c", mock={"key": "c", "faults": ["500"]}),
            chat("d")]
    inp, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    run = ("run", inp, "-o", out, "--base-url", url, "--max-attempts", "1", "-c", "1")
    assert streamrun(*run).returncode == 1
    # --num-prompts counts the whole output's final records (a, d): one prompt is left, b; c is not sent
    part = streamrun(*run, "--resume", "--num-prompts", "3")
    assert part.returncode == 1, part.stderr  # c's error record stays final
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["requests_sent"] == 1
    counts = summary["summary"]["counts"]
    assert (counts["total"], counts["ok"], counts["error"]) == (4, 3, 1)
    rest = streamrun(*run, "--resume")
    assert rest.returncode == 0, rest.stderr
    counts = json.loads((tmp_path / "out.summary.json").read_text())["summary"]["counts"]
    assert (counts["total"], counts["ok"]) == (4, 4)


def test_a_sweep_rerun_sends_each_stages_failed_lines_again(tmp_path, mock_process):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    rows = [chat("a"), chat("b", mock={"key": "b", "faults": ["500", "500"]})]  # b fails in both stages
    inp, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    run = ("run", inp, "-o", out, "--base-url", url, "--max-attempts", "1", "-c", "1,2")
    assert streamrun(*run).returncode == 1
    again = streamrun(*run, "--resume")
    assert again.returncode == 0, again.stderr
    assert "2 records done are skipped, 2 failed lines are sent again" in again.stderr
    assert count_lines(out) == 6
    report = json.loads(streamrun("report", out, "--json").stdout)
    assert [(s["stage"]["label"], s["counts"]["ok"], s["counts"]["error"]) for s in report["stages"]] == \
        [("c=1", 2, 0), ("c=2", 2, 0)]


def test_resume_in_another_output_format_exits_2_naming_the_files(tmp_path, mock_process):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    inp, out = prompts(tmp_path / "in.jsonl", 3), tmp_path / "out.jsonl"
    assert streamrun("run", inp, "-o", out, "--base-url", url, "--num-prompts", "2").returncode == 0
    before = out.read_bytes()
    mixed = streamrun("run", inp, "-o", out, "--base-url", url, "--resume", "--output-format", "openai-batch")
    assert mixed.returncode == 2
    assert f"{out} holds streamrun records, not openai-batch: resume it with --output-format streamrun" in mixed.stderr
    assert out.read_bytes() == before  # nothing appended
    batch = tmp_path / "batch.jsonl"
    assert streamrun("run", inp, "-o", batch, "--base-url", url, "--num-prompts", "2",
                     "--output-format", "openai-batch").returncode == 0
    refused = streamrun("run", inp, "-o", batch, "--base-url", url, "--resume")
    assert refused.returncode == 2 and "holds openai-batch records, not streamrun" in refused.stderr
    resumed = streamrun("run", inp, "-o", batch, "--base-url", url, "--resume", "--output-format", "openai-batch")
    assert resumed.returncode == 0, resumed.stderr
    assert all("response" in r for r in read_jsonl(batch)) and count_lines(batch) == 3


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
