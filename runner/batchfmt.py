"""Convert between our result records and the OpenAI Batch API output format.

A Batch output line is ``{"id", "custom_id", "response", "error"}`` where
``response.body`` is the assembled non-streamed response. Tools written for
the Batch API can then read streamrun results, and Batch outputs can be fed
to our report. What the Batch format has no place for (metrics, attempts,
source, ...) travels in a side field ``"streamrun"``, which Batch readers
ignore, so that a round trip loses nothing.

The Batch ids (``batch_req_...``, ``request_id``, the body's id) are hashes
of the record's resume key (``custom_id``, plus the stage label in sweeps,
where one id has a record per stage): converting twice gives the same file.

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

import hashlib
import os
from datetime import datetime
from typing import Any, BinaryIO

import click
import orjson

from runner.ids import resume_key

from .outputs import SIDE  # the side field Batch API readers ignore
CHAT_URL = "/v1/chat/completions"
COMPLETIONS_URL = "/v1/completions"
SIDE_KEYS = ("metrics", "attempts", "endpoint", "source", "stage", "warmup")
# The engine writes ``request_path``; ``request_url`` is accepted as an alias.
URL_KEYS = ("request_path", "request_url")
# Parts of an error record the Batch lines cannot hold (no body on errors).
ERROR_SIDE_KEYS = ("error", "text", "reasoning", "tool_calls", "finish_reason", "model", "usage")
METRIC_KEYS = (
    "ttft_s", "ttfb_s", "e2e_s", "tpot_s", "itl_s", "queue_s",
    "output_tokens", "output_tokens_source", "started_at",
)


def _stable_hex(key: str, purpose: bytes) -> str:
    """32 hex digits from the resume key: the same record, the same ids."""
    return hashlib.blake2b(key.encode("utf-8"), digest_size=16, person=purpose).hexdigest()


def _is_completions(url: str) -> bool:
    path = url.rstrip("/")
    return path.endswith("/completions") and not path.endswith("/chat/completions")


def _created(record: dict[str, Any]) -> int:
    """Unix time the request was sent, 0 when unknown (Batch wants an int)."""
    started = (record.get("metrics") or {}).get("started_at")
    if isinstance(started, str):
        try:
            return int(datetime.fromisoformat(started).timestamp())
        except ValueError:
            pass
    return 0


def _body(record: dict[str, Any], completions: bool) -> dict[str, Any]:
    """The non-streamed response the server would have sent."""
    reasoning = record.get("reasoning")
    if completions:
        choice: dict[str, Any] = {"index": 0, "text": record.get("text")}
        if reasoning is not None:
            choice["reasoning_content"] = reasoning
        prefix, kind = "cmpl-", "text_completion"
    else:
        message: dict[str, Any] = {"role": "assistant", "content": record.get("text")}
        if reasoning is not None:
            message["reasoning_content"] = reasoning
        if record.get("tool_calls"):
            message["tool_calls"] = record["tool_calls"]
        choice = {"index": 0, "message": message}
        prefix, kind = "chatcmpl-", "chat.completion"
    choice["finish_reason"] = record.get("finish_reason")
    return {
        "id": prefix + _stable_hex(resume_key(record), b"body"),
        "object": kind,
        "created": _created(record),
        "model": record.get("model"),
        "choices": [choice],
        "usage": record.get("usage"),
    }


def _openai_error_type(status_code: int) -> str:
    """OpenAI's error ``type`` for an HTTP status (best effort: we keep no body)."""
    return "server_error" if status_code >= 500 else "invalid_request_error"


def to_batch_output(record: dict[str, Any], request_url: str = CHAT_URL) -> dict[str, Any]:
    """Our result record as one OpenAI Batch API output line.

    ``request_url`` (e.g. ``/v1/completions``) picks the body shape; the
    record's own ``request_path`` (written by the engine) or ``request_url``
    wins, since it is per record.
    """
    cid = record["custom_id"]
    if not isinstance(cid, str):
        raise ValueError("custom_id is not a string")
    url = record.get("request_path") or record.get("request_url") or request_url
    side: dict[str, Any] = {k: record.get(k) for k in SIDE_KEYS}
    side.update({k: record[k] for k in URL_KEYS if k in record})
    key = resume_key(record)
    request_id = _stable_hex(key, b"request_id")
    response: dict[str, Any] | None
    error: dict[str, Any] | None = None

    if record.get("status") == "ok":
        response = {
            "status_code": 200,
            "request_id": request_id,
            "body": _body(record, _is_completions(url)),
        }
    elif record.get("status") == "error":
        err = record.get("error") or {}
        side.update({k: record.get(k) for k in ERROR_SIDE_KEYS})
        code = err.get("status_code")
        message = err.get("message") or ""
        if isinstance(code, int) and not isinstance(code, bool) and code >= 400:
            response = {
                "status_code": code,
                "request_id": request_id,
                "body": {"error": {
                    "message": message,
                    "type": _openai_error_type(code),
                    "param": None,
                    "code": None,
                }},
            }
        else:
            response = None
            error = {"code": err.get("type") or "error", "message": message}
    else:
        raise ValueError(f"status must be 'ok' or 'error', got {record.get('status')!r}")

    return {
        "id": "batch_req_" + _stable_hex(key, b"batch_req"),
        "custom_id": cid,
        "response": response,
        "error": error,
        SIDE: side,
    }


def _empty_metrics() -> dict[str, Any]:
    """Metrics of a request we did not time: nulls, and no ITL gaps."""
    metrics: dict[str, Any] = dict.fromkeys(METRIC_KEYS)
    metrics["itl_s"] = []
    return metrics


def from_batch_output(line: dict[str, Any]) -> dict[str, Any]:
    """A Batch API output line as our result record.

    Uses the ``streamrun`` side field when present, so our own conversions
    round-trip exactly. For lines from the real Batch API: metrics are nulls
    (nothing was timed), ``attempts`` is 1 (one outcome per line; retries
    are unknown), ``source``/``endpoint``/``stage`` are null, ``warmup``
    false. ``request_path``/``request_url`` come back from the side field;
    without them ``request_path`` is set as the engine sets it: the API path
    the body's ``object`` implies, or null for a failed request.
    """
    cid = line.get("custom_id")
    if not isinstance(cid, str) or not cid:
        raise ValueError("no custom_id string")
    side = line.get(SIDE)
    side = side if isinstance(side, dict) else {}
    response = line.get("response")
    batch_error = line.get("error")
    request_path: str | None = None

    record: dict[str, Any] = {"custom_id": cid}
    if isinstance(response, dict) and 200 <= (response.get("status_code") or 0) < 300:
        body = response.get("body") or {}
        choices = body.get("choices") or [{}]
        choice = choices[0]
        message = choice.get("message")
        tool_calls = None
        if isinstance(message, dict):
            text = message.get("content")
            reasoning = message.get("reasoning_content", message.get("reasoning"))
            tool_calls = message.get("tool_calls") or None
        else:
            text = choice.get("text")
            reasoning = choice.get("reasoning_content")
        if body.get("object") == "text_completion" or "text" in choice:
            request_path = COMPLETIONS_URL
        else:
            request_path = CHAT_URL
        record.update(
            status="ok", text=text, reasoning=reasoning, tool_calls=tool_calls,
            finish_reason=choice.get("finish_reason"),
            model=body.get("model"), usage=body.get("usage"),
        )
        error = None
    elif isinstance(response, dict) or isinstance(batch_error, dict):
        if isinstance(response, dict):
            body_error = (response.get("body") or {}).get("error") or {}
            rebuilt = {
                "type": "http_error",
                "status_code": response.get("status_code"),
                "message": body_error.get("message"),
            }
        else:
            rebuilt = {
                "type": batch_error.get("code"),
                "status_code": None,
                "message": batch_error.get("message"),
            }
        error = side.get("error") or rebuilt
        record.update(
            status="error",
            text=side.get("text", ""),  # the engine writes "" when nothing came
            **{k: side.get(k) for k in ("reasoning", "tool_calls", "finish_reason", "model", "usage")},
        )
    else:
        raise ValueError("neither a response nor an error")

    metrics = side.get("metrics")
    attempts = side.get("attempts")
    record.update(
        metrics=metrics if isinstance(metrics, dict) else _empty_metrics(),
        attempts=attempts if isinstance(attempts, int) else 1,
        error=error,
        source=side.get("source"),
        endpoint=side.get("endpoint"),
        stage=side.get("stage"),
        warmup=bool(side.get("warmup", False)),
    )
    urls = {k: side[k] for k in URL_KEYS if k in side}
    record.update(urls or {"request_path": request_path})
    return record


def detect_format(obj: dict[str, Any]) -> str:
    """``"streamrun"`` or ``"openai-batch"`` for one parsed line."""
    if "response" in obj and "status" not in obj:
        return "openai-batch"
    if obj.get("status") in ("ok", "error") and "response" not in obj:
        return "streamrun"
    raise ValueError("neither a streamrun record nor a Batch API output line")


def convert_stream(
    src: BinaryIO, dst: BinaryIO, to: str, name: str, request_url: str = CHAT_URL
) -> tuple[int, int]:
    """Convert line by line; returns (lines written, bad lines).

    Lines already in the target format are copied unchanged. A bad line is
    reported on stderr as ``name:line`` and skipped.
    """
    written = bad = 0
    for line_no, raw in enumerate(src, 1):
        if not raw.strip():
            continue
        try:
            obj = orjson.loads(raw)
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
            if detect_format(obj) == to:
                out = raw if raw.endswith(b"\n") else raw + b"\n"
            elif to == "openai-batch":
                out = orjson.dumps(to_batch_output(obj, request_url)) + b"\n"
            else:
                out = orjson.dumps(from_batch_output(obj)) + b"\n"
        except (ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
            bad += 1
            click.echo(f"convert: {name}:{line_no}: skipped, {e}", err=True)
            continue
        dst.write(out)
        written += 1
    return written, bad


@click.command("convert")
@click.argument("in_path", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option(
    "-o", "--output", "out_path", required=True,
    type=click.Path(dir_okay=False, allow_dash=True), help="Converted JSONL file.",
)
@click.option(
    "--to", "to", required=True, type=click.Choice(["openai-batch", "streamrun"]),
    help="Target format; each input line's format is detected on its own.",
)
@click.option(
    "--url", "request_url", default=CHAT_URL, show_default=True,
    help="API path for records that do not carry their own request_path "
    "(/v1/completions gives text_completion bodies).",
)
def convert_command(in_path: str, out_path: str, to: str, request_url: str) -> None:
    """Convert results to or from the OpenAI Batch API output format.

    Exit status: 0 when every line converted, 1 when some were skipped.
    """
    if in_path != "-" and out_path != "-" and _same_file(in_path, out_path):
        raise click.UsageError("the output would overwrite the input")
    with click.open_file(in_path, "rb") as src, click.open_file(out_path, "wb") as dst:
        written, bad = convert_stream(src, dst, to, in_path, request_url)
    click.echo(f"convert: {written} lines written, {bad} skipped", err=True)
    if bad:
        click.get_current_context().exit(1)


def _same_file(a: str, b: str) -> bool:
    return os.path.exists(b) and os.path.samefile(a, b)
