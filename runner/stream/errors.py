"""Typed failures of one request attempt.

The retry policy decides on `retryable`/`retry_after`; the record writer turns
any of them into `{"type", "status_code", "message"}`.  Messages pass through
`redact()` at the edge, so a key that a server echoes back never reaches a
file or a log.
"""

from __future__ import annotations

from typing import Any

# The end of the one line that names a web page answering where the API should (a wrong --base-url).
NOT_THE_API = "is this the API base URL (…/v1)?"


class RequestError(Exception):
    """Base of every per-request failure; `type` is the record's `error.type`."""

    type = "request_error"
    retryable = False

    def __init__(self, message: str, *, status_code: int | None = None,
                 retry_after: float | None = None, retryable: bool | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.retry_after = retry_after
        if retryable is not None:
            self.retryable = retryable
        self.partial: Any = None  # the attempt's StreamState, so partial text is kept


class PastDeadline(Exception):
    """--duration's deadline came before this request could start (waiting for quota or a slot): not sent.

    Not a RequestError: nothing was tried, so there is no error to record.
    The engine leaves such an item without a record (a rerun sends it); a
    retry that would start after the deadline is not made, and the record
    keeps the failure before it, its message saying so (runner/engine/send.py `Sender.request`, `NOT_RETRIED`)."""


class HTTPStatusError(RequestError):
    """A non-200 answer. 408, 409, 429 and 5xx are worth another try; other 4xx are not."""

    type = "http_error"

    def __init__(self, status_code: int, message: str, retry_after: float | None = None,
                 headers: Any = None, code: str | None = None) -> None:
        super().__init__(message, status_code=status_code, retry_after=retry_after,
                         retryable=status_code in (408, 409, 429) or status_code >= 500)
        self.headers = headers or {}  # rate-limit hints ride on 429s too
        self.code = code  # the server's error.code, e.g. "model_not_found"


class ContextLengthExceeded(HTTPStatusError):
    """The prompt plus max_tokens do not fit the model's context: the same request fails every time."""

    type = "context_length_exceeded"
    retryable = False

    def __init__(self, status_code: int, message: str, headers: Any = None, code: str | None = None) -> None:
        super().__init__(status_code, message, headers=headers, code=code)
        self.retryable = False


class EmptyResponse(RequestError):
    """A 200 whose body had no text, no tool call and no finish_reason: nothing was generated.

    Retried: a gateway that closes a stream at once usually does so on a
    passing upstream failure, and an empty "ok" would hide that.
    """

    type = "empty_response"
    retryable = True


class ConnectError(RequestError):
    """No answer because no connection: refused, DNS, TLS, the connect timeout, or a reset before any status.

    `reason` is the short cause ("connection refused"), for the one line
    that stops a run whose server was never reachable (runner/engine/guards.py).
    `conclusive`: every attempt would fail the same way (a certificate this
    client does not trust, a client certificate the server wants and did not
    get: runner/stream/tls.py), so a run that never connected stops at once.
    """

    type = "connect_error"
    retryable = True

    def __init__(self, message: str, *, reason: str | None = None, conclusive: bool = False) -> None:
        super().__init__(message)
        self.reason = reason or message
        self.conclusive = conclusive


class TooManyOpenFiles(ConnectError):
    """This process is out of file descriptors (EMFILE): a local limit, not the server's answer.

    Never an attempt that fails a prompt: the sender waits for a descriptor
    to free up and sends again (runner/engine/send.py).
    """


class RequestTimeout(RequestError):
    type = "timeout"
    retryable = True


class IncompleteStream(RequestError):
    """The body ended (or the connection dropped) before any finish_reason."""

    type = "incomplete_stream"
    retryable = True


class StreamErrorEvent(RequestError):
    """An `{"error": ...}` object arrived inside the stream.

    Retried: gateways send these for transient upstream failures
    (overloaded, internal error) after the 200 status line is already out.
    """

    type = "stream_error"
    retryable = True


class MalformedResponse(RequestError):
    """A reply of the wrong shape (a chunk that is not the API's, a text/html page).

    Retried: gateways garble replies on passing faults; a server that always
    does is bounded by --max-attempts.
    """

    type = "malformed_response"
    retryable = True


class ResponseTooLarge(RequestError):
    """A line, event, body or tool-call list over its bound; a retry would get the same answer."""

    type = "response_too_large"


class InvalidOutput(RequestError):
    """A reply that does not parse as the JSON its response_format asked for, or fails its schema.

    Retried like a failed attempt: sampling again usually gives a valid reply.
    """

    type = "invalid_output"
    retryable = True


class UnwantedFinish(RequestError):
    """A reply that ended for a reason the run asked to retry (`--retry-finish-reason length,content_filter`).

    After the last attempt the record is an error of this type with the text
    kept, so `--resume --retry-failed` tries it again later.
    """

    type = "unwanted_finish_reason"
    retryable = True


class InvalidInput(RequestError):
    """A line that could not become a request; it is answered without sending anything."""

    type = "invalid_input"


class ExceedsTPM(RequestError):
    """A single request needs more tokens than the whole per-minute quota.

    Waiting would never help, so the limiter raises instead of hanging; not
    retryable, it becomes an error record of type `exceeds_tpm`.
    """

    type = "exceeds_tpm"

    def __init__(self, tokens: int, tpm: int) -> None:
        super().__init__(f"request needs ~{tokens} tokens but the TPM limit is {tpm}")
        self.tokens = tokens
        self.tpm = tpm


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """Replace every secret with ***, and the piece of one that a cut message left at either end."""
    for secret in secrets:
        if not secret or len(secret) < 4:
            continue
        text = text.replace(secret, "***")
        for n in range(len(secret) - 1, 3, -1):  # a message cut inside the secret
            if text.endswith(secret[:n]):
                text = text[:-n] + "***"
                break
        for n in range(len(secret) - 1, 3, -1):
            if text.startswith(secret[-n:]):
                text = "***" + text[n:]
                break
    return text
