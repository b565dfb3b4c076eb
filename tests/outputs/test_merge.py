import os
import sys
import types

import orjson
import pytest
from click.testing import CliRunner

from runner.cli.merge import merge_command
from runner.outputs.merge import MergeReport, merge


def stand_in_iter_input_ids(paths):
    """Stand-in for runner.inputs.items.iter_input_ids, same id rule.

    The id is the line's custom_id when it is a non-empty string, else
    "<file basename>:<1-based line number>".
    """
    for path in paths:
        with open(path, "rb") as f:
            for line_no, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                cid = orjson.loads(raw).get("custom_id")
                if not (isinstance(cid, str) and cid):
                    cid = f"{os.path.basename(path)}:{line_no}"
                yield cid, path, line_no, raw


@pytest.fixture(autouse=True)
def fake_inputs(monkeypatch):
    module = types.ModuleType("runner.inputs.items")
    module.iter_input_ids = stand_in_iter_input_ids
    monkeypatch.setitem(sys.modules, "runner.inputs.items", module)


def rec(cid, status="ok", text="t"):
    """A result line; odd spacing so that a byte-for-byte copy is visible."""
    err = None if status == "ok" else {"type": "http_error", "status_code": 500, "message": "x"}
    return (
        b'{"custom_id":  ' + orjson.dumps(cid) + b', "status": "' + status.encode()
        + b'", "text": ' + orjson.dumps(text) + b', "error": ' + orjson.dumps(err) + b"}\n"
    )


def write(path, *lines):
    path.write_bytes(b"".join(lines))
    return str(path)


def read_ids(path):
    return [orjson.loads(x)["custom_id"] for x in open(path, "rb") if x.strip()]


def run(args):
    return CliRunner().invoke(merge_command, [str(a) for a in args])


@pytest.fixture
def shards(tmp_path):
    """Three shard files; b failed in shard 0 and was retried in shard 1."""
    s0 = write(tmp_path / "s0.jsonl", rec("a"), rec("b", "error"), rec("f"))
    s1 = write(tmp_path / "s1.jsonl", rec("c"), rec("b", text="retried"))
    s2 = write(tmp_path / "s2.jsonl", rec("d"), rec("e", "error"), rec("e", "error"),
               rec("f", "error"))
    return s0, s1, s2


def test_merge_shards_with_retried_ids(tmp_path, shards):
    out = tmp_path / "all.jsonl"
    result = run([*shards, "-o", out])
    assert result.exit_code == 0, result.output
    lines = out.read_bytes().splitlines(keepends=True)
    assert sorted(read_ids(out)) == ["a", "b", "c", "d", "e", "f"]
    # ok beats error in both orders; kept lines are copied byte for byte.
    assert rec("b", text="retried") in lines and rec("b", "error") not in lines
    assert rec("f") in lines and rec("f", "error") not in lines
    assert lines.count(rec("e", "error")) == 1
    assert "records=9 duplicates=0 missing=n/a extra=n/a written=6" in result.output
    assert not (tmp_path / "all.jsonl.tmp").exists()


def test_real_duplicate_reports_both_places_and_fails(tmp_path, shards):
    s3 = write(tmp_path / "s3.jsonl", rec("x"), rec("c", text="second"))
    out = tmp_path / "all.jsonl"
    result = run([*shards, s3, "-o", out])
    assert result.exit_code == 1
    assert "duplicate ok records for c:" in result.output
    assert f"{shards[1]}:1 (kept)" in result.output
    assert f"{s3}:2" in result.output
    assert "duplicates=1" in result.output
    lines = out.read_bytes().splitlines(keepends=True)
    assert rec("c") in lines and rec("c", text="second") not in lines


def test_duplicate_within_one_file(tmp_path):
    s0 = write(tmp_path / "s0.jsonl", rec("a"), rec("a", text="again"))
    report = merge([s0], str(tmp_path / "all.jsonl"), warn=lambda m: None)
    assert report.duplicates == 1 and not report.ok
    assert report.duplicate_places == [("a", f"{s0}:1", f"{s0}:2")]


def test_a_rerun_in_one_file_keeps_the_final_record_of_each_key(tmp_path):
    # a rerun appended b's and e's new records after their errors: the last record of a key is final
    s0 = write(tmp_path / "s0.jsonl", rec("a"), rec("b", "error"), rec("e", "error"), rec("f", "error"),
               rec("b", text="rerun"), rec("e", "error", text="rerun"), rec("f", "error", text="failed again"))
    s1 = write(tmp_path / "s1.jsonl", rec("c"), rec("e", text="other shard"))
    out = tmp_path / "all.jsonl"
    report = merge([s0, s1], str(out), warn=lambda m: None)
    assert report.ok and (report.records, report.replaced, report.duplicates, report.written) == (9, 4, 0, 5)
    lines = out.read_bytes().splitlines(keepends=True)
    assert rec("b", text="rerun") in lines and rec("b", "error") not in lines
    assert rec("f", "error", text="failed again") in lines and rec("f", "error") not in lines  # the last, not the first
    assert rec("e", text="other shard") in lines  # across shards, ok still beats the error
    assert sorted(read_ids(out)) == ["a", "b", "c", "e", "f"]


def test_torn_and_garbled_lines_are_skipped(tmp_path):
    s0 = write(tmp_path / "s0.jsonl", rec("a"), b'{"custom_id": "b", "sta\n', rec("c"),
               b"\n", b'{"custom_id": "d"}\n', b"[]\n", rec("e").rstrip(b"\n"))
    s1 = write(tmp_path / "s1.jsonl", rec("f"), b'{"custom_id": "g", "status": "o')
    out = tmp_path / "all.jsonl"
    result = run([s0, s1, "-o", out])
    assert result.exit_code == 0, result.output  # warned, not fatal by itself
    for place in (f"{s0}:2", f"{s0}:5", f"{s0}:6", f"{s1}:2"):
        assert place in result.output
    assert f"{s0}:4" not in result.output  # blank lines are not errors
    assert read_ids(out) == ["a", "c", "e", "f"]
    assert out.read_bytes().endswith(rec("e") + rec("f"))  # newline added to e
    assert "bad lines=4" in result.output


def test_inputs_missing_ids_and_missing_file(tmp_path, shards):
    inputs = write(
        tmp_path / "in.jsonl",
        b'{"custom_id": "a", "prompt": "1"}\n',
        b'{"custom_id": "b", "prompt": "2"}\n',
        b'{"custom_id": "m1",   "prompt": "3"}\n',
        b'{"custom_id": "c", "prompt": "4"}\n',
        b'{"custom_id": "d", "prompt": "5"}\n',
        b'{"custom_id": "e", "prompt": "6"}\n',
        b'{"custom_id": "f", "prompt": "7"}\n',
        b'{"prompt": "no id"}\n',
        b'{"custom_id": "m2", "prompt": "9"}',
    )
    out, missing = tmp_path / "all.jsonl", tmp_path / "missing.jsonl"
    result = run([*shards, "-o", out, "--inputs", inputs, "--missing", missing])
    assert result.exit_code == 1
    assert "3 input ids have no record, first: m1, in.jsonl:8, m2" in result.output
    assert "missing=3 extra=0" in result.output
    lines = missing.read_bytes().splitlines(keepends=True)
    assert lines[0] == b'{"custom_id": "m1",   "prompt": "3"}\n'  # verbatim
    assert orjson.loads(lines[1]) == {"custom_id": "in.jsonl:8", "prompt": "no id"}
    assert lines[2] == b'{"custom_id": "m2", "prompt": "9"}\n'
    assert len(lines) == 3


def test_rerunning_the_missing_file_completes_the_merge(tmp_path):
    inputs = write(tmp_path / "in.jsonl", b'{"custom_id": "a"}\n', b'{"prompt": "p"}\n')
    s0 = write(tmp_path / "s0.jsonl", rec("a"))
    missing = tmp_path / "missing.jsonl"
    report = merge([s0], str(tmp_path / "all.jsonl"), [inputs], str(missing),
                   warn=lambda m: None)
    assert report.missing == 1
    # "streamrun run missing.jsonl" gives records with the ids of its lines:
    rerun_ids = [cid for cid, *_ in stand_in_iter_input_ids([str(missing)])]
    assert rerun_ids == ["in.jsonl:2"]
    s1 = write(tmp_path / "s1.jsonl", *(rec(cid) for cid in rerun_ids))
    result = run([s0, s1, "-o", tmp_path / "all.jsonl", "--inputs", inputs])
    assert result.exit_code == 0, result.output
    assert "missing=0 extra=0 written=2" in result.output


def test_extra_ids_are_reported(tmp_path, shards):
    inputs = write(tmp_path / "in.jsonl",
                   *(b'{"custom_id": "%s"}\n' % c.encode() for c in "abcde"))
    result = run([*shards, "-o", tmp_path / "all.jsonl", "--inputs", inputs])
    assert result.exit_code == 1
    assert "1 records match no input id, first: f" in result.output
    assert "missing=0 extra=1" in result.output


def test_clean_merge_against_inputs(tmp_path, shards):
    inputs = [
        write(tmp_path / "in1.jsonl", *(b'{"custom_id": "%s"}\n' % c.encode() for c in "abc")),
        write(tmp_path / "in2.jsonl", *(b'{"custom_id": "%s"}\n' % c.encode() for c in "def")),
    ]
    missing = tmp_path / "missing.jsonl"
    missing.write_bytes(b"stale\n")
    result = run([*shards, "-o", tmp_path / "all.jsonl", "--inputs", inputs[0],
                  "--inputs", inputs[1], "--missing", missing])
    assert result.exit_code == 0, result.output
    assert "records=9 duplicates=0 missing=0 extra=0 written=6" in result.output
    assert missing.read_bytes() == b""  # rewritten, so no stale lines remain


def test_usage_errors_exit_2(tmp_path, shards):
    out = tmp_path / "all.jsonl"
    assert run([*shards, "-o", out, "--missing", tmp_path / "m.jsonl"]).exit_code == 2
    assert run(["-o", out]).exit_code == 2
    assert run([tmp_path / "nope.jsonl", "-o", out]).exit_code == 2
    before = open(shards[0], "rb").read()
    assert run([*shards, "-o", shards[0]]).exit_code == 2
    assert open(shards[0], "rb").read() == before


def test_merge_function_returns_report(tmp_path, shards):
    messages = []
    report = merge(shards, str(tmp_path / "all.jsonl"), warn=messages.append)
    assert isinstance(report, MergeReport)
    assert (report.records, report.written, report.replaced, report.duplicates) == (9, 6, 3, 0)
    assert report.ok and messages == []
    with pytest.raises(ValueError):
        merge(shards, str(tmp_path / "x.jsonl"), missing_path=str(tmp_path / "m.jsonl"))


def test_warnings_are_capped(tmp_path):
    s0 = write(tmp_path / "s0.jsonl", *([b"garbage\n"] * 50), rec("a"))
    messages = []
    report = merge([s0], str(tmp_path / "all.jsonl"), warn=messages.append)
    assert report.bad_lines == 50 and report.written == 1
    assert len(messages) == 11  # ten named, then one line for the rest
    assert all(f"s0.jsonl:{n}: skipped, not valid JSON" in m for n, m in zip(range(1, 11), messages[:10], strict=True))
    assert messages[-1] == f"merge: {s0}: … and 40 more bad lines (50 in all)"


def test_stand_in_agrees_with_real_iter_input_ids(tmp_path, monkeypatch):
    """Once runner.inputs.items exists, its ids must follow the same rule."""
    monkeypatch.delitem(sys.modules, "runner.inputs.items")
    real = pytest.importorskip("runner.inputs.items")
    path = write(
        tmp_path / "in.jsonl",
        b'{"custom_id": "x1", "messages": [{"role": "user", "content": "hi"}]}\n',
        b'{"messages": [{"role": "user", "content": "hi"}]}\n',
    )
    got = [(cid, n, raw.rstrip(b"\n")) for cid, _, n, raw in real.iter_input_ids([path])]
    want = [(cid, n, raw.rstrip(b"\n")) for cid, _, n, raw in stand_in_iter_input_ids([path])]
    assert got == want


def staged(cid, label, status="ok"):
    stage = {"index": 0, "label": label, "concurrency": 1, "rate": None}
    return orjson.dumps({"custom_id": cid, "status": status, "stage": stage}) + b"\n"


def test_sweep_ids_are_per_stage(tmp_path):
    # A sweep sends every id once per stage: not duplicates.
    s0 = write(tmp_path / "s0.jsonl", staged("a", "c=1"), staged("a", "c=8"),
               staged("b", "c=1", "error"))
    s1 = write(tmp_path / "s1.jsonl", staged("b", "c=1"), staged("a", "c=8"))
    inputs = write(tmp_path / "in.jsonl", b'{"custom_id": "a"}\n', b'{"custom_id": "b"}\n')
    missing = tmp_path / "missing.jsonl"
    out = tmp_path / "all.jsonl"
    result = run([s0, s1, "-o", out, "--inputs", inputs, "--missing", missing])
    assert result.exit_code == 1  # a@c=8 twice, b@c=8 missing
    assert "duplicate ok records for a (stage c=8)" in result.output
    assert f"{s0}:2 (kept)" in result.output and f"{s1}:2" in result.output
    assert "1 input ids have no record, first: b (stage c=8)" in result.output
    assert "duplicates=1 missing=1 extra=0 written=3" in result.output
    assert missing.read_bytes() == b'{"custom_id": "b"}\n'
    assert out.read_bytes() == staged("a", "c=1") + staged("a", "c=8") + staged("b", "c=1")


def test_warmup_records_pass_through_unchecked(tmp_path):
    warm = orjson.dumps({"custom_id": "warmup:a", "status": "ok", "warmup": True}) + b"\n"
    s0 = write(tmp_path / "s0.jsonl", warm, rec("a"))
    s1 = write(tmp_path / "s1.jsonl", warm, rec("b"))
    inputs = write(tmp_path / "in.jsonl", b'{"custom_id": "a"}\n', b'{"custom_id": "b"}\n')
    out = tmp_path / "all.jsonl"
    result = run([s0, s1, "-o", out, "--inputs", inputs])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == warm + rec("a") + warm + rec("b")
    assert "records=2 duplicates=0 missing=0 extra=0 written=4" in result.output
    assert "warm-ups=2" in result.output


def test_openai_batch_outputs_merge_too(tmp_path):
    from runner.outputs.batch import encode_batch
    from runner.record import decode_native

    def batch(cid, status="ok", text="t"):
        record = decode_native(orjson.loads(rec(cid, status, text)))
        return orjson.dumps(encode_batch(record)) + b"\n"

    s0 = write(tmp_path / "s0.jsonl", batch("a"), batch("b", "error"))
    s1 = write(tmp_path / "s1.jsonl", batch("b", text="retried"), batch("a", text="dup"))
    out = tmp_path / "all.jsonl"
    result = run([s0, s1, "-o", out])
    assert result.exit_code == 1
    assert f"duplicate ok records for a: {s0}:1 (kept) and {s1}:2" in result.output
    assert out.read_bytes() == batch("a") + batch("b", text="retried")
    assert "bad lines=0" in result.output
