"""--server-metrics: the mock's /metrics, the scraper and its side file, the summary section, the report panel.

No test waits a fixed time: scrapes are polled for (lines on disk, counts) under
the hang guard, and the run test holds the mock's answers until /metrics has
been scraped, so a slow machine only makes it slower.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import anyio
import orjson
import pytest
from aiohttp import web
from click.testing import CliRunner
from prometheus_client.parser import text_string_to_metric_families

from runner.config.parsers import OptionError, metrics_urls
from runner.config.run_config import RunConfig
from runner.mock import MockConfig, build_app
from runner.mock.metrics import FAKE_KV_SLOTS
from runner.observe.prometheus import PREFIX_HIT_RATE, ServerFigures, known_values, parse
from runner.observe.server_metrics import Scraper, resolve_urls, side_path_for
from tests.helpers import HANG_GUARD_S, chat, count_lines, read_jsonl, run_rows

RUNNING = "vllm:num_requests_running"


async def poll(condition, guard: float = HANG_GUARD_S) -> None:
    """Until `condition()` (maybe async) is true; fails at the hang guard only."""
    loop = asyncio.get_running_loop()
    end = loop.time() + guard
    while True:
        value = condition()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        assert loop.time() < end, "hang guard"
        await asyncio.sleep(0.01)


@asynccontextmanager
async def serve_app(app: web.Application):
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def refused_url() -> str:
    """A port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/metrics"


async def scrape_known(session: aiohttp.ClientSession, root: str) -> dict[str, float]:
    async with session.get(root + "/metrics") as resp:
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        return known_values(parse(await resp.text()).series)


# -- the mock's /metrics -----------------------------------------------------------


async def test_mock_metrics_parse_with_prometheus_client_and_follow_requests_in_flight():
    app = build_app(MockConfig(ttft=0.0, tokens_per_s=0.0))
    async with serve_app(app) as root, aiohttp.ClientSession() as session:
        async with session.get(root + "/metrics") as resp:
            families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
        assert {"vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:gpu_cache_usage_perc",
                "vllm:prompt_tokens", "vllm:generation_tokens", "vllm:request_success"} <= set(families)
        assert families["vllm:prompt_tokens"].type == "counter"
        assert families[RUNNING].samples[0].labels == {"model_name": "mock-model"}

        body = {"model": "mock-model", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                "max_tokens": 5}
        async with session.post(root + "/v1/chat/completions", json=body) as resp:
            await resp.read()
        async with session.get(root + "/metrics") as resp:
            series = parse(await resp.text()).series
        key = '{model_name="mock-model"}'
        assert series[RUNNING + key] == 0
        assert series["vllm:request_success_total" + key] == 1
        assert series["vllm:generation_tokens_total" + key] == 5
        assert series["vllm:prompt_tokens_total" + key] > 0

        stalled = []
        for i in range(3):  # streams the mock holds open: in flight until it shuts down
            resp = await session.post(root + "/v1/chat/completions",
                                      json={**body, "mock": {"key": f"s{i}", "faults": ["stall"]}})
            stalled.append(resp)
        await poll(lambda: _running_is(session, root, 3))
        known = await scrape_known(session, root)
        assert known["vllm:num_requests_waiting"] == 0
        assert known["vllm:gpu_cache_usage_perc"] == pytest.approx(3 / FAKE_KV_SLOTS)
        for resp in stalled:
            resp.close()


async def _running_is(session, root: str, n: int) -> bool:
    return (await scrape_known(session, root))[RUNNING] == n


async def test_other_paths_stay_strict():
    async with serve_app(build_app(MockConfig())) as root, aiohttp.ClientSession() as session:
        async with session.get(root + "/metrics/extra") as resp:
            assert resp.status == 404
        async with session.post(root + "/metrics") as resp:
            assert resp.status == 405


# -- parsing -----------------------------------------------------------------------


def test_parse_keeps_gauges_counters_and_sums_and_caps_the_series():
    lines = ["# TYPE vllm:num_requests_running gauge",
             'vllm:num_requests_running{model_name="m",engine="0"} 2',
             'vllm:num_requests_running{engine="1",model_name="m"} 3',
             "# TYPE x_seconds histogram",
             'x_seconds_bucket{le="0.1"} 1', 'x_seconds_bucket{le="+Inf"} 2', "x_seconds_sum 0.3", "x_seconds_count 2",
             "# TYPE req counter", "req_total 7", "req_created 1.7e9",
             "# TYPE odd gauge", "odd NaN",
             '# TYPE lab gauge', 'lab{path="a\\"b"} 1']
    scrape = parse("\n".join(lines) + "\n")
    assert scrape.series == {
        'vllm:num_requests_running{engine="0",model_name="m"}': 2.0,
        'vllm:num_requests_running{engine="1",model_name="m"}': 3.0,
        "x_seconds_sum": 0.3, "x_seconds_count": 2.0, "req_total": 7.0, 'lab{path="a\\"b"}': 1.0}
    assert known_values(scrape.series) == {RUNNING: 5.0}  # engines summed

    many = "\n".join(f'other{{i="{i}"}} {i}' for i in range(300)) + "\nvllm:num_requests_waiting 4\n"
    capped = parse(many, max_series=100)
    assert len(capped.series) == 101 and capped.dropped == 200
    assert capped.series["vllm:num_requests_waiting"] == 4  # a known gauge is kept past the cap

    for garbage in ("garbage text", "<html><body>hi</body></html>", "{}"):
        with pytest.raises(ValueError):
            parse(garbage)


def test_prefix_cache_hit_rate_from_vllm_counters_survives_a_reset():
    figures = ServerFigures("u")
    for hits, queries in ((0, 0), (30, 100), (60, 200), (10, 50)):  # the last: the server restarted
        figures.add({"vllm:prefix_cache_hits_total": hits, "vllm:prefix_cache_queries_total": queries,
                     "sglang:cache_hit_rate": 0.5})
    doc = figures.as_dict()
    assert doc[PREFIX_HIT_RATE] == pytest.approx((30 + 30 + 10) / (100 + 100 + 50))
    assert doc["gauges"]["sglang:cache_hit_rate"] == {"mean": 0.5, "max": 0.5, "samples": 4}


# -- options and paths ---------------------------------------------------------------


def test_urls_auto_and_side_paths(tmp_path):
    assert metrics_urls(("auto", "http://gpu:8000", "http://gpu:9000/custom")) == (
        "auto", "http://gpu:8000/metrics", "http://gpu:9000/custom")
    with pytest.raises(OptionError) as err:
        metrics_urls("ftp://user:hunter2pass@gpu/metrics")
    assert "hunter2pass" not in str(err.value)
    assert resolve_urls(("auto", "http://b:1/metrics"), ("http://a:8000/v1", "http://b:1/v1")) == (
        "http://a:8000/metrics", "http://b:1/metrics")
    from runner.config.options import summary_config
    from runner.config.run_config import ObserveConfig, OutputConfig

    assert side_path_for(OutputConfig("out/res.jsonl")) == "out/res.server_metrics.jsonl"
    assert side_path_for(OutputConfig("-", summary_path="s/run.summary.json")) == "s/run.server_metrics.jsonl"
    assert side_path_for(OutputConfig("-")) is None
    secret = RunConfig(observe=ObserveConfig(server_metrics=("http://u:hunter2pass@gpu:8000/metrics",)))
    assert "hunter2pass" not in json.dumps(summary_config(secret))


def test_the_cli_and_a_job_file_mean_the_same(tmp_path):
    from runner.cli.main import main
    from runner.config.jobfile import load_job
    from runner.config.options import config_from_options

    args = ["in.jsonl", "-o", "out.jsonl", "--server-metrics", "auto", "--server-metrics", "http://g:8000",
            "--server-metrics-interval", "250ms"]
    ctx = main.make_context("streamrun", ["run", *args])
    sub = main.get_command(ctx, "run").make_context("run", args, parent=ctx)
    opts = dict(sub.params)
    for name in ("mock", "progress", "inputs"):
        opts.pop(name)
    a = config_from_options(("in.jsonl",), opts, environ={})
    job = tmp_path / "job.toml"
    job.write_text('inputs = ["in.jsonl"]\noutput = "out.jsonl"\nserver_metrics = ["auto", "http://g:8000"]\n'
                   'server_metrics_interval = "250ms"\n')
    b = load_job(str(job), environ={})[0]
    assert a.observe.server_metrics == b.observe.server_metrics == ("auto", "http://g:8000/metrics")
    assert a.observe.server_metrics_interval_s == b.observe.server_metrics_interval_s == 0.25


# -- the scraper -----------------------------------------------------------------------


async def test_the_scraper_writes_a_line_per_scrape_and_stops_cleanly(tmp_path):
    path = tmp_path / "run.server_metrics.jsonl"
    async with serve_app(build_app(MockConfig())) as root:
        scraper = Scraper([root + "/metrics"], str(path), interval_s=0.01)
        started = datetime(2026, 1, 1, tzinfo=UTC)
        async with anyio.create_task_group() as tg:  # as the run scrapes: a task beside it, cancelled at its end
            tg.start_soon(scraper.run, started)
            await poll(lambda: count_lines(path) >= 5)
            tg.cancel_scope.cancel()
    lines = read_jsonl(path)
    assert scraper._file is None and scraper.lines == len(lines) >= 5  # closed; nothing written after
    assert [set(line) for line in lines] == [{"t", "at", "url", "metrics"}] * len(lines)
    ts = [line["t"] for line in lines]
    assert ts == sorted(ts) and ts[0] >= 0
    for line in lines:  # `at` is the run's start plus t
        at = datetime.fromisoformat(line["at"])
        assert at - started == pytest.approx(timedelta(seconds=line["t"]), abs=timedelta(microseconds=2))
    assert lines[0]["metrics"][RUNNING + '{model_name="mock-model"}'] == 0
    section = scraper.section()
    assert section["scrapes"] == len(lines) and section["failures"] == 0
    assert section["servers"][0]["gauges"][RUNNING]["samples"] == len(lines)


async def test_failing_urls_are_counted_and_logged_once_never_fatal(tmp_path, caplog):
    async def status_500(request):
        return web.Response(status=500, text="boom")

    async def garbage(request):
        return web.Response(text="<html><body>not metrics</body></html>")

    app = web.Application()
    app.router.add_get("/500", status_500)
    app.router.add_get("/garbage", garbage)
    path = tmp_path / "s.jsonl"
    caplog.set_level(logging.WARNING, logger="streamrun")
    async with serve_app(app) as root, serve_app(build_app(MockConfig())) as mock_root:
        refused = refused_url().replace("http://", "http://user:hunter2pass@")
        urls = [refused, root + "/500", root + "/garbage", mock_root + "/metrics"]
        scraper = Scraper(urls, str(path), interval_s=0.01)
        async with anyio.create_task_group() as tg:
            tg.start_soon(scraper.run)
            await poll(lambda: all(t.figures.failures >= 2 for t in scraper.targets[:3])
                       and scraper.targets[3].figures.scrapes >= 2)
            tg.cancel_scope.cancel()
    servers = scraper.section()["servers"]
    assert [s["scrapes"] for s in servers[:3]] == [0, 0, 0] and servers[3]["failures"] == 0
    errors = {line["url"]: line["error"] for line in read_jsonl(path) if "error" in line}
    assert errors[root + "/500"] == "HTTP 500"
    assert errors[root + "/garbage"].startswith("not Prometheus text")
    warnings = [r.getMessage() for r in caplog.records if "cannot scrape" in r.getMessage()]
    assert len(warnings) == 3  # once per failing URL, however many failures
    everything = path.read_text() + json.dumps(scraper.section()) + caplog.text
    assert "hunter2pass" not in everything and "user:***@" not in everything


# -- a run against the mock ------------------------------------------------------------


async def test_a_run_with_server_metrics_writes_the_side_file_and_the_summary_section(tmp_path):
    scrapes = 0
    scraped = asyncio.Event()

    @web.middleware
    async def gate(request, handler):
        """Answers wait until /metrics was scraped 3 times: the run outlasts them however fast it is."""
        nonlocal scrapes
        if request.path == "/metrics":
            response = await handler(request)
            scrapes += 1
            if scrapes >= 3:
                scraped.set()
            return response
        if request.method == "POST":
            await asyncio.wait_for(scraped.wait(), HANG_GUARD_S)
        return await handler(request)

    app = build_app(MockConfig(ttft=0.0, tokens_per_s=0.0))
    app.middlewares.append(gate)
    async with serve_app(app) as root:
        code, records = await run_rows(tmp_path, root + "/v1", [chat(f"q{i}") for i in range(6)],
                                       server_metrics=("auto",), server_metrics_interval_s=0.01)
    assert code == 0 and len(records) == 6
    side = tmp_path / "out.server_metrics.jsonl"
    lines = read_jsonl(side)
    assert len(lines) >= 3 and all(line["url"] == root + "/metrics" for line in lines)
    summary = orjson.loads((tmp_path / "out.summary.json").read_bytes())
    section = summary["server_metrics"]
    assert section["path"] == str(side) and section["scrapes"] == len(lines) and section["failures"] == 0
    assert section["series_dropped"] == 0 and section["interval_s"] == 0.01
    (server,) = section["servers"]
    assert server["url"] == root + "/metrics" and server[PREFIX_HIT_RATE] is None
    assert set(server["gauges"]) == {RUNNING, "vllm:num_requests_waiting", "vllm:gpu_cache_usage_perc"}
    assert server["gauges"][RUNNING]["samples"] == len(lines)
    assert summary["config"]["server_metrics"] == ["auto"]


# -- the report ------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def result(i: int, stage: dict | None, at: float) -> dict:
    return {"custom_id": f"r{i}", "status": "ok", "text": "hi", "model": "mock-model",
            "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8},
            "metrics": {"ttft_s": 0.1, "ttfb_s": 0.05, "e2e_s": 0.5, "tpot_s": 0.2, "itl_s": [0.2, 0.2],
                        "queue_s": 0.0, "output_tokens": 3, "output_tokens_source": "usage",
                        "started_at": (T0 + timedelta(seconds=at)).isoformat()},
            "attempts": 1, "error": None, "endpoint": "http://127.0.0.1:8000/v1", "stage": stage, "warmup": False}


def write_run(tmp_path: Path) -> Path:
    """A two-stage sweep over 0..4 s and 10..14 s; the server's queue is 1 in the first, 5 in the second."""
    c1 = {"index": 0, "label": "c=1", "concurrency": 1, "rate": None}
    c4 = {"index": 1, "label": "c=4", "concurrency": 4, "rate": None}
    rows = [result(i, c1, i * 0.5) for i in range(8)] + [result(10 + i, c4, 10 + i * 0.5) for i in range(8)]
    res = tmp_path / "bench.jsonl"
    res.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in rows))
    samples = []
    for t in range(0, 15):
        waiting = 1.0 if t < 5 else 5.0 if t >= 10 else 0.0
        samples.append({"t": t, "at": (T0 + timedelta(seconds=t)).isoformat(), "url": "http://gpu:8000/metrics",
                        "metrics": {'vllm:num_requests_waiting{model_name="m"}': waiting,
                                    'vllm:kv_cache_usage_perc{model_name="m"}': 0.25, "other_total": t}})
    samples.append({"t": 15, "at": (T0 + timedelta(seconds=15)).isoformat(), "url": "http://gpu:8000/metrics",
                    "error": "HTTP 500"})
    (tmp_path / "bench.server_metrics.jsonl").write_bytes(b"".join(orjson.dumps(s) + b"\n" for s in samples))
    return res


def test_the_report_finds_the_side_file_and_draws_the_server_panel(tmp_path):
    from runner.cli.report import report_command

    res = write_run(tmp_path)
    html = tmp_path / "report.html"
    out = CliRunner().invoke(report_command, [str(res), "--html", str(html)], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    assert "Server metrics (bench.server_metrics.jsonl: 15 scrapes of 1 server, 1 failed)" in out.output
    line = next(x for x in out.output.splitlines() if "vllm:num_requests_waiting" in x)
    assert "c=1: 1 / 1" in line and "c=4: 5 / 5" in line
    page = html.read_text()
    assert 'id="server"' in page and "Server metrics" in page
    assert "<th>gauge (mean / max)</th><th>whole run</th><th>c=1</th><th>c=4</th>" in page
    assert "<td>25.0% / 25.0%</td>" in page  # the KV cache, as a share
    assert "in flight (client)" in page and "TTFT p50 (client)" in page


def test_the_report_takes_a_named_side_file_and_has_no_panel_without_one(tmp_path):
    from runner.cli.report import report_command

    res = write_run(tmp_path)
    moved = tmp_path / "elsewhere.jsonl"
    (tmp_path / "bench.server_metrics.jsonl").rename(moved)
    plain = CliRunner().invoke(report_command, [str(res), "--html", str(tmp_path / "a.html")],
                               catch_exceptions=False)
    assert plain.exit_code == 0 and "Server metrics" not in plain.output
    assert 'id="server"' not in (tmp_path / "a.html").read_text()
    named = CliRunner().invoke(report_command, [str(res), "--server-metrics", str(moved)], catch_exceptions=False)
    assert named.exit_code == 0 and "Server metrics (elsewhere.jsonl: 15 scrapes" in named.output


def test_the_report_json_carries_the_server_figures_only_when_a_side_file_was_read(tmp_path):
    from runner.cli.report import report_command

    res = write_run(tmp_path)
    out = CliRunner().invoke(report_command, [str(res), "--json"], catch_exceptions=False)
    doc = orjson.loads(out.stdout)["server_metrics"]
    assert (doc["files"], doc["scrapes"], doc["failures"]) == ([str(tmp_path / "bench.server_metrics.jsonl")], 15, 1)
    assert doc["servers"] == ["http://gpu:8000/metrics"]
    gauges = {g["name"]: g for g in doc["gauges"]}
    waiting = gauges["vllm:num_requests_waiting"]
    assert (waiting["kind"], waiting["max"]) == ("waiting", 5.0)
    assert [(s["stage"], s["mean"], s["max"]) for s in waiting["stages"]] == [("c=1", 1.0, 1.0), ("c=4", 5.0, 5.0)]
    kv = next(g for g in doc["gauges"] if g["kind"] == "kv_cache")
    assert (kv["mean"], kv["max"]) == (0.25, 0.25)  # a fraction, as the server reports it
    (tmp_path / "bench.server_metrics.jsonl").unlink()
    plain = CliRunner().invoke(report_command, [str(res), "--json"], catch_exceptions=False)
    assert "server_metrics" not in orjson.loads(plain.stdout)


def test_in_a_comparison_the_server_table_names_stages_with_their_run(tmp_path):
    from runner.cli.report import report_command

    runs = []
    for name in ("a", "b"):  # both bench.jsonl: told apart by their folders
        (tmp_path / name).mkdir()
        runs.append(write_run(tmp_path / name))
    out = CliRunner().invoke(report_command, [*map(str, runs)], catch_exceptions=False)
    assert out.exit_code == 0, out.output
    line = next(x for x in out.output.splitlines() if "vllm:num_requests_waiting" in x)
    assert "a/bench · c=1: 1 / 1" in line and "b/bench · c=4: 5 / 5" in line
    doc = orjson.loads(CliRunner().invoke(report_command, [*map(str, runs), "--json"]).stdout)
    stages = doc["server_metrics"]["gauges"][0]["stages"]
    assert [s["stage"] for s in stages] == ["a/bench · c=1", "a/bench · c=4", "b/bench · c=1", "b/bench · c=4"]
