"""Result files in, result records out: the one place that decides what a
line of a results file is.

A line is a streamrun result record (docs/FORMATS.md) or a line of the
OpenAI Batch API output format, which :func:`runner.batchfmt.from_batch_output`
turns back into a result record; anything else (a torn last line after a
crash, a garbled write) is skipped with a warning naming ``file:line``, so
the rest of a long run still gets its report. Lines are read one at a time:
a million-request file costs no more memory than one line.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import orjson

from runner.batchfmt import detect_format, from_batch_output
from runner.outputs import SIDE

#: Warnings about unreadable lines per file, before they are only counted.
MAX_LINE_WARNINGS = 20


@dataclass
class InputFile:
    """What was read from one results file (reported under ``inputs``)."""

    path: str
    records: int = 0
    skipped_lines: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "records": self.records, "skipped_lines": self.skipped_lines}


def warn_stderr(message: str) -> None:
    click.echo(message, err=True)


def _record(obj: Any) -> tuple[dict[str, Any] | None, str]:
    """``(record, "")`` for a readable line, ``(None, why not)`` otherwise."""
    if not isinstance(obj, dict):
        return None, f"a JSON {type(obj).__name__}, not an object"
    try:
        batch = detect_format(obj) == "openai-batch"
    except ValueError:  # no status we know: still a record, counted as an error of its type
        batch = False
    if not batch:
        return obj, ""
    try:
        return from_batch_output(obj), ""
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:
        return None, f"an OpenAI Batch output line with {exc}"


def _untimed(obj: dict[str, Any]) -> bool:
    """A Batch line from the Batch API itself: no streamrun side field, no timings."""
    side = obj.get(SIDE)
    return "response" in obj and not (isinstance(side, dict) and isinstance(side.get("metrics"), dict))


def load_records(
    paths: Iterable[str | Path],
    *,
    inputs: list[InputFile] | None = None,
    warn: Callable[[str], None] = warn_stderr,
) -> Iterator[dict[str, Any]]:
    """Yield the result records of ``paths``, one line at a time.

    A line that is not a result record is skipped with a one-line warning
    naming ``file:line``. After ``MAX_LINE_WARNINGS`` in a file (the wrong
    file given?) the rest are only counted. OpenAI Batch output lines are
    converted; those without timings are noted once per file. Pass
    ``inputs`` to get per-file counts appended to it.
    """
    for path in paths:
        info = InputFile(str(path))
        if inputs is not None:
            inputs.append(info)
        untimed = 0
        with open(path, "rb") as fh:
            for lineno, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    obj = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    record, reason = None, f"not JSON ({exc.msg})"
                else:
                    record, reason = _record(obj)
                if record is not None:
                    info.records += 1
                    if record is not obj and _untimed(obj):  # converted from the Batch API's own output
                        untimed += 1
                    yield record
                    continue
                info.skipped_lines += 1
                if info.skipped_lines <= MAX_LINE_WARNINGS:
                    warn(f"warning: {path}:{lineno}: skipped unreadable result line: {reason}")
        if info.skipped_lines > MAX_LINE_WARNINGS:
            warn(f"warning: {path}: {info.skipped_lines} unreadable lines skipped in all")
        if untimed:
            warn(f"note: {path}: {untimed} OpenAI Batch output lines carry no timings: "
                 "they count as requests and tokens, not in latencies or throughput")
