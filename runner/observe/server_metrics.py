"""The server's own view of a run: its Prometheus /metrics, sampled while the run goes on.

Why: a client sees latencies rise; only the server says why: a queue
(``vllm:num_requests_waiting``), a full KV cache, a prefix cache that stopped
hitting.  With ``--server-metrics URL`` the run scrapes each URL every
``--server-metrics-interval`` (1 s) and appends one JSON line per scrape to a
side file beside the output, ``<output base>.server_metrics.jsonl``::

    {"t": 12.0, "at": "2026-11-25T14:50:13.1+00:00", "url": "http://gpu-box:8000/metrics",
     "metrics": {"vllm:num_requests_running{model_name=\"m\"}": 16.0, ...}}

``t`` is seconds since the run started on the run's own ``perf_counter``,
``at`` the same moment as UTC wall time from the run's start time, so the
report lines samples up with the records' ``started_at``.  Each line is
written and flushed as its scrape ends: a long run holds no samples in
memory, only the running mean and max of the known gauges for the summary.

A scrape that fails (refused, timed out, not 200, not Prometheus text) is
counted, written as a line with ``error`` instead of ``metrics``, and logged
once per URL at warning; it never fails the run.  A URL may carry
``user:password@`` (sent as basic auth): it is written and logged without
them.  The run's API key is never sent to a metrics URL, which may be
another host.

``auto`` stands for the /metrics of each ``--base-url``'s server (vLLM,
SGLang and TGI serve it at the root of the port they serve the API on), and
so for the embedded mock's in a ``--mock`` run, whose URL is known only once
it listens: ``jobs/sample.toml`` uses it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, BinaryIO

import orjson

from ..config.run_config import OutputConfig, RunConfig
from ..stream.endpoints import public_url, url_secrets
from ..stream.network import Network
from .prometheus import MAX_SERIES, Scrape, ServerFigures, parse

log = logging.getLogger("streamrun")

AUTO = "auto"
SUFFIX = ".server_metrics.jsonl"
MAX_BYTES = 16 * 1024 * 1024  # a /metrics body larger than this is a failed scrape, not a memory spike
ACCEPT = "text/plain;version=0.0.4;q=0.9,*/*;q=0.1"  # the classic text format, which every server speaks


def side_path_for(output: OutputConfig) -> str | None:
    """``<output base>.server_metrics.jsonl``; for ``-o -`` beside ``--summary``; None when there is neither."""
    if output.path != "-":
        base = output.path
        return (base[:-6] if base.endswith(".jsonl") else base) + SUFFIX
    if output.summary_path:
        base = output.summary_path
        for ending in (".summary.json", ".json"):
            if base.endswith(ending):
                base = base[: -len(ending)]
                break
        return base + SUFFIX
    return None


def metrics_url_of(base_url: str) -> str:
    """The /metrics of the server behind an API base URL (``http://h:8000/v1`` → ``http://h:8000/metrics``)."""
    from yarl import URL

    return str(URL(base_url).with_path("/metrics").with_query(None).with_fragment(None))


def resolve_urls(values: Sequence[str], base_urls: Sequence[str]) -> tuple[str, ...]:
    """``auto`` becomes each base URL's /metrics; duplicates go, first place kept."""
    out: list[str] = []
    for value in values:
        out += [metrics_url_of(b) for b in base_urls] if value == AUTO else [value]
    return tuple(dict.fromkeys(out))


class ScrapeFailed(Exception):
    """One scrape that gave no samples; its message is what the side file and the log say."""


@dataclass
class _Target:
    url: str  # as given, credentials included: only ever sent to the server
    figures: ServerFigures  # its url is the public one
    warned: bool = False


@dataclass
class _Result:
    target: _Target
    t: float  # the scrape's midpoint, seconds since the run started
    text: str | None = None
    error: str | None = None
    scrape: Scrape | None = None


class Scraper:
    """Scrapes its URLs every ``interval_s`` until cancelled, into ``path``; figures for the summary.

    ``clock`` is the run's ``perf_counter`` (tests may give another); ``append``
    keeps the samples of earlier runs (``--resume``), else the file starts empty.
    """

    def __init__(self, urls: Sequence[str], path: str, interval_s: float = 1.0, *, append: bool = False,
                 clock: Callable[[], float] = time.perf_counter, timeout_s: float | None = None,
                 max_series: int = MAX_SERIES, max_bytes: int = MAX_BYTES, network: Network | None = None) -> None:
        self.targets = [_Target(u, ServerFigures(public_url(u))) for u in urls]
        self.path = path
        self.interval_s = interval_s
        self.append = append
        self.clock = clock
        self.timeout_s = timeout_s if timeout_s is not None else min(5.0, max(1.0, interval_s))
        self.max_series = max_series
        self.max_bytes = max_bytes
        self.network = network or Network()  # the run's TLS settings and proxies, as its requests have them
        self.secrets = tuple(s for u in urls for s in url_secrets(u)) + self.network.secrets()
        self.series_dropped = 0
        self.lines = 0
        self._file: BinaryIO | None = None
        self._origin: tuple[datetime, float] = (datetime.now(UTC), clock())
        self._cap_warned = False
        self._crashed = False

    # ---- the loop

    async def run(self, started: datetime | None = None, t0: float | None = None) -> None:
        """Scrape at ``t0``, ``t0 + interval``, ... (a tick missed while a scrape was slow is skipped)."""
        import aiohttp
        import anyio

        from ..stream.headers import user_agent

        t0 = self.clock() if t0 is None else t0
        self._origin = (started or datetime.now(UTC), t0)
        try:
            self._file = open(self.path, "ab" if self.append else "wb")
        except OSError as exc:
            log.warning("server metrics: cannot write %s (%s): not scraping", self.path, exc.strerror)
            return
        # Its own session: scrapes never wait for a connection slot of the run's requests, nor take one.
        session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                        headers={"Accept": ACCEPT, "User-Agent": user_agent()},
                                        connector=aiohttp.TCPConnector(ssl=self.network.connector_ssl()))
        try:
            tick = 0
            while True:
                try:
                    await self.scrape_once(session)
                except Exception:  # a bug here must cost the samples, never the run (it shares its task group)
                    (log.debug if self._crashed else log.warning)("server metrics: a scrape failed unexpectedly",
                                                                   exc_info=True)
                    self._crashed = True
                tick = max(tick + 1, math.ceil((self.clock() - t0) / self.interval_s))
                delay = t0 + tick * self.interval_s - self.clock()
                if delay > 0:
                    await asyncio.sleep(delay)
        finally:
            self._close()
            with anyio.CancelScope(shield=True):  # the run's task group cancels this task: close all the same
                await session.close()

    async def scrape_once(self, session: Any) -> None:
        """Every URL at once; the texts parsed on a thread (a large /metrics would otherwise stall the
        event loop that times the requests); one line each, written and flushed."""
        results = await asyncio.gather(*(self._fetch(session, t) for t in self.targets))
        texts = [r.text for r in results if r.text is not None]
        if texts:
            parsed = iter(await asyncio.to_thread(_parse_all, texts, self.max_series))
            for r in results:
                if r.text is not None:
                    outcome = next(parsed)
                    r.text = None
                    if isinstance(outcome, Scrape):
                        r.scrape = outcome
                    else:
                        r.error = outcome
        for r in results:
            self._record(r)

    async def _fetch(self, session: Any, target: _Target) -> _Result:
        import aiohttp

        start = self.clock()
        try:
            async with session.get(target.url, proxy=self.network.proxy_for(target.url)) as resp:
                if resp.status != 200:
                    raise ScrapeFailed(f"HTTP {resp.status}")
                body = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise ScrapeFailed(f"the body is over {self.max_bytes} bytes")
                text: str | None = body.decode("utf-8", errors="replace")
                error = None
        except ScrapeFailed as exc:
            text, error = None, str(exc)
        except TimeoutError:
            text, error = None, f"no answer within {self.timeout_s:g}s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            text, error = None, str(exc) or type(exc).__name__
        t = (start + self.clock()) / 2 - self._origin[1]
        return _Result(target, t, text=text, error=error)

    # ---- what a scrape leaves

    def _record(self, r: _Result) -> None:
        target = r.target
        line: dict[str, Any] = {"t": round(r.t, 6), "at": self._wall(r.t), "url": target.figures.url}
        if r.scrape is None:
            target.figures.failures += 1
            error = self._redact(r.error or "no samples")
            line["error"] = error
            if not target.warned:
                target.warned = True
                log.warning("server metrics: cannot scrape %s: %s (counted in the summary; not logged again)",
                            target.figures.url, error)
        else:
            target.figures.add(r.scrape.series)
            line["metrics"] = r.scrape.series
            if r.scrape.dropped:
                line["dropped"] = r.scrape.dropped
                self.series_dropped += r.scrape.dropped
                if not self._cap_warned:
                    self._cap_warned = True
                    log.warning("server metrics: %s exports over %d series; the rest are counted, not kept",
                                target.figures.url, self.max_series)
        self._write(line)

    def _write(self, line: dict[str, Any]) -> None:
        if self._file is None:
            return
        try:
            self._file.write(orjson.dumps(line) + b"\n")
            self._file.flush()
            self.lines += 1
        except OSError as exc:  # a full disk: the run's records matter more; stop writing samples
            log.warning("server metrics: cannot write %s (%s): no more samples are written", self.path,
                        exc.strerror)
            self._close()

    def _close(self) -> None:
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None

    def _wall(self, t: float) -> str:
        return (self._origin[0] + timedelta(seconds=t)).isoformat()

    def _redact(self, text: str) -> str:
        from ..stream.errors import redact

        for target in self.targets:
            text = text.replace(target.url, target.figures.url)
        return redact(text, self.secrets)

    # ---- the summary's section

    def section(self) -> dict[str, Any]:
        servers = [t.figures for t in self.targets]
        return {"path": self.path, "interval_s": self.interval_s, "scrapes": sum(s.scrapes for s in servers),
                "failures": sum(s.failures for s in servers), "series_dropped": self.series_dropped,
                "servers": [s.as_dict() for s in servers]}


def _parse_all(texts: list[str], max_series: int) -> list[Scrape | str]:
    """Each text parsed, or the reason it is not Prometheus text (runs on a thread)."""
    out: list[Scrape | str] = []
    for text in texts:
        try:
            out.append(parse(text, max_series))
        except ValueError as exc:
            out.append(f"not Prometheus text: {str(exc)[:200] or 'unparsable'}")
    return out


def scraper_for(cfg: RunConfig, *, clock: Callable[[], float] = time.perf_counter) -> Scraper | None:
    """The run's scraper, or None: no ``--server-metrics``, or ``-o -`` with no ``--summary`` to sit beside."""
    observe = cfg.observe
    if not observe.server_metrics:
        return None
    path = side_path_for(cfg.output)
    if path is None:
        log.warning("--server-metrics: with -o - the samples need a file: give --summary PATH and they go "
                    "beside it; not scraping")
        return None
    urls = resolve_urls(observe.server_metrics, cfg.transport.base_urls)
    log.info("server metrics: %s every %gs into %s", ", ".join(public_url(u) for u in urls),
             observe.server_metrics_interval_s, path)
    return Scraper(urls, path, observe.server_metrics_interval_s, append=cfg.output.resume, clock=clock,
                   network=Network.from_config(cfg.transport))
