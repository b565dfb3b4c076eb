"""runner.cli.estimate: `streamrun estimate` counts prompts, tokens and the cost range without sending."""

from __future__ import annotations

import orjson
import pytest

from runner.cli.estimate import estimate_inputs
from tests.helpers import streamrun, write_jsonl

pytestmark = pytest.mark.usefixtures("no_tiktoken")


def test_estimate_counts_without_sending(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [
        {"messages": [{"role": "user", "content": "x" * 400}], "max_tokens": 100},
        {"prompt": "y" * 40},
        "{bad",
    ])
    res = streamrun("estimate", inp, "--price-input", "1", "--price-output", "2", "--default-output-tokens", "50",
                    "--json", env={"OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
                                   "TIKTOKEN_CACHE_DIR": str(tmp_path / "no-encodings")})
    assert res.returncode == 0, res.stderr
    doc = orjson.loads(res.stdout)
    assert doc["requests"] == 2 and doc["invalid"] == 1 and doc["tokenizer"] == "estimate"
    # chat: 3 + (3 + 1 role + 100 content) = 107 (chars/4, cookbook overheads); completion: 10
    assert doc["prompt_tokens"] == 117 and doc["max_output_tokens"] == 150
    assert doc["cost_usd_min"] == 117 / 1e6 and doc["cost_usd_max"] == (117 + 300) / 1e6


def test_text_output_and_missing_input(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "y" * 40, "max_tokens": 5}])
    res = streamrun("estimate", inp, env={"TIKTOKEN_CACHE_DIR": str(tmp_path / "no-encodings")})
    assert res.returncode == 0, res.stderr
    assert "1 requests (0 invalid lines)" in res.stdout and "~10" in res.stdout and "at most 5" in res.stdout
    assert "cost" not in res.stdout  # no prices, no cost line
    missing = streamrun("estimate", tmp_path / "nope.jsonl")
    assert missing.returncode == 2 and "nope.jsonl: no such input file" in missing.stderr


def test_run_defaults_and_output_precedence(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [
        {"prompt": "y" * 40},  # takes the run's max_tokens
        {"prompt": "y" * 40, "max_tokens": 7},  # its own wins
        {"messages": [{"role": "user", "content": "hi"}], "max_completion_tokens": 3, "max_tokens": 9},
        {"custom_id": "no-fields"},
    ])
    counts = estimate_inputs([str(inp)], defaults={"max_tokens": 20}, model=None, default_output=256)
    assert counts == {"requests": 3, "invalid": 1, "prompt_tokens": 10 + 10 + 3 + (3 + 1 + 1),
                      "max_output_tokens": 20 + 7 + 3}
    bare = estimate_inputs([str(inp)], defaults={}, model=None, default_output=256)
    assert bare["max_output_tokens"] == 256 + 7 + 3


def test_the_batch_price_is_half_the_live_price(tmp_path):
    """`streamrun batch` goes through OpenAI's Batch API or Anthropic's Message Batches, both at 50 %."""
    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "y" * 40, "max_tokens": 10}])
    env = {"TIKTOKEN_CACHE_DIR": str(tmp_path / "no-encodings")}
    res = streamrun("estimate", inp, "--price-input", "2", "--price-output", "8", "--json", env=env)
    assert res.returncode == 0, res.stderr
    doc = orjson.loads(res.stdout)
    assert doc["batch_cost_usd_min"] == doc["cost_usd_min"] / 2 == 10 * 2 / 1e6 / 2
    assert doc["batch_cost_usd_max"] == doc["cost_usd_max"] / 2 == (10 * 2 + 10 * 8) / 1e6 / 2
    text = streamrun("estimate", inp, "--price-input", "2", "--price-output", "8", env=env)
    assert "batch cost        $0.0000 to $0.0001 (streamrun batch: 50% of the live price" in text.stdout
