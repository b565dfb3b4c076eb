"""The mock's Anthropic Message Batches: ``/v1/messages/batches``.

Why it exists: ``streamrun batch --api anthropic`` sends its requests in one
body, polls the batch until it has ended and reads its results; a test
needs a server that does that as strictly as Anthropic's (``batch_jobs``
answers the requests, each as ``POST /v1/messages`` would).

What it checks
    The key and ``anthropic-version`` as ``/v1/messages`` does; a body of
    ``requests`` only (1 to 100,000, at most 256 MB), each ``{custom_id,
    params}`` with ``custom_id`` matching ``^[a-zA-Z0-9_-]{1,64}$`` and
    unique in the batch, ``params`` an object.  The params themselves are
    checked when the request is answered: a bad one is an ``errored``
    result, as Anthropic reports it.

Routes
    ``POST /v1/messages/batches`` (``processing_status`` ``in_progress``,
    ``request_counts.processing`` the requests), ``GET
    /v1/messages/batches/{id}``, ``POST .../{id}/cancel`` (``canceling``),
    ``GET .../{id}/results`` (the JSONL of ``{custom_id, result}``:
    ``succeeded`` with the message, ``errored`` with the error response,
    ``canceled``, ``expired``; only once the batch has ``ended``, when its
    ``results_url`` is set and the counts are made), ``GET
    /v1/messages/batches`` (newest first; ``limit``, ``after_id``,
    ``before_id``).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import web

from ..stream.paths import MESSAGES_PATH
from .anthropic import anthropic_error, header_refusal
from .batch_jobs import STORE_KEY, Answer, BatchStore, Job, loopback_target, read_limited
from .reply import answer
from .state import STATE_KEY, MockState
from .validate import Refusal

__all__ = ["CUSTOM_ID", "MAX_REQUESTS", "MAX_BYTES", "install_message_batches"]

BATCHES_PATH = MESSAGES_PATH + "/batches"
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1000 * 1000
DAY_S = 24 * 3600


def _json(payload: Any) -> web.Response:
    return web.Response(body=orjson.dumps(payload), content_type="application/json")


def _handler(inner):
    async def handle(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE_KEY]
        refusal = header_refusal(request, state.config)
        if refusal is None:
            try:
                return await inner(request, state, request.app[STORE_KEY])
            except Refusal as exc:
                refusal = exc
        return answer(state, refusal)
    return handle


def _invalid(message: str) -> Refusal:
    return anthropic_error(400, message)


def _iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=UTC).isoformat().replace("+00:00", "Z")


def _checked(body: Any) -> list[tuple[str, str, dict[str, Any]]]:
    if not isinstance(body, dict):
        raise _invalid("The request body must be a JSON object")
    for key in body:
        if key != "requests":
            raise _invalid(f"{key}: Extra inputs are not permitted")
    requests = body.get("requests")
    if requests is None:
        raise _invalid("requests: Field required")
    if not isinstance(requests, list):
        raise _invalid("requests: Input should be a valid list")
    if not 1 <= len(requests) <= MAX_REQUESTS:
        raise _invalid(f"requests: a batch holds 1 to {MAX_REQUESTS} requests, not {len(requests)}")
    out, seen = [], set()
    for i, request in enumerate(requests):
        if not isinstance(request, dict):
            raise _invalid(f"requests.{i}: Input should be a valid dictionary or object")
        for key in request:
            if key not in ("custom_id", "params"):
                raise _invalid(f"requests.{i}.{key}: Extra inputs are not permitted")
        cid, params = request.get("custom_id"), request.get("params")
        if cid is None:
            raise _invalid(f"requests.{i}.custom_id: Field required")
        if not isinstance(cid, str) or not CUSTOM_ID.match(cid):
            raise _invalid(f"requests.{i}.custom_id: String should match pattern '^[a-zA-Z0-9_-]{{1,64}}$'")
        if cid in seen:
            raise _invalid(f"requests.{i}.custom_id: Duplicate custom_id {cid!r}: each must be unique in a batch")
        seen.add(cid)
        if not isinstance(params, dict):
            raise _invalid(f"requests.{i}.params: Input should be a valid dictionary or object")
        out.append((cid, MESSAGES_PATH, params))
    return out


async def _create(request: web.Request, state: MockState, store: BatchStore) -> web.Response:
    raw = await read_limited(request, MAX_BYTES, lambda: anthropic_error(413, "Request exceeds the maximum size"))
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _invalid("There was an error parsing the body: the request body must be JSON") from None
    requests = _checked(body)
    key = state.config.api_key
    headers = {"anthropic-version": request.headers["anthropic-version"], **({"x-api-key": key} if key else {})}
    job = Job("msgbatch_" + state.next_id(), "anthropic", requests, time.time(), loopback_target(request), headers,
              info={"origin": f"{request.scheme}://{request.host}"})

    def count(job: Job) -> None:
        state.stats.batches_created += 1
        for cid, _, _ in job.requests:
            state.stats.batch_lines[cid] = state.stats.batch_lines.get(cid, 0) + 1

    store.start(job, count)
    return _json(await _batch_object(store, job, catch_up=False))


def _result(job: Job, answer: Answer | None) -> dict[str, Any]:
    if answer is None:
        return {"type": "expired"} if job.end == "expired" else {"type": "canceled"}
    if answer.status == 200:
        return {"type": "succeeded", "message": answer.body}
    error = answer.body if isinstance(answer.body, dict) and answer.body.get("type") == "error" else {
        "type": "error", "error": {"type": "api_error", "message": answer.failure or str(answer.body)[:500]}}
    return {"type": "errored", "error": error}


async def _batch_object(store: BatchStore, job: Job, poll: bool = False, catch_up: bool = True) -> dict[str, Any]:
    end = await store.look(job, poll, catch_up)
    counts = {"processing": job.n, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    if end is not None:  # the counts are made when processing ends
        counts["processing"] = 0
        for a in job.answers:
            kind = _result(job, a)["type"]
            counts[kind] += 1
    status = "ended" if end is not None else "canceling" if job.cancel_requested is not None else "in_progress"
    return {
        "id": job.id, "type": "message_batch", "processing_status": status, "request_counts": counts,
        "ended_at": _iso(job.ended_at if end is not None else None), "created_at": _iso(job.created),
        "expires_at": _iso(job.created + DAY_S), "archived_at": None,
        "cancel_initiated_at": _iso(job.cancel_requested),
        "results_url": f"{job.info['origin']}{BATCHES_PATH}/{job.id}/results" if end is not None else None,
    }


def _job(request: web.Request, store: BatchStore) -> Job:
    ident = request.match_info["batch_id"]
    job = store.jobs.get(ident)
    if job is None or job.api != "anthropic":
        raise anthropic_error(404, f"message_batch: {ident} not found")
    return job


async def _get(request: web.Request, state: MockState, store: BatchStore) -> web.Response:
    return _json(await _batch_object(store, _job(request, store), poll=True))


async def _cancel(request: web.Request, state: MockState, store: BatchStore) -> web.Response:
    job = _job(request, store)
    if await store.look(job, poll=False) is None:
        store.cancel(job)
    return _json(await _batch_object(store, job))


async def _results(request: web.Request, state: MockState, store: BatchStore) -> web.Response:
    job = _job(request, store)
    if await store.look(job, poll=False) is None:
        raise anthropic_error(404, f"message_batch: {job.id} has not ended: its results are not available yet")
    lines = (orjson.dumps({"custom_id": cid, "result": _result(job, a)}) + b"\n"
             for (cid, _, _), a in zip(job.requests, job.answers, strict=True))
    return web.Response(body=b"".join(lines), content_type="application/binary")


async def _list(request: web.Request, state: MockState, store: BatchStore) -> web.Response:
    query = request.query
    try:
        limit = int(query.get("limit", 20))
    except ValueError:
        raise _invalid("limit: Input should be a valid integer") from None
    if not 1 <= limit <= 1000:
        raise _invalid("limit: Input should be between 1 and 1000")
    jobs = [j for j in reversed(store.jobs.values()) if j.api == "anthropic"]  # newest first
    ids = [j.id for j in jobs]
    if query.get("after_id") in ids:
        jobs = jobs[ids.index(query["after_id"]) + 1:]
    elif query.get("before_id") in ids:
        jobs = jobs[:ids.index(query["before_id"])][-limit:]
    page = jobs[:limit]
    return _json({"data": [await _batch_object(store, j) for j in page], "has_more": len(jobs) > limit,
                  "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None})


def install_message_batches(app: web.Application) -> None:
    """The routes of ``/v1/messages/batches`` (``app[STORE_KEY]`` is the store)."""
    app.router.add_post(BATCHES_PATH, _handler(_create))
    app.router.add_get(BATCHES_PATH, _handler(_list))
    app.router.add_get(BATCHES_PATH + "/{batch_id}", _handler(_get))
    app.router.add_post(BATCHES_PATH + "/{batch_id}/cancel", _handler(_cancel))
    app.router.add_get(BATCHES_PATH + "/{batch_id}/results", _handler(_results))
