"""Declarative TOML job files for unattended runs (cron, systemd timers, CronJobs).

Keys are the option table's (`runner/config/options.py`), so a job file and the
command line accept the same values and mean the same thing by them.  Every
key is checked before anything is sent: an unknown key or a bad value is one
line naming the file and the key, exit 2.  Relative paths are taken relative
to the job file, so a crontab can run it from any directory.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from ..errors import RunError, UsageError
from .options import BY_KEY, TABLE_KEYS, build_config, did_you_mean, parse_values
from .parsers import OptionError
from .run_config import RunConfig

if TYPE_CHECKING:
    from ..mock import MockConfig


class JobFileError(UsageError):
    pass


def deep_merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """`--set params.temperature=1` changes one key of [params], not the whole table."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _parse_overrides(overrides: tuple[str, ...]) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for item in overrides:
        try:
            doc = deep_merge(doc, tomllib.loads(item))
        except tomllib.TOMLDecodeError as exc:
            raise JobFileError(f"--set {item!r}: not a TOML key = value ({exc})") from None
    return doc


def _flatten(path: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    """Job keys to option fields; [timeouts] and [pricing] become dotted keys."""
    raw: dict[str, Any] = {}
    for key, value in doc.items():
        if key in TABLE_KEYS:
            if not isinstance(value, dict):
                raise JobFileError(f"{path}: key {key!r} must be a table")
            items = {f"{key}.{k}": v for k, v in value.items()}
        else:
            items = {key: value}
        for name, v in items.items():
            if name not in BY_KEY:
                raise JobFileError(f"{path}: unknown key {name!r}{did_you_mean(name, BY_KEY)}")
            raw[BY_KEY[name].field] = v
    return raw


def load_job(path: str, overrides: tuple[str, ...] = (), environ: Mapping[str, str] = os.environ
             ) -> tuple[RunConfig, MockConfig | None]:
    """Read, validate and turn a job file into (RunConfig, MockConfig or None)."""
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise JobFileError(f"{path}: not valid TOML: {exc}") from None
    doc = deep_merge(doc, _parse_overrides(overrides))
    mock = _mock_config(path, doc.pop("mock", None))
    for required in ("inputs", "output"):
        if required not in doc:
            raise JobFileError(f"{path}: missing key {required!r}")
    return config_from_mapping(doc, path, os.path.dirname(os.path.abspath(path)), environ,
                               default_job=os.path.splitext(os.path.basename(path))[0]), mock


def config_from_mapping(doc: Mapping[str, Any], where: str, base: str, environ: Mapping[str, str] = os.environ,
                        default_job: str | None = None) -> RunConfig:
    """A RunConfig from job keys (a job file's, or the Python API's keyword arguments); paths relative to `base`."""
    raw = _flatten(where, doc)
    for option in BY_KEY.values():
        if option.field not in raw and option.envvar and environ.get(option.envvar):
            raw[option.field] = environ[option.envvar]
    try:
        values = parse_values(raw, where=lambda o: f"key {o.key!r} ")
    except OptionError as exc:
        raise JobFileError(f"{where}: {exc}") from None
    if values.get("base_dir"):
        base = os.path.normpath(os.path.join(base, values["base_dir"]))
        values["base_dir"] = base

    def here(p: str) -> str:
        return p if os.path.isabs(p) or p == "-" else os.path.normpath(os.path.join(base, p))

    values["inputs"] = tuple(here(p) for p in values["inputs"])
    for path in ("output.path", "output.summary_path", "transport.ca_cert", "transport.client_cert",
                 "transport.client_key"):
        if path in values:
            values[path] = here(values[path])
    if default_job is not None:
        values.setdefault("job", default_job)
    try:
        return build_config(values)
    except RunError as exc:
        raise JobFileError(f"{where}: {exc}") from None


def _mock_config(path: str, table: object) -> MockConfig | None:
    """A `[mock]` table runs the job against the embedded mock (used by the shipped example)."""
    if table is None:
        return None
    from ..mock import MockConfig

    if not isinstance(table, dict):
        raise JobFileError(f"{path}: key 'mock' must be a table")
    allowed = {f.name for f in fields(MockConfig)} - {"script", "api_key", "any_model"}  # a run's mock serves any
    for key in table:
        if key not in allowed:
            raise JobFileError(f"{path}: unknown key {'mock.' + key!r}{did_you_mean(key, allowed)}")
    try:
        return MockConfig(**table)
    except (TypeError, ValueError) as exc:
        raise JobFileError(f"{path}: [mock] {exc}") from None
