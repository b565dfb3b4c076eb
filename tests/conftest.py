"""The fixtures: mock servers, in this process and in one of their own, and tiktoken made absent; a
throwaway CA, the mock over TLS, a TLS front and servers in a thread; Debian's tinyproxy.

pytest finds them for every folder under tests/.  Plain helper functions and
constants live in tests/helpers.py: a test module imports those from there,
never from here nor from another test module (tests/test_layout.py checks).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from contextlib import AsyncExitStack
from pathlib import Path

import pytest

from runner.mock import MockConfig, serve
from tests.helpers import (
    BATCH_ENV,
    HANG_GUARD_S,
    STREAMRUN,
    TINYPROXY_REQUIRED,
    Pki,
    Recorder,
    ThreadedServers,
    TlsFront,
    make_pki,
    stop_processes,
)

# -- the mock ------------------------------------------------------------------


@pytest.fixture
async def mock_server():
    """Start a mock in this process with the given config; yields a factory returning its base URL."""
    async with AsyncExitStack() as stack:
        async def start(**kwargs) -> str:
            kwargs.setdefault("ttft", 0.0)
            kwargs.setdefault("tokens_per_s", 0.0)
            return await stack.enter_async_context(serve(MockConfig(**kwargs)))

        yield start


@pytest.fixture
def mock_process():
    """Start `streamrun mock` in its own process (so killing the runner leaves it up); yields a factory."""
    procs = []

    def start(*args, env=None) -> str:
        proc = subprocess.Popen([*STREAMRUN, "mock", "--port", "0", *map(str, args)], stderr=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, text=True, env={**os.environ, **(env or {})})
        procs.append(proc)
        line = proc.stderr.readline()
        match = re.search(r"(http://\S+)", line)
        assert match, f"mock did not start: {line!r}"
        return match.group(1)

    yield start
    stop_processes(procs)


@pytest.fixture
def batch_mock(mock_process):
    """A strict mock in its own process that requires BATCH_KEY (tests/helpers.py); its batches end at once
    unless told otherwise (`--batch-polls`, `--batch-delay`); yields a factory of its base URL."""
    def start(*args) -> str:
        return mock_process("--ttft", "0", "--tokens-per-s", "0", "--api-key-env", "MOCK_KEY", *args, env=BATCH_ENV)
    return start


@pytest.fixture
def no_tiktoken(monkeypatch, tmp_path):
    """tiktoken absent (None in sys.modules makes the import fail), an empty
    cache dir, no download permission, a fresh encoding cache: token counts
    are the chars/4 estimate whatever is installed."""
    from runner.inputs import tokens

    monkeypatch.setitem(sys.modules, "tiktoken", None)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("STREAMRUN_TIKTOKEN_DOWNLOAD", raising=False)
    tokens.reset_tokenizer_cache()
    yield
    tokens.reset_tokenizer_cache()


@pytest.fixture
def recorder():
    """Start a `Recorder` (status 200 unless given); yields a factory; every one is closed after the test."""
    started: list[Recorder] = []

    def start(status: int = 200) -> Recorder:
        started.append(Recorder(status))
        return started[-1]

    yield start
    for r in started:
        r.close()


# -- TLS and proxies (runner/stream/tls.py, runner/stream/network.py; their helpers in tests/helpers.py) ----


@pytest.fixture(scope="session")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def tls_mock(pki):
    """Start the strict mock over TLS in a thread of its own: `start(cert="server", client_ca=False, **mock)`
    returns its https:// base URL (fast: no pacing unless asked)."""
    servers = ThreadedServers()

    def start(cert: str = "server", client_ca: bool = False, **kwargs) -> str:
        kwargs.setdefault("ttft", 0.0)
        kwargs.setdefault("tokens_per_s", 0.0)
        return servers.start(serve(MockConfig(**kwargs), ssl_context=pki.server_context(cert, client_ca)))

    yield start
    servers.close()


@pytest.fixture
def tls_front():
    """`start(context, upstream_url) -> https URL`: a `TlsFront` with `context` before the server at `upstream_url`."""
    from yarl import URL

    fronts: list[TlsFront] = []

    def start(context, upstream_url: str) -> tuple[str, TlsFront]:
        upstream = URL(upstream_url)
        front = TlsFront(context, (upstream.host, upstream.port))
        fronts.append(front)
        return f"https://127.0.0.1:{front.port}{upstream.path}", front

    yield start
    for front in fronts:
        front.close()


@pytest.fixture
def threaded():
    """`ThreadedServers` for one test: servers the CLI (a subprocess) can reach while the test blocks."""
    servers = ThreadedServers()
    yield servers
    servers.close()


@pytest.fixture
def tinyproxy(tmp_path):
    """Debian's tinyproxy on 127.0.0.1, its log in tmp_path: `start(upstream=None) -> (URL, log path)`.

    Skipped where tinyproxy is not installed (apt-get install tinyproxy; `make test-proxy` installs it
    and fails instead of skipping)."""
    import shutil
    import socket

    binary = shutil.which("tinyproxy")
    if binary is None:
        why = "tinyproxy is not installed (apt-get install tinyproxy, or make test-proxy)"
        if os.environ.get(TINYPROXY_REQUIRED):
            pytest.fail(why)
        pytest.skip(why)
    procs = []

    def start(upstream: str | None = None) -> tuple[str, Path]:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        log = tmp_path / f"tinyproxy-{port}.log"
        conf = tmp_path / f"tinyproxy-{port}.conf"
        lines = [f"Port {port}", "Listen 127.0.0.1", "Timeout 60", f'LogFile "{log}"', "LogLevel Info",
                 "MaxClients 100"]
        if upstream is not None:  # every request on to another proxy (which knows names this machine does not)
            lines.append(f"Upstream http {upstream.removeprefix('http://')}")
        conf.write_text("\n".join(lines) + "\n")
        proc = subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        procs.append(proc)
        end = time.monotonic() + HANG_GUARD_S
        while True:
            assert proc.poll() is None, f"tinyproxy did not start: {proc.stderr.read()}"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < end, "hang guard: tinyproxy never listened"
                time.sleep(0.05)
        return f"http://127.0.0.1:{port}", log

    yield start
    stop_processes(procs)
