"""`streamrun report` (runner/report/): a section per module of the package,
in the order the data flows: read, build, document, terminal, html, command."""

from __future__ import annotations

import itertools
import re
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import orjson
import pytest
from click.testing import CliRunner

from runner.cli.report import report_command
from runner.outputs.batch import encode_batch
from runner.record import decode_native
from runner.report import FOOTNOTE, SCHEMA, InputFile, build_report, load_records
from tests.helpers import ROOT

T0 = datetime(2026, 1, 1, tzinfo=UTC)
C1 = {"index": 0, "label": "c=1", "concurrency": 1, "rate": None}
C2 = {"index": 1, "label": "c=2", "concurrency": 2, "rate": None}
_IDS = itertools.count(1)


def record(stage: dict[str, Any] | None, at: float, ttft: float, e2e: float, out: int, *, ok: bool = True,
           **fields: Any) -> dict[str, Any]:
    tpot = (e2e - ttft) / (out - 1) if out > 1 else None
    gaps = [round(tpot, 6)] * (out - 1) if tpot else []
    return {
        "custom_id": f"p.jsonl:{next(_IDS)}",  # one each: a second record of an id would supersede the first
        "status": "ok" if ok else "error",
        "text": "hi",
        "model": "mock-model",
        "usage": {"prompt_tokens": 10, "completion_tokens": out, "total_tokens": 10 + out} if ok else None,
        "metrics": {
            "ttft_s": ttft if ok else None,
            "ttfb_s": ttft - 0.005 if ok else None,
            "e2e_s": e2e,
            "tpot_s": tpot if ok else None,
            "itl_s": gaps if ok else [],
            "queue_s": 0.001,
            "output_tokens": out if ok else 0,
            "output_tokens_source": "usage",
            "started_at": (T0 + timedelta(seconds=at)).isoformat(),
        },
        "attempts": 1,
        "error": None if ok else {"type": "http_error", "status_code": 500, "message": "boom"},
        "endpoint": "http://127.0.0.1:8000/v1",
        "stage": stage,
        "warmup": False,
        **fields,
    }


def write_lines(path: Path, rows: list[Any]) -> Path:
    path.write_bytes(b"".join((row if isinstance(row, bytes) else orjson.dumps(row)) + b"\n" for row in rows))
    return path


@pytest.fixture
def results(tmp_path: Path) -> Path:
    """Two stages. c=1: TTFT 100 and 300 ms over 0..2 s. c=2: TTFT 400 and
    600 ms and one error, over 10..12 s. A garbled line 3 in between."""
    return write_lines(tmp_path / "results.jsonl", [
        record(C1, 0.0, 0.1, 0.5, 41),
        record(C1, 1.0, 0.3, 1.0, 71),
        b'{"custom_id": "torn", "sta',
        record(C2, 10.0, 0.4, 2.0, 81),
        record(C2, 10.0, 0.6, 1.6, 51),
        record(C2, 11.0, 0.0, 1.0, 1, ok=False),
    ])


def invoke(*args: str | Path) -> Any:
    return CliRunner().invoke(report_command, [str(a) for a in args], catch_exceptions=False)


# --------------------------------------------------------------------------
# read: files → records


def test_garbled_line_is_warned_and_skipped(results: Path) -> None:
    r = invoke(results)
    assert f"{results}:3" in r.stderr
    assert r.stderr.count("warning") == 1
    inputs: list[InputFile] = []
    warnings: list[str] = []
    records = list(load_records([results], inputs=inputs, warn=warnings.append))
    assert len(records) == 5
    assert inputs[0].as_dict() == {"path": str(results), "records": 5, "skipped_lines": 1, "superseded": 0}
    assert len(warnings) == 1 and ":3:" in warnings[0]


# Lines as the OpenAI Batch API writes them: a success, an HTTP error, and a
# request that never ran (non-HTTP error, ``response`` null).
BATCH_LINES = [
    {"id": "batch_req_1", "custom_id": "request-1", "error": None, "response": {
        "status_code": 200, "request_id": "req_1", "body": {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1711652795, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello."},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 22, "completion_tokens": 2, "total_tokens": 24}}}},
    {"id": "batch_req_2", "custom_id": "request-2", "error": None, "response": {
        "status_code": 200, "request_id": "req_2", "body": {
            "id": "chatcmpl-2", "object": "chat.completion", "created": 1711652796, "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hi there."},
                         "logprobs": None, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23}}}},
    {"id": "batch_req_3", "custom_id": "request-3", "error": None, "response": {
        "status_code": 400, "request_id": "req_3", "body": {"error": {
            "message": "Invalid model", "type": "invalid_request_error", "param": None, "code": None}}}},
    {"id": "batch_req_4", "custom_id": "request-4", "response": None, "error": {
        "code": "batch_expired", "message": "This request could not be executed before the completion window expired."}},
]


def test_openai_batch_output_is_read_as_records(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "batch_output.jsonl", [*BATCH_LINES, {"id": "batch_req_5", "response": None}])
    r = invoke(path, "--json")
    assert r.exit_code == 0, r.output
    (stage,) = orjson.loads(r.stdout)["stages"]
    counts = stage["counts"]
    assert (counts["total"], counts["ok"], counts["error"]) == (4, 2, 2)
    assert counts["errors_by_type"] == {"batch_expired": 1, "http_error": 1}  # not "unknown"
    assert stage["tokens"]["prompt"] == 42 and stage["tokens"]["completion"] == 5
    assert stage["models"] == ["gpt-4o-mini"]
    assert stage["metrics"]["ttft_s"]["count"] == 0  # the Batch API times nothing
    # the line without a custom_id is skipped like any unreadable line; the rest noted once
    assert f"{path}:5: skipped unreadable result line: an OpenAI Batch output line" in r.stderr
    assert r.stderr.count("note:") == 1 and "4 OpenAI Batch output lines carry no timings" in r.stderr


def test_batch_output_written_by_convert_keeps_its_timings(tmp_path: Path, results: Path) -> None:
    """`streamrun convert --to openai-batch` keeps the metrics in a side
    field: a report of the converted file equals the report of the original."""
    native = [orjson.loads(line) for line in results.read_bytes().splitlines() if line.endswith(b"}")]
    batch = write_lines(tmp_path / "batch.jsonl", [encode_batch(decode_native(rec)) for rec in native])
    quiet: list[str] = []
    assert build_report([batch], warn=quiet.append).summaries == build_report([results], warn=quiet.append).summaries
    assert not any(w.startswith("note:") for w in quiet)


# --------------------------------------------------------------------------
# build + document: the JSON schema


def test_only_final_records_are_reported(tmp_path: Path) -> None:
    # a rerun appended the new record of a failed id: the failed one is superseded and left out
    failed = record(C1, 0.0, 0.1, 0.5, 41, ok=False, custom_id="x")
    path = write_lines(tmp_path / "r.jsonl", [failed, record(C1, 1.0, 0.2, 0.5, 41),
                                              record(C1, 2.0, 0.3, 0.5, 41, custom_id="x")])
    inputs: list[InputFile] = []
    assert [r.custom_id for r in load_records([path], inputs=inputs)][1:] == ["x"]
    assert inputs[0].as_dict() == {"path": str(path), "records": 2, "skipped_lines": 0, "superseded": 1}
    (s,) = build_report([path]).summaries
    assert (s["counts"]["total"], s["counts"]["ok"], s["counts"]["error"]) == (2, 2, 0)


def test_json_to_stdout_follows_the_schema(results: Path) -> None:
    r = invoke(results, "--slo", "ttft=0.35", "--slo", "tpot=50ms", "--json")
    assert r.exit_code == 0, r.output
    doc = orjson.loads(r.stdout)  # only JSON on stdout: no table mixed in
    assert list(doc) == ["schema", "generated_at", "inputs", "slos", "stages", "sweep"]  # two stages: a sweep
    assert doc["schema"] == SCHEMA == "streamrun.report/1"
    assert datetime.fromisoformat(doc["generated_at"]).tzinfo is not None
    assert doc["inputs"] == [{"path": str(results), "records": 5, "skipped_lines": 1, "superseded": 0}]
    assert doc["slos"] == {"ttft": 0.35, "tpot": 0.05}
    s1, s2 = doc["stages"]
    assert s1["stage"] == C1 and s2["stage"] == C2
    for key in ("counts", "started_at", "ended_at", "duration_s", "tokens", "request_throughput",
                "output_token_throughput", "total_token_throughput", "slos", "good_requests", "goodput",
                "models", "endpoints", "sampled", "metrics"):
        assert key in s1, key
    assert set(s1["metrics"]) == {"ttft_s", "ttfat_s", "ttfb_s", "tpot_s", "itl_s", "e2e_s", "queue_s", "connect_s",
                                  "output_tokens", "reasoning_tokens"}
    assert set(s1["metrics"]["ttft_s"]) == {"count", "mean", "p50", "p90", "p95", "p99", "min", "max", "sampled"}
    expected_counts = {"total": 2, "ok": 2, "error": 0, "errors_by_type": {}, "retried": 0, "warmup": 0,
                       "connections_opened": 0}
    assert {k: s1["counts"][k] for k in expected_counts} == expected_counts
    assert s2["counts"]["errors_by_type"] == {"http_error": 1}
    assert s1["duration_s"] == pytest.approx(2.0)
    assert s1["request_throughput"] == pytest.approx(1.0)
    assert s1["output_token_throughput"] == pytest.approx(56.0)
    assert s1["total_token_throughput"] == pytest.approx((20 + 112) / 2)
    assert s1["metrics"]["ttft_s"]["p90"] == pytest.approx(0.28)
    assert s1["metrics"]["itl_s"]["count"] == 40 + 70
    # goodput: c=1 both meet ttft<=0.35 and tpot<=0.05 -> 2 / 2 s; c=2 none meets ttft
    assert (s1["good_requests"], s1["goodput"]) == (2, pytest.approx(1.0))
    assert (s2["good_requests"], s2["goodput"]) == (0, 0.0)
    assert s1["models"] == ["mock-model"]


def test_json_out_writes_a_file_and_keeps_the_tables(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    r = invoke(results, "--slo", "ttft=0.35", "--json-out", out)
    assert r.exit_code == 0, r.output
    assert "goodput req/s" in r.stdout and "1.00 (2/2)" in r.stdout
    assert "ttft<=350ms" in r.stdout
    assert f"wrote {out}" in r.stderr
    doc = orjson.loads(out.read_bytes())
    assert doc["schema"] == SCHEMA and doc["stages"][0]["good_requests"] == 2


def test_json_and_json_out_together(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "summary.json"
    r = invoke(results, "--json", "--json-out", out)
    assert r.exit_code == 0, r.output
    on_stdout = orjson.loads(r.stdout)  # the document alone: no tables
    assert orjson.loads(out.read_bytes())["stages"] == on_stdout["stages"]
    # `--json-out -` is --json spelled as a path
    assert orjson.loads(invoke(results, "--json-out", "-").stdout)["stages"] == on_stdout["stages"]


def connections(tmp_path: Path) -> Path:
    """One stage at c=2: the first two requests opened connections (2 and 4 ms), the next two reused
    them; an error that opened one (counted, not described); a warm-up that opened one (neither)."""
    def at(i: float, connect: float | None, **kw: Any) -> dict[str, Any]:
        r = record(C2, i, 0.1, 0.5, 11, **kw)
        r["metrics"]["connect_s"] = connect
        return r

    warm = at(0.0, 0.009)
    warm["warmup"] = True
    return write_lines(tmp_path / "conns.jsonl", [
        warm, at(0.0, 0.002), at(0.0, 0.004), at(1.0, None), at(1.0, None), at(1.5, 0.008, ok=False)])


def test_connections_opened_and_connect_s(tmp_path: Path) -> None:
    (s,) = build_report([connections(tmp_path)]).summaries
    assert s["counts"]["connections_opened"] == 3  # the error's too; not the warm-up's
    c = s["metrics"]["connect_s"]
    assert (c["count"], c["min"], c["max"], c["p50"]) == (2, 0.002, 0.004, pytest.approx(0.003))
    assert s["metrics"]["ttft_s"]["count"] == 4


def test_report_doc_names_every_count_and_metric(results: Path) -> None:
    doc = (ROOT / "docs" / "REPORT.md").read_text()
    (s, _) = build_report([results], warn=lambda m: None).summaries
    for key in s["counts"]:
        assert f"`counts.{key}`" in doc, key
    described = doc.split("`metrics` has one entry per metric:", 1)[1].split("```", 1)[0]
    assert set(re.findall(r"`(\w+)`", described)) == set(s["metrics"])


# --------------------------------------------------------------------------
# terminal


def test_table_shows_the_numbers(results: Path) -> None:
    r = invoke(results)
    assert r.exit_code == 0, r.output
    out = r.stdout
    # c=1 TTFT: mean 200, p50 200, p90 280, p95 290, p99 298, min 100, max 300 (ms)
    assert re.search(r"c=1\s.*200\.00\s.*200\.00\s.*280\.00\s.*290\.00\s.*298\.00\s.*100\.00\s.*300\.00", out)
    # c=2 TTFT: 400 and 600 -> p50 500, p90 580
    assert re.search(r"c=2\s.*500\.00\s.*500\.00\s.*580\.00", out)
    # throughput row: c=1 two ok over 2 s -> 1.00 req/s, (40+70) tokens over... output 112 / 2 s
    assert re.search(r"c=1\s.*\b2\s.*\b0\s.*2\.00\s.*1\.00\s.*56\.00", out)
    assert re.search(r"c=2\s.*\b2\s.*\b1\s.*2\.00\s.*1\.00\s.*66\.00", out)
    for title in ("TTFT (ms)", "TPOT (ms)", "ITL (ms)", "E2E (ms)"):
        assert title in out
    assert "errors: http_error 1" in out
    assert FOOTNOTE in " ".join(out.split())  # piped output is 80 columns wide: the footnote may wrap
    assert "goodput" not in out  # no SLOs given
    assert "new conns" in out and "Connect (ms)" in out  # a sweep: a table of stages per latency


def test_table_shows_connections_beside_ttft(tmp_path: Path) -> None:
    r = invoke(connections(tmp_path))
    assert r.exit_code == 0, r.output
    out = r.stdout
    assert re.search(r"new conns", out) and re.search(r"c=2\s.*\b4\s.*\b1\s.*\b0\s.*\b3\s", out)
    lines = out.splitlines()
    ttft = next(i for i, line in enumerate(lines) if re.search(r"\bTTFT\b", line))
    assert re.search(r"Connect\s.*\b2\s.*3\.00\s.*3\.00\s", lines[ttft + 1])  # count 2, mean 3 ms, p50 3 ms


# --------------------------------------------------------------------------
# html (+ figures)


def test_html_is_one_self_contained_file(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    r = invoke(results, "--slo", "ttft=0.5", "--html", out)
    assert r.exit_code == 0, r.output
    assert {p.name for p in tmp_path.iterdir()} == {"results.jsonl", "report.html"}  # one file, no assets
    html = out.read_text()
    assert html.lstrip().startswith("<!doctype html>") and "<html" in html
    # plotly.js inlined once, nothing fetched from the network
    assert html.count("plotly.js v") >= 1 and len(html) > 1_000_000
    assert not re.search(r"<script[^>]+src=", html)
    assert not re.search(r"<link[^>]+href=", html)
    # one chart div per figure: sweep, latency against throughput, TTFT, E2E, TPOT, ITL over time
    assert len(re.findall(r'<div id="[^"]+" class="plotly-graph-div"', html)) == 6
    for section in ("Load sweep", "Time to first token", "End-to-end latency", "Time per output token",
                    "Inter-chunk gaps over time"):
        assert section in html
    assert "SLO ttft ≤ 500 ms" in html
    assert "1 unreadable line skipped" in html
    assert "c=1" in html and "c=2" in html


def test_html_single_stage_has_no_sweep_chart(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "one.jsonl", [record(None, i, 0.1 + i / 100, 1.0, 20) for i in range(30)])
    out = tmp_path / "one.html"
    assert invoke(path, "--html", out).exit_code == 0
    html = out.read_text()
    assert len(re.findall(r'class="plotly-graph-div"', html)) == 4
    assert "Load sweep" not in html
    assert "TTFT <span class=\"note\">time to first token</span>" in html  # a row per metric


def test_labels_are_shown_literally(tmp_path: Path) -> None:
    """Stage labels are data: neither rich markup nor HTML."""
    stages = [{"index": 0, "label": "[red]a[/red]"}, {"index": 1, "label": "<b>b</b>"}]
    path = write_lines(tmp_path / "odd.jsonl", [record(st, i, 0.1, 1.0, 5) for i, st in enumerate(stages)])
    html_path = tmp_path / "odd.html"
    r = invoke(path, "--html", html_path)
    assert r.exit_code == 0, r.output
    assert "[red]a[/red]" in r.stdout and "<b>b</b>" in r.stdout
    html = html_path.read_text()
    assert "&lt;b&gt;b&lt;/b&gt;" in html and "<b>b</b>" not in html


def test_html_escapes_what_the_records_say(tmp_path: Path) -> None:
    """A model name, custom_id, endpoint or stage label is data: a record
    cannot put a script (or any markup) into the page, in the tables nor in
    the charts' data."""
    evil = "<script>alert(1)</script>"
    rows = [record({"index": 0, "label": f"</script>{evil}"}, 0, 0.1, 1.0, 5, model=evil, custom_id=evil,
                   endpoint=f"http://x/{evil}"),
            record(C2, 1, 0.2, 1.0, 5, model='m&m "quoted"', custom_id=evil)]
    path = write_lines(tmp_path / "evil.jsonl", rows)
    out = tmp_path / "evil.html"
    assert invoke(path, "--html", out).exit_code == 0
    html = out.read_text()
    assert "<script>alert(1)" not in html and "</script><script>" not in html
    assert "<title>streamrun report · &lt;script&gt;alert(1)&lt;/script&gt; · m&amp;m &#34;quoted&#34;</title>" in html
    assert "http://x/&lt;script&gt;alert(1)&lt;/script&gt;" in html
    # every script on the page is plotly's: its loader, plotly.js, and one per chart
    charts = len(re.findall(r'class="plotly-graph-div"', html))
    assert len(re.findall(r"<script\b", html)) == 2 + charts


# --------------------------------------------------------------------------
# command


def test_bad_options_are_refused(results: Path, tmp_path: Path) -> None:
    assert invoke(results, "--slo", "latency=1").exit_code == 2
    assert invoke(results, "--slo", "ttft=fast").exit_code == 2
    assert invoke(results, "--slo", "ttft=-1").exit_code == 2
    # an output never overwrites a results file
    other = tmp_path / "other.jsonl"
    other.write_bytes(results.read_bytes())
    for opt in ("--json-out", "--html"):
        r = invoke(results, opt, other)
        assert r.exit_code == 2 and "refusing to overwrite" in r.output
        assert results.read_bytes() == other.read_bytes()


def test_json_is_a_flag_so_every_path_is_an_input(results: Path, tmp_path: Path) -> None:
    """`--json` takes no value: `report --json a.jsonl b.jsonl` reads both."""
    other = write_lines(tmp_path / "other.jsonl", [record(C1, 5.0, 0.2, 1.0, 11)])
    r = invoke("--json", results, other)
    assert r.exit_code == 0, r.output
    assert [i["path"] for i in orjson.loads(r.stdout)["inputs"]] == [str(results), str(other)]
    assert invoke("--json", results).exit_code == 0


def test_no_records_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"garbage\n")
    r = invoke(empty)
    assert r.exit_code == 1
    assert "no result records" in r.output


def test_help_explains_every_option_and_ends_with_examples() -> None:
    for param in report_command.params:
        if isinstance(param, click.Option):
            assert param.help, param.name
    r = invoke("--help")
    assert r.exit_code == 0
    tail = r.output.rstrip().split("Examples:\n")[-1].splitlines()
    assert 2 <= len(tail) <= 4
    assert all(line.strip().startswith("streamrun report ") for line in tail)  # one unwrapped line each


def test_importing_report_stays_light() -> None:
    """The CLI imports runner.report for every command: rich, plotly and
    jinja2 load only when a report is drawn, so `streamrun --help` stays fast."""
    code = ("import sys, runner.report; "
            "print(sorted(m for m in ('rich', 'plotly', 'jinja2') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
