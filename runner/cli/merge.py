"""`streamrun merge`: shard result files into one, checked against the inputs (runner.outputs.merge)."""

from __future__ import annotations

import click

from ..errors import EXIT_FAILED
from ..outputs.merge import merge, usage_problem
from .help import examples


@click.command("merge", epilog=examples(
    "streamrun merge out/run-*of4.jsonl -o out/all.jsonl --inputs prompts.jsonl --missing out/missing.jsonl",
    "streamrun merge a.jsonl b.jsonl -o merged.jsonl        # duplicates reported, the ok record kept"))
@click.argument(
    "outputs", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False)
)
@click.option(
    "-o", "--output", "out_path", required=True, type=click.Path(dir_okay=False),
    help="Merged results file (one record per custom_id, per stage in sweeps).",
)
@click.option(
    "--inputs", multiple=True, type=click.Path(exists=True, dir_okay=False),
    help="An input JSONL file the outputs came from; repeat for several files. "
    "Every input id must then have exactly one record.",
)
@click.option(
    "--missing", "missing_path", type=click.Path(dir_okay=False),
    help="Write the input lines that have no record here (needs --inputs).",
)
def merge_command(
    outputs: tuple[str, ...],
    out_path: str,
    inputs: tuple[str, ...],
    missing_path: str | None,
) -> None:
    """Combine shard result files into one, checking ids against the inputs.

    Exit status: 0 clean; 1 duplicate, missing or extra ids; 2 usage error.
    """
    problem = usage_problem(outputs, out_path, inputs, missing_path)
    if problem:
        raise click.UsageError(problem)
    report = merge(outputs, out_path, inputs or None, missing_path)
    click.echo(report.summary(), err=True)
    if not report.ok:
        click.get_current_context().exit(EXIT_FAILED)
