"""The request pipeline shared by the mock's /v1/responses and /v1/messages.

Why it exists: the two APIs differ in their checks, their error shapes and
their events, not in what a server does with a request.  This is that
order, written once, with an ``Api`` (``responses``, ``anthropic``)
supplying what differs.  Same order as chat (``app``): the API key (401),
then the request's validation (400/404, in each API's own error shape),
then the ``mock`` field's faults, the quotas, the random faults, then the
reply on the same ``Schedule`` (``ttft``, ``tokens_per_s``,
``output_tokens``, ``tokens_per_chunk``, ``--script``; see ``plan``),
streamed (``send.stream``) or as one JSON object (``send.hold``).

Faults (``body["mock"]``, as chat)
    ``429``/``500``/``400``/``503`` answer in the API's shape
    (``Api.fault``); ``drop``, ``error_event``, ``no_done`` and ``stall``
    act on the stream as ``send`` describes.  Without a stream,
    ``error_event`` answers 500 in the API's shape and ``drop`` cuts the
    connection before any reply.  Quotas count the prompt estimate plus the
    request's output limit (else ``output_tokens``).
"""

from __future__ import annotations

import math
from typing import Any, Protocol

import orjson
from aiohttp import web

from .config import MockConfig
from .frames import Schedule
from .plan import ApiRequest, Plan, plan
from .reply import StreamFrames, answer, hold, stream, tracked
from .state import STATUS_FAULTS, MockState, admit, random_fault, script_index, scripted_fault, seconds_header
from .validate import Refusal

__all__ = ["Api", "ApiFrames", "handle"]


class ApiFrames(StreamFrames, Protocol):
    """One reply's events (``StreamFrames``) and its non-streaming form."""

    def whole(self) -> dict[str, Any]:
        """The non-streaming reply."""
        ...


class Api(Protocol):
    """What one API does its own way."""

    path: str
    id_header: str  # the response header carrying the request id

    def check_headers(self, request: web.Request, config: MockConfig) -> Refusal | None:
        """The API key and any required header: a refusal, or None."""
        ...

    def parse(self, raw: bytes, content_type: str | None, config: MockConfig) -> ApiRequest:
        """The body checked as the API checks it.  Raises ``Refusal``."""
        ...

    def shaped(self, refusal: Refusal) -> Refusal:
        """A refusal of the shared machinery (the ``mock`` field's) in the API's shape."""
        ...

    def fault(self, fault: str) -> Refusal:
        """The answer to an injected status fault."""
        ...

    def over_quota(self, which: str | None) -> Refusal:
        """The 429 of a quota ("requests" or "tokens")."""
        ...

    def frames(self, rid: str, model: str, req: ApiRequest, plan: Plan) -> ApiFrames:
        ...


async def handle(request: web.Request, api: Api) -> web.StreamResponse:
    """One request to ``api``'s endpoint, start to end."""
    return await tracked(request, lambda state, t0: _serve(request, state, api, t0))


async def _serve(request: web.Request, state: MockState, api: Api, t0: float) -> web.StreamResponse:
    config = state.config
    denied = api.check_headers(request, config)
    if denied is not None:
        return answer(state, denied)
    try:
        req = api.parse(await request.read(), request.headers.get("Content-Type"), config)
    except Refusal as refusal:
        return answer(state, refusal)
    try:
        fault, retry_after = scripted_fault(state, req.mock)
        index = script_index(state, req.mock)
    except Refusal as refusal:
        return answer(state, api.shaped(refusal))
    if fault in STATUS_FAULTS:
        return _fault_answer(state, api, fault, retry_after)

    headers: dict[str, str] = {}
    if state.rpm or state.tpm:
        limit = req.max_tokens if req.max_tokens is not None else config.output_tokens
        wait, which, headers = admit(state, req.prompt_tokens + limit)
        if wait > 0:
            headers.update(seconds_header(math.ceil(wait * 1000) / 1000))
            return answer(state, api.over_quota(which), headers)
    if fault is None:
        fault = random_fault(state)
        if fault in STATUS_FAULTS:
            return _fault_answer(state, api, fault, retry_after)

    reply, schedule = plan(state, req, index)
    state.stats.prompt_tokens += req.prompt_tokens
    rid = state.next_id()
    headers[api.id_header] = rid
    frames = api.frames(rid, config.model, req, reply)
    if req.stream:
        return await stream(request, state, frames, schedule, t0, fault, headers)
    return await _respond_json(request, state, api, frames, reply, schedule, t0, fault, headers)


def _fault_answer(state: MockState, api: Api, fault: str, retry_after: float) -> web.Response:
    return answer(state, api.fault(fault), seconds_header(retry_after) if fault == "429" else None)


async def _respond_json(request: web.Request, state: MockState, api: Api, frames: ApiFrames, reply: Plan,
                        schedule: Schedule, t0: float, fault: str, headers: dict[str, str]) -> web.StreamResponse:
    """The non-streaming reply, sent when the last token would have been."""
    dropped = await hold(request, state, schedule, t0, fault)
    if dropped is not None:
        return dropped
    if fault == "error_event":
        return answer(state, api.fault("500"))
    state.stats.count_status(200)
    state.stats.non_stream_completed += 1
    state.stats.tokens_sent += reply.reasoning + reply.text
    return web.Response(body=orjson.dumps(frames.whole()), content_type="application/json", headers=headers)
