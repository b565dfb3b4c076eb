"""Declarative TOML job files for unattended runs (cron, systemd timers, CronJobs).

Every key is checked before anything is sent: an unknown key or a bad value
is one line naming the file and the key, exit 2.  Relative paths are taken
relative to the job file, so a crontab can run it from any directory.
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
from dataclasses import fields
from typing import Any, Callable

from .config import DEFAULT_BASE_URL, FsyncPolicy, RetryPolicy, RunConfig, Timeouts, make_stages


class JobFileError(Exception):
    pass


def _positive_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ValueError("must be a positive integer")
    return v


def _non_negative_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError("must be an integer >= 0")
    return v


def _positive_number(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
        raise ValueError("must be a positive number")
    return float(v)


def _number_or_none(v: Any) -> float | None:
    if v is False or v == "none":
        return None
    return _positive_number(v)


def _string(v: Any) -> str:
    if not isinstance(v, str) or not v:
        raise ValueError("must be a non-empty string")
    return v


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise ValueError("must be true or false")
    return v


def _strings(v: Any) -> list[str]:
    if isinstance(v, str):
        v = [v]
    if not isinstance(v, list) or not v or not all(isinstance(x, str) and x for x in v):
        raise ValueError("must be a string or a non-empty list of strings")
    return v


def _int_list(v: Any) -> list[int]:
    return [_positive_int(x) for x in (v if isinstance(v, list) else [v])]


def _rate_list(v: Any) -> list[float]:
    out = []
    for x in v if isinstance(v, list) else [v]:
        out.append(math.inf if x in ("inf", math.inf) else _positive_number(x))
    return out


def _headers(v: Any) -> tuple[str, ...]:
    """A list of "Name: value" strings, or a table of name = value; ${VAR} is read from the environment."""
    from .headers import parse_header

    items = [f"{k}: {x}" for k, x in v.items()] if isinstance(v, dict) else v
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        raise ValueError("must be a table of name = value or a list of 'Name: value' strings")
    for item in items:
        parse_header(item)
    return tuple(items)


def _table(v: Any) -> dict:
    if not isinstance(v, dict):
        raise ValueError("must be a table")
    return v


def _max_failed(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise ValueError("must be a fraction (0.01) or a count (10) >= 0")
    return float(v)


def _choice(*allowed: str) -> Callable[[Any], str]:
    def check(v: Any) -> str:
        if v not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return v
    return check


def _slos(v: Any) -> dict:
    v = _table(v)
    out = {}
    for k, x in v.items():
        if k not in ("ttft", "tpot", "itl", "e2e"):
            raise ValueError(f"unknown SLO {k!r} (ttft, tpot, itl, e2e)")
        out[k] = _positive_number(x)
    return out


TOP_KEYS: dict[str, Callable[[Any], Any]] = {
    "name": _string, "inputs": _strings, "output": _string, "summary": _string,
    "base_url": _strings, "model": _string, "api_key_env": _string, "no_auth": _bool, "headers": _headers,
    "concurrency": _int_list, "rate": _rate_list, "burstiness": _positive_number,
    "num_prompts": _positive_int, "duration": _positive_number, "warmup": _non_negative_int, "seed": int,
    "max_attempts": _positive_int, "include_usage": _bool, "resume": _bool, "overwrite": _bool,
    "retry_failed": _bool, "fsync": _string, "drain_timeout": _positive_number,
    "output_format": _choice("streamrun", "openai-batch"), "shard": _string,
    "rpm": _positive_int, "tpm": _positive_int, "adaptive": _bool, "max_failed": _max_failed,
    "params": _table, "timeouts": _table, "pricing": _table, "slo": _slos, "mock": _table,
}
TIMEOUT_KEYS = {"connect": _number_or_none, "first_byte": _number_or_none, "idle": _number_or_none,
                "total": _number_or_none}
PRICING_KEYS = {"input": _positive_number, "output": _positive_number}


def _check_keys(path: str, where: str, table: dict, schema: dict) -> dict:
    out = {}
    for key, value in table.items():
        name = f"{where}{key}"
        if key not in schema:
            close = difflib.get_close_matches(key, list(schema), n=1)
            hint = f" (did you mean {where}{close[0]!r}?)" if close else ""
            raise JobFileError(f"{path}: unknown key {name!r}{hint}")
        try:
            out[key] = schema[key](value)
        except (ValueError, TypeError) as exc:
            raise JobFileError(f"{path}: key {name!r} {exc}, not {value!r}") from None
    return out


def _parse_overrides(path: str, overrides: tuple[str, ...]) -> dict:
    doc: dict = {}
    for item in overrides:
        try:
            doc.update(tomllib.loads(item))
        except tomllib.TOMLDecodeError as exc:
            raise JobFileError(f"--set {item!r}: not a TOML key = value ({exc})") from None
    return doc


def load_job(path: str, overrides: tuple[str, ...] = ()) -> tuple[RunConfig, Any]:
    """Read, validate and turn a job file into (RunConfig, MockConfig or None)."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise JobFileError(f"{path}: not valid TOML: {exc}") from None
    doc.update(_parse_overrides(path, overrides))
    job = _check_keys(path, "", doc, TOP_KEYS)
    for required in ("inputs", "output"):
        if required not in job:
            raise JobFileError(f"{path}: missing key {required!r}")
    timeouts = _check_keys(path, "timeouts.", job.get("timeouts", {}), TIMEOUT_KEYS)
    pricing = _check_keys(path, "pricing.", job.get("pricing", {}), PRICING_KEYS)
    mock = _mock_config(path, job.get("mock"))
    base = os.path.dirname(os.path.abspath(path))
    here = lambda p: p if os.path.isabs(p) or p == "-" else os.path.normpath(os.path.join(base, p))
    name = job.get("name") or os.path.splitext(os.path.basename(path))[0]
    try:
        stages = make_stages(job.get("concurrency", [16]), job.get("rate", [None]))
        fsync = FsyncPolicy.parse(job.get("fsync", "interval"))
    except ValueError as exc:
        raise JobFileError(f"{path}: {exc}") from None
    if job.get("resume") and job.get("overwrite"):
        raise JobFileError(f"{path}: keys 'resume' and 'overwrite' exclude each other")
    cfg = RunConfig(
        job=name,
        inputs=tuple(here(p) for p in job["inputs"]),
        output=here(job["output"]),
        summary_path=here(job["summary"]) if "summary" in job else None,
        base_urls=tuple(job.get("base_url") or [os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL]),
        model=job.get("model"),
        api_key_env=job.get("api_key_env", "OPENAI_API_KEY"),
        auth=not job.get("no_auth", False),
        headers=job.get("headers", ()),
        params=job.get("params", {}),
        include_usage=job.get("include_usage", True),
        stages=stages,
        burstiness=job.get("burstiness", 1.0),
        num_prompts=job.get("num_prompts"),
        duration_s=job.get("duration"),
        warmup=job.get("warmup", 0),
        seed=job.get("seed"),
        retry=RetryPolicy(max_attempts=job.get("max_attempts", 5)),
        timeouts=Timeouts(**{k: v for k, v in timeouts.items()}),
        resume=job.get("resume", False),
        overwrite=job.get("overwrite", False),
        retry_failed=job.get("retry_failed", False),
        fsync=fsync,
        drain_timeout_s=job.get("drain_timeout", 30.0),
        output_format=job.get("output_format", "streamrun"),
        shard=job.get("shard"),
        rpm=job.get("rpm"),
        tpm=job.get("tpm"),
        adaptive=job.get("adaptive", True),
        price_input=pricing.get("input"),
        price_output=pricing.get("output"),
        slos=job.get("slo", {}),
        max_failed=job.get("max_failed"),
    )
    return cfg, mock


def _mock_config(path: str, table: dict | None):
    """A `[mock]` table runs the job against the embedded mock (used by the shipped example)."""
    if table is None:
        return None
    from .mock import MockConfig

    allowed = {f.name for f in fields(MockConfig)} - {"script", "api_key"}
    schema = {k: (lambda v: v) for k in allowed}
    values = _check_keys(path, "mock.", table, schema)
    try:
        return MockConfig(**values)
    except TypeError as exc:
        raise JobFileError(f"{path}: [mock] {exc}") from None
