"""The `streamrun` command line: parse options, build a RunConfig, call the run.

Heavy modules (aiohttp, tenacity, plotly) are imported only by the command
that needs them, so `streamrun --help` starts fast.
"""

from __future__ import annotations

import importlib
import logging
import math
import os
import sys

import click

from .config import DEFAULT_BASE_URL, FsyncPolicy, RetryPolicy, RunConfig, Timeouts, make_stages

EXIT_CODES_HELP = """\b
Exit codes:
  0    every record ok, or failures within the failure budget
  1    failures over the budget (default budget: none)
  2    usage or configuration error (nothing sent)
  3    the output is locked by another run
  130  interrupted by SIGINT (Ctrl-C); 143 by SIGTERM
"""

# name -> (module:attribute, one-line help shown without importing the module)
LAZY_COMMANDS = {
    "mock": ("runner.mock:mock_command", "Run the embedded OpenAI-compatible mock server."),
    "report": ("runner.report:report_command", "Summarise results: percentiles, goodput, JSON, HTML."),
    "convert": ("runner.batchfmt:convert_command", "Convert results to/from the OpenAI Batch API output format."),
    "merge": ("runner.merge:merge_command", "Merge shard outputs; check every input has one record."),
    "estimate": ("runner.estimate:estimate_command", "Count prompts, tokens and cost without sending anything."),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx):
        return sorted([*super().list_commands(ctx), *LAZY_COMMANDS])

    def get_command(self, ctx, name):
        if name in LAZY_COMMANDS:
            module, attr = LAZY_COMMANDS[name][0].split(":")
            return getattr(importlib.import_module(module), attr)
        return super().get_command(ctx, name)

    def format_commands(self, ctx, formatter):
        rows = []
        for name in self.list_commands(ctx):
            if name in LAZY_COMMANDS:
                rows.append((name, LAZY_COMMANDS[name][1]))
            else:
                cmd = super().get_command(ctx, name)
                rows.append((name, cmd.get_short_help_str(60)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


class _SecretFilter(logging.Filter):
    """Last line of defence: no log record may carry the key, whatever formatted it."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        from .errors import redact

        msg = record.getMessage()
        red = redact(msg, self.secrets)
        if red != msg:
            record.msg, record.args = red, None
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        import orjson

        return orjson.dumps({"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname.lower(),
                             "msg": record.getMessage()}).decode()


def setup_logging(fmt: str, verbosity: int, secrets: tuple[str, ...] = ()) -> None:
    logger = logging.getLogger("streamrun")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if fmt == "json" else logging.Formatter("streamrun: %(message)s"))
    handler.addFilter(_SecretFilter(secrets))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO)
    logger.propagate = False


@click.group(cls=LazyGroup, epilog=EXIT_CODES_HELP)
@click.version_option(package_name="streamrun")
@click.option("--log-format", type=click.Choice(["text", "json"]), default="text", show_default=True,
              help="Format of log lines on stderr.")
@click.option("-v", "--verbose", count=True, help="More log output.")
@click.option("-q", "--quiet", count=True, help="Less log output (warnings and errors only).")
@click.pass_context
def main(ctx: click.Context, log_format: str, verbose: int, quiet: int) -> None:
    """streamrun: run JSONL prompts against OpenAI-compatible streaming endpoints,
    with TTFT/ITL/E2E metrics, retries, resume and load shapes."""
    ctx.obj = {"log_format": log_format, "verbosity": verbose - quiet}


def parse_params(values: tuple[str, ...]) -> dict:
    """`key=value` pairs; the value is JSON when it parses (numbers, booleans, lists), else a string."""
    import orjson

    params = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} is not key=value", param_hint="--param")
        try:
            params[key] = orjson.loads(value)
        except orjson.JSONDecodeError:
            params[key] = value
    return params


def parse_number_list(text: str, name: str, *, integer: bool) -> list:
    out = []
    for part in str(text).split(","):
        part = part.strip()
        try:
            if not integer and part.lower() in ("inf", "infinity"):
                value = math.inf
            else:
                value = int(part) if integer else float(part)
        except ValueError:
            raise click.BadParameter(f"{part!r} is not a number", param_hint=name) from None
        if value <= 0:
            raise click.BadParameter(f"{part!r} must be positive", param_hint=name)
        out.append(value)
    return out


def parse_slos(values: tuple[str, ...]) -> dict[str, float]:
    slos = {}
    for item in values:
        key, sep, value = item.partition("=")
        key = key.strip().removesuffix("_s")
        if not sep or key not in ("ttft", "tpot", "itl", "e2e"):
            raise click.BadParameter(f"{item!r}: use ttft=, tpot=, itl= or e2e= (seconds)", param_hint="--slo")
        try:
            slos[key] = float(value.strip().removesuffix("s"))
        except ValueError:
            raise click.BadParameter(f"{item!r}: {value!r} is not a number of seconds", param_hint="--slo") from None
    return slos


def _none_or_float(ctx, param, value):
    if value is None or str(value).lower() in ("none", "off", "0"):
        return None
    try:
        return float(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a number of seconds") from None


def run_options(f):
    options = [
        click.option("-o", "--output", required=True, type=click.Path(dir_okay=False),
                     help="Results JSONL (one record per input line)."),
        click.option("--base-url", "base_urls", multiple=True, envvar="OPENAI_BASE_URL",
                     help=f"OpenAI-compatible base URL, repeatable for several replicas "
                          f"[env OPENAI_BASE_URL; default {DEFAULT_BASE_URL}]."),
        click.option("--model", envvar="OPENAI_MODEL", help="Model for lines that name none [env OPENAI_MODEL]."),
        click.option("-c", "--concurrency", default="16", show_default=True,
                     help="Requests in flight at most; a list (1,4,16) runs a sweep."),
        click.option("--rate", default=None, help="Arrivals per second (Poisson), 'inf', or a list for a sweep."),
        click.option("--burstiness", default=1.0, show_default=True, type=float,
                     help="Gamma shape of the arrival gaps (1 = Poisson, <1 burstier)."),
        click.option("--num-prompts", type=click.IntRange(min=1), help="Send at most this many prompts (per stage)."),
        click.option("--duration", type=float, help="Stop sending new requests after this many seconds (per stage)."),
        click.option("--warmup", type=click.IntRange(min=0), default=0,
                     help="Warm-up requests sent first, marked in records, excluded from statistics."),
        click.option("--seed", type=int, help="Seed for arrival times."),
        click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
                     help="Default request parameter (JSON value), overridden by the line's own."),
        click.option("--no-usage", is_flag=True, help="Do not ask for stream_options.include_usage."),
        click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
                     help="Environment variable that holds the API key (never printed or written)."),
        click.option("--no-auth", is_flag=True,
                     help="Send no key (a server that needs none); without it a non-local URL needs the key set."),
        click.option("--header", "headers", multiple=True, metavar="'NAME: VALUE'",
                     help="Extra request header (repeatable); ${VAR} in VALUE is read from the environment "
                          "and treated as a secret, e.g. 'OpenAI-Organization: ${OPENAI_ORG_ID}'."),
        click.option("--max-attempts", default=5, show_default=True, type=click.IntRange(min=1)),
        click.option("--timeout", "timeout_total", default=None, callback=_none_or_float,
                     help="Total seconds per attempt (default: none)."),
        click.option("--connect-timeout", default="10", callback=_none_or_float, show_default=True),
        click.option("--first-byte-timeout", default="300", callback=_none_or_float, show_default=True,
                     help="Seconds from sending to the first byte (prefill)."),
        click.option("--idle-timeout", default="120", callback=_none_or_float, show_default=True,
                     help="Longest gap between chunks once streaming."),
        click.option("--resume", is_flag=True, help="Continue an existing output: skip ids already answered."),
        click.option("--retry-failed", is_flag=True, help="With --resume, re-run the ids whose record is an error."),
        click.option("--overwrite", is_flag=True, help="Replace an existing output."),
        click.option("--fsync", default="interval", show_default=True,
                     help="always | interval | never | SECONDS: how often results are fsynced."),
        click.option("--drain-timeout", default=30.0, show_default=True, type=float,
                     help="On SIGINT/SIGTERM, seconds to let in-flight requests finish."),
        click.option("--output-format", type=click.Choice(["streamrun", "openai-batch"]), default="streamrun",
                     show_default=True),
        click.option("--shard", help="I/N: run only the ids of shard I of N (default: from "
                                     "JOB_COMPLETION_INDEX or SLURM_ARRAY_TASK_ID)."),
        click.option("--rpm", type=click.IntRange(min=1), help="Requests-per-minute limit."),
        click.option("--tpm", type=click.IntRange(min=1), help="Tokens-per-minute limit."),
        click.option("--adaptive/--no-adaptive", default=True, show_default=True,
                     help="Lower concurrency on 429/503 and recover slowly (never above -c)."),
        click.option("--price-input", type=float, help="USD per million prompt tokens (for the cost line)."),
        click.option("--price-output", type=float, help="USD per million completion tokens."),
        click.option("--slo", "slos", multiple=True, metavar="METRIC=SECONDS",
                     help="SLO for goodput: ttft=0.5, tpot=0.05, itl=, e2e=."),
        click.option("--max-failed", type=float, help="Failure budget: a fraction (<1) or a count of failed records."),
        click.option("--summary", "summary_path", type=click.Path(dir_okay=False),
                     help="Summary JSON path (default: next to the output)."),
        click.option("--progress/--no-progress", default=None, help="Live progress bar (default: when stderr is a TTY)."),
        click.option("--mock", is_flag=True, help="Start the embedded mock server and run against it."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("inputs", nargs=-1, required=True)
@run_options
@click.pass_context
def run(ctx: click.Context, inputs: tuple[str, ...], **opts) -> None:
    """Send every prompt in INPUTS (JSONL files, globs, or - for stdin) and write one result per line.

    Each line is chat shorthand {"messages": [...]}, completion shorthand
    {"prompt": "..."} or an OpenAI Batch API line {"custom_id", "method", "url", "body"}.
    """
    cfg = config_from_options(inputs, opts)
    sys.exit(start(ctx, cfg, mock=opts["mock"], progress=opts["progress"]))


def config_from_options(inputs, opts) -> RunConfig:
    concurrencies = parse_number_list(opts["concurrency"], "--concurrency", integer=True)
    rates = parse_number_list(opts["rate"], "--rate", integer=False) if opts["rate"] else [None]
    try:
        stages = make_stages(concurrencies, rates)
        fsync = FsyncPolicy.parse(opts["fsync"])
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if opts["resume"] and opts["overwrite"]:
        raise click.UsageError("--resume and --overwrite exclude each other")
    if opts["retry_failed"] and not opts["resume"]:
        raise click.UsageError("--retry-failed goes with --resume")
    if opts["burstiness"] <= 0:
        raise click.BadParameter("must be positive", param_hint="--burstiness")
    base_urls = tuple(u for url in opts["base_urls"] for u in url.split()) or (DEFAULT_BASE_URL,)
    return RunConfig(
        inputs=tuple(inputs), output=opts["output"], base_urls=base_urls, model=opts["model"],
        api_key_env=opts["api_key_env"], auth=not opts["no_auth"], headers=tuple(opts["headers"]),
        params=parse_params(opts["params"]), include_usage=not opts["no_usage"],
        stages=stages, burstiness=opts["burstiness"], num_prompts=opts["num_prompts"],
        duration_s=opts["duration"], warmup=opts["warmup"], seed=opts["seed"],
        retry=RetryPolicy(max_attempts=opts["max_attempts"]),
        timeouts=Timeouts(connect=opts["connect_timeout"], first_byte=opts["first_byte_timeout"],
                          idle=opts["idle_timeout"], total=opts["timeout_total"]),
        resume=opts["resume"], overwrite=opts["overwrite"], retry_failed=opts["retry_failed"], fsync=fsync,
        drain_timeout_s=opts["drain_timeout"], output_format=opts["output_format"], shard=opts["shard"],
        rpm=opts["rpm"], tpm=opts["tpm"], adaptive=opts["adaptive"], price_input=opts["price_input"],
        price_output=opts["price_output"], summary_path=opts["summary_path"], slos=parse_slos(opts["slos"]),
        max_failed=opts["max_failed"],
    )


def resolve_shard(cfg: RunConfig) -> RunConfig:
    """An explicit --shard wins; else Kubernetes Indexed Job / Slurm array variables."""
    import dataclasses

    from .shard import parse_shard, shard_from_env

    try:
        if cfg.shard:
            parse_shard(cfg.shard)
            return cfg
        shard = shard_from_env(os.environ)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if shard is None:
        return cfg
    return dataclasses.replace(cfg, shard=f"{shard.index}/{shard.count}")


def known_secrets(cfg: RunConfig) -> tuple[str, ...]:
    """What the log filter redacts: the key and every header value taken from the environment."""
    from .headers import HeaderError, resolve_headers

    try:
        return resolve_headers(cfg.headers, api_key_env=cfg.api_key_env, environ=os.environ).secrets
    except HeaderError:  # the run's preflight reports it; redact what can be known
        return tuple(s for s in [os.environ.get(cfg.api_key_env)] if s)


def start(ctx: click.Context, cfg: RunConfig, *, mock, progress) -> int:
    from .run import execute

    from .config import render_paths

    cfg = resolve_shard(cfg)
    try:
        cfg = render_paths(cfg)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    setup_logging(ctx.obj["log_format"], ctx.obj["verbosity"], known_secrets(cfg))
    mock_config = None
    if mock is True:
        from .mock import MockConfig

        mock_config = MockConfig()
    elif mock:
        mock_config = mock
    return execute(cfg, mock=mock_config, show_progress=progress)


@main.command(epilog=EXIT_CODES_HELP)
@click.argument("jobfile", type=click.Path(exists=True, dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a job key for this run (TOML value), e.g. --set concurrency=4.")
@click.option("--progress/--no-progress", default=None)
@click.pass_context
def job(ctx: click.Context, jobfile: str, overrides: tuple[str, ...], progress) -> None:
    """Run a declarative TOML job file (for cron, systemd timers, Kubernetes CronJobs)."""
    from .jobfile import JobFileError, load_job

    try:
        cfg, mock = load_job(jobfile, overrides)
    except JobFileError as exc:
        click.echo(f"streamrun: {exc}", err=True)
        sys.exit(2)
    sys.exit(start(ctx, cfg, mock=mock, progress=progress))


@main.command()
@click.option("--n", "count", default=100, show_default=True, type=click.IntRange(min=1))
@click.option("--input-tokens", default=128, show_default=True, type=click.IntRange(min=1))
@click.option("--output-tokens", default=128, show_default=True, type=click.IntRange(min=1))
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--ignore-eos/--no-ignore-eos", default=False, show_default=True,
              help="Set ignore_eos (vLLM) so servers generate exactly --output-tokens.")
@click.option("--model", default=None)
def synth(count: int, input_tokens: int, output_tokens: int, seed: int, ignore_eos: bool, model) -> None:
    """Write synthetic benchmark prompts (JSONL) to stdout."""
    from .synth import write_synthetic

    write_synthetic(sys.stdout.buffer, count=count, input_tokens=input_tokens, output_tokens=output_tokens,
                    seed=seed, ignore_eos=ignore_eos, model=model)


if __name__ == "__main__":
    main()
