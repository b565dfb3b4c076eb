"""The inputs index: each record's input line, found by ``custom_id``, for ``--inputs``.

Why it exists: the export adds each record's prompt and request body, which
only the input files hold, and those can be far larger than memory; this
finds a record's input line without loading the inputs, in a fixed 24
bytes per input line.

The join with the inputs (``--inputs``)
---------------------------------------
Each record gets the input line with its ``custom_id`` (the line's own, or
the default ``file:line`` id, exactly as ``streamrun run`` gave it:
``runner.inputs.items.parse_item`` decides both times): ``prompt`` is what the
line asks, for every kind of line: chat or Anthropic ``messages`` as JSON
text (Anthropic's ``system`` first, as a system message), a Responses
``input`` (its ``instructions`` first), a session's prefix and user
``turns`` as JSON text of messages, a completion ``prompt`` or an
embeddings ``input`` (a string as it is, a list as JSON text);
``request`` is the line's request body as JSON text
(what the line says: a run's ``--param`` and ``--model`` defaults are not
in it). Both are null for a record whose id is in no input, and for an
invalid input line (it has no body).

The index is built in one pass over the inputs and holds, per input line, a
64-bit hash of its id (``runner.inputs.ids.id_hash``), the byte offset of the line
and its file and line number: three unsigned 64-bit arrays, 24 bytes a line
(24 MB per million lines), sorted by hash in 256 buckets so that sorting
never makes Python ints of more than 1/256 of them. A record's row then
costs a binary search, a seek and the parse of one line; the line read back
is checked to carry the record's id, so a hash collision can never join the
wrong prompt. Results come in roughly input order, so those reads are
mostly sequential. When an id is on several input lines, the first (in the
order of the ``--inputs`` files) is joined and the repeats are counted.
Inputs must be regular files (seekable): not ``-`` or a pipe.
"""

from __future__ import annotations

from array import array
from bisect import bisect_left
from collections.abc import Sequence
from typing import BinaryIO

from runner.inputs.ids import id_hash
from runner.inputs.items import InputItem, parse_item
from runner.io.jsonl import BOM, MAX_LINE, JsonlReader


class _Offsets:
    """A binary file whose ``readline`` remembers where the line it returned began."""

    def __init__(self, f: BinaryIO, name: str) -> None:
        self._f = f
        self.name = name
        self.pos = 0
        self.start = 0

    def readline(self, size: int = -1) -> bytes:
        line = self._f.readline(size)
        self.start = self.pos
        self.pos += len(line)
        return line


class InputIndex:
    """custom_id -> input line, in 24 bytes a line (the module docstring).

    ``find(custom_id)`` returns the line's :class:`InputItem` (read back and
    parsed again), or None. Use as a context manager: it keeps the files open.
    """

    def __init__(self, paths: Sequence[str], max_line: int = MAX_LINE) -> None:
        self.paths = list(paths)
        self.max_line = max_line
        self.lines = 0  # input lines indexed
        self.duplicates = 0  # lines whose id an earlier line already had
        self._files: list[BinaryIO | None] = [None] * len(self.paths)
        self._build()

    def _build(self) -> None:
        buckets = [(array("Q"), array("Q"), array("Q")) for _ in range(256)]
        for file_index, path in enumerate(self.paths):
            with open(path, "rb") as f:
                tracked = _Offsets(f, path)
                # a line too long to read is an invalid-input record with no body: nothing to join
                with JsonlReader(tracked, name=path, max_line=self.max_line, on_bad=lambda n, why: None) as reader:
                    for number, raw in reader.lines():
                        h = id_hash(parse_item(path, number, raw.strip()).custom_id)
                        hashes, offsets, wheres = buckets[h >> 56]
                        hashes.append(h)
                        offsets.append(tracked.start)
                        wheres.append(file_index << 40 | number)
        self._hashes, self._offsets, self._wheres = array("Q"), array("Q"), array("Q")
        for b, (hashes, offsets, wheres) in enumerate(buckets):
            order = sorted(range(len(hashes)), key=hashes.__getitem__)  # stable: the first line of an id first
            self._hashes.extend(hashes[i] for i in order)
            self._offsets.extend(offsets[i] for i in order)
            self._wheres.extend(wheres[i] for i in order)
            buckets[b] = None  # type: ignore[call-overload]  # freed as the sorted copy grows
        hs = self._hashes
        self.lines = len(hs)
        self.duplicates = sum(1 for i in range(1, len(hs)) if hs[i] == hs[i - 1])

    def __enter__(self) -> InputIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for f in self._files:
            if f is not None:
                f.close()
        self._files = [None] * len(self.paths)

    def _item(self, i: int) -> InputItem:
        where = self._wheres[i]
        file_index, number = where >> 40, where & ((1 << 40) - 1)
        f = self._files[file_index]
        if f is None:
            f = self._files[file_index] = open(self.paths[file_index], "rb")
        offset = self._offsets[i]
        f.seek(offset)
        raw = f.readline(self.max_line + 2)
        if offset == 0 and raw[:3] == BOM:
            raw = raw[3:]
        return parse_item(self.paths[file_index], number, raw.strip())

    def find(self, custom_id: str) -> InputItem | None:
        hs = self._hashes
        h = id_hash(custom_id)
        i = bisect_left(hs, h)
        while i < len(hs) and hs[i] == h:
            item = self._item(i)
            if item.custom_id == custom_id:
                return item
            i += 1  # a hash collision, or the file changed since it was indexed
        return None
