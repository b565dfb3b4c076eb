"""The end of each command's --help: examples to copy, and the exit-code table (made from runner.errors)."""

from __future__ import annotations

import textwrap

import click

from ..errors import EXIT_CODES, RunError


def _exit_codes_help() -> str:
    rows = []
    for code, meaning in EXIT_CODES:
        lines = textwrap.wrap(meaning, 64)
        rows.append(f"  {code:<5}{lines[0]}")
        rows.extend(f"       {line}" for line in lines[1:])
    return "\b\nExit codes:\n" + "\n".join(rows) + "\n"


EXIT_CODES_HELP = _exit_codes_help()


def examples(*lines: str, exit_codes: bool = False) -> str:
    """The end of a command's --help: 2-4 examples to copy (click keeps a \\b block as written)."""
    text = "\b\nExamples:\n" + "\n".join(f"  {line}" for line in lines)
    return text + ("\n\n" + EXIT_CODES_HELP if exit_codes else "")


def click_error(exc: RunError) -> click.ClickException:
    """A run-level error as click shows it: `Error: ...` on stderr, the error's own exit code."""
    code = exc.exit_code

    class RunFailed(click.ClickException):
        exit_code = code  # a class variable in click: each exception class has its own

    return RunFailed(str(exc))
