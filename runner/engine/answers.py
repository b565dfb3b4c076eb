"""What dataset builders add around a request: the response cache, and replies checked against their schema.

Why apart from the engine: both are policies on top of sending (answer from
the cache instead; refuse a reply that is not the JSON asked for), and the
engine should stay the loop that sends.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any

import orjson

from ..record import Metrics, Record, decode_native
from ..stream.errors import InvalidOutput, RequestError
from .cache import ResponseCache, cache_key
from .structured import check_output

log = logging.getLogger("streamrun")

SERVING_MODES = ("read-write", "read-only")


class Answers:
    """The run's cache (None without --cache)."""

    def __init__(self, cache: ResponseCache | None) -> None:
        self.cache = cache
        self.serves = cache is not None and cache.mode in SERVING_MODES
        self.stores = cache is not None and cache.mode != "read-only"

    def key(self, path: str, request: dict) -> str | None:
        return cache_key(path, request) if self.cache is not None else None

    async def lookup(self, key: str | None, fresh: Record, accept: Callable[[Any], Any]) -> Record | None:
        """The cached answer, as this item's record: its own id and source, the old metrics kept apart.

        `accept` is the run's check of an answer (`Sender.accept`, the one the
        live replies pass): it returns the parsed reply, or raises the
        RequestError a live reply would be retried for.  A stored answer this
        run would not accept (a `length` cut under `--retry-finish-reason
        length`, JSON its schema refuses) is no answer: None, so it is sent
        again, and the lookup counts as a miss.
        """
        cache = self.cache
        if key is None or cache is None or not self.serves:
            return None
        hit = await cache.get(key)
        if hit is None:
            return None
        old = decode_native(hit)
        try:
            parsed = accept(old)
        except RequestError as exc:
            log.debug("%s: the cached answer is not accepted (%s): sent again", fresh.custom_id, exc)
            cache.stats.hits -= 1
            cache.stats.misses += 1
            return None
        return dataclasses.replace(
            old, custom_id=fresh.custom_id, source=fresh.source, stage=fresh.stage, warmup=fresh.warmup,
            request_url=fresh.request_url, request_hash=fresh.request_hash, endpoint=None, attempts=0,
            cached=True, cached_metrics=old.metrics, parsed=parsed,
            metrics=Metrics(output_tokens=old.metrics.output_tokens,
                            output_tokens_source=old.metrics.output_tokens_source))

    async def store(self, key: str | None, record: Record) -> None:
        if (key is not None and self.cache is not None and self.stores and record.ok and not record.cached
                and not record.warmup):
            await self.cache.put(key, orjson.loads(orjson.dumps(record)))


def response_format(request: dict) -> dict | None:
    """The JSON a request asked for: chat's response_format, or the Responses API's text.format."""
    fmt = request.get("response_format")
    if fmt is None and isinstance(request.get("text"), dict):
        fmt = request["text"].get("format")
    return fmt if isinstance(fmt, dict) else None


def checked(fmt: dict | None, answer: Any) -> Any:
    """The parsed reply; InvalidOutput (retried, then an error record with the text kept) when it is not valid.

    `answer` is a live reply's stream state or a cached record: anything with its `text`.
    """
    if fmt is None:
        return None
    parsed, problem = check_output(fmt, answer.text)
    if problem is not None:
        err = InvalidOutput(problem)
        err.partial = answer
        raise err
    return parsed
