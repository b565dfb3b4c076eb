"""Running the mock: in this event loop (``serve``), as a blocking server
with worker processes (``run_server``), or from the command line
(``streamrun mock``).

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
import ssl
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from aiohttp import web

from .app import build_app
from .config import MockConfig

__all__ = ["run_server", "serve"]


def _runner(config: MockConfig) -> web.AppRunner:
    # handler_cancellation: a client that hangs up stops its stream's work at
    # once, even while it sleeps; no access log: it costs CPU per request.
    return web.AppRunner(build_app(config), handler_cancellation=True, access_log=None, shutdown_timeout=1.0)


@asynccontextmanager
async def serve(config: MockConfig, host: str = "127.0.0.1", port: int = 0,
                ssl_context: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """Run the mock in the current event loop; yields its base URL
    (``http://HOST:PORT/v1``, ``https://`` with an `ssl_context`: a server's
    certificate, and the CA its clients' must come from for mutual TLS).
    In-flight requests are cancelled on exit."""
    runner = _runner(config)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, backlog=4096, ssl_context=ssl_context)
        await site.start()
        bound_port = runner.addresses[0][1]
        scheme = "https" if ssl_context is not None else "http"
        yield f"{scheme}://{_url_host(host)}:{bound_port}/v1"
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
