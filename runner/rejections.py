"""The first answers of a run, watched for a wrong key, URL or model.

Why apart: a run that cannot succeed should stop after 20 answers, not burn a
million-line input; the rule, and the records it holds back, are one concern
the engine only consults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .record import Record

REJECTED_STATUSES = (401, 403, 404)


@dataclass
class RejectionGuard:
    """Stops a run whose first `limit` answers are all 401, 403 or 404.

    A wrong key, URL or model answers every request the same way; sending
    the rest of a large input only burns it and fills the output with
    errors that a `--resume` would then skip.  While armed, such records are
    held back; on the first other answer they are released and the guard is
    off for good; at `limit` the run stops and the held records are dropped,
    so a rerun after the fix sends those prompts again.
    """

    limit: int = 20
    held: list = field(default_factory=list)
    armed: bool = True
    tripped: bool = False
    dropped: int = 0

    def offer(self, record: Record) -> tuple[list[Record], str | None]:
        """(records to write now, a message when this record trips the guard)."""
        if not self.armed or not record.attempts:  # invalid lines were never sent
            return [record], None
        err = record.error
        if err is None or err.status_code not in REJECTED_STATUSES:
            if self.tripped:
                return [record], None
            self.armed = False
            out, self.held = [*self.held, record], []
            return out, None
        if self.tripped:
            self.dropped += 1
            return [], None
        self.held.append(record)
        if len(self.held) < self.limit:
            return [], None
        self.tripped = True
        self.dropped += len(self.held)
        self.held = []
        return [], err.message or f"HTTP {err.status_code}"

    def release(self) -> list[Record]:
        """At the end of a run that never tripped: what is still held is written."""
        out, self.held = self.held, []
        return out
