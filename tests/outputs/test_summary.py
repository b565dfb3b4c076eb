"""docs/SUMMARY.md and the summary the code writes name the same keys, both ways."""

from __future__ import annotations

import re

import orjson

from tests.helpers import ROOT, streamrun, write_jsonl

DOC = ROOT / "docs" / "SUMMARY.md"
NESTED = ("event_loop_lag", "adaptive_concurrency", "quota", "pricing", "endpoints", "cache", "server_metrics",
          "workers", "sweep", "timing", "batch")


def documented() -> dict[str, set[str]]:
    """key -> the sub-keys its row names (backticked words in the meaning column)."""
    table = DOC.read_text().split("## Top level")[1].split("\n## ")[0]
    out: dict[str, set[str]] = {}
    for row in table.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        if len(cells) != 3 or not cells[0].startswith("`"):
            continue
        for key in re.findall(r"`([a-z_]+)`", cells[0]):
            out[key] = set(re.findall(r"`([a-z_0-9]+)`", cells[2]))
    return out


def test_the_documented_keys_are_the_written_keys(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{i}", "max_tokens": 4} for i in range(3)])
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock", "--rpm", "6000", "--price-input", "1",
                    "--price-output", "2", "--cache", tmp_path / "cache.db", "--server-metrics", "auto")
    assert res.returncode == 0, res.stderr
    summary = orjson.loads((tmp_path / "out.summary.json").read_bytes())
    # The sections only some runs have: worker processes and a rate sweep.
    res = streamrun("run", inp, "-o", tmp_path / "sweep.jsonl", "--mock", "--workers", "2", "-c", "2",
                    "--rate", "sweep", "--sweep-points", "1", "--num-prompts", "2")
    assert res.returncode == 0, res.stderr
    other = orjson.loads((tmp_path / "sweep.summary.json").read_bytes())
    summary.update({k: other[k] for k in ("workers", "sweep")})
    res = streamrun("batch", inp, "-o", tmp_path / "batch.jsonl", "--mock", "--poll-interval", "10ms")
    assert res.returncode == 0, res.stderr
    summary["batch"] = orjson.loads((tmp_path / "batch.summary.json").read_bytes())["batch"]
    doc = documented()
    assert set(doc) == set(summary), f"missing from the doc: {set(summary) - set(doc)}; " \
                                     f"not written: {set(doc) - set(summary)}"
    for key in NESTED:
        value = summary[key]
        written = set(value[0]) if isinstance(value, list) else set(value)
        assert written <= doc[key], f"{key}: undocumented {written - doc[key]}"
    # config: every option under its job key (docs/cli.md's table, checked against the option table by
    # tests/test_options.py), with the tables and the stages the row names, and nothing else
    from runner.config.options import OPTIONS

    config = summary["config"]
    assert set(config) == {option.key.split(".")[0] for option in OPTIONS} | {"stages"}
    assert {"timeouts", "pricing", "stages"} | set(config["stages"][0]) <= doc["config"]
    assert set(config["timeouts"]) == {o.key.split(".")[1] for o in OPTIONS if o.key.startswith("timeouts.")}
    assert summary["schema"] == "streamrun.summary/1"
