"""The Python API: the docs' example (docs/python-api.md) runs, stream/run/config behave as the CLI, and the CLI goes through it."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import streamrun
from runner import api
from tests.conftest import read_jsonl, write_jsonl

API_PAGE = Path(__file__).parent.parent / "docs" / "python-api.md"


def test_the_documented_example_runs_as_it_is(tmp_path):
    text = API_PAGE.read_text()
    code = re.search(r"<!-- python-api-example -->\n```python\n(.*?)```", text, re.S).group(1)
    (tmp_path / "example.py").write_text(code)
    root = str(Path(__file__).parent.parent)
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
    assert isinstance(cfg, streamrun.RunConfig) and cfg.timeouts.idle == 5.0 and cfg.concurrency == (4,)
    with pytest.raises(TypeError, match="not both"):  # a config holds its inputs: others beside it would be lost
        streamrun.run([{"messages": []}], config=cfg)
    with pytest.raises(streamrun.RunError) as err:  # the output exists: as the CLI, exit 2
        (tmp_path / "o.jsonl").write_text("{}\n")
        streamrun.run([{"messages": [{"role": "user", "content": "x"}]}], output=tmp_path / "o.jsonl", mock=True)
    assert err.value.exit_code == 2


def test_the_cli_runs_through_the_python_api(tmp_path, monkeypatch):
    from runner.cli import main

    seen = []

    def fake_run(**kwargs):
        seen.append(kwargs["config"])
        return {"exit_code": 7}

    monkeypatch.setattr(api, "run", fake_run)
    inp = write_jsonl(tmp_path / "in.jsonl", [{"messages": [{"role": "user", "content": "x"}]}])
    res = CliRunner().invoke(main, ["run", str(inp), "-o", str(tmp_path / "o.jsonl"), "-c", "3"])
    assert res.exit_code == 7 and seen[0].concurrency == (3,)
