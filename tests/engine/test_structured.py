"""runner/engine/structured.py: replies checked against json_object and json_schema response formats."""

from __future__ import annotations

import logging

import orjson
import pytest

from runner.engine import structured
from runner.engine.structured import MESSAGE_LIMIT, check_output, format_problem

JSON_OBJECT = {"type": "json_object"}

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1},
        "age": {"type": "integer", "minimum": 0},
        "pets": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"kind": {"enum": ["cat", "dog"]}, "tags": {"type": "array", "items": {"type": "string"}}},
                "required": ["kind"],
                "additionalProperties": False,
            },
        },
    },
    "required": ["name", "age"],
    "additionalProperties": False,
}


def schema_format(schema: object, name: str = "person", strict: bool = True) -> dict:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": strict}}


@pytest.fixture(autouse=True)
def _fresh_validators():
    structured._compiled.cache_clear()
    yield
    structured._compiled.cache_clear()


# -- nothing to check ------------------------------------------------------


@pytest.mark.parametrize("fmt", [None, {"type": "text"}, {"type": "some_vendor_grammar", "grammar": "x"}])
def test_nothing_to_check(fmt):
    assert check_output(fmt, "not json at all") == (None, None)


# -- json_object -------------------------------------------------------------


def test_json_object_valid():
    assert check_output(JSON_OBJECT, ' {"a": [1, 2, {"b": null}]}\n') == ({"a": [1, 2, {"b": None}]}, None)


@pytest.mark.parametrize(
    "text, words",
    [
        ("[1, 2]", "not an object (it is an array)"),
        ('"hello"', "not an object (it is a string)"),
        ("3", "not an object (it is a number)"),
        ("null", "not an object (it is null)"),
        ("true", "not an object (it is a boolean)"),
        ('{"a": 1,}', "not valid JSON"),
        ('{"a": NaN}', "not valid JSON"),
        ("{'a': 1}", "not valid JSON"),
        ('{"a": 1} trailing', "not valid JSON"),
        ('{"a": 1', "not valid JSON"),
        ("", "empty"),
        ("  \n ", "empty"),
    ],
)
def test_json_object_invalid(text, words):
    parsed, message = check_output(JSON_OBJECT, text)
    assert parsed is None
    assert words in message


def test_fenced_reply_is_invalid_and_says_so():
    text = '```json\n{"a": 1}\n```'
    parsed, message = check_output(JSON_OBJECT, text)
    assert parsed is None
    assert "fenced" in message and "bare JSON" in message
    parsed, message = check_output(schema_format({"type": "object"}), "\n" + text)
    assert parsed is None and "fenced" in message


def test_escaped_lone_surrogate_is_json():
    # RFC 8259 allows it; orjson refuses it, so the fallback parser takes it.
    parsed, message = check_output(JSON_OBJECT, '{"s": "\\ud800"}')
    assert message is None and parsed == {"s": "\ud800"}


# -- json_schema ---------------------------------------------------------------


def test_json_schema_valid():
    text = '{"name": "Ada", "age": 36, "pets": [{"kind": "cat", "tags": ["grey"]}]}'
    assert check_output(schema_format(PERSON), text) == (orjson.loads(text), None)


def test_json_schema_checked_whatever_strict_says():
    assert check_output(schema_format(PERSON, strict=False), '{"name": "Ada"}')[1] is not None


@pytest.mark.parametrize(
    "text, path, words",
    [
        ('{"name": "Ada"}', "$", "'age' is a required property"),
        ('{"name": "Ada", "age": -1}', "$.age", "minimum"),
        ('{"name": "Ada", "age": 1, "x": 0}', "$", "('x' was unexpected)"),
        ('{"name": "Ada", "age": 1, "pets": [{"kind": "cat"}, {"kind": "cow"}]}', "$.pets[1].kind", "'cow' is not one of"),
        ('{"name": "Ada", "age": 1, "pets": [{"kind": "dog", "tags": ["a", 7]}]}', "$.pets[0].tags[1]", "7 is not of type 'string'"),
        ('{"name": "Ada", "age": 1, "pets": [{}]}', "$.pets[0]", "'kind' is a required property"),
        ('{"name": "Ada", "age": 1.5}', "$.age", "is not of type 'integer'"),
        ("[]", "$", "is not of type 'object'"),
    ],
)
def test_json_schema_invalid_names_path_and_error(text, path, words):
    parsed, message = check_output(schema_format(PERSON), text)
    assert parsed is None
    assert message.startswith(f"reply does not match schema 'person' at {path}: ")
    assert words in message


def test_json_schema_reply_not_json():
    parsed, message = check_output(schema_format(PERSON), "Sure! Here is the JSON: {}")
    assert parsed is None and message.startswith("reply is not valid JSON")


def test_json_schema_non_object_root():
    assert check_output(schema_format({"type": "array", "items": {"type": "integer"}}), "[1, 2, 3]") == ([1, 2, 3], None)
    assert check_output(schema_format({"type": "integer"}), "1.5")[1] is not None


def test_json_schema_without_schema_takes_any_json():
    fmt = {"type": "json_schema", "json_schema": {"name": "free"}}
    assert check_output(fmt, "[1]") == ([1], None)
    assert check_output(fmt, "nope")[1].startswith("reply is not valid JSON")


def test_json_schema_missing_spec():
    parsed, message = check_output({"type": "json_schema"}, "{}")
    assert parsed is None and "no json_schema object" in message


def test_responses_api_flat_format():
    fmt = {"type": "json_schema", "name": "person", "schema": PERSON, "strict": True}
    assert check_output(fmt, '{"name": "Ada", "age": 3}') == ({"name": "Ada", "age": 3}, None)
    assert "at $.age" in check_output(fmt, '{"name": "Ada", "age": "3"}')[1]


def test_formats_are_annotations():
    fmt = schema_format({"type": "string", "format": "email"})
    assert check_output(fmt, '"not an email"') == ("not an email", None)


# -- bad schemas -------------------------------------------------------------------


def test_bad_schema_is_reported_as_such_and_logged_once(caplog):
    fmt = schema_format({"type": "object", "properties": {"a": {"type": "nope"}}}, name="broken")
    with caplog.at_level(logging.WARNING, logger="streamrun"):
        results = [check_output(fmt, '{"a": 1}') for _ in range(5)]
    for parsed, message in results:
        assert parsed is None
        assert message.startswith("response_format schema 'broken' is invalid: at $.properties.a.type")
    assert len([r for r in caplog.records if "schema is invalid" in r.getMessage()]) == 1


def test_format_problem_is_what_no_reply_could_pass():
    broken = schema_format({"type": "object", "properties": {"a": {"type": "nope"}}}, name="broken")
    assert format_problem(broken) == check_output(broken, '{"a": 1}')[1]  # one message, asked before sending
    assert format_problem(broken).startswith("response_format schema 'broken' is invalid: at $.properties.a.type")
    flat = {"type": "json_schema", "name": "p", "schema": {"required": "name"}}  # the Responses API's text.format
    assert "schema 'p' is invalid" in format_problem(flat)
    assert "no json_schema object" in format_problem({"type": "json_schema", "json_schema": "person"})
    for fine in (None, {"type": "text"}, JSON_OBJECT, schema_format(PERSON), {"type": "json_schema", "json_schema": {}},
                 schema_format({"$ref": "https://example.invalid/schema.json"})):  # a $ref is only known when applied
        assert format_problem(fine) is None


def test_bad_schema_blamed_before_the_reply():
    fmt = schema_format({"minLength": "three"})
    assert "schema" in check_output(fmt, "not json")[1] and "is invalid" in check_output(fmt, "not json")[1]


def test_schema_that_is_not_json():
    parsed, message = check_output(schema_format({1: {"type": "string"}}), '"x"')
    assert parsed is None and "is invalid" in message and "not JSON" in message


def test_unresolvable_ref_is_a_message_not_a_crash():
    parsed, message = check_output(schema_format({"$ref": "https://example.invalid/schema.json"}), "{}")
    assert parsed is None and "cannot be applied" in message


def test_local_refs_resolve():
    schema = {
        "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}, "v": {"type": "integer"}}}},
        "$ref": "#/$defs/node",
    }
    assert check_output(schema_format(schema), '{"v": 1, "next": {"v": 2, "next": {}}}')[1] is None
    assert "at $.next.next.v" in check_output(schema_format(schema), '{"next": {"next": {"v": "x"}}}')[1]


# -- unicode, size, message length ------------------------------------------------


def test_unicode():
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 3, "pattern": "^[^a-z]+$"}}}
    assert check_output(schema_format(schema), '{"name": "日本語"}') == ({"name": "日本語"}, None)
    assert check_output(schema_format(schema), '{"name": "😀👍🏽"}')[1] is None  # 3 code points
    parsed, message = check_output(schema_format(schema), '{"name": "日本語です"}')
    assert parsed is None and "at $.name" in message and "日本語です" in message
    assert check_output(JSON_OBJECT, '{"ключ": "значение\\u00e9"}') == ({"ключ": "значениеé"}, None)


def test_large_text():
    name = "Ada Lovelace, 日本語 " * 100_000
    rows = [{"kind": "cat", "tags": [f"t{i}"] * 5} for i in range(5_000)]
    text = orjson.dumps({"name": name, "age": 1, "pets": rows}).decode()
    assert len(text) > 2_000_000
    parsed, message = check_output(schema_format(PERSON), text)
    assert message is None and parsed["name"] == name and len(parsed["pets"]) == 5_000

    rows[-1] = {"kind": "cat", "tags": ["x" * 10_000, 1]}
    text = orjson.dumps({"name": name, "age": 1, "pets": rows}).decode()
    parsed, message = check_output(schema_format(PERSON), text)
    assert parsed is None and "$.pets[4999].tags[1]" in message and len(message) <= MESSAGE_LIMIT


def test_messages_are_cut():
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    parsed, message = check_output(schema_format(schema, name="n" * 50), '{"a": "' + "x" * 5000 + '"}')
    assert parsed is None and len(message) == MESSAGE_LIMIT and message.endswith("…")
    parsed, message = check_output(JSON_OBJECT, "{" + " " * 5000 + "x")
    assert len(message) <= MESSAGE_LIMIT


# -- validator cache -----------------------------------------------------------------


def test_validators_are_compiled_once_per_schema(monkeypatch):
    calls = []
    real = structured.Draft202012Validator.check_schema
    monkeypatch.setattr(structured.Draft202012Validator, "check_schema", lambda s: (calls.append(1), real(s))[1])

    reordered = orjson.loads(orjson.dumps(dict(reversed(list(PERSON.items())))))
    for i in range(1000):
        fmt = schema_format(PERSON if i % 2 else reordered)
        assert check_output(fmt, f'{{"name": "Ada", "age": {i}}}')[1] is None
    assert len(calls) == 1
    info = structured._compiled.cache_info()
    assert info.misses == 1 and info.hits == 999
    assert structured._validator(PERSON)[0] is structured._validator(reordered)[0]

    check_output(schema_format({"type": "string"}), '"x"')
    assert len(calls) == 2


def test_validator_cache_is_bounded():
    for i in range(structured.VALIDATOR_CACHE_SIZE + 10):
        check_output(schema_format({"type": "integer", "minimum": i}), str(i))
    assert structured._compiled.cache_info().currsize == structured.VALIDATOR_CACHE_SIZE
