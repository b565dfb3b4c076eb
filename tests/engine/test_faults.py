"""Faults on the wire: a fault-injecting TCP proxy (user space, no root, no netem) between streamrun and
the mock.

`FaultyLink` forwards bytes both ways and, per connection or for the whole link, adds delay and jitter to
every chunk (order kept), caps the bandwidth, goes silent mid-stream, resets the connection (RST, by
SO_LINGER 0) or closes it (FIN) after N bytes of the response, and takes the whole link down for a while
(an outage: every connection reset, or every byte held back until it ends).

For each fault: every record ends ok after retries or as a typed error within the configured timeouts,
nothing hangs past them, a --resume over the healthy link leaves exactly one ok record per input (none
lost, none twice), and the measured TTFT is never below the delay the link added.  A mid-run outage of
5 s costs no record at the default retry settings, while a server never reachable still stops the run at
once.  With STREAMRUN_FAULT_TABLE=FILE each test appends what it saw to FILE (bench/faults_table.py turns
that into the table in docs/networks.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
import random
import socket
import struct
import time
from collections import Counter
from pathlib import Path

import pytest

from runner.config.run_config import LoadConfig, OutputConfig, RequestConfig, RunConfig, Stage, TransportConfig
from runner.mock import MockConfig, serve
from runner.stream.config import RetryPolicy, Timeouts
from tests.helpers import HANG_GUARD_S, count_lines, execute, read_jsonl, replace_fields, write_jsonl

N = 8  # prompts per fault: each test is a few requests
CONCURRENCY = 2
RETRY = RetryPolicy(max_attempts=3, backoff_initial=0.05, backoff_max=0.2)
TIMEOUTS = Timeouts(connect=2.0, first_byte=3.0, idle=1.0, total=None)
MOCK = dict(ttft=0.02, tokens_per_s=200.0)  # about 0.1 s and 30 chunks a reply of 24 tokens


@dataclasses.dataclass
class Faults:
    """What the link does to each connection.  Byte counts are of the response (server to client)."""

    delay_s: float = 0.0  # added to every chunk, both ways
    jitter_s: float = 0.0  # and up to this much more, at random (chunks stay in order)
    bytes_per_s: float | None = None  # the bandwidth cap, each way
    silence_after: int | None = None  # the link goes silent (the connection stays open, nothing passes)
    reset_after: int | None = None  # the connection is reset (RST)
    close_after: int | None = None  # the connection is closed (FIN)
    first: int | None = None  # only the first this many connections (None: every one)


class FaultyLink:
    """A TCP proxy on 127.0.0.1 in front of `upstream`, misbehaving as `faults` says."""

    def __init__(self, upstream: tuple[str, int], faults: Faults, seed: int = 7) -> None:
        self.upstream, self.faults = upstream, faults
        self.rng = random.Random(seed)
        self.connections = 0
        self.faulted = 0
        self.down: str | None = None  # an outage: "reset" or "silence"
        self.back = asyncio.Event()
        self.back.set()
        self.open: set[asyncio.StreamWriter] = set()
        self.handlers: set[asyncio.Task] = set()
        self.server: asyncio.AbstractServer | None = None

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/v1"

    async def __aexit__(self, *exc) -> None:
        self.server.close()
        for writer in list(self.open):
            writer.transport.abort()
        for task in list(self.handlers):  # a silenced connection's pump sleeps on: it ends with the link
            task.cancel()
        await asyncio.gather(*self.handlers, return_exceptions=True)

    def heal(self) -> None:
        self.faults = Faults()

    def outage(self, kind: str) -> None:
        """The link goes down: every connection reset (now and until `restore`), or every byte held."""
        self.down = kind
        if kind == "reset":
            for writer in list(self.open):
                _reset(writer)
        else:
            self.back.clear()

    def restore(self) -> None:
        self.down = None
        self.back.set()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self.handlers.add(task)
        try:
            await self._connection(reader, writer)
        finally:
            self.handlers.discard(task)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.down == "reset":
            _reset(writer)
            return
        faults = self.faults if self.faults.first is None or self.connections <= self.faults.first else Faults()
        if faults != Faults():
            self.faulted += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            _reset(writer)
            return
        self.open |= {writer, up_writer}
        try:
            await asyncio.gather(self._pump(reader, up_writer, faults, None),
                                 self._pump(up_reader, writer, faults, writer))
        finally:
            self.open -= {writer, up_writer}
            for w in (writer, up_writer):
                w.transport.abort()

    async def _pump(self, reader, writer, faults: Faults, client) -> None:
        """One direction; `client` is the client's writer when this is the response."""
        queue: asyncio.Queue = asyncio.Queue()
        sent = 0

        async def read() -> None:
            last_due = 0.0
            while True:
                try:
                    chunk = await reader.read(4096)
                except (ConnectionError, OSError):
                    chunk = b""
                due = time.monotonic() + faults.delay_s + (self.rng.uniform(0, faults.jitter_s)
                                                           if faults.jitter_s else 0.0)
                last_due = max(last_due, due)  # in order: no chunk overtakes the one before it
                queue.put_nowait((last_due, chunk))
                if not chunk:
                    return

        reading = asyncio.ensure_future(read())
        try:
            while True:
                due, chunk = await queue.get()
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                await self.back.wait()  # a silent outage holds every byte until it ends
                if not chunk or writer.is_closing():  # the other end closed, or this one was cut
                    writer.close()
                    return
                if client is not None:  # the response: where a stream is cut
                    cut = min(x for x in (faults.silence_after, faults.reset_after, faults.close_after, math.inf)
                              if x is not None)
                    if sent + len(chunk) >= cut:
                        writer.write(chunk[:max(0, int(cut) - sent)])
                        await writer.drain()
                        if faults.reset_after is not None and cut == faults.reset_after:
                            _reset(client)
                        elif faults.close_after is not None and cut == faults.close_after:
                            client.close()
                        else:
                            await asyncio.sleep(HANG_GUARD_S)  # silence: open, and nothing more
                        return
                    sent += len(chunk)
                writer.write(chunk)
                await writer.drain()
                if faults.bytes_per_s:
                    await asyncio.sleep(len(chunk) / faults.bytes_per_s)
        except (ConnectionError, OSError):
            return
        finally:
            reading.cancel()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST: SO_LINGER on, zero seconds."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    writer.transport.abort()


# ---- runs over the link


def lines(n: int = N) -> list[dict]:
    return [{"custom_id": f"p{i}", "messages": [{"role": "user", "content": f"question {i}"}], "max_tokens": 24}
            for i in range(n)]


def config(tmp_path: Path, url: str, n: int = N, **overrides) -> RunConfig:
    inp = tmp_path / "in.jsonl"
    if not inp.exists():
        write_jsonl(inp, lines(n))
    cfg = RunConfig(inputs=(str(inp),), output=OutputConfig(str(tmp_path / "out.jsonl"), overwrite=True),
                    transport=TransportConfig(base_urls=(url,), retry=RETRY, timeouts=TIMEOUTS),
                    request=RequestConfig(model="mock-model"),
                    load=LoadConfig(stages=(Stage(0, CONCURRENCY),), drain_timeout_s=5.0))
    return replace_fields(cfg, **overrides)


def hang_bound(cfg: RunConfig, n: int) -> float:
    """The longest a run may take if every attempt used all its timeouts and every back-off: a guard."""
    t, r = cfg.transport.timeouts, cfg.transport.retry
    attempt = (t.connect or 0) + (t.first_byte or 0) + (t.idle or 0) * 30  # a reply's chunks, each up to idle
    waits = sum(min(r.backoff_max, r.backoff_initial * 2 ** k) for k in range(r.max_attempts - 1))
    return math.ceil(n / cfg.load.max_concurrency) * (r.max_attempts * attempt + waits) + 10.0


def final_records(records: list[dict]) -> dict[str, dict]:
    out = {}
    for r in records:
        out[r["custom_id"]] = r
    return out


def report(name: str, how: str, records: list[dict], seconds: float, delay_s: float = 0.0,
           resumed: int | None = None) -> None:
    """What this fault did, appended to $STREAMRUN_FAULT_TABLE (for the docs' table) when it is set."""
    path = os.environ.get("STREAMRUN_FAULT_TABLE")
    if not path:
        return
    ttfts = [r["metrics"]["ttft_s"] for r in records if r["status"] == "ok"]
    row = {"fault": name, "how": how, "records": len(records), "ok": sum(r["status"] == "ok" for r in records),
           "retried": sum(r["attempts"] > 1 for r in records),
           "errors": dict(Counter(r["error"]["type"] for r in records if r["error"])), "seconds": round(seconds, 2),
           "ttft_min_s": round(min(ttfts), 3) if ttfts else None, "added_delay_s": delay_s, "resumed_ok": resumed}
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


async def resume_heals(tmp_path: Path, cfg: RunConfig, link: FaultyLink, n: int = N) -> int:
    """A --resume over the healed link: one ok record per input, none lost, none twice; how many ok."""
    link.heal()
    code = await execute(replace_fields(cfg, overwrite=False, resume=True))
    assert code == 0
    records = read_jsonl(tmp_path / "out.jsonl")
    final = final_records(records)
    assert sorted(final) == sorted(f"p{i}" for i in range(n)), "a record was lost"
    assert all(r["status"] == "ok" for r in final.values())
    ok = Counter(r["custom_id"] for r in records if r["status"] == "ok")
    assert set(ok.values()) == {1}, f"an ok record twice: {ok}"
    return len(ok)


# Each fault: (name, what the link does, what a record that did not end ok may be).
FAULTS = [
    ("delay", Faults(delay_s=0.05, jitter_s=0.05), ()),
    ("bandwidth", Faults(bytes_per_s=16_000), ()),
    ("silence", Faults(silence_after=1500, first=2), ()),
    ("reset", Faults(reset_after=1500, first=2), ()),
    ("close", Faults(close_after=1500, first=2), ()),
    ("silence-always", Faults(silence_after=1500), ("timeout",)),
    ("reset-always", Faults(reset_after=1500), ("incomplete_stream",)),
    ("close-always", Faults(close_after=1500), ("incomplete_stream",)),
]
HOW = {"delay": "50 ms + up to 50 ms jitter per chunk, each way", "bandwidth": "16 kB/s each way",
       "silence": "silent after 1.5 kB of the reply, first 2 connections",
       "reset": "RST after 1.5 kB of the reply, first 2 connections",
       "close": "FIN after 1.5 kB of the reply, first 2 connections",
       "silence-always": "silent after 1.5 kB, every connection", "reset-always": "RST after 1.5 kB, every connection",
       "close-always": "FIN after 1.5 kB, every connection"}


@pytest.mark.parametrize("name, faults, allowed", FAULTS, ids=[f[0] for f in FAULTS])
async def test_each_fault_ends_in_ok_or_typed_records_within_the_timeouts(tmp_path, name, faults, allowed):
    async with serve(MockConfig(**MOCK)) as mock:
        host, port = mock.split("//")[1].split("/")[0].split(":")
        link = FaultyLink((host, int(port)), faults)
        async with link as url:
            cfg = config(tmp_path, url)
            start = time.perf_counter()
            code = await asyncio.wait_for(execute(cfg), hang_bound(cfg, N))
            seconds = time.perf_counter() - start
            records = read_jsonl(tmp_path / "out.jsonl")
            assert len(records) == N and sorted(r["custom_id"] for r in records) == [f"p{i}" for i in range(N)]
            for r in records:
                assert r["status"] == "ok" or r["error"]["type"] in allowed, r["error"]
                if r["status"] == "ok":  # request and reply each crossed the link once: its delay, both ways
                    assert r["metrics"]["ttft_s"] >= 2 * faults.delay_s, r["metrics"]
            if not allowed:
                assert code == 0 and all(r["status"] == "ok" for r in records)
            if faults.first is not None:
                assert link.faulted == faults.first and sum(r["attempts"] > 1 for r in records) >= 1
            else:
                assert link.faulted == link.connections
            resumed = await resume_heals(tmp_path, cfg, link)
            report(name, HOW[name], records, seconds, 2 * faults.delay_s, resumed)


# ---- a mid-run outage, at the default retry settings


OUTAGE_S = 5.0
OUTAGE_N = 12


@pytest.mark.parametrize("kind", ["reset", "silence"])
async def test_a_five_second_outage_mid_run_costs_no_record_at_default_settings(tmp_path, kind):
    """Default retries (5 attempts, waits of up to 0.5, then 1-2, 2-4 and 4-8 s: at least 7 s in all)
    outlast a 5 s outage of resets; the default idle timeout (120 s) outlasts 5 s of silence."""
    async with serve(MockConfig(ttft=0.05, tokens_per_s=60.0)) as mock:
        host, port = mock.split("//")[1].split("/")[0].split(":")
        link = FaultyLink((host, int(port)), Faults())
        async with link as url:
            cfg = config(tmp_path, url, OUTAGE_N, retry=RetryPolicy(), timeouts=Timeouts())
            assert cfg.transport.retry == RetryPolicy() and cfg.transport.timeouts == Timeouts()  # as shipped
            start = time.perf_counter()
            run = asyncio.ensure_future(execute(cfg))
            end = time.monotonic() + HANG_GUARD_S
            while count_lines(tmp_path / "out.jsonl") < 2:  # mid-run: records written, more in flight
                assert not run.done() and time.monotonic() < end, "the run ended before the outage"
                await asyncio.sleep(0.01)
            link.outage(kind)
            await asyncio.sleep(OUTAGE_S)
            link.restore()
            code = await asyncio.wait_for(run, HANG_GUARD_S * 2)
            seconds = time.perf_counter() - start
            records = read_jsonl(tmp_path / "out.jsonl")
            report(f"outage-{kind}", f"the whole link {'resetting' if kind == 'reset' else 'silent'} for 5 s "
                   "mid-run, default settings", records, seconds)
            assert code == 0 and len(records) == OUTAGE_N and all(r["status"] == "ok" for r in records)
            if kind == "reset":
                assert any(r["attempts"] > 1 for r in records)  # the outage was felt, and outlasted
            else:  # nothing failed: the requests in flight waited, as over a link that comes back
                assert all(r["attempts"] == 1 for r in records)
                assert max(r["metrics"]["e2e_s"] for r in records) >= OUTAGE_S * 0.8


async def test_a_server_never_reachable_still_stops_the_run_at_once(tmp_path):
    """The same link down from the start: the first-hour rule stops the run (exit 2, nothing written)
    within its patience, not after every prompt's five attempts."""
    async with serve(MockConfig(**MOCK)) as mock:
        host, port = mock.split("//")[1].split("/")[0].split(":")
        link = FaultyLink((host, int(port)), Faults())
        link.outage("reset")
        async with link as url:
            cfg = config(tmp_path, url, 40, retry=RetryPolicy(), timeouts=Timeouts())
            start = time.perf_counter()
            code = await asyncio.wait_for(execute(cfg), HANG_GUARD_S)
            seconds = time.perf_counter() - start
            report("never-reachable", "every connection reset from the start, default settings",
                   read_jsonl(tmp_path / "out.jsonl"), seconds)
            assert code == 2 and read_jsonl(tmp_path / "out.jsonl") == []
            # five attempts of 40 prompts at -c 2 would take minutes; the guard's patience is 5 s
            assert seconds < 30.0


def test_the_default_waits_outlast_a_five_second_outage_whatever_the_jitter(monkeypatch):
    """The proof behind the outage test: the default back-off's four waits add up to at least 7 s."""
    from types import SimpleNamespace

    from runner.stream import retry

    wait = retry.wait_retry_after_or_backoff(RetryPolicy())

    def waits(draw) -> list[float]:  # after the 1st to 4th failed attempt (no Retry-After: a reset has none)
        monkeypatch.setattr(retry.random, "uniform", draw)
        return [wait(SimpleNamespace(attempt_number=n, outcome=None)) for n in range(1, 5)]

    lowest = waits(lambda low, high: low)
    highest = waits(lambda low, high: high)
    assert lowest == [0.0, 1.0, 2.0, 4.0] and sum(lowest) == 7.0 > OUTAGE_S
    assert highest == [0.5, 2.0, 4.0, 8.0]  # the first retry as quick as ever


def test_the_guards_patience_runs_out_between_failures():
    """At -c 2 every request may be waiting out a back-off when the patience ends: the guard is asked then
    (a timer), not only at the next failure, which may come seconds later."""
    from runner.engine.guards import ConnectGuard

    guard = ConnectGuard(("a",))
    assert guard.failed("a", "connection reset by peer", 0.0, 0.1) is None
    assert guard.overdue(4.9) is None
    assert guard.overdue(5.1).startswith("cannot connect to a: connection reset by peer. Stopped after 1 attempt")
    assert guard.overdue(9.0) is None  # tripped once
    connected = ConnectGuard(("a",))
    connected.failed("a", "connection reset by peer", 0.0, 0.1)
    connected.connected()
    assert connected.overdue(9.0) is None  # an outage after the server answered is retried as ever
