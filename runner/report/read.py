"""Result files in, result records out.

Each line goes through the one JSONL reader (:mod:`runner.io.jsonl`) and
the one results decoder (:func:`runner.outputs.batch.decode_result`), which reads
streamrun records and OpenAI Batch API output lines alike; anything else (a
torn last line after a crash, a garbled write) is skipped with a warning
naming ``file:line``, so the rest of a long run still gets its report. Only
final records count (:mod:`runner.outputs.finals`): a record that a rerun superseded
is left out. Lines are read one at a time, twice: a million-request file
costs 16 MB of hashes, not its records.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.outputs.batch import SIDE, decode_result, is_batch_line
from runner.outputs.finals import FinalRecords
from runner.record import Record


@dataclass
class InputFile:
    """What was read from one results file (reported under ``inputs``)."""

    path: str
    records: int = 0
    skipped_lines: int = 0
    superseded: int = 0  # records a later record of their key replaced (a rerun's): left out

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "records": self.records, "skipped_lines": self.skipped_lines,
                "superseded": self.superseded}


def warn_stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _untimed(obj: dict[str, Any]) -> bool:
    """A Batch line from the Batch API itself: no streamrun side field, no timings."""
    side = obj.get(SIDE)
    return is_batch_line(obj) and not (isinstance(side, dict) and isinstance(side.get("metrics"), dict))


def load_records(
    paths: Iterable[str | Path],
    *,
    inputs: list[InputFile] | None = None,
    warn: Callable[[str], None] = warn_stderr,
) -> Iterator[Record]:
    """Yield the result records of ``paths``, one line at a time.

    Only final records are yielded (a rerun's record supersedes the failed
    one before it). A line that is not a result record is skipped with a
    one-line warning naming ``file:line`` (the first few of a file; then one
    line says how many more). OpenAI Batch output lines are converted; those without
    timings are noted once per file. Pass ``inputs`` to get per-file counts
    appended to it.
    """
    for path in paths:
        info = InputFile(str(path))
        if inputs is not None:
            inputs.append(info)
        untimed = 0
        last_untimed = False  # the line decoded last, which is the one yielded next

        def decode(obj: Any) -> Record:
            nonlocal last_untimed
            record = decode_result(obj)
            last_untimed = _untimed(obj)  # converted from the Batch API's own output
            return record

        with FinalRecords(path, name=info.path, warn=warn, prefix="warning: ",
                          verb="skipped unreadable result line: ", decode=decode) as reader:
            for _, _, record in reader:
                info.records += 1
                untimed += last_untimed
                yield record
        info.skipped_lines = reader.bad_lines
        info.superseded = reader.superseded
        if untimed:
            warn(f"note: {path}: {untimed} OpenAI Batch output lines carry no timings: "
                 "they count as requests and tokens, not in latencies or throughput")
