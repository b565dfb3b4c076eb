"""Structured output: does a reply's text satisfy the ``response_format`` it was asked for?

:func:`check_output` answers ``(parsed, None)`` when it does, ``(None,
message)`` when it does not, and ``(None, None)`` when there is nothing to
check: no ``response_format``, type ``"text"``, or a type this module does
not know (a server extension; it is not guessed at).

- ``{"type": "json_object"}``: the text must be one JSON object.
- ``{"type": "json_schema", "json_schema": {"name", "schema", "strict"}}``
  (Chat Completions), or the same keys flat beside ``type`` (the Responses
  API's ``text.format``): the text must be JSON and valid under ``schema``
  by JSON Schema Draft 2020-12.  Without a ``schema`` any JSON passes.
  ``strict`` is the server's business: the reply is checked either way.
  ``format`` is an annotation only, as the draft says by default (whether a
  format is checked would otherwise depend on which optional packages are
  installed).

JSON is strict (RFC 8259: no NaN, no comments, no trailing commas).  Servers
with structured output send bare JSON, so a reply wrapped in a Markdown
fenced block (```json ... ```) is invalid, and the message says so.

A schema is checked (``check_schema``) and compiled once, then reused for
every reply that asks for it: validators are cached by the schema's
canonical JSON (sorted keys), so key order does not matter.  A bad schema
is logged once and each reply checked against it gets a message that blames
the schema, not the reply; :func:`format_problem` asks the same of a request
before it is sent (the run answers such a line ``invalid_input`` at once).
Messages are cut to :data:`MESSAGE_LIMIT` characters.
"""

from __future__ import annotations

import functools
import json
import logging
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match

MESSAGE_LIMIT = 300
#: Distinct schemas whose validators are kept (least recently used go first).
VALIDATOR_CACHE_SIZE = 256

log = logging.getLogger("streamrun")

_FENCE = "```"


def check_output(response_format: dict[str, Any] | None, text: str) -> tuple[object | None, str | None]:
    """Check ``text`` against ``response_format``: (parsed, None), (None, message) or (None, None)."""
    if not isinstance(response_format, dict):
        return None, None
    kind = response_format.get("type")
    if kind == "json_object":
        value, error = _parse(text)
        if error is not None:
            return None, error
        if not isinstance(value, dict):
            return None, f"reply is JSON but not an object (it is {_json_type(value)})"
        return value, None
    if kind != "json_schema":
        return None, None

    label, validator, problem = _schema_of(response_format)
    if problem is not None:
        return None, problem
    value, error = _parse(text)
    if error is not None:
        return None, error
    if validator is None:
        return value, None
    try:
        violation: ValidationError | None = best_match(validator.iter_errors(value))
    except Exception as e:  # an unresolvable $ref, a pattern Python's re cannot compile
        return None, _cut(f"response_format {label} cannot be applied: {type(e).__name__}: {e}")
    if violation is None:
        return value, None
    return None, _cut(f"reply does not match {label} at {violation.json_path}: {violation.message}")


def format_problem(response_format: dict[str, Any] | None) -> str | None:
    """What makes ``response_format`` itself unusable (no reply could pass it), or None.

    Asked before a request is sent: a schema that is no valid JSON Schema is
    the input's fault, and sending it again would only fail again.
    """
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return None
    return _schema_of(response_format)[2]


def _schema_of(response_format: dict[str, Any]) -> tuple[str, Draft202012Validator | None, str | None]:
    """A json_schema format's (label, validator, problem): no validator without a schema; a problem with a bad one."""
    spec = response_format.get("json_schema")
    if spec is None and ("schema" in response_format or "name" in response_format):
        spec = response_format  # Responses API: text.format carries the keys itself
    if not isinstance(spec, dict):
        return "the schema", None, "response_format has type json_schema but no json_schema object"
    name = spec.get("name")
    label = f"schema {name!r}" if isinstance(name, str) and name else "the schema"
    schema = spec.get("schema")
    if schema is None:
        return label, None, None
    validator, schema_error = _validator(schema)
    if schema_error is not None:
        return label, None, _cut(f"response_format {label} is invalid: {schema_error}")
    return label, validator, None


def _validator(schema: Any) -> tuple[Draft202012Validator | None, str | None]:
    """The cached validator of ``schema``, or the reason it has none."""
    try:
        canonical = orjson.dumps(schema, option=orjson.OPT_SORT_KEYS)
    except TypeError as e:
        return None, f"it is not JSON ({e})"
    return _compiled(canonical)


@functools.lru_cache(maxsize=VALIDATOR_CACHE_SIZE)
def _compiled(canonical: bytes) -> tuple[Draft202012Validator | None, str | None]:
    schema = orjson.loads(canonical)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as e:
        reason = f"at {e.json_path}: {e.message}"
        log.warning("response_format schema is invalid, %s", _cut(reason))
        return None, reason
    return Draft202012Validator(schema), None


def _parse(text: str) -> tuple[Any, str | None]:
    if not text or not text.strip():
        return None, "reply is empty, expected JSON"
    try:
        return orjson.loads(text), None
    except orjson.JSONDecodeError as e:
        error = e
    # What orjson refuses and RFC 8259 allows: an escaped lone surrogate ("\ud800").
    try:
        return json.loads(text, parse_constant=_no_constant), None
    except ValueError:
        pass
    if text.lstrip().startswith(_FENCE):
        return None, "reply is wrapped in a ``` fenced block; structured output must be bare JSON"
    return None, _cut(f"reply is not valid JSON: {error}")


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__


def _cut(message: str) -> str:
    return message if len(message) <= MESSAGE_LIMIT else message[: MESSAGE_LIMIT - 1] + "…"
