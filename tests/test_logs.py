"""Logs for runs that nobody watches: progress lines without a terminal, and `--log-format json` lines only.

The runs here have stderr piped (not a TTY), as under cron, systemd, Kubernetes and CI. Waits poll for
lines on stderr; nothing asserts how long anything took.
"""

from __future__ import annotations

import io
import json
import logging
import re
import signal
import subprocess
import threading
import time

import orjson
import pytest

from runner.logs import JsonFormatter
from runner.report.end_of_run import render
from tests.helpers import HANG_GUARD_S, STREAMRUN, count_lines, write_jsonl


class Stderr:
    """A process's stderr, read line by line by a thread (so the pipe never fills)."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def wait(self, predicate, what: str) -> None:
        """Until predicate(lines) holds; fails if the run ends first (so it needs no speed)."""
        end = time.monotonic() + HANG_GUARD_S
        with self._cond:
            while not predicate(self.lines):
                assert self.proc.poll() is None, f"run ended before {what}: {self.lines}"
                assert time.monotonic() < end, f"hang guard: no {what}: {self.lines}"
                self._cond.wait(timeout=0.05)

    def finish(self) -> list[str]:
        self.proc.wait(timeout=HANG_GUARD_S)
        self._thread.join(timeout=HANG_GUARD_S)
        return self.lines


def _start(*args) -> subprocess.Popen:
    return subprocess.Popen([*STREAMRUN, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _prompts(tmp_path, n: int):
    return write_jsonl(tmp_path / "in.jsonl", [{"custom_id": f"r{i}", "prompt": f"p{i}"} for i in range(n)])


def test_json_progress_lines_then_the_summary_as_one_record(tmp_path, mock_process):
    url = mock_process("--ttft", "0.3", "--tokens-per-s", "0")  # -c 1: the run lasts 100 x 0.3 s at least
    inp = _prompts(tmp_path, 100)
    out = tmp_path / "out.jsonl"
    proc = _start("--log-format", "json", "run", inp, "-o", out, "--base-url", url, "-c", "1",
                  "--log-every", "0.2s")
    err = Stderr(proc)

    def progress(lines):
        return [r for r in map(json.loads, lines) if r["msg"] == "progress"]

    err.wait(lambda lines: sum(p["done"] >= 1 for p in progress(lines)) >= 2, "two progress records")
    proc.send_signal(signal.SIGTERM)  # drain the one in flight, write the summary
    lines = err.finish()
    assert proc.returncode == 143, lines

    records = [json.loads(line) for line in lines]  # every stderr line is one JSON object
    assert all({"ts", "level", "msg"} <= set(r) for r in records)
    ticks = progress(lines)
    assert {"done", "total", "ok", "errors", "rate", "in_flight", "concurrency", "elapsed_s", "eta_s",
            "ttft_p50_s"} <= set(ticks[-1])
    assert all(t["total"] == 100 and t["concurrency"] == 1 and t["in_flight"] <= 1 for t in ticks)
    assert [t["done"] for t in ticks] == sorted(t["done"] for t in ticks)
    moving = [t for t in ticks if t["done"] >= 1]
    assert all(t["eta_s"] is not None and t["rate"] > 0 and t["ttft_p50_s"] is not None for t in moving)

    last = records[-1]
    assert last["msg"] == "run finished" and last["level"] == "info"
    s = last["summary"]
    doc = orjson.loads((tmp_path / "out.summary.json").read_bytes())
    assert s["records"] == doc["summary"]["counts"]["total"] == count_lines(out) >= 1
    assert s["ok"] == doc["summary"]["counts"]["ok"] and s["error"] == 0
    assert s["exit_code"] == 143 and s["interrupted"] is True
    assert s["ttft_s"]["p50"] == doc["summary"]["metrics"]["ttft_s"]["p50"] is not None
    assert s["ttft_s"]["p99"] == doc["summary"]["metrics"]["ttft_s"]["p99"]
    assert s["request_throughput"] == doc["summary"]["request_throughput"] > 0
    assert s["output"] == str(out) and s["summary_path"] == str(tmp_path / "out.summary.json")


def test_text_progress_lines_from_a_job_file(tmp_path):
    inp = _prompts(tmp_path, 100)
    job = tmp_path / "job.toml"
    job.write_text(f'inputs = ["{inp}"]\noutput = "{tmp_path / "out.jsonl"}"\nconcurrency = 1\n'
                   'log_every = "200ms"\n[mock]\nttft = 0.3\ntokens_per_s = 0\n')
    proc = _start("job", job)
    err = Stderr(proc)
    line = re.compile(r"^streamrun: progress (\d+)/100 \(\d+%\): (\d+) ok, (\d+) errors, [\d.]+ req/s, "
                      r"in flight [01]/1(, ETA \w+)?$")
    err.wait(lambda lines: any((m := line.match(x)) and int(m[1]) >= 1 and m[4] for x in lines),
             "a progress line with an ETA")
    proc.send_signal(signal.SIGTERM)
    lines = err.finish()
    assert proc.returncode == 143
    assert not any(x.startswith("{") for x in lines)
    assert any(re.match(r"^streamrun: \d+ records: \d+ ok, 0 error", x) for x in lines), lines
    assert "\x1b[" not in "\n".join(lines)


@pytest.mark.parametrize("text, says", [
    ('inputs = ["in.jsonl"]\noutput = "o.jsonl"\nconcurency = 4\n', "unknown key 'concurency'"),
    ('inputs = ["in.jsonl"]\noutput = "o.jsonl"\nparams = 5\n', "key 'params' must be a table"),
    ('inputs = ["in.jsonl"\n', "not valid TOML"),
])
@pytest.mark.parametrize("where", ["before", "after"])
def test_a_job_file_error_is_a_json_line_under_log_format_json(tmp_path, text, says, where):
    job = tmp_path / "job.toml"
    job.write_text(text)
    args = ["--log-format", "json", "job", str(job)] if where == "before" else ["job", str(job), "--log-format", "json"]
    res = subprocess.run([*STREAMRUN, *args], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert res.returncode == 2
    (line,) = res.stderr.strip().splitlines()
    doc = json.loads(line)
    assert doc["level"] == "error" and says in doc["msg"] and str(job) in doc["msg"]


def test_log_every_0_and_json_lines_after_a_sweep(tmp_path):
    inp = _prompts(tmp_path, 4)
    res = subprocess.run([*STREAMRUN, "--log-format", "json", "run", str(inp), "-o", str(tmp_path / "out.jsonl"),
                          "--mock", "-c", "1,2", "--log-every", "0"], capture_output=True, text=True,
                         timeout=HANG_GUARD_S)
    assert res.returncode == 0, res.stderr
    records = [json.loads(line) for line in res.stderr.splitlines()]  # no stage table: JSON lines only
    assert not [r for r in records if r["msg"] == "progress"]
    assert records[-1]["msg"] == "run finished"
    s = records[-1]["summary"]
    assert (s["records"], s["ok"], s["error"], s["exit_code"]) == (8, 8, 0, 0)
    assert s["ttft_s"]["p50"] is not None and s["tokens"]["completion"] > 0

    # -q: warnings and errors only; the summary is in its file (as in text)
    res = subprocess.run([*STREAMRUN, "run", str(inp), "-o", str(tmp_path / "q.jsonl"), "--mock", "-q",
                          "--log-format", "json"], capture_output=True, text=True, timeout=HANG_GUARD_S)
    assert res.returncode == 0, res.stderr
    assert res.stderr == "" and (tmp_path / "q.summary.json").exists()


# -- in process: the formatter and the summary record ------------------------------


def _record(msg: str, data=None, exc_info=None) -> logging.LogRecord:
    extra = {"data": data} if data is not None else None
    return logging.getLogger("streamrun.test").makeRecord("streamrun", logging.INFO, __file__, 1, msg, (),
                                                          exc_info, extra=extra)


def test_json_formatter_adds_the_fields_of_extra_data():
    fmt = JsonFormatter(secrets=("sk-test-0123456789",))
    out = json.loads(fmt.format(_record("progress", {"done": 3, "msg": "not this", "url": "x sk-test-0123456789"})))
    assert out["msg"] == "progress" and out["done"] == 3 and out["level"] == "info" and "ts" in out
    assert out["url"] == "x ***"  # fields are redacted like messages
    assert set(json.loads(fmt.format(_record("plain")))) == {"ts", "level", "msg"}
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        out = json.loads(fmt.format(_record("failed", exc_info=sys.exc_info())))
    assert "ValueError: boom" in out["exc"] and "\n" not in fmt.format(_record("x", {"a": "1\n2"}))


def test_render_as_json_is_one_record_and_text_is_unchanged(tmp_path):
    doc = {
        "output": "out.jsonl", "exit_code": 1, "interrupted": False, "stopped": None, "cost_usd": 0.5,
        "event_loop_lag": {}, "adaptive_concurrency": {"throttles": 0},
        "summary": {"counts": {"total": 3, "ok": 2, "error": 1, "retried": 1, "errors_by_type": {"timeout": 1},
                               "top_errors": [{"type": "timeout", "message": "slow", "count": 1}]},
                    "metrics": {"ttft_s": {"p50": 0.1, "p90": 0.2, "p99": 0.3}, "e2e_s": {"p50": 1.0}},
                    "request_throughput": 1.5, "output_token_throughput": 20.0, "duration_s": 2.0,
                    "tokens": {"prompt": 3, "completion": 40, "reasoning": 0, "total": 43}},
    }
    text = io.StringIO()
    render(doc, "out.summary.json", out=text)
    assert text.getvalue().startswith("streamrun: 3 records: 2 ok, 1 error (timeout 1), 1 retried\n")

    logger = logging.getLogger("streamrun")
    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setFormatter(JsonFormatter())
    old_level = logger.level
    logger.addHandler(handler)
    try:
        logger.setLevel(logging.WARNING)  # -q: warnings only, and this summary has none
        render(doc, "out.summary.json", stage_table=True, as_json=True)
        assert buf.getvalue() == ""
        logger.setLevel(logging.INFO)
        render(doc, "out.summary.json", stage_table=True, as_json=True)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1
    out = json.loads(lines[0])
    assert out["msg"] == "run finished"
    assert out["summary"] == {
        "exit_code": 1, "interrupted": False, "stopped": None, "records": 3, "ok": 2, "error": 1, "retried": 1,
        "errors_by_type": {"timeout": 1}, "top_errors": [{"type": "timeout", "message": "slow", "count": 1}],
        "ttft_s": {"p50": 0.1, "p90": 0.2, "p99": 0.3}, "e2e_s": {"p50": 1.0, "p90": None, "p99": None},
        "request_throughput": 1.5, "output_token_throughput": 20.0, "duration_s": 2.0, "requests_sent": 0,
        "tokens": {"prompt": 3, "completion": 40, "reasoning": 0, "total": 43}, "cost_usd": 0.5,
        "output": "out.jsonl", "summary_path": "out.summary.json"}
