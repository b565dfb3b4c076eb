"""The API paths streamrun sends to, defined once, and whose key each one takes.

Every module that names an endpoint (the protocols, the line parser, the
Batch format, the mock) imports them from here.
"""

from __future__ import annotations

from .headers import ANTHROPIC, OPENAI

CHAT_PATH = "/v1/chat/completions"
COMPLETIONS_PATH = "/v1/completions"
RESPONSES_PATH = "/v1/responses"
MESSAGES_PATH = "/v1/messages"  # Anthropic
EMBEDDINGS_PATH = "/v1/embeddings"  # Batch lines only; one plain POST (runner/stream/embeddings.py)
ENDPOINT_PATHS = (CHAT_PATH, COMPLETIONS_PATH, RESPONSES_PATH, MESSAGES_PATH, EMBEDDINGS_PATH)


def key_api(path: str) -> str:
    """Whose key a line to `path` is sent with: Anthropic's (x-api-key) for /v1/messages, else OpenAI's (Bearer)."""
    return ANTHROPIC if path == MESSAGES_PATH else OPENAI


class InvalidRequestLine(ValueError):
    """A line that cannot become a request; the message is shown with file:line."""
