"""``streamrun report``: the click command. Wiring only: options in, the
report built once (:mod:`.build`), then handed to each output asked for."""

from __future__ import annotations

import sys
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

import click

from runner.config.options import BY_FIELD
from runner.config.parsers import OptionError, percentile_list, positive_duration, slos
from runner.extras import install_hint
from runner.stats import PERCENTILES

from ..report.build import build_report
from ..report.csvout import write_csv
from ..report.degraded import attach_degraded
from ..report.document import write_json
from ..report.grids import to_markdown
from ..report.html import write_html
from ..report.read import warn_stderr
from ..report.server import find_side_files, load_server_view
from ..report.server import terminal_lines as server_lines
from ..report.tables import render_report, report_grids
from ..report.timing import attach_timing

if TYPE_CHECKING:
    from rich.console import Console

EPILOG = """\b
Examples:
  streamrun report results.jsonl
  streamrun report bench.jsonl --slo ttft=500ms --slo tpot=50ms --html report.html
  streamrun report bench.jsonl --json | jq '.stages[0].metrics.ttft_s.p99'
  streamrun report before.jsonl after.jsonl --percentiles 50,99,99.9 --window 10s --html compare.html
"""


def _parsed(parse, value, hint: str):
    """A value through the run options' own parser; a bad one is a usage error naming the flag."""
    try:
        return parse(value)
    except OptionError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None


def _console() -> Console:
    from rich.console import Console

    # Tables are printed at their natural width (terminal.print_whole), so
    # piped output needs no width of its own; no colour codes in files.
    return Console() if sys.stdout.isatty() else Console(no_color=True, highlight=False)


def _check_outputs(paths: tuple[str, ...], outputs: dict[str, str | None]) -> None:
    """Refuse an output path that names an input or looks like a results file."""
    inputs = {Path(p).resolve() for p in paths}
    for opt, out in outputs.items():
        if out and out != "-" and (Path(out).resolve() in inputs or out.endswith(".jsonl")):
            raise click.BadParameter(f"{out!r} looks like a results file; refusing to overwrite it "
                                     f"(give {opt} a .json/.html name)", param_hint=opt)


@click.command("report", epilog=EPILOG)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--slo", "slo_specs", multiple=True, metavar=BY_FIELD["observe.slos"].metavar,
              help=BY_FIELD["observe.slos"].help)
@click.option("--json", "json_stdout", is_flag=True,
              help="Print the summary as JSON (schema streamrun.report/1, docs/REPORT.md) on stdout "
                   "instead of the tables.")
@click.option("--json-out", "json_out", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              metavar="PATH", help="Write the summary as JSON to PATH; the tables are still printed "
                                    "(- prints the JSON instead, like --json).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None, metavar="PATH",
              help="Write a self-contained HTML report with charts to PATH "
                   "(needs plotly and jinja2: pip install 'streamrun[report]').")
@click.option("--server-metrics", "server_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              metavar="FILE", help="The server's /metrics samples of the run (run --server-metrics), repeatable "
                                   "[default: RESULTS.server_metrics.jsonl beside each results file, if there].")
@click.option("--percentiles", "percentiles_spec", default=None, metavar="P[,P...]",
              help="Percentiles in the tables, JSON, CSV and page, e.g. 50,90,99,99.9 [default: 50,90,95,99].")
@click.option("--window", "window_spec", default=None, metavar="DURATION",
              help="Also summarise per time window of this width (10s, 1m), by completion time: throughput and "
                   "TTFT/ITL/E2E percentiles per window show drift over a long run.")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, allow_dash=True), default=None, metavar="PATH",
              help="Write the per-stage metric table as CSV to PATH (- prints it instead of the tables): a row "
                   "per run, stage and metric, the statistics as columns.")
@click.option("--markdown", "markdown_path", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              metavar="PATH", help="Write the tables as Markdown to PATH (- prints them instead of the tables), "
                                   "for a pull request or a wiki.")
@click.option("--pool", is_flag=True,
              help="Pool every file into one run (shards of one run). Without it each file is its own run "
                   "(files whose summaries share one --label are one), and several runs are compared side by side.")
def report_command(paths: tuple[str, ...], slo_specs: tuple[str, ...], json_stdout: bool, json_out: str | None,
                   html_path: str | None, server_files: tuple[str, ...] = (), percentiles_spec: str | None = None,
                   window_spec: str | None = None, csv_path: str | None = None, markdown_path: str | None = None,
                   pool: bool = False) -> None:
    """Summarise results files: percentiles, throughput, goodput, per stage.

    PATHS are results files of `streamrun run`, or OpenAI Batch API output
    files (requests and tokens only: the Batch API keeps no timings). Each
    file is a run, named by its summary's --label or its file name; several
    runs are shown side by side, each against the first.
    """
    slo_limits = _parsed(slos, slo_specs, "--slo") if slo_specs else {}  # as `run --slo` reads them
    percentiles = _parsed(percentile_list, percentiles_spec, "--percentiles") if percentiles_spec else None
    window_s = _parsed(positive_duration, window_spec, "--window") if window_spec else None
    _check_outputs(paths, {"--json-out": json_out, "--html": html_path, "--csv": csv_path,
                           "--markdown": markdown_path})
    on_stdout = [opt for opt, used in (("--json", json_stdout or json_out == "-"), ("--csv -", csv_path == "-"),
                                       ("--markdown -", markdown_path == "-")) if used]
    if len(on_stdout) > 1:
        raise click.UsageError(f"{' and '.join(on_stdout)} would both print on stdout: write one to a file")
    if html_path and not (find_spec("plotly") and find_spec("jinja2")):
        raise click.ClickException(f"--html needs plotly and jinja2: {install_hint('report')}")
    to_stdout = json_stdout or json_out == "-"
    report = build_report(paths, slo_limits, percentiles=percentiles or PERCENTILES, window_s=window_s,
                          by_run=not pool)
    if not report.stages:
        raise click.ClickException("no result records found in " + ", ".join(paths))
    report.server = load_server_view(find_side_files(paths, server_files), warn_stderr)  # None without samples
    attach_timing(report)  # each stage's client_timing, from the run summaries beside the files
    attach_degraded(report)  # the stages a --workers worker died in
    if to_stdout:
        write_json(report, "-")
    elif csv_path == "-":
        write_csv(report, "-")
    elif markdown_path == "-":
        click.echo(to_markdown(*report_grids(report)), nl=False)
    else:
        render_report(report, _console())
        if report.server is not None:
            click.echo("\n".join(server_lines(report.server, report)))
    if json_out and json_out != "-":
        write_json(report, json_out)
        click.echo(f"wrote {json_out}", err=True)
    if csv_path and csv_path != "-":
        write_csv(report, csv_path)
        click.echo(f"wrote {csv_path}", err=True)
    if markdown_path and markdown_path != "-":
        Path(markdown_path).write_text(to_markdown(*report_grids(report)), encoding="utf-8")
        click.echo(f"wrote {markdown_path}", err=True)
    if html_path:
        size = write_html(report, html_path)
        click.echo(f"wrote {html_path} ({size / 1e6:.1f} MB)", err=True)
