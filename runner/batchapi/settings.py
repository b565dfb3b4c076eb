"""What shapes a batch run, read from the RunConfig once, and what each provider allows and charges.

Why one object: the driver, the planner and the poller need the same few
settings; reading them here, from the run's flat options, keeps every other
module of the package off RunConfig's layout (it is being regrouped).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

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

#: Live-run options a batch run has no use for: set to anything but their default, they are refused
#: (a job file with `batch = true` and `concurrency = 8` would otherwise look as if it did something).
LIVE_ONLY = ("concurrency", "rate", "workers", "sweep_points", "ramp_up", "ramp_up_duration_s", "ramp_up_start",
             "replay", "replay_speed", "burstiness", "num_prompts", "duration_s", "warmup", "seed",
             "retry_finish_reasons", "timeouts", "limits", "retry_failed", "keep_failed", "resume_changed",
             "drain_timeout_s", "server_metrics", "server_metrics_interval_s", "shard", "rpm", "tpm", "burst_s",
             "adaptive", "cache", "cache_mode", "slos", "window_s", "strict_timing", "include_usage", "drop_logprobs")
_KEEP = ("limits.max_line_bytes", "timeouts.connect", "timeouts.total")  # of those tables, what a batch run uses


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
        if cfg.output == "-":
            raise UsageError("streamrun batch writes its state beside the output: give a file to -o, not -")
        provider = ANTHROPIC if cfg.api == "anthropic" else OPENAI
        limits = ANTHROPIC_LIMITS if provider == ANTHROPIC else OPENAI_LIMITS
        max_lines = min(limits.max_requests, cfg.batch_max_lines or limits.max_requests)
        return cls(provider, limits, max_lines, cfg.batch_wait, cfg.batch_poll_interval_s, cfg.batch_cancel,
                   cfg.batch_resubmit_failed)


#: The batch rows of the option table (runner/config/options.py, command "batch"), but `batch` itself.
BATCH_ONLY = ("batch_wait", "batch_poll_interval_s", "batch_cancel", "batch_max_lines", "batch_resubmit_failed")


def refuse_batch_options(cfg: RunConfig) -> None:
    """A live run with a batch run's option set: a usage error naming its job key (it would do nothing)."""
    from ..config.options import BY_FIELD

    base = RunConfig(inputs=(), output="")
    given = [BY_FIELD[name].key for name in BATCH_ONLY if getattr(cfg, name) != getattr(base, name)]
    if given and not cfg.batch:
        raise UsageError(f"{', '.join(str(k) for k in given)}: keys of a batch run; add batch = true (or run "
                         "streamrun batch), or remove them")


def refuse_live_options(cfg: RunConfig) -> None:
    """A live-run option set on a batch run is a usage error naming it (its job key)."""
    from ..config.options import BY_FIELD

    base = RunConfig(inputs=(), output="")
    for name in LIVE_ONLY:
        value, default = getattr(cfg, name), getattr(base, name)
        if name in ("timeouts", "limits"):
            for f in fields(value):
                dotted = f"{name}.{f.name}"
                if dotted not in _KEEP and getattr(value, f.name) != getattr(default, f.name):
                    _refuse(BY_FIELD[dotted])
        elif value != default:
            _refuse(BY_FIELD[name])


def _refuse(option) -> None:
    shown = option.flag.split("/")[-1] if option.flag else option.key
    raise UsageError(f"{shown} is an option of live runs: a batch run (streamrun batch, batch = true) sends its "
                     "requests in the provider's batches, and has no use for it")
