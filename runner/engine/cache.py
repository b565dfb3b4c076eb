"""The response cache: ok records kept in one SQLite file, keyed by a hash of the request.

Key
    :func:`cache_key` is the SHA-256 (hex) of the canonical JSON (orjson,
    sorted keys, at every depth) of ``{"endpoint": path, "body": body}``,
    with ``stream`` and ``stream_options`` left out of the body: two requests
    that differ only in key order or in how they stream get the same answer.
    The model is part of the body, so it is part of the key.  The base URL is
    not: the caller points a cache file at one deployment.

Secrets
    The API key is never stored.  It travels in HTTP headers, and headers
    are part of neither the request body nor the key; what is stored is the
    record exactly as :meth:`ResponseCache.put` receives it, and a result
    record holds no headers.  (The caller must not add any.)

Modes (:data:`MODES`)
    ``read-write``  serves stored answers; stores new ones (a put replaces
                    an entry a concurrent run wrote in the meantime).
    ``read-only``   serves stored answers; never writes (the file is opened
                    read-only, so SQLite itself refuses writes).
    ``write-only``  never serves; stores answers for keys it does not have,
                    and keeps the entries it has.
    ``refresh``     never serves; stores every answer, replacing old ones.
    Only records with ``status == "ok"`` are stored; other puts are ignored.

Concurrency
    Several streamrun processes may share one file: it is in WAL mode
    (readers never wait for writers), every connection waits up to
    ``busy_timeout`` (30 s) for a lock instead of failing with "database is
    locked", and writes are short ``BEGIN IMMEDIATE`` transactions, so no
    read transaction ever has to upgrade to a write lock.
    All SQLite work of one cache runs on one dedicated thread that owns the
    connection; coroutines hand it jobs and await the answer, so the event
    loop never waits on the disk.  Puts are batched on that thread and
    committed once a second, or sooner when ``flush_rows`` records or
    ``flush_bytes`` bytes are pending; ``synchronous=FULL`` makes each
    commit durable, so a crash (of the process or the machine) loses at
    most the answers of the last second.  A get sees the pending puts of its
    own cache.  Memory stays flat: nothing of the table is held in memory
    beyond SQLite's page cache and the one pending batch.

Schema (version 1)
    ``meta(name TEXT PRIMARY KEY, value TEXT)`` holds ``('schema', 'streamrun-cache')``
    and ``('version', '1')``; ``responses(key TEXT PRIMARY KEY, record TEXT,
    created_at REAL)``: the key, the record as JSON text, and the Unix time
    (seconds, UTC) it was stored.  Both are created when missing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

import orjson

from ..errors import UsageError

READ_WRITE = "read-write"
READ_ONLY = "read-only"
WRITE_ONLY = "write-only"
REFRESH = "refresh"
#: The modes :meth:`ResponseCache.open` takes, the default first.
MODES: tuple[str, ...] = (READ_WRITE, READ_ONLY, WRITE_ONLY, REFRESH)

SCHEMA_NAME = "streamrun-cache"
SCHEMA_VERSION = 1
BUSY_TIMEOUT_S = 30.0
FLUSH_INTERVAL_S = 1.0
FLUSH_ROWS = 256
FLUSH_BYTES = 8 << 20

#: Left out of the body before hashing: they change how the answer arrives, not what it is.
_TRANSPORT_KEYS = frozenset({"stream", "stream_options"})

_SCHEMA_SQL = (
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS responses ("
    " key TEXT PRIMARY KEY,"
    " record TEXT NOT NULL,"
    " created_at REAL NOT NULL)",
)
_INSERT_KEEP = "INSERT OR IGNORE INTO responses (key, record, created_at) VALUES (?, ?, ?)"
_INSERT_REPLACE = "INSERT OR REPLACE INTO responses (key, record, created_at) VALUES (?, ?, ?)"

T = TypeVar("T")


class CacheError(UsageError):
    """The cache file cannot be used (not SQLite, corrupt, another schema, unreadable): exit 2.

    ``path`` is the file; ``reason`` says what is wrong with it.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"response cache {path}: {reason}")
        self.path = path
        self.reason = reason


@dataclass(slots=True)
class CacheStats:
    """Counters for the run summary.

    ``hits``: gets answered from the cache; ``misses``: gets not answered
    (in ``write-only`` and ``refresh`` every get is a miss); ``writes``:
    entries committed to the file (a ``write-only`` put of a key the file
    already has writes nothing).  ``writes`` is final once the cache is closed.
    """

    hits: int = 0
    misses: int = 0
    writes: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def cache_key(endpoint_path: str, body: dict[str, Any]) -> str:
    """The cache key of a request: SHA-256 hex of its canonical JSON (see the module docstring).

    Headers, and so the API key, are no part of it.
    """
    kept = {k: v for k, v in body.items() if k not in _TRANSPORT_KEYS}
    canonical = orjson.dumps({"endpoint": endpoint_path, "body": kept}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(canonical).hexdigest()


class ResponseCache:
    """One cache file, opened in one mode; make it with :meth:`open`, end it with :meth:`close` or :meth:`aclose`."""

    def __init__(self, worker: _Worker) -> None:
        self._worker = worker
        self.path = worker.path
        self.mode = worker.mode
        self.stats = worker.stats
        self._serves = worker.mode in (READ_WRITE, READ_ONLY)
        self._stores = worker.mode != READ_ONLY

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        mode: str = READ_WRITE,
        *,
        busy_timeout: float = BUSY_TIMEOUT_S,
        flush_interval: float = FLUSH_INTERVAL_S,
        flush_rows: int = FLUSH_ROWS,
        flush_bytes: int = FLUSH_BYTES,
    ) -> ResponseCache:
        """Open (creating it, unless ``read-only``) the cache at ``path``; raises :class:`CacheError`.

        This waits for the file to be set up (at most ``busy_timeout``), so
        call it before the load starts, or through ``asyncio.to_thread``.
        """
        if mode not in MODES:
            raise CacheError(os.fspath(path), f"unknown mode {mode!r} (expected one of {', '.join(MODES)})")
        worker = _Worker(os.fspath(path), mode, busy_timeout, flush_interval, max(1, flush_rows), flush_bytes)
        worker.start()
        try:
            worker.submit(worker.setup).result()
        except BaseException:
            worker.stop()
            raise
        return cls(worker)

    async def get(self, key: str) -> dict[str, Any] | None:
        """The stored record of ``key``, or None (always None in ``write-only`` and ``refresh``)."""
        record = await self._call(self._worker.get, key) if self._serves else None
        if record is None:
            self.stats.misses += 1
        else:
            self.stats.hits += 1
        return record

    async def put(self, key: str, record: dict[str, Any]) -> bool:
        """Store ``record`` (as given) under ``key``; False when it is not stored.

        Ignored (False) in ``read-only`` mode and for a record whose status
        is not ``"ok"``.  The record is encoded now, so later changes to the
        dict do not reach the file; it is committed within ``flush_interval``.
        """
        if not self._stores or record.get("status") != "ok":
            return False
        data = orjson.dumps(record).decode()
        await self._call(self._worker.put, key, data, time.time())
        return True

    async def flush(self) -> None:
        """Commit the pending puts now."""
        await self._call(self._worker.flush)

    def close(self) -> None:
        """Commit the pending puts and close the file; idempotent.

        Waits for that commit (one batch at most); raises :class:`CacheError`
        when it, or an earlier background commit nobody has seen fail, failed.
        """
        self._worker.stop()

    async def aclose(self) -> None:
        """:meth:`close` without blocking the event loop."""
        await asyncio.to_thread(self._worker.stop)

    def __enter__(self) -> ResponseCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ResponseCache:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.wrap_future(self._worker.submit(fn, *args))


class _Stop:
    """The job that ends the worker thread."""


class _Worker(threading.Thread):
    """The thread that owns the SQLite connection: every call on it runs here, in order."""

    def __init__(
        self,
        path: str,
        mode: str,
        busy_timeout: float,
        flush_interval: float,
        flush_rows: int,
        flush_bytes: int,
    ) -> None:
        # Daemon: a run that dies without closing must not hang at exit; it loses the pending batch only.
        super().__init__(name=f"streamrun-cache:{os.path.basename(path)}", daemon=True)
        self.path = path
        self.mode = mode
        self.busy_timeout = busy_timeout
        self.flush_interval = flush_interval
        self.flush_rows = flush_rows
        self.flush_bytes = flush_bytes
        self.stats = CacheStats()
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._conn: sqlite3.Connection | None = None
        self._pending: dict[str, tuple[str, float]] = {}
        self._pending_bytes = 0
        self._pending_since = 0.0
        self._error: CacheError | None = None  # a failed commit, raised by the next call
        self._stopped = False
        self._lock = threading.Lock()
        self._insert = _INSERT_KEEP if mode == WRITE_ONLY else _INSERT_REPLACE

    # -- called from any thread ------------------------------------------

    def submit(self, fn: Callable[..., T], *args: Any) -> concurrent.futures.Future[T]:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._stopped:
                raise RuntimeError(f"response cache {self.path} is closed")
            self._jobs.put((future, fn, args))
        return future

    def stop(self) -> None:
        """Flush, close the connection and end the thread; idempotent.  Raises a failed final commit."""
        with self._lock:
            first = not self._stopped
            self._stopped = True
            if first:
                self._jobs.put(_Stop())
        self.join()
        if first and self._error is not None:
            error, self._error = self._error, None
            raise error

    # -- on this thread --------------------------------------------------

    def run(self) -> None:
        while True:
            timeout = None
            if self._pending:
                timeout = max(0.0, self._pending_since + self.flush_interval - time.monotonic())
            try:
                job = self._jobs.get(timeout=timeout)
            except queue.Empty:
                self._flush_quietly()
                continue
            if isinstance(job, _Stop):
                self._flush_quietly()
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                return
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                result = fn(*args)
            except BaseException as e:  # handed to the awaiting coroutine
                future.set_exception(e)
            else:
                future.set_result(result)
            if self._pending and (
                len(self._pending) >= self.flush_rows
                or self._pending_bytes >= self.flush_bytes
                or time.monotonic() - self._pending_since >= self.flush_interval
            ):
                self._flush_quietly()

    def setup(self) -> None:
        """Connect, switch to WAL, create or check the schema; retried while another process holds a lock."""
        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                self._setup_once()
                return
            except BaseException as e:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None
                if not isinstance(e, sqlite3.Error):
                    raise
                # Switching a new file to WAL can report "locked" at once, without the busy wait.
                if isinstance(e, sqlite3.OperationalError) and _is_busy(e) and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise self._wrap(e) from None

    def _setup_once(self) -> None:
        path = Path(self.path)
        if self.mode == READ_ONLY:
            if not path.exists():
                raise CacheError(self.path, "does not exist (read-only mode does not create it)")
            if not path.is_file():
                raise CacheError(self.path, "is not a file")
            target, uri = path.absolute().as_uri() + "?mode=ro", True
        else:
            if path.is_dir():
                raise CacheError(self.path, "is a directory")
            path.parent.mkdir(parents=True, exist_ok=True)
            target, uri = self.path, False
        conn = sqlite3.connect(target, uri=uri, timeout=self.busy_timeout, isolation_level=None)
        self._conn = conn
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        if self.mode == READ_ONLY:
            conn.execute("PRAGMA query_only = ON")
        else:
            journal = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(journal).lower() != "wal":
                raise CacheError(self.path, f"cannot use WAL mode (journal mode stays {journal!r}; a network filesystem?)")
            conn.execute("PRAGMA synchronous = FULL")
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if not tables and self.mode != READ_ONLY:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for sql in _SCHEMA_SQL:
                    conn.execute(sql)
                conn.executemany(
                    "INSERT OR IGNORE INTO meta (name, value) VALUES (?, ?)",
                    [("schema", SCHEMA_NAME), ("version", str(SCHEMA_VERSION))],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            tables = {"meta", "responses"}
        if "meta" not in tables or "responses" not in tables:
            what = "an empty SQLite database" if not tables else "a SQLite database but not a streamrun cache"
            raise CacheError(self.path, f"is {what}")
        meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        if meta.get("schema") != SCHEMA_NAME:
            raise CacheError(self.path, "is a SQLite database but not a streamrun cache")
        if meta.get("version") != str(SCHEMA_VERSION):
            raise CacheError(
                self.path,
                f"has cache schema version {meta.get('version')!r}; this streamrun reads version {SCHEMA_VERSION}",
            )

    def get(self, key: str) -> dict[str, Any] | None:
        pending = self._pending.get(key)
        if pending is not None:
            return orjson.loads(pending[0])
        try:
            row = self._db().execute("SELECT record FROM responses WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as e:
            raise self._wrap(e) from None
        if row is None:
            return None
        try:
            record = orjson.loads(row[0])
        except orjson.JSONDecodeError:
            return None  # a damaged entry is a miss; the next read-write or refresh put replaces it
        return record if isinstance(record, dict) else None

    def put(self, key: str, data: str, created_at: float) -> None:
        if not self._pending:
            self._pending_since = time.monotonic()
        old = self._pending.get(key)
        if old is not None:
            if self._insert is _INSERT_KEEP:
                return
            self._pending_bytes -= len(old[0])
        self._pending[key] = (data, created_at)
        self._pending_bytes += len(data)

    def flush(self) -> None:
        if not self._pending:
            return
        rows = [(k, d, t) for k, (d, t) in self._pending.items()]
        self._pending.clear()
        self._pending_bytes = 0
        conn = self._db()
        try:
            before = conn.total_changes
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(self._insert, rows)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            self.stats.writes += conn.total_changes - before
        except sqlite3.Error as e:
            raise self._wrap(e) from None

    def _flush_quietly(self) -> None:
        """A flush nobody awaits: its failure is kept and raised by the next call (or the close)."""
        try:
            self.flush()
        except CacheError as e:
            self._error = e
        except Exception as e:  # never let the thread die with jobs still to come
            self._error = CacheError(self.path, f"{type(e).__name__}: {e}")

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"response cache {self.path} is not open")
        return self._conn

    def _wrap(self, e: sqlite3.Error) -> CacheError:
        text = str(e)
        if isinstance(e, sqlite3.DatabaseError) and "not a database" in text:
            return CacheError(self.path, f"is not a SQLite database, or its header is corrupt ({text})")
        if isinstance(e, sqlite3.DatabaseError) and "malformed" in text:
            return CacheError(self.path, f"is corrupt ({text}); delete it to start a new cache")
        if "unable to open" in text:
            return CacheError(self.path, f"cannot be opened ({text})")
        return CacheError(self.path, text)


def _is_busy(e: sqlite3.OperationalError) -> bool:
    text = str(e)
    return "locked" in text or "busy" in text
