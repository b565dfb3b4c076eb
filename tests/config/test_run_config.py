"""runner.config.run_config: RunConfig (stages, exclusive flags, the public copy), stages, fsync policies, path templates."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime

import pytest

from runner.config.run_config import (
    FsyncPolicy,
    LoadConfig,
    OutputConfig,
    RunConfig,
    Stage,
    TransportConfig,
    make_stages,
    render_paths,
)
from runner.errors import UsageError
from tests.helpers import freeze_now


def cfg(**kw) -> RunConfig:
    return RunConfig(**{"inputs": ("in.jsonl",), "output": OutputConfig("out.jsonl"), **kw})


def test_make_stages():
    assert make_stages([8], [None]) == (Stage(0, 8, None, None),)
    sweep = make_stages([1, 4], [None])
    assert [s.label for s in sweep] == ["c=1", "c=4"] and sweep[1].to_record()["concurrency"] == 4
    rates = make_stages([16], [1.0, math.inf])
    assert [s.label for s in rates] == ["rate=1", "rate=inf"] and rates[1].to_record()["rate"] is None
    with pytest.raises(UsageError, match="not both"):
        make_stages([1, 2], [1.0, 2.0])


def test_stages_derive_from_concurrency_and_rate():
    assert cfg().load.stages == (Stage(0, 16),)
    assert LoadConfig(concurrency=(4,), rate=(2.5,)).stages == (Stage(0, 4, 2.5),)
    sweep = LoadConfig(concurrency=(1, 8, 2))
    assert [(s.index, s.concurrency, s.label) for s in sweep.stages] == [(0, 1, "c=1"), (1, 8, "c=8"), (2, 2, "c=2")]
    assert sweep.max_concurrency == 8
    rates = LoadConfig(concurrency=(4,), rate=(0.5, math.inf))
    assert [(s.rate, s.label) for s in rates.stages] == [(0.5, "rate=0.5"), (math.inf, "rate=inf")]
    given = (Stage(0, 3),)
    assert LoadConfig(concurrency=(99,), stages=given).stages == given  # given stages win
    with pytest.raises(UsageError, match="not both"):
        LoadConfig(concurrency=(1, 2), rate=(1.0, 2.0))


def test_a_stage_outside_a_sweep_is_not_recorded():
    assert Stage(0, 4, 2.0).to_record() is None
    assert Stage(1, 4, 2.0, "rate=2").to_record() == {"index": 1, "label": "rate=2", "concurrency": 4, "rate": 2.0}


def test_resume_and_overwrite_exclude_each_other():
    with pytest.raises(UsageError, match="--resume and --overwrite exclude each other"):
        OutputConfig("out.jsonl", resume=True, overwrite=True)
    assert OutputConfig("out.jsonl", resume=True).resume and OutputConfig("out.jsonl", overwrite=True).overwrite


def test_a_sweep_is_measured_afresh_not_resumed():
    """The one check across groups: the load's --rate sweep against the output's --resume."""
    with pytest.raises(UsageError, match="not --resume"):
        cfg(load=LoadConfig(rate=("sweep",)), output=OutputConfig("out.jsonl", resume=True))
    assert cfg(load=LoadConfig(rate=("sweep",)), output=OutputConfig("out.jsonl", overwrite=True)).load.sweep


def test_sweep_among_rates_is_a_usage_error():
    """"sweep" comes alone (the parser's ("sweep",)); a caller's list with it in is refused, not a TypeError."""
    for rates in (("sweep", 2.0), (1.0, "sweep")):
        with pytest.raises(UsageError, match="--rate sweep"):
            LoadConfig(concurrency=(4,), rate=rates)


def test_retry_failed_needs_resume():
    with pytest.raises(UsageError, match="--retry-failed goes with --resume"):
        OutputConfig("out.jsonl", retry_failed=True)
    assert OutputConfig("out.jsonl", resume=True, retry_failed=True).retry_failed
    assert UsageError("x").exit_code == 2


def test_keep_failed_needs_resume_and_excludes_retry_failed():
    with pytest.raises(UsageError, match="--keep-failed goes with --resume"):
        OutputConfig("out.jsonl", keep_failed=True)
    with pytest.raises(UsageError, match="--keep-failed and --retry-failed exclude each other"):
        OutputConfig("out.jsonl", resume=True, keep_failed=True, retry_failed=True)
    assert OutputConfig("out.jsonl", resume=True, keep_failed=True).keep_failed


def test_the_summarys_copy_is_keyed_as_job_files_are_and_has_no_secret():
    from runner.config.options import BY_KEY, summary_config

    c = cfg(transport=TransportConfig(base_urls=("https://user:hunter2-pass@gw.example.com/v1",),
                                      api_key_env="MY_KEY"), load=LoadConfig(concurrency=(1, 2)))
    doc = summary_config(c)
    assert doc["base_url"] == ["https://gw.example.com/v1"]
    assert doc["api_key_env"] == "MY_KEY"  # the variable's name, never its value
    assert [s["label"] for s in doc["stages"]] == ["c=1", "c=2"]
    assert doc["timeouts"]["idle"] == 120.0 and doc["concurrency"] == [1, 2] and doc["output"] == "out.jsonl"
    assert set(doc) == {key.split(".")[0] for key in BY_KEY} | {"stages"}
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
    freeze_now(monkeypatch, datetime(2024, 2, 29, 23, 59, 59, tzinfo=UTC))
    c = cfg(job="nightly", shard="3/8", output=OutputConfig("out/{job}-{date}-{shard}.jsonl",
                                                            summary_path="s/{date}.json"))
    rendered = render_paths(c)
    assert rendered.output.path == "out/nightly-2024-02-29-3of8.jsonl"
    assert rendered.output.summary_path == "s/2024-02-29.json"
    plain = render_paths(RunConfig(inputs=("i",), output=OutputConfig("o-{shard}-{job}.jsonl")))
    assert plain.output.path == "o-all-run.jsonl" and plain.output.summary_path is None  # no shard, no job name
    assert render_paths(cfg()).output.path == "out.jsonl"  # nothing to fill


@pytest.mark.parametrize("path", [
    "out/{day}.jsonl",
    "out/{0}.jsonl",
    "out/{date",
    "out/{date.year}.jsonl",
])
def test_render_paths_refuses_unknown_fields(path):
    with pytest.raises(UsageError, match=r"unknown template field .* \(use \{date\}, \{job\}, \{shard\}\)"):
        render_paths(RunConfig(inputs=("i",), output=OutputConfig(path)))
