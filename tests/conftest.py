"""The fixtures: mock servers, in this process and in one of their own, and tiktoken made absent.

pytest finds them for every folder under tests/.  Plain helper functions and
constants live in tests/helpers.py: a test module imports those from there,
never from here nor from another test module (tests/test_layout.py checks).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from contextlib import AsyncExitStack

import pytest

from runner.mock import MockConfig, serve
from tests.helpers import BATCH_ENV, STREAMRUN, Recorder


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
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


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
