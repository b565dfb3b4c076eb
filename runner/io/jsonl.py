"""The one JSONL reader: inputs, results (report, merge, resume) and convert all read through it.

- Lazy: one line at a time, from a path or an open binary stream (stdin, a
  pipe: read once, front to back, never rewound), so a file of millions of
  lines costs the memory of one.
- Bounded: a line longer than ``max_line`` bytes (32 MiB by default) is
  reported as bad and skipped without being loaded; reading goes on after it.
- A UTF-8 byte order mark at the start of the file is dropped; ``\\r\\n`` line
  ends are taken like ``\\n``; blank lines are skipped (but counted, so line
  numbers are the file's own).
- A last line without a newline that is not valid JSON is what a crash
  leaves behind (a torn write) and is reported as such; a last line without
  a newline that *is* valid JSON is an ordinary line.
- Bad lines are warned about one line each, ``file:line: reason``, at most
  ``limit`` (10) a file; one more line then says how many were not shown.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import IO, Any, Protocol, TypeVar

import orjson

MAX_LINE = 32 << 20
WARN_LIMIT = 10
BOM = b"\xef\xbb\xbf"
_SKIP_CHUNK = 1 << 20

log = logging.getLogger("streamrun")
T = TypeVar("T")


class Warner:
    """Passes the first ``limit`` messages on to ``warn``, then only counts;
    :meth:`close` adds one line, ``tail(n)``, for the ``n`` not shown."""

    def __init__(self, warn: Callable[[str], None], tail: Callable[[int], str], limit: int = WARN_LIMIT) -> None:
        self.warn = warn
        self.tail = tail
        self.limit = limit
        self.count = 0

    def __call__(self, message: str) -> None:
        self.count += 1
        if self.count <= self.limit:
            self.warn(message)

    def close(self) -> None:
        if self.count > self.limit:
            self.warn(self.tail(self.count - self.limit))
            self.limit = self.count  # said once


class LineSource(Protocol):
    """What a reader needs of a stream it is given: a binary file, or anything that reads lines like one."""

    def readline(self, size: int = -1, /) -> bytes: ...


class JsonlReader:
    """One file of JSON lines; use as a context manager, iterate :meth:`lines`,
    :meth:`objects` or :meth:`decoded`.

    ``warn`` receives each bad line as ``{prefix}{name}:{line}: {verb}{reason}``
    (capped, see the module docstring); a decoder that refuses a line (not a
    result record, say) makes it bad too, counted and capped with the rest.
    ``on_bad(line, reason)``, when given, replaces the warnings altogether
    (inputs turn bad lines into records).
    """

    def __init__(self, source: str | os.PathLike[str] | LineSource, *, name: str | None = None,
                 warn: Callable[[str], None] | None = None, prefix: str = "", verb: str = "",
                 max_line: int = MAX_LINE, limit: int = WARN_LIMIT,
                 on_bad: Callable[[int, str], None] | None = None) -> None:
        self._own: IO[bytes] | None = None  # the file this reader opened, and closes
        if isinstance(source, (str, os.PathLike)):
            self._own = owned = open(source, "rb")
            self._file: LineSource = owned
            self.name = name if name is not None else os.fspath(source)
        else:
            self._file = source
            self.name = name if name is not None else str(getattr(source, "name", "<stream>"))
        self.max_line = max_line
        self.bad_lines = 0
        self._prefix = prefix
        self._verb = verb
        self._on_bad = on_bad
        self._warner = Warner(warn or log.warning, self._tail, limit)
        self._unterminated = 0  # number of the last line when it has no newline

    def __enter__(self) -> JsonlReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Say how many warnings were not shown; close the file if this reader opened it."""
        self._warner.close()
        if self._own is not None:
            self._own.close()

    def _tail(self, hidden: int) -> str:
        return f"{self._prefix}{self.name}: … and {hidden} more bad lines ({self.bad_lines} in all)"

    def bad(self, number: int, reason: str) -> None:
        """Count line ``number`` as bad and warn about it (capped)."""
        self.bad_lines += 1
        if self._on_bad is not None:
            self._on_bad(number, reason)
        else:
            self._warner(f"{self._prefix}{self.name}:{number}: {self._verb}{reason}")

    def lines(self) -> Iterator[tuple[int, bytes]]:
        """``(line number, line)`` for each non-blank line, its line end removed."""
        readline = self._file.readline
        most = self.max_line
        size = most + 2  # room for the longest line and its \r\n
        number = 0
        while True:
            raw = readline(size)
            if not raw:
                return
            number += 1
            if raw[-1:] != b"\n":
                if len(raw) == size:
                    self._skip_rest()
                if len(raw) > most:  # over long: the rest of it is skipped, unread
                    self.bad(number, f"line longer than {most} bytes, not read")
                    continue
                self._unterminated = number  # the last line: no newline before the end
            else:
                raw = raw[:-2] if raw[-2:-1] == b"\r" else raw[:-1]
                if len(raw) > most:
                    self.bad(number, f"line longer than {most} bytes, not read")
                    continue
            if number == 1 and raw[:3] == BOM:
                raw = raw[3:]
            if raw and not raw.isspace():
                yield number, raw

    def _skip_rest(self) -> None:
        readline = self._file.readline
        while True:
            chunk = readline(_SKIP_CHUNK)
            if not chunk or chunk[-1:] == b"\n":
                return

    def objects(self) -> Iterator[tuple[int, bytes, Any]]:
        """``(line number, line, parsed JSON)`` for each line that parses; the others are bad."""
        loads = orjson.loads
        for number, raw in self.lines():
            try:
                obj = loads(raw)
            except orjson.JSONDecodeError as exc:
                if number == self._unterminated:
                    self.bad(number, "a torn last line (no newline, not valid JSON), as an interrupted write leaves")
                else:
                    self.bad(number, f"not valid JSON ({exc})")
                continue
            yield number, raw, obj

    def decoded(self, decode: Callable[[Any], T]) -> Iterator[tuple[int, bytes, T]]:
        """``(line number, line, decode(parsed JSON))``; a line ``decode`` refuses
        with ValueError is bad, its message the reason."""
        for number, raw, obj in self.objects():
            try:
                value = decode(obj)
            except ValueError as exc:
                self.bad(number, str(exc))
                continue
            yield number, raw, value
