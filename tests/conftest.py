"""Shared fixtures: an in-process mock server on 127.0.0.1 and small file helpers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from runner.mock import MockConfig, serve

DATA = Path(__file__).parent / "data"


@pytest.fixture
async def mock_server():
    """Start a mock with the given config; yields a factory returning its base URL."""
    from contextlib import AsyncExitStack

    async with AsyncExitStack() as stack:
        async def start(**kwargs) -> str:
            kwargs.setdefault("ttft", 0.0)
            kwargs.setdefault("tokens_per_s", 0.0)
            return await stack.enter_async_context(serve(MockConfig(**kwargs)))

        yield start


def write_jsonl(path: Path, rows: list) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(row if isinstance(row, str) else json.dumps(row, ensure_ascii=False))
            f.write("\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


import os
import re
import subprocess
import sys

STREAMRUN = [sys.executable, "-m", "runner.cli"]


def streamrun(*args, env=None, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run the CLI as a real subprocess (exit codes, signals, stderr as users see them)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*STREAMRUN, *map(str, args)], capture_output=True, text=True, env=full_env,
                          timeout=timeout, **kwargs)


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
