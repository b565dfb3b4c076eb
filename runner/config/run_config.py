"""The run's configuration: one frozen dataclass of frozen groups, built by the CLI, a job file or the API.

Why groups: each part of the pipeline reads the concern it has (the sender
its transport and request defaults, the engine its load, the writer its
output, the checks and the observers theirs) and is handed that group
alone, not the whole run's settings.  Job-file keys and flags name options,
not places here: the option table (`options.py`) maps each to its field.

It holds the *name* of the environment variable with the key, never the key,
so the config can be written into the summary as it is.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, Literal

from ..errors import UsageError
from ..stream.config import Limits, RetryPolicy, Timeouts
from ..stream.headers import ANTHROPIC, OPENAI

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"


@dataclass(frozen=True)
class FsyncPolicy:
    """`always` (every batch), `interval` (at most every N seconds, the default), or `never`."""

    mode: str = "interval"
    interval_s: float = 1.0

    @classmethod
    def parse(cls, text: str) -> FsyncPolicy:
        text = text.strip().lower()
        if text in ("always", "never"):
            return cls(text)
        if text == "interval":
            return cls()
        try:
            return cls("interval", float(text.removesuffix("s")))
        except ValueError:
            raise ValueError(f"fsync must be always, never, interval or a number of seconds, not {text!r}") from None


@dataclass(frozen=True)
class Stage:
    """One load shape: a concurrency cap and optionally an arrival rate (req/s; inf = all at once)."""

    index: int
    concurrency: int
    rate: float | None = None
    label: str | None = None  # set only in sweeps; then records carry it

    def to_record(self) -> dict[str, Any] | None:
        if self.label is None:
            return None
        rate = None if self.rate is None or math.isinf(self.rate) else self.rate
        return {"index": self.index, "label": self.label, "concurrency": self.concurrency, "rate": rate}


SWEEP: Literal["sweep"] = "sweep"  # --rate sweep
#: `load.rate`: rates (req/s; None: no rate, as fast as the concurrency allows; inf: all at once), or --rate sweep.
Rates = tuple[float | None, ...] | tuple[Literal["sweep"]]


def make_stages(concurrencies: Sequence[int], rates: Sequence[float | None | Literal["sweep"]]) -> tuple[Stage, ...]:
    """A sweep over one list; the other must then be a single value.

    `--rate sweep` starts with its two measuring stages; the rates between
    them are known only once those ran (`runner.sweep`).
    """
    if list(rates) == [SWEEP]:
        return (Stage(0, 1, None, "synchronous"), Stage(1, concurrencies[0], math.inf, "throughput"))
    numbers: list[float | None] = []
    for rate in rates:
        if isinstance(rate, str):  # the parser gives "sweep" alone; a Python caller may not
            raise UsageError("--rate sweep measures its own rates: it takes no list of rates")
        numbers.append(rate)
    return _stages(concurrencies, numbers)


def _stages(concurrencies: Sequence[int], rates: Sequence[float | None]) -> tuple[Stage, ...]:
    if len(concurrencies) > 1 and len(rates) > 1:
        raise UsageError("sweep either --concurrency or --rate, not both")
    if len(concurrencies) == 1 and len(rates) == 1:
        return (Stage(0, concurrencies[0], rates[0]),)
    stages = []
    if len(rates) > 1:
        for i, r in enumerate(rates):
            stages.append(Stage(i, concurrencies[0], r, f"rate={_fmt(r)}"))
    else:
        for i, c in enumerate(concurrencies):
            stages.append(Stage(i, c, rates[0], f"c={c}"))
    return tuple(stages)


def _fmt(rate: float | None) -> str:
    if rate is None or math.isinf(rate):
        return "inf"
    return f"{rate:g}"


@dataclass(frozen=True)
class TransportConfig:
    """Where requests go and how each one travels: the servers, the API they speak and its credentials, the
    TLS settings and the proxy (runner.stream.network reads them, in `Network.from_config`), the limits on
    what a server may send, the timeouts and the retries (runner.stream's own config types).

    It holds the *name* of the environment variable with the key, never the key.
    """

    base_urls: tuple[str, ...] = (DEFAULT_BASE_URL,)
    api: str = "chat"  # where shorthand {"messages": [...]} lines go: chat, responses, anthropic
    api_key_env: str = "OPENAI_API_KEY"
    auth: bool = True  # False (--no-auth): send no key, and do not require one for remote URLs
    headers: tuple[str, ...] = ()  # "Name: value" templates; ${VAR} is filled from the environment
    ca_cert: str | None = None  # TLS (runner/stream/tls.py): a PEM CA bundle trusted besides the system's
    insecure: bool = False  # no certificate verification at all (warned about each run)
    client_cert: str | None = None  # mutual TLS: the client certificate (PEM), its key in it or in client_key
    client_key: str | None = None
    proxy: str | None = None  # every request through this proxy; None: the environment's (runner/stream/network.py)
    anthropic_version: str = "2023-06-01"  # the anthropic-version header of /v1/messages requests
    timeouts: Timeouts = Timeouts()
    limits: Limits = Limits()
    retry: RetryPolicy = RetryPolicy()

    @property
    def key_env(self) -> str:
        """The key's variable: ANTHROPIC_API_KEY for --api anthropic unless --api-key-env names another."""
        if self.api == "anthropic" and self.api_key_env == "OPENAI_API_KEY":
            return "ANTHROPIC_API_KEY"
        return self.api_key_env

    @property
    def key_api(self) -> str:
        """Whose key the lines that --api names take: "anthropic" (x-api-key) or "openai" (Bearer)."""
        return ANTHROPIC if self.api == "anthropic" else OPENAI

    def key_env_for(self, api: str) -> str:
        """The variable holding the key of one API's lines ("openai" or "anthropic"): `key_env` for the
        API that --api names, the other's own default (OPENAI_API_KEY, ANTHROPIC_API_KEY) for Batch lines
        to the other one."""
        if api == self.key_api:
            return self.key_env
        return "ANTHROPIC_API_KEY" if api == ANTHROPIC else "OPENAI_API_KEY"

    def key_envs(self) -> dict[str, str | None]:
        """Each API's key variable, None for all with --no-auth (runner.stream.headers.resolve_credentials)."""
        return {api: self.key_env_for(api) if self.auth else None for api in (OPENAI, ANTHROPIC)}


@dataclass(frozen=True)
class RequestConfig:
    """What each request asks for where its line says nothing: the model, default parameters, usage; and
    whether its logprobs are kept."""

    model: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    max_tokens: int | None = None  # --max-tokens N: the same as --param max_tokens=N
    include_usage: bool = True
    drop_logprobs: bool = False  # asked for only to load the server: not kept in records

    def __post_init__(self) -> None:
        if self.max_tokens is not None:
            object.__setattr__(self, "params", {**self.params, "max_tokens": self.max_tokens})


@dataclass(frozen=True)
class LoadConfig:
    """The load's shape: how many requests at once and how fast, in which stages, for how long, from how
    many processes, under which quotas; and how a stop drains.  `stages` is derived from `concurrency`
    and `rate` unless given."""

    concurrency: tuple[int, ...] = (16,)
    rate: Rates = (None,)
    stages: tuple[Stage, ...] = ()
    burstiness: float = 1.0
    ramp_up: str | None = None  # linear | exponential: the rate (or concurrency) rises to its target
    ramp_up_duration_s: float | None = None
    ramp_up_start: float | None = None  # the rate (req/s) or concurrency to start from (default: 1)
    sweep_points: int = 5  # --rate sweep: constant-rate stages between the synchronous and the maximum rate
    # Processes that send; this one reads and writes.  Given as N or "auto" (--workers auto, or a caller's), an
    # int once built: "auto" is resolved here, so every reader gets the count.
    workers: int = 1
    replay: bool = False  # send each line at its "timestamp" (ms, counted from the first line's)
    replay_speed: float = 1.0  # 2: twice as fast as the trace
    num_prompts: int | None = None
    duration_s: float | None = None
    warmup: int = 0
    seed: int | None = None
    rpm: int | None = None
    tpm: int | None = None
    burst_s: float = 1.0  # how much of the RPM/TPM quota may go at once: one second's worth
    adaptive: bool = True
    drain_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if not self.stages:
            object.__setattr__(self, "stages", make_stages(list(self.concurrency), list(self.rate)))
        if self.sweep and len(self.concurrency) > 1:
            raise UsageError("--rate sweep runs at one --concurrency (the cap of every stage), not a list")
        if self.replay and (self.sweep or len(self.stages) > 1 or self.rate != (None,)):
            raise UsageError("--replay sends each line at its own timestamp: it takes no --rate or sweep")
        if (self.ramp_up is None) != (self.ramp_up_duration_s is None):
            raise UsageError("--ramp-up and --ramp-up-duration go together")
        given: object = self.workers  # the int field's one other input, the parser's "auto"
        if given == "auto":  # one worker per core but one, for this process
            object.__setattr__(self, "workers", auto_workers(min(self.concurrency)))
        if self.workers > 1 and self.workers > min(self.concurrency):
            raise UsageError(f"--workers {self.workers} needs -c {self.workers} or more (each worker keeps at least "
                             f"one request in flight), not -c {min(self.concurrency)}: raise -c or lower --workers")
        if self.workers > 1 and self.burstiness != 1.0:
            raise UsageError("--burstiness keeps its shape only in one process (the sum of several gamma arrival "
                             "streams is not one): use --workers 1")

    @property
    def sweep(self) -> bool:
        """--rate sweep: stages measured first (synchronous, then maximum throughput), then rates between."""
        return self.rate == (SWEEP,)

    @property
    def max_concurrency(self) -> int:
        return max(s.concurrency for s in self.stages)


@dataclass(frozen=True)
class OutputConfig:
    """Where the records and the summary go, in which format, how often they are synced, and what an
    existing output means to this run (resume, overwrite, which of its records stay)."""

    path: str = ""  # the results file; "-": stdout
    summary_path: str | None = None
    format: str = "streamrun"  # or "openai-batch"
    fsync: FsyncPolicy = FsyncPolicy()
    resume: bool = False
    overwrite: bool = False
    retry_failed: bool = False
    keep_failed: bool = False  # with --resume: failed records stay final, none of their lines is sent again
    resume_changed: bool = False  # with --resume: drop answers to input lines that changed, send them again

    def __post_init__(self) -> None:
        if self.resume and self.overwrite:
            raise UsageError("--resume and --overwrite exclude each other")
        if self.retry_failed and not self.resume:
            raise UsageError("--retry-failed goes with --resume")
        if self.keep_failed and not self.resume:
            raise UsageError("--keep-failed goes with --resume")
        if self.keep_failed and self.retry_failed:
            raise UsageError("--keep-failed and --retry-failed exclude each other")
        if self.resume_changed and not self.resume:
            raise UsageError("--resume-changed goes with --resume")


@dataclass(frozen=True)
class ChecksConfig:
    """What the run checks of the answers and of the whole: answers taken from the response cache, replies
    tried again for their finish reason, and the failure budget the exit code holds the run to."""

    cache: str | None = None  # a SQLite file of answers, keyed by the normalised request (--cache)
    cache_mode: str = "read-write"  # read-write | read-only | write-only | refresh
    retry_finish_reasons: tuple[str, ...] = ()  # replies that end for these reasons are tried again
    max_failed: float | None = None  # fraction (< 1) or count (>= 1) of failed records allowed


@dataclass(frozen=True)
class ObserveConfig:
    """What the run watches and reports beside its records: progress log lines, the server's metrics, goodput
    SLOs, percentiles and windows, whether its own timing can be trusted, and the cost; and where the run is
    seen from outside (a Pushgateway its metrics go to when it ends, an OTLP collector its spans go to)."""

    log_every_s: float = 30.0  # without a terminal: a progress log line this often (0: none)
    server_metrics: tuple[str, ...] = ()  # Prometheus /metrics URLs scraped during the run ("auto": the base URLs')
    server_metrics_interval_s: float = 1.0
    push_gateway: str | None = None  # a Prometheus Pushgateway: the run's metrics pushed when it ends
    otlp_endpoint: str | None = None  # an OTLP/HTTP collector's base URL: one span per request (runner/observe)
    slos: dict[str, float] = field(default_factory=dict)
    percentiles: tuple[float, ...] = (50, 90, 95, 99)  # in the summary and its tables (--percentiles)
    window_s: float | None = None  # statistics per time window of this width (--window)
    strict_timing: bool = False  # exit 5 when a stage's numbers were client-bound (runner/observe/client_timing.py)
    price_input: float | None = None  # USD per million tokens
    price_output: float | None = None


@dataclass(frozen=True)
class BatchConfig:
    """`streamrun batch`, or a job's `batch = true`: the run goes through the provider's Batch API instead of
    live requests (runner/batchapi, whose `BatchSettings.from_config` reads this group, once); how it waits
    for its batches, splits, cancels and submits again.  A live run refuses these settings (runner/run.py).

    A group of its own: none of the others' concerns is this one (a batch run has no load shape, and its
    transport is the provider's batch endpoints, not one request at a time).
    """

    enabled: bool = False  # a job file's batch = true: run through the provider's Batch API
    wait: bool = True  # False (--no-wait): submit and exit
    poll_interval_s: float = 60.0  # the longest wait between two polls
    cancel: bool = False  # --cancel: cancel this output's batches
    max_lines: int | None = None  # requests per batch at most (the provider's limit when None)
    resubmit_failed: bool = False  # submit the failed lines again


@dataclass(frozen=True)
class RunConfig:
    """One run, whoever built it (the CLI, a job file, the Python API): its inputs and name, and one group
    of settings per concern, each read by the part of the pipeline that has that concern.

    Each field that users set is an option in `options.py` (flag, job key,
    parser, help), whose `field` is its dotted path here (`load.concurrency`);
    its default is here, once.  A new option is a field in its group and a
    row in that table.
    """

    inputs: tuple[str, ...] = ()
    sharegpt: str = "prompts"  # ShareGPT lines: each its first user turn ("prompts"), or whole "sessions"
    shard: str | None = None  # "I/N", resolved by the CLI
    job: str | None = None
    label: str | None = None  # this run's name in `streamrun report` comparisons (--label)
    base_dir: str | None = None  # job files: the folder relative paths are taken from (default: the file's)
    transport: TransportConfig = field(default_factory=TransportConfig)
    request: RequestConfig = field(default_factory=RequestConfig)
    load: LoadConfig = field(default_factory=LoadConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    checks: ChecksConfig = field(default_factory=ChecksConfig)
    observe: ObserveConfig = field(default_factory=ObserveConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)

    def __post_init__(self) -> None:
        if self.load.sweep and self.output.resume:
            raise UsageError("--rate sweep measures its rates afresh each time: run it again with --overwrite, "
                             "not --resume")


def auto_workers(concurrency: int) -> int:
    """--workers auto: one per core this process may run on, but one for the parent; never more than -c."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(cores - 1, concurrency))


def render_paths(cfg: RunConfig) -> RunConfig:
    """Fill `{date}` (UTC, YYYY-MM-DD), `{job}` and `{shard}` ("3of8", or "all") in output paths."""
    import dataclasses
    from datetime import datetime

    shard = cfg.shard.replace("/", "of") if cfg.shard else "all"
    values = {"date": datetime.now(UTC).strftime("%Y-%m-%d"), "job": cfg.job or "run", "shard": shard}

    def fill(path: str) -> str:
        if "{" not in path:
            return path
        try:
            return path.format(**values)
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise UsageError(f"output path {path!r}: unknown template field {exc} (use {{date}}, {{job}}, {{shard}})") from None

    summary_path = cfg.output.summary_path
    output = dataclasses.replace(cfg.output, path=fill(cfg.output.path),
                                 summary_path=None if summary_path is None else fill(summary_path))
    return dataclasses.replace(cfg, output=output)


def resolve_shard(cfg: RunConfig, environ: Mapping[str, str] = os.environ) -> RunConfig:
    """An explicit --shard wins; else Kubernetes Indexed Job / Slurm array variables."""
    import dataclasses

    from ..inputs.ids import parse_shard, shard_from_env

    try:
        if cfg.shard:
            parse_shard(cfg.shard)
            return cfg
        shard = shard_from_env(environ)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if shard is None:
        return cfg
    return dataclasses.replace(cfg, shard=f"{shard.index}/{shard.count}")
