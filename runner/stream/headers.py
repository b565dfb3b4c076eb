"""What goes out with every request besides the body: the headers, and the secrets they hold.

Why a module of its own: the headers are where streamrun once failed every
request against a FastAPI server (a `bytes` body goes out as
`application/octet-stream` unless the content type is set), and where
secrets enter the process.  Every header is decided here, once, and every
value that came from the environment is returned as a secret so that logs,
records and the summary can redact it.

Header values given with `--header` (job key `headers`) may hold
`${VAR}`: the value of that environment variable, never written anywhere.
The config keeps the template, not the value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .endpoints import url_secrets

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # RFC 9110 field-name
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class HeaderError(ValueError):
    """A header template or environment reference that cannot be used."""


def user_agent() -> str:
    try:
        from importlib.metadata import version

        return f"streamrun/{version('streamrun')}"
    except Exception:  # not installed (run from a source tree)
        return "streamrun/0"


def parse_header(text: str) -> tuple[str, str]:
    """`Name: value` as given on the command line or in a job file."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not name:
        raise HeaderError(f"header {text!r} is not 'Name: value'")
    if not _TOKEN.match(name):
        raise HeaderError(f"header name {name!r} is not a valid HTTP field name")
    if "\r" in value or "\n" in value:
        raise HeaderError(f"header {name!r}: the value may not contain a line break")
    return name, value


OPENAI = "openai"  # every API but Anthropic's: Authorization: Bearer KEY
ANTHROPIC = "anthropic"  # /v1/messages: x-api-key: KEY
KEY_HEADERS = {OPENAI: "Authorization", ANTHROPIC: "x-api-key"}


@dataclass(frozen=True)
class Credentials:
    """`headers` go with every request; `auth` holds each API's key header apart (OPENAI, ANTHROPIC), sent
    with that API's requests only, so one file can mix APIs against one gateway without handing either
    vendor's key to the other's endpoint."""

    headers: dict[str, str]
    secrets: tuple[str, ...]  # every value taken from the environment, for redaction
    auth: dict[str, dict[str, str]] = field(default_factory=dict)
    unusable: dict[str, str] = field(default_factory=dict)  # API -> why its key cannot be sent (a line break)

    def for_api(self, api: str) -> dict[str, str]:
        """Every header a request to `api` carries."""
        return {**self.headers, **self.auth.get(api, {})}


def resolve_credentials(templates: tuple[str, ...], *, key_envs: Mapping[str, str | None],
                        environ: Mapping[str, str], base_urls: Sequence[str] = ()) -> Credentials:
    """The headers of every request, and each API's key (`key_envs`: API -> variable, None for no key);
    `secrets`: every one of them, and the credentials in `base_urls` (`user:password@`).

    A missing or unusable key is not an error here (loopback servers need
    none; a run whose lines are all OpenAI's needs no Anthropic key): the
    run's checks decide.  A `--header` of the key header's name wins over
    the key (the key is still redacted).
    """
    common = _common_headers(templates, environ)
    names = {name.lower() for name in common.headers}
    secrets: list[str] = []
    auth: dict[str, dict[str, str]] = {}
    unusable: dict[str, str] = {}
    for api, variable in key_envs.items():
        key = environ.get(variable) if variable else None
        auth[api] = {}
        if not key:
            continue
        secrets.append(key)
        try:
            _check_value(key, f"the key in {variable}")
        except HeaderError as exc:
            unusable[api] = str(exc)
            continue
        name = KEY_HEADERS[api]
        if name.lower() not in names:
            auth[api] = {name: key if api == ANTHROPIC else f"Bearer {key}"}
    secrets.extend(common.secrets)
    secrets.extend(s for url in base_urls for s in url_secrets(url))
    return Credentials(common.headers, tuple(dict.fromkeys(secrets)), auth, unusable)


def _common_headers(templates: tuple[str, ...], environ: Mapping[str, str]) -> Credentials:
    """JSON in, SSE out, who we are, and the user's own headers (their `${VAR}`s filled, and secret)."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "User-Agent": user_agent(),
    }
    secrets: list[str] = []
    for template in templates:
        name, value = parse_header(template)

        def fill(match: re.Match[str], name: str = name) -> str:
            var = match.group(1)
            if var not in environ:
                raise HeaderError(f"header {name!r} uses ${{{var}}}, but the environment variable {var} is not set")
            _check_value(environ[var], f"header {name!r}: ${{{var}}}")
            secrets.append(environ[var])
            return environ[var]

        filled = _ENV_REF.sub(fill, value)
        for existing in [k for k in headers if k.lower() == name.lower()]:  # names are case-insensitive
            del headers[existing]
        headers[name] = filled
    return Credentials(headers, tuple(s for s in secrets if s))


def _check_value(value: str, what: str) -> None:
    """A value read from a file often ends in a newline; sent as is it breaks (or splits) the request."""
    if any(c in value for c in "\r\n\0"):
        raise HeaderError(f"{what} contains a line break or NUL (a trailing newline from a file?): strip it")


def check_env_name(name: str, what: str = "--api-key-env") -> str:
    """A variable name, not a key pasted where the name belongs (it would be written to the summary)."""
    if not ENV_NAME.match(name):
        raise HeaderError(f"{what} takes the name of an environment variable (like OPENAI_API_KEY), "
                          "not a key; the value you gave is not a variable name")
    return name
