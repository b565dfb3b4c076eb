"""The engine's collaborators made from the run's config: its hooks (quotas, adaptive concurrency, token counts)
and its answers (the response cache).

One place builds them, so the run (`runner.run`) and each worker process
(`runner.workers.child`) send under the same hooks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..config.run_config import ChecksConfig, LoadConfig, Stage
from ..record import Record
from .answers import Answers
from .cache import ResponseCache
from .quota import AdaptiveConcurrency, Quota, QuotaLimiter

if TYPE_CHECKING:  # OpenTelemetry's side is loaded only when --otlp-endpoint asks for it
    from ..observe.tracing import RequestTracer

DEFAULT_OUTPUT_ESTIMATE = 256  # completion tokens assumed for TPM when a request sets no max_tokens


@dataclass
class EngineHooks:
    """Optional collaborators; each is None (on_stage: a no-op) when the run does not use it."""

    quota: Quota | None = None  # RPM/TPM: runner.engine.quota.QuotaLimiter, or a worker's stand-in for it
    adaptive: AdaptiveConcurrency | None = None
    estimate_tokens: Callable[[dict], int] | None = None  # request body -> tokens for TPM
    count_tokens: Callable[[str], tuple[int, str]] | None = None  # text -> (tokens, source)
    on_record: Callable[[Record], None] | None = None  # stats, progress
    on_stage: Callable[[Stage, bool, bool], None] = lambda stage, warmup, begin: None  # runner/observe/client_timing.py
    tracer: RequestTracer | None = None  # --otlp-endpoint's span per request (runner/observe/tracing.py)


def engine_hooks(load: LoadConfig, model: str | None, **given) -> EngineHooks:
    """RPM/TPM limits, adaptive concurrency and token counting (runner/engine/quota.py, runner/inputs/tokens.py)
    as the load asks for them; `given` (on_record, on_stage) as they are."""
    from ..inputs.tokens import count_text_tokens, estimate_prompt_tokens, requested_output_tokens

    hooks = EngineHooks(count_tokens=lambda text: count_text_tokens(text, model), **given)
    if load.rpm or load.tpm:
        hooks.quota = QuotaLimiter(load.rpm, load.tpm, now=time.perf_counter, burst_s=load.burst_s)
        hooks.estimate_tokens = lambda body: (estimate_prompt_tokens(body, body.get("model"))
                                              + requested_output_tokens(body, DEFAULT_OUTPUT_ESTIMATE))
    if load.adaptive:
        hooks.adaptive = AdaptiveConcurrency(load.max_concurrency, now=time.perf_counter)
    return hooks


@asynccontextmanager
async def open_answers(checks: ChecksConfig) -> AsyncIterator[Answers]:
    """The run's answers: --cache opened before the first request (it may wait on another process's set-up)
    and closed when the block ends, whatever happened."""
    cache = await asyncio.to_thread(ResponseCache.open, checks.cache, checks.cache_mode) if checks.cache else None
    try:
        yield Answers(cache)
    finally:
        if cache is not None:
            await cache.aclose()
