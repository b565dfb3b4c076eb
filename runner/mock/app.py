"""The HTTP side of the mock: routes, the completion handler, its replies.

Why it exists: this is where a request becomes a response, in the order a
real server works: the API key (401), then the request's validation
(``request.parse``: 422/400/404), then the mock's own fault injection and
quota accounting, then the reply, streamed on its ``Schedule`` or sent as
one JSON object when the last token would have been.

A request with ``n`` > 1 gets ``n`` choices (``frames.plan_choices``): the
schedule times choice 0's events and every other choice's event ``j`` goes
out right after choice 0's, one choice per chunk, as vLLM interleaves
them; the finish chunks follow, one per choice, then the usage chunk
(completion tokens over all choices).  With ``logprobs`` every content
chunk carries fake, deterministic logprobs for its tokens.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import orjson
from aiohttp import web

from .anthropic import MESSAGES_PATH, messages
from .batch_jobs import STORE_KEY, BatchStore
from .batches import install_batches
from .config import MockConfig
from .embeddings import PATH as EMBEDDINGS_PATH
from .embeddings import embeddings
from .frames import DONE, ERROR_EVENT, Choice, Frames, Schedule, choice_logprobs, frames, plan_choices, reply_text
from .message_batches import install_message_batches
from .metrics import install_metrics
from .reply import answer, bearer_refused, hold, stream, tracked
from .request import Request, parse
from .responses import RESPONSES_PATH, responses
from .state import (
    STATE_KEY,
    STATUS_FAULTS,
    MockState,
    admit,
    random_fault,
    script_index,
    scripted_fault,
    seconds_header,
)
from .validate import Refusal

__all__ = ["build_app"]


# --------------------------------------------------------------------------
# Error answers


def _fault_response(state: MockState, fault: str, retry_after: float) -> web.Response:
    if fault == "429":
        refusal = Refusal.error(429, "mock: rate limit reached (injected)", "requests", code="rate_limit_exceeded")
        return answer(state, refusal, seconds_header(retry_after))
    if fault == "500":
        refusal = Refusal.error(500, "mock: the server had an error (injected)", "server_error", code="internal_error")
    elif fault == "503":
        refusal = Refusal.error(
            503, "mock: the engine is overloaded (injected)", "server_error", code="service_unavailable"
        )
    else:
        refusal = Refusal.error(400, "mock: invalid request (injected)", code="invalid_request")
    return answer(state, refusal)


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


# --------------------------------------------------------------------------
# The completion handler


@dataclass(slots=True)
class Reply:
    """Everything decided about one admitted request's response."""

    request: web.Request
    req: Request
    chat: bool
    rid: str
    t0: float  # perf_counter() when the handler started; the schedule counts from here
    schedule: Schedule
    n_tokens: int  # choice 0's; see choices
    finish_reason: str
    fault: str
    headers: dict[str, str]
    choices: tuple[Choice, ...]


async def _completion(request: web.Request, chat: bool) -> web.StreamResponse:
    return await tracked(request, lambda state, t0: _completion_inner(request, state, chat, t0))


async def _completion_inner(request: web.Request, state: MockState, chat: bool, t0: float) -> web.StreamResponse:
    denied = bearer_refused(request, state)
    if denied is not None:
        return denied
    config = state.config
    try:
        req = parse(await request.read(), request.headers.get("Content-Type"), chat, config)
        fault, retry_after = scripted_fault(state, req.mock)
        index = script_index(state, req.mock)
    except Refusal as refusal:
        return answer(state, refusal)

    if fault in STATUS_FAULTS:
        return _fault_response(state, fault, retry_after)

    headers: dict[str, str] = {}
    n_tokens = req.max_tokens if req.max_tokens is not None else config.output_tokens
    if state.rpm or state.tpm:
        wait, which, headers = admit(state, req.prompt_tokens + n_tokens)
        if wait > 0:
            headers.update(seconds_header(math.ceil(wait * 1000) / 1000))
            limited = Refusal.error(
                429, f"mock: rate limit reached for {which} per min", which or "requests", code="rate_limit_exceeded"
            )
            return answer(state, limited, headers)

    if fault is None:
        fault = random_fault(state)
        if fault in STATUS_FAULTS:
            return _fault_response(state, fault, retry_after)

    k = config.tokens_per_chunk
    if index is not None:
        offsets = state.script_offsets[index]
        schedule = Schedule(len(offsets), offsets=offsets)
        n_tokens = len(offsets) * k
        finish_reason = "stop"
    else:
        schedule = Schedule(-(-n_tokens // k), config.ttft, k * config.token_interval)
        finish_reason = "stop" if req.max_tokens is None else "length"

    choices = plan_choices(req.seed, req.n, n_tokens, finish_reason)
    state.stats.prompt_tokens += req.prompt_tokens
    reply = Reply(request, req, chat, state.next_id(), t0, schedule, n_tokens, finish_reason, fault, headers, choices)
    if req.stream:
        return await _stream(state, reply)
    return await _respond_json(state, reply)


class _ChatFrames:
    """A completion's chunks as ``send.stream`` asks for them."""

    def __init__(self, tmpl: Frames, req: Request) -> None:
        self.tmpl, self.req, self.sent = tmpl, req, 0
        self.opening, self.events = tmpl.opening, tmpl.events

    def sent_tokens(self, n_events: int) -> int:
        self.sent = self.tmpl.sent_tokens(n_events)
        return self.sent

    def closing(self, terminal: bool) -> list[bytes]:
        out = self.tmpl.closing()
        if self.req.include_usage:
            out.append(self.tmpl.usage(_usage(self.req.prompt_tokens, self.sent)))
        if terminal:
            out.append(DONE)
        return out

    def error(self) -> bytes:
        return ERROR_EVENT


async def _stream(state: MockState, reply: Reply) -> web.StreamResponse:
    """The SSE reply: role chunk(s) at once, content events on the schedule, then finish/usage/[DONE]."""
    req, chat = reply.req, reply.chat
    # The same keys again in send.stream keep their place: x-request-id goes out last.
    reply.headers.update({"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "x-request-id": reply.rid})
    tmpl = frames(chat, ("chatcmpl-" if chat else "cmpl-") + reply.rid, int(time.time()), state.model_json,
                  req.include_usage, reply.choices, state.config.tokens_per_chunk, req.logprobs)
    return await stream(reply.request, state, _ChatFrames(tmpl, req), reply.schedule, reply.t0, reply.fault,
                        reply.headers)


async def _respond_json(state: MockState, reply: Reply) -> web.StreamResponse:
    """A non-streaming reply, sent when the last token would have been."""
    fault, chat, top = reply.fault, reply.chat, reply.req.logprobs
    dropped = await hold(reply.request, state, reply.schedule, reply.t0, fault)
    if dropped is not None:
        return dropped
    if fault == "error_event":
        return _fault_response(state, "500", 0)
    common = {
        "id": ("chatcmpl-" if chat else "cmpl-") + reply.rid,
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": state.config.model,
        "system_fingerprint": "fp_mock",
    }
    choices = []
    for c in reply.choices:
        text = reply_text(c.seed, c.n_tokens)
        logprobs = None if top is None else choice_logprobs(c, chat, top)
        if chat:
            message = {"role": "assistant", "content": text, "refusal": None}
            choice = {"index": c.index, "message": message, "logprobs": logprobs, "finish_reason": c.finish_reason}
        else:
            choice = {"text": text, "index": c.index, "logprobs": logprobs, "finish_reason": c.finish_reason}
        choices.append(choice)
    n_tokens = sum(c.n_tokens for c in reply.choices)
    payload = {**common, "choices": choices, "usage": _usage(reply.req.prompt_tokens, n_tokens)}
    state.stats.count_status(200)
    state.stats.non_stream_completed += 1
    state.stats.tokens_sent += n_tokens
    reply.headers["x-request-id"] = reply.rid
    return web.Response(body=orjson.dumps(payload), content_type="application/json", headers=reply.headers)


# --------------------------------------------------------------------------
# Routes


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    return await _completion(request, chat=True)


async def _completions(request: web.Request) -> web.StreamResponse:
    return await _completion(request, chat=False)


async def _models(request: web.Request) -> web.Response:
    state = request.app[STATE_KEY]
    denied = bearer_refused(request, state)
    if denied is not None:
        return denied
    data = [
        {"id": name, "object": "model", "created": 0, "owned_by": "streamrun-mock"}
        for name in state.config.served_models
    ]
    return web.Response(body=orjson.dumps({"object": "list", "data": data}), content_type="application/json")


async def _stats(request: web.Request) -> web.Response:
    stats = request.app[STATE_KEY].stats
    return web.Response(body=orjson.dumps(stats.to_dict()), content_type="application/json")


async def _traceparents(request: web.Request) -> web.Response:
    """The W3C traceparent headers the completion requests carried (the latest TRACEPARENTS_KEPT), in order."""
    return web.Response(body=orjson.dumps(list(request.app[STATE_KEY].traceparents)), content_type="application/json")


async def _reset(request: web.Request) -> web.Response:
    request.app[STATE_KEY].reset()
    return web.Response(body=b'{"reset":true}', content_type="application/json")


async def _cancel_in_flight(app: web.Application) -> None:
    """On shutdown, end in-flight completions (stalls sleep for an hour)
    instead of letting the runner wait out its shutdown timeout."""
    for task in list(app[STATE_KEY].tasks):
        task.cancel()
    await app[STORE_KEY].close()


def build_app(config: MockConfig) -> web.Application:
    """The mock as an aiohttp application; its state is ``app[STATE_KEY]``."""
    app = web.Application()
    app[STATE_KEY] = MockState(config)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_post("/v1/completions", _completions)
    app.router.add_post(RESPONSES_PATH, responses)
    app.router.add_post(MESSAGES_PATH, messages)
    app.router.add_post(EMBEDDINGS_PATH, embeddings)
    app.router.add_get("/v1/models", _models)
    app[STORE_KEY] = BatchStore(config)
    install_batches(app)  # /v1/files, /v1/batches (batches.py)
    install_message_batches(app)  # /v1/messages/batches (message_batches.py)
    app.router.add_get("/mock/stats", _stats)
    app.router.add_get("/mock/traceparents", _traceparents)
    app.router.add_post("/mock/reset", _reset)
    install_metrics(app)  # GET /metrics, vLLM's names (metrics.py)
    app.on_shutdown.append(_cancel_in_flight)
    return app
