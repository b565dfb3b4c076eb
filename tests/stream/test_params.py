"""runner/stream/params.py: chat parameters as the Responses API and Anthropic's Messages API take them."""

from __future__ import annotations

import pytest

from runner.stream import protocol_anthropic, protocol_responses
from runner.stream.params import ANTHROPIC, RESPONSES, RULES, RefusedParameter, markdown_table, translate
from runner.stream.paths import InvalidRequestLine
from tests.helpers import ROOT

README = ROOT / "docs" / "other-apis.md"
USER = {"role": "user", "content": "hi"}


def test_the_readme_table_is_the_code_s():
    text = README.read_text()
    start, end = "<!-- params-table:start -->", "<!-- params-table:end -->"
    assert start in text and end in text
    assert text.split(start)[1].split(end)[0].strip() == markdown_table().strip(), \
        "docs/other-apis.md parameter table is stale: paste runner.stream.params.markdown_table() between the markers"


def test_a_synth_line_to_the_responses_api():
    """What `synth` writes (a system prefix, max_tokens) as the Responses API takes it."""
    line = {"input": [{"role": "system", "content": "be brief"}, USER], "max_tokens": 32, "temperature": 0.2}
    body = protocol_responses.build_body(line, defaults={}, model="m", include_usage=True)
    assert body == {"input": line["input"], "max_output_tokens": 32, "temperature": 0.2, "model": "m",
                    "stream": True}


def test_the_apis_own_name_wins_over_the_chat_one():
    assert translate(RESPONSES, {"max_tokens": 5, "max_output_tokens": 40}, line=True) == {"max_output_tokens": 40}
    assert translate(ANTHROPIC, {"stop": "x", "stop_sequences": ["y"]}, line=True) == {"stop_sequences": ["y"]}
    line = protocol_anthropic.build_body({"messages": [USER], "max_completion_tokens": 9},
                                         defaults={"max_tokens": 100}, model="m", include_usage=True)
    assert line["max_tokens"] == 9  # the line's own value, under its API's name, over the run's default


@pytest.mark.parametrize("messages, system, expected", [
    pytest.param([{"role": "system", "content": "s"}, USER], None, "s", id="one-system-message"),
    pytest.param([{"role": "system", "content": "a"}, {"role": "developer", "content": "b"}, USER], None, "a\n\nb",
                 id="system-and-developer"),
    pytest.param([{"role": "system", "content": "b"}, USER], "a", "a\n\nb", id="after-the-line's-own-system"),
    pytest.param([{"role": "system", "content": [{"type": "text", "text": "b"}]}, USER], "a",
                 [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}], id="content-parts-as-blocks"),
])
def test_system_messages_move_to_anthropic_system(messages, system, expected):
    line = {"messages": messages, "max_tokens": 5, **({"system": system} if system is not None else {})}
    body = protocol_anthropic.build_body(line, defaults={}, model="m", include_usage=True)
    assert body["system"] == expected and body["messages"] == [USER]


def test_a_system_prompt_alone_is_refused_for_anthropic():
    with pytest.raises(InvalidRequestLine, match="user message"):
        protocol_anthropic.build_body({"messages": [{"role": "system", "content": "s"}], "max_tokens": 5},
                                      defaults={}, model="m", include_usage=True)


def test_chat_content_parts_become_the_responses_apis():
    line = {"input": [{"role": "user", "content": [{"type": "text", "text": "look"},
                                                   {"type": "image_url", "image_url": {"url": "http://i/x.png",
                                                                                       "detail": "low"}}]},
                      {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
                      {"role": "user", "content": [{"type": "input_text", "text": "native"}]}]}
    body = protocol_responses.build_body(line, defaults={}, model="m", include_usage=True)
    assert body["input"] == [
        {"role": "user", "content": [{"type": "input_text", "text": "look"},
                                     {"type": "input_image", "image_url": "http://i/x.png", "detail": "low"}]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "ok"}]},
        {"role": "user", "content": [{"type": "input_text", "text": "native"}]}]


def test_conversions_to_the_responses_api():
    schema = {"name": "answer", "schema": {"type": "object"}, "strict": True}
    line = {"input": "hi", "response_format": {"type": "json_schema", "json_schema": schema},
            "reasoning_effort": "low", "verbosity": "high", "logprobs": True, "top_logprobs": 3,
            "tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}}}
    assert translate(RESPONSES, line, line=True) == {
        "input": "hi", "top_logprobs": 3, "include": ["message.output_text.logprobs"],
        "text": {"format": {"type": "json_schema", **schema}, "verbosity": "high"}, "reasoning": {"effort": "low"},
        "tools": [{"type": "function", "name": "f", "parameters": {}}],
        "tool_choice": {"type": "function", "name": "f"}}


def test_conversions_to_anthropic_and_its_own_shapes_untouched():
    chat_tool = {"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}
    line = {"messages": [USER], "stop": "END", "user": "u-1", "tools": [chat_tool], "tool_choice": "required",
            "parallel_tool_calls": False}
    assert translate(ANTHROPIC, line, line=True) == {
        "messages": [USER], "stop_sequences": ["END"], "metadata": {"user_id": "u-1"},
        "tools": [{"name": "f", "input_schema": {"type": "object"}, "description": "d"}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": True}}
    native = {"messages": [USER], "tools": [{"name": "g", "input_schema": {"type": "object"}}],
              "tool_choice": {"type": "tool", "name": "g"}, "metadata": {"user_id": "u"}, "service_tier": "auto",
              "top_k": 5, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert translate(ANTHROPIC, native, line=True) == native  # an Anthropic Batch line runs as it is


@pytest.mark.parametrize("api, key, value", [
    (ANTHROPIC, "n", 2), (RESPONSES, "n", 3), (ANTHROPIC, "response_format", {"type": "json_object"}),
    (RESPONSES, "modalities", ["text", "audio"]), (ANTHROPIC, "audio", {"voice": "alloy"}),
    (RESPONSES, "functions", [{"name": "f"}]), (ANTHROPIC, "web_search_options", {}),
])
def test_refused_for_a_line_dropped_with_a_warning_as_a_default(api, key, value):
    with pytest.raises(RefusedParameter, match=repr(key)):
        translate(api, {key: value}, line=True)
    dropped = []
    assert translate(api, {key: value}, line=False, on_drop=lambda k, why: dropped.append((k, why))) == {}
    assert [k for k, _ in dropped] == [key] and key in dropped[0][1]


@pytest.mark.parametrize("api, params", [
    (ANTHROPIC, {"n": 1, "logprobs": False, "top_logprobs": 0, "response_format": {"type": "text"},
                 "stream_options": {"include_usage": True}, "parallel_tool_calls": True, "modalities": ["text"]}),
    (RESPONSES, {"n": 1, "logprobs": False, "stream_options": {"include_usage": True}}),
])
def test_values_that_ask_for_nothing_leave_quietly(api, params):
    dropped = []
    assert translate(api, params, line=True, on_drop=lambda k, why: dropped.append(k)) == {}
    assert dropped == []


def test_every_dropped_parameter_is_told_and_says_why():
    for api, rules in RULES.items():
        for key, rule in rules.items():
            if rule.action != "dropped" or (rule.idle is not None and not rule.why):
                continue
            dropped = []
            value = "x" if key != "metadata" else {"team": "a"}
            assert key not in translate(api, {key: value}, line=True,
                                        on_drop=lambda k, why, dropped=dropped: dropped.append((k, why)))
            assert dropped and dropped[0][0] == key and rule.why in dropped[0][1], (api, key)


def test_a_refused_line_parameter_is_an_invalid_line():
    with pytest.raises(InvalidRequestLine, match="'n'"):
        protocol_anthropic.build_body({"messages": [USER], "max_tokens": 5, "n": 2}, defaults={}, model="m",
                                      include_usage=True)
    with pytest.raises(InvalidRequestLine, match="'audio'"):
        protocol_responses.build_body({"input": "x", "audio": {}}, defaults={}, model="m", include_usage=True)
