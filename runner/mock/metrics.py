"""``GET /metrics``: the mock's state in Prometheus text, named as vLLM names it.

Why: ``--server-metrics`` (``runner.observe.server_metrics``) and the report's server
panel need a server to scrape in tests and in ``make run``; a mock that
answered with canned numbers would test nothing.  These are read from the
app's live ``MockState`` at each scrape (a collector, not gauges updated on
every request, so serving completions costs nothing more):

- ``vllm:num_requests_running``: completion requests in the handler now
  (``MockState.tasks``), waiting for their first token or streaming;
- ``vllm:num_requests_waiting``: 0: the mock queues nothing, every admitted
  request is served at once;
- ``vllm:gpu_cache_usage_perc``: a pretend KV cache of ``FAKE_KV_SLOTS``
  sequences, each running request holding one (a fraction, 0..1, as vLLM's);
- ``vllm:prompt_tokens_total``, ``vllm:generation_tokens_total``,
  ``vllm:request_success_total``: prompt tokens of the requests answered,
  content tokens sent, replies completed (streamed or not).

Every series carries vLLM's ``model_name`` label.  Rendered with
prometheus_client, one registry per app; with ``--workers`` each process
answers for itself, as each vLLM API server process does.
"""

from __future__ import annotations

from collections.abc import Iterator

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from .state import STATE_KEY, MockState

__all__ = ["FAKE_KV_SLOTS", "METRICS_PATH", "install_metrics"]

METRICS_PATH = "/metrics"
FAKE_KV_SLOTS = 64
REGISTRY_KEY: web.AppKey[CollectorRegistry] = web.AppKey("streamrun_mock_metrics", CollectorRegistry)


class MockCollector:
    """Reads one app's state when scraped."""

    def __init__(self, state: MockState) -> None:
        self.state = state

    def collect(self) -> Iterator[Metric]:
        state = self.state
        stats, labels = state.stats, [state.config.model]
        running = len(state.tasks)
        for name, doc, value in (
            ("vllm:num_requests_running", "Requests being answered (the mock: in its handler).", running),
            ("vllm:num_requests_waiting", "Requests waiting to be scheduled (the mock queues none).", 0),
            ("vllm:gpu_cache_usage_perc", f"KV-cache usage, 1 = full (the mock: running / {FAKE_KV_SLOTS}).",
             min(1.0, running / FAKE_KV_SLOTS)),
        ):
            gauge = GaugeMetricFamily(name, doc, labels=["model_name"])
            gauge.add_metric(labels, value)
            yield gauge
        for name, doc, value in (
            ("vllm:prompt_tokens", "Prompt tokens of the requests answered.", stats.prompt_tokens),
            ("vllm:generation_tokens", "Generated (content) tokens sent.", stats.tokens_sent),
            ("vllm:request_success", "Replies completed.", stats.streams_completed + stats.non_stream_completed),
        ):
            counter = CounterMetricFamily(name, doc, labels=["model_name"])
            counter.add_metric(labels, value)
            yield counter


async def _metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY_KEY])
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def install_metrics(app: web.Application) -> None:
    """Give ``app`` (its ``STATE_KEY`` already set) its registry and the ``GET /metrics`` route."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(MockCollector(app[STATE_KEY]))
    app[REGISTRY_KEY] = registry
    app.router.add_get(METRICS_PATH, _metrics)
