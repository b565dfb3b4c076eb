"""Anthropic's Messages API (`/v1/messages`): request body out, named events in.

The same interface as `protocol` (chat/completions) so the engine picks one
module per endpoint path: `build_body` and `handle_event(state, name, data)`
filling a `StreamState` (an `EventStreamState`, for the open tool calls and
the first answer token), typed errors only.  Knows JSON and the Messages
event shapes; nothing of sockets, files, headers or timing (the client sends
`x-api-key` and `anthropic-version: DEFAULT_VERSION`).

The stream, as the API reference publishes it::

    message_start          message.id, model, usage.input_tokens (and cache counts)
    content_block_start    index, content_block: text / thinking / tool_use {id, name}
    ping                   ignored
    content_block_delta    text_delta -> text_parts, thinking_delta -> reasoning_parts,
                           input_json_delta -> the tool_use block's arguments (by index)
    content_block_stop
    message_delta          delta.stop_reason -> finish_reason, usage.output_tokens (cumulative)
    message_stop           done
    error                  StreamErrorEvent (retried; `overloaded_error` is Anthropic's 529)

Usage is normalised to OpenAI's keys beside Anthropic's own:
`prompt_tokens` = input_tokens + cache_creation_input_tokens +
cache_read_input_tokens (Anthropic's `input_tokens` counts the uncached part
only, OpenAI's `prompt_tokens` all of it), `completion_tokens` =
output_tokens once `message_delta` has given the final count,
`prompt_tokens_details.cached_tokens` = cache_read_input_tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson

from .errors import MalformedResponse, ResponseTooLarge, StreamErrorEvent
from .params import ANTHROPIC, RefusedParameter, translate
from .paths import MESSAGES_PATH, InvalidRequestLine
from .protocol import MAX_TOOL_CALLS, StreamState, checked_usage
from .protocol_responses import (
    EventStreamState,
    append_reasoning,
    apply_guarded,
    decode_named,
    error_text,
    take_identity,
)

__all__ = ["PATH", "paths", "DEFAULT_VERSION", "EventStreamState", "STOP_REASONS", "apply_whole", "build_body",
           "handle_event", "normalise_usage"]

PATH = MESSAGES_PATH
paths = (PATH,)
DEFAULT_VERSION = "2023-06-01"  # the `anthropic-version` header

#: Anthropic's stop_reason as OpenAI's finish_reason; others pass as they are.
STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


# --------------------------------------------------------------------------
# Request bodies

def build_body(body: dict[str, Any], *, defaults: dict[str, Any], model: str | None, include_usage: bool,
               path: str = PATH, on_drop: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """The run's defaults under the line's own params, each as the Messages API takes them; streaming forced.

    Chat parameters are translated by `params` (system messages to
    `system`, `stop` to `stop_sequences`, chat tools to Anthropic's, ...): a
    refused one raises InvalidRequestLine, a dropped one is told to
    `on_drop(key, why)`.  `max_tokens` is required by the API: from the
    line, else the run's defaults, else InvalidRequestLine.
    `include_usage` needs nothing here (every stream reports its usage).
    `path` is accepted for the same call as `protocol.build_body`.
    """
    try:
        merged = {**translate(ANTHROPIC, defaults, line=False, on_drop=on_drop),
                  **translate(ANTHROPIC, body, line=True, on_drop=on_drop)}
    except RefusedParameter as exc:
        raise InvalidRequestLine(str(exc)) from None
    if "model" not in merged and model:
        merged["model"] = model
    if merged.get("messages") == []:
        raise InvalidRequestLine("no message but the system prompt: Anthropic's /v1/messages needs a user message")
    max_tokens = merged.get("max_tokens")
    if max_tokens is None:
        raise InvalidRequestLine(
            "Anthropic's /v1/messages requires 'max_tokens': give it on the line or as a run default "
            "(--param max_tokens=1024)")
    if type(max_tokens) is not int or max_tokens < 1:
        raise InvalidRequestLine(f"'max_tokens' must be an integer >= 1, not {max_tokens!r}")
    merged["stream"] = True
    return merged


# --------------------------------------------------------------------------
# Events


def handle_event(state: EventStreamState, event: str, data: str) -> bool:
    """Apply one event; return True when it carried generated output (TTFT and ITL count these).

    `event` is the SSE event name; where a server sent none (`message`), the
    data's `type` names it.  Raises StreamErrorEvent for `error` events,
    MalformedResponse for data of the wrong shape.
    """
    if type(state) is StreamState:
        raise TypeError("the Anthropic protocol needs an EventStreamState")
    state.events += 1
    if event == "ping" or not data:
        if event == "error":
            raise StreamErrorEvent("error event")
        return False
    event, obj = decode_named(event, data)
    return apply_guarded(_apply, state, event, obj, data)


def _apply(state: EventStreamState, event: str, obj: dict[str, Any]) -> bool:
    if event == "content_block_delta":
        return _delta(state, obj)
    if event == "error" or obj.get("error"):
        raise StreamErrorEvent(error_text(obj.get("error") or obj) or "error event")
    if event == "content_block_start":
        return _block_start(state, obj)
    if event == "message_start":
        message = _object(obj, "message")
        take_identity(state, message)
        usage = message.get("usage")
        if usage:
            state.usage = normalise_usage(checked_usage(usage), final=False)
        return False
    if event == "message_delta":
        delta = _object(obj, "delta")
        _take_stop_reason(state, delta)
        usage = obj.get("usage")
        if usage:
            usage = checked_usage(usage)
            sent = {k: v for k, v in (state.usage or {}).items() if k not in _OURS}
            sent.update((k, v) for k, v in usage.items() if v is not None)
            state.usage = normalise_usage(sent, final=True)
        return False
    if event == "message_stop":
        state.done = True
    return False  # content_block_stop, unknown events


def _object(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if type(value) is not dict:
        raise MalformedResponse(f"'{key}' is a {type(value).__name__}, not an object")
    return value


def _index(obj: dict[str, Any]) -> int:
    index = obj.get("index")
    if type(index) is not int or index < 0:
        raise MalformedResponse(f"content block index {index!r} is not an integer >= 0")
    return index


def _delta(state: EventStreamState, obj: dict[str, Any]) -> bool:
    delta = _object(obj, "delta")
    kind = delta.get("type")
    if kind == "text_delta":
        return _append_text(state, _text(delta, "text"))
    if kind == "thinking_delta":
        return append_reasoning(state, _text(delta, "thinking"))
    if kind == "input_json_delta":
        partial = _text(delta, "partial_json")
        if not partial:
            return False
        call = state.open_call(_index(obj))
        if call is not None:  # else a server tool's input (web search, ...): output, not a tool call of ours
            call["function"]["arguments"] += partial
        state.text_events += 1
        return True
    return False  # signature_delta, citations_delta


def _text(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is not None and type(value) is not str:
        raise MalformedResponse(f"'{key}' is a {type(value).__name__}, not text")
    return value


def _append_text(state: EventStreamState, text: str | None) -> bool:
    if not text:
        return False
    if state.first_answer_event is None:
        state.first_answer_event = state.events
    state.text_parts.append(text)
    state.text_events += 1
    return True


def _block_start(state: EventStreamState, obj: dict[str, Any]) -> bool:
    """A block opens: tool_use starts a tool call; text or thinking may already carry text."""
    index = _index(obj)
    block = _object(obj, "content_block")
    kind = block.get("type")
    if kind == "text":
        return _append_text(state, _text(block, "text"))
    if kind == "thinking":
        thinking = _text(block, "thinking")
        if thinking:
            state.reasoning_parts.append(thinking)
            state.text_events += 1
            return True
        return False
    if kind != "tool_use":
        return False
    tool_id, name = _text(block, "id"), _text(block, "name")
    calls = state.tool_calls if state.tool_calls is not None else []
    state.tool_calls = calls
    if len(calls) >= MAX_TOOL_CALLS:
        raise ResponseTooLarge(f"more than {MAX_TOOL_CALLS} tool calls")
    given = block.get("input")
    arguments = orjson.dumps(given).decode() if given else ""  # streamed input starts as {} and comes in deltas
    calls.append({"id": tool_id, "type": "function", "function": {"name": name or "", "arguments": arguments}})
    state.open_calls[index] = len(calls) - 1
    state.text_events += 1
    return True


def apply_whole(state: EventStreamState, obj: dict[str, Any]) -> None:
    """A whole Message object (a server that ignored `"stream": true`): what its events would have given.

    Its content blocks in order (text, thinking, tool_use with its whole
    `input`), `stop_reason` mapped as `message_delta`'s, the final usage
    normalised.  Shapes are checked as the events' are (MalformedResponse,
    never a crash).
    """
    if obj.get("type") != "message":
        raise MalformedResponse(f"a JSON answer that is not a Message object (type={obj.get('type')!r})")
    apply_guarded(_whole, state, "message", obj, orjson.dumps(obj).decode()[:200])


def _whole(state: EventStreamState, _event: str, obj: dict[str, Any]) -> bool:
    take_identity(state, obj)
    content = obj.get("content")
    if content is None:
        content = []
    if type(content) is not list:
        raise MalformedResponse(f"'content' is a {type(content).__name__}, not a list")
    for index, block in enumerate(content):
        if type(block) is not dict:
            raise MalformedResponse(f"a content block is a {type(block).__name__}, not an object")
        _block_start(state, {"index": index, "content_block": block})
        call = state.open_call(index) if block.get("type") == "tool_use" else None
        if call is not None and not call["function"]["arguments"]:
            call["function"]["arguments"] = orjson.dumps(block.get("input") or {}).decode()
    _take_stop_reason(state, obj)
    usage = obj.get("usage")
    if usage:
        state.usage = normalise_usage(checked_usage(usage), final=True)
    state.done = True
    return False


def _take_stop_reason(state: EventStreamState, holder: dict[str, Any]) -> None:
    """A stop_reason (a message_delta's delta, or a whole Message's) as the finish_reason chat completions
    would give (end_turn -> stop, ...); a server's own reason is kept as it is."""
    reason = holder.get("stop_reason")
    if reason is not None:
        if type(reason) is not str:
            raise MalformedResponse(f"'stop_reason' is a {type(reason).__name__}, not text")
        state.finish_reason = STOP_REASONS.get(reason, reason)


_OURS = frozenset({"prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details"})


def normalise_usage(usage: dict[str, Any], final: bool = True) -> dict[str, Any]:
    """Anthropic's usage with OpenAI chat's keys added beside its own (see the module's docstring).

    Before the final count (`final=False`: `message_start`'s usage, whose
    `output_tokens` is a placeholder) only the prompt side is added.
    """
    out = dict(usage)
    counts = [usage.get(k) for k in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")]
    if counts[0] is not None:
        out["prompt_tokens"] = sum(c for c in counts if c is not None)
    cached = usage.get("cache_read_input_tokens")
    if cached is not None:
        out["prompt_tokens_details"] = {"cached_tokens": cached}
    output = usage.get("output_tokens")
    if final and output is not None:
        out["completion_tokens"] = output
        if counts[0] is not None:
            out["total_tokens"] = out["prompt_tokens"] + output
    return out
