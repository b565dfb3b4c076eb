"""The CLI as users run it: help, usage errors, exit codes, and secrets that never leak."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import read_jsonl, streamrun, write_jsonl

FAKE_KEY = "sk-test-Zq8r5SECRETKEYfor-streamrun-0042"


def test_help_lists_commands_and_exit_codes():
    out = streamrun("--help")
    assert out.returncode == 0
    for word in ("run", "job", "mock", "report", "merge", "convert", "synth", "130"):
        assert word in out.stdout
    run_help = streamrun("run", "--help")
    assert run_help.returncode == 0 and "--concurrency" in run_help.stdout and "Exit codes" in run_help.stdout


def test_usage_errors_exit_2(tmp_path):
    assert streamrun("run", "x.jsonl").returncode == 2  # no -o
    out = streamrun("run", tmp_path / "missing.jsonl", "-o", tmp_path / "o.jsonl")
    assert out.returncode == 2 and "missing.jsonl: no such input file" in out.stderr
    bad = streamrun("run", "-", "-o", tmp_path / "o.jsonl", "--param", "novalue")
    assert bad.returncode == 2 and "key=value" in bad.stderr
    assert streamrun("run", "-", "-o", tmp_path / "o.jsonl", "-c", "0").returncode == 2
    assert streamrun("run", "-", "-o", tmp_path / "o.jsonl", "-c", "1,2", "--rate", "1,2").returncode == 2


def test_existing_output_is_refused_without_resume_or_overwrite(tmp_path, mock_process):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    inp = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": "a", "messages": [{"role": "user", "content": "x"}]}])
    out = tmp_path / "o.jsonl"
    out.write_text('{"custom_id": "old", "status": "ok"}\n')
    res = streamrun("run", inp, "-o", out, "--base-url", url)
    assert res.returncode == 2 and "--resume" in res.stderr and "--overwrite" in res.stderr
    assert out.read_text() == '{"custom_id": "old", "status": "ok"}\n'  # untouched
    assert streamrun("run", inp, "-o", out, "--base-url", url, "--overwrite").returncode == 0
    assert [r["custom_id"] for r in read_jsonl(out)] == ["a"]


def test_stdin_input(tmp_path, mock_process):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    lines = '{"prompt": "a"}\n{"messages": [{"role": "user", "content": "b"}]}\n'
    res = streamrun("run", "-", "-o", tmp_path / "o.jsonl", "--base-url", url, input=lines)
    assert res.returncode == 0, res.stderr
    assert sorted(r["custom_id"] for r in read_jsonl(tmp_path / "o.jsonl")) == ["<stdin>:1", "<stdin>:2"]


def test_key_never_printed_logged_or_written(tmp_path, mock_process):
    good = mock_process("--ttft", "0", "--tokens-per-s", "0", "--api-key-env", "MOCK_KEY", env={"MOCK_KEY": FAKE_KEY})
    wrong = mock_process("--ttft", "0", "--tokens-per-s", "0", "--api-key-env", "MOCK_KEY",
                         env={"MOCK_KEY": "another-key-entirely"})
    inp = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": f"r{i}", "prompt": f"p{i}"} for i in range(4)]
                      + ["{broken"])
    env = {"OPENAI_API_KEY": FAKE_KEY}
    runs = [
        streamrun("-v", "run", inp, "-o", tmp_path / "ok.jsonl", "--base-url", good, env=env),
        streamrun("-v", "--log-format", "json", "run", inp, "-o", tmp_path / "denied.jsonl", "--base-url", wrong,
                  "--model", "mock-model", env=env),
        streamrun("run", inp, "-o", tmp_path / "batch.jsonl", "--base-url", good, "--output-format",
                  "openai-batch", env=env),
    ]
    assert [r.returncode for r in runs] == [1, 1, 1]  # the broken line fails each run
    denied = {r["custom_id"]: r for r in read_jsonl(tmp_path / "denied.jsonl")}
    assert denied["r0"]["error"]["status_code"] == 401 and denied["r0"]["attempts"] == 1
    assert sum(r["status"] == "ok" for r in read_jsonl(tmp_path / "ok.jsonl")) == 4
    for run in runs:
        assert FAKE_KEY not in run.stdout and FAKE_KEY not in run.stderr
    produced = [p for p in Path(tmp_path).rglob("*") if p.is_file()]
    assert len(produced) >= 6  # results and summaries
    for path in produced:
        assert FAKE_KEY.encode() not in path.read_bytes(), path
