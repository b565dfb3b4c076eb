"""`streamrun synth`: the command line over runner.inputs.synth and runner.inputs.synth_trace.

Registered lazily in runner/cli/main.py (LAZY_COMMANDS), so `streamrun --help`
does not import the tokenizer machinery.  Exit codes: 0 written; 1 some
trace lines were bad (each reported as FILE:LINE on stderr and skipped, the
rest written: a cron job should notice a partial file); 2 usage error or a
tokenizer that does not load (nothing written).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

import click

from ..errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from .help import examples

if TYPE_CHECKING:
    from ..inputs.synth import Shortfall
    from ..inputs.tokenizer import TextTokenizer

#: Bad trace lines reported one by one; the rest are only counted.
MAX_REPORTED = 20

#: Flags --from-trace replaces with what the trace says.
NOT_WITH_TRACE = ("input_tokens", "output_tokens", "input_stddev", "output_stddev", "prefix_tokens", "num_prefixes",
                  "turns", "think_time")

TOKENS_HELP = ("Without --tokenizer a token is 4 characters (ceil(chars/4)), the count `streamrun estimate` "
               "(without tiktoken) and the embedded mock give the message text.")


@click.command("synth", epilog=examples(
    "streamrun synth --n 1000 --input-tokens 512 --output-tokens 128 --tokenizer model-dir/ > prompts.jsonl",
    "streamrun synth --n 200 --prefix-tokens 384 --num-prefixes 4 --input-tokens 512 --seed 3 > shared.jsonl",
    "streamrun synth --from-trace sample_inputs/traces/mooncake_trace.jsonl --tokenizer tokenizer.json > trace.jsonl",
    "streamrun synth --n 50 --turns 4 --think-time 2 > sessions.jsonl"))
@click.option("--n", "--count", "count", default=100, show_default=True, type=click.IntRange(min=1),
              help="How many lines to write (with --from-trace: at most this many).")
@click.option("--input-tokens", default=128, show_default=True, type=click.IntRange(min=1),
              help="Prompt length in tokens, exact for --tokenizer (text tokens, no special tokens or "
                   "chat template). " + TOKENS_HELP)
@click.option("--output-tokens", default=128, show_default=True, type=click.IntRange(min=1),
              help="max_tokens of each line.")
@click.option("--input-tokens-stddev", "input_stddev", default=0.0, show_default=True,
              type=click.FloatRange(min=0), help="Spread prompt lengths normally around --input-tokens "
              "(seeded, rounded, at least 1 token, or the prefix plus 1).")
@click.option("--output-tokens-stddev", "output_stddev", default=0.0, show_default=True,
              type=click.FloatRange(min=0), help="Spread max_tokens normally around --output-tokens (seeded, >= 1).")
@click.option("--tokenizer", metavar="PATH|ENCODING",
              help="Count with a Hugging Face tokenizer.json (a file, or a directory holding one) or a tiktoken "
                   "encoding (cl100k_base, o200k_base: its file must be cached, or STREAMRUN_TIKTOKEN_DOWNLOAD=1).")
@click.option("--prefix-tokens", default=0, type=click.IntRange(min=0),
              help="Start prompts with a shared prefix of this many tokens (counted in --input-tokens; with "
                   "--turns it is a system message instead).")
@click.option("--num-prefixes", default=1, show_default=True, type=click.IntRange(min=1),
              help="How many distinct shared prefixes, given to lines round-robin.")
@click.option("--turns", default=0, type=click.IntRange(min=0),
              help='Write sessions: "turns" holds this many user messages of --input-tokens each.')
@click.option("--think-time", type=click.FloatRange(min=0), metavar="SECONDS",
              help='Pause between turns ("think_time_s"), with --turns.')
@click.option("--from-trace", type=click.Path(exists=True, dir_okay=False, readable=True),
              help="Mooncake-style trace (JSONL: timestamp ms, input_length, output_length, hash_ids): one line "
                   "per request, timestamp kept; requests sharing a hash block share its text.")
@click.option("--block-tokens", default=512, show_default=True, type=click.IntRange(min=1),
              help="Tokens per hash block of --from-trace (Mooncake: 512).")
@click.option("--seed", default=0, show_default=True, type=int,
              help="Seed for text and lengths: same seed, same lines.")
@click.option("--id-prefix", metavar="TEXT",
              help="custom_id is TEXT-<index> (default synth-<seed>, trace-<seed> with --from-trace, where the "
                   "index is the trace line): files with different prefixes never share an id.")
@click.option("--ignore-eos/--no-ignore-eos", default=False, show_default=True,
              help="Set ignore_eos (vLLM) so servers generate exactly max_tokens.")
@click.option("--model", default=None, help="Model named in every line (default: none; the run's --model).")
@click.pass_context
def synth_command(ctx: click.Context, count: int, tokenizer: str | None, from_trace: str | None, block_tokens: int,
                  seed: int, id_prefix: str | None, ignore_eos: bool, model: str | None, **shape) -> None:
    """Write synthetic benchmark prompts (JSONL) to stdout, sized exactly in tokens."""
    from ..inputs.synth import Shortfall, SynthError, SynthSpec, synth_lines, write_lines
    from ..inputs.tokenizer import TokenizerError, load_tokenizer

    if from_trace:
        given = [k for k in NOT_WITH_TRACE if _given(ctx, k)]
        if given:
            flag = next(p.opts[0] for p in ctx.command.params if p.name == given[0])
            raise click.UsageError(f"{flag} does not apply to --from-trace: lengths and sharing come from the trace")
    elif _given(ctx, "block_tokens"):
        raise click.UsageError("--block-tokens applies to --from-trace only")
    try:
        tok = load_tokenizer(tokenizer)
    except TokenizerError as exc:
        click.echo(f"streamrun synth: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    shortfall = Shortfall()
    if from_trace:
        sys.exit(_write_trace(from_trace, tok, count if _given(ctx, "count") else None, block_tokens=block_tokens,
                              seed=seed, id_prefix=id_prefix, ignore_eos=ignore_eos, model=model,
                              shortfall=shortfall))
    spec = SynthSpec(count=count, seed=seed, id_prefix=id_prefix, ignore_eos=ignore_eos, model=model, **shape)
    try:
        spec.check()
        write_lines(sys.stdout.buffer, synth_lines(spec, tok, shortfall))
    except SynthError as exc:
        raise click.UsageError(str(exc)) from None
    _warn_shortfall(shortfall, tok.name)


def _given(ctx: click.Context, name: str) -> bool:
    return ctx.get_parameter_source(name) != click.core.ParameterSource.DEFAULT


def _write_trace(path: str, tok: TextTokenizer, limit: int | None, *, shortfall: Shortfall, **options: Any) -> int:
    """Write the trace's lines; report bad ones; the exit code (1 when any were skipped)."""
    from ..inputs.synth import write_lines
    from ..inputs.synth_trace import trace_lines

    bad = 0

    def on_error(message: str) -> None:
        nonlocal bad
        bad += 1
        if bad <= MAX_REPORTED:
            click.echo(f"streamrun synth: {message}", err=True)

    written = write_lines(sys.stdout.buffer, trace_lines(path, tok, on_error=on_error, limit=limit,
                                                         shortfall=shortfall, **options))
    _warn_shortfall(shortfall, tok.name)
    if bad:
        more = f" ({bad - MAX_REPORTED} not shown)" if bad > MAX_REPORTED else ""
        click.echo(f"streamrun synth: skipped {bad} bad line(s) of {path}{more}; wrote {written}", err=True)
        return EXIT_FAILED
    return EXIT_OK


def _warn_shortfall(shortfall: Shortfall, name: str) -> None:
    """Say when a tokenizer kept some texts off their count (never seen with word-level or BPE tokenizers)."""
    if shortfall.lines:
        click.echo(f"streamrun synth: warning: {shortfall.lines} text(s) are off by up to {shortfall.worst} "
                   f"token(s) with {name} (it merges tokens across the cut)", err=True)
