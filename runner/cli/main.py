"""The `streamrun` command line: parse options, build a RunConfig, call the run.

Heavy modules (aiohttp, tenacity, plotly) are imported only by the command
that needs them, so `streamrun --help` starts fast.
"""

from __future__ import annotations

import gc
import importlib
import logging
import sys

import click

from ..config.options import config_from_options
from ..config.parsers import OptionError
from ..config.run_config import RunConfig, resolve_shard
from ..errors import RunError
from ..logs import setup_logging
from ..preflight import secrets_of
from .flags import global_options, run_options
from .help import EXIT_CODES_HELP, examples

# name -> (module:attribute, one-line help shown without importing the module)
LAZY_COMMANDS = {
    "batch": ("runner.cli.batch:batch_command",
              "Run the inputs through the provider's Batch API: half price, answers within 24 hours."),
    "mock": ("runner.cli.mock:mock_command", "Run the embedded OpenAI-compatible mock server."),
    "report": ("runner.cli.report:report_command", "Summarise results: percentiles, goodput, JSON, HTML."),
    "convert": ("runner.cli.convert:convert_command", "Convert results to/from the OpenAI Batch API output format."),
    "merge": ("runner.cli.merge:merge_command", "Merge shard outputs; check every input has one record."),
    "estimate": ("runner.cli.estimate:estimate_command", "Count prompts, tokens and cost without sending anything."),
    "synth": ("runner.cli.synth:synth_command", "Write synthetic benchmark prompts (JSONL), sized exactly in tokens."),
    "stream": ("runner.cli.stream:stream_command", "Stream one prompt, tokens as they arrive, then TTFT and ITL."),
    "export": ("runner.cli.export:export_command",
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
                if cmd is not None:  # list_commands names only commands it has
                    rows.append((name, cmd.get_short_help_str(60)))
        with formatter.section("Commands"):
            formatter.write_dl(rows)


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


def start(ctx: click.Context, cfg: RunConfig, *, mock, progress) -> int:
    """Every run from the command line goes through the Python API's `run` (so the API cannot rot)."""
    from ..api import run as api_run
    from ..config.run_config import render_paths
    from ..errors import EXIT_SIGINT

    setup_logging(ctx.obj["log_format"], ctx.obj["verbosity"], secrets_of(cfg))
    try:
        cfg = render_paths(resolve_shard(cfg))
    except RunError as exc:
        from ..observe.pushgateway import push_failure

        push_failure(cfg, exc.exit_code)  # --push-gateway: this run ended too (every later ending: run_document)
        raise click.UsageError(str(exc)) from None
    mock_config = None
    if mock is True:
        from ..mock import MockConfig

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
    """Run a declarative TOML job file (for cron, systemd timers, Kubernetes CronJobs); with batch = true,
    through the provider's Batch API, as `streamrun batch` runs."""
    from ..config.jobfile import JobFileError, load_job

    flags = tuple(f"{k} = true" for k, on in (("resume", resume), ("overwrite", overwrite)) if on)
    try:
        cfg, mock = load_job(jobfile, overrides + flags)
    except JobFileError as exc:  # logged, so that --log-format json gets a JSON line as every run error does
        setup_logging(ctx.obj["log_format"], ctx.obj["verbosity"])
        logging.getLogger("streamrun").error("%s", exc)
        sys.exit(exc.exit_code)
    if cfg.batch.enabled:  # batch = true: through the provider's Batch API (runner/cli/batch.py)
        from .batch import start_batch

        sys.exit(start_batch(ctx, cfg, mock=mock))
    sys.exit(start(ctx, cfg, mock=mock, progress=progress))


if __name__ == "__main__":
    main()
