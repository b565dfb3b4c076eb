"""--otlp-endpoint: one span per request over OTLP/HTTP, its ids in the traceparent header each attempt sends.

An in-test OTLP/HTTP receiver (tests/helpers.py's Recorder on 127.0.0.1)
takes the POSTs to /v1/traces, whose protobuf bodies are decoded with
opentelemetry-proto's ExportTraceServiceRequest; the mock, in its own
process, keeps the traceparent header of every request it received
(GET /mock/traceparents).  The runs are the CLI as a subprocess, so the
spans checked are those a run flushed before it exited.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from tests.helpers import (
    HANG_GUARD_S,
    chat,
    mock_stats,
    prompts,
    read_jsonl,
    start_run,
    streamrun,
    wait_for_lines,
    write_jsonl,
)

pytest.importorskip("opentelemetry.sdk.trace", reason="the otel extra (in the test extra): pip install -e '.[otel]'")
trace_service = pytest.importorskip("opentelemetry.proto.collector.trace.v1.trace_service_pb2",
                                    reason="opentelemetry-proto comes with the otel extra")

TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")  # W3C Trace Context, version 00


def _value(any_value):
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


def _attributes(kvs) -> dict:
    return {kv.key: _value(kv.value) for kv in kvs}


def spans_of(rec, path: str = "/v1/traces") -> list[dict]:
    """Every span the receiver got at `path`, decoded: ids in hex, attributes, events, resource."""
    out = []
    for post in rec.requests():
        if post.path != path:
            continue
        assert post.headers["content-type"] == "application/x-protobuf"
        request = trace_service.ExportTraceServiceRequest()
        request.ParseFromString(post.body)
        for rs in request.resource_spans:
            resource = _attributes(rs.resource.attributes)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    out.append({"trace_id": span.trace_id.hex(), "span_id": span.span_id.hex(), "name": span.name,
                                "kind": span.kind, "attributes": _attributes(span.attributes),
                                "events": [(e.name, _attributes(e.attributes), e.time_unix_nano) for e in span.events],
                                "start": span.start_time_unix_nano, "end": span.end_time_unix_nano,
                                "status": span.status.code, "resource": resource})
    return out


def traceparents(url: str) -> list[str]:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/mock/traceparents", timeout=HANG_GUARD_S) as resp:
        return json.load(resp)


def assert_joined(url: str, spans: list[dict]) -> list[str]:
    """Every traceparent the server received names an exported span (its trace id and span id)."""
    received = traceparents(url)
    exported = {(s["trace_id"], s["span_id"]) for s in spans}
    for header in received:
        match = TRACEPARENT.match(header)
        assert match, f"not a W3C traceparent: {header!r}"
        assert int(match.group(3), 16) & 1, f"{header}: not sampled, so the server would not trace it"
        assert (match.group(1), match.group(2)) in exported, f"{header} names no exported span"
    return received


@pytest.fixture
def mock_url(mock_process):
    return mock_process("--ttft", "0", "--tokens-per-s", "0")


def test_10_prompts_export_10_spans_with_custom_id_and_a_first_token_event_joined_to_the_server(
        tmp_path, mock_url, recorder):
    rec = recorder()
    inp, out = prompts(tmp_path / "in.jsonl", 10), tmp_path / "out.jsonl"
    res = streamrun("run", inp, "-o", out, "--base-url", mock_url, "--otlp-endpoint", rec.url, "--max-tokens", "8")
    assert res.returncode == 0, res.stderr
    spans = spans_of(rec)
    assert sorted(s["attributes"]["streamrun.custom_id"] for s in spans) == sorted(f"p{i}" for i in range(10))
    records = {r["custom_id"]: r for r in read_jsonl(out)}
    for span in spans:
        attrs = span["attributes"]
        record = records[attrs["streamrun.custom_id"]]
        assert span["name"] == "chat mock-model" and span["kind"] == 3  # SPAN_KIND_CLIENT
        assert attrs["gen_ai.operation.name"] == "chat" and attrs["gen_ai.request.model"] == "mock-model"
        assert attrs["gen_ai.request.max_tokens"] == 8
        assert attrs["gen_ai.usage.input_tokens"] == record["usage"]["prompt_tokens"]
        assert attrs["gen_ai.usage.output_tokens"] == record["usage"]["completion_tokens"]
        assert attrs["gen_ai.response.finish_reasons"] == ["length"]
        assert attrs["gen_ai.response.id"] == record["request_id"]
        assert attrs["streamrun.status"] == "ok" and attrs["streamrun.attempts"] == 1
        assert attrs["streamrun.ttft_s"] == pytest.approx(record["metrics"]["ttft_s"])
        assert attrs["server.address"] == "127.0.0.1"
        [(name, event_attrs, at)] = span["events"]
        assert name == "first_token" and span["start"] <= at <= span["end"]
        assert span["resource"]["service.name"] == "streamrun"
    received = assert_joined(mock_url, spans)
    assert len(received) == 10 and len(set(received)) == 10  # one request each, each its own span


def test_a_retried_request_is_one_span_whose_attempts_send_the_same_traceparent(tmp_path, mock_url, recorder):
    rec = recorder()
    rows = [chat("retried", mock={"key": "tr-retry", "faults": ["500", "ok"]}),
            chat("failed", mock={"key": "tr-fail", "faults": ["400"]}), chat("plain")]
    inp, out = write_jsonl(tmp_path / "in.jsonl", rows), tmp_path / "out.jsonl"
    res = streamrun("run", inp, "-o", out, "--base-url", mock_url, "--otlp-endpoint", rec.url, "--max-failed", "1")
    assert res.returncode == 0, res.stderr
    spans = {s["attributes"]["streamrun.custom_id"]: s for s in spans_of(rec)}
    assert set(spans) == {"retried", "failed", "plain"}
    retried = spans["retried"]
    assert retried["attributes"]["streamrun.attempts"] == 2 and retried["status"] != 2  # not STATUS_CODE_ERROR
    [retry] = [e for e in retried["events"] if e[0] == "retry"]
    assert retry[1]["streamrun.attempt"] == 2 and retry[1]["http.response.status_code"] == 500
    assert retry[1]["error.type"] == "http_error"
    failed = spans["failed"]
    assert failed["status"] == 2 and failed["attributes"]["error.type"] == "http_error"
    assert failed["attributes"]["http.response.status_code"] == 400
    assert not [e for e in failed["events"] if e[0] == "first_token"]
    received = assert_joined(mock_url, list(spans.values()))
    assert len(received) == 4 and len(set(received)) == 3  # the retried request's two attempts: one span


def test_the_standard_variables_choose_the_collector(tmp_path, mock_url, recorder):
    rec = recorder()
    inp = prompts(tmp_path / "in.jsonl", 3)
    base = streamrun("run", inp, "-o", tmp_path / "a.jsonl", "--base-url", mock_url,
                     env={"OTEL_EXPORTER_OTLP_ENDPOINT": rec.url, "OTEL_SERVICE_NAME": "nightly-bench"})
    assert base.returncode == 0, base.stderr
    spans = spans_of(rec)
    assert len(spans) == 3 and {s["resource"]["service.name"] for s in spans} == {"nightly-bench"}
    full = streamrun("run", inp, "-o", tmp_path / "b.jsonl", "--base-url", mock_url,
                     env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": rec.url + "/custom/traces",
                          "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})  # the full URL wins, as given
    assert full.returncode == 0, full.stderr
    assert len(spans_of(rec, "/custom/traces")) == 3
    assert len(traceparents(mock_url)) == 6
    off = streamrun("run", inp, "-o", tmp_path / "c.jsonl", "--base-url", mock_url,
                    env={"OTEL_EXPORTER_OTLP_ENDPOINT": rec.url, "OTEL_SDK_DISABLED": "true"})
    assert off.returncode == 0, off.stderr
    assert len(rec.requests()) == 2 and len(traceparents(mock_url)) == 6  # nothing more sent, no header


def test_without_tracing_no_traceparent_is_sent(tmp_path, mock_url):
    res = streamrun("run", prompts(tmp_path / "in.jsonl", 3), "-o", tmp_path / "out.jsonl", "--base-url", mock_url)
    assert res.returncode == 0, res.stderr
    assert mock_stats(mock_url)["requests"] == 3 and traceparents(mock_url) == []


def test_each_worker_exports_its_own_spans(tmp_path, mock_url, recorder):
    rec = recorder()
    inp, out = prompts(tmp_path / "in.jsonl", 24), tmp_path / "out.jsonl"
    res = streamrun("run", inp, "-o", out, "--base-url", mock_url, "--workers", "2", "-c", "4",
                    "--otlp-endpoint", rec.url)
    assert res.returncode == 0, res.stderr
    spans = spans_of(rec)
    assert len(spans) == 24
    assert len({s["resource"]["process.pid"] for s in spans}) == 2  # both workers sent and exported
    assert {s["resource"]["service.name"] for s in spans} == {"streamrun"}
    assert len(assert_joined(mock_url, spans)) == 24


@pytest.mark.parametrize("api", ["responses", "anthropic"])
def test_the_other_apis_are_traced_alike(tmp_path, mock_url, recorder, api):
    rec = recorder()
    inp = prompts(tmp_path / "in.jsonl", 4)
    env = {"ANTHROPIC_API_KEY": "sk-ant-test"} if api == "anthropic" else None
    res = streamrun("run", inp, "-o", tmp_path / "out.jsonl", "--base-url", mock_url, "--api", api,
                    "--max-tokens", "16", "--otlp-endpoint", rec.url, env=env)
    assert res.returncode == 0, res.stderr
    spans = spans_of(rec)
    assert len(spans) == 4
    for span in spans:
        attrs = span["attributes"]
        assert attrs["streamrun.api_path"] == ("/v1/responses" if api == "responses" else "/v1/messages")
        assert attrs["gen_ai.usage.input_tokens"] > 0 and attrs["gen_ai.usage.output_tokens"] > 0
        assert [e[0] for e in span["events"]] == ["first_token"]
    assert len(assert_joined(mock_url, spans)) == 4


def test_cache_resume_duration_and_sessions_trace_what_is_sent(tmp_path, mock_url, recorder):
    rec = recorder()
    inp, out = prompts(tmp_path / "in.jsonl", 8), tmp_path / "out.jsonl"
    cache = tmp_path / "cache.db"
    first = streamrun("run", inp, "-o", out, "--base-url", mock_url, "--num-prompts", "3", "--cache", cache,
                      "--otlp-endpoint", rec.url)
    assert first.returncode == 0, first.stderr
    resumed = streamrun("run", inp, "-o", out, "--base-url", mock_url, "--resume", "--cache", cache,
                        "--duration", "10m", "--otlp-endpoint", rec.url)
    assert resumed.returncode == 0, resumed.stderr
    again = streamrun("run", inp, "-o", out, "--base-url", mock_url, "--overwrite", "--cache", cache,
                      "--otlp-endpoint", rec.url)
    assert again.returncode == 0, again.stderr  # every answer from the cache: nothing sent, no span
    spans = spans_of(rec)
    assert sorted(s["attributes"]["streamrun.custom_id"] for s in spans) == [f"p{i}" for i in range(8)]
    assert len(assert_joined(mock_url, spans)) == 8

    session = write_jsonl(tmp_path / "session.jsonl", [{"custom_id": "talk", "turns": ["hi", "and then?"]}])
    res = streamrun("run", session, "-o", tmp_path / "s.jsonl", "--base-url", mock_url, "--otlp-endpoint", rec.url)
    assert res.returncode == 0, res.stderr
    turns = [s for s in spans_of(rec) if s["attributes"]["streamrun.custom_id"] == "talk"]
    assert len(turns) == 2  # a span per request: each turn
    assert len(assert_joined(mock_url, spans_of(rec))) == 10


def test_sigterm_drains_and_flushes_every_span(tmp_path, mock_process, recorder):
    rec = recorder()
    url = mock_process("--ttft", "0.3", "--tokens-per-s", "200", "--output-tokens", "20")
    inp, out = prompts(tmp_path / "in.jsonl", 200), tmp_path / "out.jsonl"
    proc = start_run(inp, "-o", out, "--base-url", url, "-c", "8", "--otlp-endpoint", rec.url)
    wait_for_lines(out, 8, proc)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=HANG_GUARD_S)
    assert proc.returncode == 143, stderr
    spans = spans_of(rec)
    assert len(spans) == len(read_jsonl(out))  # the drained requests too
    assert len(assert_joined(url, spans)) == len(spans)


def test_tracing_without_opentelemetry_is_one_line_with_the_pip_command(tmp_path, mock_url):
    blocked = ("import sys; sys.modules['opentelemetry.sdk.trace'] = None; "
               "from runner.cli.main import main; main(prog_name='streamrun')")
    out = tmp_path / "out.jsonl"
    res = subprocess.run([sys.executable, "-c", blocked, "run", str(prompts(tmp_path / "in.jsonl", 2)), "-o", str(out),
                          "--base-url", mock_url, "--otlp-endpoint", "http://127.0.0.1:4318"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    [line] = res.stderr.strip().splitlines()
    assert "--otlp-endpoint" in line and "OpenTelemetry" in line and "pip install" in line and "[otel]" in line
    assert not out.exists() and mock_stats(mock_url)["requests"] == 0
    env_only = subprocess.run([sys.executable, "-c", blocked, "run", str(tmp_path / "in.jsonl"), "-o", str(out),
                               "--base-url", mock_url], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert env_only.returncode == 2 and "unset OTEL_EXPORTER_OTLP_ENDPOINT" in env_only.stderr


def test_a_collector_that_cannot_be_reached_is_a_warning(tmp_path, mock_url, recorder):
    inp, out = prompts(tmp_path / "in.jsonl", 4), tmp_path / "out.jsonl"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{s.getsockname()[1]}"
    res = streamrun("run", inp, "-o", out, "--base-url", mock_url, "--otlp-endpoint", closed)
    assert res.returncode == 0, res.stderr
    assert len(read_jsonl(out)) == 4
    assert "tracing: cannot export spans" in res.stderr and "4 of 4 spans could not be exported" in res.stderr
    assert "Traceback" not in res.stderr and "Transient error" not in res.stderr
    refusing = recorder(status=404)  # a URL that is no collector's
    res = streamrun("run", inp, "-o", out, "--base-url", mock_url, "--otlp-endpoint", refusing.url, "--overwrite")
    assert res.returncode == 0, res.stderr
    assert "tracing: cannot export spans" in res.stderr


def test_collector_secrets_are_sent_and_never_shown(tmp_path, mock_url, recorder):
    rec = recorder()
    secret, password = "otlp-key-5c2e81", "collector-pw-91d3"
    collector = rec.url.replace("http://", f"http://user:{password}@")
    out = tmp_path / "out.jsonl"
    res = streamrun("run", prompts(tmp_path / "in.jsonl", 2), "-o", out, "--base-url", mock_url, "-v",
                    env={"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": collector + "/v1/traces",
                         "OTEL_EXPORTER_OTLP_HEADERS": f"api-key={secret}"})
    assert res.returncode == 0, res.stderr
    assert all(p.headers.get("api-key") == secret for p in rec.requests()) and rec.requests()
    for text in (res.stdout, res.stderr, (tmp_path / "out.summary.json").read_text(), out.read_text()):
        assert secret not in text and password not in text


def test_the_python_api_traces_with_the_job_key(tmp_path, mock_url, recorder):
    import streamrun as api

    rec = recorder()
    summary = api.run(str(prompts(tmp_path / "in.jsonl", 3)), output=str(tmp_path / "out.jsonl"), base_url=mock_url,
                      otlp_endpoint=rec.url)
    assert summary["exit_code"] == 0
    assert len(spans_of(rec)) == 3
    assert summary["config"]["otlp_endpoint"] == rec.url

