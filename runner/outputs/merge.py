"""Combine the result files of sharded (or retried) runs into one.

``streamrun merge OUTPUTS... -o all.jsonl [--inputs IN ...] [--missing PATH]``

Records are keyed like resume keys them (``Record.key``): by
``custom_id``, and in sweeps by stage label and ``custom_id``, since a sweep
sends every id once per stage. Within one file only the key's final record
takes part (``runner.outputs.finals``: a rerun appends a record that supersedes the
failed one before it); a superseded record is "replaced", and a superseded
``ok`` record followed by another ``ok`` one is a real duplicate (the later
is kept). Per key, across files:

- one record: kept;
- ``ok`` and ``error`` records: the ``ok`` one is kept, whatever the order
  (a shard that was retried after failures); the error is "replaced";
- several ``error`` records: the first is kept, the rest are "replaced";
- two ``ok`` records: a real duplicate (two shards ran the same input, e.g.
  different shard counts). Both places are reported, the first is kept and
  the merge exits 1.

Both output formats merge: our records and OpenAI Batch lines (written with
``--output-format openai-batch``), read alike by ``runner.outputs.batch.decode_result``.

Warm-up records (``"warmup": true``) are copied as they are and take no part
in the checks: they answer no input and are excluded from statistics anyway.

Torn or garbled lines (a worker killed mid-write) are warned about with
file:line and skipped (``runner.io.jsonl``: the first few of a file, then a
count). Kept lines are copied byte for byte, so nothing about a record
changes by merging it; each ends with a newline.

Memory stays flat in the size of the records: the files are streamed three
times (pass 1, which reads each file twice to find its final records, picks
the line to keep for each key, pass 2 copies those lines) and
what is held is one dict ``key -> packed int`` (file index, line number, ok
flag, matched-by-input flag): about 130 MB per million records, plus, while
pass 2 runs, the kept places sorted (about 40 MB per million).

With ``--inputs``, every input id must have exactly one kept record (per
stage, in a sweep): missing ids and extra ids (records for no input) are
reported and make the merge exit 1; ``--missing PATH`` receives the input
lines that have no record, ready for ``streamrun run PATH``.
"""

from __future__ import annotations

import itertools
import os
import sys
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

import orjson

from runner.inputs.ids import resume_key
from runner.io.jsonl import WARN_LIMIT, JsonlReader, Warner
from runner.outputs.finals import FinalRecords

EXAMPLES = 5  # ids quoted in the missing / extra report lines

# Packed place of a kept record: line << 2 | matched << 1 | ok, plus the
# file index from bit 42 up (2**40 lines per file is plenty).
_OK = 1
_MATCHED = 2
_FILE_SHIFT = 42


def _pack(file_index: int, line_no: int, ok: bool) -> int:
    return (file_index << _FILE_SHIFT) | (line_no << 2) | (_OK if ok else 0)


def _file_of(packed: int) -> int:
    return packed >> _FILE_SHIFT


def _line_of(packed: int) -> int:
    return (packed >> 2) & ((1 << (_FILE_SHIFT - 2)) - 1)


def _show(key: str) -> str:
    """A key for humans: ``id``, or ``id (stage c=4)`` in sweeps."""
    label, sep, custom_id = key.partition("\x00")
    return f"{custom_id} (stage {label})" if sep else key


@dataclass
class MergeReport:
    """What a merge found; ``ok`` is False when the merge should exit 1."""

    records: int = 0  # well-formed records read (warm-ups excluded)
    written: int = 0  # lines in the merged file (one per key, plus warm-ups)
    warmup: int = 0  # warm-up records, copied through
    replaced: int = 0  # error records dropped for another record of the key
    duplicates: int = 0  # extra ``ok`` records for a key that already had one
    bad_lines: int = 0  # torn / garbled lines skipped
    checked_inputs: bool = False
    missing: int = 0  # input ids (x stages) without a record
    extra: int = 0  # kept records whose id is in no input
    duplicate_inputs: int = 0  # input ids seen more than once (warned only)
    duplicate_places: list[tuple[str, str, str]] = field(default_factory=list)
    missing_ids: list[str] = field(default_factory=list)  # the first few
    extra_ids: list[str] = field(default_factory=list)  # the first few

    @property
    def ok(self) -> bool:
        return not (self.duplicates or self.missing or self.extra)

    def summary(self) -> str:
        """The one-line summary printed last on stderr."""
        missing = str(self.missing) if self.checked_inputs else "n/a"
        extra = str(self.extra) if self.checked_inputs else "n/a"
        return (
            f"merge: records={self.records} duplicates={self.duplicates} "
            f"missing={missing} extra={extra} written={self.written} "
            f"(replaced errors={self.replaced}, warm-ups={self.warmup}, "
            f"bad lines={self.bad_lines})"
        )


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _capped(warn: Callable[[str], None], what: str) -> Warner:
    return Warner(warn, lambda n: f"merge: … and {n} more {what}")


def _reader(path: str, warn: Callable[[str], None]) -> JsonlReader:
    return JsonlReader(path, warn=warn, prefix="merge: ", verb="skipped, ")


def _finals(path: str, warn: Callable[[str], None]) -> FinalRecords:
    return FinalRecords(path, warn=warn, prefix="merge: ", verb="skipped, ")


def _choose(
    outputs: Sequence[str], report: MergeReport, warn: Callable[[str], None], duplicates: Warner
) -> tuple[dict[str, int], array, set[str | None]]:
    """Pass 1: the packed place of the record to keep for each key; the
    places of the warm-ups; the stage labels."""
    kept: dict[str, int] = {}
    warmups = array("Q")
    labels: set[str | None] = set()
    for file_index, path in enumerate(outputs):
        superseded_ok: dict[int, list[int]] = {}  # final line -> the ok records it superseded (none, usually)
        with _finals(path, warn) as reader:
            for line_no, _, record, final in reader.every():
                here = _pack(file_index, line_no, record.ok)
                if record.warmup:
                    report.warmup += 1
                    warmups.append(here)
                    continue
                report.records += 1
                key = record.key
                labels.add(record.label)
                if final != line_no:  # a later record of its key in this file supersedes it
                    if record.ok:
                        superseded_ok.setdefault(final, []).append(line_no)
                    else:
                        report.replaced += 1
                    continue
                for earlier in superseded_ok.pop(line_no, ()):
                    if record.ok:
                        _duplicate(report, duplicates, key, f"{path}:{earlier}", f"{path}:{line_no}", later=True)
                    else:
                        report.replaced += 1
                before = kept.get(key)
                if before is None:
                    kept[key] = here
                elif record.ok and before & _OK:
                    _duplicate(report, duplicates, key, f"{outputs[_file_of(before)]}:{_line_of(before)}",
                               f"{path}:{line_no}")
                else:
                    report.replaced += 1
                    if record.ok:  # an ok record beats the error kept so far
                        kept[key] = here
        report.bad_lines += reader.bad_lines
    return kept, warmups, labels


def _duplicate(report: MergeReport, duplicates: Warner, key: str, first: str, second: str,
               later: bool = False) -> None:
    """Two ok records of one key: `first` is kept, or `second` when `later` (the final one of its file)."""
    report.duplicates += 1
    if len(report.duplicate_places) < WARN_LIMIT:
        report.duplicate_places.append((_show(key), first, second))
    shown = f"{first} and {second} (kept: the last of its file)" if later else f"{first} (kept) and {second}"
    duplicates(f"merge: duplicate ok records for {_show(key)}: {shown}")


def _copy_kept(outputs: Sequence[str], kept: dict[str, int], warmups: array, out: BinaryIO) -> int:
    """Pass 2: copy the chosen line of each key and every warm-up, in file order.

    The places, sorted, are (file, line) in reading order, so this pass only
    walks them alongside the lines: nothing is parsed again.
    """
    places = sorted(itertools.chain((p >> 2 for p in kept.values()), (p >> 2 for p in warmups)))
    n = len(places)
    written = i = 0
    for file_index, path in enumerate(outputs):
        if i == n:
            break
        with _reader(path, lambda m: None) as reader:  # pass 1 warned
            for line_no, raw in reader.lines():
                place = (file_index << (_FILE_SHIFT - 2)) | line_no
                while i < n and places[i] < place:  # only if the file changed since pass 1
                    i += 1
                if i < n and places[i] == place:
                    out.write(raw + b"\n")
                    written += 1
                    i += 1
    return written


def _missing_line(raw: bytes, custom_id: str) -> bytes:
    """The input line to re-run, with its id made explicit if it had none.

    A line without its own ``custom_id`` gets the id ``<file>:<line>``; in a
    missing-file it would sit at another file and line and get another id on
    re-run, so the re-run's record would never match the original input.
    Writing the id into the line keeps it; lines that carry their own id are
    copied verbatim.
    """
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return _with_newline(raw)
    if isinstance(obj, dict):
        own = obj.get("custom_id")
        if not (isinstance(own, str) and own):
            rest = {k: v for k, v in obj.items() if k != "custom_id"}
            return orjson.dumps({"custom_id": custom_id, **rest}) + b"\n"
    return _with_newline(raw)


def _with_newline(raw: bytes) -> bytes:
    return raw if raw.endswith(b"\n") else raw + b"\n"


def _check_inputs(
    inputs: Sequence[str],
    kept: dict[str, int],
    labels: set[str | None],
    missing_out: BinaryIO | None,
    report: MergeReport,
    warn: Callable[[str], None],
) -> None:
    """Pass 3: match input ids (x stage labels) against kept records.

    An input line missing in any stage is written once to ``missing_out``.
    """
    from runner.inputs.items import iter_input_ids  # owned by the input module

    report.checked_inputs = True
    stages = sorted(labels, key=lambda s: (s is not None, s or "")) or [None]
    for custom_id, path, line_no, raw in iter_input_ids(list(inputs)):
        absent = 0
        for label in stages:
            key = resume_key(label, custom_id)
            packed = kept.get(key)
            if packed is None:
                absent += 1
                if len(report.missing_ids) < EXAMPLES:
                    report.missing_ids.append(_show(key))
            elif packed & _MATCHED:
                report.duplicate_inputs += 1
                warn(f"merge: {path}:{line_no}: input id {_show(key)} seen before")
            else:
                kept[key] = packed | _MATCHED
        report.missing += absent
        if absent and missing_out is not None:
            missing_out.write(_missing_line(raw, custom_id))
    for key, packed in kept.items():
        if not packed & _MATCHED:
            report.extra += 1
            if len(report.extra_ids) < EXAMPLES:
                report.extra_ids.append(_show(key))


def usage_problem(
    outputs: Sequence[str],
    out_path: str,
    inputs: Sequence[str] | None,
    missing_path: str | None,
) -> str | None:
    """Why these arguments cannot work (exit 2), or None.

    Checked before reading anything: writing over a file that is being read
    would destroy it.
    """
    if not outputs:
        return "no result files to merge"
    if missing_path is not None and not inputs:
        return "--missing needs --inputs (the lines to write come from them)"
    if missing_path is not None and os.path.abspath(missing_path) == os.path.abspath(out_path):
        return "--missing and -o name the same file"
    sources = [*outputs, *(inputs or [])]
    for target in (out_path, missing_path):
        if target is None or not os.path.exists(target):
            continue
        for source in sources:
            if os.path.exists(source) and os.path.samefile(target, source):
                return f"{target} would overwrite a file being read ({source})"
    return None


def merge(
    outputs: Sequence[str],
    out_path: str,
    inputs: Sequence[str] | None = None,
    missing_path: str | None = None,
    warn: Callable[[str], None] = _stderr,
) -> MergeReport:
    """Merge ``outputs`` into ``out_path``; see the module docstring.

    The merged file is written to ``out_path + ".tmp"`` and renamed at the
    end, so a killed merge never leaves a complete-looking partial file.
    Warnings go to ``warn`` (stderr by default); the caller prints the
    summary. Raises ValueError for the cases of :func:`usage_problem`.
    """
    problem = usage_problem(outputs, out_path, inputs, missing_path)
    if problem:
        raise ValueError(problem)
    report = MergeReport()
    duplicates = _capped(warn, "duplicate ok records")
    kept, warmups, labels = _choose(outputs, report, warn, duplicates)
    duplicates.close()

    tmp_path = out_path + ".tmp"
    try:
        with open(tmp_path, "wb") as out:
            report.written = _copy_kept(outputs, kept, warmups, out)
        os.replace(tmp_path, out_path)
    finally:
        if os.path.exists(tmp_path):
            os.unlink(tmp_path)

    if inputs:
        seen_before = _capped(warn, "input ids seen before")
        if missing_path is not None:
            with open(missing_path, "wb") as missing_out:
                _check_inputs(inputs, kept, labels, missing_out, report, seen_before)
        else:
            _check_inputs(inputs, kept, labels, None, report, seen_before)
        seen_before.close()
        if report.missing:
            warn(
                f"merge: {report.missing} input ids have no record, first: "
                + ", ".join(report.missing_ids)
                + (f" (lines written to {missing_path})" if missing_path else "")
            )
        if report.extra:
            warn(
                f"merge: {report.extra} records match no input id, first: "
                + ", ".join(report.extra_ids)
            )
    return report
