"""The option table (runner/config/options.py): one parser per kind, the CLI and job files agree, docs generated."""

from __future__ import annotations

import importlib.util
import math
import re

import pytest

from runner.cli.main import main
from runner.config.jobfile import JobFileError, load_job
from runner.config.options import (
    OPTIONS,
    OptionError,
    config_from_options,
    default_of,
    duration,
    markdown_table,
    rate_list,
    slos,
    timeout,
)
from tests.helpers import ROOT, streamrun, write_jsonl

DOCS_HOOK = ROOT / "docs" / "hooks" / "cli_reference.py"


@pytest.mark.parametrize("text, seconds", [("500ms", 0.5), ("5s", 5.0), ("2m", 120.0), ("1h", 3600.0),
                                           ("1.5", 1.5), (3, 3.0), (0.25, 0.25), (" 10 s ", 10.0), ("0", 0.0)])
def test_one_duration_parser(text, seconds):
    assert duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["fast", "-1", "5 days", True, "nan", "1e999"])
def test_bad_durations_are_refused(bad):
    with pytest.raises(OptionError):
        duration(bad)


@pytest.mark.parametrize("value", [0, "0", "none", "off", "0s", False])
def test_zero_turns_a_timeout_off_everywhere(value):
    assert timeout(value) is None


def test_slos_take_durations_and_refuse_zero():
    assert slos(("ttft=500ms", "tpot=0.05", "e2e_s=2")) == {"ttft": 0.5, "tpot": 0.05, "e2e": 2.0}
    assert slos({"ttft": 0.5}) == {"ttft": 0.5}
    for bad in (("ttft=0",), ("speed=1",), ("ttft",)):
        with pytest.raises(OptionError):
            slos(bad)


def test_rates():
    assert rate_list("1,2.5,inf") == (1.0, 2.5, math.inf)
    assert rate_list([4, "inf"]) == (4.0, math.inf)
    with pytest.raises(OptionError, match="positive number"):
        rate_list("fast")


def cli_config(*args: str, inputs=("in.jsonl",)):
    ctx = main.make_context("streamrun", ["run", *inputs, *args])
    sub = main.get_command(ctx, "run")
    sub_ctx = sub.make_context("run", [*inputs, *args], parent=ctx)
    opts = dict(sub_ctx.params)
    opts.pop("mock"), opts.pop("progress"), opts.pop("inputs")
    return config_from_options(tuple(inputs), opts, environ={})


def job_config(tmp_path, body: str):
    path = tmp_path / "job.toml"
    path.write_text('inputs = ["in.jsonl"]\noutput = "out.jsonl"\n' + body)
    return load_job(str(path), environ={})[0]


@pytest.mark.parametrize("cli, toml", [
    (["--idle-timeout", "0"], "[timeouts]\nidle = 0"),
    (["--idle-timeout", "90s"], "[timeouts]\nidle = \"90s\""),
    (["--drain-timeout", "1m"], "drain_timeout = 60"),
    (["--slo", "ttft=500ms", "--slo", "tpot=0.05"], "[slo]\nttft = \"500ms\"\ntpot = 0.05"),
    (["-c", "1,4,16"], "concurrency = [1, 4, 16]"),
    (["--rate", "2,inf"], "rate = [2, \"inf\"]"),
    (["--param", "max_tokens=64", "--param", "stop=[\"\\n\"]"], "[params]\nmax_tokens = 64\nstop = [\"\\n\"]"),
    (["--header", "X-Org: ${ORG}"], "headers = { X-Org = \"${ORG}\" }"),
    (["--no-auth", "--no-usage", "--no-adaptive"], "auth = false\ninclude_usage = false\nadaptive = false"),
    (["--max-attempts", "2", "--price-input", "0.15"], "max_attempts = 2\n[pricing]\ninput = 0.15"),
])
def test_the_cli_and_a_job_file_mean_the_same(tmp_path, cli, toml):
    a = cli_config("-o", str(tmp_path / "out.jsonl"), *cli, inputs=(str(tmp_path / "in.jsonl"),))
    b = job_config(tmp_path, toml)
    for group in ("transport", "request", "load", "output", "checks", "observe", "batch"):
        assert getattr(a, group) == getattr(b, group), group
    assert a.inputs == b.inputs


def test_defaults_live_on_the_config_once():
    cfg = cli_config("-o", "out.jsonl")
    assert cfg.load.drain_timeout_s == 30.0 and cfg.transport.retry.max_attempts == 5
    assert cfg.transport.timeouts.idle == 120.0
    assert default_of(next(o for o in OPTIONS if o.field == "transport.timeouts.idle")) == 120.0


def test_each_option_names_its_field_by_its_path_in_the_config_groups():
    """`field` is a dotted path into RunConfig's groups, at any depth, and build_config fills each level."""
    from runner.config.options import build_config, field_value
    from runner.config.run_config import RunConfig

    groups = {"transport", "request", "load", "output", "checks", "observe", "batch"}
    for option in OPTIONS:
        head, dot, _ = option.field.partition(".")
        assert (head in groups) == bool(dot), option.field  # grouped, or one of the run's own few fields
        assert field_value(RunConfig(), option.field) == default_of(option), option.field
    cfg = build_config({"inputs": ("in.jsonl",), "output.path": "o.jsonl", "load.concurrency": (1, 4),
                        "transport.timeouts.idle": 5.0, "transport.retry.max_attempts": 2})
    assert (cfg.output.path, cfg.transport.timeouts.idle, cfg.transport.retry.max_attempts) == ("o.jsonl", 5.0, 2)
    assert cfg.transport.timeouts.connect == 10.0 and cfg.transport.retry.backoff_initial == 1.0  # the rest: defaults
    assert [s.concurrency for s in cfg.load.stages] == [1, 4]  # derived from the values given


def test_every_option_has_help_and_a_job_key():
    for option in OPTIONS:
        assert option.help.strip(), option
        assert option.key, f"{option.field} cannot be set from a job file"


def test_job_file_set_merges_tables_deeply(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text('inputs = ["in.jsonl"]\noutput = "o.jsonl"\n[params]\nmax_tokens = 64\ntemperature = 0.0\n')
    cfg, _ = load_job(str(path), ("params.temperature = 1",), environ={})
    assert cfg.request.params == {"max_tokens": 64, "temperature": 1}


@pytest.mark.parametrize("body, message", [
    ("[timeouts]\nidel = 3", "unknown key 'timeouts.idel' (did you mean 'timeouts.idle'?)"),
    ("[slo]\nttft = 0", "key 'slo' must be a duration > 0"),
    ("duration = \"forever\"", "key 'duration' 'forever' is not a duration"),
    ("api_key_env = \"sk-proj-123\"", "not a key"),
])
def test_job_file_values_are_checked_with_the_cli_parsers(tmp_path, body, message):
    with pytest.raises(JobFileError, match=re.escape(message)):
        job_config(tmp_path, body)


def test_a_bad_slo_is_refused_before_anything_is_sent(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "x"}])
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--slo", "ttft=0", "--mock")
    assert res.returncode == 2 and "--slo: must be a duration > 0" in res.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_global_options_after_the_subcommand_and_job_resume(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "x"}])
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock", "-q", "--log-format", "json")
    assert res.returncode == 0, res.stderr
    job = tmp_path / "job.toml"
    job.write_text(f'inputs = ["{inp}"]\noutput = "{tmp_path / "out.jsonl"}"\n[mock]\nttft = 0\n')
    res = streamrun("job", job, "--resume", "-q")
    assert res.returncode == 0, res.stderr


def test_the_cli_reference_lists_every_job_key_as_the_table_does():
    """The docs' CLI reference is generated at build time (docs/hooks/cli_reference.py): it holds the table."""
    spec = importlib.util.spec_from_file_location("cli_reference", DOCS_HOOK)
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    assert markdown_table().strip() in hook.markdown()


def test_base_dir_moves_where_relative_paths_are_taken_from(tmp_path, monkeypatch):
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    (jobs / "job.toml").write_text('inputs = ["in/*.jsonl"]\noutput = "out/o.jsonl"\nbase_dir = "../data"\n')
    cfg, _ = load_job(str(jobs / "job.toml"), environ={})
    assert cfg.inputs == (str(tmp_path / "data" / "in" / "*.jsonl"),)
    assert cfg.output.path == str(tmp_path / "data" / "out" / "o.jsonl")
    (jobs / "job.toml").write_text('inputs = ["in/*.jsonl"]\noutput = "out/o.jsonl"\n')
    cfg, _ = load_job(str(jobs / "job.toml"), environ={"STREAMRUN_BASE_DIR": "/data"})
    assert cfg.inputs == ("/data/in/*.jsonl",) and cfg.output.path == "/data/out/o.jsonl"
