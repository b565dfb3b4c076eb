"""runner.outputs.writer: the lock, opening (refusal, overwrite, resume), torn tails, the done-set, and the
one writer: whole lines, and on a failing disk a half-written line cut back off and OutputFailed reported.

A full disk is simulated by a stand-in for the `os` module that `runner.outputs.writer` uses: its `write`
takes a set number of bytes, then raises ENOSPC.
"""

from __future__ import annotations

import asyncio
import fcntl
import os

import orjson
import pytest

from runner.config.run_config import FsyncPolicy
from runner.errors import OutputFailed, OutputLocked
from runner.outputs import writer as outputs
from runner.outputs.writer import (
    OutputExists,
    ResultWriter,
    lock_output,
    open_output,
    prepare_resume,
    repair_torn_tail,
    unlock_output,
)
from runner.record import Record
from tests.helpers import FullDisk, prompts, streamrun


def line(custom_id: str, status: str = "ok", **extra) -> bytes:
    return orjson.dumps({"custom_id": custom_id, "status": status, **extra}) + b"\n"


# -- the lock ------------------------------------------------------------------


def test_a_second_lock_on_the_same_output_fails(tmp_path):
    out = str(tmp_path / "sub" / "out.jsonl")
    fd = lock_output(out)  # makes the folder
    try:
        assert (tmp_path / "sub" / "out.jsonl.lock").read_text() == f"{os.getpid()}\n"
        with pytest.raises(OutputLocked, match=r"out\.jsonl is being written by another streamrun run") as info:
            lock_output(out)
        assert info.value.exit_code == 3
    finally:
        os.close(fd)
    os.close(lock_output(out))  # the kernel dropped the lock with its descriptor: never stale


def test_the_holder_removes_the_lock_file_and_the_output_can_be_locked_again(tmp_path):
    out = str(tmp_path / "out.jsonl")
    fd = lock_output(out)
    unlock_output(out, fd)
    assert not os.path.exists(out + ".lock")
    unlock_output(out, lock_output(out))
    (tmp_path / "out.jsonl.lock").write_text("123\n")  # left by a run killed with -9: no lock in it
    unlock_output(out, lock_output(out))
    assert not os.path.exists(out + ".lock")


def test_a_run_that_opened_the_lock_file_just_before_its_holder_removed_it_does_not_hold_the_output(
        tmp_path, monkeypatch):
    """B opens out.jsonl.lock; A, the holder, removes it and lets go; B's flock then succeeds, on a file no
    longer there. Taken as the lock, C would create a new file, lock it too, and both would write."""
    out = str(tmp_path / "out.jsonl")
    a = lock_output(out)
    real_flock = fcntl.flock
    raced = []

    def flock(fd, op):
        if not raced:  # B holds the old file open: now A ends
            raced.append(os.fstat(fd).st_ino)
            unlock_output(out, a)
        return real_flock(fd, op)

    monkeypatch.setattr(fcntl, "flock", flock)
    b = lock_output(out)
    try:
        assert raced and os.fstat(b).st_ino == os.stat(out + ".lock").st_ino  # B locked the file at the path
        with pytest.raises(OutputLocked):  # so C is kept out
            lock_output(out)
    finally:
        unlock_output(out, b)
    assert not os.path.exists(out + ".lock")


def test_unlock_never_removes_a_lock_file_it_does_not_hold(tmp_path):
    out = str(tmp_path / "out.jsonl")
    fd = lock_output(out)
    os.unlink(out + ".lock")  # removed by hand, and another run took the output since
    other = lock_output(out)
    try:
        unlock_output(out, fd)
        assert os.path.exists(out + ".lock")
        with pytest.raises(OutputLocked):
            lock_output(out)
    finally:
        unlock_output(out, other)


def test_runs_leave_no_lock_file_and_one_kept_out_leaves_the_holders(tmp_path):
    inp, out = prompts(tmp_path / "in.jsonl", 2), tmp_path / "o.jsonl"
    lock = tmp_path / "o.jsonl.lock"
    assert streamrun("run", inp, "-o", out, "--mock").returncode == 0
    assert not lock.exists()
    assert streamrun("run", inp, "-o", out, "--mock").returncode == 2  # exists: refused before anything is sent
    assert not lock.exists()
    held = lock_output(os.path.realpath(out))  # another run writes it
    try:
        assert streamrun("run", inp, "-o", out, "--mock", "--resume").returncode == 3
        assert os.fstat(held).st_ino == os.stat(lock).st_ino  # its lock file stays
    finally:
        unlock_output(os.path.realpath(out), held)


# -- opening -------------------------------------------------------------------


def test_an_existing_output_is_refused_without_resume_or_overwrite(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_bytes(line("old"))
    with pytest.raises(OutputExists, match="pass --resume to continue it or --overwrite to replace it") as info:
        open_output(str(out), resume=False, overwrite=False)
    assert info.value.exit_code == 2
    assert out.read_bytes() == line("old")  # untouched


def test_overwrite_truncates_resume_appends_and_an_empty_file_is_free(tmp_path):
    out = tmp_path / "out.jsonl"
    for resume, overwrite, before, after in ((False, True, line("old"), line("new")),
                                             (True, False, line("old"), line("old") + line("new")),
                                             (False, False, b"", line("new"))):
        out.write_bytes(before)
        fd = open_output(str(out), resume=resume, overwrite=overwrite)
        try:
            os.write(fd, line("new"))
        finally:
            os.close(fd)
        assert out.read_bytes() == after, (resume, overwrite)


# -- torn tails and the done-set -----------------------------------------------


@pytest.mark.parametrize("tail, cut", [
    (b"", 0),
    (b'{"custom_id": "c", "sta', 23),  # a crash mid-write
    (b'{"custom_id": "c"\n', 18),  # ends in a newline but is not a whole JSON object
])
def test_repair_torn_tail(tmp_path, tail, cut):
    out = tmp_path / "out.jsonl"
    whole = line("a") + line("b")
    out.write_bytes(whole + tail)
    assert repair_torn_tail(str(out)) == cut
    assert out.read_bytes() == whole + (tail if not cut else b"")
    assert repair_torn_tail(str(tmp_path / "missing.jsonl")) == 0


def test_prepare_resume_skips_warmup_and_with_retry_failed_drops_errors(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_bytes(line("a") + line("b", "error") + line("warmup:a", warmup=True) + b"not json\n"
                    + line("s", stage={"label": "c=2"}) + b'{"custom_id": "t", "st')
    warnings: list[str] = []
    done = prepare_resume(str(out), retry_failed=False, warn=warnings.append, keep_failed=True).done
    assert "a" in done and "b" in done and "warmup:a" not in done  # warm-up records are no answers
    assert "c=2\x00s" in done and "s" not in done  # sweeps key by stage
    assert len(done) == 3
    assert any("torn last line" in w for w in warnings) and any(":4:" in w for w in warnings)
    found = prepare_resume(str(out), retry_failed=False, warn=warnings.append)
    assert "b" not in found.done and found.done.resent("b") and (found.resend, found.failed) == (1, 1)
    done = prepare_resume(str(out), retry_failed=True, warn=warnings.append).done
    assert "b" not in done and len(done) == 2
    assert b'"b"' not in out.read_bytes() and out.read_bytes().startswith(line("a"))
    assert any("1 records removed, to be sent again" in w for w in warnings)


def failed(custom_id: str, etype: str, status_code: int | None = None) -> bytes:
    return line(custom_id, "error", error={"type": etype, "status_code": status_code, "message": "m"})


def test_a_rerun_sends_again_the_failures_that_a_resend_can_fix(tmp_path):
    out = tmp_path / "out.jsonl"
    sent_again = {"key": failed("key", "http_error", 401), "url": failed("url", "http_error", 404),
                  "limit": failed("limit", "http_error", 429), "slow": failed("slow", "timeout"),
                  "empty": failed("empty", "empty_response"), "cut": failed("cut", "incomplete_stream"),
                  "odd": failed("odd", "a_type_from_the_future")}
    kept = {"bad": failed("bad", "invalid_input"), "long": failed("long", "context_length_exceeded", 400),
            "big": failed("big", "response_too_large"), "tpm": failed("tpm", "exceeds_tpm")}
    out.write_bytes(line("ok") + b"".join(sent_again.values()) + b"".join(kept.values())
                    + failed("twice", "timeout") + line("twice"))  # already superseded by a rerun: ok
    final: list[str] = []
    held: list[str] = []
    found = prepare_resume(str(out), False, lambda m: None, lambda r: final.append(r.custom_id),
                           on_held=lambda r: held.append(r.custom_id))
    for cid in sent_again:
        assert cid not in found.done and found.done.resent(cid), cid
    for cid in ("ok", "twice", *kept):
        assert cid in found.done and not found.done.resent(cid), cid
    assert (found.resend, found.failed, len(found.held)) == (7, 11, 11)
    assert final == ["ok", "twice"] and held == list(kept)  # the summary counts held records at the end
    assert all(found.done.reopen(cid) for cid in kept) and not found.done.reopen("ok")  # their lines changed
    assert "bad" not in found.done and len(found.done) == 2
    everything = prepare_resume(str(out), False, lambda m: None, keep_failed=True)
    assert (everything.resend, len(everything.held), len(everything.done)) == (0, 0, 13)
    assert not everything.done.reopen("bad")  # --keep-failed: a changed line goes by the old rule


def test_the_rerun_table_names_real_error_types():
    from runner.stream import errors

    types = {cls.type for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, errors.RequestError)}
    assert set(outputs.RESENT_ONLY_IF_CHANGED) <= types


@pytest.mark.parametrize("given, found", [("openai-batch", "streamrun"), ("streamrun", "openai-batch")])
def test_resume_in_another_output_format_is_refused_before_anything_changes(tmp_path, given, found):
    from runner.errors import UsageError
    from runner.outputs.batch import encode_batch

    out = tmp_path / "out.jsonl"
    record = Record("a", "error")
    first = orjson.dumps(record if found == "streamrun" else encode_batch(record)) + b"\n"
    out.write_bytes(b"torn?\n" + first)
    with pytest.raises(UsageError, match=f"out.jsonl holds {found} records, not {given}: resume it with "
                                         f"--output-format {found}") as info:
        prepare_resume(str(out), True, lambda m: None, output_format=given)
    assert info.value.exit_code == 2 and out.read_bytes() == b"torn?\n" + first  # not rewritten
    assert len(prepare_resume(str(out), False, lambda m: None, output_format=found).held) == 1


# -- the writer ------------------------------------------------------------------


def records(*ids: str) -> list[Record]:
    return [Record(cid, "ok", text=f"answer {cid}") for cid in ids]


def encoded(rs: list[Record]) -> bytes:
    return b"".join(orjson.dumps(r) + b"\n" for r in rs)


async def test_writer_writes_whole_lines(tmp_path):
    path = tmp_path / "out.jsonl"
    fd = open_output(str(path), resume=False, overwrite=True)
    writer = ResultWriter(fd, FsyncPolicy("always"))
    task = asyncio.create_task(writer.run())
    batch = records("a", "b", "c")
    for r in batch:
        writer.put(r)
    await writer.close()
    await asyncio.wait_for(task, 10)
    os.close(fd)
    assert path.read_bytes() == encoded(batch)
    assert [orjson.loads(x)["custom_id"] for x in path.read_bytes().splitlines()] == ["a", "b", "c"]
    assert (writer.written, writer.pending, writer.failed) == (3, 0, None)



@pytest.mark.parametrize("encode", [None, lambda r: {"batch": r.custom_id}])
async def test_a_line_already_encoded_is_written_as_is_unless_the_output_has_its_own_format(tmp_path, encode):
    # --workers: the parent writes the worker's line; --output-format batch still encodes the record
    path = tmp_path / "out.jsonl"
    fd = open_output(str(path), resume=False, overwrite=True)
    writer = ResultWriter(fd, FsyncPolicy("never"), encode=encode)
    task = asyncio.create_task(writer.run())
    a, b = records("a", "b")
    writer.put(a, b'{"as":"sent"}')
    writer.put(b)
    await writer.close()
    await asyncio.wait_for(task, 10)
    os.close(fd)
    if encode is None:
        assert path.read_bytes() == b'{"as":"sent"}\n' + encoded([b])
    else:
        assert path.read_bytes() == b'{"batch":"a"}\n{"batch":"b"}\n'


@pytest.mark.parametrize("extra_bytes", [0, 1, 17])
async def test_full_disk_cuts_the_half_line_and_reports_output_failed(tmp_path, monkeypatch, extra_bytes):
    path = tmp_path / "out.jsonl"
    fd = open_output(str(path), resume=False, overwrite=True)
    batch = records("a", "b", "c")
    first = encoded(batch[:1])
    disk = FullDisk(len(first) + extra_bytes)  # room for one line and a piece of the next
    monkeypatch.setattr(outputs, "os", disk)
    failures: list[OutputFailed] = []
    told: list[Record] = []
    writer = ResultWriter(fd, FsyncPolicy("never"), name="out.jsonl", on_failure=failures.append,
                          on_written=told.append)
    task = asyncio.create_task(writer.run())
    for r in batch:
        writer.put(r)
    await asyncio.wait_for(task, 10)  # the writer stops on the failure, it does not die unseen
    assert path.read_bytes() == first  # whole lines only: the piece of "b" was cut back off
    assert (writer.written, writer.pending) == (1, 2)  # "b" and "c" still queued, in order
    assert told == batch[:1]  # the summary counts what the file got
    assert failures == [writer.failed] and isinstance(writer.failed, OutputFailed)
    assert writer.failed.exit_code == 4
    assert str(writer.failed) == "cannot write out.jsonl: No space left on device; no new requests are sent"
    disk.room = 1 << 20  # space freed: close writes what was queued
    await writer.close()
    os.close(fd)
    assert path.read_bytes() == encoded(batch)
    assert writer.written == 3 and failures == [writer.failed]  # told once
    assert told == batch


async def test_close_on_a_still_full_disk_keeps_the_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "out.jsonl"
    fd = open_output(str(path), resume=False, overwrite=True)
    monkeypatch.setattr(outputs, "os", FullDisk(5))
    failures: list[OutputFailed] = []
    writer = ResultWriter(fd, FsyncPolicy("never"), on_failure=failures.append)
    for r in records("a", "b"):
        writer.put(r)
    await writer.close()  # no run task: close writes, fails, and reports instead of raising
    os.close(fd)
    assert path.read_bytes() == b"" and writer.pending == 2 and len(failures) == 1
