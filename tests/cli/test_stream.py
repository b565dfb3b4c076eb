"""`streamrun stream`: one prompt's tokens on stdout as they arrive, the metrics line on stderr."""

from __future__ import annotations

import json
import re
import subprocess

from tests.helpers import HANG_GUARD_S, STREAMRUN, mock_stats, streamrun, write_jsonl


def test_tokens_on_stdout_metrics_on_stderr():
    res = streamrun("stream", "Say hello", "--mock", "--max-tokens", "12")
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.strip()) > 0
    assert re.search(r"TTFT \d+ ms  ITL p50 \d+ ms  E2E \d+ ms  12 tokens  finish length  attempts 1  model mock-model",
                     res.stderr), res.stderr


def test_the_mock_answers_the_model_a_real_run_would_name():
    res = streamrun("stream", "Say hello", "--mock", "--max-tokens", "3", "--model", "gpt-4o-mini")
    assert res.returncode == 0, res.stderr


def test_stdin_prompt_and_completions(mock_process):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    res = streamrun("stream", "-", "--completion", "--base-url", url, "--max-tokens", "5", input="Once upon a time")
    assert res.returncode == 0, res.stderr
    assert "5 tokens" in res.stderr and res.stdout.strip()


def test_a_refused_request_exits_1_with_the_servers_message(mock_process):
    url = mock_process("--ttft", "0")
    res = streamrun("stream", "hi", "--base-url", url, "--model", "no-such-model")
    assert res.returncode == 1
    assert "http_error: HTTP 404" in res.stderr and "does not exist" in res.stderr


def test_the_same_misconfiguration_checks_as_run():
    res = streamrun("stream", "hi", "--base-url", "localhost:8000/v1")
    assert res.returncode == 2 and "--base-url http://localhost:8000/v1" in res.stderr


# -- a reader that goes away (`| head`) is no lost connection: nothing is sent again


def test_a_closed_stdout_stops_quietly_after_one_request(mock_process):
    url = mock_process("--ttft", "0", "--tokens-per-s", "100")
    proc = subprocess.Popen([*STREAMRUN, "stream", "Tell a long story", "--base-url", url, "--model", "mock-model",
                             "--max-tokens", "2000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = proc.stdout.read(5)  # `| head -c 5`
        proc.stdout.close()
        err = proc.stderr.read().decode()
        proc.wait(timeout=HANG_GUARD_S)  # not the 20 s of the whole stream
    finally:
        proc.kill()
    assert len(first) == 5
    assert proc.returncode == 0 and err == "", err  # no "[retrying after: ... Broken pipe]", no traceback
    assert mock_stats(url)["requests"] == 1


def test_a_closed_records_pipe_is_an_output_failure_never_a_resent_request(tmp_path, mock_process):
    url = mock_process("--ttft", "0", "--tokens-per-s", "100")  # 0.2 s a request: the pipe closes long before the end
    rows = [{"custom_id": f"p{i}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 20}
            for i in range(200)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    proc = subprocess.Popen([*STREAMRUN, "run", inp, "-o", "-", "--base-url", url, "-c", "8",
                             "--summary", tmp_path / "s.json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = proc.stdout.readline()  # `| head -n 1`
        proc.stdout.close()
        err = proc.stderr.read().decode()
        proc.wait(timeout=HANG_GUARD_S)
    finally:
        proc.kill()
    assert json.loads(first)["status"] == "ok"
    assert proc.returncode == 4 and "cannot write -: Broken pipe" in err, err
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["summary"]["counts"]["retried"] == 0
    assert mock_stats(url)["requests"] == summary["requests_sent"]  # each request went once
