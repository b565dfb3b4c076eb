"""The engine's collaborators made from a RunConfig: the response cache, quotas, adaptive concurrency, token counts.

One place builds them, so the run (`runner.run`) and each worker process
(`runner.workers.child`) send under the same hooks.
"""

from __future__ import annotations

import asyncio
import time

from ..config.run_config import RunConfig
from .cache import ResponseCache
from .loop import EngineHooks

DEFAULT_OUTPUT_ESTIMATE = 256  # completion tokens assumed for TPM when a request sets no max_tokens


async def open_cache(cfg: RunConfig):
    """--cache: opened before the first request (it may wait on another process's setup)."""
    if not cfg.cache:
        return None
    return await asyncio.to_thread(ResponseCache.open, cfg.cache, cfg.cache_mode)


def quota_hooks(cfg: RunConfig, hooks: EngineHooks) -> None:
    """Wire RPM/TPM limits, adaptive concurrency and token counting (runner/engine/quota.py, runner/inputs/tokens.py)."""
    from ..inputs.tokens import count_text_tokens, estimate_prompt_tokens, requested_output_tokens

    hooks.count_tokens = lambda text: count_text_tokens(text, cfg.model)
    if cfg.rpm or cfg.tpm:
        from .quota import QuotaLimiter

        hooks.quota = QuotaLimiter(cfg.rpm, cfg.tpm, now=time.perf_counter, burst_s=cfg.burst_s)
        hooks.estimate_tokens = lambda body: (estimate_prompt_tokens(body, body.get("model"))
                                              + requested_output_tokens(body, DEFAULT_OUTPUT_ESTIMATE))
    if cfg.adaptive:
        from .quota import AdaptiveConcurrency

        hooks.adaptive = AdaptiveConcurrency(cfg.max_concurrency, now=time.perf_counter)
