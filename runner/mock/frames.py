"""The bytes the mock sends: reply text, event timing and SSE frame templates.

Why it exists: the hot path of a stream is "look up a token, concatenate
two pre-built byte strings"; keeping the vocabulary, the per-response
templates and the event schedule together (and free of aiohttp) keeps that
path small and testable on its own.

A reply with ``n`` choices or with logprobs leaves that path (one choice
per chunk, built with orjson): see ``Choice``, ``plan_choices`` and
``Frames.events``.  A reply with one choice and no logprobs never does, so
its bytes are the same as before either existed.
"""

from __future__ import annotations

import bisect
import math
import zlib
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = [
    "DONE",
    "ERROR_EVENT",
    "Choice",
    "Frames",
    "Schedule",
    "choice_logprobs",
    "choice_tokens",
    "content_events",
    "frames",
    "plan_choices",
    "reply_text",
    "token_logprobs",
]

# 61 (a prime) tokens, so every step 1..60 of the walk visits all of them.
_TOKENS: tuple[str, ...] = (
    " the", " quick", " brown", " fox", " jumps", " over", " lazy", " dog",
    " stream", " token", " latency", " café", " naïve", " über", " 日本語",
    " 模型", " 🙂", " 🚀", " Ωmega", " résumé", " straße", " ñandú", " δ",
    " \"quoted\"", "\n", " and", " of", " to", " in", " is", " a", " data",
    " model", " server", " client", " async", " batch", " event", " chunk",
    " reply", " prompt", " measure", " time", " first", " byte", " each",
    " word", " runs", " fast", " slow", " queue", " retry", " limit",
    " Привет", " مرحبا", " ✓", " €", " naïveté", " 😀👍", " end", ".",
)
_NT = len(_TOKENS)
# JSON-escaped UTF-8 without the surrounding quotes: concatenating them is
# still a valid JSON string body, which lets a chunk carry several tokens.
_ESC: tuple[bytes, ...] = tuple(orjson.dumps(t)[1:-1] for t in _TOKENS)
_ESC_FIRST: tuple[bytes, ...] = tuple(orjson.dumps(t.lstrip(" "))[1:-1] for t in _TOKENS)
_TEXT_FIRST: tuple[str, ...] = tuple(t.lstrip(" ") for t in _TOKENS)
_BYTES: tuple[list[int], ...] = tuple(list(t.encode("utf-8")) for t in _TOKENS)
_BYTES_FIRST: tuple[list[int], ...] = tuple(list(t.encode("utf-8")) for t in _TEXT_FIRST)

DONE = b"data: [DONE]\n\n"
ERROR_EVENT = (
    b'data: {"error":{"message":"mock: injected mid-stream error","type":"server_error",'
    b'"param":null,"code":"internal_error"}}\n\n'
)


def _token_index(seed: int, i: int) -> int:
    """Vocabulary index of token ``i`` of the reply to a prompt with this
    seed: a walk with a prompt-dependent start and stride (deterministic)."""
    return (seed + i * (1 + (seed >> 8) % (_NT - 1))) % _NT


def reply_text(seed: int, n: int) -> str:
    """The whole reply text (non-streaming responses)."""
    if n == 0:
        return ""
    return _TEXT_FIRST[_token_index(seed, 0)] + "".join(_TOKENS[_token_index(seed, i)] for i in range(1, n))


def content_events(pre: bytes, post: bytes, seed: int, k: int, n_tokens: int, a: int, b: int) -> list[bytes]:
    """Content events ``a`` to ``b`` (exclusive), ``k`` tokens each, as
    complete SSE frames: ``pre + escaped text + post``."""
    start = seed % _NT
    stride = 1 + (seed >> 8) % (_NT - 1)
    esc = _ESC
    if k == 1:  # the hot path: one table lookup and two concatenations each
        events = [pre + esc[(start + j * stride) % _NT] + post for j in range(max(a, 1), b)]
        if a == 0 and b > 0:
            events.insert(0, pre + _ESC_FIRST[start] + post)
        return events
    events = []
    for j in range(a, b):
        first, last = j * k, min(n_tokens, (j + 1) * k)
        parts = [esc[(start + i * stride) % _NT] for i in range(first, last)]
        if first == 0 and parts:
            parts[0] = _ESC_FIRST[start]
        events.append(pre + b"".join(parts) + post)
    return events


# --------------------------------------------------------------------------
# Several choices, logprobs


@dataclass(frozen=True, slots=True)
class Choice:
    """One choice of a reply: its index, the seed of its text, its length
    in tokens and why it ended."""

    index: int
    seed: int
    n_tokens: int
    finish_reason: str


def plan_choices(seed: int, n: int, n_tokens: int, finish_reason: str) -> tuple[Choice, ...]:
    """The ``n`` choices of a reply to a prompt with this seed.

    Choice 0 is the reply a request without ``n`` gets (same seed, length
    and finish reason).  Choice ``i > 0`` has its own seed (the CRC32 of its
    index, continued from the prompt's seed) and so its own text; it may end
    up to a quarter shorter, by a natural stop (``"stop"``), never longer, so
    that each of its events is due with the same event of choice 0."""
    choices = [Choice(0, seed, n_tokens, finish_reason)]
    for i in range(1, n):
        s = zlib.crc32(b"choice %d" % i, seed)
        short = s % (n_tokens // 4 + 1)
        choices.append(Choice(i, s, n_tokens - short, "stop" if short else finish_reason))
    return tuple(choices)


def choice_tokens(choice: Choice) -> list[str]:
    """The tokens of a choice's text (the first without its leading space)."""
    return [_TEXT_FIRST[_token_index(choice.seed, 0)] if p == 0 else _TOKENS[_token_index(choice.seed, p)]
            for p in range(choice.n_tokens)]


def token_logprobs(seed: int, p: int, top: int) -> tuple[float, list[tuple[int, float]]]:
    """The fake logprobs of token ``p`` of the choice with this seed: its
    logprob and the ``top`` most likely tokens (vocabulary indices) with
    theirs, most likely first.

    Deterministic: a CRC32 of the position and the token, continued from the
    seed.  The chosen token's logprob is in [-2.5, -0.001] and it is always
    one of the ``top``; the others share what probability it leaves, halving
    from one to the next (so the probabilities never sum above 1)."""
    v = _token_index(seed, p)
    h = zlib.crc32(b"%d:%d" % (p, v), seed)
    lp = -((h % 2500) + 1) / 1000
    if top <= 0:
        return lp, []
    rest = math.log(-math.expm1(lp))  # log(1 - p(chosen))
    step = 1 + (h >> 12) % (_NT - 1)  # 61 is prime: every alternative differs
    alts = [(v, lp)] + [((v + m * step) % _NT, round(rest - m * math.log(2), 4)) for m in range(1, top)]
    alts.sort(key=lambda a: -a[1])
    return lp, alts


def _text(p: int, v: int) -> str:
    return _TEXT_FIRST[v] if p == 0 else _TOKENS[v]


def _bytes(p: int, v: int) -> list[int]:
    return _BYTES_FIRST[v] if p == 0 else _BYTES[v]


def _chat_entries(seed: int, first: int, last: int, top: int) -> list[dict[str, Any]]:
    """Chat ``logprobs.content`` entries of tokens ``first`` to ``last``."""
    entries = []
    for p in range(first, last):
        v = _token_index(seed, p)
        lp, alts = token_logprobs(seed, p, top)
        entries.append({
            "token": _text(p, v),
            "logprob": lp,
            "bytes": _bytes(p, v),
            "top_logprobs": [{"token": _text(p, a), "logprob": alp, "bytes": _bytes(p, a)} for a, alp in alts],
        })
    return entries


def _completion_lists(seed: int, first: int, last: int, top: int, offset: int) -> dict[str, list[Any]]:
    """Completions ``logprobs`` of tokens ``first`` to ``last``, the first
    at character ``offset`` of the choice's text."""
    tokens, lps, tops, offsets = [], [], [], []
    for p in range(first, last):
        v = _token_index(seed, p)
        lp, alts = token_logprobs(seed, p, top)
        text = _text(p, v)
        tokens.append(text)
        lps.append(lp)
        tops.append({_text(p, a): alp for a, alp in alts})
        offsets.append(offset)
        offset += len(text)
    return {"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets}


def choice_logprobs(choice: Choice, chat: bool, top: int) -> dict[str, Any]:
    """A whole choice's ``logprobs`` (non-streaming replies)."""
    if chat:
        return {"content": _chat_entries(choice.seed, 0, choice.n_tokens, top), "refusal": None}
    return _completion_lists(choice.seed, 0, choice.n_tokens, top, 0)


# --------------------------------------------------------------------------
# Timing


@dataclass(frozen=True, slots=True)
class Schedule:
    """When each content event is due, in seconds after the request arrived:
    ``ttft + j * step`` or, for a script entry, its cumulative offsets."""

    n: int
    ttft: float = 0.0
    step: float = 0.0
    offsets: tuple[float, ...] | None = None

    def offset(self, j: int) -> float:
        return self.offsets[j] if self.offsets is not None else self.ttft + j * self.step

    def due(self, elapsed: float, j: int) -> int:
        """How many events (at least ``j``) are due ``elapsed`` s after arrival."""
        if self.offsets is not None:
            return bisect.bisect_right(self.offsets, elapsed, j, self.n)
        if elapsed < self.ttft:
            return j
        if self.step == 0.0:
            return self.n
        return max(j, min(self.n, int((elapsed - self.ttft) / self.step) + 1))


# --------------------------------------------------------------------------
# One response's chunks


@dataclass(slots=True)
class Frames:
    """Byte templates of one response's SSE chunks.

    ``choices`` are the reply's choices (one by default) and ``k`` the
    tokens per event; ``logprobs`` is None (no logprobs) or how many top
    alternatives each token lists.  Content event ``j`` carries tokens
    ``j*k`` to ``(j+1)*k`` of every choice still that long, one choice per
    chunk, in index order (choice 0 first, as the schedule times it)."""

    head: bytes  # 'data: {"id":...,"choices":['
    tail: bytes  # ']}\n\n' or '],"usage":null}\n\n'
    role: bytes | None
    content_pre: bytes
    content_post: bytes
    chat: bool
    choices: tuple[Choice, ...] = ()
    k: int = 1
    logprobs: int | None = None
    _offsets: dict[int, list[int]] = field(default_factory=dict)  # completions: text_offset per choice

    @property
    def simple(self) -> bool:
        """One choice and no logprobs: the pre-built templates' hot path."""
        return len(self.choices) <= 1 and self.logprobs is None

    def opening(self) -> list[bytes]:
        """The chunks sent at once: a role chunk per choice (chat only)."""
        if self.role is None:
            return []
        if len(self.choices) <= 1:
            return [self.role]
        return [self.head + b'{"index":%d,"delta":{"role":"assistant","content":""},"logprobs":null,'
                b'"finish_reason":null}' % c.index + self.tail for c in self.choices]

    def events(self, a: int, b: int) -> list[bytes]:
        """Content events ``a`` to ``b`` (exclusive), every choice's, as frames."""
        c0 = self.choices[0]
        if self.simple:
            return content_events(self.content_pre, self.content_post, c0.seed, self.k, c0.n_tokens, a, b)
        out = []
        for j in range(a, b):
            for c in self.choices:
                if j * self.k < c.n_tokens:
                    out.append(self._event(c, j))
        return out

    def _event(self, c: Choice, j: int) -> bytes:
        first, last = j * self.k, min(c.n_tokens, (j + 1) * self.k)
        text = "".join(_text(p, _token_index(c.seed, p)) for p in range(first, last))
        top = self.logprobs
        lps: dict[str, Any] | None
        if self.chat:
            lps = None if top is None else {"content": _chat_entries(c.seed, first, last, top), "refusal": None}
            choice = {"index": c.index, "delta": {"content": text}, "logprobs": lps, "finish_reason": None}
        else:
            lps = None if top is None else _completion_lists(c.seed, first, last, top, self._offset(c, first))
            choice = {"index": c.index, "text": text, "logprobs": lps, "finish_reason": None}
        return self.head + orjson.dumps(choice) + self.tail

    def _offset(self, c: Choice, p: int) -> int:
        """Character offset of token ``p`` in choice ``c``'s text."""
        offsets = self._offsets.get(c.index)
        if offsets is None:
            offsets = [0]
            for t in choice_tokens(c):
                offsets.append(offsets[-1] + len(t))
            self._offsets[c.index] = offsets
        return offsets[p]

    def sent_tokens(self, n_events: int) -> int:
        """Completion tokens over all choices in the first ``n_events`` events."""
        return sum(min(n_events * self.k, c.n_tokens) for c in self.choices)

    def closing(self) -> list[bytes]:
        """Every choice's finish chunk, in index order."""
        return [self.finish(c.finish_reason, c.index) for c in self.choices]

    def finish(self, reason: str, index: int = 0) -> bytes:
        if self.chat:
            choice = b'{"index":%d,"delta":{},"logprobs":null,"finish_reason":"%s"}' % (index, reason.encode())
        else:
            choice = b'{"index":%d,"text":"","logprobs":null,"finish_reason":"%s"}' % (index, reason.encode())
        return self.head + choice + self.tail

    def usage(self, usage: dict[str, int]) -> bytes:
        return self.head + b'],"usage":' + orjson.dumps(usage) + b"}\n\n"


def frames(
    chat: bool,
    rid: str,
    created: int,
    model_json: bytes,
    usage_null: bool,
    choices: tuple[Choice, ...] = (),
    k: int = 1,
    logprobs: int | None = None,
) -> Frames:
    """The templates for one response: chat chunks have a role chunk and
    ``delta.content``; completion chunks carry ``text`` and no role chunk."""
    obj = b"chat.completion.chunk" if chat else b"text_completion"
    head = b'data: {"id":"%s","object":"%s","created":%d,"model":%s,"system_fingerprint":"fp_mock","choices":[' % (
        rid.encode(),
        obj,
        created,
        model_json,
    )
    tail = b'],"usage":null}\n\n' if usage_null else b"]}\n\n"
    if chat:
        role = head + b'{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}' + tail
        pre = head + b'{"index":0,"delta":{"content":"'
        post = b'"},"logprobs":null,"finish_reason":null}' + tail
    else:
        role = None
        pre = head + b'{"index":0,"text":"'
        post = b'","logprobs":null,"finish_reason":null}' + tail
    return Frames(head, tail, role, pre, post, chat, choices, k, logprobs)
