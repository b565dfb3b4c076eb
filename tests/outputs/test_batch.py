"""The OpenAI Batch API output format (runner/outputs/batch.py): encode_batch / decode_batch and `streamrun convert`."""

from dataclasses import fields
from datetime import UTC, datetime

import orjson
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runner.cli.convert import convert_command
from runner.outputs.batch import decode_batch, encode_batch
from runner.record import Choice, Metrics, Record, RecordError, Turn, decode_native
from tests.helpers import json_values


def _metrics(**over):
    m = Metrics(
        ttft_s=0.051, ttfb_s=0.05, e2e_s=0.4, tpot_s=0.0055, itl_s=[0.005, 0.006], queue_s=0.0001,
        output_tokens=64, output_tokens_source="usage", started_at=datetime.fromisoformat("2026-11-25T14:50:01.123456+00:00"),
    )
    for k, v in over.items():
        setattr(m, k, v)
    return m


def _record(**over):
    r = Record(
        custom_id="req-1", status="ok", text="Hello there", reasoning=None, tool_calls=None,
        finish_reason="stop", model="mock-model",
        usage={"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
        metrics=_metrics(), attempts=1, error=None, source={"file": "in.jsonl", "line": 3},
        endpoint="http://127.0.0.1:8000/v1", stage=None, warmup=False,
        request_url="/v1/chat/completions", request_id="chatcmpl-abc",
    )
    for k, v in over.items():
        setattr(r, k, v)
    return r


def _error_record(error, text="", metrics=None, **over):
    return _record(status="error", text=text, finish_reason=None, usage=None, error=error,
                   metrics=metrics or Metrics(), attempts=3, **over)


def _json(obj):
    """What a file holds: dataclasses become objects."""
    return orjson.loads(orjson.dumps(obj))


def test_chat_record_to_batch():
    rec = _record(reasoning="thinking...")
    line = encode_batch(rec, "/v1/chat/completions")
    assert line["custom_id"] == "req-1"
    assert line["id"].startswith("batch_req_") and len(line["id"]) == 10 + 32
    assert line["error"] is None
    resp = line["response"]
    assert resp["status_code"] == 200 and resp["request_id"]
    body = resp["body"]
    assert body["object"] == "chat.completion"
    assert body["model"] == "mock-model"
    assert body["usage"] == rec.usage
    assert body["created"] == 1795618201  # started_at as unix seconds
    assert body["choices"] == [{
        "index": 0,
        "message": {"role": "assistant", "content": "Hello there",
                    "reasoning_content": "thinking..."},
        "logprobs": None,
        "finish_reason": "stop",
    }]


def test_ids_are_stable_and_distinct_per_custom_id():
    a1 = encode_batch(_record(custom_id="a"))
    a2 = encode_batch(_record(custom_id="a", text="other"))
    b = encode_batch(_record(custom_id="b"))
    assert a1["id"] == a2["id"] != b["id"]
    assert a1["response"]["request_id"] == a2["response"]["request_id"]


def test_no_reasoning_key_when_absent():
    msg = encode_batch(_record())["response"]["body"]["choices"][0]["message"]
    assert "reasoning_content" not in msg


def test_side_field_carries_what_batch_has_no_place_for():
    rec = _record(stage={"index": 0, "label": "c=4", "concurrency": 4, "rate": None},
                  warmup=True, attempts=2)
    side = _json(encode_batch(rec))["streamrun"]
    assert side == {
        "metrics": _json(rec.metrics), "attempts": 2, "endpoint": rec.endpoint,
        "source": rec.source, "stage": rec.stage, "warmup": True,
        "request_url": "/v1/chat/completions", "request_id": "chatcmpl-abc", "request_hash": None,
    }


def test_ids_differ_per_stage_of_a_sweep():
    def stage(label):
        return {"index": 0, "label": label, "concurrency": 1, "rate": None}
    a = encode_batch(_record(stage=stage("c=1")))
    b = encode_batch(_record(stage=stage("c=8")))
    assert a["custom_id"] == b["custom_id"] and a["id"] != b["id"]


def test_completion_record_by_url_argument():
    line = encode_batch(_record(request_url=None), "/v1/completions")
    body = line["response"]["body"]
    assert body["object"] == "text_completion"
    assert body["id"].startswith("cmpl-")
    assert body["choices"] == [{"index": 0, "text": "Hello there", "logprobs": None, "finish_reason": "stop"}]


def test_record_request_url_wins_over_argument():
    rec = _record(request_url="/v1/completions")
    line = encode_batch(rec, "/v1/chat/completions")
    assert line["response"]["body"]["object"] == "text_completion"
    assert decode_batch(_json(line)) == rec


def test_request_path_of_older_conversions_is_read():
    line = _json(encode_batch(_record(request_url="/v1/completions")))
    line["streamrun"]["request_path"] = line["streamrun"].pop("request_url")
    assert decode_batch(line).request_url == "/v1/completions"


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_ok_round_trip(path):
    rec = _record(reasoning="hmm", request_url=path)
    assert decode_batch(_json(encode_batch(rec))) == rec


@pytest.mark.parametrize("url", ["/v1/chat/completions", "/v1/completions"])
def test_record_without_url_keeps_none_and_its_body_follows_the_argument(url):
    line = _json(encode_batch(_record(request_url=None), url))
    assert line["response"]["body"]["object"] == ("text_completion" if url == "/v1/completions" else "chat.completion")
    assert decode_batch(line) == _record(request_url=None)  # a round trip adds nothing either


def test_http_500_is_a_response_with_that_status():
    rec = _error_record(RecordError("http_error", 500, None, "boom"))
    line = _json(encode_batch(rec))
    assert line["error"] is None
    assert line["response"]["status_code"] == 500
    assert line["response"]["body"] == {"error": {
        "message": "boom", "type": "server_error", "param": None, "code": None}}
    assert decode_batch(line) == rec


def test_http_400_round_trip_keeps_the_servers_code():
    rec = _error_record(RecordError("context_length_exceeded", 400, "context_length_exceeded", "too long"))
    line = _json(encode_batch(rec))
    assert line["response"]["status_code"] == 400
    assert line["response"]["body"]["error"]["type"] == "invalid_request_error"
    assert line["response"]["body"]["error"]["code"] == "context_length_exceeded"
    assert decode_batch(line) == rec


def test_connect_error_is_a_batch_error():
    rec = _error_record(RecordError("connect_error", None, None, "refused"))
    line = _json(encode_batch(rec))
    assert line["response"] is None
    assert line["error"] == {"code": "connect_error", "message": "refused"}
    assert decode_batch(line) == rec


def test_broken_stream_keeps_partial_text_and_metrics():
    rec = _error_record(RecordError("incomplete_stream", None, None, "cut"), text="partial ans",
                        metrics=_metrics(output_tokens=3), model="mock-model")
    line = _json(encode_batch(rec))
    assert line["response"] is None and line["error"]["code"] == "incomplete_stream"
    assert line["streamrun"]["text"] == "partial ans"
    assert decode_batch(line) == rec


def test_real_batch_line_without_side_field():
    line = {
        "id": "batch_req_x", "custom_id": "request-1", "error": None,
        "response": {"status_code": 200, "request_id": "af0b", "body": {
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1,
            "model": "gpt-4o-mini", "choices": [{
                "index": 0, "finish_reason": "stop", "logprobs": None,
                "message": {"role": "assistant", "content": "4.", "refusal": None}}],
            "usage": {"prompt_tokens": 24, "completion_tokens": 8, "total_tokens": 32}}},
    }
    rec = decode_batch(line)
    assert rec.custom_id == "request-1" and rec.status == "ok"
    assert rec.text == "4." and rec.model == "gpt-4o-mini"
    assert rec.usage["completion_tokens"] == 8
    assert rec.metrics == Metrics()  # nothing was timed
    assert rec.attempts == 1 and rec.warmup is False
    assert rec.request_url == "/v1/chat/completions"
    assert rec.request_id == "af0b"  # the Batch API's own id for the request


def test_real_batch_errors_without_side_field():
    http = decode_batch({"id": "b", "custom_id": "r", "error": None, "response": {
        "status_code": 429, "request_id": "x",
        "body": {"error": {"message": "slow down", "type": "rate_limit", "code": "rate_limit_exceeded"}}}})
    assert http.status == "error"
    assert http.error == RecordError("http_error", 429, "rate_limit_exceeded", "slow down")
    expired = decode_batch({"id": "b", "custom_id": "r", "response": None,
                            "error": {"code": "batch_expired", "message": "late"}})
    assert expired.error == RecordError("batch_expired", None, None, "late")
    assert expired.request_url is None and expired.text == ""


def test_decode_batch_rejects_garbage():
    with pytest.raises(ValueError):
        decode_batch({"custom_id": "x", "response": None, "error": None})
    with pytest.raises(ValueError):
        decode_batch({"response": None, "error": {"code": "x"}})
    with pytest.raises(ValueError, match="malformed"):
        decode_batch({"custom_id": "x", "response": {"status_code": "200"}})


def _write_jsonl(path, objs, extra=b""):
    path.write_bytes(b"".join(orjson.dumps(o) + b"\n" for o in objs) + extra)


def test_convert_command_round_trip(tmp_path):
    records = [_record(custom_id=f"r{i}") for i in range(3)] + [
        _error_record(RecordError("timeout", None, None, "t"), custom_id="r9")]
    ours = tmp_path / "results.jsonl"
    _write_jsonl(ours, records)
    batch, back = tmp_path / "batch.jsonl", tmp_path / "back.jsonl"
    runner = CliRunner()
    r1 = runner.invoke(convert_command, [str(ours), "-o", str(batch), "--to", "openai-batch"])
    assert r1.exit_code == 0, r1.output
    lines = [orjson.loads(x) for x in batch.read_bytes().splitlines()]
    assert [x["custom_id"] for x in lines] == ["r0", "r1", "r2", "r9"]
    assert all("response" in x for x in lines)
    r2 = runner.invoke(convert_command, [str(batch), "-o", str(back), "--to", "streamrun"])
    assert r2.exit_code == 0, r2.output
    assert back.read_bytes() == ours.read_bytes()  # byte for byte


def test_convert_command_bad_lines_are_skipped_and_named(tmp_path):
    src = tmp_path / "mixed.jsonl"
    batch_line = encode_batch(_record(custom_id="b1"))
    _write_jsonl(src, [_record(custom_id="a1")], extra=(
        b'{"custom_id": "torn", "sta\n'
        + orjson.dumps(batch_line) + b"\n"
        + b'[1, 2]\n'
        + b'{"hello": "world"}\n'
    ))
    out = tmp_path / "out.jsonl"
    result = CliRunner().invoke(convert_command, [str(src), "-o", str(out), "--to", "streamrun"])
    assert result.exit_code == 1
    for line_no in (2, 4, 5):
        assert f"mixed.jsonl:{line_no}:" in result.output
    assert "mixed.jsonl:1:" not in result.output and "mixed.jsonl:3:" not in result.output
    got = [orjson.loads(x) for x in out.read_bytes().splitlines()]
    assert [g["custom_id"] for g in got] == ["a1", "b1"]  # auto-detected per line
    assert got[0] == _json(_record(custom_id="a1"))  # already streamrun: copied


def test_convert_command_completions_url(tmp_path):
    src, out = tmp_path / "r.jsonl", tmp_path / "b.jsonl"
    _write_jsonl(src, [_record(request_url=None)])
    result = CliRunner().invoke(convert_command, [
        str(src), "-o", str(out), "--to", "openai-batch", "--url", "/v1/completions"])
    assert result.exit_code == 0
    assert orjson.loads(out.read_bytes())["response"]["body"]["object"] == "text_completion"


def test_convert_command_refuses_to_overwrite_its_input(tmp_path):
    src = tmp_path / "r.jsonl"
    _write_jsonl(src, [_record()])
    result = CliRunner().invoke(convert_command, [str(src), "-o", str(src), "--to", "openai-batch"])
    assert result.exit_code == 2
    assert orjson.loads(src.read_bytes()) == _json(_record())


def test_tool_calls_round_trip():
    calls = [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]
    rec = _record(text="", tool_calls=calls, finish_reason="tool_calls")
    line = _json(encode_batch(rec))
    assert line["response"]["body"]["choices"][0]["message"]["tool_calls"] == calls
    assert decode_batch(line) == rec


# ---------------------------------------------------------------- n > 1 and logprobs

CHAT_LP = [{"token": "Hel", "logprob": -0.1, "bytes": [72, 101, 108], "top_logprobs": [
    {"token": "Hel", "logprob": -0.1, "bytes": [72, 101, 108]}]}]
COMPLETION_LP = {"tokens": ["Hel"], "token_logprobs": [-0.1], "top_logprobs": [{"Hel": -0.1}], "text_offset": [0]}


def _choices(logprobs, other_logprobs):
    return [Choice(0, "Hello there", None, None, "stop", logprobs),
            Choice(1, "Hi", "why not", None, "length", other_logprobs)]


def test_chat_choices_and_logprobs_as_the_api_returns_them():
    rec = _record(logprobs=CHAT_LP, choices=_choices(CHAT_LP, CHAT_LP[:0]))
    body = _json(encode_batch(rec))["response"]["body"]
    assert body["choices"] == [
        {"index": 0, "message": {"role": "assistant", "content": "Hello there"},
         "logprobs": {"content": CHAT_LP}, "finish_reason": "stop"},
        {"index": 1, "message": {"role": "assistant", "content": "Hi", "reasoning_content": "why not"},
         "logprobs": {"content": []}, "finish_reason": "length"},
    ]
    assert decode_batch(_json(encode_batch(rec))) == rec


def test_completion_choices_and_logprobs_as_the_api_returns_them():
    rec = _record(request_url="/v1/completions", logprobs=COMPLETION_LP, choices=_choices(COMPLETION_LP, None))
    body = _json(encode_batch(rec))["response"]["body"]
    assert body["choices"] == [
        {"index": 0, "text": "Hello there", "logprobs": COMPLETION_LP, "finish_reason": "stop"},
        {"index": 1, "text": "Hi", "reasoning_content": "why not", "logprobs": None, "finish_reason": "length"},
    ]
    assert decode_batch(_json(encode_batch(rec))) == rec


def test_one_choice_with_logprobs_round_trips_without_choices():
    rec = _record(logprobs=CHAT_LP)
    line = _json(encode_batch(rec))
    assert line["response"]["body"]["choices"][0]["logprobs"] == {"content": CHAT_LP}
    back = decode_batch(line)
    assert back == rec and back.choices is None


def test_real_batch_line_with_several_choices_and_logprobs():
    """As the Batch API writes it: choice 0 is the one whose index is 0, whatever its place; choices in index order."""
    line = {"id": "b", "custom_id": "r", "error": None, "response": {"status_code": 200, "request_id": "q", "body": {
        "object": "chat.completion", "model": "gpt-4o-mini", "usage": None, "choices": [
            {"index": 1, "message": {"role": "assistant", "content": "B", "refusal": None},
             "logprobs": {"content": CHAT_LP, "refusal": None}, "finish_reason": "stop"},
            {"index": 0, "message": {"role": "assistant", "content": "A", "refusal": None},
             "logprobs": {"content": None, "refusal": None}, "finish_reason": "length"}]}}}
    rec = decode_batch(line)
    assert (rec.text, rec.finish_reason, rec.logprobs) == ("A", "length", None)
    assert rec.choices == [Choice(0, "A", None, None, "length", None), Choice(1, "B", None, None, "stop", CHAT_LP)]


def test_error_record_keeps_partial_choices_in_the_side_field():
    rec = _error_record(RecordError("incomplete_stream", None, None, "cut"), text="Hel", logprobs=CHAT_LP,
                        choices=_choices(CHAT_LP, None))
    line = _json(encode_batch(rec))
    assert line["response"] is None and line["streamrun"]["logprobs"] == CHAT_LP
    assert len(line["streamrun"]["choices"]) == 2
    assert decode_batch(line) == rec
    plain = _json(encode_batch(_error_record(RecordError("timeout", None, None, "t"))))
    assert "choices" not in plain["streamrun"] and "logprobs" not in plain["streamrun"]


def test_convert_command_round_trips_choices_and_logprobs(tmp_path):
    records = [_record(custom_id="c", logprobs=CHAT_LP, choices=_choices(CHAT_LP, CHAT_LP)),
               _record(custom_id="p", request_url="/v1/completions", logprobs=COMPLETION_LP,
                       choices=_choices(COMPLETION_LP, COMPLETION_LP))]
    ours, batch, back = tmp_path / "results.jsonl", tmp_path / "batch.jsonl", tmp_path / "back.jsonl"
    _write_jsonl(ours, records)
    runner = CliRunner()
    assert runner.invoke(convert_command, [str(ours), "-o", str(batch), "--to", "openai-batch"]).exit_code == 0
    lines = [orjson.loads(x) for x in batch.read_bytes().splitlines()]
    assert [len(x["response"]["body"]["choices"]) for x in lines] == [2, 2]
    assert runner.invoke(convert_command, [str(batch), "-o", str(back), "--to", "streamrun"]).exit_code == 0
    assert back.read_bytes() == ours.read_bytes()


def test_parsed_round_trips(tmp_path):
    rec = _record(text='{"answer": 42}', parsed={"answer": 42})
    line = _json(encode_batch(rec))
    assert line["streamrun"]["parsed"] == {"answer": 42}
    assert decode_batch(line) == rec
    assert "parsed" not in _json(encode_batch(_record()))["streamrun"]  # nothing asked for: nothing added
    src = tmp_path / "in.jsonl"
    src.write_bytes(orjson.dumps(rec) + b"\n")
    runner = CliRunner()
    for to, inp, out in (("openai-batch", src, tmp_path / "b.jsonl"), ("streamrun", tmp_path / "b.jsonl",
                                                                       tmp_path / "back.jsonl")):
        result = runner.invoke(convert_command, [str(inp), "-o", str(out), "--to", to])
        assert result.exit_code == 0, result.output
    assert orjson.loads((tmp_path / "back.jsonl").read_bytes())["parsed"] == {"answer": 42}


def test_convert_leaves_out_records_a_rerun_superseded(tmp_path):
    failed = _error_record(RecordError("timeout", None, None, "slow"))
    lines = [orjson.dumps(failed), orjson.dumps(_record(custom_id="req-2")), orjson.dumps(_record(text="again"))]
    data = b"\n".join(lines) + b"\n"
    src = tmp_path / "results.jsonl"
    src.write_bytes(data)
    for source, kwargs in ((src, {}), ("-", {"input": data})):  # stdin is read once: kept aside to read twice
        res = CliRunner().invoke(convert_command, [str(source), "-o", str(tmp_path / "out.jsonl"),
                                                   "--to", "openai-batch"], **kwargs)
        assert res.exit_code == 0, res.output
        assert "convert: 2 lines written, 0 skipped, 1 superseded records left out" in res.output
        out = [orjson.loads(x) for x in (tmp_path / "out.jsonl").read_bytes().splitlines()]
        assert [(b["custom_id"], decode_batch(b).text) for b in out] == [("req-2", "Hello there"), ("req-1", "again")]


# ---- the promise, for every field: decode_batch(encode_batch(r)) == r (through the file's JSON)

_json_value = json_values(max_leaves=6, finite=True)
_text = st.text(max_size=8)
_float = st.floats(allow_nan=False, allow_infinity=False)
_int = st.integers(-2**63, 2**63 - 1)
_object = st.dictionaries(_text, _json_value, max_size=3)
_time = st.datetimes(datetime(2000, 1, 1), datetime(2100, 1, 1), timezones=st.none() | st.just(UTC))
_error = st.builds(RecordError, st.none() | _text, st.none() | st.integers(100, 599), st.none() | _text,
                   st.none() | _text)
_logprobs = st.none() | st.lists(_json_value, max_size=3) | _object

# One strategy per field of each record type (keyword: field name). A field added to any of them fails
# test_every_record_field_has_a_strategy until it has one here, and then the round trip checks it.
METRICS = dict(ttft_s=_float, ttfb_s=_float, e2e_s=_float, tpot_s=_float, itl_s=st.lists(_float, max_size=3),
               queue_s=_float, output_tokens=_int, output_tokens_source=_text, started_at=_time, connect_s=_float,
               ttfat_s=_float, reasoning_tokens=_int, scheduled_s=_float)
_metrics_st = st.builds(Metrics, **{k: v if k == "itl_s" else st.none() | v for k, v in METRICS.items()})
CHOICE = dict(index=_int, text=_text, reasoning=st.none() | _text, tool_calls=st.none() | st.lists(_object, max_size=2),
              finish_reason=st.none() | _text, logprobs=_logprobs)
TURN = dict(index=_int, text=_text, reasoning=st.none() | _text, finish_reason=st.none() | _text,
            usage=st.none() | _object, metrics=_metrics_st, attempts=_int, error=st.none() | _error)
RECORD = dict(
    custom_id=st.text(min_size=1, max_size=8), status=st.sampled_from(["ok", "error"]), text=_text,
    reasoning=st.none() | _text, tool_calls=st.none() | st.lists(_object, max_size=2),
    finish_reason=st.none() | _text, model=st.none() | _text, usage=st.none() | _object, metrics=_metrics_st,
    attempts=_int, error=st.none() | _error, source=st.none() | _object, endpoint=st.none() | _text,
    stage=st.none() | _object | st.fixed_dictionaries({"index": _int, "label": _text, "degraded": st.booleans()}),
    warmup=st.booleans(),
    request_url=st.none() | st.sampled_from(["/v1/chat/completions", "/v1/completions", "/v1/responses"]) | st.text(
        min_size=1, max_size=8),  # "" reads back as None in either format: no path
    request_id=st.none() | _text, logprobs=_logprobs,
    choices=st.none() | st.lists(st.builds(Choice, **CHOICE), max_size=3), request_hash=st.none() | _text,
    parsed=_json_value, cached=st.booleans(), cached_metrics=st.none() | _metrics_st,
    turns=st.none() | st.lists(st.builds(Turn, **TURN), max_size=2),
    embedding=st.none() | st.lists(_float, max_size=3),
    embeddings=st.none() | st.lists(st.lists(_float, max_size=3), max_size=2),
    batch_id=st.none() | _text,
)


def test_every_record_field_has_a_strategy():
    for cls, strategies in ((Record, RECORD), (Metrics, METRICS), (Choice, CHOICE), (Turn, TURN)):
        assert set(strategies) == {f.name for f in fields(cls)}, f"{cls.__name__}: give every field a strategy"


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.builds(Record, **RECORD), st.sampled_from(["/v1/chat/completions", "/v1/completions"]))
def test_every_field_of_every_record_round_trips(record, url):
    assert decode_native(_json(record)) == record  # the native format's own round trip: the same domain
    assert decode_batch(_json(encode_batch(record, url))) == record


def _every_field_set() -> Record:
    """A record none of whose fields is at its default (a new field must be set here too)."""
    m = _metrics(connect_s=0.002, ttfat_s=0.06, reasoning_tokens=3, scheduled_s=1.5)
    turn = Turn(0, "first", "hm", "stop", {"total_tokens": 3}, _metrics(), 2, RecordError("http_error", 500, "x", "y"))
    return _record(
        text="Hi", reasoning="r", tool_calls=[{"id": "t", "type": "function"}], stage={
            "index": 1, "label": "c=4", "concurrency": 4, "rate": None, "degraded": True},
        warmup=True, attempts=0, error=RecordError("timeout", None, None, "partly"), metrics=m,
        logprobs=[{"token": "Hi", "logprob": -0.1}], choices=[Choice(0, "Hi", "r", None, "stop", None)],
        request_hash="h", parsed={"a": 1}, cached=True, cached_metrics=_metrics(e2e_s=0.9), turns=[turn],
        embedding=[0.5, -1.0], embeddings=[[0.5], [0.25, 2.0]], batch_id="batch_1")


@pytest.mark.parametrize("status", ["ok", "error"])
def test_a_record_with_every_field_set_round_trips(status):
    record = _every_field_set()
    record.status = status
    unset = [f.name for f in fields(Record) if getattr(record, f.name) == getattr(Record("", ""), f.name)]
    assert unset == [], f"set these in _every_field_set: {unset}"
    line = _json(encode_batch(record))
    assert decode_batch(line) == record
    side = line["streamrun"]
    assert side["cached"] is True and side["turns"][0]["error"]["status_code"] == 500 and side["embeddings"]
    assert side["stage"]["degraded"] is True and side["batch_id"] == "batch_1"


def test_what_is_at_its_default_adds_nothing_to_the_side_field():
    side = _json(encode_batch(_record()))["streamrun"]
    assert set(side) == {"metrics", "attempts", "endpoint", "source", "stage", "warmup", "request_url",
                         "request_id", "request_hash"}
