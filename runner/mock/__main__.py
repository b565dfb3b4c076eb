"""``python -m runner.mock ...``: the same as ``streamrun mock ...``."""

from .server import mock_command

if __name__ == "__main__":
    mock_command()
