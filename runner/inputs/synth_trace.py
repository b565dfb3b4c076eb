"""`streamrun synth --from-trace`: a Mooncake-style trace turned into prompt lines.

A Mooncake trace line is ``{"timestamp": ms, "input_length": L,
"output_length": O, "hash_ids": [b0, b1, ...]}``: the prompt is cut in
blocks of 512 tokens and each block is named by the hash of everything up
to its end, so two requests that share ``b0..bk`` share their first k+1
blocks of text.  The trace keeps only the ids, never the text; this module
makes text back: block b's text is random words seeded by (seed, b), so
requests that shared a prefix in production share it here and a server's
prefix cache sees the same hits.  The last block holds the remainder
``L - 512*(len(hash_ids)-1)`` and is the first tokens of that block's text.

A bad line is reported as ``FILE:LINE: why`` and skipped; the others are
still written, and the caller exits non-zero at the end (see synth_cli).
"""

from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from ..io.jsonl import JsonlReader
from .synth import Shortfall, custom_id, default_id_prefix, exact_text, finish_line
from .tokenizer import TextTokenizer

#: Tokens per hash block in Mooncake traces.
BLOCK_TOKENS = 512

#: Block texts kept in memory; a big trace has more distinct blocks than are
#: worth holding, and any block's text can be made again from (seed, id).
BLOCK_CACHE = 4096


class TraceLineError(ValueError):
    """One unusable trace line; the message says why, without file or line."""


@dataclass(frozen=True)
class TraceRequest:
    """One trace line, checked."""

    line: int
    timestamp: int | float
    input_length: int
    output_length: int
    hash_ids: tuple[int, ...]


def _int(obj: dict, key: str, low: int) -> int:
    value = obj.get(key)
    if type(value) is not int or value < low:
        raise TraceLineError(f"{key} must be an integer >= {low}, got {orjson.dumps(value).decode()}")
    return value


def trace_request(obj: Any, line: int, block_tokens: int = BLOCK_TOKENS) -> TraceRequest:
    """A trace line's JSON as a TraceRequest, or TraceLineError."""
    if not isinstance(obj, dict):
        raise TraceLineError("not a JSON object")
    stamp = obj.get("timestamp")
    if isinstance(stamp, bool) or not isinstance(stamp, (int, float)) or not math.isfinite(stamp) or stamp < 0:
        raise TraceLineError(f"timestamp must be a number of milliseconds >= 0, got {orjson.dumps(stamp).decode()}")
    input_length = _int(obj, "input_length", 1)
    output_length = _int(obj, "output_length", 1)
    ids = obj.get("hash_ids")
    if not isinstance(ids, list) or not all(type(b) is int for b in ids):
        raise TraceLineError("hash_ids must be a list of integers")
    blocks = -(-input_length // block_tokens)
    if len(ids) != blocks:
        raise TraceLineError(f"input_length {input_length} spans {blocks} blocks of {block_tokens} tokens "
                             f"but hash_ids has {len(ids)}")
    return TraceRequest(line, stamp, input_length, output_length, tuple(ids))


def read_trace(path: str, on_error: Callable[[str], None],
               block_tokens: int = BLOCK_TOKENS) -> Iterator[TraceRequest]:
    """The good lines of the trace at ``path``, read by the one JSONL reader (a BOM, blank lines, a torn
    last line); each bad one goes to ``on_error`` as ``PATH:LINE: why`` and is skipped."""
    with JsonlReader(path, on_bad=lambda number, why: on_error(f"{path}:{number}: {why}")) as reader:
        for number, _raw, obj in reader.objects():
            try:
                yield trace_request(obj, number, block_tokens)
            except TraceLineError as exc:
                reader.bad(number, str(exc))


class BlockTexts:
    """Text of each hash block, deterministic in (seed, block id).  Every block
    starts with a space so blocks join at a word boundary and count the same
    alone as in a prompt; a partial block is the first tokens of the full one."""

    def __init__(self, tok: TextTokenizer, seed: int, block_tokens: int = BLOCK_TOKENS) -> None:
        self.tok, self.seed, self.block_tokens = tok, seed, block_tokens
        self.text = functools.lru_cache(maxsize=BLOCK_CACHE)(self._make)

    def _make(self, block: int, tokens: int) -> str:
        return exact_text(self.tok, random.Random(f"{self.seed}:block:{block}"), tokens, lead=" ")[0]

    def prompt(self, req: TraceRequest) -> str:
        last = req.input_length - self.block_tokens * (len(req.hash_ids) - 1)
        sizes = [self.block_tokens] * (len(req.hash_ids) - 1) + [last]
        return "".join(self.text(block, size) for block, size in zip(req.hash_ids, sizes, strict=True))


def trace_lines(path: str, tok: TextTokenizer, *, on_error: Callable[[str], None], seed: int = 0,
                id_prefix: str | None = None, limit: int | None = None, ignore_eos: bool = False,
                model: str | None = None, block_tokens: int = BLOCK_TOKENS,
                shortfall: Shortfall | None = None) -> Iterator[dict[str, Any]]:
    """One input line per good trace line (at most ``limit``), in trace order:
    ``timestamp`` kept, the prompt ``input_length`` tokens long, ``max_tokens``
    the ``output_length``.  Ids are ``<prefix>-<trace line number>``."""
    blocks = BlockTexts(tok, seed, block_tokens)
    prefix = id_prefix if id_prefix is not None else default_id_prefix(seed, "trace")
    shortfall = shortfall if shortfall is not None else Shortfall()
    for n, req in enumerate(read_trace(path, on_error, block_tokens)):
        if limit is not None and n >= limit:
            return
        text = blocks.prompt(req)
        shortfall.note(tok.count(text), req.input_length)
        line = {"custom_id": custom_id(prefix, req.line), "timestamp": req.timestamp,
                "messages": [{"role": "user", "content": text}], "max_tokens": req.output_length}
        yield finish_line(line, ignore_eos=ignore_eos, model=model)
