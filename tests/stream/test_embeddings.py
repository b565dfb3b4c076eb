"""Embeddings lines in Batch files: one POST, the vectors in the record, e2e only, usage kept."""

from __future__ import annotations

import pytest

from runner.mock.embeddings import vector
from runner.stream.embeddings import parse
from runner.stream.errors import MalformedResponse
from tests.helpers import read_jsonl, streamrun, write_jsonl


def line(cid: str, body: dict) -> dict:
    return {"custom_id": cid, "method": "POST", "url": "/v1/embeddings", "body": {"model": "mock-model", **body}}


def test_embeddings_lines_run_beside_chat_lines(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [
        line("one", {"input": "the cat"}),
        line("many", {"input": ["a", "bb", "ccc"], "dimensions": 4}),
        {"custom_id": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3},
        line("unknown-key", {"input": "x", "temperature": 1}),
    ])
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock")
    records = {r["custom_id"]: r for r in read_jsonl(tmp_path / "out.jsonl")}
    assert res.returncode == 1, res.stderr  # the line the API refuses
    one, many = records["one"], records["many"]
    assert one["status"] == "ok" and one["embedding"] == vector("the cat", 8) and one["embeddings"] is None
    assert many["embeddings"] == [vector(t, 4) for t in ("a", "bb", "ccc")] and many["embedding"] is None
    assert one["request_url"] == "/v1/embeddings" and one["usage"]["prompt_tokens"] >= 1
    m = one["metrics"]
    opened = [r["metrics"]["connect_s"] for r in records.values() if r["metrics"]["connect_s"] is not None]
    assert opened  # the first request opened the connection and timed it, embeddings or not
    assert m["e2e_s"] > 0 and m["ttft_s"] is None and m["itl_s"] == [] and m["output_tokens"] is None
    assert records["chat"]["status"] == "ok" and records["chat"]["embedding"] is None
    bad = records["unknown-key"]
    assert bad["error"]["status_code"] == 400 and bad["attempts"] == 1  # a 400 is not retried


def test_an_embeddings_line_without_input_is_invalid_before_sending(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [line("x", {"input": []})])
    streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--mock")
    (r,) = read_jsonl(tmp_path / "out.jsonl")
    assert r["error"]["type"] == "invalid_input" and "in.jsonl:1" in r["error"]["message"]


def test_vectors_come_back_in_input_order_whatever_the_server_order():
    raw = (b'{"data": [{"index": 1, "embedding": [2.0]}, {"index": 0, "embedding": [1, 0.5]}],'
           b' "model": "m", "usage": {"prompt_tokens": 2, "total_tokens": 2}}')
    result = parse(raw)
    assert result.vectors == [[1, 0.5], [2.0]] and result.model == "m" and result.usage["total_tokens"] == 2


@pytest.mark.parametrize("raw", [
    b"not json", b"[]", b'{"data": []}', b'{"data": [{"embedding": "AAAA"}]}',  # base64: ask for floats
    b'{"data": [{"embedding": [1, "x"]}]}', b'{"data": [{"embedding": [1]}], "usage": {"prompt_tokens": -1}}',
])
def test_malformed_embeddings_answers_are_typed_errors(raw):
    with pytest.raises(MalformedResponse):
        parse(raw)


async def test_the_mock_refuses_an_embeddings_request_without_its_key(mock_server):
    import aiohttp

    url = await mock_server(api_key="sk-mock")
    body = {"model": "mock-model", "input": "x"}
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/embeddings", json=body) as resp:
            assert resp.status == 401 and (await resp.json())["error"]["code"] == "invalid_api_key"
        async with session.post(url + "/embeddings", json=body, headers={"Authorization": "Bearer sk-mock"}) as resp:
            assert resp.status == 200 and len((await resp.json())["data"][0]["embedding"]) == 8
