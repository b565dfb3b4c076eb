"""Beyond one machine: shards + merge, several endpoints, Batch API output end to end."""

from __future__ import annotations

from collections import Counter

from runner.config.run_config import Stage
from runner.stream.endpoints import EndpointPool
from tests.helpers import chat, read_jsonl, run_rows, streamrun, write_jsonl


def test_four_shards_plus_merge_equal_one_run(tmp_path, mock_process):
    url = mock_process("--ttft", "0", "--tokens-per-s", "0", "--output-tokens", "4")
    rows = [{"custom_id": f"id-{i}", "prompt": f"p{i}"} for i in range(60)] + [{"prompt": "no id here"}]
    inp = write_jsonl(tmp_path / "in.jsonl", rows)
    single = streamrun("run", inp, "-o", tmp_path / "single.jsonl", "--base-url", url)
    assert single.returncode == 0, single.stderr
    outs = []
    for i in range(4):
        # shard 0 and 1 by flag, 2 and 3 as a Kubernetes Indexed Job and a Slurm array would set them
        env = {}
        args = ["--shard", f"{i}/4"] if i < 2 else []
        if i == 2:
            env = {"JOB_COMPLETION_INDEX": "2", "STREAMRUN_SHARD_COUNT": "4"}
        if i == 3:
            env = {"SLURM_ARRAY_TASK_ID": "3", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0"}
        res = streamrun("run", inp, "-o", tmp_path / "shard-{shard}.jsonl", "--base-url", url, *args, env=env)
        assert res.returncode == 0, res.stderr
        outs.append(tmp_path / f"shard-{i}of4.jsonl")
    sizes = [len(read_jsonl(o)) for o in outs]
    assert sum(sizes) == 61 and all(s > 0 for s in sizes)
    merged = streamrun("merge", *outs, "-o", tmp_path / "all.jsonl", "--inputs", inp)
    assert merged.returncode == 0, merged.stderr
    ids = lambda p: Counter(r["custom_id"] for r in read_jsonl(p))
    assert ids(tmp_path / "all.jsonl") == ids(tmp_path / "single.jsonl")
    assert max(ids(tmp_path / "all.jsonl").values()) == 1


def test_missing_shard_count_is_a_usage_error(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "x"}])
    res = streamrun("run", inp, "-o", tmp_path / "o.jsonl", env={"JOB_COMPLETION_INDEX": "1"})
    assert res.returncode == 2 and "STREAMRUN_SHARD_COUNT" in res.stderr


def test_batch_api_file_round_trips_to_batch_output(tmp_path, mock_process):
    # The Batch API file names OpenAI models: the mock serves them as aliases.
    url = mock_process("--ttft", "0", "--tokens-per-s", "0", "--output-tokens", "5",
                       "--alias", "gpt-4o-mini", "--alias", "gpt-3.5-turbo-instruct")
    rows = [
        {"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions",
         "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}},
        {"custom_id": "t1", "method": "POST", "url": "/v1/completions",
         "body": {"model": "gpt-3.5-turbo-instruct", "prompt": "once", "max_tokens": 5}},
    ]
    inp = write_jsonl(tmp_path / "batch_in.jsonl", rows)
    out = tmp_path / "batch_out.jsonl"
    res = streamrun("run", inp, "-o", out, "--base-url", url, "--output-format", "openai-batch")
    assert res.returncode == 0, res.stderr
    lines = {l["custom_id"]: l for l in read_jsonl(out)}
    chat_body = lines["c1"]["response"]["body"]
    assert lines["c1"]["response"]["status_code"] == 200 and lines["c1"]["error"] is None
    assert chat_body["object"] == "chat.completion" and chat_body["choices"][0]["message"]["content"]
    assert chat_body["usage"]["completion_tokens"] == 5
    assert lines["t1"]["response"]["body"]["object"] == "text_completion"
    assert lines["t1"]["response"]["body"]["choices"][0]["text"]
    assert lines["c1"]["streamrun"]["metrics"]["ttft_s"] is not None
    # and back to our format
    back = streamrun("convert", out, "-o", tmp_path / "ours.jsonl", "--to", "streamrun")
    assert back.returncode == 0, back.stderr
    assert {r["custom_id"]: r["status"] for r in read_jsonl(tmp_path / "ours.jsonl")} == {"c1": "ok", "t1": "ok"}
    # a batch-format output resumes like ours
    again = streamrun("run", inp, "-o", out, "--base-url", url, "--output-format", "openai-batch", "--resume")
    assert again.returncode == 0 and len(read_jsonl(out)) == 2


async def test_two_endpoints_one_failing(tmp_path, mock_server):
    good = await mock_server()
    bad = await mock_server(error_rate=1.0)
    rows = [chat(f"r{i}") for i in range(40)]
    code, records = await run_rows(tmp_path, good, rows, base_urls=(bad, good), stages=(Stage(0, 4),))
    assert code == 0 and all(r["status"] == "ok" for r in records)
    used = Counter(r["endpoint"] for r in records)
    assert used == {good: 40}  # every success came from the healthy one
    summary = (tmp_path / "out.summary.json").read_text()
    import json

    eps = {e["url"]: e for e in json.loads(summary)["endpoints"]}
    assert eps[bad]["failures"] >= 1
    assert eps[bad]["requests"] < eps[good]["requests"]  # backed off after failing


def test_pool_prefers_fewest_in_flight_and_backs_off():
    clock = [0.0]
    pool = EndpointPool(["a", "b"], threshold=2, base_backoff=10, now=lambda: clock[0])
    a, b = pool.endpoints
    a.in_flight = 3
    assert pool.acquire() is b  # fewest in flight
    a.in_flight = b.in_flight = 0
    for _ in range(2):  # two consecutive failures: backed off for 10 s
        a.in_flight += 1
        pool.release(a, failed=True)
    assert a.down_until == 10.0
    assert all(pool.acquire() is b for _ in range(5))
    clock[0] = 11.0  # back after its back-off, and now the least busy
    assert pool.acquire() is a
    pool.release(a, failed=False)
    assert a.streak == 0
