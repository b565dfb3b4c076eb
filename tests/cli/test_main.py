"""The CLI as users run it: help, usage errors, exit codes, and secrets that never leak."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import read_jsonl, streamrun, write_jsonl

FAKE_KEY = "sk-test-Zq8r5SECRETKEYfor-streamrun-0042"


def test_help_lists_commands_and_exit_codes():
    out = streamrun("--help")
    assert out.returncode == 0
    for word in ("run", "job", "mock", "report", "merge", "convert", "synth", "130"):
        assert word in out.stdout
    run_help = streamrun("run", "--help")
    assert run_help.returncode == 0 and "--concurrency" in run_help.stdout and "Exit codes" in run_help.stdout


def test_usage_errors_exit_2(tmp_path):
    assert streamrun("run", "x.jsonl").returncode == 2  # no -o
    out = streamrun("run", tmp_path / "missing.jsonl", "-o", tmp_path / "o.jsonl")
    assert out.returncode == 2 and "missing.jsonl: no such input file" in out.stderr
    bad = streamrun("run", "-", "-o", tmp_path / "o.jsonl", "--param", "novalue")
    assert bad.returncode == 2 and "key=value" in bad.stderr
    assert streamrun("run", "-", "-o", tmp_path / "o.jsonl", "-c", "0").returncode == 2
    assert streamrun("run", "-", "-o", tmp_path / "o.jsonl", "-c", "1,2", "--rate", "1,2").returncode == 2


def test_existing_output_is_refused_without_resume_or_overwrite(tmp_path, mock_process):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    inp = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": "a", "messages": [{"role": "user", "content": "x"}]}])
    out = tmp_path / "o.jsonl"
    out.write_text('{"custom_id": "old", "status": "ok"}\n')
    res = streamrun("run", inp, "-o", out, "--base-url", url)
    assert res.returncode == 2 and "--resume" in res.stderr and "--overwrite" in res.stderr
    assert out.read_text() == '{"custom_id": "old", "status": "ok"}\n'  # untouched
    assert streamrun("run", inp, "-o", out, "--base-url", url, "--overwrite").returncode == 0
    assert [r["custom_id"] for r in read_jsonl(out)] == ["a"]


def test_stdin_input(tmp_path, mock_process):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    lines = '{"prompt": "a"}\n{"messages": [{"role": "user", "content": "b"}]}\n'
    res = streamrun("run", "-", "-o", tmp_path / "o.jsonl", "--base-url", url, input=lines)
    assert res.returncode == 0, res.stderr
    assert sorted(r["custom_id"] for r in read_jsonl(tmp_path / "o.jsonl")) == ["<stdin>:1", "<stdin>:2"]


def test_key_never_printed_logged_or_written(tmp_path, mock_process):
    good = mock_process("--ttft", "0", "--tokens-per-s", "0", "--api-key-env", "MOCK_KEY", env={"MOCK_KEY": FAKE_KEY})
    wrong = mock_process("--ttft", "0", "--tokens-per-s", "0", "--api-key-env", "MOCK_KEY",
                         env={"MOCK_KEY": "another-key-entirely"})
    inp = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": f"r{i}", "prompt": f"p{i}"} for i in range(4)]
                      + ["{broken"])
    env = {"OPENAI_API_KEY": FAKE_KEY}
    runs = [
        streamrun("-v", "run", inp, "-o", tmp_path / "ok.jsonl", "--base-url", good, env=env),
        streamrun("-v", "--log-format", "json", "run", inp, "-o", tmp_path / "denied.jsonl", "--base-url", wrong,
                  "--model", "mock-model", env=env),
        streamrun("run", inp, "-o", tmp_path / "batch.jsonl", "--base-url", good, "--output-format",
                  "openai-batch", env=env),
    ]
    assert [r.returncode for r in runs] == [1, 1, 1]  # the broken line fails each run
    denied = {r["custom_id"]: r for r in read_jsonl(tmp_path / "denied.jsonl")}
    assert denied["r0"]["error"]["status_code"] == 401 and denied["r0"]["attempts"] == 1
    assert sum(r["status"] == "ok" for r in read_jsonl(tmp_path / "ok.jsonl")) == 4
    for run in runs:
        assert FAKE_KEY not in run.stdout and FAKE_KEY not in run.stderr
    produced = [p for p in Path(tmp_path).rglob("*") if p.is_file()]
    assert len(produced) >= 6  # results and summaries
    for path in produced:
        assert FAKE_KEY.encode() not in path.read_bytes(), path


def _option_help(text: str, flag: str) -> str:
    """The help of one option in --help output: its lines up to the next option, joined."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(flag))
    block = [lines[start]]
    for line in lines[start + 1:]:
        if line.strip().startswith("-"):
            break
        block.append(line)
    return " ".join(" ".join(block).split())


def test_help_says_what_each_option_takes_and_its_default_as_it_is_typed():
    run_help = streamrun("run", "--help").stdout
    assert _option_help(run_help, "--burst ").endswith("[default: 1s]")  # not 1.0
    assert "[default: 30s]" in _option_help(run_help, "--drain-timeout")
    assert "with -o - the records go to stdout" in _option_help(run_help, "-o, --output")
    stream_help = streamrun("stream", "--help").stdout
    assert "repeatable" not in _option_help(stream_help, "--base-url")  # one request, one server
    report_help = streamrun("report", "--help").stdout
    assert _option_help(report_help, "--slo ") == _option_help(run_help, "--slo ")
    assert "--slo METRIC=DURATION" in report_help and "NAME=SECONDS" not in report_help


def test_report_slo_reads_what_run_slo_reads(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": f"p{i}"} for i in range(2)])
    res = streamrun("run", inp, "-o", tmp_path / "o.jsonl", "--mock", "--slo", "ttft=1m", "--slo", "e2e_s=2m")
    assert res.returncode == 0, res.stderr
    report = streamrun("report", tmp_path / "o.jsonl", "--slo", "ttft=1m", "--slo", "e2e_s=2m", "--json")
    assert report.returncode == 0, report.stderr  # minutes and the _s suffix, as run takes them
    import json

    assert json.loads(report.stdout)["stages"][0]["slos"] == {"ttft": 60.0, "e2e": 120.0}
    bad_run = streamrun("run", inp, "-o", tmp_path / "b.jsonl", "--mock", "--slo", "foo=1")
    bad_report = streamrun("report", tmp_path / "o.jsonl", "--slo", "foo=1")
    assert bad_run.returncode == bad_report.returncode == 2
    message = "unknown SLO 'foo' (use ttft, tpot, itl, e2e)"
    assert message in bad_run.stderr and message in bad_report.stderr


def test_one_list_of_slo_metrics():
    import runner.stats.accumulator as accumulator
    from runner import stats
    from runner.config import parsers

    assert not hasattr(stats, "SLO_KEYS") and accumulator.SLO_METRICS is parsers.SLO_METRICS
    assert stats.validate_slos({m: 1 for m in parsers.SLO_METRICS}) == {m: 1.0 for m in parsers.SLO_METRICS}


def test_the_install_hint_names_the_pip_and_the_source_that_are_running(tmp_path):
    from runner.extras import install_hint

    checkout = tmp_path / "streamrun"
    (checkout / "runner").mkdir(parents=True)
    (checkout / "pyproject.toml").write_text('[project]\nname = "streamrun"\n')
    venv = checkout / ".venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "pip").write_text("")
    here = dict(package_dir=checkout / "runner", prefix=str(venv), base_prefix="/usr",
                executable=str(venv / "bin" / "python"))
    assert install_hint("export", cwd=str(checkout), **here) == ".venv/bin/pip install -e '.[export]'"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    assert install_hint("export", cwd=str(elsewhere), **here) == \
        f"{venv}/bin/pip install -e '{checkout}[export]'"

    site = tmp_path / "venv" / "lib" / "python3.11" / "site-packages"  # a wheel: no pyproject beside runner/
    (site / "runner").mkdir(parents=True)
    (tmp_path / "venv" / "bin").mkdir()
    (tmp_path / "venv" / "bin" / "pip").write_text("")
    assert install_hint("report", package_dir=site / "runner", prefix=str(tmp_path / "venv"), base_prefix="/usr",
                        executable="x", cwd=str(elsewhere)) == f"{tmp_path}/venv/bin/pip install 'streamrun[report]'"
    (tmp_path / "venv" / "bin" / "pip").unlink()  # a venv without pip (uv): its python's pip module
    assert install_hint("report", package_dir=site / "runner", prefix=str(tmp_path / "venv"), base_prefix="/usr",
                        executable="/v/bin/python", cwd=str(elsewhere)) == \
        "/v/bin/python -m pip install 'streamrun[report]'"
    assert install_hint("tokens", package_dir=site / "runner", prefix="/usr", base_prefix="/usr",
                        executable="/usr/bin/python3", cwd=str(elsewhere)) == \
        "/usr/bin/python3 -m pip install 'streamrun[tokens]'"


def test_every_exit_code_is_a_name_from_runner_errors():
    """Exit codes are defined once (runner/errors.py, which the --help table is made from): no command,
    run or worker returns a number of its own."""
    import re

    import runner.errors as errors

    root = Path(__file__).parent.parent / "runner"
    literal = re.compile(r"(?:sys\.exit|\.exit|os\._exit)\(\s*\d+\s*\)|\bexit_code\s*=\s*\d+")
    returned = re.compile(r"^\s*return\s+\d+\s*$", re.M)  # a click command's code (runner/cli only)
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root.parent).as_posix()
        if rel in ("runner/errors.py",) or rel.startswith("runner/mock/"):
            continue
        text = path.read_text()
        found += [f"{rel}: {m.group(0).strip()}" for m in literal.finditer(text)]
        if rel.startswith("runner/cli/"):
            found += [f"{rel}: {m.group(0).strip()}" for m in returned.finditer(text)]
    assert found == []
    names = {value for name, value in vars(errors).items() if name.startswith("EXIT_") and isinstance(value, int)}
    assert {int(code) for code, _ in errors.EXIT_CODES} <= names
    assert f"{errors.EXIT_SIGTERM} by SIGTERM" in streamrun("--help").stdout


async def test_a_password_in_the_base_url_never_reaches_a_log_line_a_record_or_the_summary(tmp_path, aiohttp_server):
    """`user:pass@` in --base-url is a secret in every form (runner.preflight.secrets_of): as typed, and as the
    Basic token aiohttp sends for it, which a gateway that echoes the request's headers in its errors hands
    back. Not in text or JSON log lines, records, the summary, nor from worker processes."""
    import asyncio
    import base64

    from aiohttp import web

    user, password = "leakuser", "hunter2-Pa55word"
    token = base64.b64encode(f"{user}:{password}".encode()).decode()

    async def echo(request: web.Request) -> web.Response:  # a debugging gateway: every header in the error
        sent = "; ".join(f"{name}: {value}" for name, value in request.headers.items())
        return web.json_response({"error": {"message": f"unauthorized (you sent {sent})"}}, status=401)

    app = web.Application()
    app.router.add_post("/v1/{api:.*}", echo)
    server = await aiohttp_server(app)
    url = f"http://{user}:{password}@127.0.0.1:{server.port}/v1"
    env = {"OPENAI_API_KEY": ""}
    few = write_jsonl(tmp_path / "few.jsonl", [{"custom_id": f"r{i}", "prompt": "x"} for i in range(3)])
    many = write_jsonl(tmp_path / "many.jsonl", [{"custom_id": f"r{i}", "prompt": "x"} for i in range(25)])
    runs = [  # records with the echo (from two worker processes); the rejection guard's stop, logged as JSON
        await asyncio.to_thread(streamrun, "-v", "run", few, "-o", tmp_path / "few.out.jsonl", "--base-url", url,
                                "--no-auth", "--model", "m", "--workers", "2", "-c", "2", "--max-attempts", "1",
                                env=env),
        await asyncio.to_thread(streamrun, "-v", "--log-format", "json", "run", many, "-o",
                                tmp_path / "many.out.jsonl", "--base-url", url, "--no-auth", "--model", "m", "-c", "1",
                                "--max-attempts", "1", env=env),
        # a remote URL without the key it needs: refused, naming the URL
        await asyncio.to_thread(streamrun, "run", few, "-o", tmp_path / "remote.jsonl", "--base-url",
                                f"https://{user}:{password}@gw.example.invalid/v1", env=env),
    ]
    assert [r.returncode for r in runs] == [1, 2, 2], [r.stderr for r in runs]
    few_records = read_jsonl(tmp_path / "few.out.jsonl")
    assert len(few_records) == 3 and all("unauthorized (you sent" in r["error"]["message"] for r in few_records)
    assert "stopped: the first 20 answers" in runs[1].stderr and "https://gw.example.invalid/v1" in runs[2].stderr
    shown = [r.stdout + r.stderr for r in runs] + [p.read_text() for p in tmp_path.rglob("*") if p.is_file()]
    for text in shown:
        assert password not in text and token not in text and f"{user}:" not in text
