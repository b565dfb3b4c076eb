"""``python -m runner.cli``: the same as ``streamrun``."""

from .main import main

main()
