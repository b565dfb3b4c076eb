"""`streamrun stream "prompt"`: one streamed request, its tokens printed as they arrive.

Why: it replaces the `curl -N` and SDK loop people write to smoke-test an
endpoint, with the same client, retries, key handling and checks as `run`,
so what works here works in a batch.  It writes no file.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import statistics
import sys
import time
from typing import Any

import aiohttp
import click
import orjson

from ..config.options import BY_FIELD, config_from_options
from ..config.parsers import OptionError
from ..config.run_config import RunConfig
from ..engine.send import only_model
from ..errors import EXIT_FAILED, EXIT_OK, RunError, UsageError
from ..logs import setup_logging
from ..preflight import secrets_of
from ..stream.client import Attempt, endpoint_url, stream_once
from ..stream.endpoints import public_url
from ..stream.errors import ConnectError, RequestError, redact
from ..stream.network import Network
from ..stream.paths import CHAT_PATH, COMPLETIONS_PATH
from ..stream.protocol import StreamState, build_body
from ..stream.retry import call_with_retries
from ..stream.timing import Timing
from .flags import flag_decorator
from .help import examples

# The run options that make sense for one request.
FIELDS = ("transport.base_urls", "request.model", "transport.api_key_env", "transport.auth", "transport.headers",
          "request.params", "request.include_usage", "transport.retry.max_attempts", "transport.timeouts.connect",
          "transport.timeouts.first_byte", "transport.timeouts.idle", "transport.timeouts.total",
          "transport.ca_cert", "transport.insecure", "transport.client_cert", "transport.client_key", "transport.proxy")


class StdoutClosed(Exception):
    """The reader of stdout went away (`streamrun stream ... | head -c 5`).

    Not a ConnectionError, as the BrokenPipeError it stands for is: the
    client would take that for a lost connection and send the request again.
    """


def _out(text: str) -> None:
    """Text on stdout, now; StdoutClosed when nobody reads it any more."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        raise StdoutClosed from None


class _Echo(list[str]):
    """The text parts of a stream, printed to stdout as each arrives."""

    def append(self, part: str) -> None:
        super().append(part)
        _out(part)


# One request goes to one server: the run's --base-url row, but not repeatable.
BASE_URL = dataclasses.replace(BY_FIELD["transport.base_urls"], multiple=False,
                               help="OpenAI-compatible base URL (one: a single request is sent).")


def _options(f):
    for name in reversed(FIELDS):
        f = flag_decorator(BASE_URL if name == "transport.base_urls" else BY_FIELD[name])(f)
    f = click.option("--max-tokens", type=click.IntRange(min=1), help="Shortcut for --param max_tokens=N.")(f)
    f = click.option("--completion", is_flag=True, help="Send to /v1/completions with a prompt (default: chat).")(f)
    f = click.option("--system", help="A system message before the prompt (chat).")(f)
    return f


@click.command("stream", epilog=examples(
    'streamrun stream "Say hello" --mock',
    'streamrun stream "Write a haiku" --base-url https://api.openai.com/v1 --model gpt-4o-mini --max-tokens 60',
    'echo "Once upon a time" | streamrun stream - --completion --base-url http://localhost:8080/v1'))
@click.argument("prompt")
@_options
@click.option("--mock", is_flag=True, help="Start the embedded mock server and stream from it.")
@click.pass_context
def stream_command(ctx: click.Context, prompt: str, mock: bool, system: str | None, completion: bool,
                   max_tokens: int | None, **opts) -> None:
    """Stream one PROMPT (or - for stdin): tokens as they arrive, then TTFT, ITL, tokens, finish reason."""
    if prompt == "-":
        prompt = sys.stdin.read()
    try:  # the run's path from flags to a RunConfig, over the few options a single request takes
        cfg = config_from_options(("-",), {**opts, "output__path": "-"}, only=(*FIELDS, "output.path"))
    except (OptionError, RunError) as exc:
        raise click.UsageError(str(exc)) from None
    params = dict(cfg.request.params)
    if max_tokens is not None:
        params["max_tokens"] = max_tokens
    body: dict[str, Any]
    if completion:
        path, body = COMPLETIONS_PATH, {"prompt": prompt}
    else:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
        path, body = CHAT_PATH, {"messages": messages}
    setup_logging(ctx.find_root().obj["log_format"], ctx.find_root().obj["verbosity"], secrets_of(cfg))
    try:
        code = asyncio.run(_main(cfg, path, body, params, mock))
    except RunError as exc:
        click.echo(f"streamrun: {exc}", err=True)
        code = exc.exit_code
    except StdoutClosed:  # the reader has what it wanted: stop quietly, after one request
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # what is buffered goes nowhere at exit
        code = EXIT_OK
    sys.exit(code)


async def _main(cfg: RunConfig, path: str, body: dict[str, Any], params: dict[str, Any], mock: bool) -> int:
    if mock:
        from ..mock import MockConfig, serve

        async with serve(MockConfig(any_model=True)) as url:  # a dry run, as `run --mock`: any model
            transport = dataclasses.replace(cfg.transport, base_urls=(url,))
            return await _stream(dataclasses.replace(cfg, transport=transport), path, body, params, local=True)
    return await _stream(cfg, path, body, params, local=False)


async def _conclusive(network: Network, base: str, exc: ConnectError, timeout: float | None) -> str | None:
    """Why no attempt can connect, when none can (a certificate not trusted, a client certificate the server
    wants: runner/stream/tls.py), as `run` stops on it; None when a retry may."""
    if exc.conclusive:
        return exc.reason
    problem = await network.explain(base, timeout) if network.may_explain(base, exc) else None
    return str(problem) if problem is not None and problem.conclusive else None


async def _stream(cfg: RunConfig, path: str, body: dict[str, Any], params: dict[str, Any], *, local: bool) -> int:
    from ..preflight import preflight

    creds = preflight(cfg, local=local)
    transport = cfg.transport
    base = transport.base_urls[0]
    network = Network.from_config(transport)  # the run's TLS settings and proxies, as `run` uses them
    proxy = network.proxy_for(base)
    timeout = aiohttp.ClientTimeout(total=None, sock_connect=transport.timeouts.connect)
    async with aiohttp.ClientSession(headers=creds.for_api(transport.key_api), timeout=timeout,
                                     connector=aiohttp.TCPConnector(ssl=network.connector_ssl())) as session:
        model = body.get("model") or cfg.request.model or params.get("model")
        if model is None:
            model = await only_model(session, [base], {base: proxy}, creds.secrets, network=network,
                                     timeout=transport.timeouts.connect)
        request = build_body(body, path=path, defaults=params, model=model, include_usage=cfg.request.include_usage)
        payload = orjson.dumps(request)
        timings: list[Timing] = []

        async def attempt() -> Attempt[StreamState]:
            if timings:
                print(f"\n[retrying after: {redact(str(last[0]), creds.secrets)}]", file=sys.stderr)
            timing = Timing(due=time.perf_counter())
            timings.append(timing)
            try:
                return await stream_once(session, endpoint_url(base, path), payload, transport.timeouts, timing,
                                         proxy=proxy, state=StreamState(text_parts=_Echo()), limits=transport.limits)
            except RequestError as exc:
                last[:] = [exc]
                if isinstance(exc, ConnectError) and len(timings) == 1:  # a TLS failure no retry fixes: exit 2
                    reason = await _conclusive(network, base, exc, transport.timeouts.connect)
                    if reason is not None:
                        raise UsageError(f"cannot connect to {public_url(base)}: {redact(reason, creds.secrets)}") \
                            from exc
                raise

        last: list[RequestError | None] = [None]
        try:
            result = await call_with_retries(transport.retry, attempt)
        except RequestError as exc:
            print(f"\nstreamrun: {exc.type}: {redact(exc.message, creds.secrets)}", file=sys.stderr)
            return EXIT_FAILED
    _out("\n")
    t = result.timing
    ttft = (t.first_text - t.sent) if t.first_text is not None else None
    itl = statistics.median(t.itl) if t.itl else None
    usage = result.state.usage or {}
    tokens = usage.get("completion_tokens") or result.state.text_events
    fmt = lambda x: "-" if x is None else f"{x * 1000:.0f} ms"
    print(f"TTFT {fmt(ttft)}  ITL p50 {fmt(itl)}  E2E {fmt(t.end - t.sent if t.end else None)}  "
          f"{tokens} tokens  finish {result.state.finish_reason}  attempts {len(timings)}  model {model}",
          file=sys.stderr)
    return EXIT_OK
