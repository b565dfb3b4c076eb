"""`streamrun mock`: the embedded mock server (runner.mock) on a port of its own."""

from __future__ import annotations

import os

import click

from ..mock.config import MockConfig, load_script
from ..mock.server import run_server
from .help import examples


@click.command("mock", epilog=examples(
    "streamrun mock --port 8000                                # then: streamrun run in.jsonl -o out.jsonl",
    "streamrun mock --ttft 0.2 --tokens-per-s 50 --error-rate 0.05 --status-429-rate 0.05",
    "streamrun mock --rpm-limit 600 --tpm-limit 100000 --api-key-env MOCK_KEY",
    "streamrun mock --lenient --alias gpt-4o-mini             # accept anything, answer as gpt-4o-mini too",
    "streamrun mock --batch-delay 30 --batch-expire-at 0.5    # batches that take 30 s, and expire half done"))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="0 picks a free port.")
@click.option("--ttft", default=0.05, show_default=True, type=float, help="Seconds before the first content token.")
@click.option("--tokens-per-s", default=200.0, show_default=True, type=float, help="Token rate after the first; 0 or inf = no sleeps.")
@click.option("--output-tokens", default=64, show_default=True, type=int, help="Reply length unless the request sets max_tokens.")
@click.option("--tokens-per-chunk", default=1, show_default=True, type=int, help="Tokens per SSE event.")
@click.option("--error-rate", default=0.0, show_default=True, type=float, help="Fraction answered 500.")
@click.option("--status-429-rate", default=0.0, show_default=True, type=float, help="Fraction answered 429.")
@click.option("--drop-rate", default=0.0, show_default=True, type=float, help="Fraction whose connection is cut mid-stream.")
@click.option("--retry-after", default=1.0, show_default=True, type=float, help="Seconds put in Retry-After.")
@click.option("--seed", default=None, type=int, help="Seed for the random faults.")
@click.option("--script", "script_path", default=None, type=click.Path(exists=True, dir_okay=False), help="JSONL of {ttft, gaps} timings.")
@click.option("--rpm-limit", default=None, type=int, help="Requests per minute before 429.")
@click.option("--tpm-limit", default=None, type=int, help="Tokens per minute before 429.")
@click.option("--quota-fill", default=1.0, show_default=True, type=float,
              help="How full the RPM/TPM buckets start (0..1).")
@click.option("--model", default="mock-model", show_default=True,
              help="Model name served (and echoed in replies); requests naming another get 404.")
@click.option("--alias", "aliases", multiple=True, metavar="NAME",
              help="Another model name to accept and list in /v1/models (repeatable).")
@click.option("--max-context", default=4096, show_default=True, type=click.IntRange(min=0),
              help="Context window in tokens: prompt + max_tokens above it get 400; 0 = unlimited.")
@click.option("--lenient", is_flag=True, default=False,
              help="Accept any body that can be served (no Content-Type, model, field or context checks); for debugging clients.")
@click.option("--api-key-env", default=None, metavar="NAME", help="Require 'Bearer $NAME' on /v1 requests.")
@click.option("--workers", default=1, show_default=True, type=int, help="Processes sharing the port (SO_REUSEPORT).")
@click.option("--batch-delay", default=0.5, show_default=True, type=float,
              help="Seconds a batch (/v1/batches, /v1/messages/batches) takes to answer its lines and end; 0: at once.")
@click.option("--batch-polls", default=0, show_default=True, type=click.IntRange(min=0),
              help="Retrievals a batch needs before it ends (its lines answered evenly over them); 0: none.")
@click.option("--batch-expire-at", default=None, type=click.FloatRange(0, 1),
              help="Fault: a batch expires once this fraction of its lines is answered (the rest: expired).")
def mock_command(
    host: str,
    port: int,
    ttft: float,
    tokens_per_s: float,
    output_tokens: int,
    tokens_per_chunk: int,
    error_rate: float,
    status_429_rate: float,
    drop_rate: float,
    retry_after: float,
    seed: int | None,
    script_path: str | None,
    rpm_limit: int | None,
    tpm_limit: int | None,
    quota_fill: float,
    model: str,
    aliases: tuple[str, ...],
    max_context: int,
    lenient: bool,
    api_key_env: str | None,
    workers: int,
    batch_delay: float,
    batch_polls: int,
    batch_expire_at: float | None,
) -> None:
    """Run the mock OpenAI-compatible streaming server.

    It refuses what vLLM and the OpenAI API refuse (a body that is not JSON,
    missing or mistyped fields, an unknown model, a prompt over the context
    window), in their error shapes, unless --lenient."""
    api_key = None
    if api_key_env is not None:
        api_key = os.environ.get(api_key_env)
        if not api_key:
            raise click.UsageError(f"--api-key-env: environment variable {api_key_env} is not set")
    try:
        script = load_script(script_path) if script_path else ()
        config = MockConfig(
            ttft=ttft,
            tokens_per_s=tokens_per_s,
            output_tokens=output_tokens,
            tokens_per_chunk=tokens_per_chunk,
            error_rate=error_rate,
            status_429_rate=status_429_rate,
            drop_rate=drop_rate,
            retry_after=retry_after,
            seed=seed,
            script=script,
            rpm_limit=rpm_limit,
            tpm_limit=tpm_limit,
            quota_fill=quota_fill,
            model=model,
            api_key=api_key,
            aliases=aliases,
            max_context=max_context or None,
            lenient=lenient,
            batch_delay=batch_delay,
            batch_polls=batch_polls,
            batch_expire_at=batch_expire_at,
        )
        if workers < 1:
            raise ValueError("--workers must be >= 1")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    run_server(config, host, port, workers)
