"""Per-request latency: the stamps a client takes (the metrics derived from them
are `runner.record.Metrics.from_timing`).

Definitions follow vLLM's benchmark_serving and NVIDIA AIPerf (see
docs/FORMATS.md): TTFT at the first event carrying generated text, TTFB at
the first event of any kind, ITL as the gaps between text-carrying events,
TPOT = (e2e - ttft) / (output_tokens - 1).  All stamps are
`time.perf_counter()` values taken when a chunk's bytes arrived (when aiohttp
received them, see `runner.stream.connection.StampingHandler`), before any
JSON parsing, so parsing cost never shows up as latency; the events of one
read share its stamp (`on_read`).

`connect_s` is stamped by the session's connector (`runner.stream.connection`:
`TimedConnector`, or aiohttp's tracing with `connection_trace`):
the time this attempt spent opening its connection (DNS when not cached,
TCP, TLS, a proxy's CONNECT), None when it reused a pooled one.  It is part
of TTFT and E2E, which count from `sent`, before the connection is taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(slots=True)
class Timing:
    due: float  # when the request should have started (arrival time, or when it was read)
    sent: float = 0.0
    started_at: datetime | None = None
    first_event: float | None = None
    first_text: float | None = None
    first_answer: float | None = None  # the read that brought the first answer text (not reasoning): TTFAT
    last_text: float | None = None
    end: float | None = None
    itl: list[float] = field(default_factory=list)
    endpoint: str | None = None  # the base URL this attempt went to
    connect_s: float | None = None  # set when this attempt opened a new connection

    def mark_sent(self, now: float) -> None:
        self.sent = now
        self.started_at = datetime.now(UTC)

    def on_event(self, arrived: float, carried_text: bool) -> None:
        if self.first_event is None:
            self.first_event = arrived
        if carried_text:
            if self.last_text is None:  # set with first_text, and only here
                self.first_text = arrived
            else:
                self.itl.append(arrived - self.last_text)
            self.last_text = arrived

    def on_read(self, arrived: float, events: int, text_events: int) -> None:
        """`on_event` for `events` events of one read, `text_events` of them with text, at once:
        the same stamps (the gaps between text events of one read are 0)."""
        if events and self.first_event is None:
            self.first_event = arrived
        if text_events:
            if self.last_text is None:  # set with first_text, and only here
                self.first_text = arrived
            else:
                self.itl.append(arrived - self.last_text)
            if text_events > 1:
                self.itl.extend([0.0] * (text_events - 1))
            self.last_text = arrived

    def on_answer(self, arrived: float) -> None:
        """Answer text (not reasoning, not a tool call) arrived for the first time: TTFAT's stamp."""
        if self.first_answer is None:
            self.first_answer = arrived

