"""The OpenAI wire protocol: checked line bodies to request bodies, SSE events to text.

(The lines themselves are read and checked in `lines`; its names are re-exported here.)

Knows JSON and the OpenAI chat/completions shapes; knows nothing of sockets,
files or timing (the client stamps times, this module only says which events
carried text).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from json import loads as _json_loads
from typing import Any

import orjson

from .errors import IncompleteStream, MalformedResponse, ResponseTooLarge, StreamErrorEvent
from .paths import CHAT_PATH, COMPLETIONS_PATH

# Run-wide defaults (`--param`, a job's [params]) meet both endpoints in one run;
# these keys exist on one of them only, and the API refuses them on the other.
CHAT_ONLY = frozenset({"messages", "response_format", "tools", "tool_choice", "parallel_tool_calls",
                       "max_completion_tokens", "top_logprobs", "reasoning_effort", "modalities", "audio",
                       "prediction", "store", "metadata", "web_search_options", "verbosity"})
COMPLETIONS_ONLY = frozenset({"prompt", "suffix", "echo", "best_of"})


def defaults_for(path: str, defaults: dict[str, Any]) -> dict[str, Any]:
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


def build_body(body: dict[str, Any], *, path: str = CHAT_PATH, defaults: dict[str, Any], model: str | None,
               include_usage: bool, on_drop: Any = None) -> dict[str, Any]:
    """Merge the run's defaults under the line's own params and force streaming.

    With `include_usage` every request asks for usage, whatever its line
    says: the token counts of every record depend on it.  `on_drop` is
    accepted for the same call as the other APIs' (a chat line is sent as
    it is: nothing is dropped).
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


def apply_whole(state: StreamState, obj: dict[str, Any]) -> None:
    """A whole chat.completion / text_completion (a server that ignored `"stream": true`): choice 0's
    text, reasoning and tool calls, the finish_reason, usage and identity, as its stream would give them."""
    choices = obj.get("choices")
    choice = choices[0] if isinstance(choices, list) and choices else {}
    message = choice.get("message") if isinstance(choice, dict) else None
    if not isinstance(choice, dict) or not isinstance(message, (dict, type(None))):
        raise IncompleteStream(f"the JSON response's choices have the wrong shape: {str(obj)[:200]!r}")
    message = message or {}
    text = message.get("content") if message else choice.get("text")
    state.model = obj.get("model") if isinstance(obj.get("model"), str) else None
    state.response_id = obj.get("id") if isinstance(obj.get("id"), str) else None
    state.usage = obj.get("usage") if isinstance(obj.get("usage"), dict) else None
    finish = choice.get("finish_reason")
    state.finish_reason = finish if isinstance(finish, str) else None
    if isinstance(text, str) and text:
        state.text_parts.append(text)
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        state.reasoning_parts.append(reasoning)
    if isinstance(message.get("tool_calls"), list) and message["tool_calls"]:
        state.tool_calls = message["tool_calls"]


def _joined_text(state: StreamState | ChoiceState) -> str:
    return "".join(state.text_parts)


def _joined_reasoning(state: StreamState | ChoiceState) -> str | None:
    return "".join(state.reasoning_parts) if state.reasoning_parts else None


@dataclass(slots=True)
class ChoiceState:
    """One choice of an `n > 1` reply other than the first, assembled from its interleaved deltas.

    Same attribute names as StreamState's choice-0 fields, so one function
    applies a delta to either.
    """

    index: int
    text_parts: list[str] = field(default_factory=list)
    reasoning_parts: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    logprobs: list[Any] | dict[str, Any] | None = None

    text = property(_joined_text)
    reasoning = property(_joined_reasoning)


@dataclass(slots=True)
class StreamState:
    """What the events of one attempt added up to.

    Choice 0 lives in the fields themselves (the hot path: nearly every
    reply has one choice); further choices of an `n > 1` request in
    `others`, by index.  `logprobs` is a list of chat entries
    (`{token, logprob, bytes, top_logprobs}`) or, for completions, a dict of
    the concatenated `tokens`/`token_logprobs`/`top_logprobs`/`text_offset`.
    """

    text_parts: list[str] = field(default_factory=list)
    reasoning_parts: list[str] = field(default_factory=list)
    tool_calls: list[dict[str, Any]] | None = None  # assembled from delta.tool_calls fragments
    finish_reason: str | None = None
    logprobs: list[Any] | dict[str, Any] | None = None
    usage: dict[str, Any] | None = None
    model: str | None = None
    response_id: str | None = None
    done: bool = False  # saw `data: [DONE]`
    events: int = 0
    text_events: int = 0  # events that carried output of any choice (TTFT and ITL count these)
    others: dict[int, ChoiceState] | None = None
    keep_logprobs: bool = True  # False: --drop-logprobs, for runs that ask for them only to load the server

    text = property(_joined_text)
    reasoning = property(_joined_reasoning)

    @property
    def finished(self) -> bool:
        return self.done or self.finish_reason is not None

    def choice(self, index: int) -> ChoiceState:
        if self.others is None:
            self.others = {}
        found = self.others.get(index)
        if found is None:
            if index >= MAX_CHOICES:
                raise ResponseTooLarge(f"choice index {index} is over the bound of {MAX_CHOICES} choices")
            found = self.others[index] = ChoiceState(index)
        return found


def handle_data(state: StreamState, data: str) -> bool:
    """Apply one event's data; return True when it carried generated text.

    Raises StreamErrorEvent on an `{"error": ...}` object and
    MalformedResponse on a chunk of the wrong shape (a list where an object
    belongs, a number where text belongs): a hostile or broken server costs
    one error record, never the run.  Only choice 0 is assembled.  Called
    once per event: the usual chunk takes the fast path, and the type checks
    sit where a wrong type could otherwise slip into the record.
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
        chunk = _out_of_range(data)
        if chunk is None:
            raise MalformedResponse(f"malformed event data: {data[:200]!r}") from exc
    if type(chunk) is not dict:
        raise MalformedResponse(f"an event that is not a JSON object: {data[:200]!r}")
    try:
        return _apply_chunk(state, chunk)
    except (AttributeError, TypeError, KeyError, IndexError, RecursionError) as exc:  # a shape no check foresaw
        raise MalformedResponse(f"a chunk of the wrong shape ({type(exc).__name__}): {data[:200]!r}") from None


def _apply_chunk(state: StreamState, chunk: dict[str, Any]) -> bool:
    get = chunk.get
    if get("error"):
        raise StreamErrorEvent(_error_message(chunk["error"]))
    if state.model is None:
        model, rid = get("model"), get("id")
        state.model = model if type(model) is str else None
        state.response_id = rid if type(rid) is str else None
    usage = get("usage")
    if usage:
        state.usage = checked_usage(usage)
    choices = get("choices")
    if not choices:
        return False
    if type(choices) is not list:
        raise MalformedResponse(f"'choices' is a {type(choices).__name__}, not a list")
    carried = False
    for choice in choices:  # one per chunk as a rule; vLLM interleaves the choices of n > 1
        if type(choice) is not dict:
            raise MalformedResponse(f"a choice is a {type(choice).__name__}, not an object")
        index = choice.get("index", 0)
        target: StreamState | ChoiceState
        if index == 0:
            target = state
        elif type(index) is int and index > 0:
            target = state.choice(index)
        else:
            raise MalformedResponse(f"choice index {index!r} is not an integer >= 0")
        if _apply_choice(target, choice, state.keep_logprobs):
            carried = True
    if carried:
        state.text_events += 1
    return carried


def _apply_choice(state: Any, choice: dict[str, Any], keep_logprobs: bool) -> bool:
    """One choice's delta (chat) or text (completions) onto its state; True when it carried output."""
    carried = False
    delta = choice.get("delta")
    if delta is not None:
        if type(delta) is not dict:
            raise MalformedResponse(f"'delta' is a {type(delta).__name__}, not an object")
        content = delta.get("content")
        if content:
            if type(content) is not str:
                raise MalformedResponse(f"'content' is a {type(content).__name__}, not text")
            state.text_parts.append(content)
            carried = True
        if len(delta) > 1 or not content:  # a content-only delta (the usual) has nothing else
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning and type(reasoning) is str:
                state.reasoning_parts.append(reasoning)
                carried = True
            calls = delta.get("tool_calls")
            if calls:
                if type(calls) is not list:
                    raise MalformedResponse(f"'tool_calls' is a {type(calls).__name__}, not a list")
                merge_tool_calls(state, calls)
                carried = True
    else:
        text = choice.get("text")
        if text:
            if type(text) is not str:
                raise MalformedResponse(f"'text' is a {type(text).__name__}, not text")
            state.text_parts.append(text)
            carried = True
    finish = choice.get("finish_reason")
    if finish:
        if type(finish) is not str:
            raise MalformedResponse(f"'finish_reason' is a {type(finish).__name__}, not text")
        state.finish_reason = finish
    logprobs = choice.get("logprobs")
    if logprobs and keep_logprobs:
        _merge_logprobs(state, logprobs)
    return carried


_COMPLETION_LOGPROB_LISTS = ("tokens", "token_logprobs", "top_logprobs", "text_offset")


def _merge_logprobs(state: Any, logprobs: Any) -> None:
    """Concatenate a chunk's logprobs in order: chat `content` entries, or completions' parallel lists."""
    if type(logprobs) is not dict:
        raise MalformedResponse(f"'logprobs' is a {type(logprobs).__name__}, not an object")
    content = logprobs.get("content")
    if content is not None:
        if type(content) is not list:
            raise MalformedResponse("'logprobs.content' is not a list")
        if state.logprobs is None:
            state.logprobs = []
        state.logprobs.extend(content)
        return
    if any(k in logprobs for k in _COMPLETION_LOGPROB_LISTS):
        if state.logprobs is None:
            state.logprobs = {k: [] for k in _COMPLETION_LOGPROB_LISTS}
        for key in _COMPLETION_LOGPROB_LISTS:
            values = logprobs.get(key)
            if values is not None:
                if type(values) is not list:
                    raise MalformedResponse(f"'logprobs.{key}' is not a list")
                state.logprobs[key].extend(values)


_loads = orjson.loads


def _orjson_int(text: str) -> int | float:
    """An integer as orjson reads it: an int within 64 bits, a float beyond (float() has no digit limit)."""
    value = int(text) if len(text) <= 20 else None
    return value if value is not None and -2**63 <= value < 2**64 else float(text)


def _out_of_range(data: str) -> Any:
    """JSON that orjson refuses for nothing but a number beyond a double's range (1e999),
    read as `json` reads it (inf), else None.  The hot path (`plain`, msgspec) skips the
    fields it does not read without converting their numbers, so it takes such a chunk;
    this path must take it too, or an event's fate would depend on how the bytes were
    grouped into reads.  The rare path: only after orjson refused."""
    try:
        value = _json_loads(data, parse_int=_orjson_int, parse_constant=int)  # int("NaN"): ValueError, refused
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError
        return None
    todo = [value]
    while todo:  # a lone surrogate, which orjson refuses and json does not (no recursion: any depth)
        item = todo.pop()
        if type(item) is dict:
            todo.extend(item)
            todo.extend(item.values())
        elif type(item) is list:
            todo.extend(item)
        elif type(item) is str and not item.isascii():
            try:
                item.encode()
            except UnicodeEncodeError:
                return None
    return value


MAX_TOKEN_COUNT = 2**53  # a count beyond this is no count (and no 64-bit JSON integer)
MAX_TOOL_CALLS = 128
MAX_CHOICES = 128


def checked_usage(usage: Any) -> dict[str, Any]:
    """`usage` as the API defines it: an object whose counts are integers in range."""
    if type(usage) is not dict:
        raise MalformedResponse(f"'usage' is a {type(usage).__name__}, not an object")
    for key, value in usage.items():
        if key.endswith("_tokens") and value is not None and (
                type(value) is not int or not 0 <= value <= MAX_TOKEN_COUNT):
            raise MalformedResponse(f"usage.{key} is {value!r}, not a token count")
    return usage


def merge_tool_calls(state: StreamState, fragments: list[Any]) -> None:
    """Join streamed tool-call fragments by their `index`: the id, type and name
    come once, the JSON `arguments` arrive in pieces to be concatenated."""
    calls = state.tool_calls if state.tool_calls is not None else []
    state.tool_calls = calls
    for fragment in fragments:
        if type(fragment) is not dict:
            raise MalformedResponse(f"a tool-call fragment is a {type(fragment).__name__}, not an object")
        index = fragment.get("index", len(calls))
        if type(index) is not int or index < 0:
            raise MalformedResponse(f"tool-call index {index!r} is not an integer >= 0")
        if index >= MAX_TOOL_CALLS:
            raise ResponseTooLarge(f"tool-call index {index} is over the bound of {MAX_TOOL_CALLS} calls")
        while len(calls) <= index:
            calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
        call = calls[index]
        function = fragment.get("function") or {}
        if type(function) is not dict:
            raise MalformedResponse(f"a tool call's 'function' is a {type(function).__name__}, not an object")
        for key, value in (("id", fragment.get("id")), ("type", fragment.get("type")),
                           ("name", function.get("name")), ("arguments", function.get("arguments"))):
            if value is not None and type(value) is not str:
                raise MalformedResponse(f"tool call {key!r} is a {type(value).__name__}, not text")
        if fragment.get("id"):
            call["id"] = fragment["id"]
        if fragment.get("type"):
            call["type"] = fragment["type"]
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
