"""``streamrun export``: the click command. Wiring only: arguments in,
:func:`.write.export` run once, its summary on stderr and the exit status
(0 all exported, 1 bad lines skipped, 2 usage error)."""

from __future__ import annotations

import click

from ..errors import EXIT_FAILED, RunError
from ..export.write import FORMATS, ROW_GROUP_SIZE, ExportError, export
from ..inputs.items import InputError, expand_inputs
from .help import click_error, examples


@click.command("export", epilog=examples(
    "streamrun export results.jsonl --to parquet results.parquet",
    "streamrun export results.jsonl --inputs prompts.jsonl --to parquet answers.parquet",
    "streamrun export shard-*.jsonl --inputs a.jsonl --inputs b.jsonl --to hf-dataset answers_ds/",
))
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--to", "target", nargs=2, required=True, metavar="FORMAT OUT",
              type=(click.Choice(FORMATS), click.Path()),
              help="parquet: one Parquet file OUT; hf-dataset: a Hugging Face dataset saved to the "
                   "directory OUT (load it with datasets.load_from_disk).")
@click.option("--inputs", multiple=True, metavar="FILE",
              help="An input JSONL file (or glob) the results came from: adds the columns prompt and "
                   "request, joined by custom_id. Repeat for several files.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists (a directory only if it is a saved dataset).")
@click.option("--row-group-size", default=ROW_GROUP_SIZE, show_default=True, type=click.IntRange(min=1), metavar="N",
              help="Rows per Parquet row group (smaller: less memory while writing).")
def export_command(results: tuple[str, ...], target: tuple[str, str], inputs: tuple[str, ...], overwrite: bool,
                   row_group_size: int) -> None:
    """Export results to Parquet or a Hugging Face dataset, one row per record.

    RESULTS are results files of `streamrun run`, in either output format.
    Metrics, usage and error are flattened into columns; tool_calls, choices,
    logprobs, usage, stage and source are kept whole as JSON text (the
    columns: runner/export/schema.py). Needs pyarrow, and datasets for hf-dataset:
    pip install 'streamrun[export]'.

    Exit status: 0 every line exported; 1 bad lines were skipped (the rest
    is exported); 2 usage error (nothing written).
    """
    to, out = target
    try:
        paths = expand_inputs(inputs) if inputs else []
    except InputError as exc:
        raise click.UsageError(str(exc)) from None
    try:
        report = export(results, to, out, paths, overwrite, row_group_size)
    except ExportError as exc:
        raise click.UsageError(str(exc)) from None
    except RunError as exc:  # a package to install (2), no rows for a dataset (1)
        raise click_error(exc) from None
    click.echo(report.summary(to, out), err=True)
    if report.bad_lines:
        click.get_current_context().exit(EXIT_FAILED)
