"""The result record: the one definition that every writer and reader uses.

A request ends as one :class:`Record` (docs/FORMATS.md). Inside streamrun it
is typed: the engine builds it, the writer serialises it, and the summary,
the report, merge, resume and the Batch converter read its attributes.
Dicts exist only at the file edge:

- native lines (``results.jsonl``): ``orjson.dumps(record)`` is the encoder
  (orjson writes a dataclass's fields in their declared order, which is the
  documented key order) and :func:`decode_native` the decoder;
- OpenAI Batch API lines: ``runner.outputs.batch.encode_batch`` / ``decode_batch``;
- either, recognised per line: ``runner.outputs.batch.decode_result``.

Decoding is lenient about age and strict about types: a record written
before a key existed (``request_id``, ``error.code``, ``metrics.connect_s``,
``logprobs``, ``choices``, ``batch_id``) decodes with None there, and a value of the wrong
JSON type decodes as missing, so readers can trust every attribute's type
without checking it again. ``usage``, ``tool_calls``, ``logprobs``,
``source`` and ``stage`` stay JSON objects: they are the server's or the
run's own documents, carried through (the summary checks the ``usage``
numbers it adds up). The choices of an ``n > 1`` reply are typed
(:class:`Choice`); the top-level ``text``, ``reasoning``, ``tool_calls``,
``finish_reason`` and ``logprobs`` are choice 0's.

``slots=True``: records are built once per request and read a few times,
which slots make cheaper. orjson serialises a slots dataclass about 1.5 us
slower than a dict of the same fields; the cheaper build (``started_at``
stays a datetime, which orjson writes as ``isoformat()`` would, in Rust)
pays for that, and the summary reads attributes faster than dict keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from .inputs.ids import resume_key

if TYPE_CHECKING:
    from .stream.timing import Timing

OK = "ok"
ERROR = "error"


@dataclass(slots=True)
class Metrics:
    """A request's timings and token count (definitions: docs/FORMATS.md, runner/stream/timing.py)."""

    ttft_s: float | None = None  # sent -> first event carrying text
    ttfb_s: float | None = None  # sent -> first event of any kind
    e2e_s: float | None = None  # sent -> end of stream
    tpot_s: float | None = None  # (e2e - ttft) / (output_tokens - 1)
    itl_s: list[float] = field(default_factory=list)  # gaps between text-carrying events
    queue_s: float | None = None  # due -> sent
    output_tokens: int | None = None
    output_tokens_source: str | None = None  # "usage" | "tokenizer" | "events"
    started_at: datetime | None = None  # when the successful attempt was sent (UTC); ISO 8601 in files
    connect_s: float | None = None  # opening the TCP (+TLS) connection; None when a pooled one was reused
    ttfat_s: float | None = None  # sent -> first answer text (after any reasoning); = ttft_s without reasoning
    reasoning_tokens: int | None = None  # usage's completion_tokens_details.reasoning_tokens (or the API's own)
    scheduled_s: float | None = None  # --replay: when the line was due, seconds from the stage's start

    @classmethod
    def from_timing(cls, t: Timing | None, output_tokens: int | None, source: str | None) -> Metrics:
        """The metrics of an attempt's stamps (nulls where it never got that far)."""
        if t is None or not t.sent:
            return cls(output_tokens=output_tokens, output_tokens_source=source)
        sent = t.sent
        ttft = t.first_text - sent if t.first_text is not None else None
        e2e = t.end - sent if t.end is not None else None
        tpot = None
        if ttft is not None and e2e is not None and output_tokens and output_tokens > 1:
            tpot = (e2e - ttft) / (output_tokens - 1)
        return cls(
            ttft,
            t.first_event - sent if t.first_event is not None else None,
            e2e,
            tpot,
            t.itl,
            max(0.0, sent - t.due),
            output_tokens,
            source,
            t.started_at,
            t.connect_s,
            t.first_answer - sent if t.first_answer is not None else None,
        )


#: The metrics a summary describes, in the order summaries list them
#: (docs/REPORT.md); ``itl_s`` pools every gap, the others are one value a request.
#: ``connect_s`` only has values for the requests that opened a connection.
SUMMARY_METRICS: tuple[str, ...] = ("ttft_s", "ttfat_s", "ttfb_s", "tpot_s", "itl_s", "e2e_s", "queue_s",
                                    "connect_s", "output_tokens", "reasoning_tokens")
#: The one-value-a-request metrics among them.
REQUEST_METRICS: tuple[str, ...] = tuple(m for m in SUMMARY_METRICS if m != "itl_s")


@dataclass(slots=True)
class RecordError:
    """Why a request failed: ``type`` is one of docs/FORMATS.md's error types."""

    type: str | None
    status_code: int | None = None  # the HTTP status, when the server answered one
    code: str | None = None  # the server's error.code, e.g. "model_not_found"
    message: str | None = None  # redacted


@dataclass(slots=True)
class Choice:
    """One choice of a reply with several (``n > 1``); the field order is the JSON key order."""

    index: int
    text: str = ""
    reasoning: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    logprobs: list[Any] | dict[str, Any] | None = None  # chat: [{token, logprob, bytes, top_logprobs}]; completions: the lists


@dataclass(slots=True)
class Turn:
    """One turn of a multi-turn session (a line with ``turns``); the field order is the JSON key order."""

    index: int  # 0-based turn number
    text: str = ""
    reasoning: str | None = None
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    metrics: Metrics = field(default_factory=Metrics)
    attempts: int = 1
    error: RecordError | None = None


@dataclass(slots=True)
class Record:
    """One line of ``results.jsonl``; the field order is the JSON key order."""

    custom_id: str
    status: str  # OK | ERROR
    text: str = ""  # partial text is kept on error
    reasoning: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    finish_reason: str | None = None
    model: str | None = None
    usage: dict[str, Any] | None = None  # as the server sent it
    metrics: Metrics = field(default_factory=Metrics)
    attempts: int = 1
    error: RecordError | None = None
    source: dict[str, Any] | None = None  # {"file", "line"} of the input line
    endpoint: str | None = None
    stage: dict[str, Any] | None = None  # {"index", "label", "concurrency", "rate"} in sweeps
    warmup: bool = False
    request_url: str | None = None  # the API path the line was sent to
    request_id: str | None = None  # the server's id for the request
    logprobs: list[Any] | dict[str, Any] | None = None  # choice 0's, when asked for (and not --drop-logprobs)
    choices: list[Choice] | None = None  # every choice, when the reply had more than one
    request_hash: str | None = None  # of the input line as read: --resume finds answers to lines that changed
    parsed: Any = None  # the reply as JSON, when the request's response_format asked for JSON and it validated
    cached: bool = False  # answered from --cache: nothing was sent; excluded from latency statistics
    cached_metrics: Metrics | None = None  # the metrics of the request that was sent, when cached
    turns: list[Turn] | None = None  # a session: every turn, in order (the top-level fields are the last turn's)
    embedding: list[float] | None = None  # /v1/embeddings with one input
    embeddings: list[list[float]] | None = None  # /v1/embeddings with a list input
    batch_id: str | None = None  # the provider's batch that answered it (streamrun batch); None: sent live

    @property
    def ok(self) -> bool:
        return self.status == OK

    @property
    def label(self) -> str | None:
        """The stage label (sweeps only)."""
        stage = self.stage
        label = stage.get("label") if stage is not None else None
        return label if isinstance(label, str) else None

    @property
    def key(self) -> str:
        """The resume key: ``custom_id``, with the stage label in sweeps."""
        return resume_key(self.label, self.custom_id)


def posix_time(dt: datetime | None) -> float | None:
    """A record's time (``metrics.started_at``) as POSIX seconds; a naive time is UTC."""
    if dt is None:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


# --------------------------------------------------------------------------
# the native decoder (the encoder is orjson.dumps)


def json_kind(obj: Any) -> str:
    """How JSON names ``obj``'s type, for messages."""
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(obj), "number")


def _number(v: Any) -> float | int | None:
    t = type(v)
    return v if t is float or t is int else None


def _int(v: Any) -> int | None:
    return v if type(v) is int else None


def _str(v: Any) -> str | None:
    return v if type(v) is str else None


def _dict(v: Any) -> dict[str, Any] | None:
    return v if type(v) is dict else None


def _time(v: Any) -> datetime | None:
    """An ISO 8601 time; orjson writes a datetime back exactly as isoformat() does."""
    if type(v) is not str:
        return None
    try:
        return datetime.fromisoformat(v)
    except ValueError:
        return None


def _gaps(v: Any) -> list[float]:
    """A list of numbers (JSON has no NaN or infinity, so each is finite)."""
    if type(v) is not list:
        return []
    try:
        sum(v, 0.0)  # checks every item in C, fast: only numbers add to a float
    except TypeError:
        return [g for g in v if type(g) is float or type(g) is int]
    return v


def decode_metrics(obj: Any) -> Metrics:
    if type(obj) is not dict:
        return Metrics()
    g = obj.get
    return Metrics(
        _number(g("ttft_s")),
        _number(g("ttfb_s")),
        _number(g("e2e_s")),
        _number(g("tpot_s")),
        _gaps(g("itl_s")),
        _number(g("queue_s")),
        _int(g("output_tokens")),
        _str(g("output_tokens_source")),
        _time(g("started_at")),
        _number(g("connect_s")),
        _number(g("ttfat_s")),
        _int(g("reasoning_tokens")),
        _number(g("scheduled_s")),
    )


def decode_logprobs(v: Any) -> list[Any] | dict[str, Any] | None:
    """Chat's list of entries or completions' object of lists, carried as sent; else None."""
    t = type(v)
    return v if t is list or t is dict else None


def decode_choices(v: Any) -> list[Choice] | None:
    """A list of choice objects; an entry that is not one is left out, an index that is no integer is its place."""
    if type(v) is not list:
        return None
    out = []
    for place, c in enumerate(v):
        if type(c) is not dict:
            continue
        g = c.get
        index = _int(g("index"))
        tool_calls = g("tool_calls")
        out.append(Choice(place if index is None else index, _str(g("text")) or "", _str(g("reasoning")),
                          tool_calls if type(tool_calls) is list else None, _str(g("finish_reason")),
                          decode_logprobs(g("logprobs"))))
    return out


def decode_error(obj: Any) -> RecordError | None:
    if type(obj) is not dict:
        return None
    g = obj.get
    return RecordError(_str(g("type")), _int(g("status_code")), _str(g("code")), _str(g("message")))


def decode_native(obj: Any) -> Record:
    """A parsed native line as a Record; ValueError when it is not a result record."""
    if type(obj) is not dict:
        raise ValueError(f"a JSON {json_kind(obj)}, not an object")
    g = obj.get
    custom_id = g("custom_id")
    if type(custom_id) is not str or not custom_id:
        raise ValueError("no custom_id string")
    status = g("status")
    if status != OK and status != ERROR:
        raise ValueError(f"not a result record (status={status!r})")
    tool_calls = g("tool_calls")
    attempts = g("attempts")
    return Record(
        custom_id,
        status,
        _str(g("text")) or "",
        _str(g("reasoning")),
        tool_calls if type(tool_calls) is list else None,
        _str(g("finish_reason")),
        _str(g("model")),
        _dict(g("usage")),
        decode_metrics(g("metrics")),
        attempts if type(attempts) is int else 1,
        decode_error(g("error")),
        _dict(g("source")),
        _str(g("endpoint")),
        _dict(g("stage")),
        g("warmup") is True,
        _str(g("request_url")) or _str(g("request_path")),  # request_path: older Batch conversions
        _str(g("request_id")),
        decode_logprobs(g("logprobs")),
        decode_choices(g("choices")),
        _str(g("request_hash")),
        g("parsed"),
        g("cached") is True,
        decode_metrics(g("cached_metrics")) if type(g("cached_metrics")) is dict else None,
        decode_turns(g("turns")),
        _vector(g("embedding")),
        _vectors(g("embeddings")),
        _str(g("batch_id")),
    )


def decode_turns(v: Any) -> list[Turn] | None:
    if type(v) is not list:
        return None
    out = []
    for place, t in enumerate(v):
        if type(t) is not dict:
            continue
        g = t.get
        index, attempts = _int(g("index")), g("attempts")
        out.append(Turn(place if index is None else index, _str(g("text")) or "", _str(g("reasoning")),
                        _str(g("finish_reason")), _dict(g("usage")), decode_metrics(g("metrics")),
                        attempts if type(attempts) is int else 1, decode_error(g("error"))))
    return out


def _vector(v: Any) -> list[float] | None:
    return v if type(v) is list and all(type(x) is float or type(x) is int for x in v) else None


def _vectors(v: Any) -> list[list[float]] | None:
    if type(v) is not list:
        return None
    out: list[list[float]] = []
    for x in v:
        vector = _vector(x)
        if vector is None:  # one that is not a vector: none of them is trusted
            return None
        out.append(vector)
    return out
