"""runner/export.py: results to Parquet and Hugging Face datasets, the fixed schema, the join with the inputs."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from runner.cli.export import export_command
from runner.export import INPUT_COLUMNS, JSON_COLUMNS, ExportError, InputIndex, export, export_schema
from runner.export import join as export_module  # noqa: E402
from runner.extras import install_hint  # noqa: E402
from runner.outputs.batch import encode_batch  # noqa: E402
from runner.record import Choice, Metrics, Record, RecordError  # noqa: E402
from tests.helpers import ROOT, streamrun, write_jsonl  # noqa: E402

STARTED = datetime.fromisoformat("2026-11-25T14:50:01.123456+00:00")
CHAT_LOGPROBS = [{"token": "a", "logprob": -0.5, "bytes": [97], "top_logprobs": []}]
TOOL_CALLS = [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{\"x\": 1}"}}]
STAGE = {"index": 0, "label": "c=4", "concurrency": 4, "rate": None}


def ok_record(cid: str = "q1", **over) -> Record:
    record = Record(
        custom_id=cid, status="ok", text="hi there", reasoning="hmm", tool_calls=TOOL_CALLS,
        finish_reason="stop", model="mock-model",
        usage={"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21,
               "completion_tokens_details": {"reasoning_tokens": 4}},
        metrics=Metrics(0.051, 0.05, 0.4, 0.0055, [0.005, 0.006], 0.0001, 9, "usage", STARTED, 0.0012),
        attempts=2, source={"file": "in.jsonl", "line": 1}, endpoint="http://127.0.0.1:8000/v1", stage=STAGE,
        request_url="/v1/chat/completions", request_id="req-9", logprobs=CHAT_LOGPROBS,
        choices=[Choice(0, "hi there", "hmm", TOOL_CALLS, "stop", CHAT_LOGPROBS),
                 Choice(1, "hello", None, None, "length", None)],
    )
    for k, v in over.items():
        setattr(record, k, v)
    return record


def error_record(cid: str = "q2", **over) -> Record:
    record = Record(custom_id=cid, status="error", text="par",
                    error=RecordError("http_error", 404, "model_not_found", "HTTP 404: no such model"),
                    metrics=Metrics(), attempts=1, request_url="/v1/chat/completions")
    for k, v in over.items():
        setattr(record, k, v)
    return record


def native(record: Record) -> str:
    return orjson.dumps(record).decode()


def batch(record: Record) -> str:
    return orjson.dumps(encode_batch(record, "/v1/chat/completions")).decode()


def read(path: Path) -> list[dict]:
    return pq.read_table(path).to_pylist()


def by_id(rows: list[dict]) -> dict[str, dict]:
    return {r["custom_id"]: r for r in rows}


def run_cli(*args) -> object:
    return CliRunner().invoke(export_command, [str(a) for a in args], catch_exceptions=False)


# -- rows, columns, types, values ----------------------------------------------------


def test_both_output_formats_export_one_row_per_record_with_the_fixed_schema(tmp_path):
    results = write_jsonl(tmp_path / "results.jsonl", [native(ok_record("q1")), batch(ok_record("q1b")),
                                                       native(error_record("q2")), batch(error_record("q2b"))])
    out = tmp_path / "out.parquet"
    report = export([str(results)], "parquet", str(out))
    assert (report.rows, report.bad_lines) == (4, 0)

    table = pq.read_table(out)
    assert table.schema.equals(export_schema(), check_metadata=True)
    assert table.num_rows == 4
    rows = by_id(table.to_pylist())
    assert set(rows) == {"q1", "q1b", "q2", "q2b"}
    for cid in ("q1", "q1b"):  # the Batch line carries everything in its side field: the same row
        row = rows[cid]
        assert row["status"] == "ok" and row["text"] == "hi there" and row["reasoning"] == "hmm"
        assert row["model"] == "mock-model" and row["finish_reason"] == "stop"
        assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (12, 9, 21)
        assert (row["ttft_s"], row["ttfb_s"], row["e2e_s"], row["tpot_s"]) == (0.051, 0.05, 0.4, 0.0055)
        assert row["itl_s"] == [0.005, 0.006]
        assert (row["queue_s"], row["connect_s"]) == (0.0001, 0.0012)
        assert (row["output_tokens"], row["output_tokens_source"]) == (9, "usage")
        assert row["started_at"] == STARTED
        assert row["attempts"] == 2 and row["warmup"] is False
        assert row["error_type"] is row["error_status_code"] is row["error_code"] is row["error_message"] is None
        assert row["stage_label"] == "c=4"
        assert (row["endpoint"], row["request_url"], row["request_id"]) == (
            "http://127.0.0.1:8000/v1", "/v1/chat/completions", "req-9")
        assert json.loads(row["tool_calls"]) == TOOL_CALLS
        assert json.loads(row["logprobs"]) == CHAT_LOGPROBS
        assert json.loads(row["usage"])["completion_tokens_details"] == {"reasoning_tokens": 4}
        assert json.loads(row["stage"]) == STAGE
        assert json.loads(row["source"]) == {"file": "in.jsonl", "line": 1}
        choices = json.loads(row["choices"])
        assert [c["text"] for c in choices] == ["hi there", "hello"]
        assert choices[0]["logprobs"] == CHAT_LOGPROBS and choices[1]["finish_reason"] == "length"
    for cid in ("q2", "q2b"):
        row = rows[cid]
        assert row["status"] == "error" and row["text"] == "par"
        assert (row["error_type"], row["error_status_code"], row["error_code"], row["error_message"]) == (
            "http_error", 404, "model_not_found", "HTTP 404: no such model")
        assert row["ttft_s"] is None and row["started_at"] is None and row["itl_s"] == []
        assert row["prompt_tokens"] is None and row["usage"] is None and row["stage_label"] is None
        for column in ("tool_calls", "logprobs", "choices", "stage", "source"):
            assert row[column] is None, column  # a null cell, not the JSON text "null"


def test_the_types_are_explicit():
    schema = export_schema()
    types = {f.name: f.type for f in schema}
    for name in ("ttft_s", "ttfb_s", "e2e_s", "tpot_s", "queue_s", "connect_s"):
        assert types[name] == pa.float64()
    for name in ("prompt_tokens", "completion_tokens", "total_tokens", "output_tokens", "attempts",
                 "error_status_code"):
        assert types[name] == pa.int64()
    assert types["itl_s"] == pa.list_(pa.field("element", pa.float64()))
    assert types["started_at"] == pa.timestamp("us", tz="UTC")
    assert types["warmup"] == pa.bool_()
    for name in JSON_COLUMNS[:-1]:
        assert types[name] == pa.string()
    assert "prompt" not in types and "request" not in types
    with_inputs = export_schema(with_inputs=True)
    assert with_inputs.names[:5] == ["custom_id", "status", "model", "prompt", "text"]
    assert with_inputs.names[-1] == "request"
    assert [n for n in with_inputs.names if n not in INPUT_COLUMNS] == schema.names
    meta = json.loads(with_inputs.metadata[b"streamrun.export"])
    assert meta["json_columns"] == list(JSON_COLUMNS)


def test_every_record_field_reaches_a_column():
    """A field added to Record or Metrics must be exported too (or this list says where it went)."""
    names = set(export_schema().names)
    placed = {"metrics": None, "error": None, "stage": "stage_label", "usage": "prompt_tokens"}
    for f in dataclasses.fields(Record):
        assert f.name in names or f.name in placed, f"Record.{f.name} is not exported"
    for f in dataclasses.fields(Metrics):
        assert f.name in names, f"Metrics.{f.name} is not exported"
    for f in dataclasses.fields(RecordError):
        assert f"error_{f.name}" in names, f"RecordError.{f.name} is not exported"


def test_the_schema_does_not_depend_on_the_rows(tmp_path):
    """All-null columns (only error records; no records at all) keep their types."""
    only_errors = write_jsonl(tmp_path / "errors.jsonl", [native(error_record("e1"))])
    empty = write_jsonl(tmp_path / "empty.jsonl", [])
    export([str(only_errors)], "parquet", str(tmp_path / "a.parquet"))
    export([str(empty)], "parquet", str(tmp_path / "b.parquet"))
    a, b = pq.read_schema(tmp_path / "a.parquet"), pq.read_schema(tmp_path / "b.parquet")
    assert a.equals(export_schema()) and b.equals(export_schema())
    assert pq.read_table(tmp_path / "b.parquet").num_rows == 0


def test_odd_values_read_as_null_not_as_a_crash(tmp_path):
    """Numbers out of int64, a naive time (UTC), integers where seconds are expected."""
    rec = ok_record("odd", usage={"prompt_tokens": 2**64 - 1, "completion_tokens": True, "total_tokens": "3"},
                    metrics=Metrics(1, None, 2, None, [1, 2.5], None, None, None,
                                    datetime(2026, 1, 2, 3, 4, 5)))
    results = write_jsonl(tmp_path / "r.jsonl", [native(rec)])
    export([str(results)], "parquet", str(tmp_path / "o.parquet"))
    row = read(tmp_path / "o.parquet")[0]
    assert (row["prompt_tokens"], row["completion_tokens"], row["total_tokens"]) == (None, None, None)
    assert row["ttft_s"] == 1.0 and row["e2e_s"] == 2.0 and row["itl_s"] == [1.0, 2.5]
    assert row["started_at"] == datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


# -- streaming: row groups -------------------------------------------------------------


def test_a_file_larger_than_one_batch_is_written_in_row_groups(tmp_path):
    results = write_jsonl(tmp_path / "r.jsonl", [native(ok_record(f"q{i}")) for i in range(25)])
    out = tmp_path / "o.parquet"
    report = export([str(results)], "parquet", str(out), row_group_size=10)
    meta = pq.ParquetFile(out).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [10, 10, 5]
    assert (report.rows, report.row_groups) == (25, 3)
    assert [r["custom_id"] for r in read(out)] == [f"q{i}" for i in range(25)]  # file order kept


def test_a_batch_is_also_closed_by_its_bytes(tmp_path):
    """Long records never pile up row_group_size rows in memory."""
    big = "x" * 10_000
    results = write_jsonl(tmp_path / "r.jsonl", [native(ok_record(f"q{i}", text=big)) for i in range(6)])
    out = tmp_path / "o.parquet"
    export([str(results)], "parquet", str(out), row_group_size=1000, batch_bytes=15_000)  # ~11 kB a line
    meta = pq.ParquetFile(out).metadata
    assert meta.num_row_groups == 3 and meta.num_rows == 6


def test_the_cli_row_group_size(tmp_path):
    results = write_jsonl(tmp_path / "r.jsonl", [native(ok_record(f"q{i}")) for i in range(5)])
    res = run_cli(results, "--to", "parquet", tmp_path / "o.parquet", "--row-group-size", "2")
    assert res.exit_code == 0, res.output
    assert pq.ParquetFile(tmp_path / "o.parquet").metadata.num_row_groups == 3
    assert "5 rows in 3 row groups" in res.output


# -- the join with --inputs ------------------------------------------------------------


def test_inputs_are_joined_by_custom_id_or_the_default_id(tmp_path):
    chat = {"custom_id": "c1", "messages": [{"role": "user", "content": "héllo"}], "max_tokens": 5}
    completion = {"prompt": "once upon", "max_tokens": 3}  # default id a.jsonl:3 (after a blank line)
    listed = {"custom_id": "c3", "prompt": ["one", "two"]}
    batch_form = {"custom_id": "c4", "method": "POST", "url": "/v1/chat/completions",
                  "body": {"model": "m", "messages": [{"role": "system", "content": "s"}]}}
    a = tmp_path / "a.jsonl"
    a.write_bytes(b"\xef\xbb\xbf" + orjson.dumps(chat) + b"\r\n\r\n" + orjson.dumps(completion) + b"\r\n"
                  + b"{not json\n" + orjson.dumps(listed))  # BOM, CRLF, a blank line, a bad line, no last newline
    b = write_jsonl(tmp_path / "b.jsonl", [batch_form, {"custom_id": "c1", "prompt": "a repeated id"}])
    results = write_jsonl(tmp_path / "r.jsonl", [
        native(ok_record("c4")), native(ok_record("a.jsonl:3")), native(ok_record("c1")),
        native(error_record("a.jsonl:4", error=RecordError("invalid_input", None, None, "not valid JSON"))),
        native(ok_record("c3")), native(ok_record("nowhere")),
    ])
    warnings: list[str] = []
    out = tmp_path / "o.parquet"
    report = export([str(results)], "parquet", str(out), inputs=[str(a), str(b)], warn=warnings.append)

    table = pq.read_table(out)
    assert table.schema.equals(export_schema(with_inputs=True))
    rows = by_id(table.to_pylist())
    assert json.loads(rows["c1"]["prompt"]) == chat["messages"]  # the first line of a repeated id
    assert json.loads(rows["c1"]["request"]) == {"messages": chat["messages"], "max_tokens": 5}
    assert rows["a.jsonl:3"]["prompt"] == "once upon"
    assert json.loads(rows["a.jsonl:3"]["request"]) == completion
    assert json.loads(rows["c3"]["prompt"]) == ["one", "two"]
    assert json.loads(rows["c4"]["prompt"]) == [{"role": "system", "content": "s"}]
    assert json.loads(rows["c4"]["request"]) == batch_form["body"]
    assert rows["a.jsonl:4"]["prompt"] is None and rows["a.jsonl:4"]["request"] is None  # no body to join
    assert rows["nowhere"]["prompt"] is None and rows["nowhere"]["request"] is None
    assert rows["c1"]["text"] == "hi there"  # the answer beside its prompt
    assert (report.input_lines, report.joined, report.unmatched, report.duplicate_inputs) == (6, 5, 1, 1)
    assert any("1 records have no input line" in w for w in warnings)
    assert any("repeat an id" in w for w in warnings)


def test_every_kind_of_input_line_has_its_prompt_joined(tmp_path):
    user = {"role": "user", "content": "hi"}
    lines = [
        {"custom_id": "input", "input": "plain input"},
        {"custom_id": "input-list", "input": [user], "instructions": "be brief"},
        {"custom_id": "messages", "method": "POST", "url": "/v1/messages",
         "body": {"model": "c", "system": "be kind", "messages": [user], "max_tokens": 5}},
        {"custom_id": "responses", "method": "POST", "url": "/v1/responses", "body": {"model": "m", "input": "x"}},
        {"custom_id": "session", "messages": [{"role": "system", "content": "s"}], "turns": ["one", "two"]},
        {"custom_id": "embedding", "method": "POST", "url": "/v1/embeddings", "body": {"model": "e", "input": ["a"]}},
    ]
    inputs = write_jsonl(tmp_path / "in.jsonl", lines)
    results = write_jsonl(tmp_path / "r.jsonl", [native(ok_record(line["custom_id"])) for line in lines])
    report = export([str(results)], "parquet", str(tmp_path / "o.parquet"), inputs=[str(inputs)], warn=print)
    rows = by_id(pq.read_table(tmp_path / "o.parquet").to_pylist())
    assert report.joined == len(lines)
    assert rows["input"]["prompt"] == "plain input"
    assert json.loads(rows["input-list"]["prompt"]) == [{"role": "system", "content": "be brief"}, user]
    assert json.loads(rows["messages"]["prompt"]) == [{"role": "system", "content": "be kind"}, user]
    assert rows["responses"]["prompt"] == "x"
    assert json.loads(rows["session"]["prompt"]) == [{"role": "system", "content": "s"},
                                                     {"role": "user", "content": "one"},
                                                     {"role": "user", "content": "two"}]
    assert json.loads(rows["embedding"]["prompt"]) == ["a"]
    assert all(rows[line["custom_id"]]["request"] is not None for line in lines)


def test_sweep_records_of_one_id_all_get_its_prompt(tmp_path):
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": "p", "prompt": "same"}])
    results = write_jsonl(tmp_path / "r.jsonl", [
        native(ok_record("p", stage={"index": i, "label": f"c={c}", "concurrency": c, "rate": None}))
        for i, c in enumerate((1, 4))])
    export([str(results)], "parquet", str(tmp_path / "o.parquet"), inputs=[str(inputs)])
    rows = read(tmp_path / "o.parquet")
    assert [(r["stage_label"], r["prompt"]) for r in rows] == [("c=1", "same"), ("c=4", "same")]


def test_hash_collisions_never_join_the_wrong_line(tmp_path, monkeypatch):
    monkeypatch.setattr(export_module, "id_hash", lambda custom_id: 7)  # every id collides
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": f"p{i}", "prompt": f"text {i}"} for i in range(5)])
    with InputIndex([str(inputs)]) as index:
        assert index.lines == 5
        assert [index.find(f"p{i}").body["prompt"] for i in (3, 0, 4)] == ["text 3", "text 0", "text 4"]
        assert index.find("p9") is None


def test_the_index_holds_no_python_objects_per_line(tmp_path):
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": f"p{i}", "prompt": "x"} for i in range(3000)])
    with InputIndex([str(inputs)]) as index:
        parts = (index._hashes, index._offsets, index._wheres)
        assert all(p.typecode == "Q" and len(p) == 3000 for p in parts)  # 24 bytes a line
        assert index.find("p2999").custom_id == "p2999"
        assert list(index._hashes) == sorted(index._hashes)


# -- errors ------------------------------------------------------------------------------


def test_bad_lines_are_warned_skipped_counted_and_exit_1(tmp_path):
    results = write_jsonl(tmp_path / "r.jsonl", [native(ok_record("q1")), "{torn", {"not": "a record"},
                                                 native(ok_record("q2"))])
    res = run_cli(results, "--to", "parquet", tmp_path / "o.parquet")
    assert res.exit_code == 1
    assert "r.jsonl:2: skipped, not valid JSON" in res.output
    assert "r.jsonl:3: skipped" in res.output
    assert "2 rows in 1 row groups" in res.output and "2 bad lines skipped" in res.output
    assert [r["custom_id"] for r in read(tmp_path / "o.parquet")] == ["q1", "q2"]


def test_a_record_that_a_rerun_superseded_is_not_exported(tmp_path):
    # a rerun appends the new record of a failed line; only the last record of an id is exported
    results = write_jsonl(tmp_path / "r.jsonl", [native(error_record("q1", stage=STAGE)), native(ok_record("q2")),
                                                 native(ok_record("q1", text="again"))])
    res = run_cli(results, "--to", "parquet", tmp_path / "o.parquet")
    assert res.exit_code == 0, res.output
    assert "2 rows in 1 row groups" in res.output and "1 superseded records left out" in res.output
    rows = read(tmp_path / "o.parquet")
    assert [(r["custom_id"], r["status"], r["text"]) for r in rows] == [("q2", "ok", "hi there"), ("q1", "ok", "again")]


def test_an_input_file_given_as_results_is_pointed_out(tmp_path):
    results = write_jsonl(tmp_path / "r.jsonl", [native(ok_record("q1"))])
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"custom_id": "q1", "prompt": "x"}])
    res = run_cli(results, prompts, "--to", "parquet", tmp_path / "o.parquet")
    assert res.exit_code == 1
    assert "no result records in it (an input file?" in res.output


def test_a_missing_file_is_a_usage_error(tmp_path):
    results = write_jsonl(tmp_path / "r.jsonl", [native(ok_record())])
    res = run_cli(tmp_path / "nope.jsonl", "--to", "parquet", tmp_path / "o.parquet")
    assert res.exit_code == 2 and "does not exist" in res.output
    res = run_cli(results, "--inputs", tmp_path / "nope.jsonl", "--to", "parquet", tmp_path / "o.parquet")
    assert res.exit_code == 2 and "no such input file" in res.output
    assert not (tmp_path / "o.parquet").exists()


def test_an_existing_output_is_refused_without_overwrite(tmp_path):
    results = write_jsonl(tmp_path / "r.jsonl", [native(ok_record())])
    out = tmp_path / "o.parquet"
    out.write_bytes(b"precious")
    res = run_cli(results, "--to", "parquet", out)
    assert res.exit_code == 2 and "already exists" in res.output and "--overwrite" in res.output
    assert out.read_bytes() == b"precious"
    res = run_cli(results, "--to", "parquet", out, "--overwrite")
    assert res.exit_code == 0, res.output
    assert len(read(out)) == 1
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".streamrun-export")] == []


def test_the_output_may_not_be_a_file_being_read(tmp_path):
    results = write_jsonl(tmp_path / "r.jsonl", [native(ok_record())])
    res = run_cli(results, "--to", "parquet", results, "--overwrite")
    assert res.exit_code == 2 and "being read" in res.output
    assert results.read_text().startswith("{")


def test_a_directory_is_only_replaced_when_it_is_a_saved_dataset(tmp_path):
    results = write_jsonl(tmp_path / "r.jsonl", [native(ok_record())])
    folder = tmp_path / "stuff"
    folder.mkdir()
    (folder / "keep.txt").write_text("mine")
    with pytest.raises(ExportError, match="not a saved dataset"):
        export([str(results)], "hf-dataset", str(folder), overwrite=True)
    with pytest.raises(ExportError, match="writes one file"):
        export([str(results)], "parquet", str(folder), overwrite=True)
    assert (folder / "keep.txt").read_text() == "mine"


def test_stdin_and_pipes_cannot_be_inputs(tmp_path):
    results = write_jsonl(tmp_path / "r.jsonl", [native(ok_record())])
    res = run_cli(results, "--inputs", "-", "--to", "parquet", tmp_path / "o.parquet")
    assert res.exit_code == 2 and "not stdin" in res.output


def test_hf_dataset_without_datasets_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    results = write_jsonl(tmp_path / "r.jsonl", [native(ok_record())])
    res = run_cli(results, "--to", "hf-dataset", tmp_path / "ds")
    assert res.exit_code == 2
    assert f"--to hf-dataset needs the datasets package: {install_hint('export')}" in res.output
    assert not (tmp_path / "ds").exists()


def test_without_pyarrow_from_this_checkout_it_names_the_checkout_and_its_venv_pip(tmp_path, monkeypatch):
    """The tests run from a checkout: `pip install 'streamrun[export]'` would fetch streamrun from PyPI beside it,
    with whichever pip is on PATH."""
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    results = write_jsonl(tmp_path / "r.jsonl", [native(ok_record())])
    res = run_cli(results, "--to", "parquet", tmp_path / "o.parquet")
    assert res.exit_code == 2 and not (tmp_path / "o.parquet").exists()
    hint = install_hint("export")
    assert res.output == f"Error: export needs pyarrow: {hint}\n"
    checkout = ROOT
    assert hint.endswith(" install -e '.[export]'" if Path.cwd().resolve() == checkout
                         else f" install -e '{checkout}[export]'")
    if sys.prefix != sys.base_prefix and (Path(sys.prefix) / "bin" / "pip").exists():  # a venv's own pip
        assert hint.startswith(".venv/bin/pip " if Path(sys.prefix).absolute() == Path.cwd() / ".venv"
                               else f"{Path(sys.prefix).absolute()}/bin/pip ")


def test_help_ends_with_examples():
    res = run_cli("--help")
    assert res.exit_code == 0
    assert "--to FORMAT OUT" in res.output
    tail = res.output.rstrip().split("Examples:\n")[-1].splitlines()
    assert 2 <= len(tail) <= 4 and all(line.strip().startswith("streamrun export ") for line in tail)


# -- Hugging Face datasets -----------------------------------------------------------------


def test_hf_dataset_round_trip(tmp_path):
    datasets = pytest.importorskip("datasets")
    datasets.disable_progress_bars()
    inputs = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": "q1", "messages": [{"role": "user", "content": "hi"}]}])
    results = write_jsonl(tmp_path / "r.jsonl", [native(ok_record("q1")), batch(error_record("q2"))])
    out = tmp_path / "ds"
    report = export([str(results)], "hf-dataset", str(out), inputs=[str(inputs)])
    assert report.rows == 2
    ds = datasets.load_from_disk(str(out))
    assert ds.num_rows == 2 and ds.column_names == export_schema(with_inputs=True).names
    row = ds[0]
    assert row["custom_id"] == "q1" and row["itl_s"] == [0.005, 0.006] and row["prompt_tokens"] == 12
    assert json.loads(row["prompt"]) == [{"role": "user", "content": "hi"}]
    assert ds[1]["error_status_code"] == 404 and ds[1]["prompt"] is None
    assert ds.features["started_at"].dtype.startswith("timestamp[us")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".streamrun-export")] == []
    # --overwrite replaces a saved dataset
    export([str(results)], "hf-dataset", str(out), overwrite=True)
    assert datasets.load_from_disk(str(out)).column_names == export_schema().names


def test_hf_dataset_of_no_records_is_refused(tmp_path):
    pytest.importorskip("datasets")
    results = write_jsonl(tmp_path / "r.jsonl", ["{torn"])
    res = run_cli(results, "--to", "hf-dataset", tmp_path / "ds")
    assert res.exit_code == 1 and "needs at least one row" in res.output
    assert not (tmp_path / "ds").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".streamrun-export")] == []


# -- end to end: a real run against the mock ------------------------------------------------


def test_a_mock_run_exports_with_its_prompts(tmp_path):
    inputs = write_jsonl(tmp_path / "in.jsonl", [
        {"custom_id": "chat", "messages": [{"role": "user", "content": "hi"}]},
        {"prompt": "complete me", "max_tokens": 5},
    ])
    for fmt in ("streamrun", "openai-batch"):
        results = tmp_path / f"{fmt}.jsonl"
        res = streamrun("run", inputs, "-o", results, "--mock", "-q", "--output-format", fmt)
        assert res.returncode == 0, res.stderr
        out = tmp_path / f"{fmt}.parquet"
        res = export_cli(results, "--inputs", inputs, "--to", "parquet", out)
        assert res.returncode == 0, res.stderr
        rows = by_id(read(out))
        assert set(rows) == {"chat", "in.jsonl:2"}
        assert rows["in.jsonl:2"]["prompt"] == "complete me" and rows["in.jsonl:2"]["text"]
        assert json.loads(rows["chat"]["prompt"]) == [{"role": "user", "content": "hi"}]
        assert all(r["status"] == "ok" and r["completion_tokens"] for r in rows.values())
        if fmt == "streamrun":
            assert all(r["ttft_s"] > 0 and r["started_at"] is not None for r in rows.values())


def export_cli(*args):
    """`streamrun export ARGS` as a subprocess; until runner.cli.main registers the command, the command itself."""
    from runner.cli.main import LAZY_COMMANDS

    if "export" in LAZY_COMMANDS:
        return streamrun("export", *args)
    code = "import sys; from runner.cli.export import export_command; export_command(sys.argv[1:])"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, timeout=120)
