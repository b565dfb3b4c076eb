"""runner/engine/cache.py: keys, modes, durability and several processes sharing one SQLite file."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import sys
import textwrap
import time
from pathlib import Path

import orjson
import pytest

from runner.engine.cache import MODES, SCHEMA_VERSION, CacheError, ResponseCache, cache_key
from runner.errors import UsageError
from tests.helpers import HANG_GUARD_S, ROOT

CHAT = "/v1/chat/completions"
BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0, "stream": True}


def ok(i: int = 0, **extra) -> dict:
    return {"custom_id": f"r{i}", "status": "ok", "text": f"answer {i} ✓", "metrics": {"ttft_s": 0.1}, **extra}


def rows(path: Path) -> dict[str, tuple[str, float]]:
    """The table as another connection sees it (committed entries only)."""
    conn = sqlite3.connect(path)
    try:
        return {k: (r, t) for k, r, t in conn.execute("SELECT key, record, created_at FROM responses")}
    finally:
        conn.close()


def backdate(path: Path, key: str, created_at: float = 1_000_000.0) -> float:
    """Set an entry's created_at (Unix time) to long ago, as another connection would; returns it."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            conn.execute("UPDATE responses SET created_at = ? WHERE key = ?", (created_at, key))
    finally:
        conn.close()
    assert rows(path)[key][1] == created_at
    return created_at


async def put_all(path: Path, mode: str, items: dict[str, dict]) -> ResponseCache:
    cache = ResponseCache.open(path, mode)
    for key, record in items.items():
        await cache.put(key, record)
    await cache.aclose()
    return cache


# -- keys -------------------------------------------------------------------------


def test_key_is_sha256_of_canonical_json():
    canonical = b'{"body":{"messages":[{"content":"hi","role":"user"}],"model":"m","temperature":0},"endpoint":"/v1/chat/completions"}'
    assert cache_key(CHAT, BODY) == hashlib.sha256(canonical).hexdigest()


def test_key_ignores_order_and_streaming():
    reordered = {
        "stream_options": {"include_usage": True},
        "temperature": 0,
        "messages": [{"content": "hi", "role": "user"}],
        "model": "m",
    }
    assert cache_key(CHAT, reordered) == cache_key(CHAT, BODY)
    assert cache_key(CHAT, {**BODY, "stream": False}) == cache_key(CHAT, BODY)


@pytest.mark.parametrize(
    "change",
    [
        {"model": "other"},
        {"temperature": 0.5},
        {"messages": [{"role": "user", "content": "hi!"}]},
        {"max_tokens": 10},
        {"seed": 1},
    ],
)
def test_key_sees_what_changes_the_answer(change):
    assert cache_key(CHAT, {**BODY, **change}) != cache_key(CHAT, BODY)


def test_key_sees_the_endpoint_and_list_order():
    assert cache_key("/v1/responses", BODY) != cache_key(CHAT, BODY)
    two = {"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]}
    swapped = {"model": "m", "messages": two["messages"][::-1]}
    assert cache_key(CHAT, two) != cache_key(CHAT, swapped)


def test_key_does_not_change_the_body():
    body = dict(BODY)
    cache_key(CHAT, body)
    assert body == BODY


# -- modes ------------------------------------------------------------------------------


async def test_read_write(tmp_path):
    path = tmp_path / "cache.sqlite"
    async with ResponseCache.open(path) as cache:
        key = cache_key(CHAT, BODY)
        assert await cache.get(key) is None
        assert await cache.put(key, ok(1)) is True
        assert await cache.get(key) == ok(1)  # pending puts are visible to their own cache
    assert cache.stats.as_dict() == {"hits": 1, "misses": 1, "writes": 1}
    async with ResponseCache.open(path, "read-write") as cache:
        assert await cache.get(key) == ok(1)
        await cache.put(key, ok(2))  # a concurrent run's answer: replaced
    assert orjson.loads(rows(path)[key][0]) == ok(2)


async def test_read_only_serves_and_never_writes(tmp_path):
    path = tmp_path / "cache.sqlite"
    await put_all(path, "read-write", {"a": ok(1)})
    before = path.read_bytes()
    async with ResponseCache.open(path, "read-only") as cache:
        assert await cache.get("a") == ok(1)
        assert await cache.get("b") is None
        assert await cache.put("b", ok(2)) is False
        assert await cache.put("a", ok(3)) is False
        await cache.flush()
    assert cache.stats.as_dict() == {"hits": 1, "misses": 1, "writes": 0}
    assert rows(path).keys() == {"a"} and orjson.loads(rows(path)["a"][0]) == ok(1)
    assert path.read_bytes() == before


async def test_read_only_sees_what_a_running_writer_committed(tmp_path):
    path = tmp_path / "cache.sqlite"
    async with ResponseCache.open(path) as writer:
        await writer.put("a", ok(1))
        await writer.flush()  # committed to the WAL, not yet checkpointed into the file
        async with ResponseCache.open(path, "read-only") as reader:
            assert await reader.get("a") == ok(1)
            await writer.put("b", ok(2))
            await writer.flush()
            assert await reader.get("b") == ok(2)


def test_read_only_needs_an_existing_cache(tmp_path):
    with pytest.raises(CacheError, match="does not exist"):
        ResponseCache.open(tmp_path / "nope.sqlite", "read-only")
    assert not (tmp_path / "nope.sqlite").exists()
    (tmp_path / "empty.sqlite").touch()
    with pytest.raises(CacheError, match="empty SQLite database"):
        ResponseCache.open(tmp_path / "empty.sqlite", "read-only")


async def test_write_only_never_serves_and_keeps_old_entries(tmp_path):
    path = tmp_path / "cache.sqlite"
    await put_all(path, "read-write", {"a": ok(1)})
    async with ResponseCache.open(path, "write-only") as cache:
        assert await cache.get("a") is None
        assert await cache.put("a", ok(2)) is True
        assert await cache.put("b", ok(3)) is True
        assert await cache.get("b") is None
    assert cache.stats.as_dict() == {"hits": 0, "misses": 2, "writes": 1}
    table = rows(path)
    assert orjson.loads(table["a"][0]) == ok(1) and orjson.loads(table["b"][0]) == ok(3)


async def test_refresh_never_serves_and_overwrites(tmp_path):
    path = tmp_path / "cache.sqlite"
    await put_all(path, "read-write", {"a": ok(1)})
    old_time = backdate(path, "a")  # an entry of long ago: its replacement is stamped later, whatever the clock's step
    async with ResponseCache.open(path, "refresh") as cache:
        assert await cache.get("a") is None
        await cache.put("a", ok(2))
        await cache.put("b", ok(3))
    assert cache.stats.as_dict() == {"hits": 0, "misses": 1, "writes": 2}
    table = rows(path)
    assert orjson.loads(table["a"][0]) == ok(2) and table["a"][1] > old_time
    assert orjson.loads(table["b"][0]) == ok(3)


@pytest.mark.parametrize("mode", ["read-write", "write-only", "refresh"])
async def test_only_ok_records_are_stored(tmp_path, mode):
    path = tmp_path / "cache.sqlite"
    async with ResponseCache.open(path, mode) as cache:
        assert await cache.put("e", {"status": "error", "error": {"type": "http", "status_code": 500}}) is False
        assert await cache.put("n", {"text": "no status"}) is False
        assert await cache.put("o", ok()) is True
    assert rows(path).keys() == {"o"}
    assert cache.stats.writes == 1


def test_unknown_mode(tmp_path):
    with pytest.raises(CacheError, match="unknown mode 'rw'"):
        ResponseCache.open(tmp_path / "c.sqlite", "rw")
    assert MODES[0] == "read-write"


# -- what is stored -----------------------------------------------------------------------


async def test_record_is_stored_as_given_and_no_key_reaches_the_file(tmp_path):
    path = tmp_path / "cache.sqlite"
    secret = "sk-test-SECRET-0123456789"
    headers = {"Authorization": f"Bearer {secret}"}  # what the client sends; never given to the cache
    record = ok(7, usage={"prompt_tokens": 3}, text="é ✓ 😀", itl_s=[0.01, 0.02])
    key = cache_key(CHAT, BODY)
    assert secret not in key and headers
    async with ResponseCache.open(path) as cache:
        await cache.put(key, record)
        record["text"] = "changed after the put"  # the stored copy is the record as it was given
    stored = rows(path)[key][0]
    assert stored == orjson.dumps(ok(7, usage={"prompt_tokens": 3}, text="é ✓ 😀", itl_s=[0.01, 0.02])).decode()
    for f in tmp_path.iterdir():
        assert secret.encode() not in f.read_bytes()


async def test_created_at_per_entry(tmp_path):
    path = tmp_path / "cache.sqlite"
    start = time.time()
    await put_all(path, "read-write", {"a": ok(1), "b": ok(2)})
    for _, created_at in rows(path).values():
        assert start - 1 <= created_at <= time.time() + 1


# -- the file ----------------------------------------------------------------------------------


async def test_wal_mode_and_schema(tmp_path):
    path = tmp_path / "cache.sqlite"
    async with ResponseCache.open(path) as cache:
        await cache.put("a", ok())
        await cache.flush()
        assert Path(f"{path}-wal").exists()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert dict(conn.execute("SELECT name, value FROM meta")) == {
            "schema": "streamrun-cache",
            "version": str(SCHEMA_VERSION),
        }
        columns = [r[1] for r in conn.execute("PRAGMA table_info(responses)")]
        assert columns == ["key", "record", "created_at"]
    finally:
        conn.close()


async def test_survives_reopen(tmp_path):
    path = tmp_path / "sub" / "dir" / "cache.sqlite"  # parents are created
    records = {f"k{i}": ok(i) for i in range(500)}
    first = await put_all(path, "read-write", records)
    assert first.stats.writes == 500
    for _ in range(2):
        async with ResponseCache.open(path) as cache:
            for key, record in records.items():
                assert await cache.get(key) == record
        assert cache.stats.as_dict() == {"hits": 500, "misses": 0, "writes": 0}


async def test_puts_are_committed_within_the_flush_interval(tmp_path):
    """A crash loses at most the last interval: committed rows are visible to others before close."""
    path = tmp_path / "cache.sqlite"
    cache = ResponseCache.open(path, flush_interval=0.2)
    try:
        await cache.put("a", ok())
        assert "a" not in rows(path)
        deadline = time.monotonic() + 5
        while "a" not in rows(path):
            assert time.monotonic() < deadline, "the pending put was never committed"
            await asyncio.sleep(0.05)
        assert cache.stats.writes == 1
    finally:
        await cache.aclose()


async def test_puts_are_committed_in_batches(tmp_path):
    path = tmp_path / "cache.sqlite"
    cache = ResponseCache.open(path, flush_interval=60, flush_rows=10)
    try:
        for i in range(25):
            await cache.put(f"k{i}", ok(i))
        assert len(rows(path)) == 20
        await cache.flush()
        assert len(rows(path)) == 25
    finally:
        await cache.aclose()


async def test_close_is_idempotent_and_final(tmp_path):
    cache = ResponseCache.open(tmp_path / "cache.sqlite")
    await cache.put("a", ok())
    cache.close()
    cache.close()
    await cache.aclose()
    with pytest.raises(RuntimeError, match="closed"):
        await cache.get("a")
    with pytest.raises(RuntimeError, match="closed"):
        await cache.put("b", ok())
    assert rows(tmp_path / "cache.sqlite").keys() == {"a"}


async def test_the_event_loop_keeps_running_while_sqlite_waits(tmp_path):
    """Another connection holds the write lock: the commit waits on the cache's thread, not on the loop.

    No time is assumed: the lock is held until the test lets it go (the busy
    timeout is the hang guard's), so the commit is still waiting whatever the
    loop did meanwhile, and the loop turning at all while it waits is the point.
    """
    path = tmp_path / "cache.sqlite"
    cache = ResponseCache.open(path, flush_rows=1, busy_timeout=HANG_GUARD_S)
    blocker = sqlite3.connect(path, isolation_level=None)
    try:
        blocker.execute("BEGIN IMMEDIATE")
        await cache.put("a", ok())  # done: the cache's thread went straight on to commit it, and waits for the lock
        got = asyncio.create_task(cache.get("a"))  # queued behind the commit
        for _ in range(20):  # twenty turns of the loop, each a real wait for a timer, while the commit waits
            await asyncio.sleep(0.001)
        assert not got.done()
        blocker.execute("COMMIT")
        assert await asyncio.wait_for(got, HANG_GUARD_S) == ok()
        assert "a" in rows(path)
    finally:
        blocker.close()
        await cache.aclose()


# -- bad files --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_not_sqlite_is_a_clear_error(tmp_path, mode):
    path = tmp_path / "cache.sqlite"
    path.write_bytes(b"this is a results file, not a database\n" * 100)
    with pytest.raises(CacheError) as info:
        ResponseCache.open(path, mode)
    e = info.value
    assert isinstance(e, UsageError) and e.exit_code == 2
    assert e.path == str(path) and str(path) in str(e)
    assert "not a SQLite database" in str(e)
    assert e.__cause__ is None and e.__suppress_context__  # no sqlite3 traceback chained to it
    assert path.read_bytes() == b"this is a results file, not a database\n" * 100


def test_other_sqlite_database_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE users (id INTEGER)")
    conn.commit()
    conn.close()
    for mode in MODES:
        with pytest.raises(CacheError, match="not a streamrun cache"):
            ResponseCache.open(path, mode)


def test_other_schema_version_is_refused(tmp_path):
    path = tmp_path / "cache.sqlite"
    ResponseCache.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE name = 'version'")
    conn.commit()
    conn.close()
    with pytest.raises(CacheError, match="version '99'"):
        ResponseCache.open(path)


def test_directory_is_refused(tmp_path):
    for mode in MODES:
        with pytest.raises(CacheError, match="is a directory|is not a file"):
            ResponseCache.open(tmp_path, mode)


async def test_corrupt_pages_are_a_clear_error(tmp_path):
    path = tmp_path / "cache.sqlite"
    await put_all(path, "read-write", {f"k{i}": ok(i, text="x" * 2000) for i in range(300)})
    data = bytearray(path.read_bytes())
    assert len(data) > 100_000
    data[8192:] = b"\xa5" * (len(data) - 8192)  # keep the header and the first pages, garble the rest
    path.write_bytes(bytes(data))
    with pytest.raises(CacheError) as info:
        cache = ResponseCache.open(path)
        try:
            for i in range(300):
                await cache.get(f"k{i}")
            await cache.put("new", ok())
            await cache.flush()
        finally:
            try:
                cache.close()
            except CacheError:
                pass
    assert info.value.path == str(path) and "corrupt" in str(info.value)


# -- several processes -------------------------------------------------------------------------------

WRITER = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from runner.engine.cache import ResponseCache

    async def main(path, tag, n, flush_rows):
        print("ready", flush=True)
        while not os.path.exists(path + ".go"):  # all start together
            time.sleep(0.005)
        cache = ResponseCache.open(path, flush_rows=flush_rows)
        for i in range(n):
            await cache.put(f"{tag}-{i}", {"status": "ok", "tag": tag, "i": i})
            if i % 5 == 0:
                await cache.get(f"{tag}-{i // 2}")
                await cache.get(f"other-{i}")
        await cache.aclose()
        print(cache.stats.writes)

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
    """
)


async def test_several_processes_share_one_file(tmp_path):
    path = tmp_path / "shared.sqlite"  # new: the processes race to create it, too
    n = 300
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable, "-c", WRITER, str(path), f"p{j}", str(n), str(flush_rows),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env, cwd=ROOT,
        )
        for j, flush_rows in enumerate([1, 1, 7])
    ]
    # Wait until every writer is up, then start them all at once; this process writes too.
    for p in procs:
        assert await asyncio.wait_for(p.stdout.readline(), 60) == b"ready\n"
    Path(f"{path}.go").touch()
    mine = await asyncio.to_thread(ResponseCache.open, path, flush_rows=3)
    for i in range(n):
        await mine.put(f"main-{i}", {"status": "ok", "tag": "main", "i": i})
        await mine.get(f"p0-{i}")
    await mine.aclose()

    for p in procs:
        out, err = await asyncio.wait_for(p.communicate(), 120)  # the writes count, after "ready"
        assert p.returncode == 0, err.decode()
        assert err == b"", err.decode()
        assert int(out) == n
    assert mine.stats.writes == n

    table = rows(path)
    assert len(table) == 4 * n
    for tag in ["p0", "p1", "p2", "main"]:
        for i in range(n):
            assert orjson.loads(table[f"{tag}-{i}"][0]) == {"status": "ok", "tag": tag, "i": i}
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
