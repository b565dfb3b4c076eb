"""Token estimation and cost arithmetic.

Two callers need token counts *before* a response arrives: the TPM limiter
(``runner.engine.quota``) has to charge a request against the per-minute token
quota when it is sent, and the summary wants a cost figure when a server
omits ``usage``.  Exact counts are nice to have but never worth blocking
on, so everything here degrades to a documented estimate:

* ``tiktoken`` is optional (``pip install streamrun[tokens]``) and is only
  imported on first use, so importing this module stays cheap.
* Even when installed, ``tiktoken`` downloads its BPE files on first use,
  with ``requests.get`` and no timeout.  Offline that can hang or fail, so
  we only ask it for an encoding whose file is already in tiktoken's cache
  (``TIKTOKEN_CACHE_DIR`` / ``DATA_GYM_CACHE_DIR`` / the default cache dir),
  unless ``STREAMRUN_TIKTOKEN_DOWNLOAD=1`` allows a download.  Any failure
  is remembered per encoding and never retried.
* The fallback is OpenAI's rule of thumb, one token per four characters,
  rounded up.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: ``count_text_tokens`` source labels.
SOURCE_TOKENIZER = "tokenizer"
SOURCE_ESTIMATE = "estimate"

#: Characters per token for the fallback estimate (OpenAI's rule of thumb
#: for English text; it over-counts code a little and under-counts CJK).
CHARS_PER_TOKEN = 4

#: Chat framing overhead, from OpenAI's "How to count tokens with tiktoken"
#: cookbook for gpt-3.5-turbo-0613 and later: every message costs 3 extra
#: tokens (``<|start|>{role}\n ... <|end|>``), a ``name`` costs 1 more, and
#: every reply is primed with 3 tokens (``<|start|>assistant<|message|>``).
TOKENS_PER_MESSAGE = 3
TOKENS_PER_NAME = 1
TOKENS_REPLY_PRIMING = 3

_BLOB_BASE = "https://openaipublic.blob.core.windows.net/encodings/"
_ENCODING_URLS = {
    "o200k_base": _BLOB_BASE + "o200k_base.tiktoken",
    "cl100k_base": _BLOB_BASE + "cl100k_base.tiktoken",
}

# Models tokenized with o200k_base: gpt-4o family, gpt-4.1, gpt-4.5, gpt-5,
# gpt-oss and the o-series reasoning models (o1, o3, o4-mini, ...).
_O200K_MODEL = re.compile(r"^(gpt-4o|chatgpt-4o|gpt-4\.1|gpt-4\.5|gpt-5|gpt-oss|o\d)")

# encoding name -> loaded encoding, or None once loading failed (never retried).
_encodings: dict[str, Any] = {}


def encoding_name_for_model(model: str | None) -> str:
    """tiktoken encoding for ``model``: o200k_base for the newer OpenAI
    families, cl100k_base for everything else (including non-OpenAI models,
    where any BPE is only an approximation anyway).  A provider prefix such
    as ``openai/gpt-4o`` is ignored."""
    if model:
        name = model.rsplit("/", 1)[-1].lower()
        if _O200K_MODEL.match(name):
            return "o200k_base"
    return "cl100k_base"


def _tiktoken_cache_dirs() -> list[str]:
    """Directories where tiktoken (any version) would look for cached files."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return [os.environ[var]] if os.environ[var] else []
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return [
        os.path.join(xdg, "tiktoken"),  # tiktoken >= 0.10
        os.path.join(tempfile.gettempdir(), "data-gym-cache"),  # older releases
    ]


def _encoding_is_cached(name: str) -> bool:
    """True when loading ``name`` will not touch the network.  tiktoken keys
    its cache by the SHA-1 of the download URL."""
    url = _ENCODING_URLS.get(name)
    if url is None:
        return False
    key = hashlib.sha1(url.encode()).hexdigest()
    return any(os.path.exists(os.path.join(d, key)) for d in _tiktoken_cache_dirs())


def _download_allowed() -> bool:
    return os.environ.get("STREAMRUN_TIKTOKEN_DOWNLOAD", "").lower() in ("1", "true", "yes")


def _get_encoding(name: str) -> Any:
    """The tiktoken encoding ``name``, or None.  Tried at most once per
    process and encoding: every exception (not installed, not cached,
    download or parse failure) is swallowed and remembered."""
    try:
        return _encodings[name]
    except KeyError:
        pass
    encoding = None
    try:
        import tiktoken  # optional and heavy: imported on first use only

        if _download_allowed() or _encoding_is_cached(name):
            encoding = tiktoken.get_encoding(name)
    except Exception:
        encoding = None
    _encodings[name] = encoding
    return encoding


def load_encoding(name: str) -> Any:
    """The tiktoken encoding ``name`` under the offline rules above (cached
    file, or STREAMRUN_TIKTOKEN_DOWNLOAD=1), or None.  For callers that need
    the encoding itself, such as ``streamrun synth --tokenizer cl100k_base``."""
    return _get_encoding(name)


def why_no_encoding(name: str) -> str:
    """Why ``load_encoding(name)`` gave None, in words a user can act on."""
    try:
        import tiktoken
    except ImportError:
        from ..extras import install_hint

        return f"tiktoken is not installed ({install_hint('tokens')})"
    del tiktoken  # only whether it imports matters here
    if not (_download_allowed() or _encoding_is_cached(name)):
        where = ", ".join(_tiktoken_cache_dirs()) or "no cache directory"
        return (f"its file is not in tiktoken's cache ({where}); set STREAMRUN_TIKTOKEN_DOWNLOAD=1 to download it, "
                "or pass a tokenizer.json")
    return "tiktoken could not load it (download or parse error)"


def reset_tokenizer_cache() -> None:
    """Forget loaded/failed encodings (for tests, or after installing tiktoken)."""
    _encodings.clear()


def estimate_text_tokens(text: str) -> int:
    """ceil(len(text) / 4): OpenAI's rule of thumb, used when no tokenizer loads."""
    return -(-len(text) // CHARS_PER_TOKEN)


def count_text_tokens(text: str, model: str | None = None) -> tuple[int, str]:
    """Tokens in ``text`` and how they were counted: ``(n, "tokenizer")``
    with tiktoken, ``(n, "estimate")`` with the chars/4 fallback."""
    encoding = _get_encoding(encoding_name_for_model(model))
    if encoding is not None:
        try:
            # disallowed_special=(): prompts may legitimately contain text such
            # as "<|endoftext|>"; count it as text instead of raising.
            return len(encoding.encode(text, disallowed_special=())), SOURCE_TOKENIZER
        except Exception:
            pass
    return estimate_text_tokens(text), SOURCE_ESTIMATE


def content_text(content: Any) -> list[str]:
    """Text pieces of a chat ``content``: a string, or a list of parts of
    which only ``{"type": "text", "text": ...}`` are counted (images and
    audio are priced by the server in ways a client cannot reproduce)."""
    if isinstance(content, str):
        return [content]
    pieces: list[str] = []
    if isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                pieces.append(part)
            elif isinstance(part, Mapping) and part.get("type") == "text":
                text = part.get("text")
                if isinstance(text, str):
                    pieces.append(text)
    return pieces


def _message_tokens(message: Mapping[str, Any], model: str | None) -> int:
    """One chat message, cookbook style: overhead + role + content + name
    (+1) + the name/arguments of any assistant tool calls."""
    pieces: list[str] = []
    n = TOKENS_PER_MESSAGE
    role = message.get("role")
    if isinstance(role, str):
        pieces.append(role)
    pieces.extend(content_text(message.get("content")))
    name = message.get("name")
    if isinstance(name, str):
        pieces.append(name)
        n += TOKENS_PER_NAME
    for call in message.get("tool_calls") or ():
        function = call.get("function") if isinstance(call, Mapping) else None
        if isinstance(function, Mapping):
            for key in ("name", "arguments"):
                if isinstance(function.get(key), str):
                    pieces.append(function[key])
    return n + sum(count_text_tokens(p, model)[0] for p in pieces)


def estimate_prompt_tokens(body: Mapping[str, Any], model: str | None = None) -> int:
    """Prompt tokens of a request body, before sending it.

    Chat (``messages``): 3 per message + role/content/name text + 1 per
    name + 3 for reply priming, as in OpenAI's cookbook.  Completions
    (``prompt``): a string, a list of strings, or pre-tokenized ids (a list
    of ints, or a list of such lists) which count as themselves.  ``tools``
    definitions and images are not counted.  ``model`` defaults to
    ``body["model"]``."""
    if model is None and isinstance(body.get("model"), str):
        model = body["model"]
    messages = body.get("messages")
    if isinstance(messages, list):
        total = TOKENS_REPLY_PRIMING
        for message in messages:
            if isinstance(message, Mapping):
                total += _message_tokens(message, model)
        return total
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return count_text_tokens(prompt, model)[0]
    if isinstance(prompt, list):
        if prompt and all(isinstance(t, int) for t in prompt):
            return len(prompt)
        total = 0
        for item in prompt:
            if isinstance(item, str):
                total += count_text_tokens(item, model)[0]
            elif isinstance(item, list):
                total += len(item)
        return total
    return 0


def requested_output_tokens(body: Mapping[str, Any], default: int) -> int:
    """Output tokens the request may generate: ``max_completion_tokens``
    (the current OpenAI name, which wins when both are present), else
    ``max_tokens``, else the Responses API's ``max_output_tokens`` (what a
    line's ``max_tokens`` becomes there), else ``default``.  OpenAI charges
    this ceiling, not the eventual output, against TPM when a request is
    admitted."""
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return default


@dataclass(frozen=True)
class Pricing:
    """USD per million tokens.  ``cached_input_per_m`` prices prompt tokens
    served from the provider's prompt cache; None means no discount."""

    input_per_m: float
    output_per_m: float
    cached_input_per_m: float | None = None


def cost(prompt_tokens: int, completion_tokens: int, pricing: Pricing, cached_tokens: int = 0) -> float:
    """Cost in USD of one request.

    ``cached_tokens`` are a subset of ``prompt_tokens`` (OpenAI's
    ``usage.prompt_tokens_details.cached_tokens``) and are billed at the
    cached rate instead of the input rate.  Reasoning tokens need no term
    of their own: OpenAI bills them as output and already includes them in
    ``completion_tokens`` (``completion_tokens_details.reasoning_tokens`` is
    a breakdown, not an addition)."""
    cached = min(max(cached_tokens, 0), prompt_tokens)
    cached_rate = pricing.input_per_m if pricing.cached_input_per_m is None else pricing.cached_input_per_m
    return (
        (prompt_tokens - cached) * pricing.input_per_m
        + cached * cached_rate
        + completion_tokens * pricing.output_per_m
    ) / 1_000_000


def _detail(usage: Mapping[str, Any] | None, section: str, key: str, missing: Any = 0) -> Any:
    if not isinstance(usage, Mapping):
        return missing
    details = usage.get(section)
    if not isinstance(details, Mapping):
        return missing
    value = details.get(key)
    return value if isinstance(value, int) and not isinstance(value, bool) else missing


def reasoning_tokens(usage: Mapping[str, Any] | None, missing: Any = 0) -> Any:
    """``usage.completion_tokens_details.reasoning_tokens`` (Responses and Anthropic usage are
    normalised to it), ``missing`` when absent (a record says None: not counted, not zero).
    Already included in ``completion_tokens``."""
    return _detail(usage, "completion_tokens_details", "reasoning_tokens", missing)


def cached_prompt_tokens(usage: Mapping[str, Any] | None) -> int:
    """``usage.prompt_tokens_details.cached_tokens``, 0 when absent.
    Already included in ``prompt_tokens``; pass it to ``cost``."""
    return _detail(usage, "prompt_tokens_details", "cached_tokens")
