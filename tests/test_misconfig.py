"""Misconfiguration caught before it burns the input, and server answers that must not pass as ok.

Each case is one a new user hit against a real server: a URL without a
scheme or with the endpoint pasted in, a missing key, a wrong key on a large
input, no model named, an over-long prompt, an empty 200.
"""

from __future__ import annotations

import orjson
import pytest
from aiohttp import web

from runner.config.run_config import LoadConfig, OutputConfig, RunConfig, Stage, TransportConfig
from runner.errors import UsageError
from runner.preflight import preflight
from runner.stream.config import RetryPolicy
from tests.helpers import execute, read_jsonl, replace_fields, streamrun, write_jsonl

FAST_RETRY = RetryPolicy(max_attempts=3, backoff_initial=0.001, backoff_max=0.01)


def rows(n: int, **extra) -> list[dict]:
    return [{"custom_id": f"r{i}", "messages": [{"role": "user", "content": f"prompt {i}"}], **extra}
            for i in range(n)]


async def run_rows(tmp_path, url, lines, **overrides):
    inp = write_jsonl(tmp_path / "in.jsonl", lines)
    cfg = RunConfig(inputs=(str(inp),), output=OutputConfig(str(tmp_path / "out.jsonl"), overwrite=True),
                    transport=TransportConfig(base_urls=(url,), retry=FAST_RETRY),
                    load=LoadConfig(stages=(Stage(0, 4),)))
    code = await execute(replace_fields(cfg, **overrides), None, False)
    out = tmp_path / "out.jsonl"
    return code, (read_jsonl(out) if out.exists() else [])


def sse(*events: bytes | str) -> bytes:
    return b"".join(b"data: " + (e if isinstance(e, bytes) else orjson.dumps(e)) + b"\n\n" for e in events)


def chunk(content=None, finish=None, cid="chatcmpl-7") -> dict:
    delta = {} if content is None else {"content": content}
    return {"id": cid, "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


async def scripted_server(aiohttp_server, reply, models=("m",)):
    """A server whose completions answer `reply(request) -> web.Response`; GET /v1/models lists `models`."""
    seen: list[dict] = []

    async def completions(request: web.Request):
        seen.append(await request.json())
        return await reply(request)

    async def list_models(request: web.Request):
        return web.json_response({"object": "list", "data": [{"id": m, "object": "model"} for m in models]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", completions)
    app.router.add_get("/v1/models", list_models)
    server = await aiohttp_server(app)
    return str(server.make_url("/v1")), seen


def stream_reply(body: bytes, headers=None):
    async def reply(request):
        return web.Response(body=body, content_type="text/event-stream", headers=headers)
    return reply


# ---- before anything is sent

@pytest.mark.parametrize("url, hint", [
    ("localhost:8000/v1", "--base-url http://localhost:8000/v1"),
    ("http://gpu-box:8000/v1/chat/completions", "--base-url http://gpu-box:8000/v1"),
    ("https://api.example.com/v1/completions/", "--base-url https://api.example.com/v1"),
    ("ftp://host/v1", "must be http:// or https://"),
])
def test_a_malformed_base_url_exits_2_with_the_fix(tmp_path, url, hint):
    inp = write_jsonl(tmp_path / "in.jsonl", rows(1))
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--base-url", url, "--no-auth")
    assert res.returncode == 2, res.stderr
    assert hint in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out.jsonl").exists()


def test_an_unset_key_for_a_remote_url_exits_2_naming_the_variable(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", rows(3))
    env = {"MY_GATEWAY_KEY": ""}
    # 192.0.2.1 is TEST-NET-1: a connection attempt would hang until the connect timeout
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--base-url", "http://192.0.2.1/v1",
                    "--api-key-env", "MY_GATEWAY_KEY", "--connect-timeout", "30", env=env, timeout=20)
    assert res.returncode == 2
    assert "MY_GATEWAY_KEY is not set" in res.stderr and "--no-auth" in res.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_preflight_rules():
    remote = RunConfig(inputs=("x",), transport=TransportConfig(base_urls=("https://api.example.com/v1",),
                                                                api_key_env="NOPE_KEY"))
    with pytest.raises(UsageError, match="NOPE_KEY is not set"):
        preflight(remote, local=False)
    no_auth = preflight(replace_fields(remote, auth=False), local=False)
    assert "Authorization" not in no_auth.headers
    for local_url in ("http://127.0.0.1:8000/v1", "http://localhost:8080/v1", "http://[::1]:9000/v1"):
        assert preflight(replace_fields(remote, base_urls=(local_url,)), local=False).secrets == ()
    with pytest.raises(UsageError, match="not a variable name"):
        preflight(replace_fields(remote, api_key_env="sk-proj-0123456789"), local=False)
    with pytest.raises(UsageError, match="ORG is not set"):
        preflight(replace_fields(remote, auth=False, headers=("OpenAI-Organization: ${ORG}",)), local=False)


# ---- the first answers say the key, URL or model is wrong

def test_a_wrong_key_on_500_prompts_stops_early_with_exit_2(tmp_path, mock_process):
    url = mock_process("--api-key-env", "MOCK_KEY", env={"MOCK_KEY": "right-key"})
    inp = write_jsonl(tmp_path / "in.jsonl", rows(500))
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--base-url", url, "--model", "mock-model",
                    "-c", "16", env={"OPENAI_API_KEY": "wrong-key"})
    assert res.returncode == 2, res.stderr
    assert "first 20 answers were all HTTP 401/403/404" in res.stderr
    assert "incorrect or missing API key" in res.stderr  # the server's own message
    import urllib.request

    stats = orjson.loads(urllib.request.urlopen(url.removesuffix("/v1") + "/mock/stats").read())
    assert 20 <= stats["requests"] <= 50
    assert read_jsonl(tmp_path / "out.jsonl") == []  # nothing a --resume would wrongly skip
    summary = orjson.loads((tmp_path / "out.summary.json").read_bytes())
    assert summary["exit_code"] == 2 and summary["records_not_written"] == stats["requests"]


async def test_a_few_rejections_among_oks_are_written_and_do_not_stop_the_run(tmp_path, aiohttp_server):
    calls = {"n": 0}

    async def reply(request):
        calls["n"] += 1
        if calls["n"] <= 5:
            return web.json_response({"error": {"message": "model not ready", "code": "model_not_found"}},
                                     status=404)
        return web.Response(body=sse(chunk("hi"), chunk(finish="stop"), b"[DONE]"), content_type="text/event-stream")

    url, _ = await scripted_server(aiohttp_server, reply)
    code, records = await run_rows(tmp_path, url, rows(30), stages=(Stage(0, 1),))
    assert code == 1  # five errors, no failure budget
    assert len(records) == 30 and sum(r["status"] == "ok" for r in records) == 25
    assert {r["error"]["code"] for r in records if r["error"]} == {"model_not_found"}


# ---- the server was never reachable: stop at once, write nothing

CLOSED = "http://127.0.0.1:9/v1"  # the discard port: nothing listens there


def one_error_line(stderr: str) -> str:
    """The run's one error line (the summary that follows it is not an error)."""
    (line,) = [x for x in stderr.splitlines() if "cannot connect" in x or "is this the API" in x]
    return line


@pytest.mark.parametrize("extra", [["--model", "m"], [], ["--model", "m", "--workers", "2"]])
def test_a_closed_port_stops_at_once_and_writes_nothing(tmp_path, extra):
    inp = write_jsonl(tmp_path / "in.jsonl", rows(50))
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--base-url", CLOSED, *extra, timeout=60)
    assert res.returncode == 2, res.stderr
    line = one_error_line(res.stderr)
    assert line.startswith(f"streamrun: cannot connect to {CLOSED}: connection refused"), line
    assert "pass --model" not in res.stderr and "Traceback" not in res.stderr
    assert read_jsonl(tmp_path / "out.jsonl") == []  # nothing a --resume would skip


def test_stream_without_model_at_a_closed_port_is_one_line_exit_2():
    res = streamrun("stream", "hi", "--base-url", CLOSED, timeout=60)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip() == f"streamrun: cannot connect to {CLOSED}: connection refused"


@pytest.fixture
def black_hole():
    """A port whose connections are never accepted: its backlog is full, so a connect waits until it times out."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(8):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        fillers.append(s)
    yield f"http://127.0.0.1:{port}/v1"
    for s in [*fillers, server]:
        s.close()


def test_a_connect_timeout_stops_within_seconds_not_after_every_backoff(tmp_path, black_hole):
    """Five 1-second connect timeouts a prompt with backoffs between them took over 30 s for 16 prompts."""
    inp = write_jsonl(tmp_path / "in.jsonl", rows(16))
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--base-url", black_hole, "--model", "m", "-c", "4",
                    "--connect-timeout", "1", timeout=60)
    assert res.returncode == 2, res.stderr
    line = one_error_line(res.stderr)
    assert line.startswith(f"streamrun: cannot connect to {black_hole}: no connection within 1s (--connect-timeout)")
    assert read_jsonl(tmp_path / "out.jsonl") == []
    summary = orjson.loads((tmp_path / "out.summary.json").read_bytes())
    assert summary["exit_code"] == 2 and summary["records_written"] == 0 and summary["duration_s"] < 20


async def test_a_dead_replica_among_live_ones_does_not_stop_the_run(tmp_path, mock_server):
    url = await mock_server()
    code, records = await run_rows(tmp_path, url, rows(40), base_urls=(CLOSED, url), model="mock-model")
    assert code == 0 and len(records) == 40 and all(r["status"] == "ok" for r in records)


def test_the_guard_holds_what_failed_to_connect_until_a_connection_and_drops_it_on_a_trip():
    from types import SimpleNamespace

    from runner.engine.guards import ConnectGuard

    def record(kind):
        err = None if kind == "ok" else SimpleNamespace(type=kind, status_code=None, message="m")
        return SimpleNamespace(error=err, attempts=1)

    guard = ConnectGuard(("a", "b"), limit=3, patience_s=5.0)
    first, second = record("connect_error"), record("connect_error")
    assert guard.offer(first) == [] and guard.failed("a", "connection refused", 0.0, 0.1) is None
    assert guard.failed("a", "connection refused", 0.0, 0.2) is None  # b has not failed yet
    assert guard.offer(second) == []
    guard.connected()  # b answered: the server is there, what was held goes out with the next record
    ok = record("ok")
    assert guard.offer(ok) == [first, second, ok]
    assert guard.failed("a", "connection refused", 0.0, 9.0) is None  # an outage now is retried as ever

    guard = ConnectGuard(("a",), limit=20, patience_s=5.0)
    held = record("connect_error")
    assert guard.offer(held) == [] and guard.failed("a", "connection refused", 10.0, 10.1) is None
    in_flight = SimpleNamespace(connect_s=0.001)  # an attempt whose connection opened: not yet
    guard.begin(in_flight)
    assert guard.failed("a", "connection refused", 10.0, 16.0) is None
    guard.end(in_flight)
    stop = guard.failed("a", "connection refused", 10.0, 16.0)  # 6 s of nothing but failures
    assert stop.startswith("cannot connect to a: connection refused. Stopped after 3 attempts")
    assert guard.offer(record("connect_error")) == [] and guard.dropped == 2

    guard = ConnectGuard(("a",))
    assert guard.offer(held) == [] and guard.finish().startswith("cannot connect to a")  # ended, never connected
    assert guard.release() == [] and guard.dropped == 1


# ---- a web page where the API should be

PAGE = (b"<!DOCTYPE html>\n<html>\n<head>\n<title>404 Not Found</title>\n</head>\n<body>\n"
        b"<center><h1>404 Not Found</h1></center>\n<hr><center>nginx/1.18.0 (Ubuntu)</center>\n</body>\n</html>\n")


async def web_server(aiohttp_server, status: int) -> str:
    """A web server (not the API) answering every path with an HTML page."""
    async def page(request):
        return web.Response(body=PAGE, status=status, content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", page)
    return str((await aiohttp_server(app)).make_url(""))


@pytest.mark.parametrize("status", [404, 200])
@pytest.mark.parametrize("model", [{"model": "m"}, {"model": None}])
async def test_a_web_page_at_the_base_url_is_one_line_naming_its_title(tmp_path, aiohttp_server, caplog, status,
                                                                       model):
    url = await web_server(aiohttp_server, status)
    code, records = await run_rows(tmp_path, url, rows(30), retry=RetryPolicy(max_attempts=1), **model)
    assert code == 2 and records == []
    (message,) = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert "\n" not in message and "<" not in message
    assert f"HTTP {status}: an HTML page (\"404 Not Found\")" in message
    assert message.count("is this the API base URL (…/v1)?") == 1


# ---- no model named: ask the server

async def test_no_model_uses_the_servers_only_model(tmp_path, mock_server):
    url = await mock_server()
    code, records = await run_rows(tmp_path, url, rows(20))
    assert code == 0 and len(records) == 20
    assert all(r["status"] == "ok" and r["model"] == "mock-model" for r in records)


async def test_no_model_and_several_served_exits_2_listing_them(tmp_path, aiohttp_server):
    url, seen = await scripted_server(aiohttp_server, stream_reply(b""), models=("llama-3-8b", "qwen-2-7b"))
    code, records = await run_rows(tmp_path, url, rows(5))
    assert code == 2 and records == [] and seen == []  # nothing was sent


async def test_a_line_that_names_its_model_needs_no_lookup(tmp_path, aiohttp_server):
    body = sse(chunk("ok"), chunk(finish="stop"), b"[DONE]")
    url, seen = await scripted_server(aiohttp_server, stream_reply(body), models=("a", "b"))
    code, records = await run_rows(tmp_path, url, rows(2, model="b"))
    assert code == 0 and [s["model"] for s in seen] == ["b", "b"]


# ---- what the server answered

async def test_request_id_from_the_header_else_the_stream(tmp_path, aiohttp_server):
    body = sse(chunk("ok", cid="chatcmpl-abc"), chunk(finish="stop", cid="chatcmpl-abc"), b"[DONE]")
    url, _ = await scripted_server(aiohttp_server, stream_reply(body, {"x-request-id": "req_123"}))
    _, records = await run_rows(tmp_path, url, rows(1), model="m")
    assert records[0]["request_id"] == "req_123"
    url, _ = await scripted_server(aiohttp_server, stream_reply(body))
    _, records = await run_rows(tmp_path / "..", url, rows(1), model="m")
    assert records[0]["request_id"] == "chatcmpl-abc"


async def test_request_id_of_a_failed_request_is_kept(tmp_path, aiohttp_server):
    async def reply(request):
        return web.json_response({"error": {"message": "bad", "type": "invalid_request_error"}}, status=400,
                                 headers={"x-request-id": "req_bad"})

    url, _ = await scripted_server(aiohttp_server, reply)
    _, records = await run_rows(tmp_path, url, rows(1), model="m")
    assert records[0]["request_id"] == "req_bad" and records[0]["error"]["status_code"] == 400


@pytest.mark.parametrize("status, body", [
    # vLLM (its `code` is the HTTP status), OpenAI, and a FastAPI-style body
    (400, {"object": "error", "message": "This model's maximum context length is 256 tokens. However, you requested "
           "900 tokens (890 in the messages, 10 in the completion).", "type": "BadRequestError", "code": 400}),
    (400, {"error": {"message": "This model's maximum context length is 8192 tokens.", "type": "invalid_request_error",
                     "param": "messages", "code": "context_length_exceeded"}}),
    (422, {"detail": "Requested tokens (900) exceed context window of 256"}),
])
async def test_an_over_long_prompt_is_recorded_once_not_retried(tmp_path, aiohttp_server, status, body):
    async def reply(request):
        return web.json_response(body, status=status)

    url, seen = await scripted_server(aiohttp_server, reply)
    code, records = await run_rows(tmp_path, url, rows(1), model="m")
    (r,) = records
    assert code == 1 and len(seen) == 1
    assert r["error"]["type"] == "context_length_exceeded" and r["attempts"] == 1
    assert r["error"]["status_code"] == status


@pytest.mark.parametrize("body", [
    sse(b"[DONE]"),
    sse({"id": "c", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]},
        b"[DONE]"),
    sse({"id": "c", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 0, "total_tokens": 3}},
        b"[DONE]"),
])
async def test_a_200_with_nothing_generated_is_empty_response_not_ok(tmp_path, aiohttp_server, body):
    url, seen = await scripted_server(aiohttp_server, stream_reply(body))
    code, records = await run_rows(tmp_path, url, rows(1), model="m")
    (r,) = records
    assert code == 1 and r["status"] == "error" and r["error"]["type"] == "empty_response"
    assert r["attempts"] == FAST_RETRY.max_attempts == len(seen)  # retried: usually a passing upstream fault


async def test_a_stream_cut_short_by_done_without_finish_reason_is_incomplete(tmp_path, aiohttp_server):
    """llama.cpp's server interrupts a request for a waiting one with [DONE] and no finish_reason."""
    url, seen = await scripted_server(aiohttp_server, stream_reply(sse(chunk("o"), b"[DONE]")))
    code, records = await run_rows(tmp_path, url, rows(1), model="m")
    (r,) = records
    assert code == 1 and r["status"] == "error" and r["error"]["type"] == "incomplete_stream"
    assert r["text"] == "o" and r["attempts"] == len(seen) == FAST_RETRY.max_attempts


async def test_an_empty_reply_that_says_why_it_ended_is_ok(tmp_path, aiohttp_server):
    url, _ = await scripted_server(aiohttp_server, stream_reply(sse(chunk(finish="length"), b"[DONE]")))
    code, records = await run_rows(tmp_path, url, rows(1), model="m")
    assert code == 0 and records[0]["status"] == "ok" and records[0]["finish_reason"] == "length"


async def test_a_200_json_error_body_is_an_error(tmp_path, aiohttp_server):
    async def reply(request):
        return web.json_response({"error": {"message": "upstream overloaded", "type": "server_error"}})

    url, _ = await scripted_server(aiohttp_server, reply)
    code, records = await run_rows(tmp_path, url, rows(1), model="m")
    (r,) = records
    assert r["status"] == "error" and "upstream overloaded" in r["error"]["message"]
    assert r["finish_reason"] is None


def test_the_terminal_summary_names_the_most_common_errors(tmp_path, mock_process):
    url = mock_process()
    lines = [*rows(3, mock={"key": "x", "faults": ["400", "400", "400"]})]
    for i, line in enumerate(lines):
        line["mock"] = {"key": f"k{i}", "faults": ["400"]}
    inp = write_jsonl(tmp_path / "in.jsonl", lines)
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--base-url", url, "--model", "mock-model")
    assert res.returncode == 1
    assert "3 x http_error: HTTP 400: invalid_request_error: invalid_request: mock: invalid request (injected)" \
        in res.stderr
    summary = orjson.loads((tmp_path / "out.summary.json").read_bytes())
    assert summary["summary"]["counts"]["top_errors"][0]["count"] == 3
