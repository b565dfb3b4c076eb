"""The first answers of a run, watched for a wrong key, URL or model.

Why apart: a run that cannot succeed should stop after 20 answers, not burn a
million-line input; the rule, and the records it holds back, are one concern
the engine only consults.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..record import Record
from ..stream.errors import NOT_THE_API

REJECTED_STATUSES = (401, 403, 404)


def rejected(err) -> bool:
    """401, 403, 404, or a web page where the API should answer (a wrong base URL, whatever its status)."""
    return err.status_code in REJECTED_STATUSES or (err.message or "").endswith(NOT_THE_API)


@dataclass
class RejectionGuard:
    """Stops a run whose first `limit` answers are all 401, 403 or 404 (or web pages, not the API's answers).

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
        if err is None or not rejected(err):
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


@dataclass
class ConnectGuard:
    """Stops a run whose server was never reachable: its first attempts all failed to connect.

    A wrong host or port, a server that is not up, a name that does not
    resolve, a TLS mismatch: every request fails the same way, and retrying
    each one through its backoffs only turns the input into connect_error
    records that need --retry-failed.  The guard watches attempts, not
    records, so it stops within seconds: it trips when every base URL has
    failed to connect and either `limit` attempts failed (a closed port, at
    any concurrency) or `patience_s` has passed since the first went out (a
    slow retry loop at -c 1; a connect timeout, which passes it at once),
    never waiting out the backoffs of a request's remaining attempts.  A
    `conclusive` failure (a certificate this client does not trust, a client
    certificate the server wants: the same for every attempt) trips it at
    once, when every base URL has failed so.

    It watches only until any attempt of this run, to any base URL, connects:
    after that a connect error is an outage, retried as ever (and a dead
    replica among live ones is the endpoint pool's to back off).  Until
    then, records that failed to connect are held back; a connection
    releases them, a trip (or a run that ends without ever connecting)
    drops them, so a rerun after the fix sends those prompts again.
    """

    urls: tuple[str, ...] = ()
    limit: int = 20
    patience_s: float = 5.0
    armed: bool = True
    tripped: bool = False
    held: list = field(default_factory=list)
    dropped: int = 0
    failures: int = 0
    reasons: dict = field(default_factory=dict)  # base URL -> why its last attempt did not connect
    conclusive: set = field(default_factory=set)  # base URLs whose last attempt failed in a way no retry fixes
    since: float | None = None  # when the first failed attempt went out
    pending: dict = field(default_factory=dict)  # id -> Timing of the attempts in flight while armed

    def begin(self, timing) -> None:
        self.pending[id(timing)] = timing

    def end(self, timing) -> None:
        self.pending.pop(id(timing), None)

    def connected(self) -> None:
        """An attempt reached a server (any answer): the guard is off for good; held records go out next."""
        self.armed = False
        self.pending.clear()

    def failed(self, url: str, reason: str, sent: float, now: float, conclusive: bool = False) -> str | None:
        """An attempt that could not connect; the message that stops the run when this one trips the guard.

        `conclusive` (runner/stream/errors.py ConnectError): no retry can fix it, so neither the count nor
        the patience is waited for, nor an attempt in flight whose connection opened (a TLS connection
        the server then refused opened too)."""
        if not self.armed or self.tripped:
            return None
        self.failures += 1
        self.reasons[url] = reason
        if conclusive:
            self.conclusive.add(url)
        else:
            self.conclusive.discard(url)
        self.since = sent if self.since is None else min(self.since, sent)
        if len(self.reasons) < len(self.urls):
            return None
        if len(self.conclusive) == len(self.urls):
            return self._trip()
        if self.failures < self.limit and now - self.since < self.patience_s:
            return None
        if self._opened():
            return None  # an attempt in flight did open its connection: the server is there
        return self._trip()

    def overdue(self, now: float) -> str | None:
        """The patience ran out with no failure since to notice it (at low concurrency every request may be
        waiting out a back-off): the message that stops the run when it trips the guard now."""
        if not self.armed or self.tripped or self.since is None or len(self.reasons) < len(self.urls):
            return None
        if now - self.since < self.patience_s or self._opened():
            return None
        return self._trip()

    def nothing_to_drain(self) -> bool:
        """Tripped, or attempts failed to connect and none ever did: what is in flight can only fail the same
        way, so a stop (the guard's own, another worker's, a signal) waits for none of it.  A conclusive
        failure (a TLS server that refuses this client) says so even of attempts whose connection opened."""
        return self.tripped or (self.armed and self.failures > 0 and (bool(self.conclusive) or not self._opened()))

    def _opened(self) -> bool:
        return any(t.connect_s is not None for t in self.pending.values())

    def offer(self, record: Record) -> list[Record]:
        """The records to pass on now: none while this one is held or dropped."""
        err = record.error
        failed = err is not None and err.type == "connect_error"
        if self.tripped:
            if failed:
                self.dropped += 1
                return []
            return [record]
        if self.armed:
            if failed:
                self.held.append(record)
                return []
            return [record]
        if self.held:
            out, self.held = [*self.held, record], []
            return out
        return [record]

    def finish(self) -> str | None:
        """At the end of a run: one that never connected and holds records trips now."""
        if self.armed and self.held and not self.tripped:
            return self._trip()
        return None

    def release(self) -> list[Record]:
        """At the end of a run that did not trip (`finish` first): what is still held is written."""
        out, self.held = self.held, []
        return out

    def _trip(self) -> str:
        self.tripped = True
        self.dropped += len(self.held)
        self.held = []
        from ..stream.endpoints import public_url

        where = "; nor to ".join(f"{public_url(u)}: {self.reasons.get(u, 'no attempt')}" for u in self.urls)
        attempts = f"{self.failures} attempt" + ("s" if self.failures != 1 else "")
        return (f"cannot connect to {where}. Stopped after {attempts}, none connected; nothing was written for "
                "those requests, so a rerun sends them again")
