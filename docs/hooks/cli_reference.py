"""The CLI reference page (cli.md), generated at `mkdocs build` time.

Why a build hook and no checked-in page: the page is made from the option
table (every run option's flag, job key, default and help) and from click's
commands (every other command's own options) each time the site is built, so
it cannot disagree with `--help`, and there is no copy in the repository to
go stale or to conflict when branches add options.  `markdown()` needs only
click and streamrun, not mkdocs: tests/test_docs.py calls it to check that it
covers every option and command.

This is the one place the docs reach into streamrun's internal modules (the
click group and the option table).
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

import click

_UNSET = getattr(click.core, "UNSET", None)  # click >= 8.2: "no default given"

PAGE = "cli.md"


def _cell(text: str) -> str:
    """Table-safe text: one line, no bare pipes."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(param: click.Parameter) -> str:
    if getattr(param, "count", False) or getattr(param, "is_flag", False) and not param.secondary_opts:
        return ""
    default = param.default
    if default is None or default is _UNSET or callable(default) or default == () or default is False:
        return ""
    if isinstance(default, (list, tuple)):
        default = ",".join(map(str, default))
    return f"`{default}`"


def _option_rows(cmd: click.Command, ctx: click.Context) -> list[str]:
    rows = ["| option | value | default | meaning |", "|---|---|---|---|"]
    for param in cmd.get_params(ctx):
        if not isinstance(param, click.Option) or param.hidden:
            continue
        names = " / ".join(f"`{n}`" for n in [*param.opts, *param.secondary_opts])
        value = "" if param.is_flag or param.count else f"`{param.make_metavar(ctx)}`"
        rows.append(f"| {names} | {_cell(value)} | {_default(param)} | {_cell(param.help or '')} |")
    return rows


def _command(name: str, cmd: click.Command, parent: click.Context) -> list[str]:
    ctx = click.Context(cmd, info_name=name, parent=parent)
    usage = cmd.collect_usage_pieces(ctx)
    out = [f"## streamrun {name}", "", "```text", f"streamrun {name} {' '.join(usage)}", "```", ""]
    if cmd.help:
        out += [inspect.cleandoc(cmd.help).replace("\b\n", ""), ""]
    arguments = [p for p in cmd.get_params(ctx) if isinstance(p, click.Argument)]
    if arguments:
        out += ["Arguments: " + ", ".join(f"`{p.make_metavar(ctx)}`" for p in arguments) + ".", ""]
    out += [*_option_rows(cmd, ctx), ""]
    if cmd.epilog:
        out += ["```text", cmd.epilog.replace("\b\n", "").rstrip(), "```", ""]
    return out


def markdown() -> str:
    """The whole page, from this checkout's click commands and option table."""
    root_dir = str(Path(__file__).resolve().parents[2])
    if root_dir not in sys.path:  # mkdocs loads this file by path: the checkout's runner, installed or not
        sys.path.insert(0, root_dir)
    from runner.cli.main import main
    from runner.config.options import markdown_table

    root = click.Context(main, info_name="streamrun")
    out = [
        "# CLI reference",
        "",
        "Generated from the commands and the option table each time this site is built,",
        "so it is what `streamrun COMMAND --help` prints. Global options go before the",
        "command (`streamrun --log-format json job ...`); `-v`, `-q` and `--log-format`",
        "are accepted after it too.",
        "",
        "## streamrun",
        "",
        *_option_rows(main, root),
        "",
        "Commands: " + ", ".join(f"[`{n}`](#streamrun-{n})" for n in main.list_commands(root)) + ".",
        "",
        "```text",
        main.epilog.replace("\b\n", "").rstrip(),
        "```",
        "",
        "## Job-file keys",
        "",
        "Every key of a job file (`streamrun job`), with its flag of `streamrun run`:",
        "the two take the same values and mean the same by them. Durations are",
        "`500ms`, `5s`, `2m` or a number of seconds, and `0` turns a timeout off in both.",
        "The same names are the keyword arguments of the [Python API](python-api.md).",
        "",
        markdown_table(),
        "",
    ]
    for name in main.list_commands(root):
        out += _command(name, main.get_command(root, name), root)
    return "\n".join(out).rstrip() + "\n"


def on_files(files, config):
    """mkdocs hook: add the generated page to the site's files."""
    from mkdocs.structure.files import File

    files.append(File.generated(config, PAGE, content=markdown()))
    return files
