"""Misconfiguration caught before anything is sent: exit 2 with the fix, and the secrets to redact.

Why a module: the run, `streamrun stream` and the log set-up all need the
same answer to "which keys and headers go out, and which strings must never
be printed"; one function gathers those secrets (`secrets_of`), so none of
them can miss a kind (a key, a header from the environment, a password in a
base URL).
"""

from __future__ import annotations

import dataclasses
import logging
import os

from .config.run_config import ObserveConfig, RunConfig, TransportConfig
from .engine.answers import response_format
from .engine.structured import format_problem
from .errors import UsageError
from .observe.tracing import OTLP_URL_VARS, otlp_header_secrets
from .stream.endpoints import check_base_url, is_loopback, public_url, url_secrets
from .stream.headers import ANTHROPIC, Credentials, HeaderError, check_env_name, resolve_credentials
from .stream.network import Network
from .stream.tls import TlsSettingsError, ssl_context

log = logging.getLogger("streamrun")


def preflight(cfg: RunConfig, *, local: bool, apis: frozenset[str] | None = None) -> Credentials:
    """Misconfiguration caught before anything is sent: exit 2, with the fix.

    `local` is a run against the embedded mock, whose URL is known to be
    loopback.  `apis`: whose keys the input lines need ("openai",
    "anthropic"), when the inputs were scanned; None: the key of --api's.
    """
    creds = credentials(cfg, local=local)
    check_keys(cfg, creds, apis, local=local)
    return creds


def credentials(cfg: RunConfig, *, local: bool) -> Credentials:
    """The headers and keys, checked before any input is read (a bad URL, header or variable name: exit 2);
    their `secrets` are `secrets_of(cfg)`'s, everything the run redacts.

    A run-wide --param response_format whose schema is invalid is refused here
    too: every line would be answered invalid_input with it.
    """
    transport = cfg.transport
    problem = format_problem(response_format(cfg.request.params))
    if problem is not None:
        raise UsageError(f"--param: {problem}")
    try:
        if not local:
            for url in transport.base_urls:
                check_base_url(url)
        check_env_name(transport.api_key_env)
        creds = _resolved(cfg)
    except (ValueError, HeaderError) as exc:
        raise UsageError(str(exc)) from None
    check_network(transport)
    return creds


def check_network(transport: TransportConfig) -> None:
    """The TLS files, loaded now (one that cannot be used is exit 2, naming the flag and the file, before
    anything is sent), and --insecure said on stderr.  (The proxies' passwords are secrets: `_resolved`.)"""
    network = Network.from_config(transport)
    try:
        ssl_context(network.tls)
    except TlsSettingsError as exc:
        raise UsageError(str(exc)) from None
    if network.tls.insecure:
        log.warning("--insecure: TLS certificates are not verified; whoever sits between this machine and the "
                    "server can read and change what is sent, the key included")


def check_keys(cfg: RunConfig, creds: Credentials, apis: frozenset[str] | None, *, local: bool) -> None:
    """Every key the lines need is set: each API's lines take their own (`TransportConfig.key_env_for`), and
    one missing for a remote URL is exit 2 naming its variable, before anything is sent.

    `apis`: whose keys the scanned inputs need; None (a pipe, not scanned)
    or none (no line to send): the key of the lines --api names, as ever.
    """
    transport = cfg.transport
    needed = sorted(apis or {transport.key_api}, key=lambda api: api != transport.key_api)  # --api's first
    for api in needed:
        if api in creds.unusable:
            raise UsageError(creds.unusable[api])
    if any(url_secrets(url) for url in transport.base_urls):
        sent = {name.lower() for name in creds.headers} | {
            name.lower() for api in needed for name in creds.auth.get(api, {})}
        if sent & {"authorization", "x-api-key"}:
            raise UsageError("a base URL with user:password@ and an API key cannot both be sent: pass "
                             "--no-auth to use the URL's credentials, or remove them from the URL")
    if not transport.auth or local:
        return
    remote = [public_url(u) for u in transport.base_urls if not is_loopback(u)]
    if not remote:
        return
    for api in needed:
        variable = transport.key_env_for(api)
        if os.environ.get(variable):
            continue
        if api == transport.key_api:
            raise UsageError(
                f"the environment variable {variable} is not set, and {remote[0]} is not on this machine: "
                f"export {variable}=..., name another variable with --api-key-env, "
                "or pass --no-auth for a server that needs no key")
        whose = "/v1/messages (Anthropic's API)" if api == ANTHROPIC else "OpenAI's APIs"
        raise UsageError(
            f"the environment variable {variable} is not set, and {remote[0]} is not on this machine: "
            f"the inputs have lines for {whose}, which take their key from {variable}: "
            f"export {variable}=..., or pass --no-auth for a server that needs no key")


def secrets_of(cfg: RunConfig) -> tuple[str, ...]:
    """Every string the logs, records and summaries must never show: the keys, header values taken from the
    environment, and the credentials in base URLs, in the proxies' URLs and in the observers' URLs.  The one
    place they are gathered: the log filter (from the first line on), the records' error messages and every
    worker process redact these."""
    transport = cfg.transport
    try:
        return _resolved(cfg).secrets
    except HeaderError:  # preflight reports it; redact what can be known
        keys = tuple(s for s in (os.environ.get(v) for v in transport.key_envs().values() if v) if s)
        return (keys + tuple(s for url in transport.base_urls for s in url_secrets(url))
                + _observer_secrets(cfg.observe) + Network.from_config(transport).secrets())


def _resolved(cfg: RunConfig) -> Credentials:
    """The headers, keys and secrets from the environment, as the transport names them; the secrets also
    those of where the run is watched from (`_observer_secrets`) and the proxies' passwords (--proxy's and
    the environment's: runner/stream/network.py), so the workers redact them too."""
    transport = cfg.transport
    creds = resolve_credentials(transport.headers, key_envs=transport.key_envs(), environ=os.environ,
                                base_urls=transport.base_urls)
    more = _observer_secrets(cfg.observe) + Network.from_config(transport).secrets()
    return dataclasses.replace(creds, secrets=tuple(dict.fromkeys(creds.secrets + more)))


def _observer_secrets(observe: ObserveConfig) -> tuple[str, ...]:
    """user:pass in the Pushgateway's and the OTLP collector's URLs (flag or environment), and the values of
    the OTLP headers (a collector's key)."""
    urls = (observe.push_gateway, observe.otlp_endpoint, *(os.environ.get(v) for v in OTLP_URL_VARS))
    return tuple(p for url in urls if url for p in url_secrets(url)) + otlp_header_secrets(os.environ)
