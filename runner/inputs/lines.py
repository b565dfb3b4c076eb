"""One input line to (custom_id, API path, body): the line formats streamrun reads.

Why apart from the wire protocol: a line is checked before anything is
sent (and by `estimate`, `merge` and shards, which send nothing); the
protocol modules turn a checked body into a request and its events into
text.  Shorthand lines (`messages`, `prompt`, `input`) and OpenAI Batch API
lines (`method`/`url`/`body`) are both accepted, so Batch files run as is.
"""

from __future__ import annotations

from typing import Any

from ..stream.paths import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    EMBEDDINGS_PATH,
    ENDPOINT_PATHS,
    MESSAGES_PATH,
    RESPONSES_PATH,
    InvalidRequestLine,
)


def parse_line(obj: Any, *, file: str, line: int, api: str = "chat") -> tuple[str | None, str, dict]:
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
        if not isinstance(url, str):
            raise InvalidRequestLine("'url' must be a string like /v1/chat/completions")
        path = _normalise_path(url)
        body = dict(body)
    else:
        body = {k: v for k, v in obj.items() if k != "custom_id"}
        path = _shorthand_path(body, api)
    if path == RESPONSES_PATH:
        if not isinstance(body.get("input"), (str, list)):
            raise InvalidRequestLine("'input' must be a string or a list (the Responses API)")
        return custom_id, path, body
    if path == EMBEDDINGS_PATH:
        if not isinstance(body.get("input"), (str, list)) or not body["input"]:
            raise InvalidRequestLine("'input' must be a non-empty string or list (the embeddings API)")
        return custom_id, path, body
    if path in (CHAT_PATH, MESSAGES_PATH):
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequestLine("'messages' must be a non-empty list")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise InvalidRequestLine(f"messages[{i}] must be an object with a 'role'")
    elif "prompt" not in body:
        raise InvalidRequestLine("no 'messages', 'prompt' or 'body' field")
    elif not isinstance(body["prompt"], (str, list)):
        raise InvalidRequestLine("'prompt' must be a string or a list")
    return custom_id, path, body


def _shorthand_path(body: dict, api: str) -> str:
    """Shorthand lines: `prompt` is completions, `input` the Responses API, `messages` by --api."""
    if "messages" in body:
        if api == "anthropic":
            return MESSAGES_PATH
        if api == "responses":
            body["input"] = body.pop("messages")
            return RESPONSES_PATH
        return CHAT_PATH
    if "input" in body and "prompt" not in body:
        return RESPONSES_PATH
    return COMPLETIONS_PATH


def _normalise_path(url: str) -> str:
    for path in ENDPOINT_PATHS:
        if url.rstrip("/").endswith(path.removeprefix("/v1")):
            return path
    raise InvalidRequestLine(f"url {url!r} is not one of {', '.join(ENDPOINT_PATHS)}")
