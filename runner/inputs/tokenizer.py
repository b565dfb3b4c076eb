"""Token counters for `streamrun synth`: count text, and cut text to an exact count.

A benchmark that says "512-token prompts" must send prompts the server counts
as 512 tokens, so synth builds text, counts it with the tokenizer in use and
trims it until the count is exact.  Three counters:

* a Hugging Face ``tokenizer.json`` (the ``tokenizers`` package, extra
  ``tokens``): what vLLM, TGI and SGLang count with for that model;
* a tiktoken encoding (``cl100k_base``, ``o200k_base``), loaded under
  ``runner.inputs.tokens``' offline rules (cached file, or an explicit download);
* without either, the chars/4 estimate (``runner.inputs.tokens.estimate_text_tokens``),
  the rule ``streamrun estimate`` falls back to and the embedded mock counts
  with, so that synth, estimate and the mock agree.

Special tokens (BOS, chat templates) are not counted: the numbers are the
tokens of the text itself, which is what the prompt length of a benchmark
means across servers.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .tokens import CHARS_PER_TOKEN, estimate_text_tokens, load_encoding, why_no_encoding

#: tiktoken encodings ``runner.inputs.tokens`` knows how to find offline.
TIKTOKEN_ENCODINGS = ("cl100k_base", "o200k_base")

#: Cut-and-recount rounds before settling for the closest count.  Decoding a
#: slice of ids and encoding it again gives the same count for ordinary word
#: text at once; the rounds are for tokenizers that merge across the cut.
MAX_ROUNDS = 24


class TokenizerError(ValueError):
    """--tokenizer names nothing loadable; the message is one line for the user."""


@dataclass(frozen=True)
class CharEstimate:
    """ceil(chars / 4): exact by construction, since text can be cut to the character."""

    name: str = "estimate (4 characters per token)"

    def count(self, text: str) -> int:
        return estimate_text_tokens(text)

    def fit(self, head: str, lead: str, body: str, n: int) -> tuple[str, int]:
        """``head + lead + body`` cut to 4n characters (never into ``head``)."""
        text = head + lead + body
        text = text[:max(CHARS_PER_TOKEN * n, len(head))]
        return text, self.count(text)


@dataclass(frozen=True)
class TokenCounter:
    """A real tokenizer, as an ``encode`` (text -> ids) and a ``decode`` (ids -> text)."""

    name: str
    encode: Callable[[str], list[int]]
    decode: Callable[[list[int]], str]

    def count(self, text: str) -> int:
        return len(self.encode(text))

    def fit(self, head: str, lead: str, body: str, n: int) -> tuple[str, int]:
        """``head + lead`` + the decoded first m tokens of ``body``, m chosen so the
        whole counts n.  ``head`` is kept verbatim (it is a shared prefix), which
        is why the cut is made in ``body`` and the whole recounted: tokens can
        merge across the join.  Returns the closest text found and its count
        when no m gives exactly n."""
        ids = self.encode(body)
        base = head + lead
        m = min(max(n - self.count(base), 0), len(ids))
        best: tuple[str, int] | None = None
        seen: set[int] = set()
        for _ in range(MAX_ROUNDS):
            text = base + self.decode(ids[:m])
            got = self.count(text)
            if best is None or abs(got - n) < abs(best[1] - n):
                best = (text, got)
            if got == n:
                break
            seen.add(m)
            step = n - got
            nxt = min(max(m + step, 0), len(ids))
            if nxt in seen:  # jumping back and forth over n: walk one token at a time
                nxt = m + (1 if step > 0 else -1)
            if nxt in seen or not 0 <= nxt <= len(ids):
                break
            m = nxt
        assert best is not None
        return best


TextTokenizer = CharEstimate | TokenCounter


def load_tokenizer(spec: str | None) -> TextTokenizer:
    """``--tokenizer``: a tokenizer.json path, a directory holding one, a tiktoken
    encoding name, or None for the chars/4 estimate.  Nothing is fetched from
    the Hugging Face hub: download the model's tokenizer.json first."""
    if not spec:
        return CharEstimate()
    path = Path(spec)
    if path.is_dir():
        if not (path / "tokenizer.json").is_file():
            raise TokenizerError(f"{spec}: no tokenizer.json in this directory")
        return _hugging_face(path / "tokenizer.json")
    if path.is_file():
        return _hugging_face(path)
    if spec in TIKTOKEN_ENCODINGS:
        return _tiktoken(spec)
    raise TokenizerError(f"--tokenizer {spec}: no such file or directory, and not a tiktoken encoding "
                         f"({', '.join(TIKTOKEN_ENCODINGS)}); hub names are not fetched, download tokenizer.json")


def _hugging_face(path: Path) -> TokenCounter:
    try:
        from tokenizers import Tokenizer  # optional: extra "tokens"
    except ImportError:
        from ..extras import install_hint

        raise TokenizerError(f"{path}: reading tokenizer.json needs the tokenizers package "
                             f"({install_hint('tokens')})") from None
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises a bare Exception with serde's "line L column C"
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TokenizerError(f"{path}: not a Hugging Face tokenizer.json: {reason}") from None
    tok.no_truncation()  # a tokenizer.json may ship with truncation or padding switched on,
    tok.no_padding()     # which would cap or pad every count

    def encode(text: str) -> list[int]:
        return tok.encode(text, add_special_tokens=False).ids

    def decode(ids: list[int]) -> str:
        return tok.decode(ids)

    return TokenCounter(str(path), encode, decode)


def _tiktoken(name: str) -> TokenCounter:
    encoding = load_encoding(name)
    if encoding is None:
        raise TokenizerError(f"--tokenizer {name}: {why_no_encoding(name)}")

    def encode(text: str) -> list[int]:
        return encoding.encode(text, disallowed_special=())

    def decode(ids: list[int]) -> str:
        return encoding.decode(ids)

    return TokenCounter(name, encode, decode)
