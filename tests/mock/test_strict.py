"""The mock refuses what real servers (vLLM, the OpenAI API) refuse, in their shapes.

One table of bad bodies -> (status, code, param); then the body-level
refusals (Content-Type, JSON, unknown model, context window), the order of
checks (API key, validation, then faults and quotas), what still passes,
and ``lenient``."""

from __future__ import annotations

import json

import click
import pytest
from click.testing import CliRunner

import runner.cli.mock as cli_mock
from runner.cli.mock import mock_command
from runner.mock import STATE_KEY, MockConfig, build_app, prompt_tokens_estimate

FAST = dict(ttft=0.0, tokens_per_s=0.0)
MODEL = "mock-model"
USER = {"role": "user", "content": "Say hello"}
CHAT = {"model": MODEL, "messages": [USER], "stream": True}
COMPLETION = {"model": MODEL, "prompt": "Say hello", "stream": True}
CHAT_PATH, COMPLETIONS_PATH = "/v1/chat/completions", "/v1/completions"


async def client_for(aiohttp_client, **config):
    return await aiohttp_client(build_app(MockConfig(**{**FAST, **config})))


async def post(client, body, path=CHAT_PATH, **kwargs):
    resp = await client.post(path, json=body, **kwargs)
    return resp, await resp.read()


def events(raw: bytes) -> list[str]:
    return [block[len("data: "):] for block in raw.decode().split("\n\n") if block]


def chat(**fields):
    """CHAT with fields replaced; a field set to ... is removed."""
    return {k: v for k, v in {**CHAT, **fields}.items() if v is not ...}


def completion(**fields):
    return {k: v for k, v in {**COMPLETION, **fields}.items() if v is not ...}


def messages(*msgs):
    return chat(messages=list(msgs))


# ----------------------------------------------------------------- the table

MISSING, TYPE, VALUE = "missing_required_parameter", "invalid_type", "invalid_value"
BAD_BODIES = [
    # model
    ("no model", CHAT_PATH, chat(model=...), MISSING, "model"),
    ("null model", CHAT_PATH, chat(model=None), MISSING, "model"),
    ("model not a string", CHAT_PATH, chat(model=5), TYPE, "model"),
    ("completions no model", COMPLETIONS_PATH, completion(model=...), MISSING, "model"),
    # messages
    ("no messages", CHAT_PATH, chat(messages=...), MISSING, "messages"),
    ("messages a string", CHAT_PATH, chat(messages="hi"), TYPE, "messages"),
    ("messages empty", CHAT_PATH, chat(messages=[]), "empty_array", "messages"),
    ("message not an object", CHAT_PATH, messages("hi"), TYPE, "messages[0]"),
    ("no role", CHAT_PATH, messages({"content": "x"}), MISSING, "messages[0].role"),
    ("role not a string", CHAT_PATH, messages({"role": 1, "content": "x"}), TYPE, "messages[0].role"),
    ("unknown role", CHAT_PATH, messages(USER, {"role": "robot", "content": "x"}), VALUE, "messages[1].role"),
    ("user without content", CHAT_PATH, messages({"role": "user"}), MISSING, "messages[0].content"),
    ("user content null", CHAT_PATH, messages({"role": "user", "content": None}), TYPE, "messages[0].content"),
    ("system content null", CHAT_PATH, messages({"role": "system", "content": None}, USER), TYPE,
     "messages[0].content"),
    ("content a number", CHAT_PATH, messages({"role": "user", "content": 5}), TYPE, "messages[0].content"),
    ("content an object", CHAT_PATH, messages({"role": "user", "content": {"type": "text"}}), TYPE,
     "messages[0].content"),
    ("content part a string", CHAT_PATH, messages({"role": "user", "content": ["x"]}), TYPE,
     "messages[0].content[0]"),
    ("content part without type", CHAT_PATH, messages({"role": "user", "content": [{"text": "x"}]}), MISSING,
     "messages[0].content[0].type"),
    ("content part type not a string", CHAT_PATH, messages({"role": "user", "content": [{"type": 1}]}), TYPE,
     "messages[0].content[0].type"),
    ("assistant null content without tool_calls", CHAT_PATH,
     messages(USER, {"role": "assistant", "content": None}, USER), VALUE, "messages[1].content"),
    ("assistant null content, empty tool_calls", CHAT_PATH,
     messages(USER, {"role": "assistant", "content": None, "tool_calls": []}, USER), VALUE, "messages[1].content"),
    # prompt
    ("no prompt", COMPLETIONS_PATH, completion(prompt=...), MISSING, "prompt"),
    ("prompt a number", COMPLETIONS_PATH, completion(prompt=5), TYPE, "prompt"),
    ("prompt an object", COMPLETIONS_PATH, completion(prompt={"text": "x"}), TYPE, "prompt"),
    ("prompt empty list", COMPLETIONS_PATH, completion(prompt=[]), "empty_array", "prompt"),
    ("prompt mixed list", COMPLETIONS_PATH, completion(prompt=["a", 1]), TYPE, "prompt"),
    ("prompt of booleans", COMPLETIONS_PATH, completion(prompt=[True, False]), TYPE, "prompt"),
    ("prompt of bad token lists", COMPLETIONS_PATH, completion(prompt=[[1, "a"]]), TYPE, "prompt"),
    # max tokens
    ("max_tokens 0", CHAT_PATH, chat(max_tokens=0), "integer_below_min_value", "max_tokens"),
    ("max_tokens negative", COMPLETIONS_PATH, completion(max_tokens=-1), "integer_below_min_value", "max_tokens"),
    ("max_tokens a string", CHAT_PATH, chat(max_tokens="5"), TYPE, "max_tokens"),
    ("max_tokens a boolean", CHAT_PATH, chat(max_tokens=True), TYPE, "max_tokens"),
    ("max_tokens a float", CHAT_PATH, chat(max_tokens=1.5), TYPE, "max_tokens"),
    ("max_completion_tokens 0", CHAT_PATH, chat(max_completion_tokens=0), "integer_below_min_value",
     "max_completion_tokens"),
    ("max_completion_tokens a boolean", CHAT_PATH, chat(max_completion_tokens=False), TYPE,
     "max_completion_tokens"),
    # sampling
    ("temperature above 2", CHAT_PATH, chat(temperature=2.5), "decimal_above_max_value", "temperature"),
    ("temperature below 0", CHAT_PATH, chat(temperature=-0.1), "decimal_below_min_value", "temperature"),
    ("temperature a string", CHAT_PATH, chat(temperature="hot"), TYPE, "temperature"),
    ("temperature a boolean", COMPLETIONS_PATH, completion(temperature=True), TYPE, "temperature"),
    ("top_p above 1", CHAT_PATH, chat(top_p=1.5), "decimal_above_max_value", "top_p"),
    ("top_p below 0", COMPLETIONS_PATH, completion(top_p=-1), "decimal_below_min_value", "top_p"),
    ("top_p a string", CHAT_PATH, chat(top_p="0.5"), TYPE, "top_p"),
    ("n 0", CHAT_PATH, chat(n=0), "integer_below_min_value", "n"),
    ("n a boolean", CHAT_PATH, chat(n=True), TYPE, "n"),
    ("n a float", CHAT_PATH, chat(n=2.0), TYPE, "n"),
    # streaming
    ("stream a string", CHAT_PATH, chat(stream="yes"), TYPE, "stream"),
    ("stream a number", COMPLETIONS_PATH, completion(stream=1), TYPE, "stream"),
    ("stop a number", CHAT_PATH, chat(stop=5), TYPE, "stop"),
    ("stop a mixed list", CHAT_PATH, chat(stop=["a", 1]), TYPE, "stop"),
    ("stream_options a string", CHAT_PATH, chat(stream_options="usage"), TYPE, "stream_options"),
    ("stream_options a list", COMPLETIONS_PATH, completion(stream_options=[]), TYPE, "stream_options"),
    ("stream_options without stream", CHAT_PATH, chat(stream=..., stream_options={"include_usage": True}), VALUE,
     "stream_options"),
    ("stream_options with stream false", COMPLETIONS_PATH,
     completion(stream=False, stream_options={"include_usage": True}), VALUE, "stream_options"),
    # tools
    ("tools an object", CHAT_PATH, chat(tools={"type": "function"}), TYPE, "tools"),
    ("tool a string", CHAT_PATH, chat(tools=["f"]), TYPE, "tools[0]"),
    ("tool without type", CHAT_PATH, chat(tools=[{"function": {"name": "f"}}]), MISSING, "tools[0].type"),
    ("tool of another type", CHAT_PATH, chat(tools=[{"type": "retrieval", "function": {"name": "f"}}]), VALUE,
     "tools[0].type"),
    ("tool without function", CHAT_PATH, chat(tools=[{"type": "function"}]), MISSING, "tools[0].function"),
    ("tool function a string", CHAT_PATH, chat(tools=[{"type": "function", "function": "f"}]), TYPE,
     "tools[0].function"),
    ("tool function without name", CHAT_PATH, chat(tools=[{"type": "function", "function": {}}]), MISSING,
     "tools[0].function.name"),
    ("tool function name a number", CHAT_PATH, chat(tools=[{"type": "function", "function": {"name": 1}}]), TYPE,
     "tools[0].function.name"),
    # response_format
    ("response_format a string", CHAT_PATH, chat(response_format="json"), TYPE, "response_format"),
    ("response_format without type", CHAT_PATH, chat(response_format={}), MISSING, "response_format.type"),
    ("response_format of unknown type", COMPLETIONS_PATH, completion(response_format={"type": "xml"}), VALUE,
     "response_format.type"),
]


@pytest.mark.parametrize(
    "path, body, code, param", [case[1:] for case in BAD_BODIES], ids=[case[0] for case in BAD_BODIES]
)
async def test_bad_body_is_400_naming_the_field(aiohttp_client, path, body, code, param):
    client = await client_for(aiohttp_client)
    resp, raw = await post(client, body, path)
    assert resp.status == 400, raw
    assert resp.content_type == "application/json"
    error = json.loads(raw)["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"], error["param"]) == ("invalid_request_error", code, param)
    # OpenAI's messages quote the field; vLLM's stream_options message is its own.
    assert param in error["message"] or error["message"] == "Stream options can only be defined when `stream=True`."


async def test_bad_bodies_are_counted_and_nothing_is_streamed(aiohttp_client):
    client = await client_for(aiohttp_client)
    for _, path, body, _, _ in BAD_BODIES[:5]:
        await post(client, body, path)
    stats = await (await client.get("/mock/stats")).json()
    assert stats["requests"] == 5 and stats["by_status"] == {"400": 5} and stats["streams_started"] == 0


# ----------------------------------------------------------------- the body as a whole


async def test_octet_stream_body_is_422_like_fastapi(aiohttp_client):
    """aiohttp's `data=bytes` sends application/octet-stream: FastAPI (vLLM) never parses it."""
    client = await client_for(aiohttp_client)
    raw_body = json.dumps({**CHAT, "padding": "x" * 300}).encode()
    resp = await client.post(CHAT_PATH, data=raw_body)
    assert resp.status == 422
    assert await resp.json() == {
        "detail": [
            {
                "type": "model_attributes_type",
                "loc": ["body"],
                "msg": "Input should be a valid dictionary or object to extract fields from",
                "input": raw_body.decode()[:200],
            }
        ]
    }
    stats = await (await client.get("/mock/stats")).json()
    assert stats["by_status"] == {"422": 1}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data",
                                          "application/octet-stream", "application/jsonx", "text/json"])
async def test_non_json_content_types_are_422(aiohttp_client, content_type):
    client = await client_for(aiohttp_client)
    resp = await client.post(COMPLETIONS_PATH, data=json.dumps(COMPLETION), headers={"Content-Type": content_type})
    assert resp.status == 422
    detail = (await resp.json())["detail"][0]
    assert detail["type"] == "model_attributes_type" and detail["input"] == json.dumps(COMPLETION)


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON;charset=UTF-8", "application/merge-patch+json"])
async def test_json_content_types_are_accepted(aiohttp_client, content_type):
    client = await client_for(aiohttp_client, output_tokens=2)
    resp = await client.post(CHAT_PATH, data=json.dumps(CHAT).encode(), headers={"Content-Type": content_type})
    assert resp.status == 200
    assert events(await resp.read())[-1] == "[DONE]"


async def test_no_content_type_is_parsed_as_json_like_fastapi(aiohttp_client):
    client = await client_for(aiohttp_client, output_tokens=2)
    resp = await client.post(CHAT_PATH, data=json.dumps(CHAT).encode(), skip_auto_headers=["Content-Type"])
    assert "Content-Type" not in resp.request_info.headers
    assert resp.status == 200


async def test_empty_body_is_422_field_required(aiohttp_client):
    client = await client_for(aiohttp_client)
    resp = await client.post(CHAT_PATH, data=b"", headers={"Content-Type": "application/json"})
    assert resp.status == 422
    assert (await resp.json())["detail"] == [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]


@pytest.mark.parametrize("raw", [b"{not json", b'{"model": "mock-model",}', b"\xff\xfe"])
async def test_invalid_json_is_400(aiohttp_client, raw):
    client = await client_for(aiohttp_client)
    resp = await client.post(CHAT_PATH, data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", None, None)
    assert "parse the JSON body" in error["message"]


@pytest.mark.parametrize("raw", [b"[1, 2]", b'"text"', b"null", b"3"])
async def test_json_that_is_not_an_object_is_400(aiohttp_client, raw):
    client = await client_for(aiohttp_client)
    resp = await client.post(COMPLETIONS_PATH, data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert (await resp.json())["error"]["type"] == "invalid_request_error"


@pytest.mark.parametrize("path, body", [(CHAT_PATH, chat(model="gpt-4o")), (COMPLETIONS_PATH, completion(model="m"))])
async def test_unknown_model_is_404(aiohttp_client, path, body):
    client = await client_for(aiohttp_client)
    resp, raw = await post(client, body, path)
    assert resp.status == 404
    assert json.loads(raw) == {
        "error": {
            "message": f"The model `{body['model']}` does not exist.",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }


async def test_invalid_fields_are_reported_before_an_unknown_model(aiohttp_client):
    client = await client_for(aiohttp_client)
    resp, raw = await post(client, chat(model="nope", max_tokens=0))
    assert resp.status == 400 and json.loads(raw)["error"]["param"] == "max_tokens"


async def test_aliases_are_served_and_listed(aiohttp_client):
    client = await client_for(aiohttp_client, model="served", aliases=("gpt-4o-mini", "alias/two"), output_tokens=2)
    data = await (await client.get("/v1/models")).json()
    assert [m["id"] for m in data["data"]] == ["served", "gpt-4o-mini", "alias/two"]
    assert all(m["object"] == "model" for m in data["data"])
    for name in ("served", "gpt-4o-mini", "alias/two"):
        resp, raw = await post(client, chat(model=name))
        assert resp.status == 200 and events(raw)[-1] == "[DONE]"
        assert json.loads(events(raw)[0])["model"] == "served"  # replies name the served model
    resp, _ = await post(client, chat(model=MODEL))
    assert resp.status == 404


# ----------------------------------------------------------------- the context window


async def test_context_length_exceeded_in_vllm_words(aiohttp_client):
    client = await client_for(aiohttp_client, max_context=100)
    body = chat(messages=[{"role": "user", "content": "x" * 200}], max_tokens=60)
    prompt = prompt_tokens_estimate(body)
    assert prompt < 100 < prompt + 60
    resp, raw = await post(client, body)
    assert resp.status == 400
    assert json.loads(raw)["error"] == {
        "message": f"This model's maximum context length is 100 tokens. However, you requested {prompt + 60} tokens "
                   f"({prompt} in the messages, 60 in the completion). Please reduce the length of the messages "
                   "or completion.",
        "type": "invalid_request_error",
        "param": "messages",
        "code": "context_length_exceeded",
    }


async def test_context_counts_max_completion_tokens_first(aiohttp_client):
    client = await client_for(aiohttp_client, max_context=50, output_tokens=2)
    body = chat(max_tokens=10)
    room = 50 - prompt_tokens_estimate(body)
    assert (await post(client, chat(max_tokens=room)))[0].status == 200  # exactly full fits
    assert (await post(client, chat(max_tokens=room + 1)))[0].status == 400
    resp, raw = await post(client, chat(max_tokens=1, max_completion_tokens=room + 1))
    assert resp.status == 400 and json.loads(raw)["error"]["code"] == "context_length_exceeded"


async def test_context_for_completions_and_prompt_alone(aiohttp_client):
    client = await client_for(aiohttp_client, max_context=10, output_tokens=50)
    # No max_tokens: only the prompt counts (the mock's default reply length does not).
    assert (await post(client, completion(prompt="x" * 40), COMPLETIONS_PATH))[0].status == 200
    resp, raw = await post(client, completion(prompt=list(range(11))), COMPLETIONS_PATH)
    assert resp.status == 400
    error = json.loads(raw)["error"]
    assert (error["code"], error["param"]) == ("context_length_exceeded", "prompt")
    assert "you requested 11 tokens (11 in the messages, 0 in the completion)" in error["message"]


@pytest.mark.parametrize("max_context", [None, 0])
async def test_unlimited_context(aiohttp_client, max_context):
    client = await client_for(aiohttp_client, max_context=max_context, output_tokens=1)
    resp, _ = await post(client, chat(messages=[{"role": "user", "content": "x" * 100_000}], max_tokens=100_000,
                                      stream=False))
    assert resp.status == 200


def test_default_context_is_4096():
    assert MockConfig().max_context == 4096
    assert MockConfig(max_context=0).max_context is None
    with pytest.raises(ValueError):
        MockConfig(max_context=-1)
    assert MockConfig(aliases=["a", "b"]).aliases == ("a", "b")
    assert MockConfig(model="m", aliases=("a", "m")).served_models == ("m", "a")
    with pytest.raises(ValueError):
        MockConfig(aliases=("",))


# ----------------------------------------------------------------- order of checks


async def test_api_key_is_checked_before_the_body(aiohttp_client):
    client = await client_for(aiohttp_client, api_key="k")
    resp = await client.post(CHAT_PATH, data=b"not json")
    assert resp.status == 401
    resp, _ = await post(client, chat(model="unknown"))
    assert resp.status == 401
    resp, _ = await post(client, chat(model="unknown"), headers={"Authorization": "Bearer k"})
    assert resp.status == 404


async def test_validation_comes_before_fault_injection(aiohttp_client):
    client = await client_for(aiohttp_client, output_tokens=2)
    faulty = {"key": "k", "faults": ["500"]}
    resp, _ = await post(client, chat(model="unknown", mock=faulty))
    assert resp.status == 404
    resp = await client.post(CHAT_PATH, data=json.dumps(chat(mock=faulty)).encode())  # octet-stream
    assert resp.status == 422
    resp, _ = await post(client, chat(temperature=9, mock=faulty))
    assert resp.status == 400
    # None of those used the key's first fault: the first valid request gets it.
    resp, _ = await post(client, chat(mock=faulty))
    assert resp.status == 500


async def test_validation_comes_before_quota_accounting(aiohttp_client):
    app = build_app(MockConfig(rpm_limit=1, tpm_limit=10_000, **FAST))
    state = app[STATE_KEY]
    state.clock = lambda: 0.0
    state.reset()
    client = await aiohttp_client(app)
    for bad in (chat(model="unknown"), chat(max_tokens=0), chat(messages=[])):
        resp, _ = await post(client, bad)
        assert resp.status in (400, 404) and "x-ratelimit-remaining-requests" not in resp.headers
    resp, _ = await post(client, chat(max_tokens=5))
    assert resp.status == 200 and resp.headers["x-ratelimit-remaining-requests"] == "0"


async def test_random_faults_do_not_hit_invalid_requests(aiohttp_client):
    client = await client_for(aiohttp_client, error_rate=1.0, seed=1)
    resp, _ = await post(client, chat(model=...))
    assert resp.status == 400
    resp, _ = await post(client, chat())
    assert resp.status == 500


# ----------------------------------------------------------------- what still passes


async def test_well_formed_chat_streams(aiohttp_client):
    client = await client_for(aiohttp_client, output_tokens=3)
    body = {
        "model": MODEL,
        "messages": [
            {"role": "developer", "content": "Be brief."},
            {"role": "system", "content": [{"type": "text", "text": "You are a mock."}]},
            {"role": "user", "content": [{"type": "text", "text": "Call it."},
                                         {"type": "image_url", "image_url": {"url": "data:,"}}], "name": "u"},
            {"role": "assistant", "content": None,
             "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "content": None, "tool_call_id": "c1"},
            {"role": "function", "name": "f", "content": "{}"},
            {"role": "assistant", "content": "done"},
            {"role": "user", "content": []},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_completion_tokens": 3,
        "max_tokens": None,
        "temperature": 0,
        "top_p": 1,
        "n": 1,
        "stop": ["\n\n", "END"],
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {}}},
        "seed": 7,
        "logprobs": False,
        "some_future_field": {"vllm": "ignores it"},
        "mock": {},
    }
    resp, raw = await post(client, body)
    assert resp.status == 200, raw
    evs = events(raw)
    assert evs[-1] == "[DONE]"
    assert json.loads(evs[-2])["usage"]["completion_tokens"] == 3


@pytest.mark.parametrize("prompt", ["Say hello", ["a", "b"], [1, 2, 3], [[1, 2], [3]], ""])
async def test_well_formed_completions_stream(aiohttp_client, prompt):
    client = await client_for(aiohttp_client, output_tokens=2)
    body = completion(prompt=prompt, stop="\n", temperature=1.5, top_p=0.9, max_tokens=2,
                      response_format={"type": "text"}, stream_options={"include_usage": True},
                      tools="completions ignore tools")
    resp, raw = await post(client, body, COMPLETIONS_PATH)
    assert resp.status == 200, raw
    assert events(raw)[-1] == "[DONE]"


async def test_non_streaming_without_stream_field(aiohttp_client):
    client = await client_for(aiohttp_client, output_tokens=2)
    resp, raw = await post(client, chat(stream=...))
    assert resp.status == 200 and json.loads(raw)["object"] == "chat.completion"
    resp, raw = await post(client, completion(stream=None, stream_options=None), COMPLETIONS_PATH)
    assert resp.status == 200 and json.loads(raw)["object"] == "text_completion"


# ----------------------------------------------------------------- lenient


async def test_lenient_accepts_what_strict_refuses(aiohttp_client):
    client = await client_for(aiohttp_client, lenient=True, max_context=10, output_tokens=2)
    resp = await client.post(CHAT_PATH, data=json.dumps(CHAT).encode())  # application/octet-stream
    assert resp.status == 200 and events(await resp.read())[-1] == "[DONE]"
    for body in (chat(model=...), chat(model="unknown"), chat(temperature="hot", stream_options=[], n=0),
                 chat(messages=[{"no": "role"}], max_tokens=500)):
        resp, raw = await post(client, body)
        assert resp.status == 200, (body, raw)
    resp, raw = await post(client, completion(model=..., prompt=[True]), COMPLETIONS_PATH)
    assert resp.status == 200


async def test_lenient_still_refuses_what_cannot_be_served(aiohttp_client):
    client = await client_for(aiohttp_client, lenient=True)
    resp = await client.post(CHAT_PATH, data=b"not json")
    assert resp.status == 400
    resp, _ = await post(client, chat(messages=[]))
    assert resp.status == 400
    resp, _ = await post(client, chat(max_tokens=-1))
    assert resp.status == 400


# ----------------------------------------------------------------- the command line and job files


def test_every_cli_option_has_help():
    options = [p for p in mock_command.params if isinstance(p, click.Option)]
    assert {"--host", "--model", "--alias", "--max-context", "--lenient"} <= {o.opts[0] for o in options}
    assert all(o.help for o in options), [o.opts[0] for o in options if not o.help]


def test_cli_flags_reach_the_config(monkeypatch):
    seen = []
    monkeypatch.setattr(cli_mock, "run_server", lambda config, host, port, workers: seen.append(config))
    runner = CliRunner()
    result = runner.invoke(mock_command, ["--lenient", "--alias", "a", "--alias", "b", "--max-context", "0"])
    assert result.exit_code == 0, result.output
    assert (seen[0].lenient, seen[0].aliases, seen[0].max_context) == (True, ("a", "b"), None)
    result = runner.invoke(mock_command, [])
    assert (seen[1].lenient, seen[1].aliases, seen[1].max_context) == (False, (), 4096)
    assert runner.invoke(mock_command, ["--max-context", "-1"]).exit_code == 2


def test_job_file_mock_table_takes_the_new_fields(tmp_path):
    from runner.config.jobfile import load_job

    job = tmp_path / "job.toml"
    job.write_text('inputs = ["in.jsonl"]\noutput = "out.jsonl"\n'
                   '[mock]\nlenient = true\naliases = ["gpt-4o-mini"]\nmax_context = 0\n')
    _, mock = load_job(str(job))
    assert (mock.lenient, mock.aliases, mock.max_context) == (True, ("gpt-4o-mini",), None)
