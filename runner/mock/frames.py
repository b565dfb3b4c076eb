"""The bytes the mock sends: reply text, event timing and SSE frame templates.

Why it exists: the hot path of a stream is "look up a token, concatenate
two pre-built byte strings"; keeping the vocabulary, the per-response
templates and the event schedule together (and free of aiohttp) keeps that
path small and testable on its own.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import orjson

__all__ = ["DONE", "ERROR_EVENT", "Frames", "Schedule", "content_events", "frames", "reply_text"]

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


@dataclass(slots=True)
class Frames:
    """Byte templates of one response's SSE chunks."""

    head: bytes  # 'data: {"id":...,"choices":['
    tail: bytes  # ']}\n\n' or '],"usage":null}\n\n'
    role: bytes | None
    content_pre: bytes
    content_post: bytes
    chat: bool

    def finish(self, reason: str) -> bytes:
        if self.chat:
            choice = b'{"index":0,"delta":{},"logprobs":null,"finish_reason":"%s"}' % reason.encode()
        else:
            choice = b'{"index":0,"text":"","logprobs":null,"finish_reason":"%s"}' % reason.encode()
        return self.head + choice + self.tail

    def usage(self, usage: dict[str, int]) -> bytes:
        return self.head + b'],"usage":' + orjson.dumps(usage) + b"}\n\n"


def frames(chat: bool, rid: str, created: int, model_json: bytes, usage_null: bool) -> Frames:
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
    return Frames(head, tail, role, pre, post, chat)
