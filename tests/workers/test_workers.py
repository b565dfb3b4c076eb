"""--workers N (runner/workers): the parent reads and writes, worker processes send.

The splits of a run's load are pure functions, checked without processes.
The runs go through the real thing: worker processes against the embedded
mock (served by this test's event loop) or a mock in its own process.
Waits poll for a state (lines on disk, a line on stderr, a process gone)
under the hang guard, never for a time.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import socket
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from runner.config.parsers import OptionError, workers_count
from runner.config.run_config import RunConfig, Stage, make_stages
from runner.errors import UsageError
from runner.inputs.items import parse_item
from runner.workers.shapes import split_rate, window, worker_config, worker_seed, worker_stage
from runner.workers.wire import (
    HEADER,
    READ_BYTES,
    Kind,
    Link,
    item_frame,
    item_of,
    pack,
    record_bytes,
    record_of,
    unpack,
)
from tests.helpers import (
    HANG_GUARD_S,
    amock_stats,
    assert_one_ok_record_per_input,
    chat,
    prompts,
    read_jsonl,
    read_stderr_until,
    run_rows,
    start_run,
    streamrun,
    wait_for_lines,
    write_jsonl,
)


def summary_of(path: Path) -> dict:
    return orjson.loads(path.read_bytes())


# -- how the load splits (pure)


def test_concurrency_splits_with_the_remainder_to_the_first_workers():
    def shares(concurrency: int, count: int) -> list[int]:
        return [worker_stage(Stage(0, concurrency), i, count).concurrency for i in range(count)]

    assert shares(3, 2) == [2, 1]
    assert shares(16, 3) == [6, 5, 5]
    assert shares(4, 4) == [1, 1, 1, 1]
    assert sum(shares(1001, 7)) == 1001


def test_rate_splits_into_equal_poisson_streams():
    assert split_rate(10.0, 4) == 2.5
    assert split_rate(None, 4) is None  # closed loop stays closed loop
    assert split_rate(math.inf, 4) == math.inf  # all at once stays all at once
    shares = [worker_stage(Stage(2, 5, 9.0, "rate=9"), i, 3) for i in range(3)]
    assert [s.concurrency for s in shares] == [2, 2, 1]
    assert [s.rate for s in shares] == [3.0, 3.0, 3.0]  # they add up to the stage's rate
    assert {(s.index, s.label) for s in shares} == {(2, "rate=9")}  # records keep the stage's own name


def test_a_stage_with_fewer_slots_than_workers_runs_on_the_first():
    # --rate sweep's synchronous stage: one request at a time, whatever the number of workers
    sync = Stage(0, 1, None, "synchronous")
    assert worker_stage(sync, 0, 3) == Stage(0, 1, None, "synchronous")
    assert worker_stage(sync, 1, 3) is None and worker_stage(sync, 2, 3) is None


def test_each_worker_gets_a_seed_of_its_own_and_the_same_again():
    seeds = [worker_seed(7, i) for i in range(4)]
    assert len(set(seeds)) == 4 and seeds == [worker_seed(7, i) for i in range(4)]
    assert worker_seed(None, 1) is None


def test_a_worker_config_keeps_what_sends_and_drops_what_the_parent_does():
    from runner.config.run_config import LoadConfig, OutputConfig, RequestConfig

    cfg = RunConfig(inputs=("in.jsonl",), output=OutputConfig("out.jsonl", resume=True, keep_failed=True),
                    load=LoadConfig(concurrency=(5,), rate=(4.0,), workers=2, seed=1, num_prompts=10, warmup=3,
                                    rpm=600), request=RequestConfig(max_tokens=8))
    w = worker_config(cfg, 1, 2)  # the output, resume and what goes with it stay with the parent
    load = w.load
    assert (load.workers, load.max_concurrency, load.num_prompts, load.seed) == (1, 2, None, worker_seed(1, 1))
    assert w.output == OutputConfig()
    assert (load.warmup, load.rpm, w.request.params) == (3, 600, {"max_tokens": 8})
    assert window(2) > 2  # a worker holds more than it sends at once, so its slots never wait for the parent


def test_workers_option_takes_a_count_or_auto():
    assert workers_count("3") == 3 and workers_count(2) == 2 and workers_count("auto") == "auto"
    for bad in ("0", "-1", "many", True):
        with pytest.raises(OptionError):
            workers_count(bad)
    from runner.config.run_config import LoadConfig

    auto = LoadConfig(concurrency=(2,), workers="auto")
    assert 1 <= auto.workers <= 2  # cores - 1, at least 1, at most -c


def test_more_workers_than_concurrency_or_a_shaped_burst_is_refused():
    from runner.config.run_config import LoadConfig

    with pytest.raises(UsageError, match="--workers 3 needs -c 3 or more"):
        LoadConfig(concurrency=(2,), workers=3)
    with pytest.raises(UsageError, match="--workers 2 needs -c 2"):
        LoadConfig(concurrency=(1, 4), workers=2)  # a sweep's every stage must split
    with pytest.raises(UsageError, match="burstiness"):
        LoadConfig(concurrency=(4,), rate=(2.0,), burstiness=0.5, workers=2)


def test_what_crosses_the_socket_comes_out_the_same():
    raw = b'{"custom_id": "s", "turns": ["a", "b"], "messages": [{"role": "system", "content": "x"}], "timestamp": 5}'
    item = parse_item("in.jsonl", 3, raw)
    assert item_of(item_frame(item)) == item
    assert unpack(pack({"stage": item.session})) == {"stage": item.session}


async def test_frames_come_out_whole_and_in_order_however_the_bytes_arrive():
    # many frames in one turn (one write), a frame larger than one read, a frame cut across
    # writes, an empty payload; then the peer's end in the middle of a frame is the end
    a, b = socket.socketpair()
    sender, receiver = await Link.open(a), await Link.open(b)
    big = os.urandom(READ_BYTES * 3 + 7)
    sent = [(Kind.RECORD, b"r%d" % i) for i in range(1000)] + [(Kind.ITEM, big), (Kind.END, b"")]
    for kind, payload in sent:
        sender.send(kind, payload)
    async def receive_all():
        return [await receiver.receive() for _ in sent]

    receiving = asyncio.ensure_future(receive_all())  # read while the sender's buffers fill
    await sender.drain()  # the turn's frames, flushed together
    assert await receiving == sent
    frame = HEADER.pack(10, Kind.STATUS) + b"0123456789"
    sender._writer.write(frame[:3])  # a header cut in two, then its payload in pieces
    await sender._writer.drain()
    pending = asyncio.ensure_future(receiver.receive())
    await asyncio.sleep(0)
    assert not pending.done()
    sender._writer.write(frame[3:9])
    sender._writer.write(frame[9:])
    assert await pending == (Kind.STATUS, b"0123456789")
    sender._writer.write(HEADER.pack(100, Kind.RECORD) + b"only part")
    await sender.close()
    assert await receiver.receive() is None  # a frame the peer never finished is not a frame
    await receiver.close()


async def test_a_record_decoded_by_the_parent_is_written_byte_for_byte(tmp_path, mock_server):
    # the parent writes what the worker built: decode_native(encode(r)) encodes to the same line
    url = await mock_server(output_tokens=5)
    rows = [chat("a"), chat("b", n=2, logprobs=True, top_logprobs=1), chat("c", {"faults": ["400"], "key": "c"}),
            {"custom_id": "s", "turns": ["hi", "again"]}, "{broken"]
    await run_rows(tmp_path, url, rows)
    lines = (tmp_path / "out.jsonl").read_bytes().splitlines()
    assert len(lines) == 5
    for line in lines:
        assert record_bytes(record_of(line)) == line


# -- runs


async def test_two_workers_write_one_record_each_and_the_same_summary_as_one(tmp_path, mock_server):
    url = await mock_server(output_tokens=4)
    rows = [chat(f"p{i}") for i in range(40)] + ["{not json"]
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir(), two.mkdir()
    code1, records1 = await run_rows(one, url, rows, stages=(Stage(0, 4),))
    code2, records2 = await run_rows(two, url, rows, stages=(Stage(0, 4),), workers=2)
    assert code1 == code2 == 1  # the broken line is an error record in both
    assert Counter(r["custom_id"] for r in records2) == Counter(r["custom_id"] for r in records1)
    assert sorted((r["custom_id"], r["status"]) for r in records2) == \
        sorted((r["custom_id"], r["status"]) for r in records1)
    s1, s2 = summary_of(one / "out.summary.json"), summary_of(two / "out.summary.json")
    for key in ("total", "ok", "error", "errors_by_type"):
        assert s2["summary"]["counts"][key] == s1["summary"]["counts"][key]
    assert s2["summary"]["tokens"] == s1["summary"]["tokens"]
    assert s2["requests_sent"] == s1["requests_sent"] == 40
    assert s2["config"]["workers"] == 2 and "workers" not in s1
    processes = s2["workers"]["processes"]
    assert [p["index"] for p in processes] == [0, 1]
    assert all(p["requests_sent"] > 0 and p["exit_code"] == 0 for p in processes)  # both sent a share
    assert sum(p["records"] for p in processes) == 41
    assert len({p["pid"] for p in processes} | {os.getpid()}) == 3  # processes of their own
    assert s2["endpoints"][0]["requests"] == 40


async def test_a_sweep_runs_stage_by_stage_and_records_name_the_whole_stage(tmp_path, mock_server):
    url = await mock_server(output_tokens=2)
    rows = [chat(f"r{i}") for i in range(6)]
    code, records = await run_rows(tmp_path, url, rows, stages=make_stages([2, 4], [None]), workers=2, warmup=2)
    assert code == 0
    stages = Counter((r["stage"]["label"], r["stage"]["concurrency"]) for r in records if not r["warmup"])
    assert stages == {("c=2", 2): 6, ("c=4", 4): 6}  # the stage's concurrency, not a worker's share
    assert sorted(r["custom_id"] for r in records if r["warmup"]) == ["warmup:r0", "warmup:r1"]
    assert (await amock_stats(url))["requests"] == 14


async def test_num_prompts_counts_over_all_workers(tmp_path, mock_server):
    url = await mock_server()
    code, records = await run_rows(tmp_path, url, [chat(f"r{i}") for i in range(20)], num_prompts=5, workers=2)
    assert code == 0 and sorted(r["custom_id"] for r in records) == [f"r{i}" for i in range(5)]


async def test_one_rpm_budget_for_all_workers(tmp_path, mock_server):
    # As tests/engine/test_quota_run.py's single-process check: the mock admits 600 a minute, 10 per clock second
    # plus one second's worth at start.  Two workers with 600 each would be refused within these 4 seconds;
    # one budget granted by the parent never is, whatever the timing.
    url = await mock_server(rpm_limit=600, quota_fill=1 / 60, output_tokens=4)
    code, records = await run_rows(tmp_path, url, [chat(f"r{i}") for i in range(40)], stages=(Stage(0, 16),),
                                   rpm=600, adaptive=False, workers=2)
    stats = await amock_stats(url)
    assert code == 0 and len(records) == 40 and stats["status_429"] == 0 and stats["requests"] == 40
    summary = summary_of(tmp_path / "out.summary.json")
    assert summary["quota"]["waits"] > 0  # the parent's limiter made the workers wait
    assert all(p["requests_sent"] > 0 for p in summary["workers"]["processes"])


async def test_a_request_fits_the_whole_tpm_not_a_workers_share(tmp_path, mock_server):
    url = await mock_server(output_tokens=4)
    code, records = await run_rows(tmp_path, url, [chat("big", max_tokens=1500), chat("huge", max_tokens=3000)],
                                   tpm=2000, workers=2)
    by = {r["custom_id"]: r for r in records}
    assert by["big"]["status"] == "ok"  # over 2000 / 2, within 2000: one budget, not halves
    assert by["huge"]["error"]["type"] == "exceeds_tpm"


async def test_a_worker_that_cannot_start_stops_the_run_before_anything_is_sent(tmp_path, mock_server,
                                                                               monkeypatch):
    from runner.workers import handle

    monkeypatch.setattr(handle, "CHILD", "runner.workers.no_such_module")  # each worker exits at once
    url = await mock_server()
    code, records = await run_rows(tmp_path, url, [chat(f"r{i}") for i in range(4)], workers=2)
    assert code == 2 and records == []
    assert (await amock_stats(url))["requests"] == 0
    summary = summary_of(tmp_path / "out.summary.json")
    assert summary["stopped"] == "worker 0 ended before it was ready: see its error above"


# -- signals and deaths (the CLI as a subprocess, the mock in its own process)


def worker_pids(proc) -> list[int]:
    """From the run's log line; stderr is drained by a thread from then on, so wait with proc.wait()."""
    line = read_stderr_until(proc, "workers sending")
    return [int(p) for p in re.search(r"pids ([\d, ]+)\)", line).group(1).split(", ")]


def wait_until_gone(pid: int) -> None:
    end = time.monotonic() + HANG_GUARD_S
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":  # exited, not yet reaped by its new parent
                    return
        except FileNotFoundError:
            return
        assert time.monotonic() < end, "hang guard"
        time.sleep(0.02)


def test_sigterm_drains_every_worker_exits_143_and_resume_completes(tmp_path, mock_process):
    # 0.4 s a request at -c 8: the 16 lines come after 2 rounds, the whole run would need 25
    url = mock_process("--ttft", "0.3", "--tokens-per-s", "200", "--output-tokens", "20")
    n = 200
    inp, out = prompts(tmp_path / "in.jsonl", n), tmp_path / "out.jsonl"
    proc = start_run(inp, "-o", out, "--base-url", url, "-c", "8", "--workers", "2")
    pids = worker_pids(proc)
    wait_for_lines(out, 16, proc)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=HANG_GUARD_S) == 143
    summary = summary_of(tmp_path / "out.summary.json")
    assert summary["interrupted"] is True and summary["cancelled_in_flight"] == 0
    assert summary["records_written"] == summary["requests_sent"] < n  # every in-flight request drained
    assert [p["exit_code"] for p in summary["workers"]["processes"]] == [0, 0]
    for pid in pids:
        wait_until_gone(pid)
    res = streamrun("run", inp, "-o", out, "--base-url", url, "-c", n, "--resume", "--workers", "2")
    assert res.returncode == 0, res.stderr
    assert_one_ok_record_per_input(out, n)


def test_a_killed_worker_ends_the_run_with_exit_1_and_resume_completes(tmp_path, mock_process):
    url = mock_process("--ttft", "0.3", "--tokens-per-s", "400", "--output-tokens", "16")
    n = 120
    inp, out = prompts(tmp_path / "in.jsonl", n), tmp_path / "out.jsonl"
    proc = start_run(inp, "-o", out, "--base-url", url, "-c", "16", "--workers", "2", "--fsync", "never")
    victim, _ = worker_pids(proc)
    wait_for_lines(out, 16, proc)
    os.kill(victim, signal.SIGKILL)
    assert proc.wait(timeout=HANG_GUARD_S) == 1  # the parent does not hang on the dead worker
    summary = summary_of(tmp_path / "out.summary.json")
    assert summary["stopped"].startswith("worker 0 was killed by SIGKILL") and "--resume" in summary["stopped"]
    dead, alive = summary["workers"]["processes"]
    assert dead["exit_code"] == -signal.SIGKILL and dead["unanswered"] > 0 and alive["exit_code"] == 0
    written = read_jsonl(out)
    assert len(written) == n - dead["unanswered"]  # the other worker finished everything else
    assert len({r["custom_id"] for r in written}) == len(written)
    res = streamrun("run", inp, "-o", out, "--base-url", url, "-c", 16, "--resume", "--workers", "2")
    assert res.returncode == 0, res.stderr
    assert_one_ok_record_per_input(out, n)


def test_a_rerun_with_workers_sends_the_failed_lines_again_and_counts_final_records(tmp_path, mock_process):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    rows = [chat(f"p{i}", mock={"key": f"p{i}", "faults": ["500"]} if i % 3 == 0 else None) for i in range(9)]
    inp, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    run = ("run", inp, "-o", out, "--base-url", url, "-c", "4", "--workers", "2", "--max-attempts", "1")
    assert streamrun(*run).returncode == 1
    again = streamrun(*run, "--resume")
    assert again.returncode == 0, again.stderr
    assert "6 records done are skipped, 3 failed lines are sent again" in again.stderr
    summary = summary_of(tmp_path / "out.summary.json")
    assert summary["requests_sent"] == 3 and len(read_jsonl(out)) == 12
    assert (summary["summary"]["counts"]["total"], summary["summary"]["counts"]["ok"]) == (9, 9)


def test_kill_9_of_the_parent_takes_the_workers_with_it_and_resume_completes(tmp_path, mock_process):
    url = mock_process("--ttft", "0.3", "--tokens-per-s", "400", "--output-tokens", "16")
    n = 200
    inp, out = prompts(tmp_path / "in.jsonl", n), tmp_path / "out.jsonl"
    proc = start_run(inp, "-o", out, "--base-url", url, "-c", "16", "--workers", "2", "--fsync", "never")
    pids = worker_pids(proc)
    wait_for_lines(out, 16, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    for pid in pids:  # orphans would keep sending into nowhere
        wait_until_gone(pid)
    written = read_jsonl(out)
    res = streamrun("run", inp, "-o", out, "--base-url", url, "-c", n, "--resume", "--workers", "2")
    assert res.returncode == 0, res.stderr
    assert f"{len(written)} records done are skipped" in res.stderr
    assert_one_ok_record_per_input(out, n)
    assert json.loads((tmp_path / "out.summary.json").read_text())["requests_sent"] == n - len(written)


def max_overlap(records: list[dict]) -> int:
    """The most requests in flight at once, from the records' own start and end times."""
    edges = []
    for r in records:
        start = datetime.fromisoformat(r["metrics"]["started_at"]).timestamp()
        edges += [(start, 1), (start + r["metrics"]["e2e_s"], -1)]
    most = now = 0
    for _, step in sorted(edges):
        now += step
        most = max(most, now)
    return most


def test_after_a_worker_dies_later_stages_run_at_their_whole_load_and_the_stage_it_died_in_is_marked(
        tmp_path, mock_process):
    # -c 8,16 over 2 workers, worker 0 killed during c=8: c=16 ran with at most 8 in flight under its label.
    url = mock_process("--ttft", "1", "--output-tokens", "4")
    n = 32
    inp, out = prompts(tmp_path / "in.jsonl", n), tmp_path / "out.jsonl"
    proc = start_run(inp, "-o", out, "--base-url", url, "-c", "8,16", "--workers", "2", "--fsync", "never")
    victim, _ = worker_pids(proc)
    wait_for_lines(out, 4, proc)
    os.kill(victim, signal.SIGKILL)
    assert proc.wait(timeout=HANG_GUARD_S) == 1
    summary = summary_of(tmp_path / "out.summary.json")
    assert summary["workers"]["degraded_stages"] == [{"index": 0, "label": "c=8", "workers_died": [0]}]
    records = read_jsonl(out)
    first = [r for r in records if r["stage"]["label"] == "c=8"]
    second = [r for r in records if r["stage"]["label"] == "c=16"]
    assert any(r["stage"].get("degraded") is True for r in first)  # those written after the death say so
    assert len(second) == n and not any("degraded" in r["stage"] for r in second)
    assert max_overlap(second) > 8  # each request holds its slot 1 s: the survivor ran the whole 16
    report = streamrun("report", out)
    assert report.returncode == 0, report.stderr
    assert "c=8 (degraded)" in report.stdout and "c=16 (degraded)" not in report.stdout
    assert "c=8: degraded: a worker died during it" in report.stdout
    res = streamrun("run", inp, "-o", out, "--base-url", url, "-c", "8,16", "--resume", "--workers", "2")
    assert res.returncode == 0, res.stderr  # what the dead worker held is sent again
    assert Counter(r["stage"]["label"] for r in read_jsonl(out)) == {"c=8": n, "c=16": n}


def test_a_degraded_run_of_one_stage_is_marked_from_its_summary():
    from runner.report.degraded import mark_stages

    unnamed = [{"stage": None}]
    mark_stages(unnamed, [{"index": 0, "label": None, "workers_died": [1]}])
    sweep = [{"stage": {"index": 0, "label": "c=4"}}, {"stage": {"index": 1, "label": "c=8", "degraded": True}},
             {"stage": {"index": 2, "label": "c=16"}}]
    mark_stages(sweep, [{"index": 0, "label": "c=4", "workers_died": [0]}])
    assert unnamed[0]["degraded"] is True
    assert [s.get("degraded") for s in sweep] == [True, True, None]  # the summary's word, the records'


def test_a_worker_taking_over_a_share_grows_its_adaptive_cap():
    from runner.engine.quota import AdaptiveConcurrency

    grown = AdaptiveConcurrency(8)
    grown.grow(16)
    assert (grown.limit, grown.max_concurrency) == (16, 16)
    cut = AdaptiveConcurrency(8)
    cut.on_throttle()  # halved to 4: it keeps the cut, raised by the 8 slots it took over
    cut.grow(16)
    assert (cut.limit, cut.max_concurrency) == (12, 16)
