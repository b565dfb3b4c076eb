"""runner.inputs.items: input lines to requests (each line form, each invalid form, default ids),
globs to files, and the scan for duplicate ids before anything is sent."""

from __future__ import annotations

import re

import pytest

from runner.inputs.items import STDIN, InputError, default_id, expand_inputs, iter_items, parse_item, scan_inputs
from runner.stream.paths import CHAT_PATH, COMPLETIONS_PATH
from tests.helpers import write_jsonl

CHAT = b'{"custom_id": "c1", "messages": [{"role": "user", "content": "hi"}], "temperature": 0}'


@pytest.mark.parametrize("raw, cid, path, body", [
    (CHAT, "c1", CHAT_PATH, {"messages": [{"role": "user", "content": "hi"}], "temperature": 0}),
    (b'{"prompt": "once", "max_tokens": 3}', "f.jsonl:7", COMPLETIONS_PATH, {"prompt": "once", "max_tokens": 3}),
    (b'{"custom_id": "b1", "method": "POST", "url": "/v1/chat/completions", "body": {"messages": [{"role": "user", '
     b'"content": "x"}]}}', "b1", CHAT_PATH, {"messages": [{"role": "user", "content": "x"}]}),
    (b'{"custom_id": "b2", "body": {"prompt": "p"}}', "b2", COMPLETIONS_PATH, {"prompt": "p"}),  # Batch form, no url
    (b'{"custom_id": "", "prompt": "p"}', "f.jsonl:7", COMPLETIONS_PATH, {"prompt": "p"}),  # empty id: the default
])
def test_line_forms(raw, cid, path, body):
    item = parse_item("data/f.jsonl", 7, raw)
    assert item.error is None
    assert (item.custom_id, item.path, item.body) == (cid, path, body)
    assert (item.file, item.line, item.place, item.raw) == ("data/f.jsonl", 7, "data/f.jsonl:7", raw)


@pytest.mark.parametrize("raw, cid, error", [
    (b"{not json", "f.jsonl:7", "not valid JSON"),
    (b"[1, 2]", "f.jsonl:7", "expected a JSON object, got list"),
    (b'"text"', "f.jsonl:7", "expected a JSON object, got str"),
    (b'{"custom_id": "k", "temperature": 1}', "k", "no 'messages', 'prompt' or 'body' field"),  # its id is kept
    (b'{"custom_id": 5, "prompt": "x"}', "f.jsonl:7", "custom_id must be a string"),
    (b'{"custom_id": "k", "messages": []}', "k", "'messages' must be a non-empty list"),
    (b'{"custom_id": "k", "body": "x"}', "k", "'body' must be a JSON object"),
    (b'{"custom_id": "k", "method": "GET", "body": {"prompt": "x"}}', "k", "POST only"),
    (b'{"custom_id": "k", "url": "/v1/moderations", "body": {"input": "x"}}', "k", "is not one of /v1/chat/completions"),
    (b'{"custom_id": "e", "url": "/v1/embeddings", "body": {"input": []}}', "e", "non-empty string or list"),
    (b'{"prompt": ' + b"[" * 300 + b"]" * 300 + b"}", "f.jsonl:7", "nested too deeply"),
])
def test_invalid_lines_become_items_with_an_error(raw, cid, error):
    item = parse_item("data/f.jsonl", 7, raw)
    assert item.custom_id == cid and error in item.error
    assert item.path is None and item.body is None and item.raw == raw


def test_default_ids_are_the_file_name_and_line():
    assert default_id("/deep/dir/prompts.jsonl", 12) == "prompts.jsonl:12"
    assert default_id(STDIN, 3) == "<stdin>:3"
    item = parse_item(STDIN, 2, b'{"prompt": "x"}')
    assert (item.custom_id, item.file) == ("<stdin>:2", "<stdin>")


def test_iter_items_skips_blank_lines_but_counts_them(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", ['{"prompt": "1"}', "", "   ", '{"prompt": "2"}'])
    items = list(iter_items([str(path)]))
    assert [(i.custom_id, i.line) for i in items] == [("a.jsonl:1", 1), ("a.jsonl:4", 4)]


def test_expand_inputs_globs_in_a_stable_order(tmp_path):
    for name in ("b.jsonl", "a.jsonl", "c.txt", "sub/d.jsonl"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text("")
    (tmp_path / "dir.jsonl").mkdir()  # a directory matching the glob is not an input
    got = expand_inputs([str(tmp_path / "*.jsonl"), str(tmp_path / "c.txt"), "-"])
    assert got == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), str(tmp_path / "c.txt"), STDIN]
    recursive = expand_inputs([str(tmp_path / "**" / "*.jsonl")])
    assert recursive == sorted(recursive) and str(tmp_path / "sub" / "d.jsonl") in recursive


@pytest.mark.parametrize("patterns, message", [
    (["missing.jsonl"], "missing.jsonl: no such input file"),
    (["nothing-*.jsonl"], "nothing-*.jsonl: no such input file"),
    (["-", "-"], "'-' (stdin) can be given only once"),
])
def test_expand_inputs_errors(tmp_path, monkeypatch, patterns, message):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=re.escape(message)):
        expand_inputs(patterns)
    assert InputError("x").exit_code == 2  # a usage error: nothing was sent


def test_scan_counts_lines_and_names_both_places_of_a_duplicate(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{"custom_id": "x", "prompt": "1"}, {"custom_id": "y", "prompt": "2"},
                                           "{broken"])
    b = write_jsonl(tmp_path / "b.jsonl", [{"custom_id": "z", "prompt": "3"}, {"custom_id": "x", "prompt": "4"},
                                           {"custom_id": "x", "prompt": "5"}])
    scan = scan_inputs([str(a), str(b)])
    assert scan.lines == 6  # invalid lines are answered too (with error records)
    assert scan.duplicates == [("x", f"{a}:1", f"{b}:2"), ("x", f"{a}:1", f"{b}:3")]


def test_scan_without_duplicates_and_with_a_shard_filter(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"custom_id": f"r{i}", "prompt": "p"} for i in range(10)])
    scan = scan_inputs([str(path)], owns=lambda cid: cid in ("r1", "r5"))
    assert (scan.lines, scan.duplicates) == (2, [])
    # a custom key: the same id in two sweep stages is no duplicate
    same = write_jsonl(tmp_path / "s.jsonl", [{"custom_id": "x", "prompt": "p"}, {"custom_id": "x", "prompt": "q"}])
    assert scan_inputs([str(same)], key=lambda item: f"{item.line}:{item.custom_id}").duplicates == []
