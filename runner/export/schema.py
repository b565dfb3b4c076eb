"""The export's fixed schema, and a record (and its input line) as one row of cells.

Why it exists: every export of every run must have the same columns and
types, so that two exports concatenate and a query written once works on
all of them; this is the one place that says what they are and how a
record's fields fill them. It is pure data shaping: no files, no Arrow
arrays (``write`` builds those), pyarrow only for the schema object.

Rows and schema
---------------
Every line of the results files that is a record, in either output format
(``runner.outputs.batch.decode_result``: native records and OpenAI Batch lines,
warm-ups included), becomes one row, in file order. The schema is fixed
(:func:`export_schema`), never inferred from the rows, so every export of
every run has the same columns and types, and two exports concatenate:

====================================  ==============================  ==========================================
column                                type                            from
====================================  ==============================  ==========================================
``custom_id``, ``status``             string                          the record
``model``                             string                          the record
``prompt``                            string                          the input line (``--inputs`` only), below
``text``, ``reasoning``               string                          the record (choice 0's)
``finish_reason``                     string                          the record (choice 0's)
``tool_calls``                        string, JSON text               the record (choice 0's)
``prompt_tokens``,                    int64                           ``usage``, when the server sent them
``completion_tokens``,
``total_tokens``
``ttft_s``, ``ttfb_s``, ``e2e_s``,    double (seconds)                ``metrics``
``tpot_s``, ``queue_s``,
``connect_s``
``itl_s``                             list<double> (seconds)          ``metrics`` (empty when none)
``output_tokens``                     int64                           ``metrics``
``output_tokens_source``              string                          ``metrics``: usage, tokenizer or events
``started_at``                        timestamp[us, tz=UTC]           ``metrics``
``attempts``                          int64                           the record
``error_type``, ``error_code``,       string                          ``error`` (null on ok records)
``error_message``
``error_status_code``                 int64                           ``error``
``stage_label``                       string                          ``stage.label`` (sweeps), else null
``warmup``                            bool                            the record
``endpoint``, ``request_url``,        string                          the record
``request_id``, ``request_hash``
``usage``, ``stage``, ``source``,     string, JSON text               the record's objects, whole
``logprobs``, ``choices``, ``parsed``,
``cached_metrics``, ``turns``
``cached``                            bool                            the record
``ttfat_s``, ``scheduled_s``          double                          ``metrics.*``
``reasoning_tokens``                  int64                           ``metrics.reasoning_tokens``
``embedding``                         list<double>                    the record (one embeddings input)
``embeddings``                        list<list<double>>              the record (a list input)
``batch_id``                          string                          the record (``streamrun batch``)
``request``                           string, JSON text               the input line (``--inputs`` only), below
====================================  ==============================  ==========================================

``prompt`` and ``request`` are filled from the input line with the
record's id (``join``'s docstring says which line, and what each holds).

Nested and free-form fields are **JSON text**, not Arrow nested types:
``logprobs`` is a list of entries on chat and an object of lists on
completions, ``tool_calls``' arguments are already JSON text, ``usage`` has
whatever detail objects the server adds, and ``stage`` and ``source`` are
the run's own objects; no one nested type fits all of them without either
losing data or depending on the rows. JSON text keeps every value, stays
one stable type, and is what DuckDB's ``json_extract``, pandas'
``json.loads`` and a ``datasets`` ``map`` read directly. The columns that
are flattened (usage's three counts, the metrics, the error, the stage
label) are the ones one filters and aggregates on. The file's schema
metadata (``streamrun.export``) lists the JSON columns.
"""

from __future__ import annotations

import json
from dataclasses import asdict, is_dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from runner.inputs.items import InputItem
from runner.record import Record
from runner.stream.paths import CHAT_PATH, EMBEDDINGS_PATH, MESSAGES_PATH, RESPONSES_PATH

from .packages import load_pyarrow

if TYPE_CHECKING:
    import pyarrow as pa

METADATA_KEY = b"streamrun.export"
SCHEMA_VERSION = 1

#: The columns that hold JSON text (null when the record's value is null).
JSON_COLUMNS = ("tool_calls", "usage", "stage", "source", "logprobs", "choices", "turns", "request")
#: The columns ``--inputs`` adds: ``prompt`` goes before ``text``, ``request`` last.
INPUT_COLUMNS = ("prompt", "request")
PROMPT_AT = 3  # after custom_id, status, model

#: The columns of every export, in order (the input ones are added by ``export_schema(with_inputs=True)``).
#: Each is a nullable string unless named in the sets below.
COLUMNS = (
    "custom_id", "status", "model", "text", "reasoning", "finish_reason", "tool_calls",
    "prompt_tokens", "completion_tokens", "total_tokens",
    "ttft_s", "ttfb_s", "e2e_s", "tpot_s", "itl_s", "queue_s", "connect_s",
    "output_tokens", "output_tokens_source", "started_at", "attempts",
    "error_type", "error_status_code", "error_code", "error_message", "stage_label", "warmup",
    "endpoint", "request_url", "request_id", "request_hash", "usage", "stage", "source", "logprobs", "choices",
    "parsed", "cached", "cached_metrics", "ttfat_s", "reasoning_tokens", "scheduled_s", "turns", "embedding",
    "embeddings", "batch_id",
)
_NOT_NULL = frozenset({"custom_id", "status", "text", "itl_s", "attempts", "warmup", "cached"})
_INT64_COLUMNS = frozenset({"prompt_tokens", "completion_tokens", "total_tokens", "output_tokens", "attempts",
                            "error_status_code", "reasoning_tokens"})
_DOUBLE_COLUMNS = frozenset({"ttft_s", "ttfb_s", "e2e_s", "tpot_s", "queue_s", "connect_s", "ttfat_s",
                             "scheduled_s"})

_INT64 = 1 << 63
_UTC = UTC


def _column_type(pa, name: str) -> pa.DataType:
    if name in _INT64_COLUMNS:
        return pa.int64()
    if name in _DOUBLE_COLUMNS:
        return pa.float64()
    if name in ("itl_s", "embedding"):
        return pa.list_(pa.field("element", pa.float64()))  # Parquet's name for list items
    if name == "embeddings":
        return pa.list_(pa.field("element", pa.list_(pa.field("element", pa.float64()))))
    if name == "started_at":
        return pa.timestamp("us", tz="UTC")
    if name in ("warmup", "cached"):
        return pa.bool_()
    return pa.string()


def export_schema(with_inputs: bool = False) -> pa.Schema:
    """The fixed schema of an export (the module docstring describes each column)."""
    pa = load_pyarrow()
    names = list(COLUMNS)
    if with_inputs:
        names.insert(PROMPT_AT, INPUT_COLUMNS[0])
        names.append(INPUT_COLUMNS[1])
    fields = [pa.field(name, _column_type(pa, name), nullable=name not in _NOT_NULL) for name in names]
    meta = {"version": SCHEMA_VERSION, "json_columns": [c for c in JSON_COLUMNS if c in names]}
    return pa.schema(fields, metadata={METADATA_KEY: orjson.dumps(meta)})


def _int64(v: Any) -> int | None:
    return v if type(v) is int and -_INT64 <= v < _INT64 else None


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt.replace(tzinfo=_UTC) if dt.tzinfo is None else dt.astimezone(_UTC)


def _plain(v: Any) -> Any:
    return asdict(v) if is_dataclass(v) and not isinstance(v, type) else str(v)


def to_json(v: Any) -> str | None:
    """A value as JSON text; None stays None (a null cell, not the text ``null``)."""
    if v is None:
        return None
    try:
        return orjson.dumps(v).decode()
    except (orjson.JSONEncodeError, TypeError):  # deeper than orjson writes (it parses deeper than it writes)
        return json.dumps(v, default=_plain, ensure_ascii=False)


def record_row(r: Record) -> list:
    """A record's cells in :func:`export_schema` order (without the input columns)."""
    m = r.metrics
    u = r.usage or {}
    e = r.error
    return [
        r.custom_id,
        r.status,
        r.model,
        r.text,
        r.reasoning,
        r.finish_reason,
        to_json(r.tool_calls),
        _int64(u.get("prompt_tokens")),
        _int64(u.get("completion_tokens")),
        _int64(u.get("total_tokens")),
        _float(m.ttft_s),
        _float(m.ttfb_s),
        _float(m.e2e_s),
        _float(m.tpot_s),
        m.itl_s,  # numbers (decode_metrics checked them); doubles in the file
        _float(m.queue_s),
        _float(m.connect_s),
        _int64(m.output_tokens),
        m.output_tokens_source,
        _utc(m.started_at),
        _int64(r.attempts),
        e.type if e is not None else None,
        _int64(e.status_code) if e is not None else None,
        e.code if e is not None else None,
        e.message if e is not None else None,
        r.label,
        r.warmup,
        r.endpoint,
        r.request_url,
        r.request_id,
        r.request_hash,
        to_json(r.usage),
        to_json(r.stage),
        to_json(r.source),
        to_json(r.logprobs),
        to_json(r.choices),
        to_json(r.parsed),
        r.cached,
        to_json(r.cached_metrics),
        _float(m.ttfat_s),
        _int64(m.reasoning_tokens),
        _float(m.scheduled_s),
        to_json(r.turns),
        r.embedding,
        r.embeddings,
        r.batch_id,
    ]


def prompt_of(item: InputItem) -> str | None:
    """What the line asks, for every kind of line streamrun runs (``join``'s docstring).

    A conversation is JSON text of its messages, with the system prompt
    that an API keeps apart first (Anthropic's ``system``, the Responses
    API's ``instructions``); a session's is its prefix and user turns. A
    prompt or input that is a string is the string itself.
    """
    body = item.body
    if body is None:
        return None
    if item.session is not None:
        return to_json([*item.session.prefix, *({"role": "user", "content": t} for t in item.session.turns)])
    if item.path in (CHAT_PATH, MESSAGES_PATH):
        messages, system = body.get("messages"), body.get("system") if item.path == MESSAGES_PATH else None
        if system is not None and isinstance(messages, list):
            messages = [{"role": "system", "content": system}, *messages]
        return to_json(messages)
    prompt = body.get("input") if item.path in (RESPONSES_PATH, EMBEDDINGS_PATH) else body.get("prompt")
    instructions = body.get("instructions") if item.path == RESPONSES_PATH else None
    if instructions is not None:
        turns = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        prompt = [{"role": "system", "content": instructions}, *turns]
    return prompt if isinstance(prompt, str) else to_json(prompt)


def add_input_cells(row: list, item: InputItem | None) -> int:
    """Put ``item``'s prompt and request cells into a record's row (nulls when None); the request text's length."""
    if item is None:
        row.insert(PROMPT_AT, None)
        row.append(None)
        return 0
    row.insert(PROMPT_AT, prompt_of(item))
    request = to_json(item.body)
    row.append(request)
    return len(request or "")
