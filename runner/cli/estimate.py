"""`streamrun estimate`: what a run will cost, before sending anything.

Streams the inputs (millions of lines are fine), estimates prompt tokens the
same way the TPM limiter does, and bounds the output by each request's
max_tokens (or a default), so the range is honest: the low end assumes
very short answers, the high end every answer at its limit.
"""

from __future__ import annotations

import sys

import click
import orjson

from ..batchapi.settings import BATCH_PRICE_FACTOR
from ..inputs.items import InputError, expand_inputs, iter_items
from ..inputs.tokens import Pricing, cost, estimate_prompt_tokens, requested_output_tokens
from ..stream.protocol import build_body
from .help import examples


def estimate_inputs(paths: list[str], *, defaults: dict, model: str | None, default_output: int) -> dict:
    counts = {"requests": 0, "invalid": 0, "prompt_tokens": 0, "max_output_tokens": 0}
    for item in iter_items(paths):
        if item.error is not None or item.path is None:  # an invalid line has no API path
            counts["invalid"] += 1
            continue
        body = build_body(item.body or {}, path=item.path, defaults=defaults, model=model, include_usage=False)
        counts["requests"] += 1
        counts["prompt_tokens"] += estimate_prompt_tokens(body, body.get("model"))
        counts["max_output_tokens"] += requested_output_tokens(body, default_output)
    return counts


@click.command("estimate", epilog=examples(
    "streamrun estimate prompts.jsonl --model gpt-4o-mini --price-input 0.15 --price-output 0.60",
    "streamrun estimate data/*.jsonl --param max_tokens=512 --json"))
@click.argument("inputs", nargs=-1, required=True)
@click.option("--model", envvar="OPENAI_MODEL", help="Model for lines that name none (picks the tokenizer).")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="Default request parameter, as for run.")
@click.option("--default-output-tokens", default=256, show_default=True, type=click.IntRange(min=1),
              help="Output tokens assumed for requests without max_tokens.")
@click.option("--price-input", type=float, help="USD per million prompt tokens.")
@click.option("--price-output", type=float, help="USD per million completion tokens.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def estimate_command(inputs, model, params, default_output_tokens, price_input, price_output, as_json) -> None:
    """Count prompts and estimated tokens (and the cost range, live and through the Batch APIs, with prices)
    without sending anything."""
    from ..config.parsers import params as parse_params
    from ..inputs.tokens import count_text_tokens

    try:
        paths = expand_inputs(inputs)
    except InputError as exc:
        raise click.UsageError(str(exc)) from None
    counts = estimate_inputs(paths, defaults=parse_params(params), model=model, default_output=default_output_tokens)
    counts["tokenizer"] = count_text_tokens("probe", model)[1]  # "tokenizer" (tiktoken) or "estimate" (chars/4)
    if price_input is not None or price_output is not None:
        pricing = Pricing(price_input or 0.0, price_output or 0.0)
        counts["cost_usd_min"] = cost(counts["prompt_tokens"], 0, pricing)
        counts["cost_usd_max"] = cost(counts["prompt_tokens"], counts["max_output_tokens"], pricing)
        # streamrun batch: OpenAI's Batch API and Anthropic's Message Batches charge half the live price
        counts["batch_cost_usd_min"] = counts["cost_usd_min"] * BATCH_PRICE_FACTOR
        counts["batch_cost_usd_max"] = counts["cost_usd_max"] * BATCH_PRICE_FACTOR
    if as_json:
        sys.stdout.write(orjson.dumps(counts, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    how = "tiktoken" if counts["tokenizer"] == "tokenizer" else "about 4 characters per token"
    click.echo(f"{counts['requests']} requests ({counts['invalid']} invalid lines)")
    click.echo(f"prompt tokens     ~{counts['prompt_tokens']:,} (counted with {how})")
    click.echo(f"output tokens     at most {counts['max_output_tokens']:,} (max_tokens, else {default_output_tokens})")
    if "cost_usd_min" in counts:
        click.echo(f"cost              ${counts['cost_usd_min']:,.4f} to ${counts['cost_usd_max']:,.4f}")
        click.echo(f"batch cost        ${counts['batch_cost_usd_min']:,.4f} to ${counts['batch_cost_usd_max']:,.4f}"
                   f" (streamrun batch: {BATCH_PRICE_FACTOR:.0%} of the live price, OpenAI's and Anthropic's)")
