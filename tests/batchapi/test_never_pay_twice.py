"""Never paying twice: `kill -9` at every step boundary of `streamrun batch`, or SIGTERM, and a rerun.

What is checked: after a crash after the upload, before or after the
create, while polling, or after a batch's records were written but before
the state said so, the same command submits every line exactly once (the
mock counts submissions per custom_id; an uploaded file is found again by
its name, a created batch by its metadata, or for Anthropic its size and
time) and writes every line's record once.  The crash is the process
killing itself at the boundary (`CRASH`), so nothing depends on timing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from tests.helpers import (
    BATCH_ENV,
    HANG_GUARD_S,
    assert_submitted_once,
    batch_cli,
    batch_rows,
    batch_state,
    no_batch_key_anywhere,
    read_jsonl,
    read_stderr_until,
    start_batch_cli,
    write_jsonl,
)


@pytest.mark.parametrize("api, how", [("openai", "kill"), ("anthropic", "kill"), ("openai", "sigterm")])
def test_kill_9_or_sigterm_while_polling_and_a_rerun_submit_every_line_exactly_once(tmp_path, batch_mock, api, how):
    """A batch ends at its 6th poll; the first run polls once, then waits (1s, 2s, ...) and is killed meanwhile."""
    url = batch_mock("--batch-polls", "6", "--batch-delay", "0")
    inp = write_jsonl(tmp_path / "in.jsonl", batch_rows())
    out = tmp_path / "out.jsonl"
    proc = start_batch_cli(inp, out, url, api, "--max-lines-per-batch", "15", "--poll-interval", "1h")
    try:
        read_stderr_until(proc, "3 batches still in progress")
        assert all(p["step"] == "submitted" for p in batch_state(out)["parts"])
        if how == "kill":
            proc.kill()
            assert proc.wait(HANG_GUARD_S) == -signal.SIGKILL
        else:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(HANG_GUARD_S) == 143
            summary = json.loads((tmp_path / "out.summary.json").read_text())
            assert summary["interrupted"] and summary["batch"]["in_progress"] == 3
    finally:
        proc.kill()
    assert not out.exists() or not read_jsonl(out)
    res = batch_cli(inp, out, url, api, "--max-lines-per-batch", "15")
    assert res.returncode == 1, res.stderr
    assert sorted(r["custom_id"] for r in read_jsonl(out)) == [f"p{i:02d}" for i in range(40)]
    assert assert_submitted_once(url, 40)["batches_created"] == 3
    no_batch_key_anywhere(tmp_path, res.stderr)


# Run the CLI with one provider call wrapped: the process kills itself (SIGKILL) right at a step boundary.
CRASH = """
import os, signal, sys
import runner.batchapi.{module} as target
cls = getattr(target, "{cls}")
real = getattr(cls, "{method}")
async def crashing(self, *args, **kwargs):
    if "{when}" == "before":
        os.kill(os.getpid(), signal.SIGKILL)
    result = await real(self, *args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)
setattr(cls, "{method}", crashing)
from runner.cli.main import main
main(sys.argv[1:], prog_name="streamrun")
"""
CRASH_ON_COLLECT = """
import os, signal, sys
import runner.batchapi.state as state_file
real = state_file.save_state
def crashing(path, state):
    if any(p.step == "collected" for p in state.parts):
        os.kill(os.getpid(), signal.SIGKILL)  # its records are written and fsynced, the state not yet
    real(path, state)
state_file.save_state = crashing
from runner.cli.main import main
main(sys.argv[1:], prog_name="streamrun")
"""


@pytest.mark.parametrize("api, boundary", [
    ("openai", "after the upload, before the create"),
    ("openai", "before the create is sent"),
    ("openai", "after the create, before the state write"),
    ("anthropic", "after the create, before the state write"),
    ("anthropic", "after the records, before the state says collected"),
])
def test_kill_9_at_a_step_boundary_and_a_rerun_submit_every_line_exactly_once(tmp_path, batch_mock, api, boundary):
    url = batch_mock("--batch-delay", "0")
    inp = write_jsonl(tmp_path / "in.jsonl", batch_rows())
    out = tmp_path / "out.jsonl"
    module, cls = ("openai", "OpenAIBatches") if api == "openai" else ("anthropic", "AnthropicBatches")
    method, when = {"after the upload, before the create": ("upload", "after"),
                    "before the create is sent": ("create", "before")}.get(boundary, ("create", "after"))
    script = CRASH_ON_COLLECT if "records" in boundary else CRASH.format(module=module, cls=cls, method=method,
                                                                         when=when)
    args = ["batch", str(inp), "-o", str(out), "--base-url", url, "--api", api, "--model", "mock-model",
            "--max-tokens", "16", "--poll-interval", "10ms", "--max-lines-per-batch", "15"]
    crashed = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                             env={**os.environ, **BATCH_ENV}, timeout=120)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    written = len(read_jsonl(out)) if out.exists() else 0
    assert written == (15 if "records" in boundary else 0)
    res = batch_cli(inp, out, url, api, "--max-lines-per-batch", "15")
    assert res.returncode == 1, res.stderr
    records = read_jsonl(out)
    assert sorted(r["custom_id"] for r in records) == [f"p{i:02d}" for i in range(40)]  # none twice
    stats = assert_submitted_once(url, 40)
    assert stats["batches_created"] == 3
    if api == "openai":
        assert stats["files_uploaded"] == 3  # the file uploaded before the crash was found by its name
    if boundary.startswith("after the create"):
        assert "found " in res.stderr and "created before the last run stopped" in res.stderr
