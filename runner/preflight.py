"""Misconfiguration caught before anything is sent: exit 2 with the fix, and the secrets to redact.

Why a module: the run, `streamrun stream` and the log set-up all need the
same answer to "which keys and headers go out, and which strings must never
be printed"; one function gathers those secrets (`secrets_of`), so none of
them can miss a kind (a key, a header from the environment, a password in a
base URL).
"""

from __future__ import annotations

import logging
import os

from .config.run_config import RunConfig
from .engine.answers import response_format
from .engine.structured import format_problem
from .errors import UsageError
from .stream.endpoints import check_base_url, is_loopback, url_secrets
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
    """The headers and keys, checked before any input is read (a bad URL, header or variable name: exit 2).

    A run-wide --param response_format whose schema is invalid is refused here
    too: every line would be answered invalid_input with it.
    """
    problem = format_problem(response_format(cfg.params))
    if problem is not None:
        raise UsageError(f"--param: {problem}")
    try:
        if not local:
            for url in cfg.base_urls:
                check_base_url(url)
        check_env_name(cfg.api_key_env)
        creds = resolve_credentials(cfg.headers, key_envs=cfg.key_envs(), environ=os.environ)
    except (ValueError, HeaderError) as exc:
        raise UsageError(str(exc)) from None
    passwords = tuple(p for url in cfg.base_urls for p in url_secrets(url)) + check_network(cfg)
    if passwords:
        creds = Credentials(creds.headers, creds.secrets + passwords, creds.auth, creds.unusable)
    return creds


def check_network(cfg: RunConfig) -> tuple[str, ...]:
    """The TLS files, loaded now (one that cannot be used is exit 2, naming the flag and the file, before
    anything is sent), --insecure said on stderr, and the proxies' passwords (secrets to redact)."""
    network = Network.from_config(cfg)
    try:
        ssl_context(network.tls)
    except TlsSettingsError as exc:
        raise UsageError(str(exc)) from None
    if network.tls.insecure:
        log.warning("--insecure: TLS certificates are not verified; whoever sits between this machine and the "
                    "server can read and change what is sent, the key included")
    return network.secrets()


def check_keys(cfg: RunConfig, creds: Credentials, apis: frozenset[str] | None, *, local: bool) -> None:
    """Every key the lines need is set: each API's lines take their own (`RunConfig.key_env_for`), and one
    missing for a remote URL is exit 2 naming its variable, before anything is sent.

    `apis`: whose keys the scanned inputs need; None (a pipe, not scanned)
    or none (no line to send): the key of the lines --api names, as ever.
    """
    needed = sorted(apis or {cfg.key_api}, key=lambda api: api != cfg.key_api)  # --api's first
    for api in needed:
        if api in creds.unusable:
            raise UsageError(creds.unusable[api])
    if any(url_secrets(url) for url in cfg.base_urls):
        sent = {name.lower() for name in creds.headers} | {
            name.lower() for api in needed for name in creds.auth.get(api, {})}
        if sent & {"authorization", "x-api-key"}:
            raise UsageError("a base URL with user:password@ and an API key cannot both be sent: pass "
                             "--no-auth to use the URL's credentials, or remove them from the URL")
    if not cfg.auth or local:
        return
    remote = [u for u in cfg.base_urls if not is_loopback(u)]
    if not remote:
        return
    for api in needed:
        variable = cfg.key_env_for(api)
        if os.environ.get(variable):
            continue
        if api == cfg.key_api:
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
    environment, and passwords in base URLs (what the log filter redacts from the first line on)."""
    try:
        secrets = resolve_credentials(cfg.headers, key_envs=cfg.key_envs(), environ=os.environ).secrets
    except HeaderError:  # preflight reports it; redact what can be known
        secrets = tuple(s for s in (os.environ.get(v) for v in cfg.key_envs().values() if v) if s)
    return secrets + tuple(p for url in cfg.base_urls for p in url_secrets(url)) + Network.from_config(cfg).secrets()
