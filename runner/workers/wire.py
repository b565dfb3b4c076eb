"""What goes over the socket pair between the parent and a worker.

Why a module: the two processes must agree on every byte, and a reader
should see the whole conversation in one place.  A frame is a 5-byte
header (payload length, kind) and the payload.  In order, on one worker's
socket::

    parent -> worker   INIT (pickled: config, headers and keys, secrets)
    worker -> parent   READY
    per stage:
    parent -> worker   PHASE (its share of the stage, the common start), ITEM ..., END
    worker -> parent   RECORD ..., PHASE_DONE           (STATUS every 0.25 s throughout)
                       (PHASE_DONE: its counters, and its loop lag and CPU over the stage, runner/observe/client_timing.py)
    at the end:
    parent -> worker   EXIT
    worker -> parent   DONE (its counters), then it exits

and at any time STOP (drain: a signal, a failed disk), QUOTA/GRANT (the
shared RPM/TPM budget, `quota.py`) and FATAL (a run-level error in a
worker).  Items go pickled (exactly the InputItem the parent chose;
the socket is private to the two processes, so nothing untrusted is
unpickled); records go as their JSON line, decoded by the one decoder
(`runner.record.decode_native`); the rest as small JSON objects.  The key
travels in INIT, never on a command line.
"""

from __future__ import annotations

import asyncio
import dataclasses
import operator
import pickle
import socket
import struct
from collections import deque
from enum import IntEnum
from typing import Any

import orjson

from ..inputs.items import InputItem
from ..record import Record, decode_native

HEADER = struct.Struct("!IB")  # payload length, kind
READ_BYTES = 1 << 18
FLUSH_FRAMES = 512  # `drain` sends frames queued this turn once this many are waiting (header and payload count apart)


class Kind(IntEnum):
    INIT = 1
    READY = 2
    PHASE = 3
    ITEM = 4
    END = 5
    STOP = 6
    EXIT = 7
    RECORD = 8
    STATUS = 9
    PHASE_DONE = 10
    FATAL = 11
    QUOTA = 12
    GRANT = 13
    DONE = 14


class Link:
    """One end of a parent-worker socket pair, as frames.

    `send` never waits (a frame is queued, as the writer's `put` never
    waits); `drain` is the backpressure a feeder may await.  Frames sent in
    one turn of the event loop go out in one write: a worker finishing
    dozens of records a turn, or the parent feeding dozens of items, makes
    one system call for them, not one each (the parent's per-record cost
    caps how many workers one run can use).
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._pending: list[bytes] = []
        self._frames: deque[tuple[Kind, bytes]] = deque()  # read, not yet received
        self._partial = b""  # the start of a frame whose end has not come yet

    @classmethod
    async def open(cls, sock: socket.socket) -> Link:
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    def send(self, kind: Kind, payload: bytes = b"") -> None:
        if not self._pending:
            asyncio.get_running_loop().call_soon(self.flush)
        self._pending += (HEADER.pack(len(payload), kind), payload)

    def flush(self) -> None:
        """Hand what this turn queued to the transport (kept in order)."""
        frames, self._pending = self._pending, []
        if frames and not self._writer.is_closing():  # the peer is gone: its reader has seen, or will see, the end
            self._writer.write(b"".join(frames))

    def send_json(self, kind: Kind, obj: Any) -> None:
        self.send(kind, orjson.dumps(obj))

    async def drain(self) -> None:
        if len(self._pending) > FLUSH_FRAMES:  # else this turn's flush sends them with the rest
            self.flush()
        try:
            await self._writer.drain()
        except (ConnectionError, OSError):
            pass  # the reader sees the end of the stream and reports the death

    async def receive(self) -> tuple[Kind, bytes] | None:
        """The next frame; None when the other process closed its end (or died).

        Reads whatever has arrived and cuts every whole frame out of it, so
        most frames cost no wait at all (a half frame at the end is kept for
        the next read; one left at the end of the stream is a death).
        """
        while not self._frames:
            partial = self._partial
            missing = HEADER.unpack_from(partial)[0] + HEADER.size - len(partial) if len(partial) >= HEADER.size else 0
            try:  # a large frame's rest in one read: no copying of its start again at every piece
                data = await (self._reader.readexactly(missing) if missing > READ_BYTES
                              else self._reader.read(READ_BYTES))
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                data = b""
            if not data:
                return None
            self._cut(data)
        return self._frames.popleft()

    def _cut(self, data: bytes) -> None:
        buf = self._partial + data if self._partial else data
        end, at, frames = len(buf), 0, self._frames
        while end - at >= HEADER.size:
            size, kind = HEADER.unpack_from(buf, at)
            stop = at + HEADER.size + size
            if stop > end:
                break
            frames.append((Kind(kind), buf[at + HEADER.size:stop]))
            at = stop
        self._partial = buf[at:]

    async def close(self) -> None:
        self.flush()
        self._writer.close()
        try:
            await self._writer.wait_closed()
        except (ConnectionError, OSError):
            pass


def pack(obj: Any) -> bytes:
    """INIT and ITEM payloads: Python objects, between two processes of this run only."""
    return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)


def unpack(payload: bytes) -> Any:
    return pickle.loads(payload)


_item_fields = operator.attrgetter(*(f.name for f in dataclasses.fields(InputItem)))


def item_frame(item: InputItem) -> bytes:
    """An item as the tuple of its fields: a pickled tuple costs a quarter of a pickled dataclass,
    and the parent pickles every item of the run."""
    return pack(_item_fields(item))


def item_of(payload: bytes) -> InputItem:
    return InputItem(*unpack(payload))


def record_bytes(record: Record) -> bytes:
    """A record as its results line (without the newline): what the parent's writer writes again."""
    return orjson.dumps(record)


def record_of(payload: bytes) -> Record:
    return decode_native(orjson.loads(payload))


def message(payload: bytes) -> dict:
    return orjson.loads(payload)
