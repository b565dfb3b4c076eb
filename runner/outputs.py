"""The results file: one writer, whole lines, flush/fsync policy, resume and lock.

Crash model: each batch of records is handed to the kernel with one
`os.write` of whole lines on an O_APPEND descriptor, so `kill -9` can only
lose records still in memory (requests in flight, in effect); a torn last
line (disk full, power loss without fsync) is cut away by the next run.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson

from .batchfmt import decode_batch, is_batch_line
from .config import FsyncPolicy
from .errors import OutputFailed, OutputLocked, UsageError
from .ids import DoneIds, HashSorter, answered_key, id_hash
from .io.jsonl import JsonlReader
from .record import Record, decode_native, posix_time


class OutputExists(UsageError):
    """The output exists and neither resume nor overwrite was asked for (exit 2).

    The message says how to ask in the caller's words: `--resume` or
    `--overwrite` on the command line, `resume=True` or `overwrite=True`
    from Python (`streamrun.run`, `streamrun.stream`).  `path` is the output.
    """

    def __init__(self, path: str, *, cli: bool = True) -> None:
        resume, overwrite = ("--resume", "--overwrite") if cli else ("resume=True", "overwrite=True")
        super().__init__(f"{path} already exists: pass {resume} to continue it or {overwrite} to replace it")
        self.path = path


def lock_output(path: str) -> int:
    """Take an exclusive flock on PATH.lock; the kernel drops it if we die, so it never goes stale.

    The holder removes the file when it is done (`unlock_output`), so another run may have opened
    the file just before it went and then get its lock: a lock on a file no longer at PATH.lock,
    which keeps nobody out.  So the lock counts only once the file it is on is still the one at
    PATH.lock; else the run opens PATH.lock afresh and tries again.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    lock_path = path + ".lock"
    while True:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputLocked(f"{path} is being written by another streamrun run (lock {lock_path} is held)") \
                from None
        if _same_file(fd, lock_path):
            break
        os.close(fd)  # its holder removed it after we opened it: ours would lock nothing
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def unlock_output(path: str, fd: int) -> None:
    """Remove PATH.lock and release its lock: removed while still held, so that no run can lock the
    file between the two and think it holds the output (`lock_output` checks the file is still there)."""
    try:
        if _same_file(fd, path + ".lock"):  # never another run's: someone may have replaced ours by hand
            os.unlink(path + ".lock")
    except OSError:
        pass  # a read-only folder, say: the lock file stays, as it did before; the lock goes all the same
    finally:
        os.close(fd)


def _same_file(fd: int, path: str) -> bool:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (held.st_dev, held.st_ino)


def repair_torn_tail(path: str) -> int:
    """Cut a last line that has no newline or is not valid JSON; return the bytes cut."""
    try:
        size = os.path.getsize(path)
    except FileNotFoundError:
        return 0
    if size == 0:
        return 0
    with open(path, "rb+") as f:
        start = max(0, size - (1 << 16))
        while True:
            f.seek(start)
            tail = f.read(size - start)
            cut = tail.rfind(b"\n", 0, len(tail) - 1)
            if cut >= 0 or start == 0:
                break
            start = max(0, start - (1 << 20))
        line_start = start + cut + 1 if cut >= 0 else 0
        last = tail[line_start - start:]
        if last.endswith(b"\n"):
            try:
                orjson.loads(last)
                return 0
            except orjson.JSONDecodeError:
                pass
        f.truncate(line_start)
        return size - line_start


def decode_result(obj: Any) -> Record:
    """One parsed line of a results file, in either output format, as a Record.

    The one place that decides what a results line is: the report, merge and
    resume read through it. ValueError says why a line is not a record.
    """
    if type(obj) is dict and is_batch_line(obj):  # --output-format openai-batch
        try:
            return decode_batch(obj)
        except ValueError as exc:
            raise ValueError(f"an OpenAI Batch output line with {exc}") from None
    return decode_native(obj)


@dataclass
class Prior:
    """What the output held before this run, per stage label: the records' count and time span.

    `--num-prompts` and `--duration` count the whole output, so that
    rerunning the same command (after a crash, a signal, a full disk)
    finishes the same job instead of sending that much again.
    """

    counts: dict = field(default_factory=dict)
    spans: dict = field(default_factory=dict)  # label -> [first start, last end], POSIX seconds

    def add(self, record: Record) -> None:
        if record.warmup or not record.attempts:  # warm-ups and invalid lines were not prompts sent
            return
        label = record.label
        self.counts[label] = self.counts.get(label, 0) + 1
        start = posix_time(record.metrics.started_at)
        if start is None:
            return
        end = start + (record.metrics.e2e_s or 0.0)
        span = self.spans.get(label)
        if span is None:
            self.spans[label] = [start, end]
        else:
            span[0], span[1] = min(span[0], start), max(span[1], end)

    def sent(self, label: str | None) -> int:
        return self.counts.get(label, 0)

    def elapsed(self, label: str | None) -> float:
        span = self.spans.get(label)
        return span[1] - span[0] if span else 0.0


def prepare_resume(path: str, retry_failed: bool, warn: Callable[[str], None],
                   on_record: Callable[[Record], None] | None = None,
                   drop: Callable[[Record], bool] | None = None) -> DoneIds:
    """Read the ids already done; with retry_failed, first drop the error records.

    Dropping them (copy, fsync, atomic rename) keeps one record per id once
    the retried requests append their new outcome.  Both output formats
    are understood (`decode_result`).  `on_record` sees every record kept,
    so the run's summary and limits can cover the whole output.
    """
    cut = repair_torn_tail(path)
    if cut:
        warn(f"{path}: cut a torn last line ({cut} bytes) left by an interrupted run")
    hashes, answered = HashSorter(), HashSorter()
    dropped = 0
    tmp = path + ".resume.tmp"
    rewrite = retry_failed or drop is not None
    with JsonlReader(path, warn=warn, verb="unreadable record skipped: ") as reader, \
            (open(tmp, "wb") if rewrite else nullcontext()) as dst:
        for _, raw, record in reader.decoded(decode_result):
            if rewrite:
                if (retry_failed and not record.ok) or (drop is not None and drop(record)):
                    dropped += 1
                    continue
                dst.write(raw + b"\n")
            if not record.warmup:
                hashes.add(id_hash(record.key))
                answered.add(id_hash(answered_key(record.key, record.request_hash)))
            if on_record is not None:
                on_record(record)
        if rewrite:
            dst.flush()
            os.fsync(dst.fileno())
    if rewrite:
        os.replace(tmp, path)
        if dropped:
            warn(f"{path}: {dropped} records removed, to be sent again")
    return DoneIds(hashes, answered)


def open_output(path: str, *, resume: bool, overwrite: bool, cli: bool = True) -> int:
    """The output's descriptor (append; truncated with overwrite); OutputExists, worded for `cli` or Python."""
    if os.path.exists(path) and os.path.getsize(path) > 0 and not (resume or overwrite):
        raise OutputExists(path, cli=cli)
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
    if overwrite and not resume:
        flags |= os.O_TRUNC
    return os.open(path, flags, 0o644)


class ResultWriter:
    """The only writer of the results file.

    Workers call `put()` (no await, no syscall); the writer task wakes once
    per loop turn, writes everything queued with one `os.write`, and fsyncs
    by policy on a thread, so a slow disk never stalls the streams.
    """

    def __init__(self, fd: int, fsync: FsyncPolicy = FsyncPolicy(),
                 encode: Callable[[Record], dict] | None = None, *, name: str = "the output",
                 on_failure: Callable[[OutputFailed], None] | None = None) -> None:
        self.fd = fd
        self.fsync = fsync
        self.encode = encode
        self.name = name
        self.on_failure = on_failure  # told once, when a write or fsync fails (the run stops sending)
        self.failed: OutputFailed | None = None
        self.written = 0
        self._buf: list[bytes] = []
        self._wake = asyncio.Event()
        self._closed = False
        self._last_sync = time.monotonic()
        self._dirty = False

    def put(self, record: Record, line: bytes | None = None) -> None:
        """`line`: the record already encoded as a results line (a worker's, `runner.workers`), written as is."""
        if self.encode is not None:
            self._buf.append(orjson.dumps(self.encode(record)) + b"\n")
        elif line is not None:
            self._buf.append(line + b"\n")
        else:
            self._buf.append(orjson.dumps(record) + b"\n")
        self._wake.set()

    def _write_buffered(self) -> None:
        if not self._buf:
            return
        lines, self._buf = self._buf, []
        data = b"".join(lines)
        view = memoryview(data)
        done = 0
        try:
            while done < len(data):
                done += os.write(self.fd, view[done:])
        except OSError:
            # Keep the file whole: cut a half-written line back off and queue what was not written.
            complete = data.rfind(b"\n", 0, done) + 1
            try:
                os.ftruncate(self.fd, os.fstat(self.fd).st_size - (done - complete))
            except OSError:
                pass
            kept = data.count(b"\n", 0, complete)
            self.written += kept
            self._dirty = self._dirty or kept > 0
            self._buf = lines[kept:] + self._buf
            raise
        self.written += len(lines)
        self._dirty = True

    @property
    def pending(self) -> int:
        return len(self._buf)

    async def run(self) -> None:
        """Write what workers queue until closed; an OSError ends it with `failed` set, never silently."""
        try:
            while not self._closed:
                if self._dirty and self.fsync.mode == "interval":
                    try:  # sync a quiet file too, not only when the next record comes
                        await asyncio.wait_for(self._wake.wait(), self.fsync.interval_s)
                    except TimeoutError:
                        pass
                else:
                    await self._wake.wait()
                self._wake.clear()
                self._write_buffered()
                await self._maybe_sync()
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        if self.failed is None:
            self.failed = OutputFailed(f"cannot write {self.name}: {exc.strerror or exc}; no new requests are sent")
            if self.on_failure is not None:
                self.on_failure(self.failed)

    async def _maybe_sync(self, force: bool = False) -> None:
        if not self._dirty or self.fsync.mode == "never":
            return
        due = self.fsync.mode == "always" or time.monotonic() - self._last_sync >= self.fsync.interval_s
        if due or force:
            self._dirty = False
            self._last_sync = time.monotonic()
            await asyncio.to_thread(os.fsync, self.fd)

    async def close(self) -> None:
        """Write what is queued (once more after a failure: space may have been freed) and sync."""
        self._closed = True
        self._wake.set()
        try:
            self._write_buffered()
            await self._maybe_sync(force=True)
        except OSError as exc:
            self._fail(exc)

    def flush_now(self) -> None:
        """Synchronous last-resort flush (second signal): whatever is queued is written."""
        self._write_buffered()
