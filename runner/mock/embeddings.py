"""The mock's embeddings API: ``POST /v1/embeddings``, one JSON answer, no stream.

Why it exists: Batch files may hold embeddings lines, and the runner needs
a server that checks them as OpenAI's does: JSON body, a served ``model``,
``input`` a non-empty string or list (of strings or of token ids),
``encoding_format`` ``float`` or ``base64``, ``dimensions`` >= 1, nothing
else but ``user`` (and the mock's own ``mock`` field for faults).  The
vectors are deterministic in the input (the same text, the same vector), of
``dimensions`` numbers (default 8), so a test can check they came back in
order.
"""

from __future__ import annotations

import base64
import struct
import zlib
from typing import Any

import orjson
from aiohttp import web

from ..inputs.tokens import estimate_text_tokens
from ..stream.paths import EMBEDDINGS_PATH
from .config import MockConfig
from .reply import answer, bearer_refused, tracked
from .state import STATUS_FAULTS, scripted_fault, seconds_header
from .validate import Refusal, bad_type, check_content_type, check_model, decode, is_int, missing

PATH = EMBEDDINGS_PATH
DEFAULT_DIMENSIONS = 8
_FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user", "mock"})


def vector(text: str, dimensions: int) -> list[float]:
    """A unit-free, deterministic vector of the text (crc32-seeded), rounded so it survives JSON exactly."""
    seed = zlib.crc32(text.encode())
    return [round(((seed * (i + 1) * 2654435761) % 2000) / 1000 - 1, 3) for i in range(dimensions)]


def _check(body: dict[str, Any], config: MockConfig) -> tuple[list[str], int, str]:
    for key in body:
        if key not in _FIELDS:
            raise Refusal.error(400, f"Unrecognized request argument supplied: {key}", param=key)
    if "model" not in body:
        raise missing("model")
    if not isinstance(body["model"], str):
        raise bad_type("model", "a string", body["model"])
    check_model(body, config)
    inputs = body.get("input")
    if inputs is None:
        raise missing("input")
    if isinstance(inputs, str):
        inputs = [inputs]
    if not isinstance(inputs, list) or not inputs:
        raise Refusal.error(400, "'input' must be a non-empty string or array", param="input")
    texts = []
    for item in inputs:
        if isinstance(item, str) and item:
            texts.append(item)
        elif isinstance(item, list) and item and all(is_int(t) for t in item):
            texts.append(" ".join(map(str, item)))
        else:
            raise Refusal.error(400, "'input' items must be non-empty strings or arrays of token ids", param="input")
    dims = body.get("dimensions", DEFAULT_DIMENSIONS)
    if not is_int(dims) or dims < 1:
        raise Refusal.error(400, "'dimensions' must be an integer >= 1", param="dimensions")
    fmt = body.get("encoding_format", "float")
    if fmt not in ("float", "base64"):
        raise Refusal.error(400, "'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    return texts, dims, fmt


async def embeddings(request: web.Request) -> web.StreamResponse:
    return await tracked(request, lambda state, t0: _serve(request, state))


async def _serve(request: web.Request, state) -> web.Response:
    denied = bearer_refused(request, state)
    if denied is not None:
        return denied
    raw = await request.read()
    try:
        check_content_type(request.headers.get("Content-Type"), raw)
        body = decode(raw)
        texts, dims, fmt = _check(body, state.config)
        fault, retry_after = scripted_fault(state, body.get("mock") or {})
    except Refusal as refusal:
        return answer(state, refusal)
    if fault in STATUS_FAULTS:
        status = int(fault) if fault.isdigit() else 500
        return answer(state, Refusal.error(status, f"mock: injected {fault}", "server_error"),
                      seconds_header(retry_after) if fault == "429" else None)
    data = []
    for i, text in enumerate(texts):
        values = vector(text, dims)
        shown: Any = values if fmt == "float" else base64.b64encode(struct.pack(f"<{dims}f", *values)).decode()
        data.append({"object": "embedding", "index": i, "embedding": shown})
    tokens = sum(estimate_text_tokens(t) for t in texts)
    state.stats.count_status(200)
    reply = {"object": "list", "data": data, "model": body["model"],
             "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return web.Response(body=orjson.dumps(reply), content_type="application/json",
                        headers={"x-request-id": state.next_id()})
