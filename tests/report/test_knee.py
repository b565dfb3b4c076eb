"""The knee of a sweep (runner/report/knee.py): pure functions on synthetic stage summaries, then the
report of a sweep (JSON, terminal, page) and of a real `--rate sweep` run against the mock."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from runner.cli.report import report_command
from runner.report import build_report
from runner.report.figures_knee import knee_figure
from runner.report.knee import FACTOR, find_knee, knee_line, load_order, sweep_section
from runner.report.labels import sweep_axis
from tests.helpers import ROOT, read_jsonl, streamrun, write_jsonl


def stage(label: str, rps: float | None, e2e: float | None, *, concurrency: int | None = None,
          rate: float | None = None, ttft: float = 0.05, keys: tuple[str, ...] = ("p50", "p99")) -> dict[str, Any]:
    """A stage summary with what the knee reads: throughput and E2E (p50 = half the p99) and TTFT."""
    def stat(p99: float | None) -> dict[str, Any]:
        return {"count": 10, "mean": p99, **{k: None if p99 is None else p99 * (0.5 if k == "p50" else 1.0)
                                             for k in keys}, "min": p99, "max": p99}

    return {"stage": {"index": 0, "label": label, "concurrency": concurrency, "rate": rate},
            "request_throughput": rps, "metrics": {"e2e_s": stat(e2e), "ttft_s": stat(ttft)}}


def conc(c: int, rps: float, e2e: float, **kw: Any) -> dict[str, Any]:
    return stage(f"c={c}", rps, e2e, concurrency=c, **kw)


# --------------------------------------------------------------------------
# the rule


def test_the_knee_is_the_most_throughput_within_twice_the_lowest_loads_latency() -> None:
    sums = [conc(1, 1.0, 1.0), conc(4, 3.8, 1.1), conc(16, 12.0, 1.5), conc(64, 20.0, 3.0), conc(256, 20.5, 12.0)]
    knee, why = find_knee(sums)
    assert knee is not None and why == ""
    assert (knee.label, knee.position, knee.throughput_rps, knee.latency_s) == ("c=16", 2, 12.0, 1.5)
    assert (knee.baseline_label, knee.baseline_s, knee.stat, knee.factor) == ("c=1", 1.0, "p99", FACTOR)


def test_stages_are_taken_in_load_order_whatever_order_they_ran_in() -> None:
    sums = [conc(64, 20.0, 3.0), conc(1, 1.0, 1.0), conc(16, 12.0, 1.5), conc(4, 3.8, 1.1)]
    assert load_order(sums) == ("concurrency", [1, 3, 2, 0])
    knee, _ = find_knee(sums)
    assert knee.label == "c=16" and knee.baseline_label == "c=1"


def test_a_rate_sweeps_ends_go_by_the_throughput_they_achieved() -> None:
    """--rate sweep writes synchronous (no rate), throughput (rate inf, written null), then the rates."""
    sums = [stage("synchronous", 1.0, 1.0, concurrency=1), stage("throughput", 14.0, 8.0, concurrency=64),
            stage("rate=4", 4.0, 1.1, rate=4.0, concurrency=64), stage("rate=7", 6.9, 1.2, rate=7.0, concurrency=64),
            stage("rate=10", 9.5, 1.6, rate=10.0, concurrency=64),
            stage("rate=13", 12.5, 2.5, rate=13.0, concurrency=64)]
    axis, order = load_order(sums)
    assert axis == "rate" and [sums[i]["stage"]["label"] for i in order] == [
        "synchronous", "rate=4", "rate=7", "rate=10", "rate=13", "throughput"]
    knee, _ = find_knee(sums)
    assert (knee.label, knee.throughput_rps, knee.baseline_label) == ("rate=10", 9.5, "synchronous")
    # and the sweep chart's axis is the rate, the ends placed at what they achieved (not concurrency 1, 64)
    title, xs, numeric = sweep_axis(sums)
    assert (title, xs, numeric) == ("request rate (req/s)", [1.0, 14.0, 4.0, 7.0, 10.0, 13.0], True)


def test_a_constant_rate_over_several_concurrencies_is_a_concurrency_sweep() -> None:
    sums = [conc(1, 1.0, 1.0, rate=5.0), conc(4, 3.0, 1.2, rate=5.0), conc(8, 4.0, 5.0, rate=5.0)]
    assert load_order(sums)[0] == "concurrency"
    assert find_knee(sums)[0].label == "c=4"


def test_one_noisy_stage_over_budget_does_not_hide_a_later_one_within_it() -> None:
    sums = [conc(1, 1.0, 1.0), conc(2, 2.0, 2.6), conc(4, 3.9, 1.3), conc(8, 7.5, 1.9), conc(16, 9.0, 6.0)]
    assert find_knee(sums)[0].label == "c=8"


def test_noise_below_the_budget_is_not_a_knee_and_a_flat_curve_has_none() -> None:
    noisy = [conc(1, 1.0, 1.0), conc(2, 2.0, 1.4), conc(4, 3.9, 0.9), conc(8, 7.5, 1.7), conc(16, 14.0, 1.95)]
    knee, why = find_knee(noisy)
    assert knee is None and "within 2x" in why and "14.00 req/s (c=16)" in why
    section = sweep_section(noisy)
    assert section["knee_stage"] is None and section["note"] == why
    assert (section["baseline_stage"], section["baseline_s"]) == ("c=1", 1.0)
    assert knee_line(noisy).startswith("knee: none, p99 E2E stayed within 2x")


def test_a_monotone_climb_from_the_start_puts_the_knee_at_the_lowest_load() -> None:
    sums = [conc(1, 1.0, 1.0), conc(2, 1.9, 2.5), conc(4, 2.0, 5.0)]
    assert find_knee(sums)[0].label == "c=1"


def test_past_saturation_more_load_at_equal_throughput_is_not_the_knee() -> None:
    sums = [conc(1, 1.0, 1.0), conc(4, 4.0, 1.2), conc(8, 4.0, 1.9), conc(16, 3.5, 6.0)]
    assert find_knee(sums)[0].label == "c=4"  # equal req/s: the lighter load


@pytest.mark.parametrize("sums", [
    [conc(1, 1.0, 1.0)],
    [conc(1, 1.0, 1.0), conc(4, 4.0, 9.0)],
    [conc(1, 1.0, 1.0), conc(4, None, 9.0), conc(8, 4.0, None)],  # stages without data do not count
])
def test_fewer_than_three_stages_have_no_knee(sums: list[dict[str, Any]]) -> None:
    knee, why = find_knee(sums)
    assert knee is None and "fewer than 3 stages" in why
    assert sweep_section(sums) is None if len(sums) == 1 else sweep_section(sums)["knee_stage"] is None
    assert (knee_line(sums) is None) == (len(sums) == 1)


def test_stages_that_are_not_loads_have_no_knee() -> None:
    sums = [stage("a", 1.0, 1.0, concurrency=4), stage("b", 2.0, 1.0, concurrency=4),
            stage("c", 3.0, 9.0, concurrency=4)]
    assert load_order(sums) == ("stage", [0, 1, 2])
    assert find_knee(sums)[0] is None and knee_line(sums) is None
    assert sweep_section(sums)["axis"] == "stage"


def test_without_p99_the_highest_chosen_percentile_is_read() -> None:
    keys = ("p50", "p90")
    sums = [conc(1, 1.0, 1.0, keys=keys), conc(4, 4.0, 1.5, keys=keys), conc(8, 6.0, 3.0, keys=keys)]
    knee, _ = find_knee(sums)
    assert (knee.label, knee.stat) == ("c=4", "p90")
    assert sweep_section(sums)["knee_rule"] == {"metric": "e2e_s", "stat": "p90", "factor": 2.0}


def test_the_terminal_line_names_the_stage_its_throughput_and_latencies() -> None:
    sums = [conc(1, 1.0, 1.0), conc(4, 3.8, 1.1), conc(16, 12.0, 1.5, ttft=0.2), conc(64, 20.0, 3.0)]
    assert knee_line(sums, "before: ") == (
        "before: knee: c=16 at 12.00 req/s, p99 E2E 1500.00 ms, p99 TTFT 200.00 ms "
        "(the most req/s with p99 E2E within 2x the lowest load's, c=1: 1000.00 ms)")


# --------------------------------------------------------------------------
# the report of a sweep: JSON, terminal, page

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def record(i: int, label: str, at: float, e2e: float, *, rate: float | None = None, c: int = 8, index: int = 0
           ) -> dict[str, Any]:
    return {"custom_id": f"{label}-{i}", "status": "ok", "text": "hi", "model": "m",
            "usage": {"prompt_tokens": 5, "completion_tokens": 11, "total_tokens": 16},
            "metrics": {"ttft_s": e2e / 4, "e2e_s": e2e, "tpot_s": e2e * 0.075, "itl_s": [e2e * 0.075] * 10,
                        "output_tokens": 11, "started_at": (T0 + timedelta(seconds=at)).isoformat()},
            "attempts": 1, "error": None, "warmup": False,
            "stage": {"index": index, "label": label, "concurrency": c, "rate": rate}}


def rate_sweep(path: Path, scale: float = 1.0) -> Path:
    """A --rate sweep as the engine writes it, 40 requests a stage, sent one per `gap` seconds:
    synchronous (1 req/s, E2E 1 s), throughput (all at once, 3.5 s), rate=4 (1.1 s), rate=7 (1.3 s),
    rate=10 (3 s). Achieved: 40 / (39 gap + E2E): 1.0, 11.4, 3.69, 5.82, 5.80 req/s. Knee: rate=7."""
    rows, t = [], 0.0
    for index, (label, gap, e2e, rate, c) in enumerate((
            ("synchronous", 1.0, 1.0, None, 1), ("throughput", 0.0, 3.5, None, 8), ("rate=4", 0.25, 1.1, 4.0, 8),
            ("rate=7", 1 / 7, 1.3, 7.0, 8), ("rate=10", 0.1, 3.0, 10.0, 8))):
        rows += [record(i, label, t + i * gap, e2e * scale, rate=rate, c=c, index=index) for i in range(40)]
        t += 100.0
    return write_jsonl(path, rows)


def invoke(*args: Any) -> Any:
    return CliRunner().invoke(report_command, [str(a) for a in args], catch_exceptions=False)


def test_the_report_of_a_rate_sweep_names_its_knee_everywhere(tmp_path: Path) -> None:
    results = rate_sweep(tmp_path / "sweep.jsonl")
    doc = orjson.loads(invoke(results, "--json").stdout)
    sweep = doc["sweep"]
    assert sweep["axis"] == "rate" and sweep["order"] == ["synchronous", "rate=4", "rate=7", "rate=10", "throughput"]
    assert (sweep["knee_stage"], sweep["knee_index"], sweep["baseline_stage"]) == ("rate=7", 3, "synchronous")
    assert sweep["knee_throughput_rps"] == pytest.approx(40 / (39 / 7 + 1.3))
    assert sweep["knee_latency_s"] == pytest.approx(1.3) and sweep["note"] is None

    table = invoke(results).stdout
    (line,) = [x for x in table.splitlines() if x.startswith("knee:")]
    assert line.startswith("knee: rate=7 at 5.82 req/s, p99 E2E 1300.00 ms, p99 TTFT 325.00 ms")
    whole = knee_line(build_report([results], warn=lambda m: None).summaries)  # the line unwrapped, as shown:
    assert f"\n{whole}\n" in (ROOT / "docs" / "REPORT.md").read_text()

    page = tmp_path / "r.html"
    assert invoke(results, "--html", page).exit_code == 0
    html = page.read_text()
    assert 'id="knee"' in html and "Latency against throughput" in html
    assert "Knee: rate=7, 5.82 req/s, p99 E2E 1,300 ms." in html
    assert '<div class="k">knee</div><div class="v">5.82</div>' in html


def test_the_knee_figure_joins_stages_by_load_and_stars_the_knee(tmp_path: Path) -> None:
    fig = knee_figure(build_report([rate_sweep(tmp_path / "sweep.jsonl")]))
    e2e = next(t for t in fig.data if t.name == "p99" and t.xaxis == "x2")
    assert list(e2e.customdata) == ["synchronous", "rate=4", "rate=7", "rate=10", "throughput"]
    assert list(e2e.y) == [1000.0, 1100.0, 1300.0, 3000.0, 3500.0]
    assert list(e2e.x) == pytest.approx([1.0, 40 / 10.85, 40 / (39 / 7 + 1.3), 40 / 6.9, 40 / 3.5], rel=1e-4)
    stars = [t for t in fig.data if t.name == "knee"]
    assert len(stars) == 4 and all(t.marker.symbol == "star" for t in stars)
    assert next(t for t in stars if t.xaxis == "x2").y == (1300.0,)
    notes = [a.text for a in fig.layout.annotations]
    assert "knee: rate=7<br>5.82 req/s" in notes and "2× the lowest load's p99" in notes
    assert any(s.y0 == s.y1 == 2000.0 for s in fig.layout.shapes)  # the budget: 2 x the synchronous p99 E2E


def test_a_comparison_has_a_sweep_and_a_knee_line_per_run(tmp_path: Path) -> None:
    a = rate_sweep(tmp_path / "a.jsonl")
    b = rate_sweep(tmp_path / "b.jsonl", scale=2.0)  # twice as slow everywhere: the same knee
    doc = orjson.loads(invoke(a, b, "--json").stdout)
    assert [run["sweep"]["knee_stage"] for run in doc["runs"]] == ["rate=7", "rate=7"]
    assert "sweep" not in doc
    lines = [x for x in invoke(a, b).stdout.splitlines() if "knee:" in x]
    assert [x.split(":")[0] for x in lines] == ["a", "b"]
    fig = knee_figure(build_report([a, b], by_run=True))
    assert {t.name for t in fig.data} >= {"a p99", "b p99", "a knee", "b knee"}


def test_a_single_stage_has_no_sweep_and_no_knee_figure(tmp_path: Path) -> None:
    results = write_jsonl(tmp_path / "one.jsonl", [record(i, "c=8", i, 1.0) for i in range(5)])
    assert "sweep" not in orjson.loads(invoke(results, "--json").stdout)  # a single stage reads as before
    assert knee_figure(build_report([results])) is None
    assert "knee" not in invoke(results).stdout


def test_a_rate_sweep_run_against_the_mock_reports_its_knee(tmp_path: Path) -> None:
    rows = [{"custom_id": f"p{i}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
            for i in range(6)]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out.jsonl"
    res = streamrun("run", inp, "-o", out, "--mock", "--rate", "sweep", "--sweep-points", "2", "-c", "4",
                    "--num-prompts", "3")
    assert res.returncode == 0, res.stderr
    assert len(read_jsonl(out)) == 12
    page = tmp_path / "r.html"
    rep = streamrun("report", out, "--html", page, "--json")
    assert rep.returncode == 0, rep.stderr
    sweep = orjson.loads(rep.stdout)["sweep"]
    assert sweep["axis"] == "rate" and sweep["order"][0] == "synchronous" and sweep["order"][-1] == "throughput"
    assert {"knee_stage", "knee_throughput_rps", "knee_latency_s", "baseline_stage"} <= set(sweep)
    # the mock answers alike at every load: whether its latency doubled is the machine's business, not asserted
    assert (sweep["knee_stage"] is None) == (sweep["note"] is not None)
    html = page.read_text()
    assert 'id="knee"' in html and "Latency against throughput" in html
    assert re.search(r"Knee: (none|rate=|synchronous|throughput)", html)


def test_docs_name_every_key_of_the_sweep_section() -> None:
    doc = (ROOT / "docs" / "REPORT.md").read_text()
    section = sweep_section([conc(1, 1.0, 1.0), conc(4, 4.0, 1.2), conc(8, 6.0, 3.0)])
    for key in [*section, *section["knee_rule"]]:
        assert f'"{key}"' in doc, key
