"""runner/record.py: the typed result record, its native codec, and the one decoder for both formats."""

from __future__ import annotations

import re
from dataclasses import fields
from datetime import datetime

import orjson
import pytest

from runner.config.run_config import ChecksConfig, RequestConfig, Stage, TransportConfig
from runner.engine.answers import Answers
from runner.engine.guards import ConnectGuard
from runner.engine.hooks import EngineHooks
from runner.engine.result import EngineResult
from runner.engine.send import Reply, Sender
from runner.inputs.items import InputItem
from runner.outputs.batch import decode_batch, decode_result, encode_batch
from runner.record import Choice, Metrics, Record, RecordError, decode_native
from runner.stream.endpoints import EndpointPool
from runner.stream.errors import HTTPStatusError
from runner.stream.headers import Credentials
from runner.stream.protocol import ChoiceState, StreamState
from runner.stream.timing import Timing
from tests.helpers import ROOT

FORMATS = ROOT / "docs" / "FORMATS.md"


def documented_record() -> dict:
    """The example record of docs/FORMATS.md, its // comments removed."""
    block = FORMATS.read_text().split("```json", 1)[1].split("```", 1)[0]
    return orjson.loads(re.sub(r"\s//[^\n]*", "", block))


def full_record(**over) -> Record:
    record = Record(
        custom_id="sample.jsonl:3", status="ok", text="hi there", reasoning="hmm",
        tool_calls=[{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        finish_reason="stop", model="mock-model",
        usage={"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
        metrics=Metrics(0.051, 0.05, 0.4, 0.0055, [0.005, 0.006], 0.0001, 9, "usage",
                        datetime.fromisoformat("2026-11-25T14:50:01.123456+00:00")),
        attempts=2, error=None, source={"file": "sample.jsonl", "line": 3}, endpoint="http://127.0.0.1:8000/v1",
        stage={"index": 0, "label": "c=4", "concurrency": 4, "rate": None}, warmup=False,
        request_url="/v1/chat/completions", request_id="req-9",
    )
    for k, v in over.items():
        setattr(record, k, v)
    return record


def error_record() -> Record:
    return full_record(status="error", finish_reason=None, usage=None, tool_calls=None,
                       error=RecordError("http_error", 404, "model_not_found", "HTTP 404: no such model"))


CHAT_LOGPROBS = [{"token": "a", "logprob": -0.5, "bytes": [97], "top_logprobs": []},
                 {"token": "b", "logprob": -0.25, "bytes": [98], "top_logprobs": []}]
COMPLETION_LOGPROBS = {"tokens": ["x"], "token_logprobs": [-1.0], "top_logprobs": [{"x": -1.0}], "text_offset": [0]}


def with_choices(**over) -> Record:
    """An n=2 chat record with logprobs, top-level fields choice 0's."""
    choices = [Choice(0, "hi there", "hmm", None, "stop", CHAT_LOGPROBS),
               Choice(1, "hello", None, [{"id": "c2", "type": "function", "function": {"name": "g", "arguments": ""}}],
                      "length", CHAT_LOGPROBS[:1])]
    return full_record(tool_calls=None, logprobs=CHAT_LOGPROBS, choices=choices, **over)


def engine_record(error=None, state: StreamState | None = None, count_tokens=None) -> Record:
    """A record as Sender.record builds it, from stamps and stream state."""
    sender = Sender(None, TransportConfig(), RequestConfig(model="m"), ChecksConfig(),
                    creds=Credentials({}, ("sk-secret",)), hooks=EngineHooks(count_tokens=count_tokens),
                    pool=EndpointPool(["http://e/v1"]), answers=Answers(None), result=EngineResult(),
                    reach=ConnectGuard())
    if state is None:
        state = StreamState(text_parts=["a", "b"], finish_reason="stop", model="mock-model", text_events=2,
                            usage={"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5})
    t = Timing(due=10.0)
    t.mark_sent(10.5)
    t.on_event(10.6, False)
    t.on_event(10.7, True)
    t.on_event(10.9, True)
    t.end = 11.0
    t.endpoint = "http://e/v1"
    item = InputItem("in.jsonl:1", "in.jsonl", 1, "/v1/chat/completions", {"model": "m"})
    return sender.record(item, Stage(0, 4), False, Reply(state, t, 1, error, "rid-1"))


# ---------------------------------------------------------------- the JSON shape


def test_the_engine_writes_exactly_the_documented_keys_in_order() -> None:
    doc = documented_record()
    written = orjson.loads(orjson.dumps(engine_record()))
    assert list(written) == list(doc) == [f.name for f in fields(Record)]
    assert list(written["metrics"]) == list(doc["metrics"]) == [f.name for f in fields(Metrics)]
    documented_error = orjson.loads(re.search(r'"error": null,\s*// or (\{.*\})', FORMATS.read_text()).group(1))
    assert list(documented_error) == [f.name for f in fields(RecordError)]
    documented_choice = re.search(r"each `\{(\"index\".*?)\}`", FORMATS.read_text(), re.S).group(1)
    assert re.findall(r'"(\w+)"', documented_choice) == [f.name for f in fields(Choice)]
    assert written["logprobs"] is None and written["choices"] is None and written["metrics"]["connect_s"] is None


def test_engine_record_values() -> None:
    r = engine_record()
    assert (r.custom_id, r.status, r.text, r.model, r.request_url, r.request_id) == (
        "in.jsonl:1", "ok", "ab", "mock-model", "/v1/chat/completions", "rid-1")
    m = r.metrics
    assert m.ttft_s == pytest.approx(0.2) and m.ttfb_s == pytest.approx(0.1) and m.e2e_s == pytest.approx(0.5)
    assert m.tpot_s == pytest.approx(0.3) and m.itl_s == [pytest.approx(0.2)] and m.queue_s == 0.5
    assert (m.output_tokens, m.output_tokens_source) == (2, "usage")
    assert r.stage is None and r.source == {"file": "in.jsonl", "line": 1} and r.endpoint == "http://e/v1"
    assert r.logprobs is None and r.choices is None


def test_engine_record_of_several_choices() -> None:
    """choices in index order, choice 0 from the state's own fields; the top level is choice 0's."""
    state = StreamState(text_parts=["a", "b"], finish_reason="stop", text_events=5, logprobs=CHAT_LOGPROBS,
                        usage={"prompt_tokens": 3, "completion_tokens": 7, "total_tokens": 10})
    state.others = {2: ChoiceState(2, ["z"], finish_reason="length"),
                    1: ChoiceState(1, ["c", "d"], ["r"], finish_reason="stop", logprobs=CHAT_LOGPROBS[:1])}
    r = engine_record(state=state)
    assert r.choices == [Choice(0, "ab", None, None, "stop", CHAT_LOGPROBS),
                         Choice(1, "cd", "r", None, "stop", CHAT_LOGPROBS[:1]),
                         Choice(2, "z", None, None, "length", None)]
    assert (r.text, r.finish_reason, r.logprobs) == ("ab", "stop", CHAT_LOGPROBS)
    assert (r.metrics.output_tokens, r.metrics.output_tokens_source) == (7, "usage")  # usage counts every choice
    written = orjson.loads(orjson.dumps(r))
    assert [list(c) for c in written["choices"]] == [[f.name for f in fields(Choice)]] * 3


def test_engine_record_counts_every_choice_without_usage() -> None:
    def state() -> StreamState:
        s = StreamState(text_parts=["one two"], finish_reason="stop", text_events=3)
        s.others = {1: ChoiceState(1, ["three four five"], finish_reason="stop")}
        return s

    events = engine_record(state=state())
    assert (events.metrics.output_tokens, events.metrics.output_tokens_source) == (3, "events")
    words = engine_record(state=state(), count_tokens=lambda text: (len(text.split()), "tokenizer"))
    assert (words.metrics.output_tokens, words.metrics.output_tokens_source) == (5, "tokenizer")
    estimate = engine_record(state=state(), count_tokens=lambda text: (len(text) // 4, "estimate"))
    assert estimate.metrics.output_tokens_source == "events"  # no tokenizer: the event count


def test_connect_s_comes_from_the_timing() -> None:
    t = Timing(due=1.0)
    t.mark_sent(1.0)
    assert Metrics.from_timing(t, None, None).connect_s is None  # a reused connection
    t.connect_s = 0.004
    assert Metrics.from_timing(t, None, None).connect_s == 0.004


def test_engine_error_record_is_redacted_and_carries_the_code() -> None:
    err = HTTPStatusError(404, "HTTP 404: key sk-secret has no model m", code="model_not_found")
    r = engine_record(err)
    assert r.status == "error" and not r.ok
    assert r.error == RecordError("http_error", 404, "model_not_found", "HTTP 404: key *** has no model m")


def test_metrics_of_an_attempt_that_never_went_out() -> None:
    assert Metrics.from_timing(None, None, None) == Metrics()
    assert orjson.loads(orjson.dumps(Metrics())) == {
        "ttft_s": None, "ttfb_s": None, "e2e_s": None, "tpot_s": None, "itl_s": [], "queue_s": None,
        "output_tokens": None, "output_tokens_source": None, "started_at": None, "connect_s": None,
        "ttfat_s": None, "reasoning_tokens": None, "scheduled_s": None}
    assert Metrics().itl_s is not Metrics().itl_s


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("record", [full_record(), error_record(), full_record(stage=None, warmup=True),
                                    full_record(request_url=None, request_id=None, reasoning=None),
                                    with_choices(), with_choices(status="error", error=RecordError("timeout")),
                                    full_record(logprobs=COMPLETION_LOGPROBS, request_url="/v1/completions"),
                                    full_record(metrics=Metrics(0.1, connect_s=0.002))])
def test_native_round_trip(record: Record) -> None:
    line = orjson.dumps(record)
    assert decode_native(orjson.loads(line)) == record
    assert decode_result(orjson.loads(line)) == record


@pytest.mark.parametrize("record", [full_record(), error_record(),
                                    full_record(status="error", error=RecordError("timeout", None, None, "t")),
                                    with_choices(), with_choices(status="error", error=RecordError("timeout")),
                                    full_record(tool_calls=None, logprobs=COMPLETION_LOGPROBS,
                                                request_url="/v1/completions"),
                                    full_record(metrics=Metrics(0.1, connect_s=0.002))])
def test_batch_round_trip(record: Record) -> None:
    line = orjson.loads(orjson.dumps(encode_batch(record)))
    assert "response" in line and "status" not in line
    assert decode_batch(line) == record
    assert decode_result(line) == record  # recognised as a Batch line


def test_keys_and_resume_key() -> None:
    r = full_record()
    assert r.label == "c=4" and r.key == "c=4\x00sample.jsonl:3"
    r.stage = None
    assert r.label is None and r.key == "sample.jsonl:3"


# ---------------------------------------------------------------- older and odder lines


def test_old_records_without_the_new_keys_decode() -> None:
    old = orjson.loads(orjson.dumps(error_record()))
    del old["request_id"], old["error"]["code"], old["logprobs"], old["choices"], old["metrics"]["connect_s"]
    old["request_path"] = old.pop("request_url")  # the spelling older conversions wrote
    r = decode_native(old)
    assert r.request_id is None and r.error.code is None
    assert r.logprobs is None and r.choices is None and r.metrics.connect_s is None
    assert r.request_url == "/v1/chat/completions"
    assert r.error == RecordError("http_error", 404, None, "HTTP 404: no such model")


def test_a_minimal_record_decodes_with_defaults() -> None:
    r = decode_native({"custom_id": "a", "status": "ok"})
    assert r == Record("a", "ok")
    assert (r.text, r.attempts, r.metrics, r.warmup) == ("", 1, Metrics(), False)


def test_wrong_types_decode_as_missing() -> None:
    r = decode_native({"custom_id": "a", "status": "error", "text": 5, "model": ["m"], "attempts": "2",
                       "warmup": "yes", "usage": "lots", "error": "boom",
                       "metrics": {"ttft_s": "fast", "e2e_s": 1, "itl_s": [0.1, "x", 0.2, None],
                                   "output_tokens": 3.5, "started_at": 17}})
    assert (r.text, r.model, r.attempts, r.warmup, r.usage, r.error) == ("", None, 1, False, None, None)
    m = r.metrics
    assert (m.ttft_s, m.e2e_s, m.itl_s, m.output_tokens, m.started_at) == (None, 1, [0.1, 0.2], None, None)
    assert decode_native({"custom_id": "a", "status": "ok", "metrics": [1]}).metrics == Metrics()
    odd = decode_native({"custom_id": "a", "status": "ok", "logprobs": "many", "choices": {"0": {}},
                         "metrics": {"connect_s": "slow"}})
    assert (odd.logprobs, odd.choices, odd.metrics.connect_s) == (None, None, None)
    listed = decode_native({"custom_id": "a", "status": "ok", "choices": [
        {"index": 0, "text": "x", "logprobs": 3, "tool_calls": "no"}, "junk",
        {"index": "one", "text": 7, "finish_reason": "stop"}]})
    assert listed.choices == [Choice(0, "x"), Choice(2, "", finish_reason="stop")]  # index: its place in the list


@pytest.mark.parametrize("obj, why", [
    ([1, 2], "a JSON array, not an object"),
    ("x", "a JSON string, not an object"),
    ({"status": "ok"}, "no custom_id string"),
    ({"custom_id": "", "status": "ok"}, "no custom_id string"),
    ({"custom_id": "a"}, "not a result record"),
    ({"custom_id": "a", "status": "done"}, "not a result record"),
])
def test_what_is_not_a_record(obj, why) -> None:
    with pytest.raises(ValueError, match=why):
        decode_result(obj)


def test_a_bad_batch_line_says_it_is_one() -> None:
    with pytest.raises(ValueError, match="an OpenAI Batch output line with no custom_id string"):
        decode_result({"id": "batch_req_5", "response": None})
