"""Per-request latency: the stamps a client takes, and the metrics derived from them.

Definitions follow vLLM's benchmark_serving and NVIDIA AIPerf (see
docs/FORMATS.md): TTFT at the first event carrying generated text, TTFB at
the first event of any kind, ITL as the gaps between text-carrying events,
TPOT = (e2e - ttft) / (output_tokens - 1).  All stamps are
`time.perf_counter()` values taken when a chunk's bytes arrived, before any
JSON parsing, so parsing cost never shows up as latency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone


@dataclass(slots=True)
class Timing:
    due: float  # when the request should have started (arrival time, or when it was read)
    sent: float = 0.0
    started_at: datetime | None = None
    first_event: float | None = None
    first_text: float | None = None
    last_text: float | None = None
    end: float | None = None
    itl: list[float] = field(default_factory=list)
    endpoint: str | None = None  # the base URL this attempt went to

    def mark_sent(self, now: float) -> None:
        self.sent = now
        self.started_at = datetime.now(timezone.utc)

    def on_event(self, arrived: float, carried_text: bool) -> None:
        if self.first_event is None:
            self.first_event = arrived
        if carried_text:
            if self.first_text is None:
                self.first_text = arrived
            else:
                self.itl.append(arrived - self.last_text)
            self.last_text = arrived


def metrics_dict(t: Timing | None, output_tokens: int | None, source: str | None) -> dict:
    """The record's `metrics` object (nulls where the attempt never got that far)."""
    if t is None or not t.sent:
        return {
            "ttft_s": None, "ttfb_s": None, "e2e_s": None, "tpot_s": None, "itl_s": [],
            "queue_s": None, "output_tokens": output_tokens, "output_tokens_source": source,
            "started_at": None,
        }
    ttft = t.first_text - t.sent if t.first_text is not None else None
    e2e = t.end - t.sent if t.end is not None else None
    tpot = None
    if ttft is not None and e2e is not None and output_tokens and output_tokens > 1:
        tpot = (e2e - ttft) / (output_tokens - 1)
    return {
        "ttft_s": ttft,
        "ttfb_s": t.first_event - t.sent if t.first_event is not None else None,
        "e2e_s": e2e,
        "tpot_s": tpot,
        "itl_s": t.itl,
        "queue_s": max(0.0, t.sent - t.due),
        "output_tokens": output_tokens,
        "output_tokens_source": source,
        "started_at": t.started_at.isoformat() if t.started_at else None,
    }
