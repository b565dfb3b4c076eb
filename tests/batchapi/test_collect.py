"""A batch's results to records (runner/batchapi/collect.py, and each provider's result lines): the same Record
as a live run's, normalised alike, with typed errors whatever the batch came to."""

from __future__ import annotations

import orjson
import pytest

from runner.batchapi import collect
from runner.batchapi.anthropic import AnthropicBatches
from runner.batchapi.openai import OpenAIBatches
from runner.batchapi.plan import wire_request
from runner.batchapi.settings import BatchSettings
from runner.config.run_config import BatchConfig, OutputConfig, RunConfig, TransportConfig
from runner.inputs.items import parse_item

SECRET = "sk-collect-never-shown"


def test_results_become_typed_records_whatever_the_batch_came_to():
    settings = BatchSettings.from_config(RunConfig(output=OutputConfig("o.jsonl"), transport=TransportConfig(
        api="anthropic"), batch=BatchConfig(enabled=True)))
    line = {"custom_id": "a:1", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 9}
    item = parse_item("in.jsonl", 7, orjson.dumps(line), "anthropic")
    member = collect.Member(item, wire_request(item, settings, {}, "claude-x"))
    ctx = collect.Context("claude-x", (SECRET,), "https://api.anthropic.com/v1")
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "stop_reason": "end_turn",
               "content": [{"type": "text", "text": "Hello"}], "usage": {"input_tokens": 5, "output_tokens": 2}}
    ok = collect.answered(member, AnthropicBatches.outcome({"custom_id": member.wire.wire_id, "result": {
        "type": "succeeded", "message": message}}), "msgbatch_1", ctx)
    assert (ok.status, ok.text, ok.finish_reason, ok.batch_id, ok.request_id) == ("ok", "Hello", "stop", "msgbatch_1",
                                                                                   "msg_1")
    assert ok.usage["prompt_tokens"] == 5 and ok.usage["completion_tokens"] == 2 and ok.metrics.output_tokens == 2
    assert ok.custom_id == "a:1" and ok.source == {"file": "in.jsonl", "line": 7} and ok.request_hash
    errored = collect.answered(member, AnthropicBatches.outcome({"custom_id": "x", "result": {
        "type": "errored", "error": {"type": "error", "error": {"type": "overloaded_error",
                                                                 "message": f"busy {SECRET}"}}}}), "msgbatch_1", ctx)
    assert (errored.error.type, errored.error.code, errored.error.message) == ("batch_errored", "overloaded_error",
                                                                              "busy ***")
    expired = collect.answered(member, AnthropicBatches.outcome({"custom_id": "x", "result": {"type": "expired"}}),
                               "b", ctx)
    assert expired.error.type == "batch_expired" and expired.attempts == 0
    assert collect.missing(member, "failed", "b", ctx, "line 3: invalid_json_line").error.message.endswith(
        "the batch failed: line 3: invalid_json_line")
    assert collect.missing(member, "failed", "b", ctx, None).error.type == "batch_failed"
    assert collect.missing(member, "completed", "b", ctx, None).error.type == "batch_errored"
    line = {"custom_id": "c", "response": None, "error": {"code": "batch_cancelled", "message": "cancelled"}}
    assert OpenAIBatches.outcome(line).kind == "cancelled"
    line = {"custom_id": "c", "response": {"status_code": 429, "request_id": "r", "body": {"error": {
        "message": "slow down", "type": "rate_limit", "code": "rate_limit_exceeded"}}}, "error": None}
    assert (OpenAIBatches.outcome(line).status_code, OpenAIBatches.outcome(line).code) == (429, "rate_limit_exceeded")
    with pytest.raises(ValueError):
        OpenAIBatches.outcome({"custom_id": "c"})


def test_a_result_line_of_an_unknown_shape_is_a_value_error():
    """A line the collector skips with a warning (ValueError), whatever JSON its result type is: no TypeError."""
    for result in ({"type": ["succeeded"]}, {"type": {"x": 1}}, {"type": None}, ["succeeded"], None):
        with pytest.raises(ValueError, match="an unknown result"):
            AnthropicBatches.outcome({"custom_id": "c", "result": result})
