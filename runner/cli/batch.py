"""`streamrun batch`: the inputs through the provider's Batch API (runner/batchapi), at half the price.

Wiring only: the flags are rows of the option table (the run options a
batch run uses, and the batch rows, `command="batch"`); `streamrun job`
comes here too for a job file with `batch = true`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sys

import click

from ..config.options import BY_FIELD, OPTIONS, Option, config_from_options
from ..config.parsers import OptionError, choice
from ..config.run_config import RunConfig, render_paths
from ..errors import EXIT_SIGINT, RunError
from ..logs import setup_logging
from ..preflight import secrets_of
from .flags import flag_decorator, global_options
from .help import examples

#: The run options a batch run takes, with the batch rows after them.
FIELDS = ("output.path", "output.summary_path", "label", "transport.base_urls", "request.model",
          "transport.api_key_env", "transport.api", "transport.anthropic_version", "transport.auth",
          "transport.headers", "request.params", "request.max_tokens", "sharegpt", "transport.retry.max_attempts",
          "transport.timeouts.connect", "transport.ca_cert", "transport.insecure", "transport.client_cert",
          "transport.client_key", "transport.proxy", "transport.limits.max_line_bytes", "output.overwrite",
          "output.format", "output.fsync", "checks.max_failed", "observe.log_every_s", "observe.price_input", "observe.price_output")

# --api openai names OpenAI's Batch API (shorthand chat lines to chat completions, as --api chat)
API = dataclasses.replace(BY_FIELD["transport.api"], parse=choice("openai", "chat", "responses", "anthropic"),
                          help="The provider: openai (its Batch API; shorthand {\"messages\"} lines to chat "
                               "completions, or with responses to the Responses API) or anthropic (Message Batches, "
                               "its lines translated as --api anthropic translates them live).")


def _own(name: str, help: str, **changes) -> Option:
    return dataclasses.replace(BY_FIELD[name], help=help, **changes)


# Rows whose help says what they do here.
OWN = {
    "transport.api": API,
    "output.path": _own("output.path", "Results JSONL (one record per input line); the batch state file goes "
                        "beside it (<output>.batch.json)."),
    "transport.base_urls": _own("transport.base_urls", "The provider's base URL, e.g. https://api.openai.com/v1 or "
                                "https://api.anthropic.com/v1.", multiple=False),
    "transport.retry.max_attempts": _own("transport.retry.max_attempts", "Attempts per call to the provider (polls, "
                                         "uploads, downloads; a create only when it surely did not arrive)."),
    "observe.log_every_s": _own("observe.log_every_s", "While waiting, log the batches still in progress this often "
                                "(and each batch whenever its status or counts change)."),
}


def _options(f):
    rows = [OWN.get(name, BY_FIELD[name]) for name in FIELDS]
    rows += [o for o in OPTIONS if o.command == "batch" and o.flag]
    for option in reversed(rows):
        f = flag_decorator(option)(f)
    f = click.option("--mock", is_flag=True, help="Start the embedded mock server and run against it.")(f)
    return global_options(f)


@click.command("batch", epilog=examples(
    "streamrun batch prompts.jsonl -o out.jsonl --mock                     # try it: the embedded mock",
    "streamrun batch data/*.jsonl -o out.jsonl --base-url https://api.openai.com/v1 --model gpt-4o-mini",
    "streamrun batch data/*.jsonl -o out.jsonl --api anthropic --base-url https://api.anthropic.com/v1 "
    "--model claude-haiku-4-5 --max-tokens 512 --no-wait",
    "streamrun batch data/*.jsonl -o out.jsonl --no-wait                   # later, the same command collects",
    exit_codes=True))
@click.argument("inputs", nargs=-1, required=True)
@_options
@click.pass_context
def batch_command(ctx: click.Context, inputs: tuple[str, ...], **opts) -> None:
    """Run INPUTS through the provider's Batch API (OpenAI's, or Anthropic's Message Batches): half the price of
    live requests, answers within 24 hours, one record per line in OUTPUT as `run` writes them.

    The batch and file ids go into OUTPUT's state file (<output>.batch.json) before each next step: the same
    command, run again after a crash or a signal, resumes polling the same batches and never submits a line
    twice. The exit codes are run's; 0 too while batches are still running (--no-wait). Docs: docs/batch.md.
    """
    mock = opts.pop("mock")
    api = API.name
    if opts.get(api) == "openai":
        opts[api] = "chat"
    try:
        cfg = config_from_options(inputs, opts, fixed={"batch.enabled": True})
    except (OptionError, RunError) as exc:
        raise click.UsageError(str(exc)) from None
    sys.exit(start_batch(ctx, cfg, mock=mock))


def start_batch(ctx: click.Context, cfg: RunConfig, *, mock) -> int:
    """A batch run from the command line (`batch`, or `job` with batch = true): its exit code."""
    from ..aio import loop_factory
    from ..batchapi.driver import run_batch

    try:
        cfg = render_paths(cfg)
    except RunError as exc:
        raise click.UsageError(str(exc)) from None
    setup_logging(ctx.obj["log_format"], ctx.obj["verbosity"], secrets_of(cfg))
    mock_config = None
    if mock is True:
        from ..mock import MockConfig

        mock_config = MockConfig()
    elif mock:
        mock_config = mock
    try:
        with asyncio.Runner(loop_factory=loop_factory()) as runner:
            return runner.run(run_batch(cfg, mock=mock_config, cli=True))["exit_code"]
    except RunError as exc:
        logging.getLogger("streamrun").error("%s", exc)
        return exc.exit_code
    except KeyboardInterrupt:
        logging.getLogger("streamrun").error("interrupted")
        return EXIT_SIGINT
