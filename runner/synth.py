"""Synthetic benchmark prompts: random words from a fixed list, sized in tokens.

Mirrors vLLM's random dataset in spirit: fixed input/output lengths so runs
compare across servers; `max_tokens` (and optionally `ignore_eos`) pins the
output length.  One common English word is about one token for BPE
tokenizers, which is what the sizing assumes.
"""

from __future__ import annotations

import random
from typing import BinaryIO

import orjson

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


def synthetic_prompt(rng: random.Random, tokens: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(tokens))


def write_synthetic(out: BinaryIO, *, count: int, input_tokens: int, output_tokens: int, seed: int = 0,
                    ignore_eos: bool = False, model: str | None = None) -> None:
    rng = random.Random(seed)
    for i in range(count):
        line: dict = {
            "custom_id": f"synth-{seed}-{i}",
            "messages": [{"role": "user", "content": synthetic_prompt(rng, input_tokens)}],
            "max_tokens": output_tokens,
        }
        if ignore_eos:
            line["ignore_eos"] = True
        if model:
            line["model"] = model
        out.write(orjson.dumps(line) + b"\n")
    out.flush()
