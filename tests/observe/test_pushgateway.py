"""--push-gateway: every ending of a run pushes its metrics (POST, grouped by the job name alone).

Against Debian's real `prometheus-pushgateway` where it is installed (the
tests start it on a free port, in memory only; `.ci/run` installs it when it
runs as root), and always against an in-test HTTP server that records each
push (method, path, body).  The runs are the CLI as a subprocess against a
mock in its own process.
"""

from __future__ import annotations

import json
import math
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import HANG_GUARD_S, chat, prompts, read_jsonl, start_run, streamrun, wait_for_lines, write_jsonl

PUSHGATEWAY = shutil.which("prometheus-pushgateway")
needs_pushgateway = pytest.mark.skipif(
    PUSHGATEWAY is None, reason="Debian's prometheus-pushgateway is not installed "
                                "(apt-get install prometheus-pushgateway; .ci/run installs it when run as root)")


def samples(text: str, job: str | None = None) -> dict[tuple[str, tuple], float]:
    """(name, ((label, value), ...)) -> value, for one job's group (job and instance labels left out)."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = dict(s.labels)
            if job is not None and labels.pop("job", None) != job:
                continue
            labels.pop("instance", None)
            out[(s.name, tuple(sorted(labels.items())))] = s.value
    return out


def value(found: dict, name: str, **labels) -> float | None:
    return found.get((name, tuple(sorted(labels.items()))))


def pushed(rec) -> list[dict]:
    """The recorder's pushes, each as its samples."""
    return [samples(p.body.decode()) for p in rec.requests()]


@pytest.fixture(scope="module")
def pushgateway():
    """A real Pushgateway on a free port, metrics in memory only; its URL."""
    if PUSHGATEWAY is None:
        pytest.skip("prometheus-pushgateway is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([PUSHGATEWAY, f"--web.listen-address=127.0.0.1:{port}", "--persistence.file="],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    end = time.monotonic() + HANG_GUARD_S
    while True:
        try:
            urllib.request.urlopen(url + "/metrics", timeout=5).read()
            break
        except OSError:
            assert proc.poll() is None, "prometheus-pushgateway did not start"
            assert time.monotonic() < end, "hang guard"
            time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


def gateway_metrics(url: str, job: str) -> dict:
    with urllib.request.urlopen(url + "/metrics", timeout=HANG_GUARD_S) as resp:
        return samples(resp.read().decode(), job)


def failing_rows(n: int) -> list[dict]:
    """n lines, the first answered 400 (not retried): exit 1 without --max-failed."""
    return [chat(f"p{i}", mock={"key": f"fail-{i}", "faults": ["400"]} if i == 0 else None) for i in range(n)]


# ---- against the real Pushgateway


@needs_pushgateway
def test_a_20_prompt_run_shows_20_ok_and_exit_code_0_in_the_pushgateway(tmp_path, mock_process, pushgateway):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    inp, out = prompts(tmp_path / "in.jsonl", 20), tmp_path / "out.jsonl"
    res = streamrun("run", inp, "-o", out, "--base-url", url, "--push-gateway", pushgateway,
                    "--job-name", "twenty")
    assert res.returncode == 0, res.stderr
    got = gateway_metrics(pushgateway, "twenty")
    assert value(got, "streamrun_requests_total", status="ok") == 20
    assert value(got, "streamrun_requests_total", status="error") == 0
    assert value(got, "streamrun_exit_code") == 0
    assert value(got, "streamrun_records_written_total") == 20
    assert value(got, "streamrun_output_tokens_total") > 0
    for q in ("0.5", "0.9", "0.99"):
        assert value(got, "streamrun_ttft_seconds", quantile=q) >= 0
        assert value(got, "streamrun_e2e_seconds", quantile=q) > 0
    assert value(got, "streamrun_run_duration_seconds") > 0
    assert abs(value(got, "streamrun_last_success_timestamp_seconds") - time.time()) < 3600
    assert value(got, "push_failure_time_seconds") == 0  # the Pushgateway took it as consistent


@needs_pushgateway
def test_a_failing_run_pushes_its_exit_code_and_leaves_the_last_success(tmp_path, mock_process, pushgateway):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    inp, out = prompts(tmp_path / "in.jsonl", 5), tmp_path / "out.jsonl"
    ok = streamrun("run", inp, "-o", out, "--base-url", url, "--push-gateway", pushgateway, "--job-name", "nightly")
    assert ok.returncode == 0, ok.stderr
    before = gateway_metrics(pushgateway, "nightly")
    success = value(before, "streamrun_last_success_timestamp_seconds")
    assert success is not None

    bad = write_jsonl(tmp_path / "bad.jsonl", failing_rows(5))
    failed = streamrun("run", bad, "-o", tmp_path / "bad-out.jsonl", "--base-url", url, "--push-gateway",
                       pushgateway, "--job-name", "nightly")
    assert failed.returncode == 1, failed.stderr
    after = gateway_metrics(pushgateway, "nightly")
    assert value(after, "streamrun_exit_code") == 1
    assert value(after, "streamrun_requests_total", status="error") == 1
    assert value(after, "streamrun_requests_total", status="ok") == 4
    assert value(after, "streamrun_last_success_timestamp_seconds") == success  # unchanged
    assert value(after, "push_time_seconds") > value(before, "push_time_seconds")

    # a run that cannot start (the output exists, no --resume) pushes exit 2, nothing counted
    setup = streamrun("run", inp, "-o", out, "--base-url", url, "--push-gateway", pushgateway, "--job-name", "nightly")
    assert setup.returncode == 2
    after = gateway_metrics(pushgateway, "nightly")
    assert value(after, "streamrun_exit_code") == 2
    assert value(after, "streamrun_requests_total", status="ok") == 0
    assert math.isnan(value(after, "streamrun_ttft_seconds", quantile="0.5"))
    assert value(after, "streamrun_last_success_timestamp_seconds") == success


@needs_pushgateway
def test_the_job_file_key_pushes_the_same_under_the_files_name(tmp_path, mock_process, pushgateway):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    prompts(tmp_path / "in.jsonl", 20)
    job = tmp_path / "daily-report.toml"
    job.write_text(f'inputs = ["in.jsonl"]\noutput = "out.jsonl"\nbase_url = "{url}"\n'
                   f'push_gateway = "{pushgateway}"\n')
    res = streamrun("job", job)
    assert res.returncode == 0, res.stderr
    got = gateway_metrics(pushgateway, "daily-report")  # the job's name: the file's stem
    assert value(got, "streamrun_requests_total", status="ok") == 20
    assert value(got, "streamrun_exit_code") == 0
    assert value(got, "streamrun_last_success_timestamp_seconds") is not None

    bad = write_jsonl(tmp_path / "bad.jsonl", failing_rows(3))
    res = streamrun("job", job, "--set", f'inputs = ["{bad}"]', "--set", 'output = "bad-out.jsonl"')
    assert res.returncode == 1, res.stderr
    after = gateway_metrics(pushgateway, "daily-report")
    assert value(after, "streamrun_exit_code") == 1
    assert value(after, "streamrun_last_success_timestamp_seconds") == \
        value(got, "streamrun_last_success_timestamp_seconds")


# ---- against a recorder (always run)


def test_the_push_is_one_post_to_the_jobs_group_with_the_metrics(tmp_path, mock_process, recorder):
    rec = recorder()
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    inp, out = prompts(tmp_path / "in.jsonl", 20), tmp_path / "out.jsonl"
    res = streamrun("run", inp, "-o", out, "--base-url", url, "--push-gateway", rec.url)
    assert res.returncode == 0, res.stderr
    [post] = rec.requests()
    assert post.method == "POST"  # pushadd: a failed run keeps the last success
    assert post.path == "/metrics/job/streamrun"  # no job file, no --job-name; and no other grouping label
    assert post.headers["content-type"].startswith("text/plain")
    got = samples(post.body.decode())
    assert value(got, "streamrun_requests_total", status="ok") == 20
    assert value(got, "streamrun_exit_code") == 0
    assert value(got, "streamrun_last_success_timestamp_seconds") > 0
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert value(got, "streamrun_ttft_seconds", quantile="0.9") == summary["summary"]["metrics"]["ttft_s"]["p90"]
    assert value(got, "streamrun_output_tokens_total") == summary["summary"]["tokens"]["output"]
    assert summary["config"]["push_gateway"] == rec.url


def test_a_failed_run_pushes_no_last_success(tmp_path, mock_process, recorder):
    rec = recorder()
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    bad = write_jsonl(tmp_path / "bad.jsonl", failing_rows(4))
    res = streamrun("run", bad, "-o", tmp_path / "out.jsonl", "--base-url", url, "--push-gateway", rec.url,
                    "--job-name", "nightly/eu")
    assert res.returncode == 1, res.stderr
    [post] = rec.requests()
    assert post.method == "POST" and post.path.startswith("/metrics/job@base64/")  # a / in the name is encoded
    got = samples(post.body.decode())
    assert value(got, "streamrun_exit_code") == 1
    assert value(got, "streamrun_requests_total", status="error") == 1
    assert not any(name == "streamrun_last_success_timestamp_seconds" for name, _ in got)


def test_sigterm_pushes_143(tmp_path, mock_process, recorder):
    rec = recorder()
    url = mock_process("--ttft", "0.3", "--tokens-per-s", "200", "--output-tokens", "20")
    inp, out = prompts(tmp_path / "in.jsonl", 200), tmp_path / "out.jsonl"
    proc = start_run(inp, "-o", out, "--base-url", url, "-c", "8", "--push-gateway", rec.url)
    wait_for_lines(out, 8, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 143, stderr
    [post] = rec.requests()
    got = samples(post.body.decode())
    assert value(got, "streamrun_exit_code") == 143
    assert value(got, "streamrun_requests_total", status="ok") == len(read_jsonl(out))
    assert value(got, "streamrun_last_success_timestamp_seconds") is None


def test_setup_errors_push_their_exit_code(tmp_path, mock_process, recorder):
    rec = recorder()
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    inp, out = prompts(tmp_path / "in.jsonl", 3), tmp_path / "out.jsonl"
    out.write_text('{"custom_id": "p0", "status": "ok"}\n')  # an output with records: --resume or --overwrite needed
    res = streamrun("run", inp, "-o", out, "--base-url", url, "--push-gateway", rec.url)
    assert res.returncode == 2
    res = streamrun("run", inp, "-o", tmp_path / "{nope}.jsonl", "--base-url", url, "--push-gateway", rec.url)
    assert res.returncode == 2 and "nope" in res.stderr  # a bad template, found before the run
    missing = streamrun("run", inp, "-o", tmp_path / "x.jsonl", "--base-url", "https://api.example.invalid/v1",
                        "--push-gateway", rec.url, env={"OPENAI_API_KEY": ""})
    assert missing.returncode == 2  # no key for a remote URL
    codes = [value(samples(p.body.decode()), "streamrun_exit_code") for p in rec.requests()]
    assert codes == [2, 2, 2]
    for p in rec.requests():
        got = samples(p.body.decode())
        assert value(got, "streamrun_requests_total", status="ok") == 0
        assert value(got, "streamrun_last_success_timestamp_seconds") is None


def test_a_pushgateway_that_cannot_be_reached_is_a_warning(tmp_path, mock_process, recorder):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    inp, out = prompts(tmp_path / "in.jsonl", 5), tmp_path / "out.jsonl"
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    res = streamrun("run", inp, "-o", out, "--base-url", url, "--push-gateway", closed)
    assert res.returncode == 0, res.stderr
    assert len(read_jsonl(out)) == 5
    assert "cannot push the run's metrics to the Pushgateway" in res.stderr and "Traceback" not in res.stderr
    refusing = recorder(status=500)  # a Pushgateway that answers with an error: the same
    res = streamrun("run", inp, "-o", out, "--base-url", url, "--push-gateway", refusing.url, "--overwrite")
    assert res.returncode == 0, res.stderr
    assert "cannot push" in res.stderr and len(refusing.requests()) == 1


def test_a_password_in_the_pushgateway_url_is_sent_as_basic_auth_and_never_shown(tmp_path, mock_process, recorder):
    import base64

    rec = recorder()
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    inp, out = prompts(tmp_path / "in.jsonl", 3), tmp_path / "out.jsonl"
    secret = "pg-pass-7a1f9c"
    with_auth = rec.url.replace("http://", f"http://monitor:{secret}@")
    res = streamrun("run", inp, "-o", out, "--base-url", url, "--push-gateway", with_auth, "-v")
    assert res.returncode == 0, res.stderr
    [post] = rec.requests()
    assert post.headers["authorization"] == "Basic " + base64.b64encode(f"monitor:{secret}".encode()).decode()
    assert "metrics pushed" in res.stderr
    for text in (res.stdout, res.stderr, (tmp_path / "out.summary.json").read_text(), out.read_text()):
        assert secret not in text


def test_with_workers_the_parent_pushes_once(tmp_path, mock_process, recorder):
    rec = recorder()
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    inp, out = prompts(tmp_path / "in.jsonl", 20), tmp_path / "out.jsonl"
    res = streamrun("run", inp, "-o", out, "--base-url", url, "--workers", "2", "-c", "4", "--push-gateway", rec.url)
    assert res.returncode == 0, res.stderr
    [post] = rec.requests()
    assert value(samples(post.body.decode()), "streamrun_requests_total", status="ok") == 20


def test_a_resumed_run_pushes_the_whole_outputs_counts(tmp_path, mock_process, recorder):
    rec = recorder()
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    inp, out = prompts(tmp_path / "in.jsonl", 12), tmp_path / "out.jsonl"
    first = streamrun("run", inp, "-o", out, "--base-url", url, "--num-prompts", "5", "--push-gateway", rec.url)
    assert first.returncode == 0, first.stderr
    again = streamrun("run", inp, "-o", out, "--base-url", url, "--resume", "--push-gateway", rec.url)
    assert again.returncode == 0, again.stderr
    one, two = pushed(rec)
    assert value(one, "streamrun_requests_total", status="ok") == 5
    assert value(two, "streamrun_requests_total", status="ok") == 12  # the output's final records
    assert value(two, "streamrun_records_written_total") == 7  # this run's


@pytest.mark.parametrize("api", ["responses", "anthropic"])
def test_other_apis_and_the_cache_and_duration_push_alike(tmp_path, mock_process, recorder, api):
    rec = recorder()
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    inp, out = prompts(tmp_path / "in.jsonl", 6), tmp_path / "out.jsonl"
    env = {"ANTHROPIC_API_KEY": "sk-ant-test"} if api == "anthropic" else None
    common = ("--base-url", url, "--api", api, "--max-tokens", "16", "--cache", tmp_path / "c.db", "--duration", "1m",
              "--push-gateway", rec.url)
    assert streamrun("run", inp, "-o", out, *common, env=env).returncode == 0
    assert streamrun("run", inp, "-o", out, *common, "--overwrite", env=env).returncode == 0  # all from the cache
    for got in pushed(rec):
        assert value(got, "streamrun_requests_total", status="ok") == 6
        assert value(got, "streamrun_exit_code") == 0


def test_the_python_api_pushes_under_the_name_key(tmp_path, mock_process, recorder):
    import streamrun as api

    rec = recorder()
    url = mock_process("--ttft", "0", "--tokens-per-s", "0")
    summary = api.run(str(prompts(tmp_path / "in.jsonl", 4)), output=str(tmp_path / "out.jsonl"), base_url=url,
                      push_gateway=rec.url, name="notebook")
    assert summary["exit_code"] == 0
    [post] = rec.requests()
    assert post.path == "/metrics/job/notebook"
    assert value(samples(post.body.decode()), "streamrun_requests_total", status="ok") == 4


def test_a_bad_pushgateway_url_is_a_usage_error(tmp_path):
    res = streamrun("run", prompts(tmp_path / "in.jsonl", 1), "-o", tmp_path / "out.jsonl", "--push-gateway",
                    "ftp://gateway:21")
    assert res.returncode == 2 and "--push-gateway" in res.stderr and "http(s) URL" in res.stderr
    assert not Path(tmp_path / "out.jsonl").exists()
