"""OpenTelemetry traces of the requests: one span per request, exported over OTLP/HTTP, its ids sent along.

Why: servers (vLLM and others) export their own spans per request and read a
W3C `traceparent` header.  A request that carries the trace id and span id of
the client's own exported span joins the server's spans (queue, prefill,
decode) to the client's (TTFT as the client saw it, the retries) in one trace.

One span per request, whatever its attempts: every attempt carries the same
`traceparent`, and each retry is an event on the span (so is the first
token).  Spans are handed to OpenTelemetry's BatchSpanProcessor, which
encodes and exports them from its own thread; the event loop only creates
and ends them.  With tracing off nothing here is imported and the sender
pays one `if` per request (`runner.engine.send`).

OpenTelemetry is the optional `otel` extra, imported only when tracing is
asked for: `--otlp-endpoint` (job key `otlp_endpoint`), or the standard
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT / OTEL_EXPORTER_OTLP_ENDPOINT variables.
Each process that sends (this one, or each `--workers` process) exports its
own spans under the same service name.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import unquote

from ..config.run_config import ObserveConfig
from ..errors import UsageError
from ..stream.endpoints import public_url

log = logging.getLogger("streamrun")

TRACES_PATH = "/v1/traces"  # what OTLP/HTTP adds to a base URL for traces
# The standard variables, in the order they are read: the traces URL in full, then a base URL.
TRACES_ENDPOINT_VAR = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
ENDPOINT_VAR = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTLP_URL_VARS = (TRACES_ENDPOINT_VAR, ENDPOINT_VAR)
OTLP_HEADER_VARS = ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS")
SERVICE_NAME = "streamrun"
FLUSH_TIMEOUT_S = 10.0  # the end of a run waits this long at most for its last spans to be exported

# The GenAI semantic conventions' operation for each API path.
_OPERATIONS = {"/v1/chat/completions": "chat", "/v1/completions": "text_completion", "/v1/responses": "chat",
               "/v1/messages": "chat", "/v1/embeddings": "embeddings"}
# Request parameters that have a GenAI attribute: body key -> attribute.
_REQUEST_PARAMS = (("max_tokens", "gen_ai.request.max_tokens"), ("max_completion_tokens", "gen_ai.request.max_tokens"),
                   ("max_output_tokens", "gen_ai.request.max_tokens"), ("temperature", "gen_ai.request.temperature"),
                   ("top_p", "gen_ai.request.top_p"), ("seed", "gen_ai.request.seed"))


@dataclass(frozen=True)
class TraceSettings:
    """Where the spans go; built from the run's observe settings and the environment in one place (`from_config`)."""

    endpoint: str  # the OTLP/HTTP traces URL, in full
    service_name: str = SERVICE_NAME

    @classmethod
    def from_config(cls, observe: ObserveConfig, environ: Mapping[str, str] = os.environ) -> TraceSettings | None:
        """None when no tracing was asked for; UsageError (exit 2, with the pip line) when it was and
        OpenTelemetry is not installed, or a variable holds no URL.

        --otlp-endpoint wins over the variables; the variables alone turn
        tracing on unless OTEL_SDK_DISABLED=true or OTEL_TRACES_EXPORTER=none
        say otherwise (the standard switches, for an environment set for
        other programs).
        """
        if observe.otlp_endpoint:
            endpoint, source = traces_url(observe.otlp_endpoint), "--otlp-endpoint"
        else:
            if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true" \
                    or environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
                return None
            if environ.get(TRACES_ENDPOINT_VAR, "").strip():
                endpoint, source = environ[TRACES_ENDPOINT_VAR].strip(), TRACES_ENDPOINT_VAR
            elif environ.get(ENDPOINT_VAR, "").strip():
                endpoint, source = traces_url(environ[ENDPOINT_VAR].strip()), ENDPOINT_VAR
            else:
                return None
            _check_url(endpoint, source)
        require_otel(source)
        return cls(endpoint, environ.get("OTEL_SERVICE_NAME", "").strip() or SERVICE_NAME)


def traces_url(base: str) -> str:
    """A collector's base URL (`http://collector:4318`) -> its traces URL, as OTEL_EXPORTER_OTLP_ENDPOINT is read."""
    return base.rstrip("/") + TRACES_PATH


def _check_url(url: str, source: str) -> None:
    from yarl import URL

    try:
        parsed = URL(url)
    except (ValueError, TypeError):
        parsed = None
    if parsed is None or parsed.scheme not in ("http", "https") or not parsed.host:
        raise UsageError(f"{source}: {public_url(url)!r} is not an http(s) URL like http://collector:4318")


def require_otel(source: str) -> None:
    """OpenTelemetry's SDK and OTLP/HTTP exporter, or the one line that says how to install them."""
    try:
        import opentelemetry.exporter.otlp.proto.http.trace_exporter  # noqa: F401
        import opentelemetry.sdk.trace  # noqa: F401
    except ImportError:
        from ..extras import install_hint

        unset = f" (or unset {source})" if source in OTLP_URL_VARS else ""
        raise UsageError(f"{source}: tracing needs OpenTelemetry, which is not installed: "
                         f"{install_hint('otel')}{unset}") from None


def otlp_header_secrets(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The values of OTEL_EXPORTER_OTLP_HEADERS (`api-key=...,x=...`): a collector's key, never printed."""
    out: list[str] = []
    for var in OTLP_HEADER_VARS:
        for pair in environ.get(var, "").split(","):
            _, eq, value = pair.partition("=")
            value = value.strip()
            if eq and value:
                out.extend(dict.fromkeys((value, unquote(value))))
    return tuple(out)


class RequestTracer:
    """The spans of one process's requests: a TracerProvider of its own (never the global one, so a
    Python API caller's own OpenTelemetry set-up is left alone), exporting through a BatchSpanProcessor."""

    def __init__(self, settings: TraceSettings) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
        from opentelemetry.trace import SpanKind

        self.settings = settings
        self.exporter = CountingExporter(OTLPSpanExporter(endpoint=settings.endpoint), public_url(settings.endpoint))
        resource = Resource.create({"service.name": settings.service_name, "service.version": _version(),
                                    "process.pid": os.getpid()})
        self._provider = TracerProvider(resource=resource)
        # a SpanExporter by its methods: the class is defined without importing the optional SDK
        self._provider.add_span_processor(BatchSpanProcessor(cast(SpanExporter, self.exporter)))
        self._tracer = self._provider.get_tracer("streamrun", _version())
        self._client = SpanKind.CLIENT
        # perf_counter stamps (the requests' timing) -> epoch nanoseconds (OpenTelemetry's), from one pair
        self._epoch_ns, self._perf = time.time_ns(), time.perf_counter()
        self._servers: dict[str, dict[str, Any]] = {}  # endpoint -> server.address, server.port
        self._closed = False

    @classmethod
    def from_config(cls, observe: ObserveConfig) -> RequestTracer | None:
        settings = TraceSettings.from_config(observe)
        return None if settings is None else cls(settings)

    def ns(self, perf: float) -> int:
        """A time.perf_counter() value as OpenTelemetry's epoch nanoseconds."""
        return self._epoch_ns + int((perf - self._perf) * 1e9)

    def start(self, path: str, request: Mapping[str, Any]) -> RequestSpan:
        """The span of one request, begun now: named and attributed as the GenAI conventions say."""
        operation = _OPERATIONS.get(path, "chat")
        model = request.get("model")
        attributes: dict[str, Any] = {"gen_ai.operation.name": operation, "streamrun.api_path": path}
        if isinstance(model, str):
            attributes["gen_ai.request.model"] = model
        for key, name in _REQUEST_PARAMS:
            value = request.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                attributes[name] = value
        span = self._tracer.start_span(f"{operation} {model}" if isinstance(model, str) else operation,
                                       kind=self._client, attributes=attributes,
                                       start_time=self.ns(time.perf_counter()))
        return RequestSpan(self, span)

    def server(self, endpoint: str | None) -> dict[str, Any]:
        """server.address and server.port of a (public) base URL, parsed once per endpoint."""
        if endpoint is None:
            return {}
        found = self._servers.get(endpoint)
        if found is None:
            from yarl import URL

            try:
                url = URL(endpoint)
                found = {"server.address": url.host or "", "server.port": url.port or 0}
            except (ValueError, TypeError):
                found = {}
            self._servers[endpoint] = found
        return found

    def shutdown(self) -> None:
        """Export what is left (bounded: FLUSH_TIMEOUT_S, then the exporter's own timeout) and stop its thread."""
        if self._closed:
            return
        self._closed = True
        self._provider.force_flush(int(FLUSH_TIMEOUT_S * 1000))
        self._provider.shutdown()
        self.exporter.report()

    async def aclose(self) -> None:
        """`shutdown` off the event loop (the export of the last batch is a blocking HTTP request)."""
        import asyncio

        await asyncio.to_thread(self.shutdown)


class RequestSpan:
    """One request's span: the header that names it, its retries and first token, its end."""

    __slots__ = ("tracer", "span", "traceparent")

    def __init__(self, tracer: RequestTracer, span: Any) -> None:
        self.tracer = tracer
        self.span = span
        ctx = span.get_span_context()
        self.traceparent = f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"

    def headers(self, base: Mapping[str, str] | None) -> dict[str, str]:
        """The request's own headers plus `traceparent`: every attempt names this span."""
        return {**base, "traceparent": self.traceparent} if base else {"traceparent": self.traceparent}

    def retry(self, attempt: int, error: Any) -> None:
        """Attempt `attempt` (2, 3, ...) starts, after `error` failed the one before."""
        attributes: dict[str, Any] = {"streamrun.attempt": attempt}
        if error is not None:
            attributes["error.type"] = error.type
            if error.status_code is not None:
                attributes["http.response.status_code"] = error.status_code
            attributes["exception.message"] = error.message[:500]
        self.span.add_event("retry", attributes)

    def end(self, record: Any, timing: Any) -> None:
        """The request's outcome on its span (the record, as written), and the span ended at the last byte."""
        tracer, span = self.tracer, self.span
        metrics = record.metrics
        attributes: dict[str, Any] = {"streamrun.custom_id": record.custom_id, "streamrun.status": record.status,
                                      "streamrun.attempts": record.attempts, **tracer.server(record.endpoint)}
        if record.warmup:
            attributes["streamrun.warmup"] = True
        # (E2E is the span's own duration: ended at the last byte. Each attribute costs a few microseconds
        # to make and more to encode, so none repeats what the span says already.)
        if metrics.ttft_s is not None:
            attributes["streamrun.ttft_s"] = metrics.ttft_s
        if metrics.output_tokens is not None:
            attributes["gen_ai.usage.output_tokens"] = metrics.output_tokens
        usage = record.usage
        if usage:
            prompt = usage.get("prompt_tokens", usage.get("input_tokens"))
            if type(prompt) is int:
                attributes["gen_ai.usage.input_tokens"] = prompt
        if record.model:
            attributes["gen_ai.response.model"] = record.model
        if record.request_id:
            attributes["gen_ai.response.id"] = record.request_id
        if record.finish_reason:
            attributes["gen_ai.response.finish_reasons"] = (record.finish_reason,)
        error = record.error
        if error is not None:
            attributes["error.type"] = error.type
            if error.status_code is not None:
                attributes["http.response.status_code"] = error.status_code
        span.set_attributes(attributes)
        end = None
        if timing is not None:
            if timing.first_text is not None:
                span.add_event("first_token", timestamp=tracer.ns(timing.first_text))
            if timing.end is not None:
                end = tracer.ns(timing.end)
        if error is not None:
            from opentelemetry.trace import Status, StatusCode

            span.set_status(Status(StatusCode.ERROR, f"{error.type}: {error.message}"[:500]))
        span.end(end_time=end)

    def abandon(self, why: BaseException) -> None:
        """The request never came to a record (cancelled in flight at the drain's end, a run-level stop):
        its span still ends, since the server may have seen its traceparent."""
        from opentelemetry.trace import Status, StatusCode

        self.span.set_status(Status(StatusCode.ERROR, type(why).__name__))
        self.span.set_attribute("error.type", type(why).__name__)
        self.span.end()


class CountingExporter:
    """The OTLP exporter, counting what it could not export, and saying so in streamrun's words.

    OpenTelemetry logs every retry of a failed export; an unreachable
    collector would repeat one long line for the whole run.  Its exporter's
    messages are kept here instead (the last one says why), and a run says
    once that spans are being lost, and at its end how many were.
    """

    def __init__(self, exporter: Any, shown: str) -> None:
        self.exporter = exporter
        self.shown = shown  # the traces URL without a password
        self.exported = self.failed = 0
        self.why = _ExporterMessages.install()

    def export(self, spans: Any) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.why.first = None
        result = self.exporter.export(spans)
        if result is SpanExportResult.SUCCESS:
            self.exported += len(spans)
        else:
            if not self.failed:
                log.warning("tracing: cannot export spans to %s (%s): the run goes on without them", self.shown,
                            self.why.reason())
            self.failed += len(spans)
        return result

    def report(self) -> None:
        if self.failed:
            log.warning("tracing: %d of %d spans could not be exported to %s", self.failed,
                        self.failed + self.exported, self.shown)

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.exporter.force_flush(timeout_millis)

    def shutdown(self) -> None:
        self.exporter.shutdown()


class _ExporterMessages(logging.Handler):
    """The OTLP exporter's log lines, kept (the last one) instead of printed; redacted by streamrun's filters
    when they are shown.  The SDK's other warnings (a full span queue) go where streamrun's logs go."""

    _installed: _ExporterMessages | None = None

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.first: str | None = None  # of the export in progress: the retries' first says why

    def emit(self, record: logging.LogRecord) -> None:
        if self.first is None:
            self.first = record.getMessage()

    def reason(self) -> str:
        """`[Errno 111] Connection refused` out of urllib3's nesting, else the message's start."""
        if self.first is None:
            return "no reason given"
        errno = re.search(r"\[Errno -?\d+\] [^\"')]+", self.first)
        return errno.group(0) if errno else self.first[:200]

    @classmethod
    def install(cls) -> _ExporterMessages:
        if cls._installed is None:
            cls._installed = cls()
            exporter = logging.getLogger("opentelemetry.exporter")
            exporter.handlers = [cls._installed]
            exporter.propagate = False
        sdk, streamrun = logging.getLogger("opentelemetry.sdk"), logging.getLogger("streamrun")
        if streamrun.handlers:  # set up (the CLI, a worker): the SDK's warnings as streamrun's, redacted
            sdk.handlers = list(streamrun.handlers)
            sdk.propagate = False
        return cls._installed


@functools.cache
def _version() -> str:
    try:
        from importlib.metadata import version

        return version("streamrun")
    except Exception:  # not installed (run from a checkout without pip install -e)
        return "0+unknown"


