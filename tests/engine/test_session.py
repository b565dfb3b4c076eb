"""Multi-turn sessions: each turn after the last reply, with the whole history; ShareGPT files as sessions or prompts."""

from __future__ import annotations

import orjson
import pytest
from aiohttp import web

from runner.engine.session import turn_body
from runner.inputs.items import parse_item
from runner.inputs.sessions import from_sharegpt
from runner.stream import protocol_anthropic
from runner.stream.paths import CHAT_PATH, MESSAGES_PATH, RESPONSES_PATH, InvalidRequestLine
from tests.helpers import read_jsonl, run_rows, streamrun, write_jsonl


def item(line: dict, **kw):
    return parse_item("in.jsonl", 3, orjson.dumps(line), **kw)


# ---------------------------------------------------------------- a recording server


async def recording_server(aiohttp_server, bodies: list, fail_turn: int | None = None):
    """A chat server that keeps every body and answers "reply-N" (N: the request's number)."""

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        bodies.append(body)
        n = len(bodies)
        if fail_turn is not None and n - 1 == fail_turn:
            return web.json_response({"error": {"message": "bad turn", "type": "invalid_request_error"}},
                                     status=400)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for chunk in ({"role": "assistant"}, {"content": f"reply-{n}"}):
            data = {"id": f"c{n}", "model": "m", "choices": [{"index": 0, "delta": chunk, "finish_reason": None}]}
            await resp.write(b"data: " + orjson.dumps(data) + b"\n\n")
        end = {"id": f"c{n}", "model": "m", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        await resp.write(b"data: " + orjson.dumps(end) + b"\n\ndata: [DONE]\n\n")
        return resp

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    server = await aiohttp_server(app)
    return f"http://127.0.0.1:{server.port}/v1"


async def test_each_turn_carries_the_history_with_the_actual_replies(tmp_path, aiohttp_server):
    bodies: list = []
    url = await recording_server(aiohttp_server, bodies)
    line = {"custom_id": "s", "turns": ["one", "two", "three"], "max_tokens": 9,
            "messages": [{"role": "system", "content": "be brief"}]}
    code, (record,) = await run_rows(tmp_path, url, [line])
    assert code == 0 and record["status"] == "ok"
    assert [b["messages"] for b in bodies] == [
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one"}],
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one"},
         {"role": "assistant", "content": "reply-1"}, {"role": "user", "content": "two"}],
        [{"role": "system", "content": "be brief"}, {"role": "user", "content": "one"},
         {"role": "assistant", "content": "reply-1"}, {"role": "user", "content": "two"},
         {"role": "assistant", "content": "reply-2"}, {"role": "user", "content": "three"}],
    ]
    assert all(b["max_tokens"] == 9 and "turns" not in b and "think_time_s" not in b for b in bodies)
    assert [t["index"] for t in record["turns"]] == [0, 1, 2]
    assert [t["text"] for t in record["turns"]] == ["reply-1", "reply-2", "reply-3"]
    assert record["text"] == "reply-3" and record["attempts"] == 3
    assert all(t["metrics"]["ttft_s"] is not None and t["error"] is None for t in record["turns"])


async def test_a_failed_turn_ends_the_session_as_an_error_with_the_turns_that_happened(tmp_path, aiohttp_server):
    bodies: list = []
    url = await recording_server(aiohttp_server, bodies, fail_turn=1)
    code, (record,) = await run_rows(tmp_path, url, [{"custom_id": "s", "turns": ["a", "b", "c"]}])
    assert code == 1 and record["status"] == "error"
    assert len(bodies) == 2  # the third turn was never sent
    assert [t["error"] is None for t in record["turns"]] == [True, False]
    assert record["turns"][1]["error"]["status_code"] == 400


async def test_sessions_are_cached_turn_by_turn_keyed_by_the_actual_history(tmp_path, aiohttp_server, monkeypatch):
    import runner.engine.session as session

    waits: list[float] = []

    async def sleep(seconds):
        waits.append(seconds)

    monkeypatch.setattr(session, "think", sleep)
    bodies: list = []
    url = await recording_server(aiohttp_server, bodies)
    cache = str(tmp_path / "answers.db")
    line = {"custom_id": "s", "turns": ["one", "two", "three"], "think_time_s": 2.0}
    code, (first,) = await run_rows(tmp_path, url, [line], cache=cache)
    assert code == 0 and len(bodies) == 3 and not first["cached"] and waits == [2.0, 2.0]
    code, (again,) = await run_rows(tmp_path, url, [line], cache=cache)
    assert len(bodies) == 3, "the second identical run sent the session again"
    assert code == 0 and again["status"] == "ok" and again["cached"] and again["attempts"] == 0
    assert [t["text"] for t in again["turns"]] == ["reply-1", "reply-2", "reply-3"] and again["text"] == "reply-3"
    assert all(t["attempts"] == 0 and t["metrics"]["ttft_s"] is None for t in again["turns"])
    assert waits == [2.0, 2.0]  # no pause after a reply that was never sent
    # One more turn: the first three come from the cache (their replies are the history), the fourth is sent.
    code, (longer,) = await run_rows(tmp_path, url, [{**line, "turns": ["one", "two", "three", "four"]}], cache=cache)
    assert code == 0 and len(bodies) == 4 and not longer["cached"] and longer["cached_metrics"] is None
    assert [m["content"] for m in bodies[-1]["messages"]] == ["one", "reply-1", "two", "reply-2", "three", "reply-3",
                                                             "four"]
    assert [t["attempts"] for t in longer["turns"]] == [0, 0, 0, 1] and longer["text"] == "reply-4"
    summary = orjson.loads((tmp_path / "out.summary.json").read_bytes())
    assert summary["cache"]["hits"] == 3 and summary["cache"]["misses"] == 1
    assert summary["summary"]["counts"]["turns"] == 1  # only the turn sent is a request measured
    assert summary["summary"]["metrics"]["ttft_s"]["count"] == 1


async def test_think_time_pauses_before_each_later_turn(tmp_path, aiohttp_server, monkeypatch):
    import runner.engine.session as session

    waits: list[float] = []

    async def sleep(seconds):
        waits.append(seconds)

    monkeypatch.setattr(session, "think", sleep)
    url = await recording_server(aiohttp_server, [])
    code, _ = await run_rows(tmp_path, url, [{"custom_id": "s", "turns": ["a", "b", "c"], "think_time_s": 2.5}])
    assert code == 0 and waits == [2.5, 2.5]


def test_sessions_run_against_the_strict_mock_for_chat_and_anthropic(tmp_path):
    for api, limit in (("chat", "max_tokens"), ("anthropic", "max_tokens"), ("responses", "max_output_tokens")):
        inp = write_jsonl(tmp_path / f"{api}.in.jsonl", [
            {"custom_id": "s", "turns": ["hi", "more"], "messages": [{"role": "system", "content": "terse"}],
             limit: 16}])
        out = tmp_path / f"{api}.jsonl"
        res = streamrun("run", inp, "-o", out, "--mock", "--api", api)
        assert res.returncode == 0, (api, res.stderr)
        (r,) = read_jsonl(out)
        assert r["status"] == "ok" and len(r["turns"]) == 2 and all(t["text"] for t in r["turns"]), api
        assert r["usage"]["prompt_tokens"] == sum(t["usage"]["prompt_tokens"] for t in r["turns"]), api


def test_turn_bodies_follow_each_api():
    history = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    assert turn_body(CHAT_PATH, {"max_tokens": 3}, history) == {"max_tokens": 3, "messages": history}
    assert turn_body(RESPONSES_PATH, {}, history) == {"input": history}
    built = protocol_anthropic.build_body(turn_body(MESSAGES_PATH, {"max_tokens": 3}, history), defaults={},
                                          model="m", include_usage=True)  # the system prompt moved as for any line
    assert built == {"system": "s", "messages": [history[1]], "max_tokens": 3, "model": "m", "stream": True}


@pytest.mark.parametrize("bad, why", [
    ({"turns": []}, "turns"),
    ({"turns": ["a", 3]}, "turns"),
    ({"turns": ["a"], "think_time_s": -1}, "think_time_s"),
    ({"turns": ["a"], "messages": "sys"}, "messages"),
])
def test_a_malformed_session_is_an_invalid_line(bad, why):
    it = item({"custom_id": "x", **bad})
    assert it.error is not None and why in it.error and it.custom_id == "x" and it.place == "in.jsonl:3"


SHAREGPT = {"id": "abc", "conversations": [
    {"from": "system", "value": "sys"}, {"from": "human", "value": "q1"}, {"from": "gpt", "value": "a1"},
    {"from": "human", "value": "q2"}, {"from": "gpt", "value": "a2"}]}


def test_sharegpt_loads_as_first_turn_prompts_or_as_sessions():
    prompt = item(SHAREGPT)
    assert prompt.session is None and prompt.body["messages"] == [
        {"role": "system", "content": "sys"}, {"role": "user", "content": "q1"}]
    assert "id" not in prompt.body and "conversations" not in prompt.body
    whole = item(SHAREGPT, sharegpt="sessions")
    assert whole.session.turns == ("q1", "q2") and whole.session.prefix == ({"role": "system", "content": "sys"},)
    with pytest.raises(InvalidRequestLine):
        from_sharegpt({"conversations": [{"from": "gpt", "value": "only"}]}, "prompts")
    assert "conversations[0]" in item({"conversations": [{"speaker": "x"}]}).error
    assert "conversations[0]" in item({"conversations": [{"from": ["human"], "value": "q"}]}).error  # no TypeError
