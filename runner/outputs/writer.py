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
from array import array
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import orjson

from ..config.run_config import FsyncPolicy
from ..errors import OutputFailed, OutputLocked, UsageError
from ..inputs.ids import DoneIds, HashSorter, answered_key, id_hash, sorted_has
from ..io.jsonl import JsonlReader
from ..record import Record, posix_time
from .batch import decode_result, detect_format
from .finals import FinalRecords, keyed_by_place, place_key, records_at


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


@dataclass
class Prior:
    """What the output held before this run, per stage label: the records' count and time span.

    `--num-prompts` and `--duration` count the whole output, so that
    rerunning the same command (after a crash, a signal, a full disk)
    finishes the same job instead of sending that much again.  A failed
    record whose line this run sends again took its time (`count=False`):
    it is in the span, not in the count, since its line is sent again.
    """

    counts: dict = field(default_factory=dict)
    spans: dict = field(default_factory=dict)  # label -> [first start, last end], POSIX seconds

    def add(self, record: Record, count: bool = True) -> None:
        if record.warmup or not record.attempts:  # warm-ups and invalid lines were not prompts sent
            return
        label = record.label
        if count:
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


#: Which failed records a rerun (--resume) sends again: the one place that decides it (README, "Reruns").
#: A failure of these types comes back every time the same line is sent, so its record stays final until
#: the line changes (then it is sent again as a matter of course), or --retry-failed sends it anyway
#: (after raising --tpm or --max-response-bytes, say). Every other error is sent again: what it depends
#: on may have been fixed since (the key, the URL or the model for a 401/403/404, the server, the network).
#: --keep-failed sends none again.
RESENT_ONLY_IF_CHANGED: dict[str, str] = {
    "invalid_input": "the line could not become a request: nothing was sent",
    "context_length_exceeded": "the prompt and its max_tokens do not fit the model's context",
    "response_too_large": "an answer over --max-event-bytes or --max-response-bytes: the same request gets it again",
    "exceeds_tpm": "the request alone needs more tokens than the --tpm quota: it is never sent",
}


def resent_on_rerun(record: Record) -> bool:
    """Whether a rerun sends a final error record's line again although the line did not change."""
    err = record.error
    return (err.type if err is not None else None) not in RESENT_ONLY_IF_CHANGED


class HeldRecords:
    """Final error records that this run sends again (or may: a line changed since): the summary counts one
    only at the end, and only if no record of its key was written meanwhile (an interrupted run, one that
    --num-prompts stopped first), so that it counts each key's final record once (runner/outputs/finals.py).

    16 bytes a held record and 8 a record written by this run, whatever their number.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._lines, self._hashes = array("Q"), array("Q")  # in file order
        self._by_place = bytearray()  # 1: keyed by its place (runner.outputs.finals.keyed_by_place)
        self._some_by_place = False
        self._keys, self._places = HashSorter(), HashSorter()  # of the records written by this run

    def __len__(self) -> int:
        return len(self._lines)

    def hold(self, line: int, record: Record) -> None:
        self._lines.append(line)
        self._hashes.append(id_hash(record.key))
        by_place = keyed_by_place(record)
        self._by_place.append(by_place)
        self._some_by_place = self._some_by_place or by_place

    def written(self, record: Record) -> None:
        """A record of this run reached the file: it supersedes the held record of its key, if any."""
        if record.warmup:
            return
        key = record.key
        self._keys.add(id_hash(key))
        if self._some_by_place:  # then a record from that place supersedes it too
            place = place_key(record)
            if place is not None and place != key:
                self._places.add(id_hash(place))

    def left(self) -> Iterator[Record]:
        """The held records that stayed final, read back from the file."""
        keys, places = self._keys.sorted(), self._places.sorted()
        lines = array("Q", (line for line, h, by_place in zip(self._lines, self._hashes, self._by_place, strict=True)
                            if not (sorted_has(keys, h) or (by_place and sorted_has(places, h)))))
        return records_at(self.path, lines)


@dataclass
class Resume:
    """What --resume found in the output, by final records (runner/outputs/finals.py)."""

    done: DoneIds  # the keys whose final record stays: skipped
    held: HeldRecords  # the failed records that this run may supersede
    resend: int = 0  # final error records whose lines are sent again
    failed: int = 0  # final error records in all


def _drop_records(path: str, drop: Callable[[Record], bool], warn: Callable[[str], None]) -> None:
    """Rewrite the output without the records `drop` picks (copy, fsync, atomic rename)."""
    tmp = path + ".resume.tmp"
    dropped = 0
    with JsonlReader(path, warn=_quiet) as reader, open(tmp, "wb") as dst:
        for _, raw, record in reader.decoded(decode_result):
            if drop(record):
                dropped += 1
                continue
            dst.write(raw + b"\n")
        dst.flush()
        os.fsync(dst.fileno())
    os.replace(tmp, path)
    if dropped:
        warn(f"{path}: {dropped} records removed, to be sent again")


def _quiet(message: str) -> None:
    pass


def _check_format(path: str, output_format: str) -> None:
    """One file, one record format: appending the other kind would mix them (exit 2 instead)."""
    with JsonlReader(path, warn=_quiet) as reader:
        for _, _, obj in reader.objects():
            try:
                decode_result(obj)
            except ValueError:
                continue
            found = detect_format(obj)
            if found != output_format:
                raise UsageError(f"{path} holds {found} records, not {output_format}: resume it with "
                                 f"--output-format {found} (job key output_format), or write another -o")
            return


def prepare_resume(path: str, retry_failed: bool, warn: Callable[[str], None],
                   on_record: Callable[[Record], None] | None = None,
                   drop: Callable[[Record], bool] | None = None, *, keep_failed: bool = False,
                   output_format: str | None = None,
                   on_held: Callable[[Record], None] | None = None,
                   on_resent: Callable[[Record], None] | None = None) -> Resume:
    """Read the output's final records: the keys done, and the failed lines to send again.

    A final error record's line is sent again by the rule of `resent_on_rerun`
    (none with `keep_failed`); its new record is appended and supersedes it.
    With `retry_failed`, or `drop`, the file is first rewritten without the
    error records (or those `drop` picks: copy, fsync, atomic rename), so
    every failed line is sent again. Both output formats are understood
    (`decode_result`); `output_format`, when given, must be the file's.
    `on_record` sees every final record that stays final (the run's summary
    and limits cover the whole output); `on_held` the failed records that
    stay unless their line changed; `on_resent` those whose lines are sent
    again (their time was spent: --duration); both kinds are held (`Resume.held`).
    """
    cut = repair_torn_tail(path)
    if cut:
        warn(f"{path}: cut a torn last line ({cut} bytes) left by an interrupted run")
    if output_format is not None:
        _check_format(path, output_format)
    if retry_failed or drop is not None:
        _drop_records(path, lambda r: (retry_failed and not r.ok) or (drop is not None and drop(r)), warn)
    done, answered, resend, if_changed = HashSorter(), HashSorter(), HashSorter(), HashSorter()
    held = HeldRecords(path)
    sent_again = failed = 0
    with FinalRecords(path, warn=warn, verb="unreadable record skipped: ") as finals:
        for number, _, record in finals:
            if record.warmup:
                if on_record is not None:
                    on_record(record)
                continue
            h = id_hash(record.key)
            if not record.ok:
                failed += 1
                if not keep_failed:
                    held.hold(number, record)
                    if resent_on_rerun(record):
                        resend.add(h)
                        sent_again += 1
                        if on_resent is not None:
                            on_resent(record)
                        continue
                    if_changed.add(h)
                    if on_held is not None:
                        on_held(record)
            done.add(h)
            answered.add(id_hash(answered_key(record.key, record.request_hash)))
            if on_record is not None and (record.ok or keep_failed):
                on_record(record)
    return Resume(DoneIds(done, answered, resend=resend, if_changed=if_changed), held, sent_again, failed)


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
                 on_failure: Callable[[OutputFailed], None] | None = None,
                 on_written: Callable[[Record], None] | None = None) -> None:
        self.fd = fd
        self.fsync = fsync
        self.encode = encode
        self.name = name
        self.on_failure = on_failure  # told once, when a write or fsync fails (the run stops sending)
        # told of each record once its line is written: the summary counts what the file (or pipe) got
        self.on_written = on_written
        self.failed: OutputFailed | None = None
        self.written = 0
        self._buf: list[bytes] = []
        self._records: list[Record] = []  # beside _buf, with on_written
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
        if self.on_written is not None:
            self._records.append(record)
        self._wake.set()

    def _write_buffered(self) -> None:
        if not self._buf:
            return
        lines, self._buf = self._buf, []
        records, self._records = self._records, []
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
            self._records = records[kept:] + self._records
            self._told(records[:kept])
            raise
        self.written += len(lines)
        self._dirty = True
        self._told(records)

    def _told(self, records: list[Record]) -> None:
        if self.on_written is not None:
            for record in records:
                self.on_written(record)

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
