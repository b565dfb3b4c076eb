"""`streamrun stream`: one prompt's tokens on stdout as they arrive, the metrics line on stderr."""

from __future__ import annotations

import re

from tests.conftest import streamrun


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
