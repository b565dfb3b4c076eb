"""runner.config.run_config: RunConfig (stages, exclusive flags, the public copy), stages, fsync policies, path templates."""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone

import pytest

from runner.config.run_config import FsyncPolicy, RunConfig, Stage, make_stages, render_paths
from runner.errors import UsageError
from tests.helpers import freeze_now


def cfg(**kw) -> RunConfig:
    return RunConfig(inputs=("in.jsonl",), output="out.jsonl", **kw)


def test_make_stages():
    assert make_stages([8], [None]) == (Stage(0, 8, None, None),)
    sweep = make_stages([1, 4], [None])
    assert [s.label for s in sweep] == ["c=1", "c=4"] and sweep[1].to_record()["concurrency"] == 4
    rates = make_stages([16], [1.0, math.inf])
    assert [s.label for s in rates] == ["rate=1", "rate=inf"] and rates[1].to_record()["rate"] is None
    with pytest.raises(UsageError, match="not both"):
        make_stages([1, 2], [1.0, 2.0])


def test_stages_derive_from_concurrency_and_rate():
    assert cfg().stages == (Stage(0, 16),)
    assert cfg(concurrency=(4,), rate=(2.5,)).stages == (Stage(0, 4, 2.5),)
    sweep = cfg(concurrency=(1, 8, 2))
    assert [(s.index, s.concurrency, s.label) for s in sweep.stages] == [(0, 1, "c=1"), (1, 8, "c=8"), (2, 2, "c=2")]
    assert sweep.max_concurrency == 8
    rates = cfg(concurrency=(4,), rate=(0.5, math.inf))
    assert [(s.rate, s.label) for s in rates.stages] == [(0.5, "rate=0.5"), (math.inf, "rate=inf")]
    given = (Stage(0, 3),)
    assert cfg(concurrency=(99,), stages=given).stages == given  # given stages win
    with pytest.raises(UsageError, match="not both"):
        cfg(concurrency=(1, 2), rate=(1.0, 2.0))


def test_a_stage_outside_a_sweep_is_not_recorded():
    assert Stage(0, 4, 2.0).to_record() is None
    assert Stage(1, 4, 2.0, "rate=2").to_record() == {"index": 1, "label": "rate=2", "concurrency": 4, "rate": 2.0}


def test_resume_and_overwrite_exclude_each_other():
    with pytest.raises(UsageError, match="--resume and --overwrite exclude each other"):
        cfg(resume=True, overwrite=True)
    assert cfg(resume=True).resume and cfg(overwrite=True).overwrite


def test_retry_failed_needs_resume():
    with pytest.raises(UsageError, match="--retry-failed goes with --resume"):
        cfg(retry_failed=True)
    assert cfg(resume=True, retry_failed=True).retry_failed
    assert UsageError("x").exit_code == 2


def test_keep_failed_needs_resume_and_excludes_retry_failed():
    with pytest.raises(UsageError, match="--keep-failed goes with --resume"):
        cfg(keep_failed=True)
    with pytest.raises(UsageError, match="--keep-failed and --retry-failed exclude each other"):
        cfg(resume=True, keep_failed=True, retry_failed=True)
    assert cfg(resume=True, keep_failed=True).keep_failed


def test_public_copy_has_no_secret_and_is_json():
    c = cfg(base_urls=("https://user:hunter2-pass@gw.example.com/v1",), api_key_env="MY_KEY",
            concurrency=(1, 2))
    doc = c.public()
    assert doc["base_urls"] == ["https://gw.example.com/v1"]
    assert doc["api_key_env"] == "MY_KEY"  # the variable's name, never its value
    assert [s["label"] for s in doc["stages"]] == ["c=1", "c=2"]
    assert "hunter2-pass" not in json.dumps(doc)


@pytest.mark.parametrize("text, policy", [
    ("always", FsyncPolicy("always")),
    (" NEVER ", FsyncPolicy("never")),
    ("interval", FsyncPolicy("interval", 1.0)),
    ("5", FsyncPolicy("interval", 5.0)),
    ("0.5s", FsyncPolicy("interval", 0.5)),
])
def test_fsync_policy_parse(text, policy):
    assert FsyncPolicy.parse(text) == policy


def test_fsync_policy_refuses_other_words():
    with pytest.raises(ValueError, match="fsync must be always, never, interval or a number of seconds"):
        FsyncPolicy.parse("sometimes")


def test_render_paths_fills_date_job_and_shard(monkeypatch):
    freeze_now(monkeypatch, datetime(2024, 2, 29, 23, 59, 59, tzinfo=timezone.utc))
    c = cfg(job="nightly", shard="3/8")
    c = RunConfig(**{**c.__dict__, "output": "out/{job}-{date}-{shard}.jsonl", "summary_path": "s/{date}.json"})
    rendered = render_paths(c)
    assert rendered.output == "out/nightly-2024-02-29-3of8.jsonl"
    assert rendered.summary_path == "s/2024-02-29.json"
    plain = render_paths(RunConfig(inputs=("i",), output="o-{shard}-{job}.jsonl"))
    assert plain.output == "o-all-run.jsonl" and plain.summary_path is None  # defaults: no shard, no job name
    assert render_paths(cfg()).output == "out.jsonl"  # nothing to fill


@pytest.mark.parametrize("path", [
    "out/{day}.jsonl",
    "out/{0}.jsonl",
    "out/{date",
    "out/{date.year}.jsonl",
])
def test_render_paths_refuses_unknown_fields(path):
    with pytest.raises(UsageError, match=r"unknown template field .* \(use \{date\}, \{job\}, \{shard\}\)"):
        render_paths(RunConfig(inputs=("i",), output=path))
