"""The optional packages an export needs: pyarrow always, datasets for ``--to hf-dataset``.

Why it exists: both come with the ``export`` extra, not with streamrun
itself, so importing :mod:`runner.export` must not need them, and a missing
one has to be a configuration error (exit 2) that says what to install (the
command for this install: :mod:`runner.extras`), not a traceback. Every
module of the export loads them here, when it is about to use them.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..errors import UsageError
from ..extras import install_hint


class MissingPackage(UsageError):
    """pyarrow or datasets is not installed: a configuration error (exit 2, as every UsageError)."""


def _require(module: str, needs: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingPackage(f"{needs}: {install_hint('export')}") from None


def load_pyarrow() -> ModuleType:
    """``pyarrow``, with ``pyarrow.parquet`` imported (``pa.parquet``); MissingPackage without it."""
    _require("pyarrow.parquet", "export needs pyarrow")
    return importlib.import_module("pyarrow")


def load_datasets(target: str) -> ModuleType:
    """``datasets`` for ``--to {target}``; MissingPackage without it."""
    return _require("datasets", f"--to {target} needs the datasets package")
