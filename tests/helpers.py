"""Shared helpers: the repository's paths, JSONL files, input lines, runs through the
Python API and the CLI (`streamrun batch` too), waits that poll for a state, the SSE and
property-test helpers, and the servers that tests stand between streamrun and the mock (a
recorder of POSTs, a throwaway CA and a TLS front, a forward proxy).

Why a module of its own: test modules import helpers from here only, never
from tests/conftest.py (the fixtures, which pytest finds by itself) nor from
one another (tests/test_layout.py checks).  Waits never assume a speed: they
poll for a state (lines on disk, requests seen, a line on stderr) under a
generous hang guard.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest

from runner.config.run_config import LoadConfig, OutputConfig, RequestConfig, RunConfig, Stage, TransportConfig
from runner.stream.config import RetryPolicy

ROOT = Path(__file__).resolve().parent.parent  # the repository (docs/, jobs/, sample_inputs/, ...)
DATA = ROOT / "tests" / "data"  # captured streams (data/sse)
STREAMRUN = [sys.executable, "-m", "runner.cli"]
HANG_GUARD_S = 60.0  # only ever reached when something hangs; no test waits this long otherwise
FAST_RETRY = RetryPolicy(max_attempts=4, backoff_initial=0.001, backoff_max=0.01)


# -- files ---------------------------------------------------------------------


def write_jsonl(path: Path, rows: list) -> Path:
    """Rows as JSONL; a str row is written as is (a broken line, say)."""
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(row if isinstance(row, str) else json.dumps(row, ensure_ascii=False))
            f.write("\n")
    return path


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]


def assert_one_ok_record_per_input(out: Path, n: int) -> None:
    """One ok record per input id p0..p{n-1}, none twice: what a resumed run must end with."""
    records = read_jsonl(out)
    ids = Counter(r["custom_id"] for r in records)
    assert ids.most_common(1)[0][1] == 1, "duplicated record"
    assert sorted(ids) == sorted(f"p{i}" for i in range(n))
    assert all(r["status"] == "ok" for r in records)


def count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def chat(cid: str, mock: dict | None = None, **extra) -> dict:
    """A chat input line with id `cid`; `mock` is the mock's per-request fault script."""
    row = {"custom_id": cid, "messages": [{"role": "user", "content": f"prompt {cid}"}], **extra}
    if mock is not None:
        row["mock"] = mock
    return row


def prompts(path: Path, n: int, bad_at: int | None = None) -> Path:
    """n chat lines with ids p0..p{n-1}; the line at `bad_at` is not JSON."""
    rows = [{"custom_id": f"p{i}", "messages": [{"role": "user", "content": f"question {i}"}]} for i in range(n)]
    if bad_at is not None:
        rows[bad_at] = "{this is not json"
    return write_jsonl(path, rows)


class FullDisk:
    """`os` for runner.outputs.writer, whose `write` takes `room` more bytes and then raises ENOSPC."""

    def __init__(self, room: int) -> None:
        self.room = room

    def __getattr__(self, name):
        return getattr(os, name)

    def write(self, fd: int, data) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = os.write(fd, bytes(data[:self.room]))
        self.room -= n
        return n


def by_id(records: list[dict]) -> dict[str, dict]:
    return {r["custom_id"]: r for r in records}


def freeze_now(monkeypatch, when):
    """Make `datetime.now()` return `when` for code that does `from datetime import datetime` at call time."""
    import datetime as datetime_module

    real = datetime_module.datetime

    class Frozen(real):
        @classmethod
        def now(cls, tz=None):
            return when if tz is None else when.astimezone(tz)

    monkeypatch.setattr(datetime_module, "datetime", Frozen)
    return when


# -- the mock ------------------------------------------------------------------


def mock_stats(url: str) -> dict:
    """The mock's counters (GET /mock/stats); blocking, so for subprocess mocks or between runs."""
    with urllib.request.urlopen(url.removesuffix("/v1") + "/mock/stats", timeout=HANG_GUARD_S) as resp:
        return json.load(resp)


async def amock_stats(url: str) -> dict:
    """`mock_stats` for a mock served by this process's own event loop."""
    import aiohttp

    async with aiohttp.ClientSession() as session:
        async with session.get(url.removesuffix("/v1") + "/mock/stats") as resp:
            return await resp.json()


# -- runs ----------------------------------------------------------------------


async def execute(cfg: RunConfig, mock=None, show_progress: bool | None = False) -> int:
    """One run of `cfg` in this process, as the Python API runs it: its exit code."""
    from runner.run import run_document

    return (await run_document(cfg, mock=mock, show_progress=show_progress))["exit_code"]


def replace_fields(cfg: RunConfig, **fields) -> RunConfig:
    """`cfg` with each field changed wherever it sits: in RunConfig itself or in the one group that has a field
    of that name (`seed=3` is `load.seed`), all at once."""
    own: dict = {}
    groups: dict[str, dict] = {}
    for name, value in fields.items():
        group = next((f.name for f in dataclasses.fields(cfg) if dataclasses.is_dataclass(getattr(cfg, f.name))
                      and name in {g.name for g in dataclasses.fields(getattr(cfg, f.name))}), None)
        (groups.setdefault(group, {}) if group else own)[name] = value
    return dataclasses.replace(cfg, **own, **{group: dataclasses.replace(getattr(cfg, group), **changes)
                                              for group, changes in groups.items()})


async def run_rows(tmp_path: Path, url: str, rows, **overrides) -> tuple[int, list[dict]]:
    """Run input rows (or an input file) through the Python API into tmp_path/out.jsonl: (exit code, records).
    `overrides`: fields by name (`replace_fields`)."""
    inp = rows if isinstance(rows, Path) else write_jsonl(tmp_path / "in.jsonl", rows)
    cfg = RunConfig(inputs=(str(inp),), output=OutputConfig(str(tmp_path / "out.jsonl"), overwrite=True),
                    transport=TransportConfig(base_urls=(url,), retry=FAST_RETRY),
                    request=RequestConfig(model="mock-model"), load=LoadConfig(stages=(Stage(0, 4),)))
    code = await execute(replace_fields(cfg, **overrides))
    return code, read_jsonl(tmp_path / "out.jsonl")


def streamrun(*args, env=None, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    """Run the CLI as a real subprocess (exit codes, signals, stderr as users see them)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*STREAMRUN, *map(str, args)], capture_output=True, text=True, env=full_env,
                          timeout=timeout, **kwargs)


def start_run(*args) -> subprocess.Popen:
    """`streamrun run ARGS` in the background, stdout and stderr piped."""
    return subprocess.Popen([*STREAMRUN, "run", *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


# -- waits (poll for a state, never for a time) -----------------------------------


def wait_for_lines(path: Path, n: int, proc: subprocess.Popen, guard: float = HANG_GUARD_S) -> None:
    """Until `path` holds n lines; fails at once if the run ends first."""
    end = time.monotonic() + guard
    while count_lines(path) < n:
        assert proc.poll() is None, f"run ended early: {proc.stderr.read()}"
        assert time.monotonic() < end, "hang guard"
        time.sleep(0.02)


def wait_for_requests(url: str, n: int, guard: float = HANG_GUARD_S) -> None:
    """Until the mock has received n requests: the run is then past start-up, signal handlers in place."""
    end = time.monotonic() + guard
    while mock_stats(url)["requests"] < n:
        assert time.monotonic() < end, "hang guard"
        time.sleep(0.02)


def read_stderr_until(proc: subprocess.Popen, text: str, guard: float = HANG_GUARD_S) -> str:
    """Read proc's stderr line by line until a line contains `text`; return what was read.

    A thread does the blocking reads, so the hang guard holds even when no
    line ever comes; it keeps draining stderr afterwards, so the process never
    blocks on a full pipe.
    """
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        for line in proc.stderr:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    seen: list[str] = []
    end = time.monotonic() + guard
    while True:
        try:
            line = lines.get(timeout=max(0.0, end - time.monotonic()))
        except queue.Empty:
            raise AssertionError(f"hang guard: no {text!r} on stderr; got {''.join(seen)!r}") from None
        assert line is not None, f"stderr closed without {text!r}: {''.join(seen)!r}"
        seen.append(line)
        if text in line:
            return "".join(seen)


# -- streamrun batch (tests/batchapi): runs against a mock in its own process that requires this key ----------

BATCH_KEY = "sk-batch-5d1e9a-never-written"
BATCH_ENV = {"OPENAI_API_KEY": BATCH_KEY, "ANTHROPIC_API_KEY": BATCH_KEY, "MOCK_KEY": BATCH_KEY, "OPENAI_BASE_URL": "",
             "OPENAI_MODEL": ""}
BATCH_FAILING = (3, 13, 23, 33)  # the lines of `batch_rows` the mock answers 400 (their `mock` field)


def batch_rows(n: int = 40, *, ids: bool = True, faults: bool = True, key: str = "k") -> list[dict]:
    """n chat lines; the BATCH_FAILING ones carry the mock's 400 fault (their own key, so each is used once)."""
    out = []
    for i in range(n):
        row: dict = {"messages": [{"role": "system", "content": "Answer in one line."},
                                  {"role": "user", "content": f"question {i}"}]}
        if ids:
            row = {"custom_id": f"p{i:02d}", **row}
        if faults and i in BATCH_FAILING:
            row["mock"] = {"key": f"{key}/{i}", "faults": ["400"]}
        out.append(row)
    return out


def batch_cli(inp: Path, out: Path, url: str, api: str, *extra, **kwargs) -> subprocess.CompletedProcess:
    """`streamrun batch` to the end, polling every 10 ms at most."""
    return streamrun("batch", inp, "-o", out, "--base-url", url, "--api", api, "--model", "mock-model",
                     "--max-tokens", "16", "--poll-interval", "10ms", *extra, env=BATCH_ENV, **kwargs)


def start_batch_cli(inp: Path, out: Path, url: str, api: str, *extra) -> subprocess.Popen:
    """`streamrun batch` in the background, stdout and stderr piped."""
    return subprocess.Popen([*STREAMRUN, "batch", str(inp), "-o", str(out), "--base-url", url, "--api", api,
                             "--model", "mock-model", "--max-tokens", "16", *map(str, extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **BATCH_ENV})


def batch_state(out: Path) -> dict:
    """The batch state file beside the output `out`."""
    return json.loads(out.with_name(out.name.removesuffix(".jsonl") + ".batch.json").read_text())


def no_batch_key_anywhere(tmp_path: Path, *texts: str) -> None:
    """BATCH_KEY is in no file the runs left and in nothing they printed."""
    for p in tmp_path.rglob("*"):
        if p.is_file():
            assert BATCH_KEY.encode() not in p.read_bytes(), f"the key was written to {p.name}"
    for text in texts:
        assert BATCH_KEY not in text, "the key was printed"


def assert_submitted_once(url: str, n: int) -> dict:
    """The mock was sent n custom_ids in batches, each once; its counters."""
    stats = mock_stats(url)
    assert len(stats["batch_lines"]) == n, stats["batch_lines"]
    assert set(stats["batch_lines"].values()) == {1}, {k: v for k, v in stats["batch_lines"].items() if v != 1}
    return stats


# ---- SSE helpers shared by the decoder's and the protocols' tests

def sse_decode(chunks) -> list:
    """Feed byte chunks to a fresh SSE decoder; every event, the closing ones included."""
    from runner.stream.sse import SSEDecoder

    decoder = SSEDecoder()
    events = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.close())
    return events


def sse_splits(data: bytes):
    """The whole body, then every two-way split, then one byte at a time."""
    yield [data]
    for i in range(1, len(data)):
        yield [data[:i], data[i:]]
    yield [data[i:i + 1] for i in range(len(data))]


def feed_named(handle_event, events):
    """Feed decoded events to a named-event protocol as the engine does; (state, error raised, returns)."""
    from runner.stream.errors import RequestError
    from runner.stream.protocol_responses import EventStreamState

    state = EventStreamState()
    carried = []
    for event in events:
        try:
            carried.append(handle_event(state, event.event, event.data))
        except RequestError as exc:
            return state, exc, carried
        if state.done:
            break
    return state, None, carried


def named_outcome(state, err) -> tuple:
    return (state.text, state.reasoning, state.tool_calls, state.finish_reason, state.usage, state.model,
            state.response_id, state.done, state.events, state.text_events, state.first_answer_event,
            type(err), str(err) if err else None)


def check_named_events_typed(handle_event, events) -> None:
    """Property of every named-event protocol: arbitrary events raise only typed errors,
    and whatever got through is what a record can hold."""
    import json

    from runner.stream.errors import RequestError
    from runner.stream.protocol_responses import EventStreamState

    state = EventStreamState()
    for name, obj in events:
        try:
            handle_event(state, name, json.dumps(obj) if not isinstance(obj, str) else obj)
        except RequestError:
            return
    assert all(isinstance(p, str) for p in state.text_parts + state.reasoning_parts)
    for call in state.tool_calls or []:
        assert isinstance(call["function"]["name"], str) and isinstance(call["function"]["arguments"], str)
    assert state.finish_reason is None or isinstance(state.finish_reason, str)


def json_values(max_leaves: int = 12, finite: bool = False):
    """Arbitrary JSON values (hypothesis), for the property tests of whatever parses untrusted JSON.

    `finite` leaves out infinities (which json.dumps writes as the non-JSON `Infinity`).
    """
    from hypothesis import strategies as st

    scalars = (st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
               | st.floats(allow_nan=False, allow_infinity=not finite) | st.text(max_size=8))
    return st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                        | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=max_leaves)


# ---- a small HTTP server that records what is POSTed to it (a Pushgateway, an OTLP collector)


@dataclasses.dataclass
class Posted:
    method: str
    path: str
    headers: dict[str, str]  # names in lower case
    body: bytes


class Recorder:
    """An HTTP server on 127.0.0.1 in a thread of its own (so a CLI subprocess can reach it while the
    test blocks): every request recorded, answered `status` with an empty body."""

    def __init__(self, status: int = 200) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.status = status
        self.posted: list[Posted] = []
        self._lock = threading.Lock()
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def _record(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with recorder._lock:
                    recorder.posted.append(Posted(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(recorder.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = do_DELETE = _record

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def requests(self) -> list[Posted]:
        with self._lock:
            return list(self.posted)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


# ---- TLS: a throwaway CA, servers that speak TLS (runner/stream/tls.py; fixtures in tests/conftest.py)


@dataclasses.dataclass(frozen=True)
class Pki:
    """PEM files of a CA made for one test session: server certificates (good, expired, for another name),
    a client certificate it signed, and one from a CA no server trusts."""

    dir: Path

    def cert(self, name: str) -> str:
        return str(self.dir / f"{name}.pem")

    def key(self, name: str) -> str:
        return str(self.dir / f"{name}.key")

    def server_context(self, name: str = "server", client_ca: bool = False):
        """A server's SSL context with certificate `name`; `client_ca`: it requires a client certificate
        signed by this CA (mutual TLS)."""
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert(name), self.key(name))
        if client_ca:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.cert("ca"))
        return context


def make_pki(where: Path) -> Pki:
    """A CA and the certificates `Pki` names, written under `where` (cryptography, the test extra)."""
    import datetime
    import ipaddress

    pytest.importorskip("cryptography", reason="the TLS tests make their certificates with the cryptography "
                                               "package (the test extra)")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)
    day = datetime.timedelta(days=1)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])

    def write(stem: str, cert, key) -> None:
        (where / f"{stem}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (where / f"{stem}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                              serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption()))

    def authority(stem: str, common: str):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(common)).issuer_name(name(common))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - day).not_valid_after(now + 30 * day)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False, encipher_only=False,
                                             decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        write(stem, cert, key)
        return cert, key

    def leaf(stem: str, ca, common: str, sans: list, usage, before, after) -> None:
        ca_cert, ca_key = ca
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(common)).issuer_name(ca_cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(before).not_valid_after(after)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        write(stem, builder.sign(ca_key, hashes.SHA256()), key)

    where.mkdir(parents=True, exist_ok=True)
    ca = authority("ca", "streamrun test CA")
    other = authority("other-ca", "a CA no server trusts")
    here = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    server, client = ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH
    leaf("server", ca, "127.0.0.1", here, server, now - day, now + 30 * day)
    leaf("expired", ca, "127.0.0.1", here, server, now - 30 * day, now - day)
    leaf("wrong-name", ca, "api.example.com", [x509.DNSName("api.example.com")], server, now - day, now + 30 * day)
    leaf("client", ca, "streamrun client", [], client, now - day, now + 30 * day)
    leaf("stranger", other, "streamrun client", [], client, now - day, now + 30 * day)
    key = serialization.load_pem_private_key((where / "client.key").read_bytes(), None)
    (where / "client-encrypted.key").write_bytes(key.private_bytes(  # a key with a passphrase
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    return Pki(where)


class ThreadedServers:
    """Async servers (the mock over TLS, say) on an event loop of their own in a thread, so that a test can
    run the CLI as a blocking subprocess against them; each `start` returns the server's URL."""

    def __init__(self) -> None:
        import asyncio

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.stack = AsyncExitStack()

    def start(self, context_manager):
        """Enter an async context manager that yields a URL (e.g. `serve(...)`) on the servers' loop."""
        import asyncio

        return asyncio.run_coroutine_threadsafe(self.stack.enter_async_context(context_manager),
                                                self.loop).result(HANG_GUARD_S)

    def close(self) -> None:
        import asyncio

        asyncio.run_coroutine_threadsafe(self.stack.aclose(), self.loop).result(HANG_GUARD_S)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(HANG_GUARD_S)
        self.loop.close()


class TlsFront:
    """A TLS server in front of a plain one, made like Go's, nginx's or envoy's: blocking OpenSSL, so a
    client it refuses gets the alert that says why (asyncio's TLS servers close without one).  The mock
    behind it answers the clients it accepts."""

    def __init__(self, context, upstream: tuple[str, int]) -> None:
        import socket

        self.context, self.upstream = context, upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.refused: list[str] = []  # why each refused handshake failed, as the server saw it
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn) -> None:
        import select
        import socket
        import ssl

        try:
            tls = self.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as exc:  # OpenSSL sent its alert already
            self.refused.append(getattr(exc, "reason", None) or str(exc))
            conn.close()
            return
        with tls, socket.create_connection(self.upstream) as up:
            while True:
                ready = [tls] if tls.pending() else select.select([tls, up], [], [], HANG_GUARD_S)[0]
                if not ready:
                    return
                for src in ready:
                    try:
                        data = src.recv(65536)
                    except OSError:
                        return
                    if not data:
                        return
                    (up if src is tls else tls).sendall(data)

    def close(self) -> None:
        self.listener.close()


# ---- proxies: a small forward proxy of the test's own, and Debian's tinyproxy (its fixture: tests/conftest.py)


@dataclasses.dataclass
class ProxyLog:
    """What a `forward_proxy` saw: one line per request ("POST http://host:port/v1/chat/completions",
    "CONNECT host:port"), and the requests it refused (407, 502)."""

    lines: list = dataclasses.field(default_factory=list)
    refused: list = dataclasses.field(default_factory=list)


@asynccontextmanager
async def forward_proxy(hosts: dict | None = None, auth: tuple[str, str] | None = None):
    """An HTTP forward proxy on 127.0.0.1 (absolute-form requests and CONNECT tunnels), one request per
    connection (it asks both ends to close), so its log has a line for every request; yields (URL, ProxyLog).

    `hosts` maps names only this proxy knows to addresses (as a corporate proxy resolves internal names):
    a request to such a name can only have come through it.  `auth`: (user, password) it requires as
    Proxy-Authorization, answering 407 without it.
    """
    import asyncio
    import base64

    hosts = hosts or {}
    log = ProxyLog()
    wanted = None if auth is None else "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()

    async def pipe(reader, writer) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def handle(reader, writer) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        request_line, *header_lines = head.decode("latin-1").split("\r\n")[:-2]
        method, target, version = request_line.split(" ", 2)
        headers = [h for h in header_lines if h.split(":", 1)[0].strip().lower()
                   not in ("proxy-authorization", "proxy-connection", "connection", "keep-alive")]
        given = next((h.split(":", 1)[1].strip() for h in header_lines
                      if h.lower().startswith("proxy-authorization:")), None)
        if wanted is not None and given != wanted:
            log.refused.append(f"407 {method} {target}")
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"test\"\r\n"
                         b"Content-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            path = None
        else:
            from yarl import URL

            url = URL(target)
            host, port, path = url.host, url.port, url.raw_path_qs
        try:
            up_reader, up_writer = await asyncio.open_connection(hosts.get(host, host), int(port))
        except OSError:
            log.refused.append(f"502 {method} {target}")
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            await writer.drain()
            writer.close()
            return
        log.lines.append(f"{method} {target}")
        if method == "CONNECT":
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        else:
            up_writer.write(("\r\n".join([f"{method} {path} {version}", *headers, "Connection: close"])
                             + "\r\n\r\n").encode("latin-1"))
        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", log
    finally:
        server.close()


TINYPROXY_REQUIRED = "STREAMRUN_REQUIRE_TINYPROXY"  # set by `make test-proxy`: a missing tinyproxy fails, not skips


def stop_processes(procs: list[subprocess.Popen]) -> None:
    """SIGTERM each process a fixture started, SIGKILL the ones still there after 10 s."""
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
