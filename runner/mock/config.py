"""How the mock behaves: ``MockConfig``, scripted timings and their loader.

Why it exists: the configuration is the one thing every other part of the
mock (and the CLI, the job file's ``[mock]`` table and the Python API)
shares; it lives apart from the server so that reading a job file does not
import aiohttp handlers.
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from ..io.jsonl import JsonlReader

__all__ = ["MockConfig", "ScriptEntry", "load_script", "finite_nonneg"]


def finite_nonneg(x: Any) -> bool:
    """A real number (not a bool), finite and >= 0."""
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0


@dataclass(frozen=True)
class ScriptEntry:
    """One scripted response timing: the first content event at ``ttft``
    seconds, then one more event after each gap (``len(gaps) + 1`` events)."""

    ttft: float
    gaps: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not finite_nonneg(self.ttft) or not all(finite_nonneg(g) for g in self.gaps):
            raise ValueError("script ttft and gaps must be finite numbers >= 0")


@dataclass(frozen=True)
class MockConfig:
    """How the mock behaves.  See the package docstring for the semantics.

    ``model`` and ``aliases`` are the served model names: a request naming
    any other model is refused with 404, as real servers do, unless
    ``any_model`` (the mock that ``run --mock`` and a job's ``[mock]`` start
    for a dry run of the user's own file, whose lines name real models; the
    replies still name ``model``).  ``max_context``
    is the context window in tokens (None or 0: unlimited).  ``lenient``
    turns request validation off (accept anything that can be served), for
    debugging clients; a test that passes only with it proves nothing.

    The Batch APIs (``batches``): a batch's lines are answered evenly over
    ``batch_delay`` seconds and, with ``batch_polls``, over that many
    retrievals (both, when both are set), and it ends once all are; with
    ``batch_expire_at`` it expires instead once that fraction is answered."""

    ttft: float = 0.05
    tokens_per_s: float = 200.0  # 0 or inf: no sleeps between events
    output_tokens: int = 64  # the request's max_(completion_)tokens overrides it
    tokens_per_chunk: int = 1
    error_rate: float = 0.0
    status_429_rate: float = 0.0
    drop_rate: float = 0.0
    retry_after: float = 1.0
    seed: int | None = None
    script: tuple[ScriptEntry, ...] = ()
    rpm_limit: int | None = None
    tpm_limit: int | None = None
    quota_fill: float = 1.0  # how full the quota buckets start (0..1); below 1, a burst at start trips them
    model: str = "mock-model"
    api_key: str | None = None
    aliases: tuple[str, ...] = ()
    max_context: int | None = 4096
    lenient: bool = False
    any_model: bool = False
    batch_delay: float = 0.5  # seconds a batch takes from creation to its end (its lines answered evenly over it)
    batch_polls: int = 0  # retrievals a batch needs before it ends (its lines answered evenly over them); 0: none
    batch_expire_at: float | None = None  # a batch expires once this fraction of its lines is answered (fault)

    def __post_init__(self) -> None:
        if not finite_nonneg(self.ttft):
            raise ValueError("ttft must be a finite number >= 0")
        if not self.tokens_per_s >= 0:  # also rejects NaN
            raise ValueError("tokens_per_s must be >= 0 (0 or inf: as fast as possible)")
        if self.output_tokens < 0:
            raise ValueError("output_tokens must be >= 0")
        if self.tokens_per_chunk < 1:
            raise ValueError("tokens_per_chunk must be >= 1")
        rates = (self.error_rate, self.status_429_rate, self.drop_rate)
        if not all(0.0 <= r <= 1.0 for r in rates) or sum(rates) > 1.0 + 1e-9:
            raise ValueError("error/429/drop rates must be in [0, 1] and sum to at most 1")
        if not finite_nonneg(self.retry_after):
            raise ValueError("retry_after must be a finite number >= 0")
        for name in ("rpm_limit", "tpm_limit"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive")
        if not 0.0 <= self.quota_fill <= 1.0:
            raise ValueError("quota_fill must be in [0, 1]")
        if not isinstance(self.script, tuple):
            object.__setattr__(self, "script", tuple(self.script))
        if isinstance(self.aliases, str):
            object.__setattr__(self, "aliases", (self.aliases,))
        elif not isinstance(self.aliases, tuple):
            object.__setattr__(self, "aliases", tuple(self.aliases))
        if not all(isinstance(name, str) and name for name in (self.model, *self.aliases)):
            raise ValueError("model and aliases must be non-empty strings")
        if not finite_nonneg(self.batch_delay):
            raise ValueError("batch_delay must be a finite number >= 0")
        if isinstance(self.batch_polls, bool) or not isinstance(self.batch_polls, int) or self.batch_polls < 0:
            raise ValueError("batch_polls must be an integer >= 0")
        if self.batch_expire_at is not None and not (finite_nonneg(self.batch_expire_at) and self.batch_expire_at <= 1):
            raise ValueError("batch_expire_at must be a fraction in [0, 1]")
        if self.max_context is not None:
            if isinstance(self.max_context, bool) or not isinstance(self.max_context, int) or self.max_context < 0:
                raise ValueError("max_context must be an integer >= 0 (0 or None: unlimited)")
            if self.max_context == 0:
                object.__setattr__(self, "max_context", None)

    @property
    def token_interval(self) -> float:
        """Seconds between tokens after the first (0 = no sleeping)."""
        rate = self.tokens_per_s
        return 0.0 if rate == 0 or math.isinf(rate) else 1.0 / rate

    @property
    def served_models(self) -> tuple[str, ...]:
        """Every model name the mock lists, ``model`` first."""
        return tuple(dict.fromkeys((self.model, *self.aliases)))

    def serves(self, name: str) -> bool:
        """Does the mock answer a request for model ``name``?"""
        return self.any_model or name in self.served_models


def load_script(path: str | os.PathLike[str]) -> tuple[ScriptEntry, ...]:
    """Read timing entries from a JSONL file (one object per line) or a
    JSON list of objects: ``{"ttft": 0.1, "gaps": [0.01, 0.02]}``.
    Raises ValueError naming the bad entry."""
    data = Path(path).read_bytes()
    items: list[tuple[str, Any]]
    if data.lstrip().startswith(b"["):
        try:
            items = [(f"item {i}", obj) for i, obj in enumerate(orjson.loads(data))]
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"{path}: not JSON: {exc}") from None
    else:
        def refuse(line: int, why: str) -> None:
            raise ValueError(f"{path}: line {line}: {why}")

        with JsonlReader(io.BytesIO(data), name=os.fspath(path), on_bad=refuse) as reader:
            items = [(f"line {line}", obj) for line, _raw, obj in reader.objects()]
    entries = []
    for where, obj in items:
        try:
            if not isinstance(obj, dict) or "ttft" not in obj:
                raise ValueError('expected an object with "ttft" and "gaps"')
            gaps = obj.get("gaps", [])
            if not isinstance(gaps, list):
                raise ValueError('"gaps" must be a list of seconds')
            entries.append(ScriptEntry(obj["ttft"], tuple(gaps)))
        except ValueError as exc:
            raise ValueError(f"{path}: {where}: {exc}") from None
    if not entries:
        raise ValueError(f"{path}: no script entries")
    return tuple(entries)
