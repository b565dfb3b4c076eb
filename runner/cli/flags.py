"""The click options of the option table (runner.config.options), and -v/-q/--log-format after a subcommand.

Values stay raw (None when not given): the table's parsers read them, as
they read a job file's, so a flag and its job key cannot disagree.
"""

from __future__ import annotations

import click

from ..config.options import METAVARS, OPTIONS, Option, default_of, shown_default
from ..config.parsers import boolean


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


def flag_decorator(option: Option):
    """The click option of one table row; values stay raw (None when not given) for the table's parsers."""
    if option.flag is None:  # a job key without a flag (`inputs`, `base_dir`): no click option
        raise ValueError(f"{option.field} has no flag")
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
    for option in reversed([o for o in OPTIONS if o.flag and o.command == "run"]):
        f = flag_decorator(option)(f)
    f = click.option("--progress/--no-progress", default=None,
                     help="Live progress bar (default: when stderr is a TTY).")(f)
    f = click.option("--mock", is_flag=True, help="Start the embedded mock server and run against it.")(f)
    return global_options(f)
