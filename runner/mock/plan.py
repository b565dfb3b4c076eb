"""A Responses or Messages request as the mock acts on it, and the reply it plans.

Why it exists: ``responses`` and ``anthropic`` parse different bodies but
then need the same few facts (stream or not, the output limit, the prompt's
size and the seed of its reply text, the reasoning wanted) and the same
answer to "how long is the reply, and when is each event due"; ``endpoint``
serves whatever this plans.  It is the counterpart of ``request`` (chat and
completions) for these two APIs.

How long a reply is
    The model "wants" ``output_tokens`` answer tokens, after ``R`` reasoning
    tokens when the request asks for reasoning it can see (Responses:
    ``reasoning.summary`` set; Messages: ``thinking.type`` "enabled" or
    "adaptive"; ``R`` is ``mock.reasoning_tokens``, else half of
    ``output_tokens``, at most ``thinking.budget_tokens``).  An output limit
    below ``R + output_tokens`` (``max_output_tokens``, ``max_tokens``) cuts
    the reply there: finish "length" (Responses ``response.incomplete`` with
    reason ``max_output_tokens``; Messages ``stop_reason: "max_tokens"``),
    else "stop" (``response.completed``; ``end_turn``).  A script entry sets
    the number of events instead, reasoning first.

Text and prompt size are the chat mock's: the body's turns are read as chat
messages (``prompt_tokens_estimate``) and their text, joined by NULs, seeds
the reply (CRC32); the reasoning text has a seed of its own.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import MockConfig
from .frames import Schedule, content_events, reply_text
from .request import bad_request, prompt_tokens_estimate
from .state import MockState
from .validate import Refusal, check_content_type, decode, is_int

__all__ = ["ApiRequest", "Plan", "plan", "mock_reasoning", "text_pieces", "seed_and_tokens", "read_body"]


@dataclass(slots=True)
class ApiRequest:
    """The parts of a Responses or Messages request the mock acts on."""

    body: dict[str, Any]
    stream: bool
    max_tokens: int | None  # the request's output limit, None when it set none
    prompt_tokens: int
    seed: int
    reasoning: int  # reasoning tokens the model wants (0: none visible)

    @property
    def mock(self) -> dict[str, Any]:
        return self.body.get("mock") or {}


@dataclass(frozen=True, slots=True)
class Plan:
    """One reply: ``reasoning`` tokens, then ``text`` tokens, ``k`` per event."""

    seed: int
    reasoning: int
    text: int
    k: int
    finish: str  # "stop" | "length"

    @property
    def reasoning_seed(self) -> int:
        return zlib.crc32(b"reasoning", self.seed)

    @property
    def reasoning_events(self) -> int:
        return -(-self.reasoning // self.k)

    @property
    def n_events(self) -> int:
        return self.reasoning_events + -(-self.text // self.k)

    def sent(self, n_events: int) -> tuple[int, int]:
        """(reasoning, text) tokens in the first ``n_events`` events."""
        r = self.reasoning_events
        return min(self.reasoning, n_events * self.k), max(0, min(self.text, (n_events - r) * self.k))

    def pieces(self, a: int, b: int) -> list[tuple[bool, bytes]]:
        """Events ``a`` to ``b`` as (reasoning?, JSON-escaped text)."""
        r = self.reasoning_events
        out = [(True, t) for t in content_events(b"", b"", self.reasoning_seed, self.k, self.reasoning, a, min(b, r))]
        if b > r:
            out += [(False, t) for t in content_events(b"", b"", self.seed, self.k, self.text, max(a - r, 0), b - r)]
        return out

    def texts(self) -> tuple[str, str]:
        return reply_text(self.reasoning_seed, self.reasoning), reply_text(self.seed, self.text)


def plan(state: MockState, req: ApiRequest, index: int | None) -> tuple[Plan, Schedule]:
    """The reply to ``req`` and when its events are due (``index``: the script entry timing it, if any)."""
    config = state.config
    k = config.tokens_per_chunk
    want = req.reasoning
    if index is not None:  # a script entry: its events, reasoning first
        offsets = state.script_offsets[index]
        n = len(offsets)
        r_events = min(-(-want // k), n)
        reply = Plan(req.seed, min(want, r_events * k), (n - r_events) * k, k, "stop")
        return reply, Schedule(n, offsets=offsets)
    limit = req.max_tokens
    if limit is not None and limit < want + config.output_tokens:
        reasoning = min(want, limit)
        reply = Plan(req.seed, reasoning, limit - reasoning, k, "length")
    else:
        reply = Plan(req.seed, want, config.output_tokens, k, "stop")
    return reply, Schedule(reply.n_events, config.ttft, k * config.token_interval)


def read_body(raw: bytes, content_type: str | None, config: MockConfig, not_json: Callable[[], Refusal],
              shaped: Callable[[Refusal], Refusal] | None = None) -> dict[str, Any]:
    """The body as a JSON object.  Strict mode first refuses a body that is
    not JSON by its Content-Type with ``not_json()`` (the API's own answer,
    not FastAPI's 422); ``shaped`` puts ``decode``'s refusals in the API's
    shape (None: OpenAI's, as they are)."""
    if not config.lenient:
        try:
            check_content_type(content_type, raw)
        except Refusal as refusal:
            raise not_json() from refusal
    if shaped is None:
        return decode(raw)
    try:
        return decode(raw)
    except Refusal as refusal:
        raise shaped(refusal) from None


def mock_reasoning(body: dict[str, Any], config: MockConfig) -> int:
    """Reasoning tokens wanted when asked: ``mock.reasoning_tokens``, else half the output."""
    mock = body.get("mock")
    wanted = mock.get("reasoning_tokens") if isinstance(mock, dict) else None
    if wanted is None:
        return max(1, config.output_tokens // 2)
    if not is_int(wanted) or wanted < 0:
        raise bad_request("mock.reasoning_tokens must be an integer >= 0")
    return wanted


def text_pieces(content: Any) -> list[str]:
    """The text of a content value: a string, or the text of its typed parts."""
    if isinstance(content, str):
        return [content]
    if isinstance(content, list):
        return [p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
    return []


def seed_and_tokens(turns: list[tuple[str, list[str]]]) -> tuple[int, int]:
    """The reply's seed and the prompt estimate, the chat mock's: the turns as chat messages."""
    messages = [{"role": role, "content": pieces} for role, pieces in turns]
    text = "\x00".join(p for _, pieces in turns for p in pieces)
    return zlib.crc32(text.encode("utf-8", "surrogatepass")), prompt_tokens_estimate({"messages": messages})
