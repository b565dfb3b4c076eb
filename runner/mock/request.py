"""A completion request as the mock acts on it: parsed, checked, measured.

Why it exists: every handler needs the same few facts about a request body
(stream or not, usage or not, how many tokens, the prompt's size and the
seed of its reply text, how many choices, whether logprobs) and needs them
only once the body has passed the
same checks a real server makes (``validate``), or, with
``MockConfig.lenient``, the few without which nothing can be served.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, TypeGuard

from ..inputs.tokens import content_text
from .config import MockConfig
from .validate import (
    MAX_COMPLETION_LOGPROBS,
    MAX_N,
    MAX_TOP_LOGPROBS,
    Refusal,
    check_body,
    check_content_type,
    check_context,
    check_model,
    decode,
)

__all__ = ["Request", "parse", "prompt_tokens_estimate", "bad_request"]


@dataclass(slots=True)
class Request:
    """The parts of a completion request the mock acts on."""

    body: dict[str, Any]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    prompt_tokens: int
    seed: int
    n: int = 1  # choices
    logprobs: int | None = None  # None: no logprobs; else the top alternatives listed per token

    @property
    def mock(self) -> dict[str, Any]:
        """The fault-injection control field (``{}`` when absent)."""
        return self.body.get("mock") or {}


def bad_request(message: str) -> Refusal:
    """The mock's own 400 (a malformed ``mock`` field, lenient-mode checks)."""
    return Refusal.error(400, message, code="invalid_request")


def parse(raw: bytes, content_type: str | None, chat: bool, config: MockConfig) -> Request:
    """Check a body as a real server would (unless ``config.lenient``) and
    extract what the mock needs.  Raises ``Refusal``."""
    strict = not config.lenient
    if strict:
        check_content_type(content_type, raw)
    body = decode(raw)
    if strict:
        check_body(body, chat)
        check_model(body, config)
    else:
        _check_servable(body, chat)
    max_tokens = next((body[k] for k in ("max_completion_tokens", "max_tokens") if body.get(k) is not None), None)
    mock = body.get("mock")
    if mock is not None and not isinstance(mock, dict):
        raise bad_request("'mock' must be an object")
    prompt_tokens = prompt_tokens_estimate(body)
    if strict:
        check_context(prompt_tokens, max_tokens, config.max_context, chat)
    options = body.get("stream_options")
    include_usage = isinstance(options, dict) and options.get("include_usage") is True
    seed = zlib.crc32(_prompt_text(body).encode("utf-8", "surrogatepass"))
    n = body.get("n")
    n = n if _is_int(n) and n >= 1 else 1
    if n > MAX_N:  # strict mode refused it already
        raise bad_request(f"'n' must be at most {MAX_N}")
    return Request(
        body, body.get("stream") is True, include_usage, max_tokens, prompt_tokens, seed, n, _logprobs(body, chat)
    )


def _is_int(value: Any) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _logprobs(body: dict[str, Any], chat: bool) -> int | None:
    """None without logprobs, else how many alternatives each token lists:
    chat ``top_logprobs`` (0 when absent) with ``logprobs: true``,
    completions ``logprobs``.  Out-of-range values (lenient mode only) are
    clamped; mistyped ones mean no logprobs."""
    logprobs = body.get("logprobs")
    if chat:
        if logprobs is not True:
            return None
        top = body.get("top_logprobs")
        return min(max(top, 0), MAX_TOP_LOGPROBS) if _is_int(top) else 0
    return min(max(logprobs, 0), MAX_COMPLETION_LOGPROBS) if _is_int(logprobs) else None


def _check_servable(body: dict[str, Any], chat: bool) -> None:
    """Lenient mode: only what the mock cannot do without."""
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("'messages' must be a non-empty list")
    elif not isinstance(body.get("prompt"), (str, list)):
        raise bad_request("'prompt' must be a string or a list")
    for key in ("max_completion_tokens", "max_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise bad_request(f"'{key}' must be an integer >= 0")
        break


def prompt_tokens_estimate(body: dict[str, Any]) -> int:
    """The mock's ``prompt_tokens``: OpenAI-cookbook style with chars/4 text.

    Chat: 3 per message + ceil(len/4) of its role, each text content part
    and name (+1 for a name) + 3 for reply priming.  Completions: ceil(len/4)
    per prompt string, or the number of ids in a pre-tokenized prompt.
    Identical to the client's estimate when tiktoken is not installed, so
    TPM accounting agrees on both sides."""

    def est(s: str) -> int:
        return -(-len(s) // 4)

    messages = body.get("messages")
    if isinstance(messages, list):
        total = 3
        for m in messages:
            if not isinstance(m, dict):
                continue
            total += 3
            for key in ("role", "name"):
                if isinstance(m.get(key), str):
                    total += est(m[key]) + (1 if key == "name" else 0)
            total += sum(est(p) for p in content_text(m.get("content")))
        return total
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return est(prompt)
    if isinstance(prompt, list):
        if prompt and all(isinstance(t, int) for t in prompt):
            return len(prompt)
        return sum(est(p) if isinstance(p, str) else len(p) if isinstance(p, list) else 0 for p in prompt)
    return 0


def _prompt_text(body: dict[str, Any]) -> str:
    """All prompt text, used only to seed the reply text."""
    messages = body.get("messages")
    if isinstance(messages, list):
        return "\x00".join(
            p for m in messages if isinstance(m, dict) for p in content_text(m.get("content"))
        )
    prompt = body.get("prompt")
    if isinstance(prompt, list):
        return "\x00".join(str(p) for p in prompt)
    return str(prompt)
