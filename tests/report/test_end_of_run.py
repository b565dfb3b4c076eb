"""What the end of a run says on stderr: answers from the cache or sent, an input with nothing in it,
a run that wrote nothing, and -q (the summary file only, warnings still shown).

Runs are real CLI subprocesses with stderr piped (no progress bar), as under cron.
"""

from __future__ import annotations

import io
import logging

import orjson

from runner.observe import client_timing as trust
from runner.observe.client_timing import Rule
from runner.report.end_of_run import render
from tests.helpers import chat, prompts, run_rows, streamrun, write_jsonl


def _summary(path) -> dict:
    return orjson.loads(path.read_bytes())


def test_a_run_answered_from_the_cache_says_so_and_a_partly_cached_one_says_how_many_of_each(tmp_path):
    cache = tmp_path / "cache.db"
    first = streamrun("run", prompts(tmp_path / "in.jsonl", 8), "-o", tmp_path / "a.jsonl", "--mock", "--cache", cache)
    assert first.returncode == 0, first.stderr
    assert "  0 answered from the cache, 8 sent\n" in first.stderr and "TTFT" in first.stderr

    again = streamrun("run", tmp_path / "in.jsonl", "-o", tmp_path / "b.jsonl", "--mock", "--cache", cache)
    assert again.returncode == 0, again.stderr
    assert "streamrun: 8 records: 8 ok, 0 error, 0 retried\n  8 answered from the cache, 0 sent\n" in again.stderr
    assert "TTFT" not in again.stderr and "req/s" not in again.stderr  # nothing measured: no row of dashes
    doc = _summary(tmp_path / "b.summary.json")
    assert doc["requests_sent"] == 0 and doc["cache"]["hits"] == 8

    part = streamrun("run", prompts(tmp_path / "more.jsonl", 12), "-o", tmp_path / "c.jsonl", "--mock", "--cache",
                     cache)  # the same 8 prompts and 4 new ones
    assert part.returncode == 0, part.stderr
    assert "  8 answered from the cache, 4 sent\n" in part.stderr
    assert "TTFT ms  p50 " in part.stderr and " req/s, " in part.stderr  # the 4 sent were measured


def test_a_run_without_cache_says_nothing_of_it(tmp_path):
    res = streamrun("run", prompts(tmp_path / "in.jsonl", 2), "-o", tmp_path / "o.jsonl", "--mock")
    assert res.returncode == 0, res.stderr
    assert "answered from the cache" not in res.stderr and "TTFT ms  p50 " in res.stderr


def test_an_empty_input_warns_naming_it_exits_0_and_says_so_in_one_line(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    out = tmp_path / "o.jsonl"
    res = streamrun("run", empty, "-o", out, "--mock")
    assert res.returncode == 0, res.stderr
    lines = res.stderr.splitlines()
    assert lines[-2:] == [f"streamrun: no input lines in {empty}",
                          f"streamrun: 0 records written to {out}; summary: {tmp_path / 'o.summary.json'}"]
    assert _summary(tmp_path / "o.summary.json")["records_written"] == 0  # the file is written all the same

    blank = write_jsonl(tmp_path / "blank.jsonl", ["", "   "])  # blank lines are no input lines either
    res = streamrun("run", blank, empty, "-o", tmp_path / "b.jsonl", "--mock")
    assert res.returncode == 0 and f"streamrun: no input lines in {blank}, {empty}\n" in res.stderr
    res = streamrun("run", "-", "-o", tmp_path / "s.jsonl", "--mock", input="")
    assert res.returncode == 0 and "streamrun: no input lines in stdin\n" in res.stderr


def test_input_that_answers_nothing_new_is_no_empty_input(tmp_path):
    inp = prompts(tmp_path / "in.jsonl", 2)
    assert streamrun("run", inp, "-o", tmp_path / "o.jsonl", "--mock").returncode == 0
    res = streamrun("run", inp, "-o", tmp_path / "o.jsonl", "--mock", "--resume")  # every line done already
    assert res.returncode == 0 and "no input lines" not in res.stderr
    assert "streamrun: 2 records: 2 ok" in res.stderr  # the whole output, as before
    res = streamrun("run", inp, "-o", tmp_path / "shard.jsonl", "--mock", "--shard", "0/1000")  # lines, none its own
    assert res.returncode == 0 and "no input lines" not in res.stderr


def test_a_run_stopped_by_a_configuration_error_ends_in_one_line(tmp_path, mock_process):
    url = mock_process("--api-key-env", "MOCK_KEY", env={"MOCK_KEY": "right-key"})
    out = tmp_path / "out.jsonl"
    res = streamrun("run", prompts(tmp_path / "in.jsonl", 40), "-o", out, "--base-url", url, "--model", "mock-model",
                    "-c", "4", env={"OPENAI_API_KEY": "wrong-key"})
    assert res.returncode == 2, res.stderr
    lines = res.stderr.splitlines()
    assert "first 20 answers were all HTTP 401/403/404" in lines[-2]
    assert lines[-1] == (f"streamrun: 0 records written to {out} (stopped by the error above); "
                         f"summary: {tmp_path / 'out.summary.json'}")
    assert "TTFT" not in res.stderr and "req/s" not in res.stderr


def test_quiet_shows_no_summary_but_writes_it(tmp_path):
    inp = prompts(tmp_path / "in.jsonl", 3)
    res = streamrun("-q", "run", inp, "-o", tmp_path / "a.jsonl", "--mock")
    assert (res.returncode, res.stderr) == (0, "")
    assert _summary(tmp_path / "a.summary.json")["records_written"] == 3
    res = streamrun("run", inp, "-o", tmp_path / "b.jsonl", "--mock", "-q", "--log-format", "json")
    assert (res.returncode, res.stderr) == (0, "")  # no "run finished" record either
    assert _summary(tmp_path / "b.summary.json")["records_written"] == 3
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = streamrun("-q", "run", empty, "-o", tmp_path / "c.jsonl", "--mock")  # a warning is still shown
    assert (res.returncode, res.stderr) == (0, f"streamrun: no input lines in {empty}\n")


async def test_quiet_keeps_the_client_bound_warning(tmp_path, mock_server, monkeypatch, capsys):
    monkeypatch.setattr(trust, "RULE", Rule(cpu_share=0.0, min_cpu_wall_s=0.0, min_requests=0))  # always bound
    logger = logging.getLogger("streamrun")
    monkeypatch.setattr(logger, "level", logging.WARNING)  # -q
    url = await mock_server(output_tokens=3)
    code, _ = await run_rows(tmp_path, url, [chat(f"p{i}") for i in range(3)])
    assert code == 0
    err = capsys.readouterr().err
    assert "streamrun: warning: the run: client-bound: " in err and "records:" not in err
    assert _summary(tmp_path / "out.summary.json")["client_bound"] is True


def test_the_loop_lag_warning_too_needs_measured_requests(monkeypatch):
    monkeypatch.setattr(logging.getLogger("streamrun"), "level", logging.INFO)  # not -q
    doc = {"output": "o.jsonl", "exit_code": 1, "interrupted": False, "stopped": None,
           "event_loop_lag": {"samples": 100, "share_over_10ms": 0.5, "max_s": 0.2},
           "summary": {"counts": {"total": 30, "ok": 0, "error": 30, "errors_by_type": {"timeout": 30}},
                       "metrics": {}},
           "timing": {"rule": {"min_requests": 20}, "stages": [{"requests": 0, "client_bound": False}]}}
    text = io.StringIO()
    render(doc, "o.summary.json", out=text)  # every request failed: no latency to be inflated
    assert "event loop lagged" not in text.getvalue() and "TTFT" not in text.getvalue()
    doc["timing"]["stages"][0]["requests"] = 20
    text = io.StringIO()
    render(doc, "o.summary.json", out=text)
    assert "  warning: the client's event loop lagged over 10 ms in 50% of checks" in text.getvalue()
