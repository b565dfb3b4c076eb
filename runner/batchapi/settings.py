"""What shapes a batch run, read from the RunConfig once, and what each provider allows and charges.

Why one object: the driver, the planner and the poller need the same few
settings; reading them here, from the run's `batch` group (and its API),
keeps every other module of the package off RunConfig's layout.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..config.run_config import RunConfig
from ..errors import UsageError
from ..stream.headers import ANTHROPIC, OPENAI

MB = 1000 * 1000  # the providers' "MB": the smaller reading, so a part is never over either


@dataclass(frozen=True)
class ProviderLimits:
    """A provider's documented limits on one batch, and its price against the live API's."""

    name: str  # how messages name the API
    max_requests: int
    max_bytes: int  # of the uploaded file (OpenAI) or the create request's body (Anthropic)
    max_embedding_inputs: int | None  # inputs over every request of an embeddings batch (OpenAI)
    price_factor: float  # a batch request's price / the live request's


#: OpenAI's Batch API: 50,000 requests and 200 MB an input file, 50,000 embedding inputs a batch; 50 % off.
OPENAI_LIMITS = ProviderLimits("OpenAI's Batch API", 50_000, 200 * MB, 50_000, 0.5)
#: Anthropic's Message Batches: 100,000 requests or 256 MB a batch, whichever comes first; 50 % off.
ANTHROPIC_LIMITS = ProviderLimits("Anthropic's Message Batches", 100_000, 256 * MB, None, 0.5)
#: What a batch costs against the live price, where both providers say so (`streamrun estimate`).
BATCH_PRICE_FACTOR = 0.5

#: Live-run options a batch run has no use for (option fields, or the groups and tables whose every option is
#: one): set to anything but their default, they are refused (a job file with `batch = true` and
#: `concurrency = 8` would otherwise look as if it did something).  The load group is a live run's alone.
LIVE_ONLY = ("load", "shard", "transport.timeouts", "transport.limits", "request.include_usage",
             "request.drop_logprobs", "checks.retry_finish_reasons", "checks.cache", "checks.cache_mode",
             "output.retry_failed", "output.keep_failed", "output.resume_changed", "observe.server_metrics",
             "observe.server_metrics_interval_s", "observe.push_gateway", "observe.otlp_endpoint", "observe.slos",
             "observe.window_s", "observe.strict_timing")
#: Of those groups and tables, what a batch run uses.
_KEEP = ("transport.limits.max_line_bytes", "transport.timeouts.connect", "transport.timeouts.total")


@dataclass(frozen=True)
class BatchSettings:
    """The options of one batch run (`streamrun batch`, or a job with `batch = true`)."""

    provider: str  # "openai" or "anthropic" (runner.stream.headers' names)
    limits: ProviderLimits
    max_lines: int  # requests per batch at most: the provider's limit, or --max-lines-per-batch below it
    wait: bool  # poll until every batch has ended (False: --no-wait)
    poll_interval_s: float  # the longest wait between two polls
    cancel: bool
    resubmit_failed: bool

    @classmethod
    def from_config(cls, cfg: RunConfig) -> BatchSettings:
        """The settings of `cfg`; UsageError for a live-run option it sets, or an output it cannot have."""
        refuse_live_options(cfg)
        if cfg.output.path == "-":
            raise UsageError("streamrun batch writes its state beside the output: give a file to -o, not -")
        provider = ANTHROPIC if cfg.transport.api == "anthropic" else OPENAI
        limits = ANTHROPIC_LIMITS if provider == ANTHROPIC else OPENAI_LIMITS
        batch = cfg.batch
        max_lines = min(limits.max_requests, batch.max_lines or limits.max_requests)
        return cls(provider, limits, max_lines, batch.wait, batch.poll_interval_s, batch.cancel,
                   batch.resubmit_failed)


def refuse_live_options(cfg: RunConfig) -> None:
    """A live-run option set on a batch run is a usage error naming it (its flag, else its job key)."""
    from ..config.options import OPTIONS, field_value

    base = RunConfig()
    for option in OPTIONS:
        name = option.field
        live = any(name == f or name.startswith(f + ".") for f in LIVE_ONLY)
        if live and name not in _KEEP and field_value(cfg, name) != field_value(base, name):
            shown = option.flag.split("/")[-1] if option.flag else option.key
            raise UsageError(f"{shown} is an option of live runs: a batch run (streamrun batch, batch = true) sends "
                             "its requests in the provider's batches, and has no use for it")
