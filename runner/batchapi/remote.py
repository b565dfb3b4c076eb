"""What the providers' calls give back, typed: a batch as last seen, and one line's outcome.

Why shared: OpenAI's and Anthropic's shapes differ (``openai``, ``anthropic``
read them); the driver and the collector work on these two types only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: How a batch ended, in both providers' words as streamrun writes them.
COMPLETED, EXPIRED, CANCELLED, FAILED = "completed", "expired", "cancelled", "failed"
#: How one line ended.
SUCCEEDED, ERRORED = "succeeded", "errored"


@dataclass
class Remote:
    """A provider's batch as last seen."""

    id: str
    status: str  # the provider's own word (in_progress, finalizing, canceling, ended, ...)
    end: str | None  # COMPLETED / EXPIRED / CANCELLED / FAILED once it ended, else None
    counts: dict[str, int] = field(default_factory=dict)  # the provider's request counts
    created_at: float = 0.0  # POSIX seconds
    problem: str | None = None  # a failed batch: why (the provider's errors)
    files: tuple[str, ...] = ()  # OpenAI: the output and error file ids that exist
    results_url: str | None = None  # Anthropic
    metadata: dict[str, Any] = field(default_factory=dict)  # OpenAI
    total: int | None = None  # requests in the batch, when the provider says

    def progress(self) -> str:
        """The counts as one phrase for the progress lines."""
        return ", ".join(f"{v} {k}" for k, v in self.counts.items() if k != "total" and v) or "no request done yet"


@dataclass(slots=True)
class Outcome:
    """One result line: how the request ended, and its answer or error."""

    wire_id: str
    kind: str  # SUCCEEDED / ERRORED / EXPIRED / CANCELLED
    body: dict[str, Any] | None = None  # the answer (SUCCEEDED)
    status_code: int | None = None
    code: str | None = None  # the provider's error code or type
    message: str | None = None
    request_id: str | None = None


def json_object(value: Any) -> dict[str, Any]:
    """`value` when the provider sent a JSON object there, else an empty one (a missing or mistyped field)."""
    return value if isinstance(value, dict) else {}
