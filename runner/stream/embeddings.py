"""`POST /v1/embeddings`: one JSON request, one JSON answer, no stream.

Why here, beside the streaming client: the same session, timeouts, bounds
and typed errors apply, but there is no event stream to decode, so latency
is e2e only.  Batch files may hold embeddings lines next to chat lines, so a
pipeline can embed what it generated with the same tool.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from .client import CONNECT_TIMEOUTS, Attempt, connect_failure, read_bounded, status_error
from .config import Limits, Timeouts
from .connection import attempt_context, reset_attempt_context
from .errors import ConnectError, MalformedResponse, RequestError, RequestTimeout
from .paths import EMBEDDINGS_PATH
from .protocol import checked_usage, defaults_for
from .timing import Timing

PATH = EMBEDDINGS_PATH
# The run's --param defaults that the embeddings endpoint takes; generation parameters are not sent.
EMBEDDING_PARAMS = frozenset({"model", "encoding_format", "dimensions", "user"})


@dataclass
class Result:
    """An embeddings answer, shaped like a stream's state where the record reads one."""

    vectors: list[list[float]] = field(default_factory=list)
    model: str | None = None
    usage: dict[str, Any] | None = None
    response_id: str | None = None
    finish_reason: str | None = None  # never set: --retry-finish-reason has nothing to see here
    text: str = ""


def build_body(body: dict[str, Any], *, path: str = PATH, defaults: dict[str, Any], model: str | None,
               include_usage: bool, on_drop: Any = None) -> dict[str, Any]:
    """The line's body (its `input` checked by `protocol.parse_line`) over the run's embedding-relevant defaults.

    `on_drop` is accepted for the same call as the other APIs' (a line is sent as it is)."""
    out = {k: v for k, v in defaults_for(path, defaults).items() if k in EMBEDDING_PARAMS}
    out.update(body)
    if model is not None and "model" not in body:
        out["model"] = model
    return out


async def post(session: aiohttp.ClientSession, url: str, body: bytes, timeouts: Timeouts, timing: Timing,
               proxy: str | None, limits: Limits, headers: Mapping[str, str] | None = None) -> Attempt[Result]:
    """One embeddings request; typed errors as for streams (retries are the caller's).

    `headers` go with this request only (the key of the line's API)."""
    limit = sum(t for t in (timeouts.connect, timeouts.first_byte) if t) or None
    if timeouts.total:
        limit = min(limit, timeouts.total) if limit else timeouts.total
    attempt = attempt_context(timing)  # metrics.connect_s, should this request open a connection
    try:
        async with asyncio.timeout(limit):
            timing.mark_sent(time.perf_counter())
            async with session.post(url, data=body, proxy=proxy, trace_request_ctx=timing,
                                    headers={**(headers or {}), "Accept": "application/json"}) as resp:
                if resp.status != 200:
                    raise status_error(resp.status, await resp.content.read(65536), resp.headers)
                raw = await read_bounded(resp.content, limits.max_response_bytes)
                timing.end = time.perf_counter()
                return Attempt(parse(raw), timing, resp.headers)
    except CONNECT_TIMEOUTS as exc:
        raise connect_failure(exc, timeout=timeouts.connect) from exc
    except TimeoutError as exc:
        raise RequestTimeout(f"no embeddings answer within {limit:g}s") from exc
    except RequestError:
        raise
    except aiohttp.ClientConnectorError as exc:
        raise connect_failure(exc) from exc
    except aiohttp.ClientError as exc:
        raise ConnectError(f"{type(exc).__name__}: {exc}") from exc
    finally:
        reset_attempt_context(attempt)


def parse(raw: bytes) -> Result:
    """The vectors in input order (by `index`), the model and the usage; MalformedResponse if it is not that."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedResponse(f"the embeddings answer is not JSON: {raw[:200]!r}") from exc
    data = obj.get("data") if isinstance(obj, dict) else None
    if not isinstance(data, list) or not data:
        raise MalformedResponse(f"the embeddings answer has no 'data' list: {raw[:200]!r}")
    rows = []
    for place, row in enumerate(data):
        vector = row.get("embedding") if isinstance(row, dict) else None
        if not isinstance(vector, list) or not all(type(x) is float or type(x) is int for x in vector):
            raise MalformedResponse(f"data[{place}].embedding is not a list of numbers "
                                    "(a base64 encoding_format is kept out: ask for floats)")
        index = row.get("index")
        rows.append((index if type(index) is int else place, vector))
    rows.sort(key=lambda r: r[0])
    usage = obj.get("usage")
    return Result([v for _, v in rows], obj.get("model") if isinstance(obj.get("model"), str) else None,
                  checked_usage(usage) if isinstance(usage, dict) else None,
                  obj.get("id") if isinstance(obj.get("id"), str) else None)
