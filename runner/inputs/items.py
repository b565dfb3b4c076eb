"""Stream JSONL prompt files lazily, validate each line, give it an id and a source.

Never reads a file whole: lines are parsed one at a time, and the async side
pulls small batches through a worker thread so a slow stdin or disk never
blocks the event loop (and so never shows up as latency).
"""

from __future__ import annotations

import asyncio
import glob
import os
import stat
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import BinaryIO

import orjson

from ..errors import UsageError
from ..io.jsonl import MAX_LINE, JsonlReader
from ..stream.paths import InvalidRequestLine
from .ids import HashSorter, id_hash
from .lines import parse_line
from .sessions import Session, from_sharegpt, split_session

STDIN = "-"
STDIN_NAME = "<stdin>"


class InputError(UsageError):
    """A problem with the inputs as a whole (missing file, duplicate ids): fatal before sending."""


@dataclass(slots=True)
class InputItem:
    custom_id: str
    file: str
    line: int
    path: str | None = None  # API path; None for an invalid line
    body: dict | None = None
    error: str | None = None  # why the line is invalid
    raw: bytes = b""
    timestamp_ms: float | None = None  # when a trace sent it, ms (--replay: the run counts from the first line's)
    session: Session | None = None  # a line with "turns": a multi-turn session (runner.engine.session)

    @property
    def place(self) -> str:
        return f"{self.file}:{self.line}"


def expand_inputs(patterns: Iterable[str]) -> list[str]:
    """Globs to files, in a stable order; a pattern that matches nothing is an error."""
    paths: list[str] = []
    for pattern in patterns:
        if pattern == STDIN:
            paths.append(STDIN)
            continue
        matches = sorted(glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [pattern]
        matches = [m for m in matches if not os.path.isdir(m)]
        if not matches or not all(os.path.exists(m) for m in matches):
            raise InputError(f"{pattern}: no such input file")
        paths.extend(matches)
    if paths.count(STDIN) > 1:
        raise InputError("'-' (stdin) can be given only once")
    return paths


def default_id(file: str, line: int) -> str:
    name = STDIN_NAME if file == STDIN else os.path.basename(file)
    return f"{name}:{line}"


def is_regular(path: str) -> bool:
    """A file that can be read twice (scanned, then sent): not stdin, a FIFO or `<(process substitution)`."""
    if path == STDIN:
        return False
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _raw_lines(paths: list[str], max_line: int = MAX_LINE) -> Iterator[tuple[str, int, bytes, str | None]]:
    """(path, line number, line, None) for each non-blank line (runner.io.jsonl:
    lazily, BOM and line ends dropped); (path, number, b"", why) for a line too
    long to load, which becomes an invalid-input record like any bad line."""
    for path in paths:
        if path == STDIN:
            # stdin is read once, as it comes, through a reader of its own over a copy of
            # fd 0: interpreter shutdown flushes sys.stdin, whose lock a reader thread
            # blocked on an open pipe would hold (a fatal error after SIGTERM).
            with os.fdopen(os.dup(sys.stdin.fileno()), "rb") as stdin:
                yield from _lines_of(stdin, path, max_line)
        else:
            yield from _lines_of(path, path, max_line)


def _lines_of(source: str | BinaryIO, path: str, max_line: int) -> Iterator[tuple[str, int, bytes, str | None]]:
    refused: list[tuple[int, str]] = []
    with JsonlReader(source, name=path, max_line=max_line,
                     on_bad=lambda n, why: refused.append((n, why))) as reader:
        for number, raw in reader.lines():
            for bad, why in refused:
                yield path, bad, b"", why
            refused.clear()
            yield path, number, raw.strip(), None
    for bad, why in refused:
        yield path, bad, b"", why


def parse_item(path: str, number: int, raw: bytes, api: str = "chat", sharegpt: str = "prompts") -> InputItem:
    shown = STDIN_NAME if path == STDIN else path
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return InputItem(default_id(path, number), shown, number, error=f"not valid JSON ({exc})", raw=raw)
    timestamp = session = None
    try:
        if isinstance(obj, dict):
            obj, timestamp = _take_timestamp(obj)
            if "conversations" in obj and "messages" not in obj:
                obj = from_sharegpt(obj, sharegpt)
        split = split_session(obj) if isinstance(obj, dict) else None
        if split is not None:
            custom_id, api_path, body, session = _session_line(*split, api)
        else:
            custom_id, api_path, body = parse_line(obj, file=shown, line=number, api=api)
    except InvalidRequestLine as exc:
        cid = obj.get("custom_id") if isinstance(obj, dict) else None
        cid = cid if isinstance(cid, str) and cid else default_id(path, number)
        return InputItem(cid, shown, number, error=str(exc), raw=raw)
    cid = custom_id or default_id(path, number)
    try:
        orjson.dumps(body)  # JSON parses deeper than it encodes (255 levels): refuse it here, not mid-run
    except orjson.JSONEncodeError as exc:
        return InputItem(cid, shown, number, error=f"cannot be sent: nested too deeply or not encodable ({exc})",
                         raw=raw)
    return InputItem(cid, shown, number, api_path, body, raw=raw, timestamp_ms=timestamp, session=session)


def _take_timestamp(obj: dict) -> tuple[dict, float | None]:
    """A trace line's `timestamp` (ms from the trace's start) is streamrun's, never sent to the server."""
    if "timestamp" not in obj:
        return obj, None
    ts = obj["timestamp"]
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not 0 <= ts < float("inf"):
        raise InvalidRequestLine("'timestamp' must be a number of milliseconds >= 0 from the trace's start")
    return {k: v for k, v in obj.items() if k != "timestamp"}, float(ts)


def _session_line(rest: dict, session: Session, api: str) -> tuple[str | None, str, dict, Session]:
    """A session's id, API path and parameters; its first turn is checked as a line of its own would be."""
    probe = {**rest, "messages": [*session.prefix, {"role": "user", "content": session.turns[0]}]}
    custom_id, api_path, _ = parse_line(probe, file="", line=0, api=api)
    if "body" in rest:
        raise InvalidRequestLine("a session ('turns') is a shorthand line, not a Batch API line with 'body'")
    return custom_id, api_path, {k: v for k, v in rest.items() if k != "custom_id"}, session


def iter_items(paths: list[str], max_line: int = MAX_LINE, api: str = "chat",
               sharegpt: str = "prompts") -> Iterator[InputItem]:
    for path, number, raw, refused in _raw_lines(paths, max_line):
        if refused is None:
            yield parse_item(path, number, raw, api, sharegpt)
        else:
            shown = STDIN_NAME if path == STDIN else path
            yield InputItem(default_id(path, number), shown, number, error=refused)


def iter_input_ids(paths: list[str]) -> Iterator[tuple[str, str, int, bytes]]:
    """(custom_id, file, line, raw line) for every input line; used by merge and shards."""
    for item in iter_items(paths):
        yield item.custom_id, item.file, item.line, item.raw


async def aiter_items(items: Iterator[InputItem], batch: int = 256) -> AsyncIterator[InputItem]:
    """Pull items from a blocking iterator in small batches on a worker thread (regular files)."""
    while True:
        chunk = await asyncio.to_thread(lambda: list(islice(items, batch)))
        if not chunk:
            return
        for item in chunk:
            yield item


_END = object()


async def aiter_live(items: Iterator[InputItem], ahead: int = 256) -> AsyncIterator[InputItem]:
    """Items of a pipe, FIFO or stdin as each line arrives, never waiting for a batch to fill.

    A daemon thread reads and hands each item to the loop; at most `ahead`
    wait unread (backpressure).  Being a daemon, a thread blocked on a stdin
    that stays open never holds up the exit after a signal.
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    room = threading.Semaphore(ahead)
    stopped = threading.Event()

    def pump() -> None:
        try:
            for item in items:
                room.acquire()
                if stopped.is_set():
                    return
                loop.call_soon_threadsafe(queue.put_nowait, item)
        except BaseException as exc:  # an unreadable source: raised in the consumer
            if not stopped.is_set():
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            return
        finally:
            if not stopped.is_set():
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, _END)
                except RuntimeError:  # the loop is closed: nobody is reading any more
                    pass

    threading.Thread(target=pump, name="streamrun-input", daemon=True).start()
    try:
        while True:
            item = await queue.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            room.release()
            yield item
    finally:
        stopped.set()
        room.release()  # let a waiting pump see the stop


@dataclass
class ScanResult:
    lines: int  # input lines this run will answer (those of its shard, when sharded)
    duplicates: list[tuple[str, str, str]]  # (custom_id, first place, second place)
    paths: frozenset[str] = frozenset()  # the API paths those lines go to (whose keys the run needs)


def scan_inputs(paths: list[str], key=lambda item: item.custom_id,
                owns: Callable[[str], bool] | None = None, api: str = "chat",
                sharegpt: str = "prompts") -> ScanResult:
    """Count the lines, find duplicate ids and the API paths before anything is sent.

    Memory: one 64-bit hash per line in an array, sorted; only when two hashes
    collide is a second pass made to name both places exactly.
    """
    sorter = HashSorter()
    owned = 0
    api_paths: set[str] = set()
    for item in iter_items(paths, api=api, sharegpt=sharegpt):
        sorter.add(id_hash(key(item)))
        if owns is None or owns(item.custom_id):
            owned += 1
            if item.path is not None:
                api_paths.add(item.path)
    count = sorter.count
    hashes = sorter.sorted()
    suspects = {hashes[i] for i in range(1, count) if hashes[i] == hashes[i - 1]}
    del hashes
    duplicates: list[tuple[str, str, str]] = []
    if suspects:
        first: dict[str, str] = {}
        for item in iter_items(paths):
            k = key(item)
            if id_hash(k) in suspects:
                if k in first:
                    duplicates.append((k, first[k], item.place))
                else:
                    first[k] = item.place
    return ScanResult(owned, duplicates, frozenset(api_paths))
