"""Proxies: --proxy, HTTP(S)_PROXY and NO_PROXY, loopback reached directly (runner/stream/network.py).

A small forward proxy of the test's own (tests/helpers.py `forward_proxy`) logs a line for every request
it carries and knows a name nothing else resolves (`streamrun-mock.test`): a request to that name that
succeeded can only have gone through it.  The real-proxy tests run Debian's tinyproxy and read its log.
"""

from __future__ import annotations

import json
import re

import pytest

from runner.mock import MockConfig, serve
from tests.helpers import forward_proxy, read_jsonl, streamrun, write_jsonl

DEAD = "http://127.0.0.1:9"  # the discard port: a proxy nobody runs
NAME = "streamrun-mock.test"  # resolves nowhere but in the test's proxies
CLEAN_ENV = {"OPENAI_API_KEY": "sk-proxy-test"}  # a key, for the names that are not this machine's


@pytest.fixture(autouse=True)
def no_proxy_in_the_environment(monkeypatch):
    """Each test sets the proxy variables it is about (an empty http_proxy would hide HTTP_PROXY)."""
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def rows(n: int) -> list[dict]:
    return [{"custom_id": f"p{i}", "messages": [{"role": "user", "content": f"question {i}"}]} for i in range(n)]


def run(tmp_path, url: str, *args, n: int = 5, env=None, out: str = "out.jsonl"):
    inp = tmp_path / "in.jsonl"
    if not inp.exists():
        write_jsonl(inp, rows(n))
    res = streamrun("run", inp, "-o", tmp_path / out, "--base-url", url, "--model", "mock-model", "--no-progress",
                    *args, env={**CLEAN_ENV, **(env or {})}, timeout=120)
    path = tmp_path / out
    return res, read_jsonl(path) if path.exists() else []


def all_ok(res, records, n: int = 5) -> None:
    assert res.returncode == 0, res.stderr
    assert len(records) == n and all(r["status"] == "ok" for r in records)


def posts(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("POST ") and line.endswith("/chat/completions")]


@pytest.fixture
def mock_at(threaded):
    """The strict mock in a thread: its base URL, and the same base under a name only the proxies know."""
    url = threaded.start(serve(MockConfig(ttft=0.0, tokens_per_s=0.0)))
    return url, url.replace("127.0.0.1", NAME)


@pytest.fixture
def proxy(threaded):
    """`start(auth=None) -> (URL, ProxyLog)`: the test's forward proxy, knowing NAME."""
    return lambda auth=None: threaded.start(forward_proxy({NAME: "127.0.0.1"}, auth))


# ---- servers on this machine go direct


@pytest.mark.parametrize("var", ["HTTP_PROXY", "http_proxy"])
def test_a_dead_proxy_in_the_environment_does_not_break_run_mock(tmp_path, var):
    write_jsonl(tmp_path / "in.jsonl", rows(4))
    res = streamrun("run", "--mock", tmp_path / "in.jsonl", "-o", tmp_path / "out.jsonl",
                    env={**CLEAN_ENV, var: DEAD, "HTTPS_PROXY": DEAD}, timeout=120)
    all_ok(res, read_jsonl(tmp_path / "out.jsonl"), 4)


def test_a_dead_proxy_in_the_environment_does_not_stand_before_a_local_server(tmp_path, mock_at):
    url, _ = mock_at
    for host in ("127.0.0.1", "localhost"):
        res, records = run(tmp_path, url.replace("127.0.0.1", host), env={"HTTP_PROXY": DEAD},
                           out=f"{host}.jsonl")
        all_ok(res, records)
    res = streamrun("stream", "hi", "--mock", env={**CLEAN_ENV, "HTTP_PROXY": DEAD}, timeout=120)
    assert res.returncode == 0 and res.stdout.strip(), res.stderr


# ---- the environment's proxies, and --proxy


@pytest.mark.parametrize("var", ["HTTP_PROXY", "http_proxy"])
def test_http_proxy_from_the_environment_carries_every_request(tmp_path, mock_at, proxy, var):
    _, named = mock_at
    url, log = proxy()
    res, records = run(tmp_path, named, env={var: url})
    all_ok(res, records)
    assert len(posts(log.lines)) == 5 and all(NAME in line for line in log.lines)


def test_no_proxy_applies_to_the_environment_only(tmp_path, mock_at, proxy):
    _, named = mock_at
    url, log = proxy()
    res, records = run(tmp_path, named, env={"HTTP_PROXY": url, "NO_PROXY": NAME})
    assert res.returncode == 2 and records == [], res.stderr  # direct, so the name resolves nowhere
    assert f"cannot resolve host {NAME}" in res.stderr and log.lines == []
    res, records = run(tmp_path, named, "--proxy", url, env={"NO_PROXY": NAME}, out="forced.jsonl")
    all_ok(res, records)
    assert len(posts(log.lines)) == 5


@pytest.mark.parametrize("extra", [[], ["--workers", "2", "-c", "4"], ["--api", "anthropic", "--max-tokens", "16"],
                                   ["--api", "responses", "--max-tokens", "16"], ["--duration", "30s"]])
def test_proxy_overrides_the_environment_and_takes_loopback_too(tmp_path, mock_at, proxy, extra):
    local, _ = mock_at
    url, log = proxy()
    res, records = run(tmp_path, local, "--proxy", url, *extra, env={"HTTP_PROXY": DEAD,
                                                                    "ANTHROPIC_API_KEY": "sk-ant-test"})
    all_ok(res, records)
    assert len([line for line in log.lines if line.startswith("POST ")]) == 5


def test_proxy_with_resume_and_cache(tmp_path, mock_at, proxy):
    local, _ = mock_at
    url, log = proxy()
    args = ["--proxy", url, "--cache", str(tmp_path / "cache.sqlite")]
    res, first = run(tmp_path, local, *args, "--num-prompts", "2")
    assert res.returncode == 0 and len(first) == 2, res.stderr
    res, records = run(tmp_path, local, *args, "--resume")
    all_ok(res, records)
    assert len(posts(log.lines)) == 5  # two, then the three a resume had left
    res, again = run(tmp_path, local, *args, out="again.jsonl")
    all_ok(res, again)
    assert all(r["cached"] for r in again) and len(posts(log.lines)) == 5  # from the cache: nothing sent


def test_https_through_a_proxy_tunnel_with_a_private_ca(tmp_path, tls_mock, pki, proxy):
    url = tls_mock()
    proxy_url, log = proxy()
    res, records = run(tmp_path, url, "--proxy", proxy_url, "--ca-cert", pki.cert("ca"))
    all_ok(res, records)
    port = url.split(":")[2].split("/")[0]
    assert log.lines and all(line == f"CONNECT 127.0.0.1:{port}" for line in log.lines)


def test_stream_takes_proxy_and_the_environment(mock_at, proxy):
    local, named = mock_at
    url, log = proxy()
    res = streamrun("stream", "hello", "--base-url", local, "--model", "mock-model", "--proxy", url,
                    env=CLEAN_ENV, timeout=120)
    assert res.returncode == 0 and res.stdout.strip(), res.stderr
    res = streamrun("stream", "hello", "--base-url", named, "--model", "mock-model",
                    env={**CLEAN_ENV, "HTTP_PROXY": url}, timeout=120)
    assert res.returncode == 0 and res.stdout.strip(), res.stderr
    assert len(posts(log.lines)) == 2


def test_proxy_credentials_are_sent_and_never_shown(tmp_path, mock_at, proxy):
    local, named = mock_at
    url, log = proxy(auth=("streamrun", "pr0xy-s3cret-pw"))
    with_auth = url.replace("http://", "http://streamrun:pr0xy-s3cret-pw@")
    res, records = run(tmp_path, local, "--proxy", with_auth)
    all_ok(res, records)
    res, records = run(tmp_path, named, env={"HTTP_PROXY": with_auth}, out="env.jsonl")
    all_ok(res, records)
    assert log.refused == [] and len(posts(log.lines)) == 10
    res, records = run(tmp_path, local, "--proxy", url.replace("http://", "http://streamrun:wrong-pw@"),
                       out="refused.jsonl")
    assert res.returncode != 0 and log.refused
    assert all("HTTP 407" in r["error"]["message"] and "--proxy" in r["error"]["message"] for r in records)
    for text in [res.stdout, res.stderr, *(p.read_text() for p in tmp_path.iterdir() if p.is_file())]:
        assert "pr0xy-s3cret-pw" not in text and "wrong-pw" not in text
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    assert summary["config"]["proxy"] == url  # shown without its credentials


def test_a_dead_proxy_stops_the_run_naming_it(tmp_path, mock_at):
    local, _ = mock_at
    res, records = run(tmp_path, local, "--proxy", DEAD)
    assert res.returncode == 2 and records == [], res.stderr
    (line,) = [x for x in res.stderr.splitlines() if "cannot connect" in x]
    assert "cannot reach the proxy 127.0.0.1:9 (connection refused)" in line, line


# ---- a real proxy: tinyproxy


def tinyproxy_requests(log) -> list[str]:
    """The requests tinyproxy logged: 'POST http://...' and 'CONNECT host:port'."""
    return re.findall(r"Request \(file descriptor \d+\): (\S+ \S+) HTTP/1\.[01]", log.read_text())


def test_tinyproxy_via_proxy_carries_every_request(tmp_path, mock_at, tinyproxy):
    local, _ = mock_at
    url, log = tinyproxy()
    res, records = run(tmp_path, local, "--proxy", url, "-c", "2", n=8)
    all_ok(res, records, 8)
    summary = json.loads((tmp_path / "out.summary.json").read_text())
    logged = [r for r in tinyproxy_requests(log) if r.endswith("/v1/chat/completions")]
    assert len(logged) == summary["requests_sent"] == 8, log.read_text()
    assert all(r == f"POST {local}/chat/completions" for r in logged)


def test_tinyproxy_via_http_proxy_carries_every_request(tmp_path, mock_at, tinyproxy, proxy):
    """HTTP_PROXY applies to remote servers only: the base URL names a host that only the proxy chain
    resolves (tinyproxy hands its requests on to the test's proxy, which knows the name)."""
    _, named = mock_at
    upstream, _ = proxy()
    url, log = tinyproxy(upstream=upstream)
    res, records = run(tmp_path, named, "-c", "2", n=8, env={"HTTP_PROXY": url})
    all_ok(res, records, 8)
    logged = [r for r in tinyproxy_requests(log) if r.endswith("/v1/chat/completions")]
    assert logged == [f"POST {named}/chat/completions"] * 8, log.read_text()


def test_tinyproxy_tunnels_https(tmp_path, tls_mock, pki, tinyproxy):
    url = tls_mock()
    proxy_url, log = tinyproxy()
    res, records = run(tmp_path, url, "--proxy", proxy_url, "--ca-cert", pki.cert("ca"))
    all_ok(res, records)
    port = url.split(":")[2].split("/")[0]
    tunnels = tinyproxy_requests(log)
    assert tunnels and all(t == f"CONNECT 127.0.0.1:{port}" for t in tunnels), log.read_text()


# ---- which proxy a base URL gets


def test_the_proxy_of_each_base_url(monkeypatch):
    from runner.stream.network import Network

    monkeypatch.setenv("HTTPS_PROXY", "http://user:pw-1234@corp-proxy:3128")
    monkeypatch.setenv("HTTP_PROXY", "http://corp-proxy:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    env = Network()
    assert env.proxy_for("https://api.openai.com/v1") == "http://user:pw-1234@corp-proxy:3128"  # credentials kept
    assert env.proxy_for("http://gpu-box:8000/v1") == "http://corp-proxy:3128"
    assert env.proxy_for("https://internal.example/v1") is None  # NO_PROXY
    for local in ("http://127.0.0.1:8000/v1", "http://localhost:8000/v1", "http://[::1]:8000/v1",
                  "http://127.0.0.2:8000/v1"):
        assert env.proxy_for(local) is None, local  # this machine: direct
    explicit = Network(proxy="http://other:8080")
    for url in ("https://internal.example/v1", "http://127.0.0.1:8000/v1", "https://api.openai.com/v1"):
        assert explicit.proxy_for(url) == "http://other:8080"  # --proxy: everything, NO_PROXY or not
    assert "pw-1234" in env.secrets()


def test_proxy_from_environment_is_resolved_once_per_endpoint(monkeypatch):
    from runner.stream.network import env_proxy

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
    monkeypatch.delenv("https_proxy", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert env_proxy("https://api.example.com/v1") == "http://proxy.internal:3128"
    assert env_proxy("http://127.0.0.1:8000/v1") is None
