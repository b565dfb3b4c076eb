"""Input lines to the providers' batches (runner/batchapi/plan.py, settings.py): the live translation, the
limits that split parts, and the options a batch run refuses (and a live run refuses of it)."""

from __future__ import annotations

import asyncio
import dataclasses

import orjson
import pytest

from runner.batchapi.plan import Planner, anthropic_id, wire_request
from runner.batchapi.settings import ANTHROPIC_LIMITS, OPENAI_LIMITS, BatchSettings, ProviderLimits
from runner.config.run_config import BatchConfig, OutputConfig, RunConfig
from runner.errors import UsageError
from runner.inputs.items import parse_item
from runner.run import run_document
from runner.stream import protocol_anthropic
from runner.stream.config import Limits, Timeouts
from runner.stream.paths import InvalidRequestLine
from tests.helpers import replace_fields


def batch_config(**fields) -> RunConfig:
    """A batch run's config (batch = true, -o o.jsonl) with `fields` changed wherever they sit (`replace_fields`)."""
    return replace_fields(RunConfig(output=OutputConfig("o.jsonl"), batch=BatchConfig(enabled=True)), **fields)


def _item(obj: dict, api: str = "anthropic"):
    return parse_item("in.jsonl", 7, orjson.dumps(obj), api)


def test_anthropic_lines_are_translated_as_the_live_path_translates_them():
    settings = BatchSettings.from_config(batch_config(api="anthropic"))
    item = _item({"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}],
                  "stop": "END", "temperature": 0.2})
    wire = wire_request(item, settings, {"max_tokens": 64}, "claude-x")
    live = protocol_anthropic.build_body(item.body, defaults={"max_tokens": 64}, model="claude-x", include_usage=True)
    assert wire.request == {k: v for k, v in live.items() if k != "stream"}
    assert wire.request["system"] == "Be brief." and wire.request["stop_sequences"] == ["END"]
    assert orjson.loads(wire.data) == {"custom_id": anthropic_id("in.jsonl:7"), "params": wire.request}
    with pytest.raises(InvalidRequestLine, match="requires 'max_tokens'"):  # the live rule: no default, no line's
        wire_request(item, settings, {}, "claude-x")
    batch_line = _item({"custom_id": "c", "method": "POST", "url": "/v1/chat/completions",
                        "body": {"model": "m", "messages": [{"role": "user", "content": "x"}]}})
    with pytest.raises(InvalidRequestLine, match="Anthropic's Message Batches"):
        wire_request(batch_line, settings, {"max_tokens": 5}, "m")
    assert anthropic_id("a-B_9") == "a-B_9" and anthropic_id("x" * 65).startswith("sr-")


def test_parts_stay_within_each_providers_limits_and_max_lines():
    def planned(settings: BatchSettings, items: list[tuple[str, dict]]) -> list[tuple[int, str]]:
        planner = Planner(settings, 0)
        for n, (cid, body) in enumerate(items):
            item = parse_item("in.jsonl", n + 1, orjson.dumps({"custom_id": cid, **body}),
                              "anthropic" if settings.provider == "anthropic" else "chat")
            planner.add(n, cid, wire_request(item, settings, {"max_tokens": 5}, "m"))
        return [(p.lines, p.endpoint) for p in planner.finish()]

    chat = {"messages": [{"role": "user", "content": "x"}]}
    openai = BatchSettings.from_config(batch_config(max_lines=15))
    assert planned(openai, [(f"c{i}", chat) for i in range(40)]) == [(15, "/v1/chat/completions")] * 2 + [
        (10, "/v1/chat/completions")]
    unbounded = BatchSettings.from_config(batch_config(max_lines=10**9))
    assert openai.max_lines == 15 and unbounded.max_lines == OPENAI_LIMITS.max_requests
    small = dataclasses.replace(openai, limits=ProviderLimits("small", 1000, 430, 5, 0.5), max_lines=1000)
    mixed = [("a", chat), ("e1", {"method": "POST", "url": "/v1/embeddings", "body": {"input": ["1", "2", "3"]}}),
             ("b", chat), ("e2", {"method": "POST", "url": "/v1/embeddings", "body": {"input": ["4", "5", "6"]}}),
             ("c", chat), ("d", chat), ("e", chat), ("f", chat)]
    # embeddings: 5 inputs a batch at most (3 + 3 > 5); chat: 430 bytes a file, three of its 142-byte lines
    assert planned(small, mixed) == [(3, "/v1/chat/completions"), (1, "/v1/embeddings"), (1, "/v1/embeddings"),
                                     (3, "/v1/chat/completions")]
    anthropic = BatchSettings.from_config(batch_config(api="anthropic"))
    assert anthropic.limits == ANTHROPIC_LIMITS and anthropic.max_lines == 100_000


def test_live_options_are_refused_on_a_batch_run_and_batch_keys_on_a_live_one():
    for changes, word in ((dict(concurrency=(8,)), "--concurrency"), (dict(workers=2), "--workers"),
                          (dict(cache="c.db"), "--cache"), (dict(duration_s=5.0), "--duration"),
                          (dict(timeouts=Timeouts(idle=5.0)), "--idle-timeout"), (dict(push_gateway="http://127.0.0.1:9091"),
                                                               "--push-gateway")):
        with pytest.raises(UsageError, match=f"^{word} is an option of live runs"):
            BatchSettings.from_config(batch_config(**changes))
    assert BatchSettings.from_config(batch_config(resume=True))  # always resumes
    kept = dict(timeouts=Timeouts(connect=5.0, total=60.0), limits=Limits(max_line_bytes=1 << 20))
    assert BatchSettings.from_config(batch_config(**kept))  # what a batch run uses of those tables
    live = RunConfig(inputs=("in.jsonl",), output=OutputConfig("o.jsonl"), batch=BatchConfig(max_lines=5, wait=False))
    with pytest.raises(UsageError, match="^wait, max_lines_per_batch: keys of a batch run; add batch = true"):
        asyncio.run(run_document(live))
    with pytest.raises(UsageError, match="give a file to -o"):
        BatchSettings.from_config(batch_config(path="-"))
