"""The mock's Anthropic Messages API: ``POST /v1/messages``.

Why it exists: the runner speaks Anthropic's wire protocol too, and a test
needs a server for it that is as strict as Anthropic's and as scriptable as
the chat mock.  This module is what is the Messages API's own: its checks,
its error answers and its events; ``endpoint`` runs the request through the
mock's usual order and ``plan`` decides the reply's length.

What it checks (``MockConfig.lenient`` keeps only what serving needs)
    The key (when the mock has one) in ``x-api-key``, or in
    ``Authorization: Bearer`` as the ``anthropic`` SDK 2.x sends it; an
    ``anthropic-version`` header; ``model``, ``messages`` (``user`` /
    ``assistant`` turns, content a string or typed blocks), ``max_tokens``
    >= 1, optional ``system`` (a string or text blocks); unknown fields
    refused ("Extra inputs are not permitted"); ``thinking`` as the API has
    it; the model must be served (404), prompt plus ``max_tokens`` within
    ``max_context``.  Errors ``{"type": "error", "error": {"type",
    "message"}}``, the mock's own refusals (a bad ``mock`` field) included.

Faults answer in that shape (``503`` is Anthropic's ``529
overloaded_error``); ``error_event`` sends an ``error`` event
(``overloaded_error``) and ends the body; ``no_done`` leaves out
``message_stop``.

The stream (trimmed; each event also has an ``event:`` line naming its
``type``)::

    message_start              {"message":{"id":"msg_..",...,"usage":{"input_tokens":..,"output_tokens":1}}}
    content_block_start        {"index":0,"content_block":{"type":"text","text":""}}   (a thinking block first)
    ping
    content_block_delta        {"index":0,"delta":{"type":"text_delta","text":" fox"}}   x N
    content_block_stop
    message_delta              {"delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":N}}
    message_stop

A reply cut by ``max_tokens`` has ``stop_reason: "max_tokens"``.  Asked for
thinking (``thinking.type`` "enabled" or "adaptive"), a ``thinking`` block
(``thinking_delta`` events, then a ``signature_delta``) comes first.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

from ..stream.paths import MESSAGES_PATH
from .config import MockConfig
from .endpoint import handle
from .plan import ApiRequest, Plan, mock_reasoning, read_body, seed_and_tokens, text_pieces
from .validate import Refusal, is_int, is_number

__all__ = ["MESSAGES_PATH", "MIN_THINKING_BUDGET", "anthropic_error", "header_refusal", "messages"]

MIN_THINKING_BUDGET = 1024  # Anthropic's least thinking.budget_tokens

_MESSAGES_FIELDS = frozenset({
    "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream", "temperature", "top_k",
    "top_p", "tools", "tool_choice", "thinking", "service_tier", "container", "mcp_servers", "context_management",
    "output_config", "output_format", "inference_geo", "mock"})
_MESSAGE_ROLES = ("user", "assistant")
_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens"}
_ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                     404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 500: "api_error",
                     529: "overloaded_error"}


# --------------------------------------------------------------------------
# Errors


def anthropic_error(status: int, message: str, etype: str | None = None) -> Refusal:
    """Anthropic's error shape: ``{"type": "error", "error": {"type", "message"}}``."""
    etype = etype or _ANTHROPIC_ERRORS.get(status, "api_error")
    return Refusal(status, {"type": "error", "error": {"type": etype, "message": message}})


def _an_invalid(message: str) -> Refusal:
    return anthropic_error(400, message)


def _shaped(refusal: Refusal) -> Refusal:
    """A refusal in OpenAI's shape (the shared machinery's: the body's JSON,
    the ``mock`` field) in Anthropic's."""
    error = refusal.payload.get("error")
    message = error.get("message") if isinstance(error, dict) else None
    return anthropic_error(refusal.status, str(message or refusal.payload))


def _not_json() -> Refusal:
    return _an_invalid("There was an error parsing the body: the request body must be JSON")


def header_refusal(request: web.Request, config: MockConfig) -> Refusal | None:
    """The key (when the mock has one) and the ``anthropic-version`` header, as every Anthropic route checks them."""
    key = config.api_key
    headers = request.headers
    if key is not None and headers.get("x-api-key") != key and headers.get("Authorization") != f"Bearer {key}":
        return anthropic_error(401, "invalid x-api-key")
    if not headers.get("anthropic-version"):
        return _an_invalid("anthropic-version: header is required")
    return None


# --------------------------------------------------------------------------
# What the API refuses


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
    if not is_int(max_tokens):
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
        if not is_number(value):
            raise _an_invalid(f"{name}: Input should be a valid number")
        if not 0 <= value <= high:
            raise _an_invalid(f"{name}: range: 0..{high:g}")
    top_k = body.get("top_k")
    if top_k is not None and (not is_int(top_k) or top_k < 0):
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
    if not is_int(budget):
        raise _an_invalid("thinking.enabled.budget_tokens: Input should be a valid integer")
    if budget < MIN_THINKING_BUDGET:
        raise _an_invalid(f"thinking.enabled.budget_tokens: Input should be greater than or equal to "
                          f"{MIN_THINKING_BUDGET}")
    if budget >= max_tokens:
        raise _an_invalid("`max_tokens` must be greater than `thinking.budget_tokens`. Please consult our "
                          "documentation at https://docs.claude.com/en/docs/build-with-claude/extended-thinking"
                          "#max-tokens-and-context-window-size")


# --------------------------------------------------------------------------
# The request as the mock acts on it


def _messages_turns(body: dict[str, Any]) -> list[tuple[str, list[str]]]:
    turns = []
    system = body.get("system")
    if system is not None:
        turns.append(("system", text_pieces(system)))
    for message in body.get("messages") or []:
        if isinstance(message, dict):
            role = message.get("role")
            turns.append((role if isinstance(role, str) else "user", text_pieces(message.get("content"))))
    return turns


def _parse_messages(raw: bytes, content_type: str | None, config: MockConfig) -> ApiRequest:
    strict = not config.lenient
    body = read_body(raw, content_type, config, _not_json, _shaped)
    if strict:
        _check_messages(body)
        if not config.serves(body["model"]):
            raise anthropic_error(404, f"model: {body['model']}")
    else:
        messages, max_tokens = body.get("messages"), body.get("max_tokens")
        if not isinstance(messages, list) or not messages:
            raise _an_invalid("messages: at least one message is required")
        if max_tokens is not None and (not is_int(max_tokens) or max_tokens < 1):
            raise _an_invalid("max_tokens: Input should be greater than or equal to 1")
    if body.get("mock") is not None and not isinstance(body["mock"], dict):
        raise _an_invalid("mock: Input should be a valid dictionary or object")
    limit = body.get("max_tokens")  # strict: an integer >= 1 (_check_messages); lenient: one or None
    seed, prompt_tokens = seed_and_tokens(_messages_turns(body))
    if strict and config.max_context:
        if prompt_tokens > config.max_context:
            raise _an_invalid(f"prompt is too long: {prompt_tokens} tokens > {config.max_context} maximum")
        if limit is not None and prompt_tokens + limit > config.max_context:
            raise _an_invalid(f"input length and `max_tokens` exceed context limit: {prompt_tokens} + {limit} > "
                              f"{config.max_context}, decrease input length or `max_tokens` and try again")
    thinking = body.get("thinking")
    reasoning = 0
    if isinstance(thinking, dict) and thinking.get("type") in ("enabled", "adaptive"):
        try:
            reasoning = mock_reasoning(body, config)
        except Refusal as refusal:
            raise _shaped(refusal) from None
        budget = thinking.get("budget_tokens")
        if is_int(budget):
            reasoning = min(reasoning, budget)
    return ApiRequest(body, body.get("stream") is True, limit, prompt_tokens, seed, reasoning)


# --------------------------------------------------------------------------
# The reply's events


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

    def sent_tokens(self, n_events: int) -> int:
        return sum(self.plan.sent(n_events))

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


# --------------------------------------------------------------------------
# The endpoint


class _Messages:
    """How the Messages endpoint differs from the others."""

    path = MESSAGES_PATH
    id_header = "request-id"

    def check_headers(self, request: web.Request, config: MockConfig) -> Refusal | None:
        return header_refusal(request, config)

    def parse(self, raw: bytes, content_type: str | None, config: MockConfig) -> ApiRequest:
        return _parse_messages(raw, content_type, config)

    def shaped(self, refusal: Refusal) -> Refusal:
        return _shaped(refusal)

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


_MESSAGES = _Messages()


async def messages(request: web.Request) -> web.StreamResponse:
    """``POST /v1/messages``."""
    return await handle(request, _MESSAGES)
