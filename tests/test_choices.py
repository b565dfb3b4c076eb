"""Every choice of an n > 1 reply and its logprobs, end to end against the mock.

The oracle is the mock's own non-streamed answer to the same request: the
record assembled from the interleaved stream, and the Batch body built from
it, must hold what the non-streamed API returns (the protocol tests split
the stream at every chunk boundary; here whole runs go through the client,
the engine and the writers).
"""

from __future__ import annotations

import aiohttp
import pytest
from click.testing import CliRunner

from runner.cli.convert import convert_command
from runner.outputs.batch import decode_batch
from runner.record import decode_native
from tests.helpers import by_id, read_jsonl, run_rows

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


def line(path: str, cid: str, **params) -> dict:
    """An input line for either endpoint (Batch form, so the path is explicit)."""
    body = {"messages": [{"role": "user", "content": f"tell me {cid}"}]} if path == CHAT else {"prompt": f"tell {cid}"}
    return {"custom_id": cid, "method": "POST", "url": path, "body": {**body, "max_tokens": 7, **params}}


def logprob_params(path: str) -> dict:
    return {"logprobs": True, "top_logprobs": 2} if path == CHAT else {"logprobs": 2}


async def non_streamed(url: str, row: dict) -> dict:
    """The mock's answer to the same request without streaming: the oracle."""
    body = {**row["body"], "model": "mock-model", "stream": False}
    async with aiohttp.ClientSession() as session:
        async with session.post(url + row["url"].removeprefix("/v1"), json=body) as resp:
            assert resp.status == 200, await resp.text()
            return await resp.json()


def choice_text(path: str, choice: dict) -> str:
    return choice["message"]["content"] if path == CHAT else choice["text"]


def choice_logprobs(path: str, choice: dict):
    """A non-streamed choice's logprobs as a record keeps them (chat: the entries)."""
    lp = choice["logprobs"]
    return lp["content"] if path == CHAT and lp is not None else lp


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
@pytest.mark.parametrize("tokens_per_chunk", [1, 3])
async def test_every_choice_and_its_logprobs(tmp_path, mock_server, path, tokens_per_chunk):
    url = await mock_server(tokens_per_chunk=tokens_per_chunk)
    rows = [line(path, "n2", n=2, **logprob_params(path)), line(path, "n3", n=3),
            line(path, "one", **logprob_params(path)), line(path, "plain")]
    code, records = await run_rows(tmp_path, url, rows)
    assert code == 0
    got = by_id(records)
    for row in rows:
        r, want = got[row["custom_id"]], await non_streamed(url, row)
        assert r["status"] == "ok", r["error"]
        expected = [{"index": c["index"], "text": choice_text(path, c), "reasoning": None, "tool_calls": None,
                     "finish_reason": c["finish_reason"], "logprobs": choice_logprobs(path, c)}
                    for c in want["choices"]]
        if len(expected) > 1:
            assert r["choices"] == expected
        else:
            assert r["choices"] is None
        first = expected[0]
        assert (r["text"], r["finish_reason"], r["logprobs"]) == (first["text"], first["finish_reason"],
                                                                   first["logprobs"])
        # usage counts every choice, and the record keeps it
        assert r["usage"]["completion_tokens"] == want["usage"]["completion_tokens"] == r["metrics"]["output_tokens"]
    n2 = got["n2"]
    assert len(n2["choices"]) == 2 and n2["choices"][0]["text"] != n2["choices"][1]["text"]
    assert n2["choices"][1]["logprobs"], "choice 1 has its own logprobs"
    assert got["n3"]["logprobs"] is None and all(c["logprobs"] is None for c in got["n3"]["choices"])
    assert got["plain"]["logprobs"] is None
    lp = n2["logprobs"]
    if path == CHAT:
        assert [e["token"] for e in lp] and "".join(e["token"] for e in lp) == n2["text"]
        assert all(len(e["top_logprobs"]) == 2 for e in lp)
    else:
        assert list(lp) == ["tokens", "token_logprobs", "top_logprobs", "text_offset"]
        assert "".join(lp["tokens"]) == n2["text"] and len(set(map(len, lp.values()))) == 1


async def test_without_usage_the_events_of_every_choice_are_counted(tmp_path, mock_server, no_tiktoken):
    url = await mock_server()
    row = line(CHAT, "a", n=3)
    code, (r,) = await run_rows(tmp_path, url, [row], include_usage=False)
    assert code == 0 and r["usage"] is None
    want = await non_streamed(url, row)  # one token per event, each event one choice's
    assert (r["metrics"]["output_tokens"], r["metrics"]["output_tokens_source"]) == (
        want["usage"]["completion_tokens"], "events")


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
async def test_drop_logprobs_keeps_the_text_and_drops_the_logprobs(tmp_path, mock_server, path):
    url = await mock_server()
    code, (r,) = await run_rows(tmp_path, url, [line(path, "a", n=2, **logprob_params(path))], drop_logprobs=True)
    assert code == 0 and r["logprobs"] is None
    assert [c["logprobs"] for c in r["choices"]] == [None, None]
    assert all(c["text"] for c in r["choices"])


@pytest.mark.parametrize("path", [CHAT, COMPLETIONS])
async def test_batch_output_holds_every_choice_and_converts_back(tmp_path, mock_server, path):
    url = await mock_server(tokens_per_chunk=2)
    row = line(path, "a", n=2, **logprob_params(path))
    code, (batch,) = await run_rows(tmp_path, url, [row], format="openai-batch")
    assert code == 0
    body, want = batch["response"]["body"], await non_streamed(url, row)
    assert body["object"] == want["object"] and len(body["choices"]) == 2
    for got, exp in zip(body["choices"], want["choices"], strict=True):
        assert got["index"] == exp["index"] and got["finish_reason"] == exp["finish_reason"]
        assert choice_text(path, got) == choice_text(path, exp)
        if path == CHAT:  # the API's {"content": [...], "refusal": null}; we write no refusal
            assert got["logprobs"] == {"content": exp["logprobs"]["content"]}
        else:
            assert got["logprobs"] == exp["logprobs"]
    assert body["usage"]["completion_tokens"] == want["usage"]["completion_tokens"]

    # convert round trip: Batch -> streamrun -> Batch, byte for byte; choices and logprobs restored
    src = tmp_path / "out.jsonl"
    native, again = tmp_path / "native.jsonl", tmp_path / "again.jsonl"
    runner = CliRunner()
    assert runner.invoke(convert_command, [str(src), "-o", str(native), "--to", "streamrun"]).exit_code == 0
    assert runner.invoke(convert_command, [str(native), "-o", str(again), "--to", "openai-batch"]).exit_code == 0
    assert again.read_bytes() == src.read_bytes()
    (rec,) = read_jsonl(native)
    assert [c["text"] for c in rec["choices"]] == [choice_text(path, c) for c in want["choices"]]
    assert rec["logprobs"] == rec["choices"][0]["logprobs"] is not None
    assert decode_native(rec) == decode_batch(batch)
