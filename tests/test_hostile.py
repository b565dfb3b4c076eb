"""A hostile server among normal answers: every bad reply is one error record, the run goes on.

Each case below was reproduced against an earlier version, where it crashed
the run (and every --resume after it), was recorded as ok, or grew memory
without bound.  The server answers by the prompt's text, so one run mixes
every hostile reply with normal ones.
"""

from __future__ import annotations

import gzip

import orjson
import pytest
from aiohttp import web

from runner.config.run_config import RunConfig, Stage
from runner.stream.config import Limits, RetryPolicy
from tests.helpers import execute, read_jsonl, replace_fields, write_jsonl

KIB = 1024


def chunk(choice=None, **top) -> dict:
    body = {"id": "c1", "object": "chat.completion.chunk", "model": "m", **top}
    if choice is not None:
        body["choices"] = [choice]
    return body


def sse(*events) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else orjson.dumps(e)) + b"\n\n" for e in events)


GOOD = sse(chunk({"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}),
           chunk({"index": 0, "delta": {"content": "fine"}, "finish_reason": None}),
           chunk({"index": 0, "delta": {}, "finish_reason": "stop"}), b"[DONE]")


def bad_stream(*events) -> bytes:
    """One good content event, then the bad one: the partial text must survive in the record."""
    return sse(chunk({"index": 0, "delta": {"content": "so far"}, "finish_reason": None}), *events, b"[DONE]")


# case -> (reply, expected error type)
STREAMS = {
    "choices-null": (bad_stream({"choices": [None]}), "malformed_response"),
    "choices-string": (bad_stream({"choices": ["x"]}), "malformed_response"),
    "choices-object": (bad_stream({"choices": {"0": {"delta": {"content": "x"}}}}), "malformed_response"),
    "delta-string": (bad_stream(chunk({"index": 0, "delta": "x"})), "malformed_response"),
    "content-number": (bad_stream(chunk({"index": 0, "delta": {"content": 5}})), "malformed_response"),
    "content-list": (bad_stream(chunk({"index": 0, "delta": {"content": ["a"]}})), "malformed_response"),
    "usage-string": (bad_stream(chunk(usage="lots", choices=[])), "malformed_response"),
    "usage-list": (bad_stream(chunk(usage=[1, 2], choices=[])), "malformed_response"),
    "usage-count-string": (bad_stream(chunk(usage={"completion_tokens": "7"}, choices=[])), "malformed_response"),
    "usage-count-huge": (bad_stream(b'{"id": "c1", "choices": [], "usage": {"completion_tokens": 1180591620717411303424}}'),
                         "malformed_response"),
    "tool-index-negative": (bad_stream(chunk({"index": 0, "delta": {"tool_calls": [{"index": -5}]}})),
                            "malformed_response"),
    "tool-index-string": (bad_stream(chunk({"index": 0, "delta": {"tool_calls": [{"index": "0"}]}})),
                          "malformed_response"),
    "tool-function-string": (bad_stream(chunk({"index": 0, "delta": {"tool_calls": [{"index": 0, "function": "f"}]}})),
                             "malformed_response"),
    "tool-index-huge": (bad_stream(chunk({"index": 0, "delta": {"tool_calls": [{"index": 1000000}]}})),
                        "response_too_large"),
    "event-not-object": (bad_stream(b"[1, 2, 3]"), "malformed_response"),
    "only-done": (sse(b"[DONE]"), "empty_response"),
}
JSON_BODIES = {
    "json-error-200": ({"error": {"message": "upstream overloaded", "type": "server_error"}}, "stream_error"),
    "json-choices-string": ({"id": "x", "choices": ["x"]}, "incomplete_stream"),
    "json-message-string": ({"id": "x", "choices": [{"index": 0, "message": "x"}]}, "incomplete_stream"),
}
OTHER = {
    "html-200": "malformed_response",
    "endless-line": "response_too_large",
    "gzip-bomb-sse": "response_too_large",
    "gzip-bomb-json": "response_too_large",
}
EXPECTED = {**{k: v[1] for k, v in STREAMS.items()}, **{k: v[1] for k, v in JSON_BODIES.items()}, **OTHER}
SENT: dict[str, int] = {}
LIMITS = Limits(max_event_bytes=64 * KIB, max_response_bytes=512 * KIB)


async def hostile(request: web.Request) -> web.StreamResponse:
    case = (await request.json())["messages"][0]["content"]
    if case.startswith("ok"):
        return web.Response(body=GOOD, content_type="text/event-stream")
    if case in STREAMS:
        return web.Response(body=STREAMS[case][0], content_type="text/event-stream")
    if case in JSON_BODIES:
        return web.json_response(JSON_BODIES[case][0])
    if case == "html-200":
        return web.Response(text="<html><body>Please log in</body></html>", content_type="text/html")
    if case.startswith("gzip-bomb"):
        json_body = case.endswith("json")
        inner = b'{"pad": "' + b"0" * (4 * 1024 * 1024) + b'"}' if json_body else b"data: " + b"0" * (4 * 1024 * 1024)
        return web.Response(body=gzip.compress(inner), headers={"Content-Encoding": "gzip"},
                            content_type="application/json" if json_body else "text/event-stream")
    if case == "endless-line":  # a data: line that never ends, sent until the client hangs up
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        SENT["endless"] = 0
        try:
            await resp.write(b"data: ")
            for _ in range(1024):  # at most 64 MiB: the test's own bound
                await resp.write(b"x" * 65536)
                SENT["endless"] += 65536
        except (ConnectionError, RuntimeError):
            pass
        return resp
    raise AssertionError(case)


@pytest.fixture
async def hostile_server(aiohttp_server):
    app = web.Application()
    app.router.add_post("/v1/chat/completions", hostile)
    server = await aiohttp_server(app)
    return server


async def test_every_hostile_reply_is_one_error_record_and_the_run_goes_on(tmp_path, hostile_server, capsys):
    cases = []
    for i, name in enumerate(EXPECTED):
        cases += [f"ok-{i}", name]
    inp = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": c, "messages": [{"role": "user", "content": c}]}
                                              for c in cases])
    cfg = replace_fields(RunConfig(inputs=(str(inp),)), path=str(tmp_path / "out.jsonl"), model="m",
                         base_urls=(str(hostile_server.make_url("/v1")),), stages=(Stage(0, 4),), limits=LIMITS,
                         retry=RetryPolicy(max_attempts=2, backoff_initial=0.001, backoff_max=0.01))
    code = await execute(cfg, None, False)
    records = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert code == 1 and len(records) == len(cases)
    wrong = {c: (r["status"], r["error"] and r["error"]["type"]) for c, r in records.items()
             if (r["status"] != "ok" if c.startswith("ok") else
                 (r["status"], r["error"]["type"]) != ("error", EXPECTED[c]))}
    assert wrong == {}
    for name, (_reply, _type) in STREAMS.items():
        if name != "only-done":
            assert records[name]["text"] == "so far", name  # partial text kept
    assert records["tool-index-huge"]["attempts"] == 1  # a bound is not retried: same answer again
    assert records["endless-line"]["attempts"] == 1
    assert SENT["endless"] < 32 * 1024 * 1024  # the client hung up near its bound
    assert "Traceback" not in capsys.readouterr().err


async def test_a_second_run_over_the_same_server_resumes_cleanly(tmp_path, hostile_server):
    """A hostile reply used to crash every --resume on the same request; now the file completes."""
    inp = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": c, "messages": [{"role": "user", "content": c}]}
                                              for c in ("ok-1", "choices-null", "ok-2")])
    cfg = replace_fields(RunConfig(inputs=(str(inp),)), path=str(tmp_path / "out.jsonl"), model="m",
                         base_urls=(str(hostile_server.make_url("/v1")),), limits=LIMITS,
                         retry=RetryPolicy(max_attempts=1))
    assert await execute(cfg, None, False) == 1
    # the resumed run sends the failed line again, which fails again without a crash: its record is appended
    # and supersedes the old one; the summary (and exit code) covers the whole output's final records
    assert await execute(replace_fields(cfg, resume=True), None, False) == 1
    ids = sorted(r["custom_id"] for r in read_jsonl(tmp_path / "out.jsonl"))
    assert ids == ["choices-null", "choices-null", "ok-1", "ok-2"]
    assert await execute(replace_fields(cfg, resume=True, keep_failed=True), None, False) == 1
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 4  # --keep-failed: nothing sent
