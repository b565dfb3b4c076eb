"""Every run option, declared once: its parser, CLI flag, job-file key and help.

Why: the same option used to be declared in the CLI, in the job-file schema
and in the config, with defaults repeated and parsers that disagreed
(`--slo ttft=500ms` refused by `run` and accepted by `report`; `0` turning a
timeout off on the command line and failing in a job file).  Here each
option is one row.  The click options, the job-file validation (with its
did-you-mean), the README's key list and the frozen `RunConfig` all come
from this table, so adding an option is one row (and its field in
`config.py`, where its default lives).

Values arrive as CLI strings or as TOML values; every parser takes both.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .parsers import (
    SLO_METRICS,
    OptionError,
    boolean,
    byte_size,
    choice,
    duration,
    duration_text,
    env_name,
    failure_budget,
    fsync,
    headers,
    http_url,  # --push-gateway, --otlp-endpoint
    int_list,
    integer,
    metrics_urls,  # --server-metrics
    non_negative_int,
    non_negative_number,
    params,
    percentile_list,  # --percentiles
    positive_duration,
    positive_int,
    positive_number,
    proxy_url,  # --proxy
    rate_list,
    slos,
    string,
    strings,
    strings_list,
    timeout,
    urls,
    workers_count,  # --workers
)

if TYPE_CHECKING:
    from .run_config import RunConfig

_Config = TypeVar("_Config")  # RunConfig or one of its groups


# ---- the table

@dataclass(frozen=True)
class Option:
    """One option.  `field` is its place in RunConfig, a dotted path (`load.concurrency`,
    `transport.timeouts.idle`)."""

    field: str
    parse: Callable[[Any], Any]
    help: str
    flag: str | None = None  # "--idle-timeout", "-c/--concurrency"; None: job files only
    key: str | None = None  # job-file key, dotted for a table ("timeouts.idle"); None: the CLI only
    multiple: bool = False  # a repeatable flag
    metavar: str | None = None
    envvar: str | None = None  # read when neither the flag nor the key is given
    command: str = "run"  # whose flag it is: "run" (run's, and every job's), or "batch" (streamrun batch's own)

    @property
    def name(self) -> str:
        """The click parameter name."""
        return self.field.replace(".", "__")

    @property
    def shown(self) -> str:
        return (self.flag or "").split("/")[-1] or self.key or self.field


OPTIONS: tuple[Option, ...] = (
    Option("inputs", strings, "JSONL input files or globs (relative to the job file).", key="inputs"),
    Option("output.path", string, "Results JSONL (one record per input line); with -o - the records go to stdout, logs "
           "and the summary to stderr (and no summary file unless --summary names one).", "-o/--output", "output"),
    Option("output.summary_path", string, "Summary JSON path (default: next to the output).", "--summary", "summary"),
    Option("job", string, "The job's name: {job} in output paths, and the group the Pushgateway keeps its metrics "
           "under (default: the job file's name; without a job file, run in paths and streamrun in the "
           "Pushgateway).", "--job-name", "name"),
    Option("label", string, "This run's name in reports (default: the output's file name): `streamrun report "
           "a.jsonl b.jsonl` shows runs side by side under their labels.", "--label", "label"),
    Option("base_dir", string, "Folder that the job file's relative paths are taken from (default: the job file's "
           "own folder); for job files mounted apart from their data, e.g. /jobs and /data.", key="base_dir",
           envvar="STREAMRUN_BASE_DIR"),
    Option("transport.base_urls", urls, "OpenAI-compatible base URL, repeatable for several replicas.", "--base-url",
           "base_url", multiple=True, envvar="OPENAI_BASE_URL"),
    Option("request.model", string, "Model for lines that name none (default: the server's only model).", "--model",
           "model", envvar="OPENAI_MODEL"),
    Option("transport.api_key_env", env_name, "Environment variable that holds the API key of the API --api names "
           "(never printed or written); Batch lines to the other vendor's take its own (OPENAI_API_KEY, "
           "ANTHROPIC_API_KEY).", "--api-key-env", "api_key_env"),
    Option("transport.api", choice("chat", "responses", "anthropic"), "Where shorthand {\"messages\": [...]} lines "
           "go (Batch lines go to their url); anthropic: key from ANTHROPIC_API_KEY, sent as x-api-key.", "--api",
           "api"),
    Option("transport.anthropic_version", string, "The anthropic-version header of /v1/messages requests.",
           "--anthropic-version", "anthropic_version"),
    Option("transport.auth", boolean, "Send no key (for a server that needs none); without it a non-local URL needs "
           "the key.", "--no-auth", "auth"),
    Option("transport.headers", headers, "Extra request header 'Name: value' (repeatable); ${VAR} in the value is "
           "read from the environment and treated as a secret.", "--header", "headers", multiple=True,
           metavar="'NAME: VALUE'"),
    Option("transport.ca_cert", string, "PEM bundle of CA certificates to trust besides the system's (SSL_CERT_FILE "
           "still applies): a server behind a private CA.", "--ca-cert", "ca_cert", metavar="PATH"),
    Option("transport.insecure", boolean, "Do not verify TLS certificates (a test endpoint with a self-signed one); "
           "said on stderr each run.", "--insecure", "insecure"),
    Option("transport.client_cert", string, "PEM client certificate for a server that requires one (mutual TLS); its "
           "key in the same file or in --client-key.", "--client-cert", "client_cert", metavar="PATH"),
    Option("transport.client_key", string, "PEM private key of --client-cert (unencrypted), when not in its file.",
           "--client-key", "client_key", metavar="PATH"),
    Option("transport.proxy", proxy_url, "HTTP proxy for every request, loopback included "
           "(http://[user:pass@]host:port); without it HTTPS_PROXY/HTTP_PROXY/NO_PROXY apply, but not to servers on "
           "this machine.", "--proxy", "proxy", metavar="URL"),
    Option("request.params", params, "Default request parameter (JSON value), overridden by the line's own.", "--param",
           "params", multiple=True, metavar="KEY=VALUE"),
    Option("request.max_tokens", positive_int, "Shortcut for --param max_tokens=N (a line's own max_tokens wins).",
           "--max-tokens", "max_tokens"),
    Option("request.include_usage", boolean, "Do not ask for stream_options.include_usage.", "--no-usage",
           "include_usage"),
    Option("request.drop_logprobs", boolean, "Do not keep logprobs in records (for runs that ask for them only to load "
           "the server).", "--drop-logprobs", "drop_logprobs"),
    Option("load.concurrency", int_list, "Requests in flight at most; a list (1,4,16) runs a sweep.",
           "-c/--concurrency", "concurrency"),
    Option("load.rate", rate_list, "Arrivals per second (Poisson), 'inf', a list for a sweep, or 'sweep': measure the "
           "synchronous and the maximum rate, then run --sweep-points rates between them.", "--rate", "rate"),
    Option("load.workers", workers_count, "Processes that send (auto: one per core but one): this process reads the "
           "inputs and writes the records; each worker sends its share of -c, --rate and --replay, under one "
           "shared --rpm/--tpm.", "--workers", "workers"),
    Option("load.sweep_points", positive_int, "Constant-rate stages of --rate sweep.", "--sweep-points",
           "sweep_points"),
    Option("load.ramp_up", choice("linear", "exponential"), "Raise the rate (with --rate) or else the concurrency "
           "from --ramp-up-start to its target over --ramp-up-duration.", "--ramp-up", "ramp_up"),
    Option("load.ramp_up_duration_s", positive_duration, "How long the ramp-up takes, e.g. 30s.", "--ramp-up-duration",
           "ramp_up_duration"),
    Option("load.ramp_up_start", positive_number, "Rate (req/s) or concurrency the ramp-up starts from (default 1).",
           "--ramp-up-start", "ramp_up_start"),
    Option("load.replay", boolean, "Send each line at its \"timestamp\" (ms, counted from the first line's), open "
           "loop.", "--replay", "replay"),
    Option("load.replay_speed", positive_number, "Time scale of --replay: 2 replays twice as fast.", "--replay-speed",
           "replay_speed"),
    Option("sharegpt", choice("prompts", "sessions"), "ShareGPT lines (conversations of from/value): each its "
           "first user turn, or each a multi-turn session.", "--sharegpt", "sharegpt"),
    Option("load.burstiness", positive_number, "Gamma shape of the arrival gaps (1 = Poisson, <1 burstier).",
           "--burstiness", "burstiness"),
    Option("load.num_prompts", positive_int, "Send at most this many prompts (per stage).", "--num-prompts",
           "num_prompts"),
    Option("load.duration_s", positive_duration, "No request starts after this long (per stage), e.g. 10m; those in "
           "flight finish, cut at --drain-timeout.", "--duration", "duration"),
    Option("load.warmup", non_negative_int, "Warm-up requests sent first, marked in records, excluded from statistics.",
           "--warmup", "warmup"),
    Option("load.seed", integer, "Seed for arrival times.", "--seed", "seed"),
    Option("transport.retry.max_attempts", positive_int, "Attempts per request, the first included.", "--max-attempts",
           "max_attempts"),
    Option("checks.retry_finish_reasons", strings_list, "Retry replies that end for these reasons, e.g. "
           "length,content_filter (after the last attempt: an unwanted_finish_reason error, text kept).",
           "--retry-finish-reason", "retry_finish_reason"),
    Option("transport.timeouts.total", timeout, "Limit on a whole attempt (0 or none: no limit).", "--timeout",
           "timeouts.total"),
    Option("transport.timeouts.connect", timeout, "Limit on opening a connection (0: none).", "--connect-timeout",
           "timeouts.connect"),
    Option("transport.timeouts.first_byte", timeout, "From sending to the first byte, the prefill (0: none).",
           "--first-byte-timeout", "timeouts.first_byte"),
    Option("transport.timeouts.idle", timeout, "Longest gap between chunks once streaming (0: none).", "--idle-timeout",
           "timeouts.idle"),
    Option("transport.limits.max_event_bytes", byte_size, "Largest SSE line or event a server may send; over it the "
           "request fails as response_too_large.", "--max-event-bytes", "max_event_bytes"),
    Option("transport.limits.max_response_bytes", byte_size, "Largest response body, after decompression (gzip bombs).",
           "--max-response-bytes", "max_response_bytes"),
    Option("transport.limits.max_line_bytes", byte_size, "Largest input line; a longer one is an invalid_input record.",
           "--max-line-bytes", "max_line_bytes"),
    Option("output.resume", boolean, "Continue an existing output: skip the lines whose final record stays, send the "
           "rest, failed lines a rerun can fix included.", "--resume", "resume"),
    Option("output.retry_failed", boolean, "With --resume, send every failed line again, even those --resume keeps "
           "(invalid_input, context_length_exceeded, ... on unchanged lines), removing the error records first.",
           "--retry-failed", "retry_failed"),
    Option("output.keep_failed", boolean, "With --resume, keep every failed record as final: send none of its lines "
           "again.", "--keep-failed", "keep_failed"),
    Option("output.resume_changed", boolean, "With --resume, send input lines that changed since again, dropping their "
           "old records (without it, a changed line stops the run).", "--resume-changed", "resume_changed"),
    Option("output.overwrite", boolean, "Replace an existing output.", "--overwrite", "overwrite"),
    Option("output.fsync", fsync, "always | interval | never | SECONDS: how often results are fsynced.", "--fsync",
           "fsync"),
    Option("load.drain_timeout_s", duration, "On SIGINT/SIGTERM or at --duration's end, how long in-flight requests "
           "may finish (0: none).", "--drain-timeout", "drain_timeout"),
    Option("observe.log_every_s", duration, "Without a progress bar (stderr not a terminal: cron, systemd, CI; or "
           "--log-format json), log progress this often: done/total, errors, rate, in flight, ETA (0: never).",
           "--log-every", "log_every"),
    Option("observe.server_metrics", metrics_urls, "Prometheus /metrics URL of the server, scraped during the run into "
           "the output's .server_metrics.jsonl side file (repeatable); auto: each --base-url's server's /metrics "
           "(the embedded mock's with --mock).", "--server-metrics", "server_metrics", multiple=True, metavar="URL"),
    Option("observe.server_metrics_interval_s", positive_duration, "How often --server-metrics is scraped.",
           "--server-metrics-interval", "server_metrics_interval"),
    Option("observe.push_gateway", http_url, "Prometheus Pushgateway to push the run's metrics to when it ends, "
           "whatever the ending (POST, grouped by the job's name alone); one that cannot be reached is a warning.",
           "--push-gateway", "push_gateway"),
    Option("observe.otlp_endpoint", http_url, "OpenTelemetry collector (OTLP/HTTP base URL; /v1/traces is added) to "
           "export one span per request to, its id sent in the W3C traceparent header; default from "
           "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT. Needs the otel extra.",
           "--otlp-endpoint", "otlp_endpoint"),
    Option("output.format", choice("streamrun", "openai-batch"), "Record format of the output.", "--output-format",
           "output_format"),
    Option("shard", string, "I/N: run only the ids of shard I of N (default: from JOB_COMPLETION_INDEX or "
           "SLURM_ARRAY_TASK_ID).", "--shard", "shard"),
    Option("load.rpm", positive_int, "Requests-per-minute limit.", "--rpm", "rpm"),
    Option("load.tpm", positive_int, "Tokens-per-minute limit.", "--tpm", "tpm"),
    Option("load.burst_s", positive_duration, "How much of the --rpm/--tpm quota may go at once after a lull (servers "
           "often enforce a per-minute quota per second); pacing starts from the first request. A server counting "
           "fixed one-second windows may refuse up to a burst's worth after a lull: 1ms paces strictly.",
           "--burst", "burst"),
    Option("load.adaptive", boolean, "Lower concurrency on 429/503 and recover slowly (never above -c).",
           "--adaptive/--no-adaptive", "adaptive"),
    Option("observe.price_input", non_negative_number, "USD per million prompt tokens (for the cost line).",
           "--price-input", "pricing.input"),
    Option("observe.price_output", non_negative_number, "USD per million completion tokens.", "--price-output",
           "pricing.output"),
    Option("observe.slos", slos, f"Goodput SLO, repeatable: METRIC=DURATION with METRIC one of "
           f"{', '.join(SLO_METRICS)} (itl: a request's longest gap), e.g. ttft=500ms, tpot=0.05 (seconds).", "--slo",
           "slo", multiple=True, metavar="METRIC=DURATION"),
    Option("observe.percentiles", percentile_list, "Percentiles in the summary and its tables, e.g. 50,90,99,99.9.",
           "--percentiles", "percentiles"),
    Option("observe.window_s", positive_duration, "Also summarise per time window of this width (by completion time), "
           "e.g. 10s: throughput and latency percentiles per window show drift.", "--window", "window"),
    Option("checks.cache", string, "Response cache (a SQLite file): a request whose identical twin has an ok answer "
           "there is not sent; its record is marked cached.", "--cache", "cache"),
    Option("checks.cache_mode", choice("read-write", "read-only", "write-only", "refresh"), "How --cache is used.",
           "--cache-mode", "cache_mode"),
    Option("checks.max_failed", failure_budget, "Failure budget: a fraction (<1) or a count of failed records.",
           "--max-failed", "max_failed"),
    Option("observe.strict_timing", boolean, "Exit 5 when a stage was client-bound: the client's own event-loop lag or "
           "CPU made its latencies untrustworthy (the summary's timing says by how much).", "--strict-timing",
           "strict_timing"),
    # streamrun batch (runner/batchapi): the providers' Batch APIs; a job runs there with batch = true
    Option("batch.enabled", boolean, "Run the job through the provider's Batch API, as `streamrun batch` does: half "
           "the price, answers within 24 hours (docs/batch.md).", key="batch", command="batch"),
    Option("batch.wait", boolean, "Submit the batches and exit 0 without waiting for them; a rerun collects what "
           "has finished.", "--no-wait", "wait", command="batch"),
    Option("batch.poll_interval_s", positive_duration, "The longest wait between two polls of the batches (the "
           "first wait is 1s, each next twice as long, up to this).", "--poll-interval", "poll_interval",
           command="batch"),
    Option("batch.cancel", boolean, "Cancel this output's batches, wait until they are cancelled, and write "
           "batch_cancelled records for the lines never answered.", "--cancel", "cancel", command="batch"),
    Option("batch.max_lines", positive_int, "Requests per batch at most, below the provider's own limits (OpenAI: "
           "50,000 and 200 MB a file; Anthropic: 100,000 and 256 MB).", "--max-lines-per-batch",
           "max_lines_per_batch", command="batch"),
    Option("batch.resubmit_failed", boolean, "Submit again the lines whose final record failed (expired, "
           "cancelled, errored), in new batches.", "--resubmit-failed", "resubmit_failed", command="batch"),
)

# How a value of each kind is shown in --help.
METAVARS: dict[Callable[[Any], Any], str] = {
    duration: "DURATION", positive_duration: "DURATION", timeout: "DURATION", positive_int: "N",
    non_negative_int: "N", integer: "N", int_list: "N[,N...]", rate_list: "RATE[,RATE...]",
    positive_number: "X", non_negative_number: "X", failure_budget: "X", urls: "URL", env_name: "NAME",
    string: "TEXT", fsync: "POLICY", byte_size: "SIZE", strings_list: "A[,B...]",
    percentile_list: "P[,P...]", workers_count: "N|auto", http_url: "URL",
}
REQUIRED = ("inputs", "output.path")

BY_FIELD = {o.field: o for o in OPTIONS}
BY_KEY = {o.key: o for o in OPTIONS if o.key}
TABLE_KEYS = {k.split(".")[0] for k in BY_KEY if "." in k}  # [timeouts], [pricing]


def _field_default(cls: type, name: str) -> Any:
    """The default of dataclass `cls`'s field `name` (a fresh one where it has a factory), None for none."""
    f = next(f for f in fields(cls) if f.name == name)
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    return None


def default_of(option: Option) -> Any:
    """The default lives on the config dataclass field, once (a group's field: on the group's dataclass)."""
    from .run_config import RunConfig

    cls: type = RunConfig
    *groups, last = option.field.split(".")
    for group in groups:
        cls = type(_field_default(cls, group))
    return _field_default(cls, last)


def parse_values(raw: Mapping[str, Any], where: Callable[[Option], str]) -> dict[str, Any]:
    """field -> parsed value for the options given; a bad value names its flag or key."""
    out = {}
    for field_name, value in raw.items():
        option = BY_FIELD[field_name]
        try:
            out[field_name] = option.parse(value)
        except OptionError as exc:
            raise OptionError(f"{where(option)}{exc}") from None
    return out


def build_config(values: Mapping[str, Any]) -> RunConfig:
    """A RunConfig from parsed values (field path -> value), at any depth: `transport.timeouts.idle` goes into
    the TransportConfig's Timeouts.  Each dataclass is built afresh from what was given (the rest keep their
    defaults), so what one derives from others (the load's stages) is derived from the values given."""
    from .run_config import RunConfig

    return _build(RunConfig, values)


def _build(cls: type[_Config], values: Mapping[str, Any]) -> _Config:
    own: dict[str, Any] = {}
    inner: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        group, dot, rest = name.partition(".")
        if dot:
            inner.setdefault(group, {})[rest] = value
        else:
            own[name] = value
    for group, given in inner.items():
        own[group] = _build(type(_field_default(cls, group)), given)
    return cls(**own)


def summary_config(cfg: RunConfig) -> dict[str, Any]:
    """The config as the summary writes it: every option under its job key (`[timeouts]` and `[pricing]` as
    tables), as parsed (durations in seconds), and the stages the load makes.

    Why job keys: they are the names users write (docs/cli.md), the same
    whatever group a field sits in here.  It holds no secret: the name of the
    key's variable, never the key, and URLs without their credentials.
    """
    from ..stream.endpoints import public_url

    doc: dict[str, Any] = {}
    for option in OPTIONS:
        value = _plain(field_value(cfg, option.field))
        if option.field in ("transport.base_urls", "observe.server_metrics"):
            value = [public_url(u) for u in value]
        elif option.field in ("observe.push_gateway", "observe.otlp_endpoint", "transport.proxy") and value:
            value = public_url(value)  # user:pass in a Pushgateway's or a proxy's URL is its basic auth
        table, dot, key = (option.key or option.field).rpartition(".")
        (doc.setdefault(table, {}) if dot else doc)[key] = value
    doc["stages"] = [_plain(s) for s in cfg.load.stages]
    return doc


def field_value(cfg: RunConfig, path: str) -> Any:
    """The value at a dotted field path (`load.concurrency`)."""
    value: Any = cfg
    for name in path.split("."):
        value = getattr(value, name)
    return value


def _plain(value: Any) -> Any:
    """JSON's shapes: a dataclass (a stage, the fsync policy) as an object, a tuple as a list."""
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def did_you_mean(word: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def shown_default(option: Option) -> str | None:
    """The default as a person reads it in --help and the README; None when there is none to show."""
    d = default_of(option)
    if isinstance(d, tuple):
        d = tuple(x for x in d if x is not None)
    if d in (None, (), {}) or is_dataclass(d):
        return None
    if option.parse is byte_size and d % (1024 * 1024) == 0:
        return f"{d // (1024 * 1024)}MiB"
    if option.parse in (duration, positive_duration, timeout):  # as the flag takes it: 1s, not 1.0
        return duration_text(d)
    if isinstance(d, tuple):
        return ", ".join(str(v) for v in d)
    if isinstance(d, bool):
        return str(d).lower()
    return str(d)


def markdown_table() -> str:
    """The README's list of job-file keys and flags, generated so it cannot drift."""
    rows = ["| job key | flag | default | meaning |", "|---|---|---|---|"]
    for o in OPTIONS:
        if not o.key:
            continue
        d = shown_default(o)
        shown = "" if d is None else f"`{d}`"
        flag = f"`{o.flag.split('/')[-1]}`" if o.flag else ""
        if flag and o.command != "run":
            flag += f" ({o.command})"
        rows.append(f"| `{o.key}` | {flag} | {shown} | {o.help.replace('|', '/')} |")
    return "\n".join(rows)


def config_from_options(inputs: tuple[str, ...], opts: Mapping[str, Any], environ: Mapping[str, str] = os.environ,
                        only: Iterable[str] | None = None, fixed: Mapping[str, Any] | None = None) -> RunConfig:
    """The options as the command line gave them (raw strings, None when absent) -> RunConfig, via the one table.

    `only`: the fields a command has flags for (`streamrun stream` takes a
    few); the rest keep their defaults, and the output is not required.
    `fixed`: parsed values (field path -> value) the command sets itself (`streamrun batch`:
    batch.enabled).
    """
    raw: dict[str, Any] = {"inputs": inputs}
    wanted = None if only is None else set(only)
    for option in OPTIONS:
        if not option.flag or (wanted is not None and option.field not in wanted):
            continue
        value = opts.get(option.name)
        if value is None or value == ():
            if option.envvar and environ.get(option.envvar):
                raw[option.field] = environ[option.envvar]
            continue
        raw[option.field] = value
    missing = [BY_FIELD[f] for f in REQUIRED if f not in raw and wanted is None]
    if missing:
        raise OptionError(f"missing option {(missing[0].flag or missing[0].shown).replace('/', ' / ')}")
    return build_config({**parse_values(raw, where=lambda o: f"{o.shown}: "), **(fixed or {})})
