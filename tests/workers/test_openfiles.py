"""-c above the open-file limit: the soft limit raised as far as the hard one allows, else fewer connections.

Each run is a real process whose limits are lowered before it starts (as `ulimit -n` would), against the mock in
a process of its own (an in-process mock would hold the other end of every connection).
"""

from __future__ import annotations

import errno
import resource
import subprocess
from types import SimpleNamespace

import aiohttp
import pytest

from runner.stream.config import RetryPolicy
from tests.helpers import HANG_GUARD_S, STREAMRUN, chat, read_jsonl, run_rows, write_jsonl

N = 300


def run_with_limits(tmp_path, url: str, soft: int, hard: int, *extra) -> tuple[subprocess.CompletedProcess, list]:
    inp = write_jsonl(tmp_path / "in.jsonl", [chat(f"p{i}") for i in range(N)])
    out = tmp_path / "out.jsonl"
    res = subprocess.run([*STREAMRUN, "run", str(inp), "-o", str(out), "--base-url", url, "--model", "mock-model",
                          "-c", "200", "--no-progress", *extra], capture_output=True, text=True, timeout=HANG_GUARD_S,
                         preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard)))
    return res, read_jsonl(out)


@pytest.mark.parametrize("extra", [(), ("--workers", "2")])
def test_a_hard_limit_below_c_caps_the_connections_with_a_warning(tmp_path, mock_process, extra):
    url = mock_process("--ttft", "0.05", "--tokens-per-s", "0")
    res, records = run_with_limits(tmp_path, url, 64, 64, *extra)
    assert res.returncode == 0, res.stderr
    assert len(records) == N and all(r["status"] == "ok" and r["attempts"] == 1 for r in records)
    (warning,) = [line for line in res.stderr.splitlines() if "open files" in line]
    assert "-c 200" in warning and "at most 64" in warning and "ulimit -n" in warning


def test_a_soft_limit_below_c_is_raised_without_a_word(tmp_path, mock_process):
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    hard = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if hard < 512:
        pytest.skip(f"this machine's hard open-file limit ({hard}) leaves no room to raise to")
    url = mock_process("--ttft", "0.05", "--tokens-per-s", "0")
    res, records = run_with_limits(tmp_path, url, 64, hard)
    assert res.returncode == 0, res.stderr
    assert len(records) == N and all(r["status"] == "ok" and r["attempts"] == 1 for r in records)
    assert "open files" not in res.stderr


async def test_out_of_file_descriptors_is_never_a_failed_attempt(tmp_path, mock_server, monkeypatch):
    """EMFILE is this process's limit: the request waits for a descriptor and is sent, its attempts untouched."""
    from runner.engine.send import Sender
    from runner.stream.client import connect_failure

    url = await mock_server()
    real, calls = Sender._send, []

    async def send(self, *args):
        calls.append(args)
        if len(calls) <= 3:
            key = SimpleNamespace(host="127.0.0.1", port=1, ssl=True)  # what its message reads
            raise connect_failure(aiohttp.ClientConnectorError(key, OSError(errno.EMFILE, "Too many open files")))
        return await real(self, *args)

    monkeypatch.setattr(Sender, "_send", send)
    code, (r,) = await run_rows(tmp_path, url, [chat("a")], retry=RetryPolicy(max_attempts=1))
    assert code == 0 and r["status"] == "ok" and r["attempts"] == 1 and len(calls) == 4
