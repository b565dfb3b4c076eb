"""Every API people batch against, in one run: chat, completions, Responses and Anthropic Messages.

Batch lines go to their own `url`; shorthand `{"messages": ...}` lines go where
`--api` says.  The mock serves each API as strictly as the real one (it refuses
a /v1/messages request without `anthropic-version`, say).
"""

from __future__ import annotations

from tests.conftest import read_jsonl, streamrun, write_jsonl


def batch(cid: str, url: str, body: dict) -> dict:
    return {"custom_id": cid, "method": "POST", "url": url, "body": {"model": "mock-model", **body}}


def test_batch_lines_for_every_api_run_as_they_are(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [
        batch("chat", "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6}),
        batch("completion", "/v1/completions", {"prompt": "once", "max_tokens": 6}),
        batch("responses", "/v1/responses", {"input": "hello there", "max_output_tokens": 16}),
        batch("messages", "/v1/messages", {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 6}),
    ])
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock")
    assert res.returncode == 0, res.stderr
    records = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    for cid, r in records.items():
        assert r["status"] == "ok" and r["text"], cid
        assert r["usage"]["completion_tokens"] > 0 and r["metrics"]["ttft_s"] is not None, cid
    assert records["responses"]["request_url"] == "/v1/responses"
    assert records["messages"]["finish_reason"] == "length"  # Anthropic's max_tokens, mapped


def test_api_anthropic_sends_shorthand_lines_to_messages_with_its_key_header(tmp_path, mock_process):
    url = mock_process("--api-key-env", "MOCK_KEY", env={"MOCK_KEY": "anthropic-secret"})
    inp = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": "a", "messages": [{"role": "user", "content": "hi"}]}])
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--base-url", url, "--api", "anthropic",
                    "--max-tokens", "5", "--model", "mock-model", env={"ANTHROPIC_API_KEY": "anthropic-secret",
                                                                       "OPENAI_API_KEY": ""})
    assert res.returncode == 0, res.stderr
    (r,) = read_jsonl(tmp_path / "out.jsonl")
    assert r["request_url"] == "/v1/messages" and r["status"] == "ok"
    assert "anthropic-secret" not in (tmp_path / "out.summary.json").read_text()


def test_api_anthropic_without_max_tokens_is_an_invalid_line_not_a_request(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": "a", "messages": [{"role": "user", "content": "hi"}]}])
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock", "--api", "anthropic")
    (r,) = read_jsonl(tmp_path / "out.jsonl")
    assert res.returncode == 1 and r["status"] == "error" and "max_tokens" in r["error"]["message"]


def test_api_responses_turns_messages_into_input(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"custom_id": "a", "messages": [{"role": "user", "content": "hi"}],
                                               "max_output_tokens": 16}])
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock", "--api", "responses")
    assert res.returncode == 0, res.stderr
    (r,) = read_jsonl(tmp_path / "out.jsonl")
    assert r["request_url"] == "/v1/responses" and r["status"] == "ok" and r["text"]
