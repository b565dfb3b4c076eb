"""`streamrun report a.jsonl b.jsonl`: runs side by side, not pooled (runner/report/runs.py, compare*.py),
and the CSV and Markdown outputs."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from runner.cli.report import report_command
from runner.report import build_report, csv_rows
from runner.report.runs import group_runs

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def line(i: int, ttft: float, *, stage: dict | None = None, ok: bool = True) -> dict[str, Any]:
    """Request i, sent at i seconds, 11 output tokens over 1 s after its first."""
    return {"custom_id": f"r{i}", "status": "ok" if ok else "error", "model": "m",
            "usage": {"prompt_tokens": 10, "completion_tokens": 11, "total_tokens": 21} if ok else None,
            "metrics": {"ttft_s": ttft if ok else None, "e2e_s": ttft + 1.0, "tpot_s": 0.1 if ok else None,
                        "itl_s": [0.1] * 10 if ok else [], "output_tokens": 11 if ok else 0,
                        "started_at": (T0 + timedelta(seconds=i)).isoformat()},
            "error": None if ok else {"type": "timeout", "message": "slow"}, "stage": stage}


def write(path: Path, rows: list[dict[str, Any]], label: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    if label is not None:  # the sidecar `streamrun run --label` writes
        path.with_name(path.name.removesuffix(".jsonl") + ".summary.json").write_bytes(
            orjson.dumps({"schema": "streamrun.summary/1", "label": label}))
    return path


@pytest.fixture
def two_runs(tmp_path: Path) -> tuple[Path, Path]:
    """before: TTFT 100..400 ms (4 ok); after: TTFT 150..450 ms (4 ok) and one error."""
    before = write(tmp_path / "before.jsonl", [line(i, 0.1 * (i + 1)) for i in range(4)], label="vLLM 0.6")
    after = write(tmp_path / "x" / "after.jsonl", [line(i, 0.1 * (i + 1) + 0.05) for i in range(4)]
                  + [line(4, 0.0, ok=False)])
    return before, after


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(report_command, [str(a) for a in args], catch_exceptions=False)


def test_two_files_are_two_runs_labelled_by_sidecar_or_file_name(two_runs) -> None:
    before, after = two_runs
    r = invoke(before, after, "--json")
    assert r.exit_code == 0, r.output
    doc = orjson.loads(r.stdout)
    assert "stages" not in doc and [run["label"] for run in doc["runs"]] == ["vLLM 0.6", "after"]
    first, second = doc["runs"]
    assert first["inputs"] == [str(before)] and second["inputs"] == [str(after)]
    # not pooled: each run counts its own records
    assert (first["stages"][0]["counts"]["ok"], second["stages"][0]["counts"]["ok"]) == (4, 4)
    assert second["stages"][0]["counts"]["error"] == 1
    assert first["vs_first"] is None
    (diff,) = second["vs_first"]
    ttft = diff["metrics"]["ttft_s"]
    # TTFT p50: 250 ms -> 300 ms; mean 250 -> 300: +50 ms, +20 %
    assert ttft["p50"]["abs"] == pytest.approx(0.05) and ttft["p50"]["pct"] == pytest.approx(20.0)
    assert ttft["mean"]["abs"] == pytest.approx(0.05) and ttft["mean"]["pct"] == pytest.approx(20.0)
    # p90: 370 ms -> 420 ms
    assert ttft["p90"]["abs"] == pytest.approx(0.05) and ttft["p90"]["pct"] == pytest.approx(100 * 0.05 / 0.37)
    assert set(ttft) == {"mean", "p50", "p90", "p95", "p99"}
    base = first["stages"][0]["request_throughput"]
    assert diff["request_throughput"]["abs"] == pytest.approx(second["stages"][0]["request_throughput"] - base)


def test_a_single_file_is_reported_as_before(two_runs) -> None:
    before, _ = two_runs
    doc = orjson.loads(invoke(before, "--json").stdout)
    assert list(doc) == ["schema", "generated_at", "inputs", "slos", "stages"]
    table = invoke(before).stdout
    assert "Latency (ms)" in table and "vLLM 0.6" not in table


def test_pool_keeps_the_old_pooling(two_runs) -> None:
    doc = orjson.loads(invoke(*two_runs, "--pool", "--json").stdout)
    (stage,) = doc["stages"]
    assert (stage["counts"]["ok"], stage["counts"]["error"]) == (8, 1)


def test_files_sharing_a_label_are_one_run(tmp_path: Path) -> None:
    a = write(tmp_path / "shard-0.jsonl", [line(0, 0.1)], label="nightly")
    b = write(tmp_path / "shard-1.jsonl", [line(1, 0.2)], label="nightly")
    c = write(tmp_path / "other.jsonl", [line(2, 0.3)])
    notes: list[str] = []
    report = build_report([a, c, b], by_run=True, warn=notes.append)
    assert [(r.label, r.paths) for r in report.runs] == [("nightly", [str(a), str(b)]), ("other", [str(c)])]
    assert report.summaries[0]["counts"]["ok"] == 2
    assert any("share the label 'nightly'" in n for n in notes)


def test_same_file_names_are_told_apart_by_folder(tmp_path: Path) -> None:
    a = write(tmp_path / "mon" / "out.jsonl", [line(0, 0.1)])
    b = write(tmp_path / "tue" / "out.jsonl", [line(0, 0.1)])
    assert [r.label for r in group_runs([str(a), str(b)], warn=lambda m: None)] == ["mon/out", "tue/out"]


def test_the_table_has_a_column_per_run_and_the_differences(two_runs) -> None:
    r = invoke(*two_runs)
    assert r.exit_code == 0, r.output
    out = r.stdout
    header = next(ln for ln in out.splitlines() if "vLLM 0.6" in ln)
    assert header.index("vLLM 0.6") < header.index("after")
    # TTFT p50: 250.00 ms, then 300.00 ms, 50 ms and 20 % slower
    assert re.search(r"p50\s.*250\.00\s.*300\.00 \(\+50\.00, \+20\.0%\)", out)
    assert "difference from the first run, vLLM 0.6" in " ".join(out.split())


def test_markdown_tables(two_runs) -> None:
    r = invoke(*two_runs, "--markdown", "-")
    assert r.exit_code == 0, r.output
    md = r.stdout
    assert "**TTFT (ms): time to first token**" in md
    assert "|  | vLLM 0.6 | after |" in md and "|:---|---:|---:|" in md
    assert "| p50 | 250.00 | 300.00 (+50.00, +20.0%) |" in md
    # a single run's tables too
    single = invoke(two_runs[0], "--markdown", "-").stdout
    assert "| metric | count | mean | p50 | p90 | p95 | p99 | min | max |" in single


def test_csv_parses_and_matches_the_summary(two_runs, tmp_path: Path) -> None:
    out = tmp_path / "stages.csv"
    r = invoke(*two_runs, "--csv", out, "--percentiles", "50,99.9")
    assert r.exit_code == 0, r.output
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    doc = orjson.loads(invoke(*two_runs, "--json", "--percentiles", "50,99.9").stdout)
    assert list(rows[0]) == ["run", "stage", "concurrency", "rate", "metric", "unit", "count", "mean", "p50",
                             "p99.9", "min", "max", "ok", "error", "duration_s", "request_throughput",
                             "output_token_throughput", "total_token_throughput", "goodput"]
    assert len(rows) == sum(len(s["metrics"]) for run in doc["runs"] for s in run["stages"])
    for run in doc["runs"]:
        stage = run["stages"][0]
        for metric, d in stage["metrics"].items():
            (row,) = [x for x in rows if x["run"] == run["label"] and x["metric"] == metric]
            assert row["stage"] == "all" and int(row["count"]) == d["count"]
            for stat in ("mean", "p50", "p99.9", "min", "max"):
                assert (float(row[stat]) if row[stat] else None) == d[stat], (metric, stat)
            assert float(row["request_throughput"]) == stage["request_throughput"]
            assert int(row["error"]) == stage["counts"]["error"]
    # `--csv -` prints it instead of the tables; it cannot share stdout with --json
    printed = invoke(two_runs[0], "--csv", "-").stdout
    assert printed.startswith("run,stage,") and "Latency" not in printed
    assert printed.splitlines()[1].startswith("vLLM 0.6,all,,,ttft_s,s,4,")
    assert CliRunner().invoke(report_command, [str(two_runs[0]), "--csv", "-", "--json"]).exit_code == 2


def test_csv_of_a_sweep_has_a_row_per_stage(tmp_path: Path) -> None:
    c1, c4 = ({"index": 0, "label": "c=1", "concurrency": 1, "rate": None},
              {"index": 1, "label": "c=4", "concurrency": 4, "rate": None})
    path = write(tmp_path / "sweep.jsonl", [line(0, 0.1, stage=c1), line(1, 0.2, stage=c4)])
    rows = csv_rows(build_report([path]))
    ttft = [r for r in rows[1:] if r[4] == "ttft_s"]
    assert [(r[0], r[1], r[2]) for r in ttft] == [("sweep", "c=1", 1), ("sweep", "c=4", 4)]


def test_sweeps_are_matched_stage_by_stage(tmp_path: Path) -> None:
    c1, c4 = ({"index": 0, "label": "c=1", "concurrency": 1, "rate": None},
              {"index": 1, "label": "c=4", "concurrency": 4, "rate": None})
    a = write(tmp_path / "a.jsonl", [line(0, 0.1, stage=c1), line(1, 0.2, stage=c4)])
    b = write(tmp_path / "b.jsonl", [line(0, 0.3, stage=c4), line(1, 0.1, stage=c1)])  # stages in another order
    doc = orjson.loads(invoke(a, b, "--json").stdout)
    diffs = doc["runs"][1]["vs_first"]
    assert [d["stage"]["label"] for d in diffs] == ["c=4", "c=1"]
    assert diffs[0]["metrics"]["ttft_s"]["p50"]["abs"] == pytest.approx(0.1)  # c=4: 0.2 -> 0.3
    assert diffs[1]["metrics"]["ttft_s"]["p50"]["abs"] == pytest.approx(0.0)  # c=1: 0.1 -> 0.1
    table = invoke(a, b).stdout
    assert re.search(r"c=4\s.*p50\s.*200\.00\s.*300\.00 \(\+100\.00, \+50\.0%\)", table)


def test_html_overlays_the_runs(two_runs, tmp_path: Path) -> None:
    out = tmp_path / "compare.html"
    r = invoke(*two_runs, "--html", out)
    assert r.exit_code == 0, r.output
    html = out.read_text()
    assert "2 runs: vLLM 0.6, after" in html
    assert "<h3>TTFT (ms): time to first token</h3>" in html and "300.00 (+50.00, +20.0%)" in html
    assert html.count('"name":"vLLM 0.6"') >= 2 and html.count('"name":"after"') >= 2  # traces per run
