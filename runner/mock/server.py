"""Running the mock: in this event loop (``serve``), as a blocking server
with worker processes (``run_server``), or from the command line
(``streamrun mock`` / ``python -m runner.mock``).

Why it exists: how the app is hosted (loops, signals, SO_REUSEPORT
workers, the CLI's options) has nothing to do with what it answers.

``workers > 1`` in ``run_server`` starts that many processes sharing the
port (SO_REUSEPORT); each has its own counters, quotas, fault-key state and
random stream, so ``/mock/stats`` reports one process.  Use one worker when
a test depends on those.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import click

from ..cli import examples
from aiohttp import web

from .app import build_app
from .config import MockConfig, load_script

__all__ = ["mock_command", "run_server", "serve"]


def _runner(config: MockConfig) -> web.AppRunner:
    # handler_cancellation: a client that hangs up stops its stream's work at
    # once, even while it sleeps; no access log: it costs CPU per request.
    return web.AppRunner(build_app(config), handler_cancellation=True, access_log=None, shutdown_timeout=1.0)


@asynccontextmanager
async def serve(config: MockConfig, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Run the mock in the current event loop; yields its base URL
    (``http://HOST:PORT/v1``).  In-flight requests are cancelled on exit."""
    runner = _runner(config)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=4096)
        await site.start()
        bound_port = runner.addresses[0][1]
        yield f"http://{_url_host(host)}:{bound_port}/v1"
    finally:
        await runner.cleanup()


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


async def _serve_until_signalled(
    config: MockConfig, host: str, port: int, reuse_port: bool, on_ready: Callable[[int], None]
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - not on Unix main thread
            pass
    runner = _runner(config)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=4096, reuse_port=reuse_port or None)
        await site.start()
        on_ready(runner.addresses[0][1])
        parent = os.getppid()
        while not stop.is_set():
            # A worker whose parent died (killed without cleanup) exits too.
            if reuse_port and os.getppid() != parent:
                break
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except TimeoutError:
                pass
    finally:
        await runner.cleanup()


def _run_loop(coro_factory: Callable[[], Any]) -> None:
    """Run with uvloop when installed (the ``speed`` extra), else asyncio."""
    from ..aio import loop_factory

    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        runner.run(coro_factory())


def _announce(host: str, port: int) -> None:
    print(f"mock server listening on http://{_url_host(host)}:{port}/v1", file=sys.stderr, flush=True)


def _worker(config: MockConfig, host: str, port: int, ready: Any) -> None:
    """One of several processes sharing the port (run via multiprocessing)."""
    _run_loop(lambda: _serve_until_signalled(config, host, port, True, lambda p: ready.put(p)))


def run_server(config: MockConfig, host: str, port: int, workers: int = 1) -> None:
    """Serve until SIGINT/SIGTERM, announcing the URL on stderr once listening.

    ``workers > 1`` runs that many processes on one port with SO_REUSEPORT
    (the kernel spreads connections), so the mock is never the bottleneck
    of a client benchmark.  Port 0 then picks one free port for all."""
    if workers < 1:
        raise ValueError("workers must be >= 1")
    if workers == 1:
        _run_loop(lambda: _serve_until_signalled(config, host, port, False, lambda p: _announce(host, p)))
        return
    if port == 0:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(config, host, port, ready), daemon=True) for _ in range(workers)]
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        for p in procs:
            p.start()
        for _ in procs:
            ready.get()
        _announce(host, port)
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            p.join(5)
        signal.signal(signal.SIGTERM, previous)


def _raise_keyboard_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@click.command("mock", epilog=examples(
    "streamrun mock --port 8000                                # then: streamrun run in.jsonl -o out.jsonl",
    "streamrun mock --ttft 0.2 --tokens-per-s 50 --error-rate 0.05 --status-429-rate 0.05",
    "streamrun mock --rpm-limit 600 --tpm-limit 100000 --api-key-env MOCK_KEY",
    "streamrun mock --lenient --alias gpt-4o-mini             # accept anything, answer as gpt-4o-mini too"))
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
        )
        if workers < 1:
            raise ValueError("--workers must be >= 1")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    run_server(config, host, port, workers)
