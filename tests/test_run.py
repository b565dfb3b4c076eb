"""runner/run.py in process: one run through `run_document`, from the lock to the exit code.

Each test drives `run_document` directly against the mock served by this
process (no subprocess): the output's lock is held while the run writes and
gone after it, whatever ended it; --resume sends only what the output does
not answer yet; the summary is written beside the output and returned; the
exit code comes from the final records against the failure budget; a writer
that cannot write stops the run with exit 4 and keeps the file whole; a
signal drains what is in flight and hands the caller's handler back.

Configs are built from job-file keys (`runner.api.config`), as the Python
API builds them, so these tests do not depend on RunConfig's own fields.
Nothing waits for a time: what happens mid-run is observed from the run's
own record callback.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time

import orjson
import pytest

from runner import api
from runner.errors import EXIT_FAILED, EXIT_OK, EXIT_OUTPUT, EXIT_SIGTERM, OutputLocked, UsageError
from runner.outputs import writer as writer_module
from runner.outputs.writer import lock_output, unlock_output
from runner.run import run_document
from tests.helpers import HANG_GUARD_S, FullDisk, amock_stats, by_id, chat, prompts, read_jsonl, write_jsonl


def config(tmp_path, url: str, **keys):
    """tmp_path/in.jsonl to tmp_path/out.jsonl against `url`, from job keys; one attempt per request."""
    keys = {"base_url": url, "model": "mock-model", "concurrency": 2, "max_attempts": 1, **keys}
    return api.config(str(tmp_path / "in.jsonl"), output=str(tmp_path / "out.jsonl"), **keys)


async def run(cfg, **kwargs) -> dict:
    return await run_document(cfg, show_progress=False, **kwargs)


def is_locked(path: str) -> bool:
    """Whether another holder has the output's lock (a lock of our own is taken and released to find out)."""
    try:
        fd = lock_output(path)
    except OutputLocked:
        return True
    unlock_output(path, fd)
    return False


# -- the lock ----------------------------------------------------------------------


async def test_the_output_is_locked_while_the_run_writes_it_and_free_after(tmp_path, mock_server):
    url = await mock_server()
    prompts(tmp_path / "in.jsonl", 3)
    out = os.path.realpath(tmp_path / "out.jsonl")
    locked_at_each_record = []
    doc = await run(config(tmp_path, url), on_record=lambda record: locked_at_each_record.append(is_locked(out)))
    assert doc["exit_code"] == EXIT_OK
    assert locked_at_each_record == [True, True, True]
    assert not os.path.exists(out + ".lock") and not is_locked(out)


async def test_a_locked_output_is_refused_with_exit_3_before_anything_is_sent(tmp_path, mock_server):
    url = await mock_server()
    prompts(tmp_path / "in.jsonl", 3)
    out = os.path.realpath(tmp_path / "out.jsonl")
    fd = lock_output(out)  # another run's
    try:
        with pytest.raises(OutputLocked) as info:
            await run(config(tmp_path, url))
        assert info.value.exit_code == 3
        assert os.path.exists(out + ".lock")  # the holder's lock file is left alone
    finally:
        unlock_output(out, fd)
    assert not os.path.exists(out)
    assert (await amock_stats(url))["requests"] == 0


async def test_a_run_that_cannot_start_after_locking_releases_the_lock(tmp_path, mock_server):
    url = await mock_server()
    write_jsonl(tmp_path / "in.jsonl", [chat("x"), chat("y"), chat("x")])  # found by the plan, after the lock
    out = os.path.realpath(tmp_path / "out.jsonl")
    with pytest.raises(UsageError, match="duplicate custom_id"):
        await run(config(tmp_path, url))
    assert not os.path.exists(out + ".lock") and not is_locked(out)
    assert (await amock_stats(url))["requests"] == 0


# -- resume and exit codes, from the final records ---------------------------------


async def test_resume_sends_only_the_lines_without_a_final_ok_record_and_exits_by_final_records(
        tmp_path, mock_server):
    url = await mock_server()
    rows = [chat("p0"), chat("p1"), chat("p2", {"key": "p2", "faults": ["400", "ok"]}), chat("p3")]
    write_jsonl(tmp_path / "in.jsonl", rows)
    first = await run(config(tmp_path, url))
    assert first["exit_code"] == EXIT_FAILED and first["summary"]["counts"]["error"] == 1
    assert (await amock_stats(url))["requests"] == 4

    again = await run(config(tmp_path, url, resume=True))
    assert (await amock_stats(url))["requests"] == 5  # p2 alone was sent again
    assert again["requests_sent"] == 1 and again["records_written"] == 1
    assert again["exit_code"] == EXIT_OK  # p2's final record is ok now: the earlier failure no longer counts
    assert again["summary"]["counts"]["total"] == 4 and again["summary"]["counts"]["error"] == 0
    records = read_jsonl(tmp_path / "out.jsonl")
    assert [r["custom_id"] for r in records].count("p2") == 2  # the failure stays in the file, superseded
    assert records[-1]["custom_id"] == "p2" and records[-1]["status"] == "ok"


@pytest.mark.parametrize("max_failed, code", [(None, EXIT_FAILED), (1, EXIT_OK), (0.25, EXIT_OK), (0.2, EXIT_FAILED)])
async def test_the_exit_code_is_the_failed_records_against_the_budget(tmp_path, mock_server, max_failed, code):
    url = await mock_server()
    rows = [chat("a"), chat("b"), chat("c", {"key": "c", "faults": ["400"]}), chat("d")]
    write_jsonl(tmp_path / "in.jsonl", rows)
    keys = {} if max_failed is None else {"max_failed": max_failed}
    doc = await run(config(tmp_path, url, **keys))
    assert doc["exit_code"] == code
    assert by_id(read_jsonl(tmp_path / "out.jsonl"))["c"]["error"]["status_code"] == 400


# -- the summary -------------------------------------------------------------------------


async def test_the_summary_is_written_beside_the_output_and_returned(tmp_path, mock_server):
    url = await mock_server()
    prompts(tmp_path / "in.jsonl", 3)
    doc = await run(config(tmp_path, url))
    written = orjson.loads((tmp_path / "out.summary.json").read_bytes())
    assert written == orjson.loads(orjson.dumps(doc))
    assert (doc["exit_code"], doc["interrupted"], doc["stopped"]) == (EXIT_OK, False, None)
    assert (doc["requests_sent"], doc["records_written"], doc["records_not_written"]) == (3, 3, 0)
    assert doc["summary"]["counts"]["ok"] == 3


async def test_a_summary_that_cannot_be_written_is_exit_4_and_the_records_stay(tmp_path, mock_server):
    url = await mock_server()
    prompts(tmp_path / "in.jsonl", 3)
    (tmp_path / "summary").mkdir()  # a folder where the summary file should go
    doc = await run(config(tmp_path, url, summary=str(tmp_path / "summary")))
    assert doc["exit_code"] == EXIT_OUTPUT
    assert sorted(r["custom_id"] for r in read_jsonl(tmp_path / "out.jsonl")) == ["p0", "p1", "p2"]
    assert not os.path.exists(os.path.realpath(tmp_path / "out.jsonl") + ".lock")


# -- the writer's failure ------------------------------------------------------------------


async def test_a_writer_that_cannot_write_stops_sending_keeps_whole_lines_and_exits_4(
        tmp_path, mock_server, monkeypatch):
    url = await mock_server()
    n = 50
    prompts(tmp_path / "in.jsonl", n)
    disk = FullDisk(300)  # room for about one record, then ENOSPC
    monkeypatch.setattr(writer_module, "os", disk)
    doc = await run(config(tmp_path, url))
    assert doc["exit_code"] == EXIT_OUTPUT and "cannot write" in doc["stopped"]
    data = (tmp_path / "out.jsonl").read_bytes()
    assert data == b"" or data.endswith(b"\n")  # no torn line
    written = [orjson.loads(line) for line in data.splitlines()]
    assert doc["records_written"] == len(written) < n
    assert doc["requests_sent"] < n  # sending stopped at once
    assert doc["records_written"] + doc["records_not_written"] == doc["requests_sent"]  # none lost unseen
    assert not os.path.exists(os.path.realpath(tmp_path / "out.jsonl") + ".lock")


# -- signals ------------------------------------------------------------------------------


async def test_a_signal_drains_the_requests_in_flight_and_gives_the_caller_its_handler_back(
        tmp_path, mock_server):
    """The first SIGTERM is the run's: no new requests, those in flight finish, exit 143.  Then (from
    Python, not the CLI) the caller's own handler is back at once, so a second signal, sent while the run
    still drains, is the caller's to handle and never ends the process."""
    url = await mock_server(ttft=0.01)
    n = 40
    prompts(tmp_path / "in.jsonl", n)
    caught = []  # what the caller's own handler saw

    def callers(signum, frame):
        caught.append(signum)

    async def second_signal_once_the_handler_is_back(running: asyncio.Task) -> bool:
        end = time.monotonic() + HANG_GUARD_S
        while signal.getsignal(signal.SIGTERM) is not callers:
            assert time.monotonic() < end, "hang guard: the caller's handler never came back"
            await asyncio.sleep(0)
        draining = not running.done()
        os.kill(os.getpid(), signal.SIGTERM)
        return draining

    second: list[asyncio.Task] = []

    def on_record(record):
        if not second:  # the first record: the run is under way
            second.append(asyncio.get_running_loop().create_task(second_signal_once_the_handler_is_back(running)))
            os.kill(os.getpid(), signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, callers)
    try:
        running = asyncio.create_task(run(config(tmp_path, url), on_record=on_record))
        doc = await asyncio.wait_for(running, HANG_GUARD_S)
        assert await asyncio.wait_for(second[0], HANG_GUARD_S) is True  # the handler was back mid-run
        handler_after = signal.getsignal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert caught == [signal.SIGTERM]  # the second signal only: the first was the run's
    assert handler_after is callers
    assert doc["exit_code"] == EXIT_SIGTERM and doc["interrupted"] is True
    assert doc["cancelled_in_flight"] == 0  # drained, not cut
    records = read_jsonl(tmp_path / "out.jsonl")
    assert 0 < len(records) < n and all(r["status"] == "ok" for r in records)
    assert doc["records_written"] == len(records) == doc["requests_sent"]
