"""The mock's OpenAI Files and Batch APIs: ``/v1/files`` and ``/v1/batches``.

Why it exists: ``streamrun batch`` uploads a file of Batch request lines,
creates a batch over it, polls it and downloads its output and error
files; a test needs a server that does all of that as strictly as
OpenAI's, moved along by the test (``batch_jobs`` answers the lines).

Files
    ``POST /v1/files`` (multipart ``purpose`` and ``file``; a ``batch`` file
    must be named ``*.jsonl``), ``GET /v1/files`` (``purpose``, ``limit``,
    ``after``, ``order``), ``GET /v1/files/{id}``, ``GET
    /v1/files/{id}/content``, ``DELETE /v1/files/{id}``.

Batches
    ``POST /v1/batches`` takes ``input_file_id`` (a ``batch`` file),
    ``endpoint`` (chat, completions, Responses, embeddings),
    ``completion_window`` (``"24h"``) and ``metadata`` (at most 16 string
    pairs, keys up to 64 characters, values up to 512); any other field is
    refused, as OpenAI refuses it.  The batch starts ``validating``: a file
    that is not Batch request lines (``custom_id``, ``method`` POST, ``url``
    the batch's endpoint, ``body``; ids unique; one model; at most 50,000
    lines, 200 MB, and 50,000 embedding inputs) makes it ``failed``, with
    ``errors`` naming the lines.  Then ``in_progress`` with
    ``request_counts``, then ``completed``, ``expired`` or, after ``POST
    /v1/batches/{id}/cancel`` (``cancelling``), ``cancelled``.  Once it
    ends, ``output_file_id`` holds the lines answered 200 and
    ``error_file_id`` the others (``response`` with the error body, or
    ``error`` when there was no answer); an expired batch's unanswered lines
    are in the error file as ``batch_expired``, a cancelled batch's are in
    neither.  ``GET /v1/batches`` lists them, newest first (``after``,
    ``limit``).  A line with ``"stream": true`` is answered 400.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from aiohttp import BodyPartReader, web

from ..stream.paths import CHAT_PATH, COMPLETIONS_PATH, EMBEDDINGS_PATH, RESPONSES_PATH
from .batch_jobs import STORE_KEY, Answer, BatchStore, Job, loopback_target, read_limited
from .reply import answer, bearer_refusal
from .state import STATE_KEY, MockState
from .validate import Refusal, missing

__all__ = ["ENDPOINTS", "MAX_FILE_BYTES", "MAX_BATCH_BYTES", "MAX_BATCH_LINES", "install_batches"]

ENDPOINTS = (CHAT_PATH, COMPLETIONS_PATH, RESPONSES_PATH, EMBEDDINGS_PATH)
MAX_FILE_BYTES = 512 * 1000 * 1000  # an upload
MAX_BATCH_BYTES = 200 * 1000 * 1000  # a batch's input file
MAX_BATCH_LINES = 50_000
MAX_EMBEDDING_INPUTS = 50_000
PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
_BATCH_FIELDS = frozenset({"input_file_id", "endpoint", "completion_window", "metadata", "output_expires_after"})
_LINE_FIELDS = ("custom_id", "method", "url", "body")
_SHOWN_ERRORS = 10  # a failed batch lists its first errors
DAY_S = 24 * 3600


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(payload), content_type="application/json")


def _checked(request: web.Request) -> tuple[MockState, BatchStore]:
    """The app's state and batches; raises the 401 when the key is wrong."""
    state = request.app[STATE_KEY]
    refusal = bearer_refusal(request, state.config.api_key)
    if refusal is not None:
        raise refusal
    return state, request.app[STORE_KEY]


def _handler(inner):
    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            return await inner(request)
        except Refusal as refusal:
            return answer(request.app[STATE_KEY], refusal)
    return handle


def _not_found(kind: str, ident: str) -> Refusal:
    return Refusal.error(404, f"No such {kind} object: {ident}", param="id")


# --------------------------------------------------------------------------
# Files


def _file_object(f: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in f.items() if k != "data"}


def _new_file(store: BatchStore, state: MockState, filename: str, purpose: str, data: bytes) -> dict[str, Any]:
    created = int(time.time())
    f: dict[str, Any] = {
        "id": "file-" + state.next_id(), "object": "file", "bytes": len(data), "created_at": created,
        "expires_at": created + 30 * DAY_S if purpose == "batch" else None, "filename": filename,
        "purpose": purpose, "status": "processed", "status_details": None, "data": data}
    store.files[f["id"]] = f
    return f


async def _upload(request: web.Request) -> web.Response:
    state, store = _checked(request)
    if not (request.content_type or "").startswith("multipart/form-data"):
        raise Refusal.error(400, "The request must be multipart/form-data with 'file' and 'purpose'.")
    purpose: str | None = None
    data: bytes | None = None
    filename = "file"
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):  # a part that is itself multipart: no field of the form
            raise Refusal.error(400, "The request must be multipart/form-data with 'file' and 'purpose', not a "
                                     "nested multipart part.")
        if part.name == "purpose":
            purpose = (await part.text()).strip()
        elif part.name == "file":
            filename = part.filename or "file"
            data = bytes(await part.read(decode=False))
            if len(data) > MAX_FILE_BYTES:
                raise Refusal.error(413, f"The file is over the upload limit of {MAX_FILE_BYTES} bytes.")
    if data is None:
        raise missing("file")
    if purpose is None:
        raise missing("purpose")
    if purpose not in PURPOSES:
        raise Refusal.error(400, f"'{purpose}' is not one of {list(PURPOSES)} - 'purpose'", param="purpose")
    if purpose == "batch" and not filename.endswith(".jsonl"):
        raise Refusal.error(400, "Invalid file format for Batch API. Must be .jsonl", param="file")
    state.stats.files_uploaded += 1
    return _json(_file_object(_new_file(store, state, filename, purpose, data)))


def _page(items: list[dict[str, Any]], request: web.Request, max_limit: int, default: int) -> dict[str, Any]:
    """A cursor page (``after``, ``limit``) of ``items`` (already in list order), as OpenAI lists."""
    query = request.query
    try:
        limit = int(query.get("limit", default))
    except ValueError:
        raise Refusal.error(400, "Invalid 'limit': expected an integer.", param="limit") from None
    if not 1 <= limit <= max_limit:
        raise Refusal.error(400, f"Invalid 'limit': expected 1 to {max_limit}, got {limit}.", param="limit")
    after = query.get("after")
    if after is not None:
        ids = [i["id"] for i in items]
        items = items[ids.index(after) + 1:] if after in ids else []
    page = items[:limit]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(items) > limit}


async def _files(request: web.Request) -> web.Response:
    _, store = _checked(request)
    purpose = request.query.get("purpose")
    order = request.query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise Refusal.error(400, f"Invalid 'order': '{order}'. Supported values are: 'asc', 'desc'.", param="order")
    files = [_file_object(f) for f in store.files.values() if purpose is None or f["purpose"] == purpose]
    if order == "desc":
        files.reverse()  # kept in upload order
    return _json(_page(files, request, 10_000, 10_000))


def _file(request: web.Request) -> dict[str, Any]:
    _, store = _checked(request)
    ident = request.match_info["file_id"]
    f = store.files.get(ident)
    if f is None:
        raise _not_found("File", ident)
    return f


async def _get_file(request: web.Request) -> web.Response:
    return _json(_file_object(_file(request)))


async def _file_content(request: web.Request) -> web.Response:
    f = _file(request)
    return web.Response(body=f["data"], content_type="application/octet-stream")


async def _delete_file(request: web.Request) -> web.Response:
    f = _file(request)
    del request.app[STORE_KEY].files[f["id"]]
    return _json({"id": f["id"], "object": "file", "deleted": True})


# --------------------------------------------------------------------------
# Batches


def _check_create(body: dict[str, Any], store: BatchStore) -> dict[str, Any]:
    """The create request's fields, checked as OpenAI checks them; the input file."""
    for key in body:
        if key not in _BATCH_FIELDS:
            raise Refusal.error(400, f"Unrecognized request argument supplied: {key}", param=key)
    for key in ("input_file_id", "endpoint", "completion_window"):
        if key not in body:
            raise missing(key)
        if not isinstance(body[key], str):
            raise Refusal.error(400, f"Invalid type for '{key}': expected a string.", param=key, code="invalid_type")
    if body["endpoint"] not in ENDPOINTS:
        supported = ", ".join(f"'{e}'" for e in ENDPOINTS)
        raise Refusal.error(400, f"Invalid value for 'endpoint': '{body['endpoint']}'. Supported values are: "
                            f"{supported}.", param="endpoint", code="invalid_value")
    if body["completion_window"] != "24h":
        raise Refusal.error(400, "Invalid value for 'completion_window': supported values are: '24h'.",
                            param="completion_window", code="invalid_value")
    metadata = body.get("metadata")
    if metadata is not None:
        if not isinstance(metadata, dict) or len(metadata) > 16:
            raise Refusal.error(400, "Invalid 'metadata': expected an object of at most 16 pairs.", param="metadata")
        for key, value in metadata.items():
            if len(key) > 64 or not isinstance(value, str) or len(value) > 512:
                raise Refusal.error(400, f"Invalid 'metadata.{key}': keys are strings of up to 64 characters, "
                                    "values strings of up to 512.", param="metadata")
    f = store.files.get(body["input_file_id"])
    if f is None:
        raise _not_found("File", body["input_file_id"])
    if f["purpose"] != "batch":
        raise Refusal.error(400, f"The file {f['id']} has purpose '{f['purpose']}', not 'batch'.",
                            param="input_file_id")
    return f


def _error(line: int, code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"code": code, "message": message, "param": param, "line": line}


def _read_lines(data: bytes, endpoint: str) -> tuple[list[tuple[str, str, dict[str, Any]]], list[dict[str, Any]]]:
    """The file's Batch request lines, and what is wrong with them (a failed batch's ``errors``)."""
    if len(data) > MAX_BATCH_BYTES:
        return [], [_error(0, "file_too_large", f"The input file is over {MAX_BATCH_BYTES} bytes.")]
    requests: list[tuple[str, str, dict[str, Any]]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()
    models: set[str] = set()
    inputs = 0
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            line = orjson.loads(raw)
        except orjson.JSONDecodeError:
            errors.append(_error(number, "invalid_json_line", "This line is not valid JSON."))
            continue
        if not isinstance(line, dict):
            errors.append(_error(number, "invalid_request", "A line must be a JSON object."))
            continue
        absent = [k for k in _LINE_FIELDS if k not in line]
        extra = [k for k in line if k not in _LINE_FIELDS]
        if absent or extra:
            what = f"missing {absent[0]!r}" if absent else f"unknown field {extra[0]!r}"
            errors.append(_error(number, "invalid_request", f"Invalid line: {what}.", (absent or extra)[0]))
            continue
        cid, body = line["custom_id"], line["body"]
        if not isinstance(cid, str) or not cid:
            errors.append(_error(number, "invalid_request", "custom_id must be a non-empty string.", "custom_id"))
        elif cid in seen:
            errors.append(_error(number, "duplicate_custom_id", f"The custom_id {cid!r} is used more than once.",
                                 "custom_id"))
        elif line["method"] != "POST":
            errors.append(_error(number, "invalid_request", "method must be POST.", "method"))
        elif line["url"] != endpoint:
            errors.append(_error(number, "mismatched_url", f"The url {line['url']!r} is not the batch's "
                                 f"endpoint {endpoint!r}.", "url"))
        elif not isinstance(body, dict) or not isinstance(body.get("model"), str):
            errors.append(_error(number, "invalid_request", "body must be an object with a model.", "body"))
        else:
            seen.add(cid)
            models.add(body["model"])
            if endpoint == EMBEDDINGS_PATH:
                inputs += len(body["input"]) if isinstance(body.get("input"), list) else 1
            requests.append((cid, endpoint, body))
    if len(models) > 1:
        errors.append(_error(0, "mixed_models", f"A batch takes the requests of one model, not {sorted(models)}."))
    if len(requests) > MAX_BATCH_LINES:
        errors.append(_error(0, "too_many_requests", f"A batch holds at most {MAX_BATCH_LINES} requests."))
    if inputs > MAX_EMBEDDING_INPUTS:
        errors.append(_error(0, "too_many_inputs", f"An embeddings batch holds at most {MAX_EMBEDDING_INPUTS} inputs."))
    if not requests and not errors:
        errors.append(_error(0, "empty_file", "The input file has no requests."))
    return requests, errors


def _count(state: MockState):
    def count(job: Job) -> None:
        state.stats.batches_created += 1
        for cid, _, _ in job.requests:
            state.stats.batch_lines[cid] = state.stats.batch_lines.get(cid, 0) + 1
    return count


async def _create(request: web.Request) -> web.Response:
    state, store = _checked(request)
    raw = await read_limited(request, 1 << 20, lambda: Refusal.error(413, "The request body is too large."))
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise Refusal.error(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise Refusal.error(400, "The request body must be a JSON object.")
    f = _check_create(body, store)
    requests, errors = _read_lines(f["data"], body["endpoint"])
    key = state.config.api_key
    job = Job("batch_" + state.next_id(), "openai", [] if errors else requests, time.time(),
              loopback_target(request), {"Authorization": f"Bearer {key}"} if key else {},
              info={"endpoint": body["endpoint"], "input_file_id": f["id"], "metadata": body.get("metadata"),
                    "errors": errors[:_SHOWN_ERRORS], "model": next(iter(requests))[2]["model"] if requests else None})
    if errors:
        job.end, job.ended_at = "failed", time.time()
        store.jobs[job.id] = job
        state.stats.batches_created += 1
    else:
        store.start(job, _count(state))
    return _json(await _batch_object(store, state, job, status="validating", catch_up=False))


def _ts(t: float | None) -> int | None:
    return None if t is None else int(t)


async def _batch_object(store: BatchStore, state: MockState, job: Job, status: str | None = None,
                        poll: bool = False, catch_up: bool = True) -> dict[str, Any]:
    end = await store.look(job, poll, catch_up)
    if end is not None and "output_file_id" not in job.info:
        _write_results(store, state, job)
    if status is None:
        status = end or ("cancelling" if job.cancel_requested is not None else "in_progress")
    info = job.info
    done = [a for a in job.answers if a is not None]
    ok = sum(a.status == 200 for a in done)
    failed = len(done) - ok + (job.n - len(done) if end == "expired" else 0)
    ended = job.ended_at if end is not None else None
    return {
        "id": job.id, "object": "batch", "endpoint": info["endpoint"], "model": info["model"],
        "errors": {"object": "list", "data": info["errors"]} if info["errors"] else None,
        "input_file_id": info["input_file_id"], "completion_window": "24h", "status": status,
        "output_file_id": info.get("output_file_id"), "error_file_id": info.get("error_file_id"),
        "created_at": _ts(job.created), "in_progress_at": _ts(job.created) if end != "failed" else None,
        "expires_at": _ts(job.created + DAY_S), "finalizing_at": _ts(ended) if end == "completed" else None,
        "completed_at": _ts(ended) if end == "completed" else None,
        "failed_at": _ts(ended) if end == "failed" else None, "expired_at": _ts(ended) if end == "expired" else None,
        "cancelling_at": _ts(job.cancel_requested), "cancelled_at": _ts(ended) if end == "cancelled" else None,
        "request_counts": {"total": job.n, "completed": ok, "failed": failed},
        "metadata": info["metadata"],
    }


def _result_line(job: Job, i: int, answer: Answer | None) -> tuple[bool, dict[str, Any]] | None:
    """(into the output file?, the line) for one request; None for a cancelled batch's unanswered line."""
    cid = job.requests[i][0]
    rid = f"batch_req_{job.id.removeprefix('batch_')}{i:06d}"
    if answer is None:
        if job.end != "expired":
            return None
        return False, {"id": rid, "custom_id": cid, "response": None, "error": {
            "code": "batch_expired",
            "message": "This request could not be executed before the completion window expired."}}
    if answer.status is None:
        return False, {"id": rid, "custom_id": cid, "response": None,
                       "error": {"code": "server_error", "message": answer.failure}}
    response = {"status_code": answer.status, "request_id": answer.request_id or rid, "body": answer.body}
    return answer.status == 200, {"id": rid, "custom_id": cid, "response": response, "error": None}


def _write_results(store: BatchStore, state: MockState, job: Job) -> None:
    """A batch that ended: its output and error files."""
    out: list[bytes] = []
    err: list[bytes] = []
    for i, got in enumerate(job.answers):
        line = _result_line(job, i, got)
        if line is not None:
            (out if line[0] else err).append(orjson.dumps(line[1]) + b"\n")
    for key, lines, kind in (("output_file_id", out, "output"), ("error_file_id", err, "error")):
        job.info[key] = (_new_file(store, state, f"batch_{job.id}_{kind}.jsonl", "batch_output", b"".join(lines))["id"]
                         if lines else None)


def _job(request: web.Request) -> tuple[MockState, BatchStore, Job]:
    state, store = _checked(request)
    ident = request.match_info["batch_id"]
    job = store.jobs.get(ident)
    if job is None or job.api != "openai":
        raise _not_found("batch", ident)
    return state, store, job


async def _get_batch(request: web.Request) -> web.Response:
    state, store, job = _job(request)
    return _json(await _batch_object(store, state, job, poll=True))


async def _cancel(request: web.Request) -> web.Response:
    state, store, job = _job(request)
    end = await store.look(job, poll=False)
    if end is not None:
        raise Refusal.error(409, f"Cannot cancel a batch with status '{end}'.")
    store.cancel(job)
    return _json(await _batch_object(store, state, job, status="cancelling"))


async def _list_batches(request: web.Request) -> web.Response:
    state, store = _checked(request)
    jobs = [j for j in reversed(store.jobs.values()) if j.api == "openai"]  # newest first
    return _json(_page([await _batch_object(store, state, j) for j in jobs], request, 100, 20))


def install_batches(app: web.Application) -> None:
    """The routes of ``/v1/files`` and ``/v1/batches`` (``app[STORE_KEY]`` is the store)."""
    app.router.add_post("/v1/files", _handler(_upload))
    app.router.add_get("/v1/files", _handler(_files))
    app.router.add_get("/v1/files/{file_id}", _handler(_get_file))
    app.router.add_get("/v1/files/{file_id}/content", _handler(_file_content))
    app.router.add_delete("/v1/files/{file_id}", _handler(_delete_file))
    app.router.add_post("/v1/batches", _handler(_create))
    app.router.add_get("/v1/batches", _handler(_list_batches))
    app.router.add_get("/v1/batches/{batch_id}", _handler(_get_batch))
    app.router.add_post("/v1/batches/{batch_id}/cancel", _handler(_cancel))
