"""runner.config.jobfile: TOML job files for unattended runs (keys, errors, relative paths, templates, [mock]).

The first tests run `streamrun job` as users do (one line on stderr, exit 2);
the rest call `load_job` directly.
"""

from __future__ import annotations

import datetime
import json
import time
from pathlib import Path

import pytest

from runner.config.jobfile import JobFileError, deep_merge, load_job
from runner.config.run_config import FsyncPolicy
from runner.mock import MockConfig
from runner.stream.config import Timeouts
from tests.helpers import ROOT, prompts, read_jsonl, streamrun

JOB = """
name = "nightly"
inputs = ["in.jsonl"]
output = "out/{job}-{date}.jsonl"
summary = "out/{job}-{date}.summary.json"
concurrency = 4
max_attempts = 1
{extra}
[params]
max_tokens = 8
"""


def job_file(tmp_path: Path, extra: str = "", n: int = 10, bad_at: int | None = None, text: str = JOB) -> Path:
    prompts(tmp_path / "in.jsonl", n, bad_at)
    path = tmp_path / "job.toml"
    path.write_text(text.replace("{extra}", extra))
    return path


@pytest.mark.parametrize("extra, message", [
    ("concurency = 4", "unknown key 'concurency' (did you mean 'concurrency'?)"),
    ("max_attempts = 0", "key 'max_attempts' must be a positive integer"),
    ("rate = \"fast\"", "key 'rate' must be a positive number"),
    ("[timeouts]\nfirst_bite = 3", "unknown key 'timeouts.first_bite'"),
    ("fsync = \"sometimes\"", "fsync must be"),
    ("resume = true\noverwrite = true", "exclude each other"),
])
def test_job_file_errors_are_one_line_naming_file_and_key(tmp_path, extra, message):
    if extra.startswith("max_attempts"):
        path = job_file(tmp_path, extra, n=1, text=JOB.replace("max_attempts = 1\n", ""))
    else:
        path = job_file(tmp_path, extra)
    res = streamrun("job", path)
    assert res.returncode == 2
    assert message in res.stderr and "job.toml" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("extra", ["params = 5", "params = true", "params = -1", "slo = 5", "slo = 2024-01-01",
                                   "headers = 5", "fsync = nan"])
def test_a_value_of_the_wrong_toml_type_is_one_line_exit_2(tmp_path, extra):
    path = job_file(tmp_path, extra, text=JOB.replace("[params]\nmax_tokens = 8\n", ""))
    res = streamrun("job", path)
    assert res.returncode == 2, res.stderr
    key = extra.split(" =")[0]
    assert f"key {key!r}" in res.stderr and "job.toml" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr


# A sample of each TOML type, and the types each kind of value may be given as (strings stand for
# themselves on the command line too; an unusable value of a right type is still an error, not a crash).
TOML_SAMPLES = {
    "string": "x", "integer": 5, "negative": -1, "float": 2.5, "inf": float("inf"), "nan": float("nan"),
    "boolean": True, "datetime": datetime.datetime(2024, 1, 1, 12, 0), "date": datetime.date(2024, 1, 1),
    "time": datetime.time(12, 0), "strings": ["a", "b"], "integers": [1, 2], "table": {"a": 1},
    "tables": [{"a": 1}], "nested": [[1]],
}
NUMBERS = {"string", "integer", "negative", "float", "inf", "nan"}
INTEGERS = {"string", "integer", "negative"}


def _right_types(option) -> set[str]:
    """The sample types `option` may be given as; every other one must be refused."""
    from runner.config import parsers as p

    kinds = {p.strings: {"string", "strings"}, p.urls: {"string", "strings"}, p.metrics_urls: {"string", "strings"},
             p.strings_list: {"string", "strings"}, p.string: {"string"}, p.env_name: {"string"}, p.http_url: {"string"},
             p.proxy_url: {"string"},
             p.boolean: {"string", "boolean"}, p.timeout: NUMBERS | {"boolean"}, p.duration: NUMBERS,
             p.positive_duration: NUMBERS, p.positive_number: NUMBERS, p.non_negative_number: NUMBERS,
             p.failure_budget: NUMBERS, p.integer: INTEGERS, p.positive_int: INTEGERS, p.non_negative_int: INTEGERS,
             p.workers_count: INTEGERS, p.byte_size: INTEGERS, p.fsync: NUMBERS,
             p.int_list: INTEGERS | {"integers"}, p.rate_list: NUMBERS | {"integers"},
             p.percentile_list: NUMBERS | {"integers"}, p.params: {"string", "strings", "table"},
             p.slos: {"string", "strings", "table"}, p.headers: {"string", "strings", "table"}}
    if hasattr(option.parse, "choices"):
        return {"string"}
    assert option.parse in kinds, f"{option.key}: a new kind of value: say which TOML types it takes"
    return kinds[option.parse]


def test_every_key_refuses_every_wrong_toml_type_in_one_line():
    """A job file may give any TOML value for any key: a wrong one is a JobFileError (exit 2) naming the key."""
    from runner.config.jobfile import config_from_mapping
    from runner.config.options import OPTIONS

    for option in (o for o in OPTIONS if o.key):
        right = _right_types(option)
        for name, value in TOML_SAMPLES.items():
            table, _, key = option.key.rpartition(".")
            doc = {"inputs": ["in.jsonl"], "output": "out.jsonl", **({table: {key: value}} if table else {key: value})}
            try:
                config_from_mapping(doc, "job.toml", "/tmp", environ={})
            except JobFileError as exc:
                assert "\n" not in str(exc) and str(exc).startswith("job.toml: "), (option.key, name, exc)
                if name not in right:
                    assert f"key {option.key!r}" in str(exc), (option.key, name, exc)
                continue
            except Exception as exc:  # noqa: BLE001  (what this test is for)
                pytest.fail(f"{option.key} = {value!r}: {type(exc).__name__}: {exc}")
            assert name in right, f"{option.key} = {value!r} ({name}) was accepted"


def test_job_runs_with_templates_summary_and_failure_budget(tmp_path, mock_process):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    # 1 bad line of 10: over a zero budget (exit 1), within 20 % or a count of 1 (exit 0)
    for extra, code in (("max_failed = 0", 1), ("max_failed = 0.2", 0), ("max_failed = 1", 0),
                        ("max_failed = 0.05", 1)):
        path = job_file(tmp_path, f'base_url = "{url}"\noverwrite = true\n{extra}', bad_at=3)
        res = streamrun("job", path)
        assert res.returncode == code, (extra, res.stderr)
    day = time.strftime("%Y-%m-%d", time.gmtime())
    out = tmp_path / "out" / f"nightly-{day}.jsonl"
    summary = json.loads((tmp_path / "out" / f"nightly-{day}.summary.json").read_text())
    assert len(read_jsonl(out)) == 10
    assert summary["job"] == "nightly" and summary["exit_code"] == 1
    assert summary["summary"]["counts"]["errors_by_type"] == {"invalid_input": 1}
    assert summary["config"]["api_key_env"] == "OPENAI_API_KEY"
    assert summary["summary"]["metrics"]["ttft_s"]["p50"] is not None


def test_shipped_job_files_validate():
    paths = sorted(ROOT.joinpath("jobs").glob("*.toml"))
    assert paths, "no job files shipped in jobs/"
    for path in paths:
        cfg, _ = load_job(str(path))
        assert cfg.inputs and cfg.output.path


# -- load_job ------------------------------------------------------------------


def test_keys_become_the_config_and_paths_are_relative_to_the_file(tmp_path):
    path = job_file(tmp_path, 'fsync = "never"\nrpm = 60\n[timeouts]\nidle = 7\n[pricing]\ninput = 2.5')
    cfg, mock = load_job(str(path), environ={})
    assert mock is None
    assert cfg.inputs == (str(tmp_path / "in.jsonl"),)
    assert cfg.output.path == str(tmp_path / "out" / "{job}-{date}.jsonl")  # templates are filled at run time
    assert cfg.output.summary_path == str(tmp_path / "out" / "{job}-{date}.summary.json")
    assert cfg.job == "nightly" and cfg.load.concurrency == (4,) and cfg.transport.retry.max_attempts == 1
    assert cfg.request.params == {"max_tokens": 8} and cfg.load.rpm == 60 and cfg.observe.price_input == 2.5
    assert cfg.output.fsync == FsyncPolicy("never")
    assert cfg.transport.timeouts == Timeouts(idle=7)  # one key of the table; the others keep their defaults


def test_name_defaults_to_the_file_name_and_absolute_paths_stay(tmp_path):
    path = tmp_path / "weekly.toml"
    path.write_text(f'inputs = ["{tmp_path}/a.jsonl", "-"]\noutput = "/abs/out.jsonl"\n')
    cfg, _ = load_job(str(path), environ={})
    assert cfg.job == "weekly"
    assert cfg.inputs == (f"{tmp_path}/a.jsonl", "-") and cfg.output.path == "/abs/out.jsonl"


def test_set_overrides_merge_into_tables(tmp_path):
    path = job_file(tmp_path, "[timeouts]\nidle = 7\nconnect = 3")
    cfg, _ = load_job(str(path), ("params.temperature = 0.5", "timeouts.idle = 9", "concurrency = 2"), environ={})
    assert cfg.request.params == {"max_tokens": 8, "temperature": 0.5}  # one key changed, not the whole table
    assert (cfg.transport.timeouts.idle, cfg.transport.timeouts.connect) == (9, 3)
    assert cfg.load.concurrency == (2,)
    with pytest.raises(JobFileError, match="--set 'oops': not a TOML key = value"):
        load_job(str(path), ("oops",), environ={})


def test_environment_fills_keys_the_file_leaves_out(tmp_path):
    path = job_file(tmp_path)
    env = {"OPENAI_BASE_URL": "http://10.1.2.3:8000/v1", "OPENAI_MODEL": "m-from-env"}
    cfg, _ = load_job(str(path), environ=env)
    assert cfg.transport.base_urls == ("http://10.1.2.3:8000/v1",) and cfg.request.model == "m-from-env"
    path.write_text(path.read_text().replace("concurrency = 4", 'concurrency = 4\nmodel = "m-from-file"'))
    assert load_job(str(path), environ=env)[0].request.model == "m-from-file"  # the file wins


def test_mock_table_gives_a_mock_config(tmp_path):
    path = job_file(tmp_path, "[mock]\nttft = 0.01\nrpm_limit = 600")
    _, mock = load_job(str(path), environ={})
    assert mock == MockConfig(ttft=0.01, rpm_limit=600)


@pytest.mark.parametrize("text, message", [
    ('inputs = ["a"]', "missing key 'output'"),
    ('output = "o"', "missing key 'inputs'"),
    ('inputs = ["a"]\noutput = "o"\ntimeouts = 3', "key 'timeouts' must be a table"),
    ('inputs = ["a"]\noutput = "o"\n[mock]\nttfb = 1', "unknown key 'mock.ttfb' (did you mean 'ttft'?)"),
    ('inputs = ["a"]\noutput = "o"\n[mock]\napi_key = "k"', "unknown key 'mock.api_key'"),
    ('inputs = ["a"]\noutput = "o"\n[mock]\nquota_fill = 2', "[mock] quota_fill must be in [0, 1]"),
    ('inputs = ["a"]\noutput = "o"\nmock = 1', "key 'mock' must be a table"),
    ('inputs = ["a"\n', "not valid TOML"),
])
def test_load_job_errors_name_the_file(tmp_path, text, message):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(JobFileError) as info:
        load_job(str(path), environ={})
    assert message in str(info.value) and str(path) in str(info.value)
    assert info.value.exit_code == 2


def test_deep_merge_changes_one_key_of_a_table():
    base = {"a": 1, "t": {"x": 1, "y": {"z": 1}}}
    assert deep_merge(base, {"t": {"y": {"w": 2}}, "b": 2}) == {"a": 1, "b": 2, "t": {"x": 1, "y": {"z": 1, "w": 2}}}
    assert deep_merge(base, {"t": 5}) == {"a": 1, "t": 5}  # a value replaces a table
    assert base == {"a": 1, "t": {"x": 1, "y": {"z": 1}}}  # the input is not changed
