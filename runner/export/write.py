"""Writing an export: the rows, one Parquet row group at a time, then the file or the saved dataset at OUT.

Why it exists: a results file can hold millions of records with long texts
and logprobs, and an export must neither hold them all in memory nor leave
a half-written OUT behind; this streams the rows (``schema`` shapes them,
``join`` adds the inputs) into Arrow batches and Parquet row groups, and
puts the finished file, or the Hugging Face dataset made of it, in place
only at the end. It also checks the arguments first, so that a usage error
writes nothing.

Streaming
---------
The results are read line by line (``runner.io.jsonl.JsonlReader``: bad
lines are warned about with file:line, skipped and counted), final records
only (``runner.outputs.finals``: a failed record that a rerun's record superseded
is left out), and written with ``pyarrow.parquet.ParquetWriter`` one
batch at a time: a batch is written as one row group when it holds ``row_group_size`` rows (50,000 by default) or
about 32 MiB of result lines (and joined input lines), whichever comes
first, so memory stays flat however large the results file, even with long
texts or logprobs: about 300 MB at most, pyarrow included (measured: 300k
records of 1.5 kB with their inputs, 10 s). Parquet is zstd-compressed.
The file is written under a temporary name and renamed at the end: a
killed export never leaves a complete-looking partial file.

Hugging Face datasets
---------------------
``--to hf-dataset OUT`` writes the same Parquet to a temporary directory
beside OUT, loads it with ``datasets.Dataset.from_parquet`` (its Arrow
cache in that directory too, not in ``~/.cache``) and saves it with
``save_to_disk``; ``datasets.load_from_disk(OUT)`` reads it back. Needs
``pip install 'streamrun[export]'``. The temporary directory holds the
Parquet plus the Arrow cache while this runs: plan disk space for about
three times the dataset.

Errors
------
A results or input file that does not exist, an OUT that exists (without
``--overwrite``; and even then a directory is only replaced when it is
empty or a saved dataset), an OUT that is one of the files read, a missing
pyarrow or datasets: usage errors, exit 2, nothing written. Bad result
lines are skipped: the export is written, and exits 1. ``--to hf-dataset``
of no records at all exits 1 with nothing written (``datasets`` cannot
load an empty saved dataset back); ``--to parquet`` writes an empty file
with the full schema.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import tempfile
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from runner.inputs.items import STDIN
from runner.outputs.finals import FinalRecords

from ..errors import EXIT_FAILED, RunError
from .join import InputIndex
from .packages import load_datasets, load_pyarrow
from .schema import add_input_cells, export_schema, record_row

if TYPE_CHECKING:
    import pyarrow as pa

PARQUET = "parquet"
HF_DATASET = "hf-dataset"
FORMATS = (PARQUET, HF_DATASET)
ROW_GROUP_SIZE = 50_000
BATCH_BYTES = 32 << 20  # a row group is also closed after this many bytes of result (and input) lines


class ExportError(ValueError):
    """The arguments cannot work (exit 2): nothing has been written."""


class NoRows(RunError):
    """--to hf-dataset of results with no record (exit 1)."""

    exit_code = EXIT_FAILED


@dataclass
class ExportReport:
    """What an export did: the counts behind its summary line and its exit status."""

    rows: int = 0
    row_groups: int = 0
    bad_lines: int = 0  # result lines skipped (not JSON, not a record)
    input_lines: int | None = None  # with --inputs: input lines indexed
    joined: int = 0  # rows that found their input line
    unmatched: int = 0  # rows whose id is in no input
    duplicate_inputs: int = 0  # input lines repeating an id
    superseded: int = 0  # records a later record of their key replaced (runner/outputs/finals.py): not exported

    def summary(self, to: str, out: str) -> str:
        text = (f"export: {self.rows} rows in {self.row_groups} row groups written to {out} ({to}), "
                f"{self.bad_lines} bad lines skipped")
        if self.superseded:
            text += f", {self.superseded} superseded records left out"
        if self.input_lines is not None:
            text += f"; inputs: {self.joined} joined, {self.unmatched} without an input line"
        return text


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _is_saved_dataset(path: str) -> bool:
    """A directory ``save_to_disk`` wrote (its state.json and dataset_info.json), or an empty one."""
    try:
        names = set(os.listdir(path))
    except OSError:
        return False
    return not names or {"state.json", "dataset_info.json"} <= names


def usage_problem(results: Sequence[str], to: str, out: str, inputs: Sequence[str] = (),
                  overwrite: bool = False) -> str | None:
    """Why these arguments cannot work (exit 2), or None; checked before anything is read or written."""
    if not results:
        return "no results files to export"
    if to not in FORMATS:
        return f"--to must be one of {', '.join(FORMATS)}, not {to!r}"
    for path in [*results, *inputs]:
        if path == STDIN:
            return "export reads files, not stdin ('-')"
        if not os.path.exists(path):
            return f"{path}: no such file"
        if os.path.isdir(path):
            return f"{path} is a directory, not a JSONL file"
    for path in inputs:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return f"--inputs {path}: not a regular file (the join seeks in the inputs: no pipes)"
    if os.path.lexists(out):
        for source in [*results, *inputs]:
            if _same(out, source):
                return f"{out} is one of the files being read ({source})"
        if not overwrite:
            return f"{out} already exists: pass --overwrite to replace it"
        if os.path.isdir(out) and not os.path.islink(out):
            if to == PARQUET:
                return f"{out} is a directory: --to {PARQUET} writes one file"
            if not _is_saved_dataset(out):
                return f"{out} is a directory that is not a saved dataset: refusing to delete it"
    return None


class _Batches:
    """Rows gathered column by column, written as one row group a batch.

    ``itl_s`` (one gap per streamed event: thousands on a long answer) is
    gathered as raw doubles and offsets, 8 bytes a gap rather than a Python
    float each, and handed to Arrow without a copy.
    """

    def __init__(self, writer, schema: pa.Schema, rows: int, nbytes: int, report: ExportReport) -> None:
        self.pa = load_pyarrow()
        self.writer = writer
        self.schema = schema
        self.types = [f.type for f in schema]
        self.itl_at = schema.get_field_index("itl_s")
        self.max_rows = rows
        self.max_bytes = nbytes
        self.report = report
        self._reset()

    def _reset(self) -> None:
        self.columns: list[list] = [[] for _ in self.schema]
        self.itl_values = array("d")
        self.itl_offsets = array("i", [0])  # int32: Arrow's list offsets
        self.rows = 0
        self.bytes = 0

    def add(self, row: list, size: int) -> None:
        itl = row[self.itl_at]
        row[self.itl_at] = None
        for column, cell in zip(self.columns, row, strict=True):
            column.append(cell)
        self.itl_values.extend(itl)
        self.itl_offsets.append(len(self.itl_values))
        self.rows += 1
        self.bytes += size + 8 * len(itl)
        if self.rows >= self.max_rows or self.bytes >= self.max_bytes:
            self.flush()

    def _itl(self) -> pa.Array:
        pa = self.pa
        values, offsets = self.itl_values, self.itl_offsets
        return pa.ListArray.from_arrays(
            pa.Array.from_buffers(pa.int32(), len(offsets), [None, pa.py_buffer(offsets)]),
            pa.Array.from_buffers(pa.float64(), len(values), [None, pa.py_buffer(values)]),
            type=self.types[self.itl_at])

    def flush(self) -> None:
        if not self.rows:
            return
        pa = self.pa
        arrays = [self._itl() if i == self.itl_at else pa.array(column, type=t)
                  for i, (column, t) in enumerate(zip(self.columns, self.types, strict=True))]
        self.writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema), row_group_size=self.rows)
        self.report.rows += self.rows
        self.report.row_groups += 1
        del arrays
        self._reset()


def write_parquet(results: Sequence[str], path: str, inputs: Sequence[str] = (),
                  row_group_size: int = ROW_GROUP_SIZE, batch_bytes: int = BATCH_BYTES,
                  warn: Callable[[str], None] = _stderr) -> ExportReport:
    """Write the rows of ``results`` (joined with ``inputs``) to the Parquet file ``path`` as it goes."""
    pa = load_pyarrow()
    report = ExportReport()
    index = InputIndex(inputs) if inputs else None
    if index is not None:
        report.input_lines = index.lines
        report.duplicate_inputs = index.duplicates
    schema = export_schema(with_inputs=index is not None)
    try:
        with pa.parquet.ParquetWriter(path, schema, compression="zstd") as writer:
            batches = _Batches(writer, schema, row_group_size, batch_bytes, report)
            for results_path in results:
                with FinalRecords(results_path, warn=warn, prefix="export: ", verb="skipped, ") as reader:
                    found = 0
                    for _, raw, record in reader:  # final records only: a rerun's supersedes the failed one
                        found += 1
                        row = record_row(record)
                        size = len(raw)
                        if index is not None:
                            item = index.find(record.custom_id)
                            if item is None:
                                report.unmatched += 1
                            else:
                                report.joined += 1
                            size += add_input_cells(row, item)
                        batches.add(row, size)
                report.bad_lines += reader.bad_lines
                report.superseded += reader.superseded
                if not found and reader.bad_lines:
                    warn(f"export: {results_path}: no result records in it (an input file? "
                         f"give each input file its own --inputs)")
            batches.flush()
    finally:
        if index is not None:
            index.close()
    if report.duplicate_inputs:
        warn(f"export: {report.duplicate_inputs} input lines repeat an id of an earlier line; "
             f"the first line of each id is joined")
    if report.unmatched:
        warn(f"export: {report.unmatched} records have no input line with their custom_id "
             f"(prompt and request are null)")
    return report


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.unlink(path)


def export(results: Sequence[str], to: str, out: str, inputs: Sequence[str] = (), overwrite: bool = False,
           row_group_size: int = ROW_GROUP_SIZE, batch_bytes: int = BATCH_BYTES,
           warn: Callable[[str], None] = _stderr) -> ExportReport:
    """Export ``results`` to ``out`` (see the module docstring); ExportError for the cases of :func:`usage_problem`.

    Raises :class:`MissingPackage` when pyarrow (or, for ``hf-dataset``, datasets) is not installed.
    """
    problem = usage_problem(results, to, out, inputs, overwrite)
    if problem:
        raise ExportError(problem)
    load_pyarrow()
    datasets = load_datasets(HF_DATASET) if to == HF_DATASET else None
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".streamrun-export-") as tmp:
        parquet = os.path.join(tmp, "data.parquet")
        report = write_parquet(results, parquet, inputs, row_group_size, batch_bytes, warn)
        if datasets is None:
            done = parquet
        elif not report.rows:  # datasets can save an empty dataset but not load it back
            raise NoRows(f"no result records in {', '.join(results)}: a Hugging Face dataset needs at least "
                         f"one row (--to {PARQUET} writes an empty file); nothing written")
        else:
            dataset = datasets.Dataset.from_parquet(parquet, cache_dir=os.path.join(tmp, "cache"))
            done = os.path.join(tmp, "dataset")
            dataset.save_to_disk(done)
            del dataset
        if os.path.lexists(out):  # usage_problem allowed it: --overwrite, and a file or a saved dataset
            _remove(out)
        os.replace(done, out)
    return report

