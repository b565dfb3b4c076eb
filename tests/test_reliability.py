"""The run's own machinery under failure: a full disk, a symlink around the lock, an output over an input.

A long paid run must keep what it can and say what failed: a writer that
cannot write stops new requests, drains, keeps the file whole and exits 4;
`--resume` then completes the file with nothing lost or duplicated.
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import time

import orjson

from tests.helpers import STREAMRUN, read_jsonl, streamrun, write_jsonl


def prompts(path, n: int):
    return write_jsonl(path, [{"custom_id": f"p{i:04d}", "prompt": f"prompt {i}", "max_tokens": 8}
                              for i in range(n)])


def limited_file_size(limit: int):
    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return apply


def test_a_full_disk_stops_sending_keeps_whole_lines_exits_4_and_resume_completes(tmp_path):
    inp = prompts(tmp_path / "in.jsonl", 200)
    out = tmp_path / "out.jsonl"
    res = subprocess.run([*STREAMRUN, "run", inp, "-o", out, "--mock", "-c", "8", "--fsync", "always",
                          "--summary", tmp_path / "s.json"],
                         capture_output=True, text=True, timeout=120, preexec_fn=limited_file_size(24 * 1024))
    assert res.returncode == 4, res.stderr
    assert "cannot write" in res.stderr and "Traceback" not in res.stderr
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b""  # the file ends with a whole line
    written = [orjson.loads(line) for line in lines[:-1]]  # and every line parses
    assert 0 < len(written) < 200
    assert os.path.getsize(out) <= 24 * 1024
    summary = orjson.loads((tmp_path / "s.json").read_bytes())
    assert summary["exit_code"] == 4 and "cannot write" in summary["stopped"]
    assert summary["requests_sent"] < 200  # sending stopped at once

    again = streamrun("run", inp, "-o", out, "--mock", "--resume")
    assert again.returncode == 0, again.stderr
    ids = [r["custom_id"] for r in read_jsonl(out)]
    assert sorted(ids) == [f"p{i:04d}" for i in range(200)]  # nothing lost, nothing duplicated


def test_a_symlink_to_a_locked_output_is_the_same_output(tmp_path, mock_process):
    url = mock_process("--ttft", "0.2")
    inp = prompts(tmp_path / "in.jsonl", 30)
    out = tmp_path / "out.jsonl"
    link = tmp_path / "link.jsonl"
    out.touch()
    link.symlink_to(out)
    first = subprocess.Popen([*STREAMRUN, "run", inp, "-o", out, "--base-url", url, "--overwrite", "-c", "1"],
                             stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(600):  # wait (a condition, not a duration) until the first run has written a record
            if out.stat().st_size > 0 or first.poll() is not None:
                break
            time.sleep(0.05)
        assert first.poll() is None, "the first run ended before the second could try its lock"
        second = streamrun("run", inp, "-o", link, "--base-url", url, "--resume")
        assert second.returncode == 3, second.stderr
        assert "being written by another streamrun run" in second.stderr
    finally:
        first.terminate()
        first.wait(timeout=30)


def test_an_output_that_is_an_input_is_refused(tmp_path):
    inp = prompts(tmp_path / "in.jsonl", 3)
    before = inp.read_bytes()
    for flag in ("--overwrite", "--resume"):
        res = streamrun("run", inp, "-o", inp, "--mock", flag)
        assert res.returncode == 2 and "is one of the input files" in res.stderr
    (tmp_path / "alias.jsonl").symlink_to(inp)
    res = streamrun("run", inp, "-o", tmp_path / "alias.jsonl", "--mock", "--overwrite")
    assert res.returncode == 2
    assert inp.read_bytes() == before


def test_num_prompts_and_the_summary_count_the_whole_output_across_resumes(tmp_path):
    inp = prompts(tmp_path / "in.jsonl", 40)
    out = tmp_path / "out.jsonl"
    first = streamrun("run", inp, "-o", out, "--mock", "--num-prompts", "10")
    assert first.returncode == 0, first.stderr
    assert len(read_jsonl(out)) == 10
    again = streamrun("run", inp, "-o", out, "--mock", "--num-prompts", "10", "--resume")
    assert again.returncode == 0, again.stderr
    assert len(read_jsonl(out)) == 10  # the same command finishes the same job: nothing more to send
    summary = orjson.loads((tmp_path / "out.summary.json").read_bytes())
    assert summary["requests_sent"] == 0 and summary["summary"]["counts"]["total"] == 10  # the whole file
    more = streamrun("run", inp, "-o", out, "--mock", "--num-prompts", "15", "--resume")
    assert more.returncode == 0, more.stderr
    ids = [r["custom_id"] for r in read_jsonl(out)]
    assert len(ids) == len(set(ids)) == 15
    summary = orjson.loads((tmp_path / "out.summary.json").read_bytes())
    assert summary["requests_sent"] == 5 and summary["summary"]["counts"]["total"] == 15


def test_resume_refuses_answers_to_lines_that_changed_unless_told_to_resend(tmp_path):
    inp = tmp_path / "in.jsonl"
    lines = [f'{{"prompt": "question {i}", "max_tokens": 3}}' for i in range(3)]
    inp.write_text("\n".join(lines) + "\n")  # default ids: in.jsonl:1, :2, :3
    out = tmp_path / "out.jsonl"
    assert streamrun("run", inp, "-o", out, "--mock").returncode == 0
    before = {r["custom_id"]: r["request_hash"] for r in read_jsonl(out)}
    assert all(before.values())
    lines[1] = '{"prompt": "a different question", "max_tokens": 3}'
    inp.write_text("\n".join(lines) + "\n")
    refused = streamrun("run", inp, "-o", out, "--mock", "--resume")
    assert refused.returncode == 2
    assert "1 records answer input lines that have changed" in refused.stderr and "in.jsonl:2" in refused.stderr
    assert len(read_jsonl(out)) == 3  # nothing touched
    resent = streamrun("run", inp, "-o", out, "--mock", "--resume", "--resume-changed")
    assert resent.returncode == 0, resent.stderr
    after = {r["custom_id"]: r["request_hash"] for r in read_jsonl(out)}
    assert sorted(after) == sorted(before)  # one record per id, none duplicated
    assert after["in.jsonl:2"] != before["in.jsonl:2"]
    assert after["in.jsonl:1"] == before["in.jsonl:1"] and after["in.jsonl:3"] == before["in.jsonl:3"]


def test_after_a_write_failure_the_end_of_run_line_counts_only_the_records_written(tmp_path, mock_process):
    url = mock_process("--ttft", "0.3")  # one answer at a time: the later ones come well after the reader has gone
    inp = prompts(tmp_path / "in.jsonl", 20)
    proc = subprocess.Popen([*STREAMRUN, "run", inp, "-o", "-", "--base-url", url, "-c", "1",
                             "--summary", tmp_path / "s.json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert orjson.loads(proc.stdout.readline())["status"] == "ok"  # `| head -n 1`: one line read, then gone
    proc.stdout.close()
    stderr = proc.communicate(timeout=120)[1].decode()
    assert proc.returncode == 4, stderr
    summary = orjson.loads((tmp_path / "s.json").read_bytes())
    written = summary["records_written"]
    assert written >= 1 and summary["records_not_written"] >= 1
    assert summary["summary"]["counts"]["total"] == written  # not the records the pipe never took
    assert f"streamrun: {written} record{'s' if written > 1 else ''}: {written} ok" in stderr
