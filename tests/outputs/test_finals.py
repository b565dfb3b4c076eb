"""runner.outputs.finals: of a results file's records for one key, the last is final; every reader reads through it."""

from __future__ import annotations

import os
import threading
from array import array

import orjson
import pytest

from runner.outputs import finals
from runner.outputs.finals import FinalRecords, records_at


def line(custom_id: str, status: str = "ok", **extra) -> bytes:
    return orjson.dumps({"custom_id": custom_id, "status": status, **extra}) + b"\n"


def invalid(custom_id: str, file: str, number: int, **extra) -> bytes:
    return line(custom_id, "error", error={"type": "invalid_input", "message": "not valid JSON"},
                source={"file": file, "line": number}, **extra)


def finals_of(path, **kwargs) -> list[tuple[int, str, str]]:
    with FinalRecords(path, **kwargs) as reader:
        return [(n, r.custom_id, r.status) for n, _, r in reader]


def test_the_last_record_of_a_key_is_final_per_stage_and_warm_ups_stay(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_bytes(line("a", "error") + line("b") + line("warmup:a", warmup=True) + line("a", "error")
                    + line("s", stage={"label": "c=1"}) + line("s", stage={"label": "c=2"}) + line("a")
                    + line("warmup:a", warmup=True))
    assert finals_of(out) == [(2, "b", "ok"), (3, "warmup:a", "ok"), (5, "s", "ok"), (6, "s", "ok"), (7, "a", "ok"),
                              (8, "warmup:a", "ok")]
    with FinalRecords(out) as reader:
        assert [(n, final) for n, _, _, final in reader.every()] == [(1, 7), (2, 2), (3, 3), (4, 7), (5, 5), (6, 6),
                                                                    (7, 7), (8, 8)]
        assert reader.superseded == 2


def test_a_fixed_line_without_an_id_of_its_own_supersedes_its_invalid_record_by_place(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_bytes(invalid("in.jsonl:3", "data/in.jsonl", 3)  # not JSON: keyed by its place
                    + invalid("p4", "data/in.jsonl", 4)  # its own id: only a record of p4 supersedes it
                    + line("in.jsonl:5", source={"file": "data/in.jsonl", "line": 5})  # ok: never by place
                    + line("p3", source={"file": "data/in.jsonl", "line": 3})  # the fixed line 3, its own id
                    + line("p9", source={"file": "data/in.jsonl", "line": 4})
                    + line("p5", source={"file": "data/in.jsonl", "line": 5}))
    assert [cid for _, cid, _ in finals_of(out)] == ["p4", "in.jsonl:5", "p3", "p9", "p5"]
    other_stage = tmp_path / "sweep.jsonl"  # a sweep's stages are apart: c=2's line 3 supersedes nothing of c=1
    other_stage.write_bytes(invalid("in.jsonl:3", "in.jsonl", 3, stage={"label": "c=1"})
                            + line("p3", source={"file": "in.jsonl", "line": 3}, stage={"label": "c=2"}))
    assert [cid for _, cid, _ in finals_of(other_stage)] == ["in.jsonl:3", "p3"]


def test_bad_lines_are_warned_once_and_counted(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_bytes(line("a", "error") + b"not json\n" + line("a") + b'{"custom_id": "t", "st')
    warnings: list[str] = []
    with FinalRecords(out, warn=warnings.append, verb="skipped, ") as reader:
        assert [r.custom_id for _, _, r in reader] == ["a"]
        assert (reader.bad_lines, reader.superseded) == (2, 1)
    assert len(warnings) == 2 and ":2: skipped, not valid JSON" in warnings[0] and "torn last line" in warnings[1]


def test_a_pipe_is_read_once_and_kept_aside(tmp_path):
    data = line("a", "error") + line("b") + line("a")
    r, w = os.pipe()
    writer = threading.Thread(target=lambda: (os.write(w, data), os.close(w)))
    writer.start()
    with os.fdopen(r, "rb") as src:
        assert finals_of(src, name="<stdin>") == [(2, "b", "ok"), (3, "a", "ok")]
    writer.join()


def test_many_repeated_keys_are_found_without_a_set_too(tmp_path, monkeypatch):
    monkeypatch.setattr(finals, "_SET_AT_MOST", 0)  # the bisecting path, taken past 65,536 repeated keys
    out = tmp_path / "out.jsonl"
    first = b"".join(line(f"k{i}", "error") for i in range(500))
    second = b"".join(line(f"k{i}") for i in range(0, 500, 2))
    out.write_bytes(first + second + line("new"))
    got = finals_of(out)
    assert len(got) == 501 and sum(s == "ok" for _, _, s in got) == 251
    assert {cid for _, cid, s in got if s == "error"} == {f"k{i}" for i in range(1, 500, 2)}


def test_records_at_reads_back_only_the_lines_asked_for(tmp_path):
    out = tmp_path / "out.jsonl"
    out.write_bytes(line("a") + b"\n" + line("b") + b"garbled\n" + line("c"))
    assert [r.custom_id for r in records_at(str(out), array("Q", [1, 3, 4, 5]))] == ["a", "b", "c"]
    assert list(records_at(str(out), array("Q"))) == []


@pytest.mark.parametrize("rows, expected", [([], []), ([b"\n"], [])])
def test_an_empty_file_has_no_records(tmp_path, rows, expected):
    out = tmp_path / "out.jsonl"
    out.write_bytes(b"".join(rows))
    assert finals_of(out) == expected
