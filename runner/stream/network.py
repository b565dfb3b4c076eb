"""How this process reaches the servers: the TLS settings and the proxy of each base URL.

Why one object: the engine's session, each worker's, `streamrun stream`'s
and the checks before a run all need the same answer, and it comes from
five options (--ca-cert, --insecure, --client-cert, --client-key,
--proxy); `Network.from_config` is the one place that reads them, and what
it holds is plain values and paths, so it crosses to worker processes as
it is.

Proxies: `--proxy URL` sends every request through that proxy, loopback
included, whatever the environment says.  Without it, HTTPS_PROXY,
HTTP_PROXY and NO_PROXY apply as curl and aiohttp read them, except to
servers on this machine (loopback, the embedded mock): a proxy set for the
internet, or a dead one left in a shell profile, never stands between a
run and a local server.
"""

from __future__ import annotations

import errno
import ssl
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from .endpoints import is_loopback, url_secrets
from .errors import ConnectError
from .tls import TlsProblem, TlsSettings, handshake_alert, ssl_context

__all__ = ["Network", "env_proxy"]


@dataclass(frozen=True)
class Network:
    """The TLS settings and the proxy choice of every connection this process makes to the servers."""

    tls: TlsSettings = field(default_factory=TlsSettings)
    proxy: str | None = None  # --proxy: every base URL through it; None: the environment's, loopback excepted

    @classmethod
    def from_config(cls, transport: Any) -> Network:
        """The run's network options (its `RunConfig.transport` group's TLS options and --proxy), read here
        only."""
        return cls(TlsSettings.from_config(transport), transport.proxy)

    def connector_ssl(self) -> ssl.SSLContext | bool:
        """The connector's `ssl`: this process's context for the settings, or True (aiohttp's default)."""
        context = ssl_context(self.tls)
        return True if context is None else context

    def proxy_for(self, url: str) -> str | None:
        """The proxy a request to `url` goes through (its credentials in it), None: direct."""
        if self.proxy:
            return self.proxy
        if is_loopback(url):
            return None
        return env_proxy(url)

    def may_explain(self, url: str, err: ConnectError) -> bool:
        """Whether TLS may explain `err`: a connection to an https `url` that opened and was then reset or
        closed before any answer, not through a proxy (whose tunnel is not this client's to open by hand)."""
        return not err.conclusive and url.startswith("https:") and not self.proxy_for(url) and _dropped(err)

    async def explain(self, url: str, timeout: float | None) -> TlsProblem | None:
        """What the TLS server at `url` objects to, asked directly (`tls.handshake_alert`); None: nothing."""
        parsed = URL(url)
        if not parsed.host or not parsed.port:
            return None
        return await handshake_alert(parsed.host, parsed.port, ssl_context(self.tls), min(timeout or 10.0, 10.0),
                                     client_cert=self.tls.client_cert is not None)

    def secrets(self) -> tuple[str, ...]:
        """Passwords in the proxy URLs (--proxy's and the environment's): redacted wherever echoed."""
        urls = [self.proxy] if self.proxy else []
        urls += [u for scheme, u in urllib.request.getproxies_environment().items() if scheme != "no"]
        return tuple(p for u in urls for p in url_secrets(u))


def env_proxy(url: str) -> str | None:
    """HTTP(S)_PROXY / NO_PROXY for this URL, as aiohttp's trust_env would find it (credentials kept in
    the URL: aiohttp sends them as Proxy-Authorization).  Resolved once per base URL, not per request as
    trust_env=True would (two thread hops a request)."""
    try:
        proxy, auth = get_env_proxy_for_url(URL(url))
    except LookupError:
        return None
    if auth is not None:
        proxy = proxy.with_user(auth.login).with_password(auth.password or None)
    return str(proxy)


def _dropped(exc: BaseException) -> bool:
    """A connection that opened and was then reset or closed before any answer (what a TLS server that
    refuses this client looks like from here), as opposed to one refused, unresolved or timed out."""
    seen: list[BaseException] = []
    e: BaseException | None = exc
    while e is not None and not any(e is s for s in seen):
        seen.append(e)
        if isinstance(e, (aiohttp.ServerDisconnectedError, ConnectionResetError, ssl.SSLEOFError)):
            return True
        if isinstance(e, OSError) and e.errno == errno.ECONNRESET:
            return True
        e = e.__cause__ or e.__context__
    return False
