"""``streamrun report``: the click command. Wiring only: options in, the
report built once (:mod:`.build`), then handed to each output asked for."""

from __future__ import annotations

import math
import sys
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING

import click

from runner.stats import SLO_KEYS

from .build import build_report
from .document import write_json
from .html import write_html
from .terminal import render_table

if TYPE_CHECKING:
    from rich.console import Console

EPILOG = """\b
Examples:
  streamrun report results.jsonl
  streamrun report bench.jsonl --slo ttft=500ms --slo tpot=50ms --html report.html
  streamrun report bench.jsonl --json | jq '.stages[0].metrics.ttft_s.p99'
  streamrun report shard-*.jsonl batch_output.jsonl --json-out summary.json
"""


def parse_slo(spec: str) -> tuple[str, float]:
    """``ttft=0.5`` / ``ttft=500ms`` / ``tpot=0.05s`` -> ``("ttft", 0.5)``."""
    name, sep, value = spec.partition("=")
    name, value = name.strip().lower(), value.strip().lower()
    if not sep or name not in SLO_KEYS:
        raise click.BadParameter(f"{spec!r}: expected NAME=SECONDS with NAME one of {', '.join(SLO_KEYS)}")
    scale = 1.0
    if value.endswith("ms"):
        value, scale = value[:-2], 1e-3
    elif value.endswith("s"):
        value = value[:-1]
    try:
        seconds = float(value) * scale
    except ValueError:
        raise click.BadParameter(f"{spec!r}: {value!r} is not a number of seconds") from None
    if not math.isfinite(seconds) or seconds <= 0:
        raise click.BadParameter(f"{spec!r}: an SLO must be a positive time")
    return name, seconds


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
@click.option("--slo", "slo_specs", multiple=True, metavar="NAME=SECONDS",
              help="Goodput SLO, repeatable: ttft, tpot, e2e, itl (max gap of a request); "
                   "seconds, or with an ms suffix (ttft=500ms).")
@click.option("--json", "json_stdout", is_flag=True,
              help="Print the summary as JSON (schema streamrun.report/1, docs/REPORT.md) on stdout "
                   "instead of the tables.")
@click.option("--json-out", "json_out", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              metavar="PATH", help="Write the summary as JSON to PATH; the tables are still printed "
                                    "(- prints the JSON instead, like --json).")
@click.option("--html", "html_path", type=click.Path(dir_okay=False), default=None, metavar="PATH",
              help="Write a self-contained HTML report with charts to PATH "
                   "(needs plotly and jinja2: pip install 'streamrun[report]').")
def report_command(paths: tuple[str, ...], slo_specs: tuple[str, ...], json_stdout: bool, json_out: str | None,
                   html_path: str | None) -> None:
    """Summarise results files: percentiles, throughput, goodput, per stage.

    PATHS are results files of `streamrun run`, or OpenAI Batch API output
    files (requests and tokens only: the Batch API keeps no timings).
    """
    slos = dict(parse_slo(s) for s in slo_specs)
    _check_outputs(paths, {"--json-out": json_out, "--html": html_path})
    if html_path and not (find_spec("plotly") and find_spec("jinja2")):
        raise click.ClickException("--html needs plotly and jinja2: pip install 'streamrun[report]'")
    to_stdout = json_stdout or json_out == "-"
    report = build_report(paths, slos)
    if not report.stages:
        raise click.ClickException("no result records found in " + ", ".join(paths))
    if to_stdout:
        write_json(report, "-")
    else:
        render_table(report.summaries, _console())
    if json_out and json_out != "-":
        write_json(report, json_out)
        click.echo(f"wrote {json_out}", err=True)
    if html_path:
        size = write_html(report, html_path)
        click.echo(f"wrote {html_path} ({size / 1e6:.1f} MB)", err=True)
