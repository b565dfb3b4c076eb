"""TLS: a private CA (--ca-cert), --insecure, mutual TLS (--client-cert/--client-key), and the failures
that stop a run before anything is written (runner/stream/tls.py, runner/engine/guards.py).

The certificates are made per session by a throwaway CA (tests/helpers.py `make_pki`); the servers are
the strict mock over TLS (`serve(..., ssl_context=)`) and, where the server must refuse a client the way
Go, nginx or envoy do (with an alert), a blocking OpenSSL front before it (`TlsFront`).
"""

from __future__ import annotations

import json
import shutil
import ssl
import time

import pytest

from tests.helpers import ROOT, mock_stats, read_jsonl, streamrun, write_jsonl

STOP_S = 2.0  # the bound on an untrusted certificate's stop, counted by the run itself
WALL_S = 10.0  # the bound on the whole command (start-up included) for every TLS stop


def rows(n: int) -> list[dict]:
    return [{"custom_id": f"p{i}", "messages": [{"role": "user", "content": f"question {i}"}]} for i in range(n)]


def run(tmp_path, url: str, *args, n: int = 6, env=None, out: str = "out.jsonl"):
    """`streamrun run` of n prompts against `url`; (result, seconds it took, records)."""
    inp = tmp_path / "in.jsonl"
    if not inp.exists():
        write_jsonl(inp, rows(n))
    start = time.monotonic()
    res = streamrun("run", inp, "-o", tmp_path / out, "--base-url", url, "--no-progress", *args, env=env,
                    timeout=120)
    took = time.monotonic() - start
    path = tmp_path / out
    return res, took, read_jsonl(path) if path.exists() else []


def stop_line(stderr: str) -> str:
    (line,) = [x for x in stderr.splitlines() if "cannot connect to" in x]
    return line


def summary(tmp_path, out: str = "out.jsonl") -> dict:
    return json.loads((tmp_path / out.replace(".jsonl", ".summary.json")).read_text())


def assert_stopped(res, took: float, records: list, *words: str) -> str:
    """Exit 2 within WALL_S, nothing written, no traceback, one line holding `words`; the line."""
    assert res.returncode == 2, res.stderr
    assert took < WALL_S, f"took {took:.1f}s"
    assert records == [], "a record was written"
    assert "Traceback" not in res.stderr
    line = stop_line(res.stderr)
    for word in words:
        assert word in line, line
    return line


# ---- a private CA


@pytest.mark.parametrize("extra", [[], ["--workers", "2", "-c", "4"], ["--api", "anthropic"], ["--api", "responses"],
                                   ["--duration", "30s"]])
def test_a_private_ca_given_with_ca_cert_is_trusted(tmp_path, tls_mock, pki, extra):
    url = tls_mock()
    res, _, records = run(tmp_path, url, "--model", "mock-model", "--ca-cert", pki.cert("ca"), "--max-tokens", "16",
                          *extra, env={"ANTHROPIC_API_KEY": "sk-ant-test"})
    assert res.returncode == 0, res.stderr
    assert len(records) == 6 and all(r["status"] == "ok" for r in records)
    assert "--insecure" not in res.stderr


def test_server_metrics_are_scraped_with_the_same_trust(tmp_path, tls_mock, pki):
    url = tls_mock(tokens_per_s=50.0)  # replies of about half a second: several scrapes
    res, _, records = run(tmp_path, url, "--model", "mock-model", "--ca-cert", pki.cert("ca"), "--max-tokens", "24",
                          "-c", "2", "--server-metrics", "auto", "--server-metrics-interval", "200ms")
    assert res.returncode == 0 and len(records) == 6, res.stderr
    samples = read_jsonl(tmp_path / "out.server_metrics.jsonl")
    assert any("metrics" in s for s in samples), samples  # scraped over TLS, trusting --ca-cert
    assert not [s for s in samples if "certificate" in s.get("error", "").lower()]


def test_ssl_cert_file_is_still_honoured(tmp_path, tls_mock, pki):
    url = tls_mock()
    res, _, records = run(tmp_path, url, "--model", "mock-model", env={"SSL_CERT_FILE": pki.cert("ca")})
    assert res.returncode == 0, res.stderr
    assert len(records) == 6 and all(r["status"] == "ok" for r in records)


def test_ca_cert_with_resume_and_cache(tmp_path, tls_mock, pki):
    """A TLS run resumed, and answered from its cache: the same trust each time."""
    url = tls_mock()
    tls = ["--model", "mock-model", "--ca-cert", pki.cert("ca"), "--cache", str(tmp_path / "cache.sqlite")]
    res, _, first = run(tmp_path, url, *tls, "--num-prompts", "3")
    assert res.returncode == 0 and len(first) == 3, res.stderr
    res, _, both = run(tmp_path, url, *tls, "--resume")
    assert res.returncode == 0, res.stderr
    assert sorted(r["custom_id"] for r in both) == [f"p{i}" for i in range(6)]
    res, _, cached = run(tmp_path, url, *tls, out="again.jsonl")
    assert res.returncode == 0 and all(r["cached"] for r in cached), res.stderr


@pytest.mark.parametrize("extra", [["--model", "mock-model"], [], ["--model", "mock-model", "--workers", "2"]],
                         ids=["model", "no-model", "workers"])
def test_an_untrusted_certificate_stops_the_run_at_once_naming_ca_cert(tmp_path, tls_mock, extra):
    url = tls_mock()
    res, took, records = run(tmp_path, url, *extra, n=20)
    line = assert_stopped(res, took, records, url, "not trusted", "--ca-cert")
    assert line.count("\n") == 0
    if (tmp_path / "out.summary.json").exists():
        assert summary(tmp_path)["records_written"] == 0
        if "--workers" not in extra:  # the run's own time (interpreter start-up left out; worker start-up in)
            assert summary(tmp_path)["duration_s"] < STOP_S


@pytest.mark.parametrize("cert, words", [("expired", ("expired",)),
                                         ("wrong-name", ("another address", "--base-url"))])
def test_an_expired_or_misnamed_certificate_stops_the_run_naming_why(tmp_path, tls_mock, pki, cert, words):
    url = tls_mock(cert=cert)
    res, took, records = run(tmp_path, url, "--model", "mock-model", "--ca-cert", pki.cert("ca"))
    assert_stopped(res, took, records, url, *words)


def test_insecure_skips_verification_and_says_so(tmp_path, tls_mock):
    url = tls_mock()
    res, _, records = run(tmp_path, url, "--model", "mock-model", "--insecure")
    assert res.returncode == 0, res.stderr
    assert len(records) == 6 and all(r["status"] == "ok" for r in records)
    warning = [line for line in res.stderr.splitlines() if "--insecure" in line]
    assert len(warning) == 1 and "not verified" in warning[0], res.stderr


# ---- mutual TLS


@pytest.fixture
def mtls_front(tls_front, mock_process, pki):
    """A server that requires a client certificate signed by the test CA, refusing others with an alert."""
    return tls_front(pki.server_context("server", client_ca=True), mock_process("--ttft", "0",
                                                                                 "--tokens-per-s", "0"))


@pytest.mark.parametrize("extra", [[], ["--workers", "2", "-c", "4"]])
def test_mutual_tls_with_the_client_certificate_is_ok(tmp_path, mtls_front, pki, extra):
    url, front = mtls_front
    res, _, records = run(tmp_path, url, "--model", "mock-model", "--ca-cert", pki.cert("ca"),
                          "--client-cert", pki.cert("client"), "--client-key", pki.key("client"), *extra)
    assert res.returncode == 0, res.stderr
    assert len(records) == 6 and all(r["status"] == "ok" for r in records)
    assert front.refused == []


@pytest.mark.parametrize("extra", [["--model", "mock-model"], [], ["--model", "mock-model", "--workers", "2"]],
                         ids=["model", "no-model", "workers"])
def test_mutual_tls_without_the_client_certificate_stops_naming_client_cert(tmp_path, mtls_front, pki, extra):
    url, front = mtls_front
    res, took, records = run(tmp_path, url, "--ca-cert", pki.cert("ca"), *extra, n=20)
    assert_stopped(res, took, records, url, "requires a client certificate", "--client-cert")
    assert front.refused  # the server refused it, and said why


def test_a_client_certificate_from_another_ca_is_named_as_refused(tmp_path, mtls_front, pki):
    url, _ = mtls_front
    res, took, records = run(tmp_path, url, "--model", "mock-model", "--ca-cert", pki.cert("ca"),
                             "--client-cert", pki.cert("stranger"), "--client-key", pki.key("stranger"))
    assert_stopped(res, took, records, url, "did not accept the client certificate", "--client-cert")


def test_an_asyncio_server_that_closes_without_an_alert_is_named_too(tmp_path, tls_mock, pki):
    """aiohttp's own TLS servers send no alert when they refuse a client: the close right after the
    handshake says it."""
    url = tls_mock(client_ca=True)
    res, took, records = run(tmp_path, url, "--model", "mock-model", "--ca-cert", pki.cert("ca"))
    assert_stopped(res, took, records, url, "right after the TLS handshake", "--client-cert")
    res, _, records = run(tmp_path, url, "--model", "mock-model", "--ca-cert", pki.cert("ca"),
                          "--client-cert", pki.cert("client"), "--client-key", pki.key("client"), out="ok.jsonl")
    assert res.returncode == 0 and len(records) == 6, res.stderr


# ---- job files, `streamrun stream`, the Python API


def test_job_file_keys_are_paths_relative_to_the_job_file(tmp_path, mtls_front, pki):
    url, _ = mtls_front
    certs = tmp_path / "jobs" / "certs"
    certs.mkdir(parents=True)
    for name in ("ca.pem", "client.pem", "client.key"):
        shutil.copy(pki.dir / name, certs / name)
    write_jsonl(tmp_path / "jobs" / "in.jsonl", rows(3))
    job = tmp_path / "jobs" / "tls.toml"
    job.write_text(f'inputs = ["in.jsonl"]\noutput = "out.jsonl"\nbase_url = "{url}"\nmodel = "mock-model"\n'
                   'ca_cert = "certs/ca.pem"\nclient_cert = "certs/client.pem"\nclient_key = "certs/client.key"\n')
    res = streamrun("job", job, cwd=tmp_path, env={"PYTHONPATH": str(ROOT)}, timeout=120)
    assert res.returncode == 0, res.stderr
    assert len(read_jsonl(tmp_path / "jobs" / "out.jsonl")) == 3


def test_stream_takes_the_same_tls_options(tmp_path, mtls_front, pki):
    url, _ = mtls_front
    tls = ["--ca-cert", pki.cert("ca"), "--client-cert", pki.cert("client"), "--client-key", pki.key("client")]
    res = streamrun("stream", "hello", "--base-url", url, "--model", "mock-model", *tls, timeout=120)
    assert res.returncode == 0 and res.stdout.strip(), res.stderr
    start = time.monotonic()
    res = streamrun("stream", "hello", "--base-url", url, "--model", "mock-model", "--ca-cert", pki.cert("ca"),
                    timeout=120)
    assert res.returncode == 2 and time.monotonic() - start < WALL_S, res.stderr
    assert res.stderr.strip().startswith(f"streamrun: cannot connect to {url}: the server requires a client "
                                         "certificate"), res.stderr
    assert "--client-cert" in res.stderr and res.stderr.strip().count("\n") == 0


async def test_the_python_api_takes_the_tls_keys(tmp_path, pki):
    import streamrun as api
    from runner.mock import MockConfig, serve

    write_jsonl(tmp_path / "in.jsonl", rows(3))
    async with serve(MockConfig(ttft=0.0, tokens_per_s=0.0), ssl_context=pki.server_context()) as url:
        doc = await api.arun([str(tmp_path / "in.jsonl")], output=str(tmp_path / "out.jsonl"),
                             base_url=url, model="mock-model", ca_cert=pki.cert("ca"), progress=False)
    assert doc["exit_code"] == 0 and doc["summary"]["counts"]["ok"] == 3


# ---- settings that cannot work: exit 2 before anything is sent


@pytest.mark.parametrize("args, says", [
    (["--ca-cert", "/nonexistent/ca.pem"], "--ca-cert /nonexistent/ca.pem: no such file"),
    (["--client-key", "KEY"], "--client-key goes with --client-cert"),
    (["--client-cert", "CLIENT", "--client-key", "OTHER_KEY"], "does not belong to this certificate"),
    (["--client-cert", "CLIENT", "--client-key", "ENCRYPTED_KEY"], "the key is encrypted"),
    (["--client-cert", "CLIENT", "--client-key", "/nonexistent/me.key"], "--client-key /nonexistent/me.key: no such"),
    (["--ca-cert", "KEY"], "--ca-cert"),
    (["--insecure", "--ca-cert", "CA"], "--insecure and --ca-cert exclude each other"),
    (["--proxy", "socks5://127.0.0.1:1080"], "--proxy: 'socks5://127.0.0.1:1080' is not an HTTP proxy URL"),
])
def test_tls_settings_that_cannot_work_are_refused_before_anything_is_sent(tmp_path, mock_process, pki, args, says):
    url = mock_process()
    files = {"KEY": pki.key("client"), "CLIENT": pki.cert("client"), "OTHER_KEY": pki.key("stranger"),
             "CA": pki.cert("ca"), "ENCRYPTED_KEY": pki.key("client-encrypted")}
    res, _, records = run(tmp_path, url, "--model", "mock-model", *[files.get(a, a) for a in args])
    assert res.returncode == 2, res.stderr
    assert says in res.stderr and "Traceback" not in res.stderr
    assert records == [] and mock_stats(url)["requests"] == 0


# ---- what the ssl module and aiohttp say, named


def test_tls_problems_are_named_with_their_fix():
    import aiohttp

    from runner.stream.tls import tls_problem

    def verify_error(code: int, message: str) -> ssl.SSLCertVerificationError:
        err = ssl.SSLCertVerificationError(1, f"[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed: {message}")
        err.verify_code, err.verify_message = code, message
        return err

    assert "self-signed" in str(tls_problem(verify_error(18, "self-signed certificate")))
    assert "--ca-cert" in str(tls_problem(verify_error(20, "unable to get local issuer certificate")))
    assert "expired" in str(tls_problem(verify_error(10, "certificate has expired")))
    assert "another name" in str(tls_problem(verify_error(62, "Hostname mismatch")))
    # aiohttp keeps only the text of the alert that came with the reset
    lost = aiohttp.ClientOSError(1, "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] tlsv13 alert certificate required")
    problem = tls_problem(lost)
    assert problem.conclusive and "--client-cert" in str(problem)
    plain = aiohttp.ClientOSError(104, "Connection reset by peer")
    assert tls_problem(plain) is None
    eof = ssl.SSLEOFError(8, "EOF occurred in violation of protocol")
    eof.reason = "UNEXPECTED_EOF_WHILE_READING"
    assert not tls_problem(eof).conclusive  # a server that went away: retried as ever


def test_a_conclusive_failure_trips_the_guard_once_every_base_url_failed_so():
    from types import SimpleNamespace

    from runner.engine.guards import ConnectGuard

    guard = ConnectGuard(("a", "b"), limit=20, patience_s=5.0)
    opened = SimpleNamespace(connect_s=0.001)  # a TLS connection that opened, then was refused
    guard.begin(opened)
    assert guard.failed("a", "not trusted", 0.0, 0.01, conclusive=True) is None  # b has not failed yet
    assert guard.nothing_to_drain()  # in flight, opened or not, it can only fail the same way
    stop = guard.failed("b", "requires a client certificate", 0.0, 0.02, conclusive=True)
    assert stop.startswith("cannot connect to a: not trusted; nor to b: requires a client certificate")

    guard = ConnectGuard(("a",), limit=20, patience_s=5.0)
    assert guard.failed("a", "connection reset by peer", 0.0, 0.01) is None  # may pass: retried, patiently
    assert not guard.conclusive
