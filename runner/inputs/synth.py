"""Synthetic benchmark prompts: random words from a fixed list, sized in tokens.

Mirrors vLLM's random dataset in spirit: fixed (or normally spread) input
and output lengths so runs compare across servers; ``max_tokens`` (and
optionally ``ignore_eos``) pins the output length.  Prompt lengths are exact
for the counter in use (``runner.inputs.tokenizer``): a tokenizer.json or tiktoken
encoding, else the chars/4 estimate that ``streamrun estimate`` and the mock
count with.  Shared prefixes exercise prefix caching; ``turns`` lines feed
multi-turn sessions.  Replaying a Mooncake trace is ``runner.inputs.synth_trace``.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import orjson

from .tokenizer import CharEstimate, TextTokenizer

WORDS = (
    "time year people way day man thing woman life child world school state family student group country "
    "problem hand part place case week company system program question work government number night point "
    "home water room mother area money story fact month lot right study book eye job word business issue "
    "side kind head house service friend father power hour game line end member law car city community "
    "name president team minute idea kid body information back parent face others level office door health "
    "person art war history party result change morning reason research girl guy moment air teacher force "
    "education foot boy age policy music market sense nation plan college interest death experience effect "
    "class control care field development role effort rate heart drug show leader light voice wife police "
    "mind price report decision son view relationship town road arm difference value building action model "
    "season society tax director position player record paper space ground form event official matter center"
).split()

#: Attempts at a prefix that differs from the ones before it (tiny prefixes can repeat).
PREFIX_TRIES = 50


class SynthError(ValueError):
    """Flags that cannot produce the asked-for workload; one line for the user."""


@dataclass(frozen=True)
class SynthSpec:
    """What `streamrun synth` writes (without --from-trace); its flags one to one."""

    count: int = 100
    input_tokens: int = 128
    output_tokens: int = 128
    seed: int = 0
    input_stddev: float = 0.0
    output_stddev: float = 0.0
    prefix_tokens: int = 0     # 0: no shared prefix
    num_prefixes: int = 1
    turns: int = 0             # 0: single prompts; N: "turns" lines of N user messages
    think_time: float | None = None
    id_prefix: str | None = None
    ignore_eos: bool = False
    model: str | None = None

    def check(self) -> None:
        """Refuse combinations that would silently give something else than asked."""
        if self.count < 1 or self.input_tokens < 1 or self.output_tokens < 1:
            raise SynthError("--n, --input-tokens and --output-tokens must be at least 1")
        if self.input_stddev < 0 or self.output_stddev < 0:
            raise SynthError("--input-tokens-stddev and --output-tokens-stddev must be >= 0")
        if self.num_prefixes < 1:
            raise SynthError("--num-prefixes must be at least 1")
        if self.num_prefixes > 1 and not self.prefix_tokens:
            raise SynthError("--num-prefixes needs --prefix-tokens (how long each shared prefix is)")
        if self.prefix_tokens and not self.turns and self.prefix_tokens >= self.input_tokens:
            raise SynthError(f"--prefix-tokens {self.prefix_tokens} must be less than --input-tokens "
                             f"{self.input_tokens}: a prompt is the shared prefix plus at least 1 token of its own")
        if self.think_time is not None and not self.turns:
            raise SynthError("--think-time needs --turns (it is the pause between turns of a session)")


@dataclass
class Shortfall:
    """Prompts whose count missed the target (a tokenizer that merges across
    the cut in ways recounting cannot fix); reported once, at the end."""

    lines: int = 0
    worst: int = 0

    def note(self, got: int, want: int) -> None:
        if got != want:
            self.lines += 1
            self.worst = max(self.worst, abs(got - want))


def default_id_prefix(seed: int, kind: str = "synth") -> str:
    """``synth-<seed>``: ids are ``<prefix>-<index>``, and since the index holds
    no '-', two files whose prefixes differ (different seeds) never share an id."""
    return f"{kind}-{seed}"


def custom_id(prefix: str, index: int) -> str:
    return f"{prefix}-{index}"


def random_words(rng: random.Random, k: int) -> list[str]:
    return [rng.choice(WORDS) for _ in range(k)]


def exact_text(tok: TextTokenizer, rng: random.Random, n: int, head: str = "", lead: str = "") -> tuple[str, int]:
    """``head + lead + words`` counting exactly n tokens (head included) where the
    counter allows, and the count it has.  Words come from ``rng`` in order, so
    the same rng state gives the same text, and a shorter n gives a prefix of
    the text a longer n would."""
    words: list[str] = []
    batch = n + 8
    while True:
        words += random_words(rng, batch)
        body = " ".join(words)
        have = tok.count(head + lead + body)
        if have > n:
            break
        batch = max(8, n - have + 8)
    return tok.fit(head, lead, body, n)


def spread(rng: random.Random, mean: int, stddev: float, low: int = 1) -> int:
    """``mean`` itself, or a normal draw around it rounded and clipped to >= ``low``."""
    if stddev <= 0:
        return max(mean, low)
    return max(low, round(rng.gauss(mean, stddev)))


def shared_prefixes(spec: SynthSpec, tok: TextTokenizer, shortfall: Shortfall) -> list[str]:
    """``num_prefixes`` distinct texts of ``prefix_tokens`` tokens, each from its own seeded rng."""
    prefixes: list[str] = []
    for k in range(spec.num_prefixes if spec.prefix_tokens else 0):
        rng = random.Random(f"{spec.seed}:prefix:{k}")
        for _ in range(PREFIX_TRIES):
            text, got = exact_text(tok, rng, spec.prefix_tokens)
            if text not in prefixes:
                break
        else:
            raise SynthError(f"cannot make {spec.num_prefixes} distinct prefixes of {spec.prefix_tokens} tokens: "
                             "use fewer --num-prefixes or longer --prefix-tokens")
        shortfall.note(got, spec.prefix_tokens)
        prefixes.append(text)
    return prefixes


def synth_lines(spec: SynthSpec, tok: TextTokenizer | None = None,
                shortfall: Shortfall | None = None) -> Iterator[dict[str, Any]]:
    """The input lines `streamrun synth` writes, one dict each, deterministic in ``spec``."""
    spec.check()
    tok = tok or CharEstimate()
    shortfall = shortfall if shortfall is not None else Shortfall()
    prefixes = shared_prefixes(spec, tok, shortfall)
    id_prefix = spec.id_prefix if spec.id_prefix is not None else default_id_prefix(spec.seed)
    text_rng = random.Random(spec.seed)
    len_rng = random.Random(f"{spec.seed}:lengths")
    # Single prompts hold the prefix, so they need one token more; turns carry it as a system message.
    low = 1 if spec.turns else spec.prefix_tokens + 1
    for i in range(spec.count):
        prefix = prefixes[i % len(prefixes)] if prefixes else ""
        line: dict[str, Any] = {"custom_id": custom_id(id_prefix, i)}
        if spec.turns:
            if prefix:
                line["messages"] = [{"role": "system", "content": prefix}]
            line["turns"] = []
            for _ in range(spec.turns):
                want = spread(len_rng, spec.input_tokens, spec.input_stddev, low)
                text, got = exact_text(tok, text_rng, want)
                shortfall.note(got, want)
                line["turns"].append(text)
        else:
            want = spread(len_rng, spec.input_tokens, spec.input_stddev, low)
            text, got = exact_text(tok, text_rng, want, prefix, " " if prefix else "")
            shortfall.note(got, want)
            line["messages"] = [{"role": "user", "content": text}]
        line["max_tokens"] = spread(len_rng, spec.output_tokens, spec.output_stddev)
        if spec.think_time is not None:
            line["think_time_s"] = spec.think_time
        yield finish_line(line, ignore_eos=spec.ignore_eos, model=spec.model)


def finish_line(line: dict[str, Any], *, ignore_eos: bool, model: str | None) -> dict[str, Any]:
    """The options every synth line shares, trace lines included."""
    if ignore_eos:
        line["ignore_eos"] = True
    if model:
        line["model"] = model
    return line


def write_lines(out: BinaryIO, lines: Iterable[dict[str, Any]]) -> int:
    """JSONL to ``out``; how many lines were written."""
    n = 0
    for line in lines:
        out.write(orjson.dumps(line) + b"\n")
        n += 1
    out.flush()
    return n
