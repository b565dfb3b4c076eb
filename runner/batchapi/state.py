"""The state file beside the output: the run's id and every part's file and batch ids, written before each step.

Why: a batch is paid for when it is created, and a crash can come between
any two steps (after the upload, after the create but before its id was
kept, while polling).  The state file is written atomically (a temporary
file, fsync, rename, fsync of the folder) *before* each next step, so a
rerun knows exactly how far each part got: ``planned`` (its lines are
chosen), ``uploaded`` (OpenAI: the file id is known), ``submitting`` (the
create was sent at ``since``; whether it arrived is found out by listing
the provider's batches before anything is submitted again), ``submitted``
(the batch id is known), ``collected`` (its records are in the output).

A part's lines are kept as ranges of input line numbers (the order in which
the inputs' lines are read, 0-based, invalid lines included) and checked on
every later read against ``fingerprint``, a hash of their custom_ids: an
input that changed under a submitted batch is refused, not misread.  The
file holds no key or header: ids, counts, statuses and the base URL as
shown (runner.stream.endpoints.public_url).
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import orjson

from ..errors import UsageError
from .remote import Remote

log = logging.getLogger("streamrun")

SCHEMA = "streamrun.batch-state/1"

PLANNED, UPLOADED, SUBMITTING, SUBMITTED, COLLECTED = "planned", "uploaded", "submitting", "submitted", "collected"


@dataclass
class Part:
    """One batch of the run: its lines, and how far it got."""

    index: int
    endpoint: str  # the API path of its lines
    model: str | None  # OpenAI: the one model of its lines
    lines: int
    ranges: list[list[int]]  # [first, end) input line numbers
    fingerprint: str  # of its lines' custom_ids, in order
    step: str = PLANNED
    file_id: str | None = None  # OpenAI: the uploaded input file
    batch_id: str | None = None
    since: float | None = None  # POSIX time the create was sent (while `submitting`)
    status: str | None = None  # the provider's word, as last seen
    counts: dict[str, int] | None = None  # the provider's request counts, as last seen
    end: str | None = None  # completed | expired | cancelled | failed, once it ended
    problem: str | None = None  # why a failed batch failed (the provider's errors)

    @property
    def pending(self) -> bool:
        """Submitted (or maybe: submitting) and not yet collected."""
        return self.step != COLLECTED


@dataclass
class State:
    """One output's batch run."""

    run: str  # names the run in each batch's metadata and file name
    provider: str  # "openai" | "anthropic"
    base_url: str  # as shown: no password
    output: str
    created_at: str
    model: str | None = None  # the model for lines that name none, once asked of the server
    parts: list[Part] = field(default_factory=list)
    schema: str = SCHEMA

    @classmethod
    def new(cls, provider: str, base_url: str, output: str) -> State:
        return cls("sr" + secrets.token_hex(6), provider, base_url, output,
                   datetime.now(UTC).isoformat(timespec="seconds"))


class Ledger:
    """The state of one output's batch run and its file: each step's outcome saved (`save`) before the next."""

    def __init__(self, path: str, state: State) -> None:
        self.path = path
        self.state = state

    def save(self) -> None:
        save_state(self.path, self.state)

    def seen(self, part: Part, remote: Remote, quiet: bool = False) -> None:
        """A batch as last seen: kept in the state, and logged when its status or counts changed."""
        changed = (remote.status, remote.counts) != (part.status, part.counts)
        part.status, part.counts = remote.status, remote.counts
        if remote.end is not None:
            part.end, part.problem = remote.end, remote.problem
        if changed and not quiet:
            log.info("batch %d/%d %s: %s, %s", part.index + 1, len(self.state.parts), remote.id, remote.status,
                     remote.progress(), extra={"data": {"batch": remote.id, "part": part.index,
                                                        "status": remote.status, "counts": remote.counts}})

    def adopt(self, part: Part, remote: Remote) -> None:
        """The part's batch is `remote`: submitted (not yet saved)."""
        part.batch_id, part.step, part.since = remote.id, SUBMITTED, None
        self.seen(part, remote, quiet=True)

    def running(self) -> list[Part]:
        """The parts whose batch may exist and is not yet collected."""
        return [p for p in self.state.parts if p.step in (SUBMITTING, SUBMITTED)]


def shown_ids(items: list[Any]) -> str:
    """Batches or parts as a message names them: their batch ids (or part numbers), five at most."""
    ids = [getattr(i, "batch_id", None) or getattr(i, "id", None) or f"part {getattr(i, 'index', '?')}"
           for i in items]
    return ", ".join(str(i) for i in ids[:5]) + (" ..." if len(ids) > 5 else "")


def state_path_for(output: str) -> str:
    """`<base>.batch.json` beside the results file (`results.jsonl` -> `results.batch.json`)."""
    base = output[:-6] if output.endswith(".jsonl") else output
    return base + ".batch.json"


def load_state(path: str) -> State | None:
    """The state file, or None when there is none; UsageError when it cannot be read as one."""
    try:
        with open(path, "rb") as f:
            doc = orjson.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError) as exc:
        raise UsageError(f"cannot read the batch state file {path}: {exc}") from None
    try:
        if doc.get("schema") != SCHEMA:
            raise ValueError(f"schema {doc.get('schema')!r}, not {SCHEMA}")
        names = {f.name for f in fields(Part)}
        parts = [Part(**{k: v for k, v in p.items() if k in names}) for p in doc["parts"]]
        top = {f.name for f in fields(State)} - {"parts"}
        return State(**{k: v for k, v in doc.items() if k in top}, parts=parts)
    except (AttributeError, KeyError, TypeError, ValueError) as exc:
        raise UsageError(f"{path} is not a streamrun batch state file ({exc})") from None


def save_state(path: str, state: State) -> None:
    """Write atomically and durably: a reader (or a rerun after a crash) sees the old state or the new one."""
    data = orjson.dumps(_document(state), option=orjson.OPT_INDENT_2)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY)
    try:
        os.fsync(folder)
    finally:
        os.close(folder)


def _document(state: State) -> dict[str, Any]:
    doc = asdict(state)
    return {"schema": doc.pop("schema"), **doc}


def remove_state(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
