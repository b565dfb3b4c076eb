"""The `streamrun` command line: parse options, build a RunConfig, call the run.

Heavy modules (aiohttp, tenacity, plotly) are imported only by the command
that needs them, so `streamrun --help` starts fast.
"""

from __future__ import annotations

import importlib
import gc
import logging
import os
import sys

import click

from .config import RunConfig
from .errors import RunError
from .options import (BY_FIELD, METAVARS, OPTIONS, REQUIRED, Option, OptionError, boolean, build_config, default_of,
                      parse_values, shown_default)

EXIT_CODES_HELP = """\b
Exit codes:
  0    every record ok, or failures within the failure budget
  1    failures over the budget (default budget: none)
  2    usage or configuration error (nothing sent), or the first 20
       answers were all 401/403/404 (wrong key, URL or model), or the
       server was never reachable (nothing written for those prompts)
  3    the output is locked by another run
  4    the output could not be written (full disk): sending stopped,
       in-flight requests drained; --resume completes the file
  5    --strict-timing and a stage was client-bound: the client's own
       event-loop lag or CPU made its latencies untrustworthy
  130  interrupted by SIGINT (Ctrl-C); 143 by SIGTERM
"""

def examples(*lines: str, exit_codes: bool = False) -> str:
    """The end of a command's --help: 2-4 examples to copy (click keeps a \\b block as written)."""
    text = "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)
    return text + ("\n\n" + EXIT_CODES_HELP if exit_codes else "")


# name -> (module:attribute, one-line help shown without importing the module)
LAZY_COMMANDS = {
    "mock": ("runner.mock:mock_command", "Run the embedded OpenAI-compatible mock server."),
    "report": ("runner.report:report_command", "Summarise results: percentiles, goodput, JSON, HTML."),
    "convert": ("runner.batchfmt:convert_command", "Convert results to/from the OpenAI Batch API output format."),
    "merge": ("runner.merge:merge_command", "Merge shard outputs; check every input has one record."),
    "estimate": ("runner.estimate:estimate_command", "Count prompts, tokens and cost without sending anything."),
    "synth": ("runner.synth_cli:synth_command", "Write synthetic benchmark prompts (JSONL), sized exactly in tokens."),
    "stream": ("runner.smoke:stream_command", "Stream one prompt, tokens as they arrive, then TTFT and ITL."),
    "export": ("runner.export:export_command",
               "Export results to Parquet or a Hugging Face dataset (one row per record)."),
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
        from .stream.errors import redact

        msg = record.getMessage()
        red = redact(msg, self.secrets)
        if red != msg:
            record.msg, record.args = red, None
        return True


class _JsonFormatter(logging.Formatter):
    """One JSON object per line: `{"ts", "level", "msg"}`, plus the fields of `extra={"data": {...}}`.

    `log.info("progress", extra={"data": {"done": 3}})` gives `{"ts", "level", "msg": "progress", "done": 3}`;
    a field never replaces ts, level or msg. String values in the fields are redacted like messages.
    """

    emits_json = True  # runner.progress.json_logs() reads this: the run then logs progress and summary as JSON

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = secrets

    def _redact(self, value):
        from .stream.errors import redact

        if isinstance(value, str):
            return redact(value, self.secrets)
        if isinstance(value, dict):
            return {k: self._redact(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._redact(v) for v in value]
        return value

    def format(self, record: logging.LogRecord) -> str:
        import orjson

        out = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname.lower(),
               "msg": record.getMessage()}
        data = getattr(record, "data", None)
        if isinstance(data, dict):
            for key, value in data.items():
                out.setdefault(str(key), self._redact(value) if self.secrets else value)
        if record.exc_info:
            out.setdefault("exc", self._redact(self.formatException(record.exc_info)))
        return orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def setup_logging(fmt: str, verbosity: int, secrets: tuple[str, ...] = ()) -> None:
    """The streamrun logger on stderr; under json, other libraries' warnings become JSON lines too."""
    logger = logging.getLogger("streamrun")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter(secrets) if fmt == "json" else logging.Formatter("streamrun: %(message)s"))
    handler.addFilter(_SecretFilter(secrets))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO)
    logger.propagate = False
    if fmt == "json":  # asyncio's, aiohttp's and Python's warnings would otherwise reach stderr as plain text
        root = logging.getLogger()
        for old in [h for h in root.handlers if getattr(h, "_streamrun", False)]:
            root.removeHandler(old)
        other = logging.StreamHandler(sys.stderr)
        other.setFormatter(_JsonFormatter(secrets))
        other.addFilter(_SecretFilter(secrets))
        other.setLevel(logging.WARNING)
        other._streamrun = True  # type: ignore[attr-defined]
        root.addHandler(other)
        logging.captureWarnings(True)


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


def global_options(f):
    """-v, -q and --log-format after the subcommand too (`streamrun run ... -v`), as users type them."""
    def remember(key: str, combine):
        def callback(ctx: click.Context, param, value):
            if value:
                obj = ctx.find_root().obj
                obj[key] = combine(obj[key], value)
            return value
        return callback

    f = click.option("--log-format", type=click.Choice(["text", "json"]), default=None, expose_value=False,
                     callback=remember("log_format", lambda old, new: new), help="Format of log lines on stderr.")(f)
    f = click.option("-v", "--verbose", count=True, expose_value=False,
                     callback=remember("verbosity", lambda old, new: old + new), help="More log output.")(f)
    f = click.option("-q", "--quiet", count=True, expose_value=False,
                     callback=remember("verbosity", lambda old, new: old - new), help="Less log output.")(f)
    return f


def _flag_decorator(option: Option):
    """The click option of one table row; values stay raw (None when not given) for the table's parsers."""
    default = default_of(option)
    names = option.flag.split("/")
    if option.parse is boolean:
        if len(names) == 2:  # --adaptive/--no-adaptive
            return click.option(f"{names[0]}/{names[1]}", option.name, default=None,
                                help=f"{option.help} [default: {'on' if default else 'off'}]")
        return click.option(names[0], option.name, is_flag=True, flag_value=not default, default=None,
                            help=option.help)
    shown = shown_default(option)
    extra = []
    if option.envvar:
        extra.append(f"env {option.envvar}")
    if shown is not None:
        extra.append(f"default: {shown}")
    help_text = option.help + (f" [{'; '.join(extra)}]" if extra else "")
    choices = getattr(option.parse, "choices", None)
    return click.option(*names, option.name, multiple=option.multiple, default=None,
                        type=click.Choice(choices) if choices else None,
                        metavar=option.metavar or METAVARS.get(option.parse), help=help_text)


def run_options(f):
    for option in reversed([o for o in OPTIONS if o.flag]):
        f = _flag_decorator(option)(f)
    f = click.option("--progress/--no-progress", default=None,
                     help="Live progress bar (default: when stderr is a TTY).")(f)
    f = click.option("--mock", is_flag=True, help="Start the embedded mock server and run against it.")(f)
    return global_options(f)


@main.command(epilog=examples(
    "streamrun run prompts.jsonl -o out.jsonl --mock                  # try it: the embedded mock",
    "streamrun run data/*.jsonl -o out.jsonl --base-url https://api.openai.com/v1 --model gpt-4o-mini -c 32",
    "streamrun run prompts.jsonl -o bench.jsonl -c 1,4,16,64 --slo ttft=500ms --slo tpot=50ms",
    "streamrun run prompts.jsonl -o out.jsonl --resume               # after a crash: skip what is done",
    exit_codes=True))
@click.argument("inputs", nargs=-1, required=True)
@run_options
@click.pass_context
def run(ctx: click.Context, inputs: tuple[str, ...], **opts) -> None:
    """Send every prompt in INPUTS (JSONL files, globs, or - for stdin) and write one result per line.

    Each line is chat shorthand {"messages": [...]}, completion shorthand
    {"prompt": "..."} or an OpenAI Batch API line {"custom_id", "method", "url", "body"}.
    """
    mock, progress = opts.pop("mock"), opts.pop("progress")
    try:
        cfg = config_from_options(inputs, opts)
    except (OptionError, RunError) as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(start(ctx, cfg, mock=mock, progress=progress))


def config_from_options(inputs: tuple[str, ...], opts: dict, environ=os.environ) -> RunConfig:
    """The options as click parsed them (raw strings, None when absent) -> RunConfig, via the one table."""
    raw: dict = {"inputs": inputs}
    for option in OPTIONS:
        if not option.flag:
            continue
        value = opts.get(option.name)
        if value is None or value == ():
            if option.envvar and environ.get(option.envvar):
                raw[option.field] = environ[option.envvar]
            continue
        raw[option.field] = value
    missing = [BY_FIELD[f].flag for f in REQUIRED if f not in raw]
    if missing:
        raise OptionError(f"missing option {missing[0].replace('/', ' / ')}")
    return build_config(parse_values(raw, where=lambda o: f"{o.shown}: "))


def resolve_shard(cfg: RunConfig) -> RunConfig:
    """An explicit --shard wins; else Kubernetes Indexed Job / Slurm array variables."""
    import dataclasses

    from .ids import parse_shard, shard_from_env

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
    from .stream.headers import HeaderError, resolve_credentials

    try:
        return resolve_credentials(cfg.headers, key_envs=cfg.key_envs(), environ=os.environ).secrets
    except HeaderError:  # the run's preflight reports it; redact what can be known
        return tuple(s for s in (os.environ.get(v) for v in cfg.key_envs().values() if v) if s)


def start(ctx: click.Context, cfg: RunConfig, *, mock, progress) -> int:
    """Every run from the command line goes through the Python API's `run` (so the API cannot rot)."""
    from .api import run as api_run
    from .config import render_paths
    from .run import EXIT_SIGINT

    cfg = resolve_shard(cfg)
    try:
        cfg = render_paths(cfg)
    except RunError as exc:
        raise click.UsageError(str(exc)) from None
    setup_logging(ctx.obj["log_format"], ctx.obj["verbosity"], known_secrets(cfg))
    mock_config = None
    if mock is True:
        from .mock import MockConfig

        mock_config = MockConfig()
    elif mock:
        mock_config = mock
    # What exists before the run (modules, config) is never garbage: keep the cyclic GC from scanning it
    # again, and let it run less often (a run allocates per event; its cycles are rare). CLI only: the
    # Python API leaves the caller's interpreter as it is.
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
    try:
        return api_run(config=cfg, mock=mock_config, progress=progress, cli=True)["exit_code"]
    except RunError as exc:
        logging.getLogger("streamrun").error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:  # Ctrl-C before the run started (while scanning the inputs)
        logging.getLogger("streamrun").error("interrupted before any request was sent")
        return EXIT_SIGINT


@main.command(epilog=examples(
    "streamrun job jobs/sample.toml                    # the shipped example, against the embedded mock",
    "streamrun job jobs/nightly.toml --resume          # a cron rerun continues today's file",
    "streamrun job jobs/nightly.toml --set concurrency=4 --set params.temperature=1",
    exit_codes=True))
@click.argument("jobfile", type=click.Path(exists=True, dir_okay=False))
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a job key for this run (TOML value), e.g. --set concurrency=4 or "
                   "--set params.temperature=1 (tables are merged key by key).")
@click.option("--resume", is_flag=True, help="Same as --set resume=true.")
@click.option("--overwrite", is_flag=True, help="Same as --set overwrite=true.")
@click.option("--progress/--no-progress", default=None, help="Live progress bar (default: when stderr is a TTY).")
@global_options
@click.pass_context
def job(ctx: click.Context, jobfile: str, overrides: tuple[str, ...], resume: bool, overwrite: bool,
        progress) -> None:
    """Run a declarative TOML job file (for cron, systemd timers, Kubernetes CronJobs)."""
    from .jobfile import JobFileError, load_job

    flags = tuple(f"{k} = true" for k, on in (("resume", resume), ("overwrite", overwrite)) if on)
    try:
        cfg, mock = load_job(jobfile, overrides + flags)
    except JobFileError as exc:  # logged, so that --log-format json gets a JSON line as every run error does
        setup_logging(ctx.obj["log_format"], ctx.obj["verbosity"])
        logging.getLogger("streamrun").error("%s", exc)
        sys.exit(2)
    sys.exit(start(ctx, cfg, mock=mock, progress=progress))


if __name__ == "__main__":
    main()
