"""The client certifies its own numbers (runner/observe/client_timing.py): per stage, its loop lag and CPU, and a verdict.

The verdict and the attribution of lag samples to stages are pure: checked on
synthetic samples with an injected clock, never on the machine's speed.  The
runs force the verdict with a rule of zero thresholds (monkeypatched), so a
run against the mock is client-bound however fast this machine is.
"""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from runner.cli.report import report_command
from runner.config.run_config import RunConfig, Stage, make_stages
from runner.errors import EXIT_CLIENT_BOUND, EXIT_FAILED, EXIT_OK
from runner.observe import client_timing as trust
from runner.observe.client_timing import ClientTiming, LagMonitor, Rule, StageTimer, describe_lags, judge
from runner.record import Metrics, Record
from runner.report import build_report
from runner.report.document import report_document
from runner.report.timing import KEY, attach_timing, mark_stages
from runner.run import _exit_code
from tests.helpers import ROOT, chat, run_rows

MS = 0.001
ALWAYS = Rule(cpu_share=0.0, min_cpu_wall_s=0.0, min_requests=0)  # any CPU use is "90 % of a core": every stage
# is client-bound
FEW = Rule(cpu_share=0.0, min_cpu_wall_s=0.0)  # the same, but judged only from the default number of requests
SUMMARY_DOC = ROOT / "docs" / "SUMMARY.md"


def lags(*values_ms: float) -> dict:
    return describe_lags([v * MS for v in values_ms])


# -- the verdict (pure)


def test_a_calm_loop_and_an_idle_cpu_are_not_client_bound():
    bound, reason = judge(lags(*[1.0] * 100), cpu_share=0.3, wall_s=5.0, ttft_p50_s=0.2)
    assert not bound
    assert reason == "loop lag p99 1.0 ms within the 10 ms limit (5 % of TTFT p50 200 ms); CPU 30 % of one core " \
                     "(under 90 %)"


def test_a_lag_p99_over_5_ms_is_client_bound_and_says_by_how_much():
    lag = lags(*[1.0] * 97, 20.0, 20.0, 20.0)
    assert lag["p99_s"] == pytest.approx(0.020) and lag["max_s"] == pytest.approx(0.020)
    bound, reason = judge(lag, cpu_share=0.1, wall_s=5.0, ttft_p50_s=0.05)
    assert bound
    assert reason.startswith("loop lag p99 20 ms over the 5.0 ms limit: TTFT may be inflated by up to that")


def test_the_lag_limit_grows_with_the_stage_ttft():
    lag = lags(*[20.0] * 100)
    assert judge(lag, None, 5.0, ttft_p50_s=0.05)[0]  # limit max(5 ms, 2.5 ms) = 5 ms
    assert not judge(lag, None, 5.0, ttft_p50_s=1.0)[0]  # limit 5 % of 1 s = 50 ms
    assert judge(lag, None, 5.0, ttft_p50_s=0.39)[0]  # limit 19.5 ms
    assert not judge(lag, None, 5.0, ttft_p50_s=0.4)[0]  # limit exactly 20 ms: not over it
    assert not judge(lags(*[5.0] * 100), None, 5.0, ttft_p50_s=None)[0]  # exactly the 5 ms floor
    assert judge(lags(*[5.1] * 100), None, 5.0, ttft_p50_s=None)[0]


def test_a_busy_cpu_is_client_bound_over_a_long_enough_stage():
    calm = lags(*[0.5] * 100)
    bound, reason = judge(calm, cpu_share=0.95, wall_s=2.0, ttft_p50_s=0.1)
    assert bound and "CPU 95 % of one core (limit 90 %)" in reason
    assert judge(calm, cpu_share=0.90, wall_s=2.0, ttft_p50_s=0.1)[0]  # 90 % is enough
    assert not judge(calm, cpu_share=0.89, wall_s=2.0, ttft_p50_s=0.1)[0]
    bound, reason = judge(calm, cpu_share=0.99, wall_s=0.5, ttft_p50_s=0.1)  # start-up dominates half a second
    assert not bound and "stage too short (0.50 s) to judge its CPU 99 %" in reason


def test_too_few_lag_samples_judge_nothing():
    bound, reason = judge(lags(*[100.0] * 9), cpu_share=None, wall_s=0.45, ttft_p50_s=0.05)
    assert not bound and reason == "9 loop-lag samples, too few to judge (10 needed)"
    assert judge(lags(*[100.0] * 10), cpu_share=None, wall_s=0.5, ttft_p50_s=0.05)[0]


def test_too_few_measured_requests_judge_nothing():
    busy = lags(*[100.0] * 100)
    bound, reason = judge(busy, cpu_share=0.99, wall_s=5.0, ttft_p50_s=0.05, requests=19)
    assert not bound and reason == "19 measured requests, too few to judge (20 needed)"
    assert judge(busy, cpu_share=0.99, wall_s=5.0, ttft_p50_s=0.05, requests=1)[1].startswith("1 measured request,")
    assert judge(busy, cpu_share=0.99, wall_s=5.0, ttft_p50_s=0.05, requests=20)[0]
    assert trust.RULE.min_requests == 20


def test_lag_figures_keep_exact_counts_when_the_values_are_a_sample():
    d = describe_lags([0.001, 0.002, 0.03], samples=300, max_s=0.5, over_10ms=30)
    assert d == {"samples": 300, "p50_s": 0.002, "p99_s": pytest.approx(0.02944), "max_s": 0.5,
                 "share_over_10ms": 0.1}
    assert describe_lags([]) == {"samples": 0, "p50_s": None, "p99_s": None, "max_s": None,
                                 "share_over_10ms": None}


# -- lag samples go to the stage that ran when they were taken


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.cpu = 0.0

    def __call__(self) -> float:
        return self.now


def test_samples_are_attributed_to_the_stage_running_when_the_loop_woke():
    clock = Clock()
    timer = StageTimer(clock=clock, cpu=lambda: clock.cpu)
    c1, c4 = Stage(0, 1, label="c=1"), Stage(1, 4, label="c=4")
    timer.sample(5.0, 0.9)  # before any stage: nobody's
    clock.now = 9.0
    timer.on_stage(c1, True, True)  # a warm-up is not a stage here
    timer.sample(9.5, 0.8)
    timer.on_stage(c1, True, False)
    clock.now, clock.cpu = 10.0, 1.0
    timer.on_stage(c1, False, True)
    timer.sample(9.99, 0.7)  # its sleep began before the stage, and it woke before it too
    for t, lag in ((10.05, 0.001), (10.10, 0.002), (10.15, 0.030)):
        timer.sample(t, lag)
    clock.now, clock.cpu = 12.0, 2.5
    timer.on_stage(c1, False, False)
    timer.sample(12.05, 0.6)  # between stages
    clock.now, clock.cpu = 12.1, 2.5
    timer.on_stage(c4, False, True)
    timer.sample(12.15, -0.0001)  # a timer that fired a hair early counts as no lag
    clock.now, clock.cpu = 13.1, 3.5
    timer.on_stage(c4, False, False)

    first, second = timer.stages
    assert (first.label, first.start, first.end, first.cpu_s) == ("c=1", 10.0, 12.0, 1.5)
    assert list(first.lags.values) == [0.001, 0.002, 0.030]
    assert (first.samples, first.max_s, first.over_10ms) == (3, 0.030, 1)
    assert list(second.lags.values) == [0.0] and second.cpu_s == 1.0
    wire = timer.wire()
    assert [w["index"] for w in wire] == [0, 1] and wire[0]["wall_s"] == 2.0 and wire[0]["cpu_s"] == 1.5
    assert timer.wire() == []  # each stage is told once


def test_the_lag_monitor_hands_each_sample_on_with_its_time():
    seen = []
    monitor = LagMonitor(on_sample=lambda at, lag: seen.append((at, lag)))
    monitor.add(1.0, 0.002)
    monitor.add(1.05, 0.020)
    assert seen == [(1.0, 0.002), (1.05, 0.020)]
    assert monitor.summary() == {"samples": 2, "mean_s": pytest.approx(0.011), "max_s": 0.020,
                                 "share_over_10ms": 0.5}


def ok_record(stage: dict | None, ttft: float, **kw) -> Record:
    return Record(custom_id="x", status="ok", metrics=Metrics(ttft_s=ttft), stage=stage, **kw)


def timed_run(stages: list[Stage], per_stage: list[tuple[float, float, list[float]]]) -> ClientTiming:
    """A ClientTiming fed stage by stage: (wall s, cpu s, lag samples) each, one sample every 50 ms."""
    clock = Clock()
    timing = ClientTiming(tuple(stages), clock=clock, cpu=lambda: clock.cpu)
    for stage, (wall, cpu, samples) in zip(stages, per_stage, strict=True):
        timing.on_stage(stage, False, True)
        for k, lag in enumerate(samples):
            timing.sample(clock.now + 0.05 * (k + 1), lag)
        clock.now += wall
        clock.cpu += cpu
        timing.on_stage(stage, False, False)
    return timing


def test_the_timing_section_names_each_stage_its_figures_and_its_verdict():
    stages = list(make_stages([1, 64], [None]))
    timing = timed_run(stages, [(5.0, 0.5, [0.001] * 100), (5.0, 4.9, [0.001] * 90 + [0.023] * 10)])
    for ttft in (0.10, 0.12, 0.14) * 7:  # 21 requests a stage: enough to judge
        timing.observe(ok_record(stages[0].to_record(), ttft))
        timing.observe(ok_record(stages[1].to_record(), ttft * 3))
    timing.observe(ok_record(stages[1].to_record(), 9.0, warmup=True))  # not this stage's TTFT
    doc = timing.document()
    assert doc["client_bound"] is True and doc["timing"]["rule"]["lag_floor_s"] == 0.005
    calm, busy = doc["timing"]["stages"]
    assert (calm["stage"], calm["client_bound"], calm["source"]) == ("c=1", False, "process")
    assert calm["cpu_share"] == pytest.approx(0.1) and calm["ttft_p50_s"] == pytest.approx(0.12)
    assert calm["requests"] == doc["timing"]["stages"][1]["requests"] == 21
    assert busy["stage"] == "c=64" and busy["client_bound"]
    assert busy["lag_p99_s"] == pytest.approx(0.023) and busy["ttft_inflation_s"] == busy["lag_p99_s"]
    assert busy["lag_max_s"] == 0.023 and busy["share_over_10ms"] == pytest.approx(0.1)
    assert busy["cpu_share"] == pytest.approx(0.98) and busy["lag_limit_s"] == pytest.approx(0.018)
    assert busy["reason"] == ("loop lag p99 23 ms over the 18 ms limit (5 % of TTFT p50 360 ms): TTFT may be "
                              "inflated by up to that; CPU 98 % of one core (limit 90 %)")
    assert trust.bound_lines(doc) == [
        "stage c=64: client-bound: loop lag p99 23 ms (TTFT may be inflated by up to that), max 23 ms, CPU 98 %",
        "these numbers include the client's own delays: lower -c, add --workers, or run the client on a less busy "
        "machine"]
    for page in ("SUMMARY.md", "benchmarking.md"):  # the docs show these very lines
        shown = (SUMMARY_DOC.parent / page).read_text()
        assert all(f"  warning: {line}\n" in shown for line in trust.bound_lines(doc)), page


def test_a_stage_of_a_few_requests_or_of_failures_only_is_not_judged():
    stages = list(make_stages([8, 64], [None]))
    busy = (5.0, 4.9, [0.050] * 100)  # a saturated loop and CPU: client-bound if there were anything to judge
    timing = timed_run(stages, [busy, busy])
    for _ in range(8):  # an 8-request stage
        timing.observe(ok_record(stages[0].to_record(), 0.1))
    for _ in range(30):  # every request failed, or came from the cache: nothing measured
        timing.observe(Record(custom_id="x", status="error", metrics=Metrics(ttft_s=0.1), stage=stages[1].to_record()))
        timing.observe(ok_record(stages[1].to_record(), 0.1, cached=True))
    doc = timing.document()
    few, failed = doc["timing"]["stages"]
    assert doc["client_bound"] is False and trust.bound_lines(doc) == []
    assert (few["requests"], few["reason"]) == (8, "8 measured requests, too few to judge (20 needed)")
    assert (failed["requests"], failed["reason"]) == (0, "0 measured requests, too few to judge (20 needed)")
    assert failed["lag_p99_s"] == pytest.approx(0.050)  # the figures are written all the same


def test_with_workers_their_figures_count_and_the_parent_stands_in_for_a_stage_none_reported():
    stages = list(make_stages([2, 4], [None]))
    timing = timed_run(stages, [(5.0, 4.9, [0.001] * 100), (5.0, 4.9, [0.001] * 100)])
    for stage in stages:
        for _ in range(20):  # the parent sees every record, whoever sent it
            timing.observe(ok_record(stage.to_record(), 0.1))
    workers = [[{"index": 0, "wall_s": 5.0, "cpu_s": 1.0, "lags": [0.001] * 100, "samples": 100, "max_s": 0.001,
                 "over_10ms": 0}],
               [{"index": 0, "wall_s": 5.0, "cpu_s": 2.0, "lags": [0.002] * 100, "samples": 100, "max_s": 0.002,
                 "over_10ms": 0}]]
    first, second = timing.document(workers)["timing"]["stages"]
    assert first["source"] == "workers" and first["lag_samples"] == 200
    assert first["cpu_share"] == pytest.approx(0.4)  # the busiest worker, not the busy parent
    assert not first["client_bound"]
    assert second["source"] == "parent" and second["client_bound"]
    assert second["reason"].endswith("(this process's figures: no worker reported this stage)")


def test_a_client_bound_run_fails_only_under_strict_timing_and_only_where_it_would_pass():
    summary = {"counts": {"total": 10, "error": 0}}
    from runner.config.run_config import ObserveConfig

    strict = RunConfig(observe=ObserveConfig(strict_timing=True))
    lax = RunConfig()
    assert _exit_code(strict, summary, False, [], True) == EXIT_CLIENT_BOUND == 5
    assert _exit_code(strict, summary, False, [], False) == EXIT_OK
    assert _exit_code(lax, summary, False, [], True) == EXIT_OK
    assert _exit_code(strict, {"counts": {"total": 10, "error": 1}}, False, [], True) == EXIT_FAILED
    assert _exit_code(strict, summary, True, [143], True) == 143


# -- runs against the mock, the verdict forced


async def test_strict_timing_exits_5_with_the_reason_in_the_summary(tmp_path, mock_server, monkeypatch, capsys):
    monkeypatch.setattr(trust, "RULE", ALWAYS)
    url = await mock_server(output_tokens=3)
    code, records = await run_rows(tmp_path, url, [chat(f"p{i}") for i in range(6)], strict_timing=True)
    assert code == EXIT_CLIENT_BOUND and len(records) == 6 and all(r["status"] == "ok" for r in records)
    doc = orjson.loads((tmp_path / "out.summary.json").read_bytes())
    assert doc["exit_code"] == 5 and doc["client_bound"] is True
    (stage,) = doc["timing"]["stages"]
    assert stage["stage"] is None and stage["client_bound"] and stage["source"] == "process"
    assert re.search(r"CPU \d+ % of one core \(limit 0 %\)", stage["reason"])
    assert doc["timing"]["rule"]["cpu_share"] == 0.0 and doc["config"]["strict_timing"] is True
    assert "warning: the run: client-bound:" in capsys.readouterr().err


async def test_without_strict_timing_the_run_passes_but_is_marked_and_the_report_shows_it(tmp_path, mock_server,
                                                                                          monkeypatch):
    monkeypatch.setattr(trust, "RULE", ALWAYS)
    url = await mock_server(output_tokens=3)
    code, _ = await run_rows(tmp_path, url, [chat(f"p{i}") for i in range(6)])
    assert code == EXIT_OK
    doc = orjson.loads((tmp_path / "out.summary.json").read_bytes())
    assert doc["exit_code"] == 0 and doc["client_bound"] is True
    out = tmp_path / "out.jsonl"
    r = CliRunner().invoke(report_command, [str(out)], catch_exceptions=False)
    assert r.exit_code == 0
    assert re.search(r"│\s+client-bound │", r.output)
    assert re.search(r"client-bound: (loop lag p99 [\d.]+ ms|CPU \d+ %)", " ".join(r.output.split()))
    r = CliRunner().invoke(report_command, [str(out), "--json"], catch_exceptions=False)
    report = orjson.loads(r.output)
    assert report["client_bound"] is True and report["stages"][0][KEY]["client_bound"] is True


async def test_an_8_record_run_and_a_run_whose_every_request_failed_are_not_called_client_bound(
        tmp_path, mock_server, monkeypatch, capsys):
    monkeypatch.setattr(trust, "RULE", FEW)  # every stage client-bound, once it has 20 measured requests
    url = await mock_server(output_tokens=3)
    code, records = await run_rows(tmp_path, url, [chat(f"p{i}") for i in range(8)], strict_timing=True)
    assert code == EXIT_OK and len(records) == 8
    doc = orjson.loads((tmp_path / "out.summary.json").read_bytes())
    assert doc["client_bound"] is False and doc["timing"]["stages"][0]["requests"] == 8
    assert doc["timing"]["rule"]["min_requests"] == 20
    assert "client-bound" not in capsys.readouterr().err

    # every request fails (a 400 each attempt; a closed port would stop the run before writing anything)
    failing = [chat(f"f{i}", mock={"key": f"f{i}", "faults": ["400"] * 5}) for i in range(30)]
    code, records = await run_rows(tmp_path, url, failing, strict_timing=True, max_failed=30)
    assert code == EXIT_OK and len(records) == 30 and all(r["status"] == "error" for r in records)
    doc = orjson.loads((tmp_path / "out.summary.json").read_bytes())
    assert doc["client_bound"] is False and doc["timing"]["stages"][0]["requests"] == 0
    assert "client-bound" not in capsys.readouterr().err


async def test_workers_send_their_own_timing(tmp_path, mock_server, monkeypatch):
    monkeypatch.setattr(trust, "RULE", ALWAYS)
    url = await mock_server(output_tokens=2)
    code, _ = await run_rows(tmp_path, url, [chat(f"r{i}") for i in range(8)], stages=make_stages([2, 4], [None]),
                             workers=2, strict_timing=True)
    assert code == EXIT_CLIENT_BOUND
    doc = orjson.loads((tmp_path / "out.summary.json").read_bytes())
    assert [(s["stage"], s["source"], s["client_bound"]) for s in doc["timing"]["stages"]] == \
        [("c=2", "workers", True), ("c=4", "workers", True)]


# -- the report reads the sidecar


def sweep_results(tmp_path: Path) -> Path:
    """Two stages of three ok records each, as `streamrun run -c 1,64` writes them."""
    rows = []
    for index, label in ((0, "c=1"), (1, "c=64")):
        stage = {"index": index, "label": label, "concurrency": int(label[2:]), "rate": None}
        for i in range(3):
            rows.append({"custom_id": f"{label}-{i}", "status": "ok", "text": "hi", "model": "m", "attempts": 1,
                         "error": None, "stage": stage, "warmup": False,
                         "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
                         "metrics": {"ttft_s": 0.1 + i / 100, "ttfb_s": 0.09, "e2e_s": 0.3, "tpot_s": 0.2,
                                     "itl_s": [0.2], "queue_s": 0.0, "output_tokens": 2,
                                     "output_tokens_source": "usage",
                                     "started_at": f"2026-01-01T00:00:0{i + 3 * index}+00:00"}})
    path = tmp_path / "bench.jsonl"
    path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    return path


def entry(index: int, label: str | None, bound: bool, p99: float) -> dict:
    return {"stage": label, "index": index, "duration_s": 5.0, "source": "process", "lag_samples": 100,
            "lag_p50_s": 0.001, "lag_p99_s": p99, "lag_max_s": p99 * 2, "share_over_10ms": 0.2 if bound else 0.0,
            "cpu_share": 0.98 if bound else 0.2, "ttft_p50_s": 0.1, "lag_limit_s": 0.005, "ttft_inflation_s": p99,
            "client_bound": bound, "reason": "..."}


def test_the_report_marks_a_client_bound_stage_in_the_table_the_json_and_the_page(tmp_path):
    results = sweep_results(tmp_path)
    sidecar = {"timing": {"stages": [entry(0, "c=1", False, 0.002), entry(1, "c=64", True, 0.023)]}}
    (tmp_path / "bench.summary.json").write_bytes(orjson.dumps(sidecar))
    r = CliRunner().invoke(report_command, [str(results)], catch_exceptions=False)
    assert re.search(r"c=1 .*│\s+ok │", r.output) and re.search(r"c=64 .*│\s+client-bound │", r.output)
    assert "c=64: client-bound: loop lag p99 23 ms (TTFT may be inflated by up to that), max 46 ms, CPU 98 %" \
        in " ".join(r.output.split())  # the line as printed, wrapped at the console's width
    report = build_report([results], warn=lambda m: None)
    attach_timing(report)
    doc = report_document(report)
    assert doc["client_bound"] is True
    assert [s[KEY]["client_bound"] for s in doc["stages"]] == [False, True]
    pytest.importorskip("plotly")
    pytest.importorskip("jinja2")
    from runner.report.html import render_html

    page = render_html(report)
    assert '<span class="badge">client-bound</span>' in page
    assert "client-bound: c=64 (the client&#39;s own delays inflate these latencies)" in page
    assert "client: loop lag p99 2.0 ms (TTFT may be inflated by up to that), max 4.0 ms, CPU 20 %" in page


def test_without_a_sidecar_nothing_is_claimed(tmp_path):
    report = build_report([sweep_results(tmp_path)], warn=lambda m: None)
    attach_timing(report)
    doc = report_document(report)
    assert "client_bound" not in doc and all(KEY not in s for s in doc["stages"])
    r = CliRunner().invoke(report_command, [str(tmp_path / "bench.jsonl")], catch_exceptions=False)
    assert "client" not in r.output.split("Requests and throughput")[1].split("\n")[1]


def test_stages_are_matched_by_index_the_unnamed_one_to_its_entry_and_shards_to_their_worst():
    sweep = [{"stage": {"index": 1, "label": "c=4"}}, {"stage": {"index": 0, "label": "c=1"}}]
    assert mark_stages(sweep, [entry(0, "c=1", False, 0.001), entry(1, "c=4", False, 0.002),
                               entry(1, "c=4", True, 0.030), entry(1, "c=4", False, 0.009)]) == 2
    assert sweep[0][KEY]["lag_p99_s"] == 0.030 and sweep[1][KEY]["lag_p99_s"] == 0.001
    single = [{"stage": None}]
    assert mark_stages(single, [entry(0, None, True, 0.01)]) == 1 and single[0][KEY]["client_bound"]
    assert mark_stages([{"stage": {"index": 7, "label": "c=9"}}], [entry(0, "c=1", True, 0.01)]) == 0


def test_the_documented_stage_entry_is_the_written_one():
    documented = SUMMARY_DOC.read_text().split("`timing.stages[]`:", 1)[1].split("\n\n", 2)[1]
    keys = {k for row in documented.splitlines() for k in re.findall(r"^\| ([^|]+) \|", row)
            for k in re.findall(r"`(\w+)`", k)}
    stage = timed_run([Stage(0, 1)], [(1.0, 0.1, [0.001] * 20)]).document()["timing"]["stages"][0]
    assert keys == set(stage)
    rule = SUMMARY_DOC.read_text().split("`timing.rule`:", 1)[1].split(")", 1)[0]
    assert set(re.findall(r"`(\w+)`", rule)) == set(trust.RULE.as_dict())
