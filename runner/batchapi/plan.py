"""Input lines to the providers' wire requests, and into parts that each stay within one batch's limits.

Why apart from the HTTP calls: what a line becomes is decided before
anything is sent (a line no batch can take is an ``invalid_input`` record
at once), and again, identically, whenever a part's lines are read back to
upload them or to match their results.

- A line becomes the request its live run would send (the same
  `build_body` of its API: the run's defaults under the line's own keys,
  Anthropic's translation of chat lines with its ``system`` and
  ``max_tokens`` rules), without ``stream``: a batch answers whole replies.
- OpenAI: a Batch request line ``{custom_id, method, url, body}``; one
  endpoint and one model per batch (chat, completions, Responses and
  embeddings lines go to batches of their own).  Anthropic:
  ``{custom_id, params}`` for ``/v1/messages`` lines only, with a custom_id
  that matches ``^[a-zA-Z0-9_-]{1,64}$``: one that does not (``in.jsonl:12``)
  is sent as ``sr-`` and 32 hex digits of its hash, and mapped back.
- A part closes before a line would take it over the provider's request
  count, its bytes (the file, or the create request's body) or
  ``--max-lines-per-batch``.
"""

from __future__ import annotations

import hashlib
import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from ..engine.answers import response_format
from ..engine.send import PROTOCOLS
from ..engine.structured import format_problem
from ..errors import UsageError
from ..inputs.items import InputItem
from ..stream.headers import ANTHROPIC
from ..stream.paths import (
    CHAT_PATH,
    COMPLETIONS_PATH,
    EMBEDDINGS_PATH,
    MESSAGES_PATH,
    RESPONSES_PATH,
    InvalidRequestLine,
)
from .settings import BatchSettings
from .state import Part

OPENAI_ENDPOINTS = (CHAT_PATH, COMPLETIONS_PATH, RESPONSES_PATH, EMBEDDINGS_PATH)
ANTHROPIC_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
ENVELOPE = len(b'{"requests":[]}')  # Anthropic's create body around its requests
_NOT_SENT = ("stream", "stream_options")  # a batch answers whole replies


@dataclass(slots=True)
class Wire:
    """One line as the provider's Batch API takes it."""

    wire_id: str  # its custom_id on the wire
    endpoint: str  # the API path
    model: str | None
    data: bytes  # the Batch request line (OpenAI) or the {custom_id, params} object (Anthropic), as JSON
    request: dict[str, Any]  # the body or params sent
    inputs: int = 1  # embedding inputs


def anthropic_id(custom_id: str) -> str:
    """The custom_id Anthropic takes for `custom_id`: itself when it conforms, else `sr-` and 32 hex digits."""
    if ANTHROPIC_ID.match(custom_id):
        return custom_id
    return "sr-" + hashlib.blake2b(custom_id.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()


def wire_request(item: InputItem, settings: BatchSettings, defaults: dict, model: str | None,
                 on_drop: Callable[[str, str], None] | None = None) -> Wire:
    """The line as its provider's batch takes it; InvalidRequestLine for a line no batch of it can take."""
    path, body = item.path, item.body or {}
    if path is None:  # an invalid line (its callers answer those first): its error says why
        raise InvalidRequestLine(item.error or "no request")
    if item.session is not None:
        raise InvalidRequestLine("a session ('turns') is several requests, each after the one before: a batch "
                                 "cannot run it (streamrun run can)")
    anthropic = settings.provider == ANTHROPIC
    if anthropic and path != MESSAGES_PATH:
        raise InvalidRequestLine(f"{path} lines cannot go to Anthropic's Message Batches, which answer "
                                 f"{MESSAGES_PATH} requests only")
    if not anthropic and path not in OPENAI_ENDPOINTS:
        raise InvalidRequestLine(f"{path} lines cannot go to OpenAI's Batch API ({', '.join(OPENAI_ENDPOINTS)}); "
                                 "--api anthropic sends them to Anthropic's")
    request = PROTOCOLS[path].build_body(body, path=path, defaults=defaults, model=model, include_usage=False,
                                         on_drop=on_drop)
    for key in _NOT_SENT:
        request.pop(key, None)
    problem = format_problem(response_format(request))
    if problem is not None:
        raise InvalidRequestLine(problem)
    line_model = request.get("model") if isinstance(request.get("model"), str) else None
    if line_model is None:
        raise InvalidRequestLine("no model: name one on the line, or give --model")
    if anthropic:
        wire_id = anthropic_id(item.custom_id)
        data = orjson.dumps({"custom_id": wire_id, "params": request})
        return Wire(wire_id, path, None, data, request)
    data = orjson.dumps({"custom_id": item.custom_id, "method": "POST", "url": path, "body": request})
    given = request.get("input")
    inputs = len(given) if path == EMBEDDINGS_PATH and isinstance(given, list) else 1
    return Wire(item.custom_id, path, line_model, data, request, inputs)


class Fingerprint:
    """A hash of a part's custom_ids in order: the same lines, the same fingerprint."""

    def __init__(self) -> None:
        self._h = hashlib.blake2b(digest_size=16)

    def add(self, custom_id: str) -> None:
        self._h.update(custom_id.encode("utf-8", "surrogatepass") + b"\n")

    def hexdigest(self) -> str:
        return self._h.hexdigest()


@dataclass
class _Open:
    """A part being filled."""

    part: Part
    bytes: int
    inputs: int = 0
    fingerprint: Fingerprint = field(default_factory=Fingerprint)
    wire_ids: set[str] = field(default_factory=set)


class Planner:
    """Lines, in input order, into parts: one open part per endpoint (and model, for OpenAI) at a time."""

    def __init__(self, settings: BatchSettings, first_index: int) -> None:
        self.settings = settings
        self.limits = settings.limits
        self.next_index = first_index
        self.open: dict[tuple[str, str | None], _Open] = {}
        self.parts: list[Part] = []
        self._base = ENVELOPE if settings.provider == ANTHROPIC else 0

    def fits_alone(self, wire: Wire) -> bool:
        """Whether any batch could take the line (its bytes under the limit)."""
        return self._base + len(wire.data) + 1 <= self.limits.max_bytes

    def add(self, ordinal: int, custom_id: str, wire: Wire) -> None:
        key = (wire.endpoint, wire.model)
        size = len(wire.data) + 1  # a newline, or a comma
        current = self.open.get(key)
        if current is not None and not self._room(current, size, wire.inputs):
            self._close(key)
            current = None
        if current is None:
            part = Part(self.next_index, wire.endpoint, wire.model, 0, [], "")
            self.next_index += 1
            self.parts.append(part)
            current = self.open[key] = _Open(part, self._base)
        if wire.wire_id in current.wire_ids:  # two ids that map to one (a hash collision): never sent as one
            raise UsageError(f"{custom_id!r} is sent to the provider as {wire.wire_id!r}, as another line of "
                             "its batch is: change one of the custom_ids")
        current.wire_ids.add(wire.wire_id)
        part = current.part
        part.lines += 1
        current.bytes += size
        current.inputs += wire.inputs
        current.fingerprint.add(custom_id)
        if part.ranges and part.ranges[-1][1] == ordinal:
            part.ranges[-1][1] = ordinal + 1
        else:
            part.ranges.append([ordinal, ordinal + 1])

    def _room(self, current: _Open, size: int, inputs: int) -> bool:
        limits = self.limits
        return (current.part.lines < self.settings.max_lines and current.bytes + size <= limits.max_bytes
                and (limits.max_embedding_inputs is None or current.part.endpoint != EMBEDDINGS_PATH
                     or current.inputs + inputs <= limits.max_embedding_inputs))

    def _close(self, key: tuple[str, str | None]) -> None:
        current = self.open.pop(key)
        current.part.fingerprint = current.fingerprint.hexdigest()

    def finish(self) -> list[Part]:
        """Every part, in the order each was opened (its index)."""
        for key in list(self.open):
            self._close(key)
        return self.parts


class Membership:
    """Which of some parts an input line (by its number) belongs to: their ranges, searched by bisection."""

    def __init__(self, parts: list[Part]) -> None:
        spans = sorted(((first, end, part) for part in parts for first, end in part.ranges), key=lambda s: s[0])
        self._starts = [s[0] for s in spans]
        self._spans = spans

    def __bool__(self) -> bool:
        return bool(self._spans)

    def owner(self, ordinal: int) -> Part | None:
        i = bisect_right(self._starts, ordinal) - 1
        if i >= 0:
            first, end, part = self._spans[i]
            if first <= ordinal < end:
                return part
        return None
