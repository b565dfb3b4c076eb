"""``streamrun export``: results as a Parquet file or a Hugging Face dataset, one row per record.

``streamrun export RESULTS... --to parquet|hf-dataset OUT [--inputs IN ...]``

Rows and schema
---------------
Every line of the results files that is a record, in either output format
(``runner.outputs.decode_result``: native records and OpenAI Batch lines,
warm-ups included), becomes one row, in file order. The schema is fixed
(:func:`export_schema`), never inferred from the rows, so every export of
every run has the same columns and types, and two exports concatenate:

====================================  ==============================  ==========================================
column                                type                            from
====================================  ==============================  ==========================================
``custom_id``, ``status``             string                          the record
``model``                             string                          the record
``prompt``                            string                          the input line (``--inputs`` only), below
``text``, ``reasoning``               string                          the record (choice 0's)
``finish_reason``                     string                          the record (choice 0's)
``tool_calls``                        string, JSON text               the record (choice 0's)
``prompt_tokens``,                    int64                           ``usage``, when the server sent them
``completion_tokens``,
``total_tokens``
``ttft_s``, ``ttfb_s``, ``e2e_s``,    double (seconds)                ``metrics``
``tpot_s``, ``queue_s``,
``connect_s``
``itl_s``                             list<double> (seconds)          ``metrics`` (empty when none)
``output_tokens``                     int64                           ``metrics``
``output_tokens_source``              string                          ``metrics``: usage, tokenizer or events
``started_at``                        timestamp[us, tz=UTC]           ``metrics``
``attempts``                          int64                           the record
``error_type``, ``error_code``,       string                          ``error`` (null on ok records)
``error_message``
``error_status_code``                 int64                           ``error``
``stage_label``                       string                          ``stage.label`` (sweeps), else null
``warmup``                            bool                            the record
``endpoint``, ``request_url``,        string                          the record
``request_id``
``usage``, ``stage``, ``source``,     string, JSON text               the record's objects, whole
``logprobs``, ``choices``
``request``                           string, JSON text               the input line (``--inputs`` only), below
====================================  ==============================  ==========================================

Nested and free-form fields are **JSON text**, not Arrow nested types:
``logprobs`` is a list of entries on chat and an object of lists on
completions, ``tool_calls``' arguments are already JSON text, ``usage`` has
whatever detail objects the server adds, and ``stage`` and ``source`` are
the run's own objects; no one nested type fits all of them without either
losing data or depending on the rows. JSON text keeps every value, stays
one stable type, and is what DuckDB's ``json_extract``, pandas'
``json.loads`` and a ``datasets`` ``map`` read directly. The columns that
are flattened (usage's three counts, the metrics, the error, the stage
label) are the ones one filters and aggregates on. The file's schema
metadata (``streamrun.export``) lists the JSON columns.

Streaming
---------
The results are read line by line (``runner.io.jsonl.JsonlReader``: bad
lines are warned about with file:line, skipped and counted) and written with
``pyarrow.parquet.ParquetWriter`` one batch at a time: a batch is written as
one row group when it holds ``row_group_size`` rows (50,000 by default) or
about 32 MiB of result lines (and joined input lines), whichever comes
first, so memory stays flat however large the results file, even with long
texts or logprobs: about 300 MB at most, pyarrow included (measured: 300k
records of 1.5 kB with their inputs, 10 s). Parquet is zstd-compressed.
The file is written under a temporary name and renamed at the end: a
killed export never leaves a complete-looking partial file.

The join with the inputs (``--inputs``)
---------------------------------------
Each record gets the input line with its ``custom_id`` (the line's own, or
the default ``file:line`` id, exactly as ``streamrun run`` gave it:
``runner.inputs.parse_item`` decides both times): ``prompt`` is the chat
``messages`` as JSON text, or the completion ``prompt`` (a string as it is,
a list as JSON text); ``request`` is the line's request body as JSON text
(what the line says: a run's ``--param`` and ``--model`` defaults are not
in it). Both are null for a record whose id is in no input, and for an
invalid input line (it has no body).

The index is built in one pass over the inputs and holds, per input line, a
64-bit hash of its id (``runner.ids.id_hash``), the byte offset of the line
and its file and line number: three unsigned 64-bit arrays, 24 bytes a line
(24 MB per million lines), sorted by hash in 256 buckets so that sorting
never makes Python ints of more than 1/256 of them. A record's row then
costs a binary search, a seek and the parse of one line; the line read back
is checked to carry the record's id, so a hash collision can never join the
wrong prompt. Results come in roughly input order, so those reads are
mostly sequential. When an id is on several input lines, the first (in the
order of the ``--inputs`` files) is joined and the repeats are counted.
Inputs must be regular files (seekable): not ``-`` or a pipe.

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

import json
import os
import shutil
import stat
import tempfile
from array import array
from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, BinaryIO

import click
import orjson

from .cli import examples
from .ids import id_hash
from .inputs import STDIN, InputError, InputItem, expand_inputs, parse_item
from .io.jsonl import BOM, MAX_LINE, JsonlReader
from .outputs import decode_result
from .record import Record
from .stream.protocol import CHAT_PATH

if TYPE_CHECKING:
    import pyarrow as pa

PARQUET = "parquet"
HF_DATASET = "hf-dataset"
FORMATS = (PARQUET, HF_DATASET)
ROW_GROUP_SIZE = 50_000
BATCH_BYTES = 32 << 20  # a row group is also closed after this many bytes of result (and input) lines
INSTALL = "pip install 'streamrun[export]'"
METADATA_KEY = b"streamrun.export"
SCHEMA_VERSION = 1

#: The columns that hold JSON text (null when the record's value is null).
JSON_COLUMNS = ("tool_calls", "usage", "stage", "source", "logprobs", "choices", "request")
#: The columns ``--inputs`` adds: ``prompt`` goes before ``text``, ``request`` last.
INPUT_COLUMNS = ("prompt", "request")
_PROMPT_AT = 3  # after custom_id, status, model

_INT64 = 1 << 63
_UTC = timezone.utc


class ExportError(ValueError):
    """The arguments cannot work (exit 2): nothing has been written."""


class MissingPackage(click.ClickException):
    """pyarrow or datasets is not installed: a configuration error (exit 2)."""

    exit_code = 2


class NoRows(click.ClickException):
    """--to hf-dataset of results with no record (exit 1)."""


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.parquet  # noqa: F401  (pa.parquet below)
    except ImportError:
        raise MissingPackage(f"export needs pyarrow: {INSTALL}") from None
    return pa


def _datasets():
    try:
        import datasets
    except ImportError:
        raise MissingPackage(f"--to {HF_DATASET} needs the datasets package: {INSTALL}") from None
    return datasets


# --------------------------------------------------------------------------
# the schema and one row


def export_schema(with_inputs: bool = False) -> pa.Schema:
    """The fixed schema of an export (the module docstring describes each column)."""
    pa = _pyarrow()
    s, f, i = pa.string(), pa.float64(), pa.int64()
    fields = [
        pa.field("custom_id", s, nullable=False),
        pa.field("status", s, nullable=False),
        pa.field("model", s),
        pa.field("text", s, nullable=False),
        pa.field("reasoning", s),
        pa.field("finish_reason", s),
        pa.field("tool_calls", s),
        pa.field("prompt_tokens", i),
        pa.field("completion_tokens", i),
        pa.field("total_tokens", i),
        pa.field("ttft_s", f),
        pa.field("ttfb_s", f),
        pa.field("e2e_s", f),
        pa.field("tpot_s", f),
        pa.field("itl_s", pa.list_(pa.field("element", f)), nullable=False),  # Parquet's name for list items
        pa.field("queue_s", f),
        pa.field("connect_s", f),
        pa.field("output_tokens", i),
        pa.field("output_tokens_source", s),
        pa.field("started_at", pa.timestamp("us", tz="UTC")),
        pa.field("attempts", i, nullable=False),
        pa.field("error_type", s),
        pa.field("error_status_code", i),
        pa.field("error_code", s),
        pa.field("error_message", s),
        pa.field("stage_label", s),
        pa.field("warmup", pa.bool_(), nullable=False),
        pa.field("endpoint", s),
        pa.field("request_url", s),
        pa.field("request_id", s),
        pa.field("usage", s),
        pa.field("stage", s),
        pa.field("source", s),
        pa.field("logprobs", s),
        pa.field("choices", s),
    ]
    if with_inputs:
        fields.insert(_PROMPT_AT, pa.field("prompt", s))
        fields.append(pa.field("request", s))
    names = {fl.name for fl in fields}
    meta = {"version": SCHEMA_VERSION, "json_columns": [c for c in JSON_COLUMNS if c in names]}
    return pa.schema(fields, metadata={METADATA_KEY: orjson.dumps(meta)})


def _int64(v: Any) -> int | None:
    return v if type(v) is int and -_INT64 <= v < _INT64 else None


def _float(v: Any) -> float | None:
    return None if v is None else float(v)


def _utc(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    return dt.replace(tzinfo=_UTC) if dt.tzinfo is None else dt.astimezone(_UTC)


def _plain(v: Any) -> Any:
    return asdict(v) if is_dataclass(v) and not isinstance(v, type) else str(v)


def to_json(v: Any) -> str | None:
    """A value as JSON text; None stays None (a null cell, not the text ``null``)."""
    if v is None:
        return None
    try:
        return orjson.dumps(v).decode()
    except (orjson.JSONEncodeError, TypeError):  # deeper than orjson writes (it parses deeper than it writes)
        return json.dumps(v, default=_plain, ensure_ascii=False)


def record_row(r: Record) -> list:
    """A record's cells in :func:`export_schema` order (without the input columns)."""
    m = r.metrics
    u = r.usage or {}
    e = r.error
    return [
        r.custom_id,
        r.status,
        r.model,
        r.text,
        r.reasoning,
        r.finish_reason,
        to_json(r.tool_calls),
        _int64(u.get("prompt_tokens")),
        _int64(u.get("completion_tokens")),
        _int64(u.get("total_tokens")),
        _float(m.ttft_s),
        _float(m.ttfb_s),
        _float(m.e2e_s),
        _float(m.tpot_s),
        m.itl_s,  # numbers (decode_metrics checked them); doubles in the file
        _float(m.queue_s),
        _float(m.connect_s),
        _int64(m.output_tokens),
        m.output_tokens_source,
        _utc(m.started_at),
        _int64(r.attempts),
        e.type if e is not None else None,
        _int64(e.status_code) if e is not None else None,
        e.code if e is not None else None,
        e.message if e is not None else None,
        r.label,
        r.warmup,
        r.endpoint,
        r.request_url,
        r.request_id,
        to_json(r.usage),
        to_json(r.stage),
        to_json(r.source),
        to_json(r.logprobs),
        to_json(r.choices),
    ]


def prompt_of(item: InputItem) -> str | None:
    """The chat messages as JSON text, or the completion prompt (a list as JSON text)."""
    body = item.body
    if body is None:
        return None
    if item.path == CHAT_PATH:
        return to_json(body.get("messages"))
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else to_json(prompt)


# --------------------------------------------------------------------------
# the input index


class _Offsets:
    """A binary file whose ``readline`` remembers where the line it returned began."""

    def __init__(self, f: BinaryIO, name: str) -> None:
        self._f = f
        self.name = name
        self.pos = 0
        self.start = 0

    def readline(self, size: int = -1) -> bytes:
        line = self._f.readline(size)
        self.start = self.pos
        self.pos += len(line)
        return line


class InputIndex:
    """custom_id -> input line, in 24 bytes a line (the module docstring: the join).

    ``find(custom_id)`` returns the line's :class:`InputItem` (read back and
    parsed again), or None. Use as a context manager: it keeps the files open.
    """

    def __init__(self, paths: Sequence[str], max_line: int = MAX_LINE) -> None:
        self.paths = list(paths)
        self.max_line = max_line
        self.lines = 0  # input lines indexed
        self.duplicates = 0  # lines whose id an earlier line already had
        self._files: list[BinaryIO | None] = [None] * len(self.paths)
        self._build()

    def _build(self) -> None:
        buckets = [(array("Q"), array("Q"), array("Q")) for _ in range(256)]
        for file_index, path in enumerate(self.paths):
            with open(path, "rb") as f:
                tracked = _Offsets(f, path)
                # a line too long to read is an invalid-input record with no body: nothing to join
                with JsonlReader(tracked, name=path, max_line=self.max_line, on_bad=lambda n, why: None) as reader:
                    for number, raw in reader.lines():
                        h = id_hash(parse_item(path, number, raw.strip()).custom_id)
                        hashes, offsets, wheres = buckets[h >> 56]
                        hashes.append(h)
                        offsets.append(tracked.start)
                        wheres.append(file_index << 40 | number)
        self._hashes, self._offsets, self._wheres = array("Q"), array("Q"), array("Q")
        for b, (hashes, offsets, wheres) in enumerate(buckets):
            order = sorted(range(len(hashes)), key=hashes.__getitem__)  # stable: the first line of an id first
            self._hashes.extend(hashes[i] for i in order)
            self._offsets.extend(offsets[i] for i in order)
            self._wheres.extend(wheres[i] for i in order)
            buckets[b] = None  # type: ignore[call-overload]  # freed as the sorted copy grows
        hs = self._hashes
        self.lines = len(hs)
        self.duplicates = sum(1 for i in range(1, len(hs)) if hs[i] == hs[i - 1])

    def __enter__(self) -> InputIndex:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for f in self._files:
            if f is not None:
                f.close()
        self._files = [None] * len(self.paths)

    def _item(self, i: int) -> InputItem:
        where = self._wheres[i]
        file_index, number = where >> 40, where & ((1 << 40) - 1)
        f = self._files[file_index]
        if f is None:
            f = self._files[file_index] = open(self.paths[file_index], "rb")
        offset = self._offsets[i]
        f.seek(offset)
        raw = f.readline(self.max_line + 2)
        if offset == 0 and raw[:3] == BOM:
            raw = raw[3:]
        return parse_item(self.paths[file_index], number, raw.strip())

    def find(self, custom_id: str) -> InputItem | None:
        hs = self._hashes
        h = id_hash(custom_id)
        i = bisect_left(hs, h)
        while i < len(hs) and hs[i] == h:
            item = self._item(i)
            if item.custom_id == custom_id:
                return item
            i += 1  # a hash collision, or the file changed since it was indexed
        return None


# --------------------------------------------------------------------------
# the export


@dataclass
class ExportReport:
    rows: int = 0
    row_groups: int = 0
    bad_lines: int = 0  # result lines skipped (not JSON, not a record)
    input_lines: int | None = None  # with --inputs: input lines indexed
    joined: int = 0  # rows that found their input line
    unmatched: int = 0  # rows whose id is in no input
    duplicate_inputs: int = 0  # input lines repeating an id

    def summary(self, to: str, out: str) -> str:
        text = (f"export: {self.rows} rows in {self.row_groups} row groups written to {out} ({to}), "
                f"{self.bad_lines} bad lines skipped")
        if self.input_lines is not None:
            text += f"; inputs: {self.joined} joined, {self.unmatched} without an input line"
        return text


def _stderr(message: str) -> None:
    click.echo(message, err=True)


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
        self.pa = _pyarrow()
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
        for column, cell in zip(self.columns, row):
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
                  for i, (column, t) in enumerate(zip(self.columns, self.types))]
        self.writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=self.schema), row_group_size=self.rows)
        self.report.rows += self.rows
        self.report.row_groups += 1
        del arrays
        self._reset()


def write_parquet(results: Sequence[str], path: str, inputs: Sequence[str] = (),
                  row_group_size: int = ROW_GROUP_SIZE, batch_bytes: int = BATCH_BYTES,
                  warn: Callable[[str], None] = _stderr) -> ExportReport:
    """Write the rows of ``results`` (joined with ``inputs``) to the Parquet file ``path`` as it goes."""
    pa = _pyarrow()
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
                with JsonlReader(results_path, warn=warn, prefix="export: ", verb="skipped, ") as reader:
                    found = 0
                    for _, raw, record in reader.decoded(decode_result):
                        found += 1
                        row = record_row(record)
                        size = len(raw)
                        if index is not None:
                            item = index.find(record.custom_id)
                            if item is None:
                                report.unmatched += 1
                                row.insert(_PROMPT_AT, None)
                                row.append(None)
                            else:
                                report.joined += 1
                                row.insert(_PROMPT_AT, prompt_of(item))
                                request = to_json(item.body)
                                row.append(request)
                                size += len(request or "")
                        batches.add(row, size)
                report.bad_lines += reader.bad_lines
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
    _pyarrow()
    datasets = _datasets() if to == HF_DATASET else None
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
    columns: runner/export.py). Needs pyarrow, and datasets for hf-dataset:
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
    click.echo(report.summary(to, out), err=True)
    if report.bad_lines:
        click.get_current_context().exit(1)
