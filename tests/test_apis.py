"""Every API people batch against, in one run: chat, completions, Responses and Anthropic Messages.

Batch lines go to their own `url`; shorthand `{"messages": ...}` lines go where
`--api` says.  The mock serves each API as strictly as the real one (it refuses
a /v1/messages request without `anthropic-version`, say).
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from tests.helpers import read_jsonl, run_rows, streamrun, write_jsonl


def batch(cid: str, url: str, body: dict) -> dict:
    return {"custom_id": cid, "method": "POST", "url": url, "body": {"model": "mock-model", **body}}


def test_batch_lines_for_every_api_run_as_they_are(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [
        batch("chat", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6}),
        batch("completion", "/v1/completions", {"prompt": "once", "max_tokens": 6}),
        batch("responses", "/v1/responses", {"input": "hello there", "max_output_tokens": 16}),
        batch("messages", "/v1/messages", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6}),
    ])
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock")
    assert res.returncode == 0, res.stderr
    records = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    for cid, r in records.items():
        assert r["status"] == "ok" and r["text"], cid
        assert r["usage"]["completion_tokens"] > 0 and r["metrics"]["ttft_s"] is not None, cid
    assert records["responses"]["request_url"] == "/v1/responses"
    assert records["messages"]["finish_reason"] == "length"  # Anthropic's max_tokens, mapped


def test_api_anthropic_sends_shorthand_lines_to_messages_with_its_key_header(tmp_path, mock_process):
    url = mock_process("--api-key-env", "MOCK_KEY", env={"MOCK_KEY": "anthropic-secret"})
    inp = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": "a", "messages": [{"role": "user", "content": "hi"}]}])
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--base-url", url, "--api", "anthropic",
                    "--max-tokens", "5", "--model", "mock-model", env={"ANTHROPIC_API_KEY": "anthropic-secret",
                                                                       "OPENAI_API_KEY": ""})
    assert res.returncode == 0, res.stderr
    (r,) = read_jsonl(tmp_path / "out.jsonl")
    assert r["request_url"] == "/v1/messages" and r["status"] == "ok"
    assert "anthropic-secret" not in (tmp_path / "out.summary.json").read_text()


def test_api_anthropic_without_max_tokens_is_an_invalid_line_not_a_request(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": "a", "messages": [{"role": "user", "content": "hi"}]}])
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock", "--api", "anthropic")
    (r,) = read_jsonl(tmp_path / "out.jsonl")
    assert res.returncode == 1 and r["status"] == "error" and "max_tokens" in r["error"]["message"]


def test_api_responses_turns_messages_into_input(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": "a", "messages": [{"role": "user", "content": "hi"}],
                                               "max_output_tokens": 16}])
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock", "--api", "responses")
    assert res.returncode == 0, res.stderr
    (r,) = read_jsonl(tmp_path / "out.jsonl")
    assert r["request_url"] == "/v1/responses" and r["status"] == "ok" and r["text"]


# ---- chat lines translated for the other APIs (runner/stream/params.py), against the strict mock

SYSTEM = {"role": "system", "content": "You answer in one sentence."}


def test_api_anthropic_moves_the_system_prompt_of_every_kind_of_line(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [
        {"custom_id": "plain", "messages": [SYSTEM, {"role": "user", "content": "hi"}]},
        {"custom_id": "sharegpt", "conversations": [{"from": "system", "value": "Be kind."},
                                                    {"from": "human", "value": "hello"}]},
        {"custom_id": "session", "messages": [SYSTEM], "turns": ["first", "second"]},
    ])
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock", "--api", "anthropic", "--max-tokens", "8")
    assert res.returncode == 0, res.stderr
    records = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    for cid, r in records.items():
        assert r["status"] == "ok" and r["request_url"] == "/v1/messages", (cid, r["error"])
    assert len(records["session"]["turns"]) == 2


def test_api_responses_sends_a_lines_own_max_tokens_as_max_output_tokens(tmp_path):
    # what `synth` writes: a system prefix and the line's own max_tokens
    inp = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": "s0", "messages": [SYSTEM, {"role": "user", "content": "hi"}],
                                               "max_tokens": 20}])
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock", "--api", "responses")
    assert res.returncode == 0, res.stderr
    (r,) = read_jsonl(tmp_path / "out.jsonl")
    assert r["status"] == "ok", r["error"]
    assert r["finish_reason"] == "length" and r["usage"]["completion_tokens"] == 20  # the limit reached the server


def test_a_parameter_without_an_equivalent_is_dropped_once_or_refused(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [
        *({"custom_id": f"s{i}", "messages": [{"role": "user", "content": f"q{i}"}], "seed": i, "max_tokens": 5}
          for i in range(3)),
        {"custom_id": "many", "messages": [{"role": "user", "content": "q"}], "n": 2, "max_tokens": 5},
    ])
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock", "--api", "anthropic")
    records = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert all(records[f"s{i}"]["status"] == "ok" for i in range(3)), res.stderr
    many = records["many"]
    assert many["status"] == "error" and many["error"]["type"] == "invalid_input" and many["attempts"] == 0
    assert "'n'" in many["error"]["message"] and "in.jsonl:4" in many["error"]["message"]
    warnings = [line for line in res.stderr.splitlines() if "'seed'" in line]
    assert len(warnings) == 1, res.stderr  # once a run, not once a line
    assert res.returncode == 1  # the refused line is a failed record


# ---- a gateway that answers every API in one piece, and checks each API's own key

CHAT_REPLY = {"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-x",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "chat answer"},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}
MESSAGE_REPLY = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x",
                 "content": [{"type": "thinking", "thinking": "hm", "signature": "sig"},
                             {"type": "text", "text": "anthropic answer"}],
                 "stop_reason": "max_tokens", "stop_sequence": None,
                 "usage": {"input_tokens": 10, "cache_read_input_tokens": 2, "output_tokens": 6}}
RESPONSE_REPLY = {"id": "resp_1", "object": "response", "status": "completed", "model": "gpt-x",
                  "output": [{"type": "message", "id": "m1", "role": "assistant", "status": "completed",
                              "content": [{"type": "output_text", "text": "responses answer", "annotations": []}]}],
                  "usage": {"input_tokens": 8, "output_tokens": 3, "total_tokens": 11}}
KEYS = {"OPENAI_API_KEY": "sk-openai-0123456789", "ANTHROPIC_API_KEY": "sk-ant-0123456789"}


async def gateway(aiohttp_server, seen: list, keys: dict | None = None) -> str:
    """/v1/chat/completions, /v1/responses and /v1/messages, each answered with a whole JSON object (as LiteLLM
    does for some models, whatever "stream" says); with `keys`, each refuses a request without its own key
    (401, echoing what it got, as careless servers do)."""
    from aiohttp import web

    replies = {"/v1/chat/completions": CHAT_REPLY, "/v1/responses": RESPONSE_REPLY, "/v1/messages": MESSAGE_REPLY}

    async def answer(request: web.Request) -> web.Response:
        headers = request.headers
        seen.append((request.path, dict(headers), await request.json()))
        if keys is not None:
            if request.path == "/v1/messages":
                ok = headers.get("x-api-key") == keys["ANTHROPIC_API_KEY"] and "anthropic-version" in headers \
                    and "Authorization" not in headers
            else:
                ok = headers.get("Authorization") == f"Bearer {keys['OPENAI_API_KEY']}" and "x-api-key" not in headers
            if not ok:
                got = headers.get("x-api-key") or headers.get("Authorization")
                return web.json_response({"error": {"message": f"invalid key: {got}", "type": "auth"}}, status=401)
        return web.json_response(replies[request.path])

    app = web.Application()
    for path in replies:
        app.router.add_post(path, answer)
    server = await aiohttp_server(app)
    return str(server.make_url("/v1"))


MIXED = [batch("chat", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]}),
         batch("responses", "/v1/responses", {"input": "hi"}),
         batch("messages", "/v1/messages", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6})]


async def test_whole_message_and_response_objects_give_the_records_their_streams_would(tmp_path, aiohttp_server):
    url = await gateway(aiohttp_server, [])
    code, records = await run_rows(tmp_path, url, MIXED)
    by_id = {r["custom_id"]: r for r in records}
    assert code == 0, [r["error"] for r in records]
    chat, responses, messages = by_id["chat"], by_id["responses"], by_id["messages"]
    assert (chat["text"], chat["finish_reason"], chat["usage"]["completion_tokens"]) == ("chat answer", "stop", 2)
    assert (responses["text"], responses["finish_reason"]) == ("responses answer", "stop")
    assert responses["usage"]["prompt_tokens"] == 8 and responses["usage"]["completion_tokens"] == 3
    assert (messages["text"], messages["reasoning"], messages["finish_reason"]) == ("anthropic answer", "hm", "length")
    assert messages["usage"]["prompt_tokens"] == 12 and messages["usage"]["completion_tokens"] == 6
    assert messages["usage"]["total_tokens"] == 18 and messages["model"] == "claude-x"
    assert all(r["attempts"] == 1 and r["metrics"]["e2e_s"] is not None for r in records)


async def test_each_line_goes_with_its_own_apis_key(tmp_path, aiohttp_server, monkeypatch):
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    seen: list = []
    url = await gateway(aiohttp_server, seen, KEYS)
    code, records = await run_rows(tmp_path, url, MIXED)
    assert code == 0 and all(r["status"] == "ok" for r in records), [r["error"] for r in records]
    sent = {path: headers for path, headers, _ in seen}
    assert sent["/v1/messages"]["x-api-key"] == KEYS["ANTHROPIC_API_KEY"]
    assert sent["/v1/messages"]["anthropic-version"] == "2023-06-01" and "Authorization" not in sent["/v1/messages"]
    for path in ("/v1/chat/completions", "/v1/responses"):
        assert sent[path]["Authorization"] == f"Bearer {KEYS['OPENAI_API_KEY']}", path
        assert "x-api-key" not in sent[path] and "anthropic-version" not in sent[path], path


async def test_the_second_key_is_redacted_wherever_the_first_is(tmp_path, aiohttp_server):
    seen: list = []
    url = await gateway(aiohttp_server, seen, {**KEYS, "ANTHROPIC_API_KEY": "the-right-one"})
    inp = write_jsonl(tmp_path / "in.jsonl", MIXED)
    out = tmp_path / "out.jsonl"
    res = await asyncio.to_thread(streamrun, "run", inp, "-o", out, "--base-url", url, "--max-attempts", "1",
                                  "-v", env=KEYS)
    sent = {path: headers for path, headers, _ in seen}
    assert sent["/v1/messages"]["x-api-key"] == KEYS["ANTHROPIC_API_KEY"]  # sent, refused, echoed back
    records = {r["custom_id"]: r for r in read_jsonl(out)}
    error = records["messages"]["error"]
    assert error["status_code"] == 401 and error["message"].endswith("invalid key: ***"), error
    assert records["chat"]["status"] == "ok" and res.returncode == 1
    for text in (out.read_text(), (tmp_path / "out.summary.json").read_text(), res.stderr, res.stdout):
        assert KEYS["ANTHROPIC_API_KEY"] not in text and KEYS["OPENAI_API_KEY"] not in text


def test_a_missing_key_for_lines_that_need_it_is_exit_2_naming_its_variable(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", MIXED)
    # 192.0.2.1 is TEST-NET-1: a request would hang until the connect timeout
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--base-url", "http://192.0.2.1/v1",
                    "--connect-timeout", "30", env={**KEYS, "ANTHROPIC_API_KEY": ""}, timeout=20)
    assert res.returncode == 2, res.stderr
    assert "ANTHROPIC_API_KEY is not set" in res.stderr and "/v1/messages" in res.stderr
    assert not (tmp_path / "out.jsonl").exists()


def test_only_the_keys_the_scanned_lines_need_are_required(monkeypatch):
    from runner.config.run_config import RunConfig, TransportConfig
    from runner.errors import UsageError
    from runner.preflight import check_keys, credentials

    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-0123456789")
    cfg = RunConfig(inputs=("x",), transport=TransportConfig(base_urls=("https://gw.example.com/v1",)))
    creds = credentials(cfg, local=False)
    check_keys(cfg, creds, frozenset({"openai"}), local=False)  # chat lines only: no Anthropic key needed
    check_keys(cfg, creds, frozenset(), local=False)  # nothing to send: --api's key, which is set
    with pytest.raises(UsageError, match="ANTHROPIC_API_KEY"):
        check_keys(cfg, creds, frozenset({"openai", "anthropic"}), local=False)
    no_auth = dataclasses.replace(cfg, transport=dataclasses.replace(cfg.transport, auth=False))
    check_keys(no_auth, creds, frozenset({"anthropic"}), local=False)  # --no-auth
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-0123456789")
    monkeypatch.delenv("OPENAI_API_KEY")
    check_keys(cfg, credentials(cfg, local=False), frozenset({"anthropic"}), local=False)  # /v1/messages lines only


def test_no_auth_and_a_header_of_the_keys_name_win_over_the_keys():
    from runner.stream.headers import resolve_credentials

    envs = {"openai": "OPENAI_API_KEY", "anthropic": "ANTHROPIC_API_KEY"}
    creds = resolve_credentials(("x-api-key: ${GW}",), key_envs=envs, environ={**KEYS, "GW": "gw-0123456789"})
    assert creds.for_api("anthropic")["x-api-key"] == "gw-0123456789"  # the user's header, not the key
    assert creds.for_api("openai")["Authorization"] == f"Bearer {KEYS['OPENAI_API_KEY']}"
    assert set(creds.secrets) == {*KEYS.values(), "gw-0123456789"}  # the key unsent is still never shown
    none = resolve_credentials((), key_envs={"openai": None, "anthropic": None}, environ=KEYS)
    assert none.for_api("anthropic") == none.for_api("openai") == none.headers and none.secrets == ()


def test_a_broken_key_counts_only_where_its_lines_are(monkeypatch):
    from runner.config.run_config import RunConfig, TransportConfig
    from runner.errors import UsageError
    from runner.preflight import check_keys, credentials

    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai-0123456789")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-0123456789\n")  # from a file, newline and all
    cfg = RunConfig(inputs=("x",), transport=TransportConfig(base_urls=("http://127.0.0.1:8000/v1",)))
    creds = credentials(cfg, local=False)
    check_keys(cfg, creds, frozenset({"openai"}), local=False)  # a chat file never sends it
    with pytest.raises(UsageError, match="ANTHROPIC_API_KEY contains a line break"):
        check_keys(cfg, creds, frozenset({"openai", "anthropic"}), local=False)
