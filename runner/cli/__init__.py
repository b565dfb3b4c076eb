"""The `streamrun` command line: every click command; wiring only, and nothing below imports it."""

from .main import main

__all__ = ["main"]
