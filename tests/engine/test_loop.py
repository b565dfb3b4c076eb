"""End-to-end runs against the in-process mock: records, retries, timeouts, bad lines, connection timing."""

from __future__ import annotations

import shutil

import orjson
import pytest

from runner.config.run_config import Stage
from runner.stream.config import RetryPolicy, Timeouts
from tests.helpers import FAST_RETRY, ROOT, by_id, chat, run_rows

SAMPLE = ROOT / "sample_inputs" / "prompts.jsonl"


async def test_sample_inputs_every_record_ok(tmp_path, mock_server):
    url = await mock_server(ttft=0.01, tokens_per_s=2000)
    local = tmp_path / "prompts.jsonl"
    shutil.copy(SAMPLE, local)
    code, records = await run_rows(tmp_path, url, local)
    lines = [l for l in SAMPLE.read_text().splitlines() if l.strip()]
    assert code == 0
    assert len(records) == len(lines)
    assert len({r["custom_id"] for r in records}) == len(lines)
    assert "prompts.jsonl:4" in by_id(records)  # the line without custom_id
    for r in records:
        m = r["metrics"]
        assert r["status"] == "ok" and r["error"] is None and r["attempts"] == 1
        assert r["text"] and r["finish_reason"] in ("stop", "length")
        assert r["usage"]["completion_tokens"] == m["output_tokens"] and m["output_tokens_source"] == "usage"
        assert m["ttft_s"] >= 0.01 and m["ttfb_s"] <= m["ttft_s"] <= m["e2e_s"]
        assert len(m["itl_s"]) == r["usage"]["completion_tokens"] - 1
        assert m["tpot_s"] is not None and m["started_at"].endswith("+00:00")
        assert r["source"]["file"].endswith("prompts.jsonl") and r["source"]["line"] >= 1
    assert by_id(records)["complete-1"]["request_url"] == "/v1/completions"
    assert by_id(records)["summary-1"]["usage"]["completion_tokens"] == 48  # the line's max_tokens


@pytest.mark.parametrize("faults, attempts", [
    (["429", "ok"], 2),
    (["500", "500", "ok"], 3),
    (["drop", "ok"], 2),
    (["error_event", "ok"], 2),
    (["503", "drop", "500", "ok"], 4),
])
async def test_retried_then_ok(tmp_path, mock_server, faults, attempts):
    url = await mock_server()
    code, records = await run_rows(tmp_path, url, [chat("a", {"key": f"k{faults}", "faults": faults,
                                                             "retry_after": 0})])
    (r,) = records
    assert (code, r["status"], r["attempts"]) == (0, "ok", attempts)
    assert r["metrics"]["ttft_s"] is not None and r["text"]


async def test_400_is_not_retried(tmp_path, mock_server):
    url = await mock_server()
    code, (r,) = await run_rows(tmp_path, url, [chat("a", {"key": "k400", "faults": ["400", "ok"]})])
    assert code == 1 and r["status"] == "error" and r["attempts"] == 1
    assert r["error"]["type"] == "http_error" and r["error"]["status_code"] == 400


async def test_attempts_exhausted_keeps_last_error_and_partial_text(tmp_path, mock_server):
    url = await mock_server()
    code, (r,) = await run_rows(tmp_path, url, [chat("a", {"key": "kee", "faults": ["error_event"] * 9})])
    assert code == 1 and r["attempts"] == FAST_RETRY.max_attempts
    assert r["error"]["type"] == "stream_error" and "server_error" in r["error"]["message"]
    assert r["text"]  # the partial text of the last attempt is kept


async def test_stream_without_done_is_ok(tmp_path, mock_server):
    url = await mock_server()
    code, (r,) = await run_rows(tmp_path, url, [chat("a", {"key": "knd", "faults": ["no_done"]})])
    assert code == 0 and r["status"] == "ok" and r["attempts"] == 1


async def test_idle_timeout_is_a_timeout_error(tmp_path, mock_server):
    url = await mock_server()
    code, (r,) = await run_rows(tmp_path, url, [chat("a", {"key": "kst", "faults": ["stall"]})],
                                timeouts=Timeouts(connect=5, first_byte=5, idle=0.2),
                                retry=RetryPolicy(max_attempts=1))
    assert code == 1 and r["error"]["type"] == "timeout" and "idle" in r["error"]["message"]
    assert r["metrics"]["ttfb_s"] is not None  # the role chunk came, then nothing


async def test_connection_refused_is_connect_error(tmp_path, mock_server):
    """In a run that reached a server (the live replica), a prompt that could not connect is a connect_error.

    (A run that never connected writes nothing: tests/test_misconfig.py.)
    """
    url = await mock_server()
    code, records = await run_rows(tmp_path, url, [chat("a"), chat("b")], base_urls=(url, "http://127.0.0.1:9/v1"),
                                   stages=(Stage(0, 1),), retry=RetryPolicy(max_attempts=1))
    r = by_id(records)["a"]  # the pool sends the first request to the second URL, the closed port
    assert code == 1 and r["error"]["type"] == "connect_error" and r["attempts"] == 1
    assert by_id(records)["b"]["status"] == "ok"


async def test_bad_lines_get_invalid_input_records_and_run_goes_on(tmp_path, mock_server, caplog):
    url = await mock_server()
    rows = [chat("good-1"), "{not json", "[1, 2]", '{"custom_id": "nofields", "temperature": 1}', "",
            chat("good-2")]
    code, records = await run_rows(tmp_path, url, rows)
    recs = by_id(records)
    assert code == 1 and len(records) == 5  # the blank line is not an input
    assert recs["good-1"]["status"] == recs["good-2"]["status"] == "ok"
    for cid, line in (("in.jsonl:2", 2), ("in.jsonl:3", 3), ("nofields", 4)):
        err = recs[cid]["error"]
        assert err["type"] == "invalid_input" and f"in.jsonl:{line}" in err["message"]
        assert recs[cid]["source"]["line"] == line


async def test_duplicate_ids_stop_before_sending(tmp_path, mock_server):
    from runner.errors import UsageError

    url = await mock_server()
    with pytest.raises(UsageError, match=r"'x' at .*in.jsonl:1 and .*in.jsonl:3"):
        await run_rows(tmp_path, url, [chat("x"), chat("y"), chat("x")])
    assert not (tmp_path / "out.jsonl").exists() or not (tmp_path / "out.jsonl").read_text()


async def test_usage_missing_counts_events(tmp_path, mock_server):
    url = await mock_server()
    code, (r,) = await run_rows(tmp_path, url, [chat("a", max_tokens=5)], include_usage=False)
    assert r["usage"] is None
    assert r["metrics"]["output_tokens"] == 5 and r["metrics"]["output_tokens_source"] == "events"


# ---------------------------------------------------------------- connect_s (the session's connection trace)


async def test_connect_s_on_a_new_connection_only(tmp_path, mock_server):
    """c=1: the first request opens the connection, the others reuse it (null)."""
    url = await mock_server()
    code, records = await run_rows(tmp_path, url, [chat(f"r{i}") for i in range(5)], stages=(Stage(0, 1),))
    assert code == 0
    connects = [r["metrics"]["connect_s"] for r in records]  # c=1: file order is send order
    assert connects[0] is not None and 0 < connects[0] < records[0]["metrics"]["ttft_s"]
    assert connects[1:] == [None] * 4
    summary = orjson.loads((tmp_path / "out.summary.json").read_bytes())["summary"]
    assert summary["counts"]["connections_opened"] == 1 and summary["metrics"]["connect_s"]["count"] == 1


async def test_one_connection_per_concurrency_slot(tmp_path, mock_server):
    url = await mock_server()
    code, records = await run_rows(tmp_path, url, [chat(f"r{i}") for i in range(12)], stages=(Stage(0, 3),))
    assert code == 0
    opened = [r["metrics"]["connect_s"] for r in records if r["metrics"]["connect_s"] is not None]
    assert len(opened) == 3 and all(c > 0 for c in opened)


async def test_a_retry_after_a_cut_connection_opens_a_new_one(tmp_path, mock_server):
    url = await mock_server()
    rows = [chat("first"), chat("cut", {"key": "kcut", "faults": ["drop", "ok"]})]
    code, records = await run_rows(tmp_path, url, rows, stages=(Stage(0, 1),))
    assert code == 0
    r = by_id(records)["cut"]
    assert r["attempts"] == 2 and r["metrics"]["connect_s"] is not None  # the metrics are the last attempt's


async def test_the_engine_is_built_in_one_step_and_runs_each_load_it_is_given(mock_server):
    """Everything the engine works with is given when it is built (nothing is set on it afterwards); `run`
    is given the load, so one engine can run a whole load or, as a worker does, one share after another."""
    from runner.config.run_config import ChecksConfig, LoadConfig, RequestConfig, TransportConfig
    from runner.engine.answers import Answers
    from runner.engine.hooks import EngineHooks
    from runner.engine.loop import Engine
    from runner.inputs.items import parse_item
    from runner.outputs.writer import Prior
    from runner.stream.headers import OPENAI, resolve_credentials

    url = await mock_server()
    written = []

    class Sink:
        def put(self, record, line=None) -> None:
            written.append(record)

    engine = Engine(TransportConfig(base_urls=(url,), retry=FAST_RETRY), RequestConfig(model="mock-model"),
                    ChecksConfig(), creds=resolve_credentials((), key_envs={OPENAI: None}, environ={}),
                    hooks=EngineHooks(), writer=Sink(), answers=Answers(None), prior=Prior())
    items = [parse_item("in.jsonl", i + 1, orjson.dumps(chat(f"p{i}"))) for i in range(6)]
    result = await engine.run(LoadConfig(concurrency=(2,), num_prompts=3), lambda stage: iter(items))
    assert sorted(r.custom_id for r in written) == ["p0", "p1", "p2"] and all(r.ok for r in written)
    assert (result.sent, result.completed) == (3, 3)
    result = await engine.run(LoadConfig(concurrency=(1,)), lambda stage: iter(items[3:]))  # the next share
    assert sorted(r.custom_id for r in written[3:]) == ["p3", "p4", "p5"] and (result.sent, result.completed) == (6, 6)
