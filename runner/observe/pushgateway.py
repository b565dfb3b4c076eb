"""The run's metrics pushed to a Prometheus Pushgateway when it ends, whatever the ending.

Why: a nightly job is watched by the monitoring people already run, and
Prometheus' answer for batch jobs is the Pushgateway: the job pushes its
metrics when it ends, and an alert fires when its last success is too old
(`time() - streamrun_last_success_timestamp_seconds > 26*3600`).  So:

- every ending pushes (success, failures over budget, SIGTERM, a setup
  error that stopped the run before it sent anything: `runner.run.run_document`
  is the one place that sees them all); `streamrun_exit_code` says which;
- the push is a POST (prometheus-client's `pushadd_to_gateway`), which
  replaces only the metrics pushed, and the grouping key is the job's name
  alone (one group per job, not per run), so
  `streamrun_last_success_timestamp_seconds`, pushed only by a run that
  succeeded (exit 0), keeps the last success's time through failed runs;
- a Pushgateway that cannot be reached is a warning: the run's exit code
  is the run's, never the push's.

The metrics are read from the summary document (`runner.outputs.summary`),
the same numbers the run reported.  TTFT and E2E quantiles are gauges with a
`quantile` label (prometheus-client's Summary cannot carry given quantiles);
NaN where the run has none (no request finished, or `--percentiles` left
that one out).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..config.run_config import ObserveConfig, RunConfig
from ..errors import EXIT_OK
from ..stream.endpoints import public_url

log = logging.getLogger("streamrun")

DEFAULT_JOB = "streamrun"
PUSH_TIMEOUT_S = 10.0  # a Pushgateway that does not answer delays the end of the run this long at most
QUANTILES = (0.5, 0.9, 0.99)
PREFIX = "streamrun_"


@dataclass(frozen=True)
class PushSettings:
    """Where the metrics go and under which job; built from the run's observe settings in one place
    (`from_config`)."""

    gateway: str  # the Pushgateway's URL, without user:password (those go in `username`, `password`)
    job: str = DEFAULT_JOB
    username: str | None = None
    password: str | None = None

    @classmethod
    def from_config(cls, observe: ObserveConfig, job: str | None) -> PushSettings | None:
        """None without --push-gateway; its job is --job-name (a job file's `name`, else its file name): the
        run's own `job`, which names more than the metrics (`{job}` in output paths)."""
        if not observe.push_gateway:
            return None
        from yarl import URL

        url = URL(observe.push_gateway)
        gateway = observe.push_gateway
        return cls(str(url.with_user(None)) if url.user is not None or url.password is not None else gateway,
                   job or DEFAULT_JOB, url.user, url.password)


@dataclass
class Outcome:
    """What a run came to, as the Pushgateway is told."""

    exit_code: int
    duration_s: float
    ended_at: float = field(default_factory=time.time)  # epoch seconds
    requests: dict[str, int] = field(default_factory=lambda: {"ok": 0, "error": 0})
    records_written: int = 0
    output_tokens: int = 0
    ttft_s: dict[float, float] = field(default_factory=dict)  # quantile -> seconds
    e2e_s: dict[float, float] = field(default_factory=dict)

    @classmethod
    def of_summary(cls, doc: dict[str, Any]) -> Outcome:
        """A run that ran: its summary document (counts over the output's final records, so a resumed
        run's include what earlier runs wrote)."""
        summary = doc.get("summary") or {}
        counts = summary.get("counts") or {}
        metrics = summary.get("metrics") or {}
        try:
            ended = datetime.fromisoformat(doc["ended_at"]).timestamp()
        except (KeyError, TypeError, ValueError):
            ended = time.time()
        return cls(exit_code=int(doc["exit_code"]), duration_s=float(doc.get("duration_s") or 0.0), ended_at=ended,
                   requests={"ok": int(counts.get("ok") or 0), "error": int(counts.get("error") or 0)},
                   records_written=int(doc.get("records_written") or 0),
                   output_tokens=int((summary.get("tokens") or {}).get("output") or 0),
                   ttft_s=_quantiles(metrics.get("ttft_s")), e2e_s=_quantiles(metrics.get("e2e_s")))

    @classmethod
    def of_failure(cls, exit_code: int, duration_s: float) -> Outcome:
        """A run stopped before it started (a bad option, a locked output, no key): nothing sent."""
        return cls(exit_code=exit_code, duration_s=duration_s)


def _quantiles(described: dict[str, Any] | None) -> dict[float, float]:
    """{0.5: p50, ...} from a summary metric's description (`p50`, `p90`, `p99` keys)."""
    out = {}
    for q in QUANTILES:
        value = (described or {}).get(f"p{q * 100:g}")
        if isinstance(value, (int, float)):
            out[q] = float(value)
    return out


def families(outcome: Outcome) -> list[Any]:
    """The metric families pushed, in Prometheus' naming conventions."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    requests = CounterMetricFamily(PREFIX + "requests", "Final records of the run's output, by status.",
                                   labels=["status"])
    for status in ("ok", "error"):
        requests.add_metric([status], outcome.requests.get(status, 0))
    out: list[Any] = [
        requests,
        CounterMetricFamily(PREFIX + "records_written", "Records this run wrote.", value=outcome.records_written),
        CounterMetricFamily(PREFIX + "output_tokens", "Output tokens of the run's records.",
                            value=outcome.output_tokens),
    ]
    for name, what, values in (("ttft_seconds", "Time to first token", outcome.ttft_s),
                               ("e2e_seconds", "End-to-end request latency", outcome.e2e_s)):
        gauge = GaugeMetricFamily(PREFIX + name, f"{what}, quantiles over the run's requests (NaN: none).",
                                  labels=["quantile"])
        for q in QUANTILES:
            gauge.add_metric([f"{q:g}"], values.get(q, math.nan))
        out.append(gauge)
    out.append(GaugeMetricFamily(PREFIX + "run_duration_seconds", "How long the run took.", value=outcome.duration_s))
    out.append(GaugeMetricFamily(PREFIX + "exit_code", "The run's exit code (0: success).", value=outcome.exit_code))
    if outcome.exit_code == EXIT_OK:  # a failed run leaves the last success's time as it was (POST)
        out.append(GaugeMetricFamily(PREFIX + "last_success_timestamp_seconds",
                                     "When the job last ended with exit code 0 (Unix time).", value=outcome.ended_at))
    return out


class _Fixed:
    """A collector of given families, in a registry of its own (never prometheus-client's global one)."""

    def __init__(self, metrics: list[Any]) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        return iter(self.metrics)


def push(settings: PushSettings, outcome: Outcome, timeout: float = PUSH_TIMEOUT_S) -> bool:
    """POST the outcome's metrics to /metrics/job/<job>; a failure is logged as a warning, never raised."""
    from prometheus_client import CollectorRegistry, pushadd_to_gateway
    from prometheus_client.exposition import basic_auth_handler, default_handler

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Fixed(families(outcome)))
    handler = default_handler
    if settings.username is not None or settings.password is not None:
        def handler(url, method, timeout, headers, data):
            return basic_auth_handler(url, method, timeout, headers, data, settings.username or "",
                                      settings.password or "")
    shown = public_url(settings.gateway)
    try:
        pushadd_to_gateway(settings.gateway, job=settings.job, registry=registry, timeout=timeout, handler=handler)
    except Exception as exc:  # OSError, URLError, HTTPError, a bad answer: a warning whatever it is
        reason = getattr(exc, "reason", None) or exc
        log.warning("cannot push the run's metrics to the Pushgateway %s: %s (the exit code stays %d)", shown,
                    reason, outcome.exit_code)
        return False
    log.info("metrics pushed to the Pushgateway %s (job %s, exit code %d)", shown, settings.job, outcome.exit_code)
    return True


def push_failure(cfg: RunConfig, exit_code: int) -> None:
    """--push-gateway: the exit code of a run that stopped before `runner.run.run_document` (a bad output
    path template, a bad shard); every later ending is pushed there."""
    settings = PushSettings.from_config(cfg.observe, cfg.job)
    if settings is not None:
        push(settings, Outcome.of_failure(exit_code, 0.0))


async def apush(settings: PushSettings, outcome: Outcome) -> bool:
    """`push` off the event loop (a blocking HTTP request)."""
    return await asyncio.to_thread(push, settings, outcome)
