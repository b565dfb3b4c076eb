"""The mock's OpenAI Responses (``POST /v1/responses``) and Anthropic Messages
(``POST /v1/messages``) endpoints.

Why it exists: the runner speaks these two wire protocols too, and a test
needs a server for them that is as strict as the real ones and as scriptable
as the chat mock.  Same order as chat (``app``): the API key (401), then the
request's validation (400/404, in each API's own error shape), then the
``mock`` field's faults, the quotas, the random faults, then the reply on the
same ``Schedule`` (``ttft``, ``tokens_per_s``, ``output_tokens``,
``tokens_per_chunk``, ``--script``), streamed or as one JSON object.

What each checks (``MockConfig.lenient`` keeps only what serving needs)
    Responses: ``Authorization: Bearer`` as chat; ``model`` and ``input``
    (a string or a list of items; message items need a role and text or
    typed parts, chat's ``{"type": "text"}`` parts are refused as OpenAI
    refuses them); chat-only parameters (``messages``, ``max_tokens``,
    ``stream_options.include_usage``, ...) answered "Unsupported
    parameter" (moved) or "Unknown parameter"; ``max_output_tokens`` >= 16; errors ``{"error": {message,
    type, param, code}}``.
    Messages: the key (when the mock has one) in ``x-api-key``, or in
    ``Authorization: Bearer`` as the ``anthropic`` SDK 2.x sends it; an
    ``anthropic-version`` header; ``model``, ``messages`` (``user`` /
    ``assistant`` turns, content a string or typed blocks), ``max_tokens``
    >= 1, optional ``system`` (a string or text blocks); unknown fields
    refused ("Extra inputs are not permitted"); ``thinking`` as the API has
    it; errors ``{"type": "error", "error": {"type", "message"}}``.
    Both: the model must be served (404), prompt plus output limit within
    ``max_context``.

How long a reply is
    The model "wants" ``output_tokens`` answer tokens, after ``R`` reasoning
    tokens when the request asks for reasoning it can see (Responses:
    ``reasoning.summary`` set; Messages: ``thinking.type`` "enabled" or
    "adaptive"; ``R`` is ``mock.reasoning_tokens``, else half of
    ``output_tokens``, at most ``thinking.budget_tokens``).  An output limit
    below ``R + output_tokens`` (``max_output_tokens``, ``max_tokens``) cuts
    the reply there: finish "length" (Responses ``response.incomplete`` with
    reason ``max_output_tokens``; Messages ``stop_reason: "max_tokens"``),
    else "stop" (``response.completed``; ``end_turn``).  A script entry sets
    the number of events instead.

Faults (``body["mock"]``, as chat)
    ``429``/``500``/``400`` answer in the API's shape (Messages' ``503`` is
    Anthropic's ``529 overloaded_error``); ``drop`` cuts the stream after a
    few events; ``error_event`` sends the API's ``error`` event (Messages:
    ``overloaded_error``) and ends the body; ``no_done`` leaves out the
    terminal event (``response.completed`` / ``message_stop``); ``stall``
    sends the opening events and then nothing.

The streams (trimmed; each event also has an ``event:`` line naming its
``type``, and every Responses event carries its ``sequence_number``)::

    response.created           {"response":{"id":"resp_..",...,"status":"in_progress","output":[]}}
    response.in_progress
    response.output_item.added {"output_index":0,"item":{"type":"message",...}}   (a reasoning item first when asked)
    response.content_part.added
    response.output_text.delta {"item_id":"msg_..","output_index":0,"content_index":0,"delta":" fox"}   x N
    response.output_text.done, response.content_part.done, response.output_item.done
    response.completed         {"response":{...,"status":"completed","output":[...],"usage":{"input_tokens":..}}}

    message_start              {"message":{"id":"msg_..",...,"usage":{"input_tokens":..,"output_tokens":1}}}
    content_block_start        {"index":0,"content_block":{"type":"text","text":""}}   (a thinking block first)
    ping
    content_block_delta        {"index":0,"delta":{"type":"text_delta","text":" fox"}}   x N
    content_block_stop
    message_delta              {"delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":N}}
    message_stop
"""

from __future__ import annotations

import asyncio
import math
import time
import zlib
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from .config import MockConfig
from .frames import Schedule, content_events, reply_text
from .request import bad_request, prompt_tokens_estimate
from .state import (STATE_KEY, STATUS_FAULTS, MockState, admit, random_fault, script_index, scripted_fault,
                    seconds_header)
from .validate import Refusal, check_content_type, check_model, decode

__all__ = ["RESPONSES_PATH", "MESSAGES_PATH", "responses", "messages", "MIN_OUTPUT_TOKENS", "MIN_THINKING_BUDGET"]

RESPONSES_PATH = "/v1/responses"
MESSAGES_PATH = "/v1/messages"
MIN_OUTPUT_TOKENS = 16  # the Responses API's least max_output_tokens
MIN_THINKING_BUDGET = 1024  # Anthropic's least thinking.budget_tokens
_STALL_S = 3600.0
_FEW_EVENTS = 3  # content events sent before a drop / error_event


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


# --------------------------------------------------------------------------
# A request, a plan


@dataclass(slots=True)
class ApiRequest:
    """The parts of a Responses or Messages request the mock acts on."""

    body: dict[str, Any]
    stream: bool
    max_tokens: int | None  # the request's output limit, None when it set none
    prompt_tokens: int
    seed: int
    reasoning: int  # reasoning tokens the model wants (0: none visible)

    @property
    def mock(self) -> dict[str, Any]:
        return self.body.get("mock") or {}


@dataclass(frozen=True, slots=True)
class Plan:
    """One reply: ``reasoning`` tokens, then ``text`` tokens, ``k`` per event."""

    seed: int
    reasoning: int
    text: int
    k: int
    finish: str  # "stop" | "length"

    @property
    def reasoning_seed(self) -> int:
        return zlib.crc32(b"reasoning", self.seed)

    @property
    def reasoning_events(self) -> int:
        return -(-self.reasoning // self.k)

    @property
    def n_events(self) -> int:
        return self.reasoning_events + -(-self.text // self.k)

    def sent(self, n_events: int) -> tuple[int, int]:
        """(reasoning, text) tokens in the first ``n_events`` events."""
        r = self.reasoning_events
        return min(self.reasoning, n_events * self.k), max(0, min(self.text, (n_events - r) * self.k))

    def pieces(self, a: int, b: int) -> list[tuple[bool, bytes]]:
        """Events ``a`` to ``b`` as (reasoning?, JSON-escaped text)."""
        r = self.reasoning_events
        out = [(True, t) for t in content_events(b"", b"", self.reasoning_seed, self.k, self.reasoning, a, min(b, r))]
        if b > r:
            out += [(False, t) for t in content_events(b"", b"", self.seed, self.k, self.text, max(a - r, 0), b - r)]
        return out

    def texts(self) -> tuple[str, str]:
        return reply_text(self.reasoning_seed, self.reasoning), reply_text(self.seed, self.text)


def _plan(state: MockState, req: ApiRequest, index: int | None) -> tuple[Plan, Schedule]:
    config = state.config
    k = config.tokens_per_chunk
    want = req.reasoning
    if index is not None:  # a script entry: its events, reasoning first
        offsets = state.script_offsets[index]
        n = len(offsets)
        r_events = min(-(-want // k), n)
        plan = Plan(req.seed, min(want, r_events * k), (n - r_events) * k, k, "stop")
        return plan, Schedule(n, offsets=offsets)
    limit = req.max_tokens
    if limit is not None and limit < want + config.output_tokens:
        reasoning = min(want, limit)
        plan = Plan(req.seed, reasoning, limit - reasoning, k, "length")
    else:
        plan = Plan(req.seed, want, config.output_tokens, k, "stop")
    return plan, Schedule(plan.n_events, config.ttft, k * config.token_interval)


def _mock_reasoning(body: dict[str, Any], config: MockConfig) -> int:
    """Reasoning tokens wanted when asked: ``mock.reasoning_tokens``, else half the output."""
    mock = body.get("mock")
    wanted = mock.get("reasoning_tokens") if isinstance(mock, dict) else None
    if wanted is None:
        return max(1, config.output_tokens // 2)
    if not _is_int(wanted) or wanted < 0:
        raise bad_request("mock.reasoning_tokens must be an integer >= 0")
    return wanted


def _text_pieces(content: Any) -> list[str]:
    """The text of a content value: a string, or the text of its typed parts."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def _seed_and_tokens(turns: list[tuple[str, list[str]]]) -> tuple[int, int]:
    """The reply's seed and the prompt estimate, the chat mock's: the turns as chat messages."""
    messages = [{"role": role, "content": pieces} for role, pieces in turns]
    text = "\x00".join(p for _, pieces in turns for p in pieces)
    return zlib.crc32(text.encode("utf-8", "surrogatepass")), prompt_tokens_estimate({"messages": messages})


# --------------------------------------------------------------------------
# The OpenAI Responses API

# Chat parameters the Responses API refuses: "Unsupported" with where they moved, else "Unknown".
_UNSUPPORTED = {
    "messages": "'input'", "max_tokens": "'max_output_tokens'", "max_completion_tokens": "'max_output_tokens'",
    "response_format": "'text.format'", "reasoning_effort": "'reasoning.effort'", "n": None, "stop": None,
    "logprobs": "'include'", "seed": None, "frequency_penalty": None,
    "presence_penalty": None, "logit_bias": None, "functions": "'tools'", "function_call": "'tool_choice'",
}
_INPUT_ROLES = ("user", "assistant", "system", "developer")
_PART_TYPES = ("input_text", "input_image", "output_text", "refusal", "input_file", "computer_screenshot",
               "summary_text")
_TRUNCATION = ("auto", "disabled")


def _oa_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a decimal"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _oa_missing(param: str) -> Refusal:
    return Refusal.error(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def _oa_type(param: str, expected: str, value: Any) -> Refusal:
    return Refusal.error(400, f"Invalid type for '{param}': expected {expected}, but got {_oa_kind(value)} instead.",
                         param=param, code="invalid_type")


def _oa_value(param: str, value: Any, allowed: tuple[str, ...]) -> Refusal:
    supported = ", ".join(f"'{a}'" for a in allowed)
    return Refusal.error(400, f"Invalid value: '{value}'. Supported values are: {supported}.", param=param,
                         code="invalid_value")


def _oa_range(param: str, value: Any, low: float, high: float | None, what: str = "integer") -> Refusal | None:
    if value < low:
        return Refusal.error(400, f"Invalid '{param}': {what} below minimum value. Expected a value >= {low:g}, but "
                             f"got {value} instead.", param=param, code=f"{what}_below_min_value")
    if high is not None and value > high:
        return Refusal.error(400, f"Invalid '{param}': {what} above maximum value. Expected a value <= {high:g}, but "
                             f"got {value} instead.", param=param, code=f"{what}_above_max_value")
    return None


def _check_responses(body: dict[str, Any]) -> None:
    """What the Responses API refuses of a body, first failure first."""
    model = body.get("model")
    if model is None:
        raise _oa_missing("model")
    if not isinstance(model, str):
        raise _oa_type("model", "a string", model)
    for key, moved in _UNSUPPORTED.items():
        if key not in body:
            continue
        if moved:
            raise Refusal.error(400, f"Unsupported parameter: '{key}'. In the Responses API, this parameter has "
                                f"moved to {moved}.", param=key, code="unsupported_parameter")
        raise Refusal.error(400, f"Unknown parameter: '{key}'.", param=key, code="unknown_parameter")
    _check_input(body.get("input"))
    for name in ("instructions", "previous_response_id", "user"):
        if body.get(name) is not None and not isinstance(body[name], str):
            raise _oa_type(name, "a string", body[name])
    for name in ("stream", "store", "parallel_tool_calls", "background"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise _oa_type(name, "a boolean", body[name])
    for name in ("metadata", "reasoning", "text", "stream_options"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise _oa_type(name, "an object", body[name])
    options = body.get("stream_options")
    if options:
        for key in options:
            if key != "include_obfuscation":
                raise Refusal.error(400, f"Unknown parameter: 'stream_options.{key}'.",
                                    param=f"stream_options.{key}", code="unknown_parameter")
        if body.get("stream") is not True:
            raise Refusal.error(400, "Invalid value for 'stream_options': only allowed when 'stream' is true.",
                                param="stream_options", code="invalid_value")
    for name, low, high, kind in (("max_output_tokens", MIN_OUTPUT_TOKENS, None, "integer"),
                                  ("top_logprobs", 0, 20, "integer"), ("temperature", 0, 2, "decimal"),
                                  ("top_p", 0, 1, "decimal")):
        value = body.get(name)
        if value is None:
            continue
        if not (_is_int(value) if kind == "integer" else _is_number(value)):
            raise _oa_type(name, f"an {kind}" if kind == "integer" else "a decimal", value)
        refusal = _oa_range(name, value, low, high, kind)
        if refusal is not None:
            raise refusal
    truncation = body.get("truncation")
    if truncation is not None and truncation not in _TRUNCATION:
        raise _oa_value("truncation", truncation, _TRUNCATION)
    include = body.get("include")
    if include is not None and not (isinstance(include, list) and all(isinstance(i, str) for i in include)):
        raise _oa_type("include", "an array of strings", include)
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _oa_type("tools", "an array", tools)
        for i, tool in enumerate(tools):
            where = f"tools[{i}]"
            if not isinstance(tool, dict):
                raise _oa_type(where, "an object", tool)
            if not isinstance(tool.get("type"), str):
                raise _oa_missing(f"{where}.type") if tool.get("type") is None else _oa_type(
                    f"{where}.type", "a string", tool["type"])
            if tool["type"] == "function" and not isinstance(tool.get("name"), str):
                raise _oa_missing(f"{where}.name")  # chat's {"function": {...}} shape lands here


def _check_input(value: Any) -> None:
    if value is None:
        raise _oa_missing("input")
    if isinstance(value, str):
        return
    if not isinstance(value, list):
        raise _oa_type("input", "one of a string or array of input items", value)
    for i, item in enumerate(value):
        where = f"input[{i}]"
        if not isinstance(item, dict):
            raise _oa_type(where, "an object", item)
        kind = item.get("type", "message")
        if not isinstance(kind, str):
            raise _oa_type(f"{where}.type", "a string", kind)
        if kind == "message":
            role = item.get("role")
            if role is None:
                raise _oa_missing(f"{where}.role")
            if role not in _INPUT_ROLES:
                raise _oa_value(f"{where}.role", role, _INPUT_ROLES)
            content = item.get("content")
            if content is None:
                raise _oa_missing(f"{where}.content")
            if isinstance(content, str):
                continue
            if not isinstance(content, list):
                raise _oa_type(f"{where}.content", "one of a string or array of input content", content)
            for j, part in enumerate(content):
                param = f"{where}.content[{j}]"
                if not isinstance(part, dict):
                    raise _oa_type(param, "an object", part)
                ptype = part.get("type")
                if ptype is None:
                    raise _oa_missing(f"{param}.type")
                if ptype not in _PART_TYPES:
                    raise _oa_value(f"{param}.type", ptype, _PART_TYPES)
                if ptype in ("input_text", "output_text") and not isinstance(part.get("text"), str):
                    raise _oa_missing(f"{param}.text")
        elif kind == "function_call_output":
            if not isinstance(item.get("call_id"), str):
                raise _oa_missing(f"{where}.call_id")
            if item.get("output") is None:
                raise _oa_missing(f"{where}.output")
        elif kind == "function_call":
            for key in ("call_id", "name", "arguments"):
                if not isinstance(item.get(key), str):
                    raise _oa_missing(f"{where}.{key}")


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
                turns.append((role if isinstance(role, str) else "user", _text_pieces(item.get("content"))))
            elif isinstance(item, dict) and isinstance(item.get("output"), str):
                turns.append(("tool", [item["output"]]))
    return turns


def _parse_responses(raw: bytes, content_type: str | None, config: MockConfig) -> ApiRequest:
    strict = not config.lenient
    if strict:
        try:
            check_content_type(content_type, raw)
        except Refusal as refusal:  # FastAPI's 422 is vLLM's; OpenAI answers 400 in its shape
            raise Refusal.error(400, "We could not parse the JSON body of your request. (HINT: This likely means "
                                "you aren't using your HTTP library correctly. The OpenAI API expects a JSON "
                                "payload, but what was sent was not valid JSON.)") from refusal
    body = decode(raw)
    if strict:
        _check_responses(body)
        check_model(body, config.served_models)
    elif not isinstance(body.get("input"), (str, list)):
        raise bad_request("'input' must be a string or a list")
    limit = body.get("max_output_tokens")
    if limit is not None and (not _is_int(limit) or limit < 0):  # lenient mode only: strict refused it
        raise bad_request("'max_output_tokens' must be an integer >= 0")
    if body.get("mock") is not None and not isinstance(body["mock"], dict):
        raise bad_request("'mock' must be an object")
    seed, prompt_tokens = _seed_and_tokens(_responses_turns(body))
    if strict and config.max_context and prompt_tokens + (limit or 0) > config.max_context:
        raise Refusal.error(
            400, f"This model's maximum context length is {config.max_context} tokens. However, you requested "
            f"{prompt_tokens + (limit or 0)} tokens ({prompt_tokens} in the input, {limit or 0} in the output). "
            "Please reduce the length of the input or output.", param="input", code="context_length_exceeded")
    reasoning = body.get("reasoning")
    wants = isinstance(reasoning, dict) and reasoning.get("summary") is not None
    return ApiRequest(body, body.get("stream") is True, limit, prompt_tokens, seed,
                      _mock_reasoning(body, config) if wants else 0)


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
        reasoning = body.get("reasoning") if isinstance(body.get("reasoning"), dict) else {}
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


class _Responses:
    """How the Responses endpoint differs from the others."""

    path = RESPONSES_PATH
    id_header = "x-request-id"

    def check_headers(self, request: web.Request, config: MockConfig) -> Refusal | None:
        key = config.api_key
        if key is None or request.headers.get("Authorization") == f"Bearer {key}":
            return None
        return Refusal.error(401, "mock: incorrect or missing API key", code="invalid_api_key")

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


# --------------------------------------------------------------------------
# Anthropic's Messages API

_MESSAGES_FIELDS = frozenset({
    "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "temperature", "top_k",
    "top_p", "tools", "tool_choice", "thinking", "service_tier", "container", "mcp_servers", "context_management",
    "output_config", "output_format", "inference_geo", "mock"})
_MESSAGE_ROLES = ("user", "assistant")
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}
_ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                     404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                     529: "overloaded_error"}


def anthropic_error(status: int, message: str, etype: str | None = None) -> Refusal:
    """Anthropic's error shape: ``{"type": "error", "error": {"type", "message"}}``."""
    etype = etype or _ANTHROPIC_ERRORS.get(status, "api_error")
    return Refusal(status, {"type": "error", "error": {"type": etype, "message": message}})


def _an_invalid(message: str) -> Refusal:
    return anthropic_error(400, message)


def _check_blocks(where: str, blocks: Any) -> None:
    if not isinstance(blocks, list):
        raise _an_invalid(f"{where}: Input should be a valid list")
    for j, block in enumerate(blocks):
        param = f"{where}.{j}"
        if not isinstance(block, dict):
            raise _an_invalid(f"{param}: Input should be a valid dictionary or object")
        kind = block.get("type")
        if kind is None:
            raise _an_invalid(f"{param}.type: Field required")
        if not isinstance(kind, str):
            raise _an_invalid(f"{param}.type: Input should be a valid string")
        if kind == "text" and not isinstance(block.get("text"), str):
            raise _an_invalid(f"{param}.text: Field required")


def _check_messages(body: dict[str, Any]) -> None:
    """What the Messages API refuses of a body, first failure first."""
    for key in body:
        if key not in _MESSAGES_FIELDS:
            raise _an_invalid(f"{key}: Extra inputs are not permitted")
    model = body.get("model")
    if model is None:
        raise _an_invalid("model: Field required")
    if not isinstance(model, str):
        raise _an_invalid("model: Input should be a valid string")
    messages = body.get("messages")
    if messages is None:
        raise _an_invalid("messages: Field required")
    if not isinstance(messages, list):
        raise _an_invalid("messages: Input should be a valid list")
    if not messages:
        raise _an_invalid("messages: at least one message is required")
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise _an_invalid(f"{where}: Input should be a valid dictionary or object")
        for key in message:
            if key not in ("role", "content"):
                raise _an_invalid(f"{where}.{key}: Extra inputs are not permitted")
        role = message.get("role")
        if role is None:
            raise _an_invalid(f"{where}.role: Field required")
        if role not in _MESSAGE_ROLES:
            raise _an_invalid(f"{where}.role: Input should be 'user' or 'assistant'")
        content = message.get("content")
        if content is None:
            raise _an_invalid(f"{where}.content: Field required")
        if not isinstance(content, str):
            _check_blocks(f"{where}.content", content)
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise _an_invalid("max_tokens: Field required")
    if not _is_int(max_tokens):
        raise _an_invalid("max_tokens: Input should be a valid integer")
    if max_tokens < 1:
        raise _an_invalid("max_tokens: Input should be greater than or equal to 1")
    system = body.get("system")
    if system is not None and not isinstance(system, str):
        if not isinstance(system, list):
            raise _an_invalid("system: Input should be a valid string")
        _check_blocks("system", system)
        for j, block in enumerate(system):
            if block["type"] != "text":
                raise _an_invalid(f"system.{j}.type: Input should be 'text'")
    for name, high in (("temperature", 1.0), ("top_p", 1.0)):
        value = body.get(name)
        if value is None:
            continue
        if not _is_number(value):
            raise _an_invalid(f"{name}: Input should be a valid number")
        if not 0 <= value <= high:
            raise _an_invalid(f"{name}: range: 0..{high:g}")
    top_k = body.get("top_k")
    if top_k is not None and (not _is_int(top_k) or top_k < 0):
        raise _an_invalid("top_k: Input should be a valid integer greater than or equal to 0")
    stops = body.get("stop_sequences")
    if stops is not None and not (isinstance(stops, list) and all(isinstance(s, str) for s in stops)):
        raise _an_invalid("stop_sequences: Input should be a valid list of strings")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise _an_invalid("stream: Input should be a valid boolean")
    for name in ("metadata", "tool_choice"):
        if body.get(name) is not None and not isinstance(body[name], dict):
            raise _an_invalid(f"{name}: Input should be a valid dictionary or object")
    tools = body.get("tools")
    if tools is not None:
        if not isinstance(tools, list):
            raise _an_invalid("tools: Input should be a valid list")
        for i, tool in enumerate(tools):
            if not isinstance(tool, dict) or not isinstance(tool.get("name"), str):
                raise _an_invalid(f"tools.{i}.name: Field required")  # chat's {"type": "function", ...} lands here
    _check_thinking(body.get("thinking"), max_tokens)


def _check_thinking(thinking: Any, max_tokens: int) -> None:
    if thinking is None:
        return
    if not isinstance(thinking, dict):
        raise _an_invalid("thinking: Input should be a valid dictionary or object")
    kind = thinking.get("type")
    if kind not in ("enabled", "disabled", "adaptive"):
        raise _an_invalid("thinking.type: Input should be 'enabled', 'disabled' or 'adaptive'")
    if kind != "enabled":
        return
    budget = thinking.get("budget_tokens")
    if budget is None:
        raise _an_invalid("thinking.enabled.budget_tokens: Field required")
    if not _is_int(budget):
        raise _an_invalid("thinking.enabled.budget_tokens: Input should be a valid integer")
    if budget < MIN_THINKING_BUDGET:
        raise _an_invalid(f"thinking.enabled.budget_tokens: Input should be greater than or equal to "
                          f"{MIN_THINKING_BUDGET}")
    if budget >= max_tokens:
        raise _an_invalid("`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
                          "documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
                          "#max-tokens-and-context-window-size")


def _messages_turns(body: dict[str, Any]) -> list[tuple[str, list[str]]]:
    turns = []
    system = body.get("system")
    if system is not None:
        turns.append(("system", _text_pieces(system)))
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            role = message.get("role")
            turns.append((role if isinstance(role, str) else "user", _text_pieces(message.get("content"))))
    return turns


def _parse_messages(raw: bytes, content_type: str | None, config: MockConfig) -> ApiRequest:
    strict = not config.lenient
    if strict:
        try:
            check_content_type(content_type, raw)
        except Refusal as refusal:
            raise _an_invalid("There was an error parsing the body: the request body must be JSON") from refusal
    try:
        body = decode(raw)
    except Refusal as refusal:
        raise _an_invalid(str(refusal.payload["error"]["message"])) from None
    if strict:
        _check_messages(body)
        if body["model"] not in config.served_models:
            raise anthropic_error(404, f"model: {body['model']}")
    else:
        messages, max_tokens = body.get("messages"), body.get("max_tokens")
        if not isinstance(messages, list) or not messages:
            raise _an_invalid("messages: at least one message is required")
        if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
            raise _an_invalid("max_tokens: Input should be greater than or equal to 1")
    if body.get("mock") is not None and not isinstance(body["mock"], dict):
        raise _an_invalid("mock: Input should be a valid dictionary or object")
    limit = body.get("max_tokens")
    seed, prompt_tokens = _seed_and_tokens(_messages_turns(body))
    if strict and config.max_context:
        if prompt_tokens > config.max_context:
            raise _an_invalid(f"prompt is too long: {prompt_tokens} tokens > {config.max_context} maximum")
        if prompt_tokens + limit > config.max_context:
            raise _an_invalid(f"input length and `max_tokens` exceed context limit: {prompt_tokens} + {limit} > "
                              f"{config.max_context}, decrease input length or `max_tokens` and try again")
    thinking = body.get("thinking")
    reasoning = 0
    if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):
        try:
            reasoning = _mock_reasoning(body, config)
        except Refusal as refusal:
            raise _an_invalid(str(refusal.payload["error"]["message"])) from None
        budget = thinking.get("budget_tokens")
        if _is_int(budget):
            reasoning = min(reasoning, budget)
    return ApiRequest(body, body.get("stream") is True, limit, prompt_tokens, seed, reasoning)


class _MessagesFrames:
    """One Messages reply: a thinking block (when asked) and a text block."""

    def __init__(self, rid: str, model: str, req: ApiRequest, plan: Plan) -> None:
        self.req, self.plan, self.model = req, plan, model
        self.id = "msg_" + rid
        self.block = -1  # the open block's index
        self.open: str | None = None  # "thinking" | "text"
        self.signature = orjson.dumps("mock-signature-" + rid)[1:-1]

    @staticmethod
    def _event(kind: str, obj: dict[str, Any]) -> bytes:
        return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **obj}) + b"\n\n"

    def message(self, content: list[dict[str, Any]], stop_reason: str | None, output_tokens: int) -> dict[str, Any]:
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": content,
                "stop_reason": stop_reason, "stop_sequence": None,
                "usage": {"input_tokens": self.req.prompt_tokens, "cache_creation_input_tokens": 0,
                          "cache_read_input_tokens": 0, "output_tokens": output_tokens}}

    def _open(self, kind: str) -> list[bytes]:
        self.block += 1
        self.open = kind
        block = {"type": "thinking", "thinking": "", "signature": ""} if kind == "thinking" else {"type": "text",
                                                                                                  "text": ""}
        return [self._event("content_block_start", {"index": self.block, "content_block": block})]

    def _close(self) -> list[bytes]:
        out = []
        if self.open == "thinking":
            out.append(b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
                       b'"delta":{"type":"signature_delta","signature":"%s"}}\n\n' % (self.block, self.signature))
        self.open = None
        out.append(self._event("content_block_stop", {"index": self.block}))
        return out

    def opening(self) -> list[bytes]:
        out = [self._event("message_start", {"message": self.message([], None, 1)})]
        if self.plan.reasoning:
            out += self._open("thinking")
        elif self.plan.text:
            out += self._open("text")
        out.append(b'event: ping\ndata: {"type": "ping"}\n\n')
        return out

    def events(self, a: int, b: int) -> list[bytes]:
        out = []
        for reasoning, text in self.plan.pieces(a, b):
            if reasoning:
                out.append(b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
                           b'"delta":{"type":"thinking_delta","thinking":"' % self.block + text + b'"}}\n\n')
                continue
            if self.open != "text":
                if self.open is not None:
                    out += self._close()
                out += self._open("text")
            out.append(b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
                       b'"delta":{"type":"text_delta","text":"' % self.block + text + b'"}}\n\n')
        return out

    def closing(self, terminal: bool) -> list[bytes]:
        out = self._close() if self.open is not None else []
        usage = {"output_tokens": self.plan.reasoning + self.plan.text}
        delta = {"stop_reason": _STOP_REASONS[self.plan.finish], "stop_sequence": None}
        out.append(self._event("message_delta", {"delta": delta, "usage": usage}))
        if terminal:
            out.append(self._event("message_stop", {}))
        return out

    def error(self) -> bytes:
        return self._event("error", {"error": {"type": "overloaded_error", "message": "Overloaded"}})

    def whole(self) -> dict[str, Any]:
        """The non-streaming reply."""
        reasoning, text = self.plan.texts()
        content = []
        if self.plan.reasoning:
            content.append({"type": "thinking", "thinking": reasoning, "signature": "mock-signature"})
        if self.plan.text:
            content.append({"type": "text", "text": text})
        return self.message(content, _STOP_REASONS[self.plan.finish], self.plan.reasoning + self.plan.text)


class _Messages:
    """How the Messages endpoint differs from the others."""

    path = MESSAGES_PATH
    id_header = "request-id"

    def check_headers(self, request: web.Request, config: MockConfig) -> Refusal | None:
        key = config.api_key
        headers = request.headers
        if key is not None and headers.get("x-api-key") != key and headers.get("Authorization") != f"Bearer {key}":
            return anthropic_error(401, "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return _an_invalid("anthropic-version: header is required")
        return None

    def parse(self, raw: bytes, content_type: str | None, config: MockConfig) -> ApiRequest:
        return _parse_messages(raw, content_type, config)

    def shaped(self, refusal: Refusal) -> Refusal:
        """A refusal of the shared machinery (the ``mock`` field's) in Anthropic's shape."""
        error = refusal.payload.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        return anthropic_error(refusal.status, str(message or refusal.payload))

    def fault(self, fault: str) -> Refusal:
        if fault == "429":
            return anthropic_error(429, "mock: rate limit reached (injected)")
        if fault == "500":
            return anthropic_error(500, "mock: internal server error (injected)")
        if fault == "503":
            return anthropic_error(529, "Overloaded")
        return anthropic_error(400, "mock: invalid request (injected)")

    def over_quota(self, which: str | None) -> Refusal:
        return anthropic_error(429, f"mock: rate limit reached for {which} per min")

    def frames(self, rid: str, model: str, req: ApiRequest, plan: Plan) -> _MessagesFrames:
        return _MessagesFrames(rid, model, req, plan)


_RESPONSES = _Responses()
_MESSAGES = _Messages()


# --------------------------------------------------------------------------
# The handler


def _answer(state: MockState, refusal: Refusal, headers: dict[str, str] | None = None) -> web.Response:
    state.stats.count_status(refusal.status)
    return web.Response(status=refusal.status, body=orjson.dumps(refusal.payload), content_type="application/json",
                        headers=headers)


async def responses(request: web.Request) -> web.StreamResponse:
    """``POST /v1/responses``."""
    return await _handle(request, _RESPONSES)


async def messages(request: web.Request) -> web.StreamResponse:
    """``POST /v1/messages``."""
    return await _handle(request, _MESSAGES)


async def _handle(request: web.Request, api: Any) -> web.StreamResponse:
    t0 = time.perf_counter()
    state = request.app[STATE_KEY]
    state.stats.requests += 1
    task = asyncio.current_task()
    if task is not None:
        state.tasks.add(task)
    try:
        return await _handle_inner(request, state, api, t0)
    finally:
        if task is not None:
            state.tasks.discard(task)


async def _handle_inner(request: web.Request, state: MockState, api: Any, t0: float) -> web.StreamResponse:
    config = state.config
    denied = api.check_headers(request, config)
    if denied is not None:
        return _answer(state, denied)
    try:
        req = api.parse(await request.read(), request.headers.get("Content-Type"), config)
    except Refusal as refusal:
        return _answer(state, refusal)
    try:
        fault, retry_after = scripted_fault(state, req.mock)
        index = script_index(state, req.mock)
    except Refusal as refusal:
        return _answer(state, api.shaped(refusal))
    if fault in STATUS_FAULTS:
        return _fault_answer(state, api, fault, retry_after)

    headers: dict[str, str] = {}
    if state.rpm or state.tpm:
        limit = req.max_tokens if req.max_tokens is not None else config.output_tokens
        wait, which, headers = admit(state, req.prompt_tokens + limit)
        if wait > 0:
            headers.update(seconds_header(math.ceil(wait * 1000) / 1000))
            return _answer(state, api.over_quota(which), headers)
    if fault is None:
        fault = random_fault(state)
        if fault in STATUS_FAULTS:
            return _fault_answer(state, api, fault, retry_after)

    plan, schedule = _plan(state, req, index)
    rid = state.next_id()
    headers[api.id_header] = rid
    frames = api.frames(rid, config.model, req, plan)
    if req.stream:
        return await _stream(request, state, frames, plan, schedule, t0, fault, headers)
    return await _respond_json(request, state, api, frames, plan, schedule, t0, fault, headers)


def _fault_answer(state: MockState, api: Any, fault: str, retry_after: float) -> web.Response:
    return _answer(state, api.fault(fault), seconds_header(retry_after) if fault == "429" else None)


class _SSEResponse(web.StreamResponse):
    """Headers go out with the first body write (as in ``app``)."""

    _send_headers_immediately = False


def _cut(request: web.Request, resp: web.StreamResponse) -> None:
    """Close the connection without ending the chunked body."""
    resp.force_close()
    if request.transport is not None:
        request.transport.close()


async def _stream(request: web.Request, state: MockState, frames: Any, plan: Plan, schedule: Schedule, t0: float,
                  fault: str, headers: dict[str, str]) -> web.StreamResponse:
    """The SSE reply: opening events at once, content events on the schedule
    (every already-due event in one write), then the closing events."""
    stats = state.stats
    headers.update({"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    resp = (web.StreamResponse if fault == "stall" else _SSEResponse)(status=200, headers=headers)
    await resp.prepare(request)
    stats.count_status(200)
    stats.streams_started += 1
    stats.active_streams += 1
    stats.max_active_streams = max(stats.max_active_streams, stats.active_streams)
    n_events = schedule.n
    if fault in ("drop", "error_event"):
        n_events = min(n_events, max(1, min(_FEW_EVENTS, n_events // 2)))
    pending: list[bytes] = frames.opening()
    try:
        if fault == "stall":
            await resp.write(b"".join(pending))
            await asyncio.sleep(_STALL_S)
            _cut(request, resp)
            stats.streams_dropped += 1
            return resp
        j = 0
        while j < n_events:
            due = min(n_events, schedule.due(time.perf_counter() - t0, j))
            if due == j:
                if pending:
                    await resp.write(b"".join(pending))
                    pending.clear()
                while (delay := t0 + schedule.offset(j) - time.perf_counter()) > 0:
                    await asyncio.sleep(delay)
                due = min(n_events, max(j + 1, schedule.due(time.perf_counter() - t0, j)))
            pending += frames.events(j, due)
            j = due
        stats.tokens_sent += sum(plan.sent(n_events))
        if fault == "drop":
            if pending:
                await resp.write(b"".join(pending))
            _cut(request, resp)
            stats.streams_dropped += 1
            return resp
        if fault == "error_event":
            pending.append(frames.error())
            stats.streams_errored += 1
        else:
            pending += frames.closing(terminal=fault != "no_done")
            stats.streams_completed += 1
        await resp.write_eof(b"".join(pending))
        return resp
    except ConnectionError:
        stats.streams_cancelled += 1
        return resp
    except asyncio.CancelledError:
        stats.streams_cancelled += 1
        raise
    finally:
        stats.active_streams -= 1


async def _respond_json(request: web.Request, state: MockState, api: Any, frames: Any, plan: Plan,
                        schedule: Schedule, t0: float, fault: str, headers: dict[str, str]) -> web.StreamResponse:
    """The non-streaming reply, sent when the last token would have been."""
    if fault == "stall":
        await asyncio.sleep(_STALL_S)
    end = t0 + schedule.offset(max(0, schedule.n - 1))
    while (delay := end - time.perf_counter()) > 0:
        await asyncio.sleep(delay)
    if fault == "drop":
        state.stats.streams_dropped += 1
        resp = web.Response()
        _cut(request, resp)
        return resp
    if fault == "error_event":
        return _answer(state, api.fault("500"))
    state.stats.count_status(200)
    state.stats.non_stream_completed += 1
    state.stats.tokens_sent += plan.reasoning + plan.text
    return web.Response(body=orjson.dumps(frames.whole()), content_type="application/json", headers=headers)
