"""Final records: of the records a results file holds for one key, the last one, which alone counts.

The results file is append-only (the crash model in runner/outputs/writer.py), so a
rerun that sends a failed line again appends the new record after the old
one instead of rewriting the file: the old record is *superseded*. Every
reader that counts or shows records (the resume scan, the end-of-run
summary, `streamrun report`, `export`, `merge`, `convert`) reads a results
file through :class:`FinalRecords`, so that they all agree on what it holds.

- A record's key is ``Record.key`` (its custom_id, with the stage label in
  sweeps); the last record of a key, in file order, is final.
- A line that is not JSON has no custom_id of its own: its ``invalid_input``
  record is keyed by its place (``file:line``, runner.inputs.items.default_id).
  Once fixed, the line has its own custom_id, so its new record has another
  key: a later record *from the same input place* (its ``source``, in the
  same stage) supersedes such a record as well (:func:`keyed_by_place`).
- Warm-up records answer no input: they supersede nothing and stay.

Memory stays flat: pass 1 decodes every line and keeps its line number and
key hash (16 bytes a record); sorting the hashes (``HashSorter``) finds the
keys seen more than once, usually none, and only their lines are marked
superseded; pass 2 reads the file again and yields the rest. A source that
cannot be read twice (stdin, a pipe) is first copied to a temporary file.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterator
from typing import IO, Any

import orjson

from ..inputs.ids import HashSorter, id_hash, resume_key
from ..inputs.items import default_id
from ..io.jsonl import MAX_LINE, JsonlReader
from ..record import Record

_SET_AT_MOST = 1 << 16  # keys seen twice: a set of them is faster than bisecting, up to this many


def place_key(record: Record) -> str | None:
    """The key that the record's input place would have as a default id (`file:line`), in its stage."""
    source = record.source
    if source is None:
        return None
    file, line = source.get("file"), source.get("line")
    if type(file) is not str or type(line) is not int:
        return None
    return resume_key(record.label, default_id(file, line))


def keyed_by_place(record: Record) -> bool:
    """An invalid_input record of a line that had no custom_id of its own (not JSON, say): its key is its
    place, so once the line is fixed, a record from that place with the line's own id supersedes it."""
    error = record.error
    return error is not None and error.type == "invalid_input" and record.key == place_key(record)


def _silent(message: str) -> None:
    pass


def _rereadable(f: IO[bytes]) -> bool:
    try:
        fd = f.fileno()
    except (OSError, AttributeError, ValueError):  # an in-memory stream
        return f.seekable()
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and f.seekable()
    except OSError:
        return False


class FinalRecords:
    """One results file's final records (see the module docstring); use as a context manager.

    Iterating yields ``(line number, line, record)`` for every final record
    and warm-up, in file order; :meth:`every` yields the superseded ones too.
    ``decode`` turns a parsed line into a Record (ValueError: not one);
    ``runner.outputs.batch.decode_result`` by default. Bad lines are warned about
    once (``warn``, ``prefix``, ``verb``: as :class:`JsonlReader`'s) and
    counted in ``bad_lines``; ``superseded`` counts the records left out.
    """

    def __init__(self, source: str | os.PathLike[str] | IO[bytes], *, name: str | None = None,
                 warn: Callable[[str], None] | None = None, prefix: str = "", verb: str = "",
                 decode: Callable[[Any], Record] | None = None, max_line: int = MAX_LINE) -> None:
        if decode is None:
            from .batch import decode_result
            decode = decode_result
        self._decode = decode
        self._warn = warn
        self._prefix, self._verb, self._max_line = prefix, verb, max_line
        if isinstance(source, (str, os.PathLike)):
            self._file: IO[bytes] = open(source, "rb")
            self._own = True
            self.name = name if name is not None else os.fspath(source)
        else:
            self._file, self._own = source, False
            self.name = name if name is not None else str(getattr(source, "name", "<stream>"))
        if not _rereadable(self._file):  # read once: keep a copy to read twice
            copy = tempfile.TemporaryFile()
            shutil.copyfileobj(self._file, copy)
            copy.seek(0)
            if self._own:
                self._file.close()
            self._file, self._own = copy, True
        self._start = self._file.tell()
        self.bad_lines = 0
        self.superseded = 0
        self._sup_lines: array | None = None  # superseded lines, ascending
        self._sup_final: array = array("Q")  # the line of each one's final record

    def __enter__(self) -> FinalRecords:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._own:
            self._file.close()

    def __iter__(self) -> Iterator[tuple[int, bytes, Record]]:
        for number, raw, record, final in self.every():
            if final == number:
                yield number, raw, record

    def every(self) -> Iterator[tuple[int, bytes, Record, int]]:
        """``(line number, line, record, line of its key's final record)`` for every record and warm-up:
        the last item is the record's own line number when it is final."""
        if self._sup_lines is None:
            self._scan()
        lines, finals = self._sup_lines, self._sup_final
        assert lines is not None
        at, n = 0, len(lines)
        self._file.seek(self._start)
        with JsonlReader(self._file, name=self.name, warn=_silent, max_line=self._max_line) as reader:
            for number, raw, record in reader.decoded(self._decode):
                while at < n and lines[at] < number:
                    at += 1
                yield number, raw, record, finals[at] if at < n and lines[at] == number else number

    def _scan(self) -> None:
        """Pass 1: every record's line and key hash; then which lines a later record supersedes."""
        lines, hashes, sorter = array("Q"), array("Q"), HashSorter()
        by_place: list[tuple[int, int]] = []  # (superseded line, final line) found by place
        waiting: dict[int, int] = {}  # key hash -> line of the last record keyed by its place (usually none)
        self._file.seek(self._start)
        with JsonlReader(self._file, name=self.name, warn=self._warn, prefix=self._prefix, verb=self._verb,
                         max_line=self._max_line) as reader:
            for number, _, record in reader.decoded(self._decode):
                if record.warmup:
                    continue
                h = id_hash(record.key)
                lines.append(number)
                hashes.append(h)
                sorter.add(h)
                if waiting:
                    waiting.pop(h, None)  # its own key supersedes it from here on
                    place = place_key(record)
                    if place is not None:
                        earlier = waiting.pop(id_hash(place), None)
                        if earlier is not None:
                            by_place.append((earlier, number))
                if keyed_by_place(record):
                    waiting[h] = number
        self.bad_lines = reader.bad_lines
        by_key = _superseded_by_key(lines, hashes, sorter)
        self._sup_lines, self._sup_final = _merged(by_key, sorted(by_place))
        self.superseded = len(self._sup_lines)


def _superseded_by_key(lines: array, hashes: array, sorter: HashSorter) -> tuple[array, array]:
    """The lines of records a later record of the same key supersedes (ascending), and their finals' lines."""
    ordered = sorter.sorted()
    repeated = array("Q")
    for i in range(1, len(ordered)):
        h = ordered[i]
        if h == ordered[i - 1] and (not repeated or repeated[-1] != h):
            repeated.append(h)
    sup, final = array("Q"), array("Q")
    if not repeated:
        return sup, final
    del ordered
    final_at = array("Q", bytes(8 * len(repeated)))  # the last line of each repeated key, found walking back
    few = set(repeated) if len(repeated) <= _SET_AT_MOST else None
    for i in range(len(hashes) - 1, -1, -1):
        h = hashes[i]
        if few is not None and h not in few:
            continue
        j = bisect_left(repeated, h)
        if j == len(repeated) or repeated[j] != h:
            continue
        if final_at[j]:
            sup.append(lines[i])
            final.append(final_at[j])
        else:
            final_at[j] = lines[i]
    sup.reverse()
    final.reverse()
    return sup, final


def _merged(by_key: tuple[array, array], by_place: list[tuple[int, int]]) -> tuple[array, array]:
    """The two kinds of superseded lines as one ascending list (a line both supersede is listed once)."""
    lines, finals = by_key
    if not by_place:
        return lines, finals
    out_lines, out_finals = array("Q"), array("Q")
    i = j = 0
    while i < len(lines) or j < len(by_place):
        if j == len(by_place) or (i < len(lines) and lines[i] <= by_place[j][0]):
            if j < len(by_place) and lines[i] == by_place[j][0]:
                j += 1
            out_lines.append(lines[i])
            out_finals.append(finals[i])
            i += 1
        else:
            out_lines.append(by_place[j][0])
            out_finals.append(by_place[j][1])
            j += 1
    return out_lines, out_finals


def records_at(path: str, numbers: array, decode: Callable[[Any], Record] | None = None) -> Iterator[Record]:
    """The records at these line numbers (ascending) of ``path``, read again; a line gone bad is skipped."""
    if decode is None:
        from .batch import decode_result
        decode = decode_result
    if not numbers:
        return
    at, n = 0, len(numbers)
    with JsonlReader(path, warn=_silent) as reader:
        for number, raw in reader.lines():  # only the lines asked for are parsed
            while at < n and numbers[at] < number:
                at += 1
            if at == n:
                return
            if numbers[at] == number:
                try:
                    yield decode(orjson.loads(raw))
                except ValueError:  # orjson.JSONDecodeError is one
                    pass
