"""The mock's Batch APIs (runner/mock/batches.py, message_batches.py, batch_jobs.py), read with the official
`openai` and `anthropic` SDKs: every response parses; what the real APIs refuse, the mock refuses; a batch
moves on by polls, never by the machine's speed, and expires on the fault."""

from __future__ import annotations

import json
import time

import orjson
import pytest
from anthropic import AsyncAnthropic
from openai import AsyncOpenAI

from tests.helpers import HANG_GUARD_S


async def test_the_mock_batch_api_parses_with_the_openai_sdk(mock_server):
    url = await mock_server(batch_delay=0, batch_polls=2)  # a batch ends at its second retrieval
    client = AsyncOpenAI(base_url=url, api_key="sk-test", max_retries=0)
    lines = [{"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "mock-model", "max_tokens": 4, "messages": [{"role": "user", "content": f"hi {i}"}],
                       **({"mock": {"key": "sdk", "faults": ["400"]}} if i == 1 else {})}} for i in range(3)]
    data = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    f = await client.files.create(file=("in.jsonl", data), purpose="batch")
    assert f.purpose == "batch" and f.bytes == len(data) and f.filename == "in.jsonl"
    b = await client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                                    metadata={"run": "x"})
    assert b.status == "validating" and b.metadata == {"run": "x"}
    for _ in range(1000):
        b = await client.batches.retrieve(b.id)
        if b.status == "completed":
            break
    assert b.request_counts.total == 3 and b.request_counts.completed == 2 and b.request_counts.failed == 1
    output = [json.loads(line) for line in (await client.files.content(b.output_file_id)).text.splitlines()]
    errors = [json.loads(line) for line in (await client.files.content(b.error_file_id)).text.splitlines()]
    assert [o["custom_id"] for o in output] == ["r0", "r2"] and output[0]["response"]["status_code"] == 200
    assert output[0]["response"]["body"]["object"] == "chat.completion"
    assert errors[0]["custom_id"] == "r1" and errors[0]["response"]["status_code"] == 400
    assert [x.id for x in (await client.batches.list()).data] == [b.id]
    assert [x.id for x in (await client.files.list(purpose="batch")).data] == [f.id]
    c = await client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    c = await client.batches.cancel(c.id)
    assert c.status == "cancelling"
    for _ in range(1000):
        c = await client.batches.retrieve(c.id)
        if c.status == "cancelled":
            break
    assert c.status == "cancelled" and c.cancelled_at


async def test_the_mock_message_batches_parse_with_the_anthropic_sdk(mock_server):
    url = await mock_server(batch_delay=0, batch_polls=2)  # a batch ends at its second retrieval
    client = AsyncAnthropic(base_url=url.removesuffix("/v1"), api_key="sk-ant", max_retries=0)
    requests = [{"custom_id": f"q{i}", "params": {"model": "mock-model", "max_tokens": 4,
                                                  "messages": [{"role": "user", "content": f"hi {i}"}],
                                                  **({"mock": {"key": "a", "faults": ["400"]}} if i == 1 else {})}}
                for i in range(3)]
    b = await client.messages.batches.create(requests=requests)
    assert b.processing_status == "in_progress" and b.request_counts.processing == 3 and b.results_url is None
    for _ in range(1000):
        b = await client.messages.batches.retrieve(b.id)
        if b.processing_status == "ended":
            break
    assert b.request_counts.succeeded == 2 and b.request_counts.errored == 1 and b.results_url
    results = {r.custom_id: r.result async for r in await client.messages.batches.results(b.id)}
    assert results["q0"].type == "succeeded" and results["q0"].message.stop_reason == "max_tokens"
    assert results["q1"].type == "errored" and results["q1"].error.error.type == "invalid_request_error"
    assert [x.id for x in (await client.messages.batches.list()).data] == [b.id]
    c = await client.messages.batches.create(requests=requests[:1])
    c = await client.messages.batches.cancel(c.id)
    assert c.processing_status in ("canceling", "ended") and c.cancel_initiated_at
    for _ in range(1000):
        c = await client.messages.batches.retrieve(c.id)
        if c.processing_status == "ended":
            break
    assert c.request_counts.canceled == 1
    assert [r.result.type async for r in await client.messages.batches.results(c.id)] == ["canceled"]


async def test_the_mock_refuses_what_the_batch_apis_refuse(mock_server):
    import aiohttp

    url = await mock_server(batch_delay=0)
    openai = AsyncOpenAI(base_url=url, api_key="x", max_retries=0)
    from openai import BadRequestError, NotFoundError

    with pytest.raises(BadRequestError, match="Must be .jsonl"):
        await openai.files.create(file=("in.txt", b"{}\n"), purpose="batch")
    good = await openai.files.create(file=("in.jsonl", b"{}\n"), purpose="batch")
    with pytest.raises(BadRequestError, match="Unrecognized request argument supplied: priority"):
        await openai.batches.create(input_file_id=good.id, endpoint="/v1/chat/completions", completion_window="24h",
                                    extra_body={"priority": 1})
    with pytest.raises(BadRequestError, match="completion_window"):
        await openai.batches.create(input_file_id=good.id, endpoint="/v1/chat/completions", completion_window="1h")
    with pytest.raises(NotFoundError):
        await openai.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")

    async def failed_with(lines: list) -> list:
        data = b"".join((line if isinstance(line, bytes) else orjson.dumps(line)) + b"\n" for line in lines)
        f = await openai.files.create(file=("x.jsonl", data), purpose="batch")
        b = await openai.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        b = await openai.batches.retrieve(b.id)
        assert b.status == "failed" and b.errors is not None
        return [(e.code, e.line) for e in b.errors.data]

    body = {"model": "mock-model", "messages": [{"role": "user", "content": "x"}]}
    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": body}
    assert await failed_with([line, {**line, "url": "/v1/completions", "custom_id": "b"}]) == [("mismatched_url", 2)]
    assert await failed_with([line, line]) == [("duplicate_custom_id", 2)]
    assert await failed_with([line, {**line, "custom_id": "b", "body": {**body, "model": "m2"}}]) == [
        ("mixed_models", 0)]
    assert await failed_with([b"not json", {**line, "extra": 1}]) == [("invalid_json_line", 1), ("invalid_request", 2)]

    headers = {"x-api-key": "x", "anthropic-version": "2023-06-01"}
    params = {"model": "mock-model", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]}
    async with aiohttp.ClientSession() as session:
        async def create(body, hdrs=headers):
            async with session.post(url + "/messages/batches", json=body, headers=hdrs) as resp:
                return resp.status, await resp.json()

        assert (await create({"requests": [{"custom_id": "in.jsonl:3", "params": params}]}))[0] == 400
        assert (await create({"requests": [{"custom_id": "a", "params": params}] * 2}))[0] == 400
        assert (await create({"requests": []}))[0] == 400
        status, error = await create({"requests": [{"custom_id": "a", "params": params}]}, {"x-api-key": "x"})
        assert status == 400 and error["error"]["type"] == "invalid_request_error"
        status, created = await create({"requests": [{"custom_id": "a", "params": {**params, "stream": True}}]})
        assert status == 200
        async with session.get(f"{url}/messages/batches/{created['id']}/results", headers=headers) as resp:
            assert resp.status in (200, 404)  # 404 until it has ended


async def test_the_mock_refuses_a_nested_multipart_upload(mock_server):
    """A form part that is itself multipart is no field: 400, as any malformed upload, not a server error."""
    import aiohttp

    url = await mock_server(batch_delay=0)
    inner = aiohttp.MultipartWriter("mixed")
    inner.append(b"{}\n", {"Content-Type": "application/octet-stream"})
    form = aiohttp.MultipartWriter("form-data")
    form.append_form([("purpose", "batch")])
    form.append(inner).set_content_disposition("form-data", name="file", filename="in.jsonl")
    async with aiohttp.ClientSession() as session:
        async with session.post(url + "/files", data=form, headers={"Authorization": "Bearer x"}) as resp:
            assert resp.status == 400, await resp.text()
            assert "nested multipart" in (await resp.json())["error"]["message"]


async def test_the_mock_moves_a_batch_on_by_polls_and_expires_it(mock_server):
    url = await mock_server(batch_delay=0, batch_polls=3, batch_expire_at=0.5)
    openai = AsyncOpenAI(base_url=url, api_key="x", max_retries=0)
    body = {"model": "mock-model", "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]}
    data = b"".join(orjson.dumps({"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions",
                                  "body": body}) + b"\n" for i in range(4))
    f = await openai.files.create(file=("x.jsonl", data), purpose="batch")
    b = await openai.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    seen = [(await openai.batches.retrieve(b.id)).status for _ in range(2)]
    assert seen == ["in_progress", "in_progress"]
    deadline = time.monotonic() + HANG_GUARD_S
    while (b := await openai.batches.retrieve(b.id)).status == "in_progress":
        assert time.monotonic() < deadline, "hang guard"
    assert b.status == "expired" and b.request_counts.completed == 2 and b.request_counts.failed == 2
    errors = [json.loads(x) for x in (await openai.files.content(b.error_file_id)).text.splitlines()]
    assert [(e["custom_id"], e["error"]["code"]) for e in errors] == [("r2", "batch_expired"), ("r3", "batch_expired")]
