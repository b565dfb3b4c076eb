"""The streamrun logger: text or JSON lines on stderr, secrets redacted.

Why apart from the CLI: worker processes log through it too
(`runner.workers.child`), and nothing below the CLI may import the CLI.
"""

from __future__ import annotations

import logging
import sys

import orjson

from .stream.errors import redact


class SecretFilter(logging.Filter):
    """Last line of defence: no log record may carry the key, whatever formatted it."""

    def __init__(self, secrets: tuple[str, ...]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        red = redact(msg, self.secrets)
        if red != msg:
            record.msg, record.args = red, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: `{"ts", "level", "msg"}`, plus the fields of `extra={"data": {...}}`.

    `log.info("progress", extra={"data": {"done": 3}})` gives `{"ts", "level", "msg": "progress", "done": 3}`;
    a field never replaces ts, level or msg. String values in the fields are redacted like messages.
    """

    emits_json = True  # runner.observe.progress.json_logs() reads this: the run then logs progress and summary as JSON

    def __init__(self, secrets: tuple[str, ...] = ()) -> None:
        super().__init__()
        self.secrets = secrets

    def _redact(self, value):
        if isinstance(value, str):
            return redact(value, self.secrets)
        if isinstance(value, dict):
            return {k: self._redact(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._redact(v) for v in value]
        return value

    def format(self, record: logging.LogRecord) -> str:
        out = {"ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"), "level": record.levelname.lower(),
               "msg": record.getMessage()}
        data = getattr(record, "data", None)
        if isinstance(data, dict):
            for key, value in data.items():
                out.setdefault(str(key), self._redact(value) if self.secrets else value)
        if record.exc_info:
            out.setdefault("exc", self._redact(self.formatException(record.exc_info)))
        return orjson.dumps(out, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def setup_logging(fmt: str, verbosity: int, secrets: tuple[str, ...] = ()) -> None:
    """The streamrun logger on stderr; under json, other libraries' warnings become JSON lines too."""
    logger = logging.getLogger("streamrun")
    logger.handlers.clear()
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets) if fmt == "json" else logging.Formatter("streamrun: %(message)s"))
    handler.addFilter(SecretFilter(secrets))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if verbosity < 0 else logging.DEBUG if verbosity > 0 else logging.INFO)
    logger.propagate = False
    if fmt == "json":  # asyncio's, aiohttp's and Python's warnings would otherwise reach stderr as plain text
        root = logging.getLogger()
        for old in [h for h in root.handlers if getattr(h, "_streamrun", False)]:
            root.removeHandler(old)
        other = logging.StreamHandler(sys.stderr)
        other.setFormatter(JsonFormatter(secrets))
        other.addFilter(SecretFilter(secrets))
        other.setLevel(logging.WARNING)
        other._streamrun = True  # type: ignore[attr-defined]
        root.addHandler(other)
        logging.captureWarnings(True)
