"""A batch's results to records: one per line of the part, the same Record as `run` writes.

Why it reuses the live path: a result's answer is the whole JSON reply the
live API sends when not streaming, which every protocol module already
reads (`apply_whole`: chat/completions, Responses, Anthropic; embeddings'
`parse`); the record is then built by `runner.engine.send.make_record`, so
finish reasons (`end_turn` -> `stop`), usage (`prompt_tokens`,
`completion_tokens`), choices and structured output are normalised exactly
as for a line sent live.  What differs: no timing (the metrics are null),
`attempts` 1 for an answered line and 0 for one never run, and `batch_id`.

Errors: a line the provider answered with an error is `batch_errored` (its
HTTP status, the provider's code or type, its message); a line that never
ran is `batch_expired` or `batch_cancelled`, or `batch_failed` when the
whole batch failed (the provider's reason); a line the results leave out
takes its batch's end, or `batch_errored` when the batch completed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from ..config.run_config import Stage
from ..engine.answers import checked, response_format
from ..engine.send import WHOLE, Reply, ReplyState, make_record
from ..inputs.ids import line_hash
from ..inputs.items import InputItem
from ..record import Record
from ..stream import embeddings, protocol
from ..stream.errors import InvalidInput, RequestError
from ..stream.protocol import StreamState
from ..stream.protocol_responses import EventStreamState
from .plan import Wire
from .remote import CANCELLED, EXPIRED, FAILED, SUCCEEDED, Outcome

_ONE_STAGE = Stage(0, 1)


class BatchErrored(RequestError):
    """The provider ran the request and it failed (a 4xx or 5xx answer, Anthropic's `errored`)."""

    type = "batch_errored"

    def __init__(self, message: str, status_code: int | None = None, code: str | None = None) -> None:
        super().__init__(message, status_code=status_code)
        self.code = code


class BatchExpired(RequestError):
    """The batch's 24 hours ran out before the request ran."""

    type = "batch_expired"


class BatchCancelled(RequestError):
    """The batch was cancelled before the request ran."""

    type = "batch_cancelled"


class BatchFailed(RequestError):
    """The whole batch failed (the provider refused its input): the request never ran."""

    type = "batch_failed"


NEVER_RAN = {EXPIRED: BatchExpired, CANCELLED: BatchCancelled, FAILED: BatchFailed}
_WHY = {EXPIRED: "the batch expired before this request ran (24 hours)",
        CANCELLED: "the batch was cancelled before this request ran", FAILED: "the batch failed"}


@dataclass(slots=True)
class Member:
    """One line of a part, as read back: the input item and what was sent for it."""

    item: InputItem
    wire: Wire


@dataclass
class Context:
    """What every record of the run shares; one object for the whole run, whose `model` is set once known."""

    model: str | None  # the run's model, for lines that name none (--model, the state's, or the server's only one)
    secrets: tuple[str, ...]
    endpoint: str  # the base URL, as shown


def _record(member: Member, reply: Reply, batch_id: str | None, ctx: Context) -> Record:
    item = member.item
    light = InputItem(item.custom_id, item.file, item.line, item.path, item.body)
    record = make_record(light, reply, stage=_ONE_STAGE, warmup=False, model=ctx.model, count_tokens=None,
                         secrets=ctx.secrets, scheduled_s=None)
    record.request_hash = line_hash(item.raw) if item.raw else None
    record.endpoint = ctx.endpoint
    record.batch_id = batch_id
    return record


def answered(member: Member, outcome: Outcome, batch_id: str, ctx: Context) -> Record:
    """The record of a line its batch answered: its reply, or its error."""
    if outcome.kind != SUCCEEDED:
        if outcome.kind in NEVER_RAN:
            return never_ran(member, outcome.kind, batch_id, ctx, outcome.message)
        error = BatchErrored(outcome.message or "the request failed", outcome.status_code, outcome.code)
        return _record(member, Reply(None, None, 1, error, outcome.request_id), batch_id, ctx)
    state: ReplyState | None = None
    try:
        state = whole_reply(member.item.path or "", outcome.body or {})
        parsed = checked(response_format(member.wire.request), state)
    except RequestError as exc:
        return _record(member, Reply(exc.partial if exc.partial is not None else state, None, 1, exc,
                                     outcome.request_id), batch_id, ctx)
    return _record(member, Reply(state, None, 1, None, outcome.request_id or getattr(state, "response_id", None),
                                 parsed), batch_id, ctx)


def invalid(item: InputItem, why: str, ctx: Context) -> Record:
    """The record of a line no batch can take (`invalid_input`): answered at once, nothing sent."""
    reply = Reply(None, None, 0, InvalidInput(f"{item.place}: {why}"), None)
    return make_record(item, reply, stage=_ONE_STAGE, warmup=False, model=ctx.model, count_tokens=None,
                       secrets=ctx.secrets, scheduled_s=None)


def never_ran(member: Member, end: str, batch_id: str | None, ctx: Context, why: str | None = None) -> Record:
    """The record of a line that never ran: its batch expired, was cancelled, or failed."""
    error = NEVER_RAN[end](why or _WHY[end])
    return _record(member, Reply(None, None, 0, error, None), batch_id, ctx)


def missing(member: Member, end: str | None, batch_id: str, ctx: Context, problem: str | None) -> Record:
    """The record of a line its batch's results leave out: the batch's end says why, if it does."""
    if end in NEVER_RAN:
        return never_ran(member, end, batch_id, ctx, f"{_WHY[end]}: {problem}" if problem else None)
    error = BatchErrored("the provider's results have no line for this request")
    return _record(member, Reply(None, None, 1, error, None), batch_id, ctx)


def whole_reply(path: str, body: dict[str, Any]) -> ReplyState:
    """A result's answer read as its live API's whole (non-streamed) reply: the stream's state it adds up to."""
    if path == embeddings.PATH:
        return embeddings.parse(orjson.dumps(body))
    state: StreamState
    whole = WHOLE.get(path)
    if whole is not None:  # Responses, Messages: read into their own kind of state
        events = EventStreamState()
        whole(events, body)
        state = events
    else:
        state = StreamState()
        protocol.apply_whole(state, body)
    state.done = True
    state.text_events = 0  # no stream: the output's token count is the usage's, or none (never a count of events)
    return state


def outcomes(lines: Iterator[tuple[int, Any]], parse: Callable[[Any], Outcome],
             warn: Callable[[str], None]) -> Iterator[Outcome]:
    """The result lines' outcomes; a line that is none is warned about and left out."""
    for number, obj in lines:
        try:
            yield parse(obj)
        except ValueError as exc:
            warn(f"result line {number}: {exc}: skipped")
