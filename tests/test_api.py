"""The Python API: the docs' example (docs/python-api.md) runs, stream/run/config behave as the CLI, and the CLI goes through it."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys

import pytest
from click.testing import CliRunner

import streamrun
from runner import api
from tests.helpers import HANG_GUARD_S, ROOT, read_jsonl, read_stderr_until, wait_for_requests, write_jsonl
from tests.helpers import streamrun as streamrun_cli

API_PAGE = ROOT / "docs" / "python-api.md"


def test_the_documented_example_runs_as_it_is(tmp_path):
    text = API_PAGE.read_text()
    code = re.search(r"<!-- python-api-example -->\n```python\n(.*?)```", text, re.S).group(1)
    (tmp_path / "example.py").write_text(code)
    root = str(ROOT)
    res = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                         env={**os.environ, "PYTHONPATH": root})
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0] == "0 4"
    assert sorted(line.split()[0] for line in res.stdout.splitlines()[1:] if line[:1] == "q") == \
        ["q0", "q1", "q2", "q3"]
    assert len(read_jsonl(tmp_path / "results.jsonl")) == 4 and (tmp_path / "results.summary.json").exists()


def test_stream_yields_every_record_of_dicts_and_files(tmp_path):
    rows = [{"custom_id": f"r{i}", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3} for i in range(5)]
    path = write_jsonl(tmp_path / "in.jsonl", rows)

    async def collect(inputs, **kw):
        return [r async for r in streamrun.stream(inputs, mock=True, concurrency=3, **kw)]

    from_dicts = asyncio.run(collect(iter(rows)))  # any iterable of dicts, read once
    from_file = asyncio.run(collect(str(path), output=str(tmp_path / "kept.jsonl")))
    for records in (from_dicts, from_file):
        assert sorted(r.custom_id for r in records) == [f"r{i}" for i in range(5)]
        assert all(r.ok and r.text and r.metrics.ttft_s is not None for r in records)
    assert len(read_jsonl(tmp_path / "kept.jsonl")) == 5


def test_run_returns_the_summary_and_resumes_like_the_cli(tmp_path):
    rows = [{"custom_id": f"r{i}", "messages": [{"role": "user", "content": "hi"}]} for i in range(3)]
    out = tmp_path / "out.jsonl"
    doc = streamrun.run(rows, output=out, mock=True, max_tokens=2)
    assert doc["exit_code"] == 0 and doc["records_written"] == 3 and doc["config"]["output"] == str(out)
    again = streamrun.run(rows, output=out, mock=True, max_tokens=2, resume=True)
    assert again["requests_sent"] == 0 and len(read_jsonl(out)) == 3


def test_a_bad_option_raises_naming_the_key(tmp_path):
    with pytest.raises(streamrun.UsageError, match="concurrency"):
        streamrun.config("x.jsonl", output=tmp_path / "o.jsonl", concurrency=0)
    with pytest.raises(streamrun.UsageError, match="unknown key 'concurency'.*concurrency"):
        streamrun.config("x.jsonl", output=tmp_path / "o.jsonl", concurency=4)
    cfg = streamrun.config(["a.jsonl"], output="o.jsonl", concurrency=4, timeouts={"idle": "5s"})
    assert isinstance(cfg, streamrun.RunConfig) and cfg.transport.timeouts.idle == 5.0 and cfg.load.concurrency == (4,)
    with pytest.raises(TypeError, match="not both"):  # a config holds its inputs: others beside it would be lost
        streamrun.run([{"messages": []}], config=cfg)
    with pytest.raises(streamrun.RunError) as err:  # the output exists: as the CLI, exit 2
        (tmp_path / "o.jsonl").write_text("{}\n")
        streamrun.run([{"messages": [{"role": "user", "content": "x"}]}], output=tmp_path / "o.jsonl", mock=True)
    assert err.value.exit_code == 2


def test_the_cli_runs_through_the_python_api(tmp_path, monkeypatch):
    from runner.cli.main import main

    seen = []

    def fake_run(**kwargs):
        seen.append(kwargs["config"])
        return {"exit_code": 7}

    monkeypatch.setattr(api, "run", fake_run)
    inp = write_jsonl(tmp_path / "in.jsonl", [{"messages": [{"role": "user", "content": "x"}]}])
    res = CliRunner().invoke(main, ["run", str(inp), "-o", str(tmp_path / "o.jsonl"), "-c", "3"])
    assert res.exit_code == 7 and seen[0].load.concurrency == (3,)


# -- the Python API speaks Python: its own words, its caller's event loop and signal handlers


def test_an_existing_output_names_the_python_keywords_and_the_cli_its_flags(tmp_path):
    rows = [{"custom_id": "r0", "messages": [{"role": "user", "content": "hi"}]}]
    out = tmp_path / "out.jsonl"
    streamrun.run(rows, output=out, mock=True, max_tokens=2)
    with pytest.raises(streamrun.OutputExists) as err:
        streamrun.run(rows, output=out, mock=True, max_tokens=2)
    assert str(err.value) == f"{out} already exists: pass resume=True to continue it or overwrite=True to replace it"
    assert isinstance(err.value, streamrun.UsageError) and err.value.exit_code == 2
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    res = streamrun_cli("run", inp, "-o", out, "--mock")
    assert res.returncode == 2 and "pass --resume to continue it or --overwrite to replace it" in res.stderr


async def test_run_inside_a_running_event_loop_points_to_arun(tmp_path):
    import gc
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(RuntimeError, match=r"running event loop.*use `await streamrun\.arun\(\.\.\.\)`"):
            streamrun.run([{"messages": [{"role": "user", "content": "hi"}]}], output=tmp_path / "o.jsonl", mock=True)
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]
    assert not (tmp_path / "o.jsonl").exists()
    doc = await streamrun.arun([{"messages": [{"role": "user", "content": "hi"}]}], output=tmp_path / "o.jsonl",
                               mock=True, max_tokens=2)
    assert doc["exit_code"] == 0


def test_the_callers_signal_handlers_are_back_after_run_and_stream(tmp_path):
    import signal

    def on_int(signum, frame):
        pass

    def on_term(signum, frame):
        pass

    saved = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    rows = [{"custom_id": "r0", "messages": [{"role": "user", "content": "hi"}]}]
    try:
        signal.signal(signal.SIGINT, on_int)
        signal.signal(signal.SIGTERM, on_term)
        streamrun.run(rows, output=tmp_path / "a.jsonl", mock=True, max_tokens=2)
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (on_int, on_term)

        async def collect():
            return [r async for r in streamrun.stream(rows, mock=True, max_tokens=2)]

        assert len(asyncio.run(collect())) == 1
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == (on_int, on_term)
    finally:
        signal.signal(signal.SIGINT, saved[0])
        signal.signal(signal.SIGTERM, saved[1])


# A caller that handles SIGTERM on its own event loop, then runs streamrun there (a service, a notebook).
LOOP_HANDLER = """
import asyncio, os, signal, sys
import streamrun

async def main():
    got = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, got.set)
    rows = [{"custom_id": "r0", "messages": [{"role": "user", "content": "hi"}]}]
    doc = await streamrun.arun(rows, output=sys.argv[1], mock=True, max_tokens=2)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(got.wait(), 60)
    print("the caller's handler ran", doc["exit_code"])

asyncio.run(main())
"""


def test_a_handler_on_the_callers_own_event_loop_survives_arun(tmp_path):
    res = subprocess.run([sys.executable, "-c", LOOP_HANDLER, str(tmp_path / "o.jsonl")], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0 and res.stdout.strip() == "the caller's handler ran 0", (res.returncode, res.stderr)


SECOND_SIGINT = """
import sys
import streamrun

rows = [{"custom_id": f"r{i}", "messages": [{"role": "user", "content": "hi"}]} for i in range(3)]
try:
    doc = streamrun.run(rows, output=sys.argv[1], base_url=sys.argv[2], concurrency=3, drain_timeout="300s")
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
    sys.exit(42)
print("returned", doc["exit_code"])
"""


def test_under_the_python_api_a_second_sigint_raises_keyboardinterrupt_instead_of_exiting(tmp_path, mock_process):
    import signal

    url = mock_process("--ttft", "30")
    proc = subprocess.Popen([sys.executable, "-c", SECOND_SIGINT, str(tmp_path / "o.jsonl"), url],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        wait_for_requests(url, 3)
        proc.send_signal(signal.SIGINT)
        read_stderr_until(proc, "draining")  # the first one drains, as from the CLI
        proc.send_signal(signal.SIGINT)
        out = proc.stdout.read()
        proc.wait(timeout=HANG_GUARD_S)  # not 300 s: the second one does not wait for the drain
    finally:
        proc.kill()
    assert proc.returncode == 42 and out.strip() == "KeyboardInterrupt"  # raised in the caller, no os._exit
