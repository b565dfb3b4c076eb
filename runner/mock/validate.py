"""Request validation: what vLLM and the OpenAI API refuse, refused alike.

Why it exists: a test that passes only against a lenient mock proves
nothing about real servers.  These rules are the mock's stand-in for a real
server's request schema; they are pure functions of the request (no
aiohttp), each raising ``Refusal`` with the status and JSON body a real
server answers:

* a body that is not JSON by its Content-Type: 422 in FastAPI's shape
  (``{"detail": [...]}``), exactly what vLLM answers;
* unparseable JSON, missing or mistyped fields: 400 ``invalid_request_error``
  with ``param`` naming the field and OpenAI's codes (``invalid_type``,
  ``missing_required_parameter``, ``integer_below_min_value``, ...);
* ``n`` above ``MAX_N`` (real servers have a limit too; the mock's keeps
  its replies small): 400 ``integer_above_max_value``;
* ``logprobs`` not a boolean (chat) or not an integer 0..``MAX_COMPLETION_LOGPROBS``
  (completions), ``top_logprobs`` not an integer 0..``MAX_TOP_LOGPROBS`` or
  without ``logprobs: true`` (chat): 400, as OpenAI and vLLM answer;
* a model that is not served: 404 ``model_not_found``;
* a prompt plus requested completion over the context window: 400
  ``context_length_exceeded`` in vLLM's words.

Unknown extra keys pass (vLLM ignores them), as does ``mock`` (the test
harness's fault-injection field, checked where faults are chosen).

The Responses API words its refusals as chat does, so ``responses`` uses
the same builders (``missing``, ``bad_type``, ``out_of_range``) and field
checks (``integer_between``, ``decimal``).
"""

from __future__ import annotations

import email.message
from collections.abc import Callable, Collection
from typing import Any, TypeGuard

import orjson

from .config import MockConfig

__all__ = [
    "Refusal",
    "ROLES",
    "RESPONSE_FORMATS",
    "MAX_N",
    "MAX_TOP_LOGPROBS",
    "MAX_COMPLETION_LOGPROBS",
    "check_body",
    "check_content_type",
    "check_context",
    "check_model",
    "decode",
    "bad_type",
    "decimal",
    "integer_between",
    "is_int",
    "is_number",
    "missing",
    "out_of_range",
]

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
RESPONSE_FORMATS = ("text", "json_object", "json_schema")
_INPUT_CHARS = 200  # how much of a refused non-JSON body the 422 echoes
MAX_N = 8  # choices per request (OpenAI allows 128; a mock reply stays small)
MAX_TOP_LOGPROBS = 20  # chat top_logprobs, as OpenAI
MAX_COMPLETION_LOGPROBS = 5  # completions logprobs, as OpenAI


class Refusal(Exception):
    """A request refused: the HTTP status and the JSON body to answer with."""

    def __init__(self, status: int, payload: dict[str, Any]) -> None:
        super().__init__(status, payload)
        self.status = status
        self.payload = payload

    @classmethod
    def error(
        cls,
        status: int,
        message: str,
        etype: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> Refusal:
        """OpenAI's error shape: ``{"error": {message, type, param, code}}``."""
        return cls(status, {"error": {"message": message, "type": etype, "param": param, "code": code}})


# --------------------------------------------------------------------------
# The body as a whole


def check_content_type(content_type: str | None, raw: bytes) -> None:
    """FastAPI's rule: a body is parsed as JSON when its Content-Type is
    ``application/json`` or ``application/*+json`` (parameters such as
    ``charset`` aside) or when there is no Content-Type at all; anything
    else reaches the schema as bytes, which fails with 422."""
    if not raw:
        raise _unprocessable("missing", "Field required", None)
    if not content_type or content_type == "application/json":  # the common case, without parsing
        return
    message = email.message.Message()
    message["content-type"] = content_type
    if message.get_content_maintype() == "application":
        subtype = message.get_content_subtype()
        if subtype == "json" or subtype.endswith("+json"):
            return
    text = raw.decode("utf-8", "replace")[:_INPUT_CHARS]
    raise _unprocessable("model_attributes_type", "Input should be a valid dictionary or object to extract fields from", text)


def _unprocessable(etype: str, msg: str, value: Any) -> Refusal:
    return Refusal(422, {"detail": [{"type": etype, "loc": ["body"], "msg": msg, "input": value}]})


def decode(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object, or a 400 as OpenAI answers it."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise Refusal.error(400, f"We could not parse the JSON body of your request: {exc}") from None
    if not isinstance(body, dict):
        raise Refusal.error(400, f"The request body must be a JSON object, but got {_kind(body)} instead.")
    return body


def check_model(body: dict[str, Any], config: MockConfig) -> None:
    """404 unless the mock serves ``body["model"]`` (run after ``check_body``,
    which makes sure it is a string)."""
    model = body["model"]
    if not config.serves(model):
        raise Refusal.error(404, f"The model `{model}` does not exist.", param="model", code="model_not_found")


def check_context(prompt_tokens: int, max_tokens: int | None, max_context: int | None, chat: bool) -> None:
    """400 when the prompt plus the requested completion exceed the window."""
    if not max_context:
        return
    completion = max_tokens or 0
    total = prompt_tokens + completion
    if total > max_context:
        raise Refusal.error(
            400,
            f"This model's maximum context length is {max_context} tokens. However, you requested "
            f"{total} tokens ({prompt_tokens} in the messages, {completion} in the completion). "
            "Please reduce the length of the messages or completion.",
            param="messages" if chat else "prompt",
            code="context_length_exceeded",
        )


# --------------------------------------------------------------------------
# Fields


def check_body(body: dict[str, Any], chat: bool) -> None:
    """Every field rule, in the order a reader expects errors: the model,
    the prompt, then the optional parameters (null means "not given")."""
    model = body.get("model")
    if model is None:
        raise missing("model")
    if not isinstance(model, str):
        raise bad_type("model", "a string", model)
    if chat:
        _check_messages(body.get("messages"))
    else:
        _check_prompt(body.get("prompt"))
    for name, check in _OPTIONAL:
        value = body.get(name)
        if value is not None and (chat or name != "tools"):
            check(name, value)
    _check_logprobs(body, chat)
    if body.get("stream_options") is not None and body.get("stream") is not True:
        raise Refusal.error(
            400, "Stream options can only be defined when `stream=True`.", param="stream_options", code="invalid_value"
        )


def _check_messages(messages: Any) -> None:
    if messages is None:
        raise missing("messages")
    if not isinstance(messages, list):
        raise bad_type("messages", "an array", messages)
    if not messages:
        raise _empty("messages")
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise bad_type(where, "an object", message)
        role = message.get("role")
        if role is None:
            raise missing(f"{where}.role")
        if not isinstance(role, str):
            raise bad_type(f"{where}.role", "a string", role)
        if role not in ROLES:
            raise _bad_value(f"{where}.role", role, ROLES)
        _check_content(where, role, message)


def _check_content(where: str, role: str, message: dict[str, Any]) -> None:
    content = message.get("content")
    param = f"{where}.content"
    if content is None:
        if role in ("tool", "function"):
            return
        if role == "assistant":
            calls = message.get("tool_calls")
            if (isinstance(calls, list) and calls) or isinstance(message.get("function_call"), dict):
                return
            raise Refusal.error(
                400, f"Invalid value for '{param}': an assistant message without 'tool_calls' needs content.",
                param=param, code="invalid_value",
            )
        if "content" not in message:
            raise missing(param)
        raise bad_type(param, "one of a string or array of objects", content)
    if isinstance(content, str):
        return
    if not isinstance(content, list):
        raise bad_type(param, "one of a string or array of objects", content)
    for j, part in enumerate(content):
        part_param = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise bad_type(part_param, "an object", part)
        if part.get("type") is None:
            raise missing(f"{part_param}.type")
        if not isinstance(part["type"], str):
            raise bad_type(f"{part_param}.type", "a string", part["type"])


def _check_prompt(prompt: Any) -> None:
    if prompt is None:
        raise missing("prompt")
    if isinstance(prompt, str):
        return
    if isinstance(prompt, list):
        if not prompt:
            raise _empty("prompt")
        if (
            all(isinstance(p, str) for p in prompt)
            or all(is_int(p) for p in prompt)
            or all(isinstance(p, list) and all(is_int(t) for t in p) for p in prompt)
        ):
            return
    raise bad_type(
        "prompt", "a string, an array of strings, an array of integers or an array of arrays of integers", prompt
    )


def _integer_from_1(name: str, value: Any) -> None:
    if not is_int(value):
        raise bad_type(name, "an integer", value)
    if value < 1:
        raise out_of_range(name, "integer below minimum value", ">= 1", value, "integer_below_min_value")


def integer_between(low: int, high: int | None) -> Callable[[str, Any], None]:
    """A check that a field is an integer in ``low..high`` (no upper bound when ``high`` is None)."""

    def check(name: str, value: Any) -> None:
        if not is_int(value):
            raise bad_type(name, "an integer", value)
        if value < low:
            raise out_of_range(name, "integer below minimum value", f">= {low}", value, "integer_below_min_value")
        if high is not None and value > high:
            raise out_of_range(name, "integer above maximum value", f"<= {high}", value, "integer_above_max_value")

    return check


def _check_logprobs(body: dict[str, Any], chat: bool) -> None:
    """Chat: ``logprobs`` a boolean, ``top_logprobs`` 0..20 and only with
    ``logprobs: true`` (vLLM's rule; OpenAI's too).  Completions:
    ``logprobs`` an integer 0..5 (``top_logprobs`` is not a completions
    field: ignored, as any unknown key)."""
    logprobs = body.get("logprobs")
    if not chat:
        if logprobs is not None:
            integer_between(0, MAX_COMPLETION_LOGPROBS)("logprobs", logprobs)
        return
    if logprobs is not None:
        _boolean("logprobs", logprobs)
    top = body.get("top_logprobs")
    if top is None:
        return
    integer_between(0, MAX_TOP_LOGPROBS)("top_logprobs", top)
    if logprobs is not True:
        raise Refusal.error(
            400, "Invalid value for 'top_logprobs': 'logprobs' must be set to true when 'top_logprobs' is given.",
            param="top_logprobs", code="invalid_value",
        )


def decimal(high: float) -> Callable[[str, Any], None]:
    """A check that a field is a number in ``0..high``."""

    def check(name: str, value: Any) -> None:
        if not is_number(value):
            raise bad_type(name, "a decimal", value)
        if value < 0:
            raise out_of_range(name, "decimal below minimum value", ">= 0", value, "decimal_below_min_value")
        if value > high:
            raise out_of_range(name, "decimal above maximum value", f"<= {high:g}", value, "decimal_above_max_value")

    return check


def _boolean(name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise bad_type(name, "a boolean", value)


def _object(name: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise bad_type(name, "an object", value)


def _stop(name: str, value: Any) -> None:
    if not isinstance(value, str) and not (isinstance(value, list) and all(isinstance(s, str) for s in value)):
        raise bad_type(name, "one of a string or array of strings", value)


def _tools(name: str, value: Any) -> None:
    if not isinstance(value, list):
        raise bad_type(name, "an array", value)
    for i, tool in enumerate(value):
        where = f"{name}[{i}]"
        _object(where, tool)
        kind = tool.get("type")
        if kind is None:
            raise missing(f"{where}.type")
        if kind != "function":
            raise _bad_value(f"{where}.type", kind, ("function",))
        function = tool.get("function")
        if function is None:
            raise missing(f"{where}.function")
        _object(f"{where}.function", function)
        fname = function.get("name")
        if fname is None:
            raise missing(f"{where}.function.name")
        if not isinstance(fname, str):
            raise bad_type(f"{where}.function.name", "a string", fname)


def _response_format(name: str, value: Any) -> None:
    _object(name, value)
    kind = value.get("type")
    if kind is None:
        raise missing(f"{name}.type")
    if kind not in RESPONSE_FORMATS:
        raise _bad_value(f"{name}.type", kind, RESPONSE_FORMATS)


# Checked in this order when present and not null.
_OPTIONAL: tuple[tuple[str, Callable[[str, Any], None]], ...] = (
    ("max_tokens", _integer_from_1),
    ("max_completion_tokens", _integer_from_1),
    ("n", integer_between(1, MAX_N)),
    ("temperature", decimal(2.0)),
    ("top_p", decimal(1.0)),
    ("stream", _boolean),
    ("stop", _stop),
    ("stream_options", _object),
    ("tools", _tools),  # chat only
    ("response_format", _response_format),
)


# --------------------------------------------------------------------------
# OpenAI's messages


def is_int(value: Any) -> TypeGuard[int]:
    """A JSON integer (``true`` is not one)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A JSON number (``true`` is not one)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value: Any) -> str:
    """How OpenAI names a JSON value's type in its messages."""
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


def missing(param: str) -> Refusal:
    """400 ``missing_required_parameter``."""
    return Refusal.error(400, f"Missing required parameter: '{param}'.", param=param, code="missing_required_parameter")


def bad_type(param: str, expected: str, value: Any) -> Refusal:
    """400 ``invalid_type``: ``expected`` as OpenAI words it ("an integer", "an array", ...)."""
    return Refusal.error(
        400, f"Invalid type for '{param}': expected {expected}, but got {_kind(value)} instead.",
        param=param, code="invalid_type",
    )


def _bad_value(param: str, value: Any, allowed: Collection[str]) -> Refusal:
    supported = ", ".join(f"'{a}'" for a in allowed)
    return Refusal.error(
        400, f"Invalid value for '{param}': '{value}'. Supported values are: {supported}.",
        param=param, code="invalid_value",
    )


def _empty(param: str) -> Refusal:
    return Refusal.error(
        400, f"Invalid '{param}': empty array. Expected an array with minimum length 1, but got an empty array instead.",
        param=param, code="empty_array",
    )


def out_of_range(param: str, what: str, bound: str, value: Any, code: str) -> Refusal:
    """400 with ``code`` such as ``integer_below_min_value``; ``bound`` like ">= 1"."""
    return Refusal.error(
        400, f"Invalid '{param}': {what}. Expected a value {bound}, but got {value} instead.", param=param, code=code
    )
