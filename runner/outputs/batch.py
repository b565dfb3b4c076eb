"""The OpenAI Batch API output format: its encoder and decoder, and ``streamrun convert``.

A Batch output line is ``{"id", "custom_id", "response", "error"}`` where
``response.body`` is the assembled non-streamed response. Tools written for
the Batch API can then read streamrun results, and Batch outputs can be fed
to our report. What the Batch format has no place for (metrics, attempts,
source, ...) travels in a side field ``"streamrun"``, which Batch readers
ignore, so that a round trip loses nothing: ``decode_batch(encode_batch(r))
== r`` for every :class:`~runner.record.Record`.

The Batch ids (``batch_req_...``, ``request_id``, the body's id) are hashes
of the record's resume key (``custom_id``, plus the stage label in sweeps,
where one id has a record per stage): converting twice gives the same file.

The body holds every choice (``n > 1``) and its logprobs as the
non-streamed API returns them: chat's ``choices[i].logprobs`` is
``{"content": [entries]}``, completions' the object of parallel lists; a
choice without logprobs has ``"logprobs": null``. Decoding restores the
record's ``choices`` (when the body has more than one) and ``logprobs``
(choice 0's).

Error mapping follows the real Batch API, whose schema says ``error`` is
"for requests that failed with a non-HTTP error":

- the server answered with an HTTP error (``error.status_code`` >= 400):
  ``response = {"status_code": <code>, "request_id", "body": {"error":
  {"message", "type", "param", "code"}}}`` and ``error = null``;
- the request never got an HTTP answer (connect error, timeout, a stream
  that broke or sent an error event after a 200, client-side refusals):
  ``response = null`` and ``error = {"code": <our error type>, "message"}``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from ..record import ERROR, OK, Record, decode_native, json_kind, posix_time
from ..stream.paths import CHAT_PATH, COMPLETIONS_PATH

SIDE = "streamrun"  # the side field, which Batch API readers ignore, that holds our own fields
STREAMRUN = "streamrun"
OPENAI_BATCH = "openai-batch"

#: The fields an ok record's response body holds: decoded back from it, and carried in the side field
#: only when the body would not give them back as they are (a single entry in ``choices``, say).
BODY_FIELDS = ("text", "reasoning", "tool_calls", "finish_reason", "model", "usage", "logprobs", "choices")
#: The side field's keys on every line (Batch readers written for earlier versions find them).
ALWAYS_SIDE = ("metrics", "attempts", "endpoint", "source", "stage", "warmup", "request_url", "request_id",
               "request_hash")


def _default(f: dataclasses.Field) -> Any:
    return f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default


#: Every other field of a record (``parsed``, ``cached``, ``turns``, ... and whatever is added to Record
#: later), with its default: in the side field when it is not at its default, so that most lines stay
#: short and no field is ever lost on the way to a Batch line and back.
WHEN_SET = {f.name: _default(f) for f in dataclasses.fields(Record)
            if f.name not in ("custom_id", "status", *BODY_FIELDS, *ALWAYS_SIDE)}


def _stable_hex(key: str, purpose: bytes) -> str:
    """32 hex digits from the resume key: the same record, the same ids."""
    return hashlib.blake2b(key.encode("utf-8"), digest_size=16, person=purpose).hexdigest()


def _is_completions(url: str) -> bool:
    path = url.rstrip("/")
    return path.endswith("/completions") and not path.endswith("/chat/completions")


def _created(record: Record) -> int:
    """Unix time the request was sent, 0 when unknown (Batch wants an int)."""
    started = posix_time(record.metrics.started_at)
    return int(started) if started is not None else 0


def _choice(index: int, text: str, reasoning: str | None, tool_calls: list | None, finish_reason: str | None,
            logprobs: Any, completions: bool) -> dict[str, Any]:
    """One choice of the non-streamed response, keys in the API's order."""
    if completions:
        choice: dict[str, Any] = {"index": index, "text": text}
        if reasoning is not None:
            choice["reasoning_content"] = reasoning
        choice["logprobs"] = logprobs
    else:
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if reasoning is not None:
            message["reasoning_content"] = reasoning
        if tool_calls:
            message["tool_calls"] = tool_calls
        # chat wraps the entries as {"content": [...]}; a dict is carried as it came
        choice = {"index": index, "message": message,
                  "logprobs": {"content": logprobs} if type(logprobs) is list else logprobs}
    choice["finish_reason"] = finish_reason
    return choice


def _body(record: Record, key: str, completions: bool) -> dict[str, Any]:
    """The non-streamed response the server would have sent: every choice, with its logprobs."""
    if record.choices:
        choices = [_choice(c.index, c.text, c.reasoning, c.tool_calls, c.finish_reason, c.logprobs, completions)
                   for c in record.choices]
    else:
        choices = [_choice(0, record.text, record.reasoning, record.tool_calls, record.finish_reason,
                           record.logprobs, completions)]
    prefix, kind = ("cmpl-", "text_completion") if completions else ("chatcmpl-", "chat.completion")
    return {
        "id": prefix + _stable_hex(key, b"body"),
        "object": kind,
        "created": _created(record),
        "model": record.model,
        "choices": choices,
        "usage": record.usage,
    }


def _native_choice(choice: Any) -> dict[str, Any]:
    """A response's choice as a record's (``runner.record.Choice``'s keys; decode_native types them)."""
    if type(choice) is not dict:
        return {}
    message = choice.get("message")
    logprobs = choice.get("logprobs")
    if type(message) is dict:
        if type(logprobs) is dict and "content" in logprobs:  # chat's {"content": [...], "refusal": ...}
            logprobs = logprobs["content"]
        return {"index": choice.get("index"), "text": message.get("content"),
                "reasoning": message.get("reasoning_content", message.get("reasoning")),
                "tool_calls": message.get("tool_calls") or None, "finish_reason": choice.get("finish_reason"),
                "logprobs": logprobs}
    return {"index": choice.get("index"), "text": choice.get("text"), "reasoning": choice.get("reasoning_content"),
            "tool_calls": None, "finish_reason": choice.get("finish_reason"), "logprobs": logprobs}


def _openai_error_type(status_code: int) -> str:
    """OpenAI's error ``type`` for an HTTP status (best effort: we keep no body)."""
    return "server_error" if status_code >= 500 else "invalid_request_error"


def encode_batch(record: Record, request_url: str = CHAT_PATH) -> dict[str, Any]:
    """``record`` as one OpenAI Batch API output line (for ``orjson.dumps``).

    The body's shape follows the record's own ``request_url``, else
    ``request_url`` (``/v1/completions`` gives a text_completion body).
    Whatever the line has no place for goes into the side field, so that
    ``decode_batch`` gives back the record, field for field.
    """
    key = record.key
    side: dict[str, Any] = {name: getattr(record, name) for name in ALWAYS_SIDE}
    for name, default in WHEN_SET.items():
        value = getattr(record, name)
        if value != default:
            side[name] = value
    request_id = _stable_hex(key, b"request_id")
    response: dict[str, Any] | None
    error: dict[str, Any] | None = None
    if record.status == OK:
        url = record.request_url or request_url
        body = _body(record, key, _is_completions(url))
        response = {"status_code": 200, "request_id": request_id, "body": body}
        if record.choices is not None or record.logprobs is not None or record.tool_calls is not None:
            # Not a plain reply (which the body always gives back): check what the body gives back, and
            # carry what it does not (a single entry in choices, say) in the side field as it is.
            back = decode_native({"custom_id": record.custom_id, "status": OK, **_from_body(body)})
            for name in BODY_FIELDS:
                value = getattr(record, name)
                if getattr(back, name) != value:
                    side[name] = value
    elif record.status == ERROR:
        side.update(error=record.error, text=record.text, reasoning=record.reasoning, tool_calls=record.tool_calls,
                    finish_reason=record.finish_reason, model=record.model, usage=record.usage)
        if record.logprobs is not None or record.choices is not None:  # partial, kept as the native line keeps it
            side.update(logprobs=record.logprobs, choices=record.choices)
        err = record.error
        message = (err.message if err is not None else None) or ""
        if err is not None and err.status_code is not None and err.status_code >= 400:
            code = err.status_code
            response = {"status_code": code, "request_id": request_id, "body": {"error": {
                "message": message, "type": _openai_error_type(code), "param": None, "code": err.code}}}
        else:
            response = None
            error = {"code": (err.type if err is not None else None) or "error", "message": message}
    else:
        raise ValueError(f"status must be 'ok' or 'error', got {record.status!r}")
    return {
        "id": "batch_req_" + _stable_hex(key, b"batch_req"),
        "custom_id": record.custom_id,
        "response": response,
        "error": error,
        SIDE: side,
    }


def decode_batch(line: Any) -> Record:
    """A parsed Batch API output line as a Record; ValueError says what is wrong.

    Uses the ``streamrun`` side field when present, so our own conversions
    round-trip exactly. For lines from the real Batch API: metrics are nulls
    (nothing was timed), ``attempts`` is 1 (one outcome per line; retries are
    unknown), ``source``/``endpoint``/``stage`` are null, ``warmup`` false,
    ``request_id`` the response's, and ``request_url`` the API path the body's
    ``object`` implies (null for a failed request).
    """
    try:
        return decode_native(_native(line))
    except (TypeError, KeyError, AttributeError, IndexError) as exc:
        raise ValueError(f"a malformed field ({type(exc).__name__}: {exc})") from None


def _first_choice(listed: list) -> Any:
    """Choice 0 of a body's choices: the one with index 0, else the first listed."""
    return next((c for c in listed if type(c) is dict and c.get("index") == 0), listed[0])


def _from_body(body: dict) -> dict[str, Any]:
    """The native fields a successful response's body holds (``BODY_FIELDS``; decode_native types them)."""
    listed = body.get("choices") or [{}]
    first = _native_choice(_first_choice(listed))
    out: dict[str, Any] = {
        "text": first.get("text"), "reasoning": first.get("reasoning"), "tool_calls": first.get("tool_calls"),
        "logprobs": first.get("logprobs"), "finish_reason": first.get("finish_reason"),
        "model": body.get("model"), "usage": body.get("usage")}
    if len(listed) > 1:
        choices = [_native_choice(c) for c in listed]
        if all(type(c.get("index")) is int for c in choices):  # index order, as records list them
            choices.sort(key=lambda c: c["index"])
        out["choices"] = choices
    return out


def _native(line: Any) -> dict[str, Any]:
    """The native line a Batch line stands for (decode_native then types it).

    A line of ours: its side field's keys win over what the Batch fields
    imply (they are the record's own values).
    """
    if type(line) is not dict:
        raise ValueError(f"a JSON {json_kind(line)}, not an object")
    ours = type(line.get(SIDE)) is dict
    side: dict[str, Any] = line[SIDE] if ours else {}
    response = line.get("response")
    batch_error = line.get("error")
    out: dict[str, Any] = {"custom_id": line.get("custom_id")}
    if type(out["custom_id"]) is not str or not out["custom_id"]:
        raise ValueError("no custom_id string")
    implied_url = None
    if type(response) is dict and 200 <= (response.get("status_code") or 0) < 300:
        body = response.get("body") or {}
        out.update(_from_body(body), status=OK, error=None)
        choice = _first_choice(body.get("choices") or [{}])
        completions = body.get("object") == "text_completion" or (type(choice) is dict and "text" in choice)
        implied_url = COMPLETIONS_PATH if completions else CHAT_PATH
    elif type(response) is dict:  # an HTTP error
        body_error = (response.get("body") or {}).get("error") or {}
        out.update(status=ERROR, error={"type": "http_error", "status_code": response.get("status_code"),
                                        "code": body_error.get("code"), "message": body_error.get("message")},
                   text="")
    elif type(batch_error) is dict:  # no response at all
        out.update(status=ERROR, error={"type": batch_error.get("code"), "message": batch_error.get("message")},
                   text="")
    else:
        raise ValueError("neither a response nor an error")
    out["request_url"] = side.get("request_path") or implied_url  # request_path: older conversions
    out["request_id"] = None if ours else (response.get("request_id") if type(response) is dict else None)
    out.update((k, v) for k, v in side.items() if k in _FIELDS)
    return out


_FIELDS = frozenset(f.name for f in dataclasses.fields(Record)) - {"custom_id", "status"}


def is_batch_line(obj: dict) -> bool:
    """A Batch API output line (a ``response``, no ``status``), not a streamrun record."""
    return "response" in obj and "status" not in obj


def detect_format(obj: Any) -> str:
    """``STREAMRUN`` or ``OPENAI_BATCH`` for one parsed line; ValueError for neither."""
    if type(obj) is not dict:
        raise ValueError(f"a JSON {json_kind(obj)}, not an object")
    if is_batch_line(obj):
        return OPENAI_BATCH
    if obj.get("status") in (OK, ERROR) and "response" not in obj:
        return STREAMRUN
    raise ValueError("neither a streamrun record nor a Batch API output line")


def decode_result(obj: Any) -> Record:
    """One parsed line of a results file, in either output format, as a Record.

    The one place that decides what a results line is: the report, merge and
    resume read through it. ValueError says why a line is not a record.
    """
    if type(obj) is dict and is_batch_line(obj):  # --output-format openai-batch
        try:
            return decode_batch(obj)
        except ValueError as exc:
            raise ValueError(f"an OpenAI Batch output line with {exc}") from None
    return decode_native(obj)
