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
from dataclasses import dataclass
from typing import Mapping

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


@dataclass(frozen=True)
class Credentials:
    headers: dict[str, str]
    secrets: tuple[str, ...]  # every value taken from the environment, for redaction


def resolve_headers(templates: tuple[str, ...], *, api_key_env: str | None, environ: Mapping[str, str],
                    auth: str = "bearer") -> Credentials:
    """The session's headers: JSON in, SSE out, who we are, the key, and the user's own.

    `auth` is "bearer" (Authorization: Bearer KEY), "x-api-key" (Anthropic) or "none"; a missing key is
    not an error here (loopback servers need none), the run's checks decide.
    """
    headers = {
        "Content-Type": "application/json",
        "Accept": "text/event-stream",
        "User-Agent": user_agent(),
    }
    secrets: list[str] = []
    key = environ.get(api_key_env) if api_key_env and auth != "none" else None
    if key:
        _check_value(key, f"the key in {api_key_env}")
        if auth == "x-api-key":  # Anthropic's
            headers["x-api-key"] = key
        else:
            headers["Authorization"] = f"Bearer {key}"
        secrets.append(key)
    for template in templates:
        name, value = parse_header(template)

        def fill(match: re.Match) -> str:
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
