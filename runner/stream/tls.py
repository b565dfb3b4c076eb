"""TLS for the run's connections: the settings, the one SSL context, and a failed handshake named with its fix.

Why a module: a gateway behind a private CA, one that wants a client
certificate, a test endpoint with a self-signed one: each is a setting
(`--ca-cert`, `--client-cert`/`--client-key`, `--insecure`) that every
session of a run must share (the engine's, each worker's, `streamrun
stream`'s), and each fails in its own way, which a user should read as
one line naming the cause and the flag that fixes it, not as "connection
reset by peer".  Certificates are files, so the settings are paths: they
travel to worker processes as they are, and each process builds its own
context from them, once (`ssl_context`).
"""

from __future__ import annotations

import asyncio
import functools
import re
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["TlsProblem", "TlsSettings", "handshake_alert", "ssl_context", "tls_problem"]


@dataclass(frozen=True)
class TlsSettings:
    """How this run's TLS connections are made; all unset: the system's trust store, as ever.

    `ca_cert` is added to the system store (which honours SSL_CERT_FILE and
    SSL_CERT_DIR); `insecure` skips verification altogether; `client_cert`
    (a PEM certificate, its key in it or in `client_key`) is shown to
    servers that ask for one (mutual TLS).
    """

    ca_cert: str | None = None
    insecure: bool = False
    client_cert: str | None = None
    client_key: str | None = None

    @classmethod
    def from_config(cls, transport: Any) -> TlsSettings:
        """The run's TLS options (`RunConfig.transport`'s --ca-cert, --insecure, --client-cert, --client-key)."""
        return cls(transport.ca_cert, transport.insecure, transport.client_cert, transport.client_key)

    @property
    def default(self) -> bool:
        return self == TlsSettings()


class TlsSettingsError(ValueError):
    """A certificate or key file that cannot be used; the message names the flag and the file."""


def _refuse_passphrase() -> bytes:
    # load_cert_chain would otherwise ask for a passphrase on the terminal: in a cron job, forever.
    raise TlsSettingsError("encrypted")


@functools.lru_cache(maxsize=8)
def ssl_context(settings: TlsSettings) -> ssl.SSLContext | None:
    """The SSL context of every connection this process makes with `settings`; None: aiohttp's default.

    Built once per process and settings (loading a CA bundle costs
    milliseconds; a context per connection would repeat it).  Raises
    TlsSettingsError naming the flag and the file when one cannot be used.
    """
    if settings.default:
        return None
    if settings.insecure and settings.ca_cert:
        raise TlsSettingsError("--insecure and --ca-cert exclude each other: --insecure verifies no certificate, "
                               "so the CA would not be used")
    if settings.client_key and not settings.client_cert:
        raise TlsSettingsError("--client-key goes with --client-cert (the certificate the key belongs to)")
    if settings.insecure:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    else:
        context = ssl.create_default_context()  # the system store, SSL_CERT_FILE and SSL_CERT_DIR included
        if settings.ca_cert:
            _load({settings.ca_cert: "--ca-cert"}, lambda: context.load_verify_locations(cafile=settings.ca_cert))
    cert = settings.client_cert
    if cert:
        _load({cert: "--client-cert", settings.client_key or cert: "--client-key"},
              lambda: context.load_cert_chain(cert, settings.client_key, password=_refuse_passphrase))
    context.options |= ssl.OP_NO_COMPRESSION  # as aiohttp's own contexts
    context.set_alpn_protocols(("http/1.1",))
    return context


def _load(files: dict[str, str], load: Callable[[], None]) -> None:
    """Run `load`, its failure said as "FLAG PATH: why"; `files`: path -> flag, the certificate's first (the
    key's last: --client-key, or --client-cert when the key is in its file)."""
    (path, flag), (key, key_flag) = next(iter(files.items())), list(files.items())[-1]
    for where, its_flag in files.items():  # the ssl module's errors do not say which file
        try:
            with open(where, "rb"):
                pass
        except OSError as exc:
            why = {FileNotFoundError: "no such file", IsADirectoryError: "a directory, not a PEM file"}.get(
                type(exc), (exc.strerror or str(exc)).lower())
            raise TlsSettingsError(f"{its_flag} {where}: {why}") from None
    try:
        load()
    except TlsSettingsError:
        raise TlsSettingsError(f"{key_flag} {key}: the key is encrypted; streamrun cannot ask for its passphrase "
                               "(decrypt it: openssl pkey -in KEY -out PLAIN.key)") from None
    except ssl.SSLError as exc:
        what = {"KEY_VALUES_MISMATCH": f"the key ({key_flag} {key}) does not belong to this certificate",
                "NO_CERTIFICATE_OR_CRL_FOUND": "no PEM certificate in it"}.get(exc.reason or "")
        raise TlsSettingsError(f"{flag} {path}: {what or 'not a usable PEM file'} ({exc.reason or exc})") from None


# ---- a failed connection, named

@dataclass(frozen=True)
class TlsProblem:
    """Why a TLS connection failed, in words, and the flag that fixes it.

    `conclusive`: every attempt would fail the same way (an untrusted or
    expired certificate, a missing client certificate), so a run that never
    connected stops at the first one instead of retrying.
    """

    reason: str
    fix: str
    conclusive: bool = True

    def __str__(self) -> str:
        return f"{self.reason}: {self.fix}"


UNTRUSTED = "pass --ca-cert with the CA that signed it (or --insecure to skip verification)"
_VERIFY = {  # OpenSSL's X509_V_ERR_* codes: (what it means, the fix)
    2: ("not trusted", UNTRUSTED),
    18: ("not trusted: self-signed", UNTRUSTED),
    19: ("not trusted: self-signed certificate in its chain", UNTRUSTED),
    20: ("not trusted: signed by a CA this machine does not trust", UNTRUSTED),
    21: ("not trusted", UNTRUSTED),
    10: ("expired", "the server must renew it (--insecure skips verification, for a test endpoint)"),
    9: ("not valid yet", "check this machine's clock (--insecure skips verification, for a test endpoint)"),
    62: ("for another name", "use a --base-url host the certificate names (or --insecure to skip verification)"),
    64: ("for another address", "use a --base-url host the certificate names (or --insecure to skip verification)"),
}
# Alerts a server sends about this side's client certificate, by OpenSSL's reason code.
_CLIENT_CERT_ALERTS = ("TLSV1_ALERT_UNKNOWN_CA", "SSLV3_ALERT_BAD_CERTIFICATE", "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
                       "SSLV3_ALERT_CERTIFICATE_EXPIRED", "SSLV3_ALERT_CERTIFICATE_REVOKED",
                       "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE", "TLSV1_ALERT_ACCESS_DENIED",
                       "TLSV1_ALERT_DECRYPT_ERROR")
_NOT_TLS = ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "HTTP_REQUEST")
_NOT_CONCLUSIVE = ("UNEXPECTED_EOF_WHILE_READING", "EOF", "SSLV3_ALERT_CLOSE_NOTIFY")
_SSL_REASON = re.compile(r"\[SSL: ([A-Z0-9_]+)\]")


def _problem_of_reason(reason: str) -> TlsProblem:
    if reason == "TLSV13_ALERT_CERTIFICATE_REQUIRED":
        return TlsProblem("the server requires a client certificate (TLS alert: certificate required)",
                          "pass --client-cert (and --client-key)")
    if reason == "SSLV3_ALERT_HANDSHAKE_FAILURE":
        return TlsProblem("the server refused the TLS handshake (alert: handshake failure)",
                          "if it requires a client certificate, pass --client-cert (and --client-key)")
    if reason in _CLIENT_CERT_ALERTS:
        alert = reason.split("ALERT_", 1)[-1].replace("_", " ").lower()
        return TlsProblem(f"the server did not accept the client certificate (TLS alert: {alert})",
                          "check --client-cert and --client-key against the CA the server trusts")
    if reason in _NOT_TLS:
        return TlsProblem(f"the server does not speak TLS on this port ({reason.lower().replace('_', ' ')})",
                          "use http:// in --base-url, or the server's TLS port")
    return TlsProblem(f"TLS handshake failed ({reason.lower().replace('_', ' ')})", "check the server's TLS set-up",
                      conclusive=reason not in _NOT_CONCLUSIVE)


def tls_problem(exc: BaseException | None) -> TlsProblem | None:
    """The TLS failure behind a connection error (aiohttp's, or the ssl module's), None when it was none.

    aiohttp wraps the ssl module's error in its own (`certificate_error`,
    `os_error`, the cause), or keeps only its text (a ClientOSError whose
    message is "[SSL: TLSV13_ALERT_CERTIFICATE_REQUIRED] ..."); every one is
    looked at.
    """
    chain: list[BaseException] = []
    todo = [exc]
    while todo:  # the error and everything it wraps, outermost first
        e = todo.pop(0)
        if e is None or any(e is c for c in chain):
            continue
        chain.append(e)
        todo += [getattr(e, "certificate_error", None), getattr(e, "os_error", None), e.__cause__, e.__context__]
    for e in chain:  # (aiohttp's errors are ssl's too, by their bases, without the attributes)
        code = getattr(e, "verify_code", None)
        if isinstance(e, ssl.SSLCertVerificationError) and code is not None:
            what, fix = _VERIFY.get(code, ("not accepted", UNTRUSTED))
            detail = (getattr(e, "verify_message", None) or str(e)).rstrip(".")
            return TlsProblem(f"TLS certificate {what} ({detail})", fix)
        reason = getattr(e, "reason", None)
        if isinstance(e, ssl.SSLError) and isinstance(reason, str) and reason:
            return _problem_of_reason(reason)
    for e in chain:  # only the text is left
        match = _SSL_REASON.search(str(e)) if isinstance(e, OSError) else None
        if match:
            return _problem_of_reason(match.group(1))
    return None


# ---- asking the server what it objects to

ANSWER_S = 2.0  # how long a server that refuses this client takes to say so after the handshake: a round trip


async def handshake_alert(host: str, port: int, context: ssl.SSLContext | None, timeout: float,
                          client_cert: bool = False) -> TlsProblem | None:
    """Handshake with the server, send nothing, and read: what a server that refuses this client says.

    A server that wants a client certificate it did not get completes the
    TLS 1.3 handshake, then sends the `certificate required` alert and
    closes; but the request is on its way by then, so the close comes as a
    reset that destroys the alert, and aiohttp sees only "connection reset
    by peer".  With nothing sent, the close is orderly and the alert is
    read here.  A server that closes without a word right after the
    handshake, before any request, is one that refused the certificate too
    (asyncio's servers send no alert).  None: the server waited for a
    request (or could not be reached at all): nothing TLS can explain.
    `client_cert`: whether this client showed one (`--client-cert`).
    """
    context = context or ssl.create_default_context()

    def probe() -> TlsProblem | None:
        try:
            with socket.create_connection((host, port), timeout=timeout) as raw:
                with context.wrap_socket(raw, server_hostname=host) as tls:
                    tls.settimeout(min(timeout, ANSWER_S))
                    if tls.recv(1):
                        return None
        except ssl.SSLError as exc:
            return tls_problem(exc)
        except OSError:  # a timeout (the server waits for the request: TLS is fine), a refusal, a reset
            return None
        if client_cert:
            return TlsProblem("the server closed the connection right after the TLS handshake, before any request",
                              "it did not accept the client certificate: check --client-cert and --client-key")
        return TlsProblem("the server closed the connection right after the TLS handshake, before any request",
                          "it requires a client certificate: pass --client-cert (and --client-key)")

    return await asyncio.to_thread(probe)
