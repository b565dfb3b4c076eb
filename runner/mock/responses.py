"""The mock's OpenAI Responses API: ``POST /v1/responses``.

Why it exists: the runner speaks the Responses wire protocol too, and a test
needs a server for it that is as strict as OpenAI's and as scriptable as
the chat mock.  This module is what is the Responses API's own: its checks,
its error answers and its events; ``endpoint`` runs the request through the
mock's usual order and ``plan`` decides the reply's length.

What it checks (``MockConfig.lenient`` keeps only what serving needs)
    ``Authorization: Bearer`` as chat; ``model`` and ``input`` (a string or
    a list of items; message items need a role and text or typed parts,
    chat's ``{"type": "text"}`` parts are refused as OpenAI refuses them);
    chat-only parameters (``messages``, ``max_tokens``,
    ``stream_options.include_usage``, ...) answered "Unsupported parameter"
    (moved) or "Unknown parameter", as any other parameter it does not
    have; ``max_output_tokens`` >= 16; the model
    must be served (404), prompt plus ``max_output_tokens`` within
    ``max_context``.  Errors ``{"error": {message, type, param, code}}``,
    worded as chat's (``validate``).

Faults answer as chat's do; ``error_event`` sends an ``error`` event
(``server_error``) and ends the body; ``no_done`` leaves out
``response.completed``.

The stream (trimmed; each event also has an ``event:`` line naming its
``type``, and every event carries its ``sequence_number``)::

    response.created           {"response":{"id":"resp_..",...,"status":"in_progress","output":[]}}
    response.in_progress
    response.output_item.added {"output_index":0,"item":{"type":"message",...}}   (a reasoning item first when asked)
    response.content_part.added
    response.output_text.delta {"item_id":"msg_..","output_index":0,"content_index":0,"delta":" fox"}   x N
    response.output_text.done, response.content_part.done, response.output_item.done
    response.completed         {"response":{...,"status":"completed","output":[...],"usage":{"input_tokens":..}}}

A reply cut by ``max_output_tokens`` ends ``response.incomplete`` (reason
``max_output_tokens``).  Asked for reasoning (``reasoning.summary`` set),
a ``reasoning`` item with its ``response.reasoning_summary_*`` events comes
first.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web

from ..stream.paths import RESPONSES_PATH
from .config import MockConfig
from .endpoint import handle
from .plan import ApiRequest, Plan, mock_reasoning, read_body, seed_and_tokens, text_pieces
from .reply import bearer_refusal
from .request import bad_request
from .validate import MAX_TOP_LOGPROBS, Refusal, bad_type, check_model, decimal, integer_between, is_int, missing

__all__ = ["RESPONSES_PATH", "MIN_OUTPUT_TOKENS", "responses"]

MIN_OUTPUT_TOKENS = 16  # the Responses API's least max_output_tokens

# Chat parameters the Responses API refuses: "Unsupported" with where they moved, else "Unknown".
_UNSUPPORTED = {
    "messages": "'input'", "max_tokens": "'max_output_tokens'", "max_completion_tokens": "'max_output_tokens'",
    "response_format": "'text.format'", "reasoning_effort": "'reasoning.effort'", "n": None, "stop": None,
    "logprobs": "'include'", "seed": None, "frequency_penalty": None,
    "presence_penalty": None, "logit_bias": None, "functions": "'tools'", "function_call": "'tool_choice'",
}
# The Responses API's parameters (and the mock's own `mock`): anything else is an "Unknown parameter".
_RESPONSES_FIELDS = frozenset({
    "model", "input", "instructions", "max_output_tokens", "max_tool_calls", "temperature", "top_p", "top_logprobs",
    "tools", "tool_choice", "parallel_tool_calls", "stream", "stream_options", "store", "metadata", "user",
    "safety_identifier", "prompt_cache_key", "prompt_cache_retention", "previous_response_id", "conversation",
    "reasoning", "text", "include", "truncation", "background", "service_tier", "prompt", "mock"})
_INPUT_ROLES = ("user", "assistant", "system", "developer")
_PART_TYPES = ("input_text", "input_image", "output_text", "refusal", "input_file", "computer_screenshot",
               "summary_text")
_TRUNCATION = ("auto", "disabled")
# Checked in this order when present and not null (chat's checks, chat's words).
_NUMBERS: tuple[tuple[str, Callable[[str, Any], None]], ...] = (
    ("max_output_tokens", integer_between(MIN_OUTPUT_TOKENS, None)),
    ("top_logprobs", integer_between(0, MAX_TOP_LOGPROBS)),
    ("temperature", decimal(2.0)),
    ("top_p", decimal(1.0)),
)


# --------------------------------------------------------------------------
# What the API refuses


def _bad_value(param: str, value: Any, allowed: tuple[str, ...]) -> Refusal:
    """400 ``invalid_value``, worded as the Responses API words it (chat's names the parameter)."""
    supported = ", ".join(f"'{a}'" for a in allowed)
    return Refusal.error(400, f"Invalid value: '{value}'. Supported values are: {supported}.", param=param,
                         code="invalid_value")


def _check_responses(body: dict[str, Any]) -> None:
    """What the Responses API refuses of a body, first failure first."""
    model = body.get("model")
    if model is None:
        raise missing("model")
    if not isinstance(model, str):
        raise bad_type("model", "a string", model)
    for key, moved in _UNSUPPORTED.items():
        if key not in body:
            continue
        if moved:
            raise Refusal.error(400, f"Unsupported parameter: '{key}'. In the Responses API, this parameter has "
                                f"moved to {moved}.", param=key, code="unsupported_parameter")
        raise Refusal.error(400, f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter")
    for key in body:
        if key not in _RESPONSES_FIELDS:
            raise Refusal.error(400, f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter")
    _check_input(body.get("input"))
    for name in ("instructions", "previous_response_id", "user"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise bad_type(name, "a string", body[name])
    for name in ("stream", "store", "parallel_tool_calls", "background"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise bad_type(name, "a boolean", body[name])
    for name in ("metadata", "reasoning", "text", "stream_options"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise bad_type(name, "an object", body[name])
    options = body.get("stream_options")
    if options:
        for key in options:
            if key != "include_obfuscation":
                raise Refusal.error(400, f"Unknown parameter: 'stream_options.{key}'.",
                                    param=f"stream_options.{key}", code="unknown_parameter")
        if body.get("stream") is not True:
            raise Refusal.error(400, "Invalid value for 'stream_options': only allowed when 'stream' is true.",
                                param="stream_options", code="invalid_value")
    for name, check in _NUMBERS:
        value = body.get(name)
        if value is not None:
            check(name, value)
    truncation = body.get("truncation")
    if truncation is not None and truncation not in _TRUNCATION:
        raise _bad_value("truncation", truncation, _TRUNCATION)
    include = body.get("include")
    if include is not None and not (isinstance(include, list) and all(isinstance(i, str) for i in include)):
        raise bad_type("include", "an array of strings", include)
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise bad_type("tools", "an array", tools)
        for i, tool in enumerate(tools):
            where = f"tools[{i}]"
            if not isinstance(tool, dict):
                raise bad_type(where, "an object", tool)
            if not isinstance(tool.get("type"), str):
                raise missing(f"{where}.type") if tool.get("type") is None else bad_type(
                    f"{where}.type", "a string", tool["type"])
            if tool["type"] == "function" and not isinstance(tool.get("name"), str):
                raise missing(f"{where}.name")  # chat's {"function": {...}} shape lands here


def _check_input(value: Any) -> None:
    if value is None:
        raise missing("input")
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        raise bad_type("input", "one of a string or array of input items", value)
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise bad_type(where, "an object", item)
        kind = item.get("type", "message")
        if not isinstance(kind, str):
            raise bad_type(f"{where}.type", "a string", kind)
        if kind == "message":
            role = item.get("role")
            if role is None:
                raise missing(f"{where}.role")
            if role not in _INPUT_ROLES:
                raise _bad_value(f"{where}.role", role, _INPUT_ROLES)
            content = item.get("content")
            if content is None:
                raise missing(f"{where}.content")
            if isinstance(content, str):
                continue
            if not isinstance(content, list):
                raise bad_type(f"{where}.content", "one of a string or array of input content", content)
            for j, part in enumerate(content):
                param = f"{where}.content[{j}]"
                if not isinstance(part, dict):
                    raise bad_type(param, "an object", part)
                ptype = part.get("type")
                if ptype is None:
                    raise missing(f"{param}.type")
                if ptype not in _PART_TYPES:
                    raise _bad_value(f"{param}.type", ptype, _PART_TYPES)
                if ptype in ("input_text", "output_text") and not isinstance(part.get("text"), str):
                    raise missing(f"{param}.text")
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise missing(f"{where}.call_id")
            if item.get("output") is None:
                raise missing(f"{where}.output")
        elif kind == "function_call":
            for key in ("call_id", "name", "arguments"):
                if not isinstance(item.get(key), str):
                    raise missing(f"{where}.{key}")


# --------------------------------------------------------------------------
# The request as the mock acts on it


def _responses_turns(body: dict[str, Any]) -> list[tuple[str, list[str]]]:
    turns = []
    instructions = body.get("instructions")
    if isinstance(instructions, str):
        turns.append(("system", [instructions]))
    value = body.get("input")
    if isinstance(value, str):
        turns.append(("user", [value]))
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, dict) and item.get("type", "message") == "message":
                role = item.get("role")
                turns.append((role if isinstance(role, str) else "user", text_pieces(item.get("content"))))
            elif isinstance(item, dict) and isinstance(item.get("output"), str):
                turns.append(("tool", [item["output"]]))
    return turns


def _not_json() -> Refusal:
    """A body that is not JSON by its Content-Type: FastAPI's 422 is vLLM's; OpenAI answers 400 in its shape."""
    return Refusal.error(400, "We could not parse the JSON body of your request. (HINT: This likely means you "
                         "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, but what "
                         "was sent was not valid JSON.)")


def _parse_responses(raw: bytes, content_type: str | None, config: MockConfig) -> ApiRequest:
    strict = not config.lenient
    body = read_body(raw, content_type, config, _not_json)
    if strict:
        _check_responses(body)
        check_model(body, config)
    elif not isinstance(body.get("input"), (str, list)):
        raise bad_request("'input' must be a string or a list")
    limit = body.get("max_output_tokens")
    if limit is not None and (not is_int(limit) or limit < 0):  # lenient mode only: strict refused it
        raise bad_request("'max_output_tokens' must be an integer >= 0")
    if body.get("mock") is not None and not isinstance(body["mock"], dict):
        raise bad_request("'mock' must be an object")
    seed, prompt_tokens = seed_and_tokens(_responses_turns(body))
    if strict and config.max_context and prompt_tokens + (limit or 0) > config.max_context:
        raise Refusal.error(
            400, f"This model's maximum context length is {config.max_context} tokens. However, you requested "
            f"{prompt_tokens + (limit or 0)} tokens ({prompt_tokens} in the input, {limit or 0} in the output). "
            "Please reduce the length of the input or output.", param="input", code="context_length_exceeded")
    reasoning = body.get("reasoning")
    wants = isinstance(reasoning, dict) and reasoning.get("summary") is not None
    return ApiRequest(body, body.get("stream") is True, limit, prompt_tokens, seed,
                      mock_reasoning(body, config) if wants else 0)


# --------------------------------------------------------------------------
# The reply's events


class _ResponsesFrames:
    """One Responses reply: its events in order, numbered as they are made."""

    def __init__(self, rid: str, created: int, model: str, req: ApiRequest, plan: Plan) -> None:
        self.req, self.plan, self.model, self.created = req, plan, model, created
        self.id, self.msg_id, self.rs_id = "resp_" + rid, "msg_" + rid, "rs_" + rid
        self.msg_index = 1 if plan.reasoning else 0
        self.seq = 0
        self.open: str | None = None  # "reasoning" | "message"
        self.output: list[dict[str, Any]] = []
        self._t_mid = (b',"item_id":"%s","output_index":%d,"content_index":0,"delta":"'
                       % (self.msg_id.encode(), self.msg_index))
        self._r_mid = b',"item_id":"%s","output_index":0,"summary_index":0,"delta":"' % self.rs_id.encode()

    # -- pieces

    def _event(self, kind: str, **fields: Any) -> bytes:
        obj = {"type": kind, "sequence_number": self.seq, **fields}
        self.seq += 1
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(obj) + b"\n\n"

    def response(self, status: str, output: list[dict[str, Any]], usage: dict[str, Any] | None) -> dict[str, Any]:
        body = self.req.body
        reasoning = body.get("reasoning")
        if not isinstance(reasoning, dict):
            reasoning = {}
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        return {
            "id": self.id, "object": "response", "created_at": self.created, "status": status,
            "background": False, "error": None, "incomplete_details": incomplete,
            "instructions": body.get("instructions"), "max_output_tokens": body.get("max_output_tokens"),
            "model": self.model, "output": output, "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "previous_response_id": body.get("previous_response_id"),
            "reasoning": {"effort": reasoning.get("effort"), "summary": reasoning.get("summary")},
            "store": body.get("store", True), "temperature": body.get("temperature", 1.0),
            "text": body.get("text") or {"format": {"type": "text"}}, "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [], "top_p": body.get("top_p", 1.0), "truncation": "disabled",
            "usage": usage, "user": body.get("user"), "metadata": body.get("metadata") or {},
        }

    def usage(self, reasoning: int, text: int) -> dict[str, Any]:
        p, o = self.req.prompt_tokens, reasoning + text
        return {"input_tokens": p, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": o,
                "output_tokens_details": {"reasoning_tokens": reasoning}, "total_tokens": p + o}

    def reasoning_item(self, text: str | None) -> dict[str, Any]:
        summary = [] if text is None else [{"type": "summary_text", "text": text}]
        return {"id": self.rs_id, "type": "reasoning", "summary": summary}

    def message_item(self, text: str | None) -> dict[str, Any]:
        if text is None:
            return {"id": self.msg_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        status = "incomplete" if self.plan.finish == "length" else "completed"
        return {"id": self.msg_id, "type": "message", "status": status, "role": "assistant",
                "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}

    def _open_reasoning(self) -> list[bytes]:
        self.open = "reasoning"
        return [self._event("response.output_item.added", output_index=0, item=self.reasoning_item(None)),
                self._event("response.reasoning_summary_part.added", item_id=self.rs_id, output_index=0,
                            summary_index=0, part={"type": "summary_text", "text": ""})]

    def _close_reasoning(self) -> list[bytes]:
        self.open = None
        text = self.plan.texts()[0]
        item = self.reasoning_item(text)
        self.output.append(item)
        return [self._event("response.reasoning_summary_text.done", item_id=self.rs_id, output_index=0,
                            summary_index=0, text=text),
                self._event("response.reasoning_summary_part.done", item_id=self.rs_id, output_index=0,
                            summary_index=0, part={"type": "summary_text", "text": text}),
                self._event("response.output_item.done", output_index=0, item=item)]

    def _open_message(self) -> list[bytes]:
        self.open = "message"
        i = self.msg_index
        return [self._event("response.output_item.added", output_index=i, item=self.message_item(None)),
                self._event("response.content_part.added", item_id=self.msg_id, output_index=i, content_index=0,
                            part={"type": "output_text", "text": "", "annotations": [], "logprobs": []})]

    def _close_message(self) -> list[bytes]:
        self.open = None
        text = self.plan.texts()[1]
        item = self.message_item(text)
        self.output.append(item)
        i = self.msg_index
        return [self._event("response.output_text.done", item_id=self.msg_id, output_index=i, content_index=0,
                            text=text, logprobs=[]),
                self._event("response.content_part.done", item_id=self.msg_id, output_index=i, content_index=0,
                            part=item["content"][0]),
                self._event("response.output_item.done", output_index=i, item=item)]

    # -- the stream

    def opening(self) -> list[bytes]:
        start = self.response("in_progress", [], None)
        out = [self._event("response.created", response=start), self._event("response.in_progress", response=start)]
        if self.plan.reasoning:
            out += self._open_reasoning()
        elif self.plan.text:
            out += self._open_message()
        return out

    def events(self, a: int, b: int) -> list[bytes]:
        out = []
        for reasoning, text in self.plan.pieces(a, b):
            if reasoning:
                mid = self._r_mid
                kind = b"response.reasoning_summary_text.delta"
                tail = b'"}\n\n'
            else:
                if self.open != "message":
                    if self.open == "reasoning":
                        out += self._close_reasoning()
                    out += self._open_message()
                mid = self._t_mid
                kind = b"response.output_text.delta"
                tail = b'","logprobs":[]}\n\n'
            out.append(b"event: " + kind + b'\ndata: {"type":"' + kind + b'","sequence_number":%d' % self.seq
                       + mid + text + tail)
            self.seq += 1
        return out

    def sent_tokens(self, n_events: int) -> int:
        return sum(self.plan.sent(n_events))

    def closing(self, terminal: bool) -> list[bytes]:
        out = []
        if self.open == "reasoning":
            out += self._close_reasoning()
        if self.open == "message":
            out += self._close_message()
        if terminal:
            status = "incomplete" if self.plan.finish == "length" else "completed"
            usage = self.usage(self.plan.reasoning, self.plan.text)
            out.append(self._event(f"response.{status}", response=self.response(status, self.output, usage)))
        return out

    def error(self) -> bytes:
        return self._event("error", code="server_error", message="mock: injected mid-stream error", param=None)

    def whole(self) -> dict[str, Any]:
        """The non-streaming reply."""
        reasoning, text = self.plan.texts()
        output = ([self.reasoning_item(reasoning)] if self.plan.reasoning else []) + (
            [self.message_item(text)] if self.plan.text else [])
        status = "incomplete" if self.plan.finish == "length" else "completed"
        return self.response(status, output, self.usage(self.plan.reasoning, self.plan.text))


# --------------------------------------------------------------------------
# The endpoint


class _Responses:
    """How the Responses endpoint differs from the others."""

    path = RESPONSES_PATH
    id_header = "x-request-id"

    def check_headers(self, request: web.Request, config: MockConfig) -> Refusal | None:
        return bearer_refusal(request, config.api_key)

    def parse(self, raw: bytes, content_type: str | None, config: MockConfig) -> ApiRequest:
        return _parse_responses(raw, content_type, config)

    def shaped(self, refusal: Refusal) -> Refusal:
        return refusal

    def fault(self, fault: str) -> Refusal:
        if fault == "429":
            return Refusal.error(429, "mock: rate limit reached (injected)", "requests", code="rate_limit_exceeded")
        if fault == "500":
            return Refusal.error(500, "mock: the server had an error (injected)", "server_error", code="internal_error")
        if fault == "503":
            return Refusal.error(503, "mock: the engine is overloaded (injected)", "server_error",
                                 code="service_unavailable")
        return Refusal.error(400, "mock: invalid request (injected)", code="invalid_request")

    def over_quota(self, which: str | None) -> Refusal:
        return Refusal.error(429, f"mock: rate limit reached for {which} per min", which or "requests",
                             code="rate_limit_exceeded")

    def frames(self, rid: str, model: str, req: ApiRequest, plan: Plan) -> _ResponsesFrames:
        return _ResponsesFrames(rid, int(time.time()), model, req, plan)


_RESPONSES = _Responses()


async def responses(request: web.Request) -> web.StreamResponse:
    """``POST /v1/responses``."""
    return await handle(request, _RESPONSES)
