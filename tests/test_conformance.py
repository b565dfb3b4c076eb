"""Conformance of what we send: every request body and header set streamrun builds, checked against
the OpenAI API reference.

The bodies are checked against JSON Schemas (Draft 2020-12) written from the reference's
CreateChatCompletionRequest and CreateCompletionRequest, one file per endpoint in tests/schemas/
(each file's `$comment` names the exact source).  The bodies are built the way the engine builds
them: `runner.stream.protocol.parse_line` on the input line, the engine's choice of model, then
`runner.stream.protocol.build_body` with the `--param` defaults (parsed by the CLI's `--param` parser, or
taken from a job file's [params]).  The headers are those of `runner.stream.headers.resolve_credentials`.
A last test runs streamrun against a recording mock and checks what actually went over the wire.

A case streamrun gets wrong is marked `xfail(strict=True)` with the reason; the schemas are not
loosened to let it pass.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from runner.config.jobfile import load_job
from runner.config.parsers import params as _parse_params  # the one parser `--param` and job files share
from runner.inputs.items import expand_inputs, iter_items
from runner.inputs.lines import parse_line
from runner.inputs.synth import SynthSpec, synth_lines, write_lines
from runner.stream.headers import OPENAI, Credentials, HeaderError, resolve_credentials
from runner.stream.paths import CHAT_PATH, COMPLETIONS_PATH
from runner.stream.protocol import build_body, defaults_for
from tests.helpers import ROOT

SCHEMAS = ROOT / "tests" / "schemas"
SAMPLE_FILES = sorted((ROOT / "sample_inputs").glob("*.jsonl"))
JOB_FILES = sorted((ROOT / "jobs").glob("*.toml"))


def _validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


VALIDATORS = {
    CHAT_PATH: _validator("chat_completions.request.json"),
    COMPLETIONS_PATH: _validator("completions.request.json"),
}


def schema_errors(path: str, body: dict) -> list[str]:
    """Every violation, as 'where: what', sorted; [] when the body conforms."""
    return sorted(f"{e.json_path}: {e.message}" for e in VALIDATORS[path].iter_errors(body))


# --------------------------------------------------------------------------
# Building bodies the way the engine does

SERVED_MODEL = "served-model"  # what Engine.default_model() finds with GET /models when no model is named


def send(line: dict, *, params: dict | None = None, model: str | None = None,
         include_usage: bool = True) -> tuple[str, dict]:
    """(endpoint path, body) that streamrun posts for one decoded input line.

    Mirrors runner/engine/loop.py: `Engine._model = cfg.model or cfg.params.get("model")`; a line that
    names no model, in a run that names none, gets the server's only model (GET /models).
    """
    _, path, body = parse_line(line, file="conformance.jsonl", line=1)
    params = params or {}
    configured = model or params.get("model")
    chosen = configured if ("model" in body or configured is not None) else SERVED_MODEL
    return path, build_body(body, path=path, defaults=params, model=chosen, include_usage=include_usage)


def check_sent(path: str, body: dict, *, include_usage: bool) -> None:
    """(a) valid for its endpoint, (b) orjson round trip, (c) streaming, and usage when asked for."""
    errors = schema_errors(path, body)
    assert not errors, f"{path} body does not conform:\n  " + "\n  ".join(errors) + f"\nbody: {body!r}"
    raw = orjson.dumps(body)  # what the engine posts
    assert orjson.loads(raw) == body
    assert body["stream"] is True
    if include_usage:
        assert isinstance(body.get("stream_options"), dict), body
        assert body["stream_options"].get("include_usage") is True, body["stream_options"]
    else:
        assert "stream_options" not in body


def cli(*items: str) -> dict:
    """--param values exactly as the CLI parses them (JSON when it parses, else a string)."""
    return _parse_params(list(items)) if items else {}


# --------------------------------------------------------------------------
# Hand-written lines: the three line forms and the request features streamrun passes through

USER = {"role": "user", "content": "Hello!"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": True,
    },
}
EVERY_ROLE = [
    {"role": "developer", "content": "Answer briefly."},
    {"role": "system", "content": [{"type": "text", "text": "You are terse."}], "name": "policy"},
    {"role": "user", "name": "ann", "content": [
        {"type": "text", "text": "What is in these?"},
        {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
        {"type": "file", "file": {"filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}},
        {"type": "file", "file": {"file_id": "file-abc123"}},
    ]},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}},
    ]},
    {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\": 4}"},
    {"role": "assistant", "content": [{"type": "text", "text": "4 degrees."}], "refusal": None},
    {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}]},
    {"role": "user", "content": "Thanks"},
]
JSON_SCHEMA_FORMAT = {
    "type": "json_schema",
    "json_schema": {
        "name": "city_weather",
        "description": "A city and its temperature",
        "schema": {"type": "object", "properties": {"city": {"type": "string"}, "temp_c": {"type": "number"}},
                   "required": ["city", "temp_c"], "additionalProperties": False},
        "strict": True,
    },
}
EVERY_SAMPLING_PARAM = {
    "temperature": 2, "top_p": 0, "n": 2, "presence_penalty": -2, "frequency_penalty": 2.0, "seed": -(2 ** 63),
    "logprobs": True, "top_logprobs": 20, "logit_bias": {"50256": -100, "1734": 100}, "user": "user-1234",
    "max_completion_tokens": 100, "max_tokens": 50, "stop": ["a", "b", "c", "d"], "parallel_tool_calls": False,
    "service_tier": "auto", "reasoning_effort": "low", "metadata": {"run": "conformance"}, "store": False,
}


# (id, line, --param items, --model, include_usage, xfail reason)
LINE_CASES = [
    # chat shorthand
    ("chat-minimal", {"messages": [USER]}, (), "gpt-4o-mini", True, None),
    ("chat-custom_id-stripped", {"custom_id": "q1", "messages": [USER], "temperature": 0},
     (), "gpt-4o-mini", True, None),
    ("chat-model-from-line", {"model": "gpt-4o", "messages": [USER]}, (), "gpt-4o-mini", True, None),
    ("chat-model-from-cli", {"messages": [USER]}, (), "gpt-4o-mini", True, None),
    ("chat-model-from-param", {"messages": [USER]}, ("model=gpt-4o",), None, True, None),
    ("chat-model-from-server", {"messages": [USER]}, (), None, True, None),
    ("chat-every-role-and-part", {"messages": EVERY_ROLE}, (), "gpt-4o", True, None),
    ("chat-every-sampling-param", {"messages": [USER], **EVERY_SAMPLING_PARAM}, (), "gpt-4o", True, None),
    ("chat-tools-choice-auto", {"messages": [USER], "tools": [WEATHER_TOOL], "tool_choice": "auto"},
     (), "gpt-4o", True, None),
    ("chat-tools-choice-required", {"messages": [USER], "tools": [WEATHER_TOOL], "tool_choice": "required"},
     (), "gpt-4o", True, None),
    ("chat-tools-choice-none", {"messages": [USER], "tools": [WEATHER_TOOL], "tool_choice": "none"},
     (), "gpt-4o", True, None),
    ("chat-tools-choice-named", {"messages": [USER], "tools": [WEATHER_TOOL],
                                 "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
     (), "gpt-4o", True, None),
    ("chat-tools-no-parameters", {"messages": [USER], "tools": [{"type": "function", "function": {"name": "now"}}]},
     (), "gpt-4o", True, None),
    ("chat-response_format-json_schema", {"messages": [USER], "response_format": JSON_SCHEMA_FORMAT},
     (), "gpt-4o", True, None),
    ("chat-response_format-json_object", {"messages": [USER], "response_format": {"type": "json_object"}},
     (), "gpt-4o", True, None),
    ("chat-response_format-text", {"messages": [USER], "response_format": {"type": "text"}}, (), "gpt-4o", True, None),
    ("chat-vendor-extensions", {"messages": [USER], "ignore_eos": True, "top_k": 20, "min_p": 0.05,
                                "chat_template_kwargs": {"enable_thinking": False}}, (), "qwen", True, None),
    ("chat-line-stream-false-forced", {"messages": [USER], "stream": False}, (), "gpt-4o-mini", True, None),
    ("chat-line-stream-false-no-usage",
     {"messages": [USER], "stream": False, "stream_options": {"include_usage": True}}, (), "gpt-4o-mini", False, None),
    ("chat-line-stream_options-null", {"messages": [USER], "stream_options": None}, (), "gpt-4o-mini", True, None),
    ("chat-line-stream_options-merged", {"messages": [USER], "stream_options": {"include_obfuscation": False}},
     (), "gpt-4o-mini", True, None),
    ("chat-line-include_usage-false-wins", {"messages": [USER], "stream_options": {"include_usage": False}},
     (), "gpt-4o-mini", True, None),
    ("chat-param-include_usage-false-wins", {"messages": [USER]}, ('stream_options={"include_usage":false}',),
     "gpt-4o-mini", True, None),
    # completion shorthand
    ("completion-minimal", {"prompt": "Once upon a time"}, (), "gpt-3.5-turbo-instruct", True, None),
    ("completion-model-from-line", {"model": "davinci-002", "prompt": "x", "max_tokens": 0}, (), "other", True, None),
    ("completion-model-from-server", {"custom_id": "c", "prompt": "x"}, (), None, True, None),
    ("completion-prompt-strings", {"prompt": ["a", "b"]}, (), "m", True, None),
    ("completion-prompt-tokens", {"prompt": [1212, 318, 257]}, (), "m", True, None),
    ("completion-prompt-token-arrays", {"prompt": [[1212, 318], [257]]}, (), "m", True, None),
    ("completion-every-param", {"prompt": "x", "echo": True, "logprobs": 5, "suffix": "END", "n": 3, "seed": 7,
                                "stop": "\n", "temperature": 0.0, "top_p": 1, "presence_penalty": 1.5,
                                "frequency_penalty": -1.5, "logit_bias": {"50256": -100}, "user": "u"},
     (), "gpt-3.5-turbo-instruct", True, None),
    ("completion-vendor-extensions", {"prompt": "x", "ignore_eos": True, "max_tokens": 8}, (), "m", True, None),
    ("completion-no-usage", {"prompt": "x", "stream_options": {"include_usage": True}}, (), "m", False, None),
    # OpenAI Batch API lines
    ("batch-chat", {"custom_id": "b1", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "gpt-4o-mini", "messages": [USER], "max_tokens": 40}}, (), None, True, None),
    ("batch-completions", {"custom_id": "b2", "method": "POST", "url": "/v1/completions",
                           "body": {"model": "gpt-3.5-turbo-instruct", "prompt": "p", "max_tokens": 24}},
     (), None, True, None),
    ("batch-chat-model-from-cli", {"custom_id": "b3", "method": "POST", "url": "/v1/chat/completions",
                                   "body": {"messages": [USER]}}, (), "gpt-4o-mini", True, None),
    ("batch-full-url", {"custom_id": "b4", "method": "post", "url": "https://api.openai.com/v1/chat/completions",
                        "body": {"model": "gpt-4o", "messages": EVERY_ROLE, "tools": [WEATHER_TOOL],
                                 "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}},
     (), None, True, None),
    ("batch-no-url-prompt", {"custom_id": "b5", "body": {"model": "m", "prompt": "p"}}, (), None, True, None),
    ("batch-no-url-messages", {"custom_id": "b6", "body": {"model": "m", "messages": [USER]}}, (), None, False, None),
    ("batch-stream-false-in-body", {"custom_id": "b7", "method": "POST", "url": "/v1/chat/completions",
                                    "body": {"model": "m", "messages": [USER], "stream": False,
                                             "response_format": JSON_SCHEMA_FORMAT}}, (), None, True, None),
]


def _line_params():
    for cid, line, params, model, usage, xfail in LINE_CASES:
        marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
        yield pytest.param(line, params, model, usage, id=cid, marks=marks)


@pytest.mark.parametrize("line, params, model, include_usage", list(_line_params()))
def test_line_forms_and_features(line, params, model, include_usage):
    path, body = send(line, params=cli(*params), model=model, include_usage=include_usage)
    check_sent(path, body, include_usage=include_usage)


def test_model_precedence():
    """The line's own model beats --param model, which beats --model; the server's is the last resort."""
    line = {"messages": [USER]}
    assert send({**line, "model": "own"}, params={"model": "param"}, model="cli")[1]["model"] == "own"
    assert send(line, params={"model": "param"}, model="cli")[1]["model"] == "param"
    assert send(line, model="cli")[1]["model"] == "cli"
    assert send(line)[1]["model"] == SERVED_MODEL


# --------------------------------------------------------------------------
# --param defaults, as the CLI parses them, under every line form

BASE_LINES = {
    "chat": {"messages": [USER]},
    "completion": {"prompt": "Once upon a time"},
    "batch-chat": {"custom_id": "b", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": [USER]}},
    "batch-completion": {"custom_id": "b", "method": "POST", "url": "/v1/completions", "body": {"prompt": "p"}},
}
# (id, --param items, {base: xfail reason})
PARAM_SETS = [
    ("no-params", (), {}),
    ("max_tokens", ("max_tokens=64",), {}),
    ("sampling", ("max_tokens=64", "temperature=0.7", 'stop=["\\n"]', "seed=1", "n=1"), {}),
    ("json_object", ('response_format={"type":"json_object"}', "max_tokens=64"), {}),
    ("stop-word", ("stop=END",), {}),
    ("penalties-top_p", ("presence_penalty=0.5", "frequency_penalty=-0.5", "top_p=0.9"), {}),
    ("stop-null-seed-0", ("stop=null", "seed=0", "temperature=0"), {}),
    ("model-param", ("model=gpt-4o-mini",), {}),
    ("user-quoted", ('user="12345"',), {}),
    ("user-numeric", ("user=12345",), {}),  # `user` is a string field: kept as the string "12345"
    ("logprobs-true", ("logprobs=true", "top_logprobs=3"), {}),  # completions get logprobs=3
    ("logprobs-2", ("logprobs=2",), {}),  # chat gets logprobs=true, top_logprobs=2
    ("chat-only-keys", ("max_completion_tokens=32", 'response_format={"type":"json_object"}'), {}),
]


def _param_combinations():
    for set_id, items, xfails in PARAM_SETS:
        for base in BASE_LINES:
            for usage in (True, False):
                reason = xfails.get(base)
                marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
                usage_id = "usage" if usage else "no-usage"
                yield pytest.param(base, items, usage, id=f"{set_id}-{base}-{usage_id}", marks=marks)


@pytest.mark.parametrize("base, items, include_usage", list(_param_combinations()))
def test_param_defaults(base, items, include_usage):
    params = cli(*items)
    path, body = send(BASE_LINES[base], params=params, model="gpt-4o-mini", include_usage=include_usage)
    check_sent(path, body, include_usage=include_usage)
    for key, value in defaults_for(path, params).items():  # a line that does not set a param gets the default
        if key not in ("stream", "stream_options"):
            assert body[key] == value


def test_line_params_override_defaults():
    params = cli("max_tokens=64", "temperature=0.7")
    path, body = send({"messages": [USER], "temperature": 0.1}, params=params, model="m")
    check_sent(path, body, include_usage=True)
    assert (body["temperature"], body["max_tokens"]) == (0.1, 64)


# --------------------------------------------------------------------------
# The shipped inputs and job files

def _sample_lines():
    for file in SAMPLE_FILES:
        for number, raw in enumerate(file.read_bytes().splitlines(), 1):
            if raw.strip():
                yield file, number, orjson.loads(raw)


SAMPLE_RUNS = {  # --model, include_usage
    "model": ("gpt-4o-mini", True),
    "model-no-usage": ("gpt-4o-mini", False),
    "server-model": (None, True),
}


@pytest.mark.parametrize("line, model, include_usage", [
    pytest.param(obj, model, usage, id=f"{file.name}:{number}-{run}")
    for file, number, obj in _sample_lines()
    for run, (model, usage) in SAMPLE_RUNS.items()
])
def test_sample_inputs(line, model, include_usage):
    path, body = send(line, model=model, include_usage=include_usage)
    check_sent(path, body, include_usage=include_usage)


def _job_requests():
    for job in JOB_FILES:
        cfg, _mock = load_job(str(job))
        for item in iter_items(expand_inputs(cfg.inputs)):
            yield pytest.param(cfg, item, id=f"{job.name}-{Path(item.file).name}:{item.line}")


@pytest.mark.parametrize("cfg, item", list(_job_requests()))
def test_job_files(cfg, item):
    """Each job's [params], model and include_usage over each of its input lines."""
    assert item.error is None, item.error
    configured = cfg.request.model or cfg.request.params.get("model")
    model = configured if ("model" in item.body or configured is not None) else SERVED_MODEL
    request = cfg.request
    body = build_body(item.body, path=item.path, defaults=request.params, model=model,
                      include_usage=request.include_usage)
    check_sent(item.path, body, include_usage=request.include_usage)
    for key, value in request.params.items():
        assert body[key] == item.body.get(key, value)


def test_every_job_file_is_covered():
    assert {p.name for p in JOB_FILES} >= {"nightly.toml", "sample.toml", "sharded.toml"}
    assert SAMPLE_FILES, "no sample_inputs/*.jsonl"


@pytest.mark.parametrize("ignore_eos, model", [(False, None), (True, "m")], ids=["synth", "synth-ignore_eos-model"])
def test_synth_lines(ignore_eos, model):
    out = io.BytesIO()
    write_lines(out, synth_lines(SynthSpec(count=3, input_tokens=16, output_tokens=8, seed=1, ignore_eos=ignore_eos,
                                           model=model)))  # as `streamrun synth` writes them
    for raw in out.getvalue().splitlines():
        path, body = send(orjson.loads(raw), model="cli-model")
        check_sent(path, body, include_usage=True)
        assert path == CHAT_PATH and body["max_tokens"] == 8


# --------------------------------------------------------------------------
# The schemas are not vacuous: each of these bodies must fail

def _chat_base() -> dict:
    return send({"messages": [USER], "tools": [WEATHER_TOOL]}, model="gpt-4o-mini")[1]


def _completion_base() -> dict:
    return send({"prompt": "x"}, model="gpt-3.5-turbo-instruct")[1]


def _without(key):
    return lambda b: {k: v for k, v in b.items() if k != key}


def _set(**fields):
    return lambda b: {**b, **fields}


def _message(msg):
    return lambda b: {**b, "messages": [msg]}


def _tool(tool):
    return lambda b: {**b, "tools": [tool]}


CHAT_INVALID = [
    ("temperature-3", _set(temperature=3)),
    ("temperature-negative", _set(temperature=-0.1)),
    ("max_tokens-string", _set(max_tokens="x")),
    ("max_completion_tokens-float", _set(max_completion_tokens=1.5)),
    ("messages-not-a-list", _set(messages="Hello!")),
    ("messages-empty", _set(messages=[])),
    ("stream_options-without-stream", _without("stream")),
    ("stream_options-with-stream-false", _set(stream=False)),
    ("stream-string", _set(stream="true")),
    ("stream_options-include_usage-string", _set(stream_options={"include_usage": "yes"})),
    ("tool-without-function-name", _tool({"type": "function", "function": {"description": "no name"}})),
    ("tool-without-function", _tool({"type": "function"})),
    ("tool-name-with-space", _tool({"type": "function", "function": {"name": "get weather"}})),
    ("tool-name-65-chars", _tool({"type": "function", "function": {"name": "f" * 65}})),
    ("tool-type-unknown", _tool({"type": "retrieval", "function": {"name": "f"}})),
    ("tool-parameters-not-object", _tool({"type": "function", "function": {"name": "f", "parameters": "{}"}})),
    ("tool_choice-unknown-word", _set(tool_choice="sometimes")),
    ("tool_choice-named-without-name", _set(tool_choice={"type": "function", "function": {}})),
    ("top_p-1.5", _set(top_p=1.5)),
    ("n-0", _set(n=0)),
    ("presence_penalty-2.5", _set(presence_penalty=2.5)),
    ("frequency_penalty-minus-3", _set(frequency_penalty=-3)),
    ("seed-string", _set(seed="1")),
    ("seed-float", _set(seed=1.5)),
    ("logprobs-integer", _set(logprobs=1)),
    ("top_logprobs-21", _set(top_logprobs=21)),
    ("stop-5-strings", _set(stop=["a", "b", "c", "d", "e"])),
    ("stop-empty-list", _set(stop=[])),
    ("stop-number", _set(stop=42)),
    ("user-integer", _set(user=12345)),
    ("logit_bias-101", _set(logit_bias={"50256": 101})),
    ("logit_bias-string", _set(logit_bias={"50256": "ban"})),
    ("response_format-unknown-type", _set(response_format={"type": "xml"})),
    ("response_format-json_schema-without-name", _set(response_format={"type": "json_schema",
                                                                       "json_schema": {"schema": {}}})),
    ("response_format-json_schema-missing", _set(response_format={"type": "json_schema"})),
    ("model-missing", _without("model")),
    ("model-not-a-string", _set(model=4)),
    ("messages-missing", _without("messages")),
    ("message-role-unknown", _message({"role": "robot", "content": "hi"})),
    ("message-role-missing", _message({"content": "hi"})),
    ("message-not-an-object", _message("hi")),
    ("user-content-missing", _message({"role": "user"})),
    ("user-content-null", _message({"role": "user", "content": None})),
    ("user-content-number", _message({"role": "user", "content": 3})),
    ("user-part-unknown-type", _message({"role": "user", "content": [{"type": "video", "video": {}}]})),
    ("user-image-without-url", _message({"role": "user", "content": [{"type": "image_url", "image_url": {}}]})),
    ("user-audio-bad-format", _message({"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "x", "format": "ogg"}}]})),
    ("system-image-part", _message({"role": "system", "content": [
        {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]})),
    ("developer-content-missing", _message({"role": "developer"})),
    ("tool-message-without-tool_call_id", _message({"role": "tool", "content": "42"})),
    ("assistant-tool_call-without-id", _message({"role": "assistant", "tool_calls": [
        {"type": "function", "function": {"name": "f", "arguments": "{}"}}]})),
    ("assistant-tool_call-arguments-object", _message({"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "f", "arguments": {}}}]})),
    ("name-not-a-string", _message({"role": "user", "content": "hi", "name": 7})),
]

COMPLETION_INVALID = [
    ("temperature-3", _set(temperature=3)),
    ("max_tokens-string", _set(max_tokens="x")),
    ("max_tokens-negative", _set(max_tokens=-1)),
    ("prompt-missing", _without("prompt")),
    ("prompt-object", _set(prompt={"text": "x"})),
    ("prompt-empty-token-list-of-lists", _set(prompt=[[]])),
    ("logprobs-6", _set(logprobs=6)),
    ("logprobs-boolean", _set(logprobs=True)),
    ("stream_options-without-stream", _without("stream")),
    ("stream_options-with-stream-false", _set(stream=False)),
    ("echo-string", _set(echo="yes")),
    ("best_of-21", _set(best_of=21)),
    ("n-0", _set(n=0)),
    ("stop-5-strings", _set(stop=["a", "b", "c", "d", "e"])),
    ("suffix-number", _set(suffix=1)),
    ("model-missing", _without("model")),
]


@pytest.mark.parametrize("path, base, mutate", [
    *(pytest.param(CHAT_PATH, _chat_base, m, id=f"chat-{i}") for i, m in CHAT_INVALID),
    *(pytest.param(COMPLETIONS_PATH, _completion_base, m, id=f"completions-{i}") for i, m in COMPLETION_INVALID),
])
def test_schema_rejects(path, base, mutate):
    body = base()
    assert schema_errors(path, body) == []  # the starting point is a body streamrun sends, and it conforms
    assert schema_errors(path, mutate(body)), f"the schema accepted {mutate(body)!r}"


def test_schemas_declare_draft_2020_12_and_a_source():
    for name in ("chat_completions.request.json", "completions.request.json"):
        schema = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert "OpenAPI" in schema["$comment"] and "commit" in schema["$comment"]
        assert schema["additionalProperties"] is True


# --------------------------------------------------------------------------
# Headers

UA = re.compile(r"streamrun/\S+")  # used with fullmatch: `$` would let a trailing newline through
FIELD_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")  # RFC 9110 token
FIELD_VALUE = re.compile(r"(?:[\x21-\x7e\x80-\xff](?:[\x20-\x7e\t\x80-\xff]*[\x21-\x7e\x80-\xff])?)?")  # RFC 9110
KEY = "sk-test-conformance-0042"


def check_headers(headers: dict[str, str]) -> None:
    """Every header set streamrun sends: JSON in, SSE out, who we are, and only well-formed fields, once each."""
    by_name = {name.lower(): value for name, value in headers.items()}
    assert by_name["content-type"] == "application/json"
    assert by_name["accept"] == "text/event-stream"
    assert UA.fullmatch(by_name["user-agent"]), by_name["user-agent"]
    for name, value in headers.items():
        assert FIELD_NAME.fullmatch(name), f"invalid field name {name!r}"
        assert FIELD_VALUE.fullmatch(value), f"invalid field value for {name}: {value!r}"
    lowered = [name.lower() for name in headers]
    assert len(lowered) == len(set(lowered)), f"a header is sent twice (names are case-insensitive): {list(headers)}"


def openai_headers(templates: tuple[str, ...], *, api_key_env: str | None, environ: dict,
                   auth: str = "bearer") -> Credentials:
    """What a request to OpenAI's APIs carries, as the run resolves it (`auth`: "bearer" or "none");
    a key it cannot send is refused, as the run's checks refuse it."""
    creds = resolve_credentials(templates, key_envs={OPENAI: api_key_env if auth == "bearer" else None},
                                environ=environ)
    for why in creds.unusable.values():
        raise HeaderError(why)
    return Credentials(creds.for_api(OPENAI), creds.secrets)


@pytest.mark.parametrize("environ, api_key_env, auth, authorization", [
    pytest.param({"OPENAI_API_KEY": KEY}, "OPENAI_API_KEY", "bearer", f"Bearer {KEY}", id="bearer-key-set"),
    pytest.param({"OTHER_KEY": KEY}, "OTHER_KEY", "bearer", f"Bearer {KEY}", id="bearer-other-variable"),
    pytest.param({}, "OPENAI_API_KEY", "bearer", None, id="bearer-key-unset"),
    pytest.param({"OPENAI_API_KEY": ""}, "OPENAI_API_KEY", "bearer", None, id="bearer-key-empty"),
    pytest.param({"OPENAI_API_KEY": KEY}, "OPENAI_API_KEY", "none", None, id="auth-none-key-set"),
    pytest.param({}, "OPENAI_API_KEY", "none", None, id="auth-none-key-unset"),
    pytest.param({"OPENAI_API_KEY": KEY}, None, "bearer", None, id="no-key-variable"),
])
def test_builtin_headers(environ, api_key_env, auth, authorization):
    creds = openai_headers((), api_key_env=api_key_env, environ=environ, auth=auth)
    check_headers(creds.headers)
    assert creds.headers.get("Authorization") == authorization
    assert creds.secrets == ((KEY,) if authorization else ())


@pytest.mark.parametrize("templates, environ, expected, secrets", [
    pytest.param(("OpenAI-Organization: org-123",), {}, {"OpenAI-Organization": "org-123"}, (), id="literal"),
    pytest.param(("OpenAI-Organization: ${ORG}",), {"ORG": "org-9"}, {"OpenAI-Organization": "org-9"}, ("org-9",),
                 id="env-variable"),
    pytest.param(("X-Route: ${A}/${B}",), {"A": "eu", "B": "gpu-1"}, {"X-Route": "eu/gpu-1"}, ("eu", "gpu-1"),
                 id="two-variables"),
    pytest.param(("X-Api-Key: ${GW_KEY}", "OpenAI-Project: proj_1"), {"GW_KEY": "gw-secret"},
                 {"X-Api-Key": "gw-secret", "OpenAI-Project": "proj_1"}, ("gw-secret",), id="two-headers"),
    pytest.param(("X-Empty: ${E}",), {"E": ""}, {"X-Empty": ""}, (), id="empty-variable"),
    pytest.param(("  X-Spaced  :   value with spaces  ",), {}, {"X-Spaced": "value with spaces"}, (), id="trimmed"),
    pytest.param(("X-Colon: a:b:c",), {}, {"X-Colon": "a:b:c"}, (), id="colon-in-value"),
    pytest.param(("Authorization: Bearer ${GW}",), {"GW": "gw-token"}, {"Authorization": "Bearer gw-token"},
                 (KEY, "gw-token"), id="replaces-authorization"),
])
def test_user_headers(templates, environ, expected, secrets):
    creds = openai_headers(templates, api_key_env="OPENAI_API_KEY", environ={"OPENAI_API_KEY": KEY, **environ})
    check_headers(creds.headers)
    for name, value in expected.items():
        assert creds.headers[name] == value
    assert set(creds.secrets) == {KEY, *secrets}
    for template in templates:  # the template is never what is sent when it names a variable
        if "${" in template:
            assert template.split(":", 1)[1].strip() not in creds.headers.values()


def test_missing_variable_is_an_error():
    with pytest.raises(HeaderError, match="NOPE"):
        openai_headers(("X-Token: ${NOPE}",), api_key_env="OPENAI_API_KEY", environ={})


@pytest.mark.parametrize("template", [
    pytest.param("Bad Name: x", id="space-in-name"),
    pytest.param("X(y): z", id="parenthesis-in-name"),
    pytest.param("X\u00e9: v", id="non-ascii-name"),
    pytest.param(": value", id="empty-name"),
    pytest.param("no-colon", id="no-colon"),
    pytest.param("X-A: a\r\nX-Injected: 1", id="crlf-in-value"),
    pytest.param("X-A: a\nb", id="lf-in-value"),
    pytest.param("X-A: a\rb", id="cr-in-value"),
])
def test_invalid_header_templates_are_refused(template):
    with pytest.raises(HeaderError):
        openai_headers((template,), api_key_env="OPENAI_API_KEY", environ={})




@pytest.mark.parametrize("templates, environ", [
    pytest.param(("X-Token: ${TOK}",), {"TOK": "abc\r\nX-Injected: 1"}, id="crlf-from-variable",
                 ),
    pytest.param(("X-Token: ${TOK}",), {"TOK": "abc\n"}, id="newline-from-variable",
                 ),
    pytest.param((), {"OPENAI_API_KEY": KEY + "\n"}, id="newline-in-api-key",
                 ),
])
def test_line_breaks_from_the_environment_are_refused(templates, environ):
    """Either refused up front, or the header set that comes back is well formed."""
    try:
        creds = openai_headers(templates, api_key_env="OPENAI_API_KEY", environ=environ)
    except HeaderError:
        return
    check_headers(creds.headers)


@pytest.mark.parametrize("template", [
    pytest.param("authorization: Bearer ${OTHER}", id="authorization-lowercase"),
    pytest.param("content-type: application/json", id="content-type-lowercase"),
    pytest.param("ACCEPT: text/event-stream", id="accept-uppercase"),
])
def test_a_header_is_sent_once_whatever_its_case(template):
    creds = openai_headers((template,), api_key_env="OPENAI_API_KEY", environ={"OPENAI_API_KEY": KEY, "OTHER": "o"})
    check_headers(creds.headers)


@pytest.mark.parametrize("job", JOB_FILES, ids=lambda p: p.name)
def test_job_file_headers(job):
    cfg, _mock = load_job(str(job))
    transport = cfg.transport
    for environ in ({transport.api_key_env: KEY}, {}):
        creds = openai_headers(transport.headers, api_key_env=transport.api_key_env, environ=environ,
                               auth="bearer" if transport.auth else "none")
        check_headers(creds.headers)
        assert creds.headers.get("Authorization") == (f"Bearer {KEY}" if environ and transport.auth else None)


# --------------------------------------------------------------------------
# On the wire: run streamrun against a mock that records every request

@pytest.fixture
async def recording_server():
    """start(model) -> base URL of the mock serving `model`; `seen` gets (path, header items, raw body) per POST."""
    from contextlib import AsyncExitStack

    from aiohttp import web

    from runner.mock import MockConfig, build_app

    seen: list[tuple[str, list[tuple[str, str]], bytes]] = []

    @web.middleware
    async def record(request, handler):
        if request.method == "POST":
            seen.append((request.path, list(request.headers.items()), await request.read()))
        return await handler(request)

    async with AsyncExitStack() as stack:
        async def start(model: str) -> str:
            app = build_app(MockConfig(ttft=0.0, tokens_per_s=0.0, output_tokens=4, model=model))
            app.middlewares.append(record)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            site = web.TCPSite(runner, "127.0.0.1", 0)
            await site.start()
            return f"http://127.0.0.1:{runner.addresses[0][1]}/v1"

        yield start, seen


WIRE_RUNS = {  # job file (None: a `streamrun run` over sample_inputs), RunConfig overrides
    "sample.toml": ("sample.toml", {}),
    "nightly.toml": ("nightly.toml", {"resume": False, "overwrite": True, "rpm": None, "tpm": None}),
    "sharded.toml-server-model": ("sharded.toml", {"resume": False, "overwrite": True}),
    "run-params-headers-no-usage": (None, {
        "model": "gpt-4o-mini", "include_usage": False,
        "params": cli("max_tokens=16", "temperature=0.7", 'stop=["\\n"]', "seed=1", "n=1"),
        "headers": ("OpenAI-Organization: ${CONF_ORG}", "X-Literal: yes"),
    }),
}
WIRE_HEADER_VALUES = {"OpenAI-Organization": "org-conformance", "X-Literal": "yes"}


def canonical(body: dict) -> bytes:
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)


@pytest.mark.parametrize("run", list(WIRE_RUNS))
async def test_on_the_wire(run, recording_server, tmp_path, monkeypatch):
    """What streamrun really sends, captured by the server: the bodies are exactly those the tests above
    build (so those checks speak for the wire), and every body and header set conforms."""
    from runner.config.run_config import RunConfig, Stage
    from runner.stream.config import RetryPolicy
    from tests.helpers import execute, replace_fields

    start, seen = recording_server
    monkeypatch.setenv("CONF_KEY", KEY)
    monkeypatch.setenv("CONF_ORG", "org-conformance")
    job, overrides = WIRE_RUNS[run]
    if job:
        cfg, _mock = load_job(str(ROOT / "jobs" / job))
    else:
        cfg = RunConfig(inputs=tuple(str(p) for p in SAMPLE_FILES))
    cfg = replace_fields(cfg, path=str(tmp_path / "out.jsonl"), summary_path=str(tmp_path / "summary.json"),
                         api_key_env="CONF_KEY", concurrency=(4,), stages=(Stage(0, 4),),
                         retry=RetryPolicy(max_attempts=1), shard=None, **overrides)
    configured = cfg.request.model or cfg.request.params.get("model")
    cfg = replace_fields(cfg, base_urls=(await start(configured or SERVED_MODEL),))
    assert await execute(cfg, None, False) == 0

    expected = []
    for item in iter_items(expand_inputs(cfg.inputs)):
        model = configured if ("model" in item.body or configured is not None) else SERVED_MODEL
        expected.append((item.path, canonical(build_body(item.body, path=item.path, defaults=cfg.request.params,
                                                         model=model, include_usage=cfg.request.include_usage))))
    assert sorted((path, canonical(orjson.loads(raw))) for path, _h, raw in seen) == sorted(expected)

    for path, header_items, raw in seen:
        check_sent(path, orjson.loads(raw), include_usage=cfg.request.include_usage)
        names = [name.lower() for name, _ in header_items]
        assert len(names) == len(set(names)), f"a header went out twice: {header_items}"
        headers = dict(header_items)
        assert headers["Content-Type"] == "application/json"
        assert headers["Accept"] == "text/event-stream"
        assert UA.fullmatch(headers["User-Agent"]), headers["User-Agent"]
        assert headers["Authorization"] == f"Bearer {KEY}"
        for template in cfg.transport.headers:
            name = template.split(":", 1)[0].strip()
            assert headers[name] == WIRE_HEADER_VALUES[name]
