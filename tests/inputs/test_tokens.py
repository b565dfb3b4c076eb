"""Tests for runner.inputs.tokens: estimates, chat overhead, cost, optional tiktoken."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import types

import pytest

from runner.inputs import tokens
from runner.inputs.tokens import (
    Pricing,
    cached_prompt_tokens,
    cost,
    count_text_tokens,
    encoding_name_for_model,
    estimate_prompt_tokens,
    reasoning_tokens,
    requested_output_tokens,
)

# No real tiktoken in any test here (conftest.no_tiktoken); the tests that want one install a fake.
pytestmark = pytest.mark.usefixtures("no_tiktoken")


class FakeEncoding:
    """Whitespace "tokenizer": easy to count by hand."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.kwargs: list[dict] = []

    def encode(self, text: str, **kwargs) -> list[int]:
        self.kwargs.append(kwargs)
        return list(range(len(text.split())))


def fake_tiktoken(monkeypatch, fail: bool = False) -> list[str]:
    """Install a fake ``tiktoken`` module; returns the list of get_encoding calls."""
    calls: list[str] = []

    def get_encoding(name: str) -> FakeEncoding:
        calls.append(name)
        if fail:
            raise OSError("offline: cannot download encoding")
        return FakeEncoding(name)

    module = types.ModuleType("tiktoken")
    module.get_encoding = get_encoding  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "tiktoken", module)
    return calls


def cache_encoding(tmp_path, name: str) -> None:
    """Create the file tiktoken would find in its cache for ``name``."""
    url = f"https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
    (tmp_path / hashlib.sha1(url.encode()).hexdigest()).write_bytes(b"")


# -- fallback estimate ------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("abcdefgh", 2), ("x" * 401, 101)],
)
def test_estimate_is_ceil_chars_over_4(text, expected):
    assert count_text_tokens(text) == (expected, "estimate")
    assert count_text_tokens(text, "gpt-4o") == (expected, "estimate")


def test_encoding_by_model():
    for model in ("gpt-4o", "gpt-4o-mini", "o1", "o3-mini", "o4-mini", "gpt-4.1-nano", "gpt-5", "openai/gpt-4o"):
        assert encoding_name_for_model(model) == "o200k_base", model
    for model in (None, "", "gpt-4", "gpt-3.5-turbo", "mock-model", "meta-llama/Llama-3.1-8B", "orca"):
        assert encoding_name_for_model(model) == "cl100k_base", model


# -- prompt estimates -------------------------------------------------------


def test_chat_overhead_by_hand():
    body = {
        "model": "mock",
        "messages": [
            {"role": "system", "content": "abcdefgh"},  # 3 + "system"(2) + 2 = 7
            {"role": "user", "content": "hi"},  # 3 + "user"(1) + 1 = 5
        ],
    }
    assert estimate_prompt_tokens(body, "mock") == 3 + 7 + 5


def test_chat_name_costs_one_extra():
    body = {"messages": [{"role": "user", "name": "bob", "content": "abcd"}]}
    # 3 (reply) + 3 (message) + user(1) + abcd(1) + bob(1) + 1 (name)
    assert estimate_prompt_tokens(body, None) == 10


def test_chat_content_parts_count_text_only():
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "abcd"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 4000}},
                    {"type": "text", "text": "abcdefgh"},
                ],
            }
        ]
    }
    # 3 + 3 + user(1) + 1 + 2
    assert estimate_prompt_tokens(body, None) == 10


def test_chat_null_content_and_tool_calls():
    body = {
        "messages": [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"type": "function", "function": {"name": "get", "arguments": '{"a":1}'}}],
            }
        ]
    }
    # 3 + 3 + assistant(3) + get(1) + '{"a":1}'(2)
    assert estimate_prompt_tokens(body, None) == 12


def test_completions_prompt_forms():
    assert estimate_prompt_tokens({"prompt": "abcdefgh"}, None) == 2
    assert estimate_prompt_tokens({"prompt": ["abcd", "abcdefgh", "a"]}, None) == 1 + 2 + 1
    assert estimate_prompt_tokens({"prompt": [1, 2, 3]}, None) == 3  # pre-tokenized
    assert estimate_prompt_tokens({"prompt": [[1, 2], [3]]}, None) == 3
    assert estimate_prompt_tokens({}, None) == 0


def test_requested_output_tokens_precedence():
    assert requested_output_tokens({"max_completion_tokens": 100, "max_tokens": 50}, 7) == 100
    assert requested_output_tokens({"max_tokens": 50}, 7) == 50
    assert requested_output_tokens({"max_completion_tokens": None, "max_tokens": 50}, 7) == 50
    assert requested_output_tokens({}, 7) == 7
    assert requested_output_tokens({"max_tokens": True}, 7) == 7  # bool is not a count
    assert requested_output_tokens({"max_tokens": 0}, 7) == 0
    assert requested_output_tokens({"max_output_tokens": 40}, 7) == 40  # a Responses request's, translated


# -- cost and usage ---------------------------------------------------------


def test_cost_by_hand():
    pricing = Pricing(input_per_m=2.50, output_per_m=10.00)
    assert cost(1_000_000, 200_000, pricing) == pytest.approx(4.50)
    assert cost(0, 0, pricing) == 0.0
    assert cost(1_000, 500, pricing) == pytest.approx(0.0025 + 0.005)


def test_cost_cached_input():
    pricing = Pricing(input_per_m=2.50, output_per_m=10.00, cached_input_per_m=1.25)
    # 600k uncached * 2.50 + 400k cached * 1.25 = 1.50 + 0.50
    assert cost(1_000_000, 0, pricing, cached_tokens=400_000) == pytest.approx(2.00)
    # Without a cached price, cached tokens cost the input price.
    assert cost(1_000_000, 0, Pricing(2.5, 10), cached_tokens=400_000) == pytest.approx(2.50)
    # cached_tokens can never exceed prompt_tokens.
    assert cost(100, 0, pricing, cached_tokens=10**9) == pytest.approx(100 * 1.25 / 1e6)


def test_reasoning_and_cached_tokens_from_usage():
    usage = {
        "prompt_tokens": 20,
        "completion_tokens": 300,
        "total_tokens": 320,
        "completion_tokens_details": {"reasoning_tokens": 256},
        "prompt_tokens_details": {"cached_tokens": 16},
    }
    assert reasoning_tokens(usage) == 256
    assert cached_prompt_tokens(usage) == 16
    assert reasoning_tokens({"prompt_tokens": 1, "completion_tokens": 2}) == 0
    assert reasoning_tokens({"completion_tokens_details": None}) == 0
    assert reasoning_tokens(None) == 0
    # Reasoning is inside completion_tokens: cost bills 300 output tokens, not 556.
    assert cost(20, 300, Pricing(0, 1_000_000)) == pytest.approx(300)


# -- optional tiktoken --------------------------------------------------------


def test_tiktoken_used_when_encoding_is_cached(monkeypatch, tmp_path):
    calls = fake_tiktoken(monkeypatch)
    cache_encoding(tmp_path, "o200k_base")
    assert count_text_tokens("one two three", "gpt-4o") == (3, "tokenizer")
    assert count_text_tokens("four five", "gpt-4o-mini") == (2, "tokenizer")
    assert calls == ["o200k_base"]  # loaded once
    encoding = tokens._encodings["o200k_base"]
    assert all(kw == {"disallowed_special": ()} for kw in encoding.kwargs)
    # The prompt estimate uses the tokenizer too: 3 + (3 + user(1) + 2) .
    body = {"model": "gpt-4o", "messages": [{"role": "user", "content": "hello world"}]}
    assert estimate_prompt_tokens(body) == 9


def test_tiktoken_not_asked_to_download_uncached_encoding(monkeypatch):
    calls = fake_tiktoken(monkeypatch)
    # cl100k_base is not in the (empty) cache: no download attempt, estimate.
    assert count_text_tokens("one two three", "gpt-4") == (4, "estimate")
    assert count_text_tokens("one two three", "gpt-4") == (4, "estimate")
    assert calls == []


def test_tiktoken_download_allowed_by_env(monkeypatch):
    calls = fake_tiktoken(monkeypatch)
    monkeypatch.setenv("STREAMRUN_TIKTOKEN_DOWNLOAD", "1")
    assert count_text_tokens("one two three", "gpt-4") == (3, "tokenizer")
    assert calls == ["cl100k_base"]


def test_tiktoken_offline_failure_falls_back_once(monkeypatch, tmp_path):
    calls = fake_tiktoken(monkeypatch, fail=True)
    cache_encoding(tmp_path, "o200k_base")
    for _ in range(5):
        assert count_text_tokens("abcdefgh", "gpt-4o") == (2, "estimate")
    assert calls == ["o200k_base"]  # tried once, failure remembered


def test_tiktoken_encode_error_falls_back_for_that_call(monkeypatch, tmp_path):
    fake_tiktoken(monkeypatch)
    cache_encoding(tmp_path, "o200k_base")
    count_text_tokens("warm up", "gpt-4o")

    def boom(text, **kwargs):
        raise ValueError("bad text")

    monkeypatch.setattr(tokens._encodings["o200k_base"], "encode", boom)
    assert count_text_tokens("abcdefgh", "gpt-4o") == (2, "estimate")


def test_import_does_not_import_tiktoken():
    code = "import sys, runner.inputs.tokens, runner.engine.quota; assert 'tiktoken' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
