"""The OpenAI wire protocol: request lines to HTTP bodies, SSE events to text.

Knows JSON and the OpenAI chat/completions shapes; knows nothing of sockets,
files or timing (the client stamps times, this module only says which events
carried text).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import StreamErrorEvent

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
ENDPOINT_PATHS = (CHAT_PATH, COMPLETIONS_PATH)


class InvalidRequestLine(ValueError):
    """A line that cannot become a request; the message is shown with file:line."""


def parse_line(obj: Any, *, file: str, line: int) -> tuple[str | None, str, dict]:
    """Return (custom_id or None, endpoint path, body) for one decoded input line.

    Accepts chat shorthand (`messages`), completion shorthand (`prompt`) and the
    OpenAI Batch API form (`method`/`url`/`body`), so Batch API files run as is.
    """
    if not isinstance(obj, dict):
        raise InvalidRequestLine(f"expected a JSON object, got {type(obj).__name__}")
    custom_id = obj.get("custom_id")
    if custom_id is not None and not isinstance(custom_id, str):
        raise InvalidRequestLine("custom_id must be a string")
    if custom_id == "":
        custom_id = None
    if "body" in obj:
        body = obj["body"]
        if not isinstance(body, dict):
            raise InvalidRequestLine("'body' must be a JSON object")
        method = obj.get("method", "POST")
        if str(method).upper() != "POST":
            raise InvalidRequestLine(f"method {method!r} is not supported (POST only)")
        url = obj.get("url") or (COMPLETIONS_PATH if "prompt" in body else CHAT_PATH)
        path = _normalise_path(url)
        body = dict(body)
    else:
        body = {k: v for k, v in obj.items() if k != "custom_id"}
        path = CHAT_PATH if "messages" in body else COMPLETIONS_PATH
    if path == CHAT_PATH:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequestLine("'messages' must be a non-empty list")
    elif "prompt" not in body:
        raise InvalidRequestLine("no 'messages', 'prompt' or 'body' field")
    return custom_id, path, body


def _normalise_path(url: str) -> str:
    for path in ENDPOINT_PATHS:
        if url.rstrip("/").endswith(path.removeprefix("/v1")):
            return path
    raise InvalidRequestLine(f"url {url!r} is not /v1/chat/completions or /v1/completions")


# Run-wide defaults (`--param`, a job's [params]) meet both endpoints in one run;
# these keys exist on one of them only, and the API refuses them on the other.
CHAT_ONLY = frozenset({"messages", "response_format", "tools", "tool_choice", "parallel_tool_calls",
                       "max_completion_tokens", "top_logprobs", "reasoning_effort", "modalities", "audio",
                       "prediction", "store", "metadata", "web_search_options", "verbosity"})
COMPLETIONS_ONLY = frozenset({"prompt", "suffix", "echo", "best_of"})


def defaults_for(path: str, defaults: dict) -> dict:
    """The run's defaults as this endpoint takes them.

    `logprobs` is a boolean on chat and a count on completions, so it is
    converted; `max_completion_tokens` becomes completions' `max_tokens`.
    A line's own keys are never touched: what a line says is sent as is.
    """
    if not defaults:
        return defaults
    if path == COMPLETIONS_PATH:
        out = {k: v for k, v in defaults.items() if k not in CHAT_ONLY}
        if "max_completion_tokens" in defaults:
            out.setdefault("max_tokens", defaults["max_completion_tokens"])
        if out.get("logprobs") is True:
            top = defaults.get("top_logprobs")
            out["logprobs"] = top if isinstance(top, int) and not isinstance(top, bool) else 0
        elif out.get("logprobs") is False:
            del out["logprobs"]
        return out
    out = {k: v for k, v in defaults.items() if k not in COMPLETIONS_ONLY}
    logprobs = out.get("logprobs")
    if isinstance(logprobs, int) and not isinstance(logprobs, bool):
        out["logprobs"] = True
        if logprobs > 0:
            out.setdefault("top_logprobs", logprobs)
    return out


def build_body(body: dict, *, path: str = CHAT_PATH, defaults: dict, model: str | None,
               include_usage: bool) -> dict:
    """Merge the run's defaults under the line's own params and force streaming.

    With `include_usage` every request asks for usage, whatever its line
    says: the token counts of every record depend on it.
    """
    merged = {**defaults_for(path, defaults), **body}
    if "model" not in merged and model:
        merged["model"] = model
    merged["stream"] = True
    if include_usage:
        options = merged.get("stream_options")
        options = dict(options) if isinstance(options, dict) else {}
        options["include_usage"] = True
        merged["stream_options"] = options
    else:
        merged.pop("stream_options", None)
    return merged


@dataclass(slots=True)
class StreamState:
    """What the events of one attempt added up to."""

    text_parts: list[str] = field(default_factory=list)
    reasoning_parts: list[str] = field(default_factory=list)
    tool_calls: list[dict] | None = None  # assembled from delta.tool_calls fragments
    finish_reason: str | None = None
    usage: dict | None = None
    model: str | None = None
    response_id: str | None = None
    done: bool = False  # saw `data: [DONE]`
    events: int = 0
    text_events: int = 0

    @property
    def text(self) -> str:
        return "".join(self.text_parts)

    @property
    def reasoning(self) -> str | None:
        return "".join(self.reasoning_parts) if self.reasoning_parts else None

    @property
    def finished(self) -> bool:
        return self.done or self.finish_reason is not None


def handle_data(state: StreamState, data: str) -> bool:
    """Apply one event's data; return True when it carried generated text.

    Raises StreamErrorEvent on an `{"error": ...}` object.  Only choice 0 is
    assembled (n > 1 is rare in batch work; its other choices are ignored).
    Called once per event: kept lean on purpose.
    """
    state.events += 1
    if data == "[DONE]":
        state.done = True
        return False
    if not data:
        return False
    try:
        chunk = _loads(data)
    except orjson.JSONDecodeError as exc:
        raise StreamErrorEvent(f"malformed event data: {data[:200]!r}") from exc
    if type(chunk) is not dict:
        return False
    get = chunk.get
    if get("error"):
        raise StreamErrorEvent(_error_message(chunk["error"]))
    if state.model is None:
        state.model = get("model")
        state.response_id = get("id")
    usage = get("usage")
    if usage:
        state.usage = usage
    choices = get("choices")
    if not choices:
        return False
    choice = choices[0]
    if choice.get("index", 0):
        return False
    carried = False
    delta = choice.get("delta")
    if delta is not None:
        content = delta.get("content")
        if content:
            state.text_parts.append(content)
            carried = True
        if len(delta) > 1 or not content:  # a content-only delta (the usual) has nothing else
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning and type(reasoning) is str:
                state.reasoning_parts.append(reasoning)
                carried = True
            calls = delta.get("tool_calls")
            if calls and type(calls) is list:
                merge_tool_calls(state, calls)
                carried = True
    else:
        text = choice.get("text")
        if text:
            state.text_parts.append(text)
            carried = True
    finish = choice.get("finish_reason")
    if finish:
        state.finish_reason = finish
    if carried:
        state.text_events += 1
    return carried


_loads = orjson.loads


def merge_tool_calls(state: StreamState, fragments: list) -> None:
    """Join streamed tool-call fragments by their `index`: the id, type and name
    come once, the JSON `arguments` arrive in pieces to be concatenated."""
    calls = state.tool_calls if state.tool_calls is not None else []
    state.tool_calls = calls
    for fragment in fragments:
        if not isinstance(fragment, dict):
            continue
        index = fragment.get("index", len(calls))
        while len(calls) <= index:
            calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        call = calls[index]
        if fragment.get("id"):
            call["id"] = fragment["id"]
        if fragment.get("type"):
            call["type"] = fragment["type"]
        function = fragment.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""


def _error_message(error: Any) -> str:
    if isinstance(error, dict):
        parts = [str(error.get(k)) for k in ("type", "code") if error.get(k)]
        message = str(error.get("message") or "")
        return f"{': '.join(parts)}: {message}" if parts else message
    return str(error)


def _detail_message(detail: Any) -> str:
    """FastAPI's validation error: `{"detail": [{"loc": [...], "msg": ...}, ...]}` or a plain string."""
    if isinstance(detail, list):
        parts = []
        for item in detail[:5]:
            if isinstance(item, dict):
                loc = ".".join(str(x) for x in item.get("loc") or [])
                parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
        return "; ".join(parts)
    return str(detail)


def error_body(raw: bytes, limit: int = 500) -> tuple[str, str | None]:
    """(readable message, error code or None) from an error body.

    OpenAI's `{"error": {"message", "type", "code"}}`, FastAPI's
    `{"detail": ...}`, a bare `{"message": ...}`, or anything else as text.
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:limit].decode("utf-8", "replace").strip(), None
    if isinstance(obj, dict):
        error = obj.get("error")
        if error:
            code = error.get("code") if isinstance(error, dict) else None
            return _error_message(error)[:limit], str(code) if code not in (None, "") else None
        if "detail" in obj:
            return _detail_message(obj["detail"])[:limit], None
        if isinstance(obj.get("message"), str):
            return obj["message"][:limit], None
    return raw[:limit].decode("utf-8", "replace").strip(), None


def error_body_message(raw: bytes, limit: int = 500) -> str:
    """A readable message from a non-200 body (OpenAI `{"error": {...}}` or anything else)."""
    return error_body(raw, limit)[0]


_CONTEXT_MARKERS = ("context_length_exceeded", "maximum context length", "context window", "too many tokens",
                    "exceeds the context")


def is_context_length_error(message: str, code: str | None) -> bool:
    """vLLM, OpenAI, llama.cpp and LiteLLM word it differently; the code, where sent, is OpenAI's."""
    if code == "context_length_exceeded":
        return True
    low = message.lower()
    return any(marker in low for marker in _CONTEXT_MARKERS)
