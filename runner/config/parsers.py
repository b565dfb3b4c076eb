"""Parsers for option values: each takes a CLI string or a TOML value and returns the typed value.

Why a module of their own: `options.py` is the table of options; these are the
kinds of value the table's rows take, shared by `run`, job files and `report`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, TypeVar

if TYPE_CHECKING:
    from yarl import URL

    from .run_config import FsyncPolicy


class OptionError(ValueError):
    """A value an option cannot take; the message names the flag or the key."""


# ---- parsers (one per kind of value; each accepts a CLI string or a TOML value)

_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(ms|s|m|h)?\s*$")
_UNITS = {None: 1.0, "s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0}


def duration(v: Any) -> float:
    """`500ms`, `5s`, `2m`, `1h`, or a bare number of seconds; never negative."""
    if isinstance(v, bool):
        raise OptionError("must be a duration like 500ms, 5s, 2m or a number of seconds")
    if isinstance(v, (int, float)):
        seconds = float(v)
    else:
        m = _DURATION.match(str(v))
        if not m:
            raise OptionError(f"{v!r} is not a duration (500ms, 5s, 2m, 1h, or seconds)")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if not math.isfinite(seconds) or seconds < 0:
        raise OptionError("must be a finite duration >= 0")
    return seconds


def duration_text(seconds: float) -> str:
    """A duration as `duration` reads it back and a person writes it: 1s, 500ms, 2m, 1h, 1.5s."""
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{seconds / size:g}{unit}"
    if 0 < seconds < 1 and round(seconds * 1000, 6).is_integer():
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def positive_duration(v: Any) -> float:
    seconds = duration(v)
    if seconds <= 0:
        raise OptionError("must be a duration > 0")
    return seconds


def timeout(v: Any) -> float | None:
    """A limit in seconds; `0`, `none`, `off` or false turn it off, on the command line and in job files alike."""
    if v is None or v is False or (isinstance(v, str) and v.strip().lower() in ("none", "off", "")):
        return None
    seconds = duration(v)
    return seconds or None


def string(v: Any) -> str:
    if not isinstance(v, str) or not v.strip():
        raise OptionError("must be a non-empty string")
    return v


def strings(v: Any) -> tuple[str, ...]:
    """One string or a list of them; on the command line, a repeatable flag."""
    items = [v] if isinstance(v, str) else list(v) if isinstance(v, (list, tuple)) else None
    if not items or not all(isinstance(x, str) and x.strip() for x in items):
        raise OptionError("must be a string or a non-empty list of strings")
    return tuple(items)


def strings_list(v: Any) -> tuple[str, ...]:
    """Words separated by commas (`length,content_filter`), or a list of them."""
    items = [x.strip() for x in v.split(",")] if isinstance(v, str) else v
    if not isinstance(items, (list, tuple)) or not items or not all(isinstance(x, str) and x.strip() for x in items):
        raise OptionError("must be a comma-separated list of words, or a list of strings")
    return tuple(x.strip() for x in items)


def urls(v: Any) -> tuple[str, ...]:
    """Base URLs; one value may hold several separated by spaces (an env variable)."""
    return tuple(u for item in strings(v) for u in item.split())


def _as_http_url(text: str) -> URL | None:
    """`text` as an http(s) URL with a host (the only kind these options take), else None."""
    from yarl import URL

    try:
        parsed = URL(text)
    except (ValueError, TypeError):
        return None
    return parsed if parsed.scheme in ("http", "https") and parsed.host else None


def metrics_urls(v: Any) -> tuple[str, ...]:
    """Prometheus endpoints: `auto` (each base URL's server's /metrics) or http(s) URLs; a bare origin gets
    /metrics.  A URL's password is never echoed in the message."""

    from ..stream.endpoints import public_url

    out: list[str] = []
    for item in urls(v):
        if item.lower() == "auto":
            out.append("auto")
            continue
        parsed = _as_http_url(item)
        if parsed is None:
            raise OptionError(f"{public_url(item)!r} is not an http(s) URL like http://gpu-box:8000/metrics, "
                              "nor auto")
        out.append(str(parsed.with_path("/metrics")) if parsed.path in ("", "/") else item)
    return tuple(dict.fromkeys(out))


def http_url(v: Any) -> str:
    """One http(s) URL (a Pushgateway, an OTLP collector); a bare `host:port` means http://host:port, as
    prometheus-client reads it.  A URL's password is never echoed in the message."""

    from ..stream.endpoints import public_url

    text = string(v).strip()
    if "://" not in text:
        text = "http://" + text
    if _as_http_url(text) is None:
        raise OptionError(f"{public_url(text)!r} is not an http(s) URL like http://pushgateway:9091")
    return text


_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.I)
_SIZE_UNITS = {None: 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2, "gb": 1000**3,
               "gib": 1024**3}


def byte_size(v: Any) -> int:
    """`16MiB`, `64KB`, `1GiB`, or a number of bytes; at least 1 KiB, so a typo cannot refuse everything."""
    if isinstance(v, bool):
        raise OptionError("must be a size like 16MiB or a number of bytes")
    if isinstance(v, int):
        n = v
    else:
        m = _SIZE.match(str(v))
        if not m:
            raise OptionError(f"{v!r} is not a size (16MiB, 64KB, or bytes)")
        n = int(float(m.group(1)) * _SIZE_UNITS[(m.group(2) or "").lower() or None])
    if n < 1024:
        raise OptionError("must be at least 1KiB")
    return n


def _integer(v: Any) -> int:
    if isinstance(v, bool):
        raise OptionError("must be an integer")
    if isinstance(v, int):
        return v
    if isinstance(v, str) and re.fullmatch(r"\s*-?\d+\s*", v):
        return int(v)
    raise OptionError(f"{v!r} is not an integer")


_N = TypeVar("_N", bound=float)  # int or float


def _at_least(parse: Callable[[Any], _N], low: float, strict: bool, message: str) -> Callable[[Any], _N]:
    """A parser whose value must be above `low` (or at least `low`) and finite."""
    def check(v: Any) -> _N:
        x = parse(v)
        if (x <= low if strict else x < low) or (isinstance(x, float) and math.isinf(x)):
            raise OptionError(message)
        return x
    return check


integer = _integer
positive_int = _at_least(_integer, 0, True, "must be a positive integer")
non_negative_int = _at_least(_integer, 0, False, "must be an integer >= 0")


def workers_count(v: Any) -> int | str:
    """Processes for --workers: a positive integer, or `auto` (resolved by the config: cores - 1, at least 1)."""
    if isinstance(v, str) and v.strip().lower() == "auto":
        return "auto"
    try:
        return positive_int(v)
    except OptionError:
        raise OptionError("must be a positive integer or auto") from None


def _number(v: Any) -> float:
    if isinstance(v, bool):
        raise OptionError("must be a number")
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise OptionError(f"{v!r} is not a number") from None
    if math.isnan(x):
        raise OptionError("must be a number")
    return x


positive_number = _at_least(_number, 0, True, "must be a positive number")
non_negative_number = _at_least(_number, 0, False, "must be a number >= 0")


def proxy_url(v: Any) -> str:
    """An HTTP(S) proxy, `http://[user:password@]host:port`; its password is never echoed in the message."""

    from ..stream.endpoints import public_url

    text = string(v).strip()
    if _as_http_url(text) is None:
        raise OptionError(f"{public_url(text)!r} is not an HTTP proxy URL like http://proxy.internal:3128 "
                          "(http:// or https://; SOCKS is not supported)")
    return text


def boolean(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.strip().lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
        return v.strip().lower() in ("true", "yes", "1", "on")
    raise OptionError("must be true or false")


def _items(v: Any) -> list[Any]:
    """A list from a TOML list, a scalar, or a comma-separated CLI string."""
    if isinstance(v, (list, tuple)):
        return list(v)
    if isinstance(v, str):
        return [p.strip() for p in v.split(",") if p.strip()]
    return [v]


def int_list(v: Any) -> tuple[int, ...]:
    items = _items(v)
    if not items:
        raise OptionError("must be a positive integer or a list of them")
    return tuple(positive_int(x) for x in items)


def rate_list(v: Any) -> tuple[float, ...] | tuple[Literal["sweep"]]:
    """Requests per second, `inf` for all at once; a list makes a sweep; `sweep` finds the rates itself."""
    if isinstance(v, str) and v.strip().lower() == "sweep":
        return ("sweep",)
    out: list[float] = []
    for x in _items(v):
        if isinstance(x, str) and x.lower() in ("inf", "infinity"):
            out.append(math.inf)
        elif isinstance(x, float) and math.isinf(x) and x > 0:
            out.append(math.inf)
        else:
            try:
                out.append(positive_number(x))
            except OptionError:
                raise OptionError("must be a positive number (requests/s), inf, a list of them, or sweep") from None
    if not out:
        raise OptionError("must be a rate (requests/s), inf, or a list of them")
    return tuple(out)


MAX_PERCENTILES = 16  # a summary describes each for every metric: keep it small


def percentile_list(v: Any) -> tuple[float, ...]:
    """`50,90,99.9` (or a TOML list): each strictly between 0 and 100, since min and max are always shown.

    Returned ascending without repeats, whole numbers as ints, so the summary's keys read `p50`, `p99.9`.
    """
    items = _items(v)
    if not items:
        raise OptionError("must be a list of percentiles like 50,90,99.9")
    out = set()
    for x in items:
        try:
            q = _number(x)
        except OptionError:
            raise OptionError(f"{x!r} is not a percentile (a number between 0 and 100)") from None
        if not 0 < q < 100:
            raise OptionError(f"{x!r}: a percentile must lie strictly between 0 and 100 (min and max are always "
                              "shown)")
        out.add(int(q) if q.is_integer() else q)
    if len(out) > MAX_PERCENTILES:
        raise OptionError(f"at most {MAX_PERCENTILES} percentiles")
    return tuple(sorted(out))


class Choice:
    """A parser that takes one of `choices` (the command line offers them as a click.Choice)."""

    def __init__(self, choices: tuple[str, ...]) -> None:
        self.choices = choices

    def __call__(self, v: Any) -> str:
        if not isinstance(v, str) or v not in self.choices:
            raise OptionError(f"must be one of {', '.join(self.choices)}")
        return v


def choice(*allowed: str) -> Choice:
    return Choice(allowed)


def _pairs(v: Any, what: str) -> dict[str, Any]:
    """A TOML table, or CLI `key=value` items."""
    if isinstance(v, dict):
        return dict(v)
    if not isinstance(v, (str, list, tuple)):  # a job file may give any TOML value: 5, true, a date
        raise OptionError(f"must be a table or {what} items")
    out: dict[str, Any] = {}
    for item in [v] if isinstance(v, str) else v:
        if not isinstance(item, str):
            raise OptionError(f"must be a table or {what} items")
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise OptionError(f"{item!r} is not {what}")
        out[key.strip()] = value
    return out


# Request fields the API types as strings: `--param user=12345` must not send a number.
STRING_PARAMS = frozenset({"model", "user", "suffix", "service_tier", "reasoning_effort", "prompt",
                           "prompt_cache_key", "safety_identifier", "verbosity"})


def params(v: Any) -> dict[str, Any]:
    """Request defaults: a TOML table, or `key=value` with a JSON value when it parses (else a string)."""
    import orjson

    if isinstance(v, dict):
        return dict(v)
    out: dict[str, Any] = {}
    for key, value in _pairs(v, "key=value").items():
        if key in STRING_PARAMS:
            out[key] = value
            continue
        try:
            out[key] = orjson.loads(value)
        except orjson.JSONDecodeError:
            out[key] = value
    return out


# The metrics a goodput SLO may bound, each in seconds: the one list (`run --slo`, job files, `report --slo`,
# and the summary's goodput in runner/stats).
SLO_METRICS = ("ttft", "tpot", "itl", "e2e")


def slos(v: Any) -> dict[str, float]:
    """Goodput SLOs: `ttft=500ms`, `tpot=0.05`; the one parser `run`, job files and `report` share."""
    out = {}
    for key, value in _pairs(v, "METRIC=DURATION").items():
        name = key.strip().removesuffix("_s")
        if name not in SLO_METRICS:
            raise OptionError(f"unknown SLO {key!r} (use {', '.join(SLO_METRICS)})")
        out[name] = positive_duration(value)
    return out


def headers(v: Any) -> tuple[str, ...]:
    """`Name: value` strings (or a TOML table name = value); ${VAR} is read from the environment."""
    from ..stream.headers import HeaderError, parse_header

    items = [f"{k}: {x}" for k, x in v.items()] if isinstance(v, dict) else _as_list(v)
    if not all(isinstance(x, str) for x in items):
        raise OptionError("must be a table of name = value or a list of 'Name: value' strings")
    try:
        for item in items:
            parse_header(item)
    except HeaderError as exc:
        raise OptionError(str(exc)) from None
    return tuple(items)


def _as_list(v: Any) -> list[Any]:
    return [v] if isinstance(v, str) else list(v) if isinstance(v, (list, tuple)) else [v]


def env_name(v: Any) -> str:
    from ..stream.headers import HeaderError, check_env_name

    try:
        return check_env_name(string(v))
    except HeaderError as exc:
        raise OptionError(str(exc)) from None


def fsync(v: Any) -> FsyncPolicy:
    from .run_config import FsyncPolicy

    if isinstance(v, bool) or not isinstance(v, (str, int, float)):
        raise OptionError("must be always, never, interval or a number of seconds")
    try:
        policy = FsyncPolicy.parse(str(v))
    except ValueError as exc:
        raise OptionError(str(exc)) from None
    if not (math.isfinite(policy.interval_s) and policy.interval_s >= 0):
        raise OptionError("must be always, never, interval or a number of seconds >= 0")
    return policy


failure_budget = _at_least(_number, 0, False, "must be a fraction (0.01) or a count (10) >= 0")
