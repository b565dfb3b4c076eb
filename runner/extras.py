"""The command that installs one of streamrun's optional extras, for the streamrun that is running.

Why: `pip install 'streamrun[export]'` is right only for a package installed
from PyPI with the `pip` on PATH.  From a checkout (`make` installs it
editable into .venv) it would fetch a second streamrun from PyPI, and a bare
`pip` may belong to another Python.  So the hint names the pip of this
interpreter's virtual environment, and the checkout when streamrun runs
from one.
"""

from __future__ import annotations

import os
import shlex
import sys
from pathlib import Path

PACKAGE = "streamrun"


def install_hint(extra: str, *, package_dir: str | os.PathLike | None = None, prefix: str | None = None,
                 base_prefix: str | None = None, executable: str | None = None, cwd: str | None = None) -> str:
    """`.venv/bin/pip install -e '.[export]'` from a checkout, `/opt/sr/bin/pip install 'streamrun[export]'`
    from a venv, `/usr/bin/python3 -m pip install 'streamrun[export]'` outside one.

    The keywords stand in for the running interpreter and package (tests).
    """
    cwd = cwd or os.getcwd()
    checkout = _checkout(Path(package_dir or Path(__file__).parent))
    target = f"{_shown(checkout, cwd)}[{extra}]" if checkout is not None else f"{PACKAGE}[{extra}]"
    editable = "-e " if checkout is not None else ""
    return f"{_pip(prefix or sys.prefix, base_prefix or sys.base_prefix, executable or sys.executable, cwd)} " \
           f"install {editable}{shlex.quote(target)}"


def _checkout(package_dir: Path) -> Path | None:
    """The source tree the `runner` package is imported from (a clone, or an editable install of one), if so:
    the folder above it with streamrun's pyproject.toml.  An installed wheel has none beside it."""
    root = package_dir.resolve().parent
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except OSError:
        return None
    return root if f'name = "{PACKAGE}"' in text else None


def _pip(prefix: str, base_prefix: str, executable: str, cwd: str) -> str:
    """This interpreter's pip: its venv's `bin/pip` when it has one, else `python -m pip`."""
    if os.path.realpath(prefix) != os.path.realpath(base_prefix):  # a virtual environment
        pip = Path(prefix) / ("Scripts/pip.exe" if os.name == "nt" else "bin/pip")
        if pip.exists():
            return shlex.quote(_shown(pip, cwd))
    return f"{shlex.quote(executable)} -m pip"


def _shown(path: Path, cwd: str) -> str:
    """Relative to the working directory when inside it (`.`, `.venv/bin/pip`), else absolute."""
    path = Path(os.path.abspath(path))
    try:
        rel = path.relative_to(os.path.abspath(cwd))
    except ValueError:
        return str(path)
    return str(rel)
