"""What goes over the socket pair between the parent and a worker.

Why a module: the two processes must agree on every byte, and a reader
should see the whole conversation in one place.  A frame is a 5-byte
header (payload length, kind) and the payload.  In order, on one worker's
socket::

    parent -> worker   INIT (pickled: config, headers with the key, secrets)
    worker -> parent   READY
    per stage:
    parent -> worker   PHASE (its share of the stage, the common start), ITEM ..., END
    worker -> parent   RECORD ..., PHASE_DONE           (STATUS every 0.25 s throughout)
                       (PHASE_DONE: its counters, and its loop lag and CPU over the stage, runner/trust.py)
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
import pickle
import socket
import struct
from enum import IntEnum
from typing import Any

import orjson

from ..inputs import InputItem
from ..record import Record, decode_native

HEADER = struct.Struct("!IB")  # payload length, kind


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

    `send` never waits (a frame is queued on the transport, as the writer's
    `put` never waits); `drain` is the backpressure a feeder may await.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, sock: socket.socket) -> Link:
        reader, writer = await asyncio.open_connection(sock=sock)
        return cls(reader, writer)

    def send(self, kind: Kind, payload: bytes = b"") -> None:
        if self._writer.is_closing():  # the peer is gone: its reader has seen, or will see, the end
            return
        self._writer.writelines((HEADER.pack(len(payload), kind), payload))

    def send_json(self, kind: Kind, obj: Any) -> None:
        self.send(kind, orjson.dumps(obj))

    async def drain(self) -> None:
        try:
            await self._writer.drain()
        except (ConnectionError, OSError):
            pass  # the reader sees the end of the stream and reports the death

    async def receive(self) -> tuple[Kind, bytes] | None:
        """The next frame; None when the other process closed its end (or died)."""
        try:
            size, kind = HEADER.unpack(await self._reader.readexactly(HEADER.size))
            return Kind(kind), (await self._reader.readexactly(size) if size else b"")
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            return None

    async def close(self) -> None:
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


def item_frame(item: InputItem) -> bytes:
    return pack(item)


def record_bytes(record: Record) -> bytes:
    """A record as its results line (without the newline): what the parent's writer writes again."""
    return orjson.dumps(record)


def record_of(payload: bytes) -> Record:
    return decode_native(orjson.loads(payload))


def message(payload: bytes) -> dict:
    return orjson.loads(payload)
