"""`streamrun convert`: results to and from the OpenAI Batch API output format (runner.outputs.batch)."""

from __future__ import annotations

import os

import click

from ..errors import EXIT_FAILED
from ..outputs.batch import OPENAI_BATCH, STREAMRUN
from ..outputs.convert import convert_stream
from ..stream.paths import CHAT_PATH
from .help import examples


@click.command("convert", epilog=examples(
    "streamrun convert results.jsonl -o batch_output.jsonl --to openai-batch",
    "streamrun convert batch_output.jsonl -o results.jsonl --to streamrun"))
@click.argument("in_path", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option(
    "-o", "--output", "out_path", required=True,
    type=click.Path(dir_okay=False, allow_dash=True), help="Converted JSONL file.",
)
@click.option(
    "--to", "to", required=True, type=click.Choice([OPENAI_BATCH, STREAMRUN]),
    help="Target format; each input line's format is detected on its own.",
)
@click.option(
    "--url", "request_url", default=CHAT_PATH, show_default=True,
    help="API path for records that do not carry their own request_url "
    "(/v1/completions gives text_completion bodies).",
)
def convert_command(in_path: str, out_path: str, to: str, request_url: str) -> None:
    """Convert results to or from the OpenAI Batch API output format.

    Exit status: 0 when every line converted, 1 when some were skipped.
    """
    if in_path != "-" and out_path != "-" and _same_file(in_path, out_path):
        raise click.UsageError("the output would overwrite the input")
    with click.open_file(in_path, "rb") as src, click.open_file(out_path, "wb") as dst:
        written, bad, superseded = convert_stream(src, dst, to, in_path, request_url)
    left_out = f", {superseded} superseded records left out" if superseded else ""
    click.echo(f"convert: {written} lines written, {bad} skipped{left_out}", err=True)
    if bad:
        click.get_current_context().exit(EXIT_FAILED)


def _same_file(a: str, b: str) -> bool:
    return os.path.exists(b) and os.path.samefile(a, b)
