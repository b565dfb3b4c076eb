"""--retry-finish-reason retries replies that ended for those reasons; TTFAT is stamped at the first answer text."""

from __future__ import annotations

import pytest

from runner.engine.send import Sender
from runner.stream.errors import UnwantedFinish
from runner.stream.protocol import StreamState
from tests.helpers import run_rows


async def test_a_reply_cut_by_length_is_retried_then_kept_as_an_error_with_its_text(tmp_path, mock_server):
    url = await mock_server()
    rows = [{"custom_id": "a", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}]
    code, (r,) = await run_rows(tmp_path, url, rows, retry_finish_reasons=("length", "content_filter"))
    assert code == 1 and r["status"] == "error" and r["error"]["type"] == "unwanted_finish_reason"
    assert r["attempts"] == 4 and r["text"] and r["finish_reason"] == "length"  # FAST_RETRY's 4 attempts
    code, (r,) = await run_rows(tmp_path, url, rows, retry_finish_reasons=("content_filter",))
    assert code == 0 and r["status"] == "ok" and r["attempts"] == 1


def test_only_the_named_reasons_are_retried():
    fake = type("F", (), {"_retry_finish": frozenset({"length"})})()
    Sender._check_finish(fake, StreamState(finish_reason="stop"))
    with pytest.raises(UnwantedFinish) as err:
        Sender._check_finish(fake, StreamState(finish_reason="length"))
    assert err.value.retryable and err.value.partial.finish_reason == "length"


async def test_ttfat_is_the_first_answer_text_after_the_reasoning(tmp_path, mock_server):
    url = await mock_server()
    rows = [{"custom_id": "plain", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            {"custom_id": "thinks", "method": "POST", "url": "/v1/responses",
             "body": {"model": "mock-model", "input": "hi", "max_output_tokens": 40,
                      "reasoning": {"summary": "auto"}, "mock": {"reasoning_tokens": 12}}}]
    code, records = await run_rows(tmp_path, url, rows)
    assert code == 0
    by = {r["custom_id"]: r["metrics"] for r in records}
    assert by["plain"]["ttfat_s"] == by["plain"]["ttft_s"]  # no reasoning: the same read
    assert by["thinks"]["ttfat_s"] >= by["thinks"]["ttft_s"] and by["thinks"]["ttfat_s"] is not None
    assert by["thinks"]["reasoning_tokens"] == 12
