"""The OpenAI Responses API (`/v1/responses`): request body out, named events in.

The same interface as `protocol` (chat/completions) so the engine picks one
module per endpoint path: `build_body` and `handle_event(state, name, data)`
filling a `StreamState`, typed errors only (`StreamErrorEvent`,
`MalformedResponse`, `ResponseTooLarge`).  Knows JSON and the Responses
event shapes; nothing of sockets, files or timing.

The stream, as the API reference publishes it (each event is named twice: the
SSE `event:` line and the data's `type`; there is no `[DONE]`)::

    response.created / response.in_progress      the response object, no output yet
    response.output_item.added                   a message, reasoning or function_call item
    response.content_part.added
    response.output_text.delta                   answer text            -> text_parts
    response.reasoning_summary_text.delta        reasoning (summary)    -> reasoning_parts
    response.reasoning_text.delta                reasoning (raw)        -> reasoning_parts
    response.function_call_arguments.delta/done  a tool call's JSON arguments
    response.output_text.done / ...part.done / response.output_item.done
    response.completed                           usage; finish "stop" ("tool_calls" with calls); done
    response.incomplete                          finish "length" (max_output_tokens) or the reason; done
    response.failed / error                      StreamErrorEvent (retried)

Time to first answer token: `EventStreamState.first_answer_event` is the
ordinal (`state.events`) of the event that brought the first answer text
(not reasoning, not a tool call): when `handle_event` returns and
`state.first_answer_event == state.events`, that event's arrival time is the
first answer token's.  For any state, the same moment is the event after
which `state.text_parts` first became non-empty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from .errors import MalformedResponse, ResponseTooLarge, StreamErrorEvent
from .params import RESPONSES, RefusedParameter, responses_input, translate
from .paths import RESPONSES_PATH, InvalidRequestLine
from .protocol import MAX_TOOL_CALLS, StreamState, checked_usage

__all__ = ["PATH", "paths", "EventStreamState", "apply_whole", "build_body", "error_text", "handle_event",
           "normalise_usage"]

PATH = RESPONSES_PATH
paths = (PATH,)


@dataclass(slots=True)
class EventStreamState(StreamState):
    """A `StreamState` for the APIs whose events are named (Responses, Anthropic Messages).

    `first_answer_event`: the `events` ordinal of the first event that carried
    answer text (None until one did), for the time to first answer token.
    `open_calls`: the wire's handle of each tool call being streamed (a
    Responses item id or output index, an Anthropic content-block index) to
    its index in `tool_calls`.
    """

    first_answer_event: int | None = None
    open_calls: dict[Any, int] = field(default_factory=dict)

    def open_call(self, handle: Any) -> dict[str, Any] | None:
        """The tool call opened under `handle` (an item id, an output or block index), None when none was."""
        found = self.open_calls.get(handle)
        return None if found is None or self.tool_calls is None else self.tool_calls[found]


# --------------------------------------------------------------------------
# Request bodies

def build_body(body: dict[str, Any], *, defaults: dict[str, Any], model: str | None, include_usage: bool,
               path: str = PATH, on_drop: Callable[[str, str], None] | None = None) -> dict[str, Any]:
    """The run's defaults under the line's own params, each as the Responses API takes them; streaming forced.

    Chat parameters are translated by `params` (`max_tokens` becomes
    `max_output_tokens`, ...): a refused one raises InvalidRequestLine, a
    dropped one is told to `on_drop(key, why)`.  `include_usage` needs
    nothing here: `response.completed` always carries the usage (and the API
    refuses `stream_options.include_usage`).  `path` is accepted for the same
    call as `protocol.build_body`.
    """
    try:
        merged = {**translate(RESPONSES, defaults, line=False, on_drop=on_drop),
                  **translate(RESPONSES, body, line=True, on_drop=on_drop)}
    except RefusedParameter as exc:
        raise InvalidRequestLine(str(exc)) from None
    if isinstance(merged.get("input"), list):
        merged["input"] = responses_input(merged["input"])
    if "model" not in merged and model:
        merged["model"] = model
    merged["stream"] = True
    return merged


# --------------------------------------------------------------------------
# Events


def handle_event(state: EventStreamState, event: str, data: str) -> bool:
    """Apply one event; return True when it carried generated output (TTFT and ITL count these).

    `event` is the SSE event name; where a server sent none (`message`), the
    data's `type` names it.  Raises StreamErrorEvent for `error` and
    `response.failed`, MalformedResponse for data of the wrong shape.
    """
    if type(state) is StreamState:
        raise TypeError("the Responses protocol needs an EventStreamState")
    state.events += 1
    if not data:
        if event == "error":
            raise StreamErrorEvent("error event")
        return False
    if data == "[DONE]":  # not the Responses API's, but some servers add it
        state.done = True
        return False
    event, obj = decode_named(event, data)
    return apply_guarded(_apply, state, event, obj, data)


_loads = orjson.loads


def decode_named(event: str, data: str) -> tuple[str, dict[str, Any]]:
    """A named event's JSON object and its name (from `type` when the server sent no `event:` line).

    Shared by the APIs whose streams name their events (Responses, Anthropic).
    """
    try:
        obj = _loads(data)
    except orjson.JSONDecodeError as exc:
        if event == "error":
            raise StreamErrorEvent(data[:500]) from None
        raise MalformedResponse(f"malformed event data: {data[:200]!r}") from exc
    if type(obj) is not dict:
        if event == "error":
            raise StreamErrorEvent(data[:500])
        raise MalformedResponse(f"an event that is not a JSON object: {data[:200]!r}")
    if not event or event == "message":
        kind = obj.get("type")
        event = kind if type(kind) is str else ""
    return event, obj


def take_identity(state: EventStreamState, obj: dict[str, Any]) -> None:
    """The response's (or message's) id and model, where they are text."""
    rid, model = obj.get("id"), obj.get("model")
    if type(rid) is str:
        state.response_id = rid
    if type(model) is str:
        state.model = model


def append_reasoning(state: EventStreamState, text: str | None) -> bool:
    """A reasoning delta: kept apart from the answer, and output for TTFT/ITL all the same."""
    if not text:
        return False
    state.reasoning_parts.append(text)
    state.text_events += 1
    return True


def apply_guarded(apply: Callable[[Any, str, dict[str, Any]], bool], state: Any, event: str, obj: dict[str, Any],
                  data: str) -> bool:
    """Apply an event; a shape that no check foresaw is a MalformedResponse, never a crash."""
    try:
        return apply(state, event, obj)
    except (AttributeError, TypeError, KeyError, IndexError, RecursionError) as exc:
        raise MalformedResponse(f"a {event or 'unnamed'} event of the wrong shape ({type(exc).__name__}): "
                                f"{data[:200]!r}") from None


def error_text(error: Any) -> str:
    """"type: code: message" of an error object, from its text fields only (a server's
    error may hold anything; only strings are shown); a string as it is; else ""."""
    if type(error) is str:
        return error
    if type(error) is not dict:
        return ""
    get = error.get
    parts = [v for v in (get("type"), get("code")) if type(v) is str and v and v != "error"]
    message = get("message")
    message = message if type(message) is str else ""
    return ": ".join([*parts, message]) if parts and message else ": ".join(parts) or message


def _apply(state: EventStreamState, event: str, obj: dict[str, Any]) -> bool:
    if event == "response.output_text.delta":
        return _text(state, obj, refusal=False)
    if event in ("response.reasoning_summary_text.delta", "response.reasoning_text.delta"):
        return append_reasoning(state, _str(obj, "delta"))
    if event == "response.function_call_arguments.delta":
        delta = _str(obj, "delta")
        if not delta:
            return False
        _call_for(state, obj)["function"]["arguments"] += delta
        state.text_events += 1
        return True
    if event == "error" or obj.get("error") and event not in _LIFECYCLE:
        raise StreamErrorEvent(error_text(obj.get("error") or obj) or "error event")
    if event in _LIFECYCLE:
        return _lifecycle(state, event, obj)
    if event == "response.output_item.added":
        return _item(state, obj, added=True)
    if event == "response.output_item.done":
        return _item(state, obj, added=False)
    if event == "response.function_call_arguments.done":
        arguments = _str(obj, "arguments")
        if arguments is not None:
            _call_for(state, obj)["function"]["arguments"] = arguments
        return False
    if event == "response.refusal.delta":
        return _text(state, obj, refusal=True)
    return False  # content_part.*, output_text.done, annotations, built-in tools' progress, ...


_LIFECYCLE = frozenset({"response.created", "response.queued", "response.in_progress", "response.completed",
                        "response.incomplete", "response.failed"})


def _text(state: EventStreamState, obj: dict[str, Any], refusal: bool) -> bool:
    delta = _str(obj, "delta")
    if not delta:
        return False
    if state.first_answer_event is None:
        state.first_answer_event = state.events
    state.text_parts.append(delta)
    state.text_events += 1
    if not refusal:
        logprobs = obj.get("logprobs")
        if logprobs and state.keep_logprobs:
            if type(logprobs) is not list:
                raise MalformedResponse(f"'logprobs' is a {type(logprobs).__name__}, not a list")
            if not isinstance(state.logprobs, list):  # None until the first (a dict is completions', not here)
                state.logprobs = []
            state.logprobs.extend(logprobs)
    return True


def _str(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is not None and type(value) is not str:
        raise MalformedResponse(f"'{key}' is a {type(value).__name__}, not text")
    return value


def _lifecycle(state: EventStreamState, event: str, obj: dict[str, Any]) -> bool:
    response = obj.get("response")
    if response is None:
        response = {}
    elif type(response) is not dict:
        raise MalformedResponse(f"'response' is a {type(response).__name__}, not an object")
    take_identity(state, response)
    usage = response.get("usage")
    if usage:
        state.usage = normalise_usage(usage)
    if event == "response.failed":
        error = response.get("error")
        raise StreamErrorEvent(error_text(error) or "response.failed")
    if event == "response.completed":
        state.finish_reason = "tool_calls" if state.tool_calls else "stop"
        state.done = True
    elif event == "response.incomplete":
        details = response.get("incomplete_details")
        if details is not None and type(details) is not dict:
            raise MalformedResponse(f"'incomplete_details' is a {type(details).__name__}, not an object")
        reason = details.get("reason") if details else None
        if reason is not None and type(reason) is not str:
            raise MalformedResponse(f"'incomplete_details.reason' is a {type(reason).__name__}, not text")
        state.finish_reason = "length" if reason == "max_output_tokens" else reason or "incomplete"
        state.done = True
    return False


def _item(state: EventStreamState, obj: dict[str, Any], added: bool) -> bool:
    """A function_call item opens a tool call (added) or settles it (done); other items carry no output here."""
    item = obj.get("item")
    if type(item) is not dict:
        raise MalformedResponse(f"'item' is a {type(item).__name__}, not an object")
    if item.get("type") != "function_call":
        return False
    call_id, name, arguments = _str(item, "call_id"), _str(item, "name"), _str(item, "arguments")
    call = _call_for(state, obj, item, create=added)
    if call_id or not call["id"]:
        call["id"] = call_id or _str(item, "id")
    if name:
        call["function"]["name"] = name
    if arguments:
        call["function"]["arguments"] = arguments
    if added and name:
        state.text_events += 1
        return True
    return False


def _call_for(state: EventStreamState, obj: dict[str, Any], item: dict[str, Any] | None = None,
              create: bool = False) -> dict[str, Any]:
    """The tool call an event is about: by item id, else by output index; a new one when none is open."""
    item_id = item.get("id") if item is not None else obj.get("item_id")
    index = obj.get("output_index")
    handles = [h for h in (item_id, index) if type(h) in (str, int)]
    if not create:
        for handle in handles:
            call = state.open_call(handle)
            if call is not None:
                return call
    calls = state.tool_calls if state.tool_calls is not None else []
    state.tool_calls = calls
    if len(calls) >= MAX_TOOL_CALLS:
        raise ResponseTooLarge(f"more than {MAX_TOOL_CALLS} tool calls")
    calls.append({"id": None, "type": "function", "function": {"name": "", "arguments": ""}})
    for handle in handles:
        state.open_calls[handle] = len(calls) - 1
    return calls[-1]


def apply_whole(state: EventStreamState, obj: dict[str, Any]) -> None:
    """A whole Response object (a server that ignored `"stream": true`): what its events would have given.

    Its `output` items in order: message text (`output_text`, a `refusal`)
    is the answer, reasoning items' summary and text the reasoning,
    `function_call` items the tool calls; `status` ends it as
    `response.completed` / `incomplete` / `failed` would.  Shapes are checked
    as the events' are (MalformedResponse, never a crash).
    """
    if obj.get("object") != "response" and "output" not in obj:
        raise MalformedResponse(f"a JSON answer that is not a Response object (object={obj.get('object')!r})")
    apply_guarded(_whole, state, "response", obj, orjson.dumps(obj).decode()[:200])


def _whole(state: EventStreamState, _event: str, obj: dict[str, Any]) -> bool:
    output = obj.get("output")
    if output is None:
        output = []
    if type(output) is not list:
        raise MalformedResponse(f"'output' is a {type(output).__name__}, not a list")
    for item in output:
        if type(item) is not dict:
            raise MalformedResponse(f"an output item is a {type(item).__name__}, not an object")
        kind = item.get("type")
        if kind == "message":
            for part in _list(item, "content"):
                if type(part) is dict and part.get("type") in ("output_text", "refusal"):
                    refusal = part["type"] == "refusal"
                    _text(state, {"delta": part.get("refusal" if refusal else "text"),
                                  "logprobs": part.get("logprobs")}, refusal=refusal)
        elif kind == "reasoning":
            for part in _list(item, "summary") + _list(item, "content"):
                if type(part) is dict:
                    append_reasoning(state, _str(part, "text"))
        elif kind == "function_call":
            _item(state, {"item": item}, added=True)
    status = obj.get("status")
    ends: dict[Any, str] = {"incomplete": "response.incomplete", "failed": "response.failed"}  # a status of any JSON
    event = ends.get(status, "response.completed")
    _lifecycle(state, event, {"response": obj})
    return False


def _list(obj: dict[str, Any], key: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if type(value) is not list:
        raise MalformedResponse(f"'{key}' is a {type(value).__name__}, not a list")
    return value


def normalise_usage(usage: Any) -> dict[str, Any]:
    """The Responses usage with OpenAI chat's keys added beside its own.

    `input_tokens`/`output_tokens`/`total_tokens` stay as sent; added are
    `prompt_tokens`, `completion_tokens` and the details under chat's names
    (`prompt_tokens_details.cached_tokens`,
    `completion_tokens_details.reasoning_tokens`).
    """
    usage = checked_usage(usage)
    out = dict(usage)
    prompt, completion = usage.get("input_tokens"), usage.get("output_tokens")
    if prompt is not None:
        out["prompt_tokens"] = prompt
    if completion is not None:
        out["completion_tokens"] = completion
    if usage.get("total_tokens") is None and prompt is not None and completion is not None:
        out["total_tokens"] = prompt + completion
    for theirs, ours in (("input_tokens_details", "prompt_tokens_details"),
                         ("output_tokens_details", "completion_tokens_details")):
        details = usage.get(theirs)
        if type(details) is dict and ours not in out:
            out[ours] = details
    return out
