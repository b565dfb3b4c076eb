"""runner/io/jsonl.py: the one JSONL reader (lazy, bounded lines, BOM, torn tails, capped warnings)."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest

from runner.io.jsonl import WARN_LIMIT, JsonlReader, Warner


def read(data: bytes, **kw) -> tuple[list, list[str]]:
    """(what objects() yields, the warnings), reading ``data`` as the file "f.jsonl"."""
    warnings: list[str] = []
    with JsonlReader(io.BytesIO(data), name="f.jsonl", warn=warnings.append, **kw) as reader:
        got = list(reader.objects())
    return got, warnings


def test_blank_lines_are_skipped_but_keep_their_numbers() -> None:
    got, warnings = read(b'{"a": 1}\n\n   \n\t\n{"a": 2}\n')
    assert [(n, obj) for n, _, obj in got] == [(1, {"a": 1}), (5, {"a": 2})]
    assert warnings == []


def test_crlf_line_ends() -> None:
    got, warnings = read(b'{"a": 1}\r\n{"a": 2}\r\n\r\n')
    assert [(n, raw, obj) for n, raw, obj in got] == [(1, b'{"a": 1}', {"a": 1}), (2, b'{"a": 2}', {"a": 2})]
    assert warnings == []


def test_a_byte_order_mark_at_the_start_is_dropped() -> None:
    got, warnings = read(b'\xef\xbb\xbf{"a": 1}\n{"a": 2}\n')
    assert [obj for _, _, obj in got] == [{"a": 1}, {"a": 2}]
    assert got[0][1] == b'{"a": 1}' and warnings == []
    # anywhere else it is an error in the line
    _, warnings = read(b'{"a": 1}\n\xef\xbb\xbf{"a": 2}\n')
    assert len(warnings) == 1 and warnings[0].startswith("f.jsonl:2: not valid JSON")


def test_a_last_line_without_newline_that_parses_is_a_line() -> None:
    got, warnings = read(b'{"a": 1}\n{"a": 2}')
    assert [(n, raw, obj) for n, raw, obj in got] == [(1, b'{"a": 1}', {"a": 1}), (2, b'{"a": 2}', {"a": 2})]
    assert warnings == []


def test_a_torn_last_line_is_named_as_such() -> None:
    got, warnings = read(b'{"a": 1}\n{"a": 2, "b": [1, 2')
    assert [obj for _, _, obj in got] == [{"a": 1}]
    assert warnings == ["f.jsonl:2: a torn last line (no newline, not valid JSON), as an interrupted write leaves"]
    # the same text with its newline is an ordinary bad line
    _, warnings = read(b'{"a": 2, "b": [1, 2\n{"a": 1}\n')
    assert len(warnings) == 1 and warnings[0].startswith("f.jsonl:1: not valid JSON (")


def test_an_over_long_line_is_skipped_unread_and_reading_goes_on() -> None:
    big = b'{"a": "' + b"x" * 100 + b'"}'
    data = b'{"a": 1}\n' + big + b"\n" + b'{"a": 2}\n' + big  # the last one without a newline
    got, warnings = read(data, max_line=64)
    assert [(n, obj) for n, _, obj in got] == [(1, {"a": 1}), (3, {"a": 2})]
    assert warnings == ["f.jsonl:2: line longer than 64 bytes, not read",
                        "f.jsonl:4: line longer than 64 bytes, not read"]
    # exactly max_line bytes is still a line, with or without \r\n
    line = b'{"a": "' + b"y" * 55 + b'"}'
    assert len(line) == 64
    got, warnings = read(line + b"\r\n" + line + b"\n" + line, max_line=64)
    assert [n for n, _, _ in got] == [1, 2, 3] and warnings == []


def test_a_long_line_is_never_held_whole(tmp_path: Path) -> None:
    """The over-long line is skipped in chunks: reading it does not cost its size."""
    import tracemalloc

    path = tmp_path / "big.jsonl"
    with open(path, "wb") as f:
        f.write(b'{"a": "' + b"x" * (8 << 20) + b'"}\n{"a": 1}\n')
    tracemalloc.start()
    try:
        with JsonlReader(path, max_line=1 << 16, warn=lambda m: None) as reader:
            got = [obj for _, _, obj in reader.objects()]
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert got == [{"a": 1}] and reader.bad_lines == 1
    assert peak < 4 << 20


def test_warnings_are_capped_per_file() -> None:
    data = b"".join(b"garbage %d\n" % i for i in range(25)) + b'{"ok": true}\n'
    got, warnings = read(data, prefix="merge: ", verb="skipped, ")
    assert [obj for _, _, obj in got] == [{"ok": True}]
    assert len(warnings) == WARN_LIMIT + 1 == 11
    assert warnings[0].startswith("merge: f.jsonl:1: skipped, not valid JSON (")
    assert warnings[9].startswith("merge: f.jsonl:10: ")
    assert warnings[-1] == "merge: f.jsonl: … and 15 more bad lines (25 in all)"


def test_consumers_report_their_own_bad_lines_through_the_reader() -> None:
    warnings: list[str] = []
    with JsonlReader(io.BytesIO(b'{"x": 1}\n[1]\n{"x": 2}\n'), name="r", warn=warnings.append, limit=1) as reader:
        for number, _, obj in reader.objects():
            if not isinstance(obj, dict):
                reader.bad(number, "not an object")
        reader.bad(3, "wrong in some other way")
    assert reader.bad_lines == 2
    assert warnings == ["r:2: not an object", "r: … and 1 more bad lines (2 in all)"]


def test_on_bad_replaces_the_warnings() -> None:
    seen: list[tuple[int, str]] = []
    warnings: list[str] = []
    with JsonlReader(io.BytesIO(b"x" * 100 + b"\n{}\n"), max_line=10, warn=warnings.append,
                     on_bad=lambda n, why: seen.append((n, why))) as reader:
        assert list(reader.lines()) == [(2, b"{}")]
    assert seen == [(1, "line longer than 10 bytes, not read")] and warnings == []


def test_a_pipe_is_read_lazily_once() -> None:
    """stdin or a FIFO: a line is yielded as soon as it has come, before the writer is done."""
    r, w = os.pipe()
    with os.fdopen(r, "rb") as src, os.fdopen(w, "wb", buffering=0) as dst:
        reader = JsonlReader(src, name="<stdin>", warn=pytest.fail)
        lines = reader.objects()
        dst.write(b'{"n": 1}\n')
        assert next(lines)[2] == {"n": 1}  # the pipe is still open: no read to the end
        dst.write(b'{"n": 2}\n')
        dst.close()
        assert [obj for _, _, obj in lines] == [{"n": 2}]
        reader.close()
        assert not src.closed  # not the reader's to close


def test_a_path_is_opened_and_closed(tmp_path: Path) -> None:
    path = tmp_path / "r.jsonl"
    path.write_bytes(b'{"a": 1}\n')
    with JsonlReader(path) as reader:
        assert reader.name == str(path)
        assert list(reader.lines()) == [(1, b'{"a": 1}')]
    assert reader._file.closed


def test_warner_alone() -> None:
    out: list[str] = []
    warner = Warner(out.append, lambda n: f"... {n} more", limit=2)
    for i in range(5):
        warner(f"w{i}")
    warner.close()
    warner.close()
    assert out == ["w0", "w1", "... 3 more"]


# ---------------------------------------------------------------- the readers that use it


def test_inputs_read_through_it(tmp_path: Path) -> None:
    from runner.inputs.items import iter_items

    path = tmp_path / "in.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"custom_id": "a", "prompt": "x"}\r\n\r\n'
                     b'{"custom_id": "b", "prompt": "' + b"y" * (32 << 20) + b'"}\n'
                     b'{"custom_id": "c", "prompt": "z"}')
    items = list(iter_items([str(path)]))
    assert [(i.custom_id, i.line, i.error) for i in items] == [
        ("a", 1, None), ("in.jsonl:3", 3, f"line longer than {32 << 20} bytes, not read"), ("c", 4, None)]
    assert items[0].raw == b'{"custom_id": "a", "prompt": "x"}'
