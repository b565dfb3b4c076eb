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
from dataclasses import MISSING, dataclass, fields, is_dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping

from .parsers import OptionError, duration, positive_duration, timeout, string, strings, urls, byte_size, integer, positive_int, non_negative_int, positive_number, non_negative_number, boolean, int_list, rate_list, choice, strings_list, params, SLO_METRICS, slos, headers, env_name, fsync, failure_budget, duration_text
from .parsers import metrics_urls  # --server-metrics
from .parsers import percentile_list  # --percentiles
from .parsers import workers_count  # --workers

if TYPE_CHECKING:
    from .run_config import RunConfig


# ---- the table

@dataclass(frozen=True)
class Option:
    """One option.  `field` is its place in RunConfig (`timeouts.idle` for a nested one)."""

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
    Option("output", string, "Results JSONL (one record per input line); with -o - the records go to stdout, logs "
           "and the summary to stderr (and no summary file unless --summary names one).", "-o/--output", "output"),
    Option("summary_path", string, "Summary JSON path (default: next to the output).", "--summary", "summary"),
    Option("job", string, "The job's name (default: the job file's name).", key="name"),
    Option("label", string, "This run's name in reports (default: the output's file name): `streamrun report "
           "a.jsonl b.jsonl` shows runs side by side under their labels.", "--label", "label"),
    Option("base_dir", string, "Folder that the job file's relative paths are taken from (default: the job file's "
           "own folder); for job files mounted apart from their data, e.g. /jobs and /data.", key="base_dir",
           envvar="STREAMRUN_BASE_DIR"),
    Option("base_urls", urls, "OpenAI-compatible base URL, repeatable for several replicas.", "--base-url",
           "base_url", multiple=True, envvar="OPENAI_BASE_URL"),
    Option("model", string, "Model for lines that name none (default: the server's only model).", "--model",
           "model", envvar="OPENAI_MODEL"),
    Option("api_key_env", env_name, "Environment variable that holds the API key of the API --api names (never "
           "printed or written); Batch lines to the other vendor's take its own (OPENAI_API_KEY, ANTHROPIC_API_KEY).",
           "--api-key-env", "api_key_env"),
    Option("api", choice("chat", "responses", "anthropic"), "Where shorthand {\"messages\": [...]} lines go (Batch "
           "lines go to their url); anthropic: key from ANTHROPIC_API_KEY, sent as x-api-key.", "--api", "api"),
    Option("anthropic_version", string, "The anthropic-version header of /v1/messages requests.",
           "--anthropic-version", "anthropic_version"),
    Option("auth", boolean, "Send no key (for a server that needs none); without it a non-local URL needs the key.",
           "--no-auth", "auth"),
    Option("headers", headers, "Extra request header 'Name: value' (repeatable); ${VAR} in the value is read from "
           "the environment and treated as a secret.", "--header", "headers", multiple=True, metavar="'NAME: VALUE'"),
    Option("params", params, "Default request parameter (JSON value), overridden by the line's own.", "--param",
           "params", multiple=True, metavar="KEY=VALUE"),
    Option("max_tokens", positive_int, "Shortcut for --param max_tokens=N (a line's own max_tokens wins).",
           "--max-tokens", "max_tokens"),
    Option("include_usage", boolean, "Do not ask for stream_options.include_usage.", "--no-usage", "include_usage"),
    Option("drop_logprobs", boolean, "Do not keep logprobs in records (for runs that ask for them only to load "
           "the server).", "--drop-logprobs", "drop_logprobs"),
    Option("concurrency", int_list, "Requests in flight at most; a list (1,4,16) runs a sweep.", "-c/--concurrency",
           "concurrency"),
    Option("rate", rate_list, "Arrivals per second (Poisson), 'inf', a list for a sweep, or 'sweep': measure the "
           "synchronous and the maximum rate, then run --sweep-points rates between them.", "--rate", "rate"),
    Option("workers", workers_count, "Processes that send (auto: one per core but one): this process reads the "
           "inputs and writes the records; each worker sends its share of -c, --rate and --replay, under one "
           "shared --rpm/--tpm.", "--workers", "workers"),
    Option("sweep_points", positive_int, "Constant-rate stages of --rate sweep.", "--sweep-points", "sweep_points"),
    Option("ramp_up", choice("linear", "exponential"), "Raise the rate (with --rate) or else the concurrency "
           "from --ramp-up-start to its target over --ramp-up-duration.", "--ramp-up", "ramp_up"),
    Option("ramp_up_duration_s", positive_duration, "How long the ramp-up takes, e.g. 30s.", "--ramp-up-duration",
           "ramp_up_duration"),
    Option("ramp_up_start", positive_number, "Rate (req/s) or concurrency the ramp-up starts from (default 1).",
           "--ramp-up-start", "ramp_up_start"),
    Option("replay", boolean, "Send each line at its \"timestamp\" (ms, counted from the first line's), open loop.",
           "--replay", "replay"),
    Option("replay_speed", positive_number, "Time scale of --replay: 2 replays twice as fast.", "--replay-speed",
           "replay_speed"),
    Option("sharegpt", choice("prompts", "sessions"), "ShareGPT lines (conversations of from/value): each its "
           "first user turn, or each a multi-turn session.", "--sharegpt", "sharegpt"),
    Option("burstiness", positive_number, "Gamma shape of the arrival gaps (1 = Poisson, <1 burstier).",
           "--burstiness", "burstiness"),
    Option("num_prompts", positive_int, "Send at most this many prompts (per stage).", "--num-prompts", "num_prompts"),
    Option("duration_s", positive_duration, "No request starts after this long (per stage), e.g. 10m; those in "
           "flight finish, cut at --drain-timeout.", "--duration", "duration"),
    Option("warmup", non_negative_int, "Warm-up requests sent first, marked in records, excluded from statistics.",
           "--warmup", "warmup"),
    Option("seed", integer, "Seed for arrival times.", "--seed", "seed"),
    Option("retry.max_attempts", positive_int, "Attempts per request, the first included.", "--max-attempts",
           "max_attempts"),
    Option("retry_finish_reasons", strings_list, "Retry replies that end for these reasons, e.g. "
           "length,content_filter (after the last attempt: an unwanted_finish_reason error, text kept).",
           "--retry-finish-reason", "retry_finish_reason"),
    Option("timeouts.total", timeout, "Limit on a whole attempt (0 or none: no limit).", "--timeout",
           "timeouts.total"),
    Option("timeouts.connect", timeout, "Limit on opening a connection (0: none).", "--connect-timeout",
           "timeouts.connect"),
    Option("timeouts.first_byte", timeout, "From sending to the first byte, the prefill (0: none).",
           "--first-byte-timeout", "timeouts.first_byte"),
    Option("timeouts.idle", timeout, "Longest gap between chunks once streaming (0: none).", "--idle-timeout",
           "timeouts.idle"),
    Option("limits.max_event_bytes", byte_size, "Largest SSE line or event a server may send; over it the "
           "request fails as response_too_large.", "--max-event-bytes", "max_event_bytes"),
    Option("limits.max_response_bytes", byte_size, "Largest response body, after decompression (gzip bombs).",
           "--max-response-bytes", "max_response_bytes"),
    Option("limits.max_line_bytes", byte_size, "Largest input line; a longer one is an invalid_input record.",
           "--max-line-bytes", "max_line_bytes"),
    Option("resume", boolean, "Continue an existing output: skip the lines whose final record stays, send the "
           "rest, failed lines a rerun can fix included.", "--resume", "resume"),
    Option("retry_failed", boolean, "With --resume, send every failed line again, even those --resume keeps "
           "(invalid_input, context_length_exceeded, ... on unchanged lines), removing the error records first.",
           "--retry-failed", "retry_failed"),
    Option("keep_failed", boolean, "With --resume, keep every failed record as final: send none of its lines "
           "again.", "--keep-failed", "keep_failed"),
    Option("resume_changed", boolean, "With --resume, send input lines that changed since again, dropping their "
           "old records (without it, a changed line stops the run).", "--resume-changed", "resume_changed"),
    Option("overwrite", boolean, "Replace an existing output.", "--overwrite", "overwrite"),
    Option("fsync", fsync, "always | interval | never | SECONDS: how often results are fsynced.", "--fsync", "fsync"),
    Option("drain_timeout_s", duration, "On SIGINT/SIGTERM or at --duration's end, how long in-flight requests "
           "may finish (0: none).", "--drain-timeout", "drain_timeout"),
    Option("log_every_s", duration, "Without a progress bar (stderr not a terminal: cron, systemd, CI; or "
           "--log-format json), log progress this often: done/total, errors, rate, in flight, ETA (0: never).",
           "--log-every", "log_every"),
    Option("server_metrics", metrics_urls, "Prometheus /metrics URL of the server, scraped during the run into "
           "the output's .server_metrics.jsonl side file (repeatable); auto: each --base-url's server's /metrics "
           "(the embedded mock's with --mock).", "--server-metrics", "server_metrics", multiple=True, metavar="URL"),
    Option("server_metrics_interval_s", positive_duration, "How often --server-metrics is scraped.",
           "--server-metrics-interval", "server_metrics_interval"),
    Option("output_format", choice("streamrun", "openai-batch"), "Record format of the output.", "--output-format",
           "output_format"),
    Option("shard", string, "I/N: run only the ids of shard I of N (default: from JOB_COMPLETION_INDEX or "
           "SLURM_ARRAY_TASK_ID).", "--shard", "shard"),
    Option("rpm", positive_int, "Requests-per-minute limit.", "--rpm", "rpm"),
    Option("tpm", positive_int, "Tokens-per-minute limit.", "--tpm", "tpm"),
    Option("burst_s", positive_duration, "How much of the --rpm/--tpm quota may go at once after a lull (servers "
           "often enforce a per-minute quota per second); pacing starts from the first request. A server counting "
           "fixed one-second windows may refuse up to a burst's worth after a lull: 1ms paces strictly.",
           "--burst", "burst"),
    Option("adaptive", boolean, "Lower concurrency on 429/503 and recover slowly (never above -c).",
           "--adaptive/--no-adaptive", "adaptive"),
    Option("price_input", non_negative_number, "USD per million prompt tokens (for the cost line).", "--price-input",
           "pricing.input"),
    Option("price_output", non_negative_number, "USD per million completion tokens.", "--price-output",
           "pricing.output"),
    Option("slos", slos, f"Goodput SLO, repeatable: METRIC=DURATION with METRIC one of {', '.join(SLO_METRICS)} "
           "(itl: a request's longest gap), e.g. ttft=500ms, tpot=0.05 (seconds).", "--slo", "slo",
           multiple=True, metavar="METRIC=DURATION"),
    Option("percentiles", percentile_list, "Percentiles in the summary and its tables, e.g. 50,90,99,99.9.",
           "--percentiles", "percentiles"),
    Option("window_s", positive_duration, "Also summarise per time window of this width (by completion time), "
           "e.g. 10s: throughput and latency percentiles per window show drift.", "--window", "window"),
    Option("cache", string, "Response cache (a SQLite file): a request whose identical twin has an ok answer "
           "there is not sent; its record is marked cached.", "--cache", "cache"),
    Option("cache_mode", choice("read-write", "read-only", "write-only", "refresh"), "How --cache is used.",
           "--cache-mode", "cache_mode"),
    Option("max_failed", failure_budget, "Failure budget: a fraction (<1) or a count of failed records.",
           "--max-failed", "max_failed"),
    Option("strict_timing", boolean, "Exit 5 when a stage was client-bound: the client's own event-loop lag or "
           "CPU made its latencies untrustworthy (the summary's timing says by how much).", "--strict-timing",
           "strict_timing"),
    # streamrun batch (runner/batchapi): the providers' Batch APIs; a job runs there with batch = true
    Option("batch", boolean, "Run the job through the provider's Batch API, as `streamrun batch` does: half the "
           "price, answers within 24 hours (docs/batch.md).", key="batch", command="batch"),
    Option("batch_wait", boolean, "Submit the batches and exit 0 without waiting for them; a rerun collects what "
           "has finished.", "--no-wait", "wait", command="batch"),
    Option("batch_poll_interval_s", positive_duration, "The longest wait between two polls of the batches (the "
           "first wait is 1s, each next twice as long, up to this).", "--poll-interval", "poll_interval",
           command="batch"),
    Option("batch_cancel", boolean, "Cancel this output's batches, wait until they are cancelled, and write "
           "batch_cancelled records for the lines never answered.", "--cancel", "cancel", command="batch"),
    Option("batch_max_lines", positive_int, "Requests per batch at most, below the provider's own limits (OpenAI: "
           "50,000 and 200 MB a file; Anthropic: 100,000 and 256 MB).", "--max-lines-per-batch",
           "max_lines_per_batch", command="batch"),
    Option("batch_resubmit_failed", boolean, "Submit again the lines whose final record failed (expired, "
           "cancelled, errored), in new batches.", "--resubmit-failed", "resubmit_failed", command="batch"),
)

# How a value of each kind is shown in --help.
METAVARS: dict[Callable[[Any], Any], str] = {
    duration: "DURATION", positive_duration: "DURATION", timeout: "DURATION", positive_int: "N",
    non_negative_int: "N", integer: "N", int_list: "N[,N...]", rate_list: "RATE[,RATE...]",
    positive_number: "X", non_negative_number: "X", failure_budget: "X", urls: "URL", env_name: "NAME",
    string: "TEXT", fsync: "POLICY", byte_size: "SIZE", strings_list: "A[,B...]",
    percentile_list: "P[,P...]", workers_count: "N|auto",
}
REQUIRED = ("inputs", "output")

BY_FIELD = {o.field: o for o in OPTIONS}
BY_KEY = {o.key: o for o in OPTIONS if o.key}
TABLE_KEYS = {k.split(".")[0] for k in BY_KEY if "." in k}  # [timeouts], [pricing]


def default_of(option: Option) -> Any:
    """The default lives on the config dataclass field, once."""
    from .run_config import RunConfig

    cls: Any = RunConfig
    *parents, last = option.field.split(".")
    for part in parents:
        f = next(f for f in fields(cls) if f.name == part)
        cls = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
    f = next(f for f in fields(cls) if f.name == last)
    if f.default is not MISSING:
        return getattr(cls, last) if not isinstance(cls, type) else f.default
    if f.default_factory is not MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


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


def build_config(values: Mapping[str, Any]):
    """A RunConfig from parsed values (field -> value); nested fields go into their dataclass."""
    import dataclasses

    from .run_config import RunConfig

    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for name, value in values.items():
        if "." in name:
            parent, child = name.split(".", 1)
            nested.setdefault(parent, {})[child] = value
        else:
            top[name] = value
    base = RunConfig(inputs=(), output="")
    for parent, changes in nested.items():
        top[parent] = dataclasses.replace(getattr(base, parent), **changes)
    return RunConfig(**top)


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
    `fixed`: parsed values the command sets itself (`streamrun batch`: batch).
    """
    raw: dict = {"inputs": inputs}
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
    missing = [BY_FIELD[f].flag for f in REQUIRED if f not in raw and wanted is None]
    if missing:
        raise OptionError(f"missing option {missing[0].replace('/', ' / ')}")
    return build_config({**parse_values(raw, where=lambda o: f"{o.shown}: "), **(fixed or {})})
